"""What a hostile client on the LAN costs ``python -m edge.wyoming``: server RSS and time, on loopback.

    python -m benchmarks.wyoming_hostile                         # this checkout's server
    python -m benchmarks.wyoming_hostile --code OTHER_CHECKOUT   # e.g. the previous version, to compare
    python -m benchmarks.wyoming_hostile --out results/wyoming_hostile.json

Each case starts a fresh server (``--uri tcp://127.0.0.1:0``, the shipped bundle) from the checkout given
with ``--code``, and reads its resident set from ``/proc/PID/status`` (VmRSS now, VmHWM the peak):

* ``huge_announce``: an audio-chunk header announcing ``payload_length`` 10^12, then ``--send-mb`` MB sent
  (until the server closes the connection); RSS growth and peak growth over the idle server.
* ``held_starts``: ``--clients`` connections that each send only an ``audio-start`` (16 kHz) and hold;
  RSS growth while held and after they all closed (server started with ``--max-clients`` = ``--clients``
  where it has that option, so all are served; a second row with the server's default cap).
* ``held_streams``: the same, each connection also sending one 0.1 s audio-chunk (so it has detectors).
* ``empty_chunks``: 100,000 audio-chunks without audio after one audio-start; server CPU seconds.
* ``half_sent``: one event header without its newline; seconds until the server drops the connection
  (capped at ``--wait`` s).
* ``log``: a ``detect`` whose names forge a log line and 10,000 names; whether a forged line appears and
  the longest log line.
* ``normal``: a normal client streaming the first 3 s of the sample stream must get ``right``.

Not a test: the figures depend on the machine; compare two checkouts in one run on the same machine.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


class Server:
    def __init__(self, code: Path, *extra: str) -> None:
        self.log = Path(tempfile.mkstemp(suffix=".log")[1])
        help_text = subprocess.run([sys.executable, "-m", "edge.wyoming", "--help"], cwd=code,
                                   capture_output=True, text=True).stdout
        self.extra = [a for a in extra if "--max-clients" in help_text or not a.startswith("--max-clients")]
        self.proc = subprocess.Popen([sys.executable, "-m", "edge.wyoming", "--uri", "tcp://127.0.0.1:0",
                                      *self.extra], cwd=code, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "w"))
        deadline = time.monotonic() + 120
        while not (m := re.search(r"serving .* on tcp://127\.0\.0\.1:(\d+)", self.text())):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start: {self.text()[-2000:]}")
            time.sleep(0.05)
        self.port = int(m.group(1))
        time.sleep(0.5)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def mb(self, key: str = "VmRSS") -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M).group(1)) / 1024

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        text = self.text()
        self.log.unlink()
        return text


def header(kind: str, data: dict | None = None, **fields: Any) -> bytes:
    return (json.dumps({"type": kind, **({"data": data} if data else {}), **fields}) + "\n").encode()


def settle(srv: Server, seconds: float = 1.0) -> None:
    time.sleep(seconds)


def huge_announce(code: Path, send_mb: int) -> dict:
    srv = Server(code)
    try:
        base, base_peak = srv.mb(), srv.mb("VmHWM")
        sent = 0
        block = bytes(1 << 20)
        with srv.connect() as s:
            s.sendall(header("audio-chunk", {"rate": 16000, "width": 2, "channels": 1}, payload_length=10 ** 12))
            try:
                for _ in range(send_mb):
                    s.sendall(block)
                    sent += 1
            except OSError:
                pass
            settle(srv)
            during = srv.mb()
        settle(srv, 3.0)
        return {"case": "huge_announce", "sent_mb": sent, "rss_growth_mb": round(during - base, 1),
                "peak_growth_mb": round(srv.mb("VmHWM") - base_peak, 1),
                "after_close_growth_mb": round(srv.mb() - base, 1)}
    finally:
        srv.stop()


def held_starts(code: Path, clients: int, cap: bool, chunk: bool = False) -> dict:
    srv = Server(code, *([f"--max-clients={clients}"] if cap else []))
    fmt = {"rate": 16000, "width": 2, "channels": 1}
    try:
        base = srv.mb()
        socks = []
        for _ in range(clients):
            s = srv.connect()
            s.sendall(header("audio-start", fmt))
            if chunk:             # 0.1 s of silence: the connection now streams, with its detectors
                s.sendall(header("audio-chunk", fmt, payload_length=3200) + bytes(3200))
            socks.append(s)
        settle(srv, 3.0)
        held = srv.mb()
        for s in socks:
            s.close()
        settle(srv, 3.0)
        return {"case": "held_streams" if chunk else "held_starts", "clients": clients, "server_args": srv.extra,
                "rss_growth_mb": round(held - base, 1), "after_close_growth_mb": round(srv.mb() - base, 1)}
    finally:
        srv.stop()


def empty_chunks(code: Path, count: int) -> dict:
    srv = Server(code)
    try:
        cpu = srv.cpu_seconds()
        one = header("audio-chunk", {"rate": 16000, "width": 2, "channels": 1})
        with srv.connect() as s:
            s.sendall(header("audio-start", {"rate": 16000, "width": 2, "channels": 1}))
            t0 = time.monotonic()
            s.sendall(one * count + header("describe"))
            s.settimeout(600)
            with s.makefile("rb") as f:
                while b'"info"' not in f.readline():
                    pass
            wall = time.monotonic() - t0
        return {"case": "empty_chunks", "chunks": count, "server_cpu_s": round(srv.cpu_seconds() - cpu, 1),
                "wall_s": round(wall, 1)}
    finally:
        srv.stop()


def half_sent(code: Path, wait: float) -> dict:
    srv = Server(code)
    try:
        with srv.connect() as s:
            s.settimeout(wait)
            t0 = time.monotonic()
            s.sendall(b'{"type": "describe"')
            try:
                while s.recv(4096):
                    pass
                dropped = round(time.monotonic() - t0, 1)
            except (socket.timeout, OSError):
                dropped = None
        return {"case": "half_sent", "dropped_after_s": dropped, "waited_s": wait}
    finally:
        srv.stop()


def log_lines(code: Path) -> dict:
    from wyoming.event import write_event
    from wyoming.wake import Detect

    srv = Server(code)
    buf = io.BytesIO()
    write_event(Detect(names=["\nwyoming: stopped: forged"] + [f"name{i}" for i in range(10_000)]).event(), buf)
    with srv.connect() as s:
        s.sendall(buf.getvalue())
        s.sendall(header("describe"))
        s.settimeout(10)
        with s.makefile("rb") as f:
            with_reply = len(b"".join(f.readline() for _ in range(2)))
    settle(srv)
    text = srv.stop()
    lines = text.splitlines()
    return {"case": "log", "longest_log_line": max(len(x) for x in lines),
            "forged_line": any(x.startswith("wyoming: stopped: forged") for x in lines),
            "reply_bytes_first_two_lines": with_reply}


def normal(code: Path) -> dict:
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncClient
    from wyoming.info import Describe
    from wyoming.wake import Detection

    with wave.open(str(REPO / "samples" / "speech_commands_stream.wav")) as w:
        audio = w.readframes(3 * w.getframerate())
    srv = Server(code)

    async def run() -> list:
        names = []
        async with AsyncClient.from_uri(f"tcp://127.0.0.1:{srv.port}") as c:
            await c.write_event(AudioStart(rate=16000, width=2, channels=1).event())
            for i in range(0, len(audio), 2048):
                await c.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=audio[i:i + 2048]).event())
            await c.write_event(AudioStop().event())
            await c.write_event(Describe().event())           # its info answer ends the results
            while (ev := await asyncio.wait_for(c.read_event(), 30)) is not None:
                if Detection.is_type(ev.type):
                    names.append(Detection.from_event(ev).name)
                elif ev.type == "info":
                    return names
        return names

    try:
        return {"case": "normal", "words": asyncio.run(run())}
    finally:
        srv.stop()


CASES = ("huge_announce", "held_starts", "held_streams", "empty_chunks", "half_sent", "log", "normal")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.wyoming_hostile", description=__doc__.split("\n")[0])
    p.add_argument("--code", type=Path, default=REPO, help="checkout whose edge.wyoming runs (default: this one)")
    p.add_argument("--send-mb", type=int, default=200)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--wait", type=float, default=65.0)
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES), help="which cases (default: all)")
    p.add_argument("--out", type=Path, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    code = args.code.resolve()
    runs = {"huge_announce": [lambda: huge_announce(code, args.send_mb)],
            "held_starts": [lambda: held_starts(code, args.clients, True),
                            lambda: held_starts(code, args.clients, False)],
            "held_streams": [lambda: held_starts(code, args.clients, True, True),
                             lambda: held_starts(code, args.clients, False, True)],
            "empty_chunks": [lambda: empty_chunks(code, 100_000)],
            "half_sent": [lambda: half_sent(code, args.wait)], "log": [lambda: log_lines(code)],
            "normal": [lambda: normal(code)]}
    rows = []
    for case in (run for name in args.cases for run in runs[name]):
        rows.append(case())
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        from edge.fileio import write_text_atomic
        write_text_atomic(args.out, json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
