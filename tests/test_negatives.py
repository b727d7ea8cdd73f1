"""Training with negative audio: split by file, background windows in batches, mixing, mining, a tiny run."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.features import edge_config, log_mel
from edge.splits import split_of
from training.mining import NegativeMixer, mine_hard_negatives, mine_labelled, window_false_accepts
from training.negatives import (BACKGROUND_LABEL, NegativeBank, background_label, find_negative_files,
                                load_negative_bank, mix_under)

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "speech_commands"


def write_noise(path: Path, seconds: float, seed: int, level: float = 0.05) -> Path:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (rng.standard_normal(int(seconds * 16000)) * level).astype(np.float32), 16000, subtype="PCM_16")
    return path


def test_files_split_by_sha1_of_their_path_relative_to_the_folder(tmp_path):
    for i in range(30):
        write_noise(tmp_path / "neg" / f"d{i % 3}" / f"f{i}.wav", 0.2, i)
    (tmp_path / "neg" / "notes.txt").write_text("not audio")
    files = find_negative_files([tmp_path / "neg"])
    assert len(files) == 30
    assert all(f.split == split_of(f.rel) and f.rel.startswith("d") and "/" in f.rel for f in files)
    assert {f.split for f in files} == {"train", "val", "test"}
    with pytest.raises(Exception, match="does not exist"):
        find_negative_files([tmp_path / "missing"])


def test_bank_never_reads_test_files_and_cuts_windows_of_the_right_shape(tmp_path):
    cfg = edge_config()
    names = [f"n{i}.wav" for i in range(24)]
    for i, n in enumerate(names):
        write_noise(tmp_path / n, 1.5, i)
    bank = load_negative_bank([tmp_path], cfg, cache_dir=tmp_path / "cache", progress=False)
    assert {f.split for f in bank.files} <= {"train", "val"}
    assert len(bank.files) == sum(split_of(n) != "test" for n in names)
    rng = np.random.default_rng(0)
    w = bank.random_windows(rng, 7)
    assert w.shape == (7, cfg.n_frames, cfg.n_mels) and w.dtype == np.float32
    first = bank.files[0].path
    expected = log_mel(__import__("soundfile").read(first, dtype="float32")[0], cfg)
    np.testing.assert_allclose(bank.frames[0].astype(np.float32), expected, atol=0.05)   # float16 storage
    again = load_negative_bank([tmp_path], cfg, cache_dir=tmp_path / "cache", progress=False)   # from cache
    np.testing.assert_array_equal(again.frames[0], bank.frames[0])
    n_windows = sum(len(b) for b in bank.sliding_windows("train", 10))
    per_file = [(x.shape[0] - cfg.n_frames) // 10 + 1 for f, x in zip(bank.files, bank.frames) if f.split == "train"]
    assert n_windows == sum(per_file)


def test_background_label_prefers_the_datas_own_class():
    assert background_label(["_silence_", "_unknown_", "yes"]) == "_unknown_"
    assert background_label(["dog", "rain"]) == BACKGROUND_LABEL


def test_mix_under_sets_the_signal_to_noise_ratio_in_the_power_domain():
    cfg = edge_config()
    rng = np.random.default_rng(1)
    x = np.full((4, cfg.n_frames, cfg.n_mels), -20.0, np.float32)       # power 0.01 everywhere
    noise = np.full_like(x, -40.0)
    mixed = mix_under(x, noise, rng, (10.0, 10.0), cfg)                   # noise scaled to 10 dB below x
    np.testing.assert_allclose(mixed, 10 * np.log10(0.01 * 1.1), atol=1e-4)


def _bank(seconds_per_file=(3.0, 3.0)):
    cfg = edge_config()
    frames = [np.zeros((int(s * 100), cfg.n_mels), np.float16) - 60 for s in seconds_per_file]
    from training.negatives import NegativeFile
    files = [NegativeFile(Path(f"/x/{i}.wav"), f"{i}.wav", "train") for i in range(len(frames))]
    return NegativeBank(config=cfg, files=files, frames=frames)


def test_mixer_appends_background_windows_with_their_weight():
    bank = _bank()
    mixer = NegativeMixer(bank=bank, background_index=1, fraction=0.25, mix_prob=1.0, weight=2.0)
    rng = np.random.default_rng(0)
    x = np.zeros((8, bank.config.n_frames, bank.config.n_mels), np.float32)
    y = np.full(8, 3)
    w = np.ones(8, np.float32)
    x2, y2, w2 = mixer.extend(x, y, w, rng)
    assert x2.shape[0] == y2.shape[0] == w2.shape[0] == 10
    assert list(y2[8:]) == [1, 1] and list(w2[8:]) == [2.0, 2.0] and list(y2[:8]) == [3] * 8
    assert np.all(x2[:8] > 0)                       # noise was mixed under every positive (mix_prob 1)


def test_noise_negatives_are_marked_without_moving_a_file_between_splits(tmp_path):
    for i in range(12):
        write_noise(tmp_path / "neg" / ("noise" if i % 3 == 0 else "speech") / f"f{i}.wav", 0.2, i)
    plain = find_negative_files([tmp_path / "neg"])
    marked = find_negative_files([tmp_path / "neg"], [tmp_path / "neg" / "noise"])
    assert [(f.rel, f.split) for f in plain] == [(f.rel, f.split) for f in marked]
    assert [f.noise for f in marked] == [f.rel.startswith("noise/") for f in marked] and any(f.noise for f in marked)
    assert not any(f.noise for f in plain)
    outside = write_noise(tmp_path / "elsewhere" / "x.wav", 0.2, 99)
    for bad in (outside, tmp_path / "neg" / "missing"):
        with pytest.raises(Exception, match="inside the --negatives"):
            find_negative_files([tmp_path / "neg"], [bad])


def test_noise_negatives_mark_linked_files_by_the_folder_they_are_linked_into(tmp_path):
    """ESC-10 folds are linked into one folder (tools.esc10_folds): naming that folder marks every link, though
    each points elsewhere; a linked folder given as a root works the same; a path marking nothing is an error."""
    for i in range(4):
        write_noise(tmp_path / "esc" / f"c{i}" / f"{i}-A.wav", 0.2, i)
        write_noise(tmp_path / "neg" / "speech" / f"s{i}.wav", 0.2, 10 + i)
    (tmp_path / "links").mkdir()
    for i in range(4):
        (tmp_path / "links" / f"{i}-A.wav").symlink_to(tmp_path / "esc" / f"c{i}" / f"{i}-A.wav")
    (tmp_path / "neg_link").symlink_to(tmp_path / "neg", target_is_directory=True)
    files = find_negative_files([tmp_path / "neg_link", tmp_path / "links"], [tmp_path / "links"])
    assert [f.noise for f in files] == [f.rel.endswith("-A.wav") for f in files] and sum(f.noise for f in files) == 4
    one = find_negative_files([tmp_path / "links"], [tmp_path / "links" / "2-A.wav"])
    assert [f.rel for f in one if f.noise] == ["2-A.wav"]
    assert [f.rel for f in find_negative_files([tmp_path / "neg_link"], [tmp_path / "neg_link" / "speech"])
            if f.noise] == [f"speech/s{i}.wav" for i in range(4)]
    (tmp_path / "neg" / "empty").mkdir()
    with pytest.raises(Exception, match="holds none of the negative audio"):
        find_negative_files([tmp_path / "neg"], [tmp_path / "neg" / "empty"])


def test_mixer_labels_noise_windows_as_silence_in_proportion_to_their_audio():
    """Two train files, one marked noise (frames +10 dB, a quarter of the audio) and one speech (-60 dB): every
    appended window is labelled by the file it came from, and about a quarter are noise."""
    bank = _bank((9.0, 3.0))
    bank.files[1] = dataclasses.replace(bank.files[1], noise=True)
    bank.frames[1][:] = 10
    n = bank.config.n_frames
    assert bank.noise_share() == pytest.approx((300 - n + 1) / (900 + 300 - 2 * (n - 1)))
    mixer = NegativeMixer(bank=bank, background_index=1, fraction=1.0, mix_prob=0.0, noise_index=0)
    rng = np.random.default_rng(0)
    x = np.zeros((400, n, bank.config.n_mels), np.float32)
    x2, y2, _ = mixer.extend(x, np.full(400, 3), None, rng, enabled=False)
    neg, labels = x2[400:], y2[400:]
    assert len(labels) == 400 and set(labels) == {0, 1}
    assert np.all(neg[labels == 0] == 10) and np.all(neg[labels == 1] == -60)
    assert abs(np.mean(labels == 0) - bank.noise_share()) < 0.08


class _FakeScores:
    """A stand-in model with a known answer: it 'hears' a keyword wherever the window is loud."""

    def predict(self, x, batch_size=256, verbose=0):
        loud = (x.reshape(len(x), -1).max(axis=1) > 0).astype(float)
        return np.stack([1 - loud, loud], axis=1)


def test_mining_keeps_exactly_the_windows_that_score_above_threshold():
    bank = _bank((2.0,))
    bank.config = bank.config.__class__(**{**bank.config.to_dict(), "norm_mean": 0.0, "norm_std": 1.0})
    bank.frames[0][120:140] = 30                      # 0.2 s of "keyword-like" sound in the middle
    hard, stats = mine_hard_negatives(_FakeScores(), bank, np.array([False, True]), config=bank.config,
                                      threshold=0.5, hop_frames=1)
    n = bank.config.n_frames
    starts = range(0, bank.frames[0].shape[0] - n + 1)
    expected = sum(1 for s in starts if bank.frames[0][s:s + n].astype(np.float32).max() > 0)
    assert stats["hard"] == len(hard) == expected > 0
    assert stats["windows"] == len(starts)


def test_mining_scores_windows_with_the_models_normalisation_not_the_banks():
    """The bank is loaded before training computes the normalisation statistics; scoring its windows with
    the bank's copy of the config fed the model un-normalised dB, and mining picked windows at random."""
    bank = _bank((2.0,))
    raw = bank.config.__class__(**{**bank.config.to_dict(), "norm_mean": 0.0, "norm_std": 1.0})
    bank.config = raw
    bank.frames[0][120:140] = 30                      # loud in dB; below the mean once normalised (mean 40)
    trained = raw.__class__(**{**raw.to_dict(), "norm_mean": 40.0, "norm_std": 1.0})
    fg = np.array([False, True])
    hard, _ = mine_hard_negatives(_FakeScores(), bank, fg, config=trained, threshold=0.5, hop_frames=1)
    assert len(hard) == 0                             # what the trained model sees: nothing loud
    assert window_false_accepts(_FakeScores(), bank, fg, config=trained, threshold=0.5, hop_frames=1,
                                split="train") == 0
    assert window_false_accepts(_FakeScores(), bank, fg, config=raw, threshold=0.5, hop_frames=1, split="train") > 0


