"""What a training run is configured by: the networks, their default widths, the study's targets and
:class:`TrainConfig` -- defined here once, for the CLI, the builders and the weight import.

No Keras here: a GPU host or the converter can read a run's configuration without importing a backend.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from edge.errors import AuricleError
from edge.features import PROFILES, FeatureConfig, edge_config, seed_config

__all__ = ["NETWORKS", "PROFILES", "DEFAULT_WIDTH", "STUDY_TARGETS", "TrainConfig", "feature_config_for",
           "Frontend", "frontend_config"]

NETWORKS = ("mobilenet", "resnet18")
#: width multiplier (MobileNet alpha, ResNet channel scale) when --width is not given, by (network, profile)
DEFAULT_WIDTH: dict[tuple[str, str], float] = {("mobilenet", "seed"): 1.0, ("resnet18", "seed"): 1.0,
                                               ("mobilenet", "edge"): 0.5, ("resnet18", "edge"): 0.5}
#: the smallest and largest batch size chosen when --batch-size is not given
AUTO_BATCH = (16, 64)
#: the original study's early-stopping thresholds (validation accuracy), by network
STUDY_TARGETS: dict[str, float] = {"mobilenet": 0.90, "resnet18": 0.87}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    network: str = "mobilenet"
    profile: str = "edge"
    width: float | None = None          # None: DEFAULT_WIDTH for network/profile
    epochs: int = 60
    batch_size: int | None = None       # None: from the train split's size (resolved_batch_size)
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    dropout: float = 0.2
    target_accuracy: float | None = None
    patience: int = 15
    augment: bool = True
    seed: int = 0
    class_weighting: bool = True
    time_limit: float | None = None     # seconds of fitting; then stop cleanly as on SIGINT
    bn_momentum: float | None = None    # None: from the run's steps (training.bn_check.auto_bn_momentum)
    precise_bn: bool = True             # re-estimate batch-norm statistics before each validation pass
    jit_compile: bool | str = "auto"    # XLA; False skips a compile that dominates very short runs
    negative_fraction: float = 0.25     # with --negatives: background windows appended per batch (x batch size)
    negative_mix_prob: float = 0.5      # with --negatives: chance a positive gets negative audio mixed under it
    negative_snr_db: tuple[float, float] = (0.0, 20.0)   # SNR range of that mix
    mine_rounds: int = 0                # hard-negative mining rounds after training (needs --negatives)
    mine_epochs: int = 2                # fine-tune epochs per mining round
    mine_threshold: float = 0.5         # a negative window scoring this much for a reportable label is "hard"
    mine_max_drop: float = 0.01         # a mined model is kept only if validation accuracy fell by at most this
    teacher: str | None = None          # a bundle whose scores are mixed into the targets (knowledge distillation)
    distill_weight: float = 0.5         # share of the teacher's scores in each positive's target
    init_from: str | None = None        # a run folder or backbone bundle whose learnt weights the network starts from

    def resolved_batch_size(self, train_clips: int) -> int:
        """``batch_size``, else 64 for a large train split and down to 16 for a small one, so that an epoch
        has about 20 optimiser steps (a few hundred clips took 6 steps an epoch at 64 and learnt too little
        in 20 epochs)."""
        if self.batch_size is not None:
            return self.batch_size
        return AUTO_BATCH[0] if train_clips < 1 else int(min(AUTO_BATCH[1], max(AUTO_BATCH[0],
                                                       2 ** math.floor(math.log2(max(1, train_clips / 20))))))

    def with_batch_size(self, train_clips: int) -> "TrainConfig":
        return dataclasses.replace(self, batch_size=self.resolved_batch_size(train_clips))

    def resolved_width(self) -> float:
        return self.width if self.width is not None else DEFAULT_WIDTH[(self.network, self.profile)]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["width"] = self.resolved_width()
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """The config a run recorded (``train_config.json`` or an export's meta); unknown keys -- settings of
        other versions, the run's data folder -- are left out."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("negative_snr_db"), list):
            values["negative_snr_db"] = tuple(values["negative_snr_db"])
        return cls(**values)


def feature_config_for(profile: str) -> FeatureConfig:
    """The frontend settings of an input profile (``seed`` or ``edge``)."""
    if profile == "edge":
        return edge_config()
    if profile == "seed":
        return seed_config()
    raise AuricleError(f"--profile must be 'seed' or 'edge', got {profile!r}")


@dataclasses.dataclass(frozen=True)
class Frontend:
    """The frontend settings a user may change (``None``: the profile's default, the shipped bundles' value).
    Window and hop are in milliseconds, so they keep their meaning at any sample rate; the FFT size is the
    smallest power of two that holds the window."""

    sample_rate: int | None = None
    clip_seconds: float | None = None
    n_mels: int | None = None
    window_ms: float | None = None
    hop_ms: float | None = None
    fmin: float | None = None
    fmax: float | None = None

    def is_default(self) -> bool:
        return all(v is None for v in dataclasses.asdict(self).values())


def _positive(name: str, value: float | None) -> None:
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise AuricleError(f"--{name} {value!r} must be a positive number")


def frontend_config(profile: str, frontend: Frontend | None = None) -> FeatureConfig:
    """The profile's feature settings with the user's changes applied (see :class:`Frontend`)."""
    base = feature_config_for(profile)
    f = frontend or Frontend()
    if f.is_default():
        return base
    for name in ("sample_rate", "clip_seconds", "n_mels", "window_ms", "hop_ms", "fmax"):
        _positive(name.replace("_", "-"), getattr(f, name))
    if f.fmin is not None and not (math.isfinite(f.fmin) and f.fmin >= 0):
        raise AuricleError(f"--fmin {f.fmin!r} must be >= 0 Hz")
    sr = int(f.sample_rate or base.sample_rate)
    window_ms = f.window_ms or base.win_length * 1000.0 / base.sample_rate
    hop_ms = f.hop_ms or base.hop_length * 1000.0 / base.sample_rate
    win = max(1, int(round(window_ms * sr / 1000.0)))
    hop = max(1, int(round(hop_ms * sr / 1000.0)))
    n_fft = 1 << max(0, (win - 1).bit_length())
    fmax = f.fmax if f.fmax is not None else min(base.fmax, sr / 2.0)
    fmin = f.fmin if f.fmin is not None else base.fmin
    if fmax > sr / 2.0:
        raise AuricleError(f"--fmax {fmax:g} Hz is above half the sample rate ({sr / 2:g} Hz); lower it or raise "
                           "--sample-rate")
    if fmin >= fmax:
        raise AuricleError(f"--fmin {fmin:g} Hz must be below --fmax {fmax:g} Hz")
    return dataclasses.replace(base, sample_rate=sr, win_length=win, hop_length=hop, n_fft=n_fft,
                               n_mels=int(f.n_mels or base.n_mels), fmin=float(fmin), fmax=float(fmax),
                               clip_duration=float(f.clip_seconds or base.clip_duration))
