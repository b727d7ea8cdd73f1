"""What to measure: the bundles, the training runs whose Keras models give the Keras rows, and a float32 model
rebuilt from the run where a bundle left it out of git (``regenerable_files``)."""
from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from benchmarks.config import F32_FILE, BenchConfig
from edge.bundle import Bundle, load_bundle, repo_root
from edge.cstreams import captured_fds
from edge.errors import AuricleError
from edge.features import model_input_shape
from edge.fileio import sha256_file, write_bytes_atomic

__all__ = ["Target", "KerasEnv", "load_targets"]

Say = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class KerasEnv:
    """TensorFlow and Keras, imported with the thread pools set."""
    tf: Any
    keras: Any
    threads: int


@dataclasses.dataclass(frozen=True)
class Target:
    """One bundle and, where there is one, the Keras model it was converted from."""
    bundle: Bundle
    run_dir: Path | None = None
    run_source: str | None = None            # "--run" or "manifest"
    keras_model: Any = None
    regenerated_float32: Path | None = None


# -- bundles and runs ------------------------------------------------------------------------------------
def bundle_dirs(paths: Sequence[str]) -> list[Path]:
    if paths:
        return [Path(p) for p in paths]
    root = repo_root() / "firmware_assets"
    found = sorted(p for p in root.iterdir() if not p.name.startswith(".") and (p / "manifest.json").is_file()) \
        if root.is_dir() else []
    if not found:
        raise AuricleError(f"no bundles in {root}; pass --bundles BUNDLE_DIR ... or build them with `make firmware`")
    return found


def manifest_run(bundle: Bundle) -> Path | None:
    """The training run a bundle's manifest names, where its ``model.keras`` exists."""
    training = bundle.manifest.get("training") or {}
    candidates = []
    if training.get("run_path"):
        candidates.append(Path(str(training["run_path"])))
    if training.get("run"):
        candidates.append(repo_root() / "runs" / str(training["run"]))
    return next((c for c in candidates if (c / "model.keras").is_file()), None)


def _bundle_of_run(bundles: Sequence[Bundle], run: Path) -> int | None:
    res = run.resolve()
    for i, b in enumerate(bundles):
        tr = b.manifest.get("training") or {}
        if (tr.get("run_path") and Path(str(tr["run_path"])).resolve() == res) or tr.get("run") == run.name:
            return i
    return next((i for i, b in enumerate(bundles) if run.name in (b.path.name, b.name)), None)


def match_runs(bundles: Sequence[Bundle], runs_dirs: Sequence[str]) -> dict[int, Path]:
    """``--run`` folder -> the bundle whose manifest names it (else the bundle of the same folder name)."""
    out: dict[int, Path] = {}
    for r in runs_dirs:
        run = Path(r)
        if not (run / "model.keras").is_file():
            raise AuricleError(f"--run {r}: {run / 'model.keras'} does not exist; pass a run folder written by "
                               "python -m training.train")
        hit = _bundle_of_run(bundles, run)
        if hit is None:
            raise AuricleError(f"--run {r} matches none of the bundles ({', '.join(b.name for b in bundles)}): "
                               "no manifest names it as its training run and no bundle folder has its name; "
                               "pass that run's bundle with --bundles")
        out[hit] = run
    return out


def _runs_for(bundles: Sequence[Bundle], cfg: BenchConfig, notes: list[str]) -> list[tuple[Path | None, str | None]]:
    """Per bundle: its Keras run folder and where it came from (``--run`` or the manifest), or (None, None)."""
    if not cfg.keras:
        if cfg.runs_dirs:
            notes.append("--no-keras: --run ignored")
        return [(None, None)] * len(bundles)
    explicit = match_runs(bundles, cfg.runs_dirs)
    found: list[tuple[Path | None, str | None]] = []
    for i, b in enumerate(bundles):
        if i in explicit:
            found.append((explicit[i], "--run"))
        else:
            run = manifest_run(b)
            found.append((run, "manifest" if run is not None else None))
    return found


# -- Keras -----------------------------------------------------------------------------------------------
def import_keras(threads: int, notes: list[str]) -> KerasEnv | None:
    """TensorFlow + Keras (TensorFlow backend) with the thread pools set, or None (with a note) when absent."""
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        import tensorflow as tf
        import keras
    except Exception as exc:  # ImportError on a Pi; anything broken in a partial install
        notes.append(f"Keras rows skipped: TensorFlow/Keras not importable ({type(exc).__name__}: "
                     f"{' '.join(str(exc).split())[:120]}); the TFLite rows are unaffected")
        return None
    if keras.backend.backend() != "tensorflow":
        notes.append(f"Keras rows skipped: Keras runs on the {keras.backend.backend()} backend; the benchmark "
                     "times the TensorFlow path (set KERAS_BACKEND=tensorflow)")
        return None
    try:
        tf.get_logger().setLevel("ERROR")
    except Exception:  # logging is cosmetic
        pass
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        have = tf.config.threading.get_intra_op_parallelism_threads()
        notes.append(f"TensorFlow was initialised before the benchmark set its threads; Keras rows run with "
                     f"intra-op threads = {have or 'all cores'} (not --keras-threads {threads})")
    return KerasEnv(tf, keras, threads)


