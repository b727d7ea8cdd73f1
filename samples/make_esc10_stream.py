"""Build samples/esc10_stream.wav + .csv: one held-out ESC-10 clip per class, with gaps, over low noise.

Every clip comes from fold 5 of ESC-10 -- the *test* split of the shipped esc10 bundle (samples/esc10_split.csv:
folds 1-3 train, 4 validation, 5 test) -- so no shipped model was trained or tuned on these recordings.
Clips are drawn by a seeded random choice, never by what a model says about them. Each clip is cut to its
sounding part (10 ms frames within 30 dB of its loudest, at most ``--max-seconds``), resampled to 16 kHz
and placed after a gap of 1.5-2.5 s, over a continuous bed of white noise at -50 dBFS.

    python samples/make_esc10_stream.py --data ../shared/data/esc10 --out samples
    # a validation stream (fold 4) to tune the detector on, never the test one:
    python samples/make_esc10_stream.py --fold 4 --seed 4 --name esc10_val_stream --out results/streams
    # every fold-4 clip (8 a class), for per-class thresholds:
    python samples/make_esc10_stream.py --fold 4 --seed 4 --per-class 8 --name esc10_val_all --out results/streams

Needs numpy, soundfile and soxr (the training extras); it imports nothing from this repository.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

SR = 16000


def _active(x: np.ndarray, frame: int = 160, rel_db: float = -30.0) -> tuple[int, int]:
    n = len(x) // frame
    energy = (x[: n * frame].reshape(n, frame) ** 2).mean(axis=1) + 1e-12
    on = np.flatnonzero(10 * np.log10(energy / energy.max()) > rel_db)
    return int(on[0] * frame), int((on[-1] + 1) * frame)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _picks(rows: list[dict], rng: np.random.Generator, per_class: int) -> Iterator[dict]:
    """The clips in stream order: one per class, drawn as the caller goes (the shipped streams' draw: the
    generator and the caller's gap draws interleave), or up to ``per_class`` of each class without repeats,
    shuffled together."""
    labels = sorted({r["label"] for r in rows})
    order = rng.permutation(len(labels))
    if per_class == 1:
        for k in order:
            choices = [r for r in rows if r["label"] == labels[k]]
            yield choices[int(rng.integers(len(choices)))]
        return
    out = []
    for k in order:
        choices = [r for r in rows if r["label"] == labels[k]]
        out += [choices[i] for i in rng.choice(len(choices), size=min(per_class, len(choices)), replace=False)]
    yield from (out[i] for i in rng.permutation(len(out)))


def build(data: Path, out: Path, *, seed: int, max_seconds: float, fold: str = "5",
          name: str = "esc10_stream", per_class: int = 1) -> tuple[Path, Path]:
    import soundfile as sf
    import soxr

    rows = [r for r in csv.DictReader((data / "meta.csv").open()) if r["fold"] == fold]
    if not rows:
        sys.exit(f"error: no fold-{fold} rows in {data / 'meta.csv'}; pass the ESC-10 folder with --data")
    rng = np.random.default_rng(seed)
    parts, truth, t = [], [], 0.0
    for row in _picks(rows, rng, per_class):
        x, rate = sf.read(str(data / row["path"]), dtype="float32", always_2d=True)
        x = soxr.resample(x.mean(axis=1), rate, SR).astype(np.float32)
        a, b = _active(x)
        b = min(b, a + int(max_seconds * SR))
        gap = int(rng.uniform(1.5, 2.5) * SR)
        parts += [np.zeros(gap, np.float32), x[a:b]]
        t += gap / SR
        truth.append((round(t, 3), round(t + (b - a) / SR, 3), row["label"], row["path"], row["freesound_id"]))
        t += (b - a) / SR
    parts.append(np.zeros(2 * SR, np.float32))
    y = np.concatenate(parts)
    y += rng.standard_normal(y.size).astype(np.float32) * np.float32(10 ** (-50 / 20))
    y = np.clip(y, -1.0, 1.0)
    wav, table = out / f"{name}.wav", out / f"{name}.csv"
    buf = io.BytesIO()
    sf.write(buf, y, SR, format="WAV", subtype="PCM_16")
    _write_atomic(wav, buf.getvalue())
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(("start", "end", "label", "source", "freesound_id"))
    w.writerows(truth)
    _write_atomic(table, text.getvalue().encode())
    return wav, table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data/esc10"))
    p.add_argument("--out", type=Path, default=Path("samples"))
    p.add_argument("--seed", type=int, default=10)
    p.add_argument("--max-seconds", type=float, default=3.0, help="longest part of one clip kept")
    p.add_argument("--fold", default="5", help="ESC fold to draw from (5: test; 4: validation, for tuning)")
    p.add_argument("--name", default="esc10_stream", help="output file name without extension")
    p.add_argument("--per-class", type=int, default=1,
                   help="clips of each class (no repeats; e.g. 8 for all of fold 4, to tune per-class thresholds)")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.per_class < 1:
        sys.exit(f"error: --per-class {a.per_class} must be >= 1")
    wav, table = build(a.data, a.out, seed=a.seed, max_seconds=a.max_seconds, fold=a.fold, name=a.name,
                       per_class=a.per_class)
    print(f"wrote {wav} and {table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
