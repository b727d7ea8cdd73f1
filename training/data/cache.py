"""The waveform cache: decoded clips on disk in ``.npz`` packs (read with ``allow_pickle=False``), found by
the sha1 of each file's bytes and keyed by the frontend settings (whole clips: the rate and the kept length).
Cache folder: ``cache_dir``, else ``$AURICLE_CACHE``, else ``~/.cache/auricle/features``; delete it at any
time to reclaim the space."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge.features import FeatureConfig
from edge.fileio import atomic_writer, write_text_atomic
from training.data.decode import AudioInfo

CACHE_VERSION = 1
CACHE_ENV = "AURICLE_CACHE"
_PACK_FLUSH = 2048       # write a cache pack after this many newly computed clips


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


class WaveformCache:
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
