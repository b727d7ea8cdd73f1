"""The detector's settings as objects: :class:`DetectorSettings` (what decides an event) and
:class:`RuntimeOptions` (how the model runs).

A setting lives here once: its field (default, and whether a bundle's manifest may tune it), its check in
:meth:`DetectorSettings.validate`, its flag in :meth:`DetectorSettings.add_arguments`, and its part of the
settings line (:meth:`DetectorSettings.describe`). Every command (``edge.listen``, ``demo``, ``evaluate``,
``wyoming``) builds its settings with :meth:`DetectorSettings.from_args`; the library with
:meth:`DetectorSettings.from_bundle`. A new setting therefore touches this file, the code that acts on it
(:mod:`edge.gate` for the event rule) and its test.

Resolution, per setting: the value given (an override that is not ``None``), else the bundle's tuned value
(its manifest's ``detector`` block, written by ``tools/tune_detector``) for the settings marked ``tuned``,
else the ``DEFAULT_*`` constant.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
from typing import TYPE_CHECKING, Any, Callable, Mapping

from edge.errors import AuricleError, BundleError

if TYPE_CHECKING:
    from edge.bundle import Bundle

__all__ = ["DEFAULT_HOP", "DEFAULT_THRESHOLD", "DEFAULT_SMOOTH", "DEFAULT_MIN_GAP", "DetectorSettings",
           "RuntimeOptions", "add_detector_arguments"]

DEFAULT_HOP = 0.1          # seconds between windows (rounded to whole frames)
DEFAULT_THRESHOLD = 0.5    # smoothed score needed for an event
DEFAULT_SMOOTH = 3         # windows averaged
DEFAULT_MIN_GAP = 1.0      # seconds between two events of one label


def _setting(default: Any, kind: Callable[[Any], Any], *, tuned: bool) -> Any:
    """A settings field: ``kind`` converts a manifest value; ``tuned``: a bundle's manifest may set it."""
    return dataclasses.field(default=default, metadata={"kind": kind, "tuned": tuned})


LabelThresholds = tuple[tuple[str, float], ...]


def label_thresholds(value: Any) -> LabelThresholds:
    """Per-label thresholds as the settings hold them (sorted ``(label, threshold)`` pairs), from a mapping
    (a manifest) or pairs (the command line's ``LABEL=P``, parsed by its argparse type)."""
    items = list(value.items()) if isinstance(value, Mapping) else [tuple(v) for v in value]
    out: dict[str, float] = {}
    for item in items:
        if len(item) != 2 or not str(item[0]):
            raise ValueError(f"{'='.join(map(str, item))!r} is not LABEL=THRESHOLD")
        out[str(item[0])] = float(item[1])
    return tuple(sorted(out.items()))


