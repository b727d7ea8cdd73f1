"""Distillation: targets mixed from a real teacher bundle's scores, and what a wrong teacher gets."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.classifier import ModelRunner
from edge.errors import AuricleError
from edge.features import edge_config, log_mel
from test_negatives import tiny_corpus
from tiny_bundle import load_clip
from training.distill import Teacher, soft_targets

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "speech_commands"


def test_soft_targets_mix_teacher_rows_and_keep_the_rest_one_hot():
    y = np.array([0, 2, 1, 1])
    teacher = np.array([[0.2, 0.2, 0.6], [0.0, 1.0, 1.0]])        # second row unnormalised: renormalised
    t = soft_targets(y, teacher, 3, 0.25)
    assert t.shape == (4, 3) and t.dtype == np.float32
    np.testing.assert_allclose(t.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(t[0], [0.75 + 0.05, 0.05, 0.15], rtol=1e-6)
    np.testing.assert_allclose(t[1], [0.0, 0.125, 0.75 + 0.125], rtol=1e-6)
    np.testing.assert_array_equal(t[2:], np.eye(3, dtype=np.float32)[[1, 1]])   # appended rows: labels only
    np.testing.assert_array_equal(soft_targets(y, teacher, 3, 0.0), np.eye(3, dtype=np.float32)[y])


@pytest.fixture(scope="module")
def teacher_bundle(tmp_path_factory):
    """A real two-label bundle, built in its own process: an in-process Keras fit here changes what later
    tiny training runs in this test process start from."""
    out = tmp_path_factory.mktemp("teacher") / "teacher_yes_no"
    code = ("import sys; from tiny_bundle import make_tiny_bundle; "
            "make_tiny_bundle(sys.argv[1], labels=('no', 'yes'), train_clips_dir=sys.argv[2])")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])}
    r = subprocess.run([sys.executable, "-c", code, str(out), str(DATA)], capture_output=True, text=True,
                       cwd=REPO, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_teacher_scores_are_the_bundle_model_on_the_same_windows(teacher_bundle):
    cfg = edge_config()
    frames = np.stack([log_mel(load_clip(p), cfg)[:cfg.n_frames]
                       for p in sorted((DATA / "yes").glob("*.wav"))[:3]])
    teacher = Teacher(teacher_bundle, ["no", "yes"], cfg)
    got = teacher.scores(frames)
    from edge.bundle import load_bundle
    model = ModelRunner(load_bundle(teacher_bundle), model=None, num_threads=1, coral=False)
    want = np.stack([model.run(f).copy() for f in frames])
    np.testing.assert_array_equal(got, want)
    assert got.shape == (3, 2) and (got.argmax(axis=1) == 1).all()   # it hears "yes"


def test_a_teacher_with_other_labels_or_frontend_is_refused(teacher_bundle):
    with pytest.raises(AuricleError, match="same labels"):
        Teacher(teacher_bundle, ["yes", "no"], edge_config())
    with pytest.raises(AuricleError, match="other features"):
        Teacher(teacher_bundle, ["no", "yes"], edge_config(n_mels=32))


@pytest.mark.slow
def test_a_distilled_tiny_run_trains_and_records_its_teacher(tmp_path, teacher_bundle):
    data = tiny_corpus(tmp_path / "data", labels=("yes", "no"))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "training.train", "--data", data, "--out", out, "--epochs", "2",
           "--batch-size", "8", "--teacher", teacher_bundle, "--distill-weight", "0.5", "--quiet",
           "--cache-dir", tmp_path / "cache", "--width", "0.25"]
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = json.loads((out / "train_config.json").read_text())
    assert cfg["teacher"] == str(teacher_bundle) and cfg["distill_weight"] == 0.5
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 3 and all(np.isfinite(float(x)) for x in history[-1].split(",")[1:])


def test_cli_wrong_teacher_is_one_line_and_exit_2(tmp_path, teacher_bundle):
    data = tiny_corpus(tmp_path / "data", labels=("yes", "no", "_silence_"))
    cmd = [sys.executable, "-m", "training.train", "--data", data, "--out", tmp_path / "run", "--epochs", "1",
           "--teacher", teacher_bundle, "--quiet", "--cache-dir", tmp_path / "cache"]
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "same labels" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "model.keras").exists()


def test_resuming_with_a_different_teacher_setting_is_one_line_and_exit_2(tmp_path, teacher_bundle):
    data = tiny_corpus(tmp_path / "data", labels=("yes", "no"))
    base = [sys.executable, "-m", "training.train", "--data", data, "--out", tmp_path / "run", "--epochs", "1",
            "--batch-size", "8", "--width", "0.25", "--quiet", "--cache-dir", tmp_path / "cache"]
    first = subprocess.run([str(c) for c in base], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    again = base[:7] + ["--epochs", "2", "--resume", "--teacher", teacher_bundle] + base[9:]
    r = subprocess.run([str(c) for c in again], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert "without --teacher" in lines[-1] and "Traceback" not in r.stderr
