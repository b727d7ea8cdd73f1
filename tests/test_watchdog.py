"""edge.listen as a long-running service: the microphone stall watchdog, exit codes, --record that survives.

The stalled microphone is real PortAudio + ALSA: :class:`benchmarks.soak.FifoMic` defines, under a
temporary HOME, an ALSA ``file`` capture pcm whose input is a FIFO that this test writes to. A writer that
goes quiet while keeping the FIFO open is what PortAudio sees when a USB microphone is unplugged or a driver
wedges: its read blocks, no error, no audio. Every run uses the shipped default bundle (no TensorFlow).
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.soak import FifoMic
from edge.bundle import default_bundle_path
from edge.run import EXIT_DEVICE_STALLED
from edge.microphone import Watchdog

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
BUNDLE = default_bundle_path()
STARTUP_SLACK = 20.0      # python + numpy + LiteRT + PortAudio start on a loaded 2-core machine
TONE = (np.sin(np.arange(1600) * 0.05) * 3000).astype(np.int16)      # 0.1 s blocks

pytestmark = pytest.mark.skipif(not (BUNDLE / "manifest.json").is_file(), reason="shipped bundle missing")


class Listener:
    """``python -m edge.listen ARGS`` in the background; stderr lines are kept with their arrival time."""

    def __init__(self, args, *, home: Path | None = None, env: dict | None = None, preexec_fn=None):
        e = dict(os.environ)
        e.pop("AURICLE_BUNDLE", None)
        e.update(env or {})
        if home is not None:
            e["HOME"] = str(home)
        self.t0 = time.monotonic()
        self.p = subprocess.Popen([PY, "-m", "edge.listen", "--bundle", str(BUNDLE), *map(str, args)], cwd=REPO,
                                  env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  preexec_fn=preexec_fn)
        self.lines: list[tuple[float, str]] = []
        self._out: list[str] = []
        self._threads = [threading.Thread(target=self._read_err, daemon=True),
                         threading.Thread(target=lambda: self._out.extend(self.p.stdout), daemon=True)]
        for t in self._threads:
            t.start()

    def _read_err(self) -> None:
        for line in self.p.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait_for(self, text: str, timeout: float) -> float:
        """Arrival time of the first stderr line containing ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, line in list(self.lines):
                if text in line:
                    return t
            if self.p.poll() is not None and not self._threads[0].is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no stderr line with {text!r} within {timeout} s: {self.stderr}")

    def finish(self, timeout: float) -> int:
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise AssertionError(f"edge.listen did not exit within {timeout:.0f} s: {self.stderr}") from None
        for t in self._threads:
            t.join(10)
        return self.p.returncode

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def summary(self) -> dict:
        rows = [json.loads(line) for line in self._out if line.strip()]
        assert rows and rows[-1]["type"] == "summary", self._out
        return rows[-1]

    def line_time(self, text: str) -> float:
        return next(t for t, line in self.lines if text in line)


@pytest.fixture
def fifo_mic(tmp_path):
    mic = FifoMic(tmp_path / "mic", name="stallmic")
    yield mic
    mic.close()


def feed_in_background(mic: FifoMic, *plan) -> threading.Thread:
    """``plan``: seconds of audio to write at real time, seconds to stay quiet, seconds to write, ..."""
    def run():
        for i, seconds in enumerate(plan):
            if i % 2:
                time.sleep(seconds)
            else:
                mic.feed([TONE] * int(round(seconds * 10)))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


