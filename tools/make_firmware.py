"""Regenerate every shipped bundle in firmware_assets/ from the data: ``make firmware``.

Two routes, both deterministic given --seed (cuDNN/XLA kernels aside):

* **CPU** (default): train each network here with ``python -m training.train`` (each spec below is the recipe
  its shipped bundle records), convert it with ``python -m converters.quantize`` and tune the detector on the
  validation audio. This is how the keyword edge bundles ship: they learn to reject from negative audio, which
  only this route reads. The 224x224 seed-profile models take hours on a 2-core CPU (use --only to pick).
* **GPU host** (how the seed-profile bundles were made; features only, so no negative audio):
    1. ``python -m tools.make_firmware --gpu-features .gpu --only kws_mobilenet_seed kws_resnet18_seed``
    2. on the GPU host: ``JOBS="seed_mn seed_rn" bash tools/gpu_train.sh``  (Keras on JAX/PyTorch; weights to $OUT)
    3. ``python -m tools.make_firmware --import-gpu DIR --only kws_mobilenet_seed kws_resnet18_seed``

    python -m tools.make_firmware --only kws_mobilenet_edge      # two 70-epoch runs + averaging: ~3 h here
    python -m tools.make_firmware --only backbone_edge           # all 35 words, 40 epochs: ~15 min here
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
    train_args: tuple[str, ...] = ()   # the recipe beyond network/profile/epochs, as training.train options
    negatives: bool = False   # trains on --negatives (the negatives folder + ESC-10 folds 1-3); CPU route only
    noise_negatives: bool = False   # the negatives' noise/ beds are taught as _silence_ (--noise-negatives)
    ensemble_seeds: tuple[int, ...] = ()   # one run per seed, averaged into one model (training.ensemble)
    float_in_git: bool = True   # False: the float32 model is listed under regenerable_files, not written
    seed: int | None = None   # the spec's own training seed (None: --seed)
    every_word: bool = False   # trains on all 35 words (runs/sc35, tools.sc_words), not the 12 keyword classes
    backbone: bool = False   # a starting point for --init-from: quantized with --backbone, not tuned as a detector


# Each spec is the recipe its shipped bundle records in manifest.json (tests/test_make_firmware.py checks it).
# The shipped keyword bundles predate the size-dependent batch and momentum defaults and the batch-norm
# re-estimation before validation: their specs pin what they were trained with, so a rebuild is that recipe.
AS_SHIPPED = ("--batch-size", "64", "--bn-momentum", "0.99", "--no-precise-bn")
SHIPPED = (
    Spec("kws_mobilenet_edge", "mobilenet", "edge", 70,
         train_args=("--dropout", "0.3", "--weight-decay", "0.05", *AS_SHIPPED),
         negatives=True, noise_negatives=True, ensemble_seeds=(1, 2)),   # the default
    Spec("kws_resnet18_edge", "resnet18", "edge", 50,
         train_args=("--dropout", "0.3", "--weight-decay", "0.01", *AS_SHIPPED),
         negatives=True, float_in_git=False),   # its 13 MB float32 would break the 20 MB budget of model files
    Spec("backbone_edge", "mobilenet", "edge", 40,
         train_args=("--width", "0.25", "--no-class-weights", "--patience", "15", "--batch-size", "64"),
         negatives=True, noise_negatives=True, float_in_git=False, seed=1, every_word=True, backbone=True),
    Spec("kws_mobilenet_seed", "mobilenet", "seed", 40, recalibrate_bn=1024),
    Spec("kws_resnet18_seed", "resnet18", "seed", 40, recalibrate_bn=1024),
)
ESC_TRAIN_FOLDS = Path("runs/esc10_folds123")   # ESC-10 folds 1-3: negatives to learn from (4-5 stay unseen)
EVERY_WORD = Path("runs/sc35")   # the Speech Commands words one folder each (tools.sc_words), for the backbone


def _run(cmd: list[str]) -> None:
    print("+ " + " ".join(cmd), flush=True)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    r = subprocess.run(cmd, cwd=ROOT, env=env)
    if r.returncode:
        raise AuricleError(f"step failed with exit {r.returncode}: {' '.join(cmd)}")


def negative_sources(negatives: Path) -> list[str]:
    return [str(negatives), str(ESC_TRAIN_FOLDS)]


def spec_data(spec: Spec, data: Path) -> Path:
    """The labelled data a spec trains and is verified on: the keyword folder, or every word's links."""
    return EVERY_WORD if spec.every_word else data


