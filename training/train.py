"""Train MobileNet or ResNet-18 on log-mel features: ``python -m training.train --help``.

A thin CLI over :func:`train`, which takes one :class:`training.spec.TrainSpec`. Backend-agnostic Keras 3
(TensorFlow on the CPU, JAX on a GPU host). Writes a run folder (the contract: :mod:`training.run_folder`; the
report: :mod:`training.report`). The loop is :mod:`training.loop`, hard-negative mining :mod:`training.mining`;
both import Keras, so this module imports them inside :func:`train`: ``--help`` or a bad argument should not
cost the seconds Keras takes to import.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge.cliutil import HelpFormatter, add_deprecated_alias, setup_logging
from edge.errors import AuricleError, run_cli
from edge.features import FeatureConfig
from edge.fileio import write_json_atomic
from edge.splits import DEALT_RULE, SHA1_RULE
from training import data as dataio
from training import weights_io
from training.config import NETWORKS, STUDY_TARGETS, Frontend, TrainConfig, frontend_config
from training.distill import Teacher
from training.featureset import FeatureSet, frames_of, pad_frames_for, padded_log_mel
from training.init_from import check_frontend, read_source, with_source_network
from training.mining import NegativeMixer
from training.negatives import NOISE_LABEL, background_label, load_negative_bank
from training.report import write_report
from training.run_folder import HISTORY, MODEL, SPLIT, TRAIN_CONFIG, read_history, write_split
from training.spec import EXPORT_DTYPES, LAYOUTS, TRAIN_SPEC, TrainSpec, spec_defaults

__all__ = ["TrainConfig", "TrainSpec", "NETWORKS", "build_featureset", "read_history", "train", "build_parser",
           "spec_from_args", "main"]

log = logging.getLogger("training.train")   # not __name__: run as a script, that is "__main__"


# -- data ------------------------------------------------------------------------------------
#: whole clips are kept up to this long (a longer one: its centre); evaluation windows cover what is kept
MAX_CLIP_SECONDS = 30.0


def _clip_plan(root: Path, config: FeatureConfig, clip_seconds: float | str | None, layout: str,
               naming: dataio.Naming | None) -> tuple[FeatureConfig, float | None, str | None]:
    """The clip length (``auto``: from the durations, printed with the reason) and how much of each clip to
    keep (``None``: one window holds every clip)."""
    found = dataio.scan(root, layout=layout, naming=naming)
    durations = [dataio.probe_seconds(c.path) for c in found.clips]
    why = None
    if clip_seconds == "auto":
        seconds, why = dataio.auto_clip_seconds(durations)
        config = dataclasses.replace(config, clip_duration=seconds)
        log.info(f"--clip-seconds auto: {seconds:g} s ({why})")
    longest = min(max(durations, default=0.0), MAX_CLIP_SECONDS)
    return config, (longest if longest > config.clip_duration + 1e-9 else None), why


def build_featureset(data: str | Path, profile: str, *, layout: str = "auto", strict: bool = False,
                     cache_dir: str | Path | None = None, progress: bool = True,
                     frontend: Frontend | None = None, clip_seconds: float | str | None = None,
                     naming: dataio.Naming | None = None) -> tuple[FeatureSet, list]:
    """Load a dataset folder and compute padded features of whole clips (up to :data:`MAX_CLIP_SECONDS`)
    with the frontend. Returns (FeatureSet, skipped). ``clip_seconds``: the window length, a number or
    ``"auto"`` (overrides ``frontend.clip_seconds``)."""
    root = Path(data)
    if not root.is_dir():
        raise AuricleError(f"data folder {root} does not exist; pass --data DIR with one folder per class")
    config = frontend_config(profile, frontend)
    if clip_seconds not in (None, "auto"):
        config = dataclasses.replace(config, clip_duration=float(clip_seconds))
    config, keep, _ = _clip_plan(root, config, clip_seconds, layout, naming)
    ds = dataio.load_dataset(root, config, layout=layout, strict=strict, cache_dir=cache_dir, progress=progress,
                             naming=naming, keep_seconds=keep)
    ds.check_trainable()
    pad = pad_frames_for(config)
    padded = padded_log_mel(ds.waveforms, config, pad)
    rel = [os.path.relpath(c.path, root) for c in ds.clips]
    fs = FeatureSet(config=config, label_names=list(ds.labels), padded=padded, y=np.asarray(ds.label_ids),
                    split=np.asarray(ds.splits).astype(str), paths=np.asarray(rel, dtype=str), pad_frames=pad,
                    frames=frames_of(ds.lengths, config), groups=np.asarray([c.group for c in ds.clips], dtype=str),
                    split_rule=ds.discovery.split_rule)
    return fs, [(os.path.relpath(p, root), r) for p, r in ds.skipped]


# -- the core ----------------------------------------------------------------------------------
def _check_config(config: TrainConfig) -> None:
    if config.network not in NETWORKS:
        raise AuricleError(f"--network must be one of {NETWORKS}, got {config.network!r}")
    if config.target_accuracy is not None and not 0 < config.target_accuracy <= 1:
        raise AuricleError(f"--target-accuracy must be in (0, 1], got {config.target_accuracy}")
    if config.epochs < 1 or (config.batch_size is not None and config.batch_size < 1):
        raise AuricleError("--epochs and --batch-size must be >= 1")
    _check_negative_settings(config)
    if not 0 <= config.distill_weight <= 1:
        raise AuricleError(f"--distill-weight must be in [0, 1], got {config.distill_weight}")


def _check_negative_settings(config: TrainConfig) -> None:
    if not 0 < config.negative_fraction <= 4:
        raise AuricleError(f"--negative-fraction must be in (0, 4], got {config.negative_fraction}")
    if not 0 <= config.negative_mix_prob <= 1:
        raise AuricleError(f"--negative-mix-prob must be in [0, 1], got {config.negative_mix_prob}")
    lo, hi = config.negative_snr_db
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise AuricleError(f"--negative-snr needs two finite dB values, low first; got {lo:g} {hi:g}")


def _load_features(data: str | Path | None, features: str | Path | None, profile: str, *, layout: str,
                   strict: bool, cache_dir: str | Path | None, frontend: Frontend | None = None,
                   clip_seconds: float | str | None = None,
                   naming: dataio.Naming | None = None) -> tuple[FeatureSet, list]:
    """A saved feature set (``features``), else one computed from the dataset folder; and the skipped files."""
    if features:
        fs = FeatureSet.load(features)
        if fs.config.profile != profile:
            raise AuricleError(f"features in {features} are for the {fs.config.profile} profile, not "
                               f"{profile}; pass --profile {fs.config.profile}")
        return fs, []
    if data is None:
        raise AuricleError("pass --data DIR (or --features NPZ)")
    return build_featureset(data, profile, layout=layout, strict=strict, cache_dir=cache_dir, frontend=frontend,
                            clip_seconds=clip_seconds, naming=naming)


def _negative_mixer(fs: FeatureSet, config: TrainConfig, negatives: Sequence[str | Path], cache_dir: Any,
                    noise_paths: Sequence[str | Path] = ()) -> NegativeMixer:
    """Load the negatives' train/validation files and the mixer that puts them into batches. Negatives are
    labelled as the data's own background class (``_unknown_``...), else a new ``_background_`` class."""
    noise_index = None
    if noise_paths:
        if NOISE_LABEL not in fs.label_names:
            raise AuricleError(f"--noise-negatives labels speech-free audio as the data's {NOISE_LABEL!r} class, "
                               "which this data set lacks; leave the option out")
        noise_index = fs.label_names.index(NOISE_LABEL)
    bank = load_negative_bank(negatives, fs.config, cache_dir=cache_dir, noise_paths=noise_paths)
    label = background_label(fs.label_names)
    if label not in fs.label_names:
        fs.label_names.append(label)
    log.info(f"negatives are labelled {label!r}")
    return NegativeMixer(bank=bank, background_index=fs.label_names.index(label),
                         fraction=config.negative_fraction, mix_prob=config.negative_mix_prob,
                         snr_db=config.negative_snr_db, noise_index=noise_index)


