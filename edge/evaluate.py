"""``python -m edge.evaluate``: false accepts per hour on long negative audio, false rejects on positives.

A detector is judged by two numbers: how often it fires on audio that holds none of its target sounds
(**false accepts per hour**, FA/h) and how many target sounds it misses (**false reject rate**, FRR). This
command measures both exactly as ``edge.listen`` runs: the same bundle, the same streaming path and the same
detector settings and defaults (``--bundle``, ``--hop``, ``--threshold``, ``--smooth``, ``--min-gap``).

* ``--negatives PATH ...``: files or folders of audio with no target sound; every event is a false accept.
  Each file is its own stream. ``--split test`` keeps only the files the project's split rule puts in the
  test part (``sha1(path relative to the folder) % 100 >= 90``), which is what training never reads.
* ``--positives WAV --truth CSV``: a stream of target sounds with its ground truth (``start,end,label``,
  the ``samples/`` format): hits, misses, timing.
* ``--sweep``: the same run over a grid of thresholds and smoothing, giving the DET curve (FRR against
  FA/h). The model runs once; each grid point replays the stored window scores through the detector's own
  event rule (:class:`edge.gate.EventGate`), so a point is exactly what ``edge.listen`` would report.

Output: a table on stdout, with 95 % intervals for the FA/h (exact Poisson) and the FRR (Wilson) of the
operating point; ``--json`` prints one JSON object instead; ``--out DIR`` writes
``evaluation.json``, ``det.csv`` and, where matplotlib is installed, ``det.png``. Only numpy, a TFLite
runtime and soundfile are needed: it runs on the device.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # as edge.listen: tiny matmuls run slower threaded

from edge.cliutil import HelpFormatter, add_verbosity_arguments, setup_logging  # noqa: E402
from edge.errors import AuricleError, run_cli  # noqa: E402
from edge.progress import Cadence, Progress  # noqa: E402
from edge.settings import DetectorSettings, RuntimeOptions  # noqa: E402

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import numpy as np

    from edge.bundle import Bundle
    from edge.detector import StreamingDetector, WindowResult
    from edge.gate import Event, EventGate
    from edge.scoring import TruthWord
    from edge.sources import Source

__all__ = ["StreamScores", "Operating", "EvaluationData", "SweepGrid", "collect", "replay", "evaluate", "main",
           "cli"]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif")
DEFAULT_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
DEFAULT_SMOOTHS = (1, 3, 5, 7, 9)


@dataclasses.dataclass(frozen=True)
class StreamScores:
    """One stream's window scores, as the model computed them: enough to replay any detector settings."""
    name: str
    seconds: float
    times: np.ndarray     # (W,) window end times, s
    raw: np.ndarray       # (W, labels) the model's own scores per window


@dataclasses.dataclass(frozen=True)
class Operating:
    """One detector setting and what it gave."""
    threshold: float
    smooth: int
    min_gap: float
    false_accepts: int
    false_accepts_per_hour: float
    per_label: dict[str, int]
    hits: int | None = None
    misses: int | None = None
    truth_words: int | None = None
    positive_false_alarms: int | None = None
    misses_by_label: dict[str, int] | None = None

    @property
    def false_reject_rate(self) -> float | None:
        return self.misses / self.truth_words if self.truth_words else None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["false_reject_rate"] = None if self.false_reject_rate is None else round(self.false_reject_rate, 4)
        d["false_accepts_per_hour"] = round(self.false_accepts_per_hour, 3)
        if d["misses_by_label"] is None:
            del d["misses_by_label"]
        return d


@dataclasses.dataclass(frozen=True)
class EvaluationData:
    """What to measure on: negative audio (files or folders; ``split``: only that part of them) and,
    optionally, a positive stream with its ``start,end,label`` truth CSV."""
    negatives: Sequence[str | os.PathLike[str]]
    split: str | None = None
    positives: str | None = None
    truth: str | None = None


@dataclasses.dataclass(frozen=True)
class SweepGrid:
    """The DET sweep's grid; ``min_gaps`` ``None``: the detector's own min_gap only."""
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS
    smooths: Sequence[int] = DEFAULT_SMOOTHS
    min_gaps: Sequence[float] | None = None
    # False: each point is one threshold for every keyword (the detector's per-keyword thresholds set aside,
    # or the threshold axis would not move them); True: keep them (replaying the detector's own point)
    label_thresholds: bool = False


