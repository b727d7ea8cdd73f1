"""Choose a bundle's detector settings (threshold, smoothing) on a *validation* stream; store them in its manifest.

The stream must come from validation-split speakers (``tools/make_sample_stream.py --split val``), never
from the test split the demo reports on. Rule, fixed before looking at results: among the settings with at
most ``--max-fa`` false alarms per minute, take the one with the most hits (ties: less smoothing, then the
lower threshold, i.e. the lower latency); if none qualifies, the one with the fewest misses + false alarms.
The chosen values land in ``manifest.json["detector"]`` with the grid, which the runtime uses when the user
passes no --threshold/--smooth. (manifest.json is not among the sha256-listed files, so this keeps the
bundle's checks valid.)

    python tools/make_sample_stream.py --split val --duration 120 --seed 11 --out /tmp/val --name val_stream
    python tools/tune_detector.py --bundle firmware_assets/kws_mobilenet_edge --stream /tmp/val/val_stream.wav
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.errors import AuricleError, run_cli  # noqa: E402

THRESHOLDS = (0.5, 0.6, 0.7, 0.8)
SMOOTHS = (3, 5, 7, 9)


def evaluate(bundle, wav: Path, truth_path: Path, *, threshold: float, smooth: int, min_gap: float) -> dict:
    from edge.audio import read_audio
    from edge.demo import read_truth, score_events
    from edge.runtime import StreamingDetector

    audio, rate = read_audio(wav)
    det = StreamingDetector(bundle, sample_rate=rate, threshold=threshold, smooth=smooth, min_gap=min_gap)
    events = det.push(audio)
    score = score_events(events, read_truth(truth_path), duration=len(audio) / rate,
                         ignore=sorted(bundle.background_labels))
    return {"threshold": threshold, "smooth": smooth, "min_gap": min_gap, **score.to_dict()}


def choose(rows: list[dict], max_fa: float) -> dict:
    ok = [r for r in rows if r["false_alarms_per_minute"] <= max_fa]
    if ok:
        return sorted(ok, key=lambda r: (-r["hits"], r["smooth"], r["threshold"]))[0]
    return sorted(rows, key=lambda r: (r["misses"] + r["false_alarms"], r["smooth"], r["threshold"]))[0]


def main(argv=None) -> int:
    from edge.bundle import MANIFEST, load_bundle, write_json_atomic

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--stream", type=Path, required=True, help="validation-split stream WAV (truth: same name .csv)")
    p.add_argument("--max-fa", type=float, default=1.0, help="false alarms per minute allowed (default 1.0)")
    p.add_argument("--min-gap", type=float, default=1.0)
    p.add_argument("--dry-run", action="store_true", help="print the grid, change nothing")
    a = p.parse_args(argv)
    truth = a.stream.with_suffix(".csv")
    if not a.stream.is_file() or not truth.is_file():
        raise AuricleError(f"need {a.stream} and {truth}; build them with tools/make_sample_stream.py --split val")
    bundle = load_bundle(a.bundle)
    rows = [evaluate(bundle, a.stream, truth, threshold=t, smooth=s, min_gap=a.min_gap)
            for t, s in itertools.product(THRESHOLDS, SMOOTHS)]
    for r in rows:
        print(f"threshold {r['threshold']:.1f} smooth {r['smooth']}: hits {r['hits']}/{r['truth_words']}, "
              f"false alarms {r['false_alarms']} ({r['false_alarms_per_minute']:.2f}/min)")
    best = choose(rows, a.max_fa)
    print(f"chosen: threshold {best['threshold']}, smooth {best['smooth']}, min-gap {best['min_gap']}")
    if not a.dry_run:
        manifest = json.loads((bundle.path / MANIFEST).read_text())
        manifest["detector"] = {
            "threshold": best["threshold"], "smooth": best["smooth"], "min_gap": best["min_gap"],
            "tuned_on": f"{a.stream.name}: validation-split speakers, {best['truth_words']} words, "
                        f"{best['duration_seconds']:.0f} s",
            "rule": f"most hits with <= {a.max_fa} false alarms/min; ties: less smoothing, lower threshold",
            "grid": rows,
        }
        write_json_atomic(bundle.path / MANIFEST, manifest)
        print(f"wrote detector settings into {bundle.path / MANIFEST}")
    return 0


if __name__ == "__main__":
    run_cli(main)
