"""One loaded bundle model with preallocated buffers (:class:`ModelRunner`) and the offline :class:`Classifier`.

A window of log-mel frames goes: normalise (manifest statistics) -> [seed profile: image] -> quantise with
the interpreter's own scale/zero point -> invoke -> dequantise (widened ints). :class:`ModelRunner` does this in
place for the streaming detector (:mod:`edge.detector`); :class:`Classifier` runs it on a whole clip.

The clip-level rule (one place, used by training's evaluation, the converter's verification and
:class:`Classifier`): a clip no longer than the model's window is zero-padded to it and scored once; a
longer clip is scored by windows that start every half window (:func:`window_starts`; the last one is
aligned with the clip's end, so every sample is seen) and the clip's scores are the mean of the windows'
scores (:func:`clip_scores`), as YAMNet averages its frame scores.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

from edge.adapters import input_details, output_details, top_k
from edge.bundle import Bundle, as_bundle
from edge.errors import BundleError
from edge.features import fit_to_clip, log_mel, model_input_shape, to_model_input
from edge.interpreter import make_interpreter
from edge.pcm import to_mono_float32
from edge.resample import resample
from edge.sources import check_source_rate

__all__ = ["Classifier", "ClipResult", "ModelRunner", "window_starts", "clip_windows", "clip_scores"]


def window_starts(total_frames: int, window_frames: int) -> np.ndarray:
    """Start frames of the windows that cover ``total_frames``: every ``window_frames // 2`` frames, plus one
    aligned with the end when the hop does not land there. One window (start 0) when the clip fits in one."""
    if window_frames <= 0:
        raise ValueError(f"window_frames={window_frames} must be positive")
    last = max(0, int(total_frames) - int(window_frames))
    hop = max(1, int(window_frames) // 2)
    starts = np.arange(0, last + 1, hop, dtype=np.int64)
    if starts[-1] != last:
        starts = np.append(starts, last)
    return starts


def clip_windows(frames: np.ndarray, window_frames: int) -> np.ndarray:
    """``(total, mels)`` log-mel frames of one clip -> ``(windows, window_frames, mels)`` (a copy). A clip
    shorter than the window must be padded first (:func:`edge.features.fit_to_clip` on its audio)."""
    frames = np.asarray(frames)
    if frames.shape[0] < window_frames:
        raise ValueError(f"{frames.shape[0]} frames is less than one window ({window_frames}); pad the audio")
    return np.stack([frames[s:s + window_frames] for s in window_starts(frames.shape[0], window_frames)])


def clip_scores(window_scores: np.ndarray, owners: np.ndarray, n_clips: int) -> np.ndarray:
    """Mean of the window scores of each clip: ``(windows, classes)`` and the clip index of each window ->
    ``(n_clips, classes)``."""
    window_scores = np.asarray(window_scores, dtype=np.float64)
    owners = np.asarray(owners, dtype=np.int64)
    sums = np.zeros((n_clips, window_scores.shape[1]), dtype=np.float64)
    np.add.at(sums, owners, window_scores)
    counts = np.bincount(owners, minlength=n_clips).astype(np.float64)
    return sums / np.maximum(counts, 1.0)[:, None]


@dataclasses.dataclass(frozen=True)
class ClipResult:
    """A clip-level result: ``top`` -- ``(label, score)`` pairs of the window-averaged scores, best first;
    ``scores`` -- those scores in label order; ``timeline`` -- ``(start_s, end_s, scores)`` per window."""

    top: list[tuple[str, float]]
    scores: np.ndarray
    timeline: list[tuple[float, float, np.ndarray]]


class ModelRunner:
    """Interpreter + input/output buffers for one bundle. ``run(window)`` -> dequantised scores (a view)."""

    def __init__(self, bundle: Bundle, *, model: str | None, num_threads: int | None, coral: bool) -> None:
        kind = "edgetpu" if coral else (model or bundle.default_model)
        path = bundle.model_path(kind)
        if not Path(path).is_file():
            raise BundleError(f"model file {path} is missing; rebuild or re-copy the bundle")
        self.kind = kind
        self.interpreter, self.backend = make_interpreter(path, num_threads=num_threads, edgetpu=coral)
        cfg = bundle.feature_config
        self.config = cfg
        ind, outd = input_details(self.interpreter), output_details(self.interpreter)
        want = (1, *model_input_shape(cfg))
        if tuple(int(s) for s in ind["shape"]) != want:
            raise BundleError(f"model {path} takes input {tuple(ind['shape'])} but the manifest's feature "
                              f"settings give {want}; rebuild the bundle")
        n_out = int(np.prod(outd["shape"]))
        if n_out != len(bundle.labels):
            raise BundleError(f"model {path} has {n_out} outputs but the bundle has {len(bundle.labels)} labels;"
                              " rebuild the bundle")
        self.in_index, self.out_index = ind["index"], outd["index"]
        self.in_dtype = np.dtype(ind["dtype"])
        self.in_scale, self.in_zero = (float(ind["quantization"][0]), int(ind["quantization"][1]))
        self.out_scale, self.out_zero = (float(outd["quantization"][0]), int(outd["quantization"][1]))
        self.num_threads = num_threads
        self._x = np.zeros(want, dtype=np.float32)              # profile-transformed input, then quantised
        self._q = np.zeros(want, dtype=self.in_dtype)           # tensor to set
        self._x2d = self._x[0, :, :, 0] if cfg.profile == "edge" else None
        self._mean = np.float32(cfg.norm_mean)
        self._std = np.float32(cfg.norm_std)
        self._wide = np.zeros(n_out, dtype=np.int64)
        self.scores = np.zeros(n_out, dtype=np.float64)
        self._quantized = bool(self.in_scale) and np.issubdtype(self.in_dtype, np.integer)
        self._out_quantized = bool(self.out_scale) and np.issubdtype(np.dtype(outd["dtype"]), np.integer)
        if self._quantized:
            info = np.iinfo(self.in_dtype)
            self._scale32, self._zero32 = np.float32(self.in_scale), np.float32(self.in_zero)
            self._lo32, self._hi32 = np.float32(info.min), np.float32(info.max)

    def prepare(self, window: np.ndarray) -> None:
        """Window ``(n_frames, n_mels)`` -> input tensor. Same numbers as ``quantize(to_model_input(...))``,
        computed in place in preallocated buffers (no per-window allocation for the edge profile)."""
        x = self._x
        if self._x2d is not None:      # edge profile: (dB - mean) / std in float32
            np.subtract(window, self._mean, out=self._x2d)
            np.divide(self._x2d, self._std, out=self._x2d)
        else:
            x[0] = to_model_input(window, self.config)
        if self._quantized:            # in place (x is rebuilt every window); same ops as quantize()
            np.divide(x, self._scale32, out=x)
            np.rint(x, out=x)
            np.add(x, self._zero32, out=x)
            np.minimum(x, self._hi32, out=x)
            np.maximum(x, self._lo32, out=x)
            np.copyto(self._q, x, casting="unsafe")      # exact: x now holds in-range whole numbers
        else:
            np.copyto(self._q, x, casting="unsafe")
        self.interpreter.set_tensor(self.in_index, self._q)

    def invoke(self) -> None:
        self.interpreter.invoke()

    def read_scores(self) -> np.ndarray:
        """Dequantised scores into the preallocated buffer (widened ints, like ``dequantize``)."""
        raw = self.interpreter.get_tensor(self.out_index).reshape(-1)
        if self._out_quantized:
            np.subtract(raw, self.out_zero, out=self._wide, dtype=np.int64)
            np.multiply(self._wide, self.out_scale, out=self.scores)
        else:
            self.scores[:] = raw
        return self.scores

    def run(self, window: np.ndarray) -> np.ndarray:
        self.prepare(window)
        self.invoke()
        return self.read_scores()


class Classifier:
    """Classify one clip: ``Classifier(bundle).classify(waveform, sample_rate)`` -> ``[(label, score), ...]``.

    ``waveform``: mono or ``(n, channels)``, float in [-1, 1] or integer PCM, at any rate (resampled to the
    model's; a lower rate is resampled up, with a one-line note on stderr, since it has no content above
    its own Nyquist frequency). A clip up to the bundle's window is zero-padded to it; a longer one is
    scored by the clip-level rule (windows every half window, scores averaged -- see the module docstring).
    """

    def __init__(self, bundle: Bundle | str | os.PathLike[str] | None = None, *, model: str | None = None,
                 num_threads: int | None = None, coral: bool = False) -> None:
        self.bundle = as_bundle(bundle)
        self.config = self.bundle.feature_config
        self.labels = self.bundle.labels
        self._model = ModelRunner(self.bundle, model=model, num_threads=num_threads, coral=coral)
        self.backend = self._model.backend
        self._noted_rates: set[int] = set()

    def _audio(self, waveform: np.ndarray, sample_rate: int | None) -> np.ndarray:
        """Mono float32 (or integer PCM as given) at the model's rate."""
        cfg = self.config
        rate = check_source_rate(sample_rate or cfg.sample_rate, cfg.sample_rate, "waveform", upsample=True)
        x = np.asarray(waveform)
        if x.ndim == 2 or rate != cfg.sample_rate or not np.issubdtype(x.dtype, np.integer):
            x = to_mono_float32(x)
        if rate != cfg.sample_rate:
            if rate < cfg.sample_rate and rate not in self._noted_rates:
                self._noted_rates.add(rate)
                print(f"note: {rate} Hz audio is resampled up to the model's {cfg.sample_rate} Hz (it has no "
                      f"content above {rate // 2} Hz)", file=sys.stderr, flush=True)
            x = resample(x, rate, cfg.sample_rate)
        return x

    def _window_scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start frames and ``(windows, labels)`` scores of the clip-level rule."""
        cfg = self.config
        if x.shape[0] <= cfg.clip_samples:
            return np.zeros(1, dtype=np.int64), self._model.run(log_mel(fit_to_clip(x, cfg), cfg)).copy()[None]
        frames = log_mel(x, cfg)
        starts = window_starts(frames.shape[0], cfg.n_frames)
        return starts, np.stack([self._model.run(frames[s:s + cfg.n_frames]).copy() for s in starts])

    def scores(self, waveform: np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        """Dequantised scores in label order (float64); the mean over windows for a clip longer than one."""
        _, per_window = self._window_scores(self._audio(waveform, sample_rate))
        return per_window.mean(axis=0)

    def classify_clip(self, waveform: np.ndarray, sample_rate: int | None = None, *,
                      top: int | None = None) -> ClipResult:
        """The clip-level result with the per-window timeline (window start and end in seconds, scores)."""
        cfg = self.config
        starts, per_window = self._window_scores(self._audio(waveform, sample_rate))
        mean = per_window.mean(axis=0)
        hop_s = cfg.hop_length / cfg.sample_rate
        window_s = ((cfg.n_frames - 1) * cfg.hop_length + cfg.n_fft) / cfg.sample_rate
        timeline = [(round(float(s) * hop_s, 4), round(float(s) * hop_s + window_s, 4), sc)
                    for s, sc in zip(starts, per_window)]
        return ClipResult(top=top_k(mean, top, labels=self.labels), scores=mean, timeline=timeline)

    def classify(self, waveform: np.ndarray, sample_rate: int | None = None, *, top: int | None = None,
                 timeline: bool = False) -> list[tuple[str, float]] | ClipResult:
        """``(label, score)`` pairs, best first (background labels included: this is a classifier); one
        clip-level result for audio of any length. ``timeline=True`` returns the :class:`ClipResult`."""
        if timeline:
            return self.classify_clip(waveform, sample_rate, top=top)
        return top_k(self.scores(waveform, sample_rate), top, labels=self.labels)
