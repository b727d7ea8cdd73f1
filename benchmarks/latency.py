"""Latency benchmark: Keras float vs TFLite float32/float16 vs TFLite int8 (vs Edge TPU), measured side by side.

    python benchmarks/latency.py                                  # every bundle in firmware_assets/
    python benchmarks/latency.py --bundles firmware_assets/* --threads 1 2 --runs 50 --out results/
    python benchmarks/latency.py --bundles firmware_assets/kws_mobilenet_edge --run runs/kws_mobilenet_edge
    python benchmarks/latency.py --coral                          # adds Edge TPU rows (needs libedgetpu + a Coral)

Rows: one per bundle x engine x thread count. Engines, where present:

* ``keras-predict``  ``model.predict(x, verbose=0)`` on one clip, as users call it
* ``keras-fn``       the compiled path: ``tf.function(lambda x: model(x, training=False))`` (``--keras-jit``: XLA)
* ``tflite-float32`` / ``tflite-float16`` / ``tflite-dynamic`` / ``tflite-int8``: the bundle's ``.tflite`` files
  through :func:`edge.runtime.make_interpreter` (the device path), bare ``invoke()`` timed
* ``edgetpu``        ``model_edgetpu.tflite`` through the ``libedgetpu`` delegate (``--coral`` and the hardware)

Keras rows need the training run's ``model.keras`` (loaded with ``keras.saving.load_model(safe_mode=True)``):
``--run runs/NAME`` names it explicitly (matched to the bundle whose manifest names that run, else to the bundle
of the same folder name); otherwise a bundle whose manifest ``training.run_path`` (or ``runs/<training.run>``)
exists gets its Keras rows automatically (``--no-keras`` turns both off). Without TensorFlow/Keras (a Pi) the
Keras rows are skipped with a note. A bundle that kept its float32 model out of git (``regenerable_files``) gets
it regenerated from ``model.keras`` into ``OUT/.cache/`` when TensorFlow is there (``--no-regenerate``: skip).

Per row: p50/p90/p99/mean ms per inference and throughput (1000 / mean); file size, parameters and MACs (from
the manifest, else counted on the Keras model); peak RSS and cold start of a fresh ``python -c`` process that
imports only the runtime (``edge.runtime``; Keras rows: ``keras``), loads the model and runs one inference (cold
start = from just before ``Popen`` to the child's first-result timestamp; page cache warm); for TFLite rows the
end-to-end time per window through the real :class:`edge.runtime.StreamingDetector` (``push`` of one hop of
audio: frontend + window + normalise/quantise + invoke + dequantise + smoothing + thresholds), the pipeline time
without the frontend, the detector's own ``invoke()`` time in the same windows, and the real-time factor
(end-to-end / hop). Per bundle: the log-mel frontend on 1 s of audio, auricle (:func:`edge.features.log_mel`)
vs librosa (``melspectrogram(center=False, norm="slaney")`` + ``power_to_db``, the same numbers).

Method: fixed seeded inputs; ``--warmup`` rounds then ``--runs`` rounds; each round times one call of every
item (all rows, all streaming detectors, both frontends), starting one item later each round, so machine drift
and noise hit every row alike. Ratios (int8/float32, TFLite/Keras, end-to-end/invoke) are computed from the
same run. Keras rows run with ``--keras-threads`` TensorFlow intra-op threads (TensorFlow fixes its thread
pool once per process; default: the largest ``--threads``) and one inter-op thread.

``OPENBLAS_NUM_THREADS`` defaults to 1 in this process and its children (set before numpy is imported): the
frontend's small matrix products run several times slower with threaded OpenBLAS on small machines (as in
``edge.listen``). Set it yourself to override.

Output in ``--out``: ``results.json`` (everything, raw samples included), ``results.csv`` (one line per row),
``results.md`` (tables), ``latency.png`` (grouped bars, log scale; needs matplotlib) and a short summary on
stdout. Timing never fails the run: target ratios are reported as ``ok`` / ``MISS``.

Default ``--runs 50`` keeps the four shipped bundles with Keras rows at a few minutes on a 2-core x86 machine
(a seed ResNet-18 float call is ~100 ms there); use more runs on a quiet machine for tighter tails.
"""
from __future__ import annotations

import os
import sys

# Before numpy is imported (here and, through the environment, in every child process); a user setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import math
import platform
import shlex
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from edge.bundle import Bundle, load_bundle, repo_root, sha256_file, write_json_atomic
from edge.errors import AuricleError, run_cli
from edge.features import FeatureConfig, log_mel, model_input_shape, to_model_input
from edge.runtime import DEFAULT_HOP, StreamingDetector, import_backend, make_interpreter, set_input

__all__ = ["BenchConfig", "benchmark", "build_parser", "main", "TARGETS", "ENGINES", "CSV_FIELDS"]

ENGINES = ("keras-predict", "keras-fn", "tflite-float32", "tflite-float16", "tflite-dynamic", "tflite-int8",
           "edgetpu")
