"""Cold start and peak RSS: a fresh ``python -c`` process that imports only the runtime, loads the model and
returns one result (cold start = from just before ``Popen`` to the child's first-result timestamp)."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from benchmarks.measure import EngineProbe
from benchmarks.rows import ColdStart
from edge.bundle import repo_root

__all__ = ["cold_tflite", "cold_keras", "measure_cold"]

# the child runs with the repository as its working directory, so `import edge` finds this checkout
_TFLITE_CHILD = r"""
import json, resource, sys, time
import numpy as np
from edge.adapters import get_scores, input_details
from edge.interpreter import make_interpreter
interp, backend = make_interpreter({path!r}, num_threads={threads!r}, edgetpu={edgetpu!r})
d = input_details(interp)
interp.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
interp.invoke()
scores = get_scores(interp)
t = time.time()
{peak}
print(json.dumps({{"t_first": t, "rss_kb": peak_kb(), "backend": backend, "outputs": int(scores.size)}}), flush=True)
"""

_KERAS_CHILD = r"""
import json, os, resource, time
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import numpy as np
import tensorflow as tf
import keras
tf.config.threading.set_intra_op_parallelism_threads({threads!r})
tf.config.threading.set_inter_op_parallelism_threads(1)
model = keras.saving.load_model({path!r}, safe_mode=True, compile=False)
t_loaded = time.time()
x = np.zeros((1,) + tuple(model.input_shape[1:]), dtype=np.float32)
model.predict(x, verbose=0)
t_predict = time.time()
{peak}
rss_predict = peak_kb()
fn = tf.function(lambda t: model(t, training=False), jit_compile={jit!r})
t0 = time.time()
fn(tf.constant(x)).numpy()
d_fn = time.time() - t0
print(json.dumps({{"t_loaded": t_loaded, "t_predict": t_predict, "fn_first_s": d_fn, "rss_predict_kb": rss_predict,
                  "rss_kb": peak_kb()}}), flush=True)
"""

# Peak RSS of the child itself: VmHWM (per address space, starts afresh at exec). ru_maxrss is not usable on
# Linux -- it survives fork + exec, so a child of a big parent reports the parent's size.
_PEAK_FN = """
def peak_kb():
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import sys
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform == "darwin" else kb
""".strip()


def _spawn(code: str, timeout: float) -> tuple[float, dict[str, Any] | None, str]:
    """Run ``python -c code``; (wall time of Popen start, the child's JSON line or None, error text)."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    t0 = time.time()
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                              env=env, cwd=str(repo_root()))
    except subprocess.TimeoutExpired:
        return t0, None, f"timed out after {timeout:.0f} s"
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                return t0, json.loads(line), ""
    err = " ".join((proc.stderr.strip().splitlines() or ["no output"])[-1].split())[:200]
    return t0, None, f"exit {proc.returncode}: {err}"


def cold_tflite(path: Path, threads: int, edgetpu: bool) -> ColdStart:
    t0, res, err = _spawn(_TFLITE_CHILD.format(path=str(path), threads=threads, edgetpu=edgetpu, peak=_PEAK_FN),
                          180)
    if res is None:
        return ColdStart(error=err)
    return ColdStart(cold_start_s=res["t_first"] - t0, peak_rss_mb=res["rss_kb"] / 1024.0)


def cold_keras(path: Path, threads: int, jit: bool) -> dict[str, ColdStart]:
    """Both Keras engines from one process: keras-predict = load + first predict; keras-fn = load + the
    first ``tf.function`` call (trace), measured after predict."""
    t0, res, err = _spawn(_KERAS_CHILD.format(path=str(path), threads=threads, jit=jit, peak=_PEAK_FN), 600)
    if res is None:
        return {"keras-predict": ColdStart(error=err), "keras-fn": ColdStart(error=err)}
    return {"keras-predict": ColdStart(cold_start_s=res["t_predict"] - t0,
                                       peak_rss_mb=res["rss_predict_kb"] / 1024.0),
            "keras-fn": ColdStart(cold_start_s=res["t_loaded"] - t0 + res["fn_first_s"],
                                  peak_rss_mb=res["rss_kb"] / 1024.0)}


def measure_cold(probes: Sequence[EngineProbe], *, cold: str, keras_threads: int, jit: bool, notes: list[str],
                 say: Callable[[str], None]) -> list[ColdStart | None]:
    """Per probe (one process at a time): its cold start, ``ColdStart()`` where ``--cold`` leaves it out, or
    None for every probe with ``--cold none``."""
    if cold == "none":
        notes.append("--cold none: peak RSS and cold start not measured")
        return [None] * len(probes)
    is_keras = [p.kind == "keras" for p in probes]
    n_keras = len({p.model.bundle for p, k in zip(probes, is_keras) if k}) if cold == "all" else 0
    say(f"cold start + peak RSS: {is_keras.count(False)} TFLite process(es), {n_keras} Keras ...")
    keras_cold: dict[str, dict[str, ColdStart]] = {}
    found: list[ColdStart | None] = []
    for p, keras in zip(probes, is_keras):
        if keras and cold != "all":
            found.append(ColdStart())
            continue
        if keras:
            if p.model.bundle not in keras_cold:
                keras_cold[p.model.bundle] = cold_keras(p.path, keras_threads, jit)
            c = keras_cold[p.model.bundle][p.engine.engine]
        else:
            c = cold_tflite(p.path, p.engine.threads, p.kind == "edgetpu")
        if c.error is not None:
            notes.append(f"{p.model.bundle} {p.engine.engine} x{p.engine.threads}: cold-start process failed "
                         f"({c.error})")
        found.append(c)
    if cold == "tflite" and any(is_keras):
        notes.append("--cold tflite: peak RSS and cold start of the Keras rows not measured")
    return found
