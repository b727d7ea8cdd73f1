"""A light repository and commands that never replace a shipped file unasked.

Model files in git stay under a size budget (C arrays and the undertrained seed-profile bundles are rebuilt,
not committed), and every command that would overwrite something the repository ships -- a bundle, the demo
stream, the benchmark figures, README.md -- stops with one line naming --force, before it does any work."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.fileio import sha256_file
from edge.shipped import SHIPPED_BUNDLES, is_shipped

REPO = Path(__file__).resolve().parent.parent
MODEL_BUDGET_BYTES = 20 * 1024 * 1024
MODEL_SUFFIXES = (".tflite", ".cc", ".h", ".keras", ".npz", ".h5")


def _tracked() -> list[str]:
    r = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, timeout=60)
    if r.returncode != 0:
        pytest.skip("not a git checkout (e.g. an unpacked sdist)")
    return [n for n in r.stdout.decode().split("\0") if n]


def test_tracked_model_files_stay_within_the_budget():
    models = [n for n in _tracked() if n.startswith("firmware_assets/") or n.endswith(MODEL_SUFFIXES)]
    models = [n for n in models if n.endswith(MODEL_SUFFIXES) and (REPO / n).is_file()]
    total = sum((REPO / n).stat().st_size for n in models)
    assert models and total <= MODEL_BUDGET_BYTES, f"{total / 2**20:.1f} MB of model files in git: {models}"


def test_no_c_arrays_or_seed_bundles_in_git_and_every_shipped_bundle_is():
    tracked = _tracked()
    assert not [n for n in tracked if n.startswith("firmware_assets/") and Path(n).name.startswith("model_data.")]
    assert not [n for n in tracked if n.startswith(("firmware_assets/kws_mobilenet_seed/",
                                                    "firmware_assets/kws_resnet18_seed/"))]
    for name in SHIPPED_BUNDLES:
        assert f"firmware_assets/{name}/manifest.json" in tracked


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def _refused(r: subprocess.CompletedProcess, shipped: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{shipped} is a file the repository ships" in lines[0] and "--force" in lines[0], \
        r.stderr


def test_make_sample_stream_will_not_replace_the_shipped_demo_stream():
    wav = REPO / "samples" / "speech_commands_stream.wav"
    before = sha256_file(wav)
    _refused(_cli("tools.make_sample_stream", "--out", "samples"), "samples/speech_commands_stream.wav")
    assert sha256_file(wav) == before


def test_false_accepts_will_not_rewrite_the_readme_or_the_shipped_figures():
    readme = sha256_file(REPO / "README.md")
    _refused(_cli("benchmarks.false_accepts", "--readme", "README.md"), "README.md")
    _refused(_cli("benchmarks.false_accepts", "--out", "benchmarks"), "benchmarks/false_accepts.json")
    assert sha256_file(REPO / "README.md") == readme


def test_tune_detector_will_not_rewrite_a_shipped_manifest():
    manifest = REPO / "firmware_assets" / "kws_mobilenet_edge" / "manifest.json"
    before = sha256_file(manifest)
    _refused(_cli("tools.tune_detector", "--bundle", "firmware_assets/kws_mobilenet_edge", "--negatives", "x",
                  "--stream", "x.wav"), "firmware_assets/kws_mobilenet_edge/manifest.json")
    assert sha256_file(manifest) == before


def test_what_counts_as_shipped(tmp_path):
    assert is_shipped(REPO / "README.md") and is_shipped(REPO / "firmware_assets" / "kws_mobilenet_edge")
    assert is_shipped(REPO / "samples" / "esc10_stream.csv")
    assert not is_shipped(REPO / "runs" / "never_made_here")          # does not exist
    assert not is_shipped(tmp_path)                                    # outside the checkout
    assert not is_shipped(REPO / "edge" / "demo.py")                   # code is not replaced by commands