# -- the stall watchdog ----------------------------------------------------------------------------------
def test_a_stalled_microphone_is_reported_reopened_and_then_exits_with_the_documented_code(fifo_mic):
    wd = Watchdog(stall_timeout=1.0, max_restarts=2)
    run = Listener(["--device", "stallmic", "--json", "--stall-timeout", wd.stall_timeout,
                    "--max-restarts", wd.max_restarts], home=fifo_mic.home)
    run.wait_for("source: microphone 'stallmic'", STARTUP_SLACK)
    feed_in_background(fifo_mic, 1.0).join()         # 1 s of audio, then the writer goes quiet, FIFO held open
    quiet = fifo_mic.last_write
    code = run.finish(timeout=wd.give_up_seconds() + STARTUP_SLACK)
    assert code == EXIT_DEVICE_STALLED == 74, run.stderr
    assert "Traceback" not in run.stderr

    warned = run.line_time("warning: no audio from 'stallmic'")
    first_try = run.line_time("reopening 'stallmic' (try 1 of 2)")
    run.line_time("reopening 'stallmic' (try 2 of 2)")
    gave_up = run.line_time("exit code 74")
    # one warning line once the device has been silent for --stall-timeout, then the reopen tries, then the end
    assert wd.stall_timeout - 0.2 <= warned - quiet <= wd.stall_timeout + 3.0, (warned - quiet, run.stderr)
    assert warned < first_try < gave_up
    assert gave_up - quiet <= wd.give_up_seconds() + 4.0, (gave_up - quiet, wd.give_up_seconds())
    assert sum("warning: no audio" in line for _, line in run.lines) == 1
    error_lines = [line for _, line in run.lines if line.startswith("error:")]
    assert len(error_lines) == 1 and "2 reopen tries failed" in error_lines[0] and "arecord -l" in error_lines[0]

    s = run.summary()
    assert s["stopped_by"] == "device_stalled" and s["exit_code"] == 74 and "2 reopen tries" in s["error"]
    assert (s["stalls"], s["restarts"], s["reopen_failures"], s["abandoned_streams"]) == (1, 0, 2, 0)
    assert 0.9 <= s["audio_seconds"] <= 1.6 and s["stalled_seconds"] >= wd.stall_timeout


def test_a_microphone_that_comes_back_is_reopened_and_listening_goes_on(fifo_mic):
    run = Listener(["--device", "stallmic", "--json", "--stall-timeout", "1", "--max-restarts", "3",
                    "--duration", "8"], home=fifo_mic.home)
    run.wait_for("source: microphone 'stallmic'", STARTUP_SLACK)
    feed_in_background(fifo_mic, 1.0, 2.5, 30.0)     # audio, 2.5 s of silence, audio again
    code = run.finish(timeout=STARTUP_SLACK + 30)
    assert code == 0, run.stderr
    assert "Traceback" not in run.stderr
    run.line_time("warning: no audio from 'stallmic'")
    run.line_time("reopening 'stallmic' (try 1 of 3)")
    run.line_time("audio from 'stallmic' is back after")
    s = run.summary()
    assert s["stopped_by"] == "end" and s["exit_code"] == 0 and s["error"] is None
    assert (s["stalls"], s["restarts"], s["abandoned_streams"]) == (1, 1, 0)
    # the silence is a gap in the stream (event times stay wall-clock-like), not lost time
    assert 1.8 <= s["dropped_seconds"] <= 4.0 and s["audio_seconds"] == pytest.approx(8.0)
    assert s["windows"] >= 20


def test_sigterm_while_the_device_is_stalled_ends_cleanly(fifo_mic):
    """Watchdog off (--stall-timeout 0): the listener waits; SIGTERM must still end it, though PortAudio's
    thread is blocked in a read that never returns."""
    run = Listener(["--device", "stallmic", "--json", "--stall-timeout", "0"], home=fifo_mic.home)
    run.wait_for("source: microphone 'stallmic'", STARTUP_SLACK)
    feed_in_background(fifo_mic, 0.5).join()
    time.sleep(2.0)
    sent = time.monotonic()
    run.p.send_signal(signal.SIGTERM)
    code = run.finish(timeout=15)
    assert code == 0, run.stderr
    assert time.monotonic() - sent < 5.0
    s = run.summary()
    assert s["stopped_by"] == "signal" and s["stalls"] == 0 and s["abandoned_streams"] == 0
    assert "warning" not in run.stderr and "Traceback" not in run.stderr


