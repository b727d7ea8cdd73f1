"""The worker loop every command shares: source -> :class:`edge.detector.StreamingDetector` -> events.

:func:`run_source` feeds one source through a detector (gaps in the audio become ``detector.skip``, so no
window spans them) and counts what happened in a :class:`RunStats`; :func:`run_sources` runs several in turn
under a :class:`Stopper` (SIGINT/SIGTERM end cleanly), printing through a :class:`Printer`; :func:`summary`
and :func:`summary_line` report the run. ``edge.listen``, ``edge.demo`` and ``edge.evaluate`` are commands on
these pieces.
"""
from __future__ import annotations

import dataclasses
import json
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Sequence, TextIO

if TYPE_CHECKING:
    import numpy as np

    from edge.detector import StreamingDetector, WindowResult
    from edge.gate import Event
    from edge.mqtt import MqttPublisher
    from edge.sources import Chunk, Source
    from edge.wavio import WavRecorder

__all__ = ["EXIT_DEVICE_STALLED", "RunStats", "run_source", "run_sources", "Stopper", "Printer", "format_event",
           "format_window", "summary", "summary_line"]

# EX_IOERR from sysexits.h: systemd logs it as "status=74/IOERR" (3 would read "3/NOTIMPLEMENTED")
EXIT_DEVICE_STALLED = 74

EventCallback = Callable[["Event", "Source"], None]
WindowCallback = Callable[["WindowResult", "Source"], None]


@dataclasses.dataclass
class RunStats:
    sources: int = 0
    audio_seconds: float = 0.0        # stream time covered (dropped audio included)
    wall_seconds: float = 0.0
    dropped_blocks: int = 0           # blocks the capture queue discarded (oldest first)
    dropped_seconds: float = 0.0      # audio missing from the stream the detector saw (gaps)
    overflows: int = 0
    stopped_by: str | None = None
    error: str | None = None          # why the run ended early (the microphone stalled)
    stalls: int = 0                   # microphone: times it went silent for --stall-timeout s (or its stream ended)
    restarts: int = 0                 # microphone: reopen tries after which audio came back
    reopen_failures: int = 0
    stalled_seconds: float = 0.0
    abandoned_streams: int = 0        # streams that would not close in time (a driver stuck in a read)
    fast_clock_windows: int = 0       # 2 s spans in sustained runs of > 1.5x real time delivery
    capture_rate: float | None = None     # audio delivered per wall second, x real time (microphone)
    capture_rate_max: float | None = None
    record_error: str | None = None   # --record stopped early (full disk, folder gone)


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / (1024.0 * 1024.0)


@dataclasses.dataclass
class _Feeder:
    """One source's samples into the detector, up to ``limit`` samples; the callbacks get what it finds."""
    source: Source
    detector: StreamingDetector
    limit: int | None
    on_event: EventCallback | None
    on_window: WindowCallback | None
    on_end: EventCallback | None
    recorder: WavRecorder | None
    expected: int = 0                 # samples of the stream covered so far (gaps included)

    def gap(self, chunk: Chunk, stats: RunStats) -> bool:
        """Audio was dropped before ``chunk``: skip it in the detector. False when the limit is reached."""
        gap = chunk.start - self.expected
        if self.limit is not None:
            gap = min(gap, max(0, self.limit - self.expected))
        self.detector.skip(gap)
        stats.dropped_seconds += gap / self.source.sample_rate
        if self.recorder is not None:
            self.recorder.write_silence(gap)
        self.expected += gap
        return self.limit is None or self.expected < self.limit

    def push(self, samples: np.ndarray) -> bool:
        """Feed ``samples`` (cut at the limit); False when the limit is reached."""
        if self.limit is not None and self.expected + samples.size > self.limit:
            samples = samples[:self.limit - self.expected]
        if self.recorder is not None:
            self.recorder.write(samples)
        det, src = self.detector, self.source
        if self.on_window is not None:
            for w in det.push_windows(samples):
                self.on_window(w, src)
                _deliver(w.ends, self.on_end, src)
                _deliver(w.events, self.on_event, src)
        elif self.on_end is not None:
            for ev in det.push_events(samples):
                (self.on_end if ev.phase == "end" else self.on_event or _ignore)(ev, src)
        else:
            _deliver(det.push(samples), self.on_event, src)
        self.expected += samples.size
        return self.limit is None or self.expected < self.limit


