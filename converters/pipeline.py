"""One conversion, step by step (:func:`quantize_run`): load and check the model, the clips, convert, verify,
Edge TPU, gate, write the files and the manifest into the temporary bundle, then install it."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from converters import edgetpu
from converters.bundle_writer import check_target, clean_stale, install, make_temp, previous_detector
from converters.config import Clips, Conversion, QuantizeConfig, Timings, VerificationFailed
from converters.console import Progress
from converters.convert import check_model, convert_model, export_saved_model, load_keras_model, tf_keras
from converters.manifest import build_manifest, model_entries, portable, write_other_files
from converters.verify import (KerasScorer, TFLiteScorer, clip_features, clip_window_features, evaluate,
                               select_representative, verification_lines, verification_summary)
from edge.bundle import MANIFEST, MODEL_FILES
from edge.errors import AuricleError
from edge.features import to_model_input
from edge.fileio import sha256_file, write_bytes_atomic, write_json_atomic
from edge.shipped import refuse_to_replace
from training.run_folder import RunFolder, load_run


def quantize_run(cfg: QuantizeConfig, *, progress: bool = True,
                 report: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Convert, verify and write a bundle as ``cfg`` says (see the module docstring). Returns the manifest.

    Raises :class:`AuricleError` for bad input and :class:`VerificationFailed` when int8 accuracy drops by
    more than ``cfg.max_drop`` percentage points; in both cases no bundle is written and an existing one at
    ``cfg.out`` is left as it was. ``progress``: the ``quantize: ...`` lines on stderr; ``report`` receives the
    human-readable summary lines.
    """
    timings = Timings()
    out_path = Path(cfg.out)
    if out_path.name in ("", ".", ".."):
        raise AuricleError(f"--out {cfg.out!r} must name a bundle folder, e.g. firmware_assets/NAME")
    run_folder = load_run(cfg.run, data=cfg.data)
    _check_splits(run_folder)
    check_target(out_path)
    refuse_to_replace(out_path, force=cfg.force, what="--out")
    previous = previous_detector(out_path, cfg, run_folder)
    clean_stale(out_path, progress)
    tmp = make_temp(out_path)  # fails early (exit 2) when --out is not writable
    ctx = Conversion(cfg=cfg, run=run_folder, out=out_path, tmp=tmp, progress=progress,
                     emit=report or (lambda _line: None), timings=timings, previous_detector=previous)
    try:
        manifest = _convert_into(ctx)
        install(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    ctx.emit(f"bundle written to {out_path} in {timings.elapsed():.1f} s")
    return manifest


def _check_splits(run: RunFolder) -> None:
    if not run.split("train"):
        raise AuricleError(f"{run.path / 'split.csv'} has no 'train' clips; the representative set for "
                           "calibration comes from the training split only, so it would be empty")
    if not run.split("test"):
        raise AuricleError(f"{run.path / 'split.csv'} has no 'test' clips; verification needs the test split")


def _convert_into(ctx: Conversion) -> dict[str, Any]:
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
    files = write_other_files(ctx, blobs, paths, model)
    models = model_entries(ctx, blobs, paths, files)
    hashes = {p.name: sha256_file(p) for p in sorted(ctx.tmp.iterdir()) if p.is_file() and not p.name.startswith(".")}
    ctx.timings.lap("write")
    ctx.timings.seconds["total"] = round(ctx.timings.elapsed(), 2)
    manifest = build_manifest(ctx, model, shape, clips, models=models, hashes=hashes, verification=verification,
                              tpu=tpu, files=files)
    if ctx.previous_detector is not None:
        manifest["detector"] = ctx.previous_detector
        ctx.emit("kept the tuned detector settings of the bundle this replaces (same run, same labels); re-tune "
                 "with python -m tools.tune_detector if the model's scores changed")
    write_json_atomic(ctx.tmp / MANIFEST, manifest)
    return manifest


def _load_checked_model(ctx: Conversion) -> tuple[Any, tuple[int, ...]]:
    ctx.say(f"loading {ctx.run.model_path}")
    tf_keras()
    model = load_keras_model(ctx.run.model_path)
    shape = check_model(model, ctx.run)
    ctx.timings.lap("load_model")
    return model, shape


def _prepare_clips(ctx: Conversion) -> Clips:
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
    return Clips(representative=rep_rows, rep_frames=rep_frames, test_frames=test_frames, y_test=y_test,
                 test_owners=owners)


def _convert_kinds(ctx: Conversion, model: Any, clips: Clips) -> dict[str, bytes]:
    """The model exported at batch size 1, converted to int8, float32 and every ``--also`` kind."""
    cfg, fc = ctx.cfg, ctx.run.config
    work = Path(tempfile.mkdtemp(prefix=".work-", dir=ctx.tmp))
    ctx.say("exporting the model at batch size 1")
    saved = export_saved_model(model, work)
    ctx.timings.lap("export")
    cal = Progress("calibrating", len(clips.representative), ctx.progress)

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


def _write_models(ctx: Conversion, blobs: dict[str, bytes]) -> dict[str, Path]:
    """Every converted model into the temp bundle (a float32 one over the size limit is dropped later)."""
    paths = {kind: ctx.tmp / MODEL_FILES[kind] for kind in blobs}
    for kind, blob in blobs.items():
        write_bytes_atomic(paths[kind], blob)
    return paths


def _verify(ctx: Conversion, model: Any, shape: tuple[int, ...], clips: Clips, blobs: dict[str, bytes],
            paths: dict[str, Path]) -> dict[str, Any]:
    """Keras float and every TFLite kind through the one evaluation on the test split; the summary lines."""
    cfg, fc, labels = ctx.cfg, ctx.run.config, ctx.labels
    threads = cfg.threads or max(1, min(4, os.cpu_count() or 1))
    results = {"keras_float": evaluate(KerasScorer(model), clips.test_frames, clips.y_test, fc, labels,
                                       name="keras float", progress=ctx.progress, owners=clips.test_owners)}
    backend = None
    for kind in ("float32", "int8", *[k for k in cfg.also if k not in ("float32", "int8")]):
        scorer = TFLiteScorer(paths[kind], shape, len(labels), threads)
        backend = scorer.backend
        results[f"tflite_{kind}"] = evaluate(scorer, clips.test_frames, clips.y_test, fc, labels,
                                             name=f"tflite {kind}", progress=ctx.progress, owners=clips.test_owners)
    ctx.timings.lap("evaluate")
    verification = verification_summary(results, clips.y_test, labels, blobs, cfg, backend, threads)
    for line in verification_lines(verification, labels):
        ctx.emit(line)
    return verification


def _edgetpu_step(ctx: Conversion, paths: dict[str, Path]) -> dict[str, Any]:
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
        out = Path(portable(ctx.out))
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
