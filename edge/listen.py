"""``python -m edge.listen``: listen to a microphone (or files) and print events as they happen.

With no arguments it listens to the default microphone with the shipped default bundle. One line per
event (time, label, score, start) or, with ``--json``, one JSON object per line; every line is flushed.
Background labels from the manifest are never reported. A sound that lasts gets a second line when its
smoothed score falls back below the threshold: ``end`` with its start and end times (JSON:
``{"type": "event_end", "label", "start", "end", "duration", ...}``; see :mod:`edge.gate`). A keyword gives
one event line and, a moment later, its end line. Ctrl-C / SIGTERM end cleanly with a summary on stderr
(``--json``: a ``{"type": "summary"}`` line on stdout).

Meant to run for weeks as a service: a microphone that stops delivering audio for ``--stall-timeout`` s
is closed and reopened with backoff (see :class:`edge.microphone.Watchdog`); when ``--max-restarts`` tries
fail, the run ends with a summary and exit code ``EXIT_DEVICE_STALLED`` so that a service manager
(systemd ``Restart=on-failure``) starts it afresh. ``--record`` stops with one line, and listening goes on,
when its folder fills up or disappears. Exit codes: see ``EXIT_CODES_HELP``.

The CLI is thin; :func:`listen` is the typed, keyword-only core, and :func:`run_source` the worker loop
shared with ``edge.demo``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from edge.errors import AuricleError, run_cli

# One BLAS thread: the frontend's mel product and the seed image resize are tiny matrix products that run
# several times slower when OpenBLAS threads fight the interpreter for the cores (measured: 2.6x overall on
# a seed bundle, 1.5x on an edge one). Only effective before numpy is first imported; a user setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__all__ = ["build_parser", "main", "cli", "listen", "run_source", "RunStats", "format_event"]

DEFAULT_FILE_CHUNK = 4096
# EX_IOERR from sysexits.h: systemd logs it as "status=74/IOERR" (3 would read "3/NOTIMPLEMENTED")
EXIT_DEVICE_STALLED = 74
EXIT_CODES_HELP = ("Exit codes: 0 = ended normally (audio ended, --duration reached, Ctrl-C or SIGTERM); 2 = bad "
                   "input (options, bundle, audio file, or no usable microphone at the start); "
                   f"{EXIT_DEVICE_STALLED} = the microphone stopped delivering audio and could not be reopened "
                   "(--stall-timeout, --max-restarts), so a service manager should restart the program; "
                   "130 = interrupted by a second Ctrl-C.")


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


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / (1024.0 * 1024.0)


def run_source(source: Any, detector: Any, *, duration: float | None = None,
               on_event: Callable[[Any, Any], None] | None = None,
               on_window: Callable[[Any, Any], None] | None = None,
               recorder: Any = None, stop: threading.Event | None = None,
               stats: RunStats | None = None, on_end: Callable[[Any, Any], None] | None = None) -> RunStats:
    """Feed one source through the detector until it ends, ``stop`` is set or ``duration`` s are covered.

    The detector is reset to the source's rate first. A gap in the source's sample index (dropped audio)
    calls ``detector.skip`` so no window spans it. Callbacks get ``(event_or_window, source)``; ``on_end``
    gets the end records of sustained events (``on_event`` only ever gets onsets), the last ones when the
    source ends.
    """
    stats = stats or RunStats()
    detector.reset(sample_rate=source.sample_rate)
    rate = source.sample_rate
    limit = int(round(duration * rate)) if duration is not None else None
    expected = 0
    want_windows = on_window is not None
    t0 = time.monotonic()
    stats.sources += 1
    try:
        for chunk in source.chunks():
            if stop is not None and stop.is_set():
                break
            if chunk.start > expected:                      # audio was dropped before this chunk
                gap = chunk.start - expected
                if limit is not None:
                    gap = min(gap, max(0, limit - expected))
                detector.skip(gap)
                stats.dropped_seconds += gap / rate
                if recorder is not None:
                    recorder.write_silence(gap)
                expected += gap
                if limit is not None and expected >= limit:
                    break
            samples = chunk.samples
            if limit is not None and expected + samples.size > limit:
                samples = samples[:limit - expected]
            if recorder is not None:
                recorder.write(samples)
            if want_windows:
                for w in detector.push_windows(samples):
                    on_window(w, source)
                    _deliver(w.ends, on_end, source)
                    _deliver(w.events, on_event, source)
            elif on_end is not None:
                for ev in detector.push_events(samples):
                    (on_end if ev.phase == "end" else on_event or _ignore)(ev, source)
            else:
                _deliver(detector.push(samples), on_event, source)
            expected += samples.size
            if limit is not None and expected >= limit:
                break
        if on_end is not None:
            _deliver(detector.finish(), on_end, source)
    finally:
        stats.audio_seconds += expected / rate
        stats.wall_seconds += time.monotonic() - t0
        stats.dropped_blocks += source.dropped_blocks
        stats.overflows += source.overflows
        _add_capture_stats(source, stats)
    if stop is not None and stop.is_set() and stats.stopped_by is None:
        stats.stopped_by = "signal"
    return stats


def _ignore(ev: Any, source: Any) -> None:
    return None


def _deliver(events: Sequence[Any], callback: Callable[[Any, Any], None] | None, source: Any) -> None:
    if callback is not None:
        for ev in events:
            callback(ev, source)


def _add_capture_stats(source: Any, stats: RunStats) -> None:
    """A microphone's watchdog and clock counters into ``stats`` (other sources have none)."""
    for name in ("stalls", "restarts", "reopen_failures", "stalled_seconds", "abandoned_streams",
                 "fast_clock_windows"):
        setattr(stats, name, getattr(stats, name) + getattr(source, name, 0))
    rate, peak = getattr(source, "capture_rate", None), getattr(source, "capture_rate_max", None)
    if rate is not None:
        stats.capture_rate = rate
    if peak is not None:
        stats.capture_rate_max = max(peak, stats.capture_rate_max or 0.0)


