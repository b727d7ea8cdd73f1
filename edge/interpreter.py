"""The interpreter factory: find a TFLite runtime, optionally load the Edge TPU delegate, build an interpreter.

Backends are tried in order (see docs/DESIGN.md, "Runtime backends"): ``ai_edge_litert``, then
``tflite_runtime``, then ``tensorflow.lite`` (imported only when neither of the others is installed);
``$AURICLE_TFLITE_BACKEND`` forces one. What to do with the interpreter once it exists lives in
:mod:`edge.adapters` (tensor helpers) and :mod:`edge.classifier` (the model wrapper).
"""
from __future__ import annotations

import importlib
import os
import platform
from typing import Callable, Protocol, TypedDict

import numpy as np

from edge.cstreams import captured_c_stderr
from edge.errors import AuricleError, BundleError

__all__ = ["BACKENDS", "TensorDetails", "TFLiteInterpreter", "import_backend", "load_edgetpu_delegate",
           "make_interpreter"]

BACKENDS = ("ai_edge_litert", "tflite_runtime", "tensorflow.lite")
_EDGETPU_LIB = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}


class TensorDetails(TypedDict, total=False):
    """One entry of ``get_input_details()`` / ``get_output_details()`` (the same in every backend)."""
    name: str
    index: int
    shape: np.ndarray
    shape_signature: np.ndarray
    dtype: type[np.generic]
    quantization: tuple[float, int]
    quantization_parameters: dict[str, np.ndarray]
    sparsity_parameters: dict[str, object]


class TFLiteInterpreter(Protocol):
    """What edge/ uses of an interpreter; ai_edge_litert's, tflite_runtime's and tf.lite's all have it."""

    def allocate_tensors(self) -> None: ...

    def get_input_details(self) -> list[TensorDetails]: ...

    def get_output_details(self) -> list[TensorDetails]: ...

    def set_tensor(self, tensor_index: int, value: np.ndarray) -> None: ...

    def get_tensor(self, tensor_index: int) -> np.ndarray: ...

    def invoke(self) -> None: ...


#: a backend's ``load_delegate(library)``; the delegate it returns is opaque here
LoadDelegate = Callable[[str], object]


def import_backend(prefer: str | None = None) -> tuple[Callable[..., TFLiteInterpreter], LoadDelegate, str]:
    """``(Interpreter class, load_delegate, backend name)`` of the first TFLite runtime that imports."""
    prefer = prefer or os.environ.get("AURICLE_TFLITE_BACKEND") or None
    if prefer is not None and prefer not in BACKENDS:
        raise AuricleError(f"AURICLE_TFLITE_BACKEND={prefer!r} is not one of {', '.join(BACKENDS)}")
    errors = []
    for name in ([prefer] if prefer else BACKENDS):
        try:
            if name == "ai_edge_litert":
                from ai_edge_litert.interpreter import Interpreter, load_delegate
            elif name == "tflite_runtime":
                from tflite_runtime.interpreter import Interpreter, load_delegate
            else:
                # DESIGN's last resort, tried only when neither runtime above is installed: edge/ never
                # needs TensorFlow, and with ai-edge-litert present this line is never reached
                tf = importlib.import_module("tensorflow")
                Interpreter, load_delegate = tf.lite.Interpreter, tf.lite.experimental.load_delegate
        except Exception as exc:  # ImportError, or a wheel broken against this numpy
            errors.append(f"{name}: {type(exc).__name__}")
            continue
        return Interpreter, load_delegate, name
    raise AuricleError(f"no TFLite runtime could be imported ({'; '.join(errors)}); install one: "
                       "`pip install ai-edge-litert`")


def load_edgetpu_delegate(load_delegate: LoadDelegate) -> object:
    """The Edge TPU delegate through the backend's ``load_delegate``; a missing runtime is a one-line fix."""
    lib = _EDGETPU_LIB.get(platform.system(), "libedgetpu.so.1")
    try:
        # load it with ctypes first: a failed load_delegate leaves a half-built Delegate whose __del__
        # prints a stray traceback at exit
        import ctypes
        ctypes.CDLL(lib)
        return load_delegate(lib)
    except (ValueError, OSError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())[:160]
        raise AuricleError(f"--coral: the Edge TPU runtime {lib} could not be loaded ({detail}); install it "
                           "(`sudo apt install libedgetpu1-std` from the Coral apt repository) and plug in the "
                           "Coral device, or run without --coral") from None


def make_interpreter(model_path: str | os.PathLike[str], *, num_threads: int | None = None,
                     edgetpu: bool = False, backend: str | None = None) -> tuple[TFLiteInterpreter, str]:
    """A ready interpreter (tensors allocated) and the name of the backend that made it."""
    Interpreter, load_delegate, name = import_backend(backend)
    if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
        raise AuricleError(f"--threads {num_threads!r} must be a whole number >= 1")
    kwargs: dict[str, object] = {"model_path": str(model_path)}
    if num_threads is not None:
        kwargs["num_threads"] = num_threads
    if edgetpu:
        kwargs["experimental_delegates"] = [load_edgetpu_delegate(load_delegate)]
    with captured_c_stderr() as captured:
        try:
            interpreter = Interpreter(**kwargs)
            interpreter.allocate_tensors()
            error = None
        except (ValueError, RuntimeError) as exc:
            error = exc
    if error is not None:
        logged = " ".join(captured().split())
        detail = " ".join(f"{error} {logged}".split())[:300]
        raise BundleError(f"cannot load model {model_path} with {name} ({detail}); rebuild the bundle")
    return interpreter, name + (" + edgetpu" if edgetpu else "")