TFLITE_KINDS = ("float32", "float16", "dynamic", "int8")      # bundle model kinds run on the CPU
DEFAULT_RUNS = 50
DEFAULT_WARMUP = 5
DEFAULT_THREADS = (1, 2)
COLD_CHOICES = ("all", "tflite", "none")
F32_FILE = "model_float32.tflite"
# Targets of issue #6 (the reference for int8/float32: ai-edge-litert, 2 threads, 224x224x3 input).
TARGETS = {
    "int8_vs_float32": {"mobilenet": 0.45, "resnet18": 0.25},   # int8 p50 / float32 p50 <=
    "keras_fn_speedup": 8.0,                                     # keras-fn p50 / int8 p50 >=
    "keras_predict_speedup": 25.0,                               # keras-predict p50 / int8 p50 >=
    "e2e_vs_invoke": 1.10,                                       # end-to-end per window / bare invoke <=
}
CSV_FIELDS = (
    "bundle", "network", "profile", "input_shape", "engine", "threads", "runtime", "model_file", "model_sha256",
    "file_mb",
    "params", "macs", "n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "throughput_per_s",
    "peak_rss_mb", "cold_start_s", "e2e_ms_p50", "e2e_ms_p99", "pipeline_ms_p50", "stream_invoke_ms_p50",
    "e2e_to_invoke", "pipeline_to_invoke", "hop_s", "rtf", "int8_to_float32", "speedup_vs_keras_fn",
    "speedup_vs_keras_predict", "frontend_ms", "librosa_ms", "frontend_to_librosa", "note",
)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- configuration -------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BenchConfig:
    bundles: tuple[str, ...] = ()            # bundle folders; empty: every bundle under firmware_assets/
    runs_dirs: tuple[str, ...] = ()          # --run folders (Keras models)
    threads: tuple[int, ...] = DEFAULT_THREADS
    keras_threads: int | None = None         # None: max(threads)
    runs: int = DEFAULT_RUNS
    warmup: int = DEFAULT_WARMUP
    coral: bool = False
    out: str = "results"
    seed: int = 0
    pin: tuple[int, ...] = ()                # CPU ids to pin this process (and children) to
    keras: bool = True                       # Keras rows (explicit --run and auto-discovered runs)
    keras_jit: bool = False                  # keras-fn with XLA (jit_compile=True)
    regenerate: bool = True                  # regenerate a float32 model listed under regenerable_files
    cold: str = "all"                        # peak RSS + cold start subprocesses: all | tflite | none
    hop: float = DEFAULT_HOP                 # streaming hop for the end-to-end rows (seconds)
    quiet: bool = False

    def __post_init__(self) -> None:
        if not self.threads or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in self.threads):
            raise AuricleError(f"--threads {list(self.threads)} must be whole numbers >= 1, e.g. --threads 1 2 4")
        if self.keras_threads is not None and self.keras_threads < 1:
            raise AuricleError(f"--keras-threads {self.keras_threads} must be >= 1")
        if self.runs < 3:
            raise AuricleError(f"--runs {self.runs} is too few for p50/p90/p99; use at least 3 (default "
                               f"{DEFAULT_RUNS})")
        if self.warmup < 0:
            raise AuricleError(f"--warmup {self.warmup} must be >= 0")
        if self.cold not in COLD_CHOICES:
            raise AuricleError(f"--cold {self.cold!r} must be one of {', '.join(COLD_CHOICES)}")
        if not (math.isfinite(self.hop) and self.hop > 0):
            raise AuricleError(f"--hop {self.hop} must be a positive number of seconds")

    @property
    def keras_thread_count(self) -> int:
        return self.keras_threads or max(self.threads)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["keras_threads"] = self.keras_thread_count
        return d


# -- machine -------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's marketing name (x86 ``model name``; on a Raspberry Pi the board model and core type)."""
    info: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() not in info:
                info[key.strip()] = value.strip()
    board = ""
    with contextlib.suppress(OSError):
        board = Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00 \n")
    name = info.get("model name") or info.get("Model") or info.get("Hardware") or board
    if not name:
        name = platform.processor() or ""
        if not name and platform.system() == "Darwin":
            with contextlib.suppress(Exception):
                name = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                      text=True, timeout=5).stdout.strip()
    if board and board not in name:
        name = f"{board}, {name}" if name else board
    return name or platform.machine() or "unknown"


def _version(dist: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:
        return None


def machine_info(backend: str | None) -> dict[str, Any]:
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "affinity": affinity,
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
        "load_average_start": [round(v, 2) for v in load] if load else None,
    }


# -- statistics ----------------------------------------------------------------------------------------------
def summarize(samples_s: Sequence[float]) -> dict[str, float]:
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(a, [50, 90, 99]))
    mean = float(a.mean())
    return {"n": int(a.size), "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "mean_ms": mean,
            "min_ms": float(a.min()), "throughput_per_s": 1e3 / mean if mean > 0 else None}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# -- what to measure -----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Item:
    """One thing timed once per round."""
    key: str
    once: Callable[[], float]
    samples: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Target:
    bundle: Bundle
    run_dir: Path | None = None
    run_source: str | None = None            # "--run" or "manifest"
    keras_model: Any = None
    regenerated_float32: Path | None = None


def _bundle_dirs(paths: Sequence[str]) -> list[Path]:
    if paths:
        return [Path(p) for p in paths]
    root = repo_root() / "firmware_assets"
    found = sorted(p for p in root.iterdir() if not p.name.startswith(".") and (p / "manifest.json").is_file()) \
        if root.is_dir() else []
    if not found:
        raise AuricleError(f"no bundles in {root}; pass --bundles BUNDLE_DIR ... or build them with `make firmware`")
    return found


def _manifest_run(bundle: Bundle) -> Path | None:
    training = bundle.manifest.get("training") or {}
    candidates = []
    if training.get("run_path"):
        candidates.append(Path(str(training["run_path"])))
    if training.get("run"):
        candidates.append(repo_root() / "runs" / str(training["run"]))
    for c in candidates:
        if (c / "model.keras").is_file():
            return c
    return None


def _match_runs(bundles: list[Bundle], runs_dirs: Sequence[str]) -> dict[int, Path]:
    """``--run`` folder -> the bundle whose manifest names it (else the bundle of the same folder name)."""
    out: dict[int, Path] = {}
    for r in runs_dirs:
        run = Path(r)
        if not (run / "model.keras").is_file():
            raise AuricleError(f"--run {r}: {run / 'model.keras'} does not exist; pass a run folder written by "
                               "python -m training.train")
        res = run.resolve()
        hit = None
        for i, b in enumerate(bundles):
            tr = b.manifest.get("training") or {}
            if (tr.get("run_path") and Path(str(tr["run_path"])).resolve() == res) or tr.get("run") == run.name:
                hit = i
                break
        if hit is None:
            for i, b in enumerate(bundles):
                if b.path.name == run.name or b.name == run.name:
                    hit = i
                    break
        if hit is None:
            raise AuricleError(f"--run {r} matches none of the bundles ({', '.join(b.name for b in bundles)}): "
                               "no manifest names it as its training run and no bundle folder has its name; "
                               "pass that run's bundle with --bundles")
        out[hit] = run
    return out


