"""Learning curves: clip-level test accuracy against labelled train clips per class, trained from scratch and
fine-tuned from learnt features (``training.train --init-from``), same network, width and epochs.

    python -m benchmarks.learning_curve esc10 --data ../shared/data/esc10 --split samples/esc10_split.csv \\
        --clip-seconds 2 --init-from backbone_edge --out results/learning_curve
    python -m benchmarks.learning_curve sc4 --data runs/sc4 --init-from backbone_edge --out results/learning_curve
    python -m benchmarks.learning_curve --plot results/learning_curve --png benchmarks/learning_curve.png

Each point is one ``training.train`` run in ``OUT/NAME/{scratch,init}_k{N}`` on a split file that keeps the
validation and test rows and N train clips per class (:mod:`training.subset_split`; the 5-clip set lies inside
the 10-clip set). Without ``--split`` the base split is the data's own (sha1 of each clip's group). A finished
run (its ``report.json``) is not trained again, so an interrupted sweep resumes. ``OUT/NAME/curve.json``
holds the points; ``--plot`` draws every curve found under a folder and writes them as one JSON.

One run per point: on 80 test clips one clip is 1.25 points and a run-to-run spread of 5-10 points is usual,
so read differences under ~10 points as noise.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from edge.cliutil import HelpFormatter, add_verbosity_arguments, log_level, setup_logging
from edge.errors import AuricleError, run_cli
from edge.fileio import write_json_atomic
from training.subset_split import read_rows, subset_rows, write_rows

log = logging.getLogger("benchmarks.learning_curve")
STARTS = ("scratch", "init")


def base_split(data: Path, split: Path | None, out: Path) -> list[dict[str, str]]:
    """The rows of ``split``, or of the data's own hash-rule split (written to ``out`` for the record)."""
    if split is not None:
        return read_rows(split, "--split")
    from training.data import discover, write_split_csv

    out.parent.mkdir(parents=True, exist_ok=True)
    write_split_csv(out, discover(data), root=data)
    return read_rows(out)


def per_class_sizes(rows: list[dict[str, str]], sizes: Sequence[str]) -> list[int]:
    """``5 10 20 all`` as numbers; ``all`` is the largest class's train clips."""
    counts = Counter(r.get("label") or r["path"].split("/", 1)[0] for r in rows if r["split"] == "train")
    if not counts:
        raise AuricleError("the base split has no train rows")
    out = []
    for s in sizes:
        if s == "all":
            out.append(max(counts.values()))
        elif s.isdigit() and int(s) > 0:
            out.append(int(s))
        else:
            raise AuricleError(f"--per-class {s!r}: give positive numbers or 'all'")
    return sorted(set(out))


def source_network(init_from: str) -> tuple[str, float]:
    from training.init_from import read_source

    src = read_source(init_from)
    return src.network, src.width


def train_command(args: argparse.Namespace, split_file: Path, start: str, out: Path,
                  network: tuple[str, float]) -> list[str]:
    cmd = [sys.executable, "-m", "training.train", "--data", str(args.data), "--split-file", str(split_file),
           "--profile", "edge", "--epochs", str(args.epochs), "--seed", str(args.seed), "--quiet",
           "--out", str(out)]
    if args.clip_seconds:
        cmd += ["--clip-seconds", args.clip_seconds]
    if start == "init":
        return cmd + ["--init-from", args.init_from]
    return cmd + ["--network", network[0], "--width", f"{network[1]:g}"]


