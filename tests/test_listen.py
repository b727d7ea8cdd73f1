"""python -m edge.listen / edge.demo end to end, and capture through real sounddevice + PortAudio + ALSA.

No sound card is needed: each test writes an ``.asoundrc`` under a temporary HOME that defines

* ``<name>_file``: ``type file`` with ``slave.pcm "null"`` and ``infile`` pointing at raw S16_LE mono audio.
  The null slave delivers audio as fast as it is read (no real-time pacing), so these tests never assume
  pacing: a slow reader simply sees the capture queue drop the oldest audio.
* ``<name>``: a ``plug`` pcm in front of it, so the runtime can open any rate and format. With a rate
  converter that does not exist, the plug can only open its slave's own rate: a "USB mic that only does
  48 kHz" (or 12345 Hz, which is too low for the model).

Sample-exact capture needs the runtime to open the device as int16 (a float conversion plugin in front of
the file plugin reads ahead and skips audio); the runtime does that.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import tiny_bundle  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
YES_CLIP = tiny_bundle.clips_for("yes")[1]
NO_CLIP = tiny_bundle.clips_for("no")[2]
DET = {"threshold": 0.6, "smooth": 3, "min_gap": 1.0, "num_threads": 1}


@pytest.fixture(scope="session")
def edge_bundle(tmp_path_factory):
    return tiny_bundle.cached_bundle(tmp_path_factory, "edge", train_clips_dir=tiny_bundle.DATA_DIR)


def word_stream(words, *, pad: float = 1.0, sr: int = 16000, noise: float = 30.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gap = np.zeros(int(pad * sr), np.int16)
    parts = [gap]
    for w in words:
        parts += [tiny_bundle.load_clip(w), gap]
    x = np.concatenate(parts).astype(np.float64) + rng.normal(0, noise, sum(p.size for p in parts))
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def to_48k(x16: np.ndarray) -> np.ndarray:
    from edge.resample import resample

    y = resample(x16.astype(np.float32) / 32768, 16000, 48000)
    return np.clip(np.rint(y.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)


def write_wav(path: Path, x: np.ndarray, rate: int) -> Path:
    import soundfile as sf

    sf.write(path, x, rate, subtype="PCM_16")
    return path


def alsa_home(tmp_path: Path, devices: dict[str, tuple[np.ndarray, int, bool]], *, tail: float = 30.0) -> Path:
    """HOME with an .asoundrc: for each name, raw audio (int16, rate) and whether only that rate opens.

    ``tail`` seconds of silence follow the audio: after EOF the file plugin repeats its last block.
    """
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    conf = []
    for name, (x, rate, only_rate) in devices.items():
        raw = tmp_path / f"{name}.raw"
        np.concatenate([x.astype("<i2"), np.zeros(int(tail * rate), "<i2")]).tofile(raw)
        conf.append(textwrap.dedent(f"""
            pcm.{name}_file {{
              type file
              slave.pcm "null"
              file "/dev/null"
              infile "{raw}"
              format "raw"
            }}
            pcm.{name} {{
              type plug
              slave {{ pcm "{name}_file" format S16_LE rate {rate} channels 1 }}
              {'rate_converter "auricle_no_such_converter"' if only_rate else ''}
            }}
            """))
    (home / ".asoundrc").write_text("".join(conf))
    return home


def run(args, *, home: Path | None = None, env: dict | None = None, timeout: float = 120,
        module: str = "edge.listen") -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.pop("AURICLE_BUNDLE", None)
    if home is not None:
        e["HOME"] = str(home)
    e.update(env or {})
    return subprocess.run([PY, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=REPO, env=e,
                          timeout=timeout)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def one_line_error(r: subprocess.CompletedProcess) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1, r.stderr
    assert r.stdout == ""
    return lines[0]


# -- file runs ------------------------------------------------------------------------------------------------
def test_file_run_human_and_json_output(edge_bundle, tmp_path):
    wav = write_wav(tmp_path / "s.wav", word_stream([YES_CLIP, NO_CLIP]), 16000)
    r = run(["--bundle", edge_bundle, "--file", wav, "--threshold", "0.8", "--min-gap", "2"])
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.split()[2] != "end"]     # end lines: after each word
    assert [ln.split()[1] for ln in lines] == ["yes", "no"]
    t, label, score, word_from, start = lines[0].split()
    assert t.endswith("s") and 1.0 < float(t[:-1]) < 3.1 and 0.8 <= float(score) <= 1.0
    assert word_from == "from" and float(start[:-1]) == pytest.approx(float(t[:-1]) - 0.992, abs=0.01)
    ends = [ln.split() for ln in r.stdout.splitlines() if ln.split()[2] == "end"]
    assert [e[1] for e in ends] == ["yes", "no"] and ends[0][3].startswith(start[:-1] + "-")
    assert "listening: bundle tiny_edge" in r.stderr and "backend ai_edge_litert" in r.stderr
    assert "summary:" in r.stderr and "windows classified" in r.stderr and "real-time factor" in r.stderr

    r = run(["--bundle", edge_bundle, "--file", wav, "--json", "--all-scores", "--threshold", "0.8",
             "--min-gap", "2"])
    assert r.returncode == 0, r.stderr
    rows = json_lines(r.stdout)
    kinds = [d["type"] for d in rows]
    assert kinds[-1] == "summary" and kinds.count("event") == 2
    windows = [d for d in rows if d["type"] == "window"]
    summary = rows[-1]
    assert len(windows) == summary["windows"] == 1 + (5 * 16000 - 15872) // 1600
    assert set(windows[0]["scores"]) == {"yes", "no", "_silence_"}
    ev = [d for d in rows if d["type"] == "event"]
    assert [d["label"] for d in ev] == ["yes", "no"] and set(ev[0]["scores"]) == {"yes", "no", "_silence_"}
    for key in ("windows", "blocks_dropped", "latency_ms_p50", "latency_ms_p95", "rtf", "peak_rss_mb"):
        assert summary[key] is not None
    assert summary["blocks_dropped"] == 0 and summary["stopped_by"] == "end"
    assert summary["audio_seconds"] == pytest.approx(5.0)


def test_background_labels_are_not_reported(edge_bundle, tmp_path):
    wav = write_wav(tmp_path / "quiet.wav", word_stream([], pad=4.0), 16000)
    r = run(["--bundle", edge_bundle, "--file", wav, "--json", "--threshold", "0", "--min-gap", "0"])
    rows = json_lines(r.stdout)
    labels = {d["label"] for d in rows if d["type"] == "event"}
    assert labels == {"yes", "no"}      # threshold 0: every foreground label fires, background never does


def test_min_gap_defaults_to_the_bundles_tuned_value(edge_bundle, tmp_path):
    """Without --min-gap the manifest's detector.min_gap is used (it was once overridden by the CLI's 1.0)."""
    tuned = tiny_bundle.copy_bundle(edge_bundle, tmp_path / "tuned")
    m = tiny_bundle.read_manifest(tuned)
    m["detector"] = {"threshold": 0.0, "smooth": 1, "min_gap": 100.0}
    tiny_bundle.write_manifest(tuned, m)
    wav = write_wav(tmp_path / "quiet.wav", word_stream([], pad=4.0), 16000)   # 4 s: windows end 0.99-3.99 s

    def labels_fired(*extra):
        r = run(["--bundle", tuned, "--file", wav, "--json", *extra])
        assert r.returncode == 0, r.stderr
        return r.stderr, sorted(d["label"] for d in json_lines(r.stdout) if d["type"] == "event")

    # threshold 0 (no hysteresis): each foreground label fires once per min-gap, so the count shows the gap
    err, fired = labels_fired()
    assert "threshold 0, smooth 1, min-gap 100 s" in err
    assert fired == ["no", "yes"]                           # 100 s apart: once each in 4 s
    err, fired = labels_fired("--min-gap", "1")
    assert "min-gap 1 s" in err and fired == ["no"] * 4 + ["yes"] * 4   # at 0.99, 1.99, 2.99, 3.99 s: the flag wins
    # the alias, and the library default when the manifest has no tuned min_gap
    del m["detector"]["min_gap"]
    tiny_bundle.write_manifest(tuned, m)
    r = run(["--model", tuned, "--file", wav, "--json"])
    assert r.returncode == 0, r.stderr
    assert "min-gap 1 s" in r.stderr


def test_several_files_restart_the_clock(edge_bundle, tmp_path):
    a = write_wav(tmp_path / "a.wav", word_stream([YES_CLIP]), 16000)
    b = write_wav(tmp_path / "b.wav", word_stream([NO_CLIP]), 16000)
    r = run(["--bundle", edge_bundle, "--file", a, b, "--json", "--threshold", "0.8", "--min-gap", "2"])
    assert r.returncode == 0, r.stderr
    ev = [d for d in json_lines(r.stdout) if d["type"] == "event"]
    assert [(Path(d["source"]).name, d["label"]) for d in ev] == [("a.wav", "yes"), ("b.wav", "no")]
    assert ev[1]["time"] < 3.1


def test_record_writes_what_was_heard_and_replays_identically(edge_bundle, tmp_path):
    wav = write_wav(tmp_path / "s.wav", to_48k(word_stream([YES_CLIP, NO_CLIP])), 48000)
    rec = tmp_path / "rec"
    r1 = run(["--bundle", edge_bundle, "--file", wav, "--json", "--record", rec])
    assert r1.returncode == 0, r1.stderr
    (recorded,) = rec.glob("*.wav")
    assert "recorded:" in r1.stderr
    r2 = run(["--bundle", edge_bundle, "--file", recorded, "--json"])
    strip = [{k: v for k, v in d.items() if k != "source"} for d in json_lines(r1.stdout) if d["type"] == "event"]
    again = [{k: v for k, v in d.items() if k != "source"} for d in json_lines(r2.stdout) if d["type"] == "event"]
    assert strip and strip == again


IMPORT_CHECK = textwrap.dedent("""
    import json, runpy, sys
    out, argv = sys.argv[1], json.loads(sys.argv[2])
    sys.argv = ["edge.listen", *argv]
    code = None
    try:
        runpy.run_module("edge.listen", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "librosa", "tf_keras"))
    open(out, "w").write(json.dumps({"code": code, "heavy": heavy, "litert": "ai_edge_litert" in sys.modules}))
