"""edge.interpreter / adapters / classifier / detector / resample / sources / scoring: resampler, interpreter
helpers, Classifier, StreamingDetector, event scoring.

Tiny real bundles come from tests/tiny_bundle.py (Keras -> int8 TFLite), built once per session.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tiny_bundle  # noqa: E402

from edge.errors import AudioError, AuricleError, BundleError  # noqa: E402
from edge.resample import Resampler, resample  # noqa: E402
from edge.sources import ArraySource, FileSource, check_source_rate, read_audio  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
YES_CLIP = tiny_bundle.clips_for("yes")[1]
NO_CLIP = tiny_bundle.clips_for("no")[2]


@pytest.fixture(scope="session")
def edge_bundle(tmp_path_factory):
    return tiny_bundle.cached_bundle(tmp_path_factory, "edge", train_clips_dir=tiny_bundle.DATA_DIR)


@pytest.fixture(scope="session")
def seed_bundle(tmp_path_factory):
    return tiny_bundle.cached_bundle(tmp_path_factory, "seed", profile="seed", train_clips_dir=tiny_bundle.DATA_DIR,
                                     epochs=2, shifts=(0.0,))


def clip(path: Path) -> np.ndarray:
    return tiny_bundle.load_clip(path)


def word_stream(words, *, pad: float = 1.0, sr: int = 16000, noise: float = 30.0, seed: int = 0) -> np.ndarray:
    """int16: quiet noise with each clip placed after ``pad`` seconds of it, and ``pad`` after the last."""
    rng = np.random.default_rng(seed)
    gap = np.zeros(int(pad * sr), np.int16)
    parts = [gap]
    for w in words:
        parts += [clip(w), gap]
    x = np.concatenate(parts).astype(np.float64) + rng.normal(0, noise, sum(p.size for p in parts))
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(x, np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def detector(bundle, *, num_threads=None, sample_rate=None, **overrides):
    """A StreamingDetector with the bundle's settings but ``overrides`` (hop, threshold, smooth, min_gap)."""
    from edge.bundle import as_bundle
    from edge.detector import StreamingDetector
    from edge.settings import DetectorSettings, RuntimeOptions

    b = as_bundle(bundle)
    return StreamingDetector(b, DetectorSettings.from_bundle(b, **overrides), RuntimeOptions(num_threads=num_threads),
                             sample_rate=sample_rate)


