"""The training loop: batches, the compiled network, the callbacks and :func:`fit` (one run's ``model.fit``).

Imports Keras at its top (as :mod:`training.models` does): :mod:`training.train` imports this module only
when it trains, so ``--help`` and a bad argument stay fast. Hard-negative mining builds on this loop
(:mod:`training.mining`); :func:`fit` runs it through its ``mine`` argument, so the loop does not import it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import keras
import numpy as np

from edge.errors import AuricleError
from edge.features import FeatureConfig, model_input_shape, to_model_input
from edge.fileio import write_json_atomic
from edge.sysinfo import cpu_description, cpu_name
from training.bn_check import auto_bn_momentum, bn_summary, make_precise_bn_callback
from training.config import TrainConfig
from training.distill import Teacher, soft_targets
from training.featureset import AugmentConfig, FeatureSet, augment_batch, class_weights, normalisation_stats
from training.init_from import (adopt_normalisation, check_frontend, frozen_epochs, init_backbone, read_source,
                                set_backbone_trainable)
from training.models import build_model
from training.run_folder import (CHECKPOINT, CHECKPOINT_STATE, HISTORY, MODEL, TRAIN_SUMMARY, read_history,
                                 save_model_atomic, write_feature_config, write_labels)

__all__ = ["AugmentedBatches", "make_batches", "loader_threads", "seed_and_precision", "compiled_model",
           "compile_model", "callbacks", "class_weight_vector", "check_config_matches_model", "fit",
           "resolved_bn_momentum", "FINE_TUNE_LR_SCALE"]

log = logging.getLogger(__name__)

#: learning rate of the all-layers phase of ``--init-from``, as a share of ``--lr`` (learnt features move less)
FINE_TUNE_LR_SCALE = 0.25


def check_config_matches_model(model: Any, config: FeatureConfig) -> None:
    want = tuple(model_input_shape(config))
    have = tuple(int(d) for d in model.input_shape[1:])
    if have != want:
        raise AuricleError(f"model input {have} does not match the feature config ({config.profile} profile -> "
                           f"{want}); use the feature config the model was trained with")


# -- batches ------------------------------------------------------------------------------------
def loader_threads() -> int:
    """Batch-preparation threads: numpy releases the GIL in the heavy parts (matmul, log10)."""
    env = os.environ.get("AURICLE_LOADER_THREADS")
    if env:
        return max(1, int(env))
    return max(1, min(8, (os.cpu_count() or 1) - 1))


class AugmentedBatches(keras.utils.PyDataset):
    """Training batches: shuffled per epoch, augmented in the feature domain, seeded per epoch."""

    def __init__(self, fs, idx, batch_size, aug, seed, sample_weights=None, negatives=None, teacher=None,
                 distill_weight=0.0):
        super().__init__(workers=loader_threads(), use_multiprocessing=False)
        self.fs, self.idx, self.batch_size, self.aug, self.seed = fs, np.asarray(idx), batch_size, aug, seed
        self.noise_idx = fs.noise_indices()
        self.sample_weights = sample_weights
        self.negatives = negatives          # training.mining.NegativeMixer or None
        self.teacher, self.distill_weight = teacher, distill_weight   # training.distill.Teacher or None
        self.epoch = 0
        self._order = self._shuffle()

    def _shuffle(self):
        return np.random.default_rng([self.seed, self.epoch, 1]).permutation(self.idx)

    def __len__(self):
        return int(np.ceil(len(self.idx) / self.batch_size))

    def __getitem__(self, i):
        sel = self._order[i * self.batch_size:(i + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.epoch, 2, i])
        x = augment_batch(self.fs, sel, rng, self.aug, self.noise_idx)
        y = self.fs.y[sel]
        w = self.sample_weights[y].astype(np.float32) if self.sample_weights is not None else None
        if self.negatives is not None:
            x, y, w = self.negatives.extend(x, y, w, rng, enabled=self.aug.enabled)
        if self.teacher is not None:        # positives first, appended negatives keep one-hot targets
            y = soft_targets(y, self.teacher.scores(x[:len(sel)]), len(self.fs.label_names),
                             self.distill_weight)
        x = to_model_input(x, self.fs.config)
        return (x, y) if w is None else (x, y, w)

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._shuffle()


def make_batches(fs: FeatureSet, idx: np.ndarray, cfg: TrainConfig, *, seed: int | None = None,
                 sample_weights: np.ndarray | None = None, negatives: Any = None,
                 teacher: Teacher | None = None) -> AugmentedBatches:
    """The training batches of clips ``idx``: ``cfg``'s batch size, augmentation switch and distillation
    weight; ``seed`` (default ``cfg.seed``); ``negatives`` a :class:`training.mining.NegativeMixer`."""
    return AugmentedBatches(fs, idx, cfg.batch_size, AugmentConfig(enabled=cfg.augment),
                            cfg.seed if seed is None else seed, sample_weights, negatives, teacher,
                            cfg.distill_weight)


#: classes further apart than this in train clips get no class weights: inverse-frequency weights across a
#: 35-word corpus whose rarest word has 5 train clips and whose keywords 330 (68x) left MobileNet predicting one
#: class for 8 epochs, capped at 10x it still reached only 29 % train accuracy, unweighted it learnt (49 %)
MAX_WEIGHT_RATIO = 10.0


def class_weight_vector(fs: FeatureSet, train_idx: np.ndarray, cfg: TrainConfig) -> np.ndarray | None:
    if not cfg.class_weighting:
        return None
    num_classes = len(fs.label_names)
    counts = np.bincount(fs.y[train_idx], minlength=num_classes)
    present = counts[counts > 0]
    if present.size and present.max() > MAX_WEIGHT_RATIO * present.min():
        rare = fs.label_names[int(np.argmin(np.where(counts > 0, counts, np.iinfo(counts.dtype).max)))]
        log.warning(f"no class weights: classes are {present.max() / present.min():.0f}x apart in train clips "
                    f"({rare!r} has {present.min()}), and weights that far apart stall training; rare classes "
                    "will be recalled less (add clips to them)")
        return None
    cw = class_weights(fs.y[train_idx], num_classes)
    return np.asarray([cw[i] for i in range(num_classes)], dtype=np.float32)


# -- callbacks ----------------------------------------------------------------------------------
class EpochLine(keras.callbacks.Callback):
    """One line per epoch: losses, accuracies, a star when validation accuracy improved, seconds."""

    def __init__(self, total_epochs: int, best_so_far: float):
        super().__init__()
        self.total_epochs, self.best = total_epochs, best_so_far
        self.t0 = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        va = float(logs.get("val_accuracy", float("nan")))
        improved = va > self.best
        self.best = max(self.best, va)
        log.info(f"epoch {epoch + 1:3d}/{self.total_epochs}  loss {logs.get('loss', float('nan')):.4f}  "
                 f"acc {logs.get('accuracy', float('nan')):.4f}  val_loss {logs.get('val_loss', float('nan')):.4f}  "
                 f"val_acc {va:.4f}{' *' if improved else '  '} best {self.best:.4f}  "
                 f"{time.perf_counter() - self.t0:.1f}s")


class BestAndLast(keras.callbacks.Callback):
    """model.keras = best val accuracy so far; checkpoint.keras + checkpoint.json = last epoch (resume)."""

    def __init__(self, out: Path, best_so_far: float):
        super().__init__()
        self.out, self.best = out, best_so_far

    def on_epoch_end(self, epoch, logs=None):
        va = float((logs or {}).get("val_accuracy", -1.0))
        if va > self.best:
            self.best = va
            save_model_atomic(self.model, self.out / MODEL)
        save_model_atomic(self.model, self.out / CHECKPOINT)
        write_json_atomic(self.out / CHECKPOINT_STATE, {"epoch": epoch + 1, "best_val_accuracy": self.best})


class TargetStop(keras.callbacks.Callback):
    """Stops once validation accuracy reaches ``cfg.target_accuracy``."""

    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg

    def on_epoch_end(self, epoch, logs=None):
        va = float((logs or {}).get("val_accuracy", 0.0))
        target = self.cfg.target_accuracy
        if target is not None and va >= target:
            log.info(f"validation accuracy {va:.4f} reached the target {target:.4f}: stopping")
            self.model.stop_training = True


class TimeLimit(keras.callbacks.Callback):
    """Stops after ``cfg.time_limit`` seconds of fitting (cleanly, after the current batch)."""

    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg
        self.t0 = time.perf_counter()
        self.fired = False

    def on_train_batch_end(self, batch, logs=None):
        limit = self.cfg.time_limit
        if limit and not self.fired and time.perf_counter() - self.t0 > limit:
            self.fired = True
            log.info(f"time limit of {limit:.0f} s reached: stopping")
            self.model.stop_training = True


def callbacks(out: Path, cfg: TrainConfig, total_epochs: int, initial_epoch: int, best_so_far: float,
              precise_bn: Any = None) -> list:
    """The epoch line, best/last saving, target and time stops, the history log, batch-norm re-estimation
    (after the others: it sees a stop they asked for in the same batch) and early stopping -- in that order."""
    cbs = [EpochLine(total_epochs, best_so_far), BestAndLast(out, best_so_far), TargetStop(cfg), TimeLimit(cfg),
           keras.callbacks.CSVLogger(str(out / HISTORY), append=initial_epoch > 0)]
    if precise_bn is not None:
        cbs.append(precise_bn)
    if cfg.patience:
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=cfg.patience, mode="max",
                                                 restore_best_weights=False))
    return cbs


class _Stop:
    """SIGINT/SIGTERM ask the model to stop after the current batch; the run is still written."""

    def __init__(self) -> None:
        self.model = None
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Stop":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # second signal: give up now
            raise KeyboardInterrupt
        self.signal = signum
        log.warning(f"\n{signal.Signals(signum).name}: stopping after this batch; the best model and report will "
                    "still be written (send again to abort)")
        if self.model is not None:
            self.model.stop_training = True

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# -- the model ----------------------------------------------------------------------------------
class _Start(NamedTuple):
    """The model fitting starts from: fresh (epoch 0, no best yet) or a resumed checkpoint."""

    model: Any
    epoch: int              # the first epoch to run
    best: float             # best validation accuracy so far (-1 when fresh)


def seed_and_precision(cfg: TrainConfig) -> None:
    keras.utils.set_random_seed(cfg.seed)
    if os.environ.get("AURICLE_MIXED_PRECISION"):   # e.g. mixed_bfloat16 on a GPU host; weights stay float32
        keras.mixed_precision.set_global_policy(os.environ["AURICLE_MIXED_PRECISION"])


def resolved_bn_momentum(cfg: TrainConfig, total_steps: int) -> float:
    """``--bn-momentum``, else one chosen from the run's optimiser steps (0.99 for long runs)."""
    return cfg.bn_momentum if cfg.bn_momentum is not None else auto_bn_momentum(total_steps)


