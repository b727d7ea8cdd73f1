"""Settings of ``python -m edge.listen --mqtt``: the ``--mqtt*`` options, checked, as one :class:`MqttConfig`.

Standard library only (see :mod:`edge.mqtt` for the publisher, topics and what is sent).
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import socket
from pathlib import Path

from edge.errors import AuricleError

__all__ = ["MqttConfig", "add_mqtt_arguments", "mqtt_config_from_args", "parse_broker", "device_id"]

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
DEFAULT_TOPIC = "auricle"
DEFAULT_DISCOVERY_PREFIX = "homeassistant"
DEFAULT_QUEUE = 100            # events held while the broker is away
RECONNECT_MIN = 1              # seconds before the first reconnect attempt; doubles each failure ...
RECONNECT_MAX = 30             # ... up to this
CONNECT_TIMEOUT = 10.0         # seconds for the first connection (TCP + CONNACK)
FLUSH_SECONDS = 5.0            # on exit, how long unacknowledged events may take to be delivered
DISCOVERY_WAIT = 2.0           # events are held this long after discovery is (re)sent: Home Assistant needs
                               # ~0.15 s to create the entity and subscribe to its topic (more on a busy Pi)
KEEPALIVE = 30
ONLINE, OFFLINE = "online", "offline"
CONTROL_HEADROOM = 16          # paho's own queue bound = event queue + room for discovery/availability
INSTALL_HINT = "install it: `pip install 'paho-mqtt>=2'` (or `pip install -e '.[mqtt]'`)"


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
    discovery_wait: float = DISCOVERY_WAIT
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
    from edge.cliutil import positive as _positive

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
    wait_type = _positive(float, "--mqtt-discovery-wait", allow_zero=True)
    g.add_argument("--mqtt-discovery-wait", metavar="SECONDS", type=wait_type, default=DISCOVERY_WAIT,
                   help=f"hold events this long after discovery is sent (at start, on reconnects, and when Home "
                        f"Assistant announces itself), so that a newly created entity gets them all (default "
                        f"{DISCOVERY_WAIT:g})")
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
    wait = args.mqtt_discovery_wait
    if not 0 <= wait <= 60:
        raise AuricleError(f"--mqtt-discovery-wait {wait:g} must be from 0 to 60 seconds")
    name = (args.device_name or socket.gethostname() or "auricle").strip()
    return MqttConfig(host=host, port=port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT),
                      username=args.mqtt_user or None, password=password or None, tls=tls, ca_file=args.mqtt_ca,
                      topic_prefix=_check_prefix("--mqtt-topic", args.mqtt_topic),
                      discovery_prefix=_check_prefix("--mqtt-discovery-prefix", args.mqtt_discovery_prefix),
                      device_name=name or "auricle", queue_limit=int(queue), discovery_wait=float(wait))