""")


def test_help_and_a_file_run_import_no_tensorflow_keras_or_librosa(edge_bundle, tmp_path):
    wav = write_wav(tmp_path / "s.wav", word_stream([YES_CLIP]), 16000)
    for argv in (["--help"], ["--bundle", str(edge_bundle), "--file", str(wav), "--json"]):
        out = tmp_path / "mods.json"
        r = subprocess.run([PY, "-c", IMPORT_CHECK, str(out), json.dumps(argv)], capture_output=True, text=True,
                           cwd=REPO, timeout=120)
        d = json.loads(out.read_text())
        assert d["code"] in (0, None), r.stderr
        assert d["heavy"] == [], d
    assert d["litert"]                      # the file run really ran a model


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_end_cleanly_with_a_summary(edge_bundle, tmp_path, sig):
    wav = write_wav(tmp_path / "long.wav", word_stream([YES_CLIP] * 8), 16000)
    p = subprocess.Popen([PY, "-m", "edge.listen", "--bundle", str(edge_bundle), "--file", str(wav), "--realtime",
                          "--json"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            line = p.stderr.readline()
            assert line, "listener exited early"
            if line.startswith("source:"):
                break
        time.sleep(1.6)
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    summary = json_lines(out)[-1]
    assert summary["type"] == "summary" and summary["stopped_by"] == "signal"
    assert summary["windows"] >= 1 and 1.0 < summary["audio_seconds"] < 10.0
    assert "Traceback" not in err


# -- microphone: real sounddevice + PortAudio + ALSA file device ----------------------------------------
MIC_RUN = textwrap.dedent("""
    import json, sys
    from edge.bundle import load_bundle
    from edge.detector import StreamingDetector
    from edge.microphone import Microphone
    from edge.run import run_source
    from edge.settings import DetectorSettings, RuntimeOptions

    bundle, device, duration, det_kwargs = sys.argv[1], sys.argv[2], float(sys.argv[3]), json.loads(sys.argv[4])
    bundle = load_bundle(bundle)
    threads = det_kwargs.pop("num_threads", None)
    result = {}
    for blocksize in (160, 1024, 4000):
        src = Microphone(device, model_rate=16000, blocksize=blocksize, max_queue_seconds=600)
        det = StreamingDetector(bundle, DetectorSettings.from_bundle(bundle, **det_kwargs),
                                RuntimeOptions(num_threads=threads), sample_rate=src.sample_rate)
        wins, evs = [], []
        stats = run_source(src, det, duration=duration,
                           on_window=lambda w, s: wins.append([w.time, w.scores.tolist()]),
                           on_event=lambda e, s: evs.append([e.time, e.label, e.score]))
        src.close()
        result[blocksize] = {"rate": src.sample_rate, "dtype": src.dtype, "gap": stats.dropped_seconds,
                             "windows": wins, "events": evs}
    print(json.dumps(result))
