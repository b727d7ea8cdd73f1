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
import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from edge.errors import AuricleError, run_cli

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995)
PER_LABEL_THRESHOLDS = (*THRESHOLDS, 0.75, 0.88, 0.96, 0.985, 0.999)   # finer where keywords part ways
SMOOTHS = (1, 3, 5, 7, 9)
MIN_GAPS = (0.5, 1.0, 2.0)
RULE = ("lowest false reject rate among points with FA/h <= target on the validation negatives (ties: fewer "
        "false accepts, less smoothing, lower threshold, shorter min-gap); if none, the fewest false accepts")
PER_LABEL_RULE = ("per smoothing and min-gap, one threshold per keyword chosen exactly (tools.label_thresholds) "
                  "for the fewest {least} with at most {budget} in all on the validation audio; then the "
                  "smoothing and min-gap with the fewest {least} (ties: fewer {other}, less smoothing, shorter "
                  "min-gap); threshold: the highest of the keywords' (for a label given none)")


def choose(rows: Sequence[Any], target_fa: float) -> Any:
    """The operating point by the module's rule (rows: ``edge.evaluate.Operating``)."""
    def frr(r: Any) -> float:
        return r.false_reject_rate if r.false_reject_rate is not None else 0.0

    ok = [r for r in rows if r.false_accepts_per_hour <= target_fa + 1e-9]
    if ok:
        return min(ok, key=lambda r: (frr(r), r.false_accepts, r.smooth, r.threshold, r.min_gap))
    return min(rows, key=lambda r: (r.false_accepts, frr(r), r.smooth, r.threshold, r.min_gap))


@dataclasses.dataclass(frozen=True)
class PerLabel:
    """A per-keyword choice: the smoothing and min-gap it was made at, and the allotment."""
    smooth: int
    min_gap: float
    allotment: Any              # tools.label_thresholds.Allotment
    truth_words: int
    hours: float

    def settings(self) -> dict[str, Any]:
        own = self.allotment.thresholds
        return {"threshold": max(own.values()), "smooth": self.smooth, "min_gap": self.min_gap,
                "label_thresholds": dict(sorted(own.items()))}


def choose_per_label(rows: Sequence[Any], *, hours: float, target_fa: float | None = None,
                     max_frr: float | None = None) -> PerLabel:
    """The per-keyword choice by ``PER_LABEL_RULE`` (exactly one of ``target_fa`` and ``max_frr``)."""
    from tools.label_thresholds import allot, curves_from_counts

    best: PerLabel | None = None
    for smooth, min_gap in sorted({(r.smooth, r.min_gap) for r in rows}):
        part = [r for r in rows if (r.smooth, r.min_gap) == (smooth, min_gap)]
        labels = sorted(part[0].per_label)
        curves = curves_from_counts([r.threshold for r in part], [r.per_label for r in part],
                                    [r.misses_by_label or {} for r in part], labels)
        if max_frr is not None:
            a = allot(curves, max_misses=int(max_frr * (part[0].truth_words or 0) + 1e-9))
            key = (not a.feasible, a.false_accepts, a.misses, smooth, min_gap)
        else:
            a = allot(curves, max_false_accepts=int((target_fa or 0.0) * hours + 1e-9))
            key = (not a.feasible, a.misses, a.false_accepts, smooth, min_gap)
        cand = PerLabel(smooth, min_gap, a, part[0].truth_words or 0, hours)
        if best is None or key < best_key:
            best, best_key = cand, key
    if best is None:
        raise AuricleError("the sweep gave no grid points to choose from")
    return best


def per_label_block(choice: PerLabel, *, target_fa: float | None, max_frr: float | None) -> dict[str, Any]:
    a = choice.allotment
    least, other, budget = (("false accepts", "misses", f"{max_frr:.0%} of the words missed")
                            if max_frr is not None else ("misses", "false accepts", f"{target_fa:g} FA/h"))
    return {**choice.settings(), "target_false_reject_rate": max_frr, "target_false_accepts_per_hour": target_fa,
            "measured_on_validation": {
                "false_accepts_per_hour": round(a.false_accepts / choice.hours, 3) if choice.hours else None,
                "false_reject_rate": round(a.misses / choice.truth_words, 4) if choice.truth_words else None,
                "met_target": a.feasible},
            "rule": PER_LABEL_RULE.format(least=least, other=other, budget=budget)}


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
    from edge.cliutil import HelpFormatter

    p = argparse.ArgumentParser(prog="python -m tools.tune_detector", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--negatives", nargs="+", required=True, metavar="DIR",
                   help="negative recordings; only their validation part is used (the sha1 rule; of a corpus from "
                        "tools.negative_corpora, its tune-role sources whole)")
    p.add_argument("--stream", type=Path, required=True,
                   help="validation-split positive stream WAV (truth: the same name with .csv)")
    p.add_argument("--target-fa", type=float, default=1.0, metavar="N",
                   help="false accepts per hour allowed on the validation negatives")
    p.add_argument("--per-label", action="store_true",
                   help="one threshold per keyword (a costly keyword gets a higher one), chosen exactly")
    p.add_argument("--max-frr", type=float, default=None, metavar="F",
                   help="with --per-label: instead of --target-fa, the fewest false accepts with at most this "
                        "share of the validation words missed (e.g. 0.08)")
    p.add_argument("--hop", type=float, default=None, help="seconds between windows (default: edge.listen's)")
    p.add_argument("--dry-run", action="store_true", help="print the grid and the choice, change nothing")
    p.add_argument("--force", action="store_true", help="rewrite the manifest of a bundle the repository ships")
    return p


