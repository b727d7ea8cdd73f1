"""Train MobileNet or ResNet-18 on log-mel features: ``python -m training.train --help``.

A thin CLI over :func:`train`, a typed keyword-only core. Backend-agnostic Keras 3 (TensorFlow on the CPU,
JAX on a GPU host). Writes a run folder (see :mod:`training.report`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge.errors import AuricleError, run_cli
from edge.features import FeatureConfig, edge_config, model_input_shape, seed_config

NETWORKS = ("mobilenet", "resnet18")
STUDY_TARGETS = {"mobilenet": 0.90, "resnet18": 0.87}   # the original study's early-stopping thresholds
DEFAULT_WIDTH = {("mobilenet", "seed"): 1.0, ("resnet18", "seed"): 1.0,
                 ("mobilenet", "edge"): 0.5, ("resnet18", "edge"): 0.5}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    network: str = "mobilenet"
    profile: str = "edge"
    width: float | None = None          # None: DEFAULT_WIDTH for network/profile
    epochs: int = 60
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    dropout: float = 0.2
    target_accuracy: float | None = None
    patience: int = 15
    augment: bool = True
    seed: int = 0
    class_weighting: bool = True
    time_limit: float | None = None     # seconds of fitting; then stop cleanly as on SIGINT
    bn_momentum: float = 0.99           # lower it for runs of only a few dozen steps
    jit_compile: bool | str = "auto"    # XLA; False skips a compile that dominates very short runs
    negative_fraction: float = 0.25     # with --negatives: background windows appended per batch (x batch size)
    negative_mix_prob: float = 0.5      # with --negatives: chance a positive gets negative audio mixed under it
    negative_snr_db: tuple[float, float] = (0.0, 20.0)   # SNR range of that mix
    mine_rounds: int = 0                # hard-negative mining rounds after training (needs --negatives)
    mine_epochs: int = 2                # fine-tune epochs per mining round
    mine_threshold: float = 0.5         # a negative window scoring this much for a reportable label is "hard"

    def resolved_width(self) -> float:
        return self.width if self.width is not None else DEFAULT_WIDTH[(self.network, self.profile)]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["width"] = self.resolved_width()
        return d


def feature_config_for(profile: str) -> FeatureConfig:
    if profile == "edge":
        return edge_config()
    if profile == "seed":
        return seed_config()
    raise AuricleError(f"--profile must be 'seed' or 'edge', got {profile!r}")


def check_config_matches_model(model: Any, config: FeatureConfig) -> None:
    want = tuple(model_input_shape(config))
    have = tuple(int(d) for d in model.input_shape[1:])
    if have != want:
        raise AuricleError(f"model input {have} does not match the feature config ({config.profile} profile -> "
                           f"{want}); use the feature config the model was trained with")


# -- data ------------------------------------------------------------------------------------
def build_featureset(data: str | Path, profile: str, *, layout: str = "auto", strict: bool = False,
                     cache_dir: str | Path | None = None, progress: bool = True):
    """Load a dataset folder and compute padded features with the frontend. Returns (FeatureSet, skipped)."""
    from training import data as dataio
    from training.featureset import FeatureSet, pad_frames_for, padded_log_mel

    root = Path(data)
    if not root.is_dir():
        raise AuricleError(f"data folder {root} does not exist; pass --data DIR with one folder per class")
    config = feature_config_for(profile)
    ds = dataio.load_dataset(root, config, layout=layout, strict=strict, cache_dir=cache_dir, progress=progress)
    ds.check_trainable()
    pad = pad_frames_for(config)
    padded = padded_log_mel(ds.waveforms, config, pad)
    rel = [os.path.relpath(c.path, root) for c in ds.clips]
    fs = FeatureSet(config=config, label_names=list(ds.labels), padded=padded, y=np.asarray(ds.label_ids),
                    split=np.asarray(ds.splits).astype(str), paths=np.asarray(rel, dtype=str), pad_frames=pad)
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

        def __init__(self, fs, idx, batch_size, aug, seed, sample_weights=None, negatives=None):
            super().__init__(workers=_loader_threads(), use_multiprocessing=False)
            self.fs, self.idx, self.batch_size, self.aug, self.seed = fs, np.asarray(idx), batch_size, aug, seed
            self.noise_idx = fs.noise_indices()
            self.sample_weights = sample_weights
            self.negatives = negatives          # training.mining.NegativeMixer or None
            self.epoch = 0
            self._order = self._shuffle()

        def _shuffle(self):
            return np.random.default_rng([self.seed, self.epoch, 1]).permutation(self.idx)

        def __len__(self):
            return int(np.ceil(len(self.idx) / self.batch_size))

        def __getitem__(self, i):
            from edge.features import to_model_input
            from training.featureset import augment_batch
            sel = self._order[i * self.batch_size:(i + 1) * self.batch_size]
            rng = np.random.default_rng([self.seed, self.epoch, 2, i])
            x = augment_batch(self.fs, sel, rng, self.aug, self.noise_idx)
            y = self.fs.y[sel]
            w = self.sample_weights[y].astype(np.float32) if self.sample_weights is not None else None
            if self.negatives is not None:
                x, y, w = self.negatives.extend(x, y, w, rng, enabled=self.aug.enabled)
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


def _callbacks(out: Path, cfg: TrainConfig, total_epochs: int, initial_epoch: int, best_so_far: float):
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
                _save_model_atomic(self.model, out / "model.keras")
            _save_model_atomic(self.model, out / "checkpoint.keras")
            _write_json_atomic(out / "checkpoint.json", {"epoch": epoch + 1, "best_val_accuracy": self.best})

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

    cbs = [EpochLine(), BestAndLast(), TargetStop(), TimeLimit(),
           keras.callbacks.CSVLogger(str(out / "history.csv"), append=initial_epoch > 0)]
    if cfg.patience:
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=cfg.patience, mode="max",
                                                 restore_best_weights=False))
    return cbs


def _save_model_atomic(model: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def _write_json_atomic(path: Path, data: Any) -> None:
    from edge.fileio import write_json_atomic
    write_json_atomic(path, data)


def fit(fs, cfg: TrainConfig, out: Path, *, resume: bool = False, distribute: bool = False,
        verbose: int = 1, negatives: Any = None) -> dict[str, Any]:
    """Train on a FeatureSet; writes model.keras (best), checkpoint, history.csv into ``out``.

    Returns a summary dict (epochs run, best val accuracy, training seconds, stop reason)."""
    import keras

    from training.featureset import AugmentConfig, class_weights, model_inputs, normalisation_stats
    from training.models import build_model

    out.mkdir(parents=True, exist_ok=True)
    train_idx, val_idx = fs.indices("train"), fs.indices("val")
    if train_idx.size == 0 or val_idx.size == 0:
        raise AuricleError(f"need clips in both train and validation splits (have {train_idx.size} and "
                           f"{val_idx.size}); add data from more speakers/sources")
    if fs.config.profile == "edge" and fs.config.norm_std == 1.0 and fs.config.norm_mean == 0.0:
        mean, std = normalisation_stats(fs)
        fs.config = dataclasses.replace(fs.config, norm_mean=mean, norm_std=std)
    (out / "feature_config.json").write_text(fs.config.to_json() + "\n")
    (out / "labels.txt").write_text("\n".join(fs.label_names) + "\n")

    keras.utils.set_random_seed(cfg.seed)
    if os.environ.get("AURICLE_MIXED_PRECISION"):   # e.g. mixed_bfloat16 on a GPU host; weights stay float32
        keras.mixed_precision.set_global_policy(os.environ["AURICLE_MIXED_PRECISION"])
    num_classes = len(fs.label_names)
    shape = model_input_shape(fs.config)
    initial_epoch, best = 0, -1.0
    strategy_scope = _distribution_scope(distribute)
    with strategy_scope:
        if resume and (out / "checkpoint.keras").is_file():
            model = keras.saving.load_model(out / "checkpoint.keras", safe_mode=True)
            check_config_matches_model(model, fs.config)
            state = json.loads((out / "checkpoint.json").read_text())
            initial_epoch, best = int(state["epoch"]), float(state["best_val_accuracy"])
            print(f"resuming from epoch {initial_epoch} (best val accuracy {best:.4f})", flush=True)
        else:
            if resume:
                print(f"--resume: no checkpoint in {out}; starting fresh", file=sys.stderr)
            model = build_model(cfg.network, shape, num_classes, profile=fs.config.profile,
                                width=cfg.resolved_width(), dropout=cfg.dropout, bn_momentum=cfg.bn_momentum)
            steps = int(np.ceil(train_idx.size / cfg.batch_size)) * cfg.epochs
            schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=max(1, steps),
                                                              alpha=0.02, warmup_target=None)
            model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay),
                          loss=keras.losses.SparseCategoricalCrossentropy(),
                          metrics=["accuracy"], jit_compile=cfg.jit_compile)
    if initial_epoch >= cfg.epochs:
        print(f"checkpoint is already at epoch {initial_epoch} >= --epochs {cfg.epochs}; nothing to train")

    aug = AugmentConfig(enabled=cfg.augment)
    weights = None
    if cfg.class_weighting:
        cw = class_weights(fs.y[train_idx], num_classes)
        weights = np.asarray([cw[i] for i in range(num_classes)], dtype=np.float32)
    Batches = _make_dataset_class()
    train_data = Batches(fs, train_idx, cfg.batch_size, aug, cfg.seed, weights, negatives)
    train_data.epoch = initial_epoch
    val_x, val_y = model_inputs(fs, val_idx), fs.y[val_idx]

    t0 = time.perf_counter()
    with _Stop() as stop:
        stop.model = model
        model.fit(train_data, validation_data=(val_x, val_y), epochs=cfg.epochs, initial_epoch=initial_epoch,
                  callbacks=_callbacks(out, cfg, cfg.epochs, initial_epoch, best), verbose=verbose)
        interrupted = stop.signal
    seconds = time.perf_counter() - t0
    if not (out / "model.keras").is_file():   # interrupted before one epoch ended: keep what there is
        _save_model_atomic(model, out / "model.keras")
    reason = ("signal " + signal.Signals(interrupted).name) if interrupted else "completed"
    hist = read_history(out / "history.csv")
    if hist.get("val_accuracy"):
        va = hist["val_accuracy"]
        if cfg.target_accuracy is not None and max(va) >= cfg.target_accuracy:
            reason = f"target validation accuracy {cfg.target_accuracy} reached"
        elif cfg.time_limit and seconds >= cfg.time_limit and len(va) < cfg.epochs:
            reason = f"time limit {cfg.time_limit:.0f} s"
        elif len(va) < cfg.epochs and not interrupted and cfg.patience:
            reason = f"no improvement for {cfg.patience} epochs"
    prev = 0.0
    if resume and (out / "train_summary.json").is_file():
        prev = float(json.loads((out / "train_summary.json").read_text()).get("train_seconds", 0.0))
    summary = {"epochs_run": len(hist.get("epoch", [])), "best_val_accuracy": max(hist.get("val_accuracy", [0.0])),
               "train_seconds": round(prev + seconds, 2), "stop_reason": reason, "backend": keras.backend.backend(),
               "device": _device_name()}
    if negatives is not None and cfg.mine_rounds > 0:
        summary["mining"] = mine_and_fine_tune(fs, cfg, out, negatives, weights, verbose=verbose)
        summary["epochs_run"] += sum(r.get("epochs", 0) for r in summary["mining"]["rounds"])
        summary["train_seconds"] = round(summary["train_seconds"] + summary["mining"]["seconds"], 2)
    _write_json_atomic(out / "train_summary.json", summary)
    return summary


def mine_and_fine_tune(fs, cfg: TrainConfig, out: Path, mixer: Any, weights: Any, *, verbose: int = 1) -> dict:
    """Hard-negative rounds on the best model: mine the train negatives, fine-tune ``mine_epochs`` at a tenth
    of the learning rate with the mined windows over-sampled, repeat. ``model.keras`` becomes the result."""
    import keras

    from training.featureset import AugmentConfig, model_inputs
    from training.mining import foreground_mask, mine_hard_negatives, window_false_accepts

    t0 = time.perf_counter()
    model = keras.saving.load_model(out / "model.keras", safe_mode=True)
    fg = foreground_mask(fs.label_names, [lab for lab in fs.label_names if lab.startswith("_")])
    val_idx = fs.indices("val")
    val_x, val_y = model_inputs(fs, val_idx), fs.y[val_idx]
    before = window_false_accepts(model, mixer.bank, fg, threshold=cfg.mine_threshold)
    print(f"mining: validation negatives: {before:.0f} windows/h score >= {cfg.mine_threshold}", flush=True)
    rounds = []
    Batches = _make_dataset_class()
    for r in range(cfg.mine_rounds):
        hard, stats = mine_hard_negatives(model, mixer.bank, fg, threshold=cfg.mine_threshold)
        print(f"mining round {r + 1}: {stats['hard']} hard windows of {stats['windows']} "
              f"({stats['hard_per_hour']}/h of train negatives, {stats['seconds']} s)", flush=True)
        if not stats["hard"]:
            rounds.append({**stats, "epochs": 0})
            break
        mixer.hard = hard if mixer.hard is None else np.concatenate([mixer.hard, hard])
        model.compile(optimizer=keras.optimizers.AdamW(cfg.learning_rate * 0.1, weight_decay=cfg.weight_decay),
                      loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"],
                      jit_compile=cfg.jit_compile)
        data = Batches(fs, fs.indices("train"), cfg.batch_size, AugmentConfig(enabled=cfg.augment),
                       cfg.seed + 1000 + r, weights, mixer)
        hist = model.fit(data, validation_data=(val_x, val_y), epochs=cfg.mine_epochs, verbose=verbose)
        stats["epochs"] = cfg.mine_epochs
        stats["val_accuracy"] = round(float(hist.history["val_accuracy"][-1]), 4)
        stats["val_windows_per_hour"] = round(window_false_accepts(model, mixer.bank, fg,
                                                                   threshold=cfg.mine_threshold), 1)
        print(f"mining round {r + 1}: val accuracy {stats['val_accuracy']:.4f}, validation negatives "
              f"{stats['val_windows_per_hour']:.0f} windows/h >= {cfg.mine_threshold}", flush=True)
        rounds.append(stats)
        _save_model_atomic(model, out / "model.keras")
    return {"threshold": cfg.mine_threshold, "val_windows_per_hour_before": round(before, 1), "rounds": rounds,
            "seconds": round(time.perf_counter() - t0, 2)}


def recalibrate_batchnorm(model: Any, fs, *, clips: int = 1024, batch_size: int = 64, seed: int = 0) -> int:
    """Re-estimate every BatchNormalization layer's moving mean/variance as the exact average over
    ``clips`` training clips (un-augmented, training-mode forward passes, no weight update).

    A short, high-learning-rate run leaves the moving averages behind the weights (the model is right in
    training mode and wrong in inference mode); this "precise BN" pass repairs that without training.
    Returns the number of batches used."""
    import keras

    from training.featureset import model_inputs

    bn_layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not bn_layers:
        return 0
    train_idx = fs.indices("train")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(train_idx)[:clips]
    saved = [layer.momentum for layer in bn_layers]
    n = 0
    try:
        for start in range(0, len(idx), batch_size):
            n += 1
            for layer in bn_layers:   # cumulative average: moving = (n-1)/n * moving + 1/n * batch
                layer.momentum = (n - 1) / n
            model(model_inputs(fs, idx[start:start + batch_size]), training=True)
    finally:
        for layer, m in zip(bn_layers, saved):
            layer.momentum = m
    return n


def _distribution_scope(distribute: bool):
    import contextlib

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
    import platform
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpus = []
    try:
        import keras
        if keras.backend.backend() == "jax":
            import jax
            gpus = [d.device_kind for d in jax.devices() if d.platform != "cpu"]
    except Exception:  # pragma: no cover - best effort description
        pass
    return f"{', '.join(gpus)} + {cpu}" if gpus else f"{cpu} ({os.cpu_count()} cores)"


def read_history(path: Path) -> dict[str, list[float]]:
    import csv
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols: dict[str, list[float]] = {}
    for row in rows:
        for k, v in row.items():
            try:
                cols.setdefault(k, []).append(float(v))
            except (TypeError, ValueError):
                pass
    return cols


def train(*, data: str | Path | None, out: str | Path, config: TrainConfig, features: str | Path | None = None,
          save_features: str | Path | None = None, layout: str = "auto", strict: bool = False,
          cache_dir: str | Path | None = None, resume: bool = False, distribute: bool = False,
          export_weights: str | Path | None = None, export_dtype: str = "float32", verbose: int = 1,
          negatives: Sequence[str | Path] | None = None) -> dict[str, Any]:
    """Everything ``python -m training.train`` does: load, fit, evaluate, write the run folder."""
    from training.featureset import FeatureSet
    from training.report import write_report

    if config.network not in NETWORKS:
        raise AuricleError(f"--model must be one of {NETWORKS}, got {config.network!r}")
    if config.target_accuracy is not None and not 0 < config.target_accuracy <= 1:
        raise AuricleError(f"--target-accuracy must be in (0, 1], got {config.target_accuracy}")
    if config.epochs < 1 or config.batch_size < 1:
        raise AuricleError("--epochs and --batch-size must be >= 1")
    out = Path(out)
    skipped: list = []
    if features:
        fs = FeatureSet.load(features)
        if fs.config.profile != config.profile:
            raise AuricleError(f"features in {features} are for the {fs.config.profile} profile, not "
                               f"{config.profile}; pass --profile {fs.config.profile}")
    else:
        if data is None:
            raise AuricleError("pass --data DIR (or --features NPZ)")
        fs, skipped = build_featureset(data, config.profile, layout=layout, strict=strict, cache_dir=cache_dir)
    if save_features:
        fs.save(save_features)
        print(f"saved features to {save_features}", flush=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuricleError(f"cannot create run folder {out}: {exc.strerror}; choose a writable --out") from None
    mixer = _negative_mixer(fs, config, negatives, cache_dir) if negatives else None
    _write_json_atomic(out / "train_config.json", {**config.to_dict(), "data": str(data) if data else None,
                                                   "features": str(features) if features else None,
                                                   "negatives": [str(n) for n in negatives or []] or None,
                                                   "negative_split": mixer.bank.summary() if mixer else None})
    split_csv(fs, out / "split.csv")
    summary = fit(fs, config, out, resume=resume, distribute=distribute, verbose=verbose, negatives=mixer)
    report = write_report(out, fs, config, summary, skipped=skipped)
    if export_weights:
        import keras

        from training.weights_io import export_weights as export
        best = keras.saving.load_model(out / "model.keras", safe_mode=True)
        export(best, export_weights, prefix=out.name, dtype=export_dtype,
               meta={"train_config": config.to_dict(), "feature_config": fs.config.to_dict(),
                     "labels": list(fs.label_names), "summary": summary, "skipped": skipped,
                     "history_csv": (out / "history.csv").read_text(), "accuracy": report["accuracy"]})
        print(f"exported weights of {out.name} to {export_weights}", flush=True)
    acc = report["accuracy"]
    print(f"run written to {out}: " + ", ".join(f"{k} accuracy {v:.4f}" for k, v in acc.items()), flush=True)
    return report


def _negative_mixer(fs, config: TrainConfig, negatives: Sequence[str | Path], cache_dir: Any):
    """Load the negatives' train/validation files and the mixer that puts them into batches. Negatives are
    labelled as the data's own background class (``_unknown_``...), else a new ``_background_`` class."""
    from training.mining import NegativeMixer
    from training.negatives import background_label, load_negative_bank

    if not 0 < config.negative_fraction <= 4:
        raise AuricleError(f"--negative-fraction must be in (0, 4], got {config.negative_fraction}")
    bank = load_negative_bank(negatives, fs.config, cache_dir=cache_dir)
    label = background_label(fs.label_names)
    if label not in fs.label_names:
        fs.label_names.append(label)
    print(f"negatives are labelled {label!r}", flush=True)
    return NegativeMixer(bank=bank, background_index=fs.label_names.index(label),
                         fraction=config.negative_fraction, mix_prob=config.negative_mix_prob,
                         snr_db=config.negative_snr_db)


