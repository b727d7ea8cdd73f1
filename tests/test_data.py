"""training.data: discovery and labels, group-aware splits, decoding of real and broken files, cache, CLI.

Real clips come from tests/data; lossy/odd/broken fixtures are made at test time with the real ffmpeg binary
shipped by imageio-ffmpeg (no network, no system ffmpeg).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from edge.errors import AudioError, AuricleError
from edge.features import edge_config, fit_to_clip
from training import data as D
from training.data import decode as decoding
from training import run_folder as R
from edge.splits import DEALT_RULE, SPLITS, split_of

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "speech_commands"
SHARED = (REPO / ".." / "shared" / "data" / "speech_commands_v0.02_test").resolve()
SOURCE = DATA / "yes" / "0fa1e7a9_nohash_0.wav"
CLASSES = ["_silence_", "_unknown_", "down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes"]

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data set not present at {SHARED}")

sf = pytest.importorskip("soundfile")


# -- helpers ----------------------------------------------------------------------------------------
def _ffmpeg(*args: str) -> None:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


def _source() -> np.ndarray:
    x, sr = sf.read(SOURCE, dtype="float32")
    assert sr == 16000 and x.ndim == 1
    return x


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 1000) -> tuple[float, int]:
    """Highest normalised correlation of a and b over lags in [-max_lag, max_lag] (codec delay)."""
    n = min(a.size, b.size)
    best = (-1.0, 0)
    for lag in range(-max_lag, max_lag + 1, 1):
        x, y = (a[lag:n], b[:n - lag]) if lag >= 0 else (a[:n + lag], b[-lag:n])
        c = float(np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y) + 1e-20))
        if c > best[0]:
            best = (c, lag)
    return best


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.data", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def _copy_classes(dst: Path, classes: list[str], per_class: int = 6) -> Path:
    for c in classes:
        (dst / c).mkdir(parents=True)
        for f in sorted((DATA / c).glob("*.wav"))[:per_class]:
            shutil.copy(f, dst / c / f.name)
    return dst


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """Odd and broken audio, made with the real ffmpeg from imageio-ffmpeg."""
    d = tmp_path_factory.mktemp("made")
    src = str(SOURCE)
    out = {name: d / name for name in ("clip.m4a", "clip.mp3", "stereo48k.wav", "u8.wav", "truncated.wav",
                                       "empty.wav", "text.wav", "nan.wav")}
    _ffmpeg("-i", src, "-c:a", "aac", "-b:a", "128k", str(out["clip.m4a"]))
    _ffmpeg("-i", src, "-c:a", "libmp3lame", "-b:a", "128k", str(out["clip.mp3"]))
    # left = source, right = half of it: a correct mono mix is 0.75 x source
    _ffmpeg("-i", src, "-af", "pan=stereo|c0=c0|c1=0.5*c0", "-ar", "48000", "-c:a", "pcm_s16le",
            str(out["stereo48k.wav"]))
    _ffmpeg("-i", src, "-c:a", "pcm_u8", str(out["u8.wav"]))
    for name, codec in OTHER_FORMATS.items():
        out[name] = d / name
        _ffmpeg("-i", src, "-c:a", codec, str(out[name]))
    full = d / "full.wav"
    _ffmpeg("-i", src, "-c:a", "pcm_s16le", str(full))
    blob = full.read_bytes()
    out["truncated.wav"].write_bytes(blob[:int(len(blob) * 0.6)])
    out["empty.wav"].write_bytes(b"")
    out["text.wav"].write_text("this is not audio, just a text file with a .wav name\n")
    x = _source().copy()
    x[100] = np.nan
    sf.write(out["nan.wav"], x, 16000, subtype="FLOAT")
    return out


OTHER_FORMATS = {  # every other extension, through whichever decoder serves it
    "clip.ogg": "libvorbis", "clip.opus": "libopus", "clip.webm": "libopus", "clip.aac": "aac",
    "clip.wma": "wmav2", "alac.m4a": "alac", "clip.flac": "flac",
}

BROKEN = {  # fixture -> words its skip reason must contain
    "truncated.wav": "truncated",
    "empty.wav": "empty",
    "text.wav": "not a readable wav",
    "nan.wav": "NaN",
}


# -- names, labels, groups ----------------------------------------------------------------------------
@pytest.mark.parametrize("name, label, group", [
    ("Laughter_284.m4a", "Laughter", "Laughter_284"),
    ("Dog_Bark_3.WAV", "Dog_Bark", "Dog_Bark_3"),
    ("dog-bark-12.flac", "dog-bark", "dog-bark-12"),
    ("Cat 7.mp3", "Cat", "Cat 7"),
    ("siren_take_a.ogg", "siren", "siren_take_a"),
    ("rain.opus", "rain", "rain"),
    ("bird_0fa1e7a9_nohash_0.wav.wav", "bird", "0fa1e7a9"),
    ("yes_0fa1e7a9_nohash_3.wav", "yes", "0fa1e7a9"),
    ("0fa1e7a9_nohash_0.wav", None, "0fa1e7a9"),
    ("1749.wav", None, "1749"),
])
def test_label_and_group_from_name(name, label, group):
    assert D.label_from_name(name) == label
    assert D.group_of(name) == group


def test_audio_stem_strips_double_extension():
    assert D.audio_stem("bird_0fa1e7a9_nohash_0.wav.wav") == "bird_0fa1e7a9_nohash_0"
    assert D.audio_stem("x.tar.m4a") == "x.tar"
    assert D.audio_stem("notes.txt") == "notes.txt"


def test_folder_layout_on_repo_clips():
    found = D.scan(DATA)
    assert found.layout == "folders" and not found.rejected
    clips = D.discover(DATA)
    assert len(clips) == 72
    assert Counter(c.label for c in clips) == {c: 6 for c in CLASSES}
    assert all(c.path.is_absolute() and c.path.parent.name == c.label for c in clips)
    assert all(c.path.name != "LICENSE" for c in clips)
    by_name = {c.path.name: c for c in clips}
    assert by_name["bird_0fa1e7a9_nohash_0.wav.wav"].label == "_unknown_"
    assert by_name["bird_0fa1e7a9_nohash_0.wav.wav"].group == "0fa1e7a9"
    assert by_name["1749.wav"].group == "1749"  # _silence_: no speaker, its own group
    assert [(c.label, str(c.path)) for c in clips] == sorted((c.label, str(c.path)) for c in clips)


def test_filename_layout_and_ignored_files(tmp_path):
    for name in ("Laughter_284.wav", "Laughter_12.wav", "Dog_Bark_3.wav", "yes_0fa1e7a9_nohash_0.wav.wav",
                 "1749.wav", ".hidden_1.wav"):
        shutil.copy(SOURCE, tmp_path / name)
    (tmp_path / "README.md").write_text("readme")
    (tmp_path / "LICENSE").write_text("license")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("no audio here")
    found = D.scan(tmp_path)
    assert found.layout == "filenames"
    assert sorted((c.label, c.path.name) for c in found.clips) == [
        ("Dog_Bark", "Dog_Bark_3.wav"), ("Laughter", "Laughter_12.wav"), ("Laughter", "Laughter_284.wav"),
        ("yes", "yes_0fa1e7a9_nohash_0.wav.wav")]
    assert [p.name for p, _ in found.rejected] == ["1749.wav"]
    assert "no label" in found.rejected[0][1]


def test_auto_prefers_folders_and_skips_hidden_and_noise(tmp_path):
    _copy_classes(tmp_path, ["yes", "no"], per_class=2)
    for hidden in (".git", "_background_noise_"):
        (tmp_path / hidden).mkdir()
        shutil.copy(SOURCE, tmp_path / hidden / "x_1.wav")
    shutil.copy(SOURCE, tmp_path / "loose_1.wav")
    found = D.scan(tmp_path)
    assert found.layout == "folders"
    assert sorted({c.label for c in found.clips}) == ["no", "yes"] and len(found.clips) == 4
    assert [p.name for p, _ in found.rejected] == ["loose_1.wav"]
    forced = D.scan(tmp_path, layout="filenames")
    assert [(c.label, c.path.name) for c in forced.clips] == [("loose", "loose_1.wav")]


def test_bad_layout_and_missing_root(tmp_path):
    with pytest.raises(AuricleError, match="layout"):
        D.scan(DATA, layout="csv")
    with pytest.raises(AuricleError, match="does not exist"):
        D.scan(tmp_path / "nope")


# -- splits -------------------------------------------------------------------------------------------
def test_split_rule_matches_definition():
    rng = np.random.default_rng(0)
    names = [f"{rng.integers(1 << 32):08x}" for _ in range(4000)]
    counts = Counter()
    for g in names:
        bucket = int(hashlib.sha1(g.encode()).hexdigest(), 16) % 100
        expected = "train" if bucket < 80 else "val" if bucket < 90 else "test"
        assert split_of(g) == expected == split_of(g)
        counts[expected] += 1
    assert abs(counts["train"] / 4000 - 0.8) < 0.03 and abs(counts["test"] / 4000 - 0.1) < 0.02


def _speaker(path: Path) -> str:
    m = re.search(r"([0-9a-f]{8})_nohash_\d+", path.name)
    return m.group(1) if m else path.name


def _assert_speaker_disjoint(clips) -> None:
    splits_of = defaultdict(set)
    for c in clips:
        splits_of[_speaker(c.path)].add(c.split)
        splits_of["group:" + c.group].add(c.split)
    straddling = {k: v for k, v in splits_of.items() if len(v) > 1}
    assert not straddling


def test_split_speaker_disjoint_on_repo_clips():
    clips = D.discover(DATA)
    _assert_speaker_disjoint(clips)
    # the repo clips were picked from test-split speakers only (tests/data/README.md): the sha1 rule alone would
    # leave train and validation empty, so the groups are dealt, each still in one split
    assert {split_of(c.group) for c in clips} == {"test"}
    assert {c.split for c in clips} == {"train", "val", "test"}
    assert D.scan(DATA).split_rule == DEALT_RULE


@needs_shared
@pytest.mark.shared_data
def test_shared_set_splits_are_stable_and_speaker_disjoint():
    clips = D.discover(SHARED)
    assert len(clips) == 4890
    assert Counter(c.label for c in clips)["_unknown_"] == 408
    _assert_speaker_disjoint(clips)
    assert Counter(c.split for c in clips) == {"train": 3965, "val": 352, "test": 573}
    assert Counter(c.label for c in clips if c.split == "test") == {
        "_silence_": 35, "_unknown_": 50, "down": 38, "go": 56, "left": 50, "no": 41, "off": 47, "on": 47,
        "right": 42, "stop": 58, "up": 61, "yes": 48}
    groups = defaultdict(set)
    for c in clips:
        groups[c.split].add(c.group)
    assert {k: len(v) for k, v in groups.items()} == {"train": 526, "val": 59, "test": 62}


def test_split_csv_round_trip_is_relative_and_atomic(tmp_path):
    clips = D.discover(DATA)
    out = D.write_split_csv(tmp_path / "run" / "split.csv", clips, root=DATA)
    lines = out.read_text().splitlines()
    assert lines[0] == "path,label,group,split"
    assert lines[1].startswith("_silence_/") and len(lines) == 73
    assert os.listdir(out.parent) == ["split.csv"]  # no temp file left behind
    rows = D.read_split_csv(out, root=DATA)
    assert [(c.path, c.label, c.group) for c, _ in rows] == [(c.path, c.label, c.group) for c in clips]
    assert [s for _, s in rows] == [c.split for c in clips]
    # root defaults to the folder the clips share
    D.write_split_csv(tmp_path / "b.csv", clips)
    assert (tmp_path / "b.csv").read_text() == out.read_text()
    (tmp_path / "bad.csv").write_text("file,label\nx,y\n")
    with pytest.raises(AuricleError, match="header"):
        D.read_split_csv(tmp_path / "bad.csv")


def test_split_file_of_an_older_run_still_reads(tmp_path):
    """Runs written before the split format was unified have ``path,label,split``; the group comes back from
    the file name (read_split_csv) or stays empty (run_folder.read_split)."""
    clips = D.discover(DATA)
    new = D.write_split_csv(tmp_path / "new.csv", clips, root=DATA)
    old = tmp_path / "old.csv"
    old.write_text("path,label,split\r\n" + "".join(f"{r.path},{r.label},{r.split}\r\n" for r in R.read_split(new)))
    assert D.read_split_csv(old, root=DATA) == D.read_split_csv(new, root=DATA)
    rows = R.read_split(old, labels=CLASSES)
    assert len(rows) == 72 and {r.group for r in rows} == {""} and rows[0].path.startswith("_silence_/")
    with pytest.raises(AuricleError, match=r"old.csv:2: label '_silence_' is not in labels.txt"):
        R.read_split(old, labels=["yes", "no"])
    (tmp_path / "odd.csv").write_text("path,label,group,split\nx.wav,yes,x,holdout\n")
    with pytest.raises(AuricleError, match="split 'holdout'"):
        R.read_split(tmp_path / "odd.csv")


# -- decoding ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, min_corr", [("clip.m4a", 0.99), ("clip.mp3", 0.97)])
def test_lossy_formats_decode_like_the_source(made, name, min_corr):
    src = _source()
    x = D.load_audio(made[name], 16000)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(x.size - src.size) <= 1200
    corr, lag = _best_correlation(x, src)
    assert corr > min_corr, (corr, lag)
    assert 0.85 < _rms(x) / _rms(src) < 1.15
    _, info = D.decode_audio(made[name])
    assert (info.sample_rate, info.channels) == (16000, 1)


@pytest.mark.parametrize("name", sorted(OTHER_FORMATS))
def test_other_formats_decode_like_the_source(made, name):
    src = _source()
    x = D.load_audio(made[name], 16000)
    corr, lag = _best_correlation(x, src, max_lag=1500)  # raw ADTS aac and wma keep the codec delay
    assert corr > 0.98, (corr, lag)
    assert 0.85 < _rms(x) / _rms(src) < 1.15


def test_stereo_48k_is_mixed_and_resampled(made):
    native, info = D.decode_audio(made["stereo48k.wav"])
    assert (info.sample_rate, info.channels, info.frames) == (48000, 2, 48000)
    np.testing.assert_allclose(native[:, 1], 0.5 * native[:, 0], atol=2 / 32768)
    src = _source()
    x = D.load_audio(made["stereo48k.wav"], 16000)
    assert x.shape == src.shape and x.dtype == np.float32
    corr, lag = _best_correlation(x, src, max_lag=5)
    assert corr > 0.999 and lag == 0
    assert _rms(x) / _rms(src) == pytest.approx(0.75, rel=0.02)


def test_8bit_wav_is_centred_and_scaled(made):
    src = _source()
    x = D.load_audio(made["u8.wav"], 16000)
    assert x.shape == src.shape
    assert np.abs(x - src).max() <= 2.5 / 128  # within an 8-bit step or two, so unsigned was un-biased
    assert abs(float(x.mean())) < 0.01
    assert _rms(x) / _rms(src) == pytest.approx(1.0, rel=0.05)


def test_int16_scaling_and_resampling_of_a_tone(tmp_path):
    t = np.arange(22050) / 22050.0
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * t) * 32767).astype(np.int16)
    sf.write(tmp_path / "tone.flac", tone, 22050, subtype="PCM_16")
    x = D.load_audio(tmp_path / "tone.flac", 16000)
    assert x.size == 16000
    assert np.abs(x[200:-200]).max() == pytest.approx(0.5, abs=0.01)
    assert _rms(x[200:-200]) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_files_raise_audio_error_with_reason(made, name):
    with pytest.raises(AudioError, match=BROKEN[name]) as err:
        D.load_audio(made[name], 16000)
    assert str(made[name]) in str(err.value) and "\n" not in str(err.value)


def test_text_named_m4a_reports_ffmpeg_reason(tmp_path):
    bad = tmp_path / "fake.m4a"
    bad.write_text("not audio")
    with pytest.raises(AudioError, match="ffmpeg cannot decode it as m4a") as err:
        D.load_audio(bad, 16000)
    assert "\n" not in str(err.value)


# -- datasets ---------------------------------------------------------------------------------------
@pytest.fixture()
def mixed_dataset(tmp_path, made) -> Path:
    """Two classes of real clips; 'odd' also holds the converted formats and every broken file."""
    root = _copy_classes(tmp_path / "ds", ["yes", "no"], per_class=3)
    (root / "odd").mkdir()
    for name in ["clip.m4a", "clip.mp3", "stereo48k.wav", "u8.wav", *BROKEN]:
        shutil.copy(made[name], root / "odd" / name)
    return root


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture()
def data_log():
    """The records the data package logs, caught on its own logger (a command's setup_logging earlier in this
    process may have stopped them reaching the root logger)."""
    logger, caught = logging.getLogger("training.data"), _Records()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(caught)
    yield caught
    logger.removeHandler(caught)
    logger.setLevel(level)


def test_load_dataset_decodes_all_formats_and_lists_skips(mixed_dataset, tmp_path, data_log):
    cfg = edge_config()
    ds = D.load_dataset(mixed_dataset, cfg, cache_dir=tmp_path / "cache", progress=True)
    assert ds.labels == ["no", "odd", "yes"]
    assert len(ds) == 10 and ds.waveforms.shape == (10, cfg.clip_samples)
    assert ds.waveforms.dtype == np.float32 and np.isfinite(ds.waveforms).all()
    assert ds.counts() == {"no": 3, "odd": 4, "yes": 3}
    assert {p.name: r for p, r in ds.skipped}.keys() == set(BROKEN)
    for path, reason in ds.skipped:
        assert re.search(BROKEN[path.name], reason), reason
    noted = [r.getMessage() for r in data_log.records if r.levelno == logging.WARNING]
    for name in BROKEN:
        assert len([ln for ln in noted if name in ln and "skipped" in ln]) == 1
    # rows follow clips
    i = [c.path.name for c in ds.clips].index("stereo48k.wav")
    assert (ds.sample_rates[i], ds.channels[i]) == (48000, 2) and ds.durations[i] == pytest.approx(1.0)
    j = [c.path.name for c in ds.clips].index("0fa1e7a9_nohash_0.wav")
    np.testing.assert_array_equal(ds.waveforms[j], fit_to_clip(_source(), cfg))
    assert [ds.labels[k] for k in ds.label_ids] == [c.label for c in ds.clips]
    assert list(ds.splits) == [c.split for c in ds.clips]
    assert sorted(np.concatenate([ds.indices(s) for s in SPLITS]).tolist()) == list(range(10))
    assert "no usable" in D.trainability_problem({"a": 3, "b": 0})
    with pytest.raises(AuricleError, match="'zzz' has no usable clips"):
        dataclasses.replace(ds, labels=ds.labels + ["zzz"]).check_trainable()
    ds.check_trainable()


def test_strict_raises_on_first_bad_file(mixed_dataset, tmp_path):
    with pytest.raises(AuricleError, match="strict") as err:
        D.load_dataset(mixed_dataset, edge_config(), strict=True, cache_dir=tmp_path / "cache", progress=False)
    assert any(name in str(err.value) for name in BROKEN)


def test_cache_second_run_decodes_nothing(tmp_path, monkeypatch):
    root = _copy_classes(tmp_path / "ds", ["yes", "no", "up"], per_class=4)
    cache = tmp_path / "cache"
    cfg = edge_config()
    calls = Counter()
    real = decoding.decode_file

    def counting(path, data):
        calls[path.name] += 1
        return real(path, data)

    monkeypatch.setattr(decoding, "decode_file", counting)
    first = D.load_dataset(root, cfg, cache_dir=cache, progress=False)
    assert sum(calls.values()) == 12
    calls.clear()
    second = D.load_dataset(root, cfg, cache_dir=cache, progress=False)
    assert sum(calls.values()) == 0
    np.testing.assert_array_equal(first.waveforms, second.waveforms)
    np.testing.assert_array_equal(first.sample_rates, second.sample_rates)
    assert first.clips == second.clips

    # one changed file is the only one decoded again
    changed = sorted((root / "up").glob("*.wav"))[0]
    x, sr = sf.read(changed, dtype="int16")
    sf.write(changed, (x // 2).astype(np.int16), sr, subtype="PCM_16")
    calls.clear()
    third = D.load_dataset(root, cfg, cache_dir=cache, progress=False)
    assert dict(calls) == {changed.name: 1}
    k = [c.path for c in third.clips].index(changed)
    assert not np.array_equal(third.waveforms[k], first.waveforms[k])

    # other frontend settings are another key: everything is decoded again
    calls.clear()
    D.load_dataset(root, edge_config(n_mels=32), cache_dir=cache, progress=False)
    assert sum(calls.values()) == 12

    # packs are plain arrays (no pickles) and the key is readable
    packs = sorted(cache.rglob("pack-*.npz"))
    assert packs and not list(cache.rglob("*.tmp"))
    for pack in packs:
        with np.load(pack, allow_pickle=False) as z:
            assert all(z[k].dtype != object for k in z.files)
            assert "features" not in z.files            # waveforms only: training computes the features
    keys = sorted(p.read_text() for p in cache.rglob("key.json"))
    assert len(keys) == 2 and '"n_mels": 32' in "".join(keys)

    # a damaged pack is ignored and removed, not fatal
    (edge_dir,) = [k.parent for k in cache.rglob("key.json") if '"n_mels": 40' in k.read_text()]
    for pack in edge_dir.glob("pack-*.npz"):
        pack.write_bytes(b"garbage")
    calls.clear()
    again = D.load_dataset(root, cfg, cache_dir=cache, progress=False)
    assert sum(calls.values()) == 12
    np.testing.assert_array_equal(again.waveforms, third.waveforms)
    for pack in edge_dir.glob("pack-*.npz"):  # the damaged packs were removed, fresh ones written
        with np.load(pack, allow_pickle=False) as z:
            assert z["sha1"].size > 0


def test_default_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AURICLE_CACHE", str(tmp_path / "c"))
    assert D.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("AURICLE_CACHE")
    assert D.default_cache_dir() == Path.home() / ".cache" / "auricle" / "features"


def test_cache_packs_written_with_features_are_still_read(tmp_path, monkeypatch):
    """Packs of the earlier format also hold a ``features`` array; they stay valid (nothing is decoded)."""
    root = _copy_classes(tmp_path / "ds", ["yes", "no"], per_class=2)
    cache = tmp_path / "cache"
    first = D.load_dataset(root, edge_config(), cache_dir=cache, progress=False)
    for pack in cache.rglob("pack-*.npz"):
        with np.load(pack, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["features"] = np.zeros((arrays["sha1"].size, 97, 40), dtype=np.float32)
        with open(pack, "wb") as fh:
            np.savez(fh, **arrays)
    monkeypatch.setattr(decoding, "decode_file", lambda *a: pytest.fail("decoded although the cache holds the clip"))
    again = D.load_dataset(root, edge_config(), cache_dir=cache, progress=False)
    np.testing.assert_array_equal(again.waveforms, first.waveforms)
    assert len(list(cache.rglob("pack-*.npz"))) == 1


def test_load_dataset_without_any_audio(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("x")
    with pytest.raises(AuricleError, match="no labelled audio"):
        D.load_dataset(tmp_path, edge_config(), use_cache=False, progress=False)


def test_dataset_write_split(tmp_path):
    ds = D.load_dataset(DATA, edge_config(), use_cache=False, progress=False)
    rows = D.read_split_csv(ds.write_split(tmp_path / "split.csv"), root=DATA)
    assert [c.path for c, _ in rows] == [c.path for c in ds.clips]
    assert [s for _, s in rows] == list(ds.splits)


@needs_shared
@pytest.mark.shared_data
@pytest.mark.slow
def test_shared_set_loads_and_caches(tmp_path, monkeypatch):
    cfg = edge_config()
    first = D.load_dataset(SHARED, cfg, cache_dir=tmp_path, progress=False)
    assert first.waveforms.shape == (4890, cfg.clip_samples) and not first.skipped
    monkeypatch.setattr(decoding, "decode_file", lambda *a: pytest.fail("decoded on a cached run"))
    second = D.load_dataset(SHARED, cfg, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(first.waveforms, second.waveforms)


# -- CLI --------------------------------------------------------------------------------------------
def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "error:" in lines[0]
    return lines[0]


def test_cli_good_dataset_exits_0():
    proc = _run_cli(str(DATA))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for c in CLASSES:
        assert re.search(rf"^\s+{re.escape(c)}\s+6\s+6\.0s$", out, re.M), out
    assert "16000 Hz (72)" in out and "channels: 1 (72)" in out
    assert "skipped: 0" in out and "trainable: yes" in out
    # test-split speakers only: dealt so that no split is empty, speakers still disjoint
    assert re.search(r"split \(groups dealt: the sha1 rule left a split empty; clips/groups\): train \d+/\d+, "
                     r"val \d+/\d+, test \d+/\d+$", out, re.M), out
    assert "across splits: 0" in out


def test_cli_missing_dir(tmp_path):
    line = _one_error_line(_run_cli(str(tmp_path / "missing")))
    assert "does not exist" in line


def test_cli_one_class(tmp_path):
    root = _copy_classes(tmp_path / "one", ["yes"], per_class=2)
    assert "only one class" in _one_error_line(_run_cli(str(root)))


def test_cli_no_audio(tmp_path):
    (tmp_path / "README.md").write_text("nothing")
    assert "no labelled audio" in _one_error_line(_run_cli(str(tmp_path)))


def test_cli_class_without_usable_clips(tmp_path, made):
    root = _copy_classes(tmp_path / "ds", ["yes", "no"], per_class=2)
    (root / "broken").mkdir()
    for name in ("empty.wav", "text.wav"):
        shutil.copy(made[name], root / "broken" / name)
    proc = _run_cli(str(root))
    assert "class 'broken' has no usable clips" in _one_error_line(proc)
    assert "broken/empty.wav: empty file" in proc.stdout and "skipped: 2" in proc.stdout

    strict = _run_cli(str(root), "--strict")
    assert "strict" in _one_error_line(strict)


def test_cli_filenames_layout_and_help(tmp_path, made):
    for i in range(2):
        shutil.copy(made["clip.m4a"], tmp_path / f"Laughter_{i}.m4a")
        shutil.copy(made["clip.mp3"], tmp_path / f"Cough_{i}.mp3")
    proc = _run_cli(str(tmp_path), "--sample-rate", "8000")
    assert proc.returncode == 0, proc.stderr
    assert "layout: filenames" in proc.stdout and re.search(r"Laughter\s+2", proc.stdout)
    help_ = _run_cli("--help")
    assert help_.returncode == 0 and "exit status" in help_.stdout and "filenames" in help_.stdout


def test_importing_data_stays_light():
    code = ("import sys, training.data; "
            "heavy = [m for m in ('tensorflow', 'keras', 'librosa', 'pydub') if m in sys.modules]; "
            "print(heavy)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
