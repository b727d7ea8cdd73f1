"""Latency benchmark: Keras float vs TFLite float32/float16 vs TFLite int8 (vs Edge TPU), measured side by side.

    python -m benchmarks.latency                                  # every bundle in firmware_assets/
    python -m benchmarks.latency --bundles firmware_assets/* --threads 1 2 --runs 50 --out results/
    python -m benchmarks.latency --bundles firmware_assets/kws_mobilenet_edge --run runs/kws_mobilenet_edge
    python -m benchmarks.latency --coral                          # adds Edge TPU rows (needs libedgetpu + a Coral)

Rows: one per bundle x engine x thread count. Engines, where present:

* ``keras-predict``  ``model.predict(x, verbose=0)`` on one clip, as users call it
* ``keras-fn``       the compiled path: ``tf.function(lambda x: model(x, training=False))`` (``--keras-jit``: XLA)
* ``tflite-float32`` / ``tflite-float16`` / ``tflite-dynamic`` / ``tflite-int8``: the bundle's ``.tflite`` files
  through :func:`edge.interpreter.make_interpreter` (the device path), bare ``invoke()`` timed
* ``edgetpu``        ``model_edgetpu.tflite`` through the ``libedgetpu`` delegate (``--coral`` and the hardware)

Keras rows need the training run's ``model.keras`` (loaded with ``keras.saving.load_model(safe_mode=True)``):
``--run runs/NAME`` names it explicitly (matched to the bundle whose manifest names that run, else to the bundle
of the same folder name); otherwise a bundle whose manifest ``training.run_path`` (or ``runs/<training.run>``)
exists gets its Keras rows automatically (``--no-keras`` turns both off). Without TensorFlow/Keras (a Pi) the
Keras rows are skipped with a note. A bundle that kept its float32 model out of git (``regenerable_files``) gets
it regenerated from ``model.keras`` into ``OUT/.cache/`` when TensorFlow is there (``--no-regenerate``: skip).

Per row: p50/p90/p99/mean ms per inference and throughput (1000 / mean); file size, parameters and MACs (from
the manifest, else counted on the Keras model); peak RSS and cold start of a fresh ``python -c`` process that
imports only the runtime (``edge.interpreter``; Keras rows: ``keras``), loads the model and runs one inference
(cold start = from just before ``Popen`` to the child's first-result timestamp; page cache warm); for TFLite rows the
end-to-end time per window through the real :class:`edge.detector.StreamingDetector` (``push`` of one hop of
audio: frontend + window + normalise/quantise + invoke + dequantise + smoothing + thresholds), the pipeline time
without the frontend, the detector's own ``invoke()`` time in the same windows, and the real-time factor
(end-to-end / hop). Per bundle: the log-mel frontend on 1 s of audio, auricle (:func:`edge.features.log_mel`)
vs librosa (``melspectrogram(center=False, norm="slaney")`` + ``power_to_db``, the same numbers).

Method: fixed seeded inputs; ``--warmup`` rounds then ``--runs`` rounds; each round times one call of every
item (all rows, all streaming detectors, both frontends), starting one item later each round, so machine drift
and noise hit every row alike. Ratios (int8/float32, TFLite/Keras, end-to-end/invoke) are computed from the
same run. Keras rows run with ``--keras-threads`` TensorFlow intra-op threads (TensorFlow fixes its thread
pool once per process; default: the largest ``--threads``) and one inter-op thread.

``OPENBLAS_NUM_THREADS`` defaults to 1 in this process and its children (``benchmarks/__init__.py`` sets it
before numpy is imported): the frontend's small matrix products run several times slower with threaded OpenBLAS
on small machines (as in ``edge.listen``). Set it yourself to override.

Output in ``--out``: ``results.json`` (everything, raw samples included), ``results.csv`` (one line per row),
``results.md`` (tables), ``latency.png`` (grouped bars, log scale; needs matplotlib) and a short summary on
stdout. Timing never fails the run: target ratios are reported as ``ok`` / ``MISS``.

Default ``--runs 50`` keeps the four shipped bundles with Keras rows at a few minutes on a 2-core x86 machine
(a seed ResNet-18 float call is ~100 ms there); use more runs on a quiet machine for tighter tails.

The parts: :mod:`benchmarks.config` (settings, targets), :mod:`benchmarks.targets` (bundles, runs, Keras
models), :mod:`benchmarks.measure` (what is timed, one builder per engine, the interleaved loop),
:mod:`benchmarks.cold` (cold start + peak RSS), :mod:`benchmarks.checks` (same-run ratios and targets),
:mod:`benchmarks.rows` (the typed rows) and :mod:`benchmarks.report` (the output files). This module ties
them together and is the CLI.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from benchmarks.checks import apply_ratios, checks_for
from benchmarks.cold import cold_keras, cold_tflite, measure_cold
from benchmarks.config import (COLD_CHOICES, DEFAULT_RUNS, DEFAULT_THREADS, DEFAULT_WARMUP, ENGINES,
                               TARGETS, BenchConfig)
from benchmarks.measure import (EngineProbe, FrontendProbe, Item, frontend_probes, keras_probes,
                                model_facts, model_input, run_interleaved, tflite_probes)
from benchmarks.report import CSV_FIELDS, summary_lines, write_outputs
from benchmarks.rows import ColdStart, FrontendResult, LatencyRow
from benchmarks.targets import KerasEnv, Target, load_targets
from edge.errors import AuricleError, run_cli
from edge.detector import DEFAULT_HOP
from edge.interpreter import import_backend
from edge.sysinfo import cpu_name

__all__ = ["BenchConfig", "benchmark", "build_parser", "main", "TARGETS", "ENGINES", "CSV_FIELDS", "LatencyRow",
           "cold_keras", "cold_tflite"]

PROG = "python -m benchmarks.latency"
SCHEMA = "auricle-latency/1"
METHOD = {
    "timing": "time.perf_counter around one call; TFLite: bare interpreter.invoke() with a fixed input "
              "already set; keras-fn: compiled tf.function call + .numpy(); keras-predict: "
              "model.predict(x, verbose=0), batch 1",
    "interleaving": "each round times every item once (rows, streaming detectors, frontends), starting "
                    "one item later each round",
    "end_to_end": "StreamingDetector.push of one hop of audio (one window per push): frontend + window "
                  "+ normalise/quantise + invoke + dequantise + smoothing + thresholds; pipeline = the "
                  "same without the frontend; invoke = the detector's own invoke() in those windows",
    "rtf": "end-to-end p50 / hop",
    "cold_start": "fresh `python -c` process importing only edge.interpreter + edge.adapters (Keras: "
                  "tensorflow + keras), loading the model and producing one result; from before Popen to the child's "
                  "timestamp; page cache warm. Keras: one process per bundle; keras-fn = load + first "
                  "tf.function call (trace), measured after predict in the same process",
}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- machine ---------------------------------------------------------------------------------------------
def _version(dist: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:
        return None


def _load_average() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_info(backend: str | None) -> dict[str, Any]:
    return {
        "cpu": cpu_name(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tflite_backend": backend,
        "ai_edge_litert": _version("ai-edge-litert"),
        "tflite_runtime": _version("tflite-runtime"),
        "tensorflow": _version("tensorflow") or _version("tensorflow-cpu"),
        "keras": _version("keras"),
        "librosa": _version("librosa"),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "load_average_start": _load_average(),
    }


def _pin_and_out(cfg: BenchConfig) -> Path:
    """Pin this process to ``--pin`` CPUs; the output folder, created."""
    if cfg.pin:
        if not hasattr(os, "sched_setaffinity"):
            raise AuricleError("--pin needs Linux (os.sched_setaffinity); leave it out on this system")
        try:
            os.sched_setaffinity(0, set(cfg.pin))
        except OSError as exc:
            raise AuricleError(f"--pin {','.join(map(str, cfg.pin))}: {exc.strerror}; pick CPUs from "
                               f"{sorted(os.sched_getaffinity(0))}") from None
    out = Path(cfg.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuricleError(f"--out {out}: cannot create it ({exc.strerror})") from None
    return out


# -- measuring -------------------------------------------------------------------------------------------
def engine_probes(targets: Sequence[Target], env: KerasEnv | None, cfg: BenchConfig,
                  notes: list[str]) -> list[EngineProbe]:
    """Every row to time, in report order: per bundle its Keras rows, then its TFLite (and Edge TPU) rows."""
    coral = cfg.coral
    if coral and not any("edgetpu" in t.bundle.models for t in targets):
        notes.append("--coral: no bundle has a model_edgetpu.tflite (compile one with edgetpu_compiler); "
                     "no Edge TPU rows")
        coral = False
    probes: list[EngineProbe] = []
    for t in targets:
        facts = model_facts(t)
        x = model_input(t.bundle.feature_config, cfg.seed)
        if t.keras_model is not None and env is not None:
            probes += keras_probes(t, facts, env, x, jit=cfg.keras_jit)
        found, coral = tflite_probes(t, facts, x, threads=cfg.threads, coral=coral, hop=cfg.hop, runs=cfg.runs,
                                     seed=cfg.seed, notes=notes)
        probes += found
    if not probes:
        raise AuricleError("nothing to measure: the bundles have no runnable models")
    return probes


def _items(probes: Sequence[EngineProbe], frontends: Sequence[FrontendProbe]) -> list[Item]:
    items: list[Item] = []
    for p in probes:
        items += [p.item] + ([p.stream.item] if p.stream is not None else [])
    for f in frontends:
        items += [f.ours] + ([f.theirs] if f.theirs is not None else [])
    return items


def collect_rows(probes: Sequence[EngineProbe], colds: Sequence[ColdStart | None], frontends: Sequence[FrontendResult],
                 cfg: BenchConfig, notes: list[str]) -> list[LatencyRow]:
    """The timed probes as rows (ratios not yet filled in)."""
    frontend_of = {b: f for f in frontends for b in f.bundles}
    pushes = 1 + cfg.warmup + cfg.runs
    rows = []
    for p, cold in zip(probes, colds):
        stream = p.stream.result() if p.stream is not None else None
        if stream is not None and stream.stream_windows != pushes:
            notes.append(f"{p.model.bundle} {p.engine.engine}: {stream.stream_windows} windows for {pushes} "
                         "pushes (expected one per push)")
        rows.append(LatencyRow.assemble(p.model, p.engine, p.item.samples, cold=cold, stream=stream,
                                        frontend=frontend_of.get(p.model.bundle)))
    return rows


def results_document(cfg: BenchConfig, *, command: str | None, machine: dict[str, Any], rows: list[LatencyRow],
                     frontends: list[FrontendResult], notes: list[str], seconds: dict[str, float]
                     ) -> dict[str, Any]:
    """results.json's content (what the report files are rendered from)."""
    method = dict(METHOD, inputs=f"seeded audio (seed {cfg.seed}) through each bundle's own frontend",
                  keras_threads=cfg.keras_thread_count)
    return {"schema": SCHEMA, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": command, "config": cfg.to_dict(), "machine": machine, "method": method,
            "rows": [r.to_dict() for r in rows], "frontends": [f.to_dict() for f in frontends],
            "checks": [c.to_dict() for c in checks_for(rows, cfg.keras_thread_count)], "notes": notes,
            "seconds": {k: round(v, 1) for k, v in seconds.items()}}


