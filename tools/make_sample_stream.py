"""Build samples/speech_commands_stream.wav + .csv: a ~20 s stream of held-out keywords over background noise.

Every clip comes from the Speech Commands v0.02 test set and from a speaker in this project's *test* split
(sha1(speaker) % 100 >= 90), so no shipped model has heard these voices. Clips are picked by a seeded random
draw -- never by what a model says about them. Between words: silence plus a continuous bed of background
noise cut from test-split ``_silence_`` clips, 20 dB below the speech.

    python -m tools.make_sample_stream --data ../shared/data/speech_commands_v0.02_test --out samples/ --force
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from edge.errors import AuricleError, run_cli
from edge.fileio import atomic_writer
from edge.shipped import refuse_to_replace

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SR = 16000


def active_region(x: np.ndarray, *, frame: int = 160, rel_db: float = -30.0) -> tuple[int, int]:
    """First and last sample of 10 ms frames within ``rel_db`` of the clip's loudest frame."""
    n = len(x) // frame
    energy = (x[: n * frame].reshape(n, frame) ** 2).mean(axis=1) + 1e-12
    db = 10 * np.log10(energy / energy.max())
    on = np.flatnonzero(db > rel_db)
    return int(on[0] * frame), int((on[-1] + 1) * frame)


def build(*, data: Path, out: Path, seed: int = 7, duration: float = 20.0, split: str = "test",
          name: str = "speech_commands_stream", split_file: Path | None = None) -> tuple[Path, Path]:
    from training.data import Naming, discover

    naming = Naming(split_file=str(split_file)) if split_file else None
    clips = [c for c in discover(data, naming=naming) if c.split == split]
    if not clips:
        raise AuricleError(f"no {split}-split clips under {data}; pass the Speech Commands folder with --data")
    rng = np.random.default_rng(seed)
    import soundfile as sf

    noise_clips = [c for c in clips if c.label == "_silence_"]
    if not noise_clips:
        raise AuricleError(f"no _silence_ clips in the {split} split of {data} for the background bed; give "
                           "that split some (the split file) or pass the Speech Commands folder")
    bed = np.concatenate([sf.read(c.path, dtype="float32")[0] for c in rng.permutation(noise_clips)[:25]])
    total = int(duration * SR)
    stream = np.zeros(total, dtype=np.float32)
    bed = np.resize(bed, total)
    rows = []
    n_words = max(1, int(round(duration / 2.0)))
    words = [w for _ in range(-(-n_words // len(KEYWORDS))) for w in rng.permutation(KEYWORDS)][:n_words]
    slot = total // (len(words) + 1)
    speech_rms = []
    for k, word in enumerate(words):
        pool = [c for c in clips if c.label == word]
        clip = pool[int(rng.integers(len(pool)))]
        x, sr = sf.read(clip.path, dtype="float32")
        if sr != SR:
            raise AuricleError(f"{clip.path} is {sr} Hz, expected {SR}")
        a, b = active_region(x)
        start = int((k + 0.6) * slot + rng.integers(-slot // 6, slot // 6))
        stream[start:start + len(x)] += x
        speech_rms.append(float(np.sqrt(np.mean(x[a:b] ** 2))))
        rows.append({"start": round((start + a) / SR, 3), "end": round((start + b) / SR, 3), "label": word,
                     "source": str(Path(clip.path).resolve().relative_to(data.resolve()))})
    bed_rms = float(np.sqrt(np.mean(bed ** 2))) + 1e-9
    stream += bed * (np.median(speech_rms) / bed_rms) * 10 ** (-20 / 20)
    peak = float(np.abs(stream).max())
    if peak > 0.99:
        stream *= 0.99 / peak
    out.mkdir(parents=True, exist_ok=True)
    wav, truth = out / f"{name}.wav", out / f"{name}.csv"
    with atomic_writer(wav, binary=True) as fh:
        sf.write(fh, stream, SR, subtype="PCM_16", format="WAV")
    with atomic_writer(truth) as fh:
        w = csv.DictWriter(fh, fieldnames=["start", "end", "label", "source"])
        w.writeheader()
        w.writerows(rows)
    return wav, truth


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data/speech_commands_v0.02_test"))
    p.add_argument("--out", type=Path, default=Path("results/streams"),
                   help="folder for NAME.wav and NAME.csv (default results/streams; the shipped samples/ stream "
                        "is replaced only with --force)")
    p.add_argument("--force", action="store_true", help="replace a stream the repository ships (samples/)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--duration", type=float, default=20.0, help="seconds; one keyword per 2 s")
    p.add_argument("--split", choices=("train", "val", "test"), default="test",
                   help="speakers to draw from: test for the shipped sample, val for tuning detector settings")
    p.add_argument("--split-file", type=Path, metavar="CSV",
                   help="take the splits from this file (path,split rows, as training's --split-file; e.g. a "
                        "speaker-grouped fold from tools.group_folds) instead of the sha1 rule")
    p.add_argument("--name", default="speech_commands_stream")
    a = p.parse_args(argv)
    for suffix in (".wav", ".csv"):
        refuse_to_replace(a.out / f"{a.name}{suffix}", force=a.force, what="--out")
    wav, truth = build(data=a.data, out=a.out, seed=a.seed, duration=a.duration, split=a.split, name=a.name,
                       split_file=a.split_file)
    print(f"wrote {wav} and {truth}")
    return 0


if __name__ == "__main__":
    run_cli(main)
