"""Scoring detected events against a ground truth of spoken words (used by ``edge.demo`` and the tools).

The truth is a CSV of ``start,end,label`` rows in seconds (a header line is optional). Rule:

* An event is a **hit** when its label equals a truth word's label and its time (the end of the window that
  fired) lies in ``[start - 0.25 s, end + 1.0 s]`` of that word. The window reaches 1 s back, so a word is
  typically reported between its end and one window later; the 0.25 s lead allows for smoothing.
* Each truth word is matched at most once (events in time order, each takes the earliest unmatched word it
  fits). An event that matches nothing is a **false alarm**; a word no event matched is a **miss**.
* Truth rows whose label is one of the bundle's background labels are ignored.
* Timing error is ``event time - word end``; the report gives the mean and max of its absolute value (and
  the mean signed value) over hits.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
from pathlib import Path
from typing import Protocol, Sequence, TypedDict

from edge.errors import AuricleError

__all__ = ["TimedEvent", "TruthWord", "Score", "ScoreRecord", "read_truth", "score_events", "format_report", "EARLY",
           "LATE"]

EARLY = 0.25   # an event may come this long before the word starts
LATE = 1.0     # ... and this long after it ends


class TimedEvent(Protocol):
    """What scoring needs of an event (:class:`edge.gate.Event` has it)."""

    @property
    def time(self) -> float: ...

    @property
    def label(self) -> str: ...

    @property
    def score(self) -> float: ...


class ScoreRecord(TypedDict):
    """:meth:`Score.to_dict`: the JSON ``score`` record (seconds and per-minute rates rounded to 3 places)."""
    type: str
    truth_words: int
    hits: int
    misses: int
    false_alarms: int
    false_alarms_per_minute: float
    timing_error_mean_abs: float | None
    timing_error_max_abs: float | None
    timing_error_mean: float | None
    duration_seconds: float


@dataclasses.dataclass(frozen=True)
class TruthWord:
    start: float
    end: float
    label: str


@dataclasses.dataclass(frozen=True)
class Score:
    hits: list[tuple[TimedEvent, TruthWord]]
    misses: list[TruthWord]
    false_alarms: list[TimedEvent]
    duration: float

    @property
    def n_truth(self) -> int:
        return len(self.hits) + len(self.misses)

    @property
    def false_alarms_per_minute(self) -> float:
        return len(self.false_alarms) / (self.duration / 60.0) if self.duration > 0 else 0.0

    @property
    def timing_errors(self) -> list[float]:
        return [ev.time - word.end for ev, word in self.hits]

    def to_dict(self) -> ScoreRecord:
        errs = self.timing_errors
        return {
            "type": "score", "truth_words": self.n_truth, "hits": len(self.hits), "misses": len(self.misses),
            "false_alarms": len(self.false_alarms),
            "false_alarms_per_minute": round(self.false_alarms_per_minute, 3),
            "timing_error_mean_abs": round(sum(map(abs, errs)) / len(errs), 3) if errs else None,
            "timing_error_max_abs": round(max(map(abs, errs)), 3) if errs else None,
            "timing_error_mean": round(sum(errs) / len(errs), 3) if errs else None,
            "duration_seconds": round(self.duration, 3),
        }


def read_truth(path: str | os.PathLike[str]) -> list[TruthWord]:
    """``start,end,label`` rows (seconds), header optional, blank lines and ``#`` comments skipped."""
    p = Path(path)
    if not p.is_file():
        raise AuricleError(f"truth file {p} does not exist; pass --truth CSV (columns start,end,label)")
    words: list[TruthWord] = []
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            for lineno, row in enumerate(csv.reader(fh), 1):
                cells = [c.strip() for c in row]
                if not cells or not any(cells) or cells[0].startswith("#"):
                    continue
                if lineno == 1 and cells[0].lower() == "start":
                    continue
                if len(cells) < 3:
                    raise AuricleError(f"{p}:{lineno}: expected start,end,label, got {row!r}")
                try:
                    start, end = float(cells[0]), float(cells[1])
                except ValueError:
                    raise AuricleError(f"{p}:{lineno}: start/end must be seconds, got {row!r}") from None
                if not (math.isfinite(start) and math.isfinite(end)) or end < start:
                    raise AuricleError(f"{p}:{lineno}: need start <= end, got {start}, {end}")
                words.append(TruthWord(start, end, cells[2]))
    except UnicodeDecodeError:
        raise AuricleError(f"truth file {p} is not UTF-8 text; it must be a CSV with start,end,label") from None
    return sorted(words, key=lambda w: (w.start, w.end))


def score_events(events: Sequence[TimedEvent], truth: Sequence[TruthWord], *, duration: float,
                 early: float = EARLY, late: float = LATE, ignore: Sequence[str] = ()) -> Score:
    """Match events (:class:`TimedEvent`: ``time``, ``label``, ``score``) to truth words; see the module doc for
    the rule."""
    skip = set(ignore)
    words = [w for w in truth if w.label not in skip]
    used = [False] * len(words)
    hits: list[tuple[TimedEvent, TruthWord]] = []
    false_alarms: list[TimedEvent] = []
    for ev in sorted(events, key=lambda e: e.time):
        match = None
        for i, w in enumerate(words):
            if not used[i] and w.label == ev.label and w.start - early <= ev.time <= w.end + late:
                match = i
                break
        if match is None:
            false_alarms.append(ev)
        else:
            used[match] = True
            hits.append((ev, words[match]))
    misses = [w for i, w in enumerate(words) if not used[i]]
    return Score(hits=hits, misses=misses, false_alarms=false_alarms, duration=duration)


def format_report(score: Score, *, stream: str, truth: str) -> str:
    d = score.to_dict()
    n = d["truth_words"]
    pct = f" ({100.0 * d['hits'] / n:.1f} %)" if n else ""
    lines = [f"stream {stream} ({d['duration_seconds']:.1f} s), truth {truth} ({n} words)",
             f"hits {d['hits']}/{n}{pct}, misses {d['misses']}, false alarms {d['false_alarms']} "
             f"({d['false_alarms_per_minute']:.2f}/min)"]
    if d["timing_error_mean_abs"] is not None:
        lines.append(f"timing error (event time - word end): mean |e| {d['timing_error_mean_abs']:.2f} s, "
                     f"max |e| {d['timing_error_max_abs']:.2f} s, mean e {d['timing_error_mean']:+.2f} s")
    for w in score.misses:
        lines.append(f"  miss         {w.start:8.2f}-{w.end:.2f}s  {w.label}")
    for ev in score.false_alarms:
        lines.append(f"  false alarm  {ev.time:8.2f}s        {ev.label} {ev.score:.2f}")
    lines.append(f"rule: hit = same label and event time in [start - {EARLY:g} s, end + {LATE:g} s], "
                 "each word matched once")
    return "\n".join(lines)