def format_event(ev: Any, *, source: str | None = None) -> str:
    """``time  label  score  from START`` for an event, ``time  label  end  START-END (DURATION)`` for the end
    of a sustained one."""
    where = f"{source}  " if source else ""
    start = getattr(ev, "start", None)
    if getattr(ev, "phase", "onset") == "end":
        return (f"{where}{ev.time:9.2f}s  {ev.label:<14s} end   {start:.2f}-{ev.end:.2f}s "
                f"({ev.end - start:.2f} s)")
    tail = f"  from {start:.2f}s" if start is not None else ""
    return f"{where}{ev.time:9.2f}s  {ev.label:<14s} {ev.score:.2f}{tail}"


def _format_window(w: Any, labels: Sequence[str], *, source: str | None = None) -> str:
    where = f"{source}  " if source else ""
    parts = "  ".join(f"{lab} {s:.3f}" for lab, s in zip(labels, w.scores))
    return f"{where}{w.time:9.2f}s  . {parts}"


def _summary(detector: Any, stats: RunStats) -> dict[str, Any]:
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
        "peak_rss_mb": round(_peak_rss_mb(), 1),
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


def _summary_line(d: dict[str, Any]) -> str:
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


class _Stopper:
    """SIGINT/SIGTERM set a flag (and stop the source) so the run ends cleanly; a second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.sources: list[Any] = []
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Stopper":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()
        for s in self.sources:
            s.stop()

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _positive(kind: type, name: str, *, allow_zero: bool = False) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} {text!r} is not a number") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{name} {text!r} must be finite")
        if value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"{name} {text!r} must be {'>= 0' if allow_zero else '> 0'}")
        return value
    return parse


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threshold {text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"--threshold {text!r} must be between 0 and 1")
    return value


def add_detector_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``edge.listen`` and ``edge.demo``."""
    from edge.detector import DEFAULT_HOP, DEFAULT_MIN_GAP, DEFAULT_SMOOTH, DEFAULT_THRESHOLD

    p.add_argument("--bundle", "--model", dest="bundle", metavar="BUNDLE",
                   help="model bundle folder (default: the shipped bundle, or $AURICLE_BUNDLE); --model is an "
                        "alias")
    p.add_argument("--hop", type=_positive(float, "--hop"), default=DEFAULT_HOP, metavar="SEC",
                   help=f"seconds between windows, rounded to whole frames (default {DEFAULT_HOP})")
    p.add_argument("--threshold", type=_probability, default=None, metavar="P",
                   help=f"smoothed score needed for an event (default: the bundle's tuned value, else "
                        f"{DEFAULT_THRESHOLD})")
    p.add_argument("--smooth", type=_positive(int, "--smooth"), default=None, metavar="N",
                   help=f"windows averaged before thresholding (default: the bundle's tuned value, else "
                        f"{DEFAULT_SMOOTH})")
    p.add_argument("--min-gap", type=_positive(float, "--min-gap", allow_zero=True), default=None,
                   metavar="SEC", help=f"debounce: seconds between two events of one label (default: the "
                   f"bundle's tuned value, else {DEFAULT_MIN_GAP})")
    p.add_argument("--threads", type=_positive(int, "--threads"), default=None, metavar="N",
                   help="interpreter threads (default: the runtime's choice)")
    p.add_argument("--coral", action="store_true", help="run the bundle's model_edgetpu.tflite on a Coral "
                   "Edge TPU (needs libedgetpu.so.1)")