# -- inputs -----------------------------------------------------------------------------------------------
def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def negative_files(paths: Sequence[str | os.PathLike[str]], split: str | None = None) -> list[tuple[Path, str]]:
    """``(file, name)`` for every audio file under ``paths`` (sorted), optionally only one split's files: the
    sha1 rule on the name, or for a corpus source (``tools.negative_corpora``) its role's split."""
    from edge.splits import file_split, source_roles, split_of

    found: list[tuple[Path, str, str]] = []
    for given in paths:
        root = Path(given)
        if root.is_file():
            found.append((root, root.name, split_of(root.name)))
        elif root.is_dir():
            roles = source_roles(root)
            files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                           and not any(part.startswith(".") for part in p.relative_to(root).parts))
            found.extend((p, _relative(p, root), file_split(p, root, roles)) for p in files)
        else:
            raise AuricleError(f"negative audio {root} does not exist; pass files or folders of audio that hold "
                               "none of the target sounds")
    found = [f for f in found if split is None or f[2] == split]
    if not found:
        raise AuricleError(f"no audio files{f' of the {split} split' if split else ''} in "
                           f"{', '.join(map(str, paths))}; pass WAV/FLAC/OGG files or folders of them")
    return [(p, name) for p, name, _ in found]


def _check_truth(truth: Sequence[TruthWord], bundle: Bundle, path: str) -> None:
    unknown = sorted({w.label for w in truth} - set(bundle.labels))
    if unknown:
        raise AuricleError(f"truth file {path} names labels the bundle does not have: {', '.join(unknown)}; "
                           f"its labels are {', '.join(bundle.labels)}")
    if not truth:
        raise AuricleError(f"truth file {path} has no rows; it needs start,end,label lines")


# -- the model pass ---------------------------------------------------------------------------------------
def collect(detector: StreamingDetector, path: Path, name: str, *,
            chunk: int = 16000) -> tuple[StreamScores, list[Event]]:
    """Run one file through the real streaming path (a new stream); its window scores and events."""
    import numpy as np

    from edge.run import run_source
    from edge.sources import FileSource

    times: list[float] = []
    raws: list[np.ndarray] = []
    events: list[Event] = []

    def on_window(w: WindowResult, _src: Source) -> None:
        times.append(w.time)
        raws.append(w.raw)
        events.extend(w.events)

    with FileSource(path, chunk_size=chunk) as src:
        src.name = name
        stats = run_source(src, detector, on_window=on_window)
    k = len(detector.labels)
    raw = np.stack(raws) if raws else np.empty((0, k))
    return StreamScores(name, stats.audio_seconds, np.asarray(times), raw), events


def replay(stream: StreamScores, gate: EventGate) -> list[Event]:
    """The events ``gate`` (a fresh :class:`edge.gate.EventGate`) gives for a stored stream."""
    gate.reset()
    out: list[Event] = []
    for i, (t, raw) in enumerate(zip(stream.times, stream.raw)):
        out.extend(gate.step(raw, float(t), i)[1])
    return out


# -- scoring ----------------------------------------------------------------------------------------------
def _operating(neg_events: list[Event], neg_seconds: float,
               pos: tuple[list[Event], tuple[list[TruthWord], float]] | None, *, threshold: float,
               smooth: int, min_gap: float, labels: Sequence[str], background: frozenset[str]) -> Operating:
    from edge.scoring import score_events

    per_label = {lab: 0 for lab in labels if lab not in background}
    for ev in neg_events:
        per_label[ev.label] += 1
    hours = neg_seconds / 3600.0
    extra: dict[str, Any] = {}
    if pos is not None:
        events, (truth, seconds) = pos
        s = score_events(events, truth, duration=seconds, ignore=sorted(background))
        missed = {lab: 0 for lab in per_label}
        for w in s.misses:
            missed[w.label] = missed.get(w.label, 0) + 1
        extra = {"hits": len(s.hits), "misses": len(s.misses), "truth_words": s.n_truth,
                 "positive_false_alarms": len(s.false_alarms), "misses_by_label": missed}
    return Operating(threshold=threshold, smooth=smooth, min_gap=min_gap, false_accepts=len(neg_events),
                     false_accepts_per_hour=len(neg_events) / hours if hours > 0 else 0.0,
                     per_label=per_label, **extra)


