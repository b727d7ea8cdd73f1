"""``--init-from RUN``: learnt weights into a new network (new classifier, any window length), a frozen phase
then all layers; a bad source (missing, a bundle, another frontend) is one line and exit 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "AURICLE_LOADER_THREADS": "1"}


def _cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.train", *args], capture_output=True, text=True,
                          cwd=REPO, env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> Path:
    """A run folder as training.train leaves it (model, feature config with statistics, train config); the
    weights are untrained: what is tested is where they go, not what they know."""
    import dataclasses

    from edge.features import edge_config, model_input_shape
    from edge.fileio import write_json_atomic
    from training.config import TrainConfig
    from training.models import build_model
    from training.run_folder import save_model_atomic, write_feature_config

    out = tmp_path_factory.mktemp("source") / "run"
    out.mkdir()
    fc = dataclasses.replace(edge_config(), norm_mean=-45.0, norm_std=20.0)
    cfg = TrainConfig(network="mobilenet", profile="edge", width=0.25)
    model = build_model("mobilenet", model_input_shape(fc), 12, profile="edge", width=0.25)
    save_model_atomic(model, out / "model.keras")
    write_feature_config(out, fc)
    write_json_atomic(out / "train_config.json", cfg.to_dict())
    return out


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_a_missing_source_is_one_line(tmp_path, tiny_data):
    line = _one_error_line(_cli("--data", str(tiny_data), "--out", str(tmp_path / "r"),
                                "--init-from", str(tmp_path / "nope")))
    assert "--init-from" in line and "no such folder" in line


def test_a_bundle_is_refused_with_the_run_it_came_from(tmp_path, tiny_data):
    line = _one_error_line(_cli("--data", str(tiny_data), "--out", str(tmp_path / "r"),
                                "--init-from", str(REPO / "firmware_assets" / "kws_mobilenet_edge")))
    assert "bundle" in line and "runs/kws_mobilenet_edge" in line


def test_another_frontend_is_one_line(tmp_path, tiny_data, source_run):
    line = _one_error_line(_cli("--data", str(tiny_data), "--out", str(tmp_path / "r"), "--n-mels", "32",
                                "--init-from", str(source_run)))
    assert "n_mels" in line and "40" in line and "32" in line
    assert not (tmp_path / "r" / "model.keras").exists()


def test_weights_move_to_a_longer_window_and_a_new_classifier():
    from training.init_from import HEAD, set_backbone_trainable, transfer_weights
    from training.models import build_model

    src = build_model("mobilenet", (97, 40, 1), 12, profile="edge", width=0.25)
    dst = build_model("mobilenet", (497, 40, 1), 10, profile="edge", width=0.25)
    assert transfer_weights(src, dst) == sum(1 for la in dst.layers if la.weights and la.name != HEAD)
    for name in ("stem_conv", "block13_pw", "block13_pw_bn"):
        for a, b in zip(src.get_layer(name).get_weights(), dst.get_layer(name).get_weights()):
            assert np.array_equal(a, b), name
    assert dst.get_layer(HEAD).units == 10
    set_backbone_trainable(dst, False)
    assert [w.name for w in dst.trainable_weights] == [w.name for w in dst.get_layer(HEAD).trainable_weights]


@pytest.mark.slow
def test_fine_tune_runs_a_frozen_phase_then_all_layers(tmp_path, tiny_data, source_run):
    from training.train import main

    out = tmp_path / "tuned"
    args = ["--data", str(tiny_data), "--out", str(out), "--init-from", str(source_run), "--epochs", "2",
            "--batch-size", "8", "--no-augment", "--cache-dir", str(tmp_path / "c"), "--quiet"]
    assert main(args) == 0
    source_cfg = json.loads((source_run / "feature_config.json").read_text())
    tuned_cfg = json.loads((out / "feature_config.json").read_text())
    assert tuned_cfg["norm_mean"] == source_cfg["norm_mean"] == -45.0  # the source's normalisation
    assert json.loads((out / "train_config.json").read_text())["init_from"] == str(source_run)
    assert len((out / "history.csv").read_text().strip().splitlines()) == 1 + 2
    last = keras.saving.load_model(out / "checkpoint.keras", safe_mode=True)   # after the all-layers phase
    assert all(la.trainable for la in last.layers)
