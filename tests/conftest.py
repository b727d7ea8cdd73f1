"""Fixtures shared by several test modules."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import training  # noqa: F401  (TensorFlow's kernel choice, before any test imports keras)
from edge.splits import split_of

REPO = Path(__file__).resolve().parent.parent
DEMO_STREAM = REPO / "samples" / "speech_commands_stream.wav"
CLIPS = REPO / "tests" / "data" / "speech_commands"
TINY_CLASSES = ("yes", "no", "_silence_")


@pytest.fixture(scope="session")
def demo_rows() -> list[dict]:
    """What `make demo` prints with --json (events, then the score), run once per session; every event is a
    hit or a false alarm, and it meets the shipped default's bar (9 of the 10 words)."""
    r = subprocess.run([sys.executable, "-m", "edge.demo", "--stream", str(DEMO_STREAM), "--json"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    score = [d for d in rows if d["type"] == "score"][0]
    assert sum(d["type"] == "event" for d in rows) == score["hits"] + score["false_alarms"]
    assert score["truth_words"] == 10 and score["hits"] >= 9
    return rows


def _speaker_for(split: str, salt: str) -> str:
    """An 8-hex fake speaker id that the sha1 rule puts in ``split``."""
    for i in range(10_000):
        spk = hashlib.sha1(f"{salt}-{i}".encode()).hexdigest()[:8]
        if split_of(spk) == split:
            return spk
    raise AssertionError("no speaker found")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """3 classes x 6 real clips, renamed so each class has 4 train, 1 val, 1 test clip (speaker rule)."""
    root = tmp_path_factory.mktemp("tiny_data")
    plan = ["train"] * 4 + ["val", "test"]
    for label in TINY_CLASSES:
        (root / label).mkdir()
        for k, (src, split) in enumerate(zip(sorted((CLIPS / label).glob("*.wav")), plan)):
            if label == "_silence_":
                stem = next(s for s in (f"{k}{i}" for i in range(1000)) if split_of(s) == split)
                name = f"{stem}.wav"
            else:
                name = f"{_speaker_for(split, f'{label}{k}')}_nohash_0.wav"
            shutil.copy(src, root / label / name)
    return root