def train_command(spec: Spec, data: Path, seed: int, negatives: Path, out: str | None = None) -> list[str]:
    """The ``training.train`` command line that rebuilds one shipped bundle's run (or one ensemble member's,
    into ``out``) on this machine."""
    data = spec_data(spec, data)
    seed = seed if spec.seed is None else spec.seed
    cmd = [sys.executable, "-m", "training.train", "--data", str(data), "--network", spec.network,
           "--profile", spec.profile, "--epochs", str(spec.epochs), "--patience", "0", "--seed", str(seed),
           *spec.train_args, "--quiet", "--out", out or f"runs/{spec.name}"]
    if spec.negatives:
        noise = ["--noise-negatives", str(negatives / "noise")] if spec.noise_negatives else []
        cmd[-3:-3] = ["--negatives", *negative_sources(negatives), *noise]
    return cmd


def build_commands(spec: Spec, data: Path, seed: int, negatives: Path) -> list[list[str]]:
    """What rebuilds ``runs/NAME``: one training run, or one per ensemble seed and the averaging step."""
    if not spec.ensemble_seeds:
        return [train_command(spec, data, seed, negatives)]
    outs = [f"runs/{spec.name}_s{s}" for s in spec.ensemble_seeds]
    return [*(train_command(spec, data, s, negatives, out) for s, out in zip(spec.ensemble_seeds, outs)),
            [sys.executable, "-m", "training.ensemble", "--runs", *outs, "--out", f"runs/{spec.name}"]]


def prepare_negatives(esc10: Path) -> None:
    """Link ESC-10 folds 1-3 into runs/esc10_folds123 once (train and validation negatives, never test)."""
    if not (ROOT / ESC_TRAIN_FOLDS).is_dir():
        _run([sys.executable, "-m", "tools.esc10_folds", "--data", str(esc10), "--folds", "1,2,3",
              "--out", str(ESC_TRAIN_FOLDS)])


def prepare_every_word(data: Path) -> None:
    """Link the Speech Commands words one folder each into runs/sc35 once (the backbone's data)."""
    if not (ROOT / EVERY_WORD).is_dir():
        _run([sys.executable, "-m", "tools.sc_words", "--data", str(data), "--out", str(EVERY_WORD)])


def quantize(spec: Spec, data: Path) -> None:
    _run([sys.executable, "-m", "converters.quantize", "--run", f"runs/{spec.name}", "--out",
          f"firmware_assets/{spec.name}", "--data", str(spec_data(spec, data)), "--force",
          *(() if spec.float_in_git else ("--float-max-mb", "0")), *(("--backbone",) if spec.backbone else ())])


