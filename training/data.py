"""Datasets: discover labelled clips, split them by group, decode any audio, cache the decoded clips.

Layouts (``layout="auto"`` picks ``folders`` when any sub-folder of the root holds audio):

* ``folders`` -- one folder per class, ``root/dog/x.wav``; files may sit in nested folders below the class
  folder. Audio directly in the root is reported as skipped.
* ``filenames`` -- flat files in the root, labelled by name. The rule is inferred from all the names
  (:func:`infer_rule`): ``<word>_<speaker>_nohash_<n>`` (Speech Commands) -> word; ``<label>_<speaker>_<n>``
  when the middle fields repeat across labels (spoken digits: ``3_jackson_12``) -> ``3``; otherwise
  :func:`label_from_name` (the study's ``Laughter_284.m4a`` -> ``Laughter``). ``--label-regex`` overrides it
  (first group of the regex, searched in the stem).

Audio files are those ending in one of :data:`AUDIO_EXTENSIONS` (any case; ``x.wav.wav`` too). Hidden files
and folders (``.``), every other file (README, LICENSE, CSV ...) and the folders in :data:`IGNORED_DIRS`
are ignored.

Groups keep one speaker or source inside one split: ``--group-by REGEX`` (first group, searched in the stem;
a name it does not match is its own group, with a warning); else the speaker of ``<speaker>_nohash_<n>`` and
``<label>_<speaker>_<n>`` names; else each file is its own group, named by its stem. :func:`split_of` (the
one rule, from :mod:`edge.splits`) maps a group to ``train`` / ``val`` / ``test`` by ``sha1(group) % 100``
(< 80, 80-89, >= 90); ``--split-file CSV`` (``path,split``) gives the user's own split instead. The
inspector counts groups with clips in more than one split (0 under a group rule) and warns when the labels
or groups look wrong (:func:`naming_warnings`).

Decoding (:func:`load_audio`): WAV/FLAC/OGG through soundfile; m4a, mp3, aac, wma, opus and webm through
pydub with the ffmpeg binary of ``imageio-ffmpeg`` (no system ffmpeg or ffprobe needed). Audio is mixed to
mono and resampled with soxr. Empty, truncated, undecodable and non-finite files raise :class:`AudioError`;
:func:`load_dataset` lists them in ``skipped`` (or raises with ``strict=True``).

:func:`load_dataset` keeps fixed-length waveforms (:func:`edge.features.fit_to_clip`), or whole clips up to
``keep_seconds`` (``Dataset.lengths``), and caches them on disk, keyed by the frontend settings (whole clips:
the rate and the kept length) and each file's sha1, in ``.npz`` packs (read with ``allow_pickle=False``).
Features are not kept: training computes them once from the waveforms, with the context frames its
time-shift augmentation needs (:mod:`training.featureset`). Cache folder: ``cache_dir``, else
``$AURICLE_CACHE``, else ``~/.cache/auricle/features``; delete it at any time to reclaim the space.

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
import math
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
from edge.features import FeatureConfig
from edge.fileio import atomic_writer, write_text_atomic
from edge.splits import BY_CLIP_RULE, DEALT_RULE, SHA1_RULE, SPLITS, choose_splits, split_of
from training.run_folder import SplitRow, read_split, write_split

__all__ = [
    "AUDIO_EXTENSIONS",
    "IGNORED_DIRS",
    "LAYOUTS",
    "SPLITS",
    "Clip",
    "Naming",
    "NAMING_RULES",
    "compile_rule",
    "infer_rule",
    "read_split_assignments",
    "groups_across_splits",
    "naming_warnings",
    "probe_seconds",
    "auto_clip_seconds",
    "add_naming_options",
    "naming_from",
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


# -- user-controlled and inferred naming rules ----------------------------------------------------------
_LABEL_SPEAKER_N = re.compile(r"^(?P<label>[^_]+)_(?P<speaker>[^_]+)_(?P<n>\d+)$")
NAMING_RULES = ("label-regex", "nohash", "label_speaker_n", "label_n")


def compile_rule(pattern: str | None, option: str) -> re.Pattern | None:
    """A user's regular expression with at least one group, or :class:`AuricleError` naming the problem."""
    if pattern is None:
        return None
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise AuricleError(f"{option} {pattern!r} is not a valid regular expression ({exc}); fix it, e.g. "
                           f"{option} '^([^_]+)_'") from None
    if rx.groups < 1:
        raise AuricleError(f"{option} {pattern!r} has no group; put what you want in parentheses, e.g. "
                           f"{option} '^([^_]+)_'")
    return rx


