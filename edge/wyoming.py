"""``python -m edge.wyoming --uri tcp://HOST:PORT [--bundle BUNDLE ...]``: a Wyoming wake-word server.

Home Assistant's voice pipeline (and any Wyoming client) connects, asks ``describe`` and streams audio; the
server runs the same :class:`edge.StreamingDetector` as ``edge.listen`` and answers with Wyoming events:

* ``describe`` -> ``info`` with one wake program per bundle; its models are the bundle's reportable
  (non-background) labels. A label served by two bundles is named ``BUNDLE/LABEL``, otherwise just ``LABEL``.
* ``detect`` (optional) -> only the named wake words are reported from then on (unknown names: an ``error``).
* ``audio-start`` / ``audio-chunk`` ... / ``audio-stop`` -> a ``detection`` (name, timestamp in ms of the
  stream: the audio-start timestamp plus the event time) for every event, and ``not-detected`` at the stop
  when the stream had none. Any standard rate the model can use (its own or higher: resampled as the
  microphone path is), 8/16/24/32-bit PCM, 1-8 channels (averaged to mono). A rate below the model's, or a chunk
  whose format differs from its stream's, gets an ``error`` event (code ``audio-format``) and is not used.
  A chunk with no ``audio-start`` before it starts a stream in its own format.

Every streaming connection has its own detectors (one per bundle, built at its first audio and returned to
a shared pool when it closes), so several clients at once get independent results; the inference runs in a
worker thread so that one busy client does not stall the others. The ``wyoming`` package (the ``wyoming``
extra) is imported only by this module.

Hostile or broken clients (see :mod:`edge.wyoming_wire`): every length an event announces is checked
before it is read (an audio-chunk carries at most ``chunk_seconds`` of its own format), an event must arrive
within ``event_seconds`` of its first byte, a silent connection is closed after ``--idle-timeout``, at most
``--max-clients`` connections are served (the rest get an ``error`` event, code ``busy``), only the usual
rates (8-48 kHz families) are accepted, and each bad event costs one short, escaped log line and an
``error`` event. A connection that ends without ``audio-stop`` still has its stream counted. There is no
authentication: see ``EXPOSURE``.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, Mapping, Sequence, TextIO

from edge.cliutil import HelpFormatter, add_bundle_argument, own_stderr, positive
from edge.errors import AuricleError, run_cli
from edge.settings import DetectorSettings, RuntimeOptions
from edge.wyoming_wire import (EXPOSURE, LOG_LIMIT, AudioStream, ServerLimits, WireError, audio_format_error, clean,
                               reach, read_event)

if TYPE_CHECKING:
    import numpy as np

    from edge.bundle import Bundle
    from edge.detector import StreamingDetector

# One BLAS thread (see edge.listen): only effective before numpy is first imported; a user setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__all__ = ["WakeWord", "WakeService", "wake_words", "build_info", "build_parser", "main", "cli", "serve",
           "DEFAULT_URI"]

DEFAULT_URI = "tcp://0.0.0.0:10400"
_INSTALL_HINT = "install it: `pip install 'wyoming>=1.5'` (or `pip install -e '.[wyoming]'`)"


try:   # the `wyoming` extra; without it the module still imports and main() says what to install
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.error import Error
    from wyoming.event import Event
    from wyoming.info import Attribution, Describe, Info, WakeModel, WakeProgram
    from wyoming.server import AsyncEventHandler as _HandlerBase
    from wyoming.server import AsyncServer
    from wyoming.wake import Detect, Detection, NotDetected
    _WYOMING_MISSING = False
except ImportError:
    _HandlerBase = object
    _WYOMING_MISSING = True


def import_wyoming() -> None:
    if _WYOMING_MISSING:
        raise AuricleError(f"edge.wyoming needs the wyoming package (1.5 or newer), which is not installed; "
                           f"{_INSTALL_HINT}")


@dataclasses.dataclass(frozen=True)
class WakeWord:
    name: str          # what describe lists and detection reports
    label: str         # the bundle's label
    bundle: int        # index into the service's bundles


def wake_words(bundles: Sequence[Bundle]) -> list[WakeWord]:
    """Reportable labels of every bundle; a label served by more than one bundle is named BUNDLE/LABEL."""
    reportable = [[lab for lab in b.labels if lab not in b.background_labels] for b in bundles]
    count: dict[str, int] = {}
    for labels in reportable:
        for lab in labels:
            count[lab] = count.get(lab, 0) + 1
    return [WakeWord(name=lab if count[lab] == 1 else f"{b.name}/{lab}", label=lab, bundle=i)
            for i, (b, labels) in enumerate(zip(bundles, reportable)) for lab in labels]


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("auricle")
    except Exception:
        return "unknown"


def build_info(bundles: Sequence[Bundle], words: Sequence[WakeWord]) -> Any:
    """The ``info`` answer to ``describe``: one wake program per bundle, one model per wake word."""
    version = _version()
    attribution = Attribution(name="auricle", url="")
    programs = []
    for i, b in enumerate(bundles):
        models = [WakeModel(name=w.name, attribution=attribution, installed=True,
                            description=f"{w.label} (auricle bundle {b.name})", version=version, languages=[],
                            phrase=w.label) for w in words if w.bundle == i]
        programs.append(WakeProgram(name=b.name, attribution=attribution, installed=True,
                                    description=f"auricle sound events: bundle {b.name}", version=version,
                                    models=models))
    return Info(wake=programs)


class WakeService:
    """What all connections share: the bundles, their detector settings (one each) and runtime options, the
    limits, a pool of idle detectors (memory bounded by the clients streaming at once), and totals."""

    def __init__(self, bundles: Sequence[Bundle], settings: Sequence[DetectorSettings] | None = None,
                 runtime: RuntimeOptions | None = None, *, log: TextIO | None = None,
                 limits: ServerLimits | None = None) -> None:
        self.bundles = tuple(bundles)
        self.settings = tuple(settings or (DetectorSettings.from_bundle(b) for b in self.bundles))
        self.runtime = runtime or RuntimeOptions()
        self.limits = limits or ServerLimits()
        self.words = wake_words(self.bundles)
        self.info = build_info(self.bundles, self.words)
        self.min_rate = max(b.feature_config.sample_rate for b in self.bundles)
        self.description = ""          # the detector settings in effect, for the log
        self._log_stream = log
        self._idle: list[list[StreamingDetector]] = []   # detector sets of connections that have gone, for reuse
        self.active = 0                    # connections being served now
        self.connections = self.refused = self.streams = self.detections = 0
        self.audio_seconds = 0.0

    def log(self, message: str) -> None:
        print(f"wyoming: {clean(message, LOG_LIMIT)}", file=self._log_stream or sys.stderr, flush=True)

    def make_detectors(self, sample_rate: int) -> list[StreamingDetector]:
        """One fresh detector per bundle (own interpreter and stream state)."""
        from edge.detector import StreamingDetector

        return [StreamingDetector(b, settings, self.runtime, sample_rate=sample_rate)
                for b, settings in zip(self.bundles, self.settings, strict=True)]

    def take_detectors(self, sample_rate: int) -> list[StreamingDetector]:
        """A detector set for a new stream: an idle one reset to ``sample_rate``, else a fresh one."""
        try:
            detectors = self._idle.pop()           # atomic: two connections never get the same set
        except IndexError:
            return self.make_detectors(sample_rate)
        for det in detectors:
            det.reset(sample_rate=sample_rate)
        return detectors

    def return_detectors(self, detectors: list[StreamingDetector] | None) -> None:
        if detectors and len(self._idle) < self.limits.max_clients:
            self._idle.append(detectors)

    def word_for(self, bundle: int, label: str) -> WakeWord | None:
        for w in self.words:
            if w.bundle == bundle and w.label == label:
                return w
        return None

    def format_error(self, rate: Any, width: Any, channels: Any) -> str | None:
        """Why a stream format cannot be used, or ``None``."""
        return audio_format_error(rate, width, channels, self.min_rate)

    def payload_limit(self, event_type: str, data: Mapping[str, Any]) -> tuple[int, str]:
        """The largest payload an event may announce: an audio-chunk, ``chunk_seconds`` of its own format."""
        if not AudioChunk.is_type(event_type):
            return self.limits.max_other_payload, ""
        rate, width, channels = (data.get(k) for k in ("rate", "width", "channels"))
        if self.format_error(rate, width, channels) is not None:
            return self.limits.max_other_payload, "an audio-chunk of an unusable format"
        seconds = self.limits.chunk_seconds
        return (int(seconds * rate) * width * channels,
                f"at most {seconds:g} s of {rate} Hz/{width * 8}-bit/{channels} ch audio per chunk")


class DetectionHandler(_HandlerBase):
    """One client connection: its own stream state; a detector set while it streams."""

    def __init__(self, reader: Any, writer: Any, *, service: WakeService) -> None:
        super().__init__(reader, writer)
        self.service = service
        self.detectors: list[StreamingDetector] | None = None
        self.names: set[str] | None = None
        self.stream: AudioStream | None = None
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "client"
        service.connections += 1

    async def run(self) -> None:
        svc = self.service
        if svc.active >= svc.limits.max_clients:
            svc.refused += 1
            text = f"server busy: {svc.active} clients connected (--max-clients {svc.limits.max_clients}); try " \
                   "again later"
            if svc.refused & (svc.refused - 1) == 0:        # the 1st, 2nd, 4th, 8th ...: a flood stays a few lines
                svc.log(f"{self.peer}: refused, {text} ({svc.refused} refused so far)")
            with contextlib.suppress(Exception):
                await self.write_event(Error(text=text, code="busy").event())
            self.writer.close()
            return
        svc.active += 1
        try:
            await self._serve()
        finally:
            svc.active -= 1
            self._end_stream("connection closed without audio-stop")
            svc.return_detectors(self.detectors)
            self.detectors = None
            self.writer.close()

    async def _serve(self) -> None:
        limits = self.service.limits
        try:
            while True:
                event = await read_event(self.reader, limits, Event, self.service.payload_limit)
                if event is None or not await self.handle_event(event):
                    return
        except WireError as exc:
            await self._close_with(str(exc), exc.code)
        except (ConnectionError, asyncio.IncompleteReadError):     # reset, or gone in the middle of an event
            self.service.log(f"{self.peer}: connection lost")
        except Exception as exc:          # a bug must not take the server (or other clients) down
            await self._close_with(f"internal error: {type(exc).__name__}: {exc}", "internal")

    async def _close_with(self, text: str, code: str) -> None:
        with contextlib.suppress(Exception):
            await self._error(text, code)
        self.writer.close()

    async def write_event(self, event: Any) -> None:
        """Send one event; a client that does not read its answers is dropped after ``event_seconds``."""
        try:
            await asyncio.wait_for(super().write_event(event), self.service.limits.event_seconds)
        except asyncio.TimeoutError:
            raise ConnectionError("the client does not read its answers") from None

    async def handle_event(self, event: Any) -> bool:
        try:
            await self._dispatch(event)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.service.log(f"{self.peer}: the client went away")
            return False
        except (KeyError, TypeError, ValueError, AttributeError) as exc:     # fields missing or of a wrong type
            await self._error(f"{event.type} is malformed ({type(exc).__name__}: {exc})", "bad-event")
            return False
        return True

    async def _dispatch(self, event: Any) -> None:
        if Describe.is_type(event.type):
            await self.write_event(self.service.info.event())
        elif Detect.is_type(event.type):
            await self._select(event.data.get("names"))
        elif AudioStart.is_type(event.type):
            d = event.data
            await self._start(d["rate"], d["width"], d["channels"], d.get("timestamp"))
        elif AudioChunk.is_type(event.type):
            d = event.data
            await self._chunk(d["rate"], d["width"], d["channels"], d.get("timestamp"), event.payload or b"")
        elif AudioStop.is_type(event.type):
            await self._stop()

    async def _error(self, text: str, code: str) -> None:
        self.service.log(f"{self.peer}: {text}")
        await self.write_event(Error(text=clean(text, LOG_LIMIT), code=code).event())

    async def _select(self, names: Any) -> None:
        if not names:
            self.names = None
            return
        limit = self.service.limits.max_names
        if not isinstance(names, list) or len(names) > limit or not all(isinstance(n, str) for n in names):
            count = len(names) if isinstance(names, list) else 1
            await self._error(f"detect needs a list of at most {limit} wake word names (got {count} "
                              "item(s)); the selection is unchanged", "bad-event")
            return
        known = {w.name for w in self.service.words}
        unknown = [n for n in names if n not in known]
        self.names = {n for n in names if n in known}
        if unknown:
            shown = ", ".join(clean(n, 40) for n in unknown[:5]) + (f" (+{len(unknown) - 5} more)"
                                                                    if len(unknown) > 5 else "")
            await self._error(f"unknown wake word(s) {shown}; this server has {', '.join(sorted(known))}",
                              "unknown-wake-word")

    async def _start(self, rate: Any, width: Any, channels: Any, timestamp: Any) -> None:
        self._end_stream("audio-start without audio-stop")
        problem = self.service.format_error(rate, width, channels)
        base = timestamp if isinstance(timestamp, int) and not isinstance(timestamp, bool) else 0
        self.stream = AudioStream(rate=rate, width=width, channels=channels, base_ms=base) if problem is None \
            else AudioStream(rate=0, width=1, channels=1, base_ms=0, usable=False)
        if problem is not None:
            await self._error(problem, "audio-format")

    async def _prepare(self, s: AudioStream) -> bool:
        """The connection's detectors, ready for stream ``s`` (built only once audio arrives)."""
        try:
            if self.detectors is None:
                self.detectors = await asyncio.to_thread(self.service.take_detectors, s.rate)
            else:
                await asyncio.to_thread(lambda: [det.reset(sample_rate=s.rate) for det in self.detectors])
        except AuricleError as exc:
            s.usable = False
            await self._error(str(exc), "audio-format")
            return False
        s.prepared = True
        return True

    async def _chunk(self, rate: Any, width: Any, channels: Any, timestamp: Any, audio: bytes) -> None:
        if self.stream is None:                     # no audio-start: this chunk's format starts a stream
            await self._start(rate, width, channels, timestamp)
        s = self.stream
        if not s.usable:
            return
        if (rate, width, channels) != (s.rate, s.width, s.channels):
            if not s.warned:
                s.warned = True
                await self._error(f"audio-chunk format {clean(rate, 20)} Hz/{clean(width, 20)} bytes/"
                                  f"{clean(channels, 20)} ch differs from its stream's {s.rate} Hz/{s.width} "
                                  f"bytes/{s.channels} ch; such chunks are ignored -- send audio-stop and a new "
                                  "audio-start to change the format", "audio-format")
            return
        if audio:
            await self._run(s, s.take(audio))

    async def _run(self, s: AudioStream, samples: np.ndarray | None) -> None:
        if samples is None or (not s.prepared and not await self._prepare(s)):
            return
        found = await asyncio.to_thread(self._push, samples)
        for name, t in found:
            if self.names is None or name in self.names:
                s.detections += 1
                self.service.detections += 1
                await self.write_event(Detection(name=name, timestamp=s.base_ms + int(round(t * 1000))).event())

    def _push(self, samples: np.ndarray) -> list[tuple[str, float]]:
        """All bundles' events for one block of samples, in time order, as (wake word name, seconds)."""
        found = []
        for i, det in enumerate(self.detectors or ()):
            for ev in det.push(samples):
                word = self.service.word_for(i, ev.label)
                if word is not None:
                    found.append((word.name, float(ev.time)))
        found.sort(key=lambda f: f[1])
        return found

    async def _stop(self) -> None:
        s = self.stream
        if s is not None and s.usable:
            await self._run(s, s.take(b"", flush=True))
        if s is None or s.detections == 0:
            await self.write_event(NotDetected().event())
        self._end_stream("")

    def _end_stream(self, how: str) -> None:
        """Count the current stream (an audio-stop, or the connection or a new audio-start ending it)."""
        s, self.stream = self.stream, None
        if s is None or not s.usable:
            return
        seconds = s.samples / s.rate
        self.service.streams += 1
        self.service.audio_seconds += seconds
        self.service.log(f"{self.peer}: stream of {seconds:.1f} s at {s.rate} Hz, {s.width * 8}-bit, "
                         f"{s.channels} ch: {s.detections} detections" + (f" ({how})" if how else ""))


