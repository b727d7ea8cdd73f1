"""Negative audio: long recordings with none of the target sounds, for learning to reject and for mining.

``python -m training.train --negatives DIR [DIR ...]`` reads every audio file under the folders, splits
them **by file** into train / validation / test with the project's rule (``sha1(path relative to the
folder given) % 100``: < 80 train, 80-89 validation, >= 90 test), and computes each file's log-mel frames
once with the one frontend (``edge.features.log_mel``), cached by the file's content. Training then

* appends random windows of the *train* files to every batch, labelled as the background class;
* mixes random windows of them under positives at a random signal-to-noise ratio (in the power domain);
* optionally mines hard negatives: every window of the train files that the current model scores above a
  threshold for a reportable label is collected and over-sampled in a short fine-tune.

A folder built by ``python -m tools.negative_corpora`` (one sub-folder per *source*, each with a
``manifest.json`` naming its role) is split by source instead: a train source's files all train, a tune
source's all serve validation (mining checks, detector tuning), and a test source's files are all test: never
read here, only ever measured (``benchmarks.false_accepts_sources``). Frames are cached on disk and memory-mapped, so tens
of hours of negatives train within a small machine's memory.

The validation and test files are never used for training; the validation part is for tuning the detector
(``tools/tune_detector.py``) and the test part for the false-accepts figures (``python -m edge.evaluate``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edge.errors import AudioError, AuricleError
from edge.features import FeatureConfig, log_mel
from edge.fileio import atomic_writer
from edge.splits import SPLITS, file_split, source_roles, split_of
from training.data import AUDIO_EXTENSIONS, default_cache_dir, load_audio

log = logging.getLogger(__name__)

BACKGROUND_LABEL = "_background_"
#: the class speech-free negatives (``--noise-negatives``) are labelled as: Speech Commands' background noise
NOISE_LABEL = "_silence_"
#: the labels a data set may already have for "not a target sound", in order of preference
BACKGROUND_CANDIDATES = ("_unknown_", "_background_", "_silence_")


@dataclasses.dataclass(frozen=True)
class NegativeFile:
    path: Path          # absolute, for reading; a link stays the link (see _place), so marks see where it was found
    rel: str            # relative to the folder it was found under (posix): what the split hashes
    split: str
    noise: bool = False  # no speech in it: labelled as the data's silence class (see ``noise_paths``)


def split_of_file(rel: str) -> str:
    """``train`` / ``val`` / ``test`` from ``sha1(rel) % 100`` (the shared data's suggested rule)."""
    return split_of(rel)


def find_negative_files(roots: Sequence[str | os.PathLike[str]],
                        noise_paths: Sequence[str | os.PathLike[str]] = ()) -> list[NegativeFile]:
    """Every audio file under ``roots`` (files are taken as they are), sorted, with its split; those under one
    of ``noise_paths`` (folders or files inside the roots) are marked as noise. The split still hashes the
    path relative to the root, so naming a subfolder as noise never moves a file between splits."""
    found: list[NegativeFile] = []
    for root in roots:
        root = Path(root)
        if root.is_file():
            found.append(NegativeFile(_place(root), root.name, split_of_file(root.name)))
            continue
        if not root.is_dir():
            raise AuricleError(f"negative audio {root} does not exist; pass folders or files of audio with "
                               "none of the target sounds")
        found.extend(_files_under(root, source_roles(root)))
    if not found:
        raise AuricleError(f"no audio files under {', '.join(map(str, roots))}; --negatives needs "
                           "WAV/FLAC/... recordings")
    return _mark_noise(found, roots, noise_paths)


def _files_under(root: Path, roles: dict[Path, str]) -> Iterable[NegativeFile]:
    """Audio files under ``root``: a corpus source's files take the split of its role (train -> train, tune ->
    val, test -> test: loaded never, see :func:`load_negative_bank`); other files the sha1 rule of their path."""
    for source, role in roles.items():
        if role == "test":
            log.info("negatives: %s is a test source; it is never trained or tuned on", source.name)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in AUDIO_EXTENSIONS:
                continue
            p = Path(dirpath) / name
            yield NegativeFile(_place(p), p.relative_to(root).as_posix(), file_split(p, root, roles))


def _place(path: Path) -> Path:
    """Where ``path`` sits: a folder resolved; a file's folder resolved with its own name kept, so a linked
    file (ESC-10 folds linked into one folder) is judged by the folder it was found in, not by its target."""
    return path.resolve() if path.is_dir() else path.parent.resolve() / path.name


def _mark_noise(files: list[NegativeFile], roots: Sequence[str | os.PathLike[str]],
                noise_paths: Sequence[str | os.PathLike[str]]) -> list[NegativeFile]:
    """``files`` with ``noise`` set for those whose place is, or is under, one of ``noise_paths``; each of
    those paths must lie inside the roots and mark at least one file."""
    resolved_roots = [_place(Path(r)) for r in roots]
    marked = [False] * len(files)
    for p in noise_paths:
        q = _place(Path(p))
        if not Path(p).exists() or not any(q == r or r in q.parents for r in resolved_roots):
            raise AuricleError(f"--noise-negatives {p} is not a folder or file inside the --negatives "
                               "paths; name subfolders (or files) of those")
        hits = [i for i, f in enumerate(files) if f.path == q or q in f.path.parents]
        if not hits:
            raise AuricleError(f"--noise-negatives {p} holds none of the negative audio files; name a folder "
                               "or file with audio in it")
        for i in hits:
            marked[i] = True
    return [dataclasses.replace(f, noise=m) for f, m in zip(files, marked)] if noise_paths else files


def _cache_path(cache_dir: Path, config: FeatureConfig, data: bytes) -> Path:
    key = json.dumps(config.frontend_key, sort_keys=True)
    folder = hashlib.sha1(key.encode()).hexdigest()[:16]
    return cache_dir / "negatives" / folder / f"{hashlib.sha1(data).hexdigest()}.npy"


def file_features(path: Path, config: FeatureConfig, cache_dir: Path | None) -> np.ndarray:
    """The whole file's log-mel frames ``(frames, n_mels)`` float16 dB, from the cache when it has them."""
    data = path.read_bytes()
    cached = _cache_path(cache_dir, config, data) if cache_dir is not None else None
    if cached is not None and cached.is_file():
        try:
            return np.load(cached, mmap_mode="r", allow_pickle=False)   # read from disk as windows are cut
        except (OSError, ValueError):
            pass                                # a damaged entry is recomputed and rewritten
    try:
        audio = load_audio(path, config.sample_rate)
    except AudioError as exc:
        raise AuricleError(f"negative audio {exc}; remove the file or convert it") from None
    frames = log_mel(audio, config).astype(np.float16)
    if cached is not None:
        with atomic_writer(cached, binary=True) as fh:
            np.save(fh, frames, allow_pickle=False)
        return np.load(cached, mmap_mode="r", allow_pickle=False)     # hours of frames stay on disk
    return frames


@dataclasses.dataclass
class NegativeBank:
    """Log-mel frames of negative files, by split. Windows are cut from them on demand."""

    config: FeatureConfig
    files: list[NegativeFile]
    frames: list[np.ndarray]          # per file, (frames, n_mels) float16 dB
    _noise_shares: dict[str, float] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def indices(self, split: str, noise: bool | None = None) -> np.ndarray:
        """Files of ``split`` long enough for one window (``noise``: only noise files, or only the others)."""
        n = self.config.n_frames
        return np.asarray([i for i, (f, x) in enumerate(zip(self.files, self.frames))
                           if f.split == split and x.shape[0] >= n and (noise is None or f.noise == noise)],
                          dtype=int)

    def noise_share(self, split: str = "train") -> float:
        """The share of ``split``'s windows that come from noise files (computed once: batches ask for it)."""
        if split not in self._noise_shares:
            n = self.config.n_frames
            length = {kind: sum(self.frames[i].shape[0] - n + 1 for i in self.indices(split, kind))
                      for kind in (True, False)}
            self._noise_shares[split] = length[True] / max(1, length[True] + length[False])
        return self._noise_shares[split]

    def seconds(self, split: str, noise: bool | None = None) -> float:
        hop = self.config.hop_length / self.config.sample_rate
        return float(sum(self.frames[i].shape[0] for i, f in enumerate(self.files)
                         if f.split == split and (noise is None or f.noise == noise)) * hop)

    def random_windows(self, rng: np.random.Generator, k: int, split: str = "train",
                       noise: bool | None = None) -> np.ndarray:
        """``k`` random windows ``(k, n_frames, n_mels)`` float32 dB, files drawn in proportion to length
        (``noise``: from noise files only, or from the others only)."""
        idx = self.indices(split, noise)
        if idx.size == 0 or k <= 0:
            return np.empty((0, self.config.n_frames, self.config.n_mels), dtype=np.float32)
        n = self.config.n_frames
        lengths = np.asarray([self.frames[i].shape[0] - n + 1 for i in idx], dtype=float)
        files = rng.choice(idx, size=k, p=lengths / lengths.sum())
        out = np.empty((k, n, self.config.n_mels), dtype=np.float32)
        for j, i in enumerate(files):
            start = int(rng.integers(0, self.frames[i].shape[0] - n + 1))
            out[j] = self.frames[i][start:start + n]
        return out

    def sliding_windows(self, split: str, hop_frames: int, noise: bool | None = None) -> Iterable[np.ndarray]:
        """Every window of the split's files (``noise``: of its noise files only, or of the others only) at
        ``hop_frames``, in batches of up to 512 ``(B, n, m)``."""
        n = self.config.n_frames
        batch: list[np.ndarray] = []
        for i in self.indices(split, noise):
            x = self.frames[i]
            for start in range(0, x.shape[0] - n + 1, hop_frames):
                batch.append(x[start:start + n])
                if len(batch) == 512:
                    yield np.asarray(batch, dtype=np.float32)
                    batch = []
        if batch:
            yield np.asarray(batch, dtype=np.float32)

    def summary(self) -> dict[str, dict[str, float]]:
        return {s: {"files": int(sum(f.split == s for f in self.files)),
                    "hours": round(self.seconds(s) / 3600, 4)} for s in SPLITS}


def load_negative_bank(roots: Sequence[str | os.PathLike[str]], config: FeatureConfig, *,
                       cache_dir: str | os.PathLike[str] | None = None, progress: bool = True,
                       splits: Sequence[str] = ("train", "val"),
                       noise_paths: Sequence[str | os.PathLike[str]] = ()) -> NegativeBank:
    """Find the files under ``roots`` and compute the frames of those in ``splits`` (never test by default)."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    files = [f for f in find_negative_files(roots, noise_paths) if f.split in splits]
    if not any(f.split == "train" for f in files) and "train" in splits:
        raise AuricleError("none of the negative files falls in the train split (sha1 of the path % 100 < 80); "
                           "pass more files")
    frames = []
    for k, f in enumerate(files, 1):
        frames.append(file_features(f.path, config, cache))
        if progress and (k % 200 == 0 or k == len(files)):
            log.info(f"negatives: {k}/{len(files)} files")
    bank = NegativeBank(config=config, files=files, frames=frames)
    if progress:
        s = bank.summary()
        log.info("negatives: " + ", ".join(f"{k} {v['files']} files / {v['hours']:.2f} h" for k, v in s.items()
                                           if k in splits))
    return bank


def background_label(labels: Sequence[str]) -> str:
    """The class negatives are labelled as: the data's own "not a target" class, else ``_background_``."""
    for name in BACKGROUND_CANDIDATES:
        if name in labels:
            return name
    return BACKGROUND_LABEL


def mix_under(x: np.ndarray, noise: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float],
              config: FeatureConfig) -> np.ndarray:
    """dB windows ``x`` with ``noise`` windows added in the power domain at a random SNR (mean power)."""
    px = np.power(10.0, x / 10.0)
    pn = np.power(10.0, noise / 10.0)
    snr = rng.uniform(*snr_db, size=(x.shape[0], 1, 1))
    scale = px.mean(axis=(1, 2), keepdims=True) / np.maximum(pn.mean(axis=(1, 2), keepdims=True), 1e-20)
    mixed = px + pn * scale * np.power(10.0, -snr / 10.0)
    ref = 10.0 * np.log10(max(config.amin, config.ref_power))
    return (10.0 * np.log10(np.maximum(mixed, config.amin)) - ref).astype(np.float32)