@dataclasses.dataclass(frozen=True)
class Naming:
    """How names become labels and groups. ``label_regex`` (flat files; first group = label) and
    ``group_regex`` (any layout; first group = split group) are the user's; without them the rule is
    inferred from the names (:func:`infer_rule`). Both regexes are searched in the file's stem."""

    label_regex: str | None = None
    group_regex: str | None = None
    split_file: str | None = None

    def compiled(self) -> tuple[re.Pattern | None, re.Pattern | None]:
        return compile_rule(self.label_regex, "--label-regex"), compile_rule(self.group_regex, "--group-by")


def infer_rule(stems: Sequence[str]) -> str:
    """The automatic rule for flat names: ``nohash`` (Speech Commands), ``label_speaker_n`` when most names
    are ``<a>_<b>_<n>`` and the ``<b>`` fields repeat across several ``<a>`` values (spoken digits:
    ``3_jackson_12``), else ``label_n`` (the study's ``Laughter_284``; see :func:`label_from_name`)."""
    if not stems:
        return "label_n"
    if sum(1 for s in stems if _NOHASH.match(s)) >= 0.5 * len(stems):
        return "nohash"
    parts = [m.groups() for m in map(_LABEL_SPEAKER_N.match, stems) if m]
    if len(parts) < 0.8 * len(stems):
        return "label_n"
    firsts = {a for a, _, _ in parts}
    pairs = {(a, b) for a, b, _ in parts}
    seconds = {b for _, b, _ in parts}
    shared = sum(1 for b in seconds if sum(1 for a in firsts if (a, b) in pairs) > 1)
    return "label_speaker_n" if len(firsts) >= 2 and shared >= max(2, 0.5 * len(seconds)) else "label_n"


def _labeller(rule: str, label_rx: re.Pattern | None) -> Callable[[str], str | None]:
    if label_rx is not None:
        def by_regex(stem: str) -> str | None:
            m = label_rx.search(stem)
            return (m.group(1) or None) if m else None
        return by_regex
    if rule == "label_speaker_n":
        return lambda stem: m.group("label") if (m := _LABEL_SPEAKER_N.match(stem)) else label_from_name(stem)
    return label_from_name


def _grouper(rule: str, group_rx: re.Pattern | None, misses: list[str]) -> Callable[[str], str]:
    """Stem -> group. A name the ``--group-by`` regex does not match is its own group (listed in ``misses``)."""
    if group_rx is not None:
        def by_regex(stem: str) -> str:
            m = group_rx.search(stem)
            if m and m.group(1):
                return m.group(1)
            misses.append(stem)
            return stem
        return by_regex
    if rule == "label_speaker_n":
        return lambda stem: m.group("speaker") if (m := _LABEL_SPEAKER_N.match(stem)) else group_of(stem)
    return group_of