def _speaker_in(split: str, start: int) -> tuple[str, int]:
    k = start
    while split_of(f"spk{k}") != split:
        k += 1
    return f"spk{k}", k + 1


def tiny_corpus(root: Path, labels=("yes", "no", "_silence_")) -> Path:
    """The shipped test clips renamed to speakers the sha1 rule puts in train (3 of 4) or validation."""
    k = 0
    for label in labels:
        for i, clip in enumerate(sorted((DATA / label).glob("*.wav"))):
            speaker, k = _speaker_in("val" if i % 4 == 0 else "train", k)
            (root / label).mkdir(parents=True, exist_ok=True)
            shutil.copy(clip, root / label / f"{speaker}_nohash_0.wav")
    return root


@pytest.mark.slow
def test_training_with_negatives_and_a_mining_round_on_a_tiny_corpus(tmp_path):
    data = tiny_corpus(tmp_path / "data", labels=("yes", "no"))
    for i in range(12):
        write_noise(tmp_path / "neg" / f"room_{i}.wav", 4.0, 100 + i, level=0.02)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "training.train", "--data", data, "--out", out, "--epochs", "2", "--batch-size", "8",
           "--negatives", tmp_path / "neg", "--mine-rounds", "1", "--mine-epochs", "1", "--mine-threshold", "0.05",
           "--quiet", "--cache-dir", tmp_path / "cache", "--width", "0.25"]
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    labels = (out / "labels.txt").read_text().split()
    assert labels == ["no", "yes", "_background_"]     # no background class in this data: a new one
    summary = json.loads((out / "train_summary.json").read_text())
    mining = summary["mining"]
    assert mining["rounds"][0]["windows"] > 0 and mining["chosen_round"] in (0, 1)
    assert (out / "model_before_mining.keras").is_file()
    cfg = json.loads((out / "train_config.json").read_text())
    assert 0 < cfg["negative_split"]["train"]["files"] < 12 and cfg["negative_split"]["test"]["files"] == 0
    assert (out / "model.keras").is_file()


