"""Decoded, labelled, split clips in memory (:func:`load_dataset` -> :class:`Dataset`), whether they can train
a classifier, and the automatic clip length (:func:`auto_clip_seconds`).

:func:`load_dataset` keeps fixed-length waveforms (:func:`edge.features.fit_to_clip`), or whole clips up to
``keep_seconds`` (``Dataset.lengths``), through the waveform cache (:mod:`training.data.cache`). Features are
not kept: training computes them once from the waveforms, with the context frames its time-shift
augmentation needs (:mod:`training.featureset`).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edge.errors import AudioError, AuricleError
from edge.features import FeatureConfig
from edge.progress import Cadence, Progress
from edge.splits import SPLITS
from training.data.cache import WaveformCache, default_cache_dir
from training.data.decode import AudioInfo, prepare_audio, read_bytes
from training.data.discover import Discovery, scan
from training.data.naming import AUDIO_EXTENSIONS, Clip, Naming
from training.data.split import write_split_csv

log = logging.getLogger(__name__)

PROGRESS_EVERY = 500     # a progress line every this many clips

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


def _note(enabled: bool, text: str, level: int = logging.WARNING) -> None:
    """One ``auricle data: ...`` line through this module's logger (nothing when not ``enabled``)."""
    if enabled:
        log.log(level, "auricle data: %s", text)


def progress_bar(total: int, what: str, enabled: bool) -> Progress:
    """A progress line every :data:`PROGRESS_EVERY` clips (INFO on this module's logger), and a summary when
    any line was written or the loop took more than 2 s."""
    emit = functools.partial(_note, True, level=logging.INFO) if enabled else None
    return Progress(what, total, emit, Cadence(items=PROGRESS_EVERY))


def skipper(skipped: list[tuple[Path, str]], *, strict: bool, fix: str,
            note: bool) -> Callable[[Path, str], None]:
    """The function that records an unusable file: listed in ``skipped`` (and logged as a warning when ``note``),
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


def _fill_from_cache(cache: WaveformCache, clips: Sequence[Clip], rows: _Rows) -> None:
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


def _decode_missing(clips: Sequence[Clip], rows: _Rows, config: FeatureConfig, cache: WaveformCache | None,
                    skip: Callable[[Path, str], None], skipped: list[tuple[Path, str]], progress: bool) -> None:
    """Decode every clip the cache did not hold into ``rows`` (and into the cache)."""
    hits = int(rows.ok.sum())
    decoded = 0
    bar = progress_bar(len(clips) - hits, "decoding", progress)
    try:
        for i, clip in enumerate(clips):
            if rows.ok[i]:
                continue
            try:
                data = read_bytes(clip.path)
                mono, native = prepare_audio(clip.path, data, config.sample_rate)
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


def load_dataset(root: str | os.PathLike, config: FeatureConfig, *, layout: str = "auto", strict: bool = False,
                 cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                 progress: bool = True, naming: Naming | None = None,
                 keep_seconds: float | None = None) -> Dataset:
    """Discover and decode every clip under ``root``, fitted to the clip length.

    Files that cannot be used (unreadable, empty, truncated, undecodable, NaN/inf, unlabelled) are listed in
    ``Dataset.skipped`` with the reason, and logged one warning each (logger ``training.data.dataset``) when
    ``progress``; ``strict=True`` raises :class:`AuricleError` on the first instead. ``progress`` also logs an
    INFO line every 500 decoded files. Waveforms are cached on disk (``cache_dir``, default
    :func:`default_cache_dir`; ``use_cache=False`` turns it off) by frontend settings and file content, so a
    rerun decodes nothing.
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
    skip = skipper(skipped, strict=strict, note=progress,
                   fix="fix or remove the file, or turn strict off to skip it")
    for path, reason in found.rejected:
        skip(path, reason)
    if not found.clips:
        raise AuricleError(trainability_problem({}, root=found.root) or "no clips")
    width = max(config.clip_samples, int(round((keep_seconds or 0.0) * config.sample_rate)))
    rows = _Rows.empty(len(found.clips), width)
    cache = None
    if use_cache:
        cache = WaveformCache(Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(),
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