def _bound_uri(server: Any, uri: str) -> str:
    """The URI actually served (a tcp port 0 becomes the port the system picked)."""
    sockets = getattr(getattr(server, "_server", None), "sockets", None) or []
    if uri.startswith("tcp://") and sockets:
        host, port = sockets[0].getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        return f"tcp://{host}:{port}"
    return uri


def server_for(uri: str) -> Any:
    """A wyoming ``AsyncServer`` for ``uri`` (nothing is bound yet); a bad URI is an :class:`AuricleError`."""
    try:
        return AsyncServer.from_uri(uri)
    except ValueError as exc:
        raise AuricleError(f"--uri {uri!r}: {exc}; e.g. --uri tcp://0.0.0.0:10400") from None


async def serve(uri: str, service: WakeService, *, ready: Any = None) -> None:
    """Serve until SIGINT/SIGTERM (or, for ``stdio://``, until stdin ends)."""
    from functools import partial

    server = server_for(uri)
    factory = partial(DetectionHandler, service=service)
    if uri.startswith("stdio://"):
        await server.run(factory)
        return
    try:
        await server.start(factory)
    except OSError as exc:
        detail = exc.strerror or str(exc)
        raise AuricleError(f"cannot serve on {uri} ({detail}); stop the other server or pick another --uri") \
            from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    names = ", ".join(w.name for w in service.words)
    if service.description:
        service.log(f"detector: {service.description}")
    service.log(f"serving {len(service.words)} wake words ({names}) from "
                f"{', '.join(b.name for b in service.bundles)} on {_bound_uri(server, uri)}")
    service.log(f"no authentication: {reach(_bound_uri(server, uri))}; "
                f"at most {service.limits.max_clients} clients at once")
    if ready is not None:
        ready(_bound_uri(server, uri))
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.stop()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edge.wyoming", formatter_class=HelpFormatter,
                                description="Wyoming wake-word server: Home Assistant's voice pipeline (or any "
                                            "Wyoming client) streams audio, auricle answers with detections. "
                                            + EXPOSURE)
    add_bundle_argument(p, dest="bundles", several=True,
                        help="model bundle folder(s) to serve (default: the shipped bundle, or $AURICLE_BUNDLE); "
                             "repeatable")
    DetectorSettings.add_arguments(p)
    RuntimeOptions.add_arguments(p)
    p.add_argument("--uri", default=DEFAULT_URI, help=f"where to listen: tcp://HOST:PORT, unix://PATH or stdio:// "
                   f"(default {DEFAULT_URI}: every interface, no authentication; see above)")
    d = ServerLimits()
    p.add_argument("--max-clients", type=positive(int, "--max-clients"), default=d.max_clients, metavar="N",
                   help=f"connections served at once; more are refused with an error event (default "
                        f"{d.max_clients})")
    p.add_argument("--idle-timeout", type=positive(float, "--idle-timeout"), default=d.idle_seconds, metavar="SECONDS",
                   help=f"close a connection that sends no event for this long (default {d.idle_seconds:g})")
    p.add_argument("--event-timeout", type=positive(float, "--event-timeout"), default=d.event_seconds,
                   metavar="SECONDS",
                   help=f"close a connection whose event is not complete this long after its first byte "
                        f"(default {d.event_seconds:g})")
    return p


