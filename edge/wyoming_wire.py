"""Bounded reading of Wyoming events and safe echoing of client text, for :mod:`edge.wyoming`.

A Wyoming event is a JSON header line, then ``data_length`` bytes of JSON data, then ``payload_length``
bytes of payload. The ``wyoming`` package reads whatever lengths a header announces and waits forever for
them; here every length is checked against a limit *before* anything is read, the first byte of an event
starts a clock that the rest of the event must beat, and a connection that sends nothing is closed after a
while. Whatever a client sends that ends up in a log line or an error event goes through :func:`clean`
first (control characters escaped, length capped), so no client text can start or stretch a log line.

Standard library only; the ``Event`` class is passed in by the caller (it lives in the ``wyoming`` package).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import TYPE_CHECKING, Awaitable, Callable, TypeGuard, TypeVar

if TYPE_CHECKING:
    import numpy as np

T = TypeVar("T")
E = TypeVar("E")     # the caller's event class (wyoming.event.Event)

__all__ = ["AudioStream", "EXPOSURE", "reach", "ServerLimits", "WireError", "clean", "read_event", "STANDARD_RATES"]

# the usual rates of the 8 kHz, 11.025 kHz and 12 kHz families; others would need huge resampling filters
STANDARD_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
MAX_WIDTH, MAX_CHANNELS = 4, 8
LOG_LIMIT = 2000                   # characters in one log line (the rest is cut, saying how much)
TEXT_LIMIT = 200                   # characters of one client-supplied string quoted in a message
MIN_PUSH = 0.05                    # seconds of audio decoded and run at once: tiny chunks are gathered

EXPOSURE = ("The service has no authentication and no encryption: anyone who can reach its address can stream "
            "audio to it and learn its wake words. The default tcp://0.0.0.0:10400 listens on every network "
            "interface, as Home Assistant on another machine needs; on a shared or untrusted network bind one "
            "LAN address (--uri tcp://192.168.1.20:10400) and firewall the port to the Home Assistant host, or "
            "bind tcp://127.0.0.1:10400 when Home Assistant runs on this machine.")


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    """What one connection may send and how long it may take (``--max-clients``, ``--idle-timeout`` ...)."""
    max_clients: int = 10           # connections served at once; more get an ``error`` event and are closed
    idle_seconds: float = 120.0     # a connection that sends no event for this long is closed
    event_seconds: float = 10.0     # an event's bytes must all arrive within this, counted from its first
    chunk_seconds: float = 3.0      # one audio-chunk carries at most this much audio of its own format
    max_header: int = 8192          # bytes in an event's JSON header line
    max_data: int = 65536           # bytes of an event's JSON data
    max_other_payload: int = 65536  # payload bytes of any event other than audio-chunk
    max_names: int = 64             # names in one ``detect``

    def __post_init__(self) -> None:
        for name in ("max_clients", "max_header", "max_data", "max_names"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("idle_seconds", "event_seconds", "chunk_seconds"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0")


class WireError(Exception):
    """A client sent something that cannot be read; ``code`` goes into the ``error`` event."""

    def __init__(self, text: str, code: str = "bad-event") -> None:
        super().__init__(text)
        self.code = code


def clean(text: object, limit: int = TEXT_LIMIT) -> str:
    """``text`` with control and other non-printable characters escaped, cut to about ``limit`` characters."""
    s = str(text)
    if not s.isprintable():
        s = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in s)
    if len(s) > limit:
        s = f"{s[:limit]}...({len(s) - limit} more characters)"
    return s


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def audio_format_error(rate: object, width: object, channels: object, min_rate: int) -> str | None:
    """Why an audio format cannot be used (any client value, checked before it sizes anything), or ``None``."""
    if not (_whole(rate) and _whole(width) and _whole(channels)):
        return (f"audio format rate={clean(rate, 20)} width={clean(width, 20)} channels={clean(channels, 20)} "
                "must be whole numbers")
    if width not in range(1, MAX_WIDTH + 1):
        return f"audio width {width} bytes is not supported; send 8, 16, 24 or 32-bit PCM (width 1-4)"
    if channels not in range(1, MAX_CHANNELS + 1):
        return f"audio with {channels} channels cannot be used; send 1 to {MAX_CHANNELS} channels"
    if rate < min_rate:
        return (f"audio rate {rate} Hz is below the model's {min_rate} Hz; send {min_rate} Hz or more (higher "
                "rates are resampled)")
    if rate not in STANDARD_RATES:
        usable = ", ".join(str(r) for r in STANDARD_RATES if r >= min_rate)
        return f"audio rate {rate} Hz is not supported; send one of {usable} Hz"
    return None


def _length(header: dict, key: str, limit: int, what: str) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise WireError(f"{what}: {key} {clean(value, 40)} is not a byte count")
    if value > limit:
        raise WireError(f"{what} announces {key} {value} bytes; at most {limit} are accepted", "too-large")
    return value


_TIMEOUT_AT = getattr(asyncio, "timeout_at", None)    # Python 3.11+: a timer, not a task per read


class _Clock:
    """Awaits reads against one deadline: ``asyncio.timeout_at`` where there is one (ten times cheaper than
    ``wait_for``, which makes a task per call), else ``wait_for`` (Python 3.10). Both raise
    ``asyncio.TimeoutError`` (the built-in ``TimeoutError`` on 3.11+)."""

    def __init__(self, seconds: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + seconds

    async def __call__(self, read: Awaitable[T]) -> T:
        if _TIMEOUT_AT is None:
            return await asyncio.wait_for(read, max(0.0, self.deadline - self.loop.time()))
        async with _TIMEOUT_AT(self.deadline):
            return await read


async def _header(reader: asyncio.StreamReader, first: bytes, limits: ServerLimits, within: _Clock) -> dict:
    try:
        line = first + await within(reader.readline())
    except ValueError:               # longer than the stream reader's limit: asyncio dropped it
        raise WireError(f"an event header is longer than {limits.max_header} bytes", "too-large") from None
    if not line.endswith(b"\n"):
        raise asyncio.IncompleteReadError(line, None)
    if len(line) > limits.max_header:
        raise WireError(f"an event header is {len(line)} bytes; at most {limits.max_header} are accepted",
                        "too-large")
    try:
        header = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):      # RecursionError: nesting too deep
        raise WireError(f"an event header is not JSON: {clean(line[:80])}") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str) or \
            not 0 < len(header["type"]) <= 64 or not isinstance(header.get("data", {}), dict):
        raise WireError(f"an event header needs a short string 'type' (and a JSON object 'data'): "
                        f"{clean(line[:80])}")
    return header


async def _data(reader: asyncio.StreamReader, header: dict, limits: ServerLimits, within: _Clock) -> dict:
    what = clean(header["type"], 64)
    data = dict(header.get("data") or {})
    size = _length(header, "data_length", limits.max_data, what)
    if size:
        raw = await within(reader.readexactly(size))
        try:
            extra = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):      # RecursionError: nesting too deep
            raise WireError(f"{what}: its data is not JSON") from None
        if not isinstance(extra, dict):
            raise WireError(f"{what}: its data is not a JSON object")
        data.update(extra)
    return data


async def read_event(reader: asyncio.StreamReader, limits: ServerLimits, make_event: Callable[..., E],
                     payload_limit: Callable[[str, dict], tuple[int, str]]) -> E | None:
    """The next event (built by ``make_event(type=, data=, payload=)``), or ``None`` at the end of the stream.

    ``payload_limit(type, data)`` -> (largest payload accepted, why that limit) is asked after the data is
    read and before any payload byte is. Raises :class:`WireError` for anything malformed, too large, or too
    slow; ``asyncio.IncompleteReadError`` when the client goes away in the middle of an event.
    """
    try:
        first = await _Clock(limits.idle_seconds)(reader.readexactly(1))
    except asyncio.IncompleteReadError:
        return None
    except asyncio.TimeoutError:
        raise WireError(f"no event for {limits.idle_seconds:g} s; closing the idle connection", "timeout") \
            from None
    within = _Clock(limits.event_seconds)
    try:
        header = await _header(reader, first, limits, within)
        data = await _data(reader, header, limits, within)
        limit, why = payload_limit(header["type"], data)
        what = clean(header["type"], 64)
        size = _length(header, "payload_length", limit, f"{what} ({why})" if why else what)
        payload = await within(reader.readexactly(size)) if size else None
    except asyncio.TimeoutError:
        raise WireError(f"an event was not complete {limits.event_seconds:g} s after its first byte; closing "
                        "the connection", "timeout") from None
    return make_event(type=header["type"], data=data, payload=payload)


@dataclasses.dataclass
class AudioStream:
    """One audio stream of a connection: its format, counts, and the bytes not yet decoded."""

    rate: int
    width: int
    channels: int
    base_ms: int                       # the audio-start timestamp: detection timestamps count from it
    usable: bool = True
    detections: int = 0
    samples: int = 0
    prepared: bool = False             # the connection's detectors are reset for this stream
    held: bytearray = dataclasses.field(default_factory=bytearray)   # bytes not yet decoded
    warned: bool = False

    @property
    def frame(self) -> int:
        return self.width * self.channels

    def take(self, audio: bytes, *, flush: bool = False) -> np.ndarray | None:
        """Add ``audio``; the whole frames held, decoded, once they make ``MIN_PUSH`` s (any at ``flush``)."""
        from edge.pcm import pcm_bytes_to_float32

        self.held += audio
        whole = len(self.held) - len(self.held) % self.frame
        if not whole or (not flush and whole < MIN_PUSH * self.rate * self.frame):
            return None
        x = pcm_bytes_to_float32(bytes(self.held[:whole]), self.width, self.channels)
        del self.held[:whole]
        self.samples += x.shape[0]
        return x


def reach(uri: str) -> str:
    """Who can use a server on ``uri`` (the exposure, said once at start)."""
    host = uri.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if not uri.startswith("tcp://"):
        return "local clients only"
    if host in ("0.0.0.0", "::", ""):
        return "any host that can reach this machine can connect (bind 127.0.0.1 or one LAN address to limit it)"
    if host.startswith("127.") or host == "::1":
        return "only this machine can connect"
    return f"any host that can reach {host} can connect"
