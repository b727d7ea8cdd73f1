"""The bundle's ``manifest.json`` and the files beside its models (labels, the C array, the run's report),
with paths relative to the repository root and the commands that regenerate what was left out."""
from __future__ import annotations

import math
import os
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from converters import c_array
from converters.config import Clips, Conversion, Files, QuantizeConfig
from converters.console import MB, mb
from edge.bundle import LABELS, MODEL_FILES, SCHEMA_VERSION, repo_root
from edge.fileio import sha256_bytes, write_bytes_atomic, write_text_atomic
from edge.features import model_input_shape
from edge.interpreter import make_interpreter
from edge.adapters import input_details, output_details
from edge.splits import SPLITS
from training.run_folder import REPORT_FILES, RunFolder

COMMAND: list[str] = []   # the CLI command line, recorded by main() (None in the manifest when called in-process)


def write_other_files(ctx: Conversion, blobs: dict[str, bytes], paths: dict[str, Path], model: Any) -> Files:
    """Labels, the C array and the run's report into the temp bundle; files over their size limits are left out
    (listed under ``regenerable_files`` with the command that writes them)."""
    regenerable: dict[str, Any] = {}
    if len(blobs["float32"]) > ctx.cfg.float_max_mb * MB:
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
    backbone = _write_backbone(ctx, model) if ctx.cfg.backbone else None
    return Files(regenerable=regenerable, c_array=c_info, report_files=copied, backbone=backbone)


#: the float Keras network a bundle made with --backbone carries, for training.train --init-from
BACKBONE_FILE = "backbone.keras"


def _write_backbone(ctx: Conversion, model: Any) -> dict[str, Any]:
    """The run's Keras network as the conversion loaded it (uncompiled: no optimizer state, the weights are all
    --init-from needs), and the manifest's ``backbone`` entry."""
    from training.config import TrainConfig

    model.save(ctx.tmp / BACKBONE_FILE)
    tc = TrainConfig.from_dict(ctx.run.train_config)
    ctx.emit(f"{BACKBONE_FILE}: the float network for --init-from "
             f"({mb((ctx.tmp / BACKBONE_FILE).stat().st_size)})")
    return {"file": BACKBONE_FILE, "network": tc.network, "width": tc.resolved_width(),
            "use": f"python -m training.train --init-from {portable(ctx.out)} ... (new classifier, same frontend)"}


def _quantize_command(cfg: QuantizeConfig) -> list[str]:
    """The command line that repeats this conversion, from the repository root."""
    cmd = ["python", "converters/quantize.py", "--run", portable(cfg.run), "--out", portable(cfg.out),
           "--io", cfg.io, "--representative", str(cfg.representative), "--seed", str(cfg.seed)]
    return cmd + (["--data", portable(cfg.data)] if cfg.data else []) + (["--force"] if cfg.force else [])


def _left_out_float(ctx: Conversion, blob: bytes) -> dict[str, Any]:
    import tensorflow as tf  # loaded already by the conversion; here for its version

    size, limit = len(blob), ctx.cfg.float_max_mb
    ctx.emit(f"model_float32.tflite ({mb(size)}) exceeds --float-max-mb {limit:g}: not written; the manifest "
             "lists it under regenerable_files")
    inp, outp = _io_specs_bytes(blob, ctx.tmp)
    return {"sha256": sha256_bytes(blob), "bytes": size,
            "why": f"larger than --float-max-mb {limit:g} (kept out of git); it was used for verification",
            "regenerate": shell_join([*_quantize_command(ctx.cfg), "--float-max-mb",
                                      str(math.ceil(size / MB) + 1)]),
            "note": f"the sha256 is that of TensorFlow {tf.__version__}'s output",
            "model": {"kind": "float32", "input": inp, "output": outp}}


