"""False accepts per hour and false rejects of shipped bundles on held-out audio: ``python -m benchmarks.false_accepts``.

For each bundle, at its shipped operating point (the manifest's tuned ``detector`` settings) and over the
DET grid, with ``edge.evaluate`` (the same streaming path as ``edge.listen``):

* **negatives**: the *test* part of the negative recordings (``sha1(path) % 100 >= 90``; training and
  tuning never read it) and, with ``--extra-negatives``, other audio no bundle was trained or tuned on
  (e.g. ESC-10's everyday sounds, all files);
* **positives**: a stream of keywords from *test-split* speakers with its truth
  (``python -m tools.make_sample_stream --split test --duration 160 --seed 23 --name test_stream``).

Writes ``false_accepts.json``, ``FALSE_ACCEPTS.md`` and ``det_<bundle>.png`` into ``--out`` (default
``results/false_accepts``) and, with ``--readme``, the table between the README's ``FALSE-ACCEPTS`` markers.
The shipped figures (``--out benchmarks --readme README.md``) are replaced only with ``--force``. The
README's results table takes its FA/h column from ``benchmarks/false_accepts.json``: ``python -m
tools.readme_results --write`` after a new run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from edge.errors import AuricleError, run_cli

BEGIN, END = "<!-- FALSE-ACCEPTS:BEGIN (python -m benchmarks.false_accepts) -->", "<!-- FALSE-ACCEPTS:END -->"


@dataclasses.dataclass(frozen=True)
class BundleFigures:
    bundle: str
    settings: dict[str, Any]
    held_out: dict[str, Any]          # the test part of the negatives, with the positive stream
    extra: dict[str, Any] | None      # other negative audio (no positives)

    def combined(self) -> tuple[int, float]:
        fa = self.held_out["false_accepts"]["total"] + (self.extra["false_accepts"]["total"] if self.extra else 0)
        hours = self.held_out["negative_hours"] + (self.extra["negative_hours"] if self.extra else 0.0)
        return fa, hours

    def headline(self) -> str:
        """FA/h on all negative audio at the shipped point, and the FRR on the test-speaker stream."""
        fa, hours = self.combined()
        frr = self.held_out.get("false_reject_rate")
        return f"{fa / hours:.1f} @ " + ("-" if frr is None else f"{100 * frr:.1f} %")


def load_figures(path: Path) -> list[BundleFigures]:
    """What a previous run wrote to ``false_accepts.json``; none if the file is missing or not in this form."""
    try:
        return [BundleFigures(**e) for e in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        return []


def measure(bundle: Path, *, negatives: str, extra: Sequence[str], stream: Path, quiet: bool,
            plot_dir: Path) -> BundleFigures:
    from edge.bundle import load_bundle
    from edge.evaluate import EvaluationData, SweepGrid, evaluate, plot_det

    b = load_bundle(bundle)
    held = evaluate(b, data=EvaluationData(negatives=[negatives], split="test", positives=str(stream),
                                           truth=str(stream.with_suffix(".csv"))), grid=SweepGrid(), quiet=quiet)
    plot_det(held, plot_dir / f"det_{held.bundle}.png")
    other = evaluate(b, data=EvaluationData(negatives=list(extra)), grid=SweepGrid(),
                     quiet=quiet).to_dict() if extra else None
    return BundleFigures(bundle=held.bundle, settings=held.settings, held_out=held.to_dict(), extra=other)


def _per_label(d: dict[str, Any]) -> str:
    fired = sorted(((k, v) for k, v in d["false_accepts"]["per_label"].items() if v), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v}" for k, v in fired) or "none"


def markdown(figures: Sequence[BundleFigures], *, negatives: str, extra: Sequence[str], stream: Path) -> str:
    from edge.intervals import proportion_interval, rate_interval

    lines = ["| bundle | threshold / smooth / min-gap | held-out negatives | FA | FA/h | other negatives | FA | FA/h "
             "| all FA/h (95 % CI) | FRR (test speakers; 95 % CI) |", "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for f in figures:
        s, h, x = f.settings, f.held_out, f.extra
        fa, hours = f.combined()
        pos = h["positives"]
        fa_lo, fa_hi = rate_interval(fa, hours)
        frr_lo, frr_hi = proportion_interval(pos["misses"], pos["truth_words"])
        other = (f"{x['negative_hours']:.2f} h | {x['false_accepts']['total']} | {x['false_accepts_per_hour']:.1f}"
                 if x else "- | - | -")
        thr = "per keyword" if s.get("label_thresholds") else f"{s['threshold']:g}"
        lines.append(f"| `{f.bundle}` | {thr} / {s['smooth']} / {s['min_gap']:g} s "
                     f"| {h['negative_hours']:.2f} h | {h['false_accepts']['total']} | {h['false_accepts_per_hour']:.1f} "
                     f"| {other} | {fa / hours:.1f} ({fa_lo:.1f}-{fa_hi:.1f}) | {100 * h['false_reject_rate']:.1f} % "
                     f"({pos['misses']}/{pos['truth_words']}; {100 * frr_lo:.0f}-{100 * frr_hi:.0f} %) |")
    lines.append("")
    for f in figures:
        lines.append(f"- `{f.bundle}` false accepts by label: held-out {_per_label(f.held_out)}"
                     + (f"; other {_per_label(f.extra)}" if f.extra else "")
                     + f"; evaluation ran at {f.held_out['seconds_per_audio_hour']:.0f} s per hour of audio.")
    lines.append(f"\nHeld-out negatives: the test part of `{negatives}` (files with sha1(path) % 100 >= 90). "
                 + (f"Other negatives: all of {', '.join(f'`{e}`' for e in extra)}. " if extra else "")
                 + f"Positives: `{stream.name}` ({figures[0].held_out['positives']['truth_words']} keywords "
                 "from test-split speakers). DET curves: `benchmarks/det_<bundle>.png`.")
    return "\n".join(lines)


def write_readme(readme: Path, table: str) -> None:
    from edge.fileio import write_text_atomic

    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise AuricleError(f"{readme} has no {BEGIN} ... {END} markers; add them where the table belongs")
    new = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _m: f"{BEGIN}\n{table}\n{END}", text,
                 flags=re.S)
    write_text_atomic(readme, new)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.false_accepts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundles", nargs="+", type=Path,
                   default=[Path("firmware_assets/kws_mobilenet_edge"), Path("firmware_assets/kws_resnet18_edge")])
    p.add_argument("--negatives", default="../shared/data/negatives", help="negative recordings (test part used)")
    p.add_argument("--extra-negatives", nargs="*", default=[], metavar="DIR",
                   help="other audio with none of the keywords, all files used (e.g. ../shared/data/esc10)")
    p.add_argument("--stream", type=Path, default=Path("results/streams/test_stream.wav"),
                   help="test-speaker keyword stream (truth: same name .csv)")
    p.add_argument("--out", type=Path, default=Path("results/false_accepts"),
                   help="folder for false_accepts.json, FALSE_ACCEPTS.md and the DET plots (default "
                        "results/false_accepts; the shipped benchmarks/ files are replaced only with --force)")
    p.add_argument("--readme", type=Path, help="also replace the table between the README's markers (needs --force "
                                               "for the shipped README.md)")
    p.add_argument("--force", action="store_true", help="replace shipped files (benchmarks/, README.md)")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from edge.fileio import write_json_atomic, write_text_atomic
    from edge.shipped import refuse_to_replace

    a = build_parser().parse_args(argv)
    for path in [a.out / "false_accepts.json", a.out / "FALSE_ACCEPTS.md", *([a.readme] if a.readme else [])]:
        refuse_to_replace(path, force=a.force, what="--readme" if path == a.readme else "--out")
    if not a.stream.is_file() or not a.stream.with_suffix(".csv").is_file():
        raise AuricleError(f"need {a.stream} and its .csv; build them with python -m tools.make_sample_stream "
                           "--split test --duration 160 --seed 23 --out results/streams --name test_stream")
    a.out.mkdir(parents=True, exist_ok=True)
    figures = [measure(b, negatives=a.negatives, extra=a.extra_negatives, stream=a.stream, quiet=a.quiet,
                       plot_dir=a.out) for b in a.bundles]
    table = markdown(figures, negatives=a.negatives, extra=a.extra_negatives, stream=a.stream)
    write_json_atomic(a.out / "false_accepts.json", [dataclasses.asdict(f) for f in figures])
    write_text_atomic(a.out / "FALSE_ACCEPTS.md", "# False accepts per hour and false rejects\n\n" + table + "\n")
    if a.readme:
        write_readme(a.readme, table)
    print(table, file=sys.stdout, flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
