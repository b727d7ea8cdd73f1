"""The benchmark's records: frozen dataclasses, turned into the results.json layout in one place each.

A :class:`LatencyRow` is one bundle x engine x thread count. It is put together after the timing loop from
the parts measured separately (what the model is, how it was run, its timing, its cold start, its streaming
window cost, the frontend of its bundle); the same-run ratios are added last with :func:`dataclasses.replace`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

__all__ = ["Stats", "ColdStart", "StreamStats", "FrontendResult", "ModelFacts", "EngineFacts", "LatencyRow",
           "Check", "ratio"]


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing (or ``b`` is 0)."""
    return a / b if a is not None and b else None


@dataclasses.dataclass(frozen=True)
class Stats:
    """Milliseconds per call over the timed rounds."""
    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    throughput_per_s: float | None

    @classmethod
    def of(cls, samples_s: Sequence[float]) -> Stats:
        a = np.asarray(samples_s, dtype=np.float64) * 1e3
        p50, p90, p99 = (float(v) for v in np.percentile(a, [50, 90, 99]))
        mean = float(a.mean())
        return cls(n=int(a.size), p50_ms=p50, p90_ms=p90, p99_ms=p99, mean_ms=mean, min_ms=float(a.min()),
                   throughput_per_s=1e3 / mean if mean > 0 else None)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ColdStart:
    """A fresh process that loads the model and returns one result: cold start and peak RSS, or why not."""
    cold_start_s: float | None = None
    peak_rss_mb: float | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class StreamStats:
    """One window per push of one hop through :class:`StreamingDetector` (TFLite rows of bundle models)."""
    e2e_ms_p50: float
    e2e_ms_p99: float
    pipeline_ms_p50: float | None
    stream_invoke_ms_p50: float | None
    e2e_to_invoke: float | None
    pipeline_to_invoke: float | None
    hop_s: float
    rtf: float
    stream_windows: int


@dataclasses.dataclass(frozen=True)
class FrontendResult:
    """The log-mel frontend on 1 s of audio: auricle vs librosa (None where librosa is not installed)."""
    profile: str
    bundles: tuple[str, ...]
    audio_s: float
    frames: int
    n_mels: int
    n_fft: int
    hop_length: int
    settings: dict[str, Any]
    max_abs_diff_db: float | None
    auricle_ms: Stats
    librosa_ms: Stats | None

    @property
    def auricle_to_librosa(self) -> float | None:
        return ratio(self.auricle_ms.p50_ms, self.librosa_ms.p50_ms) if self.librosa_ms else None

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "bundles": list(self.bundles), "audio_s": self.audio_s,
                "frames": self.frames, "n_mels": self.n_mels, "n_fft": self.n_fft, "hop_length": self.hop_length,
                "settings": self.settings, "max_abs_diff_db": self.max_abs_diff_db,
                "auricle_ms": self.auricle_ms.to_dict(),
                "librosa_ms": self.librosa_ms.to_dict() if self.librosa_ms else None,
                "auricle_to_librosa": self.auricle_to_librosa}


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What is measured: one bundle's network (params/MACs from the manifest, else counted on Keras)."""
    bundle: str
    network: str | None
    profile: str
    input_shape: str
    params: int | None
    macs: int | None


@dataclasses.dataclass(frozen=True)
class EngineFacts:
    """How it is run: the engine, thread count and the model file it loads."""
    engine: str
    threads: int
    runtime: str
    model_file: str
    model_sha256: str
    file_mb: float
    note: str


@dataclasses.dataclass(frozen=True)
class LatencyRow:
    """One line of results.csv / one entry of results.json's ``rows`` (fields in the csv's column order)."""
    bundle: str
    network: str | None
    profile: str
    input_shape: str
    engine: str
    threads: int
    runtime: str
    model_file: str
    model_sha256: str
    file_mb: float
    params: int | None
    macs: int | None
    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    throughput_per_s: float | None
    peak_rss_mb: float | None = None
    cold_start_s: float | None = None
    e2e_ms_p50: float | None = None
    e2e_ms_p99: float | None = None
    pipeline_ms_p50: float | None = None
    stream_invoke_ms_p50: float | None = None
    e2e_to_invoke: float | None = None
    pipeline_to_invoke: float | None = None
    hop_s: float | None = None
    rtf: float | None = None
    int8_to_float32: float | None = None
    speedup_vs_keras_fn: float | None = None
    speedup_vs_keras_predict: float | None = None
    frontend_ms: float | None = None
    librosa_ms: float | None = None
    frontend_to_librosa: float | None = None
    note: str = ""
    samples_ms: tuple[float, ...] = ()
    stream_windows: int | None = None

    @classmethod
    def assemble(cls, model: ModelFacts, engine: EngineFacts, samples_s: Sequence[float], *,
                 cold: ColdStart | None, stream: StreamStats | None,
                 frontend: FrontendResult | None) -> LatencyRow:
        parts: dict[str, Any] = {**dataclasses.asdict(model), **dataclasses.asdict(engine),
                                 **Stats.of(samples_s).to_dict(),
                                 "samples_ms": tuple(round(s * 1e3, 5) for s in samples_s)}
        if cold is not None:
            parts.update(cold_start_s=cold.cold_start_s, peak_rss_mb=cold.peak_rss_mb)
        if stream is not None:
            parts.update(dataclasses.asdict(stream))
        if frontend is not None:
            parts.update(frontend_ms=frontend.auricle_ms.p50_ms,
                         librosa_ms=frontend.librosa_ms.p50_ms if frontend.librosa_ms else None,
                         frontend_to_librosa=frontend.auricle_to_librosa)
        return cls(**parts)

    @property
    def key(self) -> tuple[str, str, int]:
        return self.bundle, self.engine, self.threads

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["samples_ms"] = list(self.samples_ms)
        return d


@dataclasses.dataclass(frozen=True)
class Check:
    """A same-run ratio and, where the project set one, its target (``ok`` is None without a target)."""
    bundle: str
    network: str | None
    threads: int
    check: str
    value: float
    target: float | None
    op: str
    ok: bool | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
