"""Live capture through PortAudio: :class:`Microphone` with its stall :class:`Watchdog`.

Finding a device and its capture format, and ``--list-devices``, live in :mod:`edge.audio_devices` (its
public names are re-exported here). ``sounddevice`` is imported lazily, so importing this module costs
nothing without a microphone. ALSA/PortAudio print probing chatter on fd 2; it is held back unless
``$AURICLE_AUDIO_DEBUG`` is set.

Capture (see docs/DESIGN.md, "Data flow when listening"): the PortAudio callback only copies the block
into a bounded queue and counts overflow flags. When the queue holds more than ``max_queue_seconds`` the
*oldest* blocks are dropped and counted; memory never grows past that bound. The consumer takes the whole
queue at once, so what it reads is always a contiguous run of audio.

The watchdog lives in the consumer, never in the callback: it judges by "no new audio for
``stall_timeout`` seconds" (or a stream that ended), then closes the stream and reopens it with backoff.
A wedged driver (or an unplugged USB microphone) can leave PortAudio's thread blocked in a read that never
returns, and ``stop()`` would wait for it forever; streams are therefore closed with ``abort()`` on a helper
thread, the blocked read is interrupted with a no-op signal sent to the stream's own threads, and a stream
that still does not close within ``close_timeout`` is left behind rather than hanging the process. After
``max_restarts`` failed tries :class:`DeviceStalledError` is raised (``edge.listen`` exits with its own code
so that a service manager restarts the program). Audio resumed after a reopen starts after a gap as long
as the silence, so event times stay wall-clock-like. The consumer also compares the audio delivered with
the wall clock, so a device that delivers far faster than real time (a broken clock) is reported, and it
reports dropped blocks and input overflows (at most once a minute).
"""
from __future__ import annotations

import atexit
import collections
import contextlib
import ctypes
import dataclasses
import functools
import logging
import math
import os
import signal
import threading
import time
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from edge.audio_devices import (AUDIO_DEBUG_ENV, COMMON_RATES, choose_format, format_device_list,  # noqa: F401
                                import_sounddevice, list_input_devices, resolve_input_device)
from edge.cstreams import captured_c_stderr
from edge.errors import AudioError, AuricleError
from edge.pcm import to_mono_float32
from edge.sources import Chunk, Source

if TYPE_CHECKING:
    import sounddevice

__all__ = ["Microphone", "Watchdog", "DeviceStalledError", "import_sounddevice", "list_input_devices",
           "format_device_list", "DEFAULT_STALL_TIMEOUT", "DEFAULT_MAX_RESTARTS"]

DEFAULT_QUEUE_SECONDS = 5.0
DEFAULT_STALL_TIMEOUT = 5.0     # seconds without audio before the stream is reopened
DEFAULT_MAX_RESTARTS = 3        # reopen tries before DeviceStalledError
CLOCK_WINDOW = 2.0              # wall seconds per delivery-rate measurement
FAST_CLOCK_RATIO = 1.5          # delivering this many times real time ...
FAST_CLOCK_WINDOWS = 3          # ... for this many windows in a row means a broken clock (one fast window
                                # is a device catching up after the machine stalled us)
REPORT_INTERVAL = 60.0          # at most one dropped-blocks/overflows line per this many seconds
_POLL = 0.05                    # consumer wait granularity (seconds)
_KICK_INTERVAL = 0.05           # while a stream closes: how often its blocked threads are interrupted
# a real-time signal with a no-op handler: delivered to PortAudio's thread it ends a blocked read() (EINTR)
_WAKE_SIGNAL = (signal.SIGRTMIN + 5) if hasattr(signal, "SIGRTMIN") else None
_LOG = logging.getLogger(__name__)


class DeviceStalledError(AudioError):
    """The microphone delivered no audio and could not be reopened (``edge.listen`` exits with its own code)."""


