"""Progress lines of a conversion (``quantize: ...`` on stderr), kept visible while TensorFlow's own output on
fds 1 and 2 is held back."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Callable, Iterator

from edge.cstreams import captured_fds
from edge import progress as _progress

_CONSOLE: list[Any] = []
MB = 1024 * 1024


def say(message: str, *, enabled: bool = True) -> None:
    if not enabled:
        return
    stream = _CONSOLE[-1] if _CONSOLE else sys.stderr
    print(f"quantize: {message}", file=stream, flush=True)


class Progress(_progress.Progress):
    """``label: i/n (rate/s)`` lines at most every ``every`` seconds, and the last one (the one progress helper,
    :class:`edge.progress.Progress`, worded for a conversion)."""

    def __init__(self, label: str, total: int, enabled: bool, every: float = 5.0) -> None:
        super().__init__(label, total, say if enabled else None, _progress.Cadence(seconds=every))

    def line(self, counts: dict[str, int], final: bool) -> str:
        rate = self.done / max(self.last - self.start, 1e-9)
        return f"{self.what}: {self.done}/{self.total} ({rate:.1f}/s)"


def _console() -> Any:
    """A line-buffered copy of fd 2 for progress lines, taken before fd 2 is held back; None without one."""
    try:
        sys.stderr.flush()
        return os.fdopen(os.dup(2), "w", buffering=1)
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def quiet() -> Iterator[Callable[[], str]]:
    """Hold back what TensorFlow prints on fds 1 and 2 (``Saved artifact at ...``, MLIR and absl logs) while
    keeping our progress lines visible; the text is available for error messages. AURICLE_DEBUG=1 shows it."""
    console = _console()
    if console is not None:
        _CONSOLE.append(console)
    try:
        with captured_fds((1, 2), limit=None) as captured:
            yield captured
    finally:
        if console is not None:
            _CONSOLE.remove(console)
            console.close()


def mb(n: int) -> str:
    return f"{n / MB:.2f} MB"
