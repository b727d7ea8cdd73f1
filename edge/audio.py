"""Audio in: sources (microphone, file, numpy array), a streaming resampler and a WAV recorder.

numpy only at import time. ``sounddevice`` (PortAudio) is imported lazily inside :class:`Microphone` and the
device helpers; ``soundfile`` lazily inside :class:`FileSource` (the stdlib ``wave`` module is the fallback).

Every source yields :class:`Chunk` objects -- mono float32 samples at ``source.sample_rate`` plus the index
of their first sample in the source's own stream. A chunk whose ``start`` is past the end of the previous
one means audio was dropped in between (a stalled consumer); the worker resets its state there.

Capture (see ../shared/docs/DESIGN.md, "Data flow when listening"): the PortAudio callback only copies the
block into a bounded queue and counts overflow flags. When the queue holds more than ``max_queue_seconds``
the *oldest* blocks are dropped and counted; memory never grows past that bound. The consumer takes the
whole queue at once, so what it reads is always a contiguous run of audio.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import math
import os
import sys
import threading
import time
import wave
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edge.errors import AudioError, AuricleError, captured_c_stderr

__all__ = [
    "Chunk",
    "Source",
    "ArraySource",
    "FileSource",
    "Microphone",
    "Resampler",
    "resample",
    "read_audio",
    "WavRecorder",
    "list_input_devices",
    "format_device_list",
    "import_sounddevice",
    "check_source_rate",
    "to_mono_float32",
]

DEFAULT_QUEUE_SECONDS = 5.0
COMMON_RATES = (48000, 44100, 32000, 96000, 88200, 24000, 22050)


# -- helpers -------------------------------------------------------------------------------------------
def to_mono_float32(samples: np.ndarray) -> np.ndarray:
    """``(n,)`` or ``(n, channels)`` audio -> mono float32 in [-1, 1). Integer PCM is scaled by its range."""
    x = np.asarray(samples)
    if np.issubdtype(x.dtype, np.integer):
        if x.dtype == np.uint8:
            x = (x.astype(np.float32) - 128.0) / 128.0
        else:
            x = x.astype(np.float32) / np.float32(np.iinfo(x.dtype).max + 1)
    elif x.dtype != np.float32:
        x = x.astype(np.float32)
    if x.ndim == 2:
        x = x[:, 0] if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float32)
    elif x.ndim != 1:
        raise AudioError(f"expected audio of shape (n,) or (n, channels), got {x.shape}")
    return x


def check_source_rate(rate: float, model_rate: int, what: str = "audio") -> int:
    """A source rate the runtime can use: a positive integer >= the model's rate (it is resampled down)."""
    if not rate or rate <= 0 or not math.isfinite(rate):
        raise AudioError(f"{what} has sample rate {rate!r}; it needs a positive rate")
    if abs(rate - round(rate)) > 1e-6:
        raise AudioError(f"{what} has a non-integer sample rate {rate} Hz; resample it to {model_rate} Hz first")
    rate = int(round(rate))
    if rate < model_rate:
        raise AudioError(f"{what} is {rate} Hz but the model needs {model_rate} Hz audio (content up to "
                         f"{model_rate // 2} Hz); use a source recorded at {model_rate} Hz or more")
    return rate


@dataclasses.dataclass(frozen=True)
class Chunk:
    """``samples``: mono float32 at the source rate; ``start``: index of the first sample in the stream."""
    start: int
    samples: np.ndarray


# -- resampling ----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _kernel(up: int, down: int, zero_crossings: int, rolloff: float, beta: float) -> tuple[np.ndarray, int]:
    """Polyphase table ``(up, 2*half)`` of a Kaiser-windowed sinc, rows normalised to unit DC gain."""
    fc = 0.5 * min(1.0, up / down) * rolloff            # cutoff in cycles per input sample
    half = int(math.ceil(zero_crossings / (2.0 * fc)))  # taps each side, in input samples
    phase = np.arange(up)[:, None] / up
    k = np.arange(2 * half)[None, :]
    u = phase + (half - 1) - k                          # input-sample offset of each tap
    arg = np.clip(1.0 - (u / half) ** 2, 0.0, None)
    win = np.i0(beta * np.sqrt(arg)) / np.i0(beta)
    taps = 2.0 * fc * np.sinc(2.0 * fc * u) * win
    taps /= taps.sum(axis=1, keepdims=True)
    taps = np.ascontiguousarray(taps)
    taps.setflags(write=False)
    return taps, half