def _split_rule(fs: FeatureSet, naming: dataio.Naming | None) -> str | None:
    """How the run's split was made, for the report (``None``: the default rule's text)."""
    rule = fs.split_rule
    if naming is not None and naming.group_regex and rule in (None, SHA1_RULE, DEALT_RULE):
        return f"{rule or SHA1_RULE}; group = first group of --group-by {naming.group_regex!r} in the file name"
    return rule


def _naming_dict(naming: dataio.Naming | None) -> dict[str, Any] | None:
    return dataclasses.asdict(naming) if naming is not None else None


def _export(out: Path, to: str | Path, fs: FeatureSet, config: TrainConfig, summary: dict[str, Any],
            report: dict[str, Any], skipped: list, dtype: str) -> None:
    import keras

    best = keras.saving.load_model(out / MODEL, safe_mode=True)
    weights_io.export_weights(best, to, prefix=out.name, dtype=dtype,
                              meta={"train_config": config.to_dict(), "feature_config": fs.config.to_dict(),
                                    "labels": list(fs.label_names), "summary": summary, "skipped": skipped,
                                    "history_csv": (out / HISTORY).read_text(), "accuracy": report["accuracy"]})
    log.info(f"exported weights of {out.name} to {to}")


def _load(spec: TrainSpec, config: TrainConfig) -> tuple[FeatureSet, list]:
    fs, skipped = _load_features(spec.data, spec.features, config.profile, layout=spec.layout, strict=spec.strict,
                                 cache_dir=spec.cache_dir, frontend=spec.frontend, clip_seconds=spec.clip_seconds,
                                 naming=spec.naming)
    if spec.save_features:
        fs.save(spec.save_features)
        log.info(f"saved features to {spec.save_features}")
    return fs, skipped