""")


def _library_run(bundle, source) -> dict:
    from edge.bundle import load_bundle
    from edge.detector import StreamingDetector
    from edge.run import run_source
    from edge.settings import DetectorSettings, RuntimeOptions

    b = load_bundle(bundle)
    settings = DetectorSettings.from_bundle(b, **{k: v for k, v in DET.items() if k != "num_threads"})
    det = StreamingDetector(b, settings, RuntimeOptions(num_threads=DET["num_threads"]), sample_rate=source.sample_rate)
    wins, evs = [], []
    run_source(source, det, on_window=lambda w, s: wins.append([w.time, w.scores.tolist()]),
               on_event=lambda e, s: evs.append([e.time, e.label, e.score]))
    return json.loads(json.dumps({"windows": wins, "events": evs}))


@pytest.mark.parametrize("rate", [16000, 48000])
def test_file_array_and_microphone_give_identical_events_and_scores(edge_bundle, tmp_path, rate):
    from edge.sources import ArraySource, FileSource

    x = word_stream([YES_CLIP, NO_CLIP, YES_CLIP], pad=0.7)
    if rate == 48000:
        x = to_48k(x)
    wav = write_wav(tmp_path / "s.wav", x, rate)
    home = alsa_home(tmp_path, {"testmic": (x, rate, rate == 48000)})
    e = dict(os.environ, HOME=str(home))
    r = subprocess.run([PY, "-c", MIC_RUN, str(edge_bundle), "testmic", str(x.size / rate), json.dumps(DET)],
                       capture_output=True, text=True, cwd=REPO, env=e, timeout=180)
    assert r.returncode == 0, r.stderr
    mic = json.loads(r.stdout.strip().splitlines()[-1])

    reference = _library_run(edge_bundle, FileSource(wav, chunk_size=4000))
    assert reference["events"][0][1] == "yes" and "no" in {ev[1] for ev in reference["events"]}
    full = 1 + (x.size * 16000 // rate - 15872) // 1600
    assert full - 1 <= len(reference["windows"]) <= full     # the resampler holds back a few samples
    for size in (160, 1024, 4000):
        assert _library_run(edge_bundle, FileSource(wav, chunk_size=size)) == reference, f"file {size}"
        assert _library_run(edge_bundle, ArraySource(x, rate, chunk_size=size)) == reference, f"array {size}"
        got = mic[str(size)]
        assert got["rate"] == rate and got["dtype"] == "int16" and got["gap"] == 0
        assert {"windows": got["windows"], "events": got["events"]} == reference, f"microphone {size}"


def test_listen_on_an_alsa_device_hears_the_right_words(edge_bundle, tmp_path):
    """Unpaced capture: the queue drops the oldest audio, so only assert what survives is labelled right."""
    yes = np.tile(word_stream([YES_CLIP], pad=1.0), 20)           # 60 s of yes every 3 s
    no48 = to_48k(np.tile(word_stream([NO_CLIP], pad=1.0, seed=1), 20))
    home = alsa_home(tmp_path, {"yesmic": (yes, 16000, False), "usb48": (no48, 48000, True)})

    r = run(["--list-devices"], home=home)
    assert r.returncode == 0 and "yesmic" in r.stdout and "usb48" in r.stdout

    for device, word, opened in (("yesmic", "yes", "at 16000 Hz"), ("usb48", "no", "at 48000 Hz")):
        r = run(["--bundle", edge_bundle, "--device", device, "--duration", "60", "--json", "--threshold", "0.8",
                 "--min-gap", "2"], home=home)
        assert r.returncode == 0, r.stderr
        rows = json_lines(r.stdout)
        events = [d for d in rows if d["type"] == "event"]
        labels = [d["label"] for d in events]   # the tiny test model is not perfect on dropped audio:
        assert labels and labels.count(word) >= 0.75 * len(labels), rows   # mostly the device's own word
        assert all(d["source"] == device for d in events)
        assert rows[-1]["type"] == "summary" and rows[-1]["audio_seconds"] == pytest.approx(60.0)
        assert f"microphone '{device}'" in r.stderr and opened in r.stderr
        if device == "usb48":
            assert "resampling 48000 -> 16000 Hz" in r.stderr


QUEUE_RUN = textwrap.dedent("""
    import json, sys, time
    from edge.microphone import Microphone

    src = Microphone(sys.argv[1], model_rate=16000, blocksize=512, max_queue_seconds=0.5)
    src.start()
    time.sleep(0.5)                     # a stalled consumer: the unpaced device overfills the queue
    queued, blocks, dropped = src._queued, src.blocks, src.dropped_blocks
    first = next(src.chunks())
    src.close()
    print(json.dumps({"queued": queued, "capacity": src._capacity, "blocks": blocks, "dropped": dropped,
                      "first_start": first.start, "first_len": int(first.samples.size)}))