def compiled_model(fs: FeatureSet, cfg: TrainConfig, train_size: int) -> Any:
    """A new network for ``fs``, compiled with AdamW on a cosine schedule over all ``cfg.epochs``."""
    steps = int(np.ceil(train_size / cfg.batch_size)) * cfg.epochs
    model = build_model(cfg.network, model_input_shape(fs.config), len(fs.label_names), profile=fs.config.profile,
                        width=cfg.resolved_width(), dropout=cfg.dropout, bn_momentum=resolved_bn_momentum(cfg, steps))
    return compile_model(model, cfg, steps, cfg.learning_rate)


def compile_model(model: Any, cfg: TrainConfig, steps: int, learning_rate: float) -> Any:
    """Compile ``model`` with AdamW on a cosine schedule over ``steps`` from ``learning_rate``."""
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, steps),
                                                      alpha=0.02, warmup_target=None)
    loss = keras.losses.CategoricalCrossentropy() if cfg.teacher else keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay), loss=loss,
                  metrics=["accuracy"], jit_compile=cfg.jit_compile)
    return model


def _resumed(out: Path, config: FeatureConfig) -> _Start:
    model = keras.saving.load_model(out / CHECKPOINT, safe_mode=True)
    check_config_matches_model(model, config)
    state = json.loads((out / CHECKPOINT_STATE).read_text())
    start = _Start(model, int(state["epoch"]), float(state["best_val_accuracy"]))
    log.info(f"resuming from epoch {start.epoch} (best val accuracy {start.best:.4f})")
    return start


