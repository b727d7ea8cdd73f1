"""The one frontend: librosa parity, streaming == offline, profiles, config round trip."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.errors import AuricleError
from edge.features import (FeatureConfig, StreamingLogMel, edge_config, fit_to_clip, log_mel, mel_filterbank,
                           model_input_shape, seed_config, to_model_input)

DATA = Path(__file__).parent / "data" / "speech_commands"
CLIPS = sorted(DATA.glob("*/*.wav"))


def _read(path: Path) -> np.ndarray:
    import soundfile as sf
    x, sr = sf.read(path, dtype="float32")
    assert sr == 16000
    return x


def _librosa_db(x: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    librosa = pytest.importorskip("librosa")
    S = librosa.feature.melspectrogram(
        y=x, sr=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_length, hop_length=cfg.hop_length,
        center=False, window="hann", n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax, power=cfg.power,
        htk=False, norm="slaney")
    return librosa.power_to_db(S, ref=cfg.ref_power, amin=cfg.amin, top_db=None).T


@pytest.mark.parametrize("cfg", [edge_config(), seed_config(), edge_config(n_fft=1024, win_length=1024, hop_length=320,
                                                                           n_mels=64, fmin=0.0, power=1.0)],
                         ids=["edge", "seed", "other"])
def test_log_mel_matches_librosa_on_real_clips(cfg):
    assert len(CLIPS) >= 24
    worst = 0.0
    for path in CLIPS[::3]:
        x = _read(path)
        ours = log_mel(x, cfg)
        ref = _librosa_db(x, cfg)
        assert ours.shape == ref.shape == (cfg.n_frames, cfg.n_mels)
        assert ours.dtype == np.float32
        worst = max(worst, float(np.abs(ours - ref).max()))
    assert worst < 1e-3, f"max deviation from librosa {worst} dB"


def test_filterbank_matches_librosa_and_is_cached():
    librosa = pytest.importorskip("librosa")
    ours = mel_filterbank(sample_rate=16000, n_fft=512, n_mels=40, fmin=20.0, fmax=8000.0)
    ref = librosa.filters.mel(sr=16000, n_fft=512, n_mels=40, fmin=20.0, fmax=8000.0, dtype=np.float64)
    np.testing.assert_allclose(ours, ref.T, rtol=1e-6, atol=1e-10)
    assert mel_filterbank(sample_rate=16000, n_fft=512, n_mels=40, fmin=20.0, fmax=8000.0) is ours
    assert not ours.flags.writeable


@pytest.mark.parametrize("chunk", [1, 160, 1000, 16000])
def test_streaming_equals_offline(chunk):
    cfg = edge_config()
    # 3 s of real speech: three clips back to back, so frames straddle clip boundaries
    x = np.concatenate([_read(p) for p in CLIPS[10:13]])
    offline = log_mel(x, cfg)
    stream = StreamingLogMel(cfg)
    parts = [stream.push(x[i:i + chunk]) for i in range(0, x.size, chunk)]
    online = np.concatenate(parts)
    assert online.shape == offline.shape
    np.testing.assert_allclose(online, offline, atol=1e-4)
    np.testing.assert_array_equal(online, offline)  # bit for bit: a frame never depends on its neighbours
    assert stream.frames_emitted == offline.shape[0]


@pytest.mark.parametrize("cfg", [seed_config(), edge_config(n_fft=401, win_length=300, hop_length=97, n_mels=64,
                                                            fmin=0.0, fmax=7000.0, power=1.0, ref_power=3.0)],
                         ids=["seed", "odd"])
def test_streaming_equals_offline_for_random_chunks(cfg):
    x = np.concatenate([_read(p) for p in CLIPS[20:23]])
    offline = log_mel(x, cfg)
    rng = np.random.default_rng(5)
    stream = StreamingLogMel(cfg)
    parts, i = [], 0
    while i < x.size:
        n = int(rng.choice([0, 1, cfg.hop_length, cfg.n_fft, 4000, 20000]))
        parts.append(stream.push(x[i:i + n]))
        i += n
    np.testing.assert_array_equal(np.concatenate(parts), offline)
    stream.reset()
    assert stream.frames_emitted == 0 and stream.pending_samples == 0
    np.testing.assert_array_equal(stream.push(x), offline)  # after reset: a fresh stream


def test_float32_float64_and_threads_give_the_same_frames():
    import threading

    cfg = edge_config()
    x = np.concatenate([_read(p) for p in CLIPS[:4]])
    ref = log_mel(x, cfg)
    np.testing.assert_array_equal(log_mel(x.astype(np.float64), cfg), ref)
    results = {}

    def work(i):
        results[i] = [log_mel(x[j * 160:], cfg)[: ref.shape[0] - j] for j in range(5)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    for outs in results.values():
        for j, out in enumerate(outs):
            np.testing.assert_array_equal(out, ref[j:])


def test_banded_filterbank_groups_cover_every_weight():
    from edge.features import _plan_for

    for cfg in (edge_config(), seed_config(), edge_config(n_mels=128, fmin=0.0)):
        plan = _plan_for(cfg)
        dense = mel_filterbank(sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                               fmin=float(cfg.fmin), fmax=float(cfg.fmax))
        rebuilt = np.zeros_like(dense)
        for g in plan.groups:
            assert g.m1 - g.m0 >= 2
            rebuilt[g.b0:g.b1, g.m0:g.m1] = g.weights.T
        np.testing.assert_array_equal(rebuilt, dense)
        assert [g.m0 for g in plan.groups[1:]] == [g.m1 for g in plan.groups[:-1]]
        assert sum((g.m1 - g.m0) * (g.b1 - g.b0) for g in plan.groups) < dense.size / 2


def test_streaming_computes_only_new_frames():
    cfg = edge_config()
    stream = StreamingLogMel(cfg)
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    stream.push(x)
    before = stream.frames_emitted
    new = stream.push(x[:cfg.hop_length])
    assert new.shape == (1, cfg.n_mels)  # exactly one hop -> exactly one new frame
    assert stream.frames_emitted == before + 1
    assert stream.pending_samples < cfg.n_fft  # no growing backlog


def test_int16_input_is_scaled():
    cfg = edge_config()
    x = _read(CLIPS[0])
    as_int = np.round(x * 32768).clip(-32768, 32767).astype(np.int16)
    np.testing.assert_allclose(log_mel(as_int, cfg), log_mel(x, cfg), atol=1e-3)


def test_short_input_gives_no_frames_and_bad_shape_raises():
    cfg = edge_config()
    assert log_mel(np.zeros(100), cfg).shape == (0, cfg.n_mels)
    with pytest.raises(AuricleError, match="mono"):
        log_mel(np.zeros((2, 16000)), cfg)


def test_config_json_round_trip_and_validation():
    for cfg in (edge_config(norm_mean=-50.5, norm_std=20.25), seed_config()):
        again = FeatureConfig.from_json(cfg.to_json())
        assert again == cfg
        assert json.loads(cfg.to_json())["profile"] == cfg.profile
    with pytest.raises(AuricleError, match="profile"):
        FeatureConfig(profile="fancy")
    with pytest.raises(AuricleError, match="win_length"):
        FeatureConfig(win_length=1024, n_fft=512)
    with pytest.raises(AuricleError, match="unknown keys"):
        FeatureConfig.from_dict({"sample_rate": 16000, "bogus": 1})
    with pytest.raises(AuricleError, match="fmax"):
        FeatureConfig(fmax=9000.0)


def test_edge_profile_normalises_and_adds_channel():
    cfg = edge_config(norm_mean=-40.0, norm_std=10.0)
    frames = log_mel(_read(CLIPS[5]), cfg)
    x = to_model_input(frames, cfg)
    assert x.shape == model_input_shape(cfg) == (97, 40, 1)
    np.testing.assert_allclose(x[..., 0], (frames + 40.0) / 10.0, rtol=1e-6)
    batch = to_model_input(np.stack([frames, frames]), cfg)
    assert batch.shape == (2, 97, 40, 1)


def test_seed_profile_is_a_0_255_image():
    cfg = seed_config()
    frames = log_mel(_read(CLIPS[20]), cfg)
    img = to_model_input(frames, cfg)
    assert img.shape == model_input_shape(cfg) == (224, 224, 3)
    assert img.min() >= 0.0 and img.max() <= 255.0 + 1e-3
    assert img.max() > 250.0  # the loudest bin of the window maps to ~255
    np.testing.assert_array_equal(img[..., 0], img[..., 2])
    # per-window scaling: a 20 dB gain change leaves the image unchanged
    np.testing.assert_allclose(to_model_input(frames + 20.0, cfg), img, atol=1e-3)
    with pytest.raises(AuricleError, match="frames"):
        to_model_input(frames[:50], cfg)


def test_fit_to_clip_pads_and_crops():
    cfg = edge_config()
    assert fit_to_clip(np.ones(100), cfg).shape == (16000,)
    assert fit_to_clip(np.ones(20000), cfg).shape == (16000,)


def test_importing_the_frontend_pulls_in_no_heavy_library():
    code = ("import sys, edge.features, edge.bundle; "
            "bad=[m for m in ('tensorflow','keras','librosa','pydub','training','converters') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stdout + out.stderr


def test_frontend_benchmark_reports_both_tables_and_exactness():
    pytest.importorskip("librosa")
    root = Path(__file__).parent.parent
    out = subprocess.run([sys.executable, "-m", "benchmarks.frontend", "--rounds", "1", "--warmup", "0",
                          "--inner", "1"], capture_output=True, text=True, cwd=root, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("CPU: ") and "numpy" in lines[0]
    one_s = [line for line in lines if line.startswith(("edge 1 s", "seed 1 s"))]
    streaming = [line for line in lines if " 60 s in 100 ms chunks " in line]
    configs = {line.split(": ")[0] for line in lines if line.startswith(("edge: ", "seed: "))}
    assert len(one_s) == len(streaming) >= 2 and {"edge", "seed"} <= configs   # one row per shipped config
    assert all(line.rstrip().endswith(" yes") for line in streaming)  # streaming == offline, bit for bit
    bad = subprocess.run([sys.executable, "-m", "benchmarks.frontend", "--rounds", "0"], capture_output=True,
                         text=True, cwd=root, timeout=60)
    assert bad.returncode == 2 and "--rounds 0" in bad.stderr and "Traceback" not in bad.stderr
