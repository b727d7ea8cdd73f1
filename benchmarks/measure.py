"""The things timed once per round, one builder per engine / measurement kind, and the interleaved loop.

Every builder returns probes holding an :class:`Item` (a function that times one call, and the samples the
loop collects); after the loop each probe turns its samples into a typed result. Nothing here writes files.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from benchmarks.config import TFLITE_KINDS
from benchmarks.rows import EngineFacts, FrontendResult, ModelFacts, Stats, StreamStats, ratio
from benchmarks.targets import KerasEnv, Target
from edge.bundle import Bundle
from edge.errors import AuricleError
from edge.features import FeatureConfig, log_mel, model_input_shape, to_model_input
from edge.fileio import sha256_file
from edge.adapters import set_input
from edge.detector import StreamingDetector
from edge.settings import DetectorSettings, RuntimeOptions
from edge.interpreter import make_interpreter

__all__ = ["Item", "EngineProbe", "StreamProbe", "FrontendProbe", "model_facts", "model_input", "keras_probes",
           "tflite_probes", "frontend_probes", "run_interleaved"]

clock = time.perf_counter


@dataclasses.dataclass
class Item:
    """One thing timed once per round: ``once()`` returns the seconds of one call; the loop keeps them."""
    key: str
    once: Callable[[], float]
    samples: list[float] = dataclasses.field(default_factory=list)


def _timed(call: Callable[[], Any]) -> Callable[[], float]:
    def once() -> float:
        t0 = clock()
        call()
        return clock() - t0
    return once


# -- inputs ----------------------------------------------------------------------------------------------
def seeded_audio(n: int, seed: int) -> np.ndarray:
    """A fixed, speech-like test signal: seeded noise plus a few tones with a slow envelope (float32)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000.0
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 1.3 * t) ** 2
    x = 0.05 * rng.standard_normal(n) + env * (0.1 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.sin(2 * np.pi * 1250 * t))
    return x.astype(np.float32)


def model_input(config: FeatureConfig, seed: int) -> np.ndarray:
    """One fixed model input (batch of 1, float32) from seeded audio through the bundle's own frontend."""
    frames = log_mel(seeded_audio(config.clip_samples, seed), config)
    return to_model_input(frames, config)[None].astype(np.float32)


def shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def model_facts(target: Target) -> ModelFacts:
    """The bundle's network; params/MACs from the manifest, else counted on the Keras model."""
    b, fc = target.bundle, target.bundle.feature_config
    net = dict(b.manifest.get("network") or {})
    params, macs = net.get("params"), net.get("macs")
    if target.keras_model is not None:
        if params is None:
            params = int(target.keras_model.count_params())
        if macs is None:
            with contextlib.suppress(Exception):
                from training.models import count_macs
                macs = int(count_macs(target.keras_model))
    return ModelFacts(bundle=b.name, network=net.get("name"), profile=fc.profile,
                      input_shape=shape_str(model_input_shape(fc)), params=params, macs=macs)


# -- engines ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StreamProbe:
    """A :class:`StreamingDetector` fed one hop of audio per round: one window per push."""
    detector: StreamingDetector
    item: Item

    def result(self) -> StreamStats:
        det, e2e = self.detector, Stats.of(self.item.samples)
        st = det.stats()
        inv, pipe = st["invoke_ms_p50"], st["latency_ms_p50"]
        return StreamStats(e2e_ms_p50=e2e.p50_ms, e2e_ms_p99=e2e.p99_ms, pipeline_ms_p50=pipe,
                           stream_invoke_ms_p50=inv, e2e_to_invoke=ratio(e2e.p50_ms, inv),
                           pipeline_to_invoke=ratio(pipe, inv), hop_s=det.hop_seconds,
                           rtf=e2e.p50_ms / (det.hop_seconds * 1e3), stream_windows=det.windows)


@dataclasses.dataclass(frozen=True)
class EngineProbe:
    """One row being measured: the model, the engine, its timed item, and what its cold start needs."""
    model: ModelFacts
    engine: EngineFacts
    item: Item
    kind: str                                # "keras" or a bundle model kind (int8, float32, edgetpu, ...)
    path: Path                               # the file a cold-start process loads
    stream: StreamProbe | None = None


