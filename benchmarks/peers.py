"""Detectors people already run, on the same test sources: ``python -m benchmarks.peers``.

An optional benchmark, never a runtime dependency: install ``benchmarks/requirements-peers.txt`` into a
separate venv and run this module with that venv's Python from the repository root:

    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install -r benchmarks/requirements-peers.txt
    /tmp/peers/bin/python -m benchmarks.peers --corpus /path/to/corpora

* **microWakeWord**: the four models shipped inside the ``pymicro-wakeword`` wheel, each at the
  ``probability_cutoff`` and ``sliding_window_size`` of its own JSON, on the wheel's feature frontend;
* **openWakeWord**: the ``openwakeword`` runtime with the models shipped inside the ``wyoming-openwakeword``
  wheel (its melspectrogram and embedding models and five wake-word models), at ``wyoming-openwakeword``'s
  default threshold 0.5, TFLite.

Both read the same FLAC files as ``benchmarks.false_accepts_sources`` (test-role sources only), each file a new
stream. An *event* is a score at or above the model's threshold at least ``REFRACTORY`` seconds after the
model's previous event (a satellite stops listening for its wake word while it takes the command), so one long
activation counts once. Wake phrases are not ten short commands: the comparison says what a user meets, not
that the tasks are equal. CPU seconds (``time.process_time``, one thread) per hour of audio: the engine's
shared frontend plus that model's own inference. Writes ``peers.json`` (``--name``) into ``--out``; rebuild the README
table with ``python -m benchmarks.false_accepts_sources --report-only``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

os.environ.setdefault("OMP_NUM_THREADS", "1")

from edge.errors import AuricleError, run_cli  # noqa: E402

log = logging.getLogger("peers")

REFRACTORY = 2.0
RATE = 16000
INSTALL = "install the optional peers: python3 -m venv V && V/bin/pip install -r benchmarks/requirements-peers.txt"


@dataclasses.dataclass
class Tally:
    """One model's false accepts and CPU time over the test sources."""
    engine: str
    model: str
    threshold: float
    events: int = 0
    cpu: float = 0.0
    per_source: dict[str, int] = dataclasses.field(default_factory=dict)
    last: float = -1e9

    def score(self, t: float, p: float, source: str) -> None:
        if p >= self.threshold and t - self.last >= REFRACTORY:
            self.events += 1
            self.last = t
            self.per_source[source] = self.per_source.get(source, 0) + 1


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    t0 = time.process_time()
    out = fn(*args)
    return out, time.process_time() - t0


def _pcm(path: Path) -> Any:
    import numpy as np
    import soundfile as sf

    x, rate = sf.read(str(path), dtype="int16", always_2d=False)
    if rate != RATE or x.ndim != 1:
        raise AuricleError(f"{path}: {rate} Hz, {x.ndim} channel(s); the corpus is 16 kHz mono, rebuild it")
    return np.ascontiguousarray(x)


class MicroWakeWordPeers:
    """pymicro-wakeword's shipped models, one frontend shared by all."""
    engine = "microWakeWord"

    def __init__(self) -> None:
        try:
            from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model
        except ModuleNotFoundError as exc:
            raise AuricleError(f"pymicro-wakeword is not installed ({exc.name}); {INSTALL}") from exc
        self._features = MicroWakeWordFeatures
        self.models = {m.value: MicroWakeWord.from_builtin(m) for m in Model}
        self.tallies = {k: Tally(self.engine, k, m.probability_cutoff) for k, m in self.models.items()}

    def run(self, pcm: Any, source: str) -> float:
        """Feed one stream; the shared frontend's CPU seconds."""
        feats = self._features()
        for m in self.models.values():
            m.reset()
        for t in self.tallies.values():
            t.last = -1e9
        frames, cpu = _timed(lambda: list(feats.process_streaming(pcm.tobytes())))
        for name, m in self.models.items():
            tally = self.tallies[name]
            t0 = time.process_time()
            for i, f in enumerate(frames):
                p = m.process_streaming_prob(f)
                if p is not None:
                    tally.score(0.01 * (i + 1), p, source)
            tally.cpu += time.process_time() - t0
        return cpu


class OpenWakeWordPeers:
    """openWakeWord with the models inside the wyoming-openwakeword wheel."""
    engine = "openWakeWord"
    CHUNK = 1280                       # 80 ms, as wyoming-openwakeword feeds it

    def __init__(self, threshold: float = 0.5) -> None:
        try:
            import wyoming_openwakeword
            from openwakeword.model import Model
        except ModuleNotFoundError as exc:
            raise AuricleError(f"openwakeword / wyoming-openwakeword is not installed ({exc.name}); {INSTALL}") from exc
        d = Path(wyoming_openwakeword.__file__).parent / "models"
        words = sorted(p for p in d.glob("*.tflite") if p.stem not in ("melspectrogram", "embedding_model"))
        if not words:
            raise AuricleError(f"no wake-word models in {d}; reinstall wyoming-openwakeword==1.8.2")
        self.model = Model(wakeword_models=[str(p) for p in words], inference_framework="tflite",
                           melspec_model_path=str(d / "melspectrogram.tflite"),
                           embedding_model_path=str(d / "embedding_model.tflite"))
        self.tallies = {p.stem: Tally(self.engine, p.stem, threshold) for p in words}

    def run(self, pcm: Any, source: str) -> float:
        """Feed one stream (buffers reset: no state carried between files); CPU seconds, all models together."""
        model, cpu = self.model, 0.0
        model.reset()
        for t in self.tallies.values():
            t.last = -1e9
        for k in range(0, len(pcm) - self.CHUNK + 1, self.CHUNK):
            scores, dt = _timed(model.predict, pcm[k:k + self.CHUNK])
            cpu += dt
            for name, p in scores.items():
                if name in self.tallies:
                    self.tallies[name].score((k + self.CHUNK) / RATE, float(p), source)
        return cpu