def read_split_assignments(path: str | os.PathLike, root: Path) -> dict[Path, str]:
    """A user's split file: CSV with a header holding ``path`` and ``split`` columns (others ignored; the run
    folder's ``split.csv`` qualifies). Paths are relative to the data folder (or absolute). Split values are
    train / val / test (``validation`` is read as val)."""
    import csv

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise AuricleError(f"cannot read --split-file {str(path)!r}: {exc.strerror or exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"path", "split"} <= {f.strip() for f in reader.fieldnames}:
        raise AuricleError(f"--split-file {path}: needs a header with 'path' and 'split' columns, got "
                           f"{reader.fieldnames}; write e.g. 'path,split' then 'dog/1.wav,train'")
    out: dict[Path, str] = {}
    for line_no, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not row.get("path"):
            continue
        split = {"validation": "val", "valid": "val"}.get(row["split"].lower(), row["split"].lower())
        if split not in SPLITS:
            raise AuricleError(f"--split-file {path}:{line_no}: split {row['split']!r} is not one of {SPLITS}")
        out[Path(os.path.abspath(root / Path(row["path"])))] = split
    if not out:
        raise AuricleError(f"--split-file {path} lists no clips; add 'path,split' rows")
    return out


def _assign_splits(clips: list[Clip], split_file: str, root: Path) -> tuple[list[Clip], list[Path]]:
    """Clips with the split file's splits, and the clips it does not list. Paths it names that are not
    labelled clips under ``root`` are an error (one line, the first of them)."""
    wanted = read_split_assignments(split_file, root)
    by_path = {c.path: c for c in clips}
    unknown = [p for p in wanted if p not in by_path]
    if unknown:
        raise AuricleError(f"--split-file {split_file} names {len(unknown)} path(s) that are not labelled clips "
                           f"under {str(root)!r} (first: {_relative(unknown[0], root)!r}); paths must be relative "
                           "to the data folder")
    kept = [dataclasses.replace(c, assigned=wanted[c.path]) for c in clips if c.path in wanted]
    return kept, [c.path for c in clips if c.path not in wanted]


def groups_across_splits(clips: Iterable[Clip]) -> int:
    """How many groups have clips in more than one split (0 whenever splits come from the group rule)."""
    seen: dict[str, set[str]] = {}
    for c in clips:
        seen.setdefault(c.group, set()).add(c.split)
    return sum(1 for s in seen.values() if len(s) > 1)


def naming_warnings(clips: Sequence[Clip], *, layout: str, naming: Naming, rule: str) -> list[str]:
    """Signs that labels or groups were inferred wrongly: many classes of few clips whose names share a leading
    field, or file-name prefixes (speakers?) that land in more than one split."""
    out: list[str] = []
    counts = Counter(c.label for c in clips)
    if layout == "filenames" and naming.label_regex is None and len(counts) >= 8:
        heads = {label.split("_", 1)[0] for label in counts if "_" in label}
        median = sorted(counts.values())[len(counts) // 2]
        if median <= 20 and heads and len(heads) <= len(counts) / 3:
            example = next(iter(sorted(counts)))
            out.append(f"{len(counts)} classes of {median} clips (median) whose names share {len(heads)} leading "
                       f"fields (e.g. {example!r}): if the label is the leading field, pass --label-regex "
                       "'^([^_]+)_' (and --group-by for the speaker)")
    if naming.group_regex is None and rule in ("label_n", "folders") and clips:
        prefix: dict[str, set[str]] = {}
        for c in clips:
            stem = audio_stem(c.path.name)
            if c.group == stem and "_" in stem:
                prefix.setdefault(stem.split("_", 1)[0], set()).add(c.split)
        crossing = [p for p, s in prefix.items() if len(s) > 1]
        if crossing and len(prefix) <= 0.5 * len(clips):
            out.append(f"{len(crossing)} file-name prefixes (e.g. {sorted(crossing)[0]!r}) have clips in more than "
                       "one split; if the prefix is the speaker or source, pass --group-by '^([^_]+)_' so each "
                       "stays in one split")
    return out


@dataclasses.dataclass(frozen=True)
class Clip:
    """One labelled audio file. ``path`` is absolute; ``group`` decides the split."""

    path: Path
    label: str
    group: str
    assigned: str | None = None     # the split a --split-file or dealing gave; None: the hash rule on the group

    @property
    def split(self) -> str:
        return self.assigned or split_of(self.group)


@dataclasses.dataclass(frozen=True)
class Discovery:
    """What :func:`scan` found: the clips, audio files it could not label, the layout and naming rule it used,
    the stems a ``--group-by`` regex did not match (each its own group) and warnings about the naming."""

    root: Path
    layout: str
    clips: tuple[Clip, ...]
    rejected: tuple[tuple[Path, str], ...]
    rule: str = "label_n"
    group_misses: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    split_rule: str = SHA1_RULE


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


def scan(root: str | os.PathLike, *, layout: str = "auto", naming: Naming | None = None) -> Discovery:
    """Find the labelled clips under ``root`` (see the module docstring for layouts and rules; ``naming`` holds
    the user's --label-regex / --group-by / --split-file)."""
    if layout not in LAYOUTS:
        raise AuricleError(f"layout {layout!r} is not one of {LAYOUTS}")
    naming = naming or Naming()
    label_rx, group_rx = naming.compiled()
    root = _check_root(root)
    class_dirs = _class_dirs(root)
    per_class = {d: list(_audio_below(d)) for d in class_dirs} if layout != "filenames" else {}
    if layout == "auto":
        layout = "folders" if any(per_class.values()) and label_rx is None else "filenames"
    loose = [Path(e.path) for e in _sorted_entries(root) if e.is_file() and _is_audio(e.name)]
    rule = "label-regex" if label_rx is not None else (
        infer_rule([audio_stem(f.name) for f in loose]) if layout == "filenames" else "folders")
    misses: list[str] = []
    group = _grouper(rule, group_rx, misses)
    clips: list[Clip] = []
    rejected: list[tuple[Path, str]] = []
    if layout == "folders":
        for folder, files in per_class.items():
            clips.extend(Clip(f, folder.name, group(audio_stem(f.name))) for f in files)
        rejected.extend((f, "audio file outside any class folder (layout 'folders')") for f in loose)
    else:
        label = _labeller(rule, label_rx)
        why = (f"name does not match --label-regex {naming.label_regex!r}" if label_rx is not None else
               "no label in the file name; name it <label>_<n>.<ext>, use class folders or pass --label-regex")
        for f in loose:
            lab = label(audio_stem(f.name))
            if lab is None:
                rejected.append((f, why))
            else:
                clips.append(Clip(f, lab, group(audio_stem(f.name))))
    clips.sort(key=lambda c: (c.label, str(c.path)))
    if naming.split_file:
        clips, unlisted = _assign_splits(clips, naming.split_file, root)
        rejected.extend((f, "not listed in --split-file") for f in unlisted)
        split_rule = f"--split-file {Path(naming.split_file).name} (the user's split)"
    else:
        clips, split_rule = _never_empty(clips)
    warns = naming_warnings(clips, layout=layout, naming=naming, rule=rule)
    if split_rule == BY_CLIP_RULE:
        warns.append(f"only {len({c.group for c in clips})} group(s) (speakers/sources): split by clip, so the same "
                     "speaker is in train and test and the test accuracy is optimistic; add speakers or pass "
                     "--split-file")
    if misses:
        warns.append(f"{len(misses)} file name(s) do not match --group-by {naming.group_regex!r} (e.g. "
                     f"{misses[0]!r}); each of them is its own group")
    return Discovery(root=root, layout=layout, clips=tuple(clips), rejected=tuple(rejected), rule=rule,
                     group_misses=tuple(misses), warnings=tuple(warns), split_rule=split_rule)


def _never_empty(clips: list[Clip]) -> tuple[list[Clip], str]:
    """The clips with their splits and the rule that gave them (:func:`edge.splits.choose_splits`: the sha1
    rule unless it leaves a split empty)."""
    splits, rule = choose_splits([c.group for c in clips])
    if rule == SHA1_RULE:
        return clips, rule
    return [dataclasses.replace(c, assigned=s) for c, s in zip(clips, splits)], rule


def discover(root: str | os.PathLike, *, layout: str = "auto", naming: Naming | None = None) -> list[Clip]:
    """The labelled clips under ``root``, sorted by label then path. Unlabelled files are left out."""
    return list(scan(root, layout=layout, naming=naming).clips)


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


def _cache_key(config: FeatureConfig, store_samples: int | None = None) -> dict[str, Any]:
    """Waveforms fitted to the clip length are keyed by the frontend settings (as they always were); whole
    clips kept up to ``store_samples`` (longer than one window) by the rate and that length only."""
    if store_samples is None or store_samples == config.clip_samples:
        return {"cache_version": CACHE_VERSION, "frontend": config.frontend_key}
    return {"cache_version": CACHE_VERSION, "sample_rate": config.sample_rate, "whole_clip_samples": store_samples}


class _WaveformCache:
    """Packs of ``(sha1, waveform, native info)`` rows in ``<dir>/<sha1(key)[:16]>/pack-*.npz``.

    Rows are found by the sha1 of the file's bytes; a pack is only ever written whole (temp file + rename).
    Packs written before features were dropped also hold a ``features`` array, which is not read.
    """

    _ARRAYS = ("sha1", "waveforms", "sample_rate", "channels", "frames")

    def __init__(self, directory: Path, config: FeatureConfig, store_samples: int | None = None) -> None:
        key_json = json.dumps(_cache_key(config, store_samples), sort_keys=True)
        self.key_json = key_json
        self.dir = directory / hashlib.sha1(key_json.encode()).hexdigest()[:16]
        self.wave_shape = (store_samples or config.clip_samples,)
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
    :func:`edge.features.fit_to_clip` -- to the clip length, or with ``keep_seconds`` to that longer length
    (whole clips: ``lengths`` gives the samples of each clip's own audio in its row).
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
    lengths: np.ndarray | None = None   # (N,) samples of each clip's own audio in its row (<= row length)
    discovery: Discovery | None = None

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
    def empty(cls, n: int, width: int) -> "_Rows":
        return cls(np.empty((n, width), dtype=np.float32), np.zeros((n, 3), dtype=np.int64),
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


def _fit_row(mono: np.ndarray, width: int) -> np.ndarray:
    """Zero-pad at the end or centre-crop to ``width`` samples (:func:`edge.features.fit_to_clip`'s rule)."""
    if mono.size > width:
        start = (mono.size - width) // 2
        return mono[start:start + width]
    return np.pad(mono, (0, width - mono.size))


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
                rows.put(i, _fit_row(mono, rows.waveforms.shape[1]), native)
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
        _, info = _decode_checked(path, _read_bytes(path))
    except AudioError:
        return 0.0
    return info.duration


def load_dataset(root: str | os.PathLike, config: FeatureConfig, *, layout: str = "auto", strict: bool = False,
                 cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                 progress: bool = True, naming: Naming | None = None,
                 keep_seconds: float | None = None) -> Dataset:
    """Discover and decode every clip under ``root``, fitted to the clip length.

    Files that cannot be used (unreadable, empty, truncated, undecodable, NaN/inf, unlabelled) are listed in
    ``Dataset.skipped`` with the reason, and printed one line each on stderr when ``progress``;
    ``strict=True`` raises :class:`AuricleError` on the first instead. ``progress`` also prints a line every
    500 decoded files. Waveforms are cached on disk (``cache_dir``, default :func:`default_cache_dir`;
    ``use_cache=False`` turns it off) by frontend settings and file content, so a rerun decodes nothing.
    Raises :class:`AuricleError` when the folder is missing or holds no usable clip.
    Call :meth:`Dataset.check_trainable` before training.

    ``keep_seconds`` keeps whole clips: every row is that long (at least one window), a shorter clip
    zero-padded at the end, a longer one centre-cropped to it; ``Dataset.lengths`` gives each clip's own
    samples. ``naming`` holds the user's label / group regexes and split file (:class:`Naming`).
    """
    if not isinstance(config, FeatureConfig):
        raise AuricleError(f"config must be an edge.features.FeatureConfig, got {type(config).__name__}")
    found = scan(root, layout=layout, naming=naming)
    for warning in found.warnings:
        _note(progress, f"warning: {warning}")
    skipped: list[tuple[Path, str]] = []
    skip = _skipper(skipped, strict=strict, note=progress,
                    fix="fix or remove the file, or turn strict off to skip it")
    for path, reason in found.rejected:
        skip(path, reason)
    if not found.clips:
        raise AuricleError(trainability_problem({}, root=found.root) or "no clips")
    width = max(config.clip_samples, int(round((keep_seconds or 0.0) * config.sample_rate)))
    rows = _Rows.empty(len(found.clips), width)
    cache = None
    if use_cache:
        cache = _WaveformCache(Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(),
                               config, width)
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
        lengths=np.minimum(np.ceil(rows.info[:, 2] * config.sample_rate / np.maximum(rows.info[:, 0], 1)),
                           width).astype(np.int64),
        discovery=found,
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
    rule: str = "label_n"
    groups: int = 0
    groups_across: int = 0                # groups with clips in more than one split
    split_source: str = "hash"            # "hash" (sha1 of the group), a dealing rule's text or the --split-file path
    warnings: tuple[str, ...] = ()
    clip_seconds: tuple[float, str] | None = None   # the automatic clip length and why
    group_rule: str = "speaker of <speaker>_nohash_<n> names, else each file"


AUTO_CLIP_PERCENTILE = 90.0
AUTO_CLIP_MAX_SECONDS = 10.0
AUTO_CLIP_MIN_SECONDS = 0.5


def auto_clip_seconds(durations: Sequence[float], *, percentile: float = AUTO_CLIP_PERCENTILE,
                      cap: float = AUTO_CLIP_MAX_SECONDS) -> tuple[float, str]:
    """``--clip-seconds auto``: the ``percentile`` of the clip durations (so most clips fit in one window and
    longer ones are covered by several), rounded up to 0.1 s, between 0.5 s and ``cap``; and the reason."""
    d = np.asarray([x for x in durations if x > 0], dtype=np.float64)
    if d.size == 0:
        raise AuricleError("--clip-seconds auto: no clip durations to choose from; pass --clip-seconds SECONDS")
    p = float(np.percentile(d, percentile))
    seconds = min(cap, max(AUTO_CLIP_MIN_SECONDS, math.ceil(p * 10.0 - 1e-6) / 10.0))
    why = (f"{percentile:g}th percentile of {d.size} clip durations is {p:.2f} s "
           f"(range {d.min():.2f}-{d.max():.2f} s)")
    if p > cap:
        why += f", capped at {cap:g} s (longer clips are scored by several windows)"
    elif seconds > p + 0.1:
        why += f", raised to the {AUTO_CLIP_MIN_SECONDS:g} s minimum"
    return seconds, why


def inspect_dataset(root: str | os.PathLike, *, layout: str = "auto", strict: bool = False,
                    sample_rate: int = FeatureConfig.sample_rate, progress: bool = True,
                    naming: Naming | None = None) -> DatasetReport:
    """Decode every clip under ``root`` (mono, resampled to ``sample_rate``) and summarise what is usable.

    Raises :class:`AuricleError` for a missing folder, or on the first unusable file when ``strict``.
    """
    if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise AuricleError(f"sample rate {sample_rate!r} must be a positive integer (Hz)")
    found = scan(root, layout=layout, naming=naming)
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
    usable: list[Clip] = []
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
            usable.append(clip)
        bar.step(skipped=len(skipped))
    bar.finish(skipped=len(skipped))
    return DatasetReport(
        root=found.root, layout=found.layout, files=len(found.clips) + len(found.rejected),
        clip_counts=dict(sorted(counts.items())), durations={k: float(durations[k]) for k in sorted(counts)},
        sample_rates=dict(sorted(rates.items())), channels=dict(sorted(chans.items())),
        shortest=min(lengths, default=0.0), longest=max(lengths, default=0.0),
        split_clips={s: split_clips[s] for s in SPLITS}, split_groups={s: len(split_groups[s]) for s in SPLITS},
        skipped=tuple(skipped), problem=trainability_problem(dict(counts), root=found.root),
        rule=found.rule, groups=len({c.group for c in usable}), groups_across=groups_across_splits(usable),
        split_source=(naming.split_file if naming and naming.split_file else
                      "hash" if found.split_rule == SHA1_RULE else found.split_rule), warnings=found.warnings,
        clip_seconds=auto_clip_seconds(lengths) if lengths else None,
        group_rule=_group_rule_text(found.rule, naming),
    )


def _group_rule_text(rule: str, naming: Naming | None) -> str:
    if naming is not None and naming.group_regex:
        return f"--group-by '{naming.group_regex}'"
    if rule == "label_speaker_n":
        return "the <speaker> of <label>_<speaker>_<n>"
    return "speaker of <speaker>_nohash_<n> names, else each file"


_RULE_TEXT = {
    "folders": "class folders",
    "label-regex": "--label-regex (first group of the file name)",
    "nohash": "<word>_<speaker>_nohash_<n> (label: word, group: speaker)",
    "label_speaker_n": "<label>_<speaker>_<n> (label: first field, group: second field)",
    "label_n": "<label>_<n> (a trailing number dropped; each file its own group)",
}


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
    lines.append(f"labels: {_RULE_TEXT.get(report.rule, report.rule)}")
    if report.clip_seconds:
        lines.append(f"--clip-seconds auto would choose {report.clip_seconds[0]:g} s: {report.clip_seconds[1]}")
    short = {"hash": "sha1(group) % 100", DEALT_RULE: "groups dealt: the sha1 rule left a split empty",
             BY_CLIP_RULE: "by clip: fewer than 3 groups"}
    source = short.get(report.split_source, f"--split-file {report.split_source}")
    lines.append(f"split ({source}; clips/groups): " + ", ".join(
        f"{s} {report.split_clips[s]}/{report.split_groups[s]}" for s in SPLITS))
    lines.append(f"groups ({report.group_rule}): {report.groups}, across splits: {report.groups_across}")
    lines.extend(f"warning: {w}" for w in report.warnings)
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
  <label>_<speaker>_<n> flat names (e.g. 3_jackson_12.wav, when the middle fields repeat across labels)
             -> label 3, group jackson
  --label-regex REGEX  flat files: the first group of REGEX (searched in the file name without extension)
             is the label, e.g. --label-regex '^([a-z]+)_'

groups and splits: <speaker>_nohash_<n> files are grouped by speaker, <label>_<speaker>_<n> by speaker,
  other files are their own group; --group-by REGEX: the first group of REGEX is the group, e.g.
  --group-by '^([^_]+)_' for 2AV8_4_1_0_44_0_0_0.wav -> 2AV8.
  sha1(group) % 100 < 80 -> train, < 90 -> val, else test, so a speaker never straddles splits.
  --split-file CSV (header with path,split; paths relative to DIR) gives your own split instead; clips it
  does not list are left out. "across splits" counts groups with clips in more than one split (0 under a
  group rule).

exit status: 0 when the data can be trained on; 2 with one line on stderr when it cannot (missing folder,
no audio, only one class, a class whose files were all skipped, a bad regex, a split file naming unknown
paths) or, with --strict, on the first bad file.
"""


def add_naming_options(parser: argparse.ArgumentParser) -> None:
    """--label-regex, --group-by and --split-file (shared by the inspector and the trainer)."""
    parser.add_argument("--label-regex", metavar="REGEX", default=None,
                        help="flat files: the first group of REGEX in the file name is the label")
    parser.add_argument("--group-by", metavar="REGEX", default=None,
                        help="the first group of REGEX in the file name is the split group (speaker/source), "
                             "e.g. '^([^_]+)_'")
    parser.add_argument("--split-file", metavar="CSV", default=None,
                        help="your own split: CSV with path,split columns (paths relative to the data folder)")


def naming_from(args: argparse.Namespace) -> Naming:
    """The :class:`Naming` of parsed options, its regexes checked (bad ones raise one-line errors)."""
    naming = Naming(label_regex=args.label_regex, group_regex=args.group_by, split_file=args.split_file)
    naming.compiled()
    return naming


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
    add_naming_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    report = inspect_dataset(args.dir, layout=args.layout, strict=args.strict, sample_rate=args.sample_rate,
                             progress=sys.stderr.isatty(), naming=naming_from(args))
    print(format_report(report), flush=True)
    if report.problem:
        raise AuricleError(report.problem)
    return 0


if __name__ == "__main__":
    run_cli(main)
