"""What a benchmark run measures (:class:`BenchConfig`) and the constants the report is judged by."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from edge.errors import AuricleError
from edge.detector import DEFAULT_HOP

__all__ = ["BenchConfig", "ENGINES", "TFLITE_KINDS", "TARGETS", "DEFAULT_RUNS", "DEFAULT_WARMUP",
           "DEFAULT_THREADS", "COLD_CHOICES", "F32_FILE"]

ENGINES = ("keras-predict", "keras-fn", "tflite-float32", "tflite-float16", "tflite-dynamic", "tflite-int8",
           "edgetpu")
TFLITE_KINDS = ("float32", "float16", "dynamic", "int8")      # bundle model kinds run on the CPU
DEFAULT_RUNS = 50
DEFAULT_WARMUP = 5
DEFAULT_THREADS = (1, 2)
COLD_CHOICES = ("all", "tflite", "none")
F32_FILE = "model_float32.tflite"
# The project's latency targets (the reference for int8/float32: ai-edge-litert, 2 threads, 224x224x3 input).
TARGETS = {
    "int8_vs_float32": {"mobilenet": 0.45, "resnet18": 0.25},   # int8 p50 / float32 p50 <=
    "keras_fn_speedup": 8.0,                                     # keras-fn p50 / int8 p50 >=
    "keras_predict_speedup": 25.0,                               # keras-predict p50 / int8 p50 >=
    "e2e_vs_invoke": 1.10,                                       # end-to-end per window / bare invoke <=
}


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    bundles: tuple[str, ...] = ()            # bundle folders; empty: every bundle under firmware_assets/
    runs_dirs: tuple[str, ...] = ()          # --run folders (Keras models)
    threads: tuple[int, ...] = DEFAULT_THREADS
    keras_threads: int | None = None         # None: max(threads)
    runs: int = DEFAULT_RUNS
    warmup: int = DEFAULT_WARMUP
    coral: bool = False
    out: str = "results"
    seed: int = 0
    pin: tuple[int, ...] = ()                # CPU ids to pin this process (and children) to
    keras: bool = True                       # Keras rows (explicit --run and auto-discovered runs)
    keras_jit: bool = False                  # keras-fn with XLA (jit_compile=True)
    regenerate: bool = True                  # regenerate a float32 model listed under regenerable_files
    cold: str = "all"                        # peak RSS + cold start subprocesses: all | tflite | none
    hop: float = DEFAULT_HOP                 # streaming hop for the end-to-end rows (seconds)
    quiet: bool = False

    def __post_init__(self) -> None:
        if not self.threads or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in self.threads):
            raise AuricleError(f"--threads {list(self.threads)} must be whole numbers >= 1, e.g. --threads 1 2 4")
        if self.keras_threads is not None and self.keras_threads < 1:
            raise AuricleError(f"--keras-threads {self.keras_threads} must be >= 1")
        if self.runs < 3:
            raise AuricleError(f"--runs {self.runs} is too few for p50/p90/p99; use at least 3 (default "
                               f"{DEFAULT_RUNS})")
        if self.warmup < 0:
            raise AuricleError(f"--warmup {self.warmup} must be >= 0")
        if self.cold not in COLD_CHOICES:
            raise AuricleError(f"--cold {self.cold!r} must be one of {', '.join(COLD_CHOICES)}")
        if not (math.isfinite(self.hop) and self.hop > 0):
            raise AuricleError(f"--hop {self.hop} must be a positive number of seconds")

    @property
    def keras_thread_count(self) -> int:
        return self.keras_threads or max(self.threads)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["keras_threads"] = self.keras_thread_count
        return d