# -- resampler --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [48000, 44100, 22050])
def test_resampler_is_identical_for_any_chunking(rate):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.3, rate * 2).astype(np.float32)
    whole = resample(x, rate, 16000)
    assert whole.size == -(-x.size * 16000 // rate)
    r = Resampler(rate, 16000)
    for sizes in ([1], [160], [1024], [4000], list(rng.integers(1, 3000, 500))):
        r.reset()
        out, i, k = [], 0, 0
        end = x.size if sizes != [1] else rate // 10          # one sample at a time: 0.1 s is plenty
        while i < end:
            n = int(sizes[k % len(sizes)])
            out.append(r.push(x[i:i + n]))
            i, k = i + n, k + 1
        y = np.concatenate(out)
        assert y.size >= end * 16000 // rate - (r.half * 16000 // rate + 2)   # only the lookahead is held back
        np.testing.assert_array_equal(y, whole[:y.size])


@pytest.mark.parametrize("rate", [48000, 44100])
def test_resampler_passes_speech_band_and_removes_aliases(rate):
    t = np.arange(rate * 2) / rate
    tone = resample(np.sin(2 * np.pi * 1000 * t), rate, 16000)
    ref = np.sin(2 * np.pi * 1000 * np.arange(tone.size) / 16000)
    assert np.abs(tone - ref)[200:-200].max() < 1e-4          # no delay, unit gain
    alias = resample(np.sin(2 * np.pi * 9000 * t), rate, 16000)  # above the new Nyquist
    assert np.abs(alias)[200:-200].max() < 1e-3


def test_source_rate_must_cover_the_model_rate():
    assert check_source_rate(48000.0, 16000) == 48000
    with pytest.raises(AudioError, match="needs 16000 Hz"):
        check_source_rate(8000, 16000)
    with pytest.raises(AudioError, match="non-integer"):
        check_source_rate(44100.5, 16000)


# -- stateless interpreter helpers -----------------------------------------------------------------------
def test_quantize_dequantize_round_trip_and_widening():
    from edge.adapters import dequantize, quantize, top_k

    x = np.array([-1.0, -0.02, 0.0, 0.013, 0.5, 100.0], np.float32)
    q = quantize(x, 0.01, -3, np.int8)
    assert q.dtype == np.int8
    assert q.tolist() == [-103, -5, -3, -2, 47, 127]
    out, work = np.empty(6, np.int8), np.empty(6, np.float32)
    assert quantize(x, 0.01, -3, np.int8, out=out, work=work) is out
    assert out.tolist() == q.tolist()
    assert quantize(x, 0.05, 128, np.uint8).tolist() == [108, 128, 128, 128, 138, 255]
    # int8 - zero_point overflows in int8; widened ints do not
    s = dequantize(np.array([127, -128], np.int8), 1 / 256, -128)
    assert s.tolist() == [255 / 256, 0.0]
    assert quantize(x, 0.0, 0, np.float32).tolist() == x.tolist()   # float model: pass-through
    assert top_k(np.array([0.1, 0.7, 0.2]), 2, labels=["a", "b", "c"]) == [("b", 0.7), ("c", 0.2)]


def test_helpers_use_the_interpreters_quantisation(edge_bundle):
    from edge.bundle import load_bundle
    from edge.features import log_mel, to_model_input
    from edge.adapters import get_scores, input_details, output_details, set_input
    from edge.interpreter import make_interpreter

    b = load_bundle(edge_bundle)
    interp, backend = make_interpreter(b.model_path("int8"), num_threads=1)
    assert backend == "ai_edge_litert"
    ind, outd = input_details(interp), output_details(interp)
    spec = b.models["int8"]
    assert ind["quantization"] == pytest.approx((spec.input.scale, spec.input.zero_point))
    x = to_model_input(log_mel(clip(YES_CLIP), b.feature_config), b.feature_config)
    set_input(interp, x)
    scale, zp = ind["quantization"]
    expect = np.clip(np.rint(x / np.float32(scale)) + zp, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(interp.get_tensor(ind["index"])[0], expect)
    interp.invoke()
    raw = interp.get_tensor(outd["index"]).reshape(-1).astype(np.int64)
    oscale, ozp = outd["quantization"]
    np.testing.assert_allclose(get_scores(interp), oscale * (raw - ozp))
    assert get_scores(interp).sum() == pytest.approx(1.0, abs=0.02)


def test_streaming_prepare_equals_profile_transform(edge_bundle):
    from edge.bundle import load_bundle
    from edge.features import log_mel, to_model_input
    from edge.adapters import quantize
    from edge.classifier import ModelRunner

    b = load_bundle(edge_bundle)
    m = ModelRunner(b, model=None, num_threads=1, coral=False)
    frames = log_mel(clip(NO_CLIP), b.feature_config)
    m.prepare(frames)
    ref = quantize(to_model_input(frames, b.feature_config)[None], m.in_scale, m.in_zero, m.in_dtype)
    np.testing.assert_array_equal(m._q, ref)


# -- Classifier ----------------------------------------------------------------------------------------------
def test_classifier_recognises_known_clips(edge_bundle):
    from edge import Classifier

    c = Classifier(edge_bundle, num_threads=1)
    for path, label in ((YES_CLIP, "yes"), (NO_CLIP, "no"), (tiny_bundle.clips_for("_silence_")[0], "_silence_")):
        result = c.classify(clip(path), 16000)
        assert result[0][0] == label, (path, result)
        assert [s for _, s in result] == sorted((s for _, s in result), reverse=True)
        assert sorted(lab for lab, _ in result) == sorted(c.labels)
    x = clip(YES_CLIP)
    np.testing.assert_array_equal(c.scores(x, 16000), c.scores(x.astype(np.float32) / 32768, 16000))
    x48 = resample(x.astype(np.float32) / 32768, 16000, 48000)
    assert c.classify(x48, 48000)[0][0] == "yes"                     # resampled to the model rate
    stereo = np.stack([x, x], axis=1)
    np.testing.assert_array_equal(c.scores(stereo, 16000), c.scores(x, 16000))
    assert check_source_rate(8000, 16000, upsample=True) == 8000    # a clip classifier resamples 8 kHz up
    assert len(c.classify(x[::2], 8000)) == len(c.labels)


def test_first_window_equals_classifier_on_the_same_second(edge_bundle, seed_bundle):
    from edge import Classifier

    for bundle in (edge_bundle, seed_bundle):
        x = clip(YES_CLIP)
        det = detector(bundle, smooth=1, num_threads=1)
        windows = det.push_windows(np.concatenate([x, np.zeros(100, np.int16)]))
        assert windows[0].time == pytest.approx(0.992)
        np.testing.assert_array_equal(windows[0].raw, Classifier(bundle, num_threads=1).scores(x, 16000))


def test_seed_profile_streams_identically_for_any_chunking(seed_bundle):
    x = word_stream([YES_CLIP, NO_CLIP], pad=0.5)
    runs = []
    for size in (160, 4000):
        det = detector(seed_bundle, hop=0.25, threshold=0.0, num_threads=1)
        out = [w for i in range(0, x.size, size) for w in det.push_windows(x[i:i + size])]
        runs.append([(w.time, w.scores.tolist(), [e.label for e in w.events]) for w in out])
    assert runs[0] == runs[1] and len(runs[0]) > 5


# -- StreamingDetector ---------------------------------------------------------------------------------------
def test_detector_finds_words_at_the_right_time(edge_bundle):
    x = word_stream([YES_CLIP, NO_CLIP], pad=1.0)
    det = detector(edge_bundle, threshold=0.8, min_gap=2.0, num_threads=1)
    events = det.push(x)
    assert [e.label for e in events] == ["yes", "no"]
    assert 1.0 < events[0].time <= 3.0 + 0.05          # yes spans 1-2 s; fired by a window ending after it
    assert 3.0 < events[1].time <= 5.0 + 0.05          # no spans 3-4 s
    assert det.time == pytest.approx(x.size / 16000)
    st = det.stats()
    assert st["windows"] == 1 + (x.size - 15872) // 1600
    assert st["latency_ms_p50"] >= st["invoke_ms_p50"] > 0


def test_background_labels_never_fire_and_debounce_holds(edge_bundle):
    x = word_stream([YES_CLIP, YES_CLIP, NO_CLIP], pad=0.3)
    det = detector(edge_bundle, threshold=0.0, smooth=1, min_gap=0.75, num_threads=1)
    events = det.push(x)
    assert events and "_silence_" not in {e.label for e in events}
    for label in ("yes", "no"):
        times = [e.time for e in events if e.label == label]
        assert len(times) >= 2 and min(np.diff(times)) >= 0.75 - 1e-9
    # threshold 0 and min_gap 0: every window reports every foreground label
    det = detector(edge_bundle, threshold=0.0, smooth=1, min_gap=0.0, num_threads=1)
    windows = det.push_windows(x)
    assert all(sorted(e.label for e in w.events) == ["no", "yes"] for w in windows)


def test_a_word_held_in_the_window_fires_once_until_its_score_falls(edge_bundle):
    from edge.detector import REARM_FRACTION

    x = word_stream([YES_CLIP, YES_CLIP, NO_CLIP], pad=0.3)
    det = detector(edge_bundle, threshold=0.5, smooth=1, min_gap=0.0, num_threads=1)
    windows = det.push_windows(x)
    for label in ("yes", "no"):
        li = det.labels.index(label)
        fired = [i for i, w in enumerate(windows) if any(e.label == label for e in w.events)]
        for a, b in zip(fired, fired[1:]):   # between two events the score dipped below the re-arm level
            assert min(w.raw[li] for w in windows[a + 1:b + 1]) < 0.5 * REARM_FRACTION
        above = sum(1 for w in windows if w.raw[li] >= 0.5)
        assert 1 <= len(fired) < above   # without hysteresis (min_gap 0) every window above 0.5 would fire


def test_smoothing_is_the_mean_of_recent_windows(edge_bundle):
    x = word_stream([YES_CLIP, NO_CLIP], pad=0.5)
    raw = [w.raw for w in detector(edge_bundle, smooth=1).push_windows(x)]
    sm = [w.scores for w in detector(edge_bundle, smooth=4).push_windows(x)]
    for i in range(len(raw)):
        np.testing.assert_allclose(sm[i], np.mean(raw[max(0, i - 3):i + 1], axis=0), rtol=0, atol=1e-12)


def test_skip_restarts_windows_after_a_gap(edge_bundle):
    x = word_stream([YES_CLIP], pad=0.5)
    det = detector(edge_bundle, num_threads=1)
    first = det.push_windows(x[:20000])
    det.skip(16000 * 7)                                    # 7 s lost
    after = det.push_windows(x)
    assert first[-1].time < 1.25
    assert after[0].time == pytest.approx(20000 / 16000 + 7 + 0.992)   # a full fresh window after the gap
    assert np.allclose(np.diff([w.time for w in after]), 0.1)


def test_hop_rounds_to_whole_frames_and_settings_are_checked(edge_bundle):
    assert detector(edge_bundle, hop=0.123).hop_seconds == pytest.approx(0.12)
    for kwargs, match in (({"hop": 0}, "^hop 0 must be > 0 s"), ({"threshold": 1.5}, "^threshold 1.5 must be"),
                          ({"smooth": 0}, "^smooth 0 must be"), ({"min_gap": -1}, "^min_gap -1 must be >= 0")):
        with pytest.raises(AuricleError, match=match) as caught:   # the setting, not a command's flag
            detector(edge_bundle, **kwargs)
        assert "--" not in str(caught.value)
    with pytest.raises(AudioError, match="needs 16000 Hz"):
        detector(edge_bundle, sample_rate=11025)


def test_file_and_array_sources_match_at_48k(edge_bundle, tmp_path):
    """The resampling path gives the same events from a 48 kHz file and array, chunked any way."""
    import soundfile as sf

    from edge.run import run_source

    x48 = to_int16(resample(word_stream([YES_CLIP, NO_CLIP]).astype(np.float32) / 32768, 16000, 48000))
    wav = tmp_path / "s48.wav"
    sf.write(wav, x48, 48000, subtype="PCM_16")
    results = []
    for size in (160, 1024, 4000):
        for src in (FileSource(wav, chunk_size=size), ArraySource(x48, 48000, chunk_size=size)):
            det = detector(edge_bundle, sample_rate=48000, threshold=0.8, min_gap=2.0, num_threads=1)
            wins: list = []
            run_source(src, det, on_window=lambda w, s, acc=wins: acc.append((w.time, w.scores.tolist())))
            results.append(wins)
    assert all(r == results[0] for r in results)
    det = detector(edge_bundle, sample_rate=48000, threshold=0.8, min_gap=2.0)
    assert [e.label for e in det.push(x48)] == ["yes", "no"]


# -- backends and Coral ----------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_backend_falls_back_to_tensorflow_lite(edge_bundle, monkeypatch):
    from edge import Classifier
    from edge.interpreter import import_backend

    for name in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, name, None)      # import of these now fails
    assert import_backend()[2] == "tensorflow.lite"
    c = Classifier(edge_bundle)
    assert c.backend == "tensorflow.lite"
    assert c.classify(clip(YES_CLIP), 16000)[0][0] == "yes"
    monkeypatch.setenv("AURICLE_TFLITE_BACKEND", "nope")
    with pytest.raises(AuricleError, match="AURICLE_TFLITE_BACKEND"):
        import_backend()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # litert's Delegate.__del__
def test_coral_needs_an_edgetpu_model_then_the_delegate(edge_bundle, tmp_path):
    from edge import Classifier

    with pytest.raises(BundleError, match="edgetpu_compiler"):
        Classifier(edge_bundle, coral=True)
    fake = tiny_bundle.add_fake_edgetpu_model(tiny_bundle.copy_bundle(edge_bundle, tmp_path / "tpu"))
    with pytest.raises(AuricleError, match="libedgetpu"):
        Classifier(fake, coral=True)


# -- event scoring ----------------------------------------------------------------------------------------------
def test_demo_scoring_rule():
    from edge import Event
    from edge.scoring import EARLY, LATE, TruthWord, score_events

    truth = [TruthWord(1.0, 1.5, "yes"), TruthWord(4.0, 4.6, "no"), TruthWord(8.0, 8.5, "yes"),
             TruthWord(12.0, 12.4, "_silence_")]

    def ev(t, label):
        return Event(time=t, label=label, score=0.9, window=0)

    events = [ev(1.0 - EARLY, "yes"), ev(1.9, "yes"),          # first hits at the early edge, second is extra
              ev(4.6 + LATE + 0.01, "no"),                      # just too late: false alarm, and "no" is missed
              ev(8.5 + LATE, "yes"), ev(20.0, "no")]
    s = score_events(events, truth, duration=60.0, ignore=["_silence_"])
    assert [(e.time, w.label) for e, w in s.hits] == [(0.75, "yes"), (9.5, "yes")]
    assert [w.label for w in s.misses] == ["no"]
    assert [e.time for e in s.false_alarms] == [1.9, 4.6 + LATE + 0.01, 20.0]
    d = s.to_dict()
    assert d["false_alarms_per_minute"] == 3.0
    assert d["timing_error_max_abs"] == 1.0 and d["timing_error_mean"] == pytest.approx((-0.75 + 1.0) / 2)


def test_read_truth(tmp_path):
    from edge.scoring import read_truth

    p = tmp_path / "t.csv"
    p.write_text("start,end,label\n2.0,2.5,no\n\n0.5,1.0,yes\n# note\n")
    assert [(w.start, w.label) for w in read_truth(p)] == [(0.5, "yes"), (2.0, "no")]
    p.write_text("0.5,oops,yes\n")
    with pytest.raises(AuricleError, match="seconds"):
        read_truth(p)
    with pytest.raises(AuricleError, match="does not exist"):
        read_truth(tmp_path / "missing.csv")


def test_read_audio_and_file_errors(tmp_path):
    import soundfile as sf

    x = clip(YES_CLIP)
    stereo = tmp_path / "st.wav"
    sf.write(stereo, np.stack([x, x], 1), 16000, subtype="PCM_16")
    y, rate = read_audio(stereo)
    assert rate == 16000 and np.array_equal(y, x.astype(np.float32) / 32768)
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio\n")
    with pytest.raises(AudioError, match="cannot decode"):
        FileSource(bad)
    with pytest.raises(AudioError, match="no such file"):
        FileSource(tmp_path / "missing.wav")


# -- missing optional dependencies -------------------------------------------------------------------------
def test_a_missing_optional_dependency_is_one_line_naming_its_extra(monkeypatch, capsys):
    from edge.errors import run_cli

    def needs_keras(argv):
        import keras  # noqa: F401
        return 0

    monkeypatch.setitem(sys.modules, "keras", None)       # import keras -> ModuleNotFoundError(name="keras")
    with pytest.raises(SystemExit) as e:
        run_cli(needs_keras, [])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "keras is not installed" in err[0] and "pip install -e '.[train]'" in err[0], err

    def has_a_bug(argv):
        import auricle_no_such_module  # noqa: F401
        return 0

    with pytest.raises(ModuleNotFoundError):              # not one of ours: a bug keeps its traceback
        run_cli(has_a_bug, [])

    def version_mismatch(argv):
        import soundfile.auricle_no_such_submodule  # noqa: F401
        return 0

    with pytest.raises(ModuleNotFoundError):              # the package is there: not "install it"
        run_cli(version_mismatch, [])


# -- C-level stderr capture ------------------------------------------------------------------------------
CAPTURE_RACE = textwrap.dedent("""
    import os, threading
    from edge.cstreams import captured_c_stderr
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    def a():
        with captured_c_stderr():
            a_in.set()
            b_in.wait(1.0)          # without a lock, b enters here and saves a's file as "stderr"
        a_out.set()
    def b():
        a_in.wait()
        with captured_c_stderr():
            b_in.set()
            a_out.wait(1.0)
    ts = [threading.Thread(target=f) for f in (a, b)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    os.write(2, b"fd 2 is the real stderr again\\n")
""")


def test_c_stderr_captures_in_two_threads_leave_fd_2_as_it_was():
    env = {k: v for k, v in os.environ.items() if k != "AURICLE_DEBUG"}      # debug lets everything through
    r = subprocess.run([PY, "-c", CAPTURE_RACE], capture_output=True, text=True, cwd=REPO, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert "fd 2 is the real stderr again" in r.stderr


# -- soak --------------------------------------------------------------------------------------------------------
SOAK = textwrap.dedent("""
    import json, sys
    from edge.detector import StreamingDetector
    from edge.settings import RuntimeOptions
    from edge.run import run_source
    from edge.sources import FileSource

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0

    det = StreamingDetector(sys.argv[1], runtime=RuntimeOptions(num_threads=1))
    marks = {}
    def on_event(ev, src):
        pass
    src = FileSource(sys.argv[2], chunk_size=4096)
    n = {"w": 0}
    def on_window(w, s):
        n["w"] += 1
        if n["w"] == 6000:          # after 10 minutes of audio: warmed up
            marks["warm"] = rss_mb()
    stats = run_source(src, det, on_event=on_event, on_window=on_window)
    marks["end"] = rss_mb()
    print(json.dumps({"audio": stats.audio_seconds, "wall": stats.wall_seconds, "windows": det.windows, **marks}))
""")


@pytest.mark.slow
def test_soak_two_hours_through_the_file_source_with_flat_memory(edge_bundle, tmp_path):
    import soundfile as sf

    hours = 2.0
    unit = word_stream([YES_CLIP, NO_CLIP, tiny_bundle.clips_for("yes")[3]], pad=2.0)   # ~9 s
    minute = np.resize(unit, 16000 * 60)
    wav = tmp_path / "soak.wav"
    with sf.SoundFile(wav, "w", samplerate=16000, channels=1, subtype="PCM_16") as fh:
        for _ in range(int(hours * 60)):
            fh.write(minute)
    r = subprocess.run([PY, "-c", SOAK, str(edge_bundle), str(wav)], capture_output=True, text=True, cwd=REPO,
                       timeout=900)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout.strip().splitlines()[-1])
    assert d["audio"] == pytest.approx(hours * 3600)
    assert d["windows"] == 1 + (int(hours * 3600 * 16000) - 15872) // 1600
    assert d["end"] - d["warm"] < 10.0, d
    os.unlink(wav)
