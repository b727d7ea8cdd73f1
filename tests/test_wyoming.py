"""``python -m edge.wyoming``: a real server process, real ``wyoming`` library clients, the sample stream.

The server runs the shipped bundle; a client streaming samples/speech_commands_stream.wav must get one
``detection`` per word that ``python -m edge.demo`` finds. Skips (with the reason) when the wyoming package
is missing; CI installs it.
"""
from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

wyoming = pytest.importorskip("wyoming", reason="the wyoming package is not installed (pip install -e "
                                                "'.[wyoming]')")
from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.client import AsyncClient  # noqa: E402
from wyoming.error import Error  # noqa: E402
from wyoming.info import Describe, Info  # noqa: E402
from wyoming.wake import Detect, Detection, NotDetected  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
STREAM = REPO / "samples" / "speech_commands_stream.wav"
RATE = 16000


def read_stream() -> np.ndarray:
    with wave.open(str(STREAM)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (RATE, 2, 1)
        return np.frombuffer(w.readframes(w.getnframes()), "<i2")


def encode(x: np.ndarray, width: int, channels: int) -> bytes:
    """float32 mono in [-1, 1) -> little-endian PCM of ``width`` bytes, the same signal on every channel."""
    x = np.repeat(x[:, None], channels, axis=1).reshape(-1)
    if width == 1:
        return np.clip(np.rint(x * 128 + 128), 0, 255).astype(np.uint8).tobytes()
    full = float(1 << (8 * width - 1))
    v = np.clip(np.rint(x.astype(np.float64) * full), -full, full - 1).astype(np.int64)
    return b"".join(int(s).to_bytes(width, "little", signed=True) for s in v) if width == 3 \
        else v.astype(f"<i{width}").tobytes()


def to_rate(x16: np.ndarray, rate: int) -> np.ndarray:
    """int16 at 16 kHz -> float32 at ``rate`` through numpy's FFT resampling (not the server's resampler)."""
    x = x16.astype(np.float64) / 32768.0
    n = int(round(x.size * rate / RATE))
    spec = np.fft.rfft(x)
    out = np.fft.irfft(np.concatenate([spec, np.zeros(n // 2 + 1 - spec.size)]), n) * (n / x.size)
    return out.astype(np.float32)


@pytest.fixture(scope="module")
def demo_events(demo_rows):
    return [(d["label"], d["time"]) for d in demo_rows if d["type"] == "event"]


@pytest.fixture(scope="module")
def server():
    p = subprocess.Popen([PY, "-m", "edge.wyoming", "--uri", "tcp://127.0.0.1:0"], cwd=REPO,
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    uri = None
    lines = []
    for line in p.stderr:
        lines.append(line)
        m = re.search(r"serving .* on (tcp://\S+)", line)
        if m:
            uri = m.group(1)
            break
    assert uri, "".join(lines)
    yield uri
    p.send_signal(signal.SIGTERM)
    rest = p.stderr.read()
    assert p.wait(30) == 0, rest
    assert "wyoming: stopped:" in rest and "Traceback" not in rest
    streams = int(re.search(r"stopped: \d+ connections \(\d+ refused: busy\), (\d+) streams", rest).group(1))
    assert streams > 0 and rest.count(": stream of ") == streams, rest     # no log line lost to a capture


async def read_until_info(client: AsyncClient) -> list:
    """Everything the server sends until the answer to a describe sent after the stream (a barrier)."""
    await client.write_event(Describe().event())
    got = []
    while True:
        ev = await asyncio.wait_for(client.read_event(), 60)
        assert ev is not None, "server closed the connection"
        if Info.is_type(ev.type):
            return got
        got.append(ev)


async def stream(uri: str, audio: bytes, *, rate: int = RATE, width: int = 2, channels: int = 1,
                 chunk_frames: int = 1024, before: list | None = None, timestamp: int = 0) -> list:
    """One stream: [events before], audio-start, chunks, audio-stop; returns the server's answers."""
    async with AsyncClient.from_uri(uri) as client:
        for ev in before or ():
            await client.write_event(ev.event())
        await client.write_event(AudioStart(rate=rate, width=width, channels=channels, timestamp=timestamp).event())
        step = chunk_frames * width * channels
        for i in range(0, len(audio), step):
            await client.write_event(AudioChunk(rate=rate, width=width, channels=channels,
                                                audio=audio[i:i + step]).event())
            await asyncio.sleep(0)               # let concurrent clients interleave
        await client.write_event(AudioStop().event())
        return await read_until_info(client)


def detections(events: list) -> list[tuple[str, int]]:
    return [(d.name, d.timestamp) for d in (Detection.from_event(e) for e in events if Detection.is_type(e.type))]


def test_describe_lists_the_bundle_labels_as_wake_words(server):
    async def run():
        async with AsyncClient.from_uri(server) as client:
            await client.write_event(Describe().event())
            return Info.from_event(await asyncio.wait_for(client.read_event(), 30))

    info = asyncio.run(run())
    (program,) = info.wake
    assert program.name == "kws_mobilenet_edge" and program.installed
    assert [m.name for m in program.models] == ["down", "go", "left", "no", "off", "on", "right", "stop", "up",
                                                "yes"]
    assert all(m.installed and m.phrase == m.name for m in program.models)


def test_labels_served_by_two_bundles_are_named_bundle_slash_label():
    from edge import load_bundle
    from edge.wyoming import build_info, wake_words

    a, b = (load_bundle(REPO / "firmware_assets" / name) for name in ("kws_mobilenet_edge", "kws_resnet18_edge"))
    words = wake_words([a, b])
    assert [w.name for w in words[:2]] == ["kws_mobilenet_edge/down", "kws_mobilenet_edge/go"]
    assert len(words) == 20 and len({w.name for w in words}) == 20
    info = build_info([a, b], words)
    assert [p.name for p in info.wake] == ["kws_mobilenet_edge", "kws_resnet18_edge"]
    assert [m.phrase for m in info.wake[1].models][:2] == ["down", "go"]
    assert [w.name for w in wake_words([a])][:2] == ["down", "go"]


def test_the_sample_stream_gets_a_detection_per_demo_event(server, demo_events):
    x = read_stream()
    got = asyncio.run(stream(server, x.tobytes(), timestamp=5000))
    assert detections(got) == [(label, 5000 + round(t * 1000)) for label, t in demo_events]
    assert not any(NotDetected.is_type(e.type) for e in got)


def test_two_clients_at_once_get_independent_results(server, demo_events):
    """16 kHz/16-bit mono, 48 kHz/24-bit stereo and silence, streamed concurrently on three connections."""
    x = read_stream()
    hi = encode(to_rate(x, 48000), 3, 2)
    quiet = np.zeros(RATE * 3, "<i2").tobytes()

    async def run():
        return await asyncio.gather(stream(server, x.tobytes()),
                                    stream(server, hi, rate=48000, width=3, channels=2, chunk_frames=3000),
                                    stream(server, quiet))

    plain, high, silent = asyncio.run(run())
    want = [label for label, _ in demo_events]
    assert [n for n, _ in detections(plain)] == want
    assert [n for n, _ in detections(high)] == want
    # the 48 kHz path is resampled, so a score near the threshold may cross it a few 0.1 s hops apart
    assert all(abs(a[1] - b[1]) <= 300 for a, b in zip(detections(plain), detections(high)))
    assert [e.type for e in silent] == ["not-detected"]


@pytest.mark.parametrize("width,channels", [(1, 1), (4, 2), (3, 1)])
def test_other_sample_widths_and_channel_counts(server, width, channels):
    x = read_stream()[:int(3.0 * RATE)]                   # "right" (ends 2.34 s) and the start of "up"
    got = asyncio.run(stream(server, encode(x.astype(np.float32) / 32768, width, channels), width=width,
                             channels=channels, chunk_frames=777))
    assert [n for n, _ in detections(got)] == ["right"]


def test_a_rate_below_the_model_rate_is_refused_with_an_error_event(server):
    async def run():
        async with AsyncClient.from_uri(server) as client:
            await client.write_event(AudioStart(rate=8000, width=2, channels=1).event())
            await client.write_event(AudioChunk(rate=8000, width=2, channels=1, audio=bytes(3200)).event())
            await client.write_event(AudioStop().event())
            return await read_until_info(client)      # the connection stays usable

    got = asyncio.run(run())
    assert [e.type for e in got] == ["error", "not-detected"]
    err = Error.from_event(got[0])
    assert err.code == "audio-format" and "8000 Hz" in err.text and "16000 Hz" in err.text


def test_detect_names_limit_what_is_reported(server):
    x = read_stream()[:int(8.0 * RATE)]                   # right, up, off, stop
    got = asyncio.run(stream(server, x.tobytes(), before=[Detect(names=["off", "nope"])]))
    assert [e.type for e in got if e.type != "detection"] == ["error"]
    assert "nope" in Error.from_event(got[0]).text
    assert [n for n, _ in detections(got)] == ["off"]


def one_line_error(args: list[str]) -> str:
    r = subprocess.run([PY, "-m", "edge.wyoming", *args], capture_output=True, text=True, cwd=REPO, timeout=120)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_bad_uri_and_port_in_use_are_one_line_and_exit_2():
    assert "--uri 'http://127.0.0.1:1': Only 'stdio://', 'unix://', or 'tcp://' are supported" in \
        one_line_error(["--uri", "http://127.0.0.1:1"])
    assert "--uri 'tcp://127.0.0.1'" in one_line_error(["--uri", "tcp://127.0.0.1"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = one_line_error(["--uri", f"tcp://127.0.0.1:{port}"])
    assert f"cannot serve on tcp://127.0.0.1:{port}" in line and "in use" in line
    assert "no/such/bundle" in one_line_error(["--bundle", "no/such/bundle"])


def test_missing_wyoming_package_is_one_line_naming_the_extra():
    code = ("import runpy, sys; sys.modules['wyoming'] = None; sys.argv = ['edge.wyoming']; "
            "runpy.run_module('edge.wyoming', run_name='__main__', alter_sys=True)")
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "needs the wyoming package" in lines[0] and ".[wyoming]" in lines[0]