CLOSE_STUCK = textwrap.dedent("""
    import json, signal, sys, time
    if sys.argv[1] == "no-wake":      # someone else owns the wake signal: the stream cannot be interrupted
        from edge import microphone
        signal.signal(microphone._WAKE_SIGNAL, lambda *a: None)
    from edge.microphone import Microphone, Watchdog

    mic = Microphone("stallmic", model_rate=16000, watchdog=Watchdog(stall_timeout=0, close_timeout=1.5),
                     log=lambda line: print(line, file=sys.stderr, flush=True))
    mic.start()
    deadline = time.monotonic() + 20
    while mic.delivered < 8000 and time.monotonic() < deadline:      # the 0.5 s that was written
        time.sleep(0.05)
    before = mic.delivered
    time.sleep(0.5)
    stuck = mic.delivered == before and mic._stream.active
    t = time.monotonic()
    mic.close()
    print(json.dumps({"stuck": stuck, "close_seconds": time.monotonic() - t, "abandoned": mic.abandoned_streams}),
          flush=True)
""")


@pytest.mark.parametrize("mode", ["wake", "no-wake"])
def test_closing_a_stream_stuck_in_a_blocking_read_does_not_hang(fifo_mic, mode):
    """abort() on a helper thread, the blocked read interrupted; failing that, the stream is left behind after
    close_timeout and the process still exits (PortAudio's exit handler would wait for it forever)."""
    fifo_mic.write(np.tile(TONE, 5))
    t0 = time.monotonic()
    r = subprocess.run([PY, "-c", CLOSE_STUCK, mode], capture_output=True, text=True, cwd=REPO, timeout=60,
                       env=dict(os.environ, HOME=str(fifo_mic.home)))
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout.strip().splitlines()[-1])
    assert d["stuck"], d                                  # really blocked in the read before close()
    if mode == "wake":
        assert d["close_seconds"] < 1.4 and d["abandoned"] == 0, d
    else:
        assert 1.4 <= d["close_seconds"] < 3.0 and d["abandoned"] == 1, d
        assert "did not close within 1.5 s" in r.stderr
    assert time.monotonic() - t0 < 40                      # and the process exited


def test_a_device_faster_than_real_time_is_reported(fifo_mic):
    """3x real time for three 2 s windows in a row (one fast window is a device catching up: not reported)."""
    run = Listener(["--device", "stallmic", "--json", "--duration", "30"], home=fifo_mic.home)
    run.wait_for("source: microphone 'stallmic'", STARTUP_SLACK)
    stop = threading.Event()
    threading.Thread(target=fifo_mic.feed, args=([TONE] * 600,), kwargs={"speed": 3.0, "stop": stop},
                     daemon=True).start()
    try:
        code = run.finish(timeout=STARTUP_SLACK + 20)
    finally:
        stop.set()
    assert code == 0, run.stderr
    run.line_time("warning: 'stallmic' delivers audio")
    s = run.summary()
    assert s["fast_clock_windows"] >= 3 and s["capture_rate_max"] > 1.5 and s["stalls"] == 0
    assert s["capture_rate"] > 1.5


