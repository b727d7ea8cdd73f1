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

The CLI is thin: :func:`listen` is the typed core (a bundle, its :class:`edge.settings.DetectorSettings` and
:class:`edge.settings.RuntimeOptions`, where the audio comes from (:class:`InputOptions`) and how events are
printed (:class:`OutputOptions`)); the worker loop is :mod:`edge.run`'s, shared with ``edge.demo`` and
``edge.evaluate``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Sequence, TextIO

from edge.cliutil import HelpFormatter, add_verbosity_arguments, positive, setup_logging
from edge.errors import AuricleError, run_cli
from edge.run import EXIT_DEVICE_STALLED, Printer, run_sources, summary, summary_line
from edge.settings import DetectorSettings, RuntimeOptions, add_detector_arguments

if TYPE_CHECKING:
    from edge.bundle import Bundle
    from edge.microphone import Watchdog
    from edge.mqtt import MqttConfig, MqttPublisher
    from edge.sources import Source

# One BLAS thread: the frontend's mel product and the seed image resize are tiny matrix products that run
# several times slower when OpenBLAS threads fight the interpreter for the cores (measured: 2.6x overall on
# a seed bundle, 1.5x on an edge one). Only effective before numpy is first imported; a user setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__all__ = ["build_parser", "main", "cli", "listen", "InputOptions", "OutputOptions", "EXIT_DEVICE_STALLED"]

DEFAULT_FILE_CHUNK = 4096
EXIT_CODES_HELP = ("Exit codes: 0 = ended normally (audio ended, --duration reached, Ctrl-C or SIGTERM); 2 = bad "
                   "input (options, bundle, audio file, or no usable microphone at the start); "
                   f"{EXIT_DEVICE_STALLED} = the microphone stopped delivering audio and could not be reopened "
                   "(--stall-timeout, --max-restarts), so a service manager should restart the program; "
                   "130 = interrupted by a second Ctrl-C.")


@dataclasses.dataclass(frozen=True)
class InputOptions:
    """Where the audio comes from: ``files`` (paced like a microphone with ``realtime``), else the microphone
    ``device`` (default: the system's) watched by ``watchdog``; ``duration``: stop after so many seconds."""
    files: Sequence[str] | None = None
    device: str | int | None = None
    realtime: bool = False
    duration: float | None = None
    file_chunk: int = DEFAULT_FILE_CHUNK
    watchdog: Watchdog | None = None


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    """How events are reported: JSON lines or human lines on ``out``, every window's scores too
    (``all_scores``), the audio recorded to a WAV in ``record``; notes and the summary line on ``err``."""
    json_lines: bool = False
    all_scores: bool = False
    record: str | None = None
    out: TextIO | None = None
    err: TextIO | None = None


def add_watchdog_arguments(p: argparse.ArgumentParser) -> None:
    """--stall-timeout and --max-restarts (the microphone watchdog)."""
    from edge.microphone import DEFAULT_MAX_RESTARTS, DEFAULT_STALL_TIMEOUT

    p.add_argument("--stall-timeout", type=positive(float, "--stall-timeout", allow_zero=True),
                   default=DEFAULT_STALL_TIMEOUT, metavar="SEC",
                   help=f"microphone: after SEC seconds without audio, say so, close the stream and reopen it "
                        f"(default {DEFAULT_STALL_TIMEOUT:g}; 0 turns the watchdog off)")
    p.add_argument("--max-restarts", type=positive(int, "--max-restarts", allow_zero=True),
                   default=DEFAULT_MAX_RESTARTS, metavar="N",
                   help=f"microphone: reopen tries (0.5, 1, 2, 4, 8 s apart) before exiting with code "
                        f"{EXIT_DEVICE_STALLED} (default {DEFAULT_MAX_RESTARTS})")


