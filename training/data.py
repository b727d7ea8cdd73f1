"""Datasets: discover labelled clips, split them by group, decode any audio, cache the decoded clips.

Layouts (``layout="auto"`` picks ``folders`` when any sub-folder of the root holds audio):

* ``folders`` -- one folder per class, ``root/dog/x.wav``; files may sit in nested folders below the class
  folder. Audio directly in the root is reported as skipped.
* ``filenames`` -- flat files in the root, labelled by name (:func:`label_from_name`):
  ``Laughter_284.m4a`` -> ``Laughter``.

Audio files are those ending in one of :data:`AUDIO_EXTENSIONS` (any case; ``x.wav.wav`` too). Hidden files
and folders (``.``), every other file (README, LICENSE, CSV ...) and the folders in :data:`IGNORED_DIRS`
are ignored.

Groups keep one speaker or source inside one split: ``<speaker>_nohash_<n>`` names (Speech Commands, also as
``word_<speaker>_nohash_<n>``) belong to the speaker; any other file is its own group, named by its stem.
:func:`split_of` (the one rule, from :mod:`edge.splits`) maps a group to ``train`` / ``val`` / ``test`` by
``sha1(group) % 100`` (< 80, 80-89, >= 90).

Decoding (:func:`load_audio`): WAV/FLAC/OGG through soundfile; m4a, mp3, aac, wma, opus and webm through
pydub with the ffmpeg binary of ``imageio-ffmpeg`` (no system ffmpeg or ffprobe needed). Audio is mixed to
mono and resampled with soxr. Empty, truncated, undecodable and non-finite files raise :class:`AudioError`;
:func:`load_dataset` lists them in ``skipped`` (or raises with ``strict=True``).

:func:`load_dataset` keeps fixed-length waveforms (:func:`edge.features.fit_to_clip`) and caches them on
disk, keyed by the frontend settings and each file's sha1, in ``.npz`` packs (read with
``allow_pickle=False``). Features are not kept: training computes them once from the waveforms, with the
context frames its time-shift augmentation needs (:mod:`training.featureset`). Cache folder: ``cache_dir``,
else ``$AURICLE_CACHE``, else ``~/.cache/auricle/features``; delete it at any time to reclaim the space.

Split files (``path,label,group,split``) are the run folder's format, read and written by
:mod:`training.run_folder`; :func:`write_split_csv` and :func:`read_split_csv` take and give :class:`Clip`.

``python -m training.data DIR`` inspects a dataset and exits 2 with one line when it cannot be trained on.

This module never imports TensorFlow or Keras.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import os
import re
import struct
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from edge.errors import AudioError, AuricleError, run_cli
from edge.features import FeatureConfig, fit_to_clip
from edge.fileio import atomic_writer, write_text_atomic
from edge.splits import SPLITS, split_of
from training.run_folder import SplitRow, read_split, write_split

__all__ = [
    "AUDIO_EXTENSIONS",
    "IGNORED_DIRS",
    "LAYOUTS",
    "SPLITS",
    "Clip",
    "Discovery",
    "AudioInfo",
    "Dataset",
    "DatasetReport",
    "audio_stem",
    "label_from_name",
    "group_of",
    "split_of",
    "scan",
    "discover",
    "write_split_csv",
    "read_split_csv",
    "decode_audio",
    "load_audio",
    "one_blas_thread",
    "default_cache_dir",
    "load_dataset",
    "trainability_problem",
    "inspect_dataset",
    "format_report",
    "main",
]

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".m4a", ".mp3", ".aac", ".wma", ".opus", ".webm"})
#: Never a class: Speech Commands' long noise recordings (the source of ``_silence_``), not labelled clips.
IGNORED_DIRS = frozenset({"_background_noise_"})
LAYOUTS = ("auto", "folders", "filenames")

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

CACHE_VERSION = 1
CACHE_ENV = "AURICLE_CACHE"
_PACK_FLUSH = 2048       # write a cache pack after this many newly computed clips
_PROGRESS_EVERY = 500

_NOHASH = re.compile(r"^(?:(?P<word>.+)_)?(?P<speaker>[^_]+)_nohash_\d+$")
_TRAILING_NUMBER = re.compile(r"^(?P<label>.*?[^_\-\s])[_\-\s]+\d+$")


# -- names, labels, groups, splits ----------------------------------------------------------------
def audio_stem(name: str) -> str:
    """File name without its audio extensions: ``bird_0fa1e7a9_nohash_0.wav.wav`` -> ``bird_0fa1e7a9_nohash_0``."""
    stem = Path(name).name
    while True:
        base, ext = os.path.splitext(stem)
        if not base or ext.lower() not in AUDIO_EXTENSIONS:
            return stem
        stem = base


def label_from_name(name: str) -> str | None:
    """The class of a flat file, from its name; ``None`` when the name carries no label.

    Rules, first match wins (on the stem, see :func:`audio_stem`):

    1. ``<word>_<speaker>_nohash_<n>`` -> ``word`` (Speech Commands naming);
    2. a trailing number and the ``_``/``-``/space before it are dropped:
       ``Laughter_284`` -> ``Laughter``, ``dog-bark-3`` -> ``dog-bark``, ``Cat 12`` -> ``Cat``;
    3. otherwise the text before the first ``_`` (``siren_take_a`` -> ``siren``), or the whole stem.

    Stems that are only a number, or ``<speaker>_nohash_<n>`` without a word, give ``None``.
    """
    stem = audio_stem(name).strip()
    m = _NOHASH.match(stem)
    if m:
        return m.group("word") or None
    m = _TRAILING_NUMBER.match(stem)
    if m:
        return m.group("label").strip() or None
    if not stem or stem.isdigit():
        return None
    label = stem.split("_", 1)[0].strip()
    return label or None


def group_of(name: str) -> str:
    """The split group of a file: its speaker for ``[word_]<speaker>_nohash_<n>`` names, else its stem."""
    stem = audio_stem(name)
    m = _NOHASH.match(stem)
    return m.group("speaker") if m else stem


@dataclasses.dataclass(frozen=True)
class Clip:
    """One labelled audio file. ``path`` is absolute; ``group`` decides the split."""

    path: Path
    label: str
    group: str

    @property
    def split(self) -> str:
        return split_of(self.group)


@dataclasses.dataclass(frozen=True)
class Discovery:
    """What :func:`scan` found: the clips, audio files it could not label, and the layout it used."""

    root: Path
    layout: str
    clips: tuple[Clip, ...]
    rejected: tuple[tuple[Path, str], ...]


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _is_audio(name: str) -> bool:
    return not _is_hidden(name) and os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


def _sorted_entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise AuricleError(f"cannot list {folder}: {exc.strerror or exc}") from None


def _audio_below(folder: Path) -> Iterator[Path]:
    """Audio files under ``folder`` (recursive, sorted, hidden entries skipped)."""
    for entry in _sorted_entries(folder):
        if _is_hidden(entry.name):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _audio_below(Path(entry.path))
        elif entry.is_file() and _is_audio(entry.name):
            yield Path(entry.path)


def _class_dirs(root: Path) -> list[Path]:
    return [Path(e.path) for e in _sorted_entries(root)
            if e.is_dir() and not _is_hidden(e.name) and e.name not in IGNORED_DIRS]


def _check_root(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise AuricleError(f"dataset folder {str(path)!r} does not exist; pass the folder that holds the "
                           "class folders or labelled files")
    if not path.is_dir():
        raise AuricleError(f"{str(path)!r} is a file, not a dataset folder; pass the folder that holds it")
    return Path(os.path.abspath(path))


def scan(root: str | os.PathLike, *, layout: str = "auto") -> Discovery:
    """Find the labelled clips under ``root`` (see the module docstring for layouts and rules)."""
    if layout not in LAYOUTS:
        raise AuricleError(f"layout {layout!r} is not one of {LAYOUTS}")
    root = _check_root(root)
    class_dirs = _class_dirs(root)
    per_class = {d: list(_audio_below(d)) for d in class_dirs} if layout != "filenames" else {}
    if layout == "auto":
        layout = "folders" if any(per_class.values()) else "filenames"
    loose = [Path(e.path) for e in _sorted_entries(root) if e.is_file() and _is_audio(e.name)]
    clips: list[Clip] = []
    rejected: list[tuple[Path, str]] = []
    if layout == "folders":
        for folder, files in per_class.items():
            clips.extend(Clip(f, folder.name, group_of(f.name)) for f in files)
        rejected.extend((f, "audio file outside any class folder (layout 'folders')") for f in loose)
    else:
        for f in loose:
            label = label_from_name(f.name)
            if label is None:
                rejected.append((f, "no label in the file name; name it <label>_<n>.<ext> or use class folders"))
            else:
                clips.append(Clip(f, label, group_of(f.name)))
    clips.sort(key=lambda c: (c.label, str(c.path)))
    return Discovery(root=root, layout=layout, clips=tuple(clips), rejected=tuple(rejected))


def discover(root: str | os.PathLike, *, layout: str = "auto") -> list[Clip]:
    """The labelled clips under ``root``, sorted by label then path. Unlabelled files are left out."""
    return list(scan(root, layout=layout).clips)


# -- split files ------------------------------------------------------------------------------------
def _relative(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(path).as_posix()


def write_split_csv(path: str | os.PathLike, clips: Iterable[Clip], *, root: str | os.PathLike | None = None,
                    splits: Sequence[str] | None = None) -> Path:
    """Write ``path,label,group,split`` rows (paths relative to ``root``), atomically.

    ``root`` defaults to the folder all clips share; ``splits`` defaults to :func:`split_of` of each group.
    """
    clips = list(clips)
    if splits is not None and len(splits) != len(clips):
        raise AuricleError(f"got {len(splits)} splits for {len(clips)} clips")
    if root is None:
        root = os.path.commonpath([str(c.path.parent) for c in clips]) if clips else "."
    root = Path(root).absolute()
    return write_split(path, [SplitRow(_relative(Path(c.path).absolute(), root), c.label, c.group,
                                       splits[i] if splits else c.split) for i, c in enumerate(clips)])


def read_split_csv(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> list[tuple[Clip, str]]:
    """Read a split file: ``(clip, recorded split)`` per row. Clip paths are joined to ``root`` when given, else
    left relative; a three-column file of an older run gets each clip's group from its name."""
    base = Path(root) if root is not None else None
    return [(Clip(base / r.path if base is not None else Path(r.path), r.label, r.group or group_of(r.path)),
             r.split) for r in read_split(path)]


