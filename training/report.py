"""The run report, as the original study gave it: accuracy per split, per-class precision / recall / F1,
confusion matrix, training time, parameter count, MACs, curves -- plus the skipped-file report.

Accuracy is clip-level (the headline): every clip is scored by windows every half window over its whole
length and the mean score decides (:func:`training.featureset.clip_level_scores`, the rule of
:mod:`edge.classifier`). The per-window accuracy (each window judged alone) is given beside it; for clips of
one window the two are equal."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge.fileio import atomic_writer, write_json_atomic, write_text_atomic
from training.bn_check import collapse_warning
from training.featureset import clip_level_scores
from training.run_folder import HISTORY, MODEL, read_history


def per_class_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    k = len(labels)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)), 1)
    tp = np.diag(cm).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
        recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    per_class = {lab: {"precision": round(float(precision[i]), 4), "recall": round(float(recall[i]), 4),
                       "f1": round(float(f1[i]), 4), "support": int(cm[i].sum())} for i, lab in enumerate(labels)}
    acc = float(tp.sum() / max(1, cm.sum()))
    return {"accuracy": round(acc, 4), "per_class": per_class, "confusion": cm.tolist(),
            "macro_f1": round(float(f1.mean()), 4)}


def predict(model: Any, x: np.ndarray, batch: int = 128) -> np.ndarray:
    if len(x) == 0:
        return np.empty((0,), dtype=int)
    probs = model.predict(x, batch_size=batch, verbose=0)
    return np.argmax(probs, axis=-1)


def evaluate_splits(model: Any, fs) -> dict[str, dict[str, Any]]:
    """Clip-level metrics per split, with ``window_accuracy`` and ``windows`` (how many were scored) added."""
    out = {}

    def scores(x: np.ndarray) -> np.ndarray:
        return model.predict(x, batch_size=128, verbose=0)

    for split in ("train", "val", "test"):
        idx = fs.indices(split)
        if idx.size == 0:
            continue
        clip, per_window, owners = clip_level_scores(scores, fs, idx)
        metrics = per_class_metrics(fs.y[idx], np.argmax(clip, axis=-1), fs.label_names)
        metrics["window_accuracy"] = round(float(np.mean(np.argmax(per_window, axis=-1) == fs.y[idx][owners])), 4)
        metrics["windows"] = int(len(owners))
        out[split] = metrics
    return out


def plot_curves(history: dict[str, list[float]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, key, name in ((axes[0], "accuracy", "accuracy"), (axes[1], "loss", "loss")):
        if history.get(key):
            ax.plot(epochs, history[key], label="train")
        if history.get(f"val_{key}"):
            ax.plot(epochs, history[f"val_{key}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_confusion(cm: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cm = np.asarray(cm)
    norm = cm / np.maximum(1, cm.sum(axis=1, keepdims=True))
    k = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), labels, rotation=60, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def save_figure(fig: Any, path: Path) -> None:
    with atomic_writer(path, binary=True) as fh:
        fig.savefig(fh, dpi=110, format=path.suffix.lstrip(".") or "png")


def markdown_report(report: dict[str, Any]) -> str:
    lines = [f"# Run report: {report['network']} ({report['profile']} profile)", ""]
    acc = report["accuracy"]
    win = report.get("window_accuracy", {})
    lines += ["| split | clips | accuracy (clip-level) | per-window accuracy |", "|---|---:|---:|---:|"]
    for split in ("train", "val", "test"):
        if split in acc:
            w = f"{win[split] * 100:.2f} %" if split in win else "-"
            lines.append(f"| {split} | {report['split_sizes'].get(split, 0)} | {acc[split] * 100:.2f} % | {w} |")
    if report.get("evaluation"):
        lines += ["", f"Clip-level: {report['evaluation']}"]
    if report.get("batch_norm_warning"):
        lines += ["", f"**Warning:** {report['batch_norm_warning']}"]
    t = report["training"]
    lines += ["", f"- parameters: {report['params']:,}", f"- MACs per inference: {report['macs']:,}",
              f"- training: {t['epochs_run']} epochs, {t['train_seconds']:.0f} s on {t['device']} "
              f"({t['backend']} backend); stop: {t['stop_reason']}",
              f"- input shape: {report['input_shape']}", ""]
    test = report.get("test_metrics")
    if test:
        lines += ["## Test split, per class", "", "| class | precision | recall | F1 | support |",
                  "|---|---:|---:|---:|---:|"]
        for lab, m in test["per_class"].items():
            lines.append(f"| {lab} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
    skipped = report.get("skipped") or []
    lines += ["", f"## Skipped files ({len(skipped)})", ""]
    lines += [f"- {s['path']}: {s['reason']}" for s in skipped] or ["none"]
    lines += ["", "![curves](curves.png)", "", "![confusion](confusion.png)", ""]
    return "\n".join(lines)


def _collapse(metrics: dict[str, Any], history: dict[str, list[float]], num_classes: int) -> str | None:
    """The batch-norm collapse line (:func:`training.bn_check.collapse_warning`): the saved model's
    inference-mode accuracy on train windows against the best training accuracy of the run (not that of the
    saved epoch: a collapsed run's best-epoch choice is itself broken and tends to keep the first epoch)."""
    acc = history.get("accuracy")
    if "train" not in metrics or not acc:
        return None
    return collapse_warning(metrics["train"]["window_accuracy"], max(acc), num_classes)


def write_report(out: Path, fs, cfg, summary: dict[str, Any], *, skipped: Sequence = (),
                 model: Any = None, split_rule: str | None = None,
                 train_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate the best model on every split and write report.json, report.md, curves.png, confusion.png.
    ``train_config``: what the report records as the recipe (default: ``cfg``'s fields)."""
    import keras

    from training.models import count_macs  # imports keras: lazy, like keras itself

    if model is None:
        model = keras.saving.load_model(out / MODEL, safe_mode=True)
    metrics = evaluate_splits(model, fs)
    history = read_history(out / HISTORY)
    skipped_rows = [{"path": str(p), "reason": str(r)} for p, r in skipped]
    report = {
        "network": cfg.network, "profile": fs.config.profile, "width": cfg.resolved_width(),
        "labels": list(fs.label_names), "input_shape": [int(d) for d in model.input_shape[1:]],
        "params": int(model.count_params()), "macs": count_macs(model),
        "split_sizes": {s: int((fs.split == s).sum()) for s in ("train", "val", "test")},
        "accuracy": {s: m["accuracy"] for s, m in metrics.items()},
        "window_accuracy": {s: m["window_accuracy"] for s, m in metrics.items()},
        "evaluation": (f"{fs.config.clip_duration:g} s windows every {fs.config.clip_duration / 2:g} s over each "
                       "whole clip (the last aligned with its end), softmax scores averaged per clip; "
                       "per-window: each window judged alone"),
        "test_metrics": metrics.get("test"), "val_metrics": metrics.get("val"),
        "training": summary, "train_config": train_config if train_config is not None else cfg.to_dict(),
        "feature_config": fs.config.to_dict(),
        "skipped": skipped_rows,
        "split_rule": split_rule or "sha1(group) % 100: <80 train, 80-89 val, >=90 test; group = speaker id",
        "batch_norm_warning": _collapse(metrics, history, len(fs.label_names)),
    }
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", markdown_report(report))
    title = f"{cfg.network} / {fs.config.profile}"
    plot_curves(history, out / "curves.png", title)
    cm_split = "test" if "test" in metrics else next(iter(metrics))
    plot_confusion(metrics[cm_split]["confusion"], fs.label_names, out / "confusion.png",
                   f"{title}: {cm_split} split")
    return report


def load_report(run: Path) -> dict[str, Any]:
    return json.loads((Path(run) / "report.json").read_text())
