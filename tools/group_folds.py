"""Speaker-grouped k-fold splits over train + validation, to judge a training recipe on all of that data
instead of one small validation split.

Reads a run's ``split.csv`` (path, label, group, split) and writes ``fold0.csv`` ... ``fold{k-1}.csv`` in the
``--split-file`` format (path, split): in fold *i* the groups (speakers) hashed to *i* validate and the
others train. Test rows stay ``test`` in every fold, so the test part is never trained or tuned on. Each
fold is one ordinary run:

    python -m tools.group_folds --split runs/kws_mobilenet_edge_c/split.csv --folds 3 --out runs/cv
    python -m training.train ... --split-file runs/cv/fold0.csv --out runs/cv_fold0     # and fold1, fold2

``--repeat 1`` (2, ...) deals the same speakers into folds afresh: repeated cross-validation, for checking
a recipe chosen on one assignment against validation folds it was not chosen on.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
from pathlib import Path
from typing import Sequence

from edge.errors import AuricleError, run_cli
from edge.fileio import write_text_atomic


def fold_of(group: str, folds: int, repeat: int = 0) -> int:
    """The fold of a group: sha1 with its own salt, so folds do not line up with the train/val/test buckets.
    Each ``repeat`` > 0 salts it again: a fresh assignment of the same groups (repeated cross-validation)."""
    salt = "fold" if repeat == 0 else f"fold{repeat}"
    return int(hashlib.sha1(f"{salt}:{group}".encode("utf-8")).hexdigest(), 16) % folds


def read_split(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise AuricleError(f"cannot read --split {str(path)!r}: {exc.strerror or exc}; pass a run's split.csv")
    if not rows or not {"path", "group", "split"} <= set(rows[0]):
        raise AuricleError(f"--split {path}: needs rows with path, group and split columns (a run's split.csv)")
    return rows


def fold_assignments(rows: list[dict[str, str]], folds: int, repeat: int = 0) -> list[list[tuple[str, str]]]:
    """For each fold, (path, split) of every row: test stays test; train+val is split by group."""
    out = []
    for k in range(folds):
        out.append([(r["path"], "test" if r["split"] == "test" else
                     ("val" if fold_of(r["group"], folds, repeat) == k else "train")) for r in rows])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", type=Path, required=True, help="a run's split.csv (path,label,group,split)")
    p.add_argument("--folds", type=int, default=3, help="number of folds (>= 2)")
    p.add_argument("--out", type=Path, required=True, help="folder for fold0.csv ... (created)")
    p.add_argument("--repeat", type=int, default=0, metavar="R",
                   help="0 (default) or a later repeat: the same groups dealt into folds afresh, so a recipe "
                        "judged on one assignment can be checked on new validation folds")
    a = p.parse_args(argv)
    if a.folds < 2:
        raise AuricleError(f"--folds {a.folds}: needs at least 2 folds")
    if a.repeat < 0:
        raise AuricleError(f"--repeat {a.repeat}: must be 0 or more")
    rows = read_split(a.split)
    a.out.mkdir(parents=True, exist_ok=True)
    for k, assigned in enumerate(fold_assignments(rows, a.folds, a.repeat)):
        text = "path,split\n" + "".join(f"{path},{split}\n" for path, split in assigned)
        write_text_atomic(a.out / f"fold{k}.csv", text)
        n_val = sum(s == "val" for _, s in assigned)
        n_train = sum(s == "train" for _, s in assigned)
        print(f"{a.out / f'fold{k}.csv'}: {n_train} train, {n_val} validation, "
              f"{len(assigned) - n_train - n_val} test (unchanged)")
    return 0


if __name__ == "__main__":
    run_cli(main)
