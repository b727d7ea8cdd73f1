"""``python -m benchmarks.latency`` on tiny bundles made in this session: every output file exists with sane values.

Nothing here compares a time with a threshold (machines are shared and noisy, see DESIGN.md "Measuring"):
values are checked for being present, finite and positive, percentiles for being ordered. Speed targets are
the benchmark's own report.
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks import latency, report
from edge.bundle import load_bundle
from edge.errors import AuricleError

import tiny_bundle  # tests/ is on sys.path through setup.cfg's [tool:pytest] pythonpath

REPO = Path(__file__).resolve().parent.parent

FILES = ("results.json", "results.csv", "results.md", "latency.png")


@pytest.fixture(scope="session")
def bench_edge_bundle(tmp_path_factory):
    # speed does not depend on the weights: one epoch, no shifts (seconds to build)
    return tiny_bundle.cached_bundle(tmp_path_factory, "bench_edge", train_clips_dir=tiny_bundle.DATA_DIR,
                                     epochs=1, shifts=(0.0,))


@pytest.fixture(scope="session")
def seed_bundle(tmp_path_factory):  # the same key as tests/test_runtime.py: built once per session
    return tiny_bundle.cached_bundle(tmp_path_factory, "seed", profile="seed", train_clips_dir=tiny_bundle.DATA_DIR,
                                     epochs=2, shifts=(0.0,))


@pytest.fixture(scope="session")
def keras_run(tmp_path_factory, bench_edge_bundle):
    """A run folder for the edge bundle (same folder name, so ``--run`` matches it): an untrained Keras model
    of the right input and output shape -- enough for the Keras rows."""
    import tiny_run
    from edge.features import model_input_shape

    bundle = load_bundle(bench_edge_bundle)
    run = tmp_path_factory.mktemp("runs") / Path(bench_edge_bundle).name
    run.mkdir()
    model = tiny_run.build_tiny_model(model_input_shape(bundle.feature_config), len(bundle.labels))
    model.save(run / "model.keras")
    return run


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _check_row(r: dict, runs: int, *, cold: bool = True) -> None:
    where = f"{r['bundle']} {r['engine']} x{r['threads']}"
    assert r["n"] == runs, where
    keys = ["p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "throughput_per_s", "file_mb", "params"]
    for k in keys + (["peak_rss_mb", "cold_start_s"] if cold else []):
        assert _positive(r[k]), f"{where}: {k}={r[k]!r}"
    if not cold:
        assert r["peak_rss_mb"] is None and r["cold_start_s"] is None, where
    assert r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"], where
    assert len(r["samples_ms"]) == runs and all(_positive(s) for s in r["samples_ms"]), where
    assert Path(r["model_file"]).is_file() and len(r["model_sha256"]) == 64, where
    if r["engine"].startswith("tflite"):
        for k in ("e2e_ms_p50", "e2e_ms_p99", "pipeline_ms_p50", "stream_invoke_ms_p50", "e2e_to_invoke",
                  "pipeline_to_invoke", "hop_s", "rtf"):
            assert _positive(r[k]), f"{where}: {k}={r[k]!r}"
        assert r["e2e_ms_p50"] <= r["e2e_ms_p99"], where
        assert r["stream_windows"] == 1 + 1 + runs, where      # priming + warm-up + timed: one window per push
        assert r["runtime"] in ("ai_edge_litert", "tflite_runtime", "tensorflow.lite"), where


def test_benchmark_writes_every_output_with_sane_values(tmp_path, bench_edge_bundle, seed_bundle, keras_run):
    out = tmp_path / "results"
    runs = 3
    # --cold tflite: a Keras cold start costs a TensorFlow import (tests/test_benchmark.py::test_keras_cold_start)
    code = latency.main(["--bundles", str(bench_edge_bundle), str(seed_bundle), "--run", str(keras_run),
                         "--runs", str(runs), "--warmup", "1", "--threads", "1", "2", "--out", str(out), "--quiet",
                         "--cold", "tflite"])
    assert code == 0
    for name in FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    res = json.loads((out / "results.json").read_text())
    edge_name, seed_name = load_bundle(bench_edge_bundle).name, load_bundle(seed_bundle).name
    rows = res["rows"]
    got = {(r["bundle"], r["engine"], r["threads"]) for r in rows}
    want = {(edge_name, "keras-predict", 2), (edge_name, "keras-fn", 2)}
    want |= {(b, f"tflite-{k}", t) for b in (edge_name, seed_name) for k in ("float32", "int8") for t in (1, 2)}
    assert got == want
    for r in rows:
        _check_row(r, runs, cold=not r["engine"].startswith("keras"))
    keras_rows = [r for r in rows if r["engine"].startswith("keras")]
    assert all(r["note"].startswith("Keras model from --run") for r in keras_rows)

    # frontends: one per profile, the same numbers as librosa, both timed
    assert sorted(f["profile"] for f in res["frontends"]) == ["edge", "seed"]
    for f in res["frontends"]:
        assert f["max_abs_diff_db"] < 1e-3
        assert _positive(f["auricle_ms"]["p50_ms"]) and _positive(f["librosa_ms"]["p50_ms"])
        assert f["auricle_ms"]["p50_ms"] <= f["auricle_ms"]["p99_ms"]
        assert _positive(f["auricle_to_librosa"])
    assert all(_positive(r["frontend_ms"]) and _positive(r["librosa_ms"]) for r in rows)

    # same-run ratios: int8/float32 per bundle and thread count, Keras speed-ups at the Keras thread count,
    # end-to-end / invoke per int8 row; the tiny network has no int8/float32 target (ok is None)
    checks = {(c["bundle"], c["threads"], c["check"]): c for c in res["checks"]}
    for b in (edge_name, seed_name):
        for t in (1, 2):
            c = checks[(b, t, "int8 / float32 (TFLite p50)")]
            assert _positive(c["value"]) and c["target"] is None and c["ok"] is None
            e = checks[(b, t, "end-to-end / invoke (streaming, per window)")]
            assert _positive(e["value"]) and e["target"] == latency.TARGETS["e2e_vs_invoke"]
            assert isinstance(e["ok"], bool)
    for engine in ("keras-fn", "keras-predict"):
        c = checks[(edge_name, 2, f"{engine} / int8 (speed-up)")]
        assert _positive(c["value"]) and isinstance(c["ok"], bool)
        c = checks[(edge_name, 2, f"{engine} / float32 (speed-up)")]
        assert _positive(c["value"]) and c["ok"] is None
    assert not any(c["check"].startswith("keras") for c in res["checks"]
                   if c["threads"] == 1 or c["bundle"] == seed_name)
    for r in rows:
        if r["bundle"] == edge_name and r["engine"].startswith("tflite") and r["threads"] == 2:
            assert _positive(r["speedup_vs_keras_fn"]) and _positive(r["speedup_vs_keras_predict"])
        if r["engine"] == "tflite-int8":
            assert _positive(r["int8_to_float32"])

    m = res["machine"]
    assert m["cpu"] and m["cores"] >= 1 and m["python"] and m["tflite_backend"] and m["numpy"]
    assert m["openblas_num_threads"] is not None
    assert res["config"]["runs"] == runs and res["config"]["threads"] == [1, 2]

    with open(out / "results.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(rows) and list(table[0]) == list(latency.CSV_FIELDS)
    for line in table:
        assert 0 < float(line["p50_ms"]) <= float(line["p99_ms"])

    md = (out / "results.md").read_text()
    assert m["cpu"] in md and "| bundle | engine |" in md and edge_name in md and seed_name in md
    assert md.count("\n| ") >= len(rows) + 2
    # the report is rendered from results.json alone: the same files again from the saved document
    assert report.markdown(res) == md
    assert report.csv_text(res["rows"]) == (out / "results.csv").read_text()
    assert "python -m benchmarks.latency --bundles" in md


def test_runs_without_tensorflow_librosa_or_matplotlib(tmp_path, bench_edge_bundle, keras_run):
    """A Pi: no TensorFlow, Keras, librosa or matplotlib. Keras rows are skipped with a note, not a crash."""
    out = tmp_path / "pi"
    code = textwrap.dedent(f"""
        import runpy, sys
        for name in ("tensorflow", "keras", "librosa", "matplotlib"):
            sys.modules[name] = None          # import fails, as where the package is not installed
        sys.argv = ["benchmarks.latency", "--bundles", {str(bench_edge_bundle)!r}, "--run", {str(keras_run)!r},
                    "--runs", "3", "--warmup", "1", "--threads", "1", "--out", {str(out)!r}, "--quiet"]
        runpy.run_module("benchmarks.latency", run_name="__main__", alter_sys=True)
    """)
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "note: Keras rows skipped: TensorFlow/Keras not importable" in proc.stdout
    assert "librosa is not installed" in proc.stdout and "latency.png not written" in proc.stdout
    res = json.loads((out / "results.json").read_text())
    assert {r["engine"] for r in res["rows"]} == {"tflite-float32", "tflite-int8"}
    assert res["machine"]["openblas_num_threads"] == "1"      # the script's default
    for r in res["rows"]:
        _check_row(r, 3)
        assert r["librosa_ms"] is None
    assert (out / "results.csv").is_file() and (out / "results.md").is_file()
    assert not (out / "latency.png").exists()


def test_bad_arguments_are_one_line_errors(tmp_path, bench_edge_bundle):
    with pytest.raises(AuricleError, match="--runs 2"):
        latency.main(["--bundles", str(bench_edge_bundle), "--runs", "2", "--out", str(tmp_path)])
    stray = tmp_path / "runs" / "not_a_bundle"
    stray.mkdir(parents=True)
    (stray / "model.keras").write_bytes(b"")
    with pytest.raises(AuricleError, match="matches none of the bundles"):
        latency.main(["--bundles", str(bench_edge_bundle), "--run", str(stray), "--out", str(tmp_path)])
    proc = subprocess.run([sys.executable, "-m", "benchmarks.latency", "--bundles", str(tmp_path / "missing"),
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr


@pytest.mark.slow
def test_keras_cold_start(keras_run, bench_edge_bundle):
    """The Keras cold-start child: a fresh process importing TensorFlow, loading model.keras, one result."""
    cold = latency.cold_keras(keras_run / "model.keras", 1, False)
    for engine in ("keras-predict", "keras-fn"):
        assert cold[engine].error is None, cold[engine]
        assert _positive(cold[engine].cold_start_s) and _positive(cold[engine].peak_rss_mb)
    tfl = latency.cold_tflite(load_bundle(bench_edge_bundle).model_path("int8"), 1, False)
    assert tfl.error is None, tfl
    assert _positive(tfl.cold_start_s) and _positive(tfl.peak_rss_mb)


def test_train_throughput_tensorflow_smoke(tmp_path):
    """``python -m benchmarks.train_throughput`` with TensorFlow only: the table, finite positive clips/s."""
    out = tmp_path / "throughput.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.train_throughput", "--backends", "tensorflow",
                           "--no-knobs", "--steps", "2", "--warmup", "1", "--repeats", "1", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| tensorflow | default |" in proc.stdout and "| loader only |" in proc.stdout
    res = json.loads(out.read_text())
    row = res["results"]["tensorflow/default"]
    for key in ("fit_clips_per_s", "model_clips_per_s", "first_step_s"):
        assert _positive(row[key]), (key, row)
    assert _positive(res["loader"]["loader_1_thread"]) and _positive(res["loader"]["loader_2_threads"])
    bad = subprocess.run([sys.executable, "-m", "benchmarks.train_throughput", "--steps", "0"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--steps" in bad.stderr