def run_source(source: Source, detector: StreamingDetector, *, duration: float | None = None,
               on_event: EventCallback | None = None, on_window: WindowCallback | None = None,
               recorder: WavRecorder | None = None, stop: threading.Event | None = None,
               stats: RunStats | None = None, on_end: EventCallback | None = None) -> RunStats:
    """Feed one source through the detector until it ends, ``stop`` is set or ``duration`` s are covered.

    The detector is reset to the source's rate first. A gap in the source's sample index (dropped audio)
    calls ``detector.skip`` so no window spans it. Callbacks get ``(event_or_window, source)``; ``on_end``
    gets the end records of sustained events (``on_event`` only ever gets onsets), the last ones when the
    source ends.
    """
    stats = stats or RunStats()
    detector.reset(sample_rate=source.sample_rate)
    rate = source.sample_rate
    feeder = _Feeder(source, detector, int(round(duration * rate)) if duration is not None else None,
                     on_event, on_window, on_end, recorder)
    t0 = time.monotonic()
    stats.sources += 1
    try:
        for chunk in source.chunks():
            if stop is not None and stop.is_set():
                break
            if chunk.start > feeder.expected and not feeder.gap(chunk, stats):
                break
            if not feeder.push(chunk.samples):
                break
        if on_end is not None:
            _deliver(detector.finish(), on_end, source)
    finally:
        stats.audio_seconds += feeder.expected / rate
        stats.wall_seconds += time.monotonic() - t0
        stats.dropped_blocks += source.dropped_blocks
        stats.overflows += source.overflows
        _add_capture_stats(source, stats)
    if stop is not None and stop.is_set() and stats.stopped_by is None:
        stats.stopped_by = "signal"
    return stats


def _ignore(ev: Event, source: Source) -> None:
    return None


def _deliver(events: Sequence[Event], callback: EventCallback | None, source: Source) -> None:
    if callback is not None:
        for ev in events:
            callback(ev, source)


def _add_capture_stats(source: Source, stats: RunStats) -> None:
    """A microphone's watchdog and clock counters into ``stats`` (other sources have none)."""
    for name in ("stalls", "restarts", "reopen_failures", "stalled_seconds", "abandoned_streams",
                 "fast_clock_windows"):
        setattr(stats, name, getattr(stats, name) + getattr(source, name, 0))
    rate, peak = getattr(source, "capture_rate", None), getattr(source, "capture_rate_max", None)
    if rate is not None:
        stats.capture_rate = rate
    if peak is not None:
        stats.capture_rate_max = max(peak, stats.capture_rate_max or 0.0)


# -- lines --------------------------------------------------------------------------------------------------
def format_event(ev: Event, *, source: str | None = None) -> str:
    """``time  label  score  from START`` for an event, ``time  label  end  START-END (DURATION)`` for the end
    of a sustained one."""
    where = f"{source}  " if source else ""
    start = getattr(ev, "start", None)
    if getattr(ev, "phase", "onset") == "end":
        return (f"{where}{ev.time:9.2f}s  {ev.label:<14s} end   {start:.2f}-{ev.end:.2f}s "
                f"({ev.end - start:.2f} s)")
    tail = f"  from {start:.2f}s" if start is not None else ""
    return f"{where}{ev.time:9.2f}s  {ev.label:<14s} {ev.score:.2f}{tail}"


def format_window(w: WindowResult, labels: Sequence[str], *, source: str | None = None) -> str:
    where = f"{source}  " if source else ""
    parts = "  ".join(f"{lab} {s:.3f}" for lab, s in zip(labels, w.scores))
    return f"{where}{w.time:9.2f}s  . {parts}"


def summary(detector: StreamingDetector, stats: RunStats) -> dict[str, Any]:
    """The run's summary record (the ``{"type": "summary"}`` line)."""
    s = detector.stats()
    return {
        "type": "summary",
        "windows": s["windows"],
        "events": s["events"],
        "audio_seconds": round(stats.audio_seconds, 3),
        "wall_seconds": round(stats.wall_seconds, 3),
        "blocks_dropped": stats.dropped_blocks,
        "dropped_seconds": round(stats.dropped_seconds, 3),
        "input_overflows": stats.overflows,
        **_capture_summary(stats),
        "latency_ms_p50": _r(s["latency_ms_p50"]),
        "latency_ms_p95": _r(s["latency_ms_p95"]),
        "invoke_ms_p50": _r(s["invoke_ms_p50"]),
        "rtf": _r(s["rtf"], 5),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "backend": s["backend"],
        "model": s["model"],
        "stopped_by": stats.stopped_by or "end",
    }


def _capture_summary(stats: RunStats) -> dict[str, Any]:
    """What the microphone watchdog saw, and why the run ended early (if it did)."""
    return {
        "stalls": stats.stalls,
        "restarts": stats.restarts,
        "reopen_failures": stats.reopen_failures,
        "stalled_seconds": round(stats.stalled_seconds, 3),
        "abandoned_streams": stats.abandoned_streams,
        "capture_rate": _r(stats.capture_rate, 3),
        "capture_rate_max": _r(stats.capture_rate_max, 3),
        "fast_clock_windows": stats.fast_clock_windows,
        "record_error": stats.record_error,
        "error": stats.error,
        "exit_code": EXIT_DEVICE_STALLED if stats.stopped_by == "device_stalled" else 0,
    }


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None else round(v, nd)