""")


def test_capture_queue_drops_the_oldest_audio_and_stays_bounded(tmp_path):
    x = (np.arange(16000 * 20) % 2000 - 1000).astype(np.int16)
    home = alsa_home(tmp_path, {"fastmic": (x, 16000, False)})
    r = subprocess.run([PY, "-c", QUEUE_RUN, "fastmic"], capture_output=True, text=True, cwd=REPO,
                       env=dict(os.environ, HOME=str(home)), timeout=60)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout.strip().splitlines()[-1])
    assert d["capacity"] == 8000 and d["dropped"] > 0
    assert d["queued"] <= d["capacity"]                               # bounded, whatever the producer does
    assert d["first_start"] > 0 and d["first_len"] <= d["capacity"] + 512   # the newest run, oldest dropped


# -- errors: one line, the fix, exit 2 ----------------------------------------------------------------------
def test_error_portaudio_missing(edge_bundle):
    code = ("import ctypes.util as u, runpy, sys; f = u.find_library; "
            "u.find_library = lambda n: None if 'portaudio' in n else f(n); "
            f"sys.argv = ['edge.listen', '--bundle', {str(edge_bundle)!r}]; "
            "runpy.run_module('edge.listen', run_name='__main__', alter_sys=True)")
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    line = one_line_error(r)
    assert "PortAudio" in line and "apt install libportaudio2" in line


def test_error_no_input_device_with_default_bundle(edge_bundle, tmp_path):
    empty = tmp_path / "empty_home"
    empty.mkdir()
    # no arguments at all: the default bundle ($AURICLE_BUNDLE here) and the default microphone
    line = one_line_error(run([], home=empty, env={"AURICLE_BUNDLE": str(edge_bundle)}))
    assert "no audio input device" in line and "--file" in line


def test_error_unknown_device_and_unsupported_rate(edge_bundle, tmp_path):
    home = alsa_home(tmp_path, {"lowrate": (np.zeros(12345, np.int16), 12345, True)}, tail=1.0)
    line = one_line_error(run(["--bundle", edge_bundle, "--device", "nosuchmic"], home=home))
    assert "unknown --device 'nosuchmic'" in line and "--list-devices" in line
    line = one_line_error(run(["--bundle", edge_bundle, "--device", "lowrate"], home=home))
    assert "'lowrate' supports none of" in line and "16000 Hz" in line and "--device" in line


def test_error_bundle_missing_corrupt_or_without_feature_settings(edge_bundle, tmp_path):
    wav = write_wav(tmp_path / "s.wav", word_stream([YES_CLIP]), 16000)
    line = one_line_error(run(["--file", wav], env={"AURICLE_BUNDLE": str(tmp_path / "nope")}))
    assert "does not exist" in line and "--bundle" in line
    line = one_line_error(run(["--bundle", tmp_path / "nope2", "--file", wav]))
    assert "does not exist" in line

    bad = tiny_bundle.copy_bundle(edge_bundle, tmp_path / "corrupt")
    with open(bad / "model_int8.tflite", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\xff\x00\xff")
    line = one_line_error(run(["--bundle", bad, "--file", wav]))
    assert "sha256" in line and "rebuild" in line

    nofeat = tiny_bundle.copy_bundle(edge_bundle, tmp_path / "nofeat")
    m = tiny_bundle.read_manifest(nofeat)
    del m["feature_config"]
    (nofeat / "manifest.json").write_text(json.dumps(m))
    line = one_line_error(run(["--bundle", nofeat, "--file", wav]))
    assert "feature" in line and "rebuild" in line


def test_error_coral_without_model_or_delegate(edge_bundle, tmp_path):
    wav = write_wav(tmp_path / "s.wav", word_stream([YES_CLIP]), 16000)
    line = one_line_error(run(["--bundle", edge_bundle, "--coral", "--file", wav]))
    assert "edgetpu" in line and "edgetpu_compiler" in line
    tpu = tiny_bundle.add_fake_edgetpu_model(tiny_bundle.copy_bundle(edge_bundle, tmp_path / "tpu"))
    line = one_line_error(run(["--bundle", tpu, "--coral", "--file", wav]))
    assert "libedgetpu.so.1" in line and "apt install" in line


def test_error_unreadable_file(edge_bundle, tmp_path):
    line = one_line_error(run(["--bundle", edge_bundle, "--file", tmp_path / "missing.wav"]))
    assert "missing.wav" in line and "no such file" in line
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n" * 20)
    line = one_line_error(run(["--bundle", edge_bundle, "--file", text]))
    assert "cannot decode" in line and "WAV" in line
    low = write_wav(tmp_path / "low.wav", np.zeros(8000, np.int16), 8000)
    line = one_line_error(run(["--bundle", edge_bundle, "--file", low]))
    assert "8000 Hz" in line and "needs 16000 Hz" in line


# -- demo ---------------------------------------------------------------------------------------------------------
def test_demo_scores_a_synthetic_stream(edge_bundle, tmp_path):
    words = [YES_CLIP, NO_CLIP, YES_CLIP, NO_CLIP]
    pad = 1.5
    x = word_stream(words, pad=pad)
    wav = write_wav(tmp_path / "stream.wav", x, 16000)
    rows = ["start,end,label"]
    for i, w in enumerate(words):
        start = pad + i * (1.0 + pad)
        rows.append(f"{start:.3f},{start + 1.0:.3f},{w.parent.name}")
    (tmp_path / "stream.csv").write_text("\n".join(rows) + "\n")

    r = run(["--stream", wav, "--bundle", edge_bundle, "--threshold", "0.8", "--min-gap", "2", "--json"],
            module="edge.demo")
    assert r.returncode == 0, r.stderr
    out = json_lines(r.stdout)
    score = out[-1]
    events = [d for d in out if d["type"] == "event"]
    assert score["type"] == "score" and score["truth_words"] == 4
    assert score["hits"] + score["misses"] == 4 and score["hits"] + score["false_alarms"] == len(events)
    assert score["hits"] >= 3 and score["false_alarms"] <= 1
    assert score["timing_error_max_abs"] <= 1.0

    r = run(["--stream", wav, "--bundle", edge_bundle, "--threshold", "0.8", "--min-gap", "2"], module="edge.demo")
    assert r.returncode == 0
    assert "hits " in r.stdout and "false alarms" in r.stdout and "rule: hit" in r.stdout

    line = one_line_error(run(["--stream", tmp_path / "nope.wav", "--bundle", edge_bundle], module="edge.demo"))
    assert "nope.wav" in line and "--stream" in line
    line = one_line_error(run(["--stream", wav, "--truth", tmp_path / "nope.csv", "--bundle", edge_bundle],
                              module="edge.demo"))
    assert "nope.csv" in line and "--truth" in line
