"""edge.progress: when the one progress helper writes a line, and what the line says."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edge.progress import Cadence, Progress

REPO = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_n_items_and_a_summary():
    clock, lines = Clock(), []
    bar = Progress("decoding", 5, lines.append, Cadence(items=2), clock=clock)
    for k in range(5):
        clock.now += 0.5
        bar.step(skipped=k)
    bar.finish(skipped=4)
    # items 2 and 4; never the last one by count: finish sums up
    assert lines == ["decoding 2/5 (skipped 1) 1.0 s", "decoding 4/5 (skipped 3) 2.0 s",
                     "decoding 5/5 (skipped 4) 2.5 s done"]


def test_a_quick_quiet_loop_writes_nothing_and_a_slow_one_a_summary():
    clock, lines = Clock(), []
    bar = Progress("decoded", 3, lines.append, Cadence(items=500), clock=clock)
    for _ in range(3):
        bar.step()
    bar.finish()
    assert lines == []
    clock.now = 2.5                                  # over Cadence.summary_after
    bar.finish()
    assert lines == ["decoded 3/3 2.5 s done"]


def test_by_time_at_most_every_n_seconds_and_the_last_item():
    clock, lines = Clock(), []
    bar = Progress("calibrating", 4, lines.append, Cadence(seconds=5.0), clock=clock)
    for done, t in [(1, 1.0), (2, 6.0), (3, 7.0), (4, 8.0)]:
        clock.now = t
        bar.step(done)
    assert lines == ["calibrating 2/4 6.0 s", "calibrating 4/4 8.0 s"]


def test_no_emit_writes_nothing():
    clock = Clock()
    bar = Progress("x", 2, None, Cadence(items=1, seconds=0.1), clock=clock)
    clock.now = 10.0
    bar.step()
    bar.step()
    bar.finish()
    assert bar.done == 2 and not bar.written


def test_importing_progress_stays_light():
    code = "import sys, edge.progress; print([m for m in ('numpy', 'training', 'converters') if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
