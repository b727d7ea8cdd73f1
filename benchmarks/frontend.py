"""Frontend benchmark: auricle's numpy log-mel vs librosa, and streaming vs offline, measured side by side.

    python -m benchmarks.frontend                                   # the shipped bundles' frontend settings
    python -m benchmarks.frontend --rounds 100 --bundles firmware_assets/kws_mobilenet_edge

Rows, one per distinct frontend setting of the bundles (default: every bundle in firmware_assets/; without
bundles, :func:`edge.features.edge_config` and :func:`edge.features.seed_config`):

* ``1 s``: :func:`edge.features.log_mel` on 1 s of audio vs librosa computing the same numbers
  (``melspectrogram(center=False, window="hann", htk=False, norm="slaney")`` then ``power_to_db`` with the fixed
  reference, as tests/test_features.py calls it), ratio auricle / librosa, and the largest difference in dB.
* ``60 s in 100 ms chunks``: :class:`edge.features.StreamingLogMel` fed 60 s of audio 100 ms at a time (a fresh
  stream each round) vs one :func:`edge.features.log_mel` call on the same 60 s; ratio streaming / offline, the
  extra time per push, and whether the two outputs are bit for bit equal.

Method: fixed seeded float32 audio (noise plus tones under a slow envelope); ``--warmup`` rounds, then
``--rounds`` rounds; each round times every item once (a 1 s item as the mean of ``--inner`` back-to-back calls),
starting one item later each round, so machine drift hits every item alike. Medians are reported. One BLAS
thread (``OPENBLAS_NUM_THREADS=1`` unless set, as the device runtime runs; threadpoolctl enforces it when it is
installed). Timing never fails the run: targets are reported as ``ok`` / ``MISS``.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy is imported (the package __init__ does too)

import argparse
import contextlib
import dataclasses
import json
import statistics
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from benchmarks.measure import librosa_fn
from edge import features
from edge.bundle import load_bundle, repo_root
from edge.errors import AuricleError, run_cli
from edge.features import FeatureConfig
from edge.sysinfo import cpu_description

FRONTEND_TARGET = 0.35     # auricle / librosa on 1 s of audio
STREAMING_TARGET = 1.05    # streaming (100 ms chunks) / offline on 60 s
STREAM_SECONDS = 60.0
CHUNK_SECONDS = 0.1


@dataclasses.dataclass(frozen=True)
class Setting:
    """One frontend setting to measure and the bundles that use it."""

    label: str
    config: FeatureConfig
    bundles: tuple[str, ...]


@dataclasses.dataclass
class Item:
    """One timed thing; ``once()`` returns the seconds of one sample."""

    name: str
    once: Callable[[], float]
    samples: list[float] = dataclasses.field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return 1000.0 * statistics.median(self.samples)


def seeded_audio(n: int, sample_rate: int, seed: int = 7) -> np.ndarray:
    """Fixed speech-like test signal (float32): seeded noise plus two tones under a slow envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / float(sample_rate)
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 1.3 * t) ** 2
    x = 0.05 * rng.standard_normal(n) + env * (0.1 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.sin(2 * np.pi * 1250 * t))
    return x.astype(np.float32)


PROFILE_DEFAULTS = {"edge": features.edge_config, "seed": features.seed_config}


def settings_from_bundles(paths: Sequence[str | os.PathLike[str]] | None) -> list[Setting]:
    """Distinct frontend settings of the bundles (default: all in firmware_assets/, plus each profile's default
    settings where no bundle there uses that profile -- the seed bundles are rebuilt by make firmware, not kept)."""
    if paths is None:
        root = repo_root() / "firmware_assets"
        paths = sorted(p for p in root.glob("*") if (p / "manifest.json").is_file()) if root.is_dir() else []
        found = _settings_of(paths)
        have = {s.label for s in found}
        return found + [Setting(name, make(), ()) for name, make in PROFILE_DEFAULTS.items() if name not in have]
    return _settings_of(paths)


def _settings_of(paths: Sequence[str | os.PathLike[str]]) -> list[Setting]:
    out: dict[str, Setting] = {}
    for path in paths:
        bundle = load_bundle(path, verify=False)
        cfg = bundle.feature_config
        key = json.dumps(cfg.frontend_key, sort_keys=True)
        if key in out:
            old = out[key]
            out[key] = dataclasses.replace(old, bundles=old.bundles + (bundle.name,))
        else:
            out[key] = Setting(cfg.profile, cfg, (bundle.name,))
    return list(out.values())


def _timed(fn: Callable[[], Any], inner: int = 1) -> Callable[[], float]:
    clock = time.perf_counter

    def once() -> float:
        t0 = clock()
        for _ in range(inner):
            fn()
        return (clock() - t0) / inner
    return once


def _stream_all(impl: ModuleType, config: FeatureConfig, x: np.ndarray, chunk: int) -> np.ndarray:
    stream = impl.StreamingLogMel(config)
    return np.concatenate([stream.push(x[i:i + chunk]) for i in range(0, x.size, chunk)])


