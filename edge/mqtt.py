"""MQTT output for ``python -m edge.listen --mqtt HOST[:PORT]``, with Home Assistant discovery.

paho-mqtt (the ``mqtt`` extra: ``pip install -e '.[mqtt]'``) is imported only when ``--mqtt`` is given;
importing this module costs nothing but the standard library.

Topics, for ``--mqtt-topic auricle`` (the default) and a device id made from ``--device-name`` (default:
the host name, lower-cased, other characters than ``a-z 0-9 _ -`` replaced by ``_``)::

    auricle/<device>/event          one JSON object per event, QoS 1, not retained:
                                    {"event_type": "yes", "label": "yes", "score": 0.93, "time": 12.99,
                                     "timestamp": <unix seconds when detected>, "bundle": ..., "device": ...,
                                     "source": ...}  (+ "start"/"end" when the event carries them)
    auricle/<device>/availability   "online" / "offline", retained; "offline" is also the last will
    homeassistant/event/<device>/sound/config
                                    retained discovery config of one Home Assistant ``event`` entity whose
                                    event types are the bundle's reportable (non-background) labels

Discovery and "online" are sent on every (re)connect -- a broker restarted without persistence has lost
them -- and again whenever Home Assistant announces itself ("online" on ``homeassistant/status``).

A broker that goes away never stops listening: paho reconnects in its own thread with exponential backoff
(``RECONNECT_MIN`` s doubling up to ``RECONNECT_MAX`` s) while events wait in a bounded queue
(``--mqtt-queue``, default ``DEFAULT_QUEUE`` events). When the queue is full, new events are dropped and
counted. On exit, unacknowledged events get up to ``FLUSH_SECONDS`` to be delivered; what is left is counted
as undelivered. The counts go into listen's summary under ``"mqtt"``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence, TextIO

from edge.errors import AuricleError

__all__ = ["MqttConfig", "MqttPublisher", "add_mqtt_arguments", "mqtt_config_from_args", "parse_broker",
           "device_id", "discovery_config", "event_payload", "open_publisher", "import_paho"]

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
DEFAULT_TOPIC = "auricle"
DEFAULT_DISCOVERY_PREFIX = "homeassistant"
DEFAULT_QUEUE = 100            # events held while the broker is away
RECONNECT_MIN = 1              # seconds before the first reconnect attempt; doubles each failure ...
RECONNECT_MAX = 30             # ... up to this
CONNECT_TIMEOUT = 10.0         # seconds for the first connection (TCP + CONNACK)
FLUSH_SECONDS = 5.0            # on exit, how long unacknowledged events may take to be delivered
KEEPALIVE = 30
ONLINE, OFFLINE = "online", "offline"
_CONTROL_HEADROOM = 16         # paho's own queue bound = event queue + room for discovery/availability
_INSTALL_HINT = "install it: `pip install 'paho-mqtt>=2'` (or `pip install -e '.[mqtt]'`)"


@dataclasses.dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None
    topic_prefix: str = DEFAULT_TOPIC
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX
    device_name: str = "auricle"
    queue_limit: int = DEFAULT_QUEUE
    keepalive: int = KEEPALIVE
    connect_timeout: float = CONNECT_TIMEOUT
    flush_seconds: float = FLUSH_SECONDS
    reconnect_min: float = RECONNECT_MIN
    reconnect_max: float = RECONNECT_MAX

    @property
    def device_id(self) -> str:
        return device_id(self.device_name)

    @property
    def event_topic(self) -> str:
        return f"{self.topic_prefix}/{self.device_id}/event"

    @property
    def availability_topic(self) -> str:
        return f"{self.topic_prefix}/{self.device_id}/availability"

    @property
    def discovery_topic(self) -> str:
        return f"{self.discovery_prefix}/event/{self.device_id}/sound/config"

    @property
    def status_topic(self) -> str:
        """Where Home Assistant announces itself ("online" after it starts)."""
        return f"{self.discovery_prefix}/status"

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


# -- options ----------------------------------------------------------------------------------------
def add_mqtt_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--mqtt*`` and ``--device-name`` options (validated later by :func:`mqtt_config_from_args`)."""
    g = parser.add_argument_group("MQTT / Home Assistant (needs paho-mqtt: pip install -e '.[mqtt]')")
    g.add_argument("--mqtt", metavar="HOST[:PORT]", help=f"publish events to this MQTT broker (port default "
                   f"{DEFAULT_PORT}, {DEFAULT_TLS_PORT} with --mqtt-tls), with Home Assistant discovery")
    g.add_argument("--mqtt-user", metavar="USER", help="broker user name")
    g.add_argument("--mqtt-password", metavar="PASSWORD",
                   help="broker password (visible to other local users in `ps`; prefer --mqtt-password-file)")
    g.add_argument("--mqtt-password-file", metavar="FILE", help="read the broker password from FILE")
    g.add_argument("--mqtt-tls", action="store_true", help="connect with TLS (system CA certificates)")
    g.add_argument("--mqtt-ca", metavar="FILE", help="CA certificate(s) for TLS (implies --mqtt-tls)")
    g.add_argument("--mqtt-topic", metavar="PREFIX", default=DEFAULT_TOPIC,
                   help=f"topic prefix: events on PREFIX/DEVICE/event (default {DEFAULT_TOPIC})")
    g.add_argument("--mqtt-discovery-prefix", metavar="PREFIX", default=DEFAULT_DISCOVERY_PREFIX,
                   help=f"Home Assistant discovery prefix (default {DEFAULT_DISCOVERY_PREFIX})")
    g.add_argument("--mqtt-queue", metavar="N", default=str(DEFAULT_QUEUE),
                   help=f"events held while the broker is away; beyond that new events are dropped and "
                        f"counted (default {DEFAULT_QUEUE})")
    g.add_argument("--device-name", metavar="NAME", help="device name in topics and in Home Assistant "
                   "(default: the host name)")