def _start_model(fs: FeatureSet, cfg: TrainConfig, out: Path, *, resume: bool, distribute: bool,
                 train_size: int) -> _Start:
    """The run's last checkpoint with ``resume`` (when there is one), else a new compiled model; built inside
    the distribution scope."""
    with _distribution_scope(distribute):
        if resume and (out / CHECKPOINT).is_file():
            start = _resumed(out, fs.config)
        else:
            if resume:
                log.warning(f"--resume: no checkpoint in {out}; starting fresh")
            model = compiled_model(fs, cfg, train_size)
            if cfg.init_from:
                k = init_backbone(model, cfg)
                if k:
                    compile_model(model, cfg, int(np.ceil(train_size / cfg.batch_size)) * k, cfg.learning_rate)
            start = _Start(model, 0, -1.0)
    if start.epoch >= cfg.epochs:
        log.info(f"checkpoint is already at epoch {start.epoch} >= --epochs {cfg.epochs}; nothing to train")
    return start


def _unfreeze(start: _Start, cfg: TrainConfig, out: Path, train_size: int) -> _Start:
    """After the frozen phase: every layer learns, at :data:`FINE_TUNE_LR_SCALE` of the learning rate, on a
    cosine over the epochs left; fitting goes on from the phase's last epoch and best validation accuracy."""
    set_backbone_trainable(start.model, True)
    k = frozen_epochs(cfg.epochs)
    steps = int(np.ceil(train_size / cfg.batch_size)) * (cfg.epochs - k)
    compile_model(start.model, cfg, steps, cfg.learning_rate * FINE_TUNE_LR_SCALE)
    best = float(json.loads((out / CHECKPOINT_STATE).read_text())["best_val_accuracy"])
    log.info(f"--init-from: frozen phase done (best val accuracy {best:.4f}); training all layers")
    return _Start(start.model, k, best)


