"""Training throughput of the edge MobileNet per Keras backend: ``python -m benchmarks.train_throughput``.

The network ``training.train`` trains by default (MobileNet, edge profile, width 0.5, 97x40x1 input, here 12
classes, batch 64, AdamW, class weights) on synthetic inputs: random normal dB windows of the right shape in a
:class:`~training.featureset.FeatureSet` with a ``_silence_`` class, so every augmentation runs (time shift,
gain, noise mixing, SpecAugment). No data files are read.

Each setting runs in its own child process with ``KERAS_BACKEND`` set (a backend is chosen once per process)
and reports clips/s from the median step time of ``--steps`` steps after ``--warmup`` untimed ones (robust to
another process taking a core for a while; the mean over the steps is in the JSON too):

* ``model``: ``model.fit`` on pre-made batches (the network and optimiser alone);
* ``fit``: ``model.fit`` on ``AugmentedBatches`` exactly as training uses it (loader threads included);
* the first step's seconds (tracing, XLA or JAX compilation) separately.

A ``loader`` row times ``AugmentedBatches.__getitem__`` alone (1 thread, and 2 threads calling it at once), so
one can see whether the model or the input pipeline limits training. Settings are interleaved over
``--repeats`` rounds and the median is reported (the machine may be shared; the load average is printed).
The ratio is to the current default: TensorFlow, ``jit_compile="auto"``, the default loader threads.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from edge.errors import AuricleError, fail, run_cli

PROG = "python -m benchmarks.train_throughput"
BACKENDS = ("tensorflow", "jax", "torch")
NETWORK, PROFILE, WIDTH, CLASSES, BATCH = "mobilenet", "edge", 0.5, 12, 64
CLIPS = 2048                     # synthetic training clips (the loader draws batches from them)
MARK = "TRAIN_THROUGHPUT_RESULT "


@dataclasses.dataclass(frozen=True)
class Setting:
    """One measured configuration (one child process)."""

    backend: str
    jit_compile: bool | str = "auto"
    loader_threads: int | None = None     # None: training.train's default
    label: str = "default"

    @property
    def key(self) -> str:
        return f"{self.backend}/{self.label}"


DEFAULT = Setting("tensorflow")


def settings_for(backends: Sequence[str], knobs: bool) -> list[Setting]:
    """The default first, then each backend's default, then (``knobs``) the TensorFlow variations."""
    out = [Setting(b) for b in backends]
    if knobs and "tensorflow" in backends:
        out += [Setting("tensorflow", jit_compile=True, label="jit_compile=True"),
                Setting("tensorflow", jit_compile=False, label="jit_compile=False"),
                Setting("tensorflow", loader_threads=1, label="loader threads 1"),
                Setting("tensorflow", loader_threads=2, label="loader threads 2")]
    return out


# -- synthetic data ------------------------------------------------------------------------------
def synthetic_featureset(clips: int = CLIPS, seed: int = 0):
    """A FeatureSet of random normal dB windows (edge profile, one window per clip, ``_silence_`` present)."""
    from edge.features import edge_config
    from training.featureset import FeatureSet, pad_frames_for

    rng = np.random.default_rng(seed)
    config = edge_config(norm_mean=-40.0, norm_std=15.0)
    pad = pad_frames_for(config)
    padded = rng.normal(-40.0, 15.0, size=(clips, config.n_frames + 2 * pad, config.n_mels)).astype(np.float32)
    names = ["_silence_"] + [f"word{i}" for i in range(1, CLASSES)]
    y = rng.integers(0, CLASSES, size=clips)
    return FeatureSet(config=config, label_names=names, padded=padded, y=y,
                      split=np.full(clips, "train"), paths=np.asarray([f"c{i}.wav" for i in range(clips)]),
                      pad_frames=pad)


def augmented_batches(fs, seed: int = 0):
    """The training loop's own batches (:func:`training.loop.make_batches`) over every clip of ``fs``,
    augmentation on, class weights."""
    from training.config import TrainConfig
    from training.featureset import class_weights
    from training.loop import make_batches

    cw = class_weights(fs.y, CLASSES)
    weights = np.asarray([cw[i] for i in range(CLASSES)], dtype=np.float32)
    cfg = TrainConfig(batch_size=BATCH, augment=True, seed=seed)
    return make_batches(fs, np.arange(len(fs.y)), cfg, sample_weights=weights)


def fixed_batches(source, count: int):
    """A PyDataset of ``count`` batches made once by ``source`` (the model's cost without the loader's)."""
    import keras

    batches = [source[i % len(source)] for i in range(count)]

    class Fixed(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)

        def __len__(self):
            return len(batches)

        def __getitem__(self, i):
            return batches[i]

    return Fixed()


# -- child side: one setting, one backend, one process ------------------------------------------
def _compiled(fs, jit_compile: bool | str):
    """The network, optimiser, schedule and loss exactly as the training loop compiles them."""
    from training.config import TrainConfig
    from training.loop import compiled_model, seed_and_precision

    cfg = TrainConfig(network=NETWORK, profile=PROFILE, width=WIDTH, batch_size=BATCH, jit_compile=jit_compile)
    seed_and_precision(cfg)
    return compiled_model(fs, cfg, train_size=len(fs.y))