def sweep(negatives: list[StreamScores], positive: StreamScores | None, truth: list[TruthWord] | None,
          detector: StreamingDetector, grid: SweepGrid) -> list[Operating]:
    """Every (min_gap, smooth, threshold) point of ``grid`` (min_gap: the detector's unless given), replayed
    from stored window scores through the detector's own event rule with its other settings."""
    from edge.gate import EventGate

    neg_seconds = sum(s.seconds for s in negatives)
    rows = []
    for min_gap, smooth, threshold in itertools.product(grid.min_gaps or [detector.min_gap], grid.smooths,
                                                        grid.thresholds):
        point = detector.settings.replace(threshold=threshold, smooth=smooth, min_gap=min_gap)
        if not grid.label_thresholds:
            point = point.replace(label_thresholds=())

        def gate() -> EventGate:
            return EventGate(detector.labels, detector.background, point)
        neg_events = [ev for s in negatives for ev in replay(s, gate())]
        pos = (replay(positive, gate()), (truth, positive.seconds)) if positive is not None else None
        rows.append(_operating(neg_events, neg_seconds, pos, threshold=threshold, smooth=smooth,
                               min_gap=min_gap, labels=detector.labels, background=detector.background))
    return rows


# -- the core ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Evaluation:
    bundle: str
    settings: dict[str, Any]
    negative_files: int
    negative_hours: float
    point: Operating                       # at the given settings, events straight from the detector
    sweep: list[Operating]
    wall_seconds: float
    audio_seconds: float
    false_accept_events: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        p = self.point
        return {
            "bundle": self.bundle, "settings": self.settings,
            "negative_files": self.negative_files, "negative_hours": round(self.negative_hours, 4),
            "false_accepts": {"total": p.false_accepts, "per_label": p.per_label},
            "false_accepts_per_hour": round(p.false_accepts_per_hour, 3),
            "false_reject_rate": None if p.false_reject_rate is None else round(p.false_reject_rate, 4),
            **confidence(p, self.negative_hours),
            "positives": None if p.truth_words is None else {
                "truth_words": p.truth_words, "hits": p.hits, "misses": p.misses,
                "false_alarms": p.positive_false_alarms},
            "false_accept_events": self.false_accept_events,
            "sweep": [r.to_dict() for r in self.sweep],
            "seconds_per_audio_hour": round(self.wall_seconds / max(self.audio_seconds / 3600, 1e-9), 2),
            "wall_seconds": round(self.wall_seconds, 2), "audio_seconds": round(self.audio_seconds, 2),
        }


def confidence(p: Operating, hours: float) -> dict[str, list[float] | None]:
    """95 % intervals of an operating point's FA/h (exact Poisson) and FRR (Wilson): how sure the figures are."""
    from edge.intervals import proportion_interval, rate_interval

    fa = rate_interval(p.false_accepts, hours) if hours > 0 else None
    frr = proportion_interval(p.misses, p.truth_words) if p.truth_words and p.misses is not None else None
    return {"false_accepts_per_hour_ci95": None if fa is None else [round(fa[0], 3), round(fa[1], 3)],
            "false_reject_rate_ci95": None if frr is None else [round(frr[0], 4), round(frr[1], 4)]}


