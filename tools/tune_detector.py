"""Choose a bundle's detector operating point for a false-accepts-per-hour target; store it in its manifest.

Tuning uses **validation** audio only: the validation part of the negative recordings (``--split val``: the
project's sha1 rule on each file's path) and a stream of validation-split speakers
(``python -m tools.make_sample_stream --split val``). Test audio is for the figures, never for this.

One model pass (``edge.evaluate``, the same streaming path as ``edge.listen``) scores every window; the grid
of thresholds x smoothing x min-gap is replayed through the detector's own event rule. Rule, fixed before
looking at results: among the points with at most ``--target-fa`` false accepts per hour on the validation
negatives, the lowest false reject rate on the validation stream (ties: fewer false accepts, less
smoothing, lower threshold, shorter min-gap); if no point meets the target, the one with the fewest false
accepts (ties: lowest false reject rate). The choice, the target, the grid and the measured point land in
``manifest.json["detector"]``, which ``edge.listen`` uses when no --threshold/--smooth/--min-gap is given.
(manifest.json is not among the sha256-listed files, so the bundle's checks stay valid.)

    python -m tools.make_sample_stream --split val --duration 240 --seed 11 --out results/streams --name val_stream
    python -m tools.tune_detector --bundle firmware_assets/kws_mobilenet_edge \\
        --negatives ../shared/data/negatives --stream results/streams/val_stream.wav --target-fa 1
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from edge.errors import AuricleError, run_cli

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995)
SMOOTHS = (1, 3, 5, 7, 9)
MIN_GAPS = (0.5, 1.0, 2.0)
RULE = ("lowest false reject rate among points with FA/h <= target on the validation negatives (ties: fewer "
        "false accepts, less smoothing, lower threshold, shorter min-gap); if none, the fewest false accepts")


def choose(rows: Sequence[Any], target_fa: float) -> Any:
    """The operating point by the module's rule (rows: ``edge.evaluate.Operating``)."""
    def frr(r: Any) -> float:
        return r.false_reject_rate if r.false_reject_rate is not None else 0.0

    ok = [r for r in rows if r.false_accepts_per_hour <= target_fa + 1e-9]
    if ok:
        return min(ok, key=lambda r: (frr(r), r.false_accepts, r.smooth, r.threshold, r.min_gap))
    return min(rows, key=lambda r: (r.false_accepts, frr(r), r.smooth, r.threshold, r.min_gap))


def detector_block(ev: Any, best: Any, *, target_fa: float, stream: Path, negatives: Sequence[str]) -> dict:
    """The manifest's ``detector`` entry: the choice, how it was chosen, and the validation grid."""
    return {
        "threshold": best.threshold, "smooth": best.smooth, "min_gap": best.min_gap,
        "target_false_accepts_per_hour": target_fa,
        "measured_on_validation": {
            "false_accepts_per_hour": round(best.false_accepts_per_hour, 3),
            "false_reject_rate": None if best.false_reject_rate is None else round(best.false_reject_rate, 4),
            "negative_hours": round(ev.negative_hours, 4), "positive_words": best.truth_words,
        },
        "tuned_on": f"validation part of {', '.join(Path(n).name for n in negatives)} "
                    f"({ev.negative_files} files, {ev.negative_hours:.2f} h) and {stream.name} "
                    f"(validation-split speakers, {best.truth_words} words)",
        "rule": RULE,
        "grid": [r.to_dict() for r in ev.sweep],
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.tune_detector", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--negatives", nargs="+", required=True, metavar="DIR",
                   help="negative recordings; only their validation part (sha1 rule) is used")
    p.add_argument("--stream", type=Path, required=True,
                   help="validation-split positive stream WAV (truth: the same name with .csv)")
    p.add_argument("--target-fa", type=float, default=1.0, metavar="N",
                   help="false accepts per hour allowed on the validation negatives (default 1)")
    p.add_argument("--hop", type=float, default=None, help="seconds between windows (default: edge.listen's)")
    p.add_argument("--dry-run", action="store_true", help="print the grid and the choice, change nothing")
    p.add_argument("--force", action="store_true", help="rewrite the manifest of a bundle the repository ships")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from edge.bundle import MANIFEST, load_bundle
    from edge.evaluate import EvaluationData, SweepGrid, evaluate
    from edge.settings import DetectorSettings
    from edge.fileio import write_json_atomic
    from edge.shipped import refuse_to_replace

    a = build_parser().parse_args(argv)
    if not a.dry_run:
        refuse_to_replace(a.bundle / MANIFEST, force=a.force, what="--bundle's manifest")
    truth = a.stream.with_suffix(".csv")
    if not a.stream.is_file() or not truth.is_file():
        raise AuricleError(f"need {a.stream} and {truth}; build them with python -m tools.make_sample_stream "
                           "--split val")
    if not a.target_fa >= 0:
        raise AuricleError(f"--target-fa {a.target_fa} must be >= 0 false accepts per hour")
    bundle = load_bundle(a.bundle)
    data = EvaluationData(negatives=a.negatives, split="val", positives=str(a.stream), truth=str(truth))
    ev = evaluate(bundle, DetectorSettings.from_bundle(bundle, hop=a.hop), data=data,
                  grid=SweepGrid(thresholds=THRESHOLDS, smooths=SMOOTHS, min_gaps=MIN_GAPS))
    best = choose(ev.sweep, a.target_fa)
    print(f"validation: {ev.negative_hours:.3f} h of negatives, {best.truth_words} positive words; "
          f"{len(ev.sweep)} grid points")
    print(f"chosen: threshold {best.threshold}, smooth {best.smooth}, min-gap {best.min_gap}: "
          f"{best.false_accepts} false accepts ({best.false_accepts_per_hour:.2f}/h), false reject rate "
          f"{100 * (best.false_reject_rate or 0):.1f} %")
    if not a.dry_run:
        path = Path(a.bundle) / MANIFEST
        manifest = json.loads(path.read_text())
        manifest["detector"] = detector_block(ev, best, target_fa=a.target_fa, stream=a.stream,
                                              negatives=a.negatives)
        write_json_atomic(path, manifest)
        print(f"wrote the detector settings into {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
