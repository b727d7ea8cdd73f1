"""``python -m edge.listen --mqtt``: events and Home Assistant discovery through a real Mosquitto broker.

Each test starts its own broker (``mosquitto`` from apt) on a free loopback port with a minimal config in
tmp_path, and checks what a real paho-mqtt subscriber receives. The listener runs the shipped bundle over
the sample stream, so the events must be those ``python -m edge.demo`` prints. Tests that need the broker or
paho skip (with the reason) when they are missing; CI installs both.
"""
from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
STREAM = REPO / "samples" / "speech_commands_stream.wav"
MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")

try:
    import paho.mqtt.client as paho
    PAHO_MISSING = None if hasattr(paho, "CallbackAPIVersion") else "paho-mqtt is older than 2.0"
except ImportError:
    paho = None
    PAHO_MISSING = "paho-mqtt is not installed (pip install -e '.[mqtt]')"


def need_paho() -> None:
    if PAHO_MISSING:
        pytest.skip(PAHO_MISSING)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- a real broker and a real subscriber -------------------------------------------------------------------
class Broker:
    """Mosquitto on 127.0.0.1:port with a config in ``folder``; stop() and start() again on the same port."""

    def __init__(self, folder: Path, *, extra: str = "") -> None:
        self.port = free_port()
        self.folder = folder
        self.conf = folder / "mosquitto.conf"
        # as root, mosquitto switches to its own user, which cannot read files in tmp_path: stay ourselves
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name}\n" if os.geteuid() == 0 else ""
        self.conf.write_text(textwrap.dedent(f"""\
            listener {self.port} 127.0.0.1
            persistence false
            """) + user + (extra or "allow_anonymous true\n"))
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Broker":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.02)
        pytest.fail("mosquitto did not open its port within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def broker(tmp_path):
    need_paho()
    if not MOSQUITTO:
        pytest.skip("mosquitto is not installed (apt install mosquitto)")
    b = Broker(tmp_path).start()
    yield b
    b.stop()


class Subscriber:
    """paho client subscribed to ``#`` that records (topic, payload, retain, receive time); it reconnects
    within 0.2 s of a broker restart and subscribes again."""

    def __init__(self, port: int, *, user: str | None = None, password: str | None = None) -> None:
        self.messages: list[tuple[str, str, bool, float]] = []
        self.connects = 0
        self._lock = threading.Lock()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{uuid.uuid4().hex[:8]}")
        c.reconnect_delay_set(min_delay=0.1, max_delay=0.2)
        if user:
            c.username_pw_set(user, password)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.wait(lambda: self.connects >= 1, what="the subscriber to connect")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe("#", qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.connects += 1                     # connected and subscribed

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self.messages.append((msg.topic, msg.payload.decode(), bool(msg.retain), time.time()))

    def wait(self, predicate, *, timeout: float = 15.0, what: str = "messages") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; got {self.snapshot()}")
            time.sleep(0.02)

    def snapshot(self) -> list[tuple[str, str, bool, float]]:
        with self._lock:
            return list(self.messages)

    def on(self, topic: str) -> list[str]:
        return [p for t, p, _, _ in self.snapshot() if t == topic]

    def events(self, topic: str) -> list[dict]:
        return [json.loads(p) for p in self.on(topic)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(port: int, topic_filter: str = "#") -> dict[str, str]:
    """What the broker holds as retained messages now (a fresh subscriber's first deliveries)."""
    got: dict[str, str] = {}
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"test-ret-{uuid.uuid4().hex[:8]}")
    c.on_connect = lambda client, *a: client.subscribe(topic_filter, qos=1)
    c.on_message = lambda client, userdata, msg: got.__setitem__(msg.topic, msg.payload.decode()) \
        if msg.retain else None
    c.connect("127.0.0.1", port)
    c.loop_start()
    time.sleep(0.7)
    c.disconnect()
    c.loop_stop()
    return got


# -- the reference: what `make demo` prints ------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_events(demo_rows):
    return [(d["label"], d["time"], d["score"]) for d in demo_rows if d["type"] == "event"]


@pytest.fixture(scope="module")
def reportable_labels():
    from edge import load_bundle

    b = load_bundle(None)
    return [lab for lab in b.labels if lab not in b.background_labels]


def listen_cmd(port: int, *extra: str) -> list[str]:
    return [PY, "-m", "edge.listen", "--file", str(STREAM), "--mqtt", f"127.0.0.1:{port}", "--json", *extra]


def json_rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def one_line_error(r: subprocess.CompletedProcess) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


# -- tests -----------------------------------------------------------------------------------------------------
IMPORTS = textwrap.dedent("""
    import json, runpy, sys
    sys.argv = ["edge.listen", *json.loads(sys.argv[1])]
    try:
        runpy.run_module("edge.listen", run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"paho", "wyoming"})))
""")


@pytest.mark.parametrize("argv", [["--help"], ["--file", str(STREAM), "--duration", "3"]])
def test_listen_imports_neither_paho_nor_wyoming_without_mqtt(argv):
    r = subprocess.run([PY, "-c", IMPORTS, json.dumps(argv)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--mqtt HOST[:PORT]" in r.stdout or argv[0] != "--help"
    assert json.loads(r.stdout.splitlines()[-1]) == []


def test_parse_broker_and_device_id():
    from edge.errors import AuricleError
    from edge.mqtt import device_id, parse_broker

    assert parse_broker("broker.lan") == ("broker.lan", None, False)
    assert parse_broker("10.0.0.2:1884") == ("10.0.0.2", 1884, False)
    assert parse_broker("[::1]:8883") == ("::1", 8883, False)
    assert parse_broker("::1") == ("::1", None, False)
    assert parse_broker("mqtts://broker.lan:8884/") == ("broker.lan", 8884, True)
    for bad in ("host:0", "host:70000", "host:port", "", "user@host", "[::1]x"):
        with pytest.raises(AuricleError):
            parse_broker(bad)
    assert device_id("Kitchen Pi #2") == "kitchen_pi_2"
    assert device_id("  ") == "auricle"


def test_bad_mqtt_options_are_one_line_and_exit_2(tmp_path):
    cases = [
        (["--mqtt", "127.0.0.1:70000"], "port '70000' must be a number from 1 to 65535"),
        (["--mqtt-user", "bob"], "--mqtt-user needs --mqtt HOST[:PORT]"),
        (["--mqtt", "127.0.0.1", "--mqtt-user", "bob", "--mqtt-password-file", str(tmp_path / "nope")],
         "--mqtt-password-file"),
        (["--mqtt", "127.0.0.1", "--mqtt-password", "x"], "needs a user name too"),
        (["--mqtt", "127.0.0.1", "--mqtt-topic", "a/#"], "--mqtt-topic 'a/#' must be a topic prefix"),
        (["--mqtt", "127.0.0.1", "--mqtt-queue", "0"], "--mqtt-queue '0' must be a whole number"),
    ]
    if not PAHO_MISSING:
        port = free_port()      # nothing listens there
        cases.append((["--mqtt", f"127.0.0.1:{port}"], f"cannot reach the MQTT broker at 127.0.0.1:{port}"))
    for argv, expected in cases:
        r = subprocess.run([PY, "-m", "edge.listen", "--file", str(STREAM), *argv], capture_output=True, text=True,
                           cwd=REPO, timeout=120)
        line = one_line_error(r)
        assert line.startswith("edge.listen: error: ") and expected in line, (argv, line)


def test_missing_paho_is_one_line_naming_the_extra():
    code = ("import runpy, sys; sys.modules['paho'] = None; sys.argv = ['edge.listen', *sys.argv[1:]]; "
            "runpy.run_module('edge.listen', run_name='__main__', alter_sys=True)")
    r = subprocess.run([PY, "-c", code, "--file", str(STREAM), "--mqtt", "127.0.0.1"], capture_output=True,
                       text=True, cwd=REPO, timeout=120)
    assert "needs the paho-mqtt package" in one_line_error(r) and ".[mqtt]" in r.stderr


def test_events_and_discovery_reach_the_broker(broker, demo_events, reportable_labels):
    sub = Subscriber(broker.port)
    try:
        r = subprocess.run(listen_cmd(broker.port, "--device-name", "Test Pi"), capture_output=True, text=True,
                           cwd=REPO, timeout=120)
        assert r.returncode == 0, r.stderr
        sub.wait(lambda: "offline" in sub.on("auricle/test_pi/availability"), what="availability offline")
    finally:
        sub.close()
    got = sub.events("auricle/test_pi/event")
    assert [(d["label"], d["time"], d["score"]) for d in got] == demo_events
    for d in got:
        assert d["event_type"] == d["label"] and d["bundle"] == "kws_mobilenet_edge" and d["device"] == "Test Pi"
        assert d["source"].endswith("speech_commands_stream.wav") and abs(d["timestamp"] - time.time()) < 120
    stdout_events = [(d["label"], d["time"], d["score"]) for d in json_rows(r.stdout) if d["type"] == "event"]
    assert stdout_events == demo_events
    summary = json_rows(r.stdout)[-1]
    assert summary["mqtt"] == {"broker": f"127.0.0.1:{broker.port}", "device": "test_pi", "events": len(demo_events),
                               "published": len(demo_events), "dropped": 0, "undelivered": 0, "queued_offline": 0,
                               "reconnects": 0, "disconnects": 0}
    topics = [t for t, *_ in sub.snapshot()]
    config_topic = "homeassistant/event/test_pi/sound/config"
    assert topics.index(config_topic) < topics.index("auricle/test_pi/event")
    assert sub.on("auricle/test_pi/availability") == ["online", "offline"]

    held = retained(broker.port)            # what Home Assistant finds when it subscribes later
    assert set(held) == {config_topic, "auricle/test_pi/availability"}
    assert held["auricle/test_pi/availability"] == "offline"
    config = json.loads(held[config_topic])
    assert config["event_types"] == reportable_labels and len(reportable_labels) == 10
    assert config["state_topic"] == "auricle/test_pi/event"
    assert config["availability_topic"] == "auricle/test_pi/availability"
    assert config["unique_id"] == "auricle_test_pi_sound"
    assert config["device"]["name"] == "Test Pi" and config["device"]["model"] == "kws_mobilenet_edge"
    assert "mqtt: connected to" in r.stderr and f"{len(demo_events)} of {len(demo_events)} events delivered" in r.stderr


def test_broker_restart_mid_stream_listening_continues(broker, demo_events):
    """The broker stops after the 'stop' event and comes back once 'down' was detected while it was away:
    'down' waits in the queue, is delivered after the reconnect, and the stream goes on to 'go' and 'yes'."""
    duration = 13.5
    expected = [e for e in demo_events if e[1] < duration]
    assert [e[0] for e in expected][-4:] == ["stop", "down", "go", "yes"]
    sub = Subscriber(broker.port)
    p = subprocess.Popen(listen_cmd(broker.port, "--realtime", "--duration", str(duration), "--device-name", "pi"),
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout = []
        for line in p.stdout:
            stdout.append(line)
            d = json.loads(line)
            if d.get("type") != "event":        # event_end lines (the end of each sound) name the label too
                continue
            if d.get("label") == "stop":
                broker.stop()
            elif d.get("label") == "down":
                assert broker.proc is None, "the broker should be down when 'down' is detected"
                broker.start()
        err = p.stderr.read()
        assert p.wait(30) == 0, err
        sub.wait(lambda: len({d["time"] for d in sub.events("auricle/pi/event")}) >= len(expected),
                 what="every event")
    finally:
        if p.poll() is None:
            p.kill()
        sub.close()
    unique = list(dict.fromkeys((d["label"], d["time"], d["score"]) for d in sub.events("auricle/pi/event")))
    assert unique == expected                             # QoS 1: at least once, nothing lost, nothing else
    summary = json.loads(stdout[-1])
    m = summary["mqtt"]
    assert summary["stopped_by"] == "end" and summary["audio_seconds"] == pytest.approx(duration)
    assert m["events"] == m["published"] == len(expected)
    assert m["dropped"] == m["undelivered"] == 0
    assert m["queued_offline"] == 1 and m["reconnects"] == 1 and m["disconnects"] == 1
    assert len(sub.on("homeassistant/event/pi/sound/config")) == 2      # re-announced after the restart ...
    held = retained(broker.port)                                       # ... so the fresh broker holds it
    assert "homeassistant/event/pi/sound/config" in held
    assert "lost the connection" in err and "reconnected" in err


def test_last_will_marks_a_killed_listener_offline(broker):
    sub = Subscriber(broker.port)
    p = subprocess.Popen(listen_cmd(broker.port, "--realtime", "--device-name", "pi"), cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        sub.wait(lambda: "online" in sub.on("auricle/pi/availability"), what="availability online")
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        sub.wait(lambda: "offline" in sub.on("auricle/pi/availability"), what="the last will")
    finally:
        if p.poll() is None:
            p.kill()
        sub.close()
    assert retained(broker.port)["auricle/pi/availability"] == "offline"


def test_queue_is_bounded_counts_drops_and_undelivered(broker):
    from edge import Event
    from edge.mqtt import MqttConfig, MqttPublisher

    cfg = MqttConfig(host="127.0.0.1", port=broker.port, device_name="q", queue_limit=5, flush_seconds=0.5,
                     reconnect_min=0.3, reconnect_max=0.6)
    sub = Subscriber(broker.port)
    log = open(os.devnull, "w")
    pub = MqttPublisher(cfg, bundle_name="b", labels=["yes"], log=log).connect()
    try:
        broker.stop()
        deadline = time.monotonic() + 10
        while pub.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not pub.connected
        accepted = [pub.publish_event(Event(time=float(i), label="yes", score=0.9, window=i)) for i in range(12)]
        assert accepted == [True] * 5 + [False] * 7
        broker.start()
        deadline = time.monotonic() + 10
        while pub.pending and time.monotonic() < deadline:
            time.sleep(0.02)
        sub.wait(lambda: len(sub.on("auricle/q/event")) >= 5, what="the queued events")
        assert [d["time"] for d in sub.events("auricle/q/event")] == [0.0, 1.0, 2.0, 3.0, 4.0]

        broker.stop()
        while pub.connected and time.monotonic() < deadline + 10:
            time.sleep(0.02)
        for i in range(3):
            pub.publish_event(Event(time=20.0 + i, label="yes", score=0.9, window=i))
        t0 = time.monotonic()
        stats = pub.close()
        assert time.monotonic() - t0 < 3.0
    finally:
        pub.close()
        sub.close()
        log.close()
    assert stats == {"broker": f"127.0.0.1:{broker.port}", "device": "q", "events": 15, "published": 5,
                     "dropped": 7, "undelivered": 3, "queued_offline": 8, "reconnects": 1, "disconnects": 2}


def test_user_and_password_file(tmp_path):
    need_paho()
    passwd = shutil.which("mosquitto_passwd")
    if not MOSQUITTO or not passwd:
        pytest.skip("mosquitto / mosquitto_passwd are not installed (apt install mosquitto)")
    pwfile = tmp_path / "passwd"
    subprocess.run([passwd, "-b", "-c", str(pwfile), "pi", "s3cret"], check=True, capture_output=True)
    b = Broker(tmp_path, extra=f"allow_anonymous false\npassword_file {pwfile}\n").start()
    try:
        (tmp_path / "good").write_text("s3cret\n")
        (tmp_path / "bad").write_text("wrong\n")
        r = subprocess.run(listen_cmd(b.port, "--mqtt-user", "pi", "--mqtt-password-file", str(tmp_path / "bad")),
                           capture_output=True, text=True, cwd=REPO, timeout=120)
        line = one_line_error(r)
        assert "refused the connection" in line and "--mqtt-user" in line
        sub = Subscriber(b.port, user="pi", password="s3cret")
        try:
            r = subprocess.run(listen_cmd(b.port, "--mqtt-user", "pi", "--mqtt-password-file",
                                          str(tmp_path / "good"), "--duration", "4", "--device-name", "pi"),
                               capture_output=True, text=True, cwd=REPO, timeout=120)
            assert r.returncode == 0, r.stderr
            sub.wait(lambda: len(sub.on("auricle/pi/event")) >= 2, what="events")
        finally:
            sub.close()
        assert [d["label"] for d in sub.events("auricle/pi/event")] == ["right", "up"]
    finally:
        b.stop()


def test_tls_with_a_private_ca(tmp_path):
    need_paho()
    openssl = shutil.which("openssl")
    if not MOSQUITTO or not openssl:
        pytest.skip("mosquitto / openssl are not installed")

    def ssl(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=tmp_path)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test ca", "-keyout", "ca.key",
        "-out", "ca.pem")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out",
        "server.csr")
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "san.ext", "-out", "server.pem")
    b = Broker(tmp_path, extra=f"allow_anonymous true\ncafile {tmp_path / 'ca.pem'}\n"
                               f"certfile {tmp_path / 'server.pem'}\nkeyfile {tmp_path / 'server.key'}\n").start()
    try:
        r = subprocess.run(listen_cmd(b.port, "--mqtt-ca", str(tmp_path / "ca.pem"), "--duration", "4"),
                           capture_output=True, text=True, cwd=REPO, timeout=120)
        assert r.returncode == 0, r.stderr
        m = json_rows(r.stdout)[-1]["mqtt"]
        assert m["events"] == m["published"] == 2
        r = subprocess.run(listen_cmd(b.port, "--mqtt-tls", "--duration", "4"), capture_output=True, text=True,
                           cwd=REPO, timeout=120)           # system CAs do not know our private CA
        line = one_line_error(r)
        assert "presented a TLS certificate that failed verification" in line and "--mqtt-ca" in line, line
        # OpenSSL 3 says "self-signed certificate", 1.1.1 (older Raspberry Pi OS) "self signed certificate"
        assert "cannot reach" not in line and re.search(r"self[- ]signed certificate", line), line
    finally:
        b.stop()