def _record(out: Path, spec: TrainSpec, config: TrainConfig, fs: FeatureSet, mixer: NegativeMixer | None) -> None:
    """``train_config.json`` (the config and where the data came from) and ``train_spec.json`` (the spec, its
    batch size resolved: ``--config`` repeats the run)."""
    data, features, naming = spec.data, spec.features, spec.naming
    write_json_atomic(out / TRAIN_CONFIG, {**config.to_dict(), "data": str(data) if data else None,
                                           "features": str(features) if features else None,
                                           "negatives": [str(n) for n in spec.negatives or []] or None,
                                           "noise_negatives": [str(n) for n in spec.noise_negatives] or None,
                                           "negative_split": mixer.bank.summary() if mixer else None,
                                           "clip_seconds": spec.clip_seconds, "naming": _naming_dict(naming),
                                           "split_rule": _split_rule(fs, naming)})
    write_json_atomic(out / TRAIN_SPEC, dataclasses.replace(spec, config=config).to_dict())


def train(spec: TrainSpec) -> dict[str, Any]:
    """Everything ``python -m training.train`` does: load, fit, evaluate, write the run folder."""
    _check_config(spec.config)
    config = with_source_network(spec.config)
    if spec.noise_negatives and not spec.negatives:
        raise AuricleError("--noise-negatives names parts of the --negatives; pass --negatives too")
    if spec.out is None:
        raise AuricleError("pass --out DIR, the run folder to write")
    out = Path(spec.out)
    fs, skipped = _load(spec, config)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuricleError(f"cannot create run folder {out}: {exc.strerror}; choose a writable --out") from None
    config = config.with_batch_size(int((fs.split == "train").sum()))
    mixer = (_negative_mixer(fs, config, spec.negatives, spec.cache_dir, spec.noise_negatives)
             if spec.negatives else None)
    _record(out, spec, config, fs, mixer)
    write_split(out / SPLIT, fs.split_rows())
    teacher = Teacher(config.teacher, fs.label_names, fs.config) if config.teacher else None
    from training.loop import fit   # Keras: only now, so bad data, settings or teacher fail in a moment
    from training.mining import mine_and_fine_tune
    summary = fit(fs, config, out, resume=spec.resume, distribute=spec.distribute, verbose=spec.verbose,
                  negatives=mixer, mine=mine_and_fine_tune, teacher=teacher)
    report = write_report(out, fs, config, summary, skipped=skipped, split_rule=_split_rule(fs, spec.naming))
    if spec.export_weights:
        _export(out, spec.export_weights, fs, config, summary, report, skipped, spec.export_dtype)
    if report.get("batch_norm_warning"):
        log.warning(f"warning: {report['batch_norm_warning']}")
    return report