def parse_broker(text: str) -> tuple[str, int | None, bool]:
    """``HOST``, ``HOST:PORT``, ``[IPv6]:PORT``, or an ``mqtt://`` / ``mqtts://`` URL -> (host, port, tls)."""
    s = text.strip()
    tls = False
    m = re.match(r"^(mqtts?)://", s, re.IGNORECASE)
    if m:
        tls = m.group(1).lower() == "mqtts"
        s = s[m.end():].rstrip("/")
    port_text = None
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise AuricleError(f"--mqtt {text!r} is not HOST[:PORT]; write an IPv6 address as [ADDR]:PORT")
        port_text = rest[1:] if rest else None
    elif s.count(":") == 1:
        host, port_text = s.split(":")
    else:
        host = s                                   # a name, an IPv4 address, or a bare IPv6 address
    if not host or any(c.isspace() or c in "/@" for c in host):
        raise AuricleError(f"--mqtt {text!r} is not HOST[:PORT]; e.g. --mqtt 192.168.1.10:1883")
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise AuricleError(f"--mqtt {text!r}: port {port_text!r} must be a number from 1 to 65535")
        port = int(port_text)
    return host, port, tls


def device_id(name: str) -> str:
    """A topic- and entity-id-safe form of a device name: ``Kitchen Pi`` -> ``kitchen_pi``."""
    slug = re.sub(r"[^a-z0-9_-]+", "_", name.strip().lower()).strip("_")
    return slug or "auricle"


def _check_prefix(option: str, prefix: str) -> str:
    p = prefix.strip().strip("/")
    if not p or any(c in p for c in "+#\0") or "//" in p:
        raise AuricleError(f"{option} {prefix!r} must be a topic prefix without +, # or empty levels, "
                           f"e.g. {DEFAULT_TOPIC}")
    return p