@dataclasses.dataclass(frozen=True)
class DetectorSettings:
    """What turns window scores into events (see :mod:`edge.gate` for the rule)."""

    hop: float = _setting(DEFAULT_HOP, float, tuned=False)             # s between windows
    threshold: float = _setting(DEFAULT_THRESHOLD, float, tuned=True)  # smoothed score for an event
    smooth: int = _setting(DEFAULT_SMOOTH, int, tuned=True)            # windows averaged
    min_gap: float = _setting(DEFAULT_MIN_GAP, float, tuned=True)      # s between two events of one label
    # (label, threshold) pairs that replace ``threshold`` for those labels (a costly keyword can ask for more)
    label_thresholds: LabelThresholds = _setting((), label_thresholds, tuned=True)

    def threshold_of(self, label: str) -> float:
        """The threshold ``label`` fires at: its own, else the common one."""
        return dict(self.label_thresholds).get(label, self.threshold)

    @classmethod
    def from_bundle(cls, bundle: Bundle, **overrides: Any) -> DetectorSettings:
        """The settings for ``bundle``: overrides that are not ``None``, else its tuned values, else defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise AuricleError(f"unknown detector setting(s) {', '.join(unknown)}; the settings are "
                               f"{', '.join(sorted(names))}")
        values = _tuned_values(cls, bundle.tuned_detector)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "label_thresholds" in values:
            values["label_thresholds"] = label_thresholds(values["label_thresholds"])
        settings = cls(**values)
        settings.validate()
        unknown = sorted({lab for lab, _ in settings.label_thresholds} - set(bundle.labels)
                         if settings.label_thresholds else ())
        if unknown:
            raise AuricleError(f"label_thresholds names {', '.join(unknown)}, not a label of this bundle (labels: "
                               f"{', '.join(bundle.labels)})")
        return settings

    def replace(self, **changes: Any) -> DetectorSettings:
        """A copy with ``changes`` (checked)."""
        settings = dataclasses.replace(self, **changes)
        settings.validate()
        return settings

    def validate(self) -> None:
        """One line naming the setting and what it must be, for a value the detector cannot use."""
        if not (_number(self.hop) and math.isfinite(self.hop) and self.hop > 0):
            raise AuricleError(f"hop {self.hop!r} must be > 0 s (seconds between windows), e.g. 0.1")
        if not (_number(self.threshold) and 0.0 <= self.threshold <= 1.0):
            raise AuricleError(f"threshold {self.threshold!r} must be a probability between 0 and 1, e.g. 0.5")
        if isinstance(self.smooth, bool) or not isinstance(self.smooth, numbers.Integral) or self.smooth < 1:
            raise AuricleError(f"smooth {self.smooth!r} must be a whole number of windows >= 1")
        bad = [f"{lab}={p!r}" for lab, p in self.label_thresholds if not (_number(p) and 0.0 <= p <= 1.0)]
        if bad:
            raise AuricleError(f"label_thresholds {', '.join(bad)}: each must be a probability between 0 and 1")
        if not (_number(self.min_gap) and math.isfinite(self.min_gap) and self.min_gap >= 0):
            raise AuricleError(f"min_gap {self.min_gap!r} must be >= 0 s (seconds between two events of a "
                               "label)")

    def describe(self, hop_seconds: float | None = None) -> str:
        """The settings line (``hop_seconds``: the hop as rounded to whole frames)."""
        hop = self.hop if hop_seconds is None else hop_seconds
        own = "".join(f", {lab} {p:g}" for lab, p in self.label_thresholds)
        return (f"hop {hop:.2f} s, threshold {self.threshold:g}{own}, smooth {self.smooth}, "
                f"min-gap {self.min_gap:g} s")

    # -- the command line ---------------------------------------------------------------------------------
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """``--hop``, ``--threshold``, ``--smooth``, ``--min-gap`` (left out: the bundle's tuned value)."""
        from edge.cliutil import positive, probability

        parser.add_argument("--hop", type=positive(float, "--hop"), default=None, metavar="SEC",
                            help=f"seconds between windows, rounded to whole frames (default {DEFAULT_HOP})")
        parser.add_argument("--threshold", type=probability("--threshold"), default=None, metavar="P",
                            help=f"smoothed score needed for an event (default: the bundle's tuned value, else "
                                 f"{DEFAULT_THRESHOLD})")
        parser.add_argument("--smooth", type=positive(int, "--smooth"), default=None, metavar="N",
                            help=f"windows averaged before thresholding (default: the bundle's tuned value, "
                                 f"else {DEFAULT_SMOOTH})")
        parser.add_argument("--label-threshold", dest="label_thresholds", type=_label_threshold, nargs="+",
                            action="extend", default=None, metavar="LABEL=P",
                            help="a label's own threshold, e.g. right=0.97 go=0.9 (default: the bundle's tuned "
                                 "per-label thresholds, if any; given, they replace those)")
        parser.add_argument("--min-gap", type=positive(float, "--min-gap", allow_zero=True), default=None,
                            metavar="SEC", help=f"debounce: seconds between two events of one label (default: "
                                                f"the bundle's tuned value, else {DEFAULT_MIN_GAP})")

    @classmethod
    def from_args(cls, args: argparse.Namespace, bundle: Bundle) -> DetectorSettings:
        """The settings a command's flags ask for, on ``bundle`` (flags left out: its tuned values)."""
        return cls.from_bundle(bundle, **{f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)})


def _label_threshold(text: str) -> tuple[str, float]:
    label, sep, value = text.partition("=")
    try:
        p = float(value)
    except ValueError:
        p = math.nan
    if not sep or not label or not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError(f"--label-threshold {text!r} must be LABEL=P with P between 0 and 1, "
                                         "e.g. right=0.97")
    return label, p


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _tuned_values(cls: type[DetectorSettings], block: Mapping[str, Any]) -> dict[str, Any]:
    """The tuned settings a manifest's ``detector`` block gives, converted to the fields' types."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("tuned") and block.get(f.name) is not None:
            try:
                values[f.name] = f.metadata["kind"](block[f.name])
            except (TypeError, ValueError) as exc:
                raise BundleError(f"the bundle manifest's tuned detector setting {f.name} is malformed ({exc}); "
                                  f"re-run tools/tune_detector, or give {f.name} explicitly") from None
    return values


@dataclasses.dataclass(frozen=True)
class RuntimeOptions:
    """How the model runs: interpreter threads, the Edge TPU, or another model kind of the bundle."""

    num_threads: int | None = None     # None: the runtime's choice
    coral: bool = False                # the bundle's model_edgetpu.tflite on a Coral Edge TPU
    model: str | None = None           # a model kind of the bundle (int8, float32, ...); None: its default

    def validate(self) -> None:
        if self.num_threads is not None and (isinstance(self.num_threads, bool)
                                             or not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise AuricleError(f"num_threads {self.num_threads!r} must be a whole number >= 1 (or None)")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """``--threads`` and ``--coral``."""
        from edge.cliutil import positive

        parser.add_argument("--threads", type=positive(int, "--threads"), default=None, metavar="N",
                            help="interpreter threads (default: the runtime's choice)")
        parser.add_argument("--coral", action="store_true", help="run the bundle's model_edgetpu.tflite on a "
                            "Coral Edge TPU (needs libedgetpu.so.1)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RuntimeOptions:
        options = cls(num_threads=getattr(args, "threads", None), coral=bool(getattr(args, "coral", False)))
        options.validate()
        return options


def add_detector_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every command that runs one detector shares: ``--bundle`` (``--model``: its old spelling),
    the detector settings and the runtime options."""
    from edge.cliutil import add_bundle_argument

    add_bundle_argument(parser)
    DetectorSettings.add_arguments(parser)
    RuntimeOptions.add_arguments(parser)