# -- CLI ---------------------------------------------------------------------------------------
def _add_input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="dataset folder: one folder per class, or flat files named LABEL_N.ext")
    p.add_argument("--features", help="a feature .npz from --save-features (skips decoding; for GPU hosts)")
    p.add_argument("--save-features", help="also save the computed features to this .npz")
    p.add_argument("--network", choices=NETWORKS, default="mobilenet", help="the network to train")
    add_deprecated_alias(p, "--model", "--network", "network", choices=NETWORKS, metavar="NETWORK")
    p.add_argument("--profile", choices=("seed", "edge"), default="edge",
                   help="seed: 224x224x3 images as the original study; edge: native frames x mels x 1")
    p.add_argument("--width", type=float, default=None, help="width multiplier (MobileNet alpha); default "
                   "1.0 for seed, 0.5 for edge")


def _clip_seconds(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of seconds nor 'auto'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0 seconds")
    return value


def _add_frontend_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("frontend (default: the profile's, as the shipped bundles use; all recorded in "
                             "feature_config.json and the bundle manifest)")
    g.add_argument("--sample-rate", type=int, default=None, metavar="HZ", help="model sample rate (edge/seed: 16000)")
    g.add_argument("--clip-seconds", type=_clip_seconds, default=None, metavar="SECONDS|auto",
                   help="window length (default 1). 'auto': the 90th percentile of the clip durations, capped at "
                        f"{dataio.AUTO_CLIP_MAX_SECONDS:g} s; longer clips are covered by several windows")
    g.add_argument("--n-mels", type=int, default=None, help="mel bands (edge 40, seed 64)")
    g.add_argument("--window-ms", type=float, default=None, help="STFT window in ms (edge 25, seed 64)")
    g.add_argument("--hop-ms", type=float, default=None, help="STFT hop in ms (edge 10, seed 16)")
    g.add_argument("--fmin", type=float, default=None, help="lowest mel frequency in Hz (20)")
    g.add_argument("--fmax", type=float, default=None, help="highest mel frequency in Hz (8000, at most rate/2)")
    dataio.add_naming_options(g)


def _frontend_from(args: argparse.Namespace) -> Frontend:
    return Frontend(sample_rate=args.sample_rate, n_mels=args.n_mels, window_ms=args.window_ms, hop_ms=args.hop_ms,
                    fmin=args.fmin, fmax=args.fmax)


def _add_fit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size,
                   help="default: 64 for large train splits, down to 16 so that an epoch has about 20 steps")
    p.add_argument("--lr", dest="learning_rate", metavar="LR", type=float, default=TrainConfig.learning_rate,
                   help="peak learning rate (AdamW, cosine)")
    p.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay, help="AdamW decoupled weight decay")
    p.add_argument("--dropout", type=float, default=TrainConfig.dropout, help="dropout before the classifier")
    p.add_argument("--bn-momentum", type=float, default=TrainConfig.bn_momentum,
                   help="batch-norm moving-average momentum (default: from the run's steps, 0.99 for long runs, "
                        "down to 0.9 for runs of a few hundred steps)")
    p.add_argument("--no-precise-bn", dest="precise_bn", action="store_false",
                   help="keep the moving batch-norm statistics as training left them (default: re-estimate them "
                        "over un-augmented train windows before every validation pass and so in the saved model)")
    p.add_argument("--patience", type=int, default=TrainConfig.patience,
                   help="stop after this many epochs without a better validation accuracy (0: never)")
    p.add_argument("--target-accuracy", type=float, default=None, metavar="ACC",
                   help="stop once validation accuracy reaches ACC (e.g. 0.90)")
    p.add_argument("--study-recipe", action="store_true",
                   help="the original study's stop rule: 0.90 (MobileNet) / 0.87 (ResNet-18) validation accuracy")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="turn off time shift, gain, noise and SpecAugment")
    p.add_argument("--no-class-weights", dest="class_weighting", action="store_false")
    p.add_argument("--seed", type=int, default=TrainConfig.seed)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="run folder to write (required, here or in --config)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--distribute", action="store_true",
                   help="data-parallel over all accelerators (keras.distribution on JAX, MirroredStrategy on TF)")
    p.add_argument("--layout", choices=LAYOUTS, default="auto")
    p.add_argument("--strict", action="store_true", help="fail on an unreadable clip instead of skipping it")
    p.add_argument("--cache-dir", help="feature cache folder (default ~/.cache/auricle/features)")
    p.add_argument("--quiet", action="store_true", help="no Keras progress bars (epoch lines stay)")
    p.add_argument("--time-limit", type=float, default=None, metavar="SEC",
                   help="stop fitting after SEC seconds (cleanly: best model and report are written)")