def _check_resumed_loss(model: Any, cfg: TrainConfig) -> None:
    """A checkpoint keeps the loss it was compiled with: soft (distilled) targets need the categorical one."""
    categorical = type(getattr(model, "loss", None)).__name__ == "CategoricalCrossentropy"
    if bool(cfg.teacher) != categorical:
        raise AuricleError("--resume: the checkpoint was trained " + ("with" if categorical else "without")
                           + " --teacher; resume it the same way, or train into a new --out")


def _distribution_scope(distribute: bool):
    if not distribute:
        return contextlib.nullcontext()
    if keras.backend.backend() == "jax":
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        log.info(f"--distribute: keras.distribution.DataParallel over {len(devices)} device(s)")
        return contextlib.nullcontext()
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # only here: the one place training touches tf.*
        strategy = tf.distribute.MirroredStrategy()
        log.info(f"--distribute: tf.distribute.MirroredStrategy over {strategy.num_replicas_in_sync} replica(s)")
        return strategy.scope()
    raise AuricleError(f"--distribute is not supported on the {keras.backend.backend()} backend; use jax or tensorflow")


# -- fitting ------------------------------------------------------------------------------------
def _train_and_val(fs: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
    train_idx, val_idx = fs.indices("train"), fs.indices("val")
    if train_idx.size == 0 or val_idx.size == 0:
        raise AuricleError(f"need clips in both train and validation splits (have {train_idx.size} and "
                           f"{val_idx.size}); add data from more speakers/sources")
    return train_idx, val_idx


def _validation_windows(fs: FeatureSet, val_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every evaluation window of the validation clips and its clip's label (Keras's val_accuracy is then the
    per-window accuracy; for one-window clips, the clip accuracy)."""
    frames, owners = fs.windows(val_idx)
    return to_model_input(frames, fs.config), fs.y[val_idx][owners]


def _set_normalisation(fs: FeatureSet) -> None:
    """The edge profile normalises with the training split's statistics (unless the features carry them)."""
    if fs.config.profile == "edge" and fs.config.norm_std == 1.0 and fs.config.norm_mean == 0.0:
        mean, std = normalisation_stats(fs)
        fs.config = dataclasses.replace(fs.config, norm_mean=mean, norm_std=std)


def _run_fit(start: _Start, batches: Any, validation: tuple[np.ndarray, np.ndarray], cfg: TrainConfig, out: Path,
             verbose: int, precise_bn: Any = None, end: int | None = None) -> int | None:
    """``model.fit`` from ``start.epoch`` to ``end`` (default ``cfg.epochs``); a SIGINT/SIGTERM stops it after
    the current batch. Returns that signal, or None."""
    with _Stop() as stop:
        stop.model = start.model
        start.model.fit(batches, validation_data=validation, epochs=end or cfg.epochs, initial_epoch=start.epoch,
                        callbacks=callbacks(out, cfg, cfg.epochs, start.epoch, start.best, precise_bn),
                        verbose=verbose)
        return stop.signal


def _fit_phases(start: _Start, batches: Any, validation: Any, cfg: TrainConfig, out: Path, verbose: int,
                precise_bn: Any, train_size: int) -> int | None:
    """One fit; with ``--init-from``, the frozen phase first (a checkpoint from inside it resumes it, its layers
    still frozen), then all layers."""
    k = frozen_epochs(cfg.epochs) if cfg.init_from else 0
    if start.epoch >= k:
        return _run_fit(start, batches, validation, cfg, out, verbose, precise_bn)
    interrupted = _run_fit(start, batches, validation, cfg, out, verbose, precise_bn, end=k)
    if interrupted or start.model.stop_training:
        return interrupted
    return _run_fit(_unfreeze(start, cfg, out, train_size), batches, validation, cfg, out, verbose, precise_bn)


def _stop_reason(cfg: TrainConfig, history: dict[str, list[float]], seconds: float, interrupted: int | None) -> str:
    reason = ("signal " + signal.Signals(interrupted).name) if interrupted else "completed"
    va = history.get("val_accuracy")
    if va:
        if cfg.target_accuracy is not None and max(va) >= cfg.target_accuracy:
            reason = f"target validation accuracy {cfg.target_accuracy} reached"
        elif cfg.time_limit and seconds >= cfg.time_limit and len(va) < cfg.epochs:
            reason = f"time limit {cfg.time_limit:.0f} s"
        elif len(va) < cfg.epochs and not interrupted and cfg.patience:
            reason = f"no improvement for {cfg.patience} epochs"
    return reason


def _device_name() -> str:
    """The accelerators (JAX backend) and the CPU, as the report names where training ran."""
    gpus = []
    try:
        if keras.backend.backend() == "jax":
            import jax
            gpus = [d.device_kind for d in jax.devices() if d.platform != "cpu"]
    except Exception:  # pragma: no cover - best effort description
        pass
    return f"{', '.join(gpus)} + {cpu_name()}" if gpus else cpu_description()


def _summary(cfg: TrainConfig, out: Path, seconds: float, interrupted: int | None, resume: bool) -> dict[str, Any]:
    """Epochs run, best validation accuracy, seconds (a resumed run adds its earlier ones), stop reason, device."""
    hist = read_history(out / HISTORY)
    prev = 0.0
    if resume and (out / TRAIN_SUMMARY).is_file():
        prev = float(json.loads((out / TRAIN_SUMMARY).read_text()).get("train_seconds", 0.0))
    return {"epochs_run": len(hist.get("epoch", [])), "best_val_accuracy": max(hist.get("val_accuracy", [0.0])),
            "train_seconds": round(prev + seconds, 2), "stop_reason": _stop_reason(cfg, hist, seconds, interrupted),
            "backend": keras.backend.backend(), "device": _device_name()}


#: what :func:`fit` calls after an uninterrupted fit with negatives and ``mine_rounds``:
#: ``mine(fs, cfg, out, mixer, class_weights, verbose=...) -> dict`` (:func:`training.mining.mine_and_fine_tune`)
MineStep = Callable[..., dict]


def fit(fs: FeatureSet, cfg: TrainConfig, out: Path, *, resume: bool = False, distribute: bool = False,
        verbose: int = 1, negatives: Any = None, mine: MineStep | None = None,
        teacher: Teacher | None = None) -> dict[str, Any]:
    """Train on a FeatureSet; writes model.keras (best), checkpoint, history.csv into ``out``; ``negatives``:
    a :class:`training.mining.NegativeMixer`, ``mine``: the hard-negative step run after fitting, ``teacher``:
    ``cfg.teacher`` already loaded (else it is loaded here).

    Returns a summary dict (epochs run, best val accuracy, training seconds, stop reason)."""
    out.mkdir(parents=True, exist_ok=True)
    train_idx, val_idx = _train_and_val(fs)
    cfg = cfg.with_batch_size(train_idx.size)
    if cfg.init_from:
        source = read_source(cfg.init_from)
        check_frontend(source, fs.config)
        fs.config = adopt_normalisation(source, fs.config)
    _set_normalisation(fs)
    write_feature_config(out, fs.config)
    write_labels(out, fs.label_names)
    if cfg.teacher and teacher is None:
        teacher = Teacher(cfg.teacher, fs.label_names, fs.config)
    seed_and_precision(cfg)
    start = _start_model(fs, cfg, out, resume=resume, distribute=distribute, train_size=train_idx.size)
    _check_resumed_loss(start.model, cfg)
    weights = class_weight_vector(fs, train_idx, cfg)
    batches = make_batches(fs, train_idx, cfg, sample_weights=weights, negatives=negatives, teacher=teacher)
    batches.epoch = start.epoch
    validation = _validation_windows(fs, val_idx)
    if teacher is not None:   # categorical loss: one-hot validation targets
        validation = (validation[0], np.eye(len(fs.label_names), dtype=np.float32)[validation[1]])
    precise_bn = make_precise_bn_callback(fs, len(batches), seed=cfg.seed) if cfg.precise_bn else None
    t0 = time.perf_counter()
    interrupted = _fit_phases(start, batches, validation, cfg, out, verbose, precise_bn, train_idx.size)
    seconds = time.perf_counter() - t0
    if not (out / MODEL).is_file():   # interrupted before one epoch ended: keep what there is
        save_model_atomic(start.model, out / MODEL)
    summary = _summary(cfg, out, seconds, interrupted, resume)
    summary["batch_norm"] = bn_summary(start.model, precise_bn)
    if mine is not None and negatives is not None and cfg.mine_rounds > 0 and not interrupted:
        mining = mine(fs, cfg, out, negatives, weights, verbose=verbose)
        summary["mining"] = mining
        summary["epochs_run"] += sum(r.get("epochs", 0) for r in mining["rounds"])
        summary["train_seconds"] = round(summary["train_seconds"] + mining["seconds"], 2)
    write_json_atomic(out / TRAIN_SUMMARY, summary)
    return summary
