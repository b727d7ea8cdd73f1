"""Holding back what C libraries print on the process's file descriptors (the one helper for it).

ALSA and PortAudio print probing chatter on fd 2, the TFLite runtime prints "Created TensorFlow Lite
XNNPACK delegate", TensorFlow's converter prints MLIR logs on fds 1 and 2. Python's ``sys.stderr`` cannot
catch any of it, so :func:`captured_fds` points the descriptors at a temporary file for the duration of a
block and hands back what was written there, so an error message can quote it.

A file descriptor belongs to the whole process, so captures are serialised by one lock: two threads that
loaded models at once (two Wyoming clients connecting together) would otherwise each save the other's
temporary file as "the" stderr, and one of them would leave fd 2 pointing at a deleted file for good.
The lock is re-entrant (a capture may nest in its own thread), so never ``await`` or ``yield`` inside a
capture: two coroutines of one event-loop thread would not be kept apart by it.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from typing import Callable, Iterator, Sequence

DEBUG_ENV = "AURICLE_DEBUG"
_FD_LOCK = threading.RLock()   # one capture at a time in the process (see the module docstring)


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


@contextlib.contextmanager
def captured_fds(fds: Sequence[int] = (2,), *, debug_env: str = DEBUG_ENV,
                 limit: int | None = 4096) -> Iterator[Callable[[], str]]:
    """Send ``fds`` to a temporary file inside the block. Yields a function that returns what was held back
    (the first ``limit`` bytes; all of it with ``None``), readable during and after the block.

    Setting ``$debug_env`` (or AURICLE_DEBUG) lets the output through. Without real file descriptors
    (embedded interpreters, some test runners) it does nothing.
    """
    text = {"value": ""}
    if os.environ.get(debug_env) or os.environ.get(DEBUG_ENV):
        yield lambda: text["value"]
        return
    with _FD_LOCK:
        yield from _capture(fds, limit, text)


def _capture(fds: Sequence[int], limit: int | None, text: dict) -> Iterator[Callable[[], str]]:
    """The body of :func:`captured_fds`, run under the lock."""
    _flush_python_streams()
    try:
        saved = [os.dup(fd) for fd in fds]
    except (OSError, ValueError):
        yield lambda: text["value"]
        return
    with tempfile.TemporaryFile() as tmp:
        def read() -> str:
            try:
                tmp.seek(0)
                return tmp.read(limit if limit is not None else -1).decode("utf-8", "replace")
            except (OSError, ValueError):
                return text["value"]
        for fd in fds:
            os.dup2(tmp.fileno(), fd)
        try:
            yield lambda: text["value"] or read()
        finally:
            _flush_python_streams()
            for fd, old in zip(fds, saved):
                os.dup2(old, fd)
                os.close(old)
            text["value"] = read()


def captured_c_stderr(debug_env: str = DEBUG_ENV) -> contextlib.AbstractContextManager[Callable[[], str]]:
    """:func:`captured_fds` for fd 2 alone: C-level chatter while probing devices or loading a model."""
    return captured_fds((2,), debug_env=debug_env)