def _seeded_audio(n: int, seed: int) -> np.ndarray:
    """A fixed, speech-like test signal: seeded noise plus a few tones with a slow envelope (float32)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000.0
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 1.3 * t) ** 2
    x = 0.05 * rng.standard_normal(n) + env * (0.1 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.sin(2 * np.pi * 1250 * t))
    return x.astype(np.float32)


def _model_input(config: FeatureConfig, seed: int) -> np.ndarray:
    """One fixed model input (batch of 1, float32) from seeded audio through the bundle's own frontend."""
    frames = log_mel(_seeded_audio(config.clip_samples, seed), config)
    return to_model_input(frames, config)[None].astype(np.float32)


# -- Keras ---------------------------------------------------------------------------------------------------
def _import_keras(threads: int, notes: list[str]) -> tuple[Any, Any] | None:
    """TensorFlow + Keras (TensorFlow backend) with the thread pools set, or None (with a note) when absent."""
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        import tensorflow as tf
        import keras
    except Exception as exc:  # ImportError on a Pi; anything broken in a partial install
        notes.append(f"Keras rows skipped: TensorFlow/Keras not importable ({type(exc).__name__}: "
                     f"{' '.join(str(exc).split())[:120]}); the TFLite rows are unaffected")
        return None
    if keras.backend.backend() != "tensorflow":
        notes.append(f"Keras rows skipped: Keras runs on the {keras.backend.backend()} backend; the benchmark "
                     "times the TensorFlow path (set KERAS_BACKEND=tensorflow)")
        return None
    with contextlib.suppress(Exception):
        tf.get_logger().setLevel("ERROR")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        have = tf.config.threading.get_intra_op_parallelism_threads()
        notes.append(f"TensorFlow was initialised before the benchmark set its threads; Keras rows run with "
                     f"intra-op threads = {have or 'all cores'} (not --keras-threads {threads})")
    return tf, keras


def _load_keras(keras: Any, run_dir: Path, want_shape: tuple[int, ...]) -> Any:
    path = run_dir / "model.keras"
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:
        raise AuricleError(f"cannot load {path} ({type(exc).__name__}: {' '.join(str(exc).split())[:160]}); "
                           "re-copy the run or pass --no-keras") from None
    have = tuple(int(d) if d is not None else -1 for d in model.input_shape[1:])
    if have != tuple(want_shape):
        raise AuricleError(f"{path} takes input {have} but its bundle takes {tuple(want_shape)}; that run is not "
                           "the bundle's source -- pass the right --run or --no-keras")
    return model


@contextlib.contextmanager
def _quiet_fds() -> Iterator[None]:
    """Silence what TensorFlow's converter prints on fds 1/2 (AURICLE_DEBUG=1 shows it)."""
    if os.environ.get("AURICLE_DEBUG"):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _regenerate_float32(target: Target, cache: Path, notes: list[str],
                        say: Callable[[str], None] = _say) -> Path | None:
    """The float32 model a bundle left out of git (``regenerable_files``), rebuilt from the run's Keras model
    the way ``converters/quantize.py`` builds it (``_export_saved_model`` + ``convert_model``), cached under
    ``cache`` by the Keras file's sha256."""
    reg = (target.bundle.manifest.get("regenerable_files") or {}).get(F32_FILE)
    if not reg or target.keras_model is None or target.run_dir is None:
        return None
    key = sha256_file(target.run_dir / "model.keras")[:16]
    dst = cache / f"{target.bundle.name}-{key}" / F32_FILE
    # reuse a cached file only when it is byte-identical to what the bundle's conversion wrote (the converter
    # may have changed since it was cached)
    if not (dst.is_file() and sha256_file(dst) == reg.get("sha256")):
        try:
            from converters.quantize import _export_saved_model, convert_model
        except Exception as exc:
            notes.append(f"{target.bundle.name}: float32 model not regenerated (converters.quantize: "
                         f"{type(exc).__name__}); no tflite-float32 row")
            return None
        say(f"{target.bundle.name}: regenerating {F32_FILE} from {target.run_dir / 'model.keras'} "
             "(not in the bundle; cached for next time) ...")
        dst.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
            with _quiet_fds():
                blob = convert_model(_export_saved_model(target.keras_model, Path(tmp)), "float32")
            part = Path(tmp) / F32_FILE
            part.write_bytes(blob)
            os.replace(part, dst)
    same = sha256_file(dst) == reg.get("sha256")
    notes.append(f"{target.bundle.name}: {F32_FILE} is not in the bundle (regenerable_files); regenerated from "
                 f"{target.run_dir}/model.keras into {dst.parent} (sha256 {'matches' if same else 'differs from'}"
                 " the manifest's)")
    return dst


# -- cold start + peak RSS in a fresh process ----------------------------------------------------------------
_TFLITE_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from edge.runtime import get_scores, input_details, make_interpreter
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


def _rss_mb(kb: float) -> float:
    return kb / 1024.0


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


def cold_tflite(path: Path, threads: int, edgetpu: bool) -> dict[str, Any]:
    t0, res, err = _spawn(_TFLITE_CHILD.format(root=str(repo_root()), path=str(path), threads=threads,
                                               edgetpu=edgetpu, peak=_PEAK_FN), 180)
    if res is None:
        return {"error": err}
    return {"cold_start_s": res["t_first"] - t0, "peak_rss_mb": _rss_mb(res["rss_kb"])}


