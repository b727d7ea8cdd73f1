"""The shipped bundles: they verify, their numbers agree with their reports and the README, and the demo
meets the issue's bar on the held-out sample stream."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.bundle import DEFAULT_BUNDLE_NAME, load_bundle
from edge.fileio import sha256_file

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "firmware_assets"
BUNDLES = sorted(p for p in ASSETS.iterdir() if (p / "manifest.json").is_file()) if ASSETS.is_dir() else []


def test_the_default_bundle_is_shipped():
    assert (ASSETS / DEFAULT_BUNDLE_NAME / "manifest.json").is_file()
    assert (ASSETS / DEFAULT_BUNDLE_NAME / "model_int8.tflite").is_file()


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_bundle_verifies_and_matches_its_report(bundle):
    b = load_bundle(bundle, verify=True)
    for name, digest in b.manifest["files"].items():
        assert sha256_file(bundle / name) == digest
    report = json.loads((bundle / "report.json").read_text())
    training = b.manifest["training"]
    assert training["accuracy"] == report["accuracy"]
    assert b.manifest["network"]["params"] == report["params"]
    assert b.manifest["network"]["macs"] == report["macs"]
    # the Keras float accuracy the converter measured is the one training reported
    assert abs(b.manifest["verification"]["accuracy"]["keras_float"] - report["accuracy"]["test"]) < 1e-3
    for image in ("curves.png", "confusion.png"):
        assert (bundle / image).stat().st_size > 1000


def test_readme_results_are_generated_from_the_bundles():
    r = subprocess.run([sys.executable, "-m", "tools.readme_results", "--check"], cwd=REPO, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr


def test_the_results_table_gives_each_tuned_keyword_bundle_its_false_accepts_per_hour():
    from benchmarks.false_accepts import load_figures

    figures = {f.bundle: f for f in load_figures(REPO / "benchmarks" / "false_accepts.json")}
    tuned = [b.name for b in BUNDLES if b.name.startswith("kws_")
             and json.loads((b / "manifest.json").read_text()).get("detector")]
    assert DEFAULT_BUNDLE_NAME in tuned and set(tuned) <= set(figures), sorted(figures)
    readme = (REPO / "README.md").read_text()
    for name in tuned:
        f = figures[name]
        shipped = json.loads((ASSETS / name / "manifest.json").read_text())["detector"]
        assert all(f.settings[k] == shipped[k] for k in ("threshold", "smooth", "min_gap")), \
            f"{name}: benchmarks/false_accepts.json was measured at another operating point"
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}` | "))
        assert f" {f.headline()} " in row, row


def test_demo_meets_the_bar_on_the_sample_stream():
    r = subprocess.run([sys.executable, "-m", "edge.demo", "--json"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    score = [json.loads(line) for line in r.stdout.splitlines() if '"type": "score"' in line]
    assert score, r.stdout
    s = score[-1]
    assert s["truth_words"] == 10
    assert s["hits"] >= 9, s                              # >= 90 % of the words
    assert s["false_alarms_per_minute"] <= 1.0, s         # <= 1 false alarm per minute


@pytest.mark.parametrize("bundle", [b for b in BUNDLES if json.loads((b / "manifest.json").read_text())
                                    .get("regenerable_files")], ids=lambda b: b.name)
def test_a_model_left_out_for_size_says_how_to_regenerate_it(bundle):
    from edge.errors import BundleError
    b = load_bundle(bundle)
    for name in b.manifest["regenerable_files"]:
        assert not (bundle / name).exists()
        if not (name.startswith("model_") and name.endswith(".tflite")):
            continue   # e.g. the C array: not a model the runtime loads
        kind = name.removeprefix("model_").removesuffix(".tflite")
        with pytest.raises(BundleError, match="regenerate it with: python converters/quantize.py"):
            b.model_path(kind)