def load_keras(keras: Any, run_dir: Path, want_shape: tuple[int, ...]) -> Any:
    path = run_dir / "model.keras"
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:
        raise AuricleError(f"cannot load {path} ({type(exc).__name__}: {' '.join(str(exc).split())[:160]}); "
                           "re-copy the run or pass --no-keras") from None
    have = tuple(int(d) if d is not None else -1 for d in model.input_shape[1:])
    if have != tuple(want_shape):
        raise AuricleError(f"{path} takes input {have} but its bundle takes {tuple(want_shape)}; that run is not "
                           "the bundle's source -- pass the right --run or --no-keras")
    return model


def _converter() -> tuple[Any, str | None]:
    """``converters.convert`` (TensorFlow and the converter's own imports), or None and why not."""
    try:
        return importlib.import_module("converters.convert"), None
    except Exception as exc:
        return None, type(exc).__name__


def _export_float32(convert: Any, keras_model: Any, dst: Path) -> None:
    """The float32 TFLite model, built the way ``converters.quantize`` builds a bundle's, written to ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        with captured_fds((1, 2)):           # TensorFlow's converter logs on fds 1/2 (AURICLE_DEBUG=1 shows it)
            blob = convert.convert_model(convert.export_saved_model(keras_model, Path(tmp)), "float32")
    write_bytes_atomic(dst, blob)


def _shown(path: Path) -> str:
    """``path`` relative to the repository (as manifests store paths) where it lies in it: the notes ship in
    RESULTS.md and must carry no machine path, whatever folder the benchmark ran from."""
    try:
        return Path(path).resolve().relative_to(repo_root().resolve()).as_posix()
    except ValueError:
        return str(path)


def regenerate_float32(target: Target, cache: Path, notes: list[str], say: Say) -> Path | None:
    """The float32 model a bundle left out of git (``regenerable_files``), rebuilt from the run's Keras model
    and cached under ``cache`` by the Keras file's sha256."""
    reg = (target.bundle.manifest.get("regenerable_files") or {}).get(F32_FILE)
    if not reg or target.keras_model is None or target.run_dir is None:
        return None
    key = sha256_file(target.run_dir / "model.keras")[:16]
    dst = cache / f"{target.bundle.name}-{key}" / F32_FILE
    # reuse a cached file only when it is byte-identical to what the bundle's conversion wrote (the converter
    # may have changed since it was cached)
    if not (dst.is_file() and sha256_file(dst) == reg.get("sha256")):
        quantize, missing = _converter()
        if quantize is None:
            notes.append(f"{target.bundle.name}: float32 model not regenerated (converters.quantize: "
                         f"{missing}); no tflite-float32 row")
            return None
        say(f"{target.bundle.name}: regenerating {F32_FILE} from {target.run_dir / 'model.keras'} "
            "(not in the bundle; cached for next time) ...")
        _export_float32(quantize, target.keras_model, dst)
    same = sha256_file(dst) == reg.get("sha256")
    notes.append(f"{target.bundle.name}: {F32_FILE} is not in the bundle (regenerable_files); regenerated from "
                 f"{_shown(target.run_dir)}/model.keras into {_shown(dst.parent)} (sha256 "
                 f"{'matches' if same else 'differs from'} the manifest's)")
    return dst


def _with_keras(target: Target, env: KerasEnv, cfg: BenchConfig, out: Path, notes: list[str], say: Say) -> Target:
    """``target`` with its Keras model loaded (and its float32 model regenerated where needed)."""
    try:
        model = load_keras(env.keras, target.run_dir, model_input_shape(target.bundle.feature_config))
    except AuricleError as exc:
        if target.run_source == "--run":
            raise
        notes.append(f"{target.bundle.name}: no Keras rows (the run its manifest names: {exc})")
        return target
    target = dataclasses.replace(target, keras_model=model)
    if cfg.regenerate and "float32" not in target.bundle.models:
        try:
            target = dataclasses.replace(target,
                                         regenerated_float32=regenerate_float32(target, out / ".cache", notes, say))
        except AuricleError as exc:
            notes.append(f"{target.bundle.name}: {F32_FILE} could not be regenerated ({exc})")
    return target


def _note_missing_float32(targets: Sequence[Target], notes: list[str]) -> None:
    for t in targets:
        if "float32" not in t.bundle.models and t.regenerated_float32 is None:
            why = ("listed under regenerable_files; give its run (--run) with TensorFlow installed to regenerate it"
                   if F32_FILE in (t.bundle.manifest.get("regenerable_files") or {}) else "not in the bundle")
            notes.append(f"{t.bundle.name}: no tflite-float32 row ({F32_FILE} {why})")


def load_targets(cfg: BenchConfig, out: Path, notes: list[str], say: Say) -> tuple[list[Target], KerasEnv | None]:
    """The bundles of ``cfg`` with their Keras models; TensorFlow is imported only when a run was found."""
    bundles = [load_bundle(p) for p in bundle_dirs(cfg.bundles)]
    names = [b.name for b in bundles]
    if len(set(names)) != len(names):
        raise AuricleError(f"bundle names repeat ({', '.join(names)}); pass each bundle once")
    targets = [Target(b, run, source) for b, (run, source) in zip(bundles, _runs_for(bundles, cfg, notes))]
    env = None
    if any(t.run_dir is not None for t in targets):
        say(f"importing TensorFlow/Keras for the Keras rows ({cfg.keras_thread_count} intra-op thread(s)) ...")
        env = import_keras(cfg.keras_thread_count, notes)
    if env is not None:
        targets = [_with_keras(t, env, cfg, out, notes, say) if t.run_dir is not None else t for t in targets]
    _note_missing_float32(targets, notes)
    return targets, env
