"""Speaker-grouped folds over train + validation: every such group validates in exactly one fold, test rows
never move, the output is deterministic and readable by training's --split-file; bad input is one line."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from tools.group_folds import fold_assignments, fold_of

REPO = Path(__file__).resolve().parent.parent


def _split_csv(path: Path) -> list[dict[str, str]]:
    rows = [{"path": f"{lab}/{spk}_nohash_{i}.wav", "label": lab, "group": spk, "split": split}
            for spk, split in (("a1", "train"), ("b2", "train"), ("c3", "val"), ("d4", "train"), ("e5", "test"),
                               ("f6", "train"), ("g7", "val"), ("h8", "train"), ("i9", "test"))
            for lab in ("yes", "no") for i in range(2)]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "group", "split"])
        w.writeheader()
        w.writerows(rows)
    return rows


def test_each_group_validates_once_and_test_never_moves(tmp_path):
    rows = _split_csv(tmp_path / "split.csv")
    folds = fold_assignments(rows, 3)
    by_path = {r["path"]: r for r in rows}
    val_groups = [{by_path[p]["group"] for p, s in fold if s == "val"} for fold in folds]
    assert set().union(*val_groups) == {r["group"] for r in rows if r["split"] != "test"}
    assert sum(len(g) for g in val_groups) == len(set().union(*val_groups))     # disjoint
    for fold in folds:
        assert [p for p, s in fold if s == "test"] == [r["path"] for r in rows if r["split"] == "test"]
        for p, s in fold:   # one speaker's clips always share a split
            assert s == next(s2 for p2, s2 in fold if by_path[p2]["group"] == by_path[p]["group"])
    assert fold_assignments(rows, 3) == folds and fold_of("c3", 3) == fold_of("c3", 3)


def test_cli_writes_split_files_training_can_read(tmp_path):
    from training.data import read_split_assignments

    _split_csv(tmp_path / "split.csv")
    r = subprocess.run([sys.executable, "-m", "tools.group_folds", "--split", str(tmp_path / "split.csv"),
                        "--folds", "2", "--out", str(tmp_path / "cv")], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for k in range(2):
        wanted = read_split_assignments(str(tmp_path / "cv" / f"fold{k}.csv"), tmp_path)
        assert len(wanted) == 36 and set(wanted.values()) <= {"train", "val", "test"}


def test_a_repeat_deals_the_groups_afresh_and_test_still_never_moves():
    groups = [f"spk{i}" for i in range(60)]
    rows = [{"path": f"yes/{g}.wav", "group": g, "split": "test" if i % 10 == 0 else "train"}
            for i, g in enumerate(groups)]
    first, again = fold_assignments(rows, 3), fold_assignments(rows, 3, repeat=1)
    assert first == fold_assignments(rows, 3, repeat=0) and again == fold_assignments(rows, 3, repeat=1)
    moved = sum(fold_of(g, 3) != fold_of(g, 3, 1) for g in groups)
    assert 20 <= moved <= 60          # about two thirds change fold under a fresh salt
    for fold in again:
        assert [p for p, s in fold if s == "test"] == [r["path"] for r in rows if r["split"] == "test"]
    val_counts = [sum(s == "val" for _, s in fold) for fold in again]
    assert sum(val_counts) == 54 and min(val_counts) > 0


@pytest.mark.parametrize("args, needle", [
    (["--folds", "1"], "at least 2 folds"),
    (["--repeat", "-1"], "must be 0 or more"),
    (["--split", "missing.csv"], "cannot read --split"),
    (["--split", "bad.csv"], "needs rows with path, group and split"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    (tmp_path / "bad.csv").write_text("path,split\nx.wav,train\n")
    if "--split" not in args:
        _split_csv(tmp_path / "s.csv")
        args = ["--split", str(tmp_path / "s.csv"), *args]
    r = subprocess.run([sys.executable, "-m", "tools.group_folds", *args, "--out", str(tmp_path / "cv")],
                       cwd=tmp_path, capture_output=True, text=True,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
