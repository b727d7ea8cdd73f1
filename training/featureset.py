"""Padded log-mel features for a whole dataset, and the training-time augmentation that runs on them.

Each clip's waveform is zero-padded by ``pad_frames`` hops on both sides and run once through the one
frontend (``edge.features.log_mel``). Training then works in the feature domain, so a 2-core CPU or a GPU
host never recomputes an FFT per epoch.

Whole clips: a clip's row holds all of its frames (``frames[i]`` of them; a clip shorter than one window
counts as one zero-padded window; rows are zero-audio-padded to the longest clip). Training draws a random
window over the *whole* clip each epoch; evaluation (:func:`clip_level_scores`) slides the window over the
clip every half window and averages the scores (the clip-level rule of :mod:`edge.classifier`).

* **time shift**: a random ``n_frames`` crop of the padded frames anywhere in the clip, up to
  ``pad_frames`` beyond either end (exact, at hop resolution; for a one-window clip the centre crop equals
  the unpadded clip's features exactly);
* **gain**: a dB offset (exact: dB with a fixed reference);
* **background noise**: a random crop of a noise clip (the data's ``_silence_`` training clips) added in
  the *power* domain at a random level -- the expected value of mixing in the waveform domain;
* **SpecAugment**: time and frequency masks filled with the window's mean.

A FeatureSet saves to a single ``.npz`` (no pickle), which is how features travel to a GPU host.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from edge.classifier import clip_scores, window_starts
from edge.errors import AuricleError
from edge.features import FeatureConfig, log_mel, model_input_shape, to_model_input
from edge.fileio import atomic_writer
from training.data import group_of
from training.run_folder import SplitRow

NOISE_LABELS = ("_silence_", "_background_noise_", "silence", "noise")


@dataclasses.dataclass
class FeatureSet:
    config: FeatureConfig
    label_names: list[str]
    padded: np.ndarray          # (N, n_frames + 2*pad_frames, n_mels) float32/float16 dB
    y: np.ndarray               # (N,) int
    split: np.ndarray           # (N,) str: train / val / test
    paths: np.ndarray           # (N,) str, relative to the data root
    pad_frames: int
    frames: np.ndarray | None = None    # (N,) frames of each clip's own audio (>= n_frames); None: one window
    groups: np.ndarray | None = None    # (N,) str split group of each clip; None: from the file name
    split_rule: str | None = None       # how the splits were made (edge.splits); None: not recorded

    def __post_init__(self) -> None:
        n = len(self.y)
        if not (self.padded.shape[0] == n == len(self.split) == len(self.paths)):
            raise AuricleError("feature set arrays disagree in length; rebuild the features")
        if self.padded.shape[1] < self.config.n_frames + 2 * self.pad_frames:
            raise AuricleError(f"padded features have {self.padded.shape[1]} frames, expected at least "
                               f"{self.config.n_frames + 2 * self.pad_frames}; rebuild them with this config")
        if self.frames is None:
            self.frames = np.full(n, self.config.n_frames, dtype=np.int64)
        self.frames = np.clip(np.asarray(self.frames, dtype=np.int64), self.config.n_frames,
                              self.padded.shape[1] - 2 * self.pad_frames)

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def centre(self, idx: np.ndarray | None = None) -> np.ndarray:
        """Un-augmented windows: the middle window of each clip (a one-window clip: exactly the features of
        the unpadded clip)."""
        p, n = self.pad_frames, self.config.n_frames
        idx = np.arange(len(self.y)) if idx is None else np.asarray(idx)
        offs = p + (self.frames[idx] - n) // 2
        if not np.any(offs != p):
            return np.asarray(self.padded[idx][:, p:p + n], dtype=np.float32)
        return np.stack([np.asarray(self.padded[i, o:o + n], dtype=np.float32) for i, o in zip(idx, offs)])

    def windows(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every evaluation window of the clips ``idx`` (the clip-level rule: every half window, the last
        aligned with the clip's end): ``(windows, n_frames, n_mels)`` and the position in ``idx`` each
        window belongs to."""
        p, n = self.pad_frames, self.config.n_frames
        parts, owners = [], []
        for k, i in enumerate(np.asarray(idx)):
            for s in window_starts(int(self.frames[i]), n):
                parts.append(np.asarray(self.padded[i, p + s:p + s + n], dtype=np.float32))
                owners.append(k)
        if not parts:
            return np.empty((0, n, self.config.n_mels), dtype=np.float32), np.empty(0, dtype=np.int64)
        return np.stack(parts), np.asarray(owners, dtype=np.int64)

    def noise_indices(self) -> np.ndarray:
        names = [i for i, lab in enumerate(self.label_names) if lab in NOISE_LABELS]
        if not names:
            return np.empty(0, dtype=int)
        return np.flatnonzero(np.isin(self.y, names) & (self.split == "train"))

    def split_rows(self) -> list[SplitRow]:
        """The run folder's ``split.csv`` rows: path (relative to the data root), label, group, split."""
        groups = self.groups if self.groups is not None else [group_of(Path(str(p)).name) for p in self.paths]
        return [SplitRow(Path(str(p)).as_posix(), self.label_names[int(y)], str(g), str(s))
                for p, y, g, s in zip(self.paths, self.y, groups, self.split)]

    def save(self, path: str | Path, *, dtype: str = "float16") -> None:
        extra = {"groups": np.asarray(self.groups, dtype=str)} if self.groups is not None else {}
        if self.split_rule:
            extra["split_rule"] = np.asarray(self.split_rule)
        with atomic_writer(path, binary=True) as fh:
            np.savez(fh, padded=self.padded.astype(dtype), y=self.y.astype(np.int16), split=self.split.astype("U5"),
                     paths=self.paths.astype(str), label_names=np.asarray(self.label_names, dtype=str),
                     config=np.asarray(self.config.to_json()), pad_frames=np.asarray(self.pad_frames),
                     frames=np.asarray(self.frames, dtype=np.int64), **extra)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSet":
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(config=FeatureConfig.from_json(str(z["config"])), label_names=[str(s) for s in z["label_names"]],
                           padded=z["padded"], y=z["y"].astype(np.int64), split=z["split"], paths=z["paths"],
                           pad_frames=int(z["pad_frames"]),
                           frames=z["frames"] if "frames" in z.files else None,
                           groups=z["groups"] if "groups" in z.files else None,
                           split_rule=str(z["split_rule"]) if "split_rule" in z.files else None)
        except (OSError, KeyError, ValueError) as exc:
            raise AuricleError(f"cannot read feature set {path}: {exc}; rebuild it with --save-features") from None


