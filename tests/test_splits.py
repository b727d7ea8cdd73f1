"""Splits that are never empty: the sha1 rule when it fills all three splits (the project's figures), groups
dealt when it does not (>= 3 groups), clips dealt with a warning when there are fewer groups; and a 6-speaker
corpus with flat names trains with default flags, speaker-disjoint, no split empty."""
from __future__ import annotations

import csv
import json
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest

from edge.splits import BY_CLIP_RULE, DEALT_RULE, SHA1_RULE, SPLITS, choose_splits, deal_groups, split_of
from training import data as D

REPO = Path(__file__).resolve().parent.parent
CLIPS = REPO / "tests" / "data" / "speech_commands"
SHARED = (REPO / ".." / "shared" / "data").resolve()


def _clips_per_split(sizes: dict[str, int], dealt: dict[str, str]) -> Counter:
    have: Counter = Counter()
    for g, s in dealt.items():
        have[s] += sizes[g]
    return have


def test_three_groups_one_each_and_the_biggest_trains():
    sizes = {"amy": 40, "bob": 7, "cat": 9}
    dealt = deal_groups(sizes)
    assert sorted(dealt.values()) == ["test", "train", "val"]
    assert dealt["amy"] == "train"


def test_six_equal_speakers_four_one_one():
    sizes = {f"spk{i}": 500 for i in range(6)}
    dealt = deal_groups(sizes)
    assert Counter(dealt.values()) == {"train": 4, "val": 1, "test": 1}
    assert dealt == deal_groups(dict(reversed(list(sizes.items()))))   # order of the input does not matter


def test_250_groups_come_close_to_80_10_10():
    rng = random.Random(3)
    sizes = {f"s{rng.getrandbits(32):08x}": rng.randint(1, 40) for _ in range(250)}
    dealt = deal_groups(sizes)
    have = _clips_per_split(sizes, dealt)
    total = sum(sizes.values())
    for split, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(have[split] / total - share) < 0.02, (split, have, total)


def test_choose_keeps_sha1_when_it_fills_every_split():
    groups = [f"speaker{i}" for i in range(60) for _ in range(3)]
    splits, rule = choose_splits(groups)
    assert rule == SHA1_RULE and splits == [split_of(g) for g in groups]
    assert set(splits) == set(SPLITS)


def test_choose_deals_when_sha1_leaves_a_split_empty_and_splits_by_clip_below_three_groups():
    six = [g for g in ("a1", "b2", "c3", "d4", "e5", "f6") for _ in range(5)]
    assert set(split_of(g) for g in set(six)) != set(SPLITS)     # the sha1 rule alone leaves a split empty
    splits, rule = choose_splits(six)
    assert rule == DEALT_RULE and set(splits) == set(SPLITS)
    by_group = {g: {s for gg, s in zip(six, splits) if gg == g} for g in set(six)}
    assert all(len(v) == 1 for v in by_group.values())            # speaker-disjoint
    two = ["x"] * 12 + ["y"] * 8
    splits, rule = choose_splits(two)
    assert rule == BY_CLIP_RULE and Counter(splits) == {"train": 16, "val": 2, "test": 2}


def _flat_six_speaker_corpus(root: Path) -> Path:
    """``<word>_<speaker>_<n>.wav``: 3 words x 6 speakers x 2 takes, from the real clips in tests/data."""
    root.mkdir()
    speakers = ["alice", "bruno", "chen", "dana", "emil", "fatou"]
    assert {split_of(s) for s in speakers} != set(SPLITS)         # the old rule refused this corpus
    for word in ("yes", "no", "up"):
        sources = sorted((CLIPS / word).glob("*.wav"))
        for k, spk in enumerate(speakers):
            for n in range(2):
                shutil.copy(sources[(2 * k + n) % len(sources)], root / f"{word}_{spk}_{n}.wav")
    return root


def test_a_six_speaker_flat_corpus_is_dealt_speaker_disjoint(tmp_path):
    root = _flat_six_speaker_corpus(tmp_path / "flat")
    found = D.scan(root)
    assert found.split_rule == DEALT_RULE
    per_split = {s: {c.group for c in found.clips if c.split == s} for s in SPLITS}
    assert all(per_split[s] for s in SPLITS)
    assert not (per_split["train"] & per_split["val"] or per_split["train"] & per_split["test"]
                or per_split["val"] & per_split["test"])


@pytest.mark.slow
def test_a_six_speaker_flat_corpus_trains_with_default_flags(tmp_path):
    pytest.importorskip("keras")
    from training.train import main

    root = _flat_six_speaker_corpus(tmp_path / "flat")
    out = tmp_path / "run"
    assert main(["--data", str(root), "--out", str(out), "--epochs", "2", "--quiet",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    rows = list(csv.DictReader(open(out / "split.csv")))
    groups = {s: {r["group"] for r in rows if r["split"] == s} for s in SPLITS}
    assert all(groups[s] for s in SPLITS)
    assert sum(len(v) for v in groups.values()) == 6                  # each speaker in exactly one split
    assert json.loads((out / "train_config.json").read_text())["split_rule"] == DEALT_RULE
    assert json.loads((out / "report.json").read_text())["split_rule"] == DEALT_RULE


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED / "speech_commands_v0.02_test").is_dir(), reason="shared data not present")
def test_the_shipped_keyword_split_is_unchanged():
    """The shipped keyword bundles were trained on the sha1 split of this folder: same rule, same sizes."""
    found = D.scan(SHARED / "speech_commands_v0.02_test")
    assert found.split_rule == SHA1_RULE
    report = json.loads((REPO / "firmware_assets" / "kws_mobilenet_edge" / "report.json").read_text())
    assert Counter(c.split for c in found.clips) == report["split_sizes"]
    assert all(c.split == split_of(c.group) for c in found.clips)


def test_subset_split_keeps_evaluation_rows_and_n_train_clips_per_class():
    from training.subset_split import subset_rows

    rows = [{"path": f"{c}/{i}.flac", "split": "train"} for c in ("dog", "rain") for i in range(12)]
    rows += [{"path": f"{c}/v{i}.flac", "split": s} for c in ("dog", "rain") for i, s in enumerate(["val", "test"])]
    five, ten = subset_rows(rows, 5), subset_rows(rows, 10)
    assert Counter(r["path"].split("/")[0] for r in five if r["split"] == "train") == {"dog": 5, "rain": 5}
    assert [r for r in five if r["split"] != "train"] == rows[-4:]
    assert {r["path"] for r in five} <= {r["path"] for r in ten}     # nested: the learning curve's sets grow
