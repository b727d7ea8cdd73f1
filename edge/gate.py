"""From window scores to events: smoothing, threshold, per-label debounce and hysteresis.

:class:`EventGate` is the one implementation of the rule. :class:`edge.detector.StreamingDetector` feeds it
each window's scores as they are computed; ``edge.evaluate`` replays stored window scores through it to
sweep thresholds and smoothing without running the model again, so a swept point is exactly what
``edge.listen`` would report with those settings.

The rule, per window (``raw``: the model's scores for the window ending at ``t`` seconds):

1. smoothed = mean of the last ``smooth`` windows of the current segment (fewer at its start);
2. a label that fired is *disarmed* until its smoothed score falls below ``REARM_FRACTION x threshold``
   (hysteresis; off at threshold 0), so one long word fires once;
3. an armed foreground label fires when its smoothed score >= its threshold (``threshold``, or its own from
   ``label_thresholds``) and at least ``min_gap``
   seconds passed since its last event; events of one window are ordered by score, best first.

Sustained sounds: an event (the *onset*, ``phase == "onset"``) carries ``start`` = the start of the window
whose smoothed score crossed the threshold (``time - window_seconds``; ``time`` itself when the gate was
not told the window length). The label then stays *active* while its smoothed score stays >= ``threshold``;
the first window below it closes the event: an *end* record (``phase == "end"``) with the same ``label`` and
``start``, ``end`` = the end time of the last window still at or above the threshold, ``time`` = the window
that fell below, and ``score`` = the highest smoothed score while active. End records never appear in
:meth:`EventGate.step`'s events (one event per word, counts unchanged): take them with
:meth:`EventGate.take_ends`. A gap in the audio (:meth:`EventGate.restart_segment`) closes active events at
their last window; :meth:`EventGate.close` closes them when the stream ends.
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from edge.settings import DetectorSettings

__all__ = ["Event", "EventGate", "REARM_FRACTION", "ONSET", "END"]

ONSET, END = "onset", "end"

REARM_FRACTION = 0.5       # after an event, a label fires again only once its score fell below this x threshold


@dataclasses.dataclass(frozen=True)
class Event:
    time: float            # end of the window, seconds of stream
    label: str
    score: float           # smoothed score (an end record: the highest while the event was active)
    window: int            # index of the window since the stream started
    scores: tuple[float, ...] | None = None   # all smoothed scores, when asked for
    start: float | None = None   # start of the onset window, seconds of stream
    end: float | None = None     # end records only: end of the last window at or above the threshold
    phase: str = ONSET           # "onset" (the event) or "end" (the sound fell back below the threshold)

    @property
    def duration(self) -> float | None:
        return None if self.end is None or self.start is None else max(0.0, self.end - self.start)

    def to_dict(self, labels: Sequence[str] | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"time": round(self.time, 4), "label": self.label, "score": round(self.score, 6)}
        if self.start is not None:
            d["start"] = round(self.start, 4)
        if self.phase == END:
            d["end"] = round(self.end if self.end is not None else self.time, 4)
            d["duration"] = round(self.duration or 0.0, 4)
            d["phase"] = END
        if self.scores is not None and labels is not None:
            d["scores"] = {lab: round(s, 6) for lab, s in zip(labels, self.scores)}
        return d


@dataclasses.dataclass
class _Active:
    """An event whose label is still at or above the threshold."""
    start: float
    last: float            # end time of the last window at or above the threshold
    peak: float


class EventGate:
    """Stateful smoothing + firing rule over a stream of window scores (see the module doc), with the
    event settings of a :class:`edge.settings.DetectorSettings` (its hop is the caller's business)."""

    def __init__(self, labels: Sequence[str], background: Sequence[str] | frozenset[str],
                 settings: DetectorSettings, *, all_scores: bool = False, window_seconds: float = 0.0) -> None:
        self.labels = list(labels)
        self.settings = settings
        self.window_seconds = float(window_seconds)
        self._active: dict[int, _Active] = {}
        self._ends: list[Event] = []
        self._index = 0
        self.threshold = float(settings.threshold)
        self.smooth = int(settings.smooth)
        self.min_gap = float(settings.min_gap)
        self.all_scores = bool(all_scores)
        k = len(self.labels)
        self._fg_idx = np.asarray([i for i, lab in enumerate(self.labels) if lab not in set(background)], dtype=int)
        self._thr = np.asarray([settings.threshold_of(lab) for lab in self.labels], dtype=np.float64)
        self._hist = np.zeros((self.smooth, k), dtype=np.float64)
        self._smoothed = np.zeros(k, dtype=np.float64)
        self._last = np.full(k, -math.inf)
        self._armed = np.ones(k, dtype=bool)
        self._pos = 0
        self._count = 0

    def reset(self) -> None:
        """A new stream: debounce and hysteresis cleared, smoothing restarted."""
        self._last.fill(-math.inf)
        self._armed.fill(True)
        self._active.clear()
        self._ends.clear()
        self.restart_segment()

    def restart_segment(self) -> None:
        """Audio was lost: smoothing restarts (no average spans a gap); debounce state is kept; active events
        end at their last window (see :meth:`take_ends`)."""
        self.close()
        self._pos = 0
        self._count = 0

    def close(self) -> list[Event]:
        """End every active event at its last window above the threshold (the stream ended); the end
        records are also queued for :meth:`take_ends`."""
        closed = [self._end_record(li, a.last, self._index) for li, a in sorted(self._active.items())]
        self._active.clear()
        self._ends.extend(closed)
        return closed

    def take_ends(self) -> list[Event]:
        """The end records since the last call (oldest first), and forget them."""
        ends, self._ends = self._ends, []
        return ends

    def _end_record(self, li: int, t: float, index: int) -> Event:
        a = self._active[li]
        return Event(time=t, label=self.labels[li], score=a.peak, window=index, start=a.start, end=a.last,
                     phase=END)

    def _track(self, sm: np.ndarray, t: float, index: int) -> None:
        """Extend or close the active events with this window's smoothed scores."""
        self._index = index
        for li in list(self._active):
            a = self._active[li]
            if sm[li] >= self._thr[li]:
                a.last, a.peak = t, max(a.peak, float(sm[li]))
            else:
                self._ends.append(self._end_record(li, t, index))
                del self._active[li]

    def smooth_scores(self, raw: np.ndarray) -> np.ndarray:
        """Mean of the last ``smooth`` windows of this segment (a preallocated buffer, valid until the next call)."""
        self._hist[self._pos] = raw
        self._pos = (self._pos + 1) % self.smooth
        self._count = min(self._count + 1, self.smooth)
        sm = self._smoothed
        if self._count == 1:
            sm[:] = raw
        else:
            np.add.reduce(self._hist[:self._count], axis=0, out=sm)
            np.divide(sm, float(self._count), out=sm)
        return sm

    def fire(self, sm: np.ndarray, t: float, index: int) -> list[Event]:
        """Threshold + per-label debounce and hysteresis over the foreground labels; best score first."""
        if self._active:
            self._track(sm, t, index)
        self._index = index
        fg = self._fg_idx
        s = sm[fg]
        thr = self._thr[fg]                 # each label's own threshold (the common one unless set per label)
        rearm = thr * REARM_FRACTION
        unarmed = ~self._armed[fg]
        if unarmed.any():   # hysteresis (off at threshold 0): the word must fade before it can fire again
            self._armed[fg[unarmed & ((s < rearm) | (rearm <= 0.0))]] = True
        ready = self._armed[fg] & (s >= thr) & (t - self._last[fg] >= self.min_gap - 1e-9)
        if not ready.any():
            return []
        fired = []
        start = max(0.0, t - self.window_seconds)
        for li in fg[ready]:
            self._last[li] = t
            self._armed[li] = False
            if self._thr[li] > 0.0:
                self._active[int(li)] = _Active(start=start, last=t, peak=float(sm[li]))
            fired.append(Event(time=t, label=self.labels[li], score=float(sm[li]), window=index,
                               scores=tuple(float(v) for v in sm) if self.all_scores else None, start=start))
        if len(fired) > 1:
            fired.sort(key=lambda e: -e.score)
        return fired

    def step(self, raw: np.ndarray, t: float, index: int) -> tuple[np.ndarray, list[Event]]:
        """One window: its smoothed scores and the events it fires."""
        sm = self.smooth_scores(raw)
        return sm, self.fire(sm, t, index)
