"""benchmarks/learning_curve: the split per point (N train clips per class, evaluation rows kept), the sizes,
the finished-run reuse, the figure, and bad input as one line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import learning_curve as lc
from edge.errors import AuricleError
from edge.splits import split_of

REPO = Path(__file__).resolve().parent.parent


def _rows(per_class: int) -> list[dict[str, str]]:
    rows = [{"path": f"{c}/{c}{i}.wav", "split": "train"} for c in ("a", "b") for i in range(per_class)]
    return rows + [{"path": "a/v.wav", "split": "val"}, {"path": "b/t.wav", "split": "test"}]


def test_sizes_take_all_as_the_largest_class_and_refuse_nonsense():
    assert lc.per_class_sizes(_rows(12), ["20", "5", "all", "10"]) == [5, 10, 12, 20]
    with pytest.raises(AuricleError, match="'x'"):
        lc.per_class_sizes(_rows(3), ["x"])
    with pytest.raises(AuricleError, match="no train rows"):
        lc.per_class_sizes([{"path": "a/v.wav", "split": "val"}], ["5"])


def test_without_a_split_file_the_hash_rule_split_is_written(tmp_path, tiny_data):
    rows = lc.base_split(tiny_data, None, tmp_path / "split_all.csv")
    assert rows and all(r["split"] == split_of(Path(r["path"]).stem.split("_nohash_")[0])
                        for r in rows if "_nohash_" in r["path"])
    assert (tmp_path / "split_all.csv").read_text().startswith("path,label,group,split\n")   # the run folder format


def _finished_run(folder: Path, acc: float) -> None:
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"accuracy": {"test": acc, "val": 0.5},
                                                    "split_sizes": {"train": 10, "test": 4},
                                                    "training": {"epochs_run": 3, "train_seconds": 1.0}}))


def test_a_finished_point_is_read_not_trained_and_the_figure_is_drawn(tmp_path):
    import argparse

    args = argparse.Namespace(out=tmp_path, name="c", seed=0)
    for start, acc in (("scratch", 0.4), ("init", 0.7)):
        _finished_run(tmp_path / "c" / f"{start}_k5", acc)
        assert lc.run_point(args, _rows(8), 5, start, ("mobilenet", 0.25))["test_accuracy"] == acc
    assert not (tmp_path / "c" / "split_k5.csv").exists()        # nothing was trained
    curve = {"name": "c", "init_from": "backbone_edge", "network": "mobilenet", "width": 0.25, "epochs": 3,
             "points": [lc.point_of(tmp_path / "c" / f"{s}_k5", 5, s) for s in lc.STARTS]}
    (tmp_path / "c" / "curve.json").write_text(json.dumps(curve))
    png, out = tmp_path / "lc.png", tmp_path / "lc.json"
    assert lc.main(["--plot", str(tmp_path), "--png", str(png), "--json", str(out), "-q"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and json.loads(out.read_text())["curves"][0]["name"] == "c"


@pytest.mark.parametrize("argv, needle", [(["x"], "--data"), (["x", "--data", "nope"], "no such folder"),
                                          (["--plot", "nowhere"], "curve.json")])
def test_bad_input_is_one_line_and_exit_2(argv, needle, tmp_path):
    r = subprocess.run([sys.executable, "-m", "benchmarks.learning_curve", *argv], cwd=tmp_path, capture_output=True,
                       text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr


@pytest.mark.slow
def test_a_sweep_trains_both_starts_and_records_the_points(tmp_path, tiny_data):
    r = subprocess.run([sys.executable, "-m", "benchmarks.learning_curve", "tiny", "--data", str(tiny_data),
                        "--init-from", "backbone_edge", "--per-class", "2", "--epochs", "1",
                        "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    curve = json.loads((tmp_path / "tiny" / "curve.json").read_text())
    assert [(p["start"], p["per_class"], p["train_clips"]) for p in curve["points"]] == \
        [("scratch", 2, 6), ("init", 2, 6)]
    assert json.loads((tmp_path / "tiny" / "init_k2" / "train_config.json").read_text())["width"] == 0.25
