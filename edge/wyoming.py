"""``python -m edge.wyoming --uri tcp://HOST:PORT [--model BUNDLE ...]``: a Wyoming wake-word server.

Home Assistant's voice pipeline (and any Wyoming client) connects, asks ``describe`` and streams audio; the
server runs the same :class:`edge.StreamingDetector` as ``edge.listen`` and answers with Wyoming events:

* ``describe`` -> ``info`` with one wake program per bundle; its models are the bundle's reportable
  (non-background) labels. A label served by two bundles is named ``BUNDLE/LABEL``, otherwise just ``LABEL``.
* ``detect`` (optional) -> only the named wake words are reported from then on (unknown names: an ``error``).
* ``audio-start`` / ``audio-chunk`` ... / ``audio-stop`` -> a ``detection`` (name, timestamp in ms of the
  stream: the audio-start timestamp plus the event time) for every event, and ``not-detected`` at the stop
  when the stream had none. Any rate the model can use (its own or higher: resampled as the microphone path
  is), 8/16/24/32-bit PCM, any number of channels (averaged to mono). A rate below the model's, or a chunk
  whose format differs from its stream's, gets an ``error`` event (code ``audio-format``) and is not used.
  A chunk with no ``audio-start`` before it starts a stream in its own format.

Every connection has its own detectors (one per bundle), so several clients at once get independent
results; the inference of each chunk runs in a worker thread so that one busy client does not stall the
others. The ``wyoming`` package (the ``wyoming`` extra) is imported only by this module.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
from typing import Any, Mapping, Sequence, TextIO

from edge.errors import AuricleError, run_cli

# One BLAS thread (see edge.listen): only effective before numpy is first imported; a user setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__all__ = ["WakeWord", "WakeService", "wake_words", "build_info", "build_parser", "main", "cli", "serve",
           "DEFAULT_URI"]

DEFAULT_URI = "tcp://0.0.0.0:10400"
_INSTALL_HINT = "install it: `pip install 'wyoming>=1.5'` (or `pip install -e '.[wyoming]'`)"


try:   # the `wyoming` extra; without it the module still imports and main() says what to install
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.error import Error
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


def wake_words(bundles: Sequence[Any]) -> list[WakeWord]:
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


def build_info(bundles: Sequence[Any], words: Sequence[WakeWord]) -> Any:
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
    """What all connections share: the loaded bundles, the detector settings, and running totals."""

    def __init__(self, bundles: Sequence[Any], detector_kwargs: Mapping[str, Any] | None = None, *,
                 log: TextIO | None = None) -> None:
        self.bundles = tuple(bundles)
        self.detector_kwargs = dict(detector_kwargs or {})
        self.words = wake_words(self.bundles)
        self.info = build_info(self.bundles, self.words)
        self.min_rate = max(b.feature_config.sample_rate for b in self.bundles)
        self.description = ""          # the detector settings in effect, for the log
        self._log_stream = log
        self.connections = self.streams = self.detections = 0
        self.audio_seconds = 0.0

    def log(self, message: str) -> None:
        print(f"wyoming: {message}", file=self._log_stream or sys.stderr, flush=True)

    def make_detectors(self, sample_rate: int) -> list[Any]:
        """One fresh detector per bundle (own interpreter and stream state) for one connection."""
        from edge import StreamingDetector

        return [StreamingDetector(b, sample_rate=sample_rate, **self.detector_kwargs) for b in self.bundles]

    def word_for(self, bundle: int, label: str) -> WakeWord | None:
        for w in self.words:
            if w.bundle == bundle and w.label == label:
                return w
        return None

    def format_error(self, rate: int, width: int, channels: int) -> str | None:
        """Why a stream format cannot be used, or ``None``."""
        if width not in (1, 2, 3, 4):
            return f"audio width {width} bytes is not supported; send 8, 16, 24 or 32-bit PCM (width 1-4)"
        if channels < 1:
            return f"audio with {channels} channels cannot be used; send 1 or more channels"
        if rate < self.min_rate:
            return (f"audio rate {rate} Hz is below the model's {self.min_rate} Hz; send {self.min_rate} Hz or "
                    "more (higher rates are resampled)")
        return None


@dataclasses.dataclass
class _Stream:
    rate: int
    width: int
    channels: int
    base_ms: int                       # the audio-start timestamp: detection timestamps count from it
    usable: bool = True
    detections: int = 0
    samples: int = 0
    leftover: bytes = b""              # a partial frame carried to the next chunk
    warned: bool = False

    def decode(self, audio: bytes) -> Any:
        from edge.pcm import pcm_bytes_to_float32

        frame = self.width * self.channels
        data = self.leftover + audio
        whole = len(data) - len(data) % frame
        self.leftover = data[whole:]
        x = pcm_bytes_to_float32(data[:whole], self.width, self.channels)
        self.samples += x.shape[0]
        return x


class DetectionHandler(_HandlerBase):
    """One client connection: its own detectors, its own stream state."""

    def __init__(self, reader: Any, writer: Any, *, service: WakeService) -> None:
        super().__init__(reader, writer)
        self.service = service
        self.detectors: list[Any] | None = None
        self.names: set[str] | None = None
        self.stream: _Stream | None = None
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "client"
        service.connections += 1

    async def run(self) -> None:
        try:
            await super().run()
        except (ConnectionError, asyncio.IncompleteReadError):     # reset while reading
            self.service.log(f"{self.peer}: connection lost")

    async def handle_event(self, event: Any) -> bool:
        try:
            await self._dispatch(event)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.service.log(f"{self.peer}: the client went away")
            return False
        except Exception as exc:          # a bug must not take the server (or other clients) down
            self.service.log(f"{self.peer}: internal error on {event.type}: {type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                await self.write_event(Error(text=f"internal error: {type(exc).__name__}: {exc}",
                                             code="internal").event())
            return False
        return True

    async def _dispatch(self, event: Any) -> None:
        if Describe.is_type(event.type):
            await self.write_event(self.service.info.event())
        elif Detect.is_type(event.type):
            await self._select(Detect.from_event(event).names)
        elif AudioStart.is_type(event.type):
            start = AudioStart.from_event(event)
            await self._start(start.rate, start.width, start.channels, start.timestamp)
        elif AudioChunk.is_type(event.type):
            await self._chunk(AudioChunk.from_event(event))
        elif AudioStop.is_type(event.type):
            await self._stop()

    async def _error(self, text: str, code: str) -> None:
        self.service.log(f"{self.peer}: {text}")
        await self.write_event(Error(text=text, code=code).event())

    async def _select(self, names: Sequence[str] | None) -> None:
        if not names:
            self.names = None
            return
        known = {w.name for w in self.service.words}
        unknown = [n for n in names if n not in known]
        self.names = {n for n in names if n in known}
        if unknown:
            await self._error(f"unknown wake word(s) {', '.join(unknown)}; this server has "
                              f"{', '.join(sorted(known))}", "unknown-wake-word")

    async def _start(self, rate: int, width: int, channels: int, timestamp: int | None) -> None:
        self.stream = _Stream(rate=int(rate), width=int(width), channels=int(channels),
                              base_ms=int(timestamp or 0))
        problem = self.service.format_error(self.stream.rate, self.stream.width, self.stream.channels)
        if problem is None:
            try:
                await asyncio.to_thread(self._prepare, self.stream.rate)
            except AuricleError as exc:
                problem = str(exc)
        if problem is not None:
            self.stream.usable = False
            await self._error(problem, "audio-format")

    def _prepare(self, rate: int) -> None:
        if self.detectors is None:
            self.detectors = self.service.make_detectors(rate)
        else:
            for det in self.detectors:
                det.reset(sample_rate=rate)

    async def _chunk(self, chunk: Any) -> None:
        if self.stream is None:                     # no audio-start: this chunk's format starts a stream
            await self._start(chunk.rate, chunk.width, chunk.channels, chunk.timestamp)
        s = self.stream
        if not s.usable:
            return
        if (chunk.rate, chunk.width, chunk.channels) != (s.rate, s.width, s.channels):
            if not s.warned:
                s.warned = True
                await self._error(f"audio-chunk format {chunk.rate} Hz/{chunk.width} bytes/{chunk.channels} "
                                  f"ch differs from its stream's {s.rate} Hz/{s.width} bytes/{s.channels} ch;"
                                  " such chunks are ignored -- send audio-stop and a new audio-start to "
                                  "change the format", "audio-format")
            return
        found = await asyncio.to_thread(self._push, s.decode(chunk.audio))
        for name, t in found:
            if self.names is None or name in self.names:
                s.detections += 1
                self.service.detections += 1
                await self.write_event(Detection(name=name, timestamp=s.base_ms + int(round(t * 1000))).event())

    def _push(self, samples: Any) -> list[tuple[str, float]]:
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
        s, self.stream = self.stream, None
        if s is None or s.detections == 0:
            await self.write_event(NotDetected().event())
        if s is not None:
            seconds = s.samples / s.rate if s.rate else 0.0
            self.service.streams += 1
            self.service.audio_seconds += seconds
            self.service.log(f"{self.peer}: stream of {seconds:.1f} s at {s.rate} Hz, {s.width * 8}-bit, "
                             f"{s.channels} ch: {s.detections} detections")


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
    if ready is not None:
        ready(_bound_uri(server, uri))
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.stop()


def _own_stderr() -> TextIO:
    """The server's log on a copy of fd 2: a model loading for one client holds fd 2 back (the TFLite
    runtime's chatter) while other clients' lines are still being logged."""
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding=sys.stderr.encoding,
                         errors=sys.stderr.errors or "backslashreplace")
    except (OSError, ValueError, AttributeError):
        return sys.stderr


def build_parser() -> argparse.ArgumentParser:
    from edge.listen import add_detector_arguments

    p = argparse.ArgumentParser(prog="python -m edge.wyoming", conflict_handler="resolve",
                                description="Wyoming wake-word server: Home Assistant's voice pipeline (or any "
                                            "Wyoming client) streams audio, auricle answers with detections.")
    add_detector_arguments(p)
    p.add_argument("--bundle", "--model", dest="bundles", action="extend", nargs="+", metavar="BUNDLE",
                   help="model bundle folder(s) to serve (default: the shipped bundle, or $AURICLE_BUNDLE); "
                        "repeatable")
    p.add_argument("--uri", default=DEFAULT_URI, help=f"where to listen: tcp://HOST:PORT, unix://PATH or stdio:// "
                   f"(default {DEFAULT_URI})")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import_wyoming()
    server_for(args.uri)                                  # a bad URI fails before any model is loaded
    from edge import load_bundle

    bundles = [load_bundle(path) for path in (args.bundles or [None])]
    names = [b.name for b in bundles]
    if len(set(names)) != len(names):
        raise AuricleError(f"bundle {next(n for n in names if names.count(n) > 1)} is given twice; list each "
                           "--model once")
    kwargs = {"hop": args.hop, "threshold": args.threshold, "smooth": args.smooth, "min_gap": args.min_gap,
              "num_threads": args.threads, "coral": args.coral}
    service = WakeService(bundles, kwargs, log=_own_stderr())
    if not service.words:
        raise AuricleError("the bundle(s) have no reportable labels (all are background); nothing to serve")
    probe = service.make_detectors(service.min_rate)     # fail now, not per client, on bad settings or models
    service.description = "; ".join(det.describe() for det in probe)
    del probe
    asyncio.run(serve(args.uri, service))
    service.log(f"stopped: {service.connections} connections, {service.streams} streams, "
                f"{service.audio_seconds:.1f} s of audio, {service.detections} detections")
    return 0


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