def tune(spec: Spec, data: Path, negatives: Path) -> None:
    """The detector's operating point for at most 1 false accept per hour of the validation negatives, on a
    4-minute stream of validation speakers (edge bundles only: the seed ones stream too slowly on a CPU)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        _run([sys.executable, "-m", "tools.make_sample_stream", "--data", str(data), "--split", "val", "--duration",
              "240", "--seed", "11", "--out", tmp, "--name", "val_stream"])
        _run([sys.executable, "-m", "tools.tune_detector", "--bundle", f"firmware_assets/{spec.name}",
              "--target-fa", "1", "--negatives", *negative_sources(negatives), "--stream", f"{tmp}/val_stream.wav",
              "--force"])


def _gpu_features(out: Path, data: Path, specs: list[Spec]) -> None:
    import numpy as np

    from training.train import build_featureset
    out.mkdir(parents=True, exist_ok=True)
    for profile in sorted({s.profile for s in specs}):
        fs, _ = build_featureset(data, profile)
        fs.save(out / f"{profile}_full.npz")   # all splits, for --import-gpu
        keep = fs.split != "test"                          # the GPU host never sees the test split
        np.savez_compressed(out / f"{profile}.npz", padded=fs.padded[keep].astype("float16"),
                            y=fs.y[keep].astype(np.int16), split=fs.split[keep].astype("U5"),
                            paths=fs.paths[keep].astype(str), label_names=np.asarray(fs.label_names, dtype=str),
                            config=np.asarray(fs.config.to_json()), pad_frames=np.asarray(fs.pad_frames))
        print(f"wrote {out / f'{profile}.npz'}")


def _import_command(spec: Spec, weights: Path, gpu_features: Path | None, data: Path) -> list[str]:
    feats = (gpu_features or Path(".gpu")) / f"{spec.profile}_full.npz"
    cmd = [sys.executable, "-m", "training.weights_io", "import", "--weights", str(weights),
           "--prefix", spec.name, "--features", str(feats), "--out", f"runs/{spec.name}", "--data", str(data)]
    if spec.recalibrate_bn:
        cmd += ["--recalibrate-bn", str(spec.recalibrate_bn)]
    return cmd


def _specs(only: list[str] | None, gpu: bool) -> list[Spec]:
    specs = [s for s in SHIPPED if only is None or s.name in only]
    if only and len(specs) != len(only):
        raise AuricleError(f"--only names unknown bundles; choose from {[s.name for s in SHIPPED]}")
    carried = [s.name for s in specs if s.negatives]
    if gpu and carried:
        raise AuricleError(f"{', '.join(carried)} train(s) on negative audio, which the GPU route does not carry; "
                           f"rebuild them here without --gpu-features/--import-gpu, or pick others with --only")
    return specs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data/speech_commands_v0.02_test"))
    p.add_argument("--negatives", type=Path, default=Path("../shared/data/negatives"),
                   help="audio without keywords that the rejecting bundles learn from (split by file; test unread)")
    p.add_argument("--esc10", type=Path, default=Path("../shared/data/esc10"),
                   help="ESC-10 (folds 1-3 become more negatives for the rejecting bundles)")
    p.add_argument("--only", nargs="*", default=None, help="bundle names to rebuild (default: all shipped)")
    p.add_argument("--seed", type=int, default=0, help="training seed (an ensemble spec trains its own seeds)")
    p.add_argument("--gpu-features", type=Path, metavar="DIR", help="write DIR/{edge,seed}.npz for a GPU host")
    p.add_argument("--import-gpu", type=Path, metavar="DIR", help="import weights a GPU host exported, then quantize")
    p.add_argument("--skip-quantize", action="store_true")
    a = p.parse_args(argv)
    if not a.data.is_dir():
        raise AuricleError(f"data folder {a.data} does not exist; pass --data (Speech Commands test set)")
    specs = _specs(a.only, gpu=bool(a.gpu_features or a.import_gpu))
    if a.gpu_features and not a.import_gpu:
        _gpu_features(a.gpu_features, a.data, specs)
        return 0
    if any(s.negatives for s in specs):
        for folder, flag in ((a.negatives, "--negatives"), (a.esc10, "--esc10")):
            if not folder.is_dir():
                raise AuricleError(f"{flag} folder {folder} does not exist; pass {flag} (see ../shared/data/README.md)")
        prepare_negatives(a.esc10)
    if any(s.every_word for s in specs):
        prepare_every_word(a.data)
    for spec in specs:
        for cmd in ([_import_command(spec, a.import_gpu, a.gpu_features, a.data)] if a.import_gpu
                    else build_commands(spec, a.data, a.seed, a.negatives)):
            _run(cmd)
        if not a.skip_quantize:
            quantize(spec, a.data)
            if spec.profile == "edge" and not spec.backbone:
                tune(spec, a.data, a.negatives)
    return 0


if __name__ == "__main__":
    run_cli(main)
