"""python -m edge.evaluate: false accepts per hour and false rejects, counted as edge.listen runs a bundle.

Known answers come from synthetic score streams (the event rule alone) and from word streams built of real
clips with a tiny real bundle (tests/tiny_bundle.py) whose events edge.listen itself reports.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import sys

import numpy as np
import pytest

import tiny_bundle
from edge.gate import EventGate
from edge.intervals import proportion_interval, rate_interval
from edge.settings import DetectorSettings
from test_listen import NO_CLIP, YES_CLIP, json_lines, one_line_error, run, word_stream, write_wav

SETTINGS = ["--threshold", "0.8", "--smooth", "3", "--min-gap", "1", "--threads", "1"]


@pytest.fixture(scope="session")
def edge_bundle(tmp_path_factory):
    return tiny_bundle.cached_bundle(tmp_path_factory, "edge", train_clips_dir=tiny_bundle.DATA_DIR)


def evaluate(args, **kw):
    return run(args, module="edge.evaluate", **kw)


# -- the event rule on scripted scores ------------------------------------------------------------------------
def gate_events(scores, *, threshold=0.5, smooth=1, min_gap=0.0, hop=0.1):
    settings = DetectorSettings(threshold=threshold, smooth=smooth, min_gap=min_gap)
    gate = EventGate(["_silence_", "yes", "no"], {"_silence_"}, settings)
    out = []
    for i, s in enumerate(scores):
        out += [(round(e.time, 3), e.label) for e in gate.step(np.asarray(s, float), (i + 1) * hop, i)[1]]
    return out


def test_gate_fires_once_per_word_rearms_below_half_threshold_and_never_on_background():
    quiet, yes = [1.0, 0.0, 0.0], [0.1, 0.9, 0.0]
    dip_high, dip_low = [0.7, 0.3, 0.0], [0.8, 0.2, 0.0]   # 0.3 >= 0.25 keeps "yes" disarmed, 0.2 re-arms it
    assert gate_events([quiet, yes, yes, yes, quiet]) == [(0.2, "yes")]
    assert gate_events([yes, dip_high, yes]) == [(0.1, "yes")]
    assert gate_events([yes, dip_low, yes]) == [(0.1, "yes"), (0.3, "yes")]
    assert gate_events([yes, dip_low, yes], min_gap=0.25) == [(0.1, "yes")]
    assert gate_events([[0.95, 0.05, 0.0]] * 5) == []                  # the background label never fires
    # smoothing 3: the mean of [0.1, 0.9, 0.9] is 0.633, of [0.1, 0.1, 0.9] only 0.367
    assert gate_events([quiet, yes, yes], smooth=3, threshold=0.6) == [(0.3, "yes")]
    both = [0.0, 0.6, 0.9]
    assert gate_events([both]) == [(0.1, "no"), (0.1, "yes")]         # one window: best score first


# -- end to end with a tiny real bundle ------------------------------------------------------------------------
def listen_events(bundle, wav, settings=SETTINGS):
    r = run(["--bundle", bundle, "--file", wav, "--json", *settings])
    assert r.returncode == 0, r.stderr
    return [d for d in json_lines(r.stdout) if d["type"] == "event"]


def test_false_accepts_and_hours_match_what_listen_reports(edge_bundle, tmp_path):
    neg = tmp_path / "neg"
    (neg / "sub").mkdir(parents=True)
    words = write_wav(neg / "sub" / "words.wav", word_stream([YES_CLIP, NO_CLIP, YES_CLIP]), 16000)
    write_wav(neg / "quiet.wav", np.zeros(16000 * 7, np.int16), 16000)
    (neg / ".hidden.wav").write_bytes(b"not audio")            # hidden files are not negatives
    r = evaluate(["--bundle", edge_bundle, "--negatives", neg, "--json", "--quiet", *SETTINGS])
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    expected = listen_events(edge_bundle, words)
    assert len(expected) >= 2                                   # the tiny bundle hears the clear words
    assert d["false_accepts"]["total"] == len(expected)
    per_label = {lab: sum(e["label"] == lab for e in expected) for lab in ("yes", "no")}
    assert d["false_accepts"]["per_label"] == per_label
    seconds = 7.0 + word_stream([YES_CLIP, NO_CLIP, YES_CLIP]).size / 16000
    assert d["negative_hours"] == pytest.approx(seconds / 3600, abs=1e-4)
    assert d["false_accepts_per_hour"] == pytest.approx(len(expected) / (seconds / 3600), rel=1e-3)
    assert d["negative_files"] == 2 and d["false_reject_rate"] is None
    lo, hi = d["false_accepts_per_hour_ci95"]                   # the count's exact interval, per hour
    assert lo < d["false_accepts_per_hour"] < hi and d["false_reject_rate_ci95"] is None
    assert (lo, hi) == pytest.approx(rate_interval(len(expected), seconds / 3600), rel=1e-3)
    assert [e["time"] for e in d["false_accept_events"]] == [e["time"] for e in expected]


def test_positives_hits_and_misses_with_a_truth_file(edge_bundle, tmp_path):
    x = word_stream([YES_CLIP, NO_CLIP])
    wav = write_wav(tmp_path / "pos.wav", x, 16000)
    truth = tmp_path / "pos.csv"
    # word_stream: 1 s gap, clip (1 s), 1 s gap, clip, 1 s gap; a third word that is not there is a miss
    truth.write_text("start,end,label\n1.0,2.0,yes\n3.0,4.0,no\n4.2,4.6,yes\n")
    quiet = write_wav(tmp_path / "quiet.wav", np.zeros(16000 * 3, np.int16), 16000)
    r = evaluate(["--bundle", edge_bundle, "--negatives", quiet, "--positives", wav, "--truth", truth,
                  "--json", "--quiet", *SETTINGS])
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["positives"]["truth_words"] == 3
    assert d["positives"]["hits"] == 2 and d["positives"]["misses"] == 1
    assert d["false_reject_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert d["false_reject_rate_ci95"] == pytest.approx(proportion_interval(1, 3), abs=1e-4)
    assert d["false_accepts"]["total"] == 0


def test_sweep_replays_exactly_what_the_detector_reports(edge_bundle, tmp_path):
    wav = write_wav(tmp_path / "w.wav", word_stream([YES_CLIP, NO_CLIP, NO_CLIP, YES_CLIP], pad=0.6), 16000)
    out = tmp_path / "out"
    r = evaluate(["--bundle", edge_bundle, "--negatives", wav, "--sweep", "--thresholds", "0.3,0.6,0.9",
                  "--smooths", "1,3", "--out", out, "--quiet", "--min-gap", "1", "--threads", "1"])
    assert r.returncode == 0, r.stderr
    assert "DET sweep" in r.stdout and "false accepts" in r.stdout
    rows = list(csv.DictReader(open(out / "det.csv")))
    assert len(rows) == 6
    for row in rows:   # every replayed point equals a real edge.listen run with those settings
        live = listen_events(edge_bundle, wav, ["--threshold", row["threshold"], "--smooth", row["smooth"],
                                                "--min-gap", "1", "--threads", "1"])
        assert int(row["false_accepts"]) == len(live), row
    for smooth in ("1", "3"):   # fewer false accepts at 0.9 than at 0.3; not strictly monotonic in between:
        # the gate re-arms at a fraction of the threshold, so a higher threshold can split one detection in two
        fa = [int(r["false_accepts"]) for r in rows if r["smooth"] == smooth]
        assert fa[-1] < fa[0], fa
    ev = json.loads((out / "evaluation.json").read_text())
    assert {"false_accepts_per_hour", "negative_hours", "false_accepts", "false_reject_rate", "sweep"} <= set(ev)
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "det.png").stat().st_size > 1000


def test_split_keeps_only_that_parts_files(edge_bundle, tmp_path):
    from edge.splits import split_of

    names = [f"n{i}.wav" for i in range(40)]
    test_names = [n for n in names if split_of(n) == "test"]
    assert test_names and len(test_names) < len(names)
    for n in names:
        write_wav(tmp_path / n, np.zeros(1600 * 12, np.int16), 16000)
    r = evaluate(["--bundle", edge_bundle, "--negatives", tmp_path, "--split", "test", "--json", "--quiet"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["negative_files"] == len(test_names)


def test_bad_input_is_one_line_and_exit_2(edge_bundle, tmp_path):
    wav = write_wav(tmp_path / "ok.wav", np.zeros(16000 * 2, np.int16), 16000)
    garbage = tmp_path / "bad.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    truth = tmp_path / "t.csv"
    truth.write_text("start,end,label\n0.5,1.0,banana\n")
    cases = [
        (["--negatives", tmp_path / "missing"], "does not exist"),
        (["--negatives", garbage], "bad.wav"),
        (["--negatives", wav, "--positives", wav, "--truth", truth], "banana"),
        (["--negatives", wav, "--positives", wav], "--truth"),
    ]
    for args, needle in cases:
        line = one_line_error(evaluate(["--bundle", edge_bundle, *args, "--quiet"]))
        assert needle in line, line
    r = evaluate(["--bundle", edge_bundle, "--negatives", wav, "--thresholds", "0.5,2"])   # argparse: usage + 1 line
    assert r.returncode == 2 and "between 0 and 1" in r.stderr.splitlines()[-1] and "Traceback" not in r.stderr


def test_evaluate_imports_only_the_device_stack():
    import subprocess
    code = ("import sys, edge.evaluate; sys.argv=['x','--help']\n"
            "bad=[m for m in sys.modules if m.split('.')[0] in ('tensorflow','keras','librosa','pydub','training')]\n"
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
