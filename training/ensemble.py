"""Average several training runs of one recipe into one model: one graph, one bundle.

    python -m training.ensemble --runs runs/n_s1 runs/n_s2 --out runs/n_e2
    python -m converters.quantize --run runs/n_e2 --out firmware_assets/NAME

The members are runs of the same recipe with different ``--seed`` s: the same labels in the same order, the
same frontend with the same normalisation statistics (``feature_config.json``) and the same split
(``split.csv``); anything else is one line naming the first difference. The ensemble's input goes to every
member and its output is the mean of their softmax scores (Keras ``Average``: TFLite ADD and MUL, both
full-integer and on the Edge TPU's op list), so the device stack, the converter and the detector see an
ordinary model whose scores are still probabilities. It costs the members' MACs added up.

The output folder is an ordinary run folder (model.keras, labels.txt, feature_config.json, split.csv,
train_config.json, train_summary.json, report.*): ``train_config.json`` is the members' recipe with
``ensemble`` listing each member (its folder relative to the output's parent, seed, epochs, best validation
accuracy), and the report evaluates the averaged model on every split, as training does.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from edge.errors import AuricleError, run_cli
from edge.fileio import write_json_atomic
from training.report import save_figure, write_report
from training.run_folder import (FEATURE_CONFIG, HISTORY, LABELS, MODEL, SPLIT, TRAIN_CONFIG, TRAIN_SUMMARY,
                                 RunFolder, load_run, read_history, read_json, save_model_atomic)

#: train_config keys that may differ between members (everything else is the recipe and must agree)
_PER_MEMBER = ("seed", "time_limit")


@dataclasses.dataclass(frozen=True)
class Member:
    run: RunFolder
    summary: dict[str, Any]

    @property
    def seed(self) -> Any:
        return self.run.train_config.get("seed")


def _first_difference(a: RunFolder, b: RunFolder) -> str | None:
    if a.labels != b.labels:
        return f"labels differ ({', '.join(a.labels)} vs {', '.join(b.labels)})"
    if a.config != b.config:
        diff = [f.name for f in dataclasses.fields(a.config) if getattr(a.config, f.name) != getattr(b.config, f.name)]
        return f"{FEATURE_CONFIG} differs in {', '.join(diff)}"
    if a.rows != b.rows:
        return f"{SPLIT} differs (another data set or split)"
    recipe = [k for k in sorted(set(a.train_config) | set(b.train_config))
              if k not in _PER_MEMBER and a.train_config.get(k) != b.train_config.get(k)]
    if recipe:
        return f"the recipe differs in {', '.join(recipe)} ({TRAIN_CONFIG})"
    return None


def load_members(runs: Sequence[str | os.PathLike[str]], *, data: str | os.PathLike[str] | None = None) -> list[Member]:
    """Read and check the member runs: at least two, distinct, one recipe (see the module docstring)."""
    if len(runs) < 2:
        raise AuricleError("an ensemble needs at least two --runs (runs of one recipe with different --seed)")
    if len({Path(r).resolve() for r in runs}) != len(runs):
        raise AuricleError("--runs names the same run folder twice; give each member once")
    members = []
    for r in runs:
        run = load_run(r, data=data)
        summary = read_json(run.path / TRAIN_SUMMARY, "the run did not finish; train it again")
        members.append(Member(run, summary if isinstance(summary, dict) else {}))
    first = members[0].run
    for m in members[1:]:
        why = _first_difference(first, m.run)
        if why:
            raise AuricleError(f"{m.run.path} cannot join {first.path}: {why}; ensemble runs of one recipe that "
                               "differ only in --seed")
    return members


def build_ensemble(models: Sequence[Any], name: str = "ensemble") -> Any:
    """One Keras model: the input goes to every member, the output is the mean of their outputs."""
    import keras

    shapes = {tuple(m.input_shape[1:]) for m in models}
    outs = {tuple(m.output_shape[1:]) for m in models}
    if len(shapes) != 1 or len(outs) != 1:
        raise AuricleError(f"the members' input or output shapes differ ({sorted(shapes)} / {sorted(outs)})")
    inp = keras.Input(shape=next(iter(shapes)), name="input")
    outputs = []
    for i, m in enumerate(models):
        m.name = f"member_{i}"   # unique names inside the ensemble graph
        outputs.append(m(inp))
    return keras.Model(inp, keras.layers.Average(name="average")(outputs), name=name)


def _portable(path: Path, out: Path) -> str:
    """A member's folder as the ensemble records it: relative to the output's parent (no machine path)."""
    return Path(os.path.relpath(path.resolve(), out.resolve().parent)).as_posix()


def ensemble_config(members: Sequence[Member], out: Path) -> dict[str, Any]:
    """``train_config.json`` of the ensemble: the common recipe plus one entry per member."""
    base = {k: v for k, v in members[0].run.train_config.items() if k not in _PER_MEMBER}
    base["ensemble"] = [{"run": _portable(m.run.path, out), "seed": m.seed,
                         "epochs_run": m.summary.get("epochs_run"),
                         "best_val_accuracy": m.summary.get("best_val_accuracy"),
                         "stop_reason": m.summary.get("stop_reason")} for m in members]
    return base


def ensemble_summary(members: Sequence[Member], seconds: float) -> dict[str, Any]:
    """``train_summary.json``: the members' epochs and training time added up (what the ensemble cost)."""
    first = members[0].summary
    return {"epochs_run": sum(int(m.summary.get("epochs_run") or 0) for m in members),
            "best_val_accuracy": None,
            "train_seconds": round(sum(float(m.summary.get("train_seconds") or 0) for m in members), 2),
            "stop_reason": f"ensemble of {len(members)} runs (seeds "
                           f"{', '.join(str(m.seed) for m in members)}), averaged in {seconds:.0f} s",
            "backend": first.get("backend"), "device": first.get("device"), "members": len(members)}