# -- decoding -----------------------------------------------------------------------------------------
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


def _decode_file(path: Path, data: bytes) -> tuple[np.ndarray, int]:
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


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AudioError(f"cannot read file ({exc.strerror or exc})") from None


def _decode_checked(path: Path, data: bytes) -> tuple[np.ndarray, AudioInfo]:
    if not data:
        raise AudioError("empty file (0 bytes)")
    x, sr = _decode_file(path, data)
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


def _prepare(path: Path, data: bytes, sample_rate: int) -> tuple[np.ndarray, AudioInfo]:
    x, info = _decode_checked(path, data)
    return _to_mono_rate(x, info.sample_rate, sample_rate), info


def decode_audio(path: str | os.PathLike) -> tuple[np.ndarray, AudioInfo]:
    """Native audio ``(frames, channels)`` float32 in [-1, 1] and its :class:`AudioInfo`.

    Raises :class:`AudioError` naming the file and the reason (empty, truncated, undecodable, NaN/inf).
    """
    path = Path(path)
    try:
        return _decode_checked(path, _read_bytes(path))
    except AudioError as exc:
        raise AudioError(f"{path}: {exc}") from None


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Mono float32 audio at ``sample_rate`` (mixed down, resampled with soxr). Raises :class:`AudioError`."""
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AuricleError(f"sample_rate={sample_rate!r} must be a positive integer")
    path = Path(path)
    try:
        return _prepare(path, _read_bytes(path), int(sample_rate))[0]
    except AudioError as exc:
        raise AudioError(f"{path}: {exc}") from None


# -- progress -----------------------------------------------------------------------------------------
class _Progress:
    """A stderr line every ``_PROGRESS_EVERY`` items, and a summary when any line was printed."""

    def __init__(self, total: int, what: str, enabled: bool) -> None:
        self.total, self.what, self.enabled = total, what, enabled
        self.done = 0
        self.printed = False
        self.start = time.perf_counter()

    def step(self, **counts: int) -> None:
        self.done += 1
        if self.enabled and self.done % _PROGRESS_EVERY == 0 and self.done < self.total:
            self._line(counts)

    def finish(self, **counts: int) -> None:
        if self.enabled and (self.printed or time.perf_counter() - self.start > 2.0):
            self._line(counts, final=True)

    def _line(self, counts: dict[str, int], final: bool = False) -> None:
        detail = ", ".join(f"{k} {v}" for k, v in counts.items())
        elapsed = time.perf_counter() - self.start
        tail = " done" if final else ""
        print(f"auricle data: {self.what} {self.done}/{self.total} ({detail}) {elapsed:.1f} s{tail}",
              file=sys.stderr, flush=True)
        self.printed = True


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


# -- waveform cache -------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$AURICLE_CACHE`` when set, else ``~/.cache/auricle/features``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "auricle" / "features"


def _cache_key(config: FeatureConfig) -> dict[str, Any]:
    return {"cache_version": CACHE_VERSION, "frontend": config.frontend_key}


class _WaveformCache:
    """Packs of ``(sha1, waveform, native info)`` rows in ``<dir>/<sha1(key)[:16]>/pack-*.npz``.

    Rows are found by the sha1 of the file's bytes; a pack is only ever written whole (temp file + rename).
    Packs written before features were dropped also hold a ``features`` array, which is not read.
    """

    _ARRAYS = ("sha1", "waveforms", "sample_rate", "channels", "frames")

    def __init__(self, directory: Path, config: FeatureConfig) -> None:
        key_json = json.dumps(_cache_key(config), sort_keys=True)
        self.key_json = key_json
        self.dir = directory / hashlib.sha1(key_json.encode()).hexdigest()[:16]
        self.wave_shape = (config.clip_samples,)
        self._pending: list[tuple[str, np.ndarray, AudioInfo]] = []
        self.warnings: list[str] = []

    def _packs(self) -> list[Path]:
        try:
            return sorted(self.dir.glob("pack-*.npz"))
        except OSError:
            return []

    def index(self) -> dict[str, tuple[Path, int]]:
        out: dict[str, tuple[Path, int]] = {}
        for pack in self._packs():
            try:
                with np.load(pack, allow_pickle=False) as z:
                    hashes = z["sha1"]
            except Exception as exc:  # a damaged pack is a miss, never a crash
                self._drop(pack, f"unreadable ({type(exc).__name__})")
                continue
            for i, h in enumerate(hashes.tolist()):
                out.setdefault(str(h), (pack, i))
        return out

    def load_pack(self, pack: Path) -> dict[str, np.ndarray] | None:
        try:
            with np.load(pack, allow_pickle=False) as z:
                arrays = {k: z[k] for k in self._ARRAYS}
        except Exception as exc:
            self._drop(pack, f"unreadable ({type(exc).__name__})")
            return None
        n = arrays["sha1"].shape[0]
        ok = (arrays["waveforms"].shape == (n, *self.wave_shape)
              and all(arrays[k].shape == (n,) for k in ("sample_rate", "channels", "frames")))
        if not ok:
            self._drop(pack, "unexpected shapes")
            return None
        return arrays

    def _drop(self, pack: Path, why: str) -> None:
        self.warnings.append(f"removed damaged cache pack {pack} ({why})")
        try:
            pack.unlink()
        except OSError:
            pass

    def put(self, sha: str, wave: np.ndarray, info: AudioInfo) -> None:
        self._pending.append((sha, wave, info))
        if len(self._pending) >= _PACK_FLUSH:
            self.flush()

    def flush(self) -> None:
        rows, self._pending = self._pending, []
        if not rows:
            return
        seen: dict[str, int] = {}
        for i, row in enumerate(rows):
            seen.setdefault(row[0], i)
        rows = [rows[i] for i in seen.values()]
        arrays = {
            "sha1": np.array([r[0] for r in rows], dtype="<U40"),
            "waveforms": np.stack([r[1] for r in rows]).astype(np.float32, copy=False),
            "sample_rate": np.array([r[2].sample_rate for r in rows], dtype=np.int64),
            "channels": np.array([r[2].channels for r in rows], dtype=np.int64),
            "frames": np.array([r[2].frames for r in rows], dtype=np.int64),
        }
        name = hashlib.sha1("".join(sorted(seen)).encode()).hexdigest()[:20]
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            key_file = self.dir / "key.json"
            if not key_file.exists():
                write_text_atomic(key_file, self.key_json + "\n")
            with atomic_writer(self.dir / f"pack-{name}.npz", binary=True) as fh:
                np.savez(fh, **arrays)
        except OSError as exc:
            self.warnings.append(f"could not write the clip cache in {self.dir} ({exc.strerror or exc})")


# -- datasets -------------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class Dataset:
    """Decoded, labelled, split clips. Row ``i`` of every array belongs to ``clips[i]``.

    ``labels`` holds every discovered class (sorted), including any whose clips were all skipped -- see
    :meth:`check_trainable`. ``waveforms`` are mono at ``config.sample_rate``, padded/cropped by
    :func:`edge.features.fit_to_clip`.
    """

    root: Path
    layout: str
    config: FeatureConfig
    clips: list[Clip]
    labels: list[str]
    waveforms: np.ndarray       # (N, clip_samples) float32
    label_ids: np.ndarray       # (N,) int64 indices into labels
    splits: np.ndarray          # (N,) str: train / val / test
    sample_rates: np.ndarray    # (N,) native sample rate of each file
    channels: np.ndarray        # (N,) native channel count
    durations: np.ndarray       # (N,) native duration in seconds (before fit_to_clip)
    skipped: list[tuple[Path, str]]

    def __len__(self) -> int:
        return len(self.clips)

    def indices(self, split: str) -> np.ndarray:
        """Row indices of one split."""
        if split not in SPLITS:
            raise AuricleError(f"split {split!r} is not one of {SPLITS}")
        return np.flatnonzero(self.splits == split)

    def counts(self) -> dict[str, int]:
        """Usable clips per label (every label present, zero when all were skipped)."""
        n = np.bincount(self.label_ids, minlength=len(self.labels)) if len(self.labels) else []
        return {label: int(c) for label, c in zip(self.labels, n)}

    def trainability_problem(self) -> str | None:
        return trainability_problem(self.counts(), root=self.root)

    def check_trainable(self) -> None:
        """Raise :class:`AuricleError` when a classifier cannot be trained on this data."""
        problem = self.trainability_problem()
        if problem:
            raise AuricleError(problem)

    def write_split(self, path: str | os.PathLike) -> Path:
        """Save ``path,label,group,split`` of every usable clip (paths relative to the data root)."""
        return write_split_csv(path, self.clips, root=self.root, splits=[str(s) for s in self.splits])


def trainability_problem(counts: dict[str, int], *, root: str | os.PathLike = "") -> str | None:
    """Why ``counts`` (usable clips per discovered class) cannot train a classifier, or ``None``."""
    where = f" under {str(root)!r}" if str(root) else ""
    if not counts:
        return (f"no labelled audio found{where}; expected one folder per class (root/dog/x.wav) or files "
                f"named <label>_<n>.<ext>, with extensions {' '.join(sorted(AUDIO_EXTENSIONS))}")
    if len(counts) == 1:
        (label,) = counts
        return f"only one class ({label!r}) found{where}; a classifier needs at least two -- add another class"
    empty = sorted(label for label, n in counts.items() if n == 0)
    if empty:
        return (f"class {empty[0]!r} has no usable clips" + (f" (nor {', '.join(map(repr, empty[1:]))})"
                                                             if len(empty) > 1 else "")
                + "; every file of it was skipped -- fix those files or remove the class")
    return None


def _note(enabled: bool, text: str) -> None:
    if enabled:
        print(f"auricle data: {text}", file=sys.stderr, flush=True)


def _skipper(skipped: list[tuple[Path, str]], *, strict: bool, fix: str,
             note: bool) -> Callable[[Path, str], None]:
    """The function that records an unusable file: listed in ``skipped`` (and noted on stderr when ``note``),
    or, with ``strict``, raised at once as an :class:`AudioError` ending in ``fix``."""
    def skip(path: Path, reason: str) -> None:
        if strict:
            raise AudioError(f"{path}: {reason} (strict mode: {fix})")
        skipped.append((path, reason))
        _note(note, f"skipped {path}: {reason}")
    return skip


@dataclasses.dataclass(eq=False)
class _Rows:
    """What decoding fills in: one row per discovered clip, ``ok`` where a row holds a usable clip."""

    waveforms: np.ndarray       # (n, clip_samples) float32
    info: np.ndarray            # (n, 3) native sample rate, channels, frames
    ok: np.ndarray              # (n,) bool

    @classmethod
    def empty(cls, n: int, config: FeatureConfig) -> "_Rows":
        return cls(np.empty((n, config.clip_samples), dtype=np.float32), np.zeros((n, 3), dtype=np.int64),
                   np.zeros(n, dtype=bool))

    def put(self, i: int, wave: np.ndarray, native: AudioInfo) -> None:
        self.waveforms[i] = wave
        self.info[i] = (native.sample_rate, native.channels, native.frames)
        self.ok[i] = True

    def keep_only(self, keep: np.ndarray) -> None:
        """Drop the rows not in ``keep``: compacted in place, then shrunk (no second full-size copy)."""
        if keep.size == self.ok.size:
            return
        for dst, src in enumerate(keep):
            if dst != src:
                self.waveforms[dst] = self.waveforms[src]
        self.waveforms.resize((keep.size, self.waveforms.shape[1]), refcheck=False)
        self.info = self.info[keep]
        self.ok = self.ok[keep]


def _fill_from_cache(cache: _WaveformCache, clips: Sequence[Clip], rows: _Rows) -> None:
    """Copy every cached row into place (one pack in memory at a time) and mark it ``ok``."""
    index = cache.index()
    if not index:
        return
    by_pack: dict[Path, list[tuple[int, int]]] = {}
    for i, clip in enumerate(clips):
        try:
            digest = hashlib.sha1(clip.path.read_bytes()).hexdigest()
        except OSError:
            continue  # reported when it is decoded
        if digest in index:
            pack, row = index[digest]
            by_pack.setdefault(pack, []).append((i, row))
    for pack, pairs in by_pack.items():
        arrays = cache.load_pack(pack)
        if arrays is None:
            continue
        dst = np.array([i for i, _ in pairs])
        src = np.array([r for _, r in pairs])
        rows.waveforms[dst] = arrays["waveforms"][src]
        rows.info[dst, 0] = arrays["sample_rate"][src]
        rows.info[dst, 1] = arrays["channels"][src]
        rows.info[dst, 2] = arrays["frames"][src]
        rows.ok[dst] = True


def _decode_missing(clips: Sequence[Clip], rows: _Rows, config: FeatureConfig, cache: _WaveformCache | None,
                    skip: Callable[[Path, str], None], skipped: list[tuple[Path, str]], progress: bool) -> None:
    """Decode every clip the cache did not hold into ``rows`` (and into the cache)."""
    hits = int(rows.ok.sum())
    decoded = 0
    bar = _Progress(len(clips) - hits, "decoding", progress)
    try:
        for i, clip in enumerate(clips):
            if rows.ok[i]:
                continue
            try:
                data = _read_bytes(clip.path)
                mono, native = _prepare(clip.path, data, config.sample_rate)
            except AudioError as exc:
                skip(clip.path, str(exc))
            else:
                rows.put(i, fit_to_clip(mono, config), native)
                decoded += 1
                if cache is not None:
                    cache.put(hashlib.sha1(data).hexdigest(), rows.waveforms[i].copy(), native)
            bar.step(cached=hits, decoded=decoded, skipped=len(skipped))
    finally:
        if cache is not None:
            cache.flush()
            for warning in cache.warnings:
                _note(progress, warning)
    bar.finish(cached=hits, decoded=decoded, skipped=len(skipped))


def load_dataset(root: str | os.PathLike, config: FeatureConfig, *, layout: str = "auto", strict: bool = False,
                 cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                 progress: bool = True) -> Dataset:
    """Discover and decode every clip under ``root``, fitted to the clip length.

    Files that cannot be used (unreadable, empty, truncated, undecodable, NaN/inf, unlabelled) are listed in
    ``Dataset.skipped`` with the reason, and printed one line each on stderr when ``progress``;
    ``strict=True`` raises :class:`AuricleError` on the first instead. ``progress`` also prints a line every
    500 decoded files. Waveforms are cached on disk (``cache_dir``, default :func:`default_cache_dir`;
    ``use_cache=False`` turns it off) by frontend settings and file content, so a rerun decodes nothing.
    Raises :class:`AuricleError` when the folder is missing or holds no usable clip.
    Call :meth:`Dataset.check_trainable` before training.
    """
    if not isinstance(config, FeatureConfig):
        raise AuricleError(f"config must be an edge.features.FeatureConfig, got {type(config).__name__}")
    found = scan(root, layout=layout)
    skipped: list[tuple[Path, str]] = []
    skip = _skipper(skipped, strict=strict, note=progress,
                    fix="fix or remove the file, or turn strict off to skip it")
    for path, reason in found.rejected:
        skip(path, reason)
    if not found.clips:
        raise AuricleError(trainability_problem({}, root=found.root) or "no clips")
    rows = _Rows.empty(len(found.clips), config)
    cache = None
    if use_cache:
        cache = _WaveformCache(Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(),
                               config)
        _fill_from_cache(cache, found.clips, rows)
    _decode_missing(found.clips, rows, config, cache, skip, skipped, progress)
    keep = np.flatnonzero(rows.ok)
    if keep.size == 0:
        raise AuricleError(f"none of the {len(found.clips)} audio files under {str(found.root)!r} could be used; "
                           f"first reason: {skipped[0][1] if skipped else 'unknown'}")
    rows.keep_only(keep)
    clips = [found.clips[i] for i in keep]
    labels = sorted({c.label for c in found.clips})
    lookup = {label: k for k, label in enumerate(labels)}
    return Dataset(
        root=found.root, layout=found.layout, config=config, clips=clips, labels=labels,
        waveforms=rows.waveforms,
        label_ids=np.array([lookup[c.label] for c in clips], dtype=np.int64),
        splits=np.array([c.split for c in clips], dtype="<U5"),
        sample_rates=rows.info[:, 0].copy(),
        channels=rows.info[:, 1].copy(),
        durations=rows.info[:, 2] / np.maximum(rows.info[:, 0], 1),
        skipped=skipped,
    )


# -- inspection (the CLI's core) -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DatasetReport:
    """What :func:`inspect_dataset` found. ``problem`` is ``None`` when the data can be trained on."""

    root: Path
    layout: str
    files: int
    clip_counts: dict[str, int]          # usable clips per discovered class
    durations: dict[str, float]          # native seconds per class
    sample_rates: dict[int, int]         # native rate -> clips
    channels: dict[int, int]             # channel count -> clips
    shortest: float
    longest: float
    split_clips: dict[str, int]
    split_groups: dict[str, int]
    skipped: tuple[tuple[Path, str], ...]
    problem: str | None


def inspect_dataset(root: str | os.PathLike, *, layout: str = "auto", strict: bool = False,
                    sample_rate: int = FeatureConfig.sample_rate, progress: bool = True) -> DatasetReport:
    """Decode every clip under ``root`` (mono, resampled to ``sample_rate``) and summarise what is usable.

    Raises :class:`AuricleError` for a missing folder, or on the first unusable file when ``strict``.
    """
    if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise AuricleError(f"sample rate {sample_rate!r} must be a positive integer (Hz)")
    found = scan(root, layout=layout)
    skipped: list[tuple[Path, str]] = []
    skip = _skipper(skipped, strict=strict, note=False, fix="fix or remove the file, or drop --strict to skip it")
    for path, reason in found.rejected:
        skip(path, reason)
    counts: Counter[str] = Counter({label: 0 for label in {c.label for c in found.clips}})
    durations: Counter[str] = Counter()
    rates: Counter[int] = Counter()
    chans: Counter[int] = Counter()
    split_clips: Counter[str] = Counter({s: 0 for s in SPLITS})
    split_groups: dict[str, set[str]] = {s: set() for s in SPLITS}
    lengths: list[float] = []
    bar = _Progress(len(found.clips), "decoded", progress)
    for clip in found.clips:
        try:
            _, native = _prepare(clip.path, _read_bytes(clip.path), int(sample_rate))
        except AudioError as exc:
            skip(clip.path, str(exc))
        else:
            counts[clip.label] += 1
            durations[clip.label] += native.duration
            rates[native.sample_rate] += 1
            chans[native.channels] += 1
            split_clips[clip.split] += 1
            split_groups[clip.split].add(clip.group)
            lengths.append(native.duration)
        bar.step(skipped=len(skipped))
    bar.finish(skipped=len(skipped))
    return DatasetReport(
        root=found.root, layout=found.layout, files=len(found.clips) + len(found.rejected),
        clip_counts=dict(sorted(counts.items())), durations={k: float(durations[k]) for k in sorted(counts)},
        sample_rates=dict(sorted(rates.items())), channels=dict(sorted(chans.items())),
        shortest=min(lengths, default=0.0), longest=max(lengths, default=0.0),
        split_clips={s: split_clips[s] for s in SPLITS}, split_groups={s: len(split_groups[s]) for s in SPLITS},
        skipped=tuple(skipped), problem=trainability_problem(dict(counts), root=found.root),
    )


def format_report(report: DatasetReport) -> str:
    """The human-readable summary printed by ``python -m training.data``."""
    lines = [f"dataset {report.root} (layout: {report.layout}, {report.files} audio files)"]
    width = max([len("class")] + [len(k) for k in report.clip_counts])
    lines.append(f"  {'class':<{width}}  {'clips':>6}  {'duration':>10}")
    for label, n in report.clip_counts.items():
        lines.append(f"  {label:<{width}}  {n:>6}  {report.durations[label]:>9.1f}s")
    total = sum(report.clip_counts.values())
    lines.append(f"  {'total':<{width}}  {total:>6}  {sum(report.durations.values()):>9.1f}s")
    if total:
        lines.append(f"clip length: {report.shortest:.2f} s to {report.longest:.2f} s")
    lines.append("sample rates: " + (", ".join(f"{sr} Hz ({n})" for sr, n in report.sample_rates.items()) or "-"))
    lines.append("channels: " + (", ".join(f"{ch} ({n})" for ch, n in report.channels.items()) or "-"))
    lines.append(f"skipped: {len(report.skipped)}")
    for path, reason in report.skipped:
        lines.append(f"  {_relative(path, report.root)}: {reason}")
    lines.append("split (clips/groups): " + ", ".join(
        f"{s} {report.split_clips[s]}/{report.split_groups[s]}" for s in SPLITS))
    empty = [s for s in SPLITS if report.split_clips[s] == 0]
    if total and empty:
        lines.append(f"warning: no clips in the {'/'.join(empty)} split (groups hash by sha1(group) % 100; "
                     "add more speakers/sources)")
    lines.append("trainable: yes" if report.problem is None else f"trainable: no -- {report.problem}")
    return "\n".join(lines)


# -- CLI ----------------------------------------------------------------------------------------------------
_EPILOG = """\
layouts:
  folders    one folder per class: DIR/dog/x.wav (nested folders inside a class are fine)
  filenames  flat files labelled by name: Laughter_284.m4a -> Laughter (a trailing _<n> is dropped;
             without a number, the text before the first '_'); word_<speaker>_nohash_<n> -> word
  auto       folders when any sub-folder holds audio, else filenames