def watchdog_from_args(args: argparse.Namespace) -> Watchdog:
    from edge.microphone import Watchdog

    return Watchdog(stall_timeout=args.stall_timeout, max_restarts=args.max_restarts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m edge.listen", formatter_class=HelpFormatter,
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
    p.add_argument("--duration", type=positive(float, "--duration"), metavar="SEC",
                   help="stop after SEC seconds of audio")
    add_verbosity_arguments(p)
    from edge.mqtt import add_mqtt_arguments
    add_mqtt_arguments(p)
    return p


def open_sources(inputs: InputOptions, bundle: Bundle, err: TextIO) -> list[Source]:
    """The files (checked: a rate the model can use), else the microphone."""
    from edge.microphone import Microphone
    from edge.sources import FileSource, check_source_rate

    rate = bundle.feature_config.sample_rate
    if not inputs.files:
        return [Microphone(inputs.device, model_rate=rate, watchdog=inputs.watchdog,
                           log=lambda line: print(line, file=err, flush=True))]
    sources: list[Source] = [FileSource(f, chunk_size=inputs.file_chunk, realtime=inputs.realtime)
                             for f in inputs.files]
    try:
        for s in sources:    # fail fast, naming the file, on a rate the model cannot use
            check_source_rate(s.sample_rate, rate, f"audio file {s.name}")
    except BaseException:
        for s in sources:
            s.close()
        raise
    return sources


def listen(bundle: Bundle | str | os.PathLike[str] | None, settings: DetectorSettings | None = None,
           runtime: RuntimeOptions | None = None, *, inputs: InputOptions | None = None,
           output: OutputOptions | None = None, mqtt: MqttConfig | None = None) -> dict[str, Any]:
    """The core of the CLI: open the sources and the model, run, print events; returns the summary dict.

    ``settings`` default to the bundle's tuned values (:meth:`DetectorSettings.from_bundle`). The summary's
    ``stopped_by`` is ``"device_stalled"`` when the microphone could not be brought back.
    """
    from edge.bundle import as_bundle
    from edge.detector import StreamingDetector

    bundle = as_bundle(bundle)
    inputs, output = inputs or InputOptions(), output or OutputOptions()
    out, err = output.out or sys.stdout, output.err or sys.stderr
    sources = open_sources(inputs, bundle, err)
    publisher: MqttPublisher | None = None
    try:
        detector = StreamingDetector(bundle, settings, runtime, sample_rate=sources[0].sample_rate,
                                     all_scores=output.all_scores)
        if mqtt is not None:   # connect now, so a bad broker fails before listening
            from edge.mqtt import open_publisher
            publisher = open_publisher(mqtt, bundle, log=err)
        printer = Printer(out=out, labels=detector.labels, json_lines=output.json_lines, multi=len(sources) > 1,
                          publisher=publisher)
        stats = run_sources(sources, detector, printer, all_scores=output.all_scores, record=output.record,
                            duration=inputs.duration, err=err)
        result = summary(detector, stats)
        if publisher is not None:
            result["mqtt"] = publisher.close()
        if output.json_lines:
            printer.emit(json.dumps(result))
        else:
            print(summary_line(result), file=err, flush=True)
        return result
    finally:
        for s in sources:
            s.close()
        if publisher is not None:
            publisher.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args)
    if args.list_devices:
        from edge.microphone import format_device_list
        print(format_device_list(), flush=True)
        return 0
    if args.realtime and not args.file:
        raise AuricleError("--realtime only applies to --file (a microphone is always real time)")
    if args.file and args.device is not None:
        raise AuricleError("use either --device (microphone) or --file, not both")
    from edge.bundle import load_bundle
    from edge.mqtt import mqtt_config_from_args
    mqtt = mqtt_config_from_args(args)
    bundle = load_bundle(args.bundle)
    inputs = InputOptions(files=args.file, device=args.device, realtime=args.realtime, duration=args.duration,
                          watchdog=watchdog_from_args(args))
    output = OutputOptions(json_lines=args.json, all_scores=args.all_scores, record=args.record)
    result = listen(bundle, DetectorSettings.from_args(args, bundle), RuntimeOptions.from_args(args),
                    inputs=inputs, output=output, mqtt=mqtt)
    return int(result.get("exit_code") or 0)


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
