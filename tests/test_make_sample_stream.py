"""tools.make_sample_stream: keywords drawn only from the split asked for, by the sha1 rule or a split file."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

pytest.importorskip("soundfile")

from tools.make_sample_stream import KEYWORDS, build  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "speech_commands"


def _sources(truth: Path) -> list[str]:
    return [row["source"] for row in csv.DictReader(open(truth))]


def test_a_split_file_decides_which_clips_the_stream_draws_from(tmp_path):
    clips = sorted(p.relative_to(DATA).as_posix() for p in DATA.glob("*/*.wav"))
    chosen = {c for i, c in enumerate(clips) if i % 2 == 0 or c.startswith("_silence_/")}
    split_file = tmp_path / "split.csv"
    with open(split_file, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "split"])
        w.writerows([c, "val" if c in chosen else "train"] for c in clips)
    _, truth = build(data=DATA, out=tmp_path, seed=3, duration=40.0, split="val", split_file=split_file,
                     name="s")
    sources = _sources(truth)
    assert len(sources) == 20 and set(sources) <= chosen
    assert {s.split("/")[0] for s in sources} == set(KEYWORDS)
    silence = {c for c in clips if c.startswith("_silence_/")}
    flipped = tmp_path / "flipped.csv"
    with open(flipped, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "split"])
        w.writerows([c, "val" if c not in chosen or c in silence else "train"] for c in clips)
    _, other = build(data=DATA, out=tmp_path, seed=3, duration=40.0, split="val", split_file=flipped, name="t")
    assert _sources(other) and not set(_sources(other)) & chosen


def test_a_split_without_silence_clips_is_one_clear_error(tmp_path):
    from edge.errors import AuricleError

    clips = sorted(p.relative_to(DATA).as_posix() for p in DATA.glob("*/*.wav"))
    split_file = tmp_path / "split.csv"
    split_file.write_text("path,split\n" + "".join(f"{c},{'train' if c.startswith('_silence_/') else 'val'}\n"
                                                   for c in clips))
    with pytest.raises(AuricleError, match="no _silence_ clips in the val split"):
        build(data=DATA, out=tmp_path, split="val", split_file=split_file)
