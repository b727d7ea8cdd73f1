"""Writing a benchmark's results: results.json, results.csv, results.md, latency.png and the stdout summary.

Everything here reads the results.json document (a plain dict), never the measuring code's objects, so a
report can be rendered again from a saved results.json. Every file is written atomically.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from benchmarks.config import ENGINES
from edge.fileio import atomic_writer, write_json_atomic, write_text_atomic

__all__ = ["CSV_FIELDS", "markdown", "csv_text", "plot", "write_outputs", "summary_lines"]

DEFAULT_COMMAND = "python -m benchmarks.latency"
# results.csv's columns, in order (read by people and spreadsheets: keep names and order stable)
CSV_FIELDS = (
    "bundle", "network", "profile", "input_shape", "engine", "threads", "runtime", "model_file", "model_sha256",
    "file_mb",
    "params", "macs", "n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "throughput_per_s",
    "peak_rss_mb", "cold_start_s", "e2e_ms_p50", "e2e_ms_p99", "pipeline_ms_p50", "stream_invoke_ms_p50",
    "e2e_to_invoke", "pipeline_to_invoke", "hop_s", "rtf", "int8_to_float32", "speedup_vs_keras_fn",
    "speedup_vs_keras_predict", "frontend_ms", "librosa_ms", "frontend_to_librosa", "note",
)


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.{nd}f}" if abs(v) >= 0.1 or v == 0 else f"{v:.3f}"
    return str(v)


def _big(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


# -- results.md ------------------------------------------------------------------------------------------
def _machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    return (f"CPU: **{m['cpu']}** ({m['cores']} cores, {m['machine']}), Python {m['python']}, "
            f"{m['tflite_backend']} {m.get(str(m['tflite_backend']).replace('.', '_')) or ''}".rstrip()
            + (f", TensorFlow {m['tensorflow']}" if m.get("tensorflow_runtime") else "")
            + f"; {result['config']['runs']} interleaved runs after {result['config']['warmup']} warm-up, "
              f"load average {m['load_average_start'][0] if m.get('load_average_start') else '-'}.")


def _latency_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| bundle | engine | thr | p50 ms | p90 | p99 | mean | inf/s | MB | RSS MB | cold s | e2e ms | RTF |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append("| " + " | ".join([
            r["bundle"], r["engine"], str(r["threads"]), _fmt(r["p50_ms"]), _fmt(r["p90_ms"]), _fmt(r["p99_ms"]),
            _fmt(r["mean_ms"]), _fmt(r["throughput_per_s"], 1), _fmt(r["file_mb"]), _fmt(r.get("peak_rss_mb"), 0),
            _fmt(r.get("cold_start_s")), _fmt(r.get("e2e_ms_p50")), _fmt(r.get("rtf"), 3)]) + " |")
    return lines


def _network_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| bundle | network | input | params | MACs | log-mel 1 s: auricle ms | librosa ms | ratio |",
             "|---|---|---|--:|--:|--:|--:|--:|"]
    first: dict[str, dict[str, Any]] = {}
    for r in rows:
        first.setdefault(r["bundle"], r)
    for r in first.values():
        lines.append(f"| {r['bundle']} | {r['network'] or '-'} | {r['input_shape']} | {_big(r['params'])} | "
                     f"{_big(r['macs'])} | {_fmt(r.get('frontend_ms'), 3)} | {_fmt(r.get('librosa_ms'), 3)} | "
                     f"{_fmt(r.get('frontend_to_librosa'), 3)} |")
    return lines


def _checks_table(checks: list[dict[str, Any]]) -> list[str]:
    lines = ["| bundle | thr | ratio (same run) | measured | target | |", "|---|--:|---|--:|--:|---|"]
    for c in checks:
        verdict = "-" if c["ok"] is None else ("ok" if c["ok"] else "**MISS**")
        target = "-" if c["target"] is None else f"{c['op']} {c['target']:g}"
        lines.append(f"| {c['bundle']} | {c['threads']} | {c['check']} | {c['value']:.3f} | {target} | {verdict} |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    lines = [_machine_line(result), ""] + _latency_table(rows) + [""] + _network_table(rows)
    if result["checks"]:
        lines += [""] + _checks_table(result["checks"])
    lines += ["", "p50/p90/p99/mean: one inference (TFLite: bare `invoke()`; Keras: `model.predict` / compiled "
              "`tf.function`), batch 1. inf/s = 1000 / mean. RSS and cold start: a fresh process that loads only "
              "the runtime and the model and returns one result. e2e: one streaming window through "
              "`StreamingDetector.push` (frontend included); RTF = e2e / hop. Reproduce: "
              f"`{result.get('command') or DEFAULT_COMMAND}`."]
    if result["notes"]:
        lines += [""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


# -- results.csv -----------------------------------------------------------------------------------------
def csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v))
                    for k, v in r.items() if k in CSV_FIELDS})
    return buf.getvalue()


# -- latency.png -----------------------------------------------------------------------------------------
def _series(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(engine, threads) pairs in the report's engine order."""
    return sorted({(r["engine"], r["threads"]) for r in rows},
                  key=lambda s: (ENGINES.index(s[0]) if s[0] in ENGINES else 99, s[1]))