def evaluate(bundle: Bundle | str | os.PathLike[str] | None, settings: DetectorSettings | None = None,
             runtime: RuntimeOptions | None = None, *, data: EvaluationData, grid: SweepGrid | None = None,
             quiet: bool = False) -> Evaluation:
    """Score a bundle on negatives (and positives) exactly as ``edge.listen`` runs it, with ``settings``
    (default: the bundle's tuned values); ``grid``: also the DET sweep. See the module doc."""
    from edge.bundle import as_bundle
    from edge.detector import StreamingDetector
    from edge.scoring import read_truth

    if (data.positives is None) != (data.truth is None):
        raise AuricleError("--positives and --truth go together: the stream WAV and its start,end,label CSV")
    b = as_bundle(bundle)
    files = negative_files(data.negatives, data.split)
    words = read_truth(data.truth) if data.truth else None
    if words is not None:
        _check_truth(words, b, str(data.truth))
    det = StreamingDetector(b, settings, runtime)
    t0 = time.perf_counter()
    neg_streams, neg_events, fa_events = [], [], []
    progress = Progress("negative files", len(files), None if quiet else log.info, Cadence(items=25, seconds=30))
    for path, name in files:
        scores, events = collect(det, path, name)
        neg_streams.append(scores)
        neg_events.extend(events)
        fa_events.extend({"file": name, **ev.to_dict()} for ev in events)
        progress.step(false_accepts=len(neg_events))
    progress.finish(false_accepts=len(neg_events))
    pos_scores, pos = None, None
    if data.positives is not None:
        pos_scores, pos_events = collect(det, Path(data.positives), str(data.positives))
        pos = (pos_events, (words, pos_scores.seconds))
    neg_seconds = sum(s.seconds for s in neg_streams)
    point = _operating(neg_events, neg_seconds, pos, threshold=det.threshold, smooth=det.smooth,
                       min_gap=det.min_gap, labels=det.labels, background=det.background)
    rows = sweep(neg_streams, pos_scores, words, det, grid) if grid is not None else []
    audio = neg_seconds + (pos_scores.seconds if pos_scores else 0.0)
    used = {"hop": det.hop_seconds, "threshold": det.threshold, "smooth": det.smooth, "min_gap": det.min_gap,
            "model": det.model_kind, "split": data.split}
    if det.settings.label_thresholds:
        used["label_thresholds"] = dict(det.settings.label_thresholds)
    return Evaluation(bundle=b.name, settings=used, negative_files=len(files), negative_hours=neg_seconds / 3600,
                      point=point, sweep=rows, wall_seconds=time.perf_counter() - t0, audio_seconds=audio,
                      false_accept_events=fa_events)


# -- output -----------------------------------------------------------------------------------------------
def _frr(r: Operating) -> str:
    return "-" if r.false_reject_rate is None else f"{100 * r.false_reject_rate:.1f} %"


def _fa_ci(ci: dict[str, Any]) -> str:
    fa = ci["false_accepts_per_hour_ci95"]
    return "" if fa is None else f" (95 % CI {fa[0]:.2f}-{fa[1]:.2f})"


def format_table(ev: Evaluation) -> str:
    p, s = ev.point, ev.settings
    ci = confidence(p, ev.negative_hours)
    lines = [f"bundle {ev.bundle} ({s['model']}), hop {s['hop']:.3g} s, threshold {s['threshold']:g}, "
             f"smooth {s['smooth']}, min-gap {s['min_gap']:g} s",
             f"negatives: {ev.negative_files} files, {ev.negative_hours:.3f} h"
             + (f" ({s['split']} split)" if s.get("split") else ""),
             f"false accepts: {p.false_accepts} = {p.false_accepts_per_hour:.2f} per hour{_fa_ci(ci)}"]
    fired = {k: v for k, v in p.per_label.items() if v}
    if fired:
        lines.append("  per label: " + ", ".join(f"{k} {v}" for k, v in sorted(fired.items(), key=lambda kv: -kv[1])))
    if p.truth_words is not None:
        lo, hi = ci["false_reject_rate_ci95"] or (0.0, 0.0)
        lines.append(f"positives: {p.hits}/{p.truth_words} hit, {p.misses} missed: false reject rate {_frr(p)}"
                     f" (95 % CI {100 * lo:.1f}-{100 * hi:.1f} %; {p.positive_false_alarms} false alarms on the "
                     "positive stream)")
    lines.append(f"time: {ev.wall_seconds:.1f} s for {ev.audio_seconds / 3600:.3f} h of audio "
                 f"({ev.wall_seconds / max(ev.audio_seconds / 3600, 1e-9):.0f} s per hour)")
    if ev.sweep:
        lines.append("")
        lines.append("DET sweep (same run, replayed):  smooth  threshold  false accepts  FA/h     FRR")
        for r in ev.sweep:
            lines.append(f"{'':33}{r.smooth:6d}  {r.threshold:9.2f}  {r.false_accepts:13d}  "
                         f"{r.false_accepts_per_hour:7.2f}  {_frr(r):>7}")
    return "\n".join(lines)


def write_outputs(ev: Evaluation, out: Path) -> list[Path]:
    """``evaluation.json``, ``det.csv`` and (with matplotlib) ``det.png`` in ``out``."""
    import csv
    import io

    from edge.fileio import write_json_atomic, write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "evaluation.json", ev.to_dict())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["smooth", "threshold", "min_gap", "false_accepts", "false_accepts_per_hour", "false_reject_rate",
                "hits", "misses"])
    for r in ev.sweep or [ev.point]:
        w.writerow([r.smooth, r.threshold, r.min_gap, r.false_accepts, f"{r.false_accepts_per_hour:.4f}",
                    "" if r.false_reject_rate is None else f"{r.false_reject_rate:.4f}", r.hits, r.misses])
    write_text_atomic(out / "det.csv", buf.getvalue())
    written = [out / "evaluation.json", out / "det.csv"]
    if ev.sweep and plot_det(ev, out / "det.png"):
        written.append(out / "det.png")
    return written