def keras_probes(target: Target, facts: ModelFacts, env: KerasEnv, x: np.ndarray, *, jit: bool
                 ) -> list[EngineProbe]:
    """``keras-predict`` (``model.predict``) and ``keras-fn`` (a compiled ``tf.function``) on one input."""
    tf, model = env.tf, target.keras_model
    keras_file = target.run_dir / "model.keras"
    xt = tf.constant(x)
    fn = tf.function(lambda v: model(v, training=False), jit_compile=jit)
    fn(xt).numpy()                         # trace (and XLA-compile) outside the timed rounds
    model.predict(x, verbose=0)
    sha, mb = sha256_file(keras_file), keras_file.stat().st_size / 2**20
    calls = (("keras-predict", lambda: model.predict(x, verbose=0)), ("keras-fn", lambda: fn(xt).numpy()))
    return [EngineProbe(facts, EngineFacts(engine=engine, threads=env.threads,
                                           runtime=f"tensorflow {tf.__version__}"
                                           + (" XLA" if engine == "keras-fn" and jit else ""),
                                           model_file=str(keras_file), model_sha256=sha, file_mb=mb,
                                           note=f"Keras model from {target.run_source}: {target.run_dir}"),
                        Item(f"{facts.bundle}:{engine}", _timed(call)), "keras", keras_file)
            for engine, call in calls]


class _HopFeeder:
    """Pushes the next hop of a fixed signal into a detector (wrapping round to just after the first clip)."""

    def __init__(self, detector: StreamingDetector, audio: np.ndarray, start: int, hop: int) -> None:
        self.detector, self.audio, self.start, self.hop, self.pos = detector, audio, start, hop, start

    def __call__(self) -> float:
        if self.pos + self.hop > self.audio.size:
            self.pos = self.start
        chunk = self.audio[self.pos:self.pos + self.hop]
        self.pos += self.hop
        t0 = clock()
        self.detector.push(chunk)
        return clock() - t0


def stream_probe(bundle: Bundle, kind: str, threads: int, *, hop: float, runs: int, seed: int) -> StreamProbe:
    fc = bundle.feature_config
    runtime = RuntimeOptions(num_threads=threads, coral=(kind == "edgetpu"), model=kind if kind != "edgetpu" else None)
    det = StreamingDetector(bundle, DetectorSettings.from_bundle(bundle, hop=hop), runtime, latency_history=runs)
    hop_samples = det.hop_frames * fc.hop_length
    audio = seeded_audio(fc.clip_samples + hop_samples * 64, seed + 1)
    det.push(audio[:fc.clip_samples])
    return StreamProbe(det, Item(f"{bundle.name}:stream:{kind}:{threads}",
                                 _HopFeeder(det, audio, fc.clip_samples, hop_samples)))


def _tflite_files(target: Target, coral: bool) -> list[tuple[str, Path]]:
    """(kind, model file) of every TFLite row of a bundle, in the report's engine order."""
    b = target.bundle
    files: list[tuple[str, Path]] = []
    for kind in TFLITE_KINDS:
        if kind in b.models:
            files.append((kind, b.model_path(kind)))
        elif kind == "float32" and target.regenerated_float32 is not None:
            files.append((kind, target.regenerated_float32))
    if coral and "edgetpu" in b.models:
        files.append(("edgetpu", b.model_path("edgetpu")))
    return files


def _tflite_probe(target: Target, facts: ModelFacts, kind: str, path: Path, threads: int, x: np.ndarray, *,
                  hop: float, runs: int, seed: int) -> EngineProbe:
    b = target.bundle
    interp, backend = make_interpreter(path, num_threads=threads, edgetpu=(kind == "edgetpu"))
    set_input(interp, x)
    interp.invoke()
    regenerated = path == target.regenerated_float32
    sha = (b.manifest.get("files") or {}).get(path.name) if path.parent == b.path else None
    engine = EngineFacts(engine="edgetpu" if kind == "edgetpu" else f"tflite-{kind}", threads=threads,
                         runtime=backend, model_file=str(path), model_sha256=sha or sha256_file(path),
                         file_mb=path.stat().st_size / 2**20,
                         note="regenerated from the run (not shipped in the bundle)" if regenerated else "")
    stream = None if regenerated else stream_probe(b, kind, threads, hop=hop, runs=runs, seed=seed)
    return EngineProbe(facts, engine, Item(f"{b.name}:{kind}:{threads}", _timed(interp.invoke)),
                       kind, path, stream)


