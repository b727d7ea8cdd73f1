"""``python -m edge.demo --stream WAV [--truth CSV] [--bundle BUNDLE]``: detect words in a long recording and
score the events against a ground truth.

It runs the same pipeline as ``python -m edge.listen --file WAV`` (same worker loop, same detector, same
defaults), printing events as they are detected, then compares them with the truth CSV (default: the
stream's path with ``.csv``; columns ``start,end,label`` in seconds; a header line is optional). The scoring
rule is :mod:`edge.scoring`'s: a hit is the same label with the event time in ``[start - 0.25 s, end + 1 s]``
of a truth word, each word matched once; background labels in the truth are ignored.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from edge.cliutil import HelpFormatter, add_verbosity_arguments, setup_logging
from edge.errors import AudioError, run_cli
from edge.scoring import format_report, read_truth, score_events

if TYPE_CHECKING:
    from edge.gate import Event
    from edge.sources import Source

# One BLAS thread: the frontend's mel product and the seed image resize are tiny matrix products that run
# several times slower when OpenBLAS threads fight the interpreter for the cores (measured: 2.6x overall on
# a seed bundle, 1.5x on an edge one). Only effective before numpy is first imported; a user setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__all__ = ["build_parser", "main", "cli"]

DEFAULT_STREAM_NAME = "speech_commands_stream"


def build_parser() -> argparse.ArgumentParser:
    from edge.settings import add_detector_arguments

    p = argparse.ArgumentParser(prog="python -m edge.demo", formatter_class=HelpFormatter,
                                description="Detect words in a long recording and score against ground truth.")
    p.add_argument("--stream", default=None, metavar="WAV",
                   help="the recording, or the name of a shipped one (esc10_stream); default: the shipped "
                        "speech_commands_stream, from the checkout's samples/ or the installed package")
    p.add_argument("--truth", metavar="CSV", help="ground truth start,end,label (default: the stream's .csv)")
    add_detector_arguments(p)
    p.add_argument("--json", action="store_true", help="events and the score as JSON lines")
    add_verbosity_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import json

    from edge.bundle import load_bundle
    from edge.detector import StreamingDetector
    from edge.run import format_event, run_source
    from edge.settings import DetectorSettings, RuntimeOptions
    from edge.sources import FileSource

    args = build_parser().parse_args(argv)
    setup_logging(args)
    stream = _stream_path(args.stream)
    truth_path = Path(args.truth) if args.truth else stream.with_suffix(".csv")
    if not stream.is_file():
        raise AudioError(f"stream {stream} does not exist; pass --stream WAV (a recording with a "
                         "start,end,label CSV beside it)")
    truth = read_truth(truth_path)
    bundle = load_bundle(args.bundle)
    source = FileSource(stream)
    detector = StreamingDetector(bundle, DetectorSettings.from_args(args, bundle), RuntimeOptions.from_args(args),
                                 sample_rate=source.sample_rate)
    unknown = sorted({w.label for w in truth} - set(bundle.labels))
    if unknown:
        print(f"note: truth labels not in the model: {', '.join(unknown)} (they can only be missed)",
              file=sys.stderr, flush=True)
    print(f"demo: {detector.describe()}", file=sys.stderr, flush=True)
    events: list[Event] = []

    def on_event(ev: Event, _src: Source) -> None:
        events.append(ev)
        line = json.dumps({"type": "event", **ev.to_dict()}) if args.json else format_event(ev)
        print(line, flush=True)

    try:
        stats = run_source(source, detector, on_event=on_event)
    finally:
        source.close()
    score = score_events(events, truth, duration=stats.audio_seconds, ignore=sorted(bundle.background_labels))
    if args.json:
        print(json.dumps(score.to_dict()), flush=True)
    else:
        print(format_report(score, stream=str(stream), truth=str(truth_path)), flush=True)
    return 0


def _stream_path(given: str | None) -> Path:
    """``--stream`` as given, else the shipped demo stream wherever it is (one line naming --stream if none)."""
    from edge.shipped import find_sample

    if given is not None:
        path = Path(given)
        if path.exists() or len(path.parts) != 1:
            return path
        return find_sample(path.name.removesuffix(".wav")) or path     # a shipped stream by name: esc10_stream
    found = find_sample(DEFAULT_STREAM_NAME)
    if found is None:
        raise AudioError(f"no demo stream here ({DEFAULT_STREAM_NAME}.wav ships in samples/ and in the wheel); "
                         "pass --stream WAV, a recording with a start,end,label CSV beside it")
    return found


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