def _write_c_array(ctx: Conversion, int8: bytes) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``model_data.h`` always, ``model_data.cc`` up to ``--c-array-max-mb``: the manifest's ``c_array`` entry,
    and the ``regenerable_files`` entry of a left-out source (else None)."""
    # the same note as `python converters/c_array.py model_int8.tflite` writes, so the regenerate command
    # below reproduces these exact bytes
    head, src = c_array.c_sources(int8, name=c_array.DEFAULT_NAME, note=c_array.note_for(MODEL_FILES["int8"]))
    info = {"header": c_array.HEADER, "source": c_array.SOURCE, "array": c_array.DEFAULT_NAME,
            "length_symbol": f"{c_array.DEFAULT_NAME}_len", "bytes": len(int8), "alignment": c_array.ALIGNMENT,
            "of": MODEL_FILES["int8"]}
    out = portable(ctx.out)
    command = shell_join(["python", "converters/c_array.py", f"{out}/{MODEL_FILES['int8']}", "--out", out])
    if not ctx.cfg.c_array:
        return {**info, "written": False, "why": "C arrays are written on request (--c-array)",
                "regenerate": command}, None
    write_text_atomic(ctx.tmp / c_array.HEADER, head)
    data = src.encode("ascii")
    limit = ctx.cfg.c_array_max_mb
    if len(data) <= limit * MB:
        write_text_atomic(ctx.tmp / c_array.SOURCE, src)
        return {**info, "written": True}, None
    ctx.emit(f"model_data.cc ({mb(len(data))}) exceeds --c-array-max-mb {limit:g}: not written; regenerate it "
             "with converters/c_array.py (listed under regenerable_files)")
    return {**info, "written": False}, {
        "sha256": sha256_bytes(data), "bytes": len(data), "why": f"larger than --c-array-max-mb {limit:g}",
        "regenerate": command}


def model_entries(ctx: Conversion, blobs: dict[str, bytes], paths: dict[str, Path],
                  files: Files) -> dict[str, Any]:
    """The manifest's ``models``: file, input and output spec of every kind the bundle holds."""
    models: dict[str, Any] = {}
    for kind in ("int8", "float32", *ctx.cfg.also):
        if kind in models or not paths[kind].is_file():
            continue
        inp, outp = io_specs(paths[kind])
        models[kind] = {"file": MODEL_FILES[kind], "input": inp, "output": outp}
    if (ctx.tmp / MODEL_FILES["edgetpu"]).is_file():
        models["edgetpu"] = dict(models["int8"], file=MODEL_FILES["edgetpu"])
    return models


def build_manifest(ctx: Conversion, model: Any, shape: tuple[int, ...], clips: Clips, *, models: dict[str, Any],
                   hashes: dict[str, str], verification: dict[str, Any], tpu: dict[str, Any],
              files: Files) -> dict[str, Any]:
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
        "training": {**training_entry(ctx.run), "report_files": files.report_files},
        "verification": verification,
        "edgetpu": tpu,
        "c_array": files.c_array,
        **({"backbone": files.backbone} if files.backbone else {}),
        "conversion": {
            "config": {**cfg.to_dict(), **{k: portable(getattr(cfg, k)) if getattr(cfg, k) else None
                                           for k in ("run", "out", "data")}},
            "resolved": {"run": portable(ctx.run.path), "out": portable(ctx.out),
                         "data": portable(ctx.run.data_root), "threads": verification["threads"],
                         "input_shape": [1, *shape]},
            "command": COMMAND[-1] if COMMAND else None,
            "representative": {"clips": len(clips.representative), "split": "train",
                               "per_class": clips.per_class(labels),
                               "stratified": "round-robin over classes, seeded shuffle within each"},
            "frontend": "edge.features: fit_to_clip -> log_mel -> to_model_input (as training)",
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "seconds": ctx.timings.seconds,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    }


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


def training_entry(run: RunFolder) -> dict[str, Any]:
    rep = run.report
    test = rep.get("test_metrics") or {}
    counts = {s: sum(1 for r in run.rows if r.split == s) for s in SPLITS}
    recorded = run.train_config.get("data")   # as training was given it, relative to where it ran
    data = str(recorded) if recorded and not os.path.isabs(str(recorded)) else portable(recorded or run.data_root)
    return {
        "run": run.path.name,
        "run_path": portable(run.path),
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


def _spec(detail: dict[str, Any]) -> dict[str, Any]:
    scale, zero_point = detail["quantization"]
    return {"shape": [int(s) for s in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name,
            "scale": float(scale), "zero_point": int(zero_point)}


def io_specs(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    interp, _ = make_interpreter(path, num_threads=1)
    return _spec(input_details(interp)), _spec(output_details(interp))


def _io_specs_bytes(blob: bytes, folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    fd, name = tempfile.mkstemp(prefix=".spec-", suffix=".tflite", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        return io_specs(Path(name))
    finally:
        os.unlink(name)


def portable(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the repository root (posix): what the manifest records, so a bundle carries no path
    of the machine that built it, and its commands run from the repository root."""
    try:
        return Path(os.path.relpath(Path(path).resolve(), repo_root())).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(path).name


def _portable_values(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with every absolute path (a value, or an item of a list value) made :func:`portable`."""
    def one(v: Any) -> Any:
        return portable(v) if isinstance(v, str) and os.path.isabs(v) else v
    return {k: [one(x) for x in v] if isinstance(v, list) else one(v) for k, v in config.items()}


def portable_args(args: Sequence[str]) -> list[str]:
    """Command-line arguments with absolute paths (``/x`` or ``--opt=/x``) made :func:`portable`."""
    out = []
    for a in args:
        opt, eq, value = a.partition("=") if a.startswith("--") else ("", "", a)
        out.append(f"{opt}{eq}{portable(value)}" if os.path.isabs(value) else a)
    return out


def shell_join(parts: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts)