@pytest.mark.slow
def test_noise_negatives_train_and_mine_as_silence_on_a_tiny_corpus(tmp_path):
    data = tiny_corpus(tmp_path / "data", labels=("yes", "_unknown_", "_silence_"))
    for i in range(12):
        write_noise(tmp_path / "neg" / ("noise" if i % 2 else "speech") / f"f_{i}.wav", 4.0, 200 + i, level=0.02)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "training.train", "--data", data, "--out", out, "--epochs", "2", "--batch-size", "8",
           "--negatives", tmp_path / "neg", "--noise-negatives", tmp_path / "neg" / "noise", "--mine-rounds", "1",
           "--mine-epochs", "1", "--mine-threshold", "0.01", "--quiet", "--cache-dir", tmp_path / "cache",
           "--width", "0.25"]
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "negatives are labelled '_unknown_'" in r.stdout
    cfg = json.loads((out / "train_config.json").read_text())
    assert cfg["noise_negatives"] == [str(tmp_path / "neg" / "noise")]
    mining = json.loads((out / "train_summary.json").read_text())["mining"]
    assert mining["rounds"][0]["windows"] > 0


def test_mining_fine_tune_keeps_batch_norm_statistics():
    """The mining fine-tune trains the weights but leaves batch-norm statistics as training left them."""
    import keras

    from training.mining import freeze_batch_norm

    inputs = keras.Input((4,))
    x = keras.layers.Dense(3)(inputs)
    x = keras.layers.BatchNormalization(momentum=0.5)(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    bn = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    before_stats = [np.array(v) for v in (bn.moving_mean, bn.moving_variance)]
    before_kernel = np.array(model.layers[1].kernel)
    freeze_batch_norm(model)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.normal(5.0, 3.0, (64, 4)).astype("float32"), rng.integers(0, 2, 64), epochs=2, verbose=0)
    assert all(np.array_equal(b, np.array(v)) for b, v in zip(before_stats, (bn.moving_mean, bn.moving_variance)))
    assert not np.allclose(before_kernel, np.array(model.layers[1].kernel))   # the rest still learns


