"""Audio sources: a numpy array (:class:`ArraySource`) or a file (:class:`FileSource`); the microphone is in
:mod:`edge.microphone`.

numpy only at import time; ``soundfile`` is imported lazily inside :class:`FileSource` (the stdlib ``wave``
reader of :mod:`edge.wavio` is the fallback).

Every source yields :class:`Chunk` objects -- mono float32 samples at ``source.sample_rate`` plus the index
of their first sample in the source's own stream. A chunk whose ``start`` is past the end of the previous
one means audio was dropped in between (a stalled consumer); the worker resets its state there (see
docs/DESIGN.md, "Data flow when listening").
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import threading
import time
import wave
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Iterator, Union

import numpy as np

from edge.cstreams import captured_c_stderr
from edge.errors import AudioError, AuricleError
from edge.pcm import to_mono_float32
from edge.wavio import WaveReader

if TYPE_CHECKING:
    import soundfile

    #: what a FileSource decodes with: soundfile where installed, else the stdlib ``wave`` reader
    AudioReader = Union[soundfile.SoundFile, WaveReader]

__all__ = ["Chunk", "Source", "ArraySource", "FileSource", "read_audio", "check_source_rate"]


def check_source_rate(rate: float, model_rate: int, what: str = "audio", *, upsample: bool = False) -> int:
    """A source rate the runtime can use: a positive integer >= the model's rate (it is resampled down), or
    any positive integer with ``upsample`` (a clip classifier resamples a lower rate up)."""
    if not rate or rate <= 0 or not math.isfinite(rate):
        raise AudioError(f"{what} has sample rate {rate!r}; it needs a positive rate")
    if abs(rate - round(rate)) > 1e-6:
        raise AudioError(f"{what} has a non-integer sample rate {rate} Hz; resample it to {model_rate} Hz first")
    rate = int(round(rate))
    if rate < model_rate and not upsample:
        raise AudioError(f"{what} is {rate} Hz but the model needs {model_rate} Hz audio (content up to "
                         f"{model_rate // 2} Hz); use a source recorded at {model_rate} Hz or more")
    return rate


@dataclasses.dataclass(frozen=True)
class Chunk:
    """``samples``: mono float32 at the source rate; ``start``: index of the first sample in the stream."""
    start: int
    samples: np.ndarray


class Source:
    """Base class. ``chunks()`` yields :class:`Chunk` until the audio ends or :meth:`stop` is called."""

    sample_rate: int = 0
    name: str = "source"
    kind: str = "source"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.dropped_blocks = 0
        self.dropped_samples = 0
        self.overflows = 0

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def chunks(self) -> Iterator[Chunk]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def describe(self) -> str:
        return f"{self.kind} {self.name} at {self.sample_rate} Hz"


class _Pacer:
    """Sleeps so that sample ``n`` is released no earlier than ``n / rate`` seconds after the start."""

    def __init__(self, rate: int, stop: threading.Event) -> None:
        self.rate, self.stop_event, self.t0 = rate, stop, time.monotonic()

    def wait_until(self, n_samples: int) -> None:
        delay = self.t0 + n_samples / self.rate - time.monotonic()
        if delay > 0:
            self.stop_event.wait(delay)


class ArraySource(Source):
    """A numpy waveform, fed in chunks of ``chunk_size`` samples (``realtime`` paces it like a microphone)."""

    kind = "array"

    def __init__(self, samples: np.ndarray, sample_rate: int, *, chunk_size: int = 1024, realtime: bool = False,
                 name: str = "array") -> None:
        super().__init__()
        if chunk_size <= 0:
            raise AuricleError(f"chunk_size={chunk_size} must be a positive number of samples")
        self._x = to_mono_float32(samples)
        self.sample_rate = int(sample_rate)
        self.chunk_size = int(chunk_size)
        self.realtime = realtime
        self.name = name

    @property
    def duration(self) -> float:
        return self._x.size / self.sample_rate

    def chunks(self) -> Iterator[Chunk]:
        pacer = _Pacer(self.sample_rate, self._stop) if self.realtime else None
        for start in range(0, self._x.size, self.chunk_size):
            if self.stopped:
                return
            block = self._x[start:start + self.chunk_size]
            if pacer:
                pacer.wait_until(start + block.size)
                if self.stopped:
                    return
            yield Chunk(start, block)


def _import_soundfile() -> ModuleType | None:
    try:
        import soundfile
    except (ImportError, OSError):  # not installed, or libsndfile missing
        return None
    return soundfile


class FileSource(Source):
    """An audio file decoded with soundfile (WAV/FLAC/OGG/MP3...) or, without it, the stdlib ``wave``.

    Opening checks the file, so an unreadable one fails before any output. ``realtime`` paces it.
    """

    kind = "file"

    def __init__(self, path: str | os.PathLike[str], *, chunk_size: int = 4096, realtime: bool = False) -> None:
        super().__init__()
        if chunk_size <= 0:
            raise AuricleError(f"chunk_size={chunk_size} must be a positive number of samples")
        self.path = Path(path)
        self.name = str(path)
        self.chunk_size = int(chunk_size)
        self.realtime = realtime
        self._reader = self._open()
        self.sample_rate = int(self._reader.samplerate)
        self.channels = int(self._reader.channels)
        self.frames = int(self._reader.frames)

    def _open(self) -> AudioReader:
        p = self.path
        if not p.exists():
            raise AudioError(f"cannot read audio file {p}: no such file; check the path")
        if p.is_dir():
            raise AudioError(f"cannot read audio file {p}: it is a folder; pass a WAV file")
        if not os.access(p, os.R_OK):
            raise AudioError(f"cannot read audio file {p}: permission denied; fix its permissions")
        sf = _import_soundfile()
        if sf is not None:
            try:
                with captured_c_stderr():        # libsndfile's decoders print notes on fd 2 for junk input
                    return sf.SoundFile(str(p))
            except Exception as exc:  # soundfile.LibsndfileError / RuntimeError
                detail = " ".join(str(exc).split())
                raise AudioError(f"cannot decode audio file {p} ({detail}); convert it to a WAV file "
                                 "(16-bit PCM), e.g. `ffmpeg -i IN -ar 16000 -ac 1 OUT.wav`") from None
        try:
            return WaveReader(str(p))
        except (wave.Error, EOFError, OSError) as exc:
            raise AudioError(f"cannot decode audio file {p} with the wave module ({exc}); convert it to a "
                             "16-bit PCM WAV, or `pip install soundfile` for other formats") from None

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    def chunks(self) -> Iterator[Chunk]:
        pacer = _Pacer(self.sample_rate, self._stop) if self.realtime else None
        start = 0
        reader = self._reader
        while not self.stopped:
            try:
                if isinstance(reader, WaveReader):
                    block = reader.read(self.chunk_size)
                else:
                    block = reader.read(self.chunk_size, dtype="float32", always_2d=True)
            except Exception as exc:
                raise AudioError(f"cannot decode audio file {self.path} after {start} samples ({exc}); "
                                 "the file is truncated or corrupt -- re-export it") from None
            if block.shape[0] == 0:
                return
            mono = block[:, 0].copy() if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)
            if pacer:
                pacer.wait_until(start + mono.size)
                if self.stopped:
                    return
            yield Chunk(start, mono)
            start += mono.size

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._reader.close()


def read_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Decode a whole file to mono float32; returns ``(samples, sample_rate)``."""
    with FileSource(path, chunk_size=1 << 16) as src:
        parts = [c.samples for c in src.chunks()]
        rate = src.sample_rate
    return (np.concatenate(parts) if parts else np.empty(0, np.float32)), rate