def _read_password(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuricleError(f"--mqtt-password-file {path}: cannot read it ({exc.__class__.__name__}: "
                           f"{getattr(exc, 'strerror', None) or exc}); give a readable text file") from None
    password = text.rstrip("\r\n")
    if not password:
        raise AuricleError(f"--mqtt-password-file {path} is empty; put the password on its first line")
    return password


def mqtt_config_from_args(args: argparse.Namespace) -> MqttConfig | None:
    """Validate the options of :func:`add_mqtt_arguments`; ``None`` when ``--mqtt`` was not given."""
    if not args.mqtt:
        given = [flag for flag, value in (("--mqtt-user", args.mqtt_user), ("--mqtt-password", args.mqtt_password),
                                          ("--mqtt-password-file", args.mqtt_password_file),
                                          ("--mqtt-tls", args.mqtt_tls), ("--mqtt-ca", args.mqtt_ca)) if value]
        if given:
            raise AuricleError(f"{given[0]} needs --mqtt HOST[:PORT] (the broker to publish to)")
        return None
    host, port, url_tls = parse_broker(args.mqtt)
    if args.mqtt_password and args.mqtt_password_file:
        raise AuricleError("give either --mqtt-password or --mqtt-password-file, not both")
    password = _read_password(args.mqtt_password_file) if args.mqtt_password_file else args.mqtt_password
    if password and not args.mqtt_user:
        raise AuricleError("a broker password needs a user name too: add --mqtt-user USER")
    if args.mqtt_ca and not Path(args.mqtt_ca).is_file():
        raise AuricleError(f"--mqtt-ca {args.mqtt_ca} does not exist; give the CA certificate file (PEM)")
    tls = bool(args.mqtt_tls or args.mqtt_ca or url_tls)
    queue = str(args.mqtt_queue)
    if not queue.isdigit() or int(queue) < 1:
        raise AuricleError(f"--mqtt-queue {args.mqtt_queue!r} must be a whole number of events >= 1")
    name = (args.device_name or socket.gethostname() or "auricle").strip()
    return MqttConfig(host=host, port=port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT),
                      username=args.mqtt_user or None, password=password or None, tls=tls, ca_file=args.mqtt_ca,
                      topic_prefix=_check_prefix("--mqtt-topic", args.mqtt_topic),
                      discovery_prefix=_check_prefix("--mqtt-discovery-prefix", args.mqtt_discovery_prefix),
                      device_name=name or "auricle", queue_limit=int(queue))


# -- messages -------------------------------------------------------------------------------------------
def _version() -> str:
    try:
        from importlib.metadata import version
        return version("auricle")
    except Exception:
        return "unknown"


def discovery_config(cfg: MqttConfig, *, bundle_name: str, labels: Sequence[str]) -> dict[str, Any]:
    """Home Assistant MQTT discovery payload of one ``event`` entity (event types = reportable labels)."""
    version = _version()
    return {
        "name": "Sound",
        "unique_id": f"auricle_{cfg.device_id}_sound",
        "state_topic": cfg.event_topic,
        "event_types": list(labels),
        "availability_topic": cfg.availability_topic,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "qos": 1,
        "icon": "mdi:ear-hearing",
        "device": {"identifiers": [f"auricle_{cfg.device_id}"], "name": cfg.device_name,
                   "manufacturer": "auricle", "model": bundle_name, "sw_version": version},
        "origin": {"name": "auricle", "sw_version": version},
    }


def event_payload(ev: Any, *, bundle_name: str, device_name: str, source: str | None = None,
                  now: float | None = None) -> dict[str, Any]:
    """The JSON object published for one event (``event_type`` is what Home Assistant's event entity reads)."""
    d: dict[str, Any] = {"event_type": ev.label, "label": ev.label, "score": round(float(ev.score), 6),
                         "time": round(float(ev.time), 4)}
    for key in ("start", "end"):
        value = getattr(ev, key, None)
        if value is not None:
            d[key] = round(float(value), 4)
    d.update({"timestamp": round(time.time() if now is None else now, 6), "bundle": bundle_name,
              "device": device_name})
    if source is not None:
        d["source"] = source
    return d


# -- the publisher ----------------------------------------------------------------------------------
def import_paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise AuricleError(f"--mqtt needs the paho-mqtt package, which is not installed; {_INSTALL_HINT}") \
            from None
    if not hasattr(mqtt, "CallbackAPIVersion"):
        raise AuricleError(f"--mqtt needs paho-mqtt 2.0 or newer (found an older one); {_INSTALL_HINT}")
    return mqtt