class Resampler:
    """Streaming rational resampler (Kaiser-windowed sinc, linear phase), numpy only, float32.

    Output sample ``n`` is the band-limited value at input time ``n * in_rate / out_rate``: no delay is
    added, the stream just lags by ``half`` input samples until the taps have arrived. ``push`` returns the
    outputs that are complete; the result is bit-identical for any chunking of the same input (each output
    is one fixed-order dot product of the same taps and samples).
    """

    _MAX_OUT = 1024  # outputs per inner step: bounds temporary memory (~0.4 MB) for huge pushes

    def __init__(self, in_rate: int, out_rate: int, *, zero_crossings: int = 16, rolloff: float = 0.92,
                 beta: float = 8.6) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise AudioError(f"cannot resample {in_rate} Hz -> {out_rate} Hz; rates must be positive")
        g = math.gcd(int(in_rate), int(out_rate))
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        self.up, self.down = self.out_rate // g, self.in_rate // g
        taps, self.half = _kernel(self.up, self.down, zero_crossings, float(rolloff), float(beta))
        self._taps = taps.astype(np.float32)
        self._single_phase = self.up == 1
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(self.half - 1, dtype=np.float32)   # holds input from global index _base on
        self._base = -(self.half - 1)
        self._next = 0                                           # next output index

    def push(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        buf = np.concatenate((self._buf, x)) if self._buf.size else x
        end = self._base + buf.size                               # one past the last input index held
        last_j0 = end - 1 - self.half                             # newest usable centre sample
        if last_j0 < 0:
            self._buf = buf.copy() if buf is x else buf
            return np.empty(0, dtype=np.float32)
        n_end = -((-(last_j0 + 1) * self.up) // self.down)       # outputs [_next, n_end) are complete
        n0 = self._next
        out = np.empty(max(0, n_end - n0), dtype=np.float32)
        if out.size:
            rows = np.lib.stride_tricks.sliding_window_view(buf, 2 * self.half)
            for a in range(n0, n_end, self._MAX_OUT):
                b = min(n_end, a + self._MAX_OUT)
                j0, ph = np.divmod(np.arange(a, b, dtype=np.int64) * self.down, self.up)
                taken = rows[j0 - (self.half - 1) - self._base]      # (outputs, taps) copy
                taken *= self._taps[0] if self._single_phase else self._taps[ph]
                np.add.reduce(taken, axis=1, out=out[a - n0:b - n0])
        self._next = n_end
        keep_from = (n_end * self.down) // self.up - (self.half - 1)  # first tap of the next output
        self._buf = buf[keep_from - self._base:].copy()
        self._base = keep_from
        return out


def resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Offline resampling of a whole signal (same filter as :class:`Resampler`, tail flushed)."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if int(in_rate) == int(out_rate):
        return x.copy()
    r = Resampler(in_rate, out_rate)
    n_out = -((-x.size * r.up) // r.down)
    y = np.concatenate((r.push(x), r.push(np.zeros(r.half + 1, np.float32))))
    return y[:n_out]


# -- sources ----------------------------------------------------------------------------------------------
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

    def __exit__(self, *exc: Any) -> None:
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


def _import_soundfile() -> Any | None:
    try:
        import soundfile
    except (ImportError, OSError):  # not installed, or libsndfile missing
        return None
    return soundfile


class _WaveReader:
    """Stdlib fallback for PCM WAV (8/16/24/32-bit integer) when soundfile is unavailable."""

    def __init__(self, path: str) -> None:
        self._w = wave.open(path, "rb")
        self.samplerate = self._w.getframerate()
        self.channels = self._w.getnchannels()
        self.frames = self._w.getnframes()
        self._width = self._w.getsampwidth()

    def read(self, n: int) -> np.ndarray:
        raw = self._w.readframes(n)
        w, ch = self._width, self.channels
        if w == 1:
            x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
        elif w == 2:
            x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
        elif w == 3:
            b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
            v = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16))
            v = np.where(v >= 1 << 23, v - (1 << 24), v)
            x = v.astype(np.float32) / float(1 << 23)
        else:
            x = (np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
        return x.reshape(-1, ch)

    def close(self) -> None:
        self._w.close()


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

    def _open(self) -> Any:
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
                return sf.SoundFile(str(p))
            except Exception as exc:  # soundfile.LibsndfileError / RuntimeError
                detail = " ".join(str(exc).split())
                raise AudioError(f"cannot decode audio file {p} ({detail}); convert it to a WAV file "
                                 "(16-bit PCM), e.g. `ffmpeg -i IN -ar 16000 -ac 1 OUT.wav`") from None
        try:
            return _WaveReader(str(p))
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
                if isinstance(reader, _WaveReader):
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


# -- PortAudio / sounddevice -------------------------------------------------------------------------
def _quiet_c_stderr():
    """Silence ALSA/PortAudio's C-level chatter on fd 2 while probing (AURICLE_AUDIO_DEBUG=1 keeps it)."""
    return captured_c_stderr("AURICLE_AUDIO_DEBUG")


def import_sounddevice() -> Any:
    """Import sounddevice lazily; turn a missing PortAudio into a one-line fix."""
    if "sounddevice" in sys.modules:
        return sys.modules["sounddevice"]
    try:
        with _quiet_c_stderr():
            import sounddevice
    except OSError as exc:
        raise AudioError(f"the PortAudio library was not found ({exc}); install it: `sudo apt install "
                         "libportaudio2` (Debian, Ubuntu, Raspberry Pi OS)") from None
    except ImportError:
        raise AudioError("the sounddevice package is not installed; `pip install sounddevice` "
                         "(it also needs `sudo apt install libportaudio2`)") from None
    return sounddevice


def list_input_devices() -> list[dict[str, Any]]:
    sd = import_sounddevice()
    with _quiet_c_stderr():
        devices = sd.query_devices()
        try:
            default_in = sd.default.device[0]
        except Exception:
            default_in = -1
    out = []
    for d in devices:
        if d["max_input_channels"] > 0:
            out.append({"index": d["index"], "name": d["name"], "channels": d["max_input_channels"],
                        "default_samplerate": d["default_samplerate"], "default": d["index"] == default_in})
    return out


def format_device_list() -> str:
    devices = list_input_devices()
    if not devices:
        return ("no audio input devices found (check `arecord -l`, plug in a microphone, or define an "
                "ALSA pcm in ~/.asoundrc)")
    lines = ["input devices (use --device ID or a unique part of the NAME; * = default):"]
    for d in devices:
        mark = "*" if d["default"] else " "
        lines.append(f"{mark} {d['index']:>3}  {d['name']}  ({d['channels']} ch, default "
                     f"{d['default_samplerate']:.0f} Hz)")
    return "\n".join(lines)


def _resolve_input_device(sd: Any, device: int | str | None) -> dict[str, Any]:
    hint = "run `python -m edge.listen --list-devices` to see them"
    if device is None:
        try:
            with _quiet_c_stderr():
                return dict(sd.query_devices(kind="input"))
        except Exception:
            names = [d["name"] for d in list_input_devices()]
            if names:
                raise AudioError(f"no default audio input device; pass --device with one of: "
                                 f"{', '.join(repr(n) for n in names)}") from None
            raise AudioError("no audio input device found: PortAudio sees no microphone; plug one in and "
                             "check `arecord -l`, or pass --file WAV") from None
    key: int | str = device
    if isinstance(device, str) and device.strip().lstrip("-").isdigit():
        key = int(device)
    try:
        with _quiet_c_stderr():
            info = dict(sd.query_devices(key))
    except (ValueError, sd.PortAudioError) as exc:
        raise AudioError(f"unknown --device {device!r} ({' '.join(str(exc).split())}); {hint}") from None
    if info.get("max_input_channels", 0) < 1:
        raise AudioError(f"--device {device!r} ({info.get('name')}) has no inputs; {hint}")
    return info


def _supports(sd: Any, index: int, rate: int, channels: int, dtype: str) -> bool:
    try:
        with _quiet_c_stderr():
            sd.check_input_settings(device=index, samplerate=rate, channels=channels, dtype=dtype)
        return True
    except Exception:
        return False


def _choose_format(sd: Any, info: dict[str, Any], model_rate: int) -> tuple[int, int, str]:
    """(rate, channels, dtype): the model rate if the device has it, else its native rate (resampled later).

    16-bit samples are preferred: what most microphones deliver, half the queue memory, and converted to
    float exactly as a 16-bit WAV file is (so a recording replays bit-identically).
    """
    index = int(info["index"])
    channel_options = [1] + ([2] if info["max_input_channels"] >= 2 else [])
    native = int(round(info.get("default_samplerate") or 0))
    rates = [model_rate] + [r for r in (native, *COMMON_RATES) if r > model_rate]
    seen: list[int] = []
    for rate in rates:
        if rate in seen:
            continue
        seen.append(rate)
        for ch in channel_options:
            for dtype in ("int16", "float32"):
                if _supports(sd, index, rate, ch, dtype):
                    return rate, ch, dtype
    raise AudioError(f"input device {info['name']!r} supports none of {', '.join(map(str, seen))} Hz (its "
                     f"default is {native} Hz); the model needs {model_rate} Hz or more -- pick another "
                     "--device, or use an ALSA `plug` device (e.g. plughw:CARD) that converts rates")


class Microphone(Source):
    """Live capture through PortAudio (sounddevice.InputStream, int16 where the device allows, else float32).

    Opens the device at the model rate when it supports it, else at its native rate (the worker resamples).
    The callback copies each block into a bounded queue (``max_queue_seconds``); on overflow the oldest
    blocks are dropped and counted. ``chunks()`` drains the queue and yields contiguous runs.
    """

    kind = "microphone"

    def __init__(self, device: int | str | None = None, *, model_rate: int, blocksize: int = 0,
                 max_queue_seconds: float = DEFAULT_QUEUE_SECONDS) -> None:
        super().__init__()
        self._sd = import_sounddevice()
        info = _resolve_input_device(self._sd, device)
        self.device_index = int(info["index"])
        self.name = str(info["name"])
        self.sample_rate, self.channels, self.dtype = _choose_format(self._sd, info, int(model_rate))
        self.blocksize = int(blocksize)
        self._capacity = max(1, int(max_queue_seconds * self.sample_rate))
        self._queue: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self._queued = 0
        self._written = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stream: Any = None
        self.blocks = 0

    # runs on PortAudio's thread: copy, count, never block for long, never compute
    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status.input_overflow:
            self.overflows += 1
        block = indata.copy()
        with self._lock:
            self._queue.append((self._written, block))
            self._written += frames
            self._queued += frames
            self.blocks += 1
            while self._queued > self._capacity and len(self._queue) > 1:
                _, old = self._queue.popleft()
                self._queued -= old.shape[0]
                self.dropped_blocks += 1
                self.dropped_samples += old.shape[0]
        self._ready.set()

    def start(self) -> None:
        if self._stream is not None:
            return
        try:
            with _quiet_c_stderr():
                self._stream = self._sd.InputStream(device=self.device_index, samplerate=self.sample_rate,
                                                    channels=self.channels, dtype=self.dtype,
                                                    blocksize=self.blocksize, callback=self._callback)
                self._stream.start()
        except Exception as exc:
            self._stream = None
            raise AudioError(f"cannot open input device {self.name!r} at {self.sample_rate} Hz "
                             f"({' '.join(str(exc).split())}); check it with `arecord -l` or pick another "
                             "--device") from None

    def _drain(self) -> collections.deque:
        with self._lock:
            blocks, self._queue = self._queue, collections.deque()
            self._queued = 0
        return blocks

    def chunks(self) -> Iterator[Chunk]:
        self.start()
        while not self.stopped:
            if not self._ready.wait(0.05):
                if not self._stream.active and not self._queue:
                    if self.stopped:
                        return
                    raise AudioError(f"capture from {self.name!r} stopped (device unplugged or busy?); "
                                     "check it with `arecord -l` and restart")
                continue
            self._ready.clear()
            blocks = self._drain()
            if not blocks or self.stopped:
                continue
            # the drained blocks are one contiguous run (drops only ever remove the oldest): one chunk
            start = blocks[0][0]
            data = blocks[0][1] if len(blocks) == 1 else np.concatenate([b for _, b in blocks])
            del blocks
            yield Chunk(start, to_mono_float32(data))

    def stop(self) -> None:
        super().stop()
        self._ready.set()

    def close(self) -> None:
        self.stop()
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception), _quiet_c_stderr():
                stream.stop()
                stream.close()

    def describe(self) -> str:
        return f"microphone {self.name!r} (device {self.device_index}) at {self.sample_rate} Hz, " \
               f"{self.channels} ch, {self.dtype}"


# -- recording ---------------------------------------------------------------------------------------
class WavRecorder:
    """Writes what a source delivered (mono, its own rate, 16-bit PCM) to a WAV, for debugging.

    Dropped audio is written as silence so that times in the file match event times. Replaying the file
    with ``--file`` reproduces the run.
    """

    def __init__(self, folder: str | os.PathLike[str], *, sample_rate: int, tag: str = "capture") -> None:
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)[:40] or "capture"
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = folder / f"auricle-{stamp}-{safe}.wav"
            n = 1
            while path.exists():
                n += 1
                path = folder / f"auricle-{stamp}-{safe}-{n}.wav"
            self._w = wave.open(str(path), "wb")
        except OSError as exc:
            raise AudioError(f"cannot write recordings to --record {folder} ({exc}); pick a writable folder") \
                from None
        self.path = path
        self._w.setnchannels(1)
        self._w.setsampwidth(2)
        self._w.setframerate(int(sample_rate))
        self.samples = 0

    def write(self, samples: np.ndarray) -> None:
        x = np.clip(np.rint(np.asarray(samples, dtype=np.float32) * 32768.0), -32768, 32767).astype("<i2")
        self._w.writeframes(x.tobytes())
        self.samples += x.size

    def write_silence(self, n: int) -> None:
        zeros = np.zeros(min(n, 1 << 16), dtype="<i2").tobytes()
        while n > 0:
            k = min(n, 1 << 16)
            self._w.writeframes(zeros[:2 * k])
            n -= k
            self.samples += k

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._w.close()


