"""Keras -> TFLite: load the run's model, export it at batch size 1 and convert it to int8 (full-integer, no
float fallback), float32, float16 or dynamic-range."""
from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from converters.console import quiet
from converters.inspect_model import read_model
from edge.errors import AuricleError
from edge.features import model_input_shape
from training.data import one_blas_thread
from training.run_folder import RunFolder

_OP_NAME = re.compile(r"'(?:tfl?|mhlo|stablehlo)\.([A-Za-z0-9_]+)'")


def tf_keras() -> tuple[Any, Any]:
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
    _, keras = tf_keras()
    path = Path(path)
    try:
        with quiet(), one_blas_thread():
            model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:
        first = " ".join(str(exc).split())[:200]
        raise AuricleError(f"cannot load {path} ({type(exc).__name__}: {first}); the file is damaged or not a "
                           "Keras 3 model -- re-copy it or retrain the run") from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise AuricleError(f"{path} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; a bundle needs "
                           "one input (the features) and one output (the scores)")
    return model


def check_model(model: Any, run: RunFolder) -> tuple[int, ...]:
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


def export_saved_model(model: Any, folder: Path) -> Path:
    tf, keras = tf_keras()
    fixed = _fixed_batch(model, keras)
    out = folder / "saved_model"
    signature = [tf.TensorSpec((1, *fixed.input_shape[1:]), tf.float32, name="features")]
    with quiet():
        try:
            fixed.export(str(out), format="tf_saved_model", verbose=False, input_signature=signature)
        except Exception as exc:
            raise AuricleError(f"cannot export the model for conversion ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:200]})") from None
    return out


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
    tf, _ = tf_keras()
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
    with quiet() as captured:
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
        saved = export_saved_model(model, Path(work))
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
