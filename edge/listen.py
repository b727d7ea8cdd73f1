"""``python -m edge.listen``: listen to a microphone (or files) and print events as they happen.

With no arguments it listens to the default microphone with the shipped default bundle. One line per
event (time, label, score) or, with ``--json``, one JSON object per line; every line is flushed. Background
labels from the manifest are never reported. Ctrl-C / SIGTERM end cleanly with a summary on stderr
(``--json``: a ``{"type": "summary"}`` line on stdout).

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


@dataclasses.dataclass
class RunStats:
    sources: int = 0
    audio_seconds: float = 0.0        # stream time covered (dropped audio included)
    wall_seconds: float = 0.0
    dropped_blocks: int = 0           # blocks the capture queue discarded (oldest first)
    dropped_seconds: float = 0.0      # audio missing from the stream the detector saw (gaps)
    overflows: int = 0
    stopped_by: str | None = None


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / (1024.0 * 1024.0)


def run_source(source: Any, detector: Any, *, duration: float | None = None,
               on_event: Callable[[Any, Any], None] | None = None,
               on_window: Callable[[Any, Any], None] | None = None,
               recorder: Any = None, stop: threading.Event | None = None,
               stats: RunStats | None = None) -> RunStats:
    """Feed one source through the detector until it ends, ``stop`` is set or ``duration`` s are covered.

    The detector is reset to the source's rate first. A gap in the source's sample index (dropped audio)
    calls ``detector.skip`` so no window spans it. Callbacks get ``(event_or_window, source)``.
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
                    if on_event is not None:
                        for ev in w.events:
                            on_event(ev, source)
            else:
                for ev in detector.push(samples):
                    if on_event is not None:
                        on_event(ev, source)
            expected += samples.size
            if limit is not None and expected >= limit:
                break
    finally:
        stats.audio_seconds += expected / rate
        stats.wall_seconds += time.monotonic() - t0
        stats.dropped_blocks += source.dropped_blocks
        stats.overflows += source.overflows
    if stop is not None and stop.is_set() and stats.stopped_by is None:
        stats.stopped_by = "signal"
    return stats


def format_event(ev: Any, *, source: str | None = None) -> str:
    where = f"{source}  " if source else ""
    return f"{where}{ev.time:9.2f}s  {ev.label:<14s} {ev.score:.2f}"


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
        "latency_ms_p50": _r(s["latency_ms_p50"]),
        "latency_ms_p95": _r(s["latency_ms_p95"]),
        "invoke_ms_p50": _r(s["invoke_ms_p50"]),
        "rtf": _r(s["rtf"], 5),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "backend": s["backend"],
        "model": s["model"],
        "stopped_by": stats.stopped_by or "end",
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
            f"{'n/a' if rtf is None else f'{rtf:.4f}'}{speed}; peak RSS {d['peak_rss_mb']:.0f} MB")


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
    from edge.runtime import DEFAULT_HOP, DEFAULT_MIN_GAP, DEFAULT_SMOOTH, DEFAULT_THRESHOLD

    p.add_argument("--model", metavar="BUNDLE", help="model bundle folder (default: the shipped bundle, "
                   "or $AURICLE_BUNDLE)")
    p.add_argument("--hop", type=_positive(float, "--hop"), default=DEFAULT_HOP, metavar="SEC",
                   help=f"seconds between windows, rounded to whole frames (default {DEFAULT_HOP})")
    p.add_argument("--threshold", type=_probability, default=None, metavar="P",
                   help=f"smoothed score needed for an event (default: the bundle's tuned value, else "
                        f"{DEFAULT_THRESHOLD})")
    p.add_argument("--smooth", type=_positive(int, "--smooth"), default=None, metavar="N",
                   help=f"windows averaged before thresholding (default: the bundle's tuned value, else "
                        f"{DEFAULT_SMOOTH})")
    p.add_argument("--min-gap", type=_positive(float, "--min-gap", allow_zero=True), default=DEFAULT_MIN_GAP,
                   metavar="SEC", help=f"debounce: seconds between two events of one label "
                   f"(default {DEFAULT_MIN_GAP})")
    p.add_argument("--threads", type=_positive(int, "--threads"), default=None, metavar="N",
                   help="interpreter threads (default: the runtime's choice)")
    p.add_argument("--coral", action="store_true", help="run the bundle's model_edgetpu.tflite on a Coral "
                   "Edge TPU (needs libedgetpu.so.1)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m edge.listen",
        description="Listen to a microphone (or WAV files) and print sound events as they happen.",
        epilog="Human output: one line per event (time, label, score). Ctrl-C ends with a summary.")
    add_detector_arguments(p)
    p.add_argument("--list-devices", action="store_true", help="list audio input devices and exit")
    p.add_argument("--device", metavar="ID|NAME", help="input device index or a unique part of its name")
    p.add_argument("--file", nargs="+", metavar="WAV", help="read these audio files instead of a microphone")
    p.add_argument("--realtime", action="store_true", help="with --file: pace it like a microphone")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--all-scores", action="store_true", help="print every window's smoothed scores too")
    p.add_argument("--record", metavar="DIR", help="write what was heard to a WAV in DIR (debugging)")
    p.add_argument("--duration", type=_positive(float, "--duration"), metavar="SEC",
                   help="stop after SEC seconds of audio")
    return p