def limits_from_args(args: argparse.Namespace) -> ServerLimits:
    for flag, value in (("--idle-timeout", args.idle_timeout), ("--event-timeout", args.event_timeout)):
        if value > 1e6:
            raise AuricleError(f"{flag} {value:g} must be under 10^6 seconds")
    return ServerLimits(max_clients=args.max_clients, idle_seconds=args.idle_timeout,
                        event_seconds=args.event_timeout)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    limits = limits_from_args(args)
    import_wyoming()
    server_for(args.uri)                                  # a bad URI fails before any model is loaded
    from edge import load_bundle

    bundles = [load_bundle(path) for path in (args.bundles or [None])]
    names = [b.name for b in bundles]
    if len(set(names)) != len(names):
        raise AuricleError(f"bundle {next(n for n in names if names.count(n) > 1)} is given twice; list each "
                           "--bundle once")
    settings = [DetectorSettings.from_args(args, b) for b in bundles]
    service = WakeService(bundles, settings, RuntimeOptions.from_args(args), log=own_stderr(), limits=limits)
    if not service.words:
        raise AuricleError("the bundle(s) have no reportable labels (all are background); nothing to serve")
    probe = service.make_detectors(service.min_rate)     # fail now, not per client, on bad settings or models
    service.description = "; ".join(det.describe() for det in probe)
    del probe
    asyncio.run(serve(args.uri, service))
    service.log(f"stopped: {service.connections} connections ({service.refused} refused: busy), "
                f"{service.streams} streams, "
                f"{service.audio_seconds:.1f} s of audio, {service.detections} detections")
    return 0


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
