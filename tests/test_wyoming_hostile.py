"""``python -m edge.wyoming`` against hostile or broken clients on loopback: raw sockets that send what a
LAN attacker would (absurd lengths, half-sent events, forged log lines, too many connections), then a
normal ``wyoming`` client that must still get its words. The server runs with short timeouts so that every
test is bounded by a few seconds; its log goes to a file the tests read.
"""
from __future__ import annotations

import io
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("wyoming", reason="the wyoming package is not installed (pip install -e '.[wyoming]')")
from wyoming.audio import AudioChunk  # noqa: E402
from wyoming.event import read_event, write_event  # noqa: E402
from wyoming.wake import Detect  # noqa: E402

from test_wyoming import RATE, detections, encode, read_stream, stream, to_rate  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MAX_CLIENTS, IDLE, EVENT = 4, 3.0, 2.0


class Server:
    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "edge.wyoming", "--uri", "tcp://127.0.0.1:0",
                                      "--max-clients", str(MAX_CLIENTS), "--idle-timeout", str(IDLE),
                                      "--event-timeout", str(EVENT)], cwd=REPO, stdout=subprocess.DEVNULL,
                                     stderr=open(log, "w"))
        deadline = time.monotonic() + 60
        while not (m := re.search(r"serving .* on tcp://127\.0\.0\.1:(\d+)", self.text())):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.text()
            time.sleep(0.05)
        self.port = int(m.group(1))

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=EVENT + IDLE + 5)
        return s

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0, self.text()
        return self.text()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("wyoming") / "server.log")
    yield srv
    log = srv.stop()
    assert "Traceback" not in log and "never retrieved" not in log, log
    lines = log.splitlines()
    assert lines[-1].startswith("wyoming: stopped:"), log
    assert not any(line.startswith("wyoming: stopped:") for line in lines[:-1]), log     # none forged
    assert all(line.startswith("wyoming: ") for line in lines if line.strip()), log
    assert max(len(line) for line in lines) < 2100, max(lines, key=len)[:300]


def answers(sock: socket.socket, raw: bytes, since: float | None = None) -> tuple[list, float]:
    """Send ``raw``; every event the server sends until it closes, and the seconds from ``since`` (default:
    now) until it closed."""
    t0 = time.monotonic() if since is None else since
    sock.sendall(raw)
    got = []
    with sock.makefile("rb") as f:
        while (ev := read_event(f)) is not None:
            got.append(ev)
    return got, time.monotonic() - t0


def header(kind: str, data: dict | None = None, **fields) -> bytes:
    return (json.dumps({"type": kind, **({"data": data} if data else {}), **fields}) + "\n").encode()


CHUNK = {"rate": 16000, "width": 2, "channels": 1}


@pytest.mark.parametrize("raw,code,words", [
    (header("audio-chunk", CHUNK, payload_length=10 ** 12), "too-large", ["payload_length", "3 s of 16000 Hz"]),
    (header("audio-chunk", CHUNK, payload_length=3 * 32000 + 2), "too-large", ["96002 bytes"]),
    (header("describe", data_length=10 ** 9), "too-large", ["data_length"]),
    (b"{" + b" " * 70000 + b"\n", "too-large", ["header is longer"]),
    (b"not json\n", "bad-event", ["not JSON"]),
    (b"[1, 2]\n", "bad-event", ["'type'"]),
    (header("describe", data_length="ten"), "bad-event", ["not a byte count"]),
    (header("audio-start", {"rate": 16000}), "bad-event", ["malformed", "KeyError"]),
    (b"[" * 5000 + b"\n", "bad-event", ["header is not JSON"]),                  # nested too deep for json
    (header("describe", data_length=4000) + b"[" * 4000, "bad-event", ["data is not JSON"]),
])
def test_a_bad_event_gets_one_error_event_and_the_connection_closes(server, raw, code, words):
    with server.connect() as sock:
        got, seconds = answers(sock, raw)
    errors = [e for e in got if e.type == "error"]
    assert len(errors) == 1 and errors[0].data["code"] == code, got
    assert all(w in errors[0].data["text"] for w in words), errors[0].data["text"]
    assert seconds < EVENT + 1, seconds


def test_odd_rates_and_formats_are_refused_and_the_connection_goes_on(server):
    with server.connect() as sock:
        got, _ = answers(sock, header("audio-start", {**CHUNK, "rate": 44101}) + header("audio-stop") +
                         header("audio-start", {**CHUNK, "rate": "x\n"}) + header("audio-stop") +
                         header("describe", data_length=3) + b'{}\n' + b"[\n")
    assert [e.type for e in got] == ["error", "not-detected", "error", "not-detected", "info", "error"]
    assert got[0].data["code"] == "audio-format" and "44101 Hz is not supported" in got[0].data["text"]
    assert "44100" in got[0].data["text"]
    assert got[2].data["code"] == "audio-format" and "whole numbers" in got[2].data["text"]
    assert "\\n" in got[2].data["text"] and "\n" not in got[2].data["text"]