def timed_fit(model, data, steps: int, warmup: int) -> dict[str, float]:
    """``model.fit`` over ``warmup + steps`` batches: the first step's seconds and clips/s after the warm-up."""
    import keras

    stamps: list[float] = []

    class Stamp(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            stamps.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

    model.fit(data, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[Stamp()])
    end = time.perf_counter()        # fit has returned: every step has finished
    # a callback that is not async_safe makes Keras turn each step's logs into floats: every backend syncs per step
    step_s = np.diff(stamps[warmup:warmup + steps + 1])
    return {"first_step_s": stamps[1] - stamps[0], "clips_per_s": BATCH / float(np.median(step_s)),
            "mean_clips_per_s": steps * BATCH / (end - stamps[warmup])}


def measure_training(setting: Setting, steps: int, warmup: int) -> dict[str, Any]:
    """In a child process: model alone (its first step is the compile), then the full training input path."""
    import keras

    fs = synthetic_featureset(max(CLIPS, BATCH * (warmup + steps)))
    data = augmented_batches(fs)
    model = _compiled(fs, setting.jit_compile)
    alone = timed_fit(model, fixed_batches(data, warmup + steps), steps, warmup)
    full = timed_fit(model, data, steps, warmup)
    return {"backend": keras.backend.backend(), "jit_compile": str(getattr(model, "jit_compile", "?")),
            "loader_threads": data.workers, "first_step_s": alone["first_step_s"],
            "model_clips_per_s": alone["clips_per_s"], "fit_clips_per_s": full["clips_per_s"],
            "model_mean_clips_per_s": alone["mean_clips_per_s"], "fit_mean_clips_per_s": full["mean_clips_per_s"],
            "keras": keras.__version__}


def measure_loader(batches: int) -> dict[str, Any]:
    """``AugmentedBatches.__getitem__`` alone: clips/s from one thread, and from two threads at once."""
    fs = synthetic_featureset(max(CLIPS, BATCH * batches))
    data = augmented_batches(fs)
    data[0]
    t0 = time.perf_counter()
    for i in range(batches):
        data[i]
    one = batches * BATCH / (time.perf_counter() - t0)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(data.__getitem__, range(2)))
        t0 = time.perf_counter()
        list(pool.map(data.__getitem__, range(batches)))
        two = batches * BATCH / (time.perf_counter() - t0)
    return {"loader_1_thread": one, "loader_2_threads": two}


def child_main(spec: dict[str, Any]) -> int:
    if spec["kind"] == "loader":
        result = measure_loader(spec["steps"])
    else:
        result = measure_training(Setting(**spec["setting"]), spec["steps"], spec["warmup"])
    print(MARK + json.dumps(result), flush=True)
    return 0


# -- parent side: children, interleaved rounds, the table ---------------------------------------
def installed(backend: str) -> bool:
    return importlib.util.find_spec(backend) is not None


def run_child(spec: dict[str, Any], backend: str, loader_threads: int | None, timeout: float) -> dict[str, Any]:
    """One child process; its result, or ``{"error": ...}`` with the reason."""
    env = {**os.environ, "KERAS_BACKEND": backend}
    env.pop("AURICLE_LOADER_THREADS", None)
    if loader_threads is not None:
        env["AURICLE_LOADER_THREADS"] = str(loader_threads)
    cmd = [sys.executable, "-m", "benchmarks.train_throughput", "--child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {proc.returncode}: {tail[:200]}"}


