"""Turn a training run into a model bundle: full-integer int8 TFLite, verified against the float model.

    python converters/quantize.py --run runs/my_model --out runs/my_model_bundle

Steps (a thin CLI over :func:`quantize_run`, a typed keyword-only core):

1. **Load the run** (``model.keras`` in safe mode, ``labels.txt``, ``feature_config.json``, ``split.csv``,
   ``train_config.json``, ``report.json``) and check that the model's input is what the feature config
   gives (``edge.features.model_input_shape``) and that it has one output per label.
2. **Representative data**: ``--representative N`` clips (default 300) from the *training* split only,
   stratified over classes (round-robin over the classes, shuffled with ``--seed``), decoded with
   ``training.data.load_audio`` and run through the one frontend (``edge.features``: ``fit_to_clip`` ->
   ``log_mel`` -> ``to_model_input``) -- exactly what training fed the network.
3. **Convert** at a fixed batch size of 1 (static shapes, as the Edge TPU needs): int8 with
   ``TFLITE_BUILTINS_INT8`` only and ``--io int8|uint8`` input/output (uint8 is what Coral's tools
   expect); float32 always (the reference); ``--also float16,dynamic`` for the benchmark. The int8 model is
   then read back from the flatbuffer: if any op still computes in float (the converter can leave an op
   it has no int8 kernel for between DEQUANTIZE/QUANTIZE even with INT8-only ops), the conversion fails
   and names the op. It never falls back to float silently.
4. **Verify** on the test split: Keras float, TFLite float32 and TFLite int8 (and any ``--also`` kind)
   go through the same evaluation code (the TFLite ones through the device path:
   ``edge.interpreter.make_interpreter``, ``edge.adapters.set_input`` / ``get_scores``). Every test clip is
   scored by the clip-level rule of ``edge.classifier`` (windows every half window over the whole clip,
   scores averaged), as training's report and ``Classifier`` do. Reported: clip-level accuracy of each (and
   the per-window accuracy), top-1 agreement, per-class recall change, file sizes. Exit 1 (and no bundle) when int8 accuracy
   is more than ``--max-drop`` percentage points (default 2) below the Keras float model.
5. **Edge TPU readiness** (:mod:`converters.edgetpu`): op table, 8-bit tensors, static shapes; runs
   ``edgetpu_compiler`` when it is on PATH (adds ``model_edgetpu.tflite``), else prints the command.
6. **Write the bundle** (the contract in ``edge/bundle.py``): ``model_int8.tflite``,
   ``model_float32.tflite``, ``labels.txt``, with ``--c-array`` ``model_data.h/.cc`` (TFLite Micro C array;
   otherwise the manifest's ``c_array`` entry gives the command that writes them), the run's
   ``report.json``/``report.md``/``curves.png``/``confusion.png`` and ``manifest.json``. Everything is
   written into ``.NAME.tmp-<pid>-XXXX`` beside the target and swapped into place in one atomic rename
   (``renameat2(RENAME_EXCHANGE)``), so a failed or killed conversion leaves no partial bundle and never
   touches an existing one; stale temp folders of dead processes are removed by the next run. A bundle the
   repository ships (``firmware_assets/``) is replaced only with ``--force``; replacing a bundle converted
   from the same run with the same labels keeps its tuned ``detector`` block (e.g. ``--io uint8`` for Coral).

The manifest records paths relative to the repository root (and its commands run from there), never a
path of the machine that built the bundle.

Large files: a float32 model over ``--float-max-mb`` (default 30) is still used for
verification but not written; the manifest lists it under ``regenerable_files`` with its sha256, size and
the command that writes it. ``--c-array-max-mb`` does the same for a requested ``model_data.cc``. ``load_bundle`` only
verifies what ``files`` lists, so such a bundle still verifies.

Exit codes: 0 done; 1 int8 accuracy dropped too far (bundle not written); 2 bad input (one line on stderr:
missing/corrupt model, input not matching the feature config, empty representative set, unwritable output,
missing clips ...); 130 interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import math
import os
import re
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from converters import c_array, edgetpu
from converters.inspect_model import read_model
from edge.adapters import get_scores, input_details, output_details, set_input
from edge.bundle import LABELS, MANIFEST, MODEL_FILES, SCHEMA_VERSION, repo_root
from edge.classifier import clip_scores, clip_windows
from edge.cstreams import captured_fds
from edge.errors import AuricleError, BundleError, fail, run_cli
from edge.features import FeatureConfig, fit_to_clip, log_mel, model_input_shape, to_model_input
from edge.fileio import sha256_bytes, sha256_file, write_bytes_atomic, write_json_atomic, write_text_atomic
from edge.interpreter import make_interpreter
from edge.shipped import refuse_to_replace
from edge.splits import SPLITS
from training.data import load_audio, one_blas_thread
from training.report import per_class_metrics
from training.run_folder import REPORT_FILES, RunFolder, load_run

__all__ = [
    "IO_TYPES", "EXTRA_KINDS", "QuantizeConfig", "VerificationFailed", "load_keras_model", "select_representative",
    "clip_features", "convert_model", "keras_to_tflite", "check_full_integer", "evaluate", "quantize_run",
    "build_parser", "main",
]

IO_TYPES = ("int8", "uint8")
EXTRA_KINDS = ("float32", "float16", "dynamic")
DEFAULT_REPRESENTATIVE = 300
DEFAULT_MAX_DROP = 2.0          # percentage points
DEFAULT_FLOAT_MAX_MB = 30.0
DEFAULT_C_ARRAY_MAX_MB = 30.0
_MB = 1024 * 1024
_EVAL_BATCH = 32
_TMP_TAG = ".tmp-"
_OLD_TAG = ".old-"


class VerificationFailed(AuricleError):
    """int8 accuracy fell more than ``--max-drop`` below the float model (exit 1, no bundle written)."""


# -- configuration ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class QuantizeConfig:
    """Everything a conversion depends on; saved in the manifest as ``conversion.config``."""

    run: str
    out: str
    io: str = "int8"
    representative: int = DEFAULT_REPRESENTATIVE
    data: str | None = None
    also: tuple[str, ...] = ()
    max_drop: float = DEFAULT_MAX_DROP
    float_max_mb: float = DEFAULT_FLOAT_MAX_MB
    c_array_max_mb: float = DEFAULT_C_ARRAY_MAX_MB
    threads: int | None = None
    seed: int = 0
    compile_edgetpu: bool = True
    require_edgetpu: bool = False
    name: str | None = None
    c_array: bool = False            # write model_data.h/.cc (TFLite Micro); off: the manifest says how
    force: bool = False              # replace a bundle the repository ships

    def __post_init__(self) -> None:
        if self.io not in IO_TYPES:
            raise AuricleError(f"--io {self.io!r} must be one of {', '.join(IO_TYPES)}")
        bad = [k for k in self.also if k not in EXTRA_KINDS]
        if bad:
            raise AuricleError(f"--also {','.join(bad)}: unknown model kind; choose from {','.join(EXTRA_KINDS)}")
        if isinstance(self.representative, bool) or not isinstance(self.representative, int) \
                or self.representative < 1:
            raise AuricleError(f"--representative {self.representative!r}: the representative set is empty; "
                               f"calibration needs at least 1 clip (a few hundred is typical, default "
                               f"{DEFAULT_REPRESENTATIVE})")
        for flag, value in (("--max-drop", self.max_drop), ("--float-max-mb", self.float_max_mb),
                            ("--c-array-max-mb", self.c_array_max_mb)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise AuricleError(f"{flag} {value!r} must be a number >= 0")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise AuricleError(f"--threads {self.threads!r} must be a whole number >= 1")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["also"] = list(self.also)
        return d


_COMMAND: list[str] = []   # the CLI command line, recorded by main() (None in the manifest when called in-process)


# -- progress (works while the converter's own stdout/stderr chatter is held back) -------------------------
_CONSOLE: list[Any] = []


def _say(message: str, *, enabled: bool = True) -> None:
    if not enabled:
        return
    stream = _CONSOLE[-1] if _CONSOLE else sys.stderr
    print(f"quantize: {message}", file=stream, flush=True)


class _Progress:
    """``label: i/n`` lines at most every ``every`` seconds, and the last one."""

    def __init__(self, label: str, total: int, enabled: bool, every: float = 5.0) -> None:
        self.label, self.total, self.enabled, self.every = label, total, enabled, every
        self.t0 = self.last = time.perf_counter()

    def step(self, done: int) -> None:
        now = time.perf_counter()
        if self.enabled and (done == self.total or now - self.last >= self.every):
            self.last = now
            rate = done / max(now - self.t0, 1e-9)
            _say(f"{self.label}: {done}/{self.total} ({rate:.1f}/s)")


def _console() -> Any:
    """A line-buffered copy of fd 2 for progress lines, taken before fd 2 is held back; None without one."""
    try:
        sys.stderr.flush()
        return os.fdopen(os.dup(2), "w", buffering=1)
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _quiet() -> Iterator[Callable[[], str]]:
    """Hold back what TensorFlow prints on fds 1 and 2 (``Saved artifact at ...``, MLIR and absl logs) while
    keeping our progress lines visible; the text is available for error messages. AURICLE_DEBUG=1 shows it."""
    console = _console()
    if console is not None:
        _CONSOLE.append(console)
    try:
        with captured_fds((1, 2), limit=None) as captured:
            yield captured
    finally:
        if console is not None:
            _CONSOLE.remove(console)
            console.close()


# -- TensorFlow / Keras ------------------------------------------------------------------------------------
def _tf_keras() -> tuple[Any, Any]:
    """TensorFlow and Keras on the TensorFlow backend (conversion always runs with TensorFlow on the CPU)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" in sys.modules:
        import keras
        if keras.backend.backend() != "tensorflow":
            raise AuricleError(f"Keras is running on the {keras.backend.backend()} backend; conversion needs "
                               "TensorFlow -- run with KERAS_BACKEND=tensorflow")
    else:
        os.environ["KERAS_BACKEND"] = "tensorflow"
    try:
        import keras
        import tensorflow as tf
    except ImportError as exc:
        raise AuricleError(f"conversion needs TensorFlow and Keras ({exc}); install them: pip install -e '.[train]'")
    try:
        tf.get_logger().setLevel("ERROR")
    except Exception:  # pragma: no cover
        pass
    return tf, keras


