"""`make firmware` rebuilds what ships: each spec's training command is the recipe its bundle's manifest
records, the rejecting bundles train on negatives, and bad input is one line with exit 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools import make_firmware
from training.config import TrainConfig
from training.train import build_parser, config_from

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "firmware_assets"
# settings that do not change the model: a run's wall-clock budget, its compiler choice
NOT_RECIPE = {"time_limit", "jit_compile"}


def _parsed(spec: make_firmware.Spec):
    """The spec's (first) training command, parsed as training.train parses it."""
    cmd = make_firmware.build_commands(spec, Path("data"), 0, Path("neg"))[0]
    assert cmd[:3] == [sys.executable, "-m", "training.train"]
    return build_parser().parse_args(cmd[3:])


@pytest.mark.parametrize("spec", make_firmware.SHIPPED, ids=[s.name for s in make_firmware.SHIPPED])
def test_spec_is_the_recipe_the_shipped_bundle_records(spec):
    manifest = ASSETS / spec.name / "manifest.json"
    if not manifest.is_file():
        pytest.skip(f"{spec.name} is not shipped in this checkout")
    recorded = json.loads(manifest.read_text())["training"]["train_config"]
    ours = config_from(_parsed(spec)).to_dict()
    not_recipe = set(NOT_RECIPE)
    if "ensemble" in recorded:   # an average of runs that differ only in seed: the spec names those seeds
        assert [m["seed"] for m in recorded["ensemble"]] == list(spec.ensemble_seeds)
        not_recipe |= {"seed", "ensemble"}
    else:
        assert not spec.ensemble_seeds
    shared = (set(recorded) & set(ours)) - not_recipe
    assert {"network", "profile", "epochs", "weight_decay", "dropout"} <= shared
    as_recorded = TrainConfig.from_dict(recorded).to_dict()   # JSON lists back to the config's tuples
    assert {k: ours[k] for k in shared} == {k: as_recorded[k] for k in shared}
    # settings the manifest records that this version cannot set would be silently dropped by a rebuild
    unknown = set(recorded) - set(TrainConfig().to_dict()) - not_recipe
    assert not unknown, unknown
    _check_negatives(json.loads(manifest.read_text())["training"], _parsed(spec))


def _check_negatives(training: dict, args) -> None:
    """The spec trains on the negatives (and the noise part of them) the bundle records, where it records them
    (bundles quantized before the manifest carried them do not): paths compared below the negatives root."""
    if "negatives" not in training:
        return
    root = (training["negatives"] or [None])[0]

    def ours(paths):   # the spec's paths, with its "neg" placeholder put back as the recorded root
        return [root + p[3:] if p.startswith("neg") and root else p for p in paths] if paths else None
    assert ours(args.negatives) == training["negatives"]
    assert ours(args.noise_negatives) == training.get("noise_negatives")


def test_the_negatives_check_tells_noise_taught_apart_from_not():
    base = ["--data", "d", "--out", "o", "--negatives", "neg", "runs/esc10_folds123"]
    plain = build_parser().parse_args(base)
    noisy = build_parser().parse_args([*base, "--noise-negatives", "neg/noise", "runs/esc10_folds123"])
    recorded = {"negatives": ["../shared/data/negatives", "runs/esc10_folds123"], "noise_negatives": None}
    with_noise = {**recorded, "noise_negatives": ["../shared/data/negatives/noise", "runs/esc10_folds123"]}
    _check_negatives(recorded, plain)
    _check_negatives(with_noise, noisy)
    for training, args in ((recorded, noisy), (with_noise, plain)):
        with pytest.raises(AssertionError):
            _check_negatives(training, args)


def test_rejecting_bundles_train_on_negatives_and_esc_folds_1_to_3():
    spec = next(s for s in make_firmware.SHIPPED if s.name == "kws_mobilenet_edge")
    args = _parsed(spec)
    assert args.negatives == ["neg", "runs/esc10_folds123"]
    assert args.noise_negatives == ["neg/noise"]
    *members, average = make_firmware.build_commands(spec, Path("data"), 0, Path("neg"))
    outs = [build_parser().parse_args(m[3:]).out for m in members]
    assert outs == ["runs/kws_mobilenet_edge_s1", "runs/kws_mobilenet_edge_s2"]
    assert [build_parser().parse_args(m[3:]).seed for m in members] == [1, 2]
    assert average[1:3] == ["-m", "training.ensemble"] and average[-2:] == ["--out", "runs/kws_mobilenet_edge"]
    assert average[average.index("--runs") + 1:-2] == outs
    plain = next(s for s in make_firmware.SHIPPED if not s.negatives)
    assert _parsed(plain).negatives is None


@pytest.mark.parametrize("extra, needle", [
    (["--import-gpu", "w", "--only", "kws_mobilenet_edge"], "GPU route does not carry"),
    (["--only", "nope"], "--only names unknown bundles"),
    (["--only", "kws_mobilenet_edge", "--negatives", "missing_negatives"], "--negatives folder"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, extra, needle):
    r = subprocess.run([sys.executable, "-m", "tools.make_firmware", "--data", str(tmp_path), *extra],
                       cwd=tmp_path, capture_output=True, text=True,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
