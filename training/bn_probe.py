"""Measure a run folder's batch-norm health: ``python -m training.bn_probe RUN``.

For the run's ``model.keras`` (best epoch) and ``checkpoint.keras`` (last epoch): accuracy on the train and
validation splits in inference mode, in training mode (batch statistics) and in inference mode after
re-estimating the statistics over train windows (:mod:`training.bn_check`), the share of the commonest
prediction, and the drift that re-estimation repaired. The run's data folder is read again.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from edge.errors import AuricleError, run_cli
from edge.features import FeatureConfig
from training import data as dataio
from training.bn_check import mode_accuracies, recalibrate, recalibration_windows
from training.featureset import FeatureSet, model_inputs
from training.train import build_featureset


def _run_featureset(run: Path) -> FeatureSet:
    cfg = json.loads((run / "train_config.json").read_text())
    naming = dataio.Naming(**cfg["naming"]) if cfg.get("naming") else None
    fs, _ = build_featureset(cfg["data"], cfg["profile"], clip_seconds=cfg.get("clip_seconds"), naming=naming,
                             progress=False)
    fs.config = FeatureConfig.from_json((run / "feature_config.json").read_text())
    return fs


def _measure(model: Any, fs: FeatureSet) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split in ("train", "val"):
        idx = fs.indices(split)
        out[split] = mode_accuracies(model, model_inputs(fs, idx), fs.y[idx])
    out["drift"] = recalibrate(model, recalibration_windows(fs))
    for split in ("train", "val"):
        idx = fs.indices(split)
        out[split]["recalibrated"] = mode_accuracies(model, model_inputs(fs, idx), fs.y[idx])["inference"]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import keras

    p = argparse.ArgumentParser(prog="python -m training.bn_probe",
                                description="Inference-mode vs training-mode accuracy of a run's models on its "
                                            "train and validation splits, before and after re-estimating the "
                                            "batch-norm statistics (the run's data folder is read again).")
    p.add_argument("run", help="a run folder of training.train")
    args = p.parse_args(argv)
    run = Path(args.run)
    if not (run / "train_config.json").is_file():
        raise AuricleError(f"{run} is not a run folder (no train_config.json); pass the --out of training.train")
    fs = _run_featureset(run)
    for name in ("model.keras", "checkpoint.keras"):
        if (run / name).is_file():
            model = keras.saving.load_model(run / name, safe_mode=True)
            print(name, json.dumps(_measure(model, fs)), flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