def run_point(args: argparse.Namespace, rows: list[dict[str, str]], k: int, start: str,
              network: tuple[str, float]) -> dict[str, Any]:
    """One training run (or the finished one's report) -> its point on the curve."""
    folder = args.out / args.name
    out = folder / f"{start}_k{k}"
    if not (out / "report.json").is_file():
        split_file = folder / f"split_k{k}.csv"
        write_rows(split_file, subset_rows(rows, k, args.seed))
        log.info(f"{args.name}: {start}, {k} clips per class ...")
        t0 = time.perf_counter()
        r = subprocess.run(train_command(args, split_file, start, out, network), capture_output=True, text=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if r.returncode != 0:
            tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise AuricleError(f"training {out} failed ({tail}); its log is above, fix and run again (finished "
                               "points are kept)")
        log.info(f"  done in {time.perf_counter() - t0:.0f} s")
    return point_of(out, k, start)


def point_of(run: Path, k: int, start: str) -> dict[str, Any]:
    rep = json.loads((run / "report.json").read_text())
    acc = rep.get("accuracy") or {}
    summary = rep.get("training") or {}
    return {"per_class": k, "start": start, "test_accuracy": acc.get("test"), "val_accuracy": acc.get("val"),
            "train_clips": (rep.get("split_sizes") or {}).get("train"), "test_clips":
            (rep.get("split_sizes") or {}).get("test"), "epochs_run": summary.get("epochs_run"),
            "train_seconds": summary.get("train_seconds"), "run": run.name}


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    folder = args.out / args.name
    rows = base_split(args.data, args.split, folder / "split_all.csv")
    network = source_network(args.init_from)
    points = [run_point(args, rows, k, start, network)
              for k in per_class_sizes(rows, args.per_class) for start in STARTS]
    curve = {"name": args.name, "data": os.path.relpath(args.data), "init_from": args.init_from,
             "network": network[0], "width": network[1], "epochs": args.epochs, "clip_seconds": args.clip_seconds,
             "seed": args.seed, "points": points}
    write_json_atomic(folder / "curve.json", curve)
    for p in points:
        log.info(f"{args.name} {p['start']:>7} {p['per_class']:>4}/class: test {p['test_accuracy']}")
    return curve


def plot(folder: Path, png: Path, out_json: Path | None) -> list[dict[str, Any]]:
    """Every ``*/curve.json`` under ``folder`` in one figure (and one JSON)."""
    curves = [json.loads(p.read_text()) for p in sorted(folder.glob("*/curve.json"))]
    if not curves:
        raise AuricleError(f"no */curve.json under {folder}; run a sweep first")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for ax, c in zip(axes[0], curves):
        for start, style in (("scratch", "o--"), ("init", "s-")):
            pts = sorted((p["per_class"], 100 * p["test_accuracy"]) for p in c["points"] if p["start"] == start)
            label = "from scratch" if start == "scratch" else f"--init-from {Path(c['init_from']).name}"
            ax.plot([k for k, _ in pts], [a for _, a in pts], style, label=label)
        ax.set_xscale("log")
        ks = sorted({p["per_class"] for p in c["points"]})
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("train clips per class")
        ax.set_ylabel("clip-level test accuracy (%)")
        ax.set_title(f"{c['name']} ({c['network']} x{c['width']:g}, {c['epochs']} epochs)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, png)
    if out_json:
        write_json_atomic(out_json, {"curves": curves})
    return curves


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.learning_curve", formatter_class=HelpFormatter,
                                description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("name", nargs="?", help="the curve's name (its folder under --out)")
    p.add_argument("--data", type=Path, help="the labelled data folder (as training.train --data)")
    p.add_argument("--split", type=Path, help="base split file (path,split); default: the data's hash-rule split")
    p.add_argument("--init-from", default="backbone_edge", help="run folder or backbone bundle to fine-tune from")
    p.add_argument("--per-class", nargs="+", default=["5", "10", "20", "all"], metavar="N",
                   help="train clips per class, 'all' for the whole train split")
    p.add_argument("--epochs", type=int, default=30, help="epochs of every run, both starts")
    p.add_argument("--clip-seconds", default=None, help="window length of every run (training's default: 1 s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsets and the runs")
    p.add_argument("--out", type=Path, default=Path("results/learning_curve"), help="where the runs go")
    p.add_argument("--plot", type=Path, metavar="DIR", help="draw the curves found under DIR instead of training")
    p.add_argument("--png", type=Path, default=Path("results/learning_curve.png"), help="the figure --plot writes")
    p.add_argument("--json", type=Path, help="also write every curve --plot finds into this JSON")
    add_verbosity_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(log_level(args))
    if args.plot:
        curves = plot(args.plot, args.png, args.json)
        log.info(f"{len(curves)} curve(s) drawn into {args.png}")
        return 0
    if not args.name or args.data is None:
        raise AuricleError("give a curve NAME and --data (or --plot DIR to draw finished curves)")
    if not args.data.is_dir():
        raise AuricleError(f"--data {args.data}: no such folder")
    sweep(args)
    return 0


if __name__ == "__main__":
    run_cli(main)