@dataclasses.dataclass(frozen=True)
class Watchdog:
    """When a microphone counts as stalled and how hard to try reopening it.

    ``stall_timeout`` seconds without audio (0 turns the watchdog off: a stream that ends is then an error
    at once), then up to ``max_restarts`` reopen tries; try ``k`` waits ``backoff * 2**(k-1)`` seconds (at
    most ``backoff_max``) before opening, then up to ``stall_timeout`` seconds for audio.
    """
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    max_restarts: int = DEFAULT_MAX_RESTARTS
    backoff: float = 0.5
    backoff_max: float = 8.0
    close_timeout: float = 2.0

    def __post_init__(self) -> None:
        for name in ("stall_timeout", "backoff", "backoff_max", "close_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise AuricleError(f"watchdog {name}={value!r} must be a number of seconds >= 0")
        if isinstance(self.max_restarts, bool) or not isinstance(self.max_restarts, int) or self.max_restarts < 0:
            raise AuricleError(f"--max-restarts {self.max_restarts!r} must be a whole number >= 0")

    @property
    def enabled(self) -> bool:
        return self.stall_timeout > 0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reopen try ``attempt`` (1-based)."""
        return min(self.backoff * 2 ** (attempt - 1), self.backoff_max)

    def give_up_seconds(self) -> float:
        """The longest time from the last audio to :class:`DeviceStalledError` (time spent opening aside)."""
        tries = sum(self.close_timeout + self.delay(k) + self.stall_timeout for k in range(1, self.max_restarts + 1))
        return self.stall_timeout + tries + self.close_timeout


def _ignore_wake(signum: int, frame: FrameType | None) -> None:
    """Handler of the wake signal: nothing to do; its only job is to interrupt a blocked system call."""


def _install_wake_handler() -> bool:
    """Install the no-op wake handler (main thread only, never over someone else's); True when it is in place."""
    if _WAKE_SIGNAL is None:
        return False
    current = signal.getsignal(_WAKE_SIGNAL)
    if current is _ignore_wake:
        return True
    if current not in (signal.SIG_DFL, None) or threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(_WAKE_SIGNAL, _ignore_wake)   # Python installs it without SA_RESTART: read() gets EINTR
    return True


def _thread_ids() -> frozenset[int]:
    """Kernel ids of this process's threads (empty where /proc is missing)."""
    try:
        return frozenset(int(t) for t in os.listdir("/proc/self/task"))
    except (OSError, ValueError):
        return frozenset()


@functools.lru_cache(maxsize=1)
def _tgkill() -> Callable[[int, int, int], int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).tgkill      # glibc >= 2.30
    except (OSError, AttributeError):
        return None


def _wake_threads(tids: frozenset[int]) -> None:
    """Interrupt whatever system call the given threads of this process are blocked in (no-op handler)."""
    tgkill = _tgkill()
    if not tids or tgkill is None or _WAKE_SIGNAL is None or signal.getsignal(_WAKE_SIGNAL) is not _ignore_wake:
        return
    pid = os.getpid()
    for tid in tids:
        tgkill(pid, tid, int(_WAKE_SIGNAL))      # a thread that has gone: ESRCH, ignored


def _close_stream(stream: sounddevice.InputStream, tids: frozenset[int], timeout: float) -> bool:
    """``abort()`` + ``close()`` a stream within ``timeout`` s; False if it had to be left behind.

    ``abort()``, not ``stop()``: stop waits for pending buffers, i.e. for a read that may never return. The
    calls run on a helper thread while the stream's own threads are interrupted until they give up.
    """
    done = threading.Event()

    def close() -> None:
        with contextlib.suppress(Exception):
            stream.abort()
        with contextlib.suppress(Exception):
            stream.close()
        done.set()

    with captured_c_stderr(AUDIO_DEBUG_ENV):       # ALSA complains about the interrupted read on fd 2
        threading.Thread(target=close, name="auricle-close-stream", daemon=True).start()
        deadline = time.monotonic() + timeout
        while not done.wait(_KICK_INTERVAL):
            if time.monotonic() >= deadline:
                return False
            _wake_threads(tids)
    return True


def _skip_portaudio_exit_handler(sd: ModuleType) -> None:
    """A stream left behind would make sounddevice's exit handler (Pa_Terminate) wait for it forever."""
    handler = getattr(sd, "_exit_handler", None)
    if handler is not None:
        atexit.unregister(handler)


class Microphone(Source):
    """Live capture through PortAudio (sounddevice.InputStream, int16 where the device allows, else float32).

    Opens the device at the model rate when it supports it, else at its native rate (the worker resamples).
    The callback copies each block into a bounded queue (``max_queue_seconds``); on overflow the oldest
    blocks are dropped and counted. ``chunks()`` drains the queue and yields contiguous runs, and runs the
    ``watchdog`` (see the module notes); ``log`` gets its one-line reports (default: this module's logger at
    WARNING: each line is about a device in trouble or recovering from it).
    """

    kind = "microphone"

    def __init__(self, device: int | str | None = None, *, model_rate: int, blocksize: int = 0,
                 max_queue_seconds: float = DEFAULT_QUEUE_SECONDS, watchdog: Watchdog | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self._sd = import_sounddevice()
        info = resolve_input_device(self._sd, device)
        self.device_index = int(info["index"])
        self.name = str(info["name"])
        self.sample_rate, self.channels, self.dtype = choose_format(self._sd, info, int(model_rate))
        self.blocksize = int(blocksize)
        self.watchdog = watchdog if watchdog is not None else Watchdog()
        self._log = log or _LOG.warning
        self._capacity = max(1, int(max_queue_seconds * self.sample_rate))
        self._queue: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self._queued = 0
        self._written = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stream: sounddevice.InputStream | None = None
        self._stream_tids: frozenset[int] = frozenset()
        self._generation = 0             # callbacks of older (closing or abandoned) streams are ignored
        self._resume_from: float | None = None
        self.blocks = 0
        self.delivered = 0               # frames the device delivered (dropped ones included)
        self.stalls = 0                  # times the device went silent (or its stream ended)
        self.restarts = 0                # reopen tries after which audio came back
        self.reopen_failures = 0
        self.abandoned_streams = 0       # streams that would not close in time
        self.stalled_seconds = 0.0
        self.fast_clock_windows = 0      # CLOCK_WINDOW spans in runs of >= FAST_CLOCK_WINDOWS too fast ones
        self._fast_run = 0
        self.capture_rate_max: float | None = None
        self._first_open: float | None = None
        self._last_audio = self._opened_at = self._clock_t0 = 0.0
        self._clock_n0 = 0
        self._reported = (0.0, 0, 0)     # (time, dropped blocks, overflows) of the last report
        self._wake = _install_wake_handler()

    # runs on PortAudio's thread: copy, count, never block for long, never compute
    def _make_callback(self, generation: int) -> Callable[..., None]:
        def callback(indata: np.ndarray, frames: int, time_info: object, status: sounddevice.CallbackFlags) -> None:
            if generation != self._generation:
                return
            if status.input_overflow:
                self.overflows += 1
            block = indata.copy()
            now = time.monotonic()
            with self._lock:
                if self._resume_from is not None:     # first audio after a reopen: a gap as long as the silence
                    self._written += int(round((now - self._resume_from) * self.sample_rate))
                    self._resume_from = None
                self._queue.append((self._written, block))
                self._written += frames
                self._queued += frames
                self.blocks += 1
                self.delivered += frames
                self._last_audio = now
                while self._queued > self._capacity and len(self._queue) > 1:
                    _, old = self._queue.popleft()
                    self._queued -= old.shape[0]
                    self.dropped_blocks += 1
                    self.dropped_samples += old.shape[0]
            self._ready.set()
        return callback

    def _open_stream(self) -> None:
        with self._lock:
            self._generation += 1
            generation = self._generation
        before = _thread_ids()
        stream = None
        try:
            with captured_c_stderr(AUDIO_DEBUG_ENV):
                stream = self._sd.InputStream(device=self.device_index, samplerate=self.sample_rate,
                                              channels=self.channels, dtype=self.dtype, blocksize=self.blocksize,
                                              callback=self._make_callback(generation))
                stream.start()
        except Exception as exc:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
            raise AudioError(f"cannot open input device {self.name!r} at {self.sample_rate} Hz "
                             f"({' '.join(str(exc).split())}); check it with `arecord -l` or pick another "
                             "--device") from None
        self._stream = stream
        self._stream_tids = _thread_ids() - before     # PortAudio's own threads for this stream
        now = time.monotonic()
        self._opened_at = self._clock_t0 = now
        self._clock_n0 = self.delivered
        if self._first_open is None:
            self._first_open = now

    def _drop_stream(self) -> None:
        """Close the current stream (bounded in time); its late callbacks are ignored from now on."""
        with self._lock:
            self._generation += 1
        stream, self._stream = self._stream, None
        tids, self._stream_tids = self._stream_tids, frozenset()
        if stream is None:
            return
        timeout = self.watchdog.close_timeout
        if not _close_stream(stream, tids if self._wake else frozenset(), timeout):
            self.abandoned_streams += 1
            _skip_portaudio_exit_handler(self._sd)
            self._log(f"warning: the stream of {self.name!r} did not close within {timeout:g} s (its driver is "
                      "stuck in a read); left it behind")

    def start(self) -> None:
        if self._stream is not None:
            return
        self._open_stream()
        self._last_audio = time.monotonic()   # a device that never delivers counts as stalled too

    def _drain(self) -> collections.deque:
        with self._lock:
            blocks, self._queue = self._queue, collections.deque()
            self._queued = 0
        return blocks

    def chunks(self) -> Iterator[Chunk]:
        self.start()
        while not self.stopped:
            if not self._ready.wait(_POLL):
                self._watch(time.monotonic())
                continue
            self._ready.clear()
            blocks = self._drain()
            self._check_rates(time.monotonic())
            if not blocks or self.stopped:
                continue
            # the drained blocks are one contiguous run (drops only ever remove the oldest): one chunk
            start = blocks[0][0]
            data = blocks[0][1] if len(blocks) == 1 else np.concatenate([b for _, b in blocks])
            del blocks
            yield Chunk(start, to_mono_float32(data))

    # -- the watchdog (consumer side) ----------------------------------------------------------------
    def _watch(self, now: float) -> None:
        """No audio right now: report rates; reopen a stream that ended or stayed silent too long."""
        self._check_rates(now)
        if self.stopped or self._queue:
            return
        ended = not self._active()
        silent = now - self._last_audio
        if ended or (self.watchdog.enabled and silent >= self.watchdog.stall_timeout):
            self._recover(ended=ended)

    def _active(self) -> bool:
        """Whether the current stream is still running (PortAudio's thread has not ended)."""
        try:
            return self._stream is not None and bool(self._stream.active)
        except Exception:        # sounddevice.PortAudioError: the device is gone
            return False

    def _what(self, ended: bool, since: float) -> str:
        if ended:
            return f"the capture stream of {self.name!r} ended (device unplugged or busy?)"
        return f"no audio from {self.name!r} for {time.monotonic() - since:.1f} s"

    def _recover(self, *, ended: bool) -> None:
        """Close and reopen with backoff until audio flows; DeviceStalledError after ``max_restarts`` tries."""
        wd = self.watchdog
        lost_at = self._last_audio
        self.stalls += 1
        tries = wd.max_restarts if wd.enabled else 0
        if tries:
            self._log(f"warning: {self._what(ended, lost_at)}; closing the stream and reopening it (up to {tries} "
                      "tries)")
        for attempt in range(1, tries + 1):
            self._drop_stream()
            if self._stop.wait(wd.delay(attempt)):
                return
            self._log(f"reopening {self.name!r} (try {attempt} of {tries})")
            if self._reopen(lost_at):
                self.restarts += 1
                self.stalled_seconds += self._last_audio - lost_at
                self._log(f"audio from {self.name!r} is back after {self._last_audio - lost_at:.1f} s without "
                          "audio; listening goes on")
                return
            if self.stopped:
                return
        self._drop_stream()
        self.stalled_seconds += time.monotonic() - lost_at
        how = (f"{tries} reopen {'try' if tries == 1 else 'tries'} failed" if tries
               else "the stall watchdog is off (--stall-timeout 0)")
        raise DeviceStalledError(f"{self._what(ended, lost_at)}; {how} -- check the microphone (`arecord -l`, its "
                                 "cable/USB port); a service manager should restart the program")

    def _reopen(self, lost_at: float) -> bool:
        """One reopen try: open the stream, then wait up to ``stall_timeout`` s for its first audio."""
        with self._lock:
            self._resume_from = lost_at
        try:
            self._open_stream()
        except AudioError as exc:
            self.reopen_failures += 1
            self._log(f"reopen failed: {exc}")
            return False
        deadline = self._opened_at + self.watchdog.stall_timeout
        while time.monotonic() < deadline and not self.stopped:
            if self._last_audio >= self._opened_at:
                return True
            if not self._active():
                break
            self._stop.wait(_POLL)
        if self._last_audio >= self._opened_at:
            return True
        self.reopen_failures += 1
        if not self.stopped:
            self._log(f"no audio from {self.name!r} within {self.watchdog.stall_timeout:g} s of reopening it")
        return False

    def _check_rates(self, now: float) -> None:
        """Delivery rate against the wall clock, per CLOCK_WINDOW; dropped blocks and overflows, rate-limited."""
        span = now - self._clock_t0
        if self._stream is not None and span >= CLOCK_WINDOW:
            ratio = (self.delivered - self._clock_n0) / (span * self.sample_rate)
            self._clock_t0, self._clock_n0 = now, self.delivered
            self.capture_rate_max = ratio if self.capture_rate_max is None else max(self.capture_rate_max, ratio)
            self._fast_run = self._fast_run + 1 if ratio > FAST_CLOCK_RATIO else 0
            if self._fast_run >= FAST_CLOCK_WINDOWS:
                first = self.fast_clock_windows == 0
                self.fast_clock_windows += FAST_CLOCK_WINDOWS if self._fast_run == FAST_CLOCK_WINDOWS else 1
                if first:
                    self._log(f"warning: {self.name!r} delivers audio {ratio:.1f}x faster than real time (for "
                              f"{self._fast_run * CLOCK_WINDOW:g} s now: a broken clock?); what the worker "
                              "cannot take is dropped, oldest first")
        last_t, last_dropped, last_overflows = self._reported
        if (self.dropped_blocks, self.overflows) != (last_dropped, last_overflows) and \
                (not last_t or now - last_t >= REPORT_INTERVAL):
            self._log(f"warning: capture from {self.name!r}: {self.dropped_blocks - last_dropped} blocks dropped "
                      f"(the worker fell behind), {self.overflows - last_overflows} input overflows "
                      f"since {'the last report' if last_t else 'the start'}")
            self._reported = (now, self.dropped_blocks, self.overflows)

    @property
    def capture_rate(self) -> float | None:
        """Audio delivered per wall second since the first open, as a multiple of real time."""
        if self._first_open is None:
            return None
        span = time.monotonic() - self._first_open
        return self.delivered / (span * self.sample_rate) if span > 0 else None

    def stop(self) -> None:
        super().stop()
        self._ready.set()

    def close(self) -> None:
        self.stop()
        self._drop_stream()

    def describe(self) -> str:
        return f"microphone {self.name!r} (device {self.device_index}) at {self.sample_rate} Hz, " \
               f"{self.channels} ch, {self.dtype}"