def listen(*, bundle: str | os.PathLike[str] | None = None, device: str | int | None = None,
           files: Sequence[str] | None = None, realtime: bool = False, hop: float, threshold: float | None,
           smooth: int | None, min_gap: float | None, json_lines: bool = False, all_scores: bool = False,
           num_threads: int | None = None, coral: bool = False, record: str | None = None,
           duration: float | None = None, out: Any = None, err: Any = None,
           file_chunk: int = DEFAULT_FILE_CHUNK) -> dict[str, Any]:
    """The core of the CLI: open sources and the model, run, print events; returns the summary dict."""
    from edge.audio import FileSource, Microphone, WavRecorder, check_source_rate
    from edge.bundle import load_bundle
    from edge.runtime import StreamingDetector

    out = out or sys.stdout
    err = err or sys.stderr
    b = load_bundle(bundle)
    rate = b.feature_config.sample_rate
    if files:
        sources: list[Any] = [FileSource(f, chunk_size=file_chunk, realtime=realtime) for f in files]
    else:
        sources = [Microphone(device, model_rate=rate)]
    try:
        if files:  # fail fast, naming the file, on a rate the model cannot use
            for s in sources:
                check_source_rate(s.sample_rate, rate, f"audio file {s.name}")
        detector = StreamingDetector(b, sample_rate=sources[0].sample_rate, hop=hop, threshold=threshold,
                                     smooth=smooth, min_gap=min_gap, num_threads=num_threads, coral=coral,
                                     all_scores=all_scores)
        labels = detector.labels
        multi = len(sources) > 1

        def emit(line: str) -> None:
            out.write(line + "\n")
            out.flush()

        def on_event(ev: Any, src: Any) -> None:
            if json_lines:
                emit(json.dumps({"type": "event", "source": src.name, **ev.to_dict(labels)}))
            else:
                emit(format_event(ev, source=src.name if multi else None))

        def on_window(w: Any, src: Any) -> None:
            if json_lines:
                emit(json.dumps({"type": "window", "source": src.name, "time": round(w.time, 4),
                                 "scores": {lab: round(float(v), 6) for lab, v in zip(labels, w.scores)}}))
            else:
                emit(_format_window(w, labels, source=src.name if multi else None))

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
                recorder = WavRecorder(record, sample_rate=src.sample_rate, tag=Path(src.name).stem) \
                    if record else None
                try:
                    run_source(src, detector, duration=remaining, on_event=on_event,
                               on_window=on_window if all_scores else None, recorder=recorder,
                               stop=stopper.event, stats=stats)
                finally:
                    src.close()
                    if recorder is not None:
                        recorder.close()
                        print(f"recorded: {recorder.path}", file=err, flush=True)
        summary = _summary(detector, stats)
        if json_lines:
            emit(json.dumps(summary))
        else:
            print(_summary_line(summary), file=err, flush=True)
        return summary
    finally:
        for s in sources:
            s.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_devices:
        from edge.audio import format_device_list
        print(format_device_list(), flush=True)
        return 0
    if args.realtime and not args.file:
        raise AuricleError("--realtime only applies to --file (a microphone is always real time)")
    if args.file and args.device is not None:
        raise AuricleError("use either --device (microphone) or --file, not both")
    listen(bundle=args.model, device=args.device, files=args.file, realtime=args.realtime, hop=args.hop,
           threshold=args.threshold, smooth=args.smooth, min_gap=args.min_gap, json_lines=args.json,
           all_scores=args.all_scores, num_threads=args.threads, coral=args.coral, record=args.record,
           duration=args.duration)
    return 0


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
