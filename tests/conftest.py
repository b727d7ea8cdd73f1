"""Fixtures shared by several test modules."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_STREAM = REPO / "samples" / "speech_commands_stream.wav"


@pytest.fixture(scope="session")
def demo_rows() -> list[dict]:
    """What `make demo` prints with --json (events, then the score), run once per session; it finds every word."""
    r = subprocess.run([sys.executable, "-m", "edge.demo", "--stream", str(DEMO_STREAM), "--json"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    score = [d for d in rows if d["type"] == "score"][0]
    assert sum(d["type"] == "event" for d in rows) == score["truth_words"] == score["hits"] == 10
    return rows