def split_csv(fs, path: Path) -> None:
    import csv
    import io
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "label", "split"])
    for p, y, s in zip(fs.paths, fs.y, fs.split):
        w.writerow([str(p), fs.label_names[int(y)], str(s)])
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train MobileNet v1 or ResNet-18 on log-mel features and write a run folder "
                    "(model.keras, labels, feature config, split, history, report, curves, confusion matrix).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Example: python -m training.train --data ../shared/data/speech_commands_v0.02_test "
               "--model mobilenet --profile edge --out runs/kws_mobilenet_edge\n"
               "The original study's recipe: --study-recipe (stop at 90%% / 87%% validation accuracy).")
    p.add_argument("--data", help="dataset folder: one folder per class, or flat files named LABEL_N.ext")
    p.add_argument("--features", help="a feature .npz from --save-features (skips decoding; for GPU hosts)")
    p.add_argument("--save-features", help="also save the computed features to this .npz")
    p.add_argument("--model", choices=NETWORKS, default="mobilenet")
    p.add_argument("--profile", choices=("seed", "edge"), default="edge",
                   help="seed: 224x224x3 images as the original study; edge: native frames x mels x 1")
    p.add_argument("--width", type=float, default=None, help="width multiplier (MobileNet alpha); default "
                   "1.0 for seed, 0.5 for edge")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.learning_rate, help="peak learning rate (AdamW, cosine)")
    p.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay, help="AdamW decoupled weight decay")
    p.add_argument("--dropout", type=float, default=TrainConfig.dropout, help="dropout before the classifier")
    p.add_argument("--bn-momentum", type=float, default=TrainConfig.bn_momentum,
                   help="batch-norm moving-average momentum (lower for very short runs)")
    p.add_argument("--patience", type=int, default=TrainConfig.patience,
                   help="stop after this many epochs without a better validation accuracy (0: never)")
    p.add_argument("--target-accuracy", type=float, default=None, metavar="ACC",
                   help="stop once validation accuracy reaches ACC (e.g. 0.90)")
    p.add_argument("--study-recipe", action="store_true",
                   help="the original study's stop rule: 0.90 (MobileNet) / 0.87 (ResNet-18) validation accuracy")
    p.add_argument("--no-augment", action="store_true", help="turn off time shift, gain, noise and SpecAugment")
    p.add_argument("--no-class-weights", action="store_true")
    p.add_argument("--seed", type=int, default=0)
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
    p.add_argument("--negatives", nargs="+", metavar="DIR",
                   help="folders/files of audio with none of the target sounds: split by file (sha1 of the path "
                        "relative to DIR), train windows go into every batch as the background class and are "
                        "mixed under positives; the test part is never read")
    p.add_argument("--negative-fraction", type=float, default=TrainConfig.negative_fraction, metavar="F",
                   help="negative windows appended to each batch, as a fraction of the batch size")
    p.add_argument("--mine-rounds", type=int, default=0, metavar="N",
                   help="hard-negative mining rounds after training: windows of the train negatives that score "
                        "above --mine-threshold are over-sampled in a short fine-tune")
    p.add_argument("--mine-epochs", type=int, default=TrainConfig.mine_epochs, metavar="E",
                   help="fine-tune epochs per mining round")
    p.add_argument("--mine-threshold", type=float, default=TrainConfig.mine_threshold, metavar="P",
                   help="reportable-label probability that makes a negative window hard")
    p.add_argument("--export-dtype", choices=("float32", "float16"), default="float32",
                   help="dtype of --export-weights arrays (float16 halves a big model's transfer)")
    p.add_argument("--export-weights", metavar="DIR",
                   help="also write the best weights as .npz chunks + meta.json (to bring a GPU run home; "
                        "see python -m training.weights_io)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    target = args.target_accuracy
    if args.study_recipe:
        target = STUDY_TARGETS[args.model]
    cfg = TrainConfig(network=args.model, profile=args.profile, width=args.width, epochs=args.epochs,
                      batch_size=args.batch_size, learning_rate=args.lr, target_accuracy=target,
                      patience=args.patience, augment=not args.no_augment, seed=args.seed,
                      class_weighting=not args.no_class_weights, time_limit=args.time_limit,
                      weight_decay=args.weight_decay, dropout=args.dropout, bn_momentum=args.bn_momentum,
                      negative_fraction=args.negative_fraction, mine_rounds=args.mine_rounds,
                      mine_epochs=args.mine_epochs, mine_threshold=args.mine_threshold)
    if args.mine_rounds and not args.negatives:
        raise AuricleError("--mine-rounds needs --negatives DIR (the audio to mine)")
    train(data=args.data, out=args.out, config=cfg, features=args.features, save_features=args.save_features,
          layout=args.layout, strict=args.strict, cache_dir=args.cache_dir, resume=args.resume,
          distribute=args.distribute, export_weights=args.export_weights, export_dtype=args.export_dtype,
          verbose=0 if args.quiet else 1, negatives=args.negatives)
    return 0


if __name__ == "__main__":
    run_cli(main)
