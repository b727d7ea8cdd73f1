"""Test helper: a tiny but real training run folder, trained in seconds on ``tests/data/speech_commands``.

It holds what ``python -m training.train`` writes and ``converters/quantize.py`` reads: ``model.keras``,
``labels.txt``, ``feature_config.json`` (with the training split's normalisation statistics),
``split.csv`` (``path,label,group,split``, paths relative to the data root), ``train_config.json`` (``data`` =
the data root) and ``report.json``.

The shipped clips all come from *test* speakers, so the sha1 speaker rule would put every one of them in
the test split; this helper assigns splits itself: per class, the first ``n_train`` clips (sorted by
name) train and the rest are the test split.

This module imports TensorFlow/Keras (inside the functions); only tests use it.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data" / "speech_commands"
ALL_LABELS = ("_silence_", "_unknown_", "down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes")
DEFAULT_LABELS = ALL_LABELS
SHIFTS = (-0.2, -0.1, 0.0, 0.1, 0.2)   # seconds: each training clip is also seen moved inside its 1 s frame


def clips_for(label: str, data_dir: Path = DATA_DIR) -> list[Path]:
    return sorted(p for p in (Path(data_dir) / label).iterdir() if p.is_file() and ".wav" in p.name)


def _shift(x: np.ndarray, samples: int) -> np.ndarray:
    out = np.zeros_like(x)
    if samples >= 0:
        out[samples:] = x[:x.size - samples]
    else:
        out[:samples] = x[-samples:]
    return out


def build_tiny_model(input_shape: Sequence[int], n_classes: int):
    """Conv + BatchNorm + ReLU blocks, global average pooling, softmax: the op mix of the real networks in a
    model that trains in seconds."""
    import keras
    from keras import layers

    inp = keras.Input(shape=tuple(input_shape), name="input")
    # momentum 0.9: a few hundred steps must be enough for BatchNorm's moving statistics to settle
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inp)
    x = layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i, filters in enumerate((32, 48), start=1):  # plain convs: depthwise backprop is slow on a CPU
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"b{i}_conv")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"b{i}_bn")(x)
        x = layers.ReLU(name=f"b{i}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    out = layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="tiny_kws")


def make_tiny_run(out_dir: str | os.PathLike[str], *, labels: Sequence[str] = DEFAULT_LABELS, n_train: int = 4,
                  epochs: int = 20, seed: int = 0, data_dir: Path = DATA_DIR,
                  network: tuple[str, float] | None = None) -> Path:
    """Train a tiny edge-profile model and write a run folder at ``out_dir`` (atomically). ``network``
    (name, width) trains one of :mod:`training.models` instead of the tiny conv net."""
    import keras

    from edge.features import edge_config, fit_to_clip, log_mel, model_input_shape, to_model_input
    from edge.fileio import write_json_atomic
    from training.data import group_of, load_audio
    from training.run_folder import SplitRow, write_feature_config, write_labels, write_split

    out_dir = Path(out_dir)
    labels = tuple(sorted(labels))
    config = edge_config()
    rows: list[SplitRow] = []
    feats, ys = [], []
    train_waves: list[tuple[np.ndarray, int]] = []
    for li, label in enumerate(labels):
        for k, path in enumerate(clips_for(label, data_dir)):
            split = "train" if k < n_train else "test"
            rows.append(SplitRow(path.relative_to(data_dir).as_posix(), label, group_of(path.name), split))
            if split == "train":
                train_waves.append((fit_to_clip(load_audio(path, config.sample_rate), config), li))
    for wave, li in train_waves:
        for s in SHIFTS:
            feats.append(log_mel(_shift(wave, int(round(s * config.sample_rate))), config))
            ys.append(li)
    feats_arr = np.stack(feats)
    centre = np.stack([log_mel(w, config) for w, _ in train_waves])
    config = dataclasses.replace(config, norm_mean=float(centre.mean()), norm_std=float(centre.std() + 1e-6))
    x = to_model_input(feats_arr, config)
    y = np.asarray(ys, dtype=np.int64)

    keras.utils.set_random_seed(seed)
    if network is None:
        model = build_tiny_model(model_input_shape(config), len(labels))
        name, width = "tiny", 1.0
    else:
        from training.models import build_model

        name, width = network
        model = build_model(name, model_input_shape(config), len(labels), profile="edge", width=width)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=False)
    hist = model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    train_acc = float(hist.history["accuracy"][-1])

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save(tmp / "model.keras")
        write_labels(tmp, labels)
        write_feature_config(tmp, config)
        write_split(tmp / "split.csv", rows)
        sizes = {s: sum(1 for r in rows if r.split == s) for s in ("train", "val", "test")}
        write_json_atomic(tmp / "train_config.json", {
            "network": name, "profile": "edge", "width": width, "epochs": epochs, "seed": seed,
            "data": str(data_dir)})
        write_json_atomic(tmp / "report.json", {
            "network": name, "profile": "edge", "width": width, "labels": list(labels),
            "input_shape": list(model_input_shape(config)), "params": int(model.count_params()),
            "split_sizes": sizes, "accuracy": {"train": round(train_acc, 4)},
            "split_rule": "tests/tiny_run.py: first n_train clips per class train, the rest test"})
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def copy_run(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    dst = Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst
