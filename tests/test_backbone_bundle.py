"""A bundle that carries its float network (``converters/quantize.py --backbone``) is a source for
``training.train --init-from``: the manifest lists ``backbone.keras`` with its sha256, training takes its
weights, and a bundle without it, or with a changed one, is one line and exit 2."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
keras = pytest.importorskip("keras")
import tiny_run  # noqa: E402

from converters import quantize as q  # noqa: E402
from edge.errors import AuricleError  # noqa: E402
from edge.fileio import sha256_file  # noqa: E402
from training.init_from import read_source  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "AURICLE_LOADER_THREADS": "1"}


@pytest.fixture(scope="module")
def backbone_bundle(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("backbone")
    run = tiny_run.make_tiny_run(work / "runs" / "tiny_edge", network=("mobilenet", 0.25), epochs=5)
    out = work / "bundle"
    # the accuracy gate is not what this file tests (a 5-epoch MobileNet on 48 clips)
    q.quantize_run(q.QuantizeConfig(run=run, out=out, representative=16, data=str(tiny_run.DATA_DIR),
                                    backbone=True, max_drop=100.0), progress=False)
    return out


def test_the_manifest_lists_the_network_with_its_hash(backbone_bundle):
    m = json.loads((backbone_bundle / "manifest.json").read_text())
    entry = m["backbone"]
    assert entry["file"] == "backbone.keras" and entry["network"] == m["network"]["name"]
    assert entry["width"] == m["network"]["width"]
    assert m["files"]["backbone.keras"] == sha256_file(backbone_bundle / "backbone.keras")
    model = keras.saving.load_model(backbone_bundle / "backbone.keras", safe_mode=True)
    assert getattr(model, "optimizer", None) is None   # weights only: no optimizer state travels


def test_read_source_takes_the_bundle_and_its_frontend(backbone_bundle):
    src = read_source(backbone_bundle)
    m = json.loads((backbone_bundle / "manifest.json").read_text())
    assert src.model_file == backbone_bundle / "backbone.keras"
    assert (src.network, src.width) == (m["network"]["name"], m["network"]["width"])
    assert src.feature_config.norm_mean == m["feature_config"]["norm_mean"]


def test_a_changed_backbone_file_is_refused(backbone_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(backbone_bundle, copy)
    with open(copy / "backbone.keras", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(AuricleError, match="sha256"):
        read_source(copy)


def test_a_backbone_entry_without_its_width_or_leading_out_of_the_bundle_is_refused(backbone_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(backbone_bundle, copy)
    m = json.loads((copy / "manifest.json").read_text())
    for entry, needle in (({**m["backbone"], "width": None}, "incomplete"),
                          ({**m["backbone"], "file": "../b/backbone.keras"}, "sha256")):
        (copy / "manifest.json").write_text(json.dumps({**m, "backbone": entry}))
        with pytest.raises(AuricleError, match=needle):
            read_source(copy)


def test_a_bundle_without_a_backbone_names_the_flag(tmp_path):
    with pytest.raises(AuricleError, match="--backbone"):
        read_source(REPO / "firmware_assets" / "kws_mobilenet_edge")


def test_init_backbone_copies_the_bundles_weights_into_a_new_network(backbone_bundle):
    import numpy as np

    from training.config import TrainConfig
    from training.init_from import HEAD, init_backbone
    from training.models import build_model

    src = read_source(backbone_bundle)
    source = keras.saving.load_model(src.model_file, safe_mode=True)
    model = build_model(src.network, (197, 40, 1), 5, profile="edge", width=src.width)
    frozen = init_backbone(model, TrainConfig(network=src.network, profile="edge", width=src.width, epochs=10,
                                              init_from=str(backbone_bundle)))
    assert frozen == 2 and model.get_layer(HEAD).units == 5
    for layer in model.layers:
        if layer.weights and layer.name != HEAD:
            for a, b in zip(layer.get_weights(), source.get_layer(layer.name).get_weights()):
                assert np.array_equal(a, b), layer.name


@pytest.mark.slow
def test_training_cli_fine_tunes_from_the_bundle(backbone_bundle, tiny_data, tmp_path):
    out = tmp_path / "tuned"
    r = subprocess.run([sys.executable, "-m", "training.train", "--data", str(tiny_data), "--out", str(out),
                        "--init-from", str(backbone_bundle), "--epochs", "2", "--batch-size", "8", "--no-augment",
                        "--cache-dir", str(tmp_path / "c"), "--quiet"],
                       capture_output=True, text=True, cwd=REPO, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "train_config.json").read_text())["init_from"] == str(backbone_bundle)
    norm = json.loads((backbone_bundle / "manifest.json").read_text())["feature_config"]["norm_mean"]
    assert json.loads((out / "feature_config.json").read_text())["norm_mean"] == norm


def test_the_shipped_backbone_is_found_by_name_and_checks_out():
    if not (REPO / "firmware_assets" / "backbone_edge" / "manifest.json").is_file():
        pytest.skip("backbone_edge is not in this checkout")
    src = read_source("backbone_edge")
    assert src.path.resolve() == (REPO / "firmware_assets" / "backbone_edge").resolve()
    assert (src.network, src.width) == ("mobilenet", 0.25) and src.feature_config.profile == "edge"
    labels = (src.path / "labels.txt").read_text().split()
    assert len(labels) == 36 and {"yes", "visual", "sheila", "_silence_"} <= set(labels)