class MqttPublisher:
    """One MQTT connection: discovery + availability on every connect, events with QoS 1, bounded queue.

    :meth:`publish_event` and :meth:`close` are called from one thread (the listening worker); paho's
    network loop runs in its own thread and only touches the connection flags and the acknowledgement set.
    """

    def __init__(self, cfg: MqttConfig, *, bundle_name: str, labels: Sequence[str],
                 log: TextIO | None = None) -> None:
        self.cfg = cfg
        self.bundle_name = bundle_name
        self.labels = tuple(labels)
        self._log_stream = log
        self._client: Any = None
        self._mqtt: Any = None
        self._connected = threading.Event()
        self._first_answer = threading.Event()
        self._refused: str | None = None
        self._closing = False
        self._closed_stats: dict[str, Any] | None = None
        self._ack_lock = threading.Lock()      # never held while calling into paho (paho holds its own
        self._acked: set[int] = set()          # lock while it calls on_publish)
        self._pending: list[int] = []          # message ids of events not yet acknowledged, oldest first
        self._dropping = False
        self.events = self.published = self.dropped = self.queued_offline = 0
        self.connects = self.disconnects = 0

    # -- connection --------------------------------------------------------------------------------
    def _log(self, message: str) -> None:
        stream = self._log_stream or sys.stderr
        print(f"mqtt: {message}", file=stream, flush=True)

    def _make_client(self) -> Any:
        mqtt = self._mqtt = import_paho()
        cfg = self.cfg
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"auricle-{cfg.device_id}-{os.getpid()}",
                             clean_session=True, protocol=mqtt.MQTTv311)
        client.max_queued_messages_set(cfg.queue_limit + _CONTROL_HEADROOM)
        client.reconnect_delay_set(min_delay=cfg.reconnect_min, max_delay=cfg.reconnect_max)
        client.connect_timeout = cfg.connect_timeout
        client.will_set(cfg.availability_topic, OFFLINE, qos=1, retain=True)
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            try:
                client.tls_set(ca_certs=cfg.ca_file)
            except (OSError, ValueError) as exc:
                raise AuricleError(f"--mqtt-ca {cfg.ca_file}: cannot use it for TLS ({exc}); give a PEM CA "
                                   "certificate") from None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def connect(self) -> "MqttPublisher":
        """Connect (blocking, at most ``connect_timeout`` s) and start paho's network thread.

        Raises :class:`AuricleError` (one line) when the broker cannot be reached or refuses us.
        """
        cfg = self.cfg
        client = self._make_client()
        try:
            client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive)
        except (OSError, ValueError) as exc:     # refused, unknown host, timeout, TLS handshake (ssl.SSLError)
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise AuricleError(f"cannot reach the MQTT broker at {cfg.address} ({detail}); check --mqtt "
                               "HOST[:PORT] and that the broker is running") from None
        self._client = client
        client.loop_start()
        answered = self._first_answer.wait(cfg.connect_timeout)
        if self._refused or not answered:
            self._stop_client()
            if self._refused:
                raise AuricleError(f"the MQTT broker at {cfg.address} refused the connection ({self._refused});"
                                   " check --mqtt-user, --mqtt-password/--mqtt-password-file and --mqtt-tls")
            raise AuricleError(f"the MQTT broker at {cfg.address} did not answer within "
                               f"{cfg.connect_timeout:g} s; check that HOST:PORT is an MQTT broker (TLS: "
                               "--mqtt-tls)")
        return self

    def _stop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.disconnect()
            finally:
                client.loop_stop()

    def _announce(self, client: Any) -> None:
        """Discovery config and "online", both retained (runs in paho's thread, on every connect)."""
        cfg = self.cfg
        config = discovery_config(cfg, bundle_name=self.bundle_name, labels=self.labels)
        client.publish(cfg.discovery_topic, json.dumps(config), qos=1, retain=True)
        client.publish(cfg.availability_topic, ONLINE, qos=1, retain=True)

    # paho callbacks (paho's network thread) ---------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            if self.connects == 0:
                self._refused = str(reason_code)
                self._first_answer.set()
            else:
                self._log(f"{self.cfg.address} refused the reconnection ({reason_code}); retrying")
            return
        self.connects += 1
        self._connected.set()
        client.subscribe(self.cfg.status_topic, qos=1)
        self._announce(client)
        if self.connects == 1:
            self._log(f"connected to {self.cfg.address} as device {self.cfg.device_id!r}: events on "
                      f"{self.cfg.event_topic}, discovery on {self.cfg.discovery_topic}")
        else:
            self._log(f"reconnected to {self.cfg.address} ({len(self._pending)} queued events being sent)")
        self._first_answer.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self.connects == 0 and not self._first_answer.is_set():     # closed before any CONNACK
            self._refused = f"it closed the connection: {reason_code}"
            self._first_answer.set()
        if was_connected and not self._closing:
            self.disconnects += 1
            self._log(f"lost the connection to {self.cfg.address} ({reason_code}); reconnecting with backoff "
                      f"({self.cfg.reconnect_min:g} s doubling to {self.cfg.reconnect_max:g} s), holding up to "
                      f"{self.cfg.queue_limit} events")

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._ack_lock:
            self._acked.add(mid)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.topic == self.cfg.status_topic and message.payload.strip().lower() == ONLINE.encode():
            self._announce(client)          # Home Assistant (re)started: it forgets non-retained state

    # -- events ----------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def pending(self) -> int:
        self._settle()
        return len(self._pending)

    def _settle(self) -> None:
        """Move acknowledged events from pending to published (acks of control messages are dropped)."""
        with self._ack_lock:
            acked, self._acked = self._acked, set()
        if acked:
            keep = [mid for mid in self._pending if mid not in acked]
            self.published += len(self._pending) - len(keep)
            self._pending = keep

    def publish_event(self, ev: Any, *, source: str | None = None) -> bool:
        """Queue one event for delivery; ``False`` when the queue was full and it was dropped (counted)."""
        if self._client is None:
            raise AuricleError("MqttPublisher.publish_event called before connect() or after close()")
        self.events += 1
        self._settle()
        payload = event_payload(ev, bundle_name=self.bundle_name, device_name=self.cfg.device_name, source=source)
        info = None
        if len(self._pending) < self.cfg.queue_limit:
            info = self._client.publish(self.cfg.event_topic, json.dumps(payload), qos=1, retain=False)
        mqtt = self._mqtt
        if info is None or info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1
            if not self._dropping:
                self._log(f"event queue full ({self.cfg.queue_limit} events waiting for {self.cfg.address}); "
                          "dropping new events until the broker is back")
            self._dropping = True
            return False
        self._dropping = False
        if info.rc == mqtt.MQTT_ERR_NO_CONN:
            self.queued_offline += 1
        self._pending.append(info.mid)
        return True

    def _wait_pending(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.02)

    def stats(self) -> dict[str, Any]:
        if self._closed_stats is not None:
            return dict(self._closed_stats)
        self._settle()
        return {"broker": self.cfg.address, "device": self.cfg.device_id, "events": self.events,
                "published": self.published, "dropped": self.dropped, "undelivered": len(self._pending),
                "queued_offline": self.queued_offline, "reconnects": max(0, self.connects - 1),
                "disconnects": self.disconnects}

    def close(self) -> dict[str, Any]:
        """Flush (up to ``flush_seconds``), publish "offline", disconnect; returns the final counts."""
        if self._closed_stats is not None:
            return dict(self._closed_stats)
        client = self._client
        if client is None:
            return self.stats()
        self._wait_pending(self.cfg.flush_seconds)
        stats = self.stats()
        self._closing = True
        if self.connected:
            info = client.publish(self.cfg.availability_topic, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(1.0)
            except (RuntimeError, ValueError):
                pass
        self._stop_client()
        self._closed_stats = stats
        self._log(format_summary(stats))
        return dict(stats)

    def __enter__(self) -> "MqttPublisher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def format_summary(d: dict[str, Any]) -> str:
    return (f"{d['published']} of {d['events']} events delivered to {d['broker']}, {d['dropped']} dropped "
            f"(queue full), {d['undelivered']} undelivered at exit, {d['queued_offline']} held while offline; "
            f"{d['reconnects']} reconnects")


def open_publisher(cfg: MqttConfig, bundle: Any, *, log: TextIO | None = None) -> MqttPublisher:
    """Connect a publisher for a loaded bundle (its non-background labels become the event types)."""
    labels = [lab for lab in bundle.labels if lab not in bundle.background_labels]
    return MqttPublisher(cfg, bundle_name=bundle.name, labels=labels, log=log).connect()
