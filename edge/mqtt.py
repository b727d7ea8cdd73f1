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
them -- and again whenever Home Assistant announces itself ("online" on ``homeassistant/status``). After
each announcement, events are held for ``--mqtt-discovery-wait`` s (default ``DISCOVERY_WAIT``): Home
Assistant creates the entity and subscribes to its event topic only after it has read the discovery
config, and an event published before that (QoS 1 but not retained) would be lost to it.

A broker that goes away never stops listening: paho reconnects in its own thread with exponential backoff
(``RECONNECT_MIN`` s doubling up to ``RECONNECT_MAX`` s) while events wait in a bounded queue
(``--mqtt-queue``, default ``DEFAULT_QUEUE`` events). When the queue is full, new events are dropped and
counted (a queue full of events held for discovery, the broker connected, makes the next event wait
instead). On exit, unacknowledged events get up to ``FLUSH_SECONDS`` to be delivered; what is left is
counted as undelivered. The counts go into listen's summary under ``"mqtt"``.
"""
from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Sequence, TextIO, TypedDict

from edge.errors import AuricleError
from edge.mqtt_config import (CONTROL_HEADROOM, DEFAULT_DISCOVERY_PREFIX, DEFAULT_PORT, DEFAULT_QUEUE,  # noqa: F401
                              DEFAULT_TLS_PORT, DEFAULT_TOPIC, INSTALL_HINT, OFFLINE, ONLINE, MqttConfig,
                              add_mqtt_arguments, device_id, mqtt_config_from_args, parse_broker)

if TYPE_CHECKING:
    from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    from edge.bundle import Bundle
    from edge.gate import Event

_LOG = logging.getLogger(__name__)

_HOLD_LIMIT = 2      # a hold extended by further announcements ends at most this many discovery waits after it began

__all__ = ["MqttConfig", "MqttPublisher", "add_mqtt_arguments", "mqtt_config_from_args", "parse_broker",
           "device_id", "discovery_config", "event_payload", "open_publisher", "import_paho"]

# -- messages -------------------------------------------------------------------------------------------
def _version() -> str:
    try:
        from importlib.metadata import version
        return version("auricle")
    except Exception:
        return "unknown"


def discovery_config(cfg: MqttConfig, *, bundle_name: str, labels: Sequence[str]) -> dict[str, object]:
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


def event_payload(ev: Event, *, bundle_name: str, device_name: str, source: str | None = None,
                  now: float | None = None) -> dict[str, str | float]:
    """The JSON object published for one event (``event_type`` is what Home Assistant's event entity reads)."""
    d: dict[str, str | float] = {"event_type": ev.label, "label": ev.label, "score": round(float(ev.score), 6),
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
def import_paho() -> ModuleType:
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise AuricleError(f"--mqtt needs the paho-mqtt package, which is not installed; {INSTALL_HINT}") \
            from None
    if not hasattr(mqtt, "CallbackAPIVersion"):
        raise AuricleError(f"--mqtt needs paho-mqtt 2.0 or newer (found an older one); {INSTALL_HINT}")
    return mqtt


class PublisherStats(TypedDict):
    """The publisher's counts (listen's summary ``"mqtt"``)."""
    broker: str
    device: str
    events: int
    published: int
    dropped: int
    undelivered: int
    queued_offline: int
    reconnects: int
    disconnects: int


class MqttPublisher:
    """One MQTT connection: discovery + availability on every connect, events with QoS 1, bounded queue.

    :meth:`publish_event` and :meth:`close` are called from one thread (the listening worker); paho's
    network loop runs in its own thread and only touches the connection flags, the acknowledgement set and
    the hold deadline. Events are held back for ``discovery_wait`` s after each discovery announcement (a
    timer thread then sends them, in order, under ``_send_lock``), so that an entity Home Assistant creates
    from that announcement is subscribed before its first event: nothing is lost on a first-ever run.
    """

    def __init__(self, cfg: MqttConfig, *, bundle_name: str, labels: Sequence[str],
                 log: TextIO | None = None) -> None:
        self.cfg = cfg
        self.bundle_name = bundle_name
        self.labels = tuple(labels)
        self._log_stream = log
        self._client: Client | None = None
        self._mqtt: ModuleType | None = None
        self._connected = threading.Event()
        self._first_answer = threading.Event()
        self._refused: str | None = None
        self._closing = False
        self._closed_stats: PublisherStats | None = None
        self._ack_lock = threading.Lock()      # never held while calling into paho (paho holds its own
        self._acked: set[int] = set()          # lock while it calls on_publish)
        self._pending: list[int] = []          # message ids of events not yet acknowledged, oldest first
        self._dropping = False
        self._send_lock = threading.RLock()    # the held list and the pending list; never taken in paho's thread
        self._held: list[str] = []             # event payloads waiting for the discovery hold to end
        self._hold_until = 0.0                 # time.monotonic() when the hold ends (set in paho's thread)
        self._hold_started = 0.0               # ... and when the hold now on began
        self._timer: threading.Timer | None = None   # the one timer that ends the hold (newest announcement)
        self._timer_lock = threading.Lock()
        self.events = self.published = self.dropped = self.queued_offline = 0
        self.connects = self.disconnects = 0

    # -- connection --------------------------------------------------------------------------------
    def _log(self, message: str, level: int = logging.INFO) -> None:
        """One ``mqtt: ...`` line: onto the ``log`` stream when one was given, else onto this module's logger."""
        if self._log_stream is None:
            _LOG.log(level, "mqtt: %s", message)
            return
        self._log_stream.write(f"mqtt: {message}\n")
        self._log_stream.flush()

    def _make_client(self) -> Client:
        mqtt = self._mqtt = import_paho()
        cfg = self.cfg
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"auricle-{cfg.device_id}-{os.getpid()}",
                             clean_session=True, protocol=mqtt.MQTTv311)
        client.max_queued_messages_set(cfg.queue_limit + CONTROL_HEADROOM)
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
            raise AuricleError(_connect_error(cfg, exc)) from None
        self._client = client
        client.loop_start()
        answered = self._first_answer.wait(cfg.connect_timeout)
        refused = self._refused                  # read before stopping: stopping calls on_disconnect
        if refused or not answered:
            self._closing = True
            self._stop_client()
            if refused:
                raise AuricleError(refused)
            raise AuricleError(f"the MQTT broker at {cfg.address} accepted the TCP connection but sent no MQTT "
                               f"answer (CONNACK) within {cfg.connect_timeout:g} s; check that HOST:PORT is an "
                               "MQTT broker's port, not another service (a TLS port needs --mqtt-tls)")
        return self

    def _stop_client(self) -> None:
        with self._timer_lock:
            if self._timer is not None:
                self._timer.cancel()
        client, self._client = self._client, None
        if client is not None:
            try:
                client.disconnect()
            finally:
                client.loop_stop()

    def _announce(self, client: Client) -> None:
        """Discovery config and "online", both retained (runs in paho's thread, on every connect)."""
        cfg = self.cfg
        config = discovery_config(cfg, bundle_name=self.bundle_name, labels=self.labels)
        now = time.monotonic()
        # a new hold, or the one that is on extended, to at most _HOLD_LIMIT waits from its start: announcements
        # more often than the wait (any client of the broker may publish them) must not hold events for ever
        if now >= self._hold_until:
            self._hold_started = now
        self._hold_until = min(now + cfg.discovery_wait, self._hold_started + _HOLD_LIMIT * cfg.discovery_wait)
        client.publish(cfg.discovery_topic, json.dumps(config), qos=1, retain=True)
        client.publish(cfg.availability_topic, ONLINE, qos=1, retain=True)
        self._arm(self._hold_until - now)

    def _arm(self, seconds: float) -> None:
        """(Re)start the timer that ends the hold; the one it replaces is cancelled, so a flood of
        ``homeassistant/status`` messages leaves one waiting thread, not one per message."""
        timer = threading.Timer(max(0.0, seconds), self._hold_over)
        timer.daemon = True
        with self._timer_lock:
            old, self._timer = self._timer, timer
            timer.start()
        if old is not None:
            old.cancel()

    def _hold_over(self) -> None:
        """The timer's end of a hold. A timer may wake before ``time.monotonic()`` says the hold is over (on
        Python 3.10 its timeout follows the wall clock, which a Pi steps at boot): then it waits again."""
        left = self._hold_until - time.monotonic()
        if self.connected and left > 0:
            self._arm(left)
        else:
            self._release()

    # paho callbacks (paho's network thread) ---------------------------------------------------------
    def _on_connect(self, client: Client, userdata: object, flags: ConnectFlags, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        if reason_code.is_failure:
            if self.connects == 0:
                self._refused = (f"the MQTT broker at {self.cfg.address} refused the connection ({reason_code});"
                                 " check --mqtt-user, --mqtt-password/--mqtt-password-file and --mqtt-tls")
                self._first_answer.set()
            else:
                self._log(f"{self.cfg.address} refused the reconnection ({reason_code}); retrying", logging.WARNING)
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

    def _on_disconnect(self, client: Client, userdata: object, flags: DisconnectFlags, reason_code: ReasonCode,
                       properties: Properties | None) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self.connects == 0 and not self._first_answer.is_set() and not self._closing:   # closed, no CONNACK
            self._refused = (f"the MQTT broker at {self.cfg.address} closed the connection without an MQTT "
                             f"answer ({reason_code}); check that HOST:PORT is an MQTT broker's port (a TLS "
                             "port needs --mqtt-tls) and its log")
            self._first_answer.set()
        if was_connected and not self._closing:
            self.disconnects += 1
            self._log(f"lost the connection to {self.cfg.address} ({reason_code}); reconnecting with backoff "
                      f"({self.cfg.reconnect_min:g} s doubling to {self.cfg.reconnect_max:g} s), holding up to "
                      f"{self.cfg.queue_limit} events", logging.WARNING)

    def _on_publish(self, client: Client, userdata: object, mid: int, reason_code: ReasonCode,
                    properties: Properties) -> None:
        with self._ack_lock:
            self._acked.add(mid)

    def _on_message(self, client: Client, userdata: object, message: MQTTMessage) -> None:
        if message.topic == self.cfg.status_topic and message.payload.strip().lower() == ONLINE.encode():
            self._announce(client)          # Home Assistant (re)started: it forgets non-retained state

    # -- events ----------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def pending(self) -> int:
        """Events not yet delivered: held for discovery, or sent and not acknowledged."""
        with self._send_lock:
            self._settle()
            return len(self._pending) + len(self._held)

    def _settle(self) -> None:
        """Move acknowledged events from pending to published (acks of control messages are dropped)."""
        with self._ack_lock:
            acked, self._acked = self._acked, set()
        if acked:
            with self._send_lock:
                keep = [mid for mid in self._pending if mid not in acked]
                self.published += len(self._pending) - len(keep)
                self._pending = keep

    def _holding(self) -> bool:
        return self.connected and time.monotonic() < self._hold_until

    def _release(self, *, force: bool = False) -> None:
        """Send the held events, in order, once the discovery hold is over (timer thread, ``publish_event``
        or ``close``)."""
        with self._send_lock:
            if self._client is None or (self._holding() and not force):
                return                            # a newer announcement holds them longer: its timer sends them
            held, self._held = self._held, []
            for payload in held:
                self._send(payload)

    def _send(self, payload: str) -> bool:
        """Hand one event to paho; ``False`` (counted as dropped) when paho's own queue is full."""
        info = self._client.publish(self.cfg.event_topic, payload, qos=1, retain=False)
        if info.rc == self._mqtt.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1
            return False
        self._pending.append(info.mid)
        return True

    def publish_event(self, ev: Event, *, source: str | None = None) -> bool:
        """Queue one event for delivery; ``False`` when the queue was full and it was dropped (counted)."""
        if self._client is None:
            raise AuricleError("MqttPublisher.publish_event called before connect() or after close()")
        payload = event_payload(ev, bundle_name=self.bundle_name, device_name=self.cfg.device_name, source=source)
        self._wait_for_room()
        with self._send_lock:
            if self._held and not self._holding():
                self._release()                   # the hold is over and its timer is late
            self.events += 1
            self._settle()
            full = len(self._pending) + len(self._held) >= self.cfg.queue_limit
            if not full and not self.connected:
                self.queued_offline += 1
            if not full and (self._holding() or self._held):      # behind held ones: keep the order
                self._held.append(json.dumps(payload))
                accepted = True
            else:
                accepted = not full and self._send(json.dumps(payload))
                self.dropped += full
        if not accepted:
            if not self._dropping:
                self._log(f"event queue full ({self.cfg.queue_limit} events waiting for {self.cfg.address}); "
                          "dropping new events until the broker is back", logging.WARNING)
            self._dropping = True
            return False
        self._dropping = False
        return True

    def _wait_for_room(self) -> None:
        """A queue filled by events held for discovery, with the broker connected, is not a broker that is
        away: wait for the hold to end and the broker to acknowledge them (at most ``discovery_wait`` +
        ``flush_seconds``) rather than drop the new event. A small ``--mqtt-queue`` on a first run lost
        every event past the queue size otherwise."""
        limit = self.cfg.queue_limit
        deadline = max(self._hold_until, time.monotonic()) + self.cfg.flush_seconds   # a late timer too
        if not (self.connected and (self._held or self._holding()) and self.pending >= limit):
            return
        while self.connected and self.pending >= limit and time.monotonic() < deadline:
            if self._held and not self._holding():
                self._release()
            time.sleep(0.01)

    def _wait_pending(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.02)

    def stats(self) -> PublisherStats:
        if self._closed_stats is not None:
            return self._closed_stats.copy()
        self._settle()
        return {"broker": self.cfg.address, "device": self.cfg.device_id, "events": self.events,
                "published": self.published, "dropped": self.dropped, "undelivered": self.pending,
                "queued_offline": self.queued_offline, "reconnects": max(0, self.connects - 1),
                "disconnects": self.disconnects}

    def close(self) -> PublisherStats:
        """Flush (up to ``flush_seconds``), publish "offline", disconnect; returns the final counts."""
        if self._closed_stats is not None:
            return self._closed_stats.copy()
        client = self._client
        if client is None:
            return self.stats()
        hold = self._hold_until - time.monotonic()
        if self._held and self.connected and hold > 0:    # held events still get their full flush time
            time.sleep(min(hold, self.cfg.discovery_wait))
        self._release(force=True)
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
        return stats.copy()

    def __enter__(self) -> "MqttPublisher":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _connect_error(cfg: MqttConfig, exc: BaseException) -> str:
    """One line for a failed TCP/TLS connection, naming what failed."""
    detail = " ".join(str(getattr(exc, "verify_message", "") or exc).split()) or type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the MQTT broker at {cfg.address} presented a TLS certificate that failed verification "
                f"({detail}); give the CA that signed it with --mqtt-ca FILE, and connect by the name or "
                "address the certificate names")
    if isinstance(exc, ssl.SSLError) or (cfg.tls and isinstance(exc, ConnectionResetError)):
        return (f"the TLS handshake with the MQTT broker at {cfg.address} failed ({detail}); check that this "
                "port speaks TLS (a plain MQTT port, usually 1883: leave out --mqtt-tls/--mqtt-ca/mqtts://)")
    return (f"cannot reach the MQTT broker at {cfg.address} ({detail}); check --mqtt HOST[:PORT] and that "
            "the broker is running")


def format_summary(d: PublisherStats) -> str:
    return (f"{d['published']} of {d['events']} events delivered to {d['broker']}, {d['dropped']} dropped "
            f"(queue full), {d['undelivered']} undelivered at exit, {d['queued_offline']} held while offline; "
            f"{d['reconnects']} reconnects")


def open_publisher(cfg: MqttConfig, bundle: Bundle, *, log: TextIO | None = None) -> MqttPublisher:
    """Connect a publisher for a loaded bundle (its non-background labels become the event types)."""
    labels = [lab for lab in bundle.labels if lab not in bundle.background_labels]
    return MqttPublisher(cfg, bundle_name=bundle.name, labels=labels, log=log).connect()
