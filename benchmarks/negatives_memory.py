"""Memory of hours of training negatives: ``python -m benchmarks.negatives_memory``.

Training cuts random windows from every negative file's log-mel frames (``training.negatives.NegativeBank``).
The frames are cached on disk as ``.npy`` files and memory-mapped, so what stays resident is what the batches
touch, not the hours. This benchmark writes synthetic frame files (random float16, the edge profile's shape:
100 frames/s x 40 mel bands, 60 s per file) for each ``--hours`` value in a temporary folder, maps them as the
bank does (and, for contrast, loads them whole as the bank did before), and in a fresh child process per size cuts ``--batches`` batches of 16 windows as training's
negative share of a batch of 64 does; it reports the child's peak RSS (``ru_maxrss``) and its private
(anonymous) memory at the end, so sizes compare as a ratio in one run. Nothing is read from ``../shared``.

    python -m benchmarks.negatives_memory --hours 2 20 --batches 2000
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from edge.cliutil import HelpFormatter, setup_logging
from edge.errors import AuricleError, run_cli

log = logging.getLogger("benchmarks.negatives_memory")
FILE_SECONDS, FPS, MELS = 60, 100, 40


def write_frames(folder: Path, hours: float) -> int:
    """Synthetic frame files totalling ``hours``; how many were written."""
    rng = np.random.default_rng(0)
    n = max(1, round(hours * 3600 / FILE_SECONDS))
    block = rng.normal(-40, 12, size=(FILE_SECONDS * FPS, MELS)).astype(np.float16)
    for i in range(n):
        np.save(folder / f"{i:05d}.npy", block + np.float16(i % 7), allow_pickle=False)
    return n


def _child(folder: Path, batches: int, mapped: bool) -> dict[str, float]:
    from edge.features import edge_config
    from training.negatives import NegativeBank, NegativeFile

    cfg = edge_config()
    paths = sorted(folder.glob("*.npy"))
    frames = [np.load(p, mmap_mode="r" if mapped else None, allow_pickle=False) for p in paths]
    files = [NegativeFile(p, p.name, "train") for p in paths]
    bank = NegativeBank(config=cfg, files=files, frames=frames)
    rng = np.random.default_rng(1)
    total = 0.0
    for _ in range(batches):
        total += float(bank.random_windows(rng, 16).mean())
    private_kb = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            private_kb = int(line.split()[1])
    return {"mode": "mapped" if mapped else "loaded", "hours": bank.seconds("train") / 3600, "files": len(files), "peak_rss_mb": resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024, "private_mb": private_kb / 1024, "checksum": round(total, 3)}


def measure(hours: Sequence[float], batches: int) -> list[dict[str, float]]:
    rows = []
    for h in hours:
        with tempfile.TemporaryDirectory(prefix="negmem") as tmp:
            n = write_frames(Path(tmp), h)
            log.info("%.1f h: %d frame files written; cutting %d batches in a child process", h, n, batches)
            for mode in ("mapped", "loaded"):
                r = subprocess.run([sys.executable, "-m", "benchmarks.negatives_memory", "--child", tmp,
                                    "--mode", mode, "--batches", str(batches)], capture_output=True, text=True)
                if r.returncode:
                    raise AuricleError(f"the {h} h child failed: {r.stderr.strip().splitlines()[-1:]}")
                rows.append(json.loads(r.stdout))
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.negatives_memory", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--hours", type=float, nargs="+", default=[2.0, 20.0], help="bank sizes to compare")
    p.add_argument("--batches", type=int, default=2000, help="batches of 16 negative windows cut per size")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=("mapped", "loaded"), default="mapped", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child is not None:
        print(json.dumps(_child(args.child, args.batches, args.mode == "mapped")))
        return 0
    if any(h <= 0 for h in args.hours) or args.batches < 1:
        raise AuricleError("--hours must be > 0 and --batches >= 1")
    setup_logging()
    rows = measure(args.hours, args.batches)
    base = rows[0]
    for r in rows:
        print(f"{r['hours']:6.1f} h ({r['files']:5d} files), frames {r['mode']}: peak RSS {r['peak_rss_mb']:7.1f} MB "
              f"({r['peak_rss_mb'] / base['peak_rss_mb']:.2f}x), private {r['private_mb']:7.1f} MB "
              f"({r['private_mb'] / max(base['private_mb'], 1e-9):.2f}x)")
    return 0


if __name__ == "__main__":
    run_cli(main)