def test_watchdog_options_are_checked():
    r = subprocess.run([PY, "-m", "edge.listen", "--stall-timeout", "-1"], capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    assert r.returncode == 2 and "--stall-timeout" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([PY, "-m", "edge.listen", "--max-restarts", "two"], capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    assert r.returncode == 2 and "--max-restarts" in r.stderr
    r = subprocess.run([PY, "-m", "edge.listen", "--help"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert "74 = the microphone stopped delivering audio" in " ".join(r.stdout.split())
    assert "--stall-timeout" in r.stdout and "--max-restarts" in r.stdout


# -- --record survives a full disk or a vanished folder ---------------------------------------------------------
def long_wav(tmp_path: Path, seconds: float = 20.0) -> Path:
    import soundfile as sf

    x = np.tile(TONE, int(seconds * 10))
    path = tmp_path / "long.wav"
    sf.write(path, x, 16000, subtype="PCM_16")
    return path


def _limit_file_size(limit: int):
    def apply():
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))    # Python ignores SIGXFSZ: writes get EFBIG
    return apply


def check_recording_stopped(run: Listener, code: int, audio_seconds: float) -> dict:
    assert code == 0, run.stderr
    assert "Traceback" not in run.stderr
    stopped = [line for _, line in run.lines if line.startswith("recording stopped:")]
    assert len(stopped) == 1 and "listening goes on" in stopped[0], run.stderr
    s = run.summary()
    assert s["record_error"] and s["stopped_by"] == "end" and s["audio_seconds"] == pytest.approx(audio_seconds)
    assert "recorded:" not in run.stderr
    return s


def test_record_stops_with_one_line_when_the_disk_is_full_and_listening_goes_on(tmp_path):
    wav = long_wav(tmp_path)
    rec = tmp_path / "rec"
    run = Listener(["--file", wav, "--json", "--record", rec], preexec_fn=_limit_file_size(64_000))
    s = check_recording_stopped(run, run.finish(timeout=60), 20.0)
    assert "File too large" in s["record_error"]
    import soundfile as sf
    (kept,) = rec.glob("*.wav")
    assert 1.0 < sf.info(str(kept)).duration <= 2.0          # what fitted is kept, with a valid header


class _ShellListener(Listener):
    """A Listener whose command is ``unshare -rm sh -c CMD`` (a private mount namespace)."""

    def __init__(self, cmd: str):  # noqa: D107 - same reading threads, another command
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(["unshare", "-rm", "sh", "-c", cmd], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.lines, self._out = [], []
        self._threads = [threading.Thread(target=self._read_err, daemon=True),
                         threading.Thread(target=lambda: self._out.extend(self.p.stdout), daemon=True)]
        for t in self._threads:
            t.start()


def test_record_on_a_really_full_filesystem(tmp_path):
    """The same on a 96 KiB tmpfs (ENOSPC), where user namespaces allow mounting one."""
    unshare = shutil.which("unshare")
    probe = subprocess.run([unshare or "unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=96k none /mnt"],
                           capture_output=True) if unshare else None
    if probe is None or probe.returncode != 0:
        pytest.skip("cannot mount a tmpfs in a user namespace here")
    wav = long_wav(tmp_path)
    rec = tmp_path / "small"
    rec.mkdir()
    q = shlex.quote
    run = _ShellListener(f"mount -t tmpfs -o size=96k none {q(str(rec))} && exec {q(PY)} -m edge.listen "
                         f"--bundle {q(str(BUNDLE))} --file {q(str(wav))} --json --record {q(str(rec))}")
    s = check_recording_stopped(run, run.finish(timeout=60), 20.0)
    assert "No space left on device" in s["record_error"]


def test_record_stops_when_its_folder_vanishes_and_listening_goes_on(tmp_path):
    wav = long_wav(tmp_path, seconds=5.0)
    rec = tmp_path / "rec"
    run = Listener(["--file", wav, "--realtime", "--json", "--record", rec])
    run.wait_for("source: file", STARTUP_SLACK)
    time.sleep(1.5)
    shutil.rmtree(rec)
    s = check_recording_stopped(run, run.finish(timeout=60), 5.0)
    assert "was deleted" in s["record_error"]


def test_wav_recorder_never_raises_after_it_started(tmp_path):
    from edge.wavio import WavRecorder

    said = []
    rec = WavRecorder(tmp_path / "r", sample_rate=16000, tag="x", log=said.append, check_seconds=0.5)
    rec.write(np.zeros(16000, np.float32))
    shutil.rmtree(tmp_path / "r")
    rec.write(np.zeros(16000, np.float32))
    rec.write_silence(50_000)
    rec.write(np.zeros(16000, np.float32))
    rec.close()
    assert rec.error and "was deleted" in rec.error and not rec.recording
    assert len(said) == 1 and said[0].startswith("recording stopped:")
