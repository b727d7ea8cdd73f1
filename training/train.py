"""Train MobileNet or ResNet-18 on log-mel features: ``python -m training.train --help``.

A thin CLI over :func:`train`, a typed keyword-only core. Backend-agnostic Keras 3 (TensorFlow on the CPU,
JAX on a GPU host). Writes a run folder (the contract: :mod:`training.run_folder`; the report:
:mod:`training.report`). Keras is imported inside the functions that use it: importing it costs seconds, and
``--help`` or a bad argument should not.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from edge.errors import AuricleError, run_cli
from edge.features import FeatureConfig, model_input_shape, to_model_input
from edge.fileio import write_json_atomic
from edge.splits import DEALT_RULE, SHA1_RULE
from edge.sysinfo import cpu_description, cpu_name
from training import data as dataio
from training import weights_io
from training.config import NETWORKS, STUDY_TARGETS, Frontend, TrainConfig, frontend_config
from training.featureset import (AugmentConfig, FeatureSet, augment_batch, class_weights, frames_of, model_inputs,
                                 normalisation_stats, pad_frames_for, padded_log_mel)
from training.bn_check import auto_bn_momentum, bn_summary, make_precise_bn_callback
from training.distill import Teacher, soft_targets
from training.init_from import (adopt_normalisation, check_frontend, frozen_epochs, init_backbone, read_source,
                                set_backbone_trainable, with_source_network)
from training.mining import NegativeMixer, foreground_mask, mine_labelled, window_false_accepts
from training.negatives import NOISE_LABEL, background_label, load_negative_bank
from training.report import write_report
from training.run_folder import (CHECKPOINT, CHECKPOINT_STATE, HISTORY, MODEL, SPLIT, TRAIN_CONFIG, TRAIN_SUMMARY,
                                 read_history, save_model_atomic, write_feature_config, write_labels, write_split)

__all__ = ["TrainConfig", "NETWORKS", "check_config_matches_model", "build_featureset", "fit",
           "mine_and_fine_tune", "read_history", "train", "build_parser", "main"]


def check_config_matches_model(model: Any, config: FeatureConfig) -> None:
    want = tuple(model_input_shape(config))
    have = tuple(int(d) for d in model.input_shape[1:])
    if have != want:
        raise AuricleError(f"model input {have} does not match the feature config ({config.profile} profile -> "
                           f"{want}); use the feature config the model was trained with")


# -- data ------------------------------------------------------------------------------------
#: whole clips are kept up to this long (a longer one: its centre); evaluation windows cover what is kept
MAX_CLIP_SECONDS = 30.0


def _clip_plan(root: Path, config: FeatureConfig, clip_seconds: float | str | None, layout: str,
               naming: dataio.Naming | None) -> tuple[FeatureConfig, float | None, str | None]:
    """The clip length (``auto``: from the durations, printed with the reason) and how much of each clip to
    keep (``None``: one window holds every clip)."""
    found = dataio.scan(root, layout=layout, naming=naming)
    durations = [dataio.probe_seconds(c.path) for c in found.clips]
    why = None
    if clip_seconds == "auto":
        seconds, why = dataio.auto_clip_seconds(durations)
        config = dataclasses.replace(config, clip_duration=seconds)
        print(f"--clip-seconds auto: {seconds:g} s ({why})", flush=True)
    longest = min(max(durations, default=0.0), MAX_CLIP_SECONDS)
    return config, (longest if longest > config.clip_duration + 1e-9 else None), why


def build_featureset(data: str | Path, profile: str, *, layout: str = "auto", strict: bool = False,
                     cache_dir: str | Path | None = None, progress: bool = True,
                     frontend: Frontend | None = None, clip_seconds: float | str | None = None,
                     naming: dataio.Naming | None = None) -> tuple[FeatureSet, list]:
    """Load a dataset folder and compute padded features of whole clips (up to :data:`MAX_CLIP_SECONDS`)
    with the frontend. Returns (FeatureSet, skipped). ``clip_seconds``: the window length, a number or
    ``"auto"`` (overrides ``frontend.clip_seconds``)."""
    root = Path(data)
    if not root.is_dir():
        raise AuricleError(f"data folder {root} does not exist; pass --data DIR with one folder per class")
    config = frontend_config(profile, frontend)
    if clip_seconds not in (None, "auto"):
        config = dataclasses.replace(config, clip_duration=float(clip_seconds))
    config, keep, _ = _clip_plan(root, config, clip_seconds, layout, naming)
    ds = dataio.load_dataset(root, config, layout=layout, strict=strict, cache_dir=cache_dir, progress=progress,
                             naming=naming, keep_seconds=keep)
    ds.check_trainable()
    pad = pad_frames_for(config)
    padded = padded_log_mel(ds.waveforms, config, pad)
    rel = [os.path.relpath(c.path, root) for c in ds.clips]
    fs = FeatureSet(config=config, label_names=list(ds.labels), padded=padded, y=np.asarray(ds.label_ids),
                    split=np.asarray(ds.splits).astype(str), paths=np.asarray(rel, dtype=str), pad_frames=pad,
                    frames=frames_of(ds.lengths, config), groups=np.asarray([c.group for c in ds.clips], dtype=str),
                    split_rule=ds.discovery.split_rule)
    return fs, [(os.path.relpath(p, root), r) for p, r in ds.skipped]


# -- training --------------------------------------------------------------------------------
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
        print(f"\n{signal.Signals(signum).name}: stopping after this batch; the best model and report will "
              "still be written (send again to abort)", file=sys.stderr, flush=True)
        if self.model is not None:
            self.model.stop_training = True

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _make_dataset_class():
    import keras

    class AugmentedBatches(keras.utils.PyDataset):
        """Training batches: shuffled per epoch, augmented in the feature domain, seeded per epoch."""

        def __init__(self, fs, idx, batch_size, aug, seed, sample_weights=None, negatives=None, teacher=None,
                     distill_weight=0.0):
            super().__init__(workers=_loader_threads(), use_multiprocessing=False)
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

    return AugmentedBatches


def _loader_threads() -> int:
    """Batch-preparation threads: numpy releases the GIL in the heavy parts (matmul, log10)."""
    env = os.environ.get("AURICLE_LOADER_THREADS")
    if env:
        return max(1, int(env))
    return max(1, min(8, (os.cpu_count() or 1) - 1))


def _callbacks(out: Path, cfg: TrainConfig, total_epochs: int, initial_epoch: int, best_so_far: float,
               precise_bn: Any = None):
    import keras

    class EpochLine(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best = best_so_far
            self.t0 = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            va = float(logs.get("val_accuracy", float("nan")))
            improved = va > self.best
            self.best = max(self.best, va)
            print(f"epoch {epoch + 1:3d}/{total_epochs}  loss {logs.get('loss', float('nan')):.4f}  "
                  f"acc {logs.get('accuracy', float('nan')):.4f}  val_loss {logs.get('val_loss', float('nan')):.4f}  "
                  f"val_acc {va:.4f}{' *' if improved else '  '} best {self.best:.4f}  "
                  f"{time.perf_counter() - self.t0:.1f}s", flush=True)

    class BestAndLast(keras.callbacks.Callback):
        """model.keras = best val accuracy so far; checkpoint.keras + checkpoint.json = last epoch (resume)."""

        def __init__(self):
            super().__init__()
            self.best = best_so_far

        def on_epoch_end(self, epoch, logs=None):
            va = float((logs or {}).get("val_accuracy", -1.0))
            if va > self.best:
                self.best = va
                save_model_atomic(self.model, out / MODEL)
            save_model_atomic(self.model, out / CHECKPOINT)
            write_json_atomic(out / CHECKPOINT_STATE, {"epoch": epoch + 1, "best_val_accuracy": self.best})

    class TargetStop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            va = float((logs or {}).get("val_accuracy", 0.0))
            if cfg.target_accuracy is not None and va >= cfg.target_accuracy:
                print(f"validation accuracy {va:.4f} reached the target {cfg.target_accuracy:.4f}: stopping",
                      flush=True)
                self.model.stop_training = True

    class TimeLimit(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.t0 = time.perf_counter()
            self.fired = False

        def on_train_batch_end(self, batch, logs=None):
            if cfg.time_limit and not self.fired and time.perf_counter() - self.t0 > cfg.time_limit:
                self.fired = True
                print(f"time limit of {cfg.time_limit:.0f} s reached: stopping", flush=True)
                self.model.stop_training = True

    return [EpochLine(), BestAndLast(), TargetStop(), TimeLimit(),
            *_run_callbacks(out, cfg, initial_epoch, precise_bn)]


def _run_callbacks(out: Path, cfg: TrainConfig, initial_epoch: int, precise_bn: Any) -> list:
    """The history log, batch-norm re-estimation (after the others: it sees a stop they asked for in the
    same batch) and early stopping."""
    import keras

    cbs = [keras.callbacks.CSVLogger(str(out / HISTORY), append=initial_epoch > 0)]
    if precise_bn is not None:
        cbs.append(precise_bn)
    if cfg.patience:
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=cfg.patience, mode="max",
                                                 restore_best_weights=False))
    return cbs


class _Start(NamedTuple):
    """The model fitting starts from: fresh (epoch 0, no best yet) or a resumed checkpoint."""

    model: Any
    epoch: int              # the first epoch to run
    best: float             # best validation accuracy so far (-1 when fresh)


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


def _seed_and_precision(cfg: TrainConfig) -> None:
    import keras

    keras.utils.set_random_seed(cfg.seed)
    if os.environ.get("AURICLE_MIXED_PRECISION"):   # e.g. mixed_bfloat16 on a GPU host; weights stay float32
        keras.mixed_precision.set_global_policy(os.environ["AURICLE_MIXED_PRECISION"])


def _compiled_model(fs: FeatureSet, cfg: TrainConfig, train_size: int) -> Any:
    """A new network for ``fs``, compiled with AdamW on a cosine schedule over all ``cfg.epochs``."""
    import keras

    from training.models import build_model  # imports keras at its top: as lazy as keras

    steps = int(np.ceil(train_size / cfg.batch_size)) * cfg.epochs
    model = build_model(cfg.network, model_input_shape(fs.config), len(fs.label_names), profile=fs.config.profile,
                        width=cfg.resolved_width(), dropout=cfg.dropout, bn_momentum=resolved_bn_momentum(cfg, steps))
    return _compile(model, cfg, steps, cfg.learning_rate)


def _compile(model: Any, cfg: TrainConfig, steps: int, learning_rate: float) -> Any:
    """Compile ``model`` with AdamW on a cosine schedule over ``steps`` from ``learning_rate``."""
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, steps),
                                                      alpha=0.02, warmup_target=None)
    loss = keras.losses.CategoricalCrossentropy() if cfg.teacher else keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay), loss=loss,
                  metrics=["accuracy"], jit_compile=cfg.jit_compile)
    return model


#: learning rate of the all-layers phase of ``--init-from``, as a share of ``--lr`` (learnt features move less)
FINE_TUNE_LR_SCALE = 0.25


def resolved_bn_momentum(cfg: TrainConfig, total_steps: int) -> float:
    """``--bn-momentum``, else one chosen from the run's optimiser steps (0.99 for long runs)."""
    return cfg.bn_momentum if cfg.bn_momentum is not None else auto_bn_momentum(total_steps)