def test_mined_windows_keep_the_label_of_the_file_they_came_from():
    """A loud stretch in a speech file and a longer one in a noise file: mining returns both, the noise
    file's windows labelled silence, and the fine-tune's appended hard windows carry those labels."""
    bank = _bank((2.0, 2.0))
    bank.config = bank.config.__class__(**{**bank.config.to_dict(), "norm_mean": 0.0, "norm_std": 1.0})
    bank.files[1] = dataclasses.replace(bank.files[1], noise=True)
    bank.frames[0][120:125] = 30
    bank.frames[1][100:140] = 30
    mixer = NegativeMixer(bank=bank, background_index=1, noise_index=0, hard_share=1.0)
    hard, labels, stats = mine_labelled(_FakeScores(), mixer, np.array([False, True]), config=bank.config,
                                        threshold=0.5)
    loud = [hard[labels == lab].astype(np.float32).max(axis=(1, 2)) for lab in (0, 1)]
    assert stats["hard"] == len(hard) == len(labels) and all(len(v) and np.all(v > 0) for v in loud)
    assert len(loud[0]) > len(loud[1])              # the noise file's loud stretch is longer
    mixer.add_hard(hard, labels)
    x, y, _ = mixer.extend(np.zeros((40, bank.config.n_frames, bank.config.n_mels), np.float32), np.full(40, 3),
                           None, np.random.default_rng(0), enabled=False)
    assert set(y[40:]) == {0, 1}
    pairs = {(h.astype(np.float32).tobytes(), int(lab)) for h, lab in zip(hard, labels)}
    assert all((row.tobytes(), int(lab)) in pairs for row, lab in zip(x[40:], y[40:]))


