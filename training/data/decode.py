"""Decoding any audio file to mono float32 at one rate (:func:`load_audio`), with one reason when it cannot.

WAV/FLAC/OGG through soundfile; m4a, mp3, aac, wma, opus and webm through pydub with the ffmpeg binary of
``imageio-ffmpeg`` (no system ffmpeg or ffprobe needed). Audio is mixed to mono and resampled with soxr.
Empty, truncated, undecodable and non-finite files raise :class:`AudioError`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
import re
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import AudioError, AuricleError
from training.data.naming import AUDIO_EXTENSIONS

# soundfile (libsndfile) reads these; ogg falls back to ffmpeg if libsndfile cannot.
_SOUNDFILE_EXTS = frozenset({".wav", ".flac", ".ogg"})
# extension -> (pydub/ffmpeg input format, decoders to try in order). A codec must be named, else pydub calls
# ffprobe, which imageio-ffmpeg does not ship.
_FFMPEG_FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    ".m4a": ("m4a", ("aac", "alac")),
    ".mp3": ("mp3", ("mp3",)),
    ".aac": ("aac", ("aac",)),
    ".wma": ("asf", ("wmav2", "wmav1", "wmapro", "wmalossless")),
    ".opus": ("ogg", ("opus",)),
    ".webm": ("webm", ("opus", "vorbis")),
    ".ogg": ("ogg", ("vorbis", "opus", "flac")),
}


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """A file's native properties (before mixing and resampling)."""

    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _wav_truncation(data: bytes) -> str | None:
    """A reason when a RIFF/WAVE file's data chunk promises more bytes than the file holds (libsndfile
    silently reads what is there)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if chunk == b"data":
            available = len(data) - pos - 8
            if size in (0, 0xFFFFFFFF) or size <= available + 1:  # unknown size (streamed) or complete
                return None
            return f"truncated WAV: header promises {size} bytes of audio, file holds {available}"
        pos += 8 + size + (size & 1)
    return None


@functools.lru_cache(maxsize=1)
def _audio_segment() -> Any:
    """pydub's AudioSegment wired to the ffmpeg binary inside imageio-ffmpeg (imported lazily)."""
    try:
        with warnings.catch_warnings():  # pydub warns at import when no ffmpeg is on PATH
            warnings.simplefilter("ignore", RuntimeWarning)
            from pydub import AudioSegment
        import imageio_ffmpeg
    except ImportError as exc:
        raise AudioError(f"decoding this format needs pydub and imageio-ffmpeg ({exc}); "
                         "pip install -e '.[train]'") from None
    try:
        AudioSegment.converter = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise AudioError(f"imageio-ffmpeg has no ffmpeg binary ({exc}); reinstall imageio-ffmpeg") from None
    return AudioSegment


_SF_PREFIX = re.compile(r"^Error opening <[^>]*>:\s*")
_FFMPEG_PREFIX = re.compile(r"^(\[[^\]]*\]\s*)+")