def benchmark(config: BenchConfig, *, command: str | None = None) -> dict[str, Any]:
    """Measure everything ``config`` asks for; write the outputs to ``config.out``; return results.json's dict.
    ``command``: the command line to record (how to reproduce the run)."""
    cfg = config
    say: Callable[[str], None] = (lambda msg: None) if cfg.quiet else _say
    out = _pin_and_out(cfg)
    notes: list[str] = []
    _, _, backend = import_backend()
    machine = machine_info(backend)
    t_start = time.perf_counter()
    targets, env = load_targets(cfg, out, notes, say)
    if env is not None:
        machine.update(tensorflow_runtime=env.tf.__version__, keras_runtime=env.keras.__version__)
    probes = engine_probes(targets, env, cfg, notes)
    fprobes = frontend_probes(targets, seed=cfg.seed, notes=notes)
    colds = measure_cold(probes, cold=cfg.cold, keras_threads=cfg.keras_thread_count, jit=cfg.keras_jit,
                         notes=notes, say=say)
    loop_s = run_interleaved(_items(probes, fprobes), warmup=cfg.warmup, runs=cfg.runs, say=say)
    frontends = [f.result() for f in fprobes]
    rows = apply_ratios(collect_rows(probes, colds, frontends, cfg, notes), cfg.keras_thread_count)
    machine["load_average_end"] = _load_average()
    result = results_document(cfg, command=command, machine=machine, rows=rows, frontends=frontends, notes=notes,
                              seconds={"timing_loop": loop_s, "total": time.perf_counter() - t_start})
    write_outputs(result, out)
    return result