def _draw_bars(ax: Any, cmap: Any, rows: list[dict[str, Any]], bundles: list[str]) -> int:
    series = _series(rows)
    by = {(r["bundle"], r["engine"], r["threads"]): r for r in rows}
    width = 0.8 / max(1, len(series))
    engines = list(dict.fromkeys(s[0] for s in series))
    threads = sorted({s[1] for s in series})
    hatches = ["", "//", "..", "xx", "\\\\"]
    for si, (engine, thr) in enumerate(series):
        hits = [(bi, by[(b, engine, thr)]) for bi, b in enumerate(bundles) if (b, engine, thr) in by]
        if not hits:
            continue
        ax.bar([bi - 0.4 + width * (si + 0.5) for bi, _ in hits], [r["p50_ms"] for _, r in hits], width * 0.95,
               yerr=[[0.0] * len(hits), [max(0.0, r["p99_ms"] - r["p50_ms"]) for _, r in hits]], capsize=1.5,
               error_kw={"elinewidth": 0.7}, color=cmap(engines.index(engine) % 10),
               hatch=hatches[threads.index(thr) % len(hatches)], edgecolor="white", linewidth=0.3,
               label=f"{engine} x{thr}")
    return len(series)


def plot(result: dict[str, Any], path: Path) -> bool:
    """Grouped bars (one group per bundle, one bar per engine x threads), log scale: p50 with a p50-p99
    whisker. False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return False
    rows = result["rows"]
    bundles = list(dict.fromkeys(r["bundle"] for r in rows))
    n_series = len(_series(rows))
    fig, ax = plt.subplots(figsize=(max(7.0, 1.0 + 0.3 * n_series * len(bundles)),
                                    4.6 + 0.22 * math.ceil(n_series / 5)))
    try:
        _draw_bars(ax, plt.get_cmap("tab10"), rows, bundles)
        ax.set_yscale("log")
        ax.set_xticks(range(len(bundles)))
        ax.set_xticklabels(bundles, fontsize=8)
        ax.set_ylabel("ms per inference (p50, whisker to p99)")
        ax.set_title(f"auricle latency -- {result['machine']['cpu']}", fontsize=9)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=min(5, n_series), loc="upper center", bbox_to_anchor=(0.5, -0.08),
                  frameon=False)
        fig.tight_layout()
        with atomic_writer(path, binary=True) as fh:
            fig.savefig(fh, format="png", dpi=120)
    finally:
        plt.close(fig)
    return True


# -- all of it -------------------------------------------------------------------------------------------
def write_outputs(result: dict[str, Any], out: Path) -> None:
    """latency.png, results.csv, results.md and results.json into ``out`` (a missing matplotlib is a note)."""
    if not plot(result, out / "latency.png"):
        result["notes"].append("matplotlib is not installed: latency.png not written")
    write_text_atomic(out / "results.csv", csv_text(result["rows"]))
    write_text_atomic(out / "results.md", markdown(result))
    write_json_atomic(out / "results.json", result)


def summary_lines(result: dict[str, Any], out: Path) -> list[str]:
    m = result["machine"]
    lines = [f"{m['cpu']} ({m['cores']} cores), {m['tflite_backend']}, {result['config']['runs']} runs; "
             f"load average {m.get('load_average_start')} -> {m.get('load_average_end')}"]
    for r in result["rows"]:
        extra = f", e2e {r['e2e_ms_p50']:.2f} ms (RTF {r['rtf']:.3f})" if r.get("e2e_ms_p50") is not None else ""
        lines.append(f"  {r['bundle']:<22} {r['engine']:<15} x{r['threads']}: p50 {r['p50_ms']:8.3f} ms  "
                     f"p99 {r['p99_ms']:8.3f} ms{extra}")
    for f in result["frontends"]:
        lib = f"librosa {f['librosa_ms']['p50_ms']:.3f} ms, ratio {f['auricle_to_librosa']:.3f}" \
            if f.get("librosa_ms") else "librosa not installed"
        lines.append(f"  log-mel 1 s ({f['profile']}): auricle {f['auricle_ms']['p50_ms']:.3f} ms, {lib}")
    misses = [c for c in result["checks"] if c["ok"] is False]
    ok = sum(1 for c in result["checks"] if c["ok"])
    lines.append(f"targets: {ok} ok, {len(misses)} missed" + (":" if misses else ""))
    for c in misses:
        lines.append(f"  MISS {c['bundle']} x{c['threads']} {c['check']}: {c['value']:.3f} (target {c['op']} "
                     f"{c['target']:g}; {c['detail']})")
    lines += [f"note: {n}" for n in result["notes"]]
    lines.append(f"wrote {out / 'results.json'}, results.csv, results.md"
                 + (", latency.png" if (out / "latency.png").is_file() else ""))
    return lines
