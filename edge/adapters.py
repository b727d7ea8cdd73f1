"""Small stateless helpers around a TFLite interpreter's tensors (in the style of pycoral's adapters).

Quantisation parameters always come from the interpreter (or the caller), never from constants; dequantising
subtracts the zero point in widened ints so int8 never overflows. The interpreter itself comes from
:func:`edge.interpreter.make_interpreter`.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from edge.interpreter import TensorDetails, TFLiteInterpreter

__all__ = ["input_details", "output_details", "quantize", "dequantize", "set_input", "get_scores", "top_k"]


def input_details(interpreter: TFLiteInterpreter, index: int = 0) -> TensorDetails:
    return interpreter.get_input_details()[index]


def output_details(interpreter: TFLiteInterpreter, index: int = 0) -> TensorDetails:
    return interpreter.get_output_details()[index]


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: npt.DTypeLike, *, out: np.ndarray | None = None,
             work: np.ndarray | None = None) -> np.ndarray:
    """``clip(rint(x / scale) + zero_point)`` in float32, cast to ``dtype`` (int8/uint8/int16).

    ``scale == 0`` means a float tensor: ``x`` is returned as ``dtype``. ``out``/``work`` (float32, same
    shape) avoid allocation; results are identical either way.
    """
    dtype = np.dtype(dtype)
    if not scale or not np.issubdtype(dtype, np.integer):
        if out is None:
            return np.asarray(x, dtype=dtype).copy()
        out[...] = x
        return out
    info = np.iinfo(dtype)
    w = work if work is not None else np.empty(np.shape(x), dtype=np.float32)
    np.divide(x, np.float32(scale), out=w)
    np.rint(w, out=w)
    np.add(w, np.float32(zero_point), out=w)
    np.clip(w, np.float32(info.min), np.float32(info.max), out=w)
    if out is None:
        return w.astype(dtype)
    out[...] = w
    return out


def dequantize(q: np.ndarray, scale: float, zero_point: int, *, out: np.ndarray | None = None,
               wide: np.ndarray | None = None) -> np.ndarray:
    """``scale * (q - zero_point)`` with the subtraction done in widened ints (no int8 overflow), float64."""
    q = np.asarray(q)
    if not scale or not np.issubdtype(q.dtype, np.integer):
        if out is None:
            return q.astype(np.float64)
        out[...] = q
        return out
    w = wide if wide is not None else np.empty(q.shape, dtype=np.int64)
    np.subtract(q, zero_point, out=w, dtype=w.dtype)
    if out is None:
        out = np.empty(q.shape, dtype=np.float64)
    np.multiply(w, scale, out=out, dtype=np.float64)
    return out


def set_input(interpreter: TFLiteInterpreter, x: np.ndarray) -> None:
    """Quantise a float input with the interpreter's own scale/zero point and set it (batch dim added)."""
    d = input_details(interpreter)
    scale, zero_point = d["quantization"]
    q = quantize(np.asarray(x, dtype=np.float32), scale, zero_point, d["dtype"])
    interpreter.set_tensor(d["index"], q.reshape(d["shape"]))


def get_scores(interpreter: TFLiteInterpreter) -> np.ndarray:
    """The first output, dequantised (float64, batch dim dropped)."""
    d = output_details(interpreter)
    scale, zero_point = d["quantization"]
    return dequantize(interpreter.get_tensor(d["index"]), scale, zero_point).reshape(-1)


def top_k(scores: np.ndarray, k: int | None = None, *, threshold: float = -math.inf,
          labels: Sequence[str] | None = None) -> list[tuple[str | int, float]]:
    """``(label or index, score)`` pairs, best first; ties keep label order."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-s, kind="stable")
    if k is not None:
        order = order[:k]
    return [(labels[i] if labels is not None else int(i), float(s[i])) for i in order if s[i] >= threshold]