def _add_negative_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--negatives", nargs="+", metavar="DIR",
                   help="folders/files of audio with none of the target sounds: split by file (sha1 of the path "
                        "relative to DIR), train windows go into every batch as the background class and are "
                        "mixed under positives; the test part is never read")
    p.add_argument("--noise-negatives", nargs="+", default=[], metavar="PATH",
                   help="the parts of the --negatives (subfolders or files) with no speech in them: their windows "
                        "are labelled as the data's _silence_ class rather than as unknown speech (their split "
                        "does not change)")
    p.add_argument("--negative-fraction", type=float, default=TrainConfig.negative_fraction, metavar="F",
                   help="negative windows appended to each batch, as a fraction of the batch size")
    p.add_argument("--negative-mix-prob", type=float, default=TrainConfig.negative_mix_prob, metavar="P",
                   help="chance that a positive clip gets a negative window mixed under it (0: never)")
    p.add_argument("--negative-snr", dest="negative_snr_db", type=float, nargs=2, default=TrainConfig.negative_snr_db,
                   metavar=("LO", "HI"), help="signal-to-negative ratio range of that mix, in dB")
    p.add_argument("--mine-rounds", type=int, default=TrainConfig.mine_rounds, metavar="N",
                   help="hard-negative mining rounds after training: windows of the train negatives that score "
                        "above --mine-threshold are over-sampled in a short fine-tune")
    p.add_argument("--mine-epochs", type=int, default=TrainConfig.mine_epochs, metavar="E",
                   help="fine-tune epochs per mining round")
    p.add_argument("--mine-max-drop", type=float, default=TrainConfig.mine_max_drop, metavar="D",
                   help="keep a mined model only if its validation accuracy fell by at most D (else the one "
                        "from before mining)")
    p.add_argument("--mine-threshold", type=float, default=TrainConfig.mine_threshold, metavar="P",
                   help="reportable-label probability that makes a negative window hard")


def _add_init_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init-from", metavar="RUN|BUNDLE",
                   help="start from learnt weights: a trained run folder (its --out), or a bundle that carries its "
                        "network (backbone_edge, the shipped general one; converters/quantize.py --backbone "
                        "makes more): a new classifier for these labels, a frozen phase (a fifth of "
                        "--epochs, at most 10) then all layers at a quarter of --lr; same frontend as that run "
                        "(only --clip-seconds may differ), its network, width and normalisation")


def _add_distill_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", metavar="BUNDLE",
                   help="distil from a bundle (same labels and frontend, trained on this split's train part): "
                        "each positive's target mixes in the teacher's scores for the same augmented window")
    p.add_argument("--distill-weight", type=float, default=TrainConfig.distill_weight, metavar="A",
                   help="share of the teacher's scores in the target (0: plain labels)")


