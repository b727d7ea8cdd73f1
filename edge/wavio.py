"""WAV files through the standard library: a PCM reader (the fallback when soundfile is missing) and
:class:`WavRecorder`, which writes what a source delivered for debugging and replay.

A recording must never end a listening run: once its folder fills up, vanishes or stops accepting writes,
:class:`WavRecorder` says so in one line, keeps what it wrote, and ignores the rest of the audio.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
import wave
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from edge.errors import AudioError
from edge.pcm import pcm_bytes_to_float32

__all__ = ["WaveReader", "WavRecorder"]

_LOG = logging.getLogger(__name__)


class WaveReader:
    """PCM WAV (8/16/24/32-bit integer) with the stdlib ``wave`` module; ``read(n)`` -> float32 ``(n, ch)``.

    Same attributes as ``soundfile.SoundFile`` where :class:`edge.sources.FileSource` uses them
    (``samplerate``, ``channels``, ``frames``). Raises ``wave.Error``/``EOFError``/``OSError`` when opening
    fails, as ``wave.open`` does.
    """

    def __init__(self, path: str) -> None:
        self._w = wave.open(path, "rb")
        self.samplerate = self._w.getframerate()
        self.channels = self._w.getnchannels()
        self.frames = self._w.getnframes()
        self._width = self._w.getsampwidth()

    def read(self, n: int) -> np.ndarray:
        return pcm_bytes_to_float32(self._w.readframes(n), self._width, self.channels)

    def close(self) -> None:
        self._w.close()


class WavRecorder:
    """Writes what a source delivered (mono, its own rate, 16-bit PCM) to a WAV, for debugging.

    Dropped audio is written as silence so that times in the file match event times. Replaying the file
    with ``--file`` reproduces the run. The WAV header is brought up to date after every write, so the file
    is playable at any moment (and after a crash).

    A folder that cannot be written at the start raises :class:`AudioError`. Later, a failed write (full
    disk, an unplugged drive) or a file that was deleted (checked every ``check_seconds`` of audio) stops
    the recording: ``log`` gets one line (default: this module's logger, at WARNING), :attr:`error` says why,
    and further writes are ignored.
    """

    def __init__(self, folder: str | os.PathLike[str], *, sample_rate: int, tag: str = "capture",
                 log: Callable[[str], None] | None = None, check_seconds: float = 1.0) -> None:
        folder = Path(folder)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)[:40] or "capture"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.path, self._fh = _create_new(folder, f"auricle-{time.strftime('%Y%m%d-%H%M%S')}-{safe}")
            self._w = wave.open(self._fh, "wb")
            self._w.setnchannels(1)
            self._w.setsampwidth(2)
            self._w.setframerate(int(sample_rate))
        except OSError as exc:
            raise AudioError(f"cannot write recordings to --record {folder} ({exc}); pick a writable folder") \
                from None
        self._log = log or _LOG.warning
        self._check_every = max(1, int(check_seconds * sample_rate))
        self._unchecked = 0
        self.samples = 0
        self.error: str | None = None

    @property
    def recording(self) -> bool:
        return self.error is None

    def write(self, samples: np.ndarray) -> None:
        if self.error is not None:
            return
        x = np.clip(np.rint(np.asarray(samples, dtype=np.float32) * 32768.0), -32768, 32767).astype("<i2")
        self._put(x.tobytes(), x.size)

    def write_silence(self, n: int) -> None:
        zeros = np.zeros(min(n, 1 << 16), dtype="<i2").tobytes()
        while n > 0 and self.error is None:
            k = min(n, 1 << 16)
            self._put(zeros[:2 * k], k)
            n -= k

    def _put(self, data: bytes, n: int) -> None:
        try:
            self._w.writeframes(data)
            self._fh.flush()
        except (OSError, ValueError, wave.Error) as exc:
            self._stop(f"cannot write {self.path} ({exc})")
            return
        self.samples += n
        self._unchecked += n
        if self._unchecked >= self._check_every:
            self._unchecked = 0
            self._check_still_there()

    def _check_still_there(self) -> None:
        """A deleted file (or folder) does not make writes fail on Linux: look at its link count."""
        try:
            gone = os.fstat(self._fh.fileno()).st_nlink == 0
        except OSError as exc:
            self._stop(f"cannot check {self.path} ({exc})")
            return
        if gone:
            self._stop(f"{self.path} was deleted (its folder removed?)")

    def _stop(self, why: str) -> None:
        self.error = why
        self._log(f"recording stopped: {why}; listening goes on")
        self._close_quietly()

    def _close_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self._w.close()          # brings the header up to date where it still can
        with contextlib.suppress(Exception):
            self._fh.close()

    def close(self) -> None:
        if self.error is None:
            try:
                self._w.close()
                self._fh.close()
            except (OSError, ValueError, wave.Error) as exc:
                self.error = f"cannot finish {self.path} ({exc})"
                self._log(f"recording stopped: {self.error}")
        self._close_quietly()


def _create_new(folder: Path, stem: str) -> tuple[Path, BinaryIO]:
    """A new file ``stem.wav`` (``stem-2.wav``, ... if taken) opened for writing, never over an existing one."""
    n = 1
    while True:
        path = folder / (f"{stem}.wav" if n == 1 else f"{stem}-{n}.wav")
        try:
            return path, open(path, "xb")
        except FileExistsError:
            n += 1