def streams(corpus: Path, names: Sequence[str] | None) -> Iterator[tuple[str, Path, Any]]:
    from benchmarks.false_accepts_sources import test_files

    for source, rows in test_files(corpus, names).items():
        for path, _sec in rows:
            yield source, path, _pcm(path)


def run_engine(engine: Any, corpus: Path, names: Sequence[str] | None, quiet: bool) -> tuple[list[dict], float]:
    """One engine over every test stream: its rows and the hours of audio."""
    from edge.intervals import rate_interval

    seconds, shared = 0.0, 0.0
    engine.sources = set()
    for k, (source, _path, pcm) in enumerate(streams(corpus, names), 1):
        engine.sources.add(source)
        shared += engine.run(pcm, source)
        seconds += len(pcm) / RATE
        if not quiet and k % 50 == 0:
            log.info("%s: %d files, %.2f h", engine.engine, k, seconds / 3600)
    hours = seconds / 3600
    rows = []
    for t in engine.tallies.values():
        lo, hi = rate_interval(t.events, hours)
        rows.append({"engine": t.engine, "model": t.model, "threshold": t.threshold, "false_accepts": t.events,
                     "hours": round(hours, 4), "per_hour": round(t.events / hours, 3),
                     "ci95": [round(lo, 3), round(hi, 3)], "per_source": t.per_source,
                     "sources": sorted(engine.sources), "cpu_seconds": round(shared + t.cpu, 2),
                     "cpu_seconds_per_audio_hour": round((shared + t.cpu) / hours, 1)})
    return rows, hours


MAKERS = {"microwakeword": MicroWakeWordPeers, "openwakeword": OpenWakeWordPeers}


def engine_in_child(name: str, a: argparse.Namespace) -> tuple[list[dict], float]:
    """One engine in a process of its own: two TFLite runtimes (pymicro-wakeword's C library and
    tflite-runtime) crash when loaded into one process."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="peers") as tmp:
        part = Path(tmp) / "part.json"
        cmd = [sys.executable, "-m", "benchmarks.peers", "--corpus", str(a.corpus), "--engines", name,
               "--part", str(part), *(["--sources", *a.sources] if a.sources else []), *(["--quiet"] if a.quiet else [])]
        r = subprocess.run(cmd)
        if r.returncode != 0 or not part.is_file():
            raise AuricleError(f"the {name} peer failed (exit {r.returncode}); its message is above")
        d = json.loads(part.read_text())
    return d["rows"], d["hours"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, required=True, help="folder built by python -m tools.negative_corpora")
    p.add_argument("--engines", nargs="+", choices=("microwakeword", "openwakeword"),
                   default=["microwakeword", "openwakeword"])
    p.add_argument("--sources", nargs="+", metavar="NAME", help="only these test sources (default: all)")
    p.add_argument("--out", type=Path, default=Path("benchmarks"))
    p.add_argument("--name", default="peers", help="output peers_<...>.json name (runs over disjoint sources add up "
                                                    "in the report)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--part", type=Path, help=argparse.SUPPRESS)     # a child's output (one engine)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from edge.fileio import write_json_atomic

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    a = build_parser().parse_args(argv)
    if not a.name.startswith("peers"):   # checked before the hours of scoring, not after
        raise AuricleError(f"--name {a.name}: must start with 'peers' (the report reads peers*.json)")
    if a.part:
        engine_rows, hours = run_engine(MAKERS[a.engines[0]](), a.corpus, a.sources, a.quiet)
        write_json_atomic(a.part, {"rows": engine_rows, "hours": hours})
        return 0
    rows, hours = [], 0.0
    for name in a.engines:
        engine_rows, hours = engine_in_child(name, a)
        rows += engine_rows
    note = (f"An event: a score at or above the model's threshold, {REFRACTORY:g} s after its previous event. "
            "CPU: microWakeWord rows are the shared frontend plus that model; openWakeWord rows are all "
            "five models with the shared melspectrogram and embedding together (one predict call runs them all).")
    write_json_atomic(a.out / f"{a.name}.json", {"refractory_seconds": REFRACTORY, "rows": rows, "note": note})
    for r in rows:
        print(f"{r['engine']:14s} {r['model']:16s} {r['false_accepts']:4d} FA  {r['per_hour']:6.2f} /h  "
              f"{r['cpu_seconds_per_audio_hour']:7.1f} CPU s/h", flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
