"""Verification: the representative and test clips through the one frontend, Keras float and every TFLite
model through the one clip-level evaluation, and the summary the manifest records and the CLI prints."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from converters.config import QuantizeConfig
from converters.console import Progress, mb
from edge.adapters import get_scores, input_details, output_details, set_input
from edge.bundle import MODEL_FILES
from edge.classifier import clip_scores, clip_windows
from edge.errors import AuricleError, BundleError
from edge.features import FeatureConfig, fit_to_clip, log_mel, to_model_input
from edge.interpreter import make_interpreter
from training.data import load_audio, one_blas_thread
from training.report import per_class_metrics

_EVAL_BATCH = 32


def select_representative(rows: Sequence[tuple[str, str]], n: int, *, seed: int = 0) -> list[tuple[str, str]]:
    """Up to ``n`` ``(path, label)`` rows, stratified: round-robin over the classes (sorted), each class's
    clips in a seeded random order. Classes with fewer clips simply run out."""
    by_label: dict[str, list[str]] = {}
    for path, label in rows:
        by_label.setdefault(label, []).append(path)
    rng = np.random.default_rng(seed)
    queues = {lab: [paths[i] for i in rng.permutation(len(paths))] for lab, paths in sorted(by_label.items())}
    out: list[tuple[str, str]] = []
    depth = 0
    while len(out) < n and any(len(q) > depth for q in queues.values()):
        for lab, q in queues.items():
            if depth < len(q) and len(out) < n:
                out.append((q[depth], lab))
        depth += 1
    return out


def _clip_audio(root: Path, rows: Sequence[tuple[str, str]], config: FeatureConfig, *, label: str,
                progress: bool) -> Iterator[tuple[int, np.ndarray]]:
    """``(row index, mono audio at the model's rate)`` of each clip, with progress; one BLAS thread."""
    bar = Progress(label, len(rows), progress)
    with one_blas_thread():
        for i, (rel, _) in enumerate(rows):
            path = root / rel
            if not path.is_file():
                raise AuricleError(f"clip {rel} (split.csv) is missing under {root}; the data has moved -- pass "
                                   "--data DIR with the dataset root")
            yield i, load_audio(path, config.sample_rate)
            bar.step(i + 1)


def clip_features(root: Path, rows: Sequence[tuple[str, str]], config: FeatureConfig, *, label: str,
                  progress: bool = True) -> np.ndarray:
    """Log-mel frames ``(n, n_frames, n_mels)`` of the clips (one window each), through the one frontend."""
    out = np.empty((len(rows), config.n_frames, config.n_mels), dtype=np.float32)
    for i, x in _clip_audio(root, rows, config, label=label, progress=progress):
        out[i] = log_mel(fit_to_clip(x, config), config)
    return out


def clip_window_features(root: Path, rows: Sequence[tuple[str, str]], config: FeatureConfig, *, label: str,
                         progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Every window of the clip-level rule (``edge.classifier``) of each clip: log-mel frames
    ``(windows, n_frames, n_mels)`` and the row each window belongs to. A clip up to one window long is padded
    to it (one window)."""
    parts, owners = [], []
    for i, x in _clip_audio(root, rows, config, label=label, progress=progress):
        if x.size <= config.clip_samples:
            x = fit_to_clip(x, config)
        windows = clip_windows(log_mel(x, config), config.n_frames)
        parts.append(windows)
        owners.extend([i] * len(windows))
    if not parts:
        return np.empty((0, config.n_frames, config.n_mels), dtype=np.float32), np.empty(0, dtype=np.int64)
    return np.concatenate(parts).astype(np.float32, copy=False), np.asarray(owners, dtype=np.int64)


class KerasScorer:
    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(x), dtype=np.float64)


class TFLiteScorer:
    """Scores through the device's helpers (edge.adapters): quantise with the interpreter's own scale/zero
    point, invoke, dequantise with widened ints."""

    def __init__(self, path: Path, want: tuple[int, ...], n_labels: int, threads: int | None) -> None:
        self.interpreter, self.backend = make_interpreter(path, num_threads=threads)
        have = tuple(int(s) for s in input_details(self.interpreter)["shape"])
        if have != (1, *want):
            raise BundleError(f"{path.name} takes input {have}, the feature config gives {(1, *want)}")
        n_out = int(np.prod(output_details(self.interpreter)["shape"]))
        if n_out != n_labels:
            raise BundleError(f"{path.name} has {n_out} outputs for {n_labels} labels")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        rows = []
        for sample in x:
            set_input(self.interpreter, sample)
            self.interpreter.invoke()
            rows.append(get_scores(self.interpreter))
        return np.stack(rows)


def evaluate(scorer: Callable[[np.ndarray], np.ndarray], frames: np.ndarray, y: np.ndarray, config: FeatureConfig,
             labels: Sequence[str], *, name: str, progress: bool = True,
             owners: np.ndarray | None = None) -> dict[str, Any]:
    """The one evaluation: profile transform per batch -> scores -> [clip-level: mean over each clip's windows,
    ``owners`` giving the clip of each window] -> top-1 -> per-class metrics (and the per-window accuracy)."""
    n = len(frames)
    scores = []
    bar = Progress(f"evaluating {name}", n, progress)
    t0 = time.perf_counter()
    for i in range(0, n, _EVAL_BATCH):
        x = to_model_input(frames[i:i + _EVAL_BATCH], config).astype(np.float32, copy=False)
        scores.append(scorer(x))
        bar.step(min(n, i + _EVAL_BATCH))
    s = np.concatenate(scores) if scores else np.empty((0, len(labels)))
    window_y = y if owners is None else np.asarray(y)[owners]
    window_accuracy = float(np.mean(np.argmax(s, axis=1) == window_y)) if len(s) else 0.0
    if owners is not None:
        s = clip_scores(s, owners, len(y))
    pred = np.argmax(s, axis=1)
    return {"scores": s, "pred": pred, "metrics": per_class_metrics(y, pred, labels),
            "window_accuracy": window_accuracy, "windows": n, "seconds": time.perf_counter() - t0}


def verification_summary(results: dict[str, dict[str, Any]], y: np.ndarray, labels: Sequence[str],
                         blobs: dict[str, bytes], cfg: QuantizeConfig, backend: str | None,
                         threads: int) -> dict[str, Any]:
    n = len(y)
    ref, q, f32 = results["keras_float"], results["tflite_int8"], results["tflite_float32"]
    acc = {k: v["metrics"]["accuracy"] for k, v in results.items()}
    agree = {
        "int8_vs_keras_float": float(np.mean(q["pred"] == ref["pred"])),
        "int8_vs_tflite_float32": float(np.mean(q["pred"] == f32["pred"])),
        "tflite_float32_vs_keras_float": float(np.mean(f32["pred"] == ref["pred"])),
    }
    for k in results:
        if k not in ("keras_float", "tflite_int8", "tflite_float32"):
            agree[f"{k.removeprefix('tflite_')}_vs_keras_float"] = float(np.mean(results[k]["pred"] == ref["pred"]))
    score_diff = {
        "int8_vs_keras_float_mean_abs": float(np.mean(np.abs(q["scores"] - ref["scores"]))),
        "int8_vs_keras_float_max_abs": float(np.max(np.abs(q["scores"] - ref["scores"]))),
        "float32_vs_keras_float_max_abs": float(np.max(np.abs(f32["scores"] - ref["scores"]))),
    }
    recall = {}
    for lab in labels:
        r_ref = ref["metrics"]["per_class"][lab]["recall"]
        r_q = q["metrics"]["per_class"][lab]["recall"]
        recall[lab] = {"keras_float": r_ref, "tflite_int8": r_q, "diff": round(r_q - r_ref, 4),
                       "support": ref["metrics"]["per_class"][lab]["support"]}
    # the gate uses unrounded accuracies (per_class_metrics rounds to 4 places)
    raw = {k: float(np.mean(v["pred"] == y)) for k, v in results.items()}
    drop_pp = round((raw["keras_float"] - raw["tflite_int8"]) * 100.0, 3)
    sizes = {MODEL_FILES[k]: len(b) for k, b in blobs.items()}
    return {
        "split": "test", "clips": n, "runtime_backend": backend, "threads": threads,
        "accuracy": acc,
        "evaluation": "clip-level: windows every half window over each whole clip, scores averaged",
        "windows": int(ref.get("windows", n)),
        "window_accuracy": {k: round(float(v.get("window_accuracy", 0.0)), 4) for k, v in results.items()},
        "macro_f1": {k: v["metrics"]["macro_f1"] for k, v in results.items()},
        "agreement": agree,
        "score_diff": score_diff,
        "per_class_recall": recall,
        "drop_pp": drop_pp, "max_drop_pp": cfg.max_drop, "passed": bool(drop_pp <= cfg.max_drop + 1e-9),
        "sizes": sizes,
        "int8_to_float32_size": round(len(blobs["int8"]) / len(blobs["float32"]), 4),
        "eval_seconds": {k: round(v["seconds"], 2) for k, v in results.items()},
    }


def verification_lines(v: dict[str, Any], labels: Sequence[str]) -> list[str]:
    lines = [f"verification on {v['clips']} test clips, {v.get('windows', v['clips'])} windows, clip-level (TFLite via "
             f"{v['runtime_backend']}, {v['threads']} thread(s)):",
             f"  {'model':<16} {'accuracy':>8} {'per-window':>10} {'macro F1':>8} {'top-1 = keras':>13} {'size':>10}"]
    names = {"keras_float": ("keras float", None), "tflite_float32": ("tflite float32", MODEL_FILES["float32"]),
             "tflite_int8": ("tflite int8", MODEL_FILES["int8"])}
    for k in v["accuracy"]:
        label, file = names.get(k, (k.replace("_", " "), MODEL_FILES.get(k.removeprefix("tflite_"))))
        agree = 1.0 if k == "keras_float" else v["agreement"].get(
            "int8_vs_keras_float" if k == "tflite_int8" else
            "tflite_float32_vs_keras_float" if k == "tflite_float32" else f"{k.removeprefix('tflite_')}_vs_keras_float")
        size = mb(v["sizes"][file]) if file and file in v["sizes"] else "-"
        per_window = v.get("window_accuracy", {}).get(k, float("nan"))
        lines.append(f"  {label:<16} {v['accuracy'][k]:>8.4f} {per_window:>10.4f} {v['macro_f1'][k]:>8.4f} "
                     f"{agree:>13.4f} {size:>10}")
    lines.append(f"  int8 vs tflite float32 top-1 agreement {v['agreement']['int8_vs_tflite_float32']:.4f}; "
                 f"int8/float32 size {v['int8_to_float32_size']:.3f}; mean |score diff| int8 vs keras "
                 f"{v['score_diff']['int8_vs_keras_float_mean_abs']:.4f}")
    diffs = sorted(v["per_class_recall"].items(), key=lambda kv: kv[1]["diff"])
    changed = [f"{lab} {d['diff']:+.3f}" for lab, d in diffs if abs(d["diff"]) >= 1e-4]
    lines.append("  per-class recall change int8 - float: " + (", ".join(changed) if changed else "none"))
    verdict = "OK" if v["passed"] else "FAILED"
    lines.append(f"  int8 accuracy drop vs float: {v['drop_pp']:+.2f} pp (limit {v['max_drop_pp']:g} pp) {verdict}")
    return lines
