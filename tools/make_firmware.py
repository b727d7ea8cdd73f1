"""Regenerate every shipped bundle in firmware_assets/ from the data: ``make firmware``.

Two routes, both deterministic given --seed (cuDNN/XLA kernels aside):

* **CPU** (default): train each network here with ``python -m training.train``, then convert it with
  ``python -m converters.quantize``. Fine for the edge-profile models; the 224x224 seed-profile models take hours
  on a 2-core CPU (use --only to pick).
* **GPU host** (how the shipped bundles were made):
    1. ``python -m tools.make_firmware --gpu-features .gpu``   (train+val features, float16, compressed)
    2. on the GPU host: ``bash tools/gpu_train.sh``            (Keras on JAX/PyTorch; weights to $OUT)
    3. ``python -m tools.make_firmware --import-gpu DIR``      (rebuild, evaluate on test, quantize)

    python -m tools.make_firmware --data ../shared/data/speech_commands_v0.02_test
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from edge.errors import AuricleError, run_cli

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    network: str
    profile: str
    epochs: int
    recalibrate_bn: int = 0   # applied on import from the GPU host (short seed runs)


SHIPPED = (
    Spec("kws_mobilenet_edge", "mobilenet", "edge", 100),      # the default bundle
    Spec("kws_resnet18_edge", "resnet18", "edge", 60),
    Spec("kws_mobilenet_seed", "mobilenet", "seed", 40, recalibrate_bn=1024),
    Spec("kws_resnet18_seed", "resnet18", "seed", 40, recalibrate_bn=1024),
)


def _run(cmd: list[str]) -> None:
    print("+ " + " ".join(cmd), flush=True)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    r = subprocess.run(cmd, cwd=ROOT, env=env)
    if r.returncode:
        raise AuricleError(f"step failed with exit {r.returncode}: {' '.join(cmd)}")


def quantize(spec: Spec, data: Path) -> None:
    _run([sys.executable, "-m", "converters.quantize", "--run", f"runs/{spec.name}", "--out",
          f"firmware_assets/{spec.name}", "--data", str(data)])


def tune(spec: Spec, data: Path) -> None:
    """Detector threshold/smoothing from a 2-minute stream of validation speakers (edge bundles: the seed
    ones stream too slowly on a CPU to sweep the grid)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        _run([sys.executable, "-m", "tools.make_sample_stream", "--data", str(data), "--split", "val", "--duration",
              "120", "--seed", "11", "--out", tmp, "--name", "val_stream"])
        _run([sys.executable, "-m", "tools.tune_detector", "--bundle", f"firmware_assets/{spec.name}", "--stream",
              f"{tmp}/val_stream.wav"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data/speech_commands_v0.02_test"))
    p.add_argument("--only", nargs="*", default=None, help="bundle names to rebuild (default: all shipped)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gpu-features", type=Path, metavar="DIR", help="write DIR/{edge,seed}.npz for a GPU host")
    p.add_argument("--import-gpu", type=Path, metavar="DIR", help="import weights a GPU host exported, then quantize")
    p.add_argument("--skip-quantize", action="store_true")
    a = p.parse_args(argv)
    if not a.data.is_dir():
        raise AuricleError(f"data folder {a.data} does not exist; pass --data (Speech Commands test set)")
    specs = [s for s in SHIPPED if a.only is None or s.name in a.only]
    if a.only and len(specs) != len(a.only):
        raise AuricleError(f"--only names unknown bundles; choose from {[s.name for s in SHIPPED]}")

    if a.gpu_features:
        import numpy as np

        from training.train import build_featureset
        a.gpu_features.mkdir(parents=True, exist_ok=True)
        for profile in sorted({s.profile for s in specs}):
            fs, _ = build_featureset(a.data, profile)
            fs.save(a.gpu_features / f"{profile}_full.npz")   # all splits, for --import-gpu
            keep = fs.split != "test"                          # the GPU host never sees the test split
            np.savez_compressed(a.gpu_features / f"{profile}.npz", padded=fs.padded[keep].astype("float16"),
                                y=fs.y[keep].astype(np.int16), split=fs.split[keep].astype("U5"),
                                paths=fs.paths[keep].astype(str), label_names=np.asarray(fs.label_names, dtype=str),
                                config=np.asarray(fs.config.to_json()), pad_frames=np.asarray(fs.pad_frames))
            print(f"wrote {a.gpu_features / f'{profile}.npz'}")
        return 0

    for spec in specs:
        if a.import_gpu:
            feats = (a.gpu_features or Path(".gpu")) / f"{spec.profile}_full.npz"
            cmd = [sys.executable, "-m", "training.weights_io", "import", "--weights", str(a.import_gpu),
                   "--prefix", spec.name, "--features", str(feats), "--out", f"runs/{spec.name}",
                   "--data", str(a.data)]
            if spec.recalibrate_bn:
                cmd += ["--recalibrate-bn", str(spec.recalibrate_bn)]
            _run(cmd)
        else:
            _run([sys.executable, "-m", "training.train", "--data", str(a.data), "--network", spec.network,
                  "--profile", spec.profile, "--epochs", str(spec.epochs), "--patience", "0", "--seed", str(a.seed),
                  "--quiet", "--out", f"runs/{spec.name}"])
        if not a.skip_quantize:
            quantize(spec, a.data)
            if spec.profile == "edge":
                tune(spec, a.data)
    return 0


if __name__ == "__main__":
    run_cli(main)