audio: .wav .flac .ogg via soundfile; .m4a .mp3 .aac .wma .opus .webm via pydub + imageio-ffmpeg.
groups and splits: <speaker>_nohash_<n> files are grouped by speaker, other files are their own group;
  sha1(group) % 100 < 80 -> train, < 90 -> val, else test, so a speaker never straddles splits.

exit status: 0 when the data can be trained on; 2 with one line on stderr when it cannot (missing folder,
no audio, only one class, a class whose files were all skipped) or, with --strict, on the first bad file.
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.data",
        description="Inspect an audio dataset: classes with clip counts and durations, sample rates and channel "
                    "counts, files that cannot be used (and why), and train/val/test split sizes.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", metavar="DIR", help="dataset folder")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto", help="how labels are given (default: auto)")
    parser.add_argument("--strict", action="store_true",
                        help="fail on the first unusable file instead of listing it as skipped")
    parser.add_argument("--sample-rate", type=int, default=FeatureConfig.sample_rate, metavar="HZ",
                        help="rate audio is resampled to while checking (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    report = inspect_dataset(args.dir, layout=args.layout, strict=args.strict, sample_rate=args.sample_rate,
                             progress=sys.stderr.isatty())
    print(format_report(report), flush=True)
    if report.problem:
        raise AuricleError(report.problem)
    return 0


if __name__ == "__main__":
    run_cli(main)