def build_parser(defaults: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    """The command line; ``defaults`` (from a ``--config`` file) replace the parser's own."""
    p = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train MobileNet v1 or ResNet-18 on log-mel features and write a run folder\n"
                    "(model.keras, labels, feature config, split, history, report, curves, confusion matrix).",
        formatter_class=HelpFormatter,
        epilog="Example:\n  python -m training.train --data ../shared/data/speech_commands_v0.02_test \\\n"
               "      --network mobilenet --profile edge --out runs/kws_mobilenet_edge\n"
               "The original study's recipe: --study-recipe (stop at 90% / 87% validation accuracy).")
    p.add_argument("--config", metavar="SPEC_JSON",
                   help="settings from a spec file (a run folder's train_spec.json, or any part of it); flags "
                        "given here override it")
    _add_input_options(p)
    _add_frontend_options(p)
    _add_fit_options(p)
    _add_run_options(p)
    _add_negative_options(p)
    _add_distill_options(p)
    _add_init_options(p)
    p.add_argument("--export-dtype", choices=EXPORT_DTYPES, default="float32",
                   help="dtype of --export-weights arrays (float16 halves a big model's transfer)")
    p.add_argument("--export-weights", metavar="DIR",
                   help="also write the best weights as .npz chunks + meta.json (to bring a GPU run home; "
                        "see python -m training.weights_io)")
    if defaults:
        p.set_defaults(**defaults)
    return p


def config_from(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed options: each field from the option of the same destination
    (``--study-recipe`` sets the target accuracy)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    values["negative_snr_db"] = tuple(values["negative_snr_db"])
    if getattr(args, "study_recipe", False):
        values["target_accuracy"] = STUDY_TARGETS[args.network]
    return TrainConfig(**values)


def spec_from_args(args: argparse.Namespace) -> TrainSpec:
    """The :class:`TrainSpec` of parsed options: the spec's fields from the options of the same name."""
    special = {"config": config_from(args), "verbose": 0 if args.quiet else 1, "frontend": _frontend_from(args),
               "naming": dataio.naming_from(args)}
    plain = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainSpec) if f.name not in special}
    plain["noise_negatives"] = plain["noise_negatives"] or ()
    return TrainSpec(**special, **plain)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parsed options; with ``--config FILE``, the file's settings are the defaults that flags override."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    return build_parser(spec_defaults(known.config) if known.config else None).parse_args(argv)


#: the modules whose notes have always gone to stdout (epoch lines, mining rounds...); others' to stderr
STDOUT_LOGGERS = ("training.train", "training.loop", "training.mining", "training.init_from")


def _progress_on_stdout() -> None:
    """After :func:`edge.cliutil.setup_logging` (every package's records on stderr): the info lines of
    :data:`STDOUT_LOGGERS` on stdout as before, their warnings still on stderr."""
    err, out = logging.StreamHandler(sys.stderr), logging.StreamHandler(sys.stdout)
    for handler in (err, out):
        handler.setFormatter(logging.Formatter("%(message)s"))
    err.setLevel(logging.WARNING)
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    for name in STDOUT_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [err, out]
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(logging.INFO)
    _progress_on_stdout()
    spec = spec_from_args(args)
    if not spec.out:
        raise AuricleError("pass --out DIR, the run folder to write (or an \"out\" in the --config file)")
    if spec.config.mine_rounds and not spec.negatives:
        raise AuricleError("--mine-rounds needs --negatives DIR (the audio to mine)")
    frontend, naming = spec.frontend, spec.naming
    if spec.features and not (frontend.is_default() and spec.clip_seconds is None and naming == dataio.Naming()):
        raise AuricleError("--features already holds computed features; the frontend, --clip-seconds and naming "
                           "options apply to --data only -- drop them or use --data")
    frontend_config(args.profile, frontend)   # bad settings: one line now, not after decoding
    if spec.config.init_from:                  # a bad source too
        check_frontend(read_source(spec.config.init_from), frontend_config(args.profile, frontend))
    report = train(spec)
    acc = report["accuracy"]
    print(f"run written to {spec.out}: " + ", ".join(f"{k} accuracy {v:.4f}" for k, v in acc.items()), flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