def pad_frames_for(config: FeatureConfig, shift_seconds: float = 0.1) -> int:
    return int(round(shift_seconds * config.sample_rate / config.hop_length))


def frames_of(samples: np.ndarray | int, config: FeatureConfig) -> np.ndarray:
    """Log-mel frames of clips of ``samples`` samples, at least one window (a shorter clip is padded)."""
    s = np.maximum(np.asarray(samples, dtype=np.int64), config.clip_samples)
    return 1 + (s - config.n_fft) // config.hop_length


def padded_log_mel(waveforms: np.ndarray, config: FeatureConfig, pad_frames: int) -> np.ndarray:
    """(N, samples >= clip_samples) -> (N, frames + 2*pad_frames, n_mels) float32."""
    pad = pad_frames * config.hop_length
    total = int(frames_of(waveforms.shape[1], config)) + 2 * pad_frames
    out = np.empty((len(waveforms), total, config.n_mels), dtype=np.float32)
    for i, w in enumerate(waveforms):
        out[i] = log_mel(np.pad(np.asarray(w, dtype=np.float32), (pad, pad)), config)
    return out


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = True
    time_shift: bool = True
    gain_db: float = 6.0             # uniform +-gain_db
    noise_prob: float = 0.8
    noise_db: tuple[float, float] = (-30.0, 0.0)   # noise level relative to the noise clip's own level
    time_masks: int = 2
    time_mask_frac: float = 0.1      # each mask up to this fraction of the frames
    freq_masks: int = 2
    freq_mask_frac: float = 0.125

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def augment_batch(fs: FeatureSet, idx: np.ndarray, rng: np.random.Generator, aug: AugmentConfig,
                  noise_idx: np.ndarray) -> np.ndarray:
    """Windows (B, n_frames, n_mels) float32 dB for clip indices ``idx``, augmented per ``aug``."""
    cfg, n = fs.config, fs.config.n_frames
    b = len(idx)
    if not aug.enabled:
        return fs.centre(idx)
    x = np.stack([np.asarray(fs.padded[i, o:o + n], dtype=np.float32)
                  for i, o in zip(idx, random_offsets(fs, idx, rng, time_shift=aug.time_shift))])
    if aug.gain_db:
        x += rng.uniform(-aug.gain_db, aug.gain_db, size=(b, 1, 1)).astype(np.float32)
    if aug.noise_prob > 0 and noise_idx.size:
        mix = rng.random(b) < aug.noise_prob
        if mix.any():
            k = int(mix.sum())
            src = rng.choice(noise_idx, size=k)
            total = fs.padded.shape[1]
            starts = rng.integers(0, total - n + 1, size=k)
            noise = np.stack([np.asarray(fs.padded[s, o:o + n], dtype=np.float32) for s, o in zip(src, starts)])
            level = rng.uniform(*aug.noise_db, size=(k, 1, 1)).astype(np.float32)
            sig = np.power(10.0, x[mix] / 10.0) + np.power(10.0, (noise + level) / 10.0)
            x[mix] = 10.0 * np.log10(np.maximum(sig, cfg.amin)) - 10.0 * np.log10(max(cfg.amin, cfg.ref_power))
    for i in range(b):
        fill = x[i].mean()
        for _ in range(aug.time_masks):
            w = int(rng.integers(0, max(1, int(n * aug.time_mask_frac)) + 1))
            if w:
                t0 = int(rng.integers(0, n - w + 1))
                x[i, t0:t0 + w, :] = fill
        for _ in range(aug.freq_masks):
            w = int(rng.integers(0, max(1, int(cfg.n_mels * aug.freq_mask_frac)) + 1))
            if w:
                f0 = int(rng.integers(0, cfg.n_mels - w + 1))
                x[i, :, f0:f0 + w] = fill
    return x


