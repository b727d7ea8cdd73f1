"""Batch-norm health of a model: inference-mode vs training-mode accuracy, precise re-estimation of the
moving statistics, and the one-line warning a run prints when its own train split is near chance in
inference mode while its training accuracy is not.

Why: a batch-norm layer normalises with the batch's statistics while training and with moving averages
(momentum ``m`` per step) in inference mode. After ``s`` steps the averages still hold ``m**s`` of their
initial values (mean 0, variance 1); a short run on a few hundred clips (6 steps an epoch) leaves them far
from the features' real statistics, and the network predicts one class in inference mode while it is right
in training mode. :func:`recalibrate` repairs that exactly ("precise BN": the averages become the mean over
un-augmented training windows); :class:`PreciseBatchNorm` does it after every epoch's last batch, so
validation, best-epoch choice, early stopping and the saved model all see repaired statistics.

``python -m training.bn_probe RUN`` measures a run folder with these functions. Keras is imported inside the
functions that use it.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from edge.errors import AuricleError
from edge.features import to_model_input
from training.featureset import FeatureSet, random_offsets

__all__ = ["bn_layers", "recalibration_windows", "recalibrate", "mode_accuracies", "collapse_warning",
           "make_precise_bn_callback", "auto_bn_momentum", "bn_summary"]

#: frames of training windows that re-estimate the statistics: 131 windows of 5 s, 675 of 1 s (ESC-10 at 5 s:
#: validation accuracy after re-estimating over 128 or all 322 train windows differed by at most one clip of 39)
RECALIBRATION_FRAMES = 65_536


def bn_layers(model: Any) -> list[Any]:
    """Every BatchNormalization layer of ``model``, nested models included."""
    import keras

    found = []
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif hasattr(layer, "layers"):
            found.extend(bn_layers(layer))
    return found


def recalibration_windows(fs: FeatureSet, *, clips: int | None = None, seed: int = 0) -> np.ndarray:
    """Model inputs for re-estimation: one un-augmented window per training clip, at a random place inside the
    clip (long clips: not always their middle), at most ``clips`` clips (default: :data:`RECALIBRATION_FRAMES`
    worth, 64 to 1024 windows)."""
    if clips is None:
        clips = max(64, min(1024, RECALIBRATION_FRAMES // fs.config.n_frames))
    rng = np.random.default_rng([seed, 7])
    idx = rng.permutation(fs.indices("train"))[:clips]
    if idx.size == 0:
        raise AuricleError("no training clips to re-estimate batch-norm statistics with")
    n = fs.config.n_frames
    offs = random_offsets(fs, idx, rng, time_shift=False)
    x = np.stack([np.asarray(fs.padded[i, o:o + n], dtype=np.float32) for i, o in zip(idx, offs)])
    return to_model_input(x, fs.config)


def _batches(x: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size]


def recalibrate(model: Any, x: np.ndarray, *, batch_size: int = 64) -> float:
    """Set every batch-norm layer's moving mean/variance to the mean and variance of its inputs over all of
    ``x`` (training-mode passes, no weight update; exact: the spread between batches is counted, so the result
    does not depend on how ``x`` is batched). Returns the drift that repaired: the mean over layers and
    channels of ``|old moving mean - new| / sqrt(new variance)`` (0: the averages were already right)."""
    layers = bn_layers(model)
    if not layers or len(x) == 0:
        return 0.0
    old = [np.asarray(layer.moving_mean) for layer in layers]
    saved = [layer.momentum for layer in layers]
    first = [np.zeros_like(o, dtype=np.float64) for o in old]    # sum of batch means, weighted by batch size
    second = [np.zeros_like(o, dtype=np.float64) for o in old]   # same for mean square (variance + mean^2)
    try:
        for layer in layers:   # momentum 0: after a call, the moving statistics are that batch's
            layer.momentum = 0.0
        for batch in _batches(x, batch_size):
            model(batch, training=True)
            for k, layer in enumerate(layers):
                mean = np.asarray(layer.moving_mean, dtype=np.float64)
                first[k] += len(batch) * mean
                second[k] += len(batch) * (np.asarray(layer.moving_variance, dtype=np.float64) + mean ** 2)
    finally:
        for layer, m in zip(layers, saved):
            layer.momentum = m
    for k, layer in enumerate(layers):
        mean = first[k] / len(x)
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(np.maximum(second[k] / len(x) - mean ** 2, 0.0).astype(np.float32))
    drift = [np.mean(np.abs(o - np.asarray(layer.moving_mean)) / np.sqrt(np.asarray(layer.moving_variance) + 1e-3))
             for o, layer in zip(old, layers)]
    return float(np.mean(drift))


def mode_accuracies(model: Any, x: np.ndarray, y: np.ndarray, *, batch_size: int = 64) -> dict[str, float]:
    """Accuracy of ``model`` on windows ``x`` in inference mode (moving statistics) and in training mode
    (each batch's own statistics; dropout on, as the optimiser sees it), and the share of the commonest
    inference-mode prediction (1.0: one class for everything)."""
    inf = np.concatenate([np.argmax(np.asarray(model(b, training=False)), axis=-1) for b in _batches(x, batch_size)])
    layers = bn_layers(model)
    saved = [(np.asarray(la.moving_mean), np.asarray(la.moving_variance)) for la in layers]
    order = np.random.default_rng(0).permutation(len(x))   # batches of mixed classes, as in training
    trn = np.empty(len(x), dtype=np.int64)
    for k in range(0, len(x), batch_size):
        sel = order[k:k + batch_size]
        trn[sel] = np.argmax(np.asarray(model(x[sel], training=True)), axis=-1)
    for la, (mean, var) in zip(layers, saved):   # a training-mode call moves the averages: put them back
        la.moving_mean.assign(mean)
        la.moving_variance.assign(var)
    return {"inference": float(np.mean(inf == y)), "training_mode": float(np.mean(trn == y)),
            "top_prediction_share": float(np.bincount(inf).max() / max(1, inf.size))}


def collapse_warning(inference_train_accuracy: float, training_accuracy: float, num_classes: int) -> str | None:
    """The one line for a model that is near chance on its own train split in inference mode while its
    training accuracy is not; ``None`` when it is healthy."""
    chance = 1.0 / max(2, num_classes)
    near_chance = inference_train_accuracy < chance + 0.1 * (1 - chance)
    learnt = training_accuracy > chance + 0.25 * (1 - chance)
    if near_chance and learnt and training_accuracy - inference_train_accuracy > 0.15:
        return (f"batch-norm collapse: inference-mode accuracy on the train split is {inference_train_accuracy:.3f} "
                f"(chance {chance:.3f}) while training accuracy reached {training_accuracy:.3f}: the moving "
                "statistics do not fit the weights; train without --no-precise-bn, or with a lower --bn-momentum")
    return None


def auto_bn_momentum(total_steps: int) -> float:
    """Batch-norm momentum for a run of ``total_steps`` optimiser steps: 0.99 (Keras's default) when the run
    is long, else low enough that the moving averages forget their initial values within a tenth of the run
    (``m ** (steps / 10) <= 0.01``), floored at 0.9."""
    if total_steps <= 0:
        return 0.99
    m = 0.01 ** (10.0 / total_steps)
    return float(round(min(0.99, max(0.9, m)), 4))


def make_precise_bn_callback(fs: FeatureSet, steps_per_epoch: int, *, seed: int = 0) -> Any:
    """A Keras callback that re-estimates the batch-norm statistics (:func:`recalibrate`) after each epoch's
    last training batch -- before Keras runs validation -- and keeps the drift it repaired per epoch."""
    import keras

    class PreciseBatchNorm(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.drift: list[float] = []
            self.epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if batch == steps_per_epoch - 1 or self.model.stop_training:
                x = recalibration_windows(fs, seed=seed + self.epoch)
                self.drift.append(round(recalibrate(self.model, x), 4))

    return PreciseBatchNorm()


def bn_summary(model: Any, precise_bn: Any) -> dict[str, Any]:
    """What a run's summary records: the batch-norm momentum it used and, with precise BN, the drift each
    epoch's re-estimation repaired."""
    layers = bn_layers(model)
    out: dict[str, Any] = {"momentum": float(layers[0].momentum) if layers else None,
                           "precise_bn": precise_bn is not None}
    if precise_bn is not None:
        out["drift_per_epoch"] = precise_bn.drift
    return out
