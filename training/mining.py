"""Learning to reject: negative windows in every batch, negative audio under positives, hard-negative mining.

:class:`NegativeMixer` is what the training batches call; :func:`mine_hard_negatives` scores every window
of the *train* negatives with the current model and keeps those that look like a target sound;
:func:`mine_and_fine_tune` (the step :func:`training.loop.fit` runs after fitting) then trains a few epochs at
a low learning rate with those windows over-sampled, round by round, and keeps the best round. Keras and the
loop are imported inside the functions that train: the mixer alone stays light.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge.features import to_model_input
from training.config import TrainConfig
from training.featureset import FeatureSet, model_inputs
from training.negatives import NegativeBank, mix_under
from training.run_folder import MODEL, save_model_atomic

log = logging.getLogger(__name__)


@dataclasses.dataclass
class NegativeMixer:
    """Adds background windows to a batch and mixes negative audio under some positives."""

    bank: NegativeBank
    background_index: int
    fraction: float = 0.25                    # appended windows per batch, as a fraction of its size
    mix_prob: float = 0.5
    snr_db: tuple[float, float] = (0.0, 20.0)
    weight: float = 1.0                       # sample weight of an appended window
    hard: np.ndarray | None = None            # mined windows (N, n_frames, n_mels) float16, over-sampled
    hard_labels: np.ndarray | None = None     # their labels (N,)
    hard_share: float = 0.5                   # share of the appended windows drawn from ``hard``
    noise_index: int | None = None            # label of windows from noise files (None: the background label)

    def add_hard(self, windows: np.ndarray, labels: np.ndarray) -> None:
        self.hard = windows if self.hard is None else np.concatenate([self.hard, windows])
        self.hard_labels = labels if self.hard_labels is None else np.concatenate([self.hard_labels, labels])

    def _windows(self, rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``k`` windows and their labels: noise files' windows (their share of the audio) get
        ``noise_index``, the rest the background label, mined windows the label of the file they came from."""
        n_hard = int(round(k * self.hard_share)) if self.hard is not None and len(self.hard) else 0
        n_noise = 0
        if self.noise_index is not None:
            n_noise = int(rng.binomial(k - n_hard, self.bank.noise_share()))
        parts = [self.bank.random_windows(rng, n_noise, noise=True) if n_noise else None,
                 self.bank.random_windows(rng, k - n_hard - n_noise,
                                          noise=False if self.noise_index is not None else None)]
        labels = [np.full(n_noise, -1 if self.noise_index is None else self.noise_index),
                  np.full(k - n_hard - n_noise, self.background_index)]
        if n_hard:
            pick = rng.integers(0, len(self.hard), size=n_hard)
            parts.append(np.asarray(self.hard[pick], dtype=np.float32))
            labels.append(self.hard_labels[pick] if self.hard_labels is not None
                          else np.full(n_hard, self.background_index))
        return np.concatenate([p for p in parts if p is not None]), np.concatenate(labels)

    def extend(self, x: np.ndarray, y: np.ndarray, w: np.ndarray | None, rng: np.random.Generator, *,
               enabled: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The batch with negatives mixed under positives and background windows appended."""
        cfg = self.bank.config
        if enabled and self.mix_prob > 0:
            mix = rng.random(len(x)) < self.mix_prob
            if mix.any():
                x = x.copy()
                x[mix] = mix_under(x[mix], self.bank.random_windows(rng, int(mix.sum())), rng, self.snr_db, cfg)
        k = max(1, int(round(len(x) * self.fraction)))
        neg, neg_y = self._windows(rng, k)
        if enabled:
            neg += rng.uniform(-6.0, 6.0, size=(k, 1, 1)).astype(np.float32)   # gain, as for positives
        x = np.concatenate([x, neg])
        y = np.concatenate([y, neg_y.astype(y.dtype)])
        if w is not None:
            w = np.concatenate([w, np.full(k, self.weight, dtype=np.float32)])
        return x, y, w


def foreground_scores(model: Any, windows: np.ndarray, config: Any, foreground: np.ndarray) -> np.ndarray:
    """The highest reportable-label probability of each window (model in inference mode)."""
    probs = np.asarray(model.predict(to_model_input(windows, config), batch_size=256, verbose=0))
    return probs[:, foreground].max(axis=1)


def mine_hard_negatives(model: Any, bank: NegativeBank, foreground: np.ndarray, *, config: Any, threshold: float,
                        hop_frames: int = 10, limit: int = 8000, split: str = "train",
                        seed: int = 0, noise: bool | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """Windows of ``split`` negatives scoring >= ``threshold`` for any reportable label (at most ``limit``,
    the highest-scoring kept), and what the pass saw: windows, hits, seconds. ``config`` is the model's own
    frontend config, with the normalisation it was trained on (the bank's copy may predate it)."""
    t0 = time.perf_counter()
    kept: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    total = 0
    for batch in bank.sliding_windows(split, hop_frames, noise):
        s = foreground_scores(model, batch, config, foreground)
        total += len(batch)
        hit = s >= threshold
        if hit.any():
            kept.append(batch[hit].astype(np.float16))
            scores.append(s[hit])
    hard = np.concatenate(kept) if kept else np.empty((0, bank.config.n_frames, bank.config.n_mels), np.float16)
    if len(hard) > limit:
        order = np.argsort(-np.concatenate(scores))[:limit]
        hard = hard[np.sort(order)]
    hours = bank.seconds(split, noise) / 3600
    stats = {"windows": total, "hard": int(len(hard)), "hard_per_hour": round(len(hard) / max(hours, 1e-9), 1),
             "seconds": round(time.perf_counter() - t0, 1)}
    return hard, stats


def mine_labelled(model: Any, mixer: NegativeMixer, foreground: np.ndarray, *, config: Any,
                  threshold: float) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """:func:`mine_hard_negatives` over the mixer's train negatives, with each window's label: noise files'
    windows (when the mixer has a noise label) apart from the others. Stats summed over both."""
    kinds = (None,) if mixer.noise_index is None else (False, True)
    found = [mine_hard_negatives(model, mixer.bank, foreground, config=config, threshold=threshold, noise=kind)
             for kind in kinds]
    hard = np.concatenate([h for h, _ in found])
    labels = np.concatenate([np.full(len(h), mixer.noise_index if kind else mixer.background_index)
                             for (h, _), kind in zip(found, kinds)])
    hours = mixer.bank.seconds("train") / 3600
    stats = {"windows": sum(st["windows"] for _, st in found), "hard": int(len(hard)),
             "hard_per_hour": round(len(hard) / max(hours, 1e-9), 1),
             "seconds": round(sum(st["seconds"] for _, st in found), 1)}
    return hard, labels, stats


def window_false_accepts(model: Any, bank: NegativeBank, foreground: np.ndarray, *, config: Any, threshold: float,
                         split: str = "val", hop_frames: int = 10) -> float:
    """Windows per hour of ``split`` negatives above ``threshold``: a quick, detector-free rejection figure
    (``config``: the model's frontend config, as for :func:`mine_hard_negatives`)."""
    hits = 0
    for batch in bank.sliding_windows(split, hop_frames):
        hits += int((foreground_scores(model, batch, config, foreground) >= threshold).sum())
    return hits / max(bank.seconds(split) / 3600, 1e-9)


def foreground_mask(labels: Sequence[str], background: Sequence[str]) -> np.ndarray:
    return np.asarray([lab not in set(background) for lab in labels], dtype=bool)


# -- hard-negative rounds after training ---------------------------------------------------------
def freeze_batch_norm(model: Any) -> None:
    """Batch-norm layers keep their trained statistics in a short fine-tune (Keras 3: a frozen layer runs in
    inference mode); re-estimating them from batches full of mined windows cost ~5 validation points."""
    import keras

    for layer in getattr(model, "layers", ()):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        else:
            freeze_batch_norm(layer)   # nested models


def _mining_round(model: Any, fs: FeatureSet, cfg: TrainConfig, mixer: NegativeMixer, weights: Any, r: int,
                  fg: np.ndarray, validation: tuple[np.ndarray, np.ndarray], verbose: int) -> dict[str, Any]:
    """Mine the train negatives with ``model``, fine-tune it in place; what the round saw and gave."""
    import keras

    from training.loop import make_batches

    hard, labels, stats = mine_labelled(model, mixer, fg, config=fs.config, threshold=cfg.mine_threshold)
    log.info(f"mining round {r + 1}: {stats['hard']} hard windows of {stats['windows']} "
             f"({stats['hard_per_hour']}/h of train negatives, {stats['seconds']} s)")
    if not stats["hard"]:
        return {**stats, "epochs": 0}
    mixer.add_hard(hard, labels)
    freeze_batch_norm(model)
    model.compile(optimizer=keras.optimizers.AdamW(cfg.learning_rate * 0.1, weight_decay=cfg.weight_decay),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"], jit_compile=cfg.jit_compile)
    data = make_batches(fs, fs.indices("train"), cfg, seed=cfg.seed + 1000 + r, sample_weights=weights,
                        negatives=mixer)
    hist = model.fit(data, validation_data=validation, epochs=cfg.mine_epochs, verbose=verbose)
    stats["epochs"] = cfg.mine_epochs
    stats["val_accuracy"] = round(float(hist.history["val_accuracy"][-1]), 4)
    stats["val_windows_per_hour"] = round(window_false_accepts(model, mixer.bank, fg, config=fs.config,
                                                               threshold=cfg.mine_threshold), 1)
    log.info(f"mining round {r + 1}: val accuracy {stats['val_accuracy']:.4f}, validation negatives "
             f"{stats['val_windows_per_hour']:.0f} windows/h >= {cfg.mine_threshold}")
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
    log.info(f"mining: val accuracy {acc0:.4f}, validation negatives {before:.0f} windows/h score >= "
             f"{cfg.mine_threshold}")
    rounds, chosen, best_fa = [], 0, before
    for r in range(cfg.mine_rounds):
        stats = _mining_round(model, fs, cfg, mixer, weights, r, fg, validation, verbose)
        rounds.append(stats)
        if not stats["epochs"]:
            break
        if stats["val_accuracy"] >= acc0 - cfg.mine_max_drop and stats["val_windows_per_hour"] < best_fa:
            chosen, best_fa = r + 1, stats["val_windows_per_hour"]
            save_model_atomic(model, out / MODEL)
    log.info(f"mining: kept {'round ' + str(chosen) if chosen else 'the model from before mining'}")
    return {"threshold": cfg.mine_threshold, "val_accuracy_before": round(acc0, 4),
            "val_windows_per_hour_before": round(before, 1), "max_accuracy_drop": cfg.mine_max_drop,
            "rounds": rounds, "chosen_round": chosen, "seconds": round(time.perf_counter() - t0, 2)}