def load_keras_model(path: str | os.PathLike[str]) -> Any:
    """``keras.saving.load_model(path, safe_mode=True)``; any failure becomes one :class:`AuricleError` line."""
    _, keras = _tf_keras()
    path = Path(path)
    try:
        with _quiet(), one_blas_thread():
            model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:
        first = " ".join(str(exc).split())[:200]
        raise AuricleError(f"cannot load {path} ({type(exc).__name__}: {first}); the file is damaged or not a "
                           "Keras 3 model -- re-copy it or retrain the run") from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise AuricleError(f"{path} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; a bundle needs "
                           "one input (the features) and one output (the scores)")
    return model


def _check_model(model: Any, run: RunFolder) -> tuple[int, ...]:
    want = tuple(model_input_shape(run.config))
    have = tuple(int(d) if d is not None else -1 for d in model.input_shape[1:])
    if have != want:
        raise AuricleError(f"{run.model_path} takes input {have} but {run.path / 'feature_config.json'} "
                           f"({run.config.profile} profile) gives {want}; the model was not trained with this "
                           "feature config -- restore the run's feature_config.json or retrain")
    n_out = model.output_shape[-1]
    if n_out != len(run.labels):
        raise AuricleError(f"{run.model_path} has {n_out} outputs but labels.txt lists {len(run.labels)} labels; "
                           "restore the run's labels.txt or retrain")
    return want


def _fixed_batch(model: Any, keras: Any) -> Any:
    """The same network with a static batch of 1: static shapes for the Edge TPU and no shape arithmetic
    (a dynamic batch turns Flatten into SHAPE/STRIDED_SLICE/PACK ops)."""
    inp = keras.Input(shape=tuple(model.input_shape[1:]), batch_size=1, name="features")
    return keras.Model(inp, model(inp, training=False), name=f"{model.name}_batch1")


def _export_saved_model(model: Any, folder: Path) -> Path:
    tf, keras = _tf_keras()
    fixed = _fixed_batch(model, keras)
    out = folder / "saved_model"
    signature = [tf.TensorSpec((1, *fixed.input_shape[1:]), tf.float32, name="features")]
    with _quiet():
        try:
            fixed.export(str(out), format="tf_saved_model", verbose=False, input_signature=signature)
        except Exception as exc:
            raise AuricleError(f"cannot export the model for conversion ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:200]})") from None
    return out


_OP_NAME = re.compile(r"'(?:tfl?|mhlo|stablehlo)\.([A-Za-z0-9_]+)'")


def _conversion_error(kind: str, exc: Exception, log: str) -> AuricleError:
    text = f"{exc}\n{log}"
    ops = sorted(set(_OP_NAME.findall(text)))
    lines = [ln.strip() for ln in text.splitlines() if "error" in ln.lower() and ln.strip()]
    first = " ".join((lines[0] if lines else str(exc)).split())[:240]
    named = f" at op(s) {', '.join(ops)}" if ops else ""
    hint = (" TFLite has no int8 kernel for it: replace that layer with ops TFLite can quantize"
            if kind == "int8" else "")
    return AuricleError(f"{kind} conversion failed{named}: {first}.{hint}")


def convert_model(saved_model: Path, kind: str, *,
                  representative: Callable[[], Iterator[list[np.ndarray]]] | None = None,
                  io_type: str = "int8") -> bytes:
    """Convert an exported SavedModel to TFLite ``kind`` (int8 / float32 / float16 / dynamic).

    int8: full-integer with ``TFLITE_BUILTINS_INT8`` only, ``io_type`` input and output, then
    :func:`check_full_integer` -- an op left in float is an error, never a silent fallback.
    """
    tf, _ = _tf_keras()
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if kind == "int8":
        if representative is None:
            raise AuricleError("int8 conversion needs a representative dataset")
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8 if io_type == "int8" else tf.uint8
        conv.inference_output_type = conv.inference_input_type
    elif kind == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif kind == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif kind != "float32":
        raise AuricleError(f"unknown model kind {kind!r}")
    with _quiet() as captured:
        try:
            blob = conv.convert()
            error = None
        except Exception as exc:  # ConverterError, RuntimeError from calibration, ...
            error = exc
    if error is not None:
        raise _conversion_error(kind, error, captured())
    if kind == "int8":
        check_full_integer(blob, io_type=io_type)
    return bytes(blob)