def _resumed(out: Path, config: FeatureConfig) -> _Start:
    import keras

    model = keras.saving.load_model(out / CHECKPOINT, safe_mode=True)
    check_config_matches_model(model, config)
    state = json.loads((out / CHECKPOINT_STATE).read_text())
    start = _Start(model, int(state["epoch"]), float(state["best_val_accuracy"]))
    print(f"resuming from epoch {start.epoch} (best val accuracy {start.best:.4f})", flush=True)
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
                print(f"--resume: no checkpoint in {out}; starting fresh", file=sys.stderr)
            model = _compiled_model(fs, cfg, train_size)
            if cfg.init_from:
                k = init_backbone(model, cfg)
                if k:
                    _compile(model, cfg, int(np.ceil(train_size / cfg.batch_size)) * k, cfg.learning_rate)
            start = _Start(model, 0, -1.0)
    if start.epoch >= cfg.epochs:
        print(f"checkpoint is already at epoch {start.epoch} >= --epochs {cfg.epochs}; nothing to train")
    return start


def _unfreeze(start: _Start, cfg: TrainConfig, out: Path, train_size: int) -> _Start:
    """After the frozen phase: every layer learns, at :data:`FINE_TUNE_LR_SCALE` of the learning rate, on a
    cosine over the epochs left; fitting goes on from the phase's last epoch and best validation accuracy."""
    set_backbone_trainable(start.model, True)
    k = frozen_epochs(cfg.epochs)
    steps = int(np.ceil(train_size / cfg.batch_size)) * (cfg.epochs - k)
    _compile(start.model, cfg, steps, cfg.learning_rate * FINE_TUNE_LR_SCALE)
    best = float(json.loads((out / CHECKPOINT_STATE).read_text())["best_val_accuracy"])
    print(f"--init-from: frozen phase done (best val accuracy {best:.4f}); training all layers", flush=True)
    return _Start(start.model, k, best)


