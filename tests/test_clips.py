"""Any sound, any length, any folder: automatic clip length, whole-clip training windows, the clip-level rule
(training, converter, Classifier), labels and groups the user controls (--label-regex, --group-by,
--split-file), low-rate audio through Classifier, and start/end of sustained sounds in streaming.

Real components throughout: generated WAV corpora decoded by soundfile, the one frontend, tiny real int8
bundles from tests/tiny_bundle.py, the CLIs as subprocesses.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import tiny_bundle  # noqa: E402

from edge.classifier import clip_scores, clip_windows, window_starts  # noqa: E402
from edge.errors import AuricleError  # noqa: E402
from edge.features import edge_config, log_mel  # noqa: E402
from edge.gate import END, EventGate  # noqa: E402
from edge.settings import DetectorSettings  # noqa: E402
from training import data as D  # noqa: E402
from training.featureset import FeatureSet, clip_level_scores, frames_of, padded_log_mel, random_offsets  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
YES_CLIP = tiny_bundle.clips_for("yes")[1]


def run(module: str, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", module, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """A flat spoken-digit-like corpus at 8 kHz: ``<digit>_<speaker>_<n>.wav``, 3 digits x 12 speakers x 2.
    Each digit is a tone of its own pitch, so the label is learnable."""
    root = tmp_path_factory.mktemp("digits")
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 8000.0
    for d, hz in enumerate((300.0, 900.0, 1800.0)):
        for k in range(12):
            for n in range(2):
                x = 0.3 * np.sin(2 * np.pi * hz * (1 + 0.02 * k) * t) + 0.01 * rng.standard_normal(t.size)
                sf.write(root / f"{d}_spk{k:02d}_{n}.wav", x.astype(np.float32), 8000)
    return root


# -- automatic clip length ------------------------------------------------------------------------------------
def test_auto_clip_length_is_the_90th_percentile_capped_and_explained():
    seconds, why = D.auto_clip_seconds([2.0] * 50 + [3.0] * 40 + [6.0] * 10)
    assert seconds == pytest.approx(3.3) and "90th percentile of 100 clip durations" in why
    seconds, why = D.auto_clip_seconds([30.0, 40.0, 50.0])
    assert seconds == D.AUTO_CLIP_MAX_SECONDS and "capped" in why
    seconds, why = D.auto_clip_seconds([0.1, 0.2])
    assert seconds == D.AUTO_CLIP_MIN_SECONDS and "minimum" in why
    with pytest.raises(AuricleError, match="--clip-seconds SECONDS"):
        D.auto_clip_seconds([])


# -- whole clips in training and evaluation -----------------------------------------------------------------
def _whole_clip_set(seconds: float = 3.0) -> FeatureSet:
    cfg = edge_config()
    n = int(seconds * cfg.sample_rate)
    rng = np.random.default_rng(1)
    long_clip = rng.standard_normal(n).astype(np.float32) * np.linspace(0.01, 1.0, n, dtype=np.float32)
    short = np.zeros(n, dtype=np.float32)
    short[:8000] = rng.standard_normal(8000).astype(np.float32)
    waves = np.stack([long_clip, short])
    pad = 10
    return FeatureSet(config=cfg, label_names=["a", "b"], padded=padded_log_mel(waves, cfg, pad), y=np.array([0, 1]),
                      split=np.array(["train", "train"]), paths=np.array(["a/1.wav", "b/1.wav"]), pad_frames=pad,
                      frames=frames_of(np.array([n, 8000]), cfg))


def test_random_training_windows_cover_the_whole_clip():
    fs = _whole_clip_set(3.0)
    n, p = fs.config.n_frames, fs.pad_frames
    assert fs.frames.tolist() == [frames_of(48000, fs.config), n]          # the short clip is one padded window
    rng = np.random.default_rng(0)
    offs = np.concatenate([random_offsets(fs, np.array([0, 1]), rng) for _ in range(3000)]).reshape(-1, 2)
    last_start = int(fs.frames[0]) - n
    assert offs[:, 0].min() == 0 and offs[:, 0].max() == last_start + 2 * p  # from the start to the very end
    assert len(np.unique(offs[:, 0])) == last_start + 2 * p + 1              # every position is drawn
    assert offs[:, 1].min() == 0 and offs[:, 1].max() == 2 * p               # one-window clip: only the shift
    # the frames of the window at clip offset s are the frames of the audio from s hops on
    cfg = fs.config
    x = np.zeros(48000, dtype=np.float32)
    x[:] = np.random.default_rng(1).standard_normal(48000) * np.linspace(0.01, 1.0, 48000)
    s = 150
    np.testing.assert_allclose(fs.padded[0, p + s:p + s + n], log_mel(x[s * cfg.hop_length:], cfg)[:n], atol=1e-3)


def test_clip_level_evaluation_averages_the_windows():
    fs = _whole_clip_set(3.0)
    n = fs.config.n_frames
    starts = window_starts(int(fs.frames[0]), n)
    assert starts[0] == 0 and starts[-1] == fs.frames[0] - n and np.all(np.diff(starts) <= n // 2)
    assert window_starts(n, n).tolist() == [0] and window_starts(n + 1, n).tolist() == [0, 1]

    def predict(x: np.ndarray) -> np.ndarray:         # a "model" whose score follows the window's loudness
        loud = x.mean(axis=(1, 2, 3))
        p = 1.0 / (1.0 + np.exp(-(loud - np.median(loud))))
        return np.stack([p, 1.0 - p], axis=1)

    clip, per_window, owners = clip_level_scores(predict, fs, np.array([0, 1]))
    assert owners.tolist() == [0] * len(starts) + [1]
    np.testing.assert_allclose(clip[0], per_window[:len(starts)].mean(axis=0))
    np.testing.assert_allclose(clip[1], per_window[-1])
    np.testing.assert_allclose(clip_scores(np.eye(2)[[0, 0, 1]], np.array([0, 0, 0]), 1), [[2 / 3, 1 / 3]])
    # the converter's window features (from the file) equal training's windows (from the padded rows)
    cfg = fs.config
    x = np.random.default_rng(1).standard_normal(48000).astype(np.float32) * np.linspace(0.01, 1.0, 48000,
                                                                                           dtype=np.float32)
    assert clip_windows(log_mel(x, cfg), n).shape == (len(starts), n, cfg.n_mels)


# -- labels and groups the user controls ----------------------------------------------------------------------
def test_flat_label_speaker_n_names_are_inferred_with_speaker_groups(digits):
    found = D.scan(digits)
    assert found.rule == "label_speaker_n"
    assert sorted({c.label for c in found.clips}) == ["0", "1", "2"]
    assert len({c.group for c in found.clips}) == 12 and D.groups_across_splits(found.clips) == 0


def test_inspector_with_label_regex_and_group_by(digits):
    r = run("training.data", [digits, "--label-regex", r"^(\d)_", "--group-by", r"^\d_([^_]+)_"])
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "labels: --label-regex" in out
    classes = [ln.split()[0] for ln in out.splitlines()[2:5]]
    assert classes == ["0", "1", "2"]
    assert r"groups (--group-by '^\d_([^_]+)_'): 12, across splits: 0" in out
    # the old rule would have made digit x speaker classes: the regex is what keeps 3
    found = D.scan(digits, naming=D.Naming(label_regex=r"^(\d)_", group_regex=r"^\d_([^_]+)_"))
    assert {c.group for c in found.clips} == {f"spk{k:02d}" for k in range(12)}


def test_wrong_inferred_labels_are_warned_about(tmp_path):
    rng = np.random.default_rng(0)
    for d in range(10):                     # <digit>_<speaker>-<n>: the trailing-number rule gives digit_speaker
        for spk in ("ann", "bob", "cy"):
            for n in range(2):
                sf.write(tmp_path / f"{d}_{spk}-{n}.wav", (0.1 * rng.standard_normal(800)).astype(np.float32), 8000)
    found = D.scan(tmp_path)
    assert found.rule == "label_n" and len({c.label for c in found.clips}) == 30
    assert any("30 classes of 2 clips (median)" in w and "--label-regex '^([^_]+)_'" in w for w in found.warnings)
    fixed = D.scan(tmp_path, naming=D.Naming(label_regex=r"^([^_]+)_", group_regex=r"_([a-z]+)-"))
    assert len({c.label for c in fixed.clips}) == 10 and not fixed.warnings
    assert D.groups_across_splits(fixed.clips) == 0 and len({c.group for c in fixed.clips}) == 3


def test_folder_corpus_with_speaker_prefixes_warns_and_group_by_fixes_it(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("coughing", "laughing"):
        (tmp_path / label).mkdir()
        for spk in range(20):
            for n in range(3):
                sf.write(tmp_path / label / f"S{spk:03d}_{n}_1_0.wav", (0.1 * rng.standard_normal(800)).astype(
                    np.float32), 16000)
    found = D.scan(tmp_path)
    assert D.groups_across_splits(found.clips) == 0            # each file its own group...
    assert any("--group-by '^([^_]+)_'" in w for w in found.warnings)  # ...but speakers straddle splits
    fixed = D.scan(tmp_path, naming=D.Naming(group_regex=r"^([^_]+)_"))
    assert len({c.group for c in fixed.clips}) == 20 and not fixed.warnings
    speakers = {}
    for c in fixed.clips:
        speakers.setdefault(c.group, set()).add(c.split)
    assert all(len(s) == 1 for s in speakers.values())


def test_split_file_sets_the_splits(digits, tmp_path):
    names = sorted(p.name for p in digits.glob("*.wav"))
    split = tmp_path / "split.csv"
    rows = ["path,split"] + [f"{n},{'test' if n.startswith('2') else 'train' if n.endswith('0.wav') else 'val'}"
                             for n in names[:-1]]
    split.write_text("\n".join(rows) + "\n")
    found = D.scan(digits, naming=D.Naming(split_file=str(split)))
    assert len(found.clips) == len(names) - 1
    assert [p.name for p, why in found.rejected] == [names[-1]] and "--split-file" in found.rejected[0][1]
    assert all(c.split == "test" for c in found.clips if c.label == "2")
    assert {c.split for c in found.clips if c.label != "2"} == {"train", "val"}
    r = run("training.data", [digits, "--split-file", split])
    assert r.returncode == 0 and f"--split-file {split}" in r.stdout, r.stderr


def test_bad_regex_and_unknown_split_paths_are_one_line_and_exit_2(digits, tmp_path):
    line = one_line_error(run("training.data", [digits, "--label-regex", "(unclosed"]))
    assert "--label-regex '(unclosed' is not a valid regular expression" in line
    line = one_line_error(run("training.data", [digits, "--group-by", "^[^_]+_"]))
    assert "has no group" in line
    bad = tmp_path / "bad.csv"
    bad.write_text("path,split\n0_spk00_0.wav,train\nnot/there.wav,test\n")
    line = one_line_error(run("training.data", [digits, "--split-file", bad]))
    assert "names 1 path(s) that are not labelled clips" in line and "not/there.wav" in line
    line = one_line_error(run("training.train", ["--data", digits, "--out", tmp_path / "r", "--split-file", bad]))
    assert "not/there.wav" in line
    line = one_line_error(run("training.train", ["--data", digits, "--out", tmp_path / "r", "--group-by", "(("]))
    assert "--group-by" in line and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_trainer_on_a_flat_corpus_gives_the_right_classes_and_speaker_split(digits, tmp_path):
    out = tmp_path / "run"
    r = run("training.train", ["--data", digits, "--out", out, "--group-by", r"^\d_([^_]+)_", "--sample-rate", "8000",
                               "--clip-seconds", "auto", "--n-mels", "32", "--epochs", "1", "--batch-size", "16",
                               "--quiet", "--cache-dir", tmp_path / "cache"], timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--clip-seconds auto: 0.5 s (90th percentile" in r.stdout
    assert (out / "labels.txt").read_text().split() == ["0", "1", "2"]
    cfg = json.loads((out / "feature_config.json").read_text())
    assert cfg["sample_rate"] == 8000 and cfg["n_mels"] == 32 and cfg["clip_duration"] == 0.5
    assert cfg["fmax"] == 4000.0 and cfg["win_length"] == 200 and cfg["hop_length"] == 80
    rows = [ln.split(",") for ln in (out / "split.csv").read_text().splitlines()[1:]]
    by_group: dict[str, set[str]] = {}
    for path, label, group, split in rows:
        assert group == path.split("_")[1] and label == path[0]
        by_group.setdefault(group, set()).add(split)
    assert len(by_group) == 12 and all(len(s) == 1 for s in by_group.values())
    report = json.loads((out / "report.json").read_text())
    assert set(report["window_accuracy"]) == set(report["accuracy"]) and "averaged per clip" in report["evaluation"]


# -- the device side: long clips and low rates ------------------------------------------------------------------
@pytest.fixture(scope="module")
def edge_bundle(tmp_path_factory):
    return tiny_bundle.cached_bundle(tmp_path_factory, "edge", train_clips_dir=tiny_bundle.DATA_DIR)


def test_a_3_second_clip_gives_one_clip_level_result(edge_bundle, capsys):
    from edge.classifier import Classifier

    c = Classifier(edge_bundle, num_threads=1)
    word = tiny_bundle.load_clip(YES_CLIP).astype(np.float32) / 32768
    x = np.concatenate([np.zeros(16000, np.float32), word, np.zeros(16000, np.float32)])   # 3 s
    result = c.classify(x, 16000)
    assert [lab for lab, _ in result] and len(result) == len(c.labels) and result[0][0] == "yes"
    full = c.classify(x, 16000, timeline=True)
    cfg = c.config
    starts = window_starts(1 + (48000 - cfg.n_fft) // cfg.hop_length, cfg.n_frames)     # every 0.48 s, last at 2 s
    assert [a for a, _, _ in full.timeline] == pytest.approx(starts * cfg.hop_length / 16000)
    assert len(full.timeline) == 6 and full.timeline[-1][1] == pytest.approx(3.0, abs=0.01)
    assert all(b - a == pytest.approx(0.992) for a, b, _ in full.timeline)
    np.testing.assert_allclose(full.scores, np.mean([s for _, _, s in full.timeline], axis=0))
    np.testing.assert_allclose(c.scores(x, 16000), full.scores)
    assert full.top[0][0] == "yes" and full.top == result
    # the window over the word alone scores it higher than the clip average of silence and word
    assert max(s[c.labels.index("yes")] for _, _, s in full.timeline) >= full.scores[c.labels.index("yes")]


def test_8khz_audio_is_resampled_up_with_a_note(edge_bundle, capsys):
    from edge.classifier import Classifier
    from edge.resample import resample

    c = Classifier(edge_bundle, num_threads=1)
    x16 = tiny_bundle.load_clip(YES_CLIP).astype(np.float32) / 32768
    x8 = resample(x16, 16000, 8000)
    capsys.readouterr()
    result = c.classify(x8, 8000)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "8000 Hz audio is resampled up to the model's 16000 Hz" in err
    assert len(result) == len(c.labels)     # a result, not a refusal (the tiny model never heard 8 kHz audio)
    np.testing.assert_allclose(c.scores(x8, 8000), c.scores(resample(x8, 8000, 16000), 16000))
    c.classify(x8, 8000)
    assert capsys.readouterr().err == ""                       # the note once per rate


# -- start and end of sustained sounds ---------------------------------------------------------------------------
def _sustained(gate: EventGate, seconds_on: tuple[float, float], total: float = 8.0, hop: float = 0.1):
    """A synthetic score stream: 'siren' at 0.9 between the two times, else 'noise'; events and ends by window."""
    onsets, ends = [], []
    for i in range(int(total / hop)):
        t = 1.0 + i * hop                            # window end times (1 s windows)
        on = seconds_on[0] <= t <= seconds_on[1]
        raw = np.array([0.1, 0.9]) if on else np.array([0.95, 0.05])
        _, events = gate.step(raw, t, i)
        onsets += events
        ends += gate.take_ends()
    return onsets, ends + gate.close()


def test_sustained_sound_gets_start_and_end_and_a_word_still_one_event():
    gate = EventGate(["noise", "siren"], {"noise"}, DetectorSettings(threshold=0.5, smooth=1, min_gap=1.0),
                     window_seconds=1.0)
    onsets, ends = _sustained(gate, (3.0, 6.0))
    assert len(onsets) == 1 and len(ends) == 1
    ev, end = onsets[0], ends[0]
    assert ev.label == end.label == "siren" and ev.time == pytest.approx(3.0) and ev.start == pytest.approx(2.0)
    assert end.phase == END and end.start == ev.start and end.end == pytest.approx(6.0)
    assert end.time == pytest.approx(6.1) and end.duration == pytest.approx(4.0)
    d = end.to_dict()
    assert d["phase"] == "end" and d["start"] == 2.0 and d["end"] == 6.0 and d["duration"] == 4.0
    assert "end" not in ev.to_dict() and ev.to_dict()["start"] == 2.0
    # a sound still on when the stream ends is closed by close() at its last window
    gate.reset()
    onsets, ends = _sustained(gate, (7.0, 99.0))
    assert len(onsets) == 1 and len(ends) == 1 and ends[0].end == pytest.approx(8.9)
    # the same word through step(): one event, as without end tracking (edge.evaluate counts these)
    gate = EventGate(["noise", "siren"], {"noise"}, DetectorSettings(threshold=0.5, smooth=3, min_gap=1.0),
                     window_seconds=1.0)
    assert len(_sustained(gate, (3.0, 3.4))[0]) == 1


def test_listen_prints_start_and_end_of_a_sustained_sound(edge_bundle, tmp_path):
    word = tiny_bundle.load_clip(YES_CLIP)
    x = np.concatenate([np.zeros(16000, np.int16), word, np.zeros(24000, np.int16)])
    wav = tmp_path / "s.wav"
    sf.write(wav, x, 16000, subtype="PCM_16")
    r = run("edge.listen", ["--bundle", edge_bundle, "--file", wav, "--threshold", "0.8", "--json"])
    assert r.returncode == 0, r.stderr
    lines = [json.loads(ln) for ln in r.stdout.splitlines()]
    events = [d for d in lines if d["type"] == "event"]
    ends = [d for d in lines if d["type"] == "event_end"]
    assert [d["label"] for d in events] == ["yes"] and [d["label"] for d in ends] == ["yes"]
    assert ends[0]["start"] == events[0]["start"] == pytest.approx(events[0]["time"] - 1.0, abs=0.02)
    assert events[0]["time"] <= ends[0]["end"] < ends[0]["time"] and ends[0]["duration"] > 0
    r = run("edge.listen", ["--bundle", edge_bundle, "--file", wav, "--threshold", "0.8"])
    human = r.stdout.splitlines()
    assert len(human) == 2 and "from" in human[0] and human[1].split()[1:3] == ["yes", "end"]


def test_class_weights_ignore_a_class_without_clips():
    from training.featureset import class_weights

    # a background class fed only by --negatives has no clips: the others must keep their weights
    w = class_weights(np.array([0, 0, 1]), 3)
    assert w[0] == pytest.approx(0.75) and w[1] == pytest.approx(1.5) and w[2] == 0.0
    assert class_weights(np.array([0, 1, 1, 1]), 2) == pytest.approx({0: 2.0, 1: 2 / 3})


def test_classes_far_apart_train_without_class_weights(caplog):
    import types

    from training.config import TrainConfig
    from training.loop import MAX_WEIGHT_RATIO, class_weight_vector

    far = types.SimpleNamespace(y=np.array([0] * 300 + [1] * 300 + [2] * 5), label_names=["a", "b", "rare"])
    idx = np.arange(far.y.size)
    with caplog.at_level("WARNING", logger="training.loop"):
        assert class_weight_vector(far, idx, TrainConfig()) is None
    assert "60x apart" in caplog.text and "'rare' has 5" in caplog.text
    near = types.SimpleNamespace(y=np.array([0] * 300 + [1] * int(300 / MAX_WEIGHT_RATIO)), label_names=["a", "b"])
    w = class_weight_vector(near, np.arange(near.y.size), TrainConfig())
    assert w is not None and w[1] == pytest.approx(MAX_WEIGHT_RATIO * w[0])
    assert class_weight_vector(near, np.arange(near.y.size), TrainConfig(class_weighting=False)) is None