def tflite_probes(target: Target, facts: ModelFacts, x: np.ndarray, *, threads: Sequence[int], coral: bool,
                  hop: float, runs: int, seed: int, notes: list[str]) -> tuple[list[EngineProbe], bool]:
    """Bare ``invoke()`` per TFLite model and thread count, each with its streaming detector (the regenerated
    float32 model has none: the detector loads bundle models only). Returns the probes and whether the Edge
    TPU is still usable (False once its delegate failed to load)."""
    probes: list[EngineProbe] = []
    for kind, path in _tflite_files(target, coral):
        for n in threads:
            try:
                probes.append(_tflite_probe(target, facts, kind, path, n, x, hop=hop, runs=runs, seed=seed))
            except AuricleError as exc:
                if kind != "edgetpu":
                    raise
                notes.append(f"Edge TPU rows skipped: {exc}")
                return probes, False
    return probes, coral


# -- frontend: auricle vs librosa ------------------------------------------------------------------------
def librosa_fn(config: FeatureConfig) -> Callable[[np.ndarray], np.ndarray] | None:
    """librosa computing the same log-mel numbers as :func:`edge.features.log_mel`, or None without librosa."""
    try:
        import librosa
    except Exception:
        return None

    def run(x: np.ndarray) -> np.ndarray:
        S = librosa.feature.melspectrogram(
            y=x, sr=config.sample_rate, n_fft=config.n_fft, win_length=config.win_length,
            hop_length=config.hop_length, center=False, window="hann", n_mels=config.n_mels, fmin=config.fmin,
            fmax=config.fmax, power=config.power, htk=False, norm="slaney")
        return librosa.power_to_db(S, ref=config.ref_power, amin=config.amin, top_db=None).T
    return run


@dataclasses.dataclass(frozen=True)
class FrontendProbe:
    """The frontend of one setting (shared by ``bundles``) on 1 s of audio, auricle and librosa."""
    config: FeatureConfig
    bundles: tuple[str, ...]
    frames: int
    max_abs_diff_db: float | None
    ours: Item
    theirs: Item | None

    def result(self) -> FrontendResult:
        fc = self.config
        return FrontendResult(profile=fc.profile, bundles=self.bundles, audio_s=1.0, frames=self.frames,
                              n_mels=fc.n_mels, n_fft=fc.n_fft, hop_length=fc.hop_length,
                              settings=fc.frontend_key, max_abs_diff_db=self.max_abs_diff_db,
                              auricle_ms=Stats.of(self.ours.samples),
                              librosa_ms=Stats.of(self.theirs.samples) if self.theirs is not None else None)


def _frontend_probe(fc: FeatureConfig, bundles: tuple[str, ...], seed: int) -> FrontendProbe:
    wave = seeded_audio(fc.sample_rate, seed + 2)[: int(fc.sample_rate)]   # 1 s
    ours = log_mel(wave, fc)
    lib = librosa_fn(fc)
    diff = float(np.abs(ours - lib(wave)).max()) if lib is not None else None
    theirs = Item(f"librosa:{fc.profile}", _timed(lambda: lib(wave))) if lib is not None else None
    return FrontendProbe(fc, bundles, int(ours.shape[0]), diff,
                         Item(f"frontend:{fc.profile}", _timed(lambda: log_mel(wave, fc))), theirs)


def frontend_probes(targets: Sequence[Target], *, seed: int, notes: list[str]) -> list[FrontendProbe]:
    """One probe per distinct frontend setting among the bundles."""
    groups: dict[str, tuple[FeatureConfig, list[str]]] = {}
    for t in targets:
        fc = t.bundle.feature_config
        groups.setdefault(json.dumps(fc.frontend_key, sort_keys=True), (fc, []))[1].append(t.bundle.name)
    probes = [_frontend_probe(fc, tuple(names), seed) for fc, names in groups.values()]
    if any(p.theirs is None for p in probes):
        notes.append("librosa is not installed: frontend compared with nothing (auricle frontend timed alone)")
    return probes


# -- the loop --------------------------------------------------------------------------------------------
def run_interleaved(items: Sequence[Item], *, warmup: int, runs: int, say: Callable[[str], None]) -> float:
    """``warmup`` + ``runs`` rounds; each times every item once, starting one item later each round, so
    drift and noise hit every item alike. Returns the loop's seconds."""
    total = warmup + runs
    say(f"timing: {warmup} warm-up + {runs} rounds x {len(items)} items, interleaved ...")
    t_loop = clock()
    for r in range(total):
        k = r % len(items)
        for item in list(items[k:]) + list(items[:k]):
            s = item.once()
            if r >= warmup:
                item.samples.append(s)
        if (r + 1) % max(1, total // 5) == 0 and r + 1 < total:
            el = clock() - t_loop
            say(f"  round {r + 1}/{total} ({el:.0f} s, ~{el / (r + 1) * (total - r - 1):.0f} s left)")
    return clock() - t_loop
