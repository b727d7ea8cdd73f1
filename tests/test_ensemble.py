"""training.ensemble: two real tiny runs of one recipe averaged into one model, one run folder, one int8 bundle;
runs that are not of one recipe are refused with one line."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.errors import AuricleError

keras = pytest.importorskip("keras")

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}   # no TensorFlow start-up chatter


def _tiny_config(seed: int):
    from training.config import TrainConfig
    return TrainConfig(network="mobilenet", profile="edge", width=0.25, epochs=3, batch_size=4, learning_rate=3e-3,
                       patience=0, bn_momentum=0.6, dropout=0.0, seed=seed, augment=True)


@pytest.fixture(scope="module")
def members(tiny_data, tmp_path_factory) -> list[Path]:
    """Two real tiny runs that differ only in --seed."""
    from training.train import TrainSpec, train

    root = tmp_path_factory.mktemp("members")
    for seed in (1, 2):
        train(TrainSpec(data=tiny_data, out=root / f"s{seed}", config=_tiny_config(seed), cache_dir=root / "cache",
                        verbose=0))
    return [root / "s1", root / "s2"]


@pytest.fixture(scope="module")
def ensemble(members) -> tuple[Path, dict]:
    from training.ensemble import ensemble_runs

    out = members[0].parent / "e2"
    return out, ensemble_runs(members, out, cache_dir=members[0].parent / "cache")


def _features(run: Path, data: Path, cache: Path):
    """The run's clips, split and normalisation, rebuilt independently of the module under test."""
    from edge.features import FeatureConfig
    from training.train import build_featureset

    fs, _ = build_featureset(data, "edge", cache_dir=cache, progress=False)
    fs.config = FeatureConfig.from_json((run / "feature_config.json").read_text())
    return fs


def test_the_ensemble_scores_the_mean_of_its_members(members, ensemble, tiny_data):
    from training.featureset import model_inputs

    out, report = ensemble
    fs = _features(members[0], tiny_data, members[0].parent / "cache")
    x = model_inputs(fs, np.arange(len(fs.y)))
    each = [keras.saving.load_model(m / "model.keras", safe_mode=True).predict(x, verbose=0) for m in members]
    assert not np.allclose(each[0], each[1], atol=1e-3)          # two seeds: two different models
    model = keras.saving.load_model(out / "model.keras", safe_mode=True)
    mean = (each[0] + each[1]) / 2
    np.testing.assert_allclose(model.predict(x, verbose=0), mean, atol=1e-5)
    np.testing.assert_allclose(mean.sum(axis=1), 1.0, atol=1e-5)  # still probabilities
    for split in ("train", "val", "test"):                       # the report evaluates the averaged model
        idx = fs.indices(split)
        assert report["accuracy"][split] == pytest.approx(float(np.mean(mean[idx].argmax(1) == fs.y[idx])), abs=1e-4)


def test_the_run_folder_records_its_members_and_their_cost(members, ensemble):
    out, report = ensemble
    for name in ("model.keras", "labels.txt", "feature_config.json", "split.csv", "train_config.json",
                 "train_summary.json", "report.json", "report.md", "curves.png", "confusion.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "split.csv").read_bytes() == (members[0] / "split.csv").read_bytes()
    reps = [json.loads((m / "report.json").read_text()) for m in members]
    assert report["params"] == sum(r["params"] for r in reps)
    assert report["macs"] == sum(r["macs"] for r in reps) > 0
    assert report["training"]["epochs_run"] == sum(r["training"]["epochs_run"] for r in reps) == 6
    tc = json.loads((out / "train_config.json").read_text())
    assert [m["run"] for m in tc["ensemble"]] == ["s1", "s2"]    # relative to the ensemble's parent folder
    assert [m["seed"] for m in tc["ensemble"]] == [1, 2] and "seed" not in tc
    assert [m["stop_reason"] for m in tc["ensemble"]] == [r["training"]["stop_reason"] for r in reps]
    assert all(isinstance(m["stop_reason"], str) and m["stop_reason"] for m in tc["ensemble"])
    assert report["train_config"]["dropout"] == 0.0 and report["train_config"]["seed"] is None
    assert [m["seed"] for m in report["train_config"]["ensemble"]] == [1, 2]


def test_the_ensemble_quantizes_to_one_full_integer_bundle(ensemble, tmp_path):
    from converters.inspect_model import read_model
    from converters.quantize import QuantizeConfig, quantize_run
    from edge.classifier import Classifier

    out, report = ensemble
    manifest = quantize_run(QuantizeConfig(run=out, out=tmp_path / "bundle", representative=12, compile_edgetpu=False),
                            progress=False, report=None)
    ops = {op.name for op in read_model(tmp_path / "bundle" / "model_int8.tflite").ops}
    assert {"ADD", "MUL"} <= ops and "DEQUANTIZE" not in ops     # the average stays in int8
    assert manifest["network"]["macs"] == report["macs"]
    assert [m["seed"] for m in manifest["training"]["train_config"]["ensemble"]] == [1, 2]
    clip = sorted((REPO / "tests" / "data" / "speech_commands" / "yes").glob("*.wav"))[0]
    import soundfile as sf
    audio, rate = sf.read(clip, dtype="float32")
    scores = Classifier(tmp_path / "bundle").classify(audio, rate)
    assert len(scores) == len(report["labels"]) and sum(s for _, s in scores) == pytest.approx(1.0, abs=0.05)


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("case,needle", [
    ("one run", "at least two"),
    ("the same run twice", "same run folder twice"),
    ("another recipe", "recipe differs in dropout"),
    ("other labels", "labels differ"),
    ("other normalisation", "differs in norm_mean"),
    ("out is a member", "is one of the members"),
])
def test_runs_not_of_one_recipe_are_one_line_and_exit_2(members, tmp_path, case, needle):
    other = tmp_path / "other"
    shutil.copytree(members[1], other)
    runs, out = [members[0], other], tmp_path / "out"
    if case == "one run":
        runs = [members[0]]
    elif case == "the same run twice":
        runs = [members[0], members[0]]
    elif case == "another recipe":
        _edit_json(other / "train_config.json", dropout=0.5)
    elif case == "other labels":
        labels = (other / "labels.txt").read_text().split()
        (other / "labels.txt").write_text("\n".join(reversed(labels)) + "\n")
    elif case == "other normalisation":
        _edit_json(other / "feature_config.json", norm_mean=-1.0)
    elif case == "out is a member":
        out = other
    r = subprocess.run([sys.executable, "-m", "training.ensemble", "--runs", *map(str, runs), "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=300, env=ENV)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out" / "model.keras").exists()


def test_load_members_names_the_run_that_differs(members, tmp_path):
    from training.ensemble import load_members

    other = tmp_path / "late"
    shutil.copytree(members[1], other)
    _edit_json(other / "train_config.json", epochs=99)
    with pytest.raises(AuricleError, match=r"late cannot join .*epochs"):
        load_members([members[0], members[1], other])
    assert [m.seed for m in load_members(members)] == [1, 2]
