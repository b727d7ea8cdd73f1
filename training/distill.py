"""Knowledge distillation from a shipped bundle: a larger, more accurate model teaches a small one.

``python -m training.train --teacher firmware_assets/kws_resnet18_edge`` trains the student on targets
``(1 - a) * one_hot(label) + a * teacher(x)``, where ``teacher(x)`` is the bundle's own scores for the very
same augmented window (its TFLite model, through the device's input path), and ``a`` is ``--distill-weight``.
Cross-entropy is linear in its targets, so this is ``(1 - a) * CE(label) + a * CE(teacher)``.

Rows the teacher cannot speak for keep their one-hot target: the negative windows appended to a batch
(audio the teacher was never trained to reject). The teacher must have the student's labels, in the same
order, and the same frontend; and it must not have been trained on the student's validation or test clips
(a bundle trained by this project on the same data and split rule satisfies that).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge.errors import AuricleError

__all__ = ["Teacher", "soft_targets"]


def soft_targets(y: np.ndarray, teacher_scores: np.ndarray, num_classes: int, weight: float) -> np.ndarray:
    """``(n,)`` labels and ``(m, classes)`` teacher scores for the first ``m <= n`` rows -> ``(n, classes)``
    float32 targets; rows past ``m`` stay one-hot. Teacher rows are renormalised to sum to 1."""
    y = np.asarray(y, dtype=np.int64)
    out = np.zeros((y.size, num_classes), dtype=np.float32)
    out[np.arange(y.size), y] = 1.0
    m = teacher_scores.shape[0]
    if m and weight > 0:
        t = np.clip(np.asarray(teacher_scores, dtype=np.float64), 0.0, None)
        t /= np.maximum(t.sum(axis=1, keepdims=True), 1e-12)
        out[:m] = ((1.0 - weight) * out[:m] + weight * t).astype(np.float32)
    return out


class Teacher:
    """A bundle's model scoring log-mel windows, one interpreter per loader thread."""

    def __init__(self, bundle: str | Path, labels: Sequence[str], config: Any) -> None:
        from edge.bundle import load_bundle

        self.bundle = load_bundle(bundle)
        if list(self.bundle.labels) != list(labels):
            raise AuricleError(f"--teacher {bundle} has labels {list(self.bundle.labels)}, the data has "
                               f"{list(labels)}; a teacher must have the same labels in the same order")
        theirs, ours = self.bundle.feature_config, config
        if theirs.frontend_key != ours.frontend_key or theirs.profile != ours.profile:
            raise AuricleError(f"--teacher {bundle} was trained on other features ({theirs.profile}, "
                               f"{theirs.n_mels} mels, hop {theirs.hop_length}); pick a teacher with this run's "
                               "profile and frontend settings")
        self._local = threading.local()
        self._model()          # fail now (missing model file, bad runtime), not in a loader thread

    def _model(self) -> Any:
        model = getattr(self._local, "model", None)
        if model is None:
            from edge.classifier import ModelRunner

            model = self._local.model = ModelRunner(self.bundle, model=None, num_threads=1, coral=False)
        return model

    def scores(self, frames: np.ndarray) -> np.ndarray:
        """``(n, n_frames, n_mels)`` log-mel windows (dB, as augmentation leaves them) -> ``(n, classes)``."""
        model = self._model()
        out = np.empty((frames.shape[0], len(self.bundle.labels)), dtype=np.float64)
        for i, window in enumerate(frames):
            out[i] = model.run(window)
        return out