def cold_keras(path: Path, threads: int, jit: bool) -> dict[str, dict[str, Any]]:
    t0, res, err = _spawn(_KERAS_CHILD.format(path=str(path), threads=threads, jit=jit, peak=_PEAK_FN), 600)
    if res is None:
        return {"keras-predict": {"error": err}, "keras-fn": {"error": err}}
    return {"keras-predict": {"cold_start_s": res["t_predict"] - t0, "peak_rss_mb": _rss_mb(res["rss_predict_kb"])},
            "keras-fn": {"cold_start_s": res["t_loaded"] - t0 + res["fn_first_s"],
                         "peak_rss_mb": _rss_mb(res["rss_kb"])}}


# -- frontend: auricle vs librosa ----------------------------------------------------------------------------
def _librosa_fn(config: FeatureConfig) -> Callable[[np.ndarray], np.ndarray] | None:
    try:
        import librosa
    except Exception:
        return None

    def run(x: np.ndarray) -> np.ndarray:
        S = librosa.feature.melspectrogram(
            y=x, sr=config.sample_rate, n_fft=config.n_fft, win_length=config.win_length,
            hop_length=config.hop_length, center=False, window="hann", n_mels=config.n_mels, fmin=config.fmin,
            fmax=config.fmax, power=config.power, htk=False, norm="slaney")
        return librosa.power_to_db(S, ref=config.ref_power, amin=config.amin, top_db=None).T
    return run


# -- the benchmark -------------------------------------------------------------------------------------------
def _net(bundle: Bundle) -> dict[str, Any]:
    return dict(bundle.manifest.get("network") or {})