def summary_line(d: dict[str, Any]) -> str:
    """The human summary line (stderr) of a :func:`summary` record."""
    def ms(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f} ms"
    rtf = d["rtf"]
    speed = f" ({1 / rtf:.0f}x faster than real time)" if rtf else ""
    return (f"summary: {d['windows']} windows classified, {d['events']} events, {d['audio_seconds']:.1f} s of "
            f"audio; {d['blocks_dropped']} blocks dropped ({d['dropped_seconds']:.2f} s), "
            f"{d['input_overflows']} input overflows; latency per window p50 {ms(d['latency_ms_p50'])}, "
            f"p95 {ms(d['latency_ms_p95'])} (invoke p50 {ms(d['invoke_ms_p50'])}); real-time factor "
            f"{'n/a' if rtf is None else f'{rtf:.4f}'}{speed}; peak RSS {d['peak_rss_mb']:.0f} MB"
            f"{_capture_note(d)}")


def _capture_note(d: dict[str, Any]) -> str:
    """The watchdog's part of the human summary line (empty when the microphone behaved)."""
    parts = []
    if d["stalls"]:
        parts.append(f"{d['stalls']} stalls, {d['restarts']} reopened, {d['stalled_seconds']:.1f} s without audio")
    if d["fast_clock_windows"]:
        parts.append(f"device clock up to {d['capture_rate_max']:.1f}x real time")
    if d["record_error"]:
        parts.append(f"recording stopped early ({d['record_error']})")
    if d["stopped_by"] == "device_stalled":
        parts.append(f"gave up on the microphone: exit code {d['exit_code']}")
    return "; " + "; ".join(parts) if parts else ""


# -- a run of several sources ---------------------------------------------------------------------------------
class Stopper:
    """SIGINT/SIGTERM set a flag (and stop the source) so the run ends cleanly; a second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.sources: list[Source] = []
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Stopper:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()
        for s in self.sources:
            s.stop()

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclasses.dataclass(frozen=True)
class Printer:
    """Event and window lines on ``out`` (human or JSON), one flushed line each."""
    out: TextIO
    labels: Sequence[str]
    json_lines: bool
    multi: bool                                # several sources: human lines name theirs
    publisher: MqttPublisher | None = None     # with --mqtt: also gets every event

    def emit(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def on_event(self, ev: Event, src: Source) -> None:
        if self.publisher is not None:
            self.publisher.publish_event(ev, source=src.name)
        if self.json_lines:
            self.emit(json.dumps({"type": "event", "source": src.name, **ev.to_dict(self.labels)}))
        else:
            self.emit(format_event(ev, source=src.name if self.multi else None))

    def on_end(self, ev: Event, src: Source) -> None:
        """The end of a sustained event (not published over MQTT: a subscriber counts events)."""
        if self.json_lines:
            self.emit(json.dumps({"type": "event_end", "source": src.name, **ev.to_dict()}))
        else:
            self.emit(format_event(ev, source=src.name if self.multi else None))

    def on_window(self, w: WindowResult, src: Source) -> None:
        if self.json_lines:
            self.emit(json.dumps({"type": "window", "source": src.name, "time": round(w.time, 4),
                                  "scores": {lab: round(float(v), 6) for lab, v in zip(self.labels, w.scores)}}))
        else:
            self.emit(format_window(w, self.labels, source=src.name if self.multi else None))


def run_sources(sources: Sequence[Source], detector: StreamingDetector, printer: Printer, *, all_scores: bool,
                record: str | None, duration: float | None, err: TextIO) -> RunStats:
    """Each source in turn through the detector until they end, ``duration`` is covered or a signal comes."""
    from edge.microphone import DeviceStalledError

    stats = RunStats()
    with Stopper() as stopper:
        stopper.sources.extend(sources)
        print(f"listening: {detector.describe()}", file=err, flush=True)
        for src in sources:
            remaining = None if duration is None else duration - stats.audio_seconds
            if stopper.event.is_set() or (remaining is not None and remaining <= 0):
                break
            print(f"source: {src.describe()}", file=err, flush=True)
            recorder = _recorder(record, src, err)
            try:
                run_source(src, detector, duration=remaining, on_event=printer.on_event,
                           on_window=printer.on_window if all_scores else None, recorder=recorder,
                           stop=stopper.event, stats=stats, on_end=printer.on_end)
            except DeviceStalledError as exc:
                _device_gave_up(exc, stats, err)
                break
            finally:
                src.close()
                if recorder is not None:
                    _close_recorder(recorder, stats, err)
    return stats


def _recorder(record: str | None, src: Source, err: TextIO) -> WavRecorder | None:
    """With ``--record DIR``: a recorder for this source's audio."""
    if not record:
        return None
    from edge.wavio import WavRecorder

    return WavRecorder(record, sample_rate=src.sample_rate, tag=Path(src.name).stem,
                       log=lambda line: print(line, file=err, flush=True))


def _device_gave_up(exc: Exception, stats: RunStats, err: TextIO) -> None:
    """The watchdog could not bring the microphone back: one line; the summary follows, then the exit code."""
    stats.stopped_by = "device_stalled"
    stats.error = str(exc)
    print(f"error: {exc} (exit code {EXIT_DEVICE_STALLED})", file=err, flush=True)


def _close_recorder(recorder: WavRecorder, stats: RunStats, err: TextIO) -> None:
    recorder.close()
    if recorder.error is None:
        print(f"recorded: {recorder.path}", file=err, flush=True)
    elif stats.record_error is None:
        stats.record_error = recorder.error
