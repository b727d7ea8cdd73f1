"""Edge TPU readiness: check a ``.tflite`` model the way ``edgetpu_compiler`` will judge it, and run the
compiler when it is installed.

The compiler is x86-64 Linux only and is not on these machines (docs/DESIGN.md, "Runtime
backends"), so the rules are checked here, from the flatbuffer (:mod:`converters.inspect_model`):

1. every tensor is 8-bit (int8/uint8). Allowed besides: int32 *constant* operands -- the bias of
   CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / TRANSPOSE_CONV (normal for int8 models: an int8 x int8
   product accumulates in int32) and shape / axis / padding operands (RESHAPE, MEAN, PAD ...). A float32
   graph input is allowed only when it feeds QUANTIZE ops, a float32 graph output only when a trailing
   DEQUANTIZE produces it (those run on the CPU);
2. every op is in Coral's supported-operations table, :data:`SUPPORTED_OPS`, and meets the limitation
   checked for it (no fused activation on pools/concatenation, MEAN over x/y only, SOFTMAX on a 1-D
   tensor of <= 16,000 elements, equal x/y dilation);
3. shapes are static (no -1 in any shape signature; batch 1) and activation tensors with more than three
   dimensions have size > 1 only in the three innermost ones.

The compiler maps ops in graph order and stops at the first one it cannot map: everything after it runs
on the CPU. The report marks where that happens.

Source of the op table: Coral, "TensorFlow models on the Edge TPU", section "Supported operations",
https://coral.ai/docs/edgetpu/models-intro/#supported-operations (Edge TPU compiler 16, runtime 14).
DEQUANTIZE is not in that table (https://github.com/google-coral/edgetpu/issues/659): it runs on the CPU.

CLI::

    python converters/edgetpu.py MODEL.tflite|BUNDLE_DIR            # op table; exit 1 when not ready
    python converters/edgetpu.py BUNDLE_DIR --compile                # run edgetpu_compiler, add the model
    python converters/edgetpu.py BUNDLE_DIR --add model_edgetpu.tflite  # register a model compiled elsewhere
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Sequence

from converters.inspect_model import ModelInfo, read_model
from edge.bundle import MANIFEST, MODEL_FILES, load_bundle
from edge.errors import AuricleError, run_cli
from edge.fileio import sha256_file, write_bytes_atomic, write_json_atomic

__all__ = ["SUPPORTED_OPS", "OPS_SOURCE", "EdgeTpuReport", "OpRow", "check_edgetpu", "format_report",
           "find_compiler", "compile_model", "compile_command", "add_compiled_model", "main"]

OPS_SOURCE = "https://coral.ai/docs/edgetpu/models-intro/#supported-operations"
COMPILER = "edgetpu_compiler"
INSTALL_COMPILER = (
    "curl https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add - && "
    "echo 'deb https://packages.cloud.google.com/apt coral-edgetpu-stable main' | "
    "sudo tee /etc/apt/sources.list.d/coral-edgetpu.list && sudo apt-get update && "
    "sudo apt-get install edgetpu-compiler")

#: TFLite builtin name -> Coral's name and known limitation (empty: none listed).
SUPPORTED_OPS: dict[str, str] = {
    "ADD": "Add",
    "AVERAGE_POOL_2D": "AveragePool2d: no fused activation function",
    "CONCATENATION": "Concatenation: no fused activation function; a constant input must be all zeroes "
                     "and the only other input",
    "CONV_2D": "Conv2d: same dilation in x and y",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2d: same dilation in x and y",
    "EXPAND_DIMS": "ExpandDims",
    "FULLY_CONNECTED": "FullyConnected: default weights format only; output tensor one-dimensional",
    "L2_NORMALIZATION": "L2Normalization",
    "LOGISTIC": "Logistic",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "LSTM: unidirectional only",
    "MAXIMUM": "Maximum",
    "MAX_POOL_2D": "MaxPool2d: no fused activation function",
    "MEAN": "Mean: reduction along x and/or y only",
    "MINIMUM": "Minimum",
    "MUL": "Mul",
    "PACK": "Pack: not in the batch dimension",
    "PAD": "Pad: padding along x and/or y only",
    "PRELU": "PReLU: alpha must be constant",
    "QUANTIZE": "Quantize",
    "REDUCE_MAX": "ReduceMax: not in the batch dimension",
    "REDUCE_MIN": "ReduceMin: not in the batch dimension",
    "RELU": "ReLU",
    "RELU6": "ReLU6",
    "RELU_N1_TO_1": "ReLUN1To1",
    "RESHAPE": "Reshape: some reshapes of large tensors may not map",
    "RESIZE_BILINEAR": "ResizeBilinear: 3-D input/output; may stay on the CPU to avoid precision loss",
    "RESIZE_NEAREST_NEIGHBOR": "ResizeNearestNeighbor: 3-D input/output; may stay on the CPU",
    "RSQRT": "Rsqrt",
    "SLICE": "Slice",
    "SOFTMAX": "Softmax: 1-D input tensor of at most 16,000 elements",
    "SPACE_TO_DEPTH": "SpaceToDepth",
    "SPLIT": "Split: not in the batch dimension",
    "SQUEEZE": "Squeeze: only leading 1s (no relayout)",
    "STRIDED_SLICE": "StridedSlice: all strides 1, no ellipsis/new-axis masks",
    "SUB": "Sub",
    "SUM": "Sum: not in the batch dimension",
    "SQUARED_DIFFERENCE": "SquaredDifference",
    "TANH": "Tanh",
    "TRANSPOSE": "Transpose",
    "TRANSPOSE_CONV": "TransposeConv",
}

_EIGHT_BIT = ("int8", "uint8")
_NO_FUSED_ACTIVATION = ("AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION")
_SOFTMAX_MAX = 16000


@dataclasses.dataclass(frozen=True)
class OpRow:
    index: int
    op: str
    maps: bool
    note: str = ""                 # why it does not map, or the limitation that applies

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"index": self.index, "op": self.op, "maps": self.maps}
        if self.note:
            d["note"] = self.note
        return d


@dataclasses.dataclass(frozen=True)
class EdgeTpuReport:
    ready: bool
    rows: tuple[OpRow, ...]
    problems: tuple[str, ...]      # every reason it is not ready (empty when ready)
    notes: tuple[str, ...]         # allowed exceptions worth knowing (int32 biases, CPU tail ops)
    first_cpu_op: int | None       # index of the first op the compiler would leave on the CPU

    def op_summary(self) -> list[dict[str, Any]]:
        """One entry per op type, in first-seen order: op, count, maps."""
        seen: dict[str, dict[str, Any]] = {}
        for r in self.rows:
            e = seen.setdefault(r.op, {"op": r.op, "count": 0, "maps": True})
            e["count"] += 1
            e["maps"] = e["maps"] and r.maps
            if not r.maps and r.note and "note" not in e:
                e["note"] = r.note
        return list(seen.values())

    def to_dict(self) -> dict[str, Any]:
        return {"ready": self.ready, "source": OPS_SOURCE, "ops": self.op_summary(),
                "per_op": [[r.index, r.op, r.maps] for r in self.rows],
                "first_cpu_op": self.first_cpu_op, "problems": list(self.problems), "notes": list(self.notes)}


def _dims(t: Any) -> tuple[int, ...]:
    return t.shape_signature if t.shape_signature is not None else t.shape


def _op_problem(info: ModelInfo, op: Any) -> str:
    """Why this op (in Coral's table) still cannot map; empty when it can."""
    t = info.tensors
    name, opts = op.name, op.options
    if name in _NO_FUSED_ACTIVATION and opts.get("fused_activation", "NONE") != "NONE":
        return f"fused activation {opts['fused_activation']} is not supported on {name}"
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D") and "dilation" in opts:
        dh, dw = opts["dilation"]
        if dh != dw:
            return f"dilation {dh}x{dw} differs between y and x"
    if name == "FULLY_CONNECTED" and opts.get("weights_format", 0) != 0:
        return "only the default fully-connected weights format is supported"
    if name == "SOFTMAX" and op.inputs:
        dims = [d for d in _dims(t[op.inputs[0]]) if d > 1]  # -1 (dynamic) is reported on its own
        n = 1
        for d in dims:
            n *= max(d, 1)
        if len(dims) > 1:
            return f"input {list(_dims(t[op.inputs[0]]))} is not 1-D"
        if n > _SOFTMAX_MAX:
            return f"{n} elements exceed the {_SOFTMAX_MAX} supported"
    if name == "MEAN" and len(op.inputs) > 1:
        rank = len(_dims(t[op.inputs[0]]))
        axes = info.int32_values.get(op.inputs[1])
        if axes is None:
            return "reduction axes are not a constant"
        norm = sorted({a % rank for a in axes}) if rank else list(axes)
        if rank != 4 or not set(norm) <= {1, 2}:
            return f"reduction over axes {list(axes)} of a {rank}-D tensor; only x and/or y are supported"
    return ""


class _Graph:
    """Who makes and who reads each tensor of a model."""

    def __init__(self, info: ModelInfo) -> None:
        self.info = info
        self.consumers: dict[int, list[Any]] = {}
        self.producer: dict[int, Any] = {}
        for op in info.ops:
            for i in op.inputs:
                if i >= 0:
                    self.consumers.setdefault(i, []).append(op)
            for o in op.outputs:
                self.producer[o] = op


def _why_op_does_not_map(info: ModelInfo, op: Any) -> str:
    """Why ``op`` stays on the CPU (not in the table, a limitation, float or computed int32 tensors); empty when
    it maps."""
    t = info.tensors
    if op.name not in SUPPORTED_OPS:
        return f"{op.name} is not in the Edge TPU's supported operations"
    why = _op_problem(info, op)
    if why:
        return why
    float_ts = [t[i] for i in (*op.inputs, *op.outputs) if i >= 0 and t[i].dtype not in (*_EIGHT_BIT, "int32")]
    allowed_float = (op.name == "QUANTIZE" and all(x.index in info.inputs for x in float_ts)
                     and all(t[o].dtype in _EIGHT_BIT for o in op.outputs))
    if float_ts and not allowed_float:
        return f"{op.name} computes in {'/'.join(sorted({x.dtype for x in float_ts}))}, not 8-bit"
    if any(i >= 0 and t[i].dtype == "int32" and not t[i].constant for i in (*op.inputs, *op.outputs)):
        return f"{op.name} works on computed int32 tensors (shape arithmetic of a dynamic graph)"
    return ""


def _op_rows(info: ModelInfo) -> list[OpRow]:
    rows = []
    for op in info.ops:
        why = _why_op_does_not_map(info, op)
        rows.append(OpRow(index=op.index, op=op.name, maps=not why, note=why))
    return rows


def _cpu_tail(info: ModelInfo) -> set[int]:
    """Trailing DEQUANTIZE ops that produce graph outputs: the normal float-output tail (CPU, not an error)."""
    tail: set[int] = set()
    for op in reversed(info.ops):
        if op.name == "DEQUANTIZE" and all(o in info.outputs for o in op.outputs):
            tail.add(op.index)
        else:
            break
    return tail


def _op_findings(rows: Sequence[OpRow], tail: set[int]) -> tuple[list[str], list[str]]:
    """(problems, notes) of the op rows: ops that do not map, grouped by op and reason; the CPU tail noted."""
    notes = [f"op {r.index} DEQUANTIZE produces a float output; it runs on the CPU after the Edge TPU part "
             "(use --io int8/uint8 to drop it)" for r in rows if r.index in tail]
    grouped: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        if not r.maps and r.index not in tail:
            grouped.setdefault((r.op, r.note), []).append(r.index)
    problems = []
    for (name, note), idx in grouped.items():
        where = ", ".join(str(i) for i in idx[:6]) + (f" ... ({len(idx)} in all)" if len(idx) > 6 else "")
        problems.append(f"{name} (op{'s' if len(idx) > 1 else ''} {where}): {note}")
    return problems, notes


def _tensor_findings(graph: _Graph, tail: set[int]) -> tuple[list[str], list[str]]:
    """(problems, notes) of the tensors: 8-bit apart from constant int32 operands and the allowed float I/O."""
    info, consumers, producer = graph.info, graph.consumers, graph.producer
    notes: list[str] = []
    int32_params = 0
    bad: dict[str, list[str]] = {}
    for x in info.tensors:
        made_by = producer.get(x.index)
        users = consumers.get(x.index, [])
        if x.dtype in _EIGHT_BIT:
            continue
        if x.dtype == "int32":
            int32_params += x.constant  # a computed int32 tensor is reported through the op that computes it
            continue
        if x.dtype == "float32" and x.index in info.inputs and users and all(c.name == "QUANTIZE" for c in users):
            notes.append(f"float32 input {x.name!r} is quantized by a QUANTIZE op on the CPU")
            continue
        if x.dtype == "float32" and x.index in info.outputs and made_by is not None and made_by.index in tail:
            continue
        where = (f"output of op {made_by.index} {made_by.name}" if made_by is not None
                 else f"{'constant ' if x.constant else ''}input of op {users[0].index} {users[0].name}" if users
                 else "unused")
        bad.setdefault(x.dtype, []).append(f"{x.name!r} ({where})")
    problems = [f"{len(names)} {dtype} tensor(s), not int8/uint8: {', '.join(names[:2])}"
                f"{f' and {len(names) - 2} more' if len(names) > 2 else ''}" for dtype, names in bad.items()]
    if int32_params:
        notes.append(f"{int32_params} int32 constant tensors (biases, shape/axis operands) -- normal for int8 "
                     "models and accepted by the compiler")
    return problems, notes


def _shape_problems(info: ModelInfo) -> list[str]:
    """Static shapes, batch 1, at most three non-trivial dimensions in activations."""
    t = info.tensors
    problems = []
    dynamic = [x for x in t if x.dynamic]
    if dynamic:
        ex = dynamic[0]
        problems.append(f"{len(dynamic)} tensors have dynamic shapes (e.g. {ex.name!r} {list(_dims(ex))}); "
                        "convert with a fixed batch size of 1")
    for i in info.inputs:
        dims = _dims(t[i])
        if dims and dims[0] != 1:
            problems.append(f"input {t[i].name!r} has batch dimension {dims[0]}; the Edge TPU needs 1")
    for x in t:
        dims = _dims(x)
        if not x.constant and len(dims) > 3 and any(d > 1 for d in dims[:-3]):
            problems.append(f"tensor {x.name!r} {list(dims)}: more than 3 dimensions larger than 1")
            break
    return problems


def check_edgetpu(model: str | os.PathLike[str] | bytes | ModelInfo) -> EdgeTpuReport:
    """Check the rules in the module docstring. Never raises for an unready model: see ``report.ready``."""
    info = model if isinstance(model, ModelInfo) else read_model(model)
    problems: list[str] = []
    if info.subgraphs != 1:
        problems.append(f"the model has {info.subgraphs} subgraphs; the Edge TPU compiler needs exactly one")
    rows = _op_rows(info)
    tail = _cpu_tail(info)
    op_problems, notes = _op_findings(rows, tail)
    tensor_problems, tensor_notes = _tensor_findings(_Graph(info), tail)
    problems += op_problems + tensor_problems + _shape_problems(info)
    notes += tensor_notes
    first_cpu = next((r.index for r in rows if not r.maps), None)
    if first_cpu is not None and first_cpu not in tail:
        after = len(rows) - first_cpu - 1
        if after:
            notes.append(f"the compiler stops mapping at op {first_cpu} ({rows[first_cpu].op}); the {after} op(s) "
                         "after it would run on the CPU")
    return EdgeTpuReport(ready=not problems, rows=tuple(rows), problems=tuple(problems), notes=tuple(notes),
                         first_cpu_op=first_cpu)


def format_report(report: EdgeTpuReport, *, per_op: bool = False) -> str:
    """The op table (grouped by op type, or one row per op) and the verdict."""
    lines = []
    if per_op:
        lines.append(f"  {'#':>4}  {'op':<24} {'Edge TPU':<9} note")
        for r in report.rows:
            lines.append(f"  {r.index:>4}  {r.op:<24} {'yes' if r.maps else 'NO':<9} {r.note}")
    else:
        lines.append(f"  {'op':<24} {'count':>5}  {'Edge TPU':<9} note")
        for e in report.op_summary():
            note = e.get("note") or ("" if not e["maps"] else "")
            lines.append(f"  {e['op']:<24} {e['count']:>5}  {'yes' if e['maps'] else 'NO':<9} {note}")
    for n in report.notes:
        lines.append(f"  note: {n}")
    if report.ready:
        lines.append(f"  Edge TPU ready: every op maps, every tensor is 8-bit (int32 constants aside), shapes "
                     f"are static (op table: {OPS_SOURCE})")
    else:
        lines.append(f"  NOT Edge TPU ready ({len(report.problems)} problem(s)):")
        for p in report.problems[:12]:
            lines.append(f"    - {p}")
        if len(report.problems) > 12:
            lines.append(f"    - ... and {len(report.problems) - 12} more")
    return "\n".join(lines)


# -- the compiler ------------------------------------------------------------------------------------------
def find_compiler() -> str | None:
    return shutil.which(COMPILER)


def compile_command(model: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None, *,
                    script: str | os.PathLike[str] | None = None) -> str:
    """The exact command to run on an x86-64 Debian/Ubuntu machine (then register the result with --add).

    ``script`` is how the command names this file; default: relative to the current folder when inside it."""
    model = Path(model)
    out_dir = Path(out_dir) if out_dir is not None else model.parent
    compiled = out_dir / f"{model.stem}_edgetpu.tflite"
    if script is None:
        here = Path(__file__).resolve()
        try:
            script = here.relative_to(Path.cwd())
        except ValueError:
            script = here
    return (f"{COMPILER} -s -o {shlex.quote(str(out_dir))} {shlex.quote(str(model))} && "
            f"python {shlex.quote(str(script))} {shlex.quote(str(out_dir))} --add {shlex.quote(str(compiled))}")


def compile_model(model: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                  timeout: float = 600.0) -> tuple[Path, str]:
    """Run ``edgetpu_compiler -s`` on ``model``; returns (compiled model path, compiler log)."""
    exe = find_compiler()
    if exe is None:
        raise AuricleError(f"{COMPILER} is not on PATH (it exists for x86-64 Debian/Ubuntu only); install it "
                           f"with: {INSTALL_COMPILER}")
    model, out_dir = Path(model), Path(out_dir)
    try:
        proc = subprocess.run([exe, "-s", "-o", str(out_dir), str(model)], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise AuricleError(f"{COMPILER} did not finish within {timeout:.0f} s on {model}") from None
    log = (proc.stdout or "") + (proc.stderr or "")
    compiled = out_dir / f"{model.stem}_edgetpu.tflite"
    if proc.returncode != 0 or not compiled.is_file():
        tail = " ".join(log.split())[-300:]
        raise AuricleError(f"{COMPILER} failed on {model} (exit {proc.returncode}): {tail}")
    return compiled, log


def add_compiled_model(bundle: str | os.PathLike[str], compiled: str | os.PathLike[str]) -> Path:
    """Copy a compiled model into a bundle as ``model_edgetpu.tflite`` and register it in the manifest
    (``models.edgetpu`` with the int8 model's I/O, and its sha256 in ``files``)."""
    b = load_bundle(bundle)
    compiled = Path(compiled)
    if not compiled.is_file():
        raise AuricleError(f"compiled model {compiled} does not exist; run {COMPILER} first")
    info = read_model(compiled)
    if not any(op.name.startswith("CUSTOM:edgetpu") for op in info.ops):
        raise AuricleError(f"{compiled} holds no edgetpu-custom-op; it is not an {COMPILER} output")
    if "int8" not in b.models:
        raise AuricleError(f"bundle {b.path} has no int8 model to take the input/output spec from")
    dest = b.path / MODEL_FILES["edgetpu"]
    if compiled.resolve() != dest.resolve():
        write_bytes_atomic(dest, compiled.read_bytes())
    manifest = json.loads((b.path / MANIFEST).read_text(encoding="utf-8"))
    manifest["models"]["edgetpu"] = dict(manifest["models"]["int8"], file=dest.name)
    manifest["files"][dest.name] = sha256_file(dest)
    manifest.setdefault("edgetpu", {})["compiled"] = True
    write_json_atomic(b.path / MANIFEST, manifest)
    return dest


def _model_of(target: Path) -> Path:
    """The model to check: the file itself, or a bundle folder's int8 model."""
    if target.is_dir():
        b = load_bundle(target, verify=False)
        return b.model_path("int8")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python converters/edgetpu.py",
                                description="Check a .tflite model (or a bundle's int8 model) for the Coral Edge "
                                            "TPU: ops, 8-bit tensors, static shapes. Exit 1 when not ready.")
    p.add_argument("target", help=".tflite file or bundle folder")
    p.add_argument("--per-op", action="store_true", help="one row per op instead of per op type")
    p.add_argument("--compile", action="store_true",
                   help=f"run {COMPILER} (when on PATH) and add model_edgetpu.tflite to the bundle")
    p.add_argument("--add", metavar="COMPILED", help="register a model compiled elsewhere in the bundle")
    args = p.parse_args(argv)
    target = Path(args.target)
    if args.add:
        if not target.is_dir():
            raise AuricleError(f"--add needs a bundle folder, not {target}")
        dest = add_compiled_model(target, args.add)
        print(f"added {dest} to {target / 'manifest.json'}")
        return 0
    model = _model_of(target)
    report = check_edgetpu(model)
    print(f"Edge TPU check of {model}:")
    print(format_report(report, per_op=args.per_op))
    if not report.ready:
        return 1
    if args.compile:
        if not target.is_dir():
            raise AuricleError("--compile needs a bundle folder")
        with tempfile.TemporaryDirectory(prefix=".edgetpu-", dir=target.parent) as tmp:
            compiled, _ = compile_model(model, tmp)
            dest = add_compiled_model(target, compiled)
        print(f"compiled and added {dest}")
    elif find_compiler() is None:
        print(f"{COMPILER} is not on PATH; on an x86-64 Debian/Ubuntu machine run:\n  {compile_command(model)}")
    return 0


if __name__ == "__main__":
    run_cli(main)
