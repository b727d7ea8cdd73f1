"""A split file with only N training clips per class, for learning curves:
``python -m training.subset_split SPLIT.csv --per-class 5 --out small.csv``.

Reads a split file (``path,split`` and any other columns, e.g. ``samples/esc10_split.csv`` or a run's
``split.csv``), keeps its validation and test rows as they are and the first N train rows of each class in a
seeded shuffle; pass the result to ``training.train --split-file``. The class is the row's ``label`` column,
else the first folder of its path. Nested subsets: the 5-clip set is inside the 10-clip set (same seed).
"""
from __future__ import annotations

import argparse
import csv
import io
import random
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from edge.errors import AuricleError, run_cli
from edge.fileio import write_text_atomic


def subset_rows(rows: list[dict[str, str]], per_class: int, seed: int = 0) -> list[dict[str, str]]:
    """Validation and test rows unchanged; ``per_class`` train rows per class (all of a smaller class)."""
    if per_class < 1:
        raise AuricleError(f"--per-class must be >= 1, got {per_class}")
    by_class: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        if row["split"] == "train":
            by_class[row.get("label") or row["path"].split("/", 1)[0]].append(row)
    keep = set()
    for label in sorted(by_class):
        train = sorted(by_class[label], key=lambda r: r["path"])
        random.Random(f"{seed}:{label}").shuffle(train)
        keep.update(r["path"] for r in train[:per_class])
    return [r for r in rows if r["split"] != "train" or r["path"] in keep]


def read_rows(path: str | Path, what: str = "split file") -> list[dict[str, str]]:
    """The rows of a split file (a header with at least ``path`` and ``split``), or one line naming the problem."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise AuricleError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not rows or not {"path", "split"} <= set(rows[0]):
        raise AuricleError(f"{what} {path}: needs a header with path and split columns")
    return rows


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    """``path,split`` rows as a split file for ``training.train --split-file``, atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "split"])
    w.writerows([r["path"], r["split"]] for r in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, buf.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.subset_split", description=__doc__.split("\n\n")[0])
    p.add_argument("split", help="a split file with path and split columns")
    p.add_argument("--per-class", type=int, required=True, metavar="N", help="train clips kept per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the split file to write")
    args = p.parse_args(argv)
    kept = subset_rows(read_rows(args.split), args.per_class, args.seed)
    write_rows(Path(args.out), kept)
    print(f"{args.out}: {sum(r['split'] == 'train' for r in kept)} train clips, "
          f"{sum(r['split'] != 'train' for r in kept)} validation/test", flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
