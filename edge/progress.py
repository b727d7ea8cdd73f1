"""Progress lines of a long loop: the one helper every command uses (decoding a dataset, calibrating a model).

The helper decides *when* a line is due and keeps the count and the time; where a line goes is the caller's
``emit`` (a logger's ``info``, a console's print), so library code never prints. ``emit=None`` turns it off.
Pure Python: no numpy, nothing from ``training`` or ``converters``.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

__all__ = ["Cadence", "Progress"]


@dataclasses.dataclass(frozen=True)
class Cadence:
    """When lines are written: every ``items`` items (never for the last one: :meth:`Progress.finish` sums
    up), and/or at most every ``seconds`` seconds (and for the last item). A zero turns that rule off.
    :meth:`Progress.finish` writes its summary when any line was written or the loop took longer than
    ``summary_after`` seconds."""

    items: int = 0
    seconds: float = 0.0
    summary_after: float = 2.0


class Progress:
    """``what done/total (k v, ...) 1.2 s`` lines for a loop over ``total`` items, handed to ``emit``.

    Call :meth:`step` once per item (or with the number done so far), with any counts worth showing, and
    :meth:`finish` after the loop. Subclasses change the wording by overriding :meth:`line`.
    """

    def __init__(self, what: str, total: int, emit: Callable[[str], None] | None,
                 cadence: Cadence = Cadence(), clock: Callable[[], float] = time.perf_counter) -> None:
        self.what, self.total, self.emit, self.cadence, self.clock = what, total, emit, cadence, clock
        self.done = 0
        self.written = False
        self.start = self.last = clock()

    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    def step(self, done: int | None = None, **counts: int) -> None:
        """One more item done (or ``done`` in all); writes a line when the cadence says one is due."""
        self.done = self.done + 1 if done is None else done
        if self.emit is None:
            return
        every, seconds = self.cadence.items, self.cadence.seconds
        by_count = every > 0 and self.done % every == 0 and self.done < self.total
        now = self.clock()
        by_time = seconds > 0 and (self.done >= self.total or now - self.last >= seconds)
        if by_count or by_time:
            self.last = now
            self._write(counts, final=False)

    def finish(self, **counts: int) -> None:
        """The summary line, when any line was written or the loop was slow enough to deserve one."""
        if self.emit is not None and (self.written or self.elapsed > self.cadence.summary_after):
            self._write(counts, final=True)

    def line(self, counts: dict[str, int], final: bool) -> str:
        detail = ", ".join(f"{k} {v}" for k, v in counts.items())
        return (f"{self.what} {self.done}/{self.total}" + (f" ({detail})" if detail else "")
                + f" {self.elapsed:.1f} s" + (" done" if final else ""))

    def _write(self, counts: dict[str, int], final: bool) -> None:
        if self.emit is not None:
            self.emit(self.line(counts, final))
            self.written = True