def random_offsets(fs: FeatureSet, idx: np.ndarray, rng: np.random.Generator, *, time_shift: bool = True) -> np.ndarray:
    """A random window start (into the padded rows) per clip, uniform over the whole clip: from ``pad_frames``
    before its first frame to ``pad_frames`` beyond its last window (without ``time_shift``: within the clip)."""
    p, n = fs.pad_frames, fs.config.n_frames
    span = fs.frames[np.asarray(idx)] - n          # start positions within the clip: 0..span
    if time_shift and p:
        return rng.integers(0, span + 2 * p + 1)
    return p + rng.integers(0, span + 1)


def clip_level_scores(predict: Callable[[np.ndarray], np.ndarray], fs: FeatureSet, idx: np.ndarray,
                      batch: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The clip-level rule on clips ``idx``: every window through ``predict`` (model inputs -> scores), then
    the mean per clip. Returns ``(clip scores, window scores, window owner)`` (owner: position in ``idx``)."""
    frames, owners = fs.windows(idx)
    parts = [np.asarray(predict(to_model_input(frames[i:i + batch], fs.config)), dtype=np.float64)
             for i in range(0, len(frames), batch)]
    per_window = np.concatenate(parts) if parts else np.empty((0, len(fs.label_names)))
    return clip_scores(per_window, owners, len(idx)), per_window, owners


def normalisation_stats(fs: FeatureSet) -> tuple[float, float]:
    """Mean and std of the training split's (un-augmented) dB values: the edge profile's normalisation."""
    train = fs.indices("train")
    if train.size == 0:
        raise AuricleError("the training split is empty; the data needs more speakers/groups")
    x = fs.centre(train)
    return float(x.mean()), float(x.std() + 1e-6)


def model_inputs(fs: FeatureSet, idx: np.ndarray, batch: int = 256) -> np.ndarray:
    """Un-augmented model inputs (profile transform applied) for evaluation."""
    parts = [to_model_input(fs.centre(idx[i:i + batch]), fs.config) for i in range(0, len(idx), batch)]
    if not parts:
        return np.empty((0, *model_input_shape(fs.config)), dtype=np.float32)
    return np.concatenate(parts)


def class_weights(y: np.ndarray, num_classes: int) -> dict[int, float]:
    """Inverse-frequency weights over the classes present (mean 1 over them); 0 for a class with no clips (a
    background class whose windows come from --negatives has its own weight)."""
    counts = np.bincount(y, minlength=num_classes).astype(float)
    present = counts > 0
    w = np.zeros(num_classes, dtype=float)
    w[present] = counts.sum() / (int(present.sum()) * counts[present])
    return {i: float(v) for i, v in enumerate(w)}

