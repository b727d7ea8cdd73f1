"""``--init-from RUN``: start from a trained network's learnt features instead of random weights.

The source is a run folder of :mod:`training.train` (its ``model.keras``, ``feature_config.json`` and
``train_config.json``), or a bundle that carries its float network (``backbone.keras``, written by
``converters/quantize.py --backbone``, listed with its sha256 in the manifest), by folder or by the name of a
shipped bundle (``--init-from backbone_edge``). A bundle of TFLite models only is refused: their batch norms
are folded into the convolutions and the int8 weights are quantised, so they cannot give the Keras weights back
honestly.

The new network is built for the user's labels and window length with the source's network and width; every
layer but the classifier takes the source's weights (by layer name; convolution kernels do not depend on the
window length). The frontend must be the source's (sample rate, FFT, hop, mel bands, frequency range, profile),
and the features are normalised with the source's statistics, the ones its features were learnt on. Training
then runs a frozen phase (only the new classifier learns; batch norms keep their statistics) and then all
layers (see :func:`frozen_epochs`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

from edge.errors import AuricleError
from edge.features import FeatureConfig
from edge.fileio import sha256_file
from edge.shipped import find_bundle
from training.config import TrainConfig
from training.run_folder import FEATURE_CONFIG, MODEL, TRAIN_CONFIG

log = logging.getLogger(__name__)

__all__ = ["InitSource", "read_source", "check_frontend", "adopt_normalisation", "frozen_epochs",
           "transfer_weights", "set_backbone_trainable", "with_source_network", "init_backbone", "HEAD"]

#: the classifier layer every network of :mod:`training.models` ends with (the one that is not transferred)
HEAD = "predictions"
#: frontend fields that must match the source's (the window length may differ; normalisation is adopted)
FRONTEND_FIELDS = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "fmin", "fmax", "power", "amin",
                   "ref_power", "profile", "image_size", "image_channels", "seed_dynamic_range_db")


class InitSource(NamedTuple):
    path: Path
    network: str
    width: float
    feature_config: FeatureConfig
    model_file: Path


def read_source(path: str | Path) -> InitSource:
    """The run folder or backbone bundle ``path`` names, checked: one line for a missing path, a bundle without
    its network, or a folder that is not a finished run."""
    p = Path(path)
    if not p.exists():
        shipped = find_bundle(str(path)) if p.name == str(path) else None
        if shipped is None:
            raise AuricleError(f"--init-from {path}: no such folder; pass a run folder of training.train (its "
                               "--out) or a bundle with a backbone (e.g. backbone_edge)")
        p = shipped
    if (p / "manifest.json").is_file() and not (p / MODEL).is_file():
        return _bundle_source(p)
    missing = [n for n in (MODEL, FEATURE_CONFIG, TRAIN_CONFIG) if not (p / n).is_file()]
    if missing:
        raise AuricleError(f"--init-from {path} is not a finished run folder (no {', '.join(missing)}); pass the "
                           "--out of a completed training.train run")
    try:
        cfg = TrainConfig.from_dict(json.loads((p / TRAIN_CONFIG).read_text()))
        fc = FeatureConfig.from_json((p / FEATURE_CONFIG).read_text())
    except (ValueError, TypeError) as exc:
        raise AuricleError(f"--init-from {path}: cannot read its configuration ({exc}); retrain that run") from None
    return InitSource(p, cfg.network, cfg.resolved_width(), fc, p / MODEL)


def _bundle_source(bundle: Path) -> InitSource:
    """A bundle made with ``--backbone``: its network file, checked against the manifest's sha256."""
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
        entry = manifest.get("backbone")
        fc = FeatureConfig.from_dict(manifest["feature_config"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise AuricleError(f"--init-from {bundle}: cannot read its manifest ({exc}); convert the run again") from None
    if not isinstance(entry, dict):
        raise AuricleError(f"--init-from {bundle} is a bundle of TFLite models only, not the Keras weights to "
                           f"fine-tune; pass the run folder it was converted from{_bundle_run(bundle)}, or a "
                           "bundle made with converters/quantize.py --backbone (e.g. backbone_edge)")
    try:
        file, network, width = bundle / str(entry["file"]), str(entry["network"]), float(entry["width"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AuricleError(f"--init-from {bundle}: its manifest's backbone entry is incomplete ({exc}); convert "
                           "the run again with --backbone") from None
    expected = (manifest.get("files") or {}).get(file.name)
    if not file.is_file() or file.parent != bundle or expected != sha256_file(file):
        raise AuricleError(f"--init-from {bundle}: its {file.name} is missing or does not match the manifest's "
                           "sha256; restore the bundle (git checkout) or convert the run again with --backbone")
    return InitSource(bundle, network, width, fc, file)


def _bundle_run(bundle: Path) -> str:
    try:
        run = json.loads((bundle / "manifest.json").read_text()).get("training", {}).get("run_path")
    except (OSError, ValueError, AttributeError):
        run = None
    return f" ({run})" if run else ""


def check_frontend(source: InitSource, config: FeatureConfig) -> None:
    """One line naming the first frontend setting that differs from the source's."""
    mine, theirs = config.to_dict(), source.feature_config.to_dict()
    for name in FRONTEND_FIELDS:
        if mine.get(name) != theirs.get(name):
            raise AuricleError(f"--init-from {source.path}: its frontend has {name} = {theirs.get(name)!r}, this run "
                               f"{mine.get(name)!r}; use the same frontend options as that run (only "
                               "--clip-seconds may differ)")


def adopt_normalisation(source: InitSource, config: FeatureConfig) -> FeatureConfig:
    """``config`` with the source's normalisation statistics (its features were learnt on them)."""
    fc = source.feature_config
    return dataclasses.replace(config, norm_mean=fc.norm_mean, norm_std=fc.norm_std)


def frozen_epochs(epochs: int) -> int:
    """Epochs of the frozen phase: a fifth of the run, at least 1 and at most 10 (none for a 1-epoch run)."""
    return 0 if epochs < 2 else max(1, min(10, epochs // 5))


def transfer_weights(source: Any, target: Any) -> int:
    """Copy the weights of every layer of ``source`` into the same-named layer of ``target``, the classifier
    excepted. Returns how many layers took weights; a layer whose shapes differ is an error."""
    copied = 0
    for layer in target.layers:
        if layer.name == HEAD or not layer.weights:
            continue
        try:
            src = source.get_layer(layer.name)
        except ValueError:
            raise AuricleError(f"--init-from: the source network has no layer {layer.name!r}; train with its "
                               "--network and --width") from None
        weights = src.get_weights()
        if [w.shape for w in weights] != [tuple(w.shape) for w in layer.weights]:
            raise AuricleError(f"--init-from: layer {layer.name!r} has other shapes in the source network; train "
                               "with its --network and --width")
        layer.set_weights(weights)
        copied += 1
    return copied


def set_backbone_trainable(model: Any, trainable: bool) -> None:
    """Freeze or unfreeze every layer but the classifier (Keras 3: a frozen batch norm runs in inference mode)."""
    for layer in model.layers:
        if layer.name != HEAD:
            layer.trainable = trainable


def with_source_network(config: TrainConfig) -> TrainConfig:
    """With ``--init-from``: the source run's network and width (its weights only fit those)."""
    if not config.init_from:
        return config
    source = read_source(config.init_from)
    if (source.network, source.width) != (config.network, config.resolved_width()):
        log.info(f"--init-from: network {source.network} at width {source.width:g}, as {source.path} was trained")
    return dataclasses.replace(config, network=source.network, width=source.width)


def init_backbone(model: Any, cfg: TrainConfig) -> int:
    """The source run's weights in every layer of ``model`` but the classifier, and the backbone frozen for the
    frozen phase. Returns that phase's epochs (the caller compiles for them)."""
    import keras

    source = keras.saving.load_model(read_source(cfg.init_from).model_file, safe_mode=True)
    n = transfer_weights(source, model)
    k = frozen_epochs(cfg.epochs)
    log.info(f"--init-from {cfg.init_from}: {n} layers of learnt weights, new classifier; {k} frozen epoch(s), "
             "then all layers")
    if k:
        set_backbone_trainable(model, False)
    return k
