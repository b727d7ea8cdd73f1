"""The settings of one conversion (:class:`QuantizeConfig`, saved in the manifest) and what its steps share:
the run, the target and temporary folders, the clips, the timings."""
from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from converters.console import say
from edge.errors import AuricleError
from training.run_folder import RunFolder

IO_TYPES = ("int8", "uint8")
EXTRA_KINDS = ("float32", "float16", "dynamic")
DEFAULT_REPRESENTATIVE = 300
DEFAULT_MAX_DROP = 2.0          # percentage points
DEFAULT_FLOAT_MAX_MB = 30.0
DEFAULT_C_ARRAY_MAX_MB = 30.0


class VerificationFailed(AuricleError):
    """int8 accuracy fell more than ``--max-drop`` below the float model (exit 1, no bundle written)."""


@dataclasses.dataclass(frozen=True)
class QuantizeConfig:
    """Everything a conversion depends on; saved in the manifest as ``conversion.config``."""

    run: str
    out: str
    io: str = "int8"
    representative: int = DEFAULT_REPRESENTATIVE
    data: str | None = None
    also: tuple[str, ...] = ()
    max_drop: float = DEFAULT_MAX_DROP
    float_max_mb: float = DEFAULT_FLOAT_MAX_MB
    c_array_max_mb: float = DEFAULT_C_ARRAY_MAX_MB
    threads: int | None = None
    seed: int = 0
    compile_edgetpu: bool = True
    require_edgetpu: bool = False
    name: str | None = None
    c_array: bool = False            # write model_data.h/.cc (TFLite Micro); off: the manifest says how
    force: bool = False              # replace a bundle the repository ships
    backbone: bool = False           # carry the Keras network too (backbone.keras) for training's --init-from

    def __post_init__(self) -> None:
        for key in ("run", "out", "data"):   # paths as given (str or os.PathLike), kept as text
            if getattr(self, key) is not None:
                object.__setattr__(self, key, os.fspath(getattr(self, key)))
        object.__setattr__(self, "also", tuple(dict.fromkeys(self.also)))
        self._check()
        for key in ("max_drop", "float_max_mb", "c_array_max_mb"):
            object.__setattr__(self, key, float(getattr(self, key)))
        for key in ("compile_edgetpu", "require_edgetpu", "c_array", "force", "backbone"):
            object.__setattr__(self, key, bool(getattr(self, key)))
        object.__setattr__(self, "seed", int(self.seed))

    def _check(self) -> None:
        if self.io not in IO_TYPES:
            raise AuricleError(f"--io {self.io!r} must be one of {', '.join(IO_TYPES)}")
        bad = [k for k in self.also if k not in EXTRA_KINDS]
        if bad:
            raise AuricleError(f"--also {','.join(bad)}: unknown model kind; choose from {','.join(EXTRA_KINDS)}")
        if isinstance(self.representative, bool) or not isinstance(self.representative, int) \
                or self.representative < 1:
            raise AuricleError(f"--representative {self.representative!r}: the representative set is empty; "
                               f"calibration needs at least 1 clip (a few hundred is typical, default "
                               f"{DEFAULT_REPRESENTATIVE})")
        for flag, value in (("--max-drop", self.max_drop), ("--float-max-mb", self.float_max_mb),
                            ("--c-array-max-mb", self.c_array_max_mb)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise AuricleError(f"{flag} {value!r} must be a number >= 0")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise AuricleError(f"--threads {self.threads!r} must be a whole number >= 1")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["also"] = list(self.also)
        return d


class Timings:
    """Seconds of each step, measured back to back (``lap``), as the manifest records them."""

    def __init__(self) -> None:
        self.start = self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def mark(self) -> None:
        """Start the next step's clock now."""
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self._last, 2)
        self._last = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


@dataclasses.dataclass(frozen=True)
class Conversion:
    """What every step of one conversion reads: the settings, the run, where the bundle goes and is built."""

    cfg: QuantizeConfig
    run: RunFolder
    out: Path                        # the bundle's place
    tmp: Path                        # the temporary bundle folder being filled, renamed to ``out`` at the end
    progress: bool
    emit: Callable[[str], None]      # summary lines (verification, Edge TPU report)
    timings: Timings
    previous_detector: dict[str, Any] | None = None   # the tuned block of the bundle this one replaces

    @property
    def labels(self) -> list[str]:
        return list(self.run.labels)

    def say(self, message: str) -> None:
        say(message, enabled=self.progress)


@dataclasses.dataclass(frozen=True)
class Clips:
    """The calibration and test clips, through the frontend (log-mel frames, before the profile transform)."""

    representative: list[tuple[str, str]]      # (relative path, label), training split only
    rep_frames: np.ndarray
    test_frames: np.ndarray                    # every window of the clip-level rule, of every test clip
    y_test: np.ndarray                         # one label per test clip
    test_owners: np.ndarray                    # the test clip of each window

    def per_class(self, labels: Sequence[str]) -> dict[str, int]:
        return {lab: sum(1 for _, l2 in self.representative if l2 == lab) for lab in labels}


@dataclasses.dataclass(frozen=True)
class Files:
    """What the bundle holds besides its models and manifest, as the manifest records it."""

    regenerable: dict[str, Any]      # files left out for size: sha256, bytes, why, the command that writes them
    c_array: dict[str, Any]
    report_files: list[str]          # the run's report files copied in
    backbone: dict[str, Any] | None = None   # the Keras network carried for --init-from (None: not carried)