def _corpus_source(root: Path, name: str, role: str, n: int) -> None:
    for i in range(n):
        write_noise(root / name / f"f{i}.flac", 0.5, hash((name, i)) % 1000)
    (root / name / "manifest.json").write_text(json.dumps({"source": name, "role": role, "files": []}))


def test_a_corpus_splits_by_source_role_and_never_reads_a_test_source(tmp_path, caplog):
    corpus = tmp_path / "corpora"
    _corpus_source(corpus, "music-a", "train", 12)
    _corpus_source(corpus, "speech-b", "tune", 6)
    _corpus_source(corpus, "tts-c", "test", 5)
    with caplog.at_level("INFO", logger="training.negatives"):
        files = find_negative_files([corpus])
    by_source = {}
    for f in files:
        by_source.setdefault(f.rel.split("/")[0], set()).add(f.split)
    assert by_source == {"music-a": {"train"}, "speech-b": {"val"}, "tts-c": {"test"}}   # whole sources
    assert "tts-c is a test source" in caplog.text
    bank = load_negative_bank([corpus], edge_config(), cache_dir=tmp_path / "cache", progress=False)
    assert {f.rel.split("/")[0] for f in bank.files} == {"music-a", "speech-b"}          # test never read
    one = find_negative_files([corpus / "speech-b"])                    # a source named on its own
    assert {f.split for f in one} == {"val"} and len(one) == 6
    with pytest.raises(Exception, match="none of the negative files|no audio files"):
        load_negative_bank([corpus / "tts-c"], edge_config(), cache_dir=tmp_path / "cache", progress=False)
    write_noise(corpus / "tts-d" / "f0.flac", 0.5, 3)                  # a source whose build has not finished
    with pytest.raises(Exception, match="tts-d has no manifest.json"):
        find_negative_files([corpus])
    shutil.rmtree(corpus / "tts-d")
    (corpus / "speech-b" / "manifest.json").write_text(json.dumps({"role": "holdout"}))
    with pytest.raises(Exception, match="role 'holdout'"):
        find_negative_files([corpus])


def test_cached_frames_are_memory_mapped_not_held(tmp_path):
    cfg = edge_config()
    for i in range(6):
        write_noise(tmp_path / "neg" / f"n{i}.wav", 1.0, i)
    bank = load_negative_bank([tmp_path / "neg"], cfg, cache_dir=tmp_path / "cache", progress=False,
                              splits=("train", "val", "test"))
    assert all(isinstance(x, np.memmap) for x in bank.frames)           # first pass too: written, then mapped
    w = bank.random_windows(np.random.default_rng(1), 3, split=bank.files[0].split)
    assert w.shape == (3, cfg.n_frames, cfg.n_mels) and np.isfinite(w).all()