def test_a_half_sent_event_and_an_idle_connection_are_dropped(server):
    t0 = time.monotonic()
    with server.connect() as half, server.connect() as idle:
        half_got, half_s = answers(half, b'{"type": "describe"', t0)
        idle_got, idle_s = answers(idle, b"", t0)
    assert [e.data["code"] for e in half_got] == ["timeout"] and EVENT - 0.5 < half_s < EVENT + 2
    assert [e.data["code"] for e in idle_got] == ["timeout"] and IDLE - 0.5 < idle_s < IDLE + 2


def test_client_text_cannot_forge_or_stretch_a_log_line(server):
    forged = "\nwyoming: stopped: 0 connections\x1b[2J"
    names = [forged] + [f"w{i}" for i in range(5_000)]                 # 34 KB of data: under the 64 KB limit
    with server.connect() as sock:
        sock.sendall(header("detect", {"names": [forged, "\x1b[31mred"]}))
        got, _ = answers(sock, event_bytes(Detect(names=names)) + header("audio-stop") + b"[\n")
        reply = got[0].data["text"]
    assert [e.type for e in got] == ["error", "error", "not-detected", "error"]
    assert "\\n" in reply and "\\x1b" in reply and "\n" not in reply, reply
    assert got[1].data["text"].startswith("detect needs a list of at most 64") and len(got[1].data["text"]) < 200
    # the log's own checks run when the module's server stops (no forged line, none over ~2 KB)


def test_connections_beyond_max_clients_are_refused_and_then_served_again(server):
    held = [server.connect() for _ in range(MAX_CLIENTS)]
    try:
        for sock in held:                                    # each is admitted: it answers a describe
            sock.sendall(header("describe"))
            assert read_event(sock.makefile("rb")).type == "info"
        with server.connect() as extra:
            got, _ = answers(extra, b"")
        assert [(e.type, e.data["code"]) for e in got] == [("error", "busy")]
        assert f"--max-clients {MAX_CLIENTS}" in got[0].data["text"]
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10         # the server sees the four closes when it next runs (busy CPUs)
    while True:
        with server.connect() as again:
            got, _ = answers(again, header("describe") + b"x\n")
        if [e.data.get("code") for e in got] != ["busy"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [e.type for e in got] == ["info", "error"]


def test_a_stream_ended_by_the_connection_is_counted_and_a_normal_client_still_gets_its_words(server):
    import asyncio

    x = read_stream()[:int(3.0 * RATE)]
    audio = x.tobytes()
    with server.connect() as sock:       # wyoming-satellite style: chunks without audio-start, no audio-stop
        for i in range(0, len(audio), 2048):
            sock.sendall(event_bytes(AudioChunk(audio=audio[i:i + 2048], **CHUNK)))
        sock.sendall(header("describe"))
        with sock.makefile("rb") as f:
            got = [read_event(f) for _ in range(2)]
    assert [e.type for e in got] == ["detection", "info"] and got[0].data["name"] == "right"
    deadline = time.monotonic() + 10
    while "3.0 s at 16000 Hz, 16-bit, 1 ch: 1 detections (connection closed" not in server.text():
        assert time.monotonic() < deadline, server.text()
        time.sleep(0.05)
    got = asyncio.run(stream(f"tcp://127.0.0.1:{server.port}", audio))
    assert [n for n, _ in detections(got)] == ["right"]


def test_a_pooled_detector_set_carries_nothing_from_the_connection_that_left_it(server, demo_rows):
    """The pool hands the last set returned to the next stream: a client that left in the middle of a word, at
    another rate, must not change what the next client gets (every demo event, at the demo's times)."""
    import asyncio

    x = read_stream()
    left = encode(to_rate(x[:int(3.5 * RATE)], 48000), 2, 1)        # "right", then half of "up"
    fmt = {**CHUNK, "rate": 48000}
    with server.connect() as sock:
        sock.sendall(header("audio-start", fmt))
        for i in range(0, len(left), 9600):
            sock.sendall(event_bytes(AudioChunk(audio=left[i:i + 9600], **fmt)))
        sock.sendall(header("describe"))
        with sock.makefile("rb") as f:
            assert [read_event(f).type for _ in range(2)] == ["detection", "info"]
    deadline = time.monotonic() + 10          # its set is back in the pool once its end is logged
    while "3.5 s at 48000 Hz, 16-bit, 1 ch: 1 detections (connection closed" not in server.text():
        assert time.monotonic() < deadline, server.text()
        time.sleep(0.05)
    got = asyncio.run(stream(f"tcp://127.0.0.1:{server.port}", x.tobytes()))
    assert detections(got) == [(d["label"], round(d["time"] * 1000)) for d in demo_rows if d["type"] == "event"]


def event_bytes(eventable) -> bytes:
    """What the wyoming library sends for one event (header line, data section, payload)."""
    buf = io.BytesIO()
    write_event(eventable.event(), buf)
    return buf.getvalue()
