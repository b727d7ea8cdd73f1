"""Read a ``.tflite`` flatbuffer: its operators, tensors, dtypes, shapes and quantisation.

This reads the model file itself (with the ``tflite`` flatbuffer package), not an interpreter: once the
default XNNPACK delegate has taken over, an interpreter reports most of the graph as one ``DELEGATE`` node,
so it cannot list a model's own ops (see docs/DESIGN.md, "Runtime backends").

``python converters/inspect_model.py MODEL.tflite`` prints the inputs, outputs and one line per operator.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge.errors import AuricleError, run_cli

__all__ = ["TensorInfo", "OpInfo", "ModelInfo", "read_model", "format_ops", "main"]

_TFLITE_IDENTIFIER = b"TFL3"


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    dtype: str                                  # numpy-style lower case: int8, uint8, int32, float32 ...
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...] | None     # -1 marks a dynamic dimension; None: same as shape
    constant: bool                              # has data in the flatbuffer (weights, bias, shape operands)
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()

    @property
    def dynamic(self) -> bool:
        dims = self.shape_signature if self.shape_signature is not None else self.shape
        return any(int(d) < 0 for d in dims)

    def describe(self) -> str:
        dims = self.shape_signature if self.shape_signature is not None else self.shape
        q = f" q({self.scale[0]:.4g},{self.zero_point[0]})" if self.scale else ""
        return f"{self.dtype}[{','.join(str(int(d)) for d in dims)}]{q}"


@dataclasses.dataclass(frozen=True)
class OpInfo:
    index: int
    name: str                                   # builtin name (CONV_2D) or CUSTOM:<code>
    inputs: tuple[int, ...]                     # tensor indices; -1 = optional input left out
    outputs: tuple[int, ...]
    options: dict[str, Any]                     # the few builtin options the Edge TPU check needs


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    version: int
    subgraphs: int
    tensors: tuple[TensorInfo, ...]             # of subgraph 0
    ops: tuple[OpInfo, ...]                     # of subgraph 0, in execution order
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    size: int                                   # bytes of the flatbuffer
    int32_values: dict[int, tuple[int, ...]] = dataclasses.field(default_factory=dict)  # small int32 constants

    def tensor(self, index: int) -> TensorInfo:
        return self.tensors[index]

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.name] = counts.get(op.name, 0) + 1
        return counts


def _enum_names(enum_cls: Any) -> dict[int, str]:
    return {int(getattr(enum_cls, k)): k for k in dir(enum_cls) if not k.startswith("_") and k.isupper()}


def _load_bytes(model: str | os.PathLike[str] | bytes) -> bytes:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    path = Path(model)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise AuricleError(f"model file {path} does not exist; pass a .tflite file") from None
    except IsADirectoryError:
        raise AuricleError(f"{path} is a folder; pass the .tflite file inside it") from None
    except OSError as exc:
        raise AuricleError(f"cannot read {path}: {exc.strerror or exc}") from None


def _options(op: Any, name: str, tflite: Any) -> dict[str, Any]:
    """The builtin options the Edge TPU rules look at (fused activation, dilation)."""
    table = op.BuiltinOptions()
    if table is None:
        return {}
    kinds = {
        "CONV_2D": tflite.Conv2DOptions, "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
        "AVERAGE_POOL_2D": tflite.Pool2DOptions, "MAX_POOL_2D": tflite.Pool2DOptions,
        "CONCATENATION": tflite.ConcatenationOptions, "FULLY_CONNECTED": tflite.FullyConnectedOptions,
        "ADD": tflite.AddOptions, "MUL": tflite.MulOptions, "SUB": tflite.SubOptions,
    }
    cls = kinds.get(name)
    if cls is None:
        return {}
    opt = cls()
    opt.Init(table.Bytes, table.Pos)
    out: dict[str, Any] = {}
    if hasattr(opt, "FusedActivationFunction"):
        act = int(opt.FusedActivationFunction())
        out["fused_activation"] = _enum_names(tflite.ActivationFunctionType).get(act, str(act))
    if hasattr(opt, "DilationHFactor"):
        out["dilation"] = (int(opt.DilationHFactor()), int(opt.DilationWFactor()))
    if hasattr(opt, "WeightsFormat"):
        out["weights_format"] = int(opt.WeightsFormat())
    return out


def read_model(model: str | os.PathLike[str] | bytes) -> ModelInfo:
    """Parse a ``.tflite`` file (path or bytes). Raises :class:`AuricleError` when it is not one."""
    import tflite  # the flatbuffer schema package (pip install tflite); conversion-side only

    buf = _load_bytes(model)
    if len(buf) < 8 or buf[4:8] != _TFLITE_IDENTIFIER:
        where = f"{model}" if not isinstance(model, (bytes, bytearray, memoryview)) else "model bytes"
        raise AuricleError(f"{where} is not a TFLite flatbuffer (no 'TFL3' identifier); pass a .tflite file")
    try:
        m = tflite.Model.GetRootAsModel(buf, 0)
        if m.SubgraphsLength() < 1:
            raise AuricleError("model has no subgraph; re-convert it")
        sg = m.Subgraphs(0)
        type_names = _enum_names(tflite.TensorType)
        op_names = _enum_names(tflite.BuiltinOperator)
        tensors: list[TensorInfo] = []
        values: dict[int, tuple[int, ...]] = {}
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            b = m.Buffers(t.Buffer()) if t.Buffer() < m.BuffersLength() else None
            has_data = b is not None and (b.DataLength() > 0 or int(b.Size() or 0) > 0)
            dtype = type_names.get(int(t.Type()), str(t.Type())).lower()
            shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            sig = tuple(int(d) for d in t.ShapeSignatureAsNumpy()) if t.ShapeSignatureLength() else None
            q = t.Quantization()
            scale = tuple(float(s) for s in q.ScaleAsNumpy()) if q is not None and q.ScaleLength() else ()
            zp = tuple(int(z) for z in q.ZeroPointAsNumpy()) if q is not None and q.ZeroPointLength() else ()
            name = t.Name().decode("utf-8", "replace") if t.Name() else f"tensor_{i}"
            tensors.append(TensorInfo(index=i, name=name, dtype=dtype, shape=shape, shape_signature=sig,
                                      constant=bool(has_data), scale=scale, zero_point=zp))
            if has_data and dtype == "int32" and b is not None and 0 < b.DataLength() <= 64:
                values[i] = tuple(int(v) for v in b.DataAsNumpy().view(np.int32))  # axes, shapes
        ops: list[OpInfo] = []
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            code = m.OperatorCodes(op.OpcodeIndex())
            builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
            name = op_names.get(builtin, f"BUILTIN_{builtin}")
            if name == "CUSTOM":
                custom = code.CustomCode()
                name = f"CUSTOM:{custom.decode('utf-8', 'replace') if custom else '?'}"
            ops.append(OpInfo(index=i, name=name,
                              inputs=tuple(int(x) for x in op.InputsAsNumpy()) if op.InputsLength() else (),
                              outputs=tuple(int(x) for x in op.OutputsAsNumpy()) if op.OutputsLength() else (),
                              options=_options(op, name, tflite)))
        info = ModelInfo(version=int(m.Version()), subgraphs=int(m.SubgraphsLength()), tensors=tuple(tensors),
                         ops=tuple(ops),
                         inputs=tuple(int(x) for x in sg.InputsAsNumpy()) if sg.InputsLength() else (),
                         outputs=tuple(int(x) for x in sg.OutputsAsNumpy()) if sg.OutputsLength() else (),
                         size=len(buf), int32_values=values)
    except AuricleError:
        raise
    except Exception as exc:  # a damaged flatbuffer raises anything from struct.error to IndexError
        raise AuricleError(f"cannot parse the TFLite flatbuffer ({type(exc).__name__}: {exc}); the file is "
                           "damaged -- re-convert it") from None
    return info


def format_ops(info: ModelInfo) -> str:
    """One line per operator: index, name, inputs -> outputs (dtype[shape] and quantisation)."""
    lines = []
    for op in info.ops:
        ins = ", ".join("-" if t < 0 else info.tensors[t].describe() for t in op.inputs)
        outs = ", ".join(info.tensors[t].describe() for t in op.outputs)
        lines.append(f"{op.index:4d}  {op.name:<22} {ins} -> {outs}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python converters/inspect_model.py",
                                description="List a .tflite model's inputs, outputs and operators (read from "
                                            "the flatbuffer, not from an interpreter).")
    p.add_argument("model", help=".tflite file")
    args = p.parse_args(argv)
    info = read_model(args.model)
    print(f"{args.model}: {info.size} bytes, schema version {info.version}, {info.subgraphs} subgraph(s), "
          f"{len(info.ops)} ops, {len(info.tensors)} tensors")
    for label, idx in (("input", info.inputs), ("output", info.outputs)):
        for t in idx:
            print(f"  {label:<6} {info.tensors[t].name}: {info.tensors[t].describe()}")
    print(format_ops(info))
    counts = ", ".join(f"{k} x{v}" for k, v in sorted(info.op_counts().items()))
    print(f"op counts: {counts}")
    return 0


if __name__ == "__main__":
    run_cli(main)