def _copy_run_files(first: RunFolder, out: Path) -> None:
    for name in (LABELS, FEATURE_CONFIG, SPLIT):
        tmp = out / f".{name}.tmp"
        shutil.copyfile(first.path / name, tmp)
        os.replace(tmp, out / name)


def plot_member_curves(members: Sequence[Member], path: Path) -> None:
    """Each member's training and validation accuracy by epoch (the ensemble itself has no curve)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(7, 4))
    for m in members:
        h = read_history(m.run.path / HISTORY)
        for key, style in (("accuracy", ":"), ("val_accuracy", "-")):
            if h.get(key):
                ax.plot(range(1, len(h[key]) + 1), h[key], style, label=f"seed {m.seed}: {key.replace('_', ' ')}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"ensemble of {len(members)}: its members' curves")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _frontend_of(config: Any) -> Any:
    """The training Frontend that reproduces ``config`` (a member's feature settings)."""
    from training.config import Frontend

    rate = config.sample_rate
    return Frontend(sample_rate=rate, clip_seconds=config.clip_duration, n_mels=config.n_mels,
                    window_ms=config.win_length * 1000.0 / rate, hop_ms=config.hop_length * 1000.0 / rate,
                    fmin=config.fmin, fmax=config.fmax)


def member_features(first: RunFolder, *, cache_dir: str | os.PathLike[str] | None = None) -> Any:
    """The members' clips as a FeatureSet: their data, their split (``split.csv``), their normalisation."""
    from training.data import Naming
    from training.train import build_featureset

    naming = dict(first.train_config.get("naming") or {})
    naming = Naming(label_regex=naming.get("label_regex"), group_regex=naming.get("group_regex"),
                    split_file=str(first.path / SPLIT))
    frontend = None if first.config.profile == "seed" else _frontend_of(first.config)
    fs, _ = build_featureset(first.data_root, first.config.profile, cache_dir=cache_dir, frontend=frontend,
                             naming=naming)
    extra = list(first.labels[len(fs.label_names):])
    if list(first.labels[:len(fs.label_names)]) != fs.label_names:
        raise AuricleError(f"the data's labels ({', '.join(fs.label_names)}) are not the members' "
                           f"({', '.join(first.labels)}); pass the --data they were trained on")
    fs.label_names += extra          # a background class training appended for its negatives
    fixed = dataclasses.replace(fs.config, norm_mean=first.config.norm_mean, norm_std=first.config.norm_std)
    if fixed != first.config:
        raise AuricleError(f"the frontend rebuilt from {first.path / FEATURE_CONFIG} differs from it; ensemble "
                           "runs trained with the shipped frontend options")
    fs.config = first.config
    return fs


def ensemble_runs(runs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                  data: str | os.PathLike[str] | None = None,
                  cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Check the members, average them into one model and write a complete run folder at ``out``."""
    t0 = time.perf_counter()
    members = load_members(runs, data=data)
    out = Path(out)
    if any(out.resolve() == m.run.path.resolve() for m in members):
        raise AuricleError(f"--out {out} is one of the members; write the ensemble to a new folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuricleError(f"cannot create {out}: {exc.strerror}; choose a writable --out") from None
    import keras            # only now: TensorFlow's start-up lines must not come before a one-line error

    from training.config import TrainConfig

    models = [keras.saving.load_model(m.run.model_path, safe_mode=True) for m in members]
    model = build_ensemble(models)
    save_model_atomic(model, out / MODEL)
    _copy_run_files(members[0].run, out)
    recipe = ensemble_config(members, out)
    write_json_atomic(out / TRAIN_CONFIG, recipe)
    summary = ensemble_summary(members, time.perf_counter() - t0)
    write_json_atomic(out / TRAIN_SUMMARY, summary)
    fs = member_features(members[0].run, cache_dir=cache_dir)
    cfg = TrainConfig.from_dict(members[0].run.train_config)
    report = write_report(out, fs, cfg, summary, model=model, split_rule=members[0].run.report.get("split_rule"),
                          train_config={**cfg.to_dict(), "seed": None, "ensemble": recipe["ensemble"]})
    plot_member_curves(members, out / "curves.png")
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.ensemble",
        description="Average the softmax scores of several runs of one recipe (different --seed) into one model "
                    "and write it as a run folder that converters.quantize turns into a bundle. The members "
                    "must share labels, frontend, normalisation and split; the ensemble costs their MACs "
                    "added up.")
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN",
                   help="two or more run folders written by python -m training.train")
    p.add_argument("--out", required=True, help="the run folder to write (a new one, not a member)")
    p.add_argument("--data", help="the dataset folder the runs' split.csv paths are relative to (default: "
                                  "the one they recorded)")
    p.add_argument("--cache-dir", help="feature cache folder (default ~/.cache/auricle/features)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = ensemble_runs(args.runs, args.out, data=args.data, cache_dir=args.cache_dir)
    acc = report["accuracy"]
    print(f"ensemble written to {args.out}: " + ", ".join(f"{k} accuracy {v:.4f}" for k, v in acc.items()),
          flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