def _check_resumed_loss(model: Any, cfg: TrainConfig) -> None:
    """A checkpoint keeps the loss it was compiled with: soft (distilled) targets need the categorical one."""
    categorical = type(getattr(model, "loss", None)).__name__ == "CategoricalCrossentropy"
    if bool(cfg.teacher) != categorical:
        raise AuricleError("--resume: the checkpoint was trained " + ("with" if categorical else "without")
                           + " --teacher; resume it the same way, or train into a new --out")


def _class_weight_vector(fs: FeatureSet, train_idx: np.ndarray, cfg: TrainConfig) -> np.ndarray | None:
    if not cfg.class_weighting:
        return None
    num_classes = len(fs.label_names)
    cw = class_weights(fs.y[train_idx], num_classes)
    return np.asarray([cw[i] for i in range(num_classes)], dtype=np.float32)


def _run_fit(start: _Start, batches: Any, validation: tuple[np.ndarray, np.ndarray], cfg: TrainConfig, out: Path,
             verbose: int, precise_bn: Any = None, end: int | None = None) -> int | None:
    """``model.fit`` from ``start.epoch`` to ``end`` (default ``cfg.epochs``); a SIGINT/SIGTERM stops it after
    the current batch. Returns that signal, or None."""
    with _Stop() as stop:
        stop.model = start.model
        start.model.fit(batches, validation_data=validation, epochs=end or cfg.epochs, initial_epoch=start.epoch,
                        callbacks=_callbacks(out, cfg, cfg.epochs, start.epoch, start.best, precise_bn),
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


def _summary(cfg: TrainConfig, out: Path, seconds: float, interrupted: int | None, resume: bool) -> dict[str, Any]:
    """Epochs run, best validation accuracy, seconds (a resumed run adds its earlier ones), stop reason, device."""
    import keras

    hist = read_history(out / HISTORY)
    prev = 0.0
    if resume and (out / TRAIN_SUMMARY).is_file():
        prev = float(json.loads((out / TRAIN_SUMMARY).read_text()).get("train_seconds", 0.0))
    return {"epochs_run": len(hist.get("epoch", [])), "best_val_accuracy": max(hist.get("val_accuracy", [0.0])),
            "train_seconds": round(prev + seconds, 2), "stop_reason": _stop_reason(cfg, hist, seconds, interrupted),
            "backend": keras.backend.backend(), "device": _device_name()}


def fit(fs: FeatureSet, cfg: TrainConfig, out: Path, *, resume: bool = False, distribute: bool = False,
        verbose: int = 1, negatives: NegativeMixer | None = None) -> dict[str, Any]:
    """Train on a FeatureSet; writes model.keras (best), checkpoint, history.csv into ``out``.

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
    teacher = Teacher(cfg.teacher, fs.label_names, fs.config) if cfg.teacher else None
    _seed_and_precision(cfg)
    start = _start_model(fs, cfg, out, resume=resume, distribute=distribute, train_size=train_idx.size)
    _check_resumed_loss(start.model, cfg)
    weights = _class_weight_vector(fs, train_idx, cfg)
    batches = _make_dataset_class()(fs, train_idx, cfg.batch_size, AugmentConfig(enabled=cfg.augment), cfg.seed,
                                    weights, negatives, teacher, cfg.distill_weight)
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
    if negatives is not None and cfg.mine_rounds > 0 and not interrupted:
        mining = mine_and_fine_tune(fs, cfg, out, negatives, weights, verbose=verbose)
        summary["mining"] = mining
        summary["epochs_run"] += sum(r.get("epochs", 0) for r in mining["rounds"])
        summary["train_seconds"] = round(summary["train_seconds"] + mining["seconds"], 2)
    write_json_atomic(out / TRAIN_SUMMARY, summary)
    return summary


def _freeze_batch_norm(model: Any) -> None:
    """Batch-norm layers keep their trained statistics in a short fine-tune (Keras 3: a frozen layer runs in
    inference mode); re-estimating them from batches full of mined windows cost ~5 validation points."""
    import keras

    for layer in getattr(model, "layers", ()):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        else:
            _freeze_batch_norm(layer)   # nested models


def _mining_round(model: Any, fs: FeatureSet, cfg: TrainConfig, mixer: NegativeMixer, weights: Any, r: int,
                  fg: np.ndarray, validation: tuple[np.ndarray, np.ndarray], verbose: int) -> dict[str, Any]:
    """Mine the train negatives with ``model``, fine-tune it in place; what the round saw and gave."""
    import keras

    hard, labels, stats = mine_labelled(model, mixer, fg, config=fs.config, threshold=cfg.mine_threshold)
    print(f"mining round {r + 1}: {stats['hard']} hard windows of {stats['windows']} "
          f"({stats['hard_per_hour']}/h of train negatives, {stats['seconds']} s)", flush=True)
    if not stats["hard"]:
        return {**stats, "epochs": 0}
    mixer.add_hard(hard, labels)
    _freeze_batch_norm(model)
    model.compile(optimizer=keras.optimizers.AdamW(cfg.learning_rate * 0.1, weight_decay=cfg.weight_decay),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"], jit_compile=cfg.jit_compile)
    data = _make_dataset_class()(fs, fs.indices("train"), cfg.batch_size, AugmentConfig(enabled=cfg.augment),
                                 cfg.seed + 1000 + r, weights, mixer)
    hist = model.fit(data, validation_data=validation, epochs=cfg.mine_epochs, verbose=verbose)
    stats["epochs"] = cfg.mine_epochs
    stats["val_accuracy"] = round(float(hist.history["val_accuracy"][-1]), 4)
    stats["val_windows_per_hour"] = round(window_false_accepts(model, mixer.bank, fg, config=fs.config,
                                                               threshold=cfg.mine_threshold), 1)
    print(f"mining round {r + 1}: val accuracy {stats['val_accuracy']:.4f}, validation negatives "
          f"{stats['val_windows_per_hour']:.0f} windows/h >= {cfg.mine_threshold}", flush=True)
    return stats


def mine_and_fine_tune(fs: FeatureSet, cfg: TrainConfig, out: Path, mixer: NegativeMixer, weights: Any, *,
                       verbose: int = 1) -> dict:
    """Hard-negative rounds on the best model: mine the train negatives, fine-tune ``mine_epochs`` at a tenth
    of the learning rate with the mined windows over-sampled, repeat. Chosen on validation: the round with
    the fewest validation-negative windows above the threshold whose validation accuracy fell by at most
    ``mine_max_drop``, else the model from before mining (kept as ``model_before_mining.keras``)."""
    import keras

    t0 = time.perf_counter()
    model = keras.saving.load_model(out / MODEL, safe_mode=True)
    save_model_atomic(model, out / "model_before_mining.keras")
    fg = foreground_mask(fs.label_names, [lab for lab in fs.label_names if lab.startswith("_")])
    val_idx = fs.indices("val")
    validation = (model_inputs(fs, val_idx), fs.y[val_idx])
    acc0 = float(np.mean(np.argmax(model.predict(validation[0], verbose=0), axis=1) == validation[1]))
    before = window_false_accepts(model, mixer.bank, fg, config=fs.config, threshold=cfg.mine_threshold)
    print(f"mining: val accuracy {acc0:.4f}, validation negatives {before:.0f} windows/h score >= "
          f"{cfg.mine_threshold}", flush=True)
    rounds, chosen, best_fa = [], 0, before
    for r in range(cfg.mine_rounds):
        stats = _mining_round(model, fs, cfg, mixer, weights, r, fg, validation, verbose)
        rounds.append(stats)
        if not stats["epochs"]:
            break
        if stats["val_accuracy"] >= acc0 - cfg.mine_max_drop and stats["val_windows_per_hour"] < best_fa:
            chosen, best_fa = r + 1, stats["val_windows_per_hour"]
            save_model_atomic(model, out / MODEL)
    print(f"mining: kept {'round ' + str(chosen) if chosen else 'the model from before mining'}", flush=True)
    return {"threshold": cfg.mine_threshold, "val_accuracy_before": round(acc0, 4),
            "val_windows_per_hour_before": round(before, 1), "max_accuracy_drop": cfg.mine_max_drop,
            "rounds": rounds, "chosen_round": chosen, "seconds": round(time.perf_counter() - t0, 2)}


def _distribution_scope(distribute: bool):
    import keras
    if not distribute:
        return contextlib.nullcontext()
    if keras.backend.backend() == "jax":
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        print(f"--distribute: keras.distribution.DataParallel over {len(devices)} device(s)", flush=True)
        return contextlib.nullcontext()
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # only here: the one place training touches tf.*
        strategy = tf.distribute.MirroredStrategy()
        print(f"--distribute: tf.distribute.MirroredStrategy over {strategy.num_replicas_in_sync} replica(s)",
              flush=True)
        return strategy.scope()
    raise AuricleError(f"--distribute is not supported on the {keras.backend.backend()} backend; use jax or tensorflow")


def _device_name() -> str:
    """The accelerators (JAX backend) and the CPU, as the report names where training ran."""
    gpus = []
    try:
        import keras
        if keras.backend.backend() == "jax":
            import jax
            gpus = [d.device_kind for d in jax.devices() if d.platform != "cpu"]
    except Exception:  # pragma: no cover - best effort description
        pass
    return f"{', '.join(gpus)} + {cpu_name()}" if gpus else cpu_description()


# -- the core ----------------------------------------------------------------------------------
def _check_config(config: TrainConfig) -> None:
    if config.network not in NETWORKS:
        raise AuricleError(f"--network must be one of {NETWORKS}, got {config.network!r}")
    if config.target_accuracy is not None and not 0 < config.target_accuracy <= 1:
        raise AuricleError(f"--target-accuracy must be in (0, 1], got {config.target_accuracy}")
    if config.epochs < 1 or (config.batch_size is not None and config.batch_size < 1):
        raise AuricleError("--epochs and --batch-size must be >= 1")
    _check_negative_settings(config)
    if not 0 <= config.distill_weight <= 1:
        raise AuricleError(f"--distill-weight must be in [0, 1], got {config.distill_weight}")


def _check_negative_settings(config: TrainConfig) -> None:
    if not 0 < config.negative_fraction <= 4:
        raise AuricleError(f"--negative-fraction must be in (0, 4], got {config.negative_fraction}")
    if not 0 <= config.negative_mix_prob <= 1:
        raise AuricleError(f"--negative-mix-prob must be in [0, 1], got {config.negative_mix_prob}")
    lo, hi = config.negative_snr_db
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise AuricleError(f"--negative-snr needs two finite dB values, low first; got {lo:g} {hi:g}")


def _load_features(data: str | Path | None, features: str | Path | None, profile: str, *, layout: str,
                   strict: bool, cache_dir: str | Path | None, frontend: Frontend | None = None,
                   clip_seconds: float | str | None = None,
                   naming: dataio.Naming | None = None) -> tuple[FeatureSet, list]:
    """A saved feature set (``features``), else one computed from the dataset folder; and the skipped files."""
    if features:
        fs = FeatureSet.load(features)
        if fs.config.profile != profile:
            raise AuricleError(f"features in {features} are for the {fs.config.profile} profile, not "
                               f"{profile}; pass --profile {fs.config.profile}")
        return fs, []
    if data is None:
        raise AuricleError("pass --data DIR (or --features NPZ)")
    return build_featureset(data, profile, layout=layout, strict=strict, cache_dir=cache_dir, frontend=frontend,
                            clip_seconds=clip_seconds, naming=naming)


def _negative_mixer(fs: FeatureSet, config: TrainConfig, negatives: Sequence[str | Path], cache_dir: Any,
                    noise_paths: Sequence[str | Path] = ()) -> NegativeMixer:
    """Load the negatives' train/validation files and the mixer that puts them into batches. Negatives are
    labelled as the data's own background class (``_unknown_``...), else a new ``_background_`` class."""
    noise_index = None
    if noise_paths:
        if NOISE_LABEL not in fs.label_names:
            raise AuricleError(f"--noise-negatives labels speech-free audio as the data's {NOISE_LABEL!r} class, "
                               "which this data set lacks; leave the option out")
        noise_index = fs.label_names.index(NOISE_LABEL)
    bank = load_negative_bank(negatives, fs.config, cache_dir=cache_dir, noise_paths=noise_paths)
    label = background_label(fs.label_names)
    if label not in fs.label_names:
        fs.label_names.append(label)
    print(f"negatives are labelled {label!r}", flush=True)
    return NegativeMixer(bank=bank, background_index=fs.label_names.index(label),
                         fraction=config.negative_fraction, mix_prob=config.negative_mix_prob,
                         snr_db=config.negative_snr_db, noise_index=noise_index)


def _split_rule(fs: FeatureSet, naming: dataio.Naming | None) -> str | None:
    """How the run's split was made, for the report (``None``: the default rule's text)."""
    rule = fs.split_rule
    if naming is not None and naming.group_regex and rule in (None, SHA1_RULE, DEALT_RULE):
        return f"{rule or SHA1_RULE}; group = first group of --group-by {naming.group_regex!r} in the file name"
    return rule


def _naming_dict(naming: dataio.Naming | None) -> dict[str, Any] | None:
    return dataclasses.asdict(naming) if naming is not None else None


def _export(out: Path, to: str | Path, fs: FeatureSet, config: TrainConfig, summary: dict[str, Any],
            report: dict[str, Any], skipped: list, dtype: str) -> None:
    import keras

    best = keras.saving.load_model(out / MODEL, safe_mode=True)
    weights_io.export_weights(best, to, prefix=out.name, dtype=dtype,
                              meta={"train_config": config.to_dict(), "feature_config": fs.config.to_dict(),
                                    "labels": list(fs.label_names), "summary": summary, "skipped": skipped,
                                    "history_csv": (out / HISTORY).read_text(), "accuracy": report["accuracy"]})
    print(f"exported weights of {out.name} to {to}", flush=True)


def train(*, data: str | Path | None, out: str | Path, config: TrainConfig, features: str | Path | None = None,
          save_features: str | Path | None = None, layout: str = "auto", strict: bool = False,
          cache_dir: str | Path | None = None, resume: bool = False, distribute: bool = False,
          export_weights: str | Path | None = None, export_dtype: str = "float32", verbose: int = 1,
          negatives: Sequence[str | Path] | None = None, frontend: Frontend | None = None,
          clip_seconds: float | str | None = None, naming: dataio.Naming | None = None,
          noise_negatives: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Everything ``python -m training.train`` does: load, fit, evaluate, write the run folder."""
    _check_config(config)
    config = with_source_network(config)
    if noise_negatives and not negatives:
        raise AuricleError("--noise-negatives names parts of the --negatives; pass --negatives too")
    out = Path(out)
    fs, skipped = _load_features(data, features, config.profile, layout=layout, strict=strict, cache_dir=cache_dir,
                                 frontend=frontend, clip_seconds=clip_seconds, naming=naming)
    if save_features:
        fs.save(save_features)
        print(f"saved features to {save_features}", flush=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuricleError(f"cannot create run folder {out}: {exc.strerror}; choose a writable --out") from None
    config = config.with_batch_size(int((fs.split == "train").sum()))
    mixer = _negative_mixer(fs, config, negatives, cache_dir, noise_negatives) if negatives else None
    write_json_atomic(out / TRAIN_CONFIG, {**config.to_dict(), "data": str(data) if data else None,
                                           "features": str(features) if features else None,
                                           "negatives": [str(n) for n in negatives or []] or None,
                                           "noise_negatives": [str(n) for n in noise_negatives] or None,
                                           "negative_split": mixer.bank.summary() if mixer else None,
                                           "clip_seconds": clip_seconds, "naming": _naming_dict(naming),
                                           "split_rule": _split_rule(fs, naming)})
    write_split(out / SPLIT, fs.split_rows())
    summary = fit(fs, config, out, resume=resume, distribute=distribute, verbose=verbose, negatives=mixer)
    report = write_report(out, fs, config, summary, skipped=skipped, split_rule=_split_rule(fs, naming))
    if export_weights:
        _export(out, export_weights, fs, config, summary, report, skipped, export_dtype)
    if report.get("batch_norm_warning"):
        print(f"warning: {report['batch_norm_warning']}", file=sys.stderr, flush=True)
    acc = report["accuracy"]
    print(f"run written to {out}: " + ", ".join(f"{k} accuracy {v:.4f}" for k, v in acc.items()), flush=True)
    return report


# -- CLI ---------------------------------------------------------------------------------------
def _add_input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="dataset folder: one folder per class, or flat files named LABEL_N.ext")
    p.add_argument("--features", help="a feature .npz from --save-features (skips decoding; for GPU hosts)")
    p.add_argument("--save-features", help="also save the computed features to this .npz")
    p.add_argument("--network", choices=NETWORKS, default="mobilenet", help="the network to train")
    p.add_argument("--model", dest="network", choices=NETWORKS, metavar="NETWORK", default=argparse.SUPPRESS,
                   help="alias of --network")
    p.add_argument("--profile", choices=("seed", "edge"), default="edge",
                   help="seed: 224x224x3 images as the original study; edge: native frames x mels x 1")
    p.add_argument("--width", type=float, default=None, help="width multiplier (MobileNet alpha); default "
                   "1.0 for seed, 0.5 for edge")


def _clip_seconds(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of seconds nor 'auto'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0 seconds")
    return value


def _add_frontend_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("frontend (default: the profile's, as the shipped bundles use; all recorded in "
                             "feature_config.json and the bundle manifest)")
    g.add_argument("--sample-rate", type=int, default=None, metavar="HZ", help="model sample rate (edge/seed: 16000)")
    g.add_argument("--clip-seconds", type=_clip_seconds, default=None, metavar="SECONDS|auto",
                   help="window length (default 1). 'auto': the 90th percentile of the clip durations, capped at "
                        f"{dataio.AUTO_CLIP_MAX_SECONDS:g} s; longer clips are covered by several windows")
    g.add_argument("--n-mels", type=int, default=None, help="mel bands (edge 40, seed 64)")
    g.add_argument("--window-ms", type=float, default=None, help="STFT window in ms (edge 25, seed 64)")
    g.add_argument("--hop-ms", type=float, default=None, help="STFT hop in ms (edge 10, seed 16)")
    g.add_argument("--fmin", type=float, default=None, help="lowest mel frequency in Hz (20)")
    g.add_argument("--fmax", type=float, default=None, help="highest mel frequency in Hz (8000, at most rate/2)")
    dataio.add_naming_options(g)


def _frontend_from(args: argparse.Namespace) -> Frontend:
    return Frontend(sample_rate=args.sample_rate, n_mels=args.n_mels, window_ms=args.window_ms, hop_ms=args.hop_ms,
                    fmin=args.fmin, fmax=args.fmax)


def _add_fit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size,
                   help="default: 64 for large train splits, down to 16 so that an epoch has about 20 steps")
    p.add_argument("--lr", type=float, default=TrainConfig.learning_rate, help="peak learning rate (AdamW, cosine)")
    p.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay, help="AdamW decoupled weight decay")
    p.add_argument("--dropout", type=float, default=TrainConfig.dropout, help="dropout before the classifier")
    p.add_argument("--bn-momentum", type=float, default=TrainConfig.bn_momentum,
                   help="batch-norm moving-average momentum (default: from the run's steps, 0.99 for long runs, "
                        "down to 0.9 for runs of a few hundred steps)")
    p.add_argument("--no-precise-bn", action="store_true",
                   help="keep the moving batch-norm statistics as training left them (default: re-estimate them "
                        "over un-augmented train windows before every validation pass and so in the saved model)")
    p.add_argument("--patience", type=int, default=TrainConfig.patience,
                   help="stop after this many epochs without a better validation accuracy (0: never)")
    p.add_argument("--target-accuracy", type=float, default=None, metavar="ACC",
                   help="stop once validation accuracy reaches ACC (e.g. 0.90)")
    p.add_argument("--study-recipe", action="store_true",
                   help="the original study's stop rule: 0.90 (MobileNet) / 0.87 (ResNet-18) validation accuracy")
    p.add_argument("--no-augment", action="store_true", help="turn off time shift, gain, noise and SpecAugment")
    p.add_argument("--no-class-weights", action="store_true")
    p.add_argument("--seed", type=int, default=0)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--distribute", action="store_true",
                   help="data-parallel over all accelerators (keras.distribution on JAX, MirroredStrategy on TF)")
    p.add_argument("--layout", choices=("auto", "folders", "filenames"), default="auto")
    p.add_argument("--strict", action="store_true", help="fail on an unreadable clip instead of skipping it")
    p.add_argument("--cache-dir", help="feature cache folder (default ~/.cache/auricle/features)")
    p.add_argument("--quiet", action="store_true", help="no Keras progress bars (epoch lines stay)")
    p.add_argument("--time-limit", type=float, default=None, metavar="SEC",
                   help="stop fitting after SEC seconds (cleanly: best model and report are written)")


def _add_negative_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--negatives", nargs="+", metavar="DIR",
                   help="folders/files of audio with none of the target sounds: split by file (sha1 of the path "
                        "relative to DIR), train windows go into every batch as the background class and are "
                        "mixed under positives; the test part is never read")
    p.add_argument("--noise-negatives", nargs="+", default=[], metavar="PATH",
                   help="the parts of the --negatives (subfolders or files) with no speech in them: their windows "
                        "are labelled as the data's _silence_ class rather than as unknown speech (their split "
                        "does not change)")
    p.add_argument("--negative-fraction", type=float, default=TrainConfig.negative_fraction, metavar="F",
                   help="negative windows appended to each batch, as a fraction of the batch size")
    p.add_argument("--negative-mix-prob", type=float, default=TrainConfig.negative_mix_prob, metavar="P",
                   help="chance that a positive clip gets a negative window mixed under it (0: never)")
    p.add_argument("--negative-snr", type=float, nargs=2, default=TrainConfig.negative_snr_db,
                   metavar=("LO", "HI"), help="signal-to-negative ratio range of that mix, in dB")
    p.add_argument("--mine-rounds", type=int, default=0, metavar="N",
                   help="hard-negative mining rounds after training: windows of the train negatives that score "
                        "above --mine-threshold are over-sampled in a short fine-tune")
    p.add_argument("--mine-epochs", type=int, default=TrainConfig.mine_epochs, metavar="E",
                   help="fine-tune epochs per mining round")
    p.add_argument("--mine-max-drop", type=float, default=TrainConfig.mine_max_drop, metavar="D",
                   help="keep a mined model only if its validation accuracy fell by at most D (else the one "
                        "from before mining)")
    p.add_argument("--mine-threshold", type=float, default=TrainConfig.mine_threshold, metavar="P",
                   help="reportable-label probability that makes a negative window hard")


def _add_init_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init-from", metavar="RUN",
                   help="start from the learnt weights of a trained run folder (its --out; not a bundle: bundles "
                        "hold TFLite models only): a new classifier for these labels, a frozen phase (a fifth of "
                        "--epochs, at most 10) then all layers at a quarter of --lr; same frontend as that run "
                        "(only --clip-seconds may differ), its network, width and normalisation")


def _add_distill_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", metavar="BUNDLE",
                   help="distil from a bundle (same labels and frontend, trained on this split's train part): "
                        "each positive's target mixes in the teacher's scores for the same augmented window")
    p.add_argument("--distill-weight", type=float, default=TrainConfig.distill_weight, metavar="A",
                   help="share of the teacher's scores in the target (0: plain labels)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train MobileNet v1 or ResNet-18 on log-mel features and write a run folder "
                    "(model.keras, labels, feature config, split, history, report, curves, confusion matrix).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Example: python -m training.train --data ../shared/data/speech_commands_v0.02_test "
               "--network mobilenet --profile edge --out runs/kws_mobilenet_edge\n"
               "The original study's recipe: --study-recipe (stop at 90%% / 87%% validation accuracy).")
    _add_input_options(p)
    _add_frontend_options(p)
    _add_fit_options(p)
    _add_run_options(p)
    _add_negative_options(p)
    _add_distill_options(p)
    _add_init_options(p)
    p.add_argument("--export-dtype", choices=("float32", "float16"), default="float32",
                   help="dtype of --export-weights arrays (float16 halves a big model's transfer)")
    p.add_argument("--export-weights", metavar="DIR",
                   help="also write the best weights as .npz chunks + meta.json (to bring a GPU run home; "
                        "see python -m training.weights_io)")
    return p


def _config_from(args: argparse.Namespace) -> TrainConfig:
    target = STUDY_TARGETS[args.network] if args.study_recipe else args.target_accuracy
    return TrainConfig(network=args.network, profile=args.profile, width=args.width, epochs=args.epochs,
                       batch_size=args.batch_size, learning_rate=args.lr, target_accuracy=target,
                       patience=args.patience, augment=not args.no_augment, seed=args.seed,
                       class_weighting=not args.no_class_weights, time_limit=args.time_limit,
                       weight_decay=args.weight_decay, dropout=args.dropout, bn_momentum=args.bn_momentum,
                       precise_bn=not args.no_precise_bn,
                       negative_fraction=args.negative_fraction, negative_mix_prob=args.negative_mix_prob,
                       negative_snr_db=tuple(args.negative_snr), mine_rounds=args.mine_rounds,
                       mine_epochs=args.mine_epochs, mine_threshold=args.mine_threshold,
                       mine_max_drop=args.mine_max_drop, teacher=args.teacher, distill_weight=args.distill_weight,
                       init_from=args.init_from)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = _config_from(args)
    if args.mine_rounds and not args.negatives:
        raise AuricleError("--mine-rounds needs --negatives DIR (the audio to mine)")
    frontend, naming = _frontend_from(args), dataio.naming_from(args)
    if args.features and not (frontend.is_default() and args.clip_seconds is None and naming == dataio.Naming()):
        raise AuricleError("--features already holds computed features; the frontend, --clip-seconds and naming "
                           "options apply to --data only -- drop them or use --data")
    frontend_config(args.profile, frontend)   # bad settings: one line now, not after decoding
    if args.init_from:                         # a bad source too
        check_frontend(read_source(args.init_from), frontend_config(args.profile, frontend))
    train(data=args.data, out=args.out, config=cfg, features=args.features, save_features=args.save_features,
          layout=args.layout, strict=args.strict, cache_dir=args.cache_dir, resume=args.resume,
          distribute=args.distribute, export_weights=args.export_weights, export_dtype=args.export_dtype,
          verbose=0 if args.quiet else 1, negatives=args.negatives, frontend=frontend,
          clip_seconds=args.clip_seconds, naming=naming, noise_negatives=args.noise_negatives)
    return 0


if __name__ == "__main__":
    run_cli(main)
