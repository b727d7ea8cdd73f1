"""Same-run ratios onto the rows, and the project's targets as checks (value, target, ok; ok is None where a
ratio has no target)."""
from __future__ import annotations

import dataclasses
from typing import Sequence

from benchmarks.config import TARGETS
from benchmarks.rows import Check, LatencyRow, ratio

__all__ = ["apply_ratios", "checks_for"]

_ORDER = {"int8 / float32": 0, "keras-fn / int8": 1, "keras-predict / int8": 2, "keras-fn / float32": 3,
          "keras-predict / float32": 4, "end-to-end": 5}
_KERAS_ENGINES = ("keras-fn", "keras-predict")


def _speedups(row: LatencyRow, by: dict[tuple[str, str, int], LatencyRow], keras_threads: int) -> dict[str, float]:
    """speedup_vs_keras_fn / _predict (Keras p50 / TFLite p50) of a TFLite row at the Keras thread count."""
    if row.threads != keras_threads:
        return {}
    found = {}
    for engine in _KERAS_ENGINES:
        k = by.get((row.bundle, engine, keras_threads))
        if k is not None:
            found[f"speedup_vs_{engine.replace('-', '_')}"] = ratio(k.p50_ms, row.p50_ms)
    return found


def apply_ratios(rows: Sequence[LatencyRow], keras_threads: int) -> list[LatencyRow]:
    """The rows with ``speedup_vs_keras_*`` (TFLite rows) and ``int8_to_float32`` (int8 rows) filled in."""
    by = {r.key: r for r in rows}
    out = []
    for r in rows:
        if r.engine.startswith("tflite"):
            extra = _speedups(r, by, keras_threads)
            f32 = by.get((r.bundle, "tflite-float32", r.threads))
            if r.engine == "tflite-int8" and f32 is not None:
                extra["int8_to_float32"] = ratio(r.p50_ms, f32.p50_ms)
            r = dataclasses.replace(r, **extra)
        out.append(r)
    return out


def _check(row: LatencyRow, name: str, value: float | None, target: float | None, op: str,
           detail: str) -> list[Check]:
    if value is None:
        return []
    ok = None if target is None else (value <= target if op == "<=" else value >= target)
    return [Check(bundle=row.bundle, network=row.network, threads=row.threads, check=name, value=value,
                  target=target, op=op, ok=ok, detail=detail)]


def _row_checks(r: LatencyRow, by: dict[tuple[str, str, int], LatencyRow], keras_threads: int) -> list[Check]:
    kind = r.engine.removeprefix("tflite-")
    found: list[Check] = []
    if kind in ("int8", "float32") and r.threads == keras_threads:
        for engine in _KERAS_ENGINES:
            k = by.get((r.bundle, engine, keras_threads))
            if k is None:
                continue
            tkey = "keras_fn_speedup" if engine == "keras-fn" else "keras_predict_speedup"
            found += _check(r, f"{engine} / {kind} (speed-up)", getattr(r, f"speedup_vs_{engine.replace('-', '_')}"),
                            TARGETS[tkey] if kind == "int8" else None, ">=", f"{k.p50_ms:.3f} vs {r.p50_ms:.3f} ms")
    if kind != "int8":
        return found
    f32 = by.get((r.bundle, "tflite-float32", r.threads))
    if f32 is not None:
        found += _check(r, "int8 / float32 (TFLite p50)", r.int8_to_float32,
                        TARGETS["int8_vs_float32"].get(str(r.network)), "<=",
                        f"{r.p50_ms:.3f} vs {f32.p50_ms:.3f} ms")
    if r.e2e_to_invoke is not None:
        front = r.e2e_ms_p50 - r.pipeline_ms_p50
        found += _check(r, "end-to-end / invoke (streaming, per window)", r.e2e_to_invoke, TARGETS["e2e_vs_invoke"],
                        "<=", f"{r.e2e_ms_p50:.3f} vs {r.stream_invoke_ms_p50:.3f} ms; without the frontend "
                              f"{r.pipeline_to_invoke:.3f}x; frontend ~{front:.3f} ms per hop")
    return found


def checks_for(rows: Sequence[LatencyRow], keras_threads: int) -> list[Check]:
    """The checks of rows that :func:`apply_ratios` filled in, sorted by bundle, threads and kind."""
    by = {r.key: r for r in rows}
    checks = [c for r in rows if r.engine.startswith("tflite") for c in _row_checks(r, by, keras_threads)]
    checks.sort(key=lambda c: (c.bundle, c.threads,
                               next((v for k, v in _ORDER.items() if c.check.startswith(k)), 9)))
    return checks