def _check(a: argparse.Namespace, truth: Path) -> None:
    from edge.bundle import MANIFEST
    from edge.shipped import refuse_to_replace

    if not a.dry_run:
        refuse_to_replace(a.bundle / MANIFEST, force=a.force, what="--bundle's manifest")
    if not a.stream.is_file() or not truth.is_file():
        raise AuricleError(f"need {a.stream} and {truth}; build them with python -m tools.make_sample_stream "
                           "--split val")
    if not a.target_fa >= 0:
        raise AuricleError(f"--target-fa {a.target_fa} must be >= 0 false accepts per hour")
    if a.max_frr is not None and not (a.per_label and 0 <= a.max_frr < 1):
        raise AuricleError(f"--max-frr {a.max_frr} needs --per-label and a share between 0 and 1, e.g. 0.08")


def _block(a: argparse.Namespace, ev: Any) -> dict[str, Any]:
    best = choose(ev.sweep, a.target_fa)
    print(f"validation: {ev.negative_hours:.3f} h of negatives, {best.truth_words} positive words; "
          f"{len(ev.sweep)} grid points")
    print(f"common threshold: {best.threshold}, smooth {best.smooth}, min-gap {best.min_gap}: "
          f"{best.false_accepts} false accepts ({best.false_accepts_per_hour:.2f}/h), false reject rate "
          f"{100 * (best.false_reject_rate or 0):.1f} %")
    block = detector_block(ev, best, target_fa=a.target_fa, stream=a.stream, negatives=a.negatives)
    if a.per_label:
        choice = choose_per_label(ev.sweep, hours=ev.negative_hours, target_fa=a.target_fa, max_frr=a.max_frr)
        block.update(per_label_block(choice, target_fa=None if a.max_frr is not None else a.target_fa,
                                     max_frr=a.max_frr))
        block["common_threshold_point"] = {            # what one threshold for all gave under --target-fa
            "threshold": best.threshold, "smooth": best.smooth, "min_gap": best.min_gap,
            "false_accepts_per_hour": round(best.false_accepts_per_hour, 3),
            "false_reject_rate": None if best.false_reject_rate is None else round(best.false_reject_rate, 4)}
        m = block["measured_on_validation"]
        print(f"per keyword: smooth {choice.smooth}, min-gap {choice.min_gap}, "
              + ", ".join(f"{k} {v:g}" for k, v in block["label_thresholds"].items())
              + f": {m['false_accepts_per_hour']}/h, false reject rate {100 * (m['false_reject_rate'] or 0):.1f} %"
              + ("" if m["met_target"] else " (target not met: the closest choice)"))
        block["measured_on_validation"].update(negative_hours=round(ev.negative_hours, 4),
                                               positive_words=choice.truth_words)
    return block


def main(argv: Sequence[str] | None = None) -> int:
    from edge.bundle import MANIFEST, load_bundle
    from edge.evaluate import EvaluationData, SweepGrid, evaluate
    from edge.fileio import write_json_atomic
    from edge.settings import DetectorSettings

    from edge.cliutil import setup_logging

    a = build_parser().parse_args(argv)
    setup_logging()
    truth = a.stream.with_suffix(".csv")
    _check(a, truth)
    bundle = load_bundle(a.bundle)
    data = EvaluationData(negatives=a.negatives, split="val", positives=str(a.stream), truth=str(truth))
    thresholds = PER_LABEL_THRESHOLDS if a.per_label else THRESHOLDS
    ev = evaluate(bundle, DetectorSettings.from_bundle(bundle, hop=a.hop, label_thresholds=()), data=data,
                  grid=SweepGrid(thresholds=thresholds, smooths=SMOOTHS, min_gaps=MIN_GAPS))
    block = _block(a, ev)
    if not a.dry_run:
        path = Path(a.bundle) / MANIFEST
        manifest = json.loads(path.read_text())
        manifest["detector"] = block
        write_json_atomic(path, manifest)
        print(f"wrote the detector settings into {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