def add_watchdog_arguments(p: argparse.ArgumentParser) -> None:
    """--stall-timeout and --max-restarts (the microphone watchdog)."""
    from edge.microphone import DEFAULT_MAX_RESTARTS, DEFAULT_STALL_TIMEOUT

    p.add_argument("--stall-timeout", type=_positive(float, "--stall-timeout", allow_zero=True),
                   default=DEFAULT_STALL_TIMEOUT, metavar="SEC",
                   help=f"microphone: after SEC seconds without audio, say so, close the stream and reopen it "
                        f"(default {DEFAULT_STALL_TIMEOUT:g}; 0 turns the watchdog off)")
    p.add_argument("--max-restarts", type=_positive(int, "--max-restarts", allow_zero=True),
                   default=DEFAULT_MAX_RESTARTS, metavar="N",
                   help=f"microphone: reopen tries (0.5, 1, 2, 4, 8 s apart) before exiting with code "
                        f"{EXIT_DEVICE_STALLED} (default {DEFAULT_MAX_RESTARTS})")


def watchdog_from_args(args: argparse.Namespace) -> Any:
    from edge.microphone import Watchdog

    return Watchdog(stall_timeout=args.stall_timeout, max_restarts=args.max_restarts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m edge.listen",
        description="Listen to a microphone (or WAV files) and print sound events as they happen.",
        epilog="Human output: one line per event (time, label, score, 'from' the start of its onset window), "
               "and an 'end START-END' line when the sound's smoothed score falls back below the threshold "
               "(--json: type 'event' and 'event_end'). Ctrl-C ends with a summary. The "
               "settings in effect (hop, threshold, smooth, min-gap) are printed first, on the 'listening:' line. "
               + EXIT_CODES_HELP)
    add_detector_arguments(p)
    add_watchdog_arguments(p)
    p.add_argument("--list-devices", action="store_true", help="list audio input devices and exit")
    p.add_argument("--device", metavar="ID|NAME", help="input device index or a unique part of its name")
    p.add_argument("--file", nargs="+", metavar="WAV", help="read these audio files instead of a microphone")
    p.add_argument("--realtime", action="store_true", help="with --file: pace it like a microphone")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--all-scores", action="store_true", help="print every window's smoothed scores too")
    p.add_argument("--record", metavar="DIR", help="write what was heard to a WAV in DIR (debugging)")
    p.add_argument("--duration", type=_positive(float, "--duration"), metavar="SEC",
                   help="stop after SEC seconds of audio")
    from edge.mqtt import add_mqtt_arguments
    add_mqtt_arguments(p)
    return p