def _ffmpeg_reason(text: str) -> str:
    """One line from ffmpeg's stderr: the library messages (``[demuxer @ 0x..] msg``), else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    msgs: list[str] = []
    for ln in lines:
        if _FFMPEG_PREFIX.match(ln):
            msg = _FFMPEG_PREFIX.sub("", ln)
            if msg and msg not in msgs:
                msgs.append(msg)
    reason = "; ".join(msgs[-3:]) if msgs else (lines[-1] if lines else "no output")
    return reason[:300]


def _decode_ffmpeg(path: Path, ext: str) -> tuple[np.ndarray, int]:
    fmt, codecs = _FFMPEG_FORMATS[ext]
    AudioSegment = _audio_segment()
    from pydub.exceptions import CouldntDecodeError

    reasons = []
    for codec in codecs:
        try:
            seg = AudioSegment.from_file(str(path), format=fmt, codec=codec)
        except CouldntDecodeError as exc:
            reasons.append(f"{codec}: {_ffmpeg_reason(str(exc))}")
            continue
        except OSError as exc:
            raise AudioError(f"cannot run ffmpeg ({exc.strerror or exc}); reinstall imageio-ffmpeg") from None
        width = int(seg.sample_width)
        samples = np.asarray(seg.get_array_of_samples())  # signed ints (pydub un-biases 8-bit)
        x = samples.astype(np.float32).reshape(-1, max(int(seg.channels), 1)) / np.float32(2 ** (8 * width - 1))
        return x, int(seg.frame_rate)
    distinct = {r.split(": ", 1)[1] for r in reasons}
    detail = distinct.pop() if len(distinct) == 1 else "; ".join(reasons)
    raise AudioError(f"ffmpeg cannot decode it as {fmt} with {'/'.join(codecs)} ({detail})")


def decode_file(path: Path, data: bytes) -> tuple[np.ndarray, int]:
    """Decode ``data`` (the bytes of ``path``) to native ``(frames, channels)`` float32 in [-1, 1] and its rate.

    The single decoder every loader goes through. Raises :class:`AudioError` with the reason.
    """
    ext = path.suffix.lower()
    if ext in _SOUNDFILE_EXTS:
        truncated = _wav_truncation(data)
        if truncated:
            raise AudioError(truncated)
        import soundfile as sf

        try:
            x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
            return x, int(sr)
        except Exception as exc:  # libsndfile's verdict on arbitrary bytes; any failure is a decode failure
            reason = _SF_PREFIX.sub("", str(exc)).strip().rstrip(".") or type(exc).__name__
            if ext not in _FFMPEG_FORMATS:
                raise AudioError(f"not a readable {ext[1:]} file (libsndfile: {reason})") from None
            sf_reason = reason
        try:
            return _decode_ffmpeg(path, ext)
        except AudioError as exc:
            raise AudioError(f"libsndfile: {sf_reason}; {exc}") from None
    if ext in _FFMPEG_FORMATS:
        return _decode_ffmpeg(path, ext)
    raise AudioError(f"unsupported extension {ext!r}; use one of {sorted(AUDIO_EXTENSIONS)}")


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AudioError(f"cannot read file ({exc.strerror or exc})") from None


def _decode_checked(path: Path, data: bytes) -> tuple[np.ndarray, AudioInfo]:
    if not data:
        raise AudioError("empty file (0 bytes)")
    x, sr = decode_file(path, data)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    info = AudioInfo(sample_rate=int(sr), channels=int(x.shape[1]), frames=int(x.shape[0]))
    if sr <= 0:
        raise AudioError(f"invalid sample rate {sr}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise AudioError("no audio samples (zero-length)")
    if not np.isfinite(x).all():
        raise AudioError("contains NaN or infinite samples")
    return x, info


def _to_mono_rate(x: np.ndarray, sr: int, sample_rate: int) -> np.ndarray:
    mono = x[:, 0] if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float32)
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if sr != sample_rate:
        import soxr

        mono = np.asarray(soxr.resample(mono, sr, sample_rate), dtype=np.float32)
    if mono.size == 0:
        raise AudioError(f"no audio samples left after resampling {sr} -> {sample_rate} Hz")
    return mono


def prepare_audio(path: Path, data: bytes, sample_rate: int) -> tuple[np.ndarray, AudioInfo]:
    x, info = _decode_checked(path, data)
    return _to_mono_rate(x, info.sample_rate, sample_rate), info


def decode_audio(path: str | os.PathLike) -> tuple[np.ndarray, AudioInfo]:
    """Native audio ``(frames, channels)`` float32 in [-1, 1] and its :class:`AudioInfo`.

    Raises :class:`AudioError` naming the file and the reason (empty, truncated, undecodable, NaN/inf).
    """
    path = Path(path)
    try:
        return _decode_checked(path, read_bytes(path))
    except AudioError as exc:
        raise AudioError(f"{path}: {exc}") from None


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Mono float32 audio at ``sample_rate`` (mixed down, resampled with soxr). Raises :class:`AudioError`."""
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AuricleError(f"sample_rate={sample_rate!r} must be a positive integer")
    path = Path(path)
    try:
        return prepare_audio(path, read_bytes(path), int(sample_rate))[0]
    except AudioError as exc:
        raise AudioError(f"{path}: {exc}") from None


def probe_seconds(path: Path) -> float:
    """A file's duration from its header (soundfile), else by decoding it; 0.0 when it cannot be read."""
    if path.suffix.lower() in _SOUNDFILE_EXTS:
        try:
            import soundfile as sf
            info = sf.info(str(path))
            if info.samplerate > 0 and info.frames > 0:
                return info.frames / info.samplerate
        except Exception:  # fall through to decoding: libsndfile's verdict on arbitrary bytes
            pass
    try:
        _, info = _decode_checked(path, read_bytes(path))
    except AudioError:
        return 0.0
    return info.duration


def one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """Limit BLAS to one thread while featurising clip by clip, when threadpoolctl is installed.

    log_mel's small matmuls run several times slower with multi-threaded OpenBLAS on a busy machine
    (measured 10x on a shared 2-core VM).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