# -- CLI -------------------------------------------------------------------------------------------------
def _cpu_list(text: str) -> tuple[int, ...]:
    try:
        cpus: list[int] = []
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            cpus += list(range(int(lo), int(hi or lo) + 1))
        if not cpus or min(cpus) < 0:
            raise ValueError
        return tuple(cpus)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a CPU list like 0 or 0,1 or 0-3") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Compare Keras float, TFLite float32/float16 and TFLite int8 (and the Edge TPU) latency, "
                    "memory, cold start and streaming cost of model bundles, measured side by side.")
    p.add_argument("--bundles", nargs="+", default=[], metavar="DIR",
                   help="bundle folders (default: every bundle in firmware_assets/)")
    p.add_argument("--run", nargs="+", default=[], dest="runs_dirs", metavar="RUN",
                   help="training run folder(s) with model.keras for the Keras rows (runs/NAME); bundles whose "
                        "manifest names an existing run get Keras rows without it")
    p.add_argument("--threads", nargs="+", type=int, default=list(DEFAULT_THREADS), metavar="N",
                   help=f"TFLite interpreter threads; each value is a row (default: "
                        f"{' '.join(map(str, DEFAULT_THREADS))})")
    p.add_argument("--keras-threads", type=int, default=None, metavar="N",
                   help="TensorFlow intra-op threads for the Keras rows (default: the largest --threads)")
    p.add_argument("--runs", type=int, default=DEFAULT_RUNS, metavar="N",
                   help=f"timed rounds per row (default {DEFAULT_RUNS})")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, metavar="N",
                   help=f"untimed rounds first (default {DEFAULT_WARMUP})")
    p.add_argument("--coral", action="store_true",
                   help="add Edge TPU rows (bundles with model_edgetpu.tflite, libedgetpu and a Coral device)")
    p.add_argument("--out", default="results", metavar="DIR", help="output folder (default results/)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fixed test inputs (default 0)")
    p.add_argument("--pin", type=_cpu_list, default=(), metavar="CPUS",
                   help="pin the benchmark (and its child processes) to these CPUs, e.g. 0 or 0-3 (Linux)")
    p.add_argument("--hop", type=float, default=DEFAULT_HOP, metavar="S",
                   help=f"streaming hop for the end-to-end rows, seconds (default {DEFAULT_HOP})")
    p.add_argument("--no-keras", action="store_true", help="no Keras rows (TensorFlow is not imported)")
    p.add_argument("--keras-jit", action="store_true", help="compile the keras-fn row with XLA (jit_compile=True)")
    p.add_argument("--no-regenerate", action="store_true",
                   help="do not rebuild a float32 model that a bundle lists under regenerable_files")
    p.add_argument("--cold", choices=COLD_CHOICES, default="all",
                   help="which rows get the cold-start / peak-RSS child process (default all; a Keras one costs a "
                        "TensorFlow import, seconds to tens of seconds)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    cfg = BenchConfig(bundles=tuple(args.bundles), runs_dirs=tuple(args.runs_dirs), threads=tuple(args.threads),
                      keras_threads=args.keras_threads, runs=args.runs, warmup=args.warmup, coral=args.coral,
                      out=args.out, seed=args.seed, pin=tuple(args.pin), keras=not args.no_keras,
                      keras_jit=args.keras_jit, regenerate=not args.no_regenerate, cold=args.cold,
                      hop=args.hop, quiet=args.quiet)
    result = benchmark(cfg, command=" ".join([PROG, *map(shlex.quote, argv)]))
    print("\n".join(summary_lines(result, Path(cfg.out))), flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