@dataclasses.dataclass(frozen=True)
class _Printer:
    """Event and window lines on ``out`` (human or JSON), one flushed line each."""
    out: Any
    labels: Sequence[str]
    json_lines: bool
    multi: bool            # several sources: human lines name theirs
    publisher: Any = None  # with --mqtt: an edge.mqtt.MqttPublisher that also gets every event

    def emit(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def on_event(self, ev: Any, src: Any) -> None:
        if self.publisher is not None:
            self.publisher.publish_event(ev, source=src.name)
        if self.json_lines:
            self.emit(json.dumps({"type": "event", "source": src.name, **ev.to_dict(self.labels)}))
        else:
            self.emit(format_event(ev, source=src.name if self.multi else None))

    def on_end(self, ev: Any, src: Any) -> None:
        """The end of a sustained event (not published over MQTT: a subscriber counts events)."""
        if self.json_lines:
            self.emit(json.dumps({"type": "event_end", "source": src.name, **ev.to_dict()}))
        else:
            self.emit(format_event(ev, source=src.name if self.multi else None))

    def on_window(self, w: Any, src: Any) -> None:
        if self.json_lines:
            self.emit(json.dumps({"type": "window", "source": src.name, "time": round(w.time, 4),
                                  "scores": {lab: round(float(v), 6) for lab, v in zip(self.labels, w.scores)}}))
        else:
            self.emit(_format_window(w, self.labels, source=src.name if self.multi else None))


def _run_sources(sources: Sequence[Any], detector: Any, printer: _Printer, *, all_scores: bool,
                 record: str | None, duration: float | None, err: Any) -> RunStats:
    """Each source in turn through the detector until they end, ``duration`` is covered or a signal comes."""
    from edge.microphone import DeviceStalledError
    from edge.wavio import WavRecorder

    stats = RunStats()
    with _Stopper() as stopper:
        stopper.sources.extend(sources)
        print(f"listening: {detector.describe()}", file=err, flush=True)
        for src in sources:
            if stopper.event.is_set():
                break
            remaining = None if duration is None else duration - stats.audio_seconds
            if remaining is not None and remaining <= 0:
                break
            print(f"source: {src.describe()}", file=err, flush=True)
            recorder = WavRecorder(record, sample_rate=src.sample_rate, tag=Path(src.name).stem,
                                   log=lambda line: print(line, file=err, flush=True)) if record else None
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


def _device_gave_up(exc: Exception, stats: RunStats, err: Any) -> None:
    """The watchdog could not bring the microphone back: one line; the summary follows, then the exit code."""
    stats.stopped_by = "device_stalled"
    stats.error = str(exc)
    print(f"error: {exc} (exit code {EXIT_DEVICE_STALLED})", file=err, flush=True)


def _close_recorder(recorder: Any, stats: RunStats, err: Any) -> None:
    recorder.close()
    if recorder.error is None:
        print(f"recorded: {recorder.path}", file=err, flush=True)
    elif stats.record_error is None:
        stats.record_error = recorder.error


def listen(*, bundle: str | os.PathLike[str] | None = None, device: str | int | None = None,
           files: Sequence[str] | None = None, realtime: bool = False, hop: float, threshold: float | None,
           smooth: int | None, min_gap: float | None, json_lines: bool = False, all_scores: bool = False,
           num_threads: int | None = None, coral: bool = False, record: str | None = None,
           duration: float | None = None, out: Any = None, err: Any = None,
           file_chunk: int = DEFAULT_FILE_CHUNK, mqtt: Any = None, watchdog: Any = None) -> dict[str, Any]:
    """The core of the CLI: open sources and the model, run, print events; returns the summary dict.

    ``threshold``, ``smooth`` and ``min_gap`` left as ``None`` take the bundle's tuned values, else the
    library defaults (see :class:`edge.detector.StreamingDetector`). ``watchdog``: an
    :class:`edge.microphone.Watchdog` for the microphone (default: its defaults). The summary's
    ``stopped_by`` is ``"device_stalled"`` when the microphone could not be brought back.
    """
    from edge.bundle import load_bundle
    from edge.detector import StreamingDetector
    from edge.microphone import Microphone
    from edge.sources import FileSource, check_source_rate

    out = out or sys.stdout
    err = err or sys.stderr
    b = load_bundle(bundle)
    rate = b.feature_config.sample_rate
    if files:
        sources: list[Any] = [FileSource(f, chunk_size=file_chunk, realtime=realtime) for f in files]
    else:
        sources = [Microphone(device, model_rate=rate, watchdog=watchdog,
                              log=lambda line: print(line, file=err, flush=True))]
    publisher = None
    try:
        if files:  # fail fast, naming the file, on a rate the model cannot use
            for s in sources:
                check_source_rate(s.sample_rate, rate, f"audio file {s.name}")
        detector = StreamingDetector(b, sample_rate=sources[0].sample_rate, hop=hop, threshold=threshold,
                                     smooth=smooth, min_gap=min_gap, num_threads=num_threads, coral=coral,
                                     all_scores=all_scores)
        if mqtt is not None:   # an edge.mqtt.MqttConfig: connect now, so a bad broker fails before listening
            from edge.mqtt import open_publisher
            publisher = open_publisher(mqtt, b, log=err)
        printer = _Printer(out=out, labels=detector.labels, json_lines=json_lines, multi=len(sources) > 1,
                           publisher=publisher)
        stats = _run_sources(sources, detector, printer, all_scores=all_scores, record=record, duration=duration,
                             err=err)
        summary = _summary(detector, stats)
        if publisher is not None:
            summary["mqtt"] = publisher.close()
        if json_lines:
            printer.emit(json.dumps(summary))
        else:
            print(_summary_line(summary), file=err, flush=True)
        return summary
    finally:
        for s in sources:
            s.close()
        if publisher is not None:
            publisher.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_devices:
        from edge.microphone import format_device_list
        print(format_device_list(), flush=True)
        return 0
    if args.realtime and not args.file:
        raise AuricleError("--realtime only applies to --file (a microphone is always real time)")
    if args.file and args.device is not None:
        raise AuricleError("use either --device (microphone) or --file, not both")
    from edge.mqtt import mqtt_config_from_args
    mqtt = mqtt_config_from_args(args)
    summary = listen(bundle=args.bundle, device=args.device, files=args.file, realtime=args.realtime, hop=args.hop,
           threshold=args.threshold, smooth=args.smooth, min_gap=args.min_gap, json_lines=args.json,
           all_scores=args.all_scores, num_threads=args.threads, coral=args.coral, record=args.record,
           duration=args.duration, mqtt=mqtt, watchdog=watchdog_from_args(args))
    return int(summary.get("exit_code") or 0)


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