def _median_result(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the numeric fields over the rounds that worked (with the spread of each); else the error."""
    good = [r for r in results if "error" not in r]
    if not good:
        return results[-1] if results else {"error": "not run"}
    out = dict(good[0])
    for key, value in good[0].items():
        if isinstance(value, float):
            values = [r[key] for r in good]
            out[key] = statistics.median(values)
            out[key + "_range"] = [min(values), max(values)]
    out["rounds"] = len(good)
    return out


def run_all(settings: list[Setting], steps: int, warmup: int, repeats: int, timeout: float,
            progress: bool = True) -> tuple[dict[str, dict], dict[str, Any]]:
    """Every setting ``repeats`` times, interleaved (the order reversed every other round), plus the loader."""
    runs: dict[str, list[dict]] = {s.key: [] for s in settings}
    loader: list[dict] = []
    for r in range(repeats):
        order = settings if r % 2 == 0 else settings[::-1]
        for s in order:
            spec = {"kind": "train", "setting": dataclasses.asdict(s), "steps": steps, "warmup": warmup}
            runs[s.key].append(run_child(spec, s.backend, s.loader_threads, timeout))
            if progress:
                print(f"round {r + 1}/{repeats} {s.key}: {_brief(runs[s.key][-1])}", flush=True)
        loader.append(run_child({"kind": "loader", "steps": steps + warmup}, "tensorflow", None, timeout))
        if progress:
            print(f"round {r + 1}/{repeats} loader: {_brief(loader[-1])}", flush=True)
    return {k: _median_result(v) for k, v in runs.items()}, _median_result(loader)


def _brief(result: dict[str, Any]) -> str:
    if "error" in result:
        return result["error"]
    if "fit_clips_per_s" in result:
        return (f"fit {result['fit_clips_per_s']:.1f} clips/s, model alone {result['model_clips_per_s']:.1f}, "
                f"first step {result['first_step_s']:.1f} s")
    return f"{result['loader_1_thread']:.0f} clips/s (1 thread), {result['loader_2_threads']:.0f} (2 threads)"


def table_lines(settings: list[Setting], results: dict[str, dict], loader: dict[str, Any],
                skipped: list[str]) -> list[str]:
    """The markdown table: clips/s of training (``fit``) and of the model alone, first step, ratio to default."""
    base = results.get(DEFAULT.key, {})
    lines = ["| backend | setting | jit_compile | loader threads | fit clips/s | model alone clips/s | "
             "first step s | fit x default |", "|---|---|---|---|---:|---:|---:|---:|"]
    for s in settings:
        r = results[s.key]
        if "error" in r:
            lines.append(f"| {s.backend} | {s.label} | | | failed: {r['error']} | | | |")
            continue
        ratio = (f"{r['fit_clips_per_s'] / base['fit_clips_per_s']:.2f}" if "fit_clips_per_s" in base else "n/a")
        lines.append(f"| {s.backend} | {s.label} | {r['jit_compile']} | {r['loader_threads']} | "
                     f"{_spread(r, 'fit_clips_per_s')} | {_spread(r, 'model_clips_per_s')} | "
                     f"{r['first_step_s']:.1f} | {ratio} |")
    if "error" in loader:
        lines.append(f"| loader only | __getitem__ | | | failed: {loader['error']} | | | |")
    else:
        lines.append(f"| loader only | __getitem__, 1 thread | | 1 | {_spread(loader, 'loader_1_thread')} | | | |")
        lines.append(f"| loader only | __getitem__, 2 threads | | 2 | {_spread(loader, 'loader_2_threads')} | | | |")
    lines += [f"| {b} | not installed (skipped) | | | | | | |" for b in skipped]
    return lines


def _spread(r: dict[str, Any], key: str) -> str:
    lo, hi = r.get(key + "_range", [r[key], r[key]])
    return f"{r[key]:.1f}" + (f" ({lo:.1f}-{hi:.1f})" if hi > lo else "")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (not argparse's usage block)
        fail(f"{message}; see {PROG} --help")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Training clips/s of the edge MobileNet (width 0.5, 97x40x1, 12 classes, "
                "batch 64) per installed Keras backend, each in its own process, on synthetic inputs; plus the "
                "input pipeline alone and TensorFlow's jit_compile / loader-thread settings.")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                   help="backends to measure (one not installed is skipped and said so)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per measurement (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first, the compile among them (default 3)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the median is reported (default 2)")
    p.add_argument("--no-knobs", action="store_true", help="only each backend's default setting")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per child process (default 900)")
    p.add_argument("--out", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p


def _check(args: argparse.Namespace) -> None:
    for name in ("steps", "warmup", "repeats"):
        low = 0 if name == "warmup" else 1
        if getattr(args, name) < low:
            raise AuricleError(f"--{name} must be >= {low}, got {getattr(args, name)}")
    if not args.timeout > 0:
        raise AuricleError(f"--timeout must be > 0 seconds, got {args.timeout}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        return child_main(json.loads(args.child))
    _check(args)
    from edge.fileio import write_json_atomic
    from edge.sysinfo import cpu_description

    backends = [b for b in dict.fromkeys(args.backends) if installed(b)]
    skipped = [b for b in dict.fromkeys(args.backends) if b not in backends]
    if not backends:
        raise AuricleError(f"none of {', '.join(args.backends)} is installed; pip install tensorflow-cpu (or jax)")
    settings = settings_for(backends, knobs=not args.no_knobs)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    results, loader = run_all(settings, args.steps, args.warmup, args.repeats, args.timeout)
    load1 = os.getloadavg()
    print(f"\n{cpu_description()}; batch {BATCH}; clips/s from the median of {args.steps} step times after "
          f"{args.warmup} warm-up steps; median (range) of "
          f"{args.repeats} interleaved rounds; load average {load0[0]:.2f} before, {load1[0]:.2f} after; "
          f"{time.perf_counter() - t0:.0f} s\n")
    print("\n".join(table_lines(settings, results, loader, skipped)), flush=True)
    if args.out:
        write_json_atomic(args.out, {"cpu": cpu_description(), "steps": args.steps, "warmup": args.warmup,
                                     "repeats": args.repeats, "load_average": [load0, load1], "skipped": skipped,
                                     "results": results, "loader": loader})
    return 0


if __name__ == "__main__":
    run_cli(main)
