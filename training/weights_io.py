"""Move a trained model between hosts as plain arrays (no pickle, no optimizer state).

A GPU host (JAX backend) can only send back files of limited size, and a ResNet-18 ``.keras`` with its
optimizer state is ~150 MB. ``export_weights`` writes the model's weights as numbered ``.npz`` chunks of at
most ``max_mb`` plus ``meta.json`` (train config, feature config with its normalisation statistics, labels,
history, summary). ``import_run`` rebuilds the same network with :mod:`training.models`, loads the arrays,
and writes a normal run folder (model.keras, report, plots) -- evaluated here, on this host's backend.

    python -m training.weights_io import --weights DIR --features feats.npz --out runs/NAME
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge.cliutil import setup_logging
from edge.errors import AuricleError, run_cli
from edge.features import FeatureConfig, model_input_shape
from edge.fileio import atomic_writer, write_json_atomic, write_text_atomic
from training.config import TrainConfig
from training.featureset import FeatureSet
from training.report import write_report
from training.run_folder import (HISTORY, MODEL, SPLIT, TRAIN_CONFIG, TRAIN_SUMMARY, save_model_atomic,
                                 write_feature_config, write_labels, write_split)

log = logging.getLogger("training.weights_io")   # not __name__: run as a script, that is "__main__"


def export_weights(model: Any, out_dir: str | Path, *, prefix: str, meta: dict[str, Any], max_mb: float = 16.0,
                   dtype: str = "float32") -> list[Path]:
    """Weights as ``PREFIX-weights-N.npz`` chunks; chunk 0 also holds the meta JSON (fewest files)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = [np.asarray(w).astype(dtype) if np.asarray(w).dtype.kind == "f" else np.asarray(w)
               for w in model.get_weights()]
    chunks: list[list[int]] = [[]]
    size = 0
    for i, w in enumerate(weights):
        if chunks[-1] and size + w.nbytes > max_mb * 1e6:
            chunks.append([])
            size = 0
        chunks[-1].append(i)
        size += w.nbytes
    names = [f"{prefix}-weights-{c}.npz" for c in range(len(chunks))]
    meta = {**meta, "n_weights": len(weights), "chunks": names, "export_dtype": dtype}
    files = []
    for c, ids in enumerate(chunks):
        path = out_dir / names[c]
        extra = {"__meta__": np.asarray(json.dumps(meta))} if c == 0 else {}
        with atomic_writer(path, binary=True) as fh:
            np.savez(fh, **{f"w{i:04d}": weights[i] for i in ids}, **extra)
        files.append(path)
    return files


def load_weights(weights_dir: str | Path, prefix: str) -> tuple[list[np.ndarray], dict[str, Any]]:
    weights_dir = Path(weights_dir)
    first = weights_dir / f"{prefix}-weights-0.npz"
    if not first.is_file():
        raise AuricleError(f"{first} is missing; pass the folder the GPU run exported with --export-weights")
    with np.load(first, allow_pickle=False) as z:
        meta = json.loads(str(z["__meta__"]))
    arrays: dict[int, np.ndarray] = {}
    for name in meta["chunks"]:
        if not (weights_dir / name).is_file():
            raise AuricleError(f"{weights_dir / name} is missing; copy every chunk of the export")
        with np.load(weights_dir / name, allow_pickle=False) as z:
            for key in z.files:
                if key != "__meta__":
                    arrays[int(key[1:])] = z[key].astype(np.float32) if z[key].dtype.kind == "f" else z[key]
    if sorted(arrays) != list(range(int(meta["n_weights"]))):
        raise AuricleError(f"weights in {weights_dir} are incomplete ({len(arrays)} of {meta['n_weights']}); "
                           "copy every chunk")
    return [arrays[i] for i in range(len(arrays))], meta


def import_run(*, weights_dir: str | Path, prefix: str, features: str | Path, out: str | Path,
               data: str | Path | None = None, recalibrate_bn: int = 0) -> dict[str, Any]:
    """Rebuild the network, load exported weights, and write a complete run folder in ``out``."""
    from training.models import build_model, recalibrate_batchnorm  # imports keras: lazy, like keras

    weights, meta = load_weights(weights_dir, prefix)
    cfg = TrainConfig.from_dict(meta["train_config"])
    fs = FeatureSet.load(features)
    fs.config = FeatureConfig.from_dict(meta["feature_config"])
    if fs.label_names != list(meta["labels"]):
        raise AuricleError("the feature set's labels differ from the exported model's; use the same features")
    model = build_model(cfg.network, model_input_shape(fs.config), len(fs.label_names), profile=fs.config.profile,
                        width=cfg.resolved_width(), dropout=cfg.dropout, bn_momentum=cfg.bn_momentum or 0.99)
    model.set_weights(weights)
    summary = dict(meta["summary"])
    if recalibrate_bn:
        batches = recalibrate_batchnorm(model, fs, clips=recalibrate_bn)
        summary["bn_recalibrated"] = f"moving statistics re-estimated over {recalibrate_bn} training clips " \
                                     f"({batches} batches) after import"
        log.info(summary["bn_recalibrated"])
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_model_atomic(model, out / MODEL)
    _write_imported_run(out, fs, cfg, meta, summary, data=data, features=features)
    return write_report(out, fs, cfg, summary, skipped=meta.get("skipped", []), model=model)


def _write_imported_run(out: Path, fs: FeatureSet, cfg: TrainConfig, meta: dict[str, Any], summary: dict[str, Any],
                        *, data: str | Path | None, features: str | Path) -> None:
    """The run folder's files besides the model and the report, as training on this host would write them."""
    write_feature_config(out, fs.config)
    write_labels(out, fs.label_names)
    write_text_atomic(out / HISTORY, meta["history_csv"])
    write_json_atomic(out / TRAIN_CONFIG, {**cfg.to_dict(), "data": str(data) if data else None,
                                           "features": str(features), "trained_on": meta["summary"].get("device")})
    write_json_atomic(out / TRAIN_SUMMARY, summary)
    write_split(out / SPLIT, fs.split_rows())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.weights_io",
                                description="Turn weights exported by a GPU run (training.train --export-weights) "
                                            "into a run folder evaluated on this host.")
    sub = p.add_subparsers(dest="cmd", required=True)
    imp = sub.add_parser("import", help="rebuild + load weights + write the run folder and report")
    imp.add_argument("--weights", required=True, help="folder with PREFIX-weights-N.npz (meta inside chunk 0)")
    imp.add_argument("--prefix", required=True, help="the run name used at export")
    imp.add_argument("--features", required=True, help="the same feature .npz the GPU run trained on")
    imp.add_argument("--out", required=True)
    imp.add_argument("--recalibrate-bn", type=int, default=0, metavar="CLIPS",
                     help="re-estimate batch-norm statistics over CLIPS training clips (repairs short runs)")
    imp.add_argument("--data", help="the dataset folder the features came from (recorded for the converter)")
    args = p.parse_args(argv)
    setup_logging(logging.INFO)
    report = import_run(weights_dir=args.weights, prefix=args.prefix, features=args.features, out=args.out,
                        data=args.data, recalibrate_bn=args.recalibrate_bn)
    print(f"{args.out}: test accuracy {report['accuracy'].get('test', float('nan')):.4f}")
    return 0


if __name__ == "__main__":
    run_cli(main)