def frontend_items(setting: Setting, impl: ModuleType, tag: str, inner: int) -> tuple[dict[str, Any], list[Item]]:
    """Items and fixed facts (differences, exactness) for one setting and one implementation module."""
    cfg = setting.config
    one = seeded_audio(cfg.sample_rate, cfg.sample_rate)
    long = seeded_audio(int(STREAM_SECONDS * cfg.sample_rate), cfg.sample_rate, seed=8)
    chunk = int(round(CHUNK_SECONDS * cfg.sample_rate))
    lib = librosa_fn(cfg)
    facts: dict[str, Any] = {"frames_1s": int(impl.log_mel(one, cfg).shape[0]), "pushes": -(-long.size // chunk)}
    offline = impl.log_mel(long, cfg)
    facts["bit_exact"] = bool(np.array_equal(_stream_all(impl, cfg, long, chunk), offline))
    items = {"ours_1s": Item(f"{tag}:{setting.label}:ours_1s", _timed(lambda: impl.log_mel(one, cfg), inner)),
             "stream_60s": Item(f"{tag}:{setting.label}:stream", _timed(lambda: _stream_all(impl, cfg, long, chunk))),
             "offline_60s": Item(f"{tag}:{setting.label}:offline", _timed(lambda: impl.log_mel(long, cfg)))}
    if lib is not None:
        facts["max_abs_diff_db"] = float(np.abs(impl.log_mel(one, cfg) - lib(one)).max())
        items["librosa_1s"] = Item(f"{setting.label}:librosa_1s", _timed(lambda: lib(one), inner))
    facts["items"] = items
    return facts, list(items.values())


def run_interleaved(items: Sequence[Item], *, rounds: int, warmup: int) -> None:
    """Each round times every item once, starting one item later each round; warm-up rounds are dropped."""
    for r in range(warmup + rounds):
        for j in range(len(items)):
            item = items[(r + j) % len(items)]
            seconds = item.once()
            if r >= warmup:
                item.samples.append(seconds)


@contextlib.contextmanager
def one_blas_thread() -> Iterator[str]:
    """Pin BLAS to one thread for the block (threadpoolctl when installed, else the environment variable)."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        yield f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
        return
    with threadpool_limits(limits=1, user_api="blas"):
        threads = sorted({p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"})
        yield f"BLAS threads {threads}"


def _mark(ratio: float, target: float) -> str:
    return f"<= {target:g} {'ok' if ratio <= target else 'MISS'}"


def format_table(settings: Sequence[Setting], facts: Sequence[dict[str, Any]]) -> list[str]:
    """The results table: one 1 s line and one streaming line per setting."""
    lines = [f"{'frontend (median ms)':44s} {'auricle':>9s} {'librosa':>9s} {'ratio':>6s}  {'target':14s} max|diff| dB",
             "-" * 100]
    for s, f in zip(settings, facts):
        it = f["items"]
        name = f"{s.label} 1 s ({f['frames_1s']} frames x {s.config.n_mels} mels)"
        ours = it["ours_1s"].median_ms
        if "librosa_1s" in it:
            lib = it["librosa_1s"].median_ms
            mark = _mark(ours / lib, FRONTEND_TARGET)
            lines.append(f"{name:44s} {ours:9.3f} {lib:9.3f} {ours / lib:6.2f}  {mark:14s} {f['max_abs_diff_db']:.1e}")
        else:
            lines.append(f"{name:44s} {ours:9.3f} {'-':>9s} {'-':>6s}  (librosa not installed)")
    lines += ["", f"{'streaming vs offline (median ms)':44s} {'stream':>9s} {'offline':>9s} {'ratio':>6s}  "
                  f"{'target':14s} extra/push  bit-exact", "-" * 100]
    for s, f in zip(settings, facts):
        it = f["items"]
        st, off = it["stream_60s"].median_ms, it["offline_60s"].median_ms
        extra_us = 1000.0 * (st - off) / f["pushes"]
        name = f"{s.label} {STREAM_SECONDS:g} s in {1000 * CHUNK_SECONDS:g} ms chunks ({f['pushes']} pushes)"
        lines.append(f"{name:44s} {st:9.3f} {off:9.3f} {st / off:6.2f}  {_mark(st / off, STREAMING_TARGET):14s} "
                     f"{extra_us:7.1f} us  {'yes' if f['bit_exact'] else 'NO'}")
    return lines


def _version(name: str) -> str:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return "not installed"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.frontend", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundles", nargs="+", type=Path, help="bundle folders (default: all in firmware_assets/)")
    ap.add_argument("--rounds", type=int, default=40, help="timed rounds (default 40)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    ap.add_argument("--inner", type=int, default=5, help="1 s calls per timed sample (default 5)")
    args = ap.parse_args(argv)
    for name in ("rounds", "inner"):
        if getattr(args, name) < 1:
            raise AuricleError(f"--{name} {getattr(args, name)} must be at least 1")
    if args.warmup < 0:
        raise AuricleError(f"--warmup {args.warmup} must be 0 or more")
    settings = settings_from_bundles(args.bundles)
    with one_blas_thread() as blas:
        facts, items = [], []
        for s in settings:
            f, its = frontend_items(s, features, "auricle", args.inner)
            facts.append(f)
            items += its
        run_interleaved(items, rounds=args.rounds, warmup=args.warmup)
    print(f"CPU: {cpu_description()} | numpy {np.__version__} | librosa {_version('librosa')} | {blas} | "
          f"{args.rounds} rounds, medians")
    for s in settings:
        print(f"{s.label}: {', '.join(s.bundles) if s.bundles else 'the profile default (no bundle here uses it)'}")
    print("\n".join(format_table(settings, facts)))
    return 0


if __name__ == "__main__":
    run_cli(main)
