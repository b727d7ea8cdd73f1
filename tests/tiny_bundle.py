"""Test helper: build tiny but real model bundles (Keras -> int8 + float32 TFLite -> manifest).

The bundle follows the manifest contract at the top of ``edge/bundle.py`` exactly: ``manifest.json``
(schema_version 1, feature_config, labels, background_labels, models with input/output specs read from
the converted model's own interpreter, sha256 of every file), ``labels.txt`` and the ``.tflite`` files.

This module imports TensorFlow (inside the functions); only tests use it, never ``edge/``.
Building takes a few seconds, so tests cache bundles per session with :func:`cached_bundle`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge.bundle import MANIFEST, MODEL_FILES
from edge.fileio import sha256_file, write_json_atomic

DATA_DIR = Path(__file__).resolve().parent / "data" / "speech_commands"
DEFAULT_LABELS = ("yes", "no", "_silence_")
DEFAULT_SHIFTS = (-0.45, -0.35, -0.25, -0.15, -0.05, 0.05, 0.15, 0.25, 0.35, 0.45)  # seconds, word in the 1 s frame

_CACHE: dict[tuple, Path] = {}


def load_clip(path: str | os.PathLike[str]) -> np.ndarray:
    """A mono int16 clip as stored (16 kHz Speech Commands WAV)."""
    import soundfile as sf

    data, _ = sf.read(str(path), dtype="int16", always_2d=True)
    return data[:, 0].copy()


def clips_for(label: str, clips_dir: Path = DATA_DIR) -> list[Path]:
    return sorted((Path(clips_dir) / label).glob("*.wav"))


def _make_config(profile: str, overrides: dict[str, Any] | None):
    from edge.features import edge_config, seed_config

    make = edge_config if profile == "edge" else seed_config
    return make(**(overrides or {}))


def _shifted(x: np.ndarray, shift: int, n: int) -> np.ndarray:
    """Float clip moved by ``shift`` samples inside a zero frame of ``n`` samples."""
    out = np.zeros(n, dtype=np.float32)
    src = x[:n]
    if shift >= 0:
        out[shift:] = src[: n - shift]
    else:
        out[: n + shift] = src[-shift:]
    return out


def _training_set(config, labels: Sequence[str], clips_dir: Path | None, seed: int, shifts: Sequence[float]):
    """Log-mel features of every clip at several time shifts, plus quiet/zero backgrounds for ``_`` labels.

    Word clips are shifted inside the 1 s frame (so the model fires on a streaming window that is not
    perfectly aligned), once over digital silence and once over a real background clip.
    """
    from edge.features import fit_to_clip, log_mel

    rng = np.random.default_rng(seed)
    n = config.clip_samples
    t = np.arange(n) / config.sample_rate
    backgrounds = [load_clip(p).astype(np.float32) / 32768.0 for p in clips_for("_silence_", clips_dir)] \
        if clips_dir is not None else []
    backgrounds = [fit_to_clip(b, config) for b in backgrounds] or [np.zeros(n, np.float32)]
    waves: list[np.ndarray] = []
    ys: list[int] = []
    for li, label in enumerate(labels):
        paths = clips_for(label, clips_dir) if clips_dir is not None else []
        if label.startswith("_"):
            quiet = [np.zeros(n, np.float32), rng.normal(0, 1e-4, n).astype(np.float32),
                     rng.normal(0, 3e-3, n).astype(np.float32)]
            clips = [fit_to_clip(load_clip(p).astype(np.float32) / 32768.0, config) for p in paths]
            for c in clips + quiet:
                for gain in (1.0, 0.3):
                    waves.append((c * gain).astype(np.float32))
                    ys.append(li)
            continue
        if paths:
            sources = [fit_to_clip(load_clip(p), config).astype(np.float32) / 32768.0 for p in paths]
        else:  # synthetic class: a tone per label
            sources = [(0.3 * np.sin(2 * np.pi * (300 + 400 * li) * t)).astype(np.float32)]
        for j, src in enumerate(sources):
            for s in shifts:
                shifted = _shifted(src, int(round(s * config.sample_rate)), n)
                waves.append(shifted)
                ys.append(li)
                bg = backgrounds[(j + len(waves)) % len(backgrounds)]
                waves.append(shifted + 0.5 * bg)
                ys.append(li)
    feats = np.stack([log_mel(w, config) for w in waves])
    return feats, np.asarray(ys, dtype=np.int64)


def _build_keras(input_shape: tuple[int, int, int], n_classes: int, profile: str):
    import keras
    from keras import layers

    inp = keras.Input(shape=input_shape, name="features")
    x = inp
    if profile == "seed":  # 224x224x3: shrink fast, this is a pipeline test model
        x = layers.AveragePooling2D(pool_size=4, name="pool_in")(x)
        x = layers.Rescaling(1.0 / 255.0, name="rescale")(x)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalMaxPooling2D(name="gmp")(x)
    out = layers.Dense(n_classes, activation="softmax", name="scores")(x)
    return keras.Model(inp, out, name=f"tiny_{profile}")


def _spec(detail: dict[str, Any]) -> dict[str, Any]:
    scale, zero_point = detail["quantization"]
    return {"shape": [int(s) for s in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name,
            "scale": float(scale), "zero_point": int(zero_point)}


def _io_specs(model_bytes: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_bytes)
    interp.allocate_tensors()
    return _spec(interp.get_input_details()[0]), _spec(interp.get_output_details()[0])


def make_tiny_bundle(out_dir: str | os.PathLike[str], *, profile: str = "edge",
                     labels: Sequence[str] = DEFAULT_LABELS, background_labels: Sequence[str] | None = None,
                     train_clips_dir: str | os.PathLike[str] | None = None, epochs: int = 30,
                     shifts: Sequence[float] = DEFAULT_SHIFTS, seed: int = 0,
                     config_overrides: dict[str, Any] | None = None, name: str | None = None,
                     float32: bool = True) -> Path:
    """Build a tiny bundle at ``out_dir`` (written to a temp folder, then renamed into place).

    With ``train_clips_dir`` the model is fitted briefly on ``<dir>/<label>/*.wav`` (each clip at several
    time shifts), so it really recognises those clips; labels with no clips get synthetic examples.
    Without it the model is trained on synthetic tones/silence only (still a valid, deterministic bundle).
    """
    import keras
    import tensorflow as tf

    from edge.features import model_input_shape, to_model_input

    out_dir = Path(out_dir)
    labels = tuple(labels)
    background = [lab for lab in labels if lab.startswith("_")] if background_labels is None else list(
        background_labels)
    config = _make_config(profile, config_overrides)
    clips_dir = Path(train_clips_dir) if train_clips_dir is not None else None
    feats, ys = _training_set(config, labels, clips_dir, seed, shifts)
    if profile == "edge":  # normalisation statistics of the training set, as training does
        import dataclasses
        config = dataclasses.replace(config, norm_mean=float(feats.mean()), norm_std=float(feats.std()))
    x = to_model_input(feats, config).astype(np.float32)

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    model = _build_keras(model_input_shape(config), len(labels), profile)
    model.compile(optimizer=keras.optimizers.Adam(0.005), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    accuracy = None
    if epochs > 0:
        history = model.fit(x, ys, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
        accuracy = float(history.history["accuracy"][-1])

    def representative():
        for i in range(min(len(x), 64)):
            yield [x[i:i + 1]]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with warnings.catch_warnings():   # "Statistics for quantized inputs were expected": int8 I/O, fine
        warnings.simplefilter("ignore", UserWarning)
        int8_bytes = conv.convert()
    models: dict[str, bytes] = {"int8": int8_bytes}
    if float32:
        models["float32"] = tf.lite.TFLiteConverter.from_keras_model(model).convert()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        entries: dict[str, Any] = {}
        for kind, blob in models.items():
            fname = MODEL_FILES[kind]
            (tmp / fname).write_bytes(blob)
            inp, outp = _io_specs(blob)
            entries[kind] = {"file": fname, "input": inp, "output": outp}
        (tmp / "labels.txt").write_text("".join(f"{lab}\n" for lab in labels), encoding="utf-8")
        manifest = {
            "schema_version": 1,
            "name": name or f"tiny_{profile}",
            "feature_config": config.to_dict(),
            "labels": list(labels),
            "background_labels": background,
            "default_model": "int8",
            "models": entries,
            "files": {},
            "network": {"name": "tiny_conv", "params": int(model.count_params())},
            "training": {"clips_dir": str(clips_dir) if clips_dir else None, "epochs": epochs, "seed": seed,
                         "train_accuracy": accuracy, "note": "test bundle (tests/tiny_bundle.py)"},
        }
        write_manifest(tmp, manifest)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.chmod(0o755)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def write_manifest(bundle_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    """(Re)write manifest.json with the sha256 of every other file in the folder."""
    bundle_dir = Path(bundle_dir)
    manifest = dict(manifest)
    manifest["files"] = {p.name: sha256_file(p) for p in sorted(bundle_dir.iterdir())
                         if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")}
    write_json_atomic(bundle_dir / MANIFEST, manifest)


def read_manifest(bundle_dir: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads((Path(bundle_dir) / MANIFEST).read_text(encoding="utf-8"))


def copy_bundle(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    dst = Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def add_fake_edgetpu_model(bundle_dir: str | os.PathLike[str]) -> Path:
    """Add a ``model_edgetpu.tflite`` entry (a copy of the int8 model; not really compiled).

    Enough to test that ``--coral`` finds the model and then asks for the delegate.
    """
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    shutil.copyfile(bundle_dir / manifest["models"]["int8"]["file"], bundle_dir / MODEL_FILES["edgetpu"])
    manifest["models"]["edgetpu"] = dict(manifest["models"]["int8"], file=MODEL_FILES["edgetpu"])
    write_manifest(bundle_dir, manifest)
    return bundle_dir


def cached_bundle(tmp_path_factory, key: str, **kwargs: Any) -> Path:
    """Build once per test session (shared by every test module that imports this helper)."""
    cache_key = (key, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    path = _CACHE.get(cache_key)
    if path is None or not path.exists():
        path = make_tiny_bundle(tmp_path_factory.mktemp("bundles") / key, **kwargs)
        _CACHE[cache_key] = path
    return path
