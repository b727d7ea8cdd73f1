"""Turn a training run into a model bundle: full-integer int8 TFLite, verified against the float model.

    python converters/quantize.py --run runs/my_model --out runs/my_model_bundle

Steps (a thin CLI over :func:`quantize_run`, which takes one :class:`QuantizeConfig`):

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

Where each step lives: :mod:`converters.pipeline` (:func:`quantize_run`, the steps in order),
:mod:`converters.config` (:class:`QuantizeConfig` and what the steps share), :mod:`converters.convert` (Keras ->
TFLite), :mod:`converters.verify` (clips, evaluation, summary), :mod:`converters.edgetpu`,
:mod:`converters.manifest` (manifest, labels, C array, report files), :mod:`converters.bundle_writer` (the
temporary folder and its atomic swap) and :mod:`converters.console` (progress lines); this module is the CLI.

Exit codes: 0 done; 1 int8 accuracy dropped too far (bundle not written); 2 bad input (one line on stderr:
missing/corrupt model, input not matching the feature config, empty representative set, unwritable output,
missing clips ...); 130 interrupted.
"""
from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from typing import Any, Sequence

from converters.config import (DEFAULT_C_ARRAY_MAX_MB, DEFAULT_FLOAT_MAX_MB, DEFAULT_MAX_DROP, DEFAULT_REPRESENTATIVE,
                               IO_TYPES, QuantizeConfig, VerificationFailed)
from converters.manifest import COMMAND, portable_args, shell_join
from converters.pipeline import quantize_run
from edge.errors import fail, run_cli

__all__ = ["QuantizeConfig", "VerificationFailed", "quantize_run", "build_parser", "config_from", "main"]


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
    p.add_argument("--backbone", action="store_true",
                   help="also carry the float Keras network (backbone.keras, no optimizer state), so that "
                        "python -m training.train --init-from BUNDLE can fine-tune from this bundle")
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


def config_from(args: argparse.Namespace) -> QuantizeConfig:
    """The :class:`QuantizeConfig` of parsed options: each field from the option of the same name (``--also``
    split at commas, ``--no-compile`` turned round)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(QuantizeConfig) if hasattr(args, f.name)}
    values["also"] = tuple(k.strip() for k in args.also.split(",") if k.strip())
    values["compile_edgetpu"] = not args.no_compile
    return QuantizeConfig(**values)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    COMMAND.append(shell_join(["python", "converters/quantize.py",
                               *portable_args(sys.argv[1:] if argv is None else list(argv))]))
    try:  # SIGTERM cleans up like Ctrl-C (the temp folder is removed; the old bundle stays)
        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    except ValueError:  # not the main thread
        previous = None
    try:
        quantize_run(config_from(args), progress=not args.quiet)
    except VerificationFailed as exc:
        fail(str(exc), code=1)
    finally:
        COMMAND.pop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    run_cli(main)
