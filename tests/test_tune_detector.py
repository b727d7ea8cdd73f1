"""The detector tuner: per-keyword thresholds chosen on validation audio under a false-accept budget or a
miss budget, written into the manifest, then used by the detector as it loads the bundle."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.evaluate import Operating
from tools.tune_detector import choose_per_label

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "firmware_assets" / "kws_mobilenet_edge"
STREAM = REPO / "samples" / "speech_commands_stream.wav"


def _row(thr, smooth, fa, miss, words=20):
    return Operating(threshold=thr, smooth=smooth, min_gap=0.5, false_accepts=sum(fa.values()),
                     false_accepts_per_hour=sum(fa.values()) / 2.0, per_label=fa, misses=sum(miss.values()),
                     truth_words=words, hits=words - sum(miss.values()), misses_by_label=miss)


def test_per_label_choice_spends_the_budget_where_it_buys_hits():
    rows = [_row(0.5, 1, {"right": 9, "go": 1}, {"right": 0, "go": 0}),
            _row(0.9, 1, {"right": 3, "go": 0}, {"right": 1, "go": 2}),
            _row(0.99, 1, {"right": 0, "go": 0}, {"right": 4, "go": 5}),
            _row(0.5, 3, {"right": 20, "go": 5}, {"right": 0, "go": 0}),
            _row(0.9, 3, {"right": 8, "go": 4}, {"right": 2, "go": 2}),
            _row(0.99, 3, {"right": 2, "go": 2}, {"right": 5, "go": 5})]
    c = choose_per_label(rows, hours=2.0, target_fa=2.0)                  # budget: 4 false accepts
    assert (c.smooth, c.allotment.thresholds) == (1, {"go": 0.5, "right": 0.9})
    assert (c.allotment.false_accepts, c.allotment.misses) == (4, 1)
    assert c.settings()["threshold"] == 0.9 and c.settings()["label_thresholds"] == {"go": 0.5, "right": 0.9}
    m = choose_per_label(rows, hours=2.0, max_frr=0.05)                   # at most 1 of 20 words missed
    assert m.allotment.misses <= 1 and m.allotment.false_accepts == 4


@pytest.mark.skipif(not (BUNDLE / "model_int8.tflite").is_file(), reason="the shipped keyword bundle is not here")
def test_tuner_writes_per_label_thresholds_the_detector_then_uses(tmp_path):
    bundle = tmp_path / "kws"
    shutil.copytree(BUNDLE, bundle)
    shutil.copy(STREAM, tmp_path / "val.wav")
    shutil.copy(STREAM.with_suffix(".csv"), tmp_path / "val.csv")
    neg = tmp_path / "neg"
    (neg / "music-x").mkdir(parents=True)                               # a tune-role corpus source: all validation
    shutil.copy(REPO / "samples" / "esc10_stream.wav", neg / "music-x" / "a.wav")
    (neg / "music-x" / "manifest.json").write_text(json.dumps({"source": "music-x", "role": "tune"}))
    r = subprocess.run([sys.executable, "-m", "tools.tune_detector", "--bundle", str(bundle), "--negatives",
                        str(neg), "--stream", str(tmp_path / "val.wav"), "--per-label", "--max-frr", "0.1"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    block = json.loads((bundle / "manifest.json").read_text())["detector"]
    own = block["label_thresholds"]
    assert set(own) == {"yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"}
    assert block["threshold"] == max(own.values()) and block["measured_on_validation"]["false_reject_rate"] <= 0.1
    assert "per keyword:" in r.stdout
    from edge.bundle import load_bundle
    from edge.settings import DetectorSettings

    s = DetectorSettings.from_bundle(load_bundle(bundle))
    assert dict(s.label_thresholds) == own and s.smooth == block["smooth"]
    bad = subprocess.run([sys.executable, "-m", "tools.tune_detector", "--bundle", str(bundle), "--negatives",
                          str(neg), "--stream", str(tmp_path / "val.wav"), "--max-frr", "0.1"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "--max-frr 0.1 needs --per-label" in bad.stderr