def keras_to_tflite(model: Any, kinds: Sequence[str] = ("int8",), *, representative: np.ndarray | None = None,
                    io_type: str = "int8") -> dict[str, bytes]:
    """Convert an in-memory Keras model (batch fixed to 1) to each TFLite ``kind``.

    ``representative``: model inputs ``(n, H, W, C)`` float32 (already through ``to_model_input``) for int8.
    """
    def gen() -> Iterator[list[np.ndarray]]:
        assert representative is not None
        for i in range(len(representative)):
            yield [np.asarray(representative[i:i + 1], dtype=np.float32)]

    if "int8" in kinds and (representative is None or len(representative) == 0):
        raise AuricleError("the representative set is empty; int8 calibration needs at least one input")
    with tempfile.TemporaryDirectory(prefix="auricle-export-") as work:
        saved = _export_saved_model(model, Path(work))
        return {kind: convert_model(saved, kind, representative=gen if kind == "int8" else None, io_type=io_type)
                for kind in kinds}


def check_full_integer(model: bytes | str | os.PathLike[str], *, io_type: str = "int8") -> None:
    """Raise :class:`AuricleError` naming every op that still computes in float, or I/O of the wrong type."""
    info = read_model(model)
    t = info.tensors

    def floaty(op: Any) -> bool:
        return any(i >= 0 and not t[i].constant and t[i].dtype.startswith("float") for i in (*op.inputs, *op.outputs))

    float_ops = [op for op in info.ops if floaty(op)]
    compute = [op for op in float_ops if op.name not in ("QUANTIZE", "DEQUANTIZE")] or float_ops
    if compute:
        names = ", ".join(f"{op.name} (op {op.index})" for op in compute[:6])
        more = f" and {len(compute) - 6} more" if len(compute) > 6 else ""
        raise AuricleError(f"int8 conversion left {len(compute)} op(s) computing in float: {names}{more}; "
                           "TFLite has no int8 kernel for them, so the converter wrapped them in "
                           "DEQUANTIZE/QUANTIZE. Refusing the float fallback: replace the layer(s) behind "
                           "them with ops TFLite can quantize")
    for kind, idx in (("input", info.inputs), ("output", info.outputs)):
        for i in idx:
            if t[i].dtype != io_type:
                raise AuricleError(f"int8 model {kind} {t[i].name!r} is {t[i].dtype}, expected {io_type}")


# -- data ----------------------------------------------------------------------------------------------------
def select_representative(rows: Sequence[tuple[str, str]], n: int, *, seed: int = 0) -> list[tuple[str, str]]:
    """Up to ``n`` ``(path, label)`` rows, stratified: round-robin over the classes (sorted), each class's
    clips in a seeded random order. Classes with fewer clips simply run out."""
    by_label: dict[str, list[str]] = {}
    for path, label in rows:
        by_label.setdefault(label, []).append(path)
    rng = np.random.default_rng(seed)
    queues = {lab: [paths[i] for i in rng.permutation(len(paths))] for lab, paths in sorted(by_label.items())}
    out: list[tuple[str, str]] = []
    depth = 0
    while len(out) < n and any(len(q) > depth for q in queues.values()):
        for lab, q in queues.items():
            if depth < len(q) and len(out) < n:
                out.append((q[depth], lab))
        depth += 1
    return out


def _clip_audio(root: Path, rows: Sequence[tuple[str, str]], config: FeatureConfig, *, label: str,
                progress: bool) -> Iterator[tuple[int, np.ndarray]]:
    """``(row index, mono audio at the model's rate)`` of each clip, with progress; one BLAS thread."""
    bar = _Progress(label, len(rows), progress)
    with one_blas_thread():
        for i, (rel, _) in enumerate(rows):
            path = root / rel
            if not path.is_file():
                raise AuricleError(f"clip {rel} (split.csv) is missing under {root}; the data has moved -- pass "
                                   "--data DIR with the dataset root")
            yield i, load_audio(path, config.sample_rate)
            bar.step(i + 1)


def clip_features(root: Path, rows: Sequence[tuple[str, str]], config: FeatureConfig, *, label: str,
                  progress: bool = True) -> np.ndarray:
    """Log-mel frames ``(n, n_frames, n_mels)`` of the clips (one window each), through the one frontend."""
    out = np.empty((len(rows), config.n_frames, config.n_mels), dtype=np.float32)
    for i, x in _clip_audio(root, rows, config, label=label, progress=progress):
        out[i] = log_mel(fit_to_clip(x, config), config)
    return out


def clip_window_features(root: Path, rows: Sequence[tuple[str, str]], config: FeatureConfig, *, label: str,
                         progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Every window of the clip-level rule (``edge.classifier``) of each clip: log-mel frames
    ``(windows, n_frames, n_mels)`` and the row each window belongs to. A clip up to one window long is padded
    to it (one window)."""
    parts, owners = [], []
    for i, x in _clip_audio(root, rows, config, label=label, progress=progress):
        if x.size <= config.clip_samples:
            x = fit_to_clip(x, config)
        windows = clip_windows(log_mel(x, config), config.n_frames)
        parts.append(windows)
        owners.extend([i] * len(windows))
    if not parts:
        return np.empty((0, config.n_frames, config.n_mels), dtype=np.float32), np.empty(0, dtype=np.int64)
    return np.concatenate(parts).astype(np.float32, copy=False), np.asarray(owners, dtype=np.int64)


# -- evaluation -----------------------------------------------------------------------------------------------
class _KerasScorer:
    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(x), dtype=np.float64)


class _TFLiteScorer:
    """Scores through the device's helpers (edge.adapters): quantise with the interpreter's own scale/zero
    point, invoke, dequantise with widened ints."""

    def __init__(self, path: Path, want: tuple[int, ...], n_labels: int, threads: int | None) -> None:
        self.interpreter, self.backend = make_interpreter(path, num_threads=threads)
        have = tuple(int(s) for s in input_details(self.interpreter)["shape"])
        if have != (1, *want):
            raise BundleError(f"{path.name} takes input {have}, the feature config gives {(1, *want)}")
        n_out = int(np.prod(output_details(self.interpreter)["shape"]))
        if n_out != n_labels:
            raise BundleError(f"{path.name} has {n_out} outputs for {n_labels} labels")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        rows = []
        for sample in x:
            set_input(self.interpreter, sample)
            self.interpreter.invoke()
            rows.append(get_scores(self.interpreter))
        return np.stack(rows)


def evaluate(scorer: Callable[[np.ndarray], np.ndarray], frames: np.ndarray, y: np.ndarray, config: FeatureConfig,
             labels: Sequence[str], *, name: str, progress: bool = True,
             owners: np.ndarray | None = None) -> dict[str, Any]:
    """The one evaluation: profile transform per batch -> scores -> [clip-level: mean over each clip's windows,
    ``owners`` giving the clip of each window] -> top-1 -> per-class metrics (and the per-window accuracy)."""
    n = len(frames)
    scores = []
    bar = _Progress(f"evaluating {name}", n, progress)
    t0 = time.perf_counter()
    for i in range(0, n, _EVAL_BATCH):
        x = to_model_input(frames[i:i + _EVAL_BATCH], config).astype(np.float32, copy=False)
        scores.append(scorer(x))
        bar.step(min(n, i + _EVAL_BATCH))
    s = np.concatenate(scores) if scores else np.empty((0, len(labels)))
    window_y = y if owners is None else np.asarray(y)[owners]
    window_accuracy = float(np.mean(np.argmax(s, axis=1) == window_y)) if len(s) else 0.0
    if owners is not None:
        s = clip_scores(s, owners, len(y))
    pred = np.argmax(s, axis=1)
    return {"scores": s, "pred": pred, "metrics": per_class_metrics(y, pred, labels),
            "window_accuracy": window_accuracy, "windows": n, "seconds": time.perf_counter() - t0}


# -- bundle folder handling ---------------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _clean_stale(out: Path, progress: bool) -> None:
    """Remove ``.NAME.tmp-<pid>-*`` / ``.NAME.old-<pid>-*`` folders whose process is gone."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}(?:{re.escape(_TMP_TAG)}|{re.escape(_OLD_TAG)})(\d+)-")
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or not entry.is_dir() or entry.is_symlink():
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and _pid_alive(pid):
            continue  # another conversion into the same target is running
        shutil.rmtree(entry, ignore_errors=True)
        _say(f"removed {entry} left by an interrupted conversion", enabled=progress)