def _shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def benchmark(config: BenchConfig, *, command: str | None = None) -> dict[str, Any]:
    """Measure everything ``config`` asks for; write the outputs to ``config.out``; return results.json's dict.
    ``command``: the command line to record (how to reproduce the run)."""
    cfg = config
    out = Path(cfg.out)
    notes: list[str] = []
    say: Callable[[str], None] = (lambda msg: None) if cfg.quiet else _say
    if cfg.pin:
        if not hasattr(os, "sched_setaffinity"):
            raise AuricleError("--pin needs Linux (os.sched_setaffinity); leave it out on this system")
        try:
            os.sched_setaffinity(0, set(cfg.pin))
        except OSError as exc:
            raise AuricleError(f"--pin {','.join(map(str, cfg.pin))}: {exc.strerror}; pick CPUs from "
                               f"{sorted(os.sched_getaffinity(0))}") from None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuricleError(f"--out {out}: cannot create it ({exc.strerror})") from None
    _, _, backend = import_backend()
    machine = machine_info(backend)
    t_start = time.perf_counter()

    bundles = [load_bundle(p) for p in _bundle_dirs(cfg.bundles)]
    names = [b.name for b in bundles]
    if len(set(names)) != len(names):
        raise AuricleError(f"bundle names repeat ({', '.join(names)}); pass each bundle once")
    targets = [Target(b) for b in bundles]
    if cfg.keras:
        for i, run in _match_runs(bundles, cfg.runs_dirs).items():
            targets[i].run_dir, targets[i].run_source = run, "--run"
        for t in targets:
            if t.run_dir is None:
                found = _manifest_run(t.bundle)
                if found is not None:
                    t.run_dir, t.run_source = found, "manifest"
    elif cfg.runs_dirs:
        notes.append("--no-keras: --run ignored")

    # Keras models
    keras_threads = cfg.keras_thread_count
    tfk = None
    if any(t.run_dir is not None for t in targets):
        say(f"importing TensorFlow/Keras for the Keras rows ({keras_threads} intra-op thread(s)) ...")
        tfk = _import_keras(keras_threads, notes)
        if tfk is not None:
            machine["tensorflow_runtime"] = tfk[0].__version__
            machine["keras_runtime"] = tfk[1].__version__
            for t in targets:
                if t.run_dir is None:
                    continue
                try:
                    t.keras_model = _load_keras(tfk[1], t.run_dir, model_input_shape(t.bundle.feature_config))
                except AuricleError as exc:
                    if t.run_source == "--run":
                        raise
                    notes.append(f"{t.bundle.name}: no Keras rows (the run its manifest names: {exc})")
                    continue
                if cfg.regenerate and "float32" not in t.bundle.models:
                    try:
                        t.regenerated_float32 = _regenerate_float32(t, out / ".cache", notes, say)
                    except AuricleError as exc:
                        notes.append(f"{t.bundle.name}: {F32_FILE} could not be regenerated ({exc})")
    for t in targets:
        if "float32" not in t.bundle.models and t.regenerated_float32 is None:
            why = ("listed under regenerable_files; give its run (--run) with TensorFlow installed to regenerate it"
                   if F32_FILE in (t.bundle.manifest.get("regenerable_files") or {}) else "not in the bundle")
            notes.append(f"{t.bundle.name}: no tflite-float32 row ({F32_FILE} {why})")

    # rows
    rows: list[dict[str, Any]] = []
    row_items: list[Item] = []                                   # parallel to rows
    items: list[Item] = []                                       # everything timed per round
    streams: dict[int, tuple[StreamingDetector, Item]] = {}     # row index -> detector, its item
    coral_ok = cfg.coral
    if cfg.coral and not any("edgetpu" in t.bundle.models for t in targets):
        notes.append("--coral: no bundle has a model_edgetpu.tflite (compile one with edgetpu_compiler); "
                     "no Edge TPU rows")
        coral_ok = False
    clock = time.perf_counter

    for t in targets:
        b = t.bundle
        fc = b.feature_config
        net = _net(b)
        x = _model_input(fc, cfg.seed)
        base = {"bundle": b.name, "network": net.get("name"), "profile": fc.profile,
                "input_shape": _shape_str(model_input_shape(fc)), "params": net.get("params"),
                "macs": net.get("macs")}
        if t.keras_model is not None:
            if base["params"] is None:
                base["params"] = int(t.keras_model.count_params())
            if base["macs"] is None:
                with contextlib.suppress(Exception):
                    from training.models import count_macs
                    base["macs"] = int(count_macs(t.keras_model))

        # Keras rows
        if t.keras_model is not None and tfk is not None:
            tf, _ = tfk
            model = t.keras_model
            keras_file = t.run_dir / "model.keras"
            keras_sha = sha256_file(keras_file)
            xt = tf.constant(x)
            fn = tf.function(lambda v, m=model: m(v, training=False), jit_compile=cfg.keras_jit)
            fn(xt).numpy()                         # trace (and XLA-compile) outside the timed rounds
            model.predict(x, verbose=0)

            def once_fn(fn=fn, xt=xt) -> float:
                t0 = clock()
                fn(xt).numpy()
                return clock() - t0

            def once_predict(model=model, x=x) -> float:
                t0 = clock()
                model.predict(x, verbose=0)
                return clock() - t0

            for engine, once in (("keras-predict", once_predict), ("keras-fn", once_fn)):
                rows.append({**base, "engine": engine, "threads": keras_threads,
                             "runtime": f"tensorflow {tf.__version__}" + (" XLA" if engine == "keras-fn"
                                                                          and cfg.keras_jit else ""),
                             "model_file": str(keras_file), "model_sha256": keras_sha,
                             "file_mb": keras_file.stat().st_size / 2**20,
                             "note": f"Keras model from {t.run_source}: {t.run_dir}"})
                row_items.append(Item(f"row{len(rows) - 1}", once))
                items.append(row_items[-1])

        # TFLite rows
        kinds: list[tuple[str, str, Path]] = []
        for kind in TFLITE_KINDS:
            if kind in b.models:
                kinds.append((f"tflite-{kind}", kind, b.model_path(kind)))
            elif kind == "float32" and t.regenerated_float32 is not None:
                kinds.append(("tflite-float32", "float32", t.regenerated_float32))
        if coral_ok and "edgetpu" in b.models:
            kinds.append(("edgetpu", "edgetpu", b.model_path("edgetpu")))
        for engine, kind, path in kinds:
            for threads in cfg.threads:
                try:
                    interp, be = make_interpreter(path, num_threads=threads, edgetpu=(kind == "edgetpu"))
                except AuricleError as exc:
                    if kind != "edgetpu":
                        raise
                    notes.append(f"Edge TPU rows skipped: {exc}")
                    coral_ok = False
                    break
                set_input(interp, x)
                interp.invoke()

                def once_invoke(invoke=interp.invoke) -> float:
                    t0 = clock()
                    invoke()
                    return clock() - t0

                note = "regenerated from the run (not shipped in the bundle)" if path == t.regenerated_float32 else ""
                sha = (b.manifest.get("files") or {}).get(path.name) if path.parent == b.path else None
                rows.append({**base, "engine": engine, "threads": threads, "runtime": be, "model_file": str(path),
                             "model_sha256": sha or sha256_file(path), "file_mb": path.stat().st_size / 2**20,
                             "note": note, "_kind": kind, "_path": path, "_interp": interp})
                row_items.append(Item(f"row{len(rows) - 1}", once_invoke))
                items.append(row_items[-1])
                if kind == "float32" and path == t.regenerated_float32:
                    continue   # the streaming detector loads bundle models only
                # streaming: one window per push of one hop of audio
                n = cfg.runs
                det = StreamingDetector(b, model=kind if kind != "edgetpu" else None, coral=(kind == "edgetpu"),
                                        num_threads=threads, hop=cfg.hop, latency_history=n)
                hop_samples = det.hop_frames * fc.hop_length
                audio = _seeded_audio(fc.clip_samples + hop_samples * 64, cfg.seed + 1)
                det.push(audio[:fc.clip_samples])
                state = {"pos": fc.clip_samples}

                def once_push(det=det, audio=audio, hop_samples=hop_samples, state=state,
                              clip=fc.clip_samples) -> float:
                    p = state["pos"]
                    if p + hop_samples > audio.size:
                        p = clip
                    chunk = audio[p:p + hop_samples]
                    state["pos"] = p + hop_samples
                    t0 = clock()
                    det.push(chunk)
                    return clock() - t0

                item = Item(f"stream{len(rows) - 1}", once_push)
                items.append(item)
                streams[len(rows) - 1] = (det, item)

    if not rows:
        raise AuricleError("nothing to measure: the bundles have no runnable models")

    # frontends (one per distinct frontend setting)
    frontends: list[dict[str, Any]] = []
    fe_items: dict[int, tuple[Item, Item | None]] = {}
    seen: dict[str, int] = {}
    librosa_missing = False
    for t in targets:
        fc = t.bundle.feature_config
        key = json.dumps(fc.frontend_key, sort_keys=True)
        if key in seen:
            frontends[seen[key]]["bundles"].append(t.bundle.name)
            continue
        seen[key] = len(frontends)
        wave = _seeded_audio(fc.sample_rate, cfg.seed + 2)[: int(fc.sample_rate)]   # 1 s
        lib = _librosa_fn(fc)
        entry: dict[str, Any] = {"profile": fc.profile, "bundles": [t.bundle.name], "audio_s": 1.0,
                                 "frames": int(log_mel(wave, fc).shape[0]), "n_mels": fc.n_mels,
                                 "n_fft": fc.n_fft, "hop_length": fc.hop_length, "settings": fc.frontend_key}
        if lib is not None:
            entry["max_abs_diff_db"] = float(np.abs(log_mel(wave, fc) - lib(wave)).max())
        else:
            librosa_missing = True
        frontends.append(entry)

        def once_ours(wave=wave, fc=fc) -> float:
            t0 = clock()
            log_mel(wave, fc)
            return clock() - t0

        ours = Item(f"frontend{len(frontends) - 1}", once_ours)
        theirs = None
        if lib is not None:
            def once_lib(wave=wave, lib=lib) -> float:
                t0 = clock()
                lib(wave)
                return clock() - t0
            theirs = Item(f"librosa{len(frontends) - 1}", once_lib)
        fe_items[len(frontends) - 1] = (ours, theirs)
        items += [i for i in (ours, theirs) if i is not None]
    if librosa_missing:
        notes.append("librosa is not installed: frontend compared with nothing (auricle frontend timed alone)")

    # cold start + peak RSS (before the timing loop, one process at a time)
    if cfg.cold != "none":
        n_keras = sum(1 for t in targets if t.keras_model is not None and tfk is not None) if cfg.cold == "all" else 0
        say(f"cold start + peak RSS: {sum(1 for r in rows if not r['engine'].startswith('keras'))} TFLite "
            f"process(es), {n_keras} Keras ...")
        keras_cold: dict[str, dict[str, dict[str, Any]]] = {}
        for r in rows:
            if r["engine"].startswith("keras") and cfg.cold != "all":
                r["cold_start_s"] = r["peak_rss_mb"] = None
                continue
            if r["engine"].startswith("keras"):
                if r["bundle"] not in keras_cold:
                    keras_cold[r["bundle"]] = cold_keras(Path(r["model_file"]), keras_threads, cfg.keras_jit)
                c = keras_cold[r["bundle"]][r["engine"]]
            else:
                c = cold_tflite(r["_path"], r["threads"], r["_kind"] == "edgetpu")
            if "error" in c:
                notes.append(f"{r['bundle']} {r['engine']} x{r['threads']}: cold-start process failed ({c['error']})")
            r["cold_start_s"], r["peak_rss_mb"] = c.get("cold_start_s"), c.get("peak_rss_mb")
    else:
        notes.append("--cold none: peak RSS and cold start not measured")
    if cfg.cold == "tflite" and any(r["engine"].startswith("keras") for r in rows):
        notes.append("--cold tflite: peak RSS and cold start of the Keras rows not measured")

    # the interleaved timing loop
    total = cfg.warmup + cfg.runs
    say(f"timing: {cfg.warmup} warm-up + {cfg.runs} rounds x {len(items)} items, interleaved ...")
    t_loop = time.perf_counter()
    for r in range(total):
        k = r % len(items)
        for item in items[k:] + items[:k]:
            s = item.once()
            if r >= cfg.warmup:
                item.samples.append(s)
        if (r + 1) % max(1, total // 5) == 0 and r + 1 < total:
            el = time.perf_counter() - t_loop
            say(f"  round {r + 1}/{total} ({el:.0f} s, ~{el / (r + 1) * (total - r - 1):.0f} s left)")
    loop_seconds = time.perf_counter() - t_loop

    # per-row statistics
    for i, (row, item) in enumerate(zip(rows, row_items)):
        row.update(summarize(item.samples))
        row["samples_ms"] = [round(s * 1e3, 5) for s in item.samples]
        if i in streams:
            det, sitem = streams[i]
            st = det.stats()
            e2e = summarize(sitem.samples)
            inv, pipe = st["invoke_ms_p50"], st["latency_ms_p50"]
            row.update({"e2e_ms_p50": e2e["p50_ms"], "e2e_ms_p99": e2e["p99_ms"], "pipeline_ms_p50": pipe,
                        "stream_invoke_ms_p50": inv, "e2e_to_invoke": _ratio(e2e["p50_ms"], inv),
                        "pipeline_to_invoke": _ratio(pipe, inv), "hop_s": det.hop_seconds,
                        "rtf": e2e["p50_ms"] / (det.hop_seconds * 1e3),
                        "stream_windows": det.windows})
            if det.windows != 1 + cfg.warmup + cfg.runs:
                notes.append(f"{row['bundle']} {row['engine']}: {det.windows} windows for "
                             f"{1 + cfg.warmup + cfg.runs} pushes (expected one per push)")
    for fi, (ours, theirs) in fe_items.items():
        f = frontends[fi]
        f["auricle_ms"] = summarize(ours.samples)
        f["librosa_ms"] = summarize(theirs.samples) if theirs is not None else None
        f["auricle_to_librosa"] = _ratio(f["auricle_ms"]["p50_ms"], f["librosa_ms"]["p50_ms"]) if theirs else None
        for row in rows:
            if row["bundle"] in f["bundles"]:
                row["frontend_ms"] = f["auricle_ms"]["p50_ms"]
                row["librosa_ms"] = f["librosa_ms"]["p50_ms"] if theirs else None
                row["frontend_to_librosa"] = f["auricle_to_librosa"]

    checks = _ratios_and_checks(rows, keras_threads)
    for row in rows:
        for k in [k for k in row if k.startswith("_")]:
            del row[k]
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    machine["load_average_end"] = [round(v, 2) for v in load] if load else None
    result = {
        "schema": "auricle-latency/1",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "config": cfg.to_dict(),
        "machine": machine,
        "method": {
            "timing": "time.perf_counter around one call; TFLite: bare interpreter.invoke() with a fixed input "
                      "already set; keras-fn: compiled tf.function call + .numpy(); keras-predict: "
                      "model.predict(x, verbose=0), batch 1",
            "interleaving": "each round times every item once (rows, streaming detectors, frontends), starting "
                            "one item later each round",
            "inputs": f"seeded audio (seed {cfg.seed}) through each bundle's own frontend",
            "end_to_end": "StreamingDetector.push of one hop of audio (one window per push): frontend + window "
                          "+ normalise/quantise + invoke + dequantise + smoothing + thresholds; pipeline = the "
                          "same without the frontend; invoke = the detector's own invoke() in those windows",
            "rtf": "end-to-end p50 / hop",
            "cold_start": "fresh `python -c` process importing only edge.runtime (Keras: tensorflow + keras), "
                          "loading the model and producing one result; from before Popen to the child's "
                          "timestamp; page cache warm. Keras: one process per bundle; keras-fn = load + first "
                          "tf.function call (trace), measured after predict in the same process",
            "keras_threads": keras_threads,
        },
        "rows": rows,
        "frontends": frontends,
        "checks": checks,
        "notes": notes,
        "seconds": {"timing_loop": round(loop_seconds, 1), "total": round(time.perf_counter() - t_start, 1)},
    }
    write_outputs(result, out, notes)
    return result


def _ratios_and_checks(rows: list[dict[str, Any]], keras_threads: int) -> list[dict[str, Any]]:
    """Same-run ratios onto the rows, and the issue's targets as checks (value, target, ok; ok is None where a
    ratio has no target)."""
    by = {(r["bundle"], r["engine"], r["threads"]): r for r in rows}
    checks: list[dict[str, Any]] = []

    def check(row: dict[str, Any], name: str, value: float | None, target: float | None, op: str,
              detail: str) -> None:
        if value is None:
            return
        ok = None if target is None else (value <= target if op == "<=" else value >= target)
        checks.append({"bundle": row["bundle"], "network": row["network"], "threads": row["threads"],
                       "check": name, "value": value, "target": target, "op": op, "ok": ok, "detail": detail})

    for r in rows:
        if not r["engine"].startswith("tflite"):
            continue
        kind = r["engine"].removeprefix("tflite-")
        if r["threads"] == keras_threads:   # TFLite vs Keras (speed-up = Keras p50 / TFLite p50)
            for engine in ("keras-fn", "keras-predict"):
                k = by.get((r["bundle"], engine, keras_threads))
                if k is None:
                    continue
                r[f"speedup_vs_{engine.replace('-', '_')}"] = _ratio(k["p50_ms"], r["p50_ms"])
                if kind in ("int8", "float32"):
                    tkey = "keras_fn_speedup" if engine == "keras-fn" else "keras_predict_speedup"
                    check(r, f"{engine} / {kind} (speed-up)", r[f"speedup_vs_{engine.replace('-', '_')}"],
                          TARGETS[tkey] if kind == "int8" else None, ">=",
                          f"{k['p50_ms']:.3f} vs {r['p50_ms']:.3f} ms")
        if kind != "int8":
            continue
        f32 = by.get((r["bundle"], "tflite-float32", r["threads"]))
        if f32:
            r["int8_to_float32"] = _ratio(r["p50_ms"], f32["p50_ms"])
            check(r, "int8 / float32 (TFLite p50)", r["int8_to_float32"],
                  TARGETS["int8_vs_float32"].get(str(r["network"])), "<=",
                  f"{r['p50_ms']:.3f} vs {f32['p50_ms']:.3f} ms")
        if r.get("e2e_to_invoke") is not None:
            front = r["e2e_ms_p50"] - r["pipeline_ms_p50"]
            check(r, "end-to-end / invoke (streaming, per window)", r["e2e_to_invoke"], TARGETS["e2e_vs_invoke"],
                  "<=", f"{r['e2e_ms_p50']:.3f} vs {r['stream_invoke_ms_p50']:.3f} ms; without the frontend "
                        f"{r['pipeline_to_invoke']:.3f}x; frontend ~{front:.3f} ms per hop")
    order = {"int8 / float32": 0, "keras-fn / int8": 1, "keras-predict / int8": 2, "keras-fn / float32": 3,
             "keras-predict / float32": 4, "end-to-end": 5}
    checks.sort(key=lambda c: (c["bundle"], c["threads"],
                               next((v for k, v in order.items() if c["check"].startswith(k)), 9)))
    return checks


# -- output --------------------------------------------------------------------------------------------------
def _fmt(v: Any, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.{nd}f}" if abs(v) >= 0.1 or v == 0 else f"{v:.3f}"
    return str(v)


def _big(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def markdown(result: dict[str, Any]) -> str:
    m, rows = result["machine"], result["rows"]
    lines = [f"CPU: **{m['cpu']}** ({m['cores']} cores, {m['machine']}), Python {m['python']}, "
             f"{m['tflite_backend']} {m.get(str(m['tflite_backend']).replace('.', '_')) or ''}".rstrip()
             + (f", TensorFlow {m['tensorflow']}" if m.get("tensorflow_runtime") else "")
             + f"; {result['config']['runs']} interleaved runs after {result['config']['warmup']} warm-up, "
               f"load average {m['load_average_start'][0] if m.get('load_average_start') else '-'}.", ""]
    lines += ["| bundle | engine | thr | p50 ms | p90 | p99 | mean | inf/s | MB | RSS MB | cold s | e2e ms | RTF |",
              "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append("| " + " | ".join([
            r["bundle"], r["engine"], str(r["threads"]), _fmt(r["p50_ms"]), _fmt(r["p90_ms"]), _fmt(r["p99_ms"]),
            _fmt(r["mean_ms"]), _fmt(r["throughput_per_s"], 1), _fmt(r["file_mb"]), _fmt(r.get("peak_rss_mb"), 0),
            _fmt(r.get("cold_start_s")), _fmt(r.get("e2e_ms_p50")), _fmt(r.get("rtf"), 3)]) + " |")
    lines += ["", "| bundle | network | input | params | MACs | log-mel 1 s: auricle ms | librosa ms | ratio |",
              "|---|---|---|--:|--:|--:|--:|--:|"]
    seen = set()
    for r in rows:
        if r["bundle"] in seen:
            continue
        seen.add(r["bundle"])
        lines.append(f"| {r['bundle']} | {r['network'] or '-'} | {r['input_shape']} | {_big(r['params'])} | "
                     f"{_big(r['macs'])} | {_fmt(r.get('frontend_ms'), 3)} | {_fmt(r.get('librosa_ms'), 3)} | "
                     f"{_fmt(r.get('frontend_to_librosa'), 3)} |")
    if result["checks"]:
        lines += ["", "| bundle | thr | ratio (same run) | measured | target | |", "|---|--:|---|--:|--:|---|"]
        for c in result["checks"]:
            verdict = "-" if c["ok"] is None else ("ok" if c["ok"] else "**MISS**")
            target = "-" if c["target"] is None else f"{c['op']} {c['target']:g}"
            lines.append(f"| {c['bundle']} | {c['threads']} | {c['check']} | {c['value']:.3f} | {target} | "
                         f"{verdict} |")
    lines += ["", "p50/p90/p99/mean: one inference (TFLite: bare `invoke()`; Keras: `model.predict` / compiled "
              "`tf.function`), batch 1. inf/s = 1000 / mean. RSS and cold start: a fresh process that loads only "
              "the runtime and the model and returns one result. e2e: one streaming window through "
              "`StreamingDetector.push` (frontend included); RTF = e2e / hop. Reproduce: "
              f"`{result.get('command') or 'python benchmarks/latency.py'}`."]
    if result["notes"]:
        lines += [""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v))
                    for k, v in r.items() if k in CSV_FIELDS})
    _write_text(path, buf.getvalue())


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def plot(result: dict[str, Any], path: Path) -> bool:
    """Grouped bars (one group per bundle, one bar per engine x threads), log scale: p50 with a p90-p99
    whisker. False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return False
    rows = result["rows"]
    bundles = list(dict.fromkeys(r["bundle"] for r in rows))
    series = sorted({(r["engine"], r["threads"]) for r in rows},
                    key=lambda s: (ENGINES.index(s[0]) if s[0] in ENGINES else 99, s[1]))
    by = {(r["bundle"], r["engine"], r["threads"]): r for r in rows}
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(7.0, 1.0 + 0.3 * len(series) * len(bundles)),
                                    4.6 + 0.22 * math.ceil(len(series) / 5)))
    cmap = plt.get_cmap("tab10")
    engines = list(dict.fromkeys(s[0] for s in series))
    threads = sorted({s[1] for s in series})
    hatches = ["", "//", "..", "xx", "\\\\"]
    for si, (engine, thr) in enumerate(series):
        xs, ys, lo, hi = [], [], [], []
        for bi, b in enumerate(bundles):
            r = by.get((b, engine, thr))
            if r is None:
                continue
            xs.append(bi - 0.4 + width * (si + 0.5))
            ys.append(r["p50_ms"])
            lo.append(0.0)
            hi.append(max(0.0, r["p99_ms"] - r["p50_ms"]))
        if not xs:
            continue
        ax.bar(xs, ys, width * 0.95, yerr=[lo, hi], capsize=1.5, error_kw={"elinewidth": 0.7},
               color=cmap(engines.index(engine) % 10), hatch=hatches[threads.index(thr) % len(hatches)],
               edgecolor="white", linewidth=0.3, label=f"{engine} x{thr}")
    ax.set_yscale("log")
    ax.set_xticks(range(len(bundles)))
    ax.set_xticklabels(bundles, fontsize=8)
    ax.set_ylabel("ms per inference (p50, whisker to p99)")
    ax.set_title(f"auricle latency -- {result['machine']['cpu']}", fontsize=9)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(5, len(series)), loc="upper center", bbox_to_anchor=(0.5, -0.08),
              frameon=False)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return True


def write_outputs(result: dict[str, Any], out: Path, notes: list[str]) -> None:
    if not plot(result, out / "latency.png"):
        notes.append("matplotlib is not installed: latency.png not written")
    write_csv(result["rows"], out / "results.csv")
    _write_text(out / "results.md", markdown(result))
    write_json_atomic(out / "results.json", result)
    os.chmod(out / "results.json", 0o644)


def summary_lines(result: dict[str, Any], out: Path) -> list[str]:
    m = result["machine"]
    lines = [f"{m['cpu']} ({m['cores']} cores), {m['tflite_backend']}, {result['config']['runs']} runs; "
             f"load average {m.get('load_average_start')} -> {m.get('load_average_end')}"]
    for r in result["rows"]:
        extra = f", e2e {r['e2e_ms_p50']:.2f} ms (RTF {r['rtf']:.3f})" if r.get("e2e_ms_p50") is not None else ""
        lines.append(f"  {r['bundle']:<22} {r['engine']:<15} x{r['threads']}: p50 {r['p50_ms']:8.3f} ms  "
                     f"p99 {r['p99_ms']:8.3f} ms{extra}")
    for f in result["frontends"]:
        lib = f"librosa {f['librosa_ms']['p50_ms']:.3f} ms, ratio {f['auricle_to_librosa']:.3f}" \
            if f.get("librosa_ms") else "librosa not installed"
        lines.append(f"  log-mel 1 s ({f['profile']}): auricle {f['auricle_ms']['p50_ms']:.3f} ms, {lib}")
    misses = [c for c in result["checks"] if c["ok"] is False]
    ok = sum(1 for c in result["checks"] if c["ok"])
    lines.append(f"targets: {ok} ok, {len(misses)} missed" + (":" if misses else ""))
    for c in misses:
        lines.append(f"  MISS {c['bundle']} x{c['threads']} {c['check']}: {c['value']:.3f} (target {c['op']} "
                     f"{c['target']:g}; {c['detail']})")
    for n in result["notes"]:
        lines.append(f"note: {n}")
    lines.append(f"wrote {out / 'results.json'}, results.csv, results.md"
                 + (", latency.png" if (out / "latency.png").is_file() else ""))
    return lines


# -- CLI -----------------------------------------------------------------------------------------------------
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
        prog="python benchmarks/latency.py",
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
    result = benchmark(cfg, command=" ".join(["python", "benchmarks/latency.py", *map(shlex.quote, argv)]))
    print("\n".join(summary_lines(result, Path(cfg.out))), flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