def plot_det(ev: Evaluation, path: Path) -> bool:
    """FRR against FA/h, one line per smoothing, the operating point marked. False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from edge.fileio import atomic_writer

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for smooth in sorted({r.smooth for r in ev.sweep}):
        rows = sorted((r for r in ev.sweep if r.smooth == smooth and r.false_reject_rate is not None),
                      key=lambda r: r.threshold)
        if rows:
            ax.plot([max(r.false_accepts_per_hour, 0.05) for r in rows], [100 * r.false_reject_rate for r in rows],
                    marker="o", ms=3, label=f"smooth {smooth}")
    p = ev.point
    if p.false_reject_rate is not None:
        ax.plot([max(p.false_accepts_per_hour, 0.05)], [100 * p.false_reject_rate], "k*", ms=12,
                label=f"shipped: thr {p.threshold:g}, smooth {p.smooth}")
    ax.set_xscale("log")
    ax.set_xlabel(f"false accepts per hour ({ev.negative_hours:.2f} h of negatives; 0 drawn at 0.05)")
    ax.set_ylabel("false reject rate, %")
    ax.set_title(f"{ev.bundle}: DET curve")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_writer(path, binary=True) as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
    return True


# -- CLI --------------------------------------------------------------------------------------------------
def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: thresholds are probabilities between 0 and 1")
    return values


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: smoothing is a number of windows >= 1")
    return values


def build_parser() -> argparse.ArgumentParser:
    from edge.settings import add_detector_arguments

    p = argparse.ArgumentParser(
        prog="python -m edge.evaluate", formatter_class=HelpFormatter,
        description="Measure a bundle as edge.listen runs it: false accepts per hour on negative audio, "
                    "false rejects on a positive stream, and (--sweep) the DET curve.",
        epilog="Example: python -m edge.evaluate --negatives ../shared/data/negatives --split test "
               "--positives stream.wav --truth stream.csv --sweep --out results/fa")
    add_detector_arguments(p)
    p.add_argument("--negatives", nargs="+", required=True, metavar="PATH",
                   help="audio files or folders with none of the target sounds; every event is a false accept")
    p.add_argument("--split", choices=("train", "val", "test"), default=None,
                   help="only the negative files the project's split rule (sha1 of the path relative to the "
                        "folder given) puts in this part; default: all files")
    p.add_argument("--positives", metavar="WAV", help="a stream of target sounds (needs --truth)")
    p.add_argument("--truth", metavar="CSV", help="its ground truth: start,end,label rows in seconds")
    p.add_argument("--sweep", action="store_true", help="also replay a grid of thresholds x smoothing (DET "
                   "curve; one threshold for every keyword, per-keyword thresholds set aside)")
    p.add_argument("--thresholds", type=_floats, default=DEFAULT_THRESHOLDS, metavar="LIST",
                   help="sweep thresholds, comma-separated (default %(default)s)")
    p.add_argument("--smooths", type=_ints, default=DEFAULT_SMOOTHS, metavar="LIST",
                   help="sweep smoothing windows, comma-separated (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--out", metavar="DIR", help="write evaluation.json, det.csv and det.png here")
    add_verbosity_arguments(p, quiet_help="no progress lines on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from edge.bundle import load_bundle

    a = build_parser().parse_args(argv)
    setup_logging(a)
    bundle = load_bundle(a.bundle)
    data = EvaluationData(negatives=a.negatives, split=a.split, positives=a.positives, truth=a.truth)
    grid = SweepGrid(thresholds=a.thresholds, smooths=a.smooths) if a.sweep else None
    ev = evaluate(bundle, DetectorSettings.from_args(a, bundle), RuntimeOptions.from_args(a), data=data, grid=grid,
                  quiet=a.quiet)
    if a.out:
        for path in write_outputs(ev, Path(a.out)):
            print(f"wrote {path}", file=sys.stderr, flush=True)
    print(json.dumps(ev.to_dict()) if a.json else format_table(ev), flush=True)
    return 0


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