def _check_target(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise AuricleError(f"--out {out} exists and is not a folder; choose a folder path for the bundle")
    if out.is_dir():
        try:
            contents = [p.name for p in out.iterdir()]
        except OSError as exc:
            raise AuricleError(f"cannot read --out {out}: {exc.strerror or exc}") from None
        if contents and MANIFEST not in contents:
            raise AuricleError(f"--out {out} is a folder with other files and no {MANIFEST}; refusing to replace "
                               "something that is not a bundle -- choose a new or bundle folder")


def _make_temp(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{_TMP_TAG}{os.getpid()}-", dir=out.parent))
    except OSError as exc:
        raise AuricleError(f"cannot write the bundle at {out}: {exc.strerror or exc} ({exc.filename or out.parent}); "
                           "choose a writable --out") from None
    return tmp


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False when not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    return False


def _install(tmp: Path, out: Path) -> None:
    """Put the finished ``tmp`` folder at ``out``; an existing bundle is replaced in one atomic step."""
    tmp.chmod(0o755)
    _fsync_dir(tmp)
    if out.exists():
        if _exchange(tmp, out):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous bundle
        else:  # two renames; a crash in between leaves the old bundle in .NAME.old-<pid>-*
            old = out.parent / f".{out.name}{_OLD_TAG}{os.getpid()}-{secrets.token_hex(3)}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)
    _fsync_dir(out.parent)


def _previous_detector(out: Path, cfg: QuantizeConfig, run: RunFolder) -> dict[str, Any] | None:
    """The ``detector`` block of the bundle at ``out`` when it was converted from the same run with the same
    labels (a re-conversion, e.g. ``--io uint8`` for Coral, keeps the tuning); else None."""
    import json

    try:
        old = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(old, dict) or not isinstance(old.get("detector"), dict):
        return None
    old_run = ((old.get("conversion") or {}).get("resolved") or {}).get("run")
    if old.get("labels") != list(run.labels) or old_run != _portable(run.path):
        return None
    return old["detector"]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _spec(detail: dict[str, Any]) -> dict[str, Any]:
    scale, zero_point = detail["quantization"]
    return {"shape": [int(s) for s in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name,
            "scale": float(scale), "zero_point": int(zero_point)}


def _io_specs(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    interp, _ = make_interpreter(path, num_threads=1)
    return _spec(input_details(interp)), _spec(output_details(interp))


def _mb(n: int) -> str:
    return f"{n / _MB:.2f} MB"


def _shell_join(parts: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts)


# -- the core ----------------------------------------------------------------------------------------------------
def quantize_run(*, run: str | os.PathLike[str], out: str | os.PathLike[str], io: str = "int8",
                 representative: int = DEFAULT_REPRESENTATIVE, data: str | os.PathLike[str] | None = None,
                 also: Sequence[str] = (), max_drop: float = DEFAULT_MAX_DROP,
                 float_max_mb: float = DEFAULT_FLOAT_MAX_MB, c_array_max_mb: float = DEFAULT_C_ARRAY_MAX_MB,
                 threads: int | None = None, seed: int = 0, compile_edgetpu: bool = True,
                 require_edgetpu: bool = False, name: str | None = None, progress: bool = True,
                 report: Callable[[str], None] | None = print, c_array: bool = False,
                 force: bool = False) -> dict[str, Any]:
    """Convert, verify and write a bundle (see the module docstring). Returns the manifest.

    Raises :class:`AuricleError` for bad input and :class:`VerificationFailed` when int8 accuracy drops by
    more than ``max_drop`` percentage points; in both cases no bundle is written and an existing one at
    ``out`` is left as it was. ``report`` receives the human-readable summary lines.
    """
    cfg = QuantizeConfig(run=str(run), out=str(out), io=io, representative=representative,
                         data=None if data is None else str(data), also=tuple(dict.fromkeys(also)),
                         max_drop=float(max_drop), float_max_mb=float(float_max_mb),
                         c_array_max_mb=float(c_array_max_mb), threads=threads, seed=int(seed),
                         compile_edgetpu=bool(compile_edgetpu), require_edgetpu=bool(require_edgetpu), name=name,
                         c_array=bool(c_array), force=bool(force))
    timings = _Timings()
    out_path = Path(cfg.out)
    if out_path.name in ("", ".", ".."):
        raise AuricleError(f"--out {cfg.out!r} must name a bundle folder, e.g. firmware_assets/NAME")
    run_folder = load_run(cfg.run, data=cfg.data)
    _check_splits(run_folder)
    _check_target(out_path)
    refuse_to_replace(out_path, force=cfg.force, what="--out")
    previous = _previous_detector(out_path, cfg, run_folder)
    _clean_stale(out_path, progress)
    tmp = _make_temp(out_path)  # fails early (exit 2) when --out is not writable
    ctx = _Conversion(cfg=cfg, run=run_folder, out=out_path, tmp=tmp, progress=progress,
                      emit=report or (lambda _line: None), timings=timings, previous_detector=previous)
    try:
        manifest = _convert_into(ctx)
        _install(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    ctx.emit(f"bundle written to {out_path} in {timings.elapsed():.1f} s")
    return manifest


class _Timings:
    """Seconds of each step, measured back to back (``lap``), as the manifest records them."""

    def __init__(self) -> None:
        self.start = self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def mark(self) -> None:
        """Start the next step's clock now."""
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self._last, 2)
        self._last = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


@dataclasses.dataclass(frozen=True)
class _Conversion:
    """What every step of one conversion reads: the settings, the run, where the bundle goes and is built."""

    cfg: QuantizeConfig
    run: RunFolder
    out: Path                        # the bundle's place
    tmp: Path                        # the temporary bundle folder being filled, renamed to ``out`` at the end
    progress: bool
    emit: Callable[[str], None]      # summary lines (verification, Edge TPU report)
    timings: _Timings
    previous_detector: dict[str, Any] | None = None   # the tuned block of the bundle this one replaces

    @property
    def labels(self) -> list[str]:
        return list(self.run.labels)

    def say(self, message: str) -> None:
        _say(message, enabled=self.progress)


@dataclasses.dataclass(frozen=True)
class _Clips:
    """The calibration and test clips, through the frontend (log-mel frames, before the profile transform)."""

    representative: list[tuple[str, str]]      # (relative path, label), training split only
    rep_frames: np.ndarray
    test_frames: np.ndarray                    # every window of the clip-level rule, of every test clip
    y_test: np.ndarray                         # one label per test clip
    test_owners: np.ndarray                    # the test clip of each window

    def per_class(self, labels: Sequence[str]) -> dict[str, int]:
        return {lab: sum(1 for _, l2 in self.representative if l2 == lab) for lab in labels}


@dataclasses.dataclass(frozen=True)
class _Files:
    """What the bundle holds besides its models and manifest, as the manifest records it."""

    regenerable: dict[str, Any]      # files left out for size: sha256, bytes, why, the command that writes them
    c_array: dict[str, Any]
    report_files: list[str]          # the run's report files copied in


def _check_splits(run: RunFolder) -> None:
    if not run.split("train"):
        raise AuricleError(f"{run.path / 'split.csv'} has no 'train' clips; the representative set for "
                           "calibration comes from the training split only, so it would be empty")
    if not run.split("test"):
        raise AuricleError(f"{run.path / 'split.csv'} has no 'test' clips; verification needs the test split")


def _convert_into(ctx: _Conversion) -> dict[str, Any]:
    """Every step after the checks, into ``ctx.tmp``; returns the manifest (written last)."""
    ctx.timings.mark()
    model, shape = _load_checked_model(ctx)
    clips = _prepare_clips(ctx)
    blobs = _convert_kinds(ctx, model, clips)
    paths = _write_models(ctx, blobs)
    verification = _verify(ctx, model, shape, clips, blobs, paths)
    tpu = _edgetpu_step(ctx, paths)
    if ctx.cfg.require_edgetpu and not tpu["ready"]:
        raise AuricleError(f"--require-edgetpu: the int8 model is not Edge TPU ready: {tpu['problems'][0]}")
    _gate(ctx.cfg, verification)
    files = _write_other_files(ctx, blobs, paths)
    models = _model_entries(ctx, blobs, paths, files)
    hashes = {p.name: sha256_file(p) for p in sorted(ctx.tmp.iterdir()) if p.is_file() and not p.name.startswith(".")}
    ctx.timings.lap("write")
    ctx.timings.seconds["total"] = round(ctx.timings.elapsed(), 2)
    manifest = _manifest(ctx, model, shape, clips, models=models, hashes=hashes, verification=verification,
                         tpu=tpu, files=files)
    if ctx.previous_detector is not None:
        manifest["detector"] = ctx.previous_detector
        ctx.emit("kept the tuned detector settings of the bundle this replaces (same run, same labels); re-tune "
                 "with python -m tools.tune_detector if the model's scores changed")
    write_json_atomic(ctx.tmp / MANIFEST, manifest)
    return manifest


def _load_checked_model(ctx: _Conversion) -> tuple[Any, tuple[int, ...]]:
    ctx.say(f"loading {ctx.run.model_path}")
    _tf_keras()
    model = load_keras_model(ctx.run.model_path)
    shape = _check_model(model, ctx.run)
    ctx.timings.lap("load_model")
    return model, shape


def _prepare_clips(ctx: _Conversion) -> _Clips:
    """The stratified representative set (training split) and the test split, through the frontend."""
    train_rows, test_rows = ctx.run.split("train"), ctx.run.split("test")
    rep_rows = select_representative(train_rows, ctx.cfg.representative, seed=ctx.cfg.seed)
    if not rep_rows:
        raise AuricleError("the representative set is empty; the training split lists no usable clips")
    classes = sum(1 for lab in ctx.labels if any(l2 == lab for _, l2 in rep_rows))
    ctx.say(f"representative set: {len(rep_rows)} training clips over {classes} classes (from {len(train_rows)} "
            "in the training split)")
    fc, root = ctx.run.config, ctx.run.data_root
    rep_frames = clip_features(root, rep_rows, fc, label="representative features", progress=ctx.progress)
    ctx.say(f"test split: {len(test_rows)} clips")
    test_frames, owners = clip_window_features(root, test_rows, fc, label="test features", progress=ctx.progress)
    label_index = {lab: i for i, lab in enumerate(ctx.labels)}
    y_test = np.array([label_index[lab] for _, lab in test_rows], dtype=np.int64)
    ctx.timings.lap("features")
    return _Clips(representative=rep_rows, rep_frames=rep_frames, test_frames=test_frames, y_test=y_test,
                  test_owners=owners)


def _convert_kinds(ctx: _Conversion, model: Any, clips: _Clips) -> dict[str, bytes]:
    """The model exported at batch size 1, converted to int8, float32 and every ``--also`` kind."""
    cfg, fc = ctx.cfg, ctx.run.config
    work = Path(tempfile.mkdtemp(prefix=".work-", dir=ctx.tmp))
    ctx.say("exporting the model at batch size 1")
    saved = _export_saved_model(model, work)
    ctx.timings.lap("export")
    cal = _Progress("calibrating", len(clips.representative), ctx.progress)

    def representative_data() -> Iterator[list[np.ndarray]]:
        for i in range(len(clips.representative)):
            yield [to_model_input(clips.rep_frames[i:i + 1], fc).astype(np.float32, copy=False)]
            cal.step(i + 1)

    ctx.say(f"converting to full-integer int8 (TFLITE_BUILTINS_INT8 only, {cfg.io} input/output)")
    blobs = {"int8": convert_model(saved, "int8", representative=representative_data, io_type=cfg.io)}
    ctx.timings.lap("convert_int8")
    ctx.say("converting to float32 (reference)")
    blobs["float32"] = convert_model(saved, "float32")
    ctx.timings.lap("convert_float32")
    for kind in cfg.also:
        if kind not in blobs:
            ctx.say(f"converting to {kind}")
            blobs[kind] = convert_model(saved, kind)
            ctx.timings.lap(f"convert_{kind}")
    shutil.rmtree(work, ignore_errors=True)
    return blobs


def _write_models(ctx: _Conversion, blobs: dict[str, bytes]) -> dict[str, Path]:
    """Every converted model into the temp bundle (a float32 one over the size limit is dropped later)."""
    paths = {kind: ctx.tmp / MODEL_FILES[kind] for kind in blobs}
    for kind, blob in blobs.items():
        write_bytes_atomic(paths[kind], blob)
    return paths


def _verify(ctx: _Conversion, model: Any, shape: tuple[int, ...], clips: _Clips, blobs: dict[str, bytes],
            paths: dict[str, Path]) -> dict[str, Any]:
    """Keras float and every TFLite kind through the one evaluation on the test split; the summary lines."""
    cfg, fc, labels = ctx.cfg, ctx.run.config, ctx.labels
    threads = cfg.threads or max(1, min(4, os.cpu_count() or 1))
    results = {"keras_float": evaluate(_KerasScorer(model), clips.test_frames, clips.y_test, fc, labels,
                                       name="keras float", progress=ctx.progress, owners=clips.test_owners)}
    backend = None
    for kind in ("float32", "int8", *[k for k in cfg.also if k not in ("float32", "int8")]):
        scorer = _TFLiteScorer(paths[kind], shape, len(labels), threads)
        backend = scorer.backend
        results[f"tflite_{kind}"] = evaluate(scorer, clips.test_frames, clips.y_test, fc, labels,
                                             name=f"tflite {kind}", progress=ctx.progress, owners=clips.test_owners)
    ctx.timings.lap("evaluate")
    verification = _verification(results, clips.y_test, labels, blobs, cfg, backend, threads)
    for line in _verification_lines(verification, labels):
        ctx.emit(line)
    return verification


def _edgetpu_step(ctx: _Conversion, paths: dict[str, Path]) -> dict[str, Any]:
    """The Edge TPU check of the int8 model; ``edgetpu_compiler`` runs when it is on PATH, else the manifest
    gets the command to run where it is."""
    int8 = MODEL_FILES["int8"]
    report = edgetpu.check_edgetpu(paths["int8"])
    ctx.emit(f"Edge TPU check of {int8} ({edgetpu.OPS_SOURCE}):")
    ctx.emit(edgetpu.format_report(report))
    info: dict[str, Any] = {**report.to_dict(), "compiled": False}
    compiler = edgetpu.find_compiler()
    if report.ready and ctx.cfg.compile_edgetpu and compiler:
        ctx.say("running edgetpu_compiler")
        compiled, log = edgetpu.compile_model(paths["int8"], ctx.tmp)
        os.replace(compiled, ctx.tmp / MODEL_FILES["edgetpu"])
        for extra in ctx.tmp.glob("*_edgetpu.log"):
            extra.unlink()
        info.update(compiled=True, compiler_log=log[-2000:])
        ctx.emit(f"compiled {MODEL_FILES['edgetpu']} with edgetpu_compiler")
    else:
        out = Path(_portable(ctx.out))
        info["compile_command"] = edgetpu.compile_command(out / int8, out, script="converters/edgetpu.py")
        if report.ready and not compiler:
            ctx.emit("edgetpu_compiler is not on PATH (x86-64 Debian/Ubuntu only); to add model_edgetpu.tflite "
                     f"run there, from the repository root:\n  {info['compile_command']}\n  (install the "
                     f"compiler: {edgetpu.INSTALL_COMPILER})")
    ctx.timings.lap("edgetpu")
    return info


def _gate(cfg: QuantizeConfig, verification: dict[str, Any]) -> None:
    """int8 against float: :class:`VerificationFailed` (exit 1, no bundle) beyond ``--max-drop``."""
    if not verification["passed"]:
        raise VerificationFailed(
            f"int8 test accuracy {verification['accuracy']['tflite_int8']:.4f} is {verification['drop_pp']:.2f} "
            f"percentage points below float {verification['accuracy']['keras_float']:.4f} (limit "
            f"{cfg.max_drop:g}); bundle not written -- calibrate on more clips (--representative) or accept "
            "with --max-drop")


def _write_other_files(ctx: _Conversion, blobs: dict[str, bytes], paths: dict[str, Path]) -> _Files:
    """Labels, the C array and the run's report into the temp bundle; files over their size limits are left out
    (listed under ``regenerable_files`` with the command that writes them)."""
    regenerable: dict[str, Any] = {}
    if len(blobs["float32"]) > ctx.cfg.float_max_mb * _MB:
        paths["float32"].unlink()
        regenerable[MODEL_FILES["float32"]] = _left_out_float(ctx, blobs["float32"])
    c_info, c_left_out = _write_c_array(ctx, blobs["int8"])
    if c_left_out:
        regenerable[c_array.SOURCE] = c_left_out
    write_text_atomic(ctx.tmp / LABELS, "".join(f"{lab}\n" for lab in ctx.labels))
    copied = []
    for name in REPORT_FILES:  # the run's own report travels with the bundle (hashed like every file)
        src_file = ctx.run.path / name
        if src_file.is_file():
            write_bytes_atomic(ctx.tmp / name, src_file.read_bytes())
            copied.append(name)
    return _Files(regenerable=regenerable, c_array=c_info, report_files=copied)


def _quantize_command(cfg: QuantizeConfig) -> list[str]:
    """The command line that repeats this conversion, from the repository root."""
    cmd = ["python", "converters/quantize.py", "--run", _portable(cfg.run), "--out", _portable(cfg.out),
           "--io", cfg.io, "--representative", str(cfg.representative), "--seed", str(cfg.seed)]
    return cmd + (["--data", _portable(cfg.data)] if cfg.data else []) + (["--force"] if cfg.force else [])


def _left_out_float(ctx: _Conversion, blob: bytes) -> dict[str, Any]:
    import tensorflow as tf  # loaded already by the conversion; here for its version

    size, limit = len(blob), ctx.cfg.float_max_mb
    ctx.emit(f"model_float32.tflite ({_mb(size)}) exceeds --float-max-mb {limit:g}: not written; the manifest "
             "lists it under regenerable_files")
    inp, outp = _io_specs_bytes(blob, ctx.tmp)
    return {"sha256": sha256_bytes(blob), "bytes": size,
            "why": f"larger than --float-max-mb {limit:g} (kept out of git); it was used for verification",
            "regenerate": _shell_join([*_quantize_command(ctx.cfg), "--float-max-mb",
                                       str(math.ceil(size / _MB) + 1)]),
            "note": f"the sha256 is that of TensorFlow {tf.__version__}'s output",
            "model": {"kind": "float32", "input": inp, "output": outp}}


def _write_c_array(ctx: _Conversion, int8: bytes) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``model_data.h`` always, ``model_data.cc`` up to ``--c-array-max-mb``: the manifest's ``c_array`` entry,
    and the ``regenerable_files`` entry of a left-out source (else None)."""
    # the same note as `python converters/c_array.py model_int8.tflite` writes, so the regenerate command
    # below reproduces these exact bytes
    head, src = c_array.c_sources(int8, name=c_array.DEFAULT_NAME, note=c_array.note_for(MODEL_FILES["int8"]))
    info = {"header": c_array.HEADER, "source": c_array.SOURCE, "array": c_array.DEFAULT_NAME,
            "length_symbol": f"{c_array.DEFAULT_NAME}_len", "bytes": len(int8), "alignment": c_array.ALIGNMENT,
            "of": MODEL_FILES["int8"]}
    out = _portable(ctx.out)
    command = _shell_join(["python", "converters/c_array.py", f"{out}/{MODEL_FILES['int8']}", "--out", out])
    if not ctx.cfg.c_array:
        return {**info, "written": False, "why": "C arrays are written on request (--c-array)",
                "regenerate": command}, None
    write_text_atomic(ctx.tmp / c_array.HEADER, head)
    data = src.encode("ascii")
    limit = ctx.cfg.c_array_max_mb
    if len(data) <= limit * _MB:
        write_text_atomic(ctx.tmp / c_array.SOURCE, src)
        return {**info, "written": True}, None
    ctx.emit(f"model_data.cc ({_mb(len(data))}) exceeds --c-array-max-mb {limit:g}: not written; regenerate it "
             "with converters/c_array.py (listed under regenerable_files)")
    return {**info, "written": False}, {
        "sha256": sha256_bytes(data), "bytes": len(data), "why": f"larger than --c-array-max-mb {limit:g}",
        "regenerate": command}


def _model_entries(ctx: _Conversion, blobs: dict[str, bytes], paths: dict[str, Path],
                   files: _Files) -> dict[str, Any]:
    """The manifest's ``models``: file, input and output spec of every kind the bundle holds."""
    models: dict[str, Any] = {}
    for kind in ("int8", "float32", *ctx.cfg.also):
        if kind in models or not paths[kind].is_file():
            continue
        inp, outp = _io_specs(paths[kind])
        models[kind] = {"file": MODEL_FILES[kind], "input": inp, "output": outp}
    if (ctx.tmp / MODEL_FILES["edgetpu"]).is_file():
        models["edgetpu"] = dict(models["int8"], file=MODEL_FILES["edgetpu"])
    return models


def _manifest(ctx: _Conversion, model: Any, shape: tuple[int, ...], clips: _Clips, *, models: dict[str, Any],
              hashes: dict[str, str], verification: dict[str, Any], tpu: dict[str, Any],
              files: _Files) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    cfg, labels = ctx.cfg, ctx.labels
    return {
        "schema_version": SCHEMA_VERSION,
        "name": cfg.name or ctx.out.name,
        "feature_config": ctx.run.config.to_dict(),
        "labels": labels,
        "background_labels": [lab for lab in labels if lab.startswith("_")],
        "default_model": "int8",
        "models": models,
        "files": hashes,
        "regenerable_files": files.regenerable,
        "network": _network(ctx.run, model),
        "training": {**_training(ctx.run), "report_files": files.report_files},
        "verification": verification,
        "edgetpu": tpu,
        "c_array": files.c_array,
        "conversion": {
            "config": {**cfg.to_dict(), **{k: _portable(getattr(cfg, k)) if getattr(cfg, k) else None
                                           for k in ("run", "out", "data")}},
            "resolved": {"run": _portable(ctx.run.path), "out": _portable(ctx.out),
                         "data": _portable(ctx.run.data_root), "threads": verification["threads"],
                         "input_shape": [1, *shape]},
            "command": _COMMAND[-1] if _COMMAND else None,
            "representative": {"clips": len(clips.representative), "split": "train",
                               "per_class": clips.per_class(labels),
                               "stratified": "round-robin over classes, seeded shuffle within each"},
            "frontend": "edge.features: fit_to_clip -> log_mel -> to_model_input (as training)",
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "seconds": ctx.timings.seconds,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    }


def _io_specs_bytes(blob: bytes, folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    fd, name = tempfile.mkstemp(prefix=".spec-", suffix=".tflite", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        return _io_specs(Path(name))
    finally:
        os.unlink(name)


def _portable(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the repository root (posix): what the manifest records, so a bundle carries no path
    of the machine that built it, and its commands run from the repository root."""
    try:
        return Path(os.path.relpath(Path(path).resolve(), repo_root())).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(path).name


def _portable_values(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with every absolute path (a value, or an item of a list value) made :func:`_portable`."""
    def one(v: Any) -> Any:
        return _portable(v) if isinstance(v, str) and os.path.isabs(v) else v
    return {k: [one(x) for x in v] if isinstance(v, list) else one(v) for k, v in config.items()}


def _portable_args(args: Sequence[str]) -> list[str]:
    """Command-line arguments with absolute paths (``/x`` or ``--opt=/x``) made :func:`_portable`."""
    out = []
    for a in args:
        opt, eq, value = a.partition("=") if a.startswith("--") else ("", "", a)
        out.append(f"{opt}{eq}{_portable(value)}" if os.path.isabs(value) else a)
    return out


def _verification(results: dict[str, dict[str, Any]], y: np.ndarray, labels: Sequence[str],
                  blobs: dict[str, bytes], cfg: QuantizeConfig, backend: str | None, threads: int) -> dict[str, Any]:
    n = len(y)
    ref, q, f32 = results["keras_float"], results["tflite_int8"], results["tflite_float32"]
    acc = {k: v["metrics"]["accuracy"] for k, v in results.items()}
    agree = {
        "int8_vs_keras_float": float(np.mean(q["pred"] == ref["pred"])),
        "int8_vs_tflite_float32": float(np.mean(q["pred"] == f32["pred"])),
        "tflite_float32_vs_keras_float": float(np.mean(f32["pred"] == ref["pred"])),
    }
    for k in results:
        if k not in ("keras_float", "tflite_int8", "tflite_float32"):
            agree[f"{k.removeprefix('tflite_')}_vs_keras_float"] = float(np.mean(results[k]["pred"] == ref["pred"]))
    score_diff = {
        "int8_vs_keras_float_mean_abs": float(np.mean(np.abs(q["scores"] - ref["scores"]))),
        "int8_vs_keras_float_max_abs": float(np.max(np.abs(q["scores"] - ref["scores"]))),
        "float32_vs_keras_float_max_abs": float(np.max(np.abs(f32["scores"] - ref["scores"]))),
    }
    recall = {}
    for lab in labels:
        r_ref = ref["metrics"]["per_class"][lab]["recall"]
        r_q = q["metrics"]["per_class"][lab]["recall"]
        recall[lab] = {"keras_float": r_ref, "tflite_int8": r_q, "diff": round(r_q - r_ref, 4),
                       "support": ref["metrics"]["per_class"][lab]["support"]}
    # the gate uses unrounded accuracies (per_class_metrics rounds to 4 places)
    raw = {k: float(np.mean(v["pred"] == y)) for k, v in results.items()}
    drop_pp = round((raw["keras_float"] - raw["tflite_int8"]) * 100.0, 3)
    sizes = {MODEL_FILES[k]: len(b) for k, b in blobs.items()}
    return {
        "split": "test", "clips": n, "runtime_backend": backend, "threads": threads,
        "accuracy": acc,
        "evaluation": "clip-level: windows every half window over each whole clip, scores averaged",
        "windows": int(ref.get("windows", n)),
        "window_accuracy": {k: round(float(v.get("window_accuracy", 0.0)), 4) for k, v in results.items()},
        "macro_f1": {k: v["metrics"]["macro_f1"] for k, v in results.items()},
        "agreement": agree,
        "score_diff": score_diff,
        "per_class_recall": recall,
        "drop_pp": drop_pp, "max_drop_pp": cfg.max_drop, "passed": bool(drop_pp <= cfg.max_drop + 1e-9),
        "sizes": sizes,
        "int8_to_float32_size": round(len(blobs["int8"]) / len(blobs["float32"]), 4),
        "eval_seconds": {k: round(v["seconds"], 2) for k, v in results.items()},
    }


def _verification_lines(v: dict[str, Any], labels: Sequence[str]) -> list[str]:
    lines = [f"verification on {v['clips']} test clips, {v.get('windows', v['clips'])} windows, clip-level (TFLite via "
             f"{v['runtime_backend']}, {v['threads']} thread(s)):",
             f"  {'model':<16} {'accuracy':>8} {'per-window':>10} {'macro F1':>8} {'top-1 = keras':>13} {'size':>10}"]
    names = {"keras_float": ("keras float", None), "tflite_float32": ("tflite float32", MODEL_FILES["float32"]),
             "tflite_int8": ("tflite int8", MODEL_FILES["int8"])}
    for k in v["accuracy"]:
        label, file = names.get(k, (k.replace("_", " "), MODEL_FILES.get(k.removeprefix("tflite_"))))
        agree = 1.0 if k == "keras_float" else v["agreement"].get(
            "int8_vs_keras_float" if k == "tflite_int8" else
            "tflite_float32_vs_keras_float" if k == "tflite_float32" else f"{k.removeprefix('tflite_')}_vs_keras_float")
        size = _mb(v["sizes"][file]) if file and file in v["sizes"] else "-"
        per_window = v.get("window_accuracy", {}).get(k, float("nan"))
        lines.append(f"  {label:<16} {v['accuracy'][k]:>8.4f} {per_window:>10.4f} {v['macro_f1'][k]:>8.4f} "
                     f"{agree:>13.4f} {size:>10}")
    lines.append(f"  int8 vs tflite float32 top-1 agreement {v['agreement']['int8_vs_tflite_float32']:.4f}; "
                 f"int8/float32 size {v['int8_to_float32_size']:.3f}; mean |score diff| int8 vs keras "
                 f"{v['score_diff']['int8_vs_keras_float_mean_abs']:.4f}")
    diffs = sorted(v["per_class_recall"].items(), key=lambda kv: kv[1]["diff"])
    changed = [f"{lab} {d['diff']:+.3f}" for lab, d in diffs if abs(d["diff"]) >= 1e-4]
    lines.append("  per-class recall change int8 - float: " + (", ".join(changed) if changed else "none"))
    verdict = "OK" if v["passed"] else "FAILED"
    lines.append(f"  int8 accuracy drop vs float: {v['drop_pp']:+.2f} pp (limit {v['max_drop_pp']:g} pp) {verdict}")
    return lines


def _network(run: RunFolder, model: Any) -> dict[str, Any]:
    rep, tc = run.report, run.train_config
    net = {"name": tc.get("network") or rep.get("network") or model.name,
           "width": tc.get("width", rep.get("width")), "profile": run.config.profile,
           "input_shape": list(model_input_shape(run.config)),
           "params": int(rep.get("params") or model.count_params())}
    macs = rep.get("macs")
    if macs is None:
        try:
            from training.models import count_macs  # imports keras: only here, once TensorFlow is set up
            macs = int(count_macs(model))
        except Exception:
            macs = None
    net["macs"] = macs
    return net


def _training(run: RunFolder) -> dict[str, Any]:
    rep = run.report
    test = rep.get("test_metrics") or {}
    counts = {s: sum(1 for r in run.rows if r.split == s) for s in SPLITS}
    recorded = run.train_config.get("data")   # as training was given it, relative to where it ran
    data = str(recorded) if recorded and not os.path.isabs(str(recorded)) else _portable(recorded or run.data_root)
    return {
        "run": run.path.name,
        "run_path": _portable(run.path),
        "data": data,
        "split_sizes": rep.get("split_sizes") or counts,
        "split_rule": rep.get("split_rule"),
        "accuracy": rep.get("accuracy"),
        "test_macro_f1": test.get("macro_f1") if isinstance(test, dict) else None,
        "summary": rep.get("training"),
        "train_config": rep.get("train_config") or _portable_values(run.train_config),
        # what it learned to reject: the --negatives and the parts of them taught as noise (None: not trained so)
        **_portable_values({k: run.train_config.get(k) for k in ("negatives", "noise_negatives")}),
    }


# -- CLI ---------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python converters/quantize.py",
        description="Quantize a training run to a full-integer int8 TFLite bundle, verify it against the float "
                    "model on the test split, check Edge TPU readiness and write a bundle folder.")
    p.add_argument("--run", required=True, help="run folder written by python -m training.train (runs/NAME)")
    p.add_argument("--out", required=True,
                   help="bundle folder to write (e.g. runs/NAME_bundle); replaced atomically; a shipped bundle "
                        "(firmware_assets/NAME) only with --force")
    p.add_argument("--force", action="store_true",
                   help="replace a bundle the repository ships (its tuned detector settings are kept when the run "
                        "and labels are the same)")
    p.add_argument("--c-array", action="store_true",
                   help="also write model_data.h/.cc, the int8 model as a C array for TensorFlow Lite Micro")
    p.add_argument("--io", choices=IO_TYPES, default="int8",
                   help="input/output tensor type of the int8 model; uint8 is what Coral's tools expect (default int8)")
    p.add_argument("--representative", type=int, default=DEFAULT_REPRESENTATIVE, metavar="N",
                   help=f"calibration clips from the training split, stratified over classes (default "
                        f"{DEFAULT_REPRESENTATIVE})")
    p.add_argument("--data", metavar="DIR", help="dataset root, when the run's data has moved")
    p.add_argument("--also", default="", metavar="KINDS",
                   help="extra model kinds for the benchmark, comma-separated: float32,float16,dynamic (float32 "
                        "is always made)")
    p.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP, metavar="PP",
                   help=f"fail when int8 test accuracy is more than PP percentage points below float (default "
                        f"{DEFAULT_MAX_DROP:g})")
    p.add_argument("--float-max-mb", type=float, default=DEFAULT_FLOAT_MAX_MB, metavar="N",
                   help=f"write model_float32.tflite only when it is at most N MB; else record how to regenerate "
                        f"it (default {DEFAULT_FLOAT_MAX_MB:g})")
    p.add_argument("--c-array-max-mb", type=float, default=DEFAULT_C_ARRAY_MAX_MB, metavar="N",
                   help=f"with --c-array, write model_data.cc only when it is at most N MB (default {DEFAULT_C_ARRAY_MAX_MB:g})")
    p.add_argument("--threads", type=int, default=None, help="TFLite threads for verification (default: up to 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the representative selection (default 0)")
    p.add_argument("--name", default=None, help="bundle name in the manifest (default: the --out folder name)")
    p.add_argument("--no-compile", action="store_true", help="do not run edgetpu_compiler even when it is on PATH")
    p.add_argument("--require-edgetpu", action="store_true",
                   help="fail (exit 2) when the int8 model is not Edge TPU ready")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _COMMAND.append(_shell_join(["python", "converters/quantize.py",
                                 *_portable_args(sys.argv[1:] if argv is None else list(argv))]))
    also = tuple(k.strip() for k in args.also.split(",") if k.strip())
    try:  # SIGTERM cleans up like Ctrl-C (the temp folder is removed; the old bundle stays)
        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    except ValueError:  # not the main thread
        previous = None
    try:
        quantize_run(run=args.run, out=args.out, io=args.io, representative=args.representative, data=args.data,
                     also=also, max_drop=args.max_drop, float_max_mb=args.float_max_mb,
                     c_array_max_mb=args.c_array_max_mb, threads=args.threads, seed=args.seed,
                     compile_edgetpu=not args.no_compile, require_edgetpu=args.require_edgetpu, name=args.name,
                     progress=not args.quiet, c_array=args.c_array, force=args.force)
    except VerificationFailed as exc:
        fail(str(exc), code=1)
    finally:
        _COMMAND.pop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    run_cli(main)
