"""False accepts per hour on sources no model or tuning touched: ``python -m benchmarks.false_accepts_sources``.

Negative audio is organised by *source* (``tools/negative_sources.json``: a recording collection, a TTS
voice, a music package), each with one role. This measure reads only the **test**-role sources of a corpus
built by ``python -m tools.negative_corpora --out DIR`` and, for each bundle at its shipped operating point
(the manifest's tuned ``detector`` settings), reports

* FA/h overall with its 95 % interval (exact Poisson), **per source** and **per keyword**;
* the DET on the test sources (thresholds swept at the shipped smoothing and min-gap, replayed through the
  detector's own event rule, so each point is what ``edge.listen`` would report), ``det_sources_<bundle>.png``;
* the false reject rate on the positive stream: for a keyword bundle the test-speaker stream used by
  ``benchmarks.false_accepts`` (``results/streams/test_stream.wav``), for the ESC-10 bundle the fold-5 sounds of
  ``samples/esc10_stream.wav``;
* CPU seconds of the model pass per hour of audio (``time.process_time``, one thread).

Each bundle writes ``fa_sources_<bundle>.json``; ``FALSE_ACCEPTS_SOURCES.md`` is rebuilt from every such file
in ``--out`` (and ``peers.json`` when ``python -m benchmarks.peers`` wrote one), so bundles can run apart.

    python -m benchmarks.false_accepts_sources --corpus /path/to/corpora \\
        --bundle firmware_assets/kws_mobilenet_edge --stream results/streams/test_stream.wav
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from edge.errors import AuricleError, run_cli

log = logging.getLogger("false_accepts_sources")

DET_THRESHOLDS = (0.5, 0.7, 0.85, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)   # + the shipped threshold
REPORT = "FALSE_ACCEPTS_SOURCES.md"


def test_files(corpus: Path, names: Sequence[str] | None = None,
               max_hours: float | None = None) -> dict[str, list[tuple[Path, float]]]:
    """``{source: [(flac, seconds), ...]}`` for the test-role sources of the table found in ``corpus``; with
    ``max_hours``, each source's first files (in its manifest's order) up to that many hours."""
    from tools.negative_corpora import read_manifest, sources_of_role

    wanted = [s.name for s in sources_of_role("test")]
    unknown = sorted(set(names or ()) - set(wanted))
    if unknown:
        raise AuricleError(f"{', '.join(unknown)}: not test-role sources; the test sources are {', '.join(wanted)}")
    out: dict[str, list[tuple[Path, float]]] = {}
    for name in names or wanted:
        m = read_manifest(corpus / name)
        if m is None or m.get("role") != "test":
            raise AuricleError(f"test source {name} is not built in {corpus}: python -m tools.negative_corpora "
                               f"--out {corpus} --sources {name}")
        out[name] = _first_hours([(corpus / name / f["file"], float(f["seconds"])) for f in m["files"]], max_hours)
    return out


def _first_hours(rows: list[tuple[Path, float]], max_hours: float | None) -> list[tuple[Path, float]]:
    if max_hours is None:
        return rows
    out, total = [], 0.0
    for path, sec in rows:
        if total >= max_hours * 3600:
            break
        out.append((path, sec))
        total += sec
    return out


def _cache_key(det: Any, bundle: Any, rows: list[tuple[Path, float]]) -> str:
    from edge.fileio import sha256_bytes, sha256_file

    facts = [sha256_file(bundle.model_path(det.model_kind)), det.hop_seconds, [(p.name, s) for p, s in rows]]
    return sha256_bytes(json.dumps(facts).encode())[:16]


def _source_scores(det: Any, source: str, rows: list[tuple[Path, float]], cache: Path | None, key: str,
                   quiet: bool) -> tuple[list, float]:
    """One source's window scores and the CPU seconds of its model pass (from the cache when it matches)."""
    import numpy as np

    from edge.evaluate import StreamScores, collect

    path = cache / f"{source}.{key}.npz" if cache else None
    if path is not None and path.is_file():
        z = np.load(path, allow_pickle=False)
        n = int(z["n"])
        return [StreamScores(str(z[f"name{i}"]), float(z[f"sec{i}"]), z[f"t{i}"], z[f"r{i}"]) for i in range(n)], \
            float(z["cpu"])
    cpu0, out = time.process_time(), []
    for k, (p, _sec) in enumerate(rows, 1):
        out.append(collect(det, p, f"{source}/{p.name}")[0])
        if not quiet and (k % 25 == 0 or k == len(rows)):
            log.info("%s: %d/%d files", source, k, len(rows))
    cpu = time.process_time() - cpu0
    if path is not None:
        cache.mkdir(parents=True, exist_ok=True)
        arrays = {"n": len(out), "cpu": cpu}
        for i, s in enumerate(out):
            arrays.update({f"name{i}": s.name, f"sec{i}": s.seconds, f"t{i}": s.times, f"r{i}": s.raw})
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
    return out, cpu


def model_pass(det: Any, bundle: Any, files: dict[str, list[tuple[Path, float]]], cache: Path | None,
               quiet: bool) -> tuple[dict[str, list], float]:
    """Window scores of every file through the real streaming path, by source; CPU seconds they took."""
    scores, cpu = {}, 0.0
    for source, rows in files.items():
        scores[source], c = _source_scores(det, source, rows, cache, _cache_key(det, bundle, rows), quiet)
        cpu += c
    return scores, cpu


def _point(det: Any, streams: list, positive: Any = None, truth: Any = None, thresholds: Sequence[float] = ()) -> list:
    """The detector's own settings replayed (``thresholds``: a sweep of the common threshold instead, with
    any per-keyword thresholds set aside, so every keyword moves along the curve)."""
    from edge.evaluate import SweepGrid, sweep

    grid = SweepGrid(thresholds=thresholds or [det.settings.threshold], smooths=[det.settings.smooth],
                     min_gaps=[det.settings.min_gap], label_thresholds=not thresholds)
    return sweep(streams, positive, truth, det, grid)


def _rate(fa: int, hours: float) -> dict[str, Any]:
    from edge.intervals import rate_interval

    lo, hi = rate_interval(fa, hours) if hours > 0 else (0.0, 0.0)
    return {"false_accepts": fa, "hours": round(hours, 4), "per_hour": round(fa / hours, 3) if hours else None,
            "ci95": [round(lo, 3), round(hi, 3)]}


def measure(bundle: Path, corpus: Path, stream: Path, names: Sequence[str] | None, quiet: bool,
            cache: Path | None = None, max_hours: dict[str, float] | None = None) -> dict[str, Any]:
    """One bundle on the test sources: overall, per source and per keyword, the DET and the stream's FRR."""
    from edge.bundle import load_bundle
    from edge.detector import StreamingDetector
    from edge.settings import RuntimeOptions
    from edge.evaluate import collect
    from edge.scoring import read_truth

    files = {src: _first_hours(rows, (max_hours or {}).get(src)) for src, rows in test_files(corpus, names).items()}
    b = load_bundle(bundle)
    det = StreamingDetector(b, runtime=RuntimeOptions(num_threads=1))     # the bundle's tuned settings
    scores, cpu = model_pass(det, b, files, None if cache is None else cache / b.name, quiet)
    pos, _ = collect(det, stream, stream.name)
    truth = read_truth(str(stream.with_suffix(".csv")))
    all_streams = [s for v in scores.values() for s in v]
    hours = sum(s.seconds for s in all_streams) / 3600
    per_source = {}
    for source, streams in scores.items():
        p = _point(det, streams)[0]
        per_source[source] = {**_rate(p.false_accepts, sum(s.seconds for s in streams) / 3600),
                              "per_label": {k: v for k, v in p.per_label.items() if v}}
    det_rows = _point(det, all_streams, pos, truth, sorted(set(DET_THRESHOLDS) | {det.threshold}))
    point = _point(det, all_streams, pos, truth)[0]                        # the shipped point, replayed
    return {"bundle": b.name, "corpus_sources": list(files),
            "settings": {"threshold": det.threshold, "smooth": det.smooth, "min_gap": det.min_gap,
                         "hop": det.hop_seconds, "model": det.model_kind,
                         "label_thresholds": dict(det.settings.label_thresholds)},
            "overall": {**_rate(point.false_accepts, hours), "per_label": point.per_label},
            "per_source": per_source,
            "positives": {"stream": stream.name, "truth_words": point.truth_words, "hits": point.hits,
                          "misses": point.misses, "false_reject_rate": point.false_reject_rate,
                          "misses_by_label": point.misses_by_label},
            "det": [r.to_dict() for r in det_rows],
            "cpu_seconds_per_audio_hour": round(cpu / hours, 1) if hours else None}


def plot(result: dict[str, Any], path: Path) -> bool:
    """The DET on the test sources via edge.evaluate's plot (one smoothing: the shipped one)."""
    from edge.evaluate import Evaluation, Operating, plot_det

    rows = [Operating(**{k: v for k, v in r.items() if k in Operating.__dataclass_fields__}) for r in result["det"]]
    s, o, p = result["settings"], result["overall"], result["positives"]
    point = Operating(threshold=s["threshold"], smooth=s["smooth"], min_gap=s["min_gap"],
                      false_accepts=o["false_accepts"], false_accepts_per_hour=o["per_hour"] or 0.0,
                      per_label=o["per_label"], hits=p["hits"], misses=p["misses"], truth_words=p["truth_words"])
    ev = Evaluation(bundle=f"{result['bundle']} (test sources)", settings=s, negative_files=0,
                    negative_hours=o["hours"], point=point, sweep=rows, wall_seconds=0.0, audio_seconds=0.0,
                    false_accept_events=[])
    return plot_det(ev, path)


def _labels(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]) if v) or "none"


def markdown(results: Sequence[dict[str, Any]], peers: dict[str, Any] | None) -> str:
    """The README tables: bundles overall, by source, by keyword; peers when measured."""
    from edge.intervals import proportion_interval

    lines = ["| bundle | threshold / smooth / min-gap | test negatives | FA | FA/h (95 % CI) | FRR on its positives "
             "(95 % CI) | CPU s per audio hour |", "|---|---|--:|--:|--:|--:|--:|"]
    for r in results:
        s, o, p = r["settings"], r["overall"], r["positives"]
        lo, hi = proportion_interval(p["misses"], p["truth_words"])
        thr = "per keyword" if s.get("label_thresholds") else f"{s['threshold']:g}"
        lines.append(f"| `{r['bundle']}` | {thr} / {s['smooth']} / {s['min_gap']:g} s | {o['hours']:.2f} h "
                     f"| {o['false_accepts']} | {o['per_hour']:.1f} ({o['ci95'][0]:.1f}-{o['ci95'][1]:.1f}) "
                     f"| {100 * p['false_reject_rate']:.1f} % ({p['misses']}/{p['truth_words']} of `{p['stream']}`; "
                     f"{100 * lo:.0f}-{100 * hi:.0f} %) | {r['cpu_seconds_per_audio_hour']:.0f} |")
    if peers:
        lines += ["", peers_table(peers["rows"], peers["note"])]
    sources = list(dict.fromkeys(src for r in results for src in r["per_source"]))
    lines += ["", "FA/h by test source (false accepts in hours measured; where they come from, by label):", "",
              "| source | " + " | ".join(f"`{r['bundle']}`" for r in results) + " |",
              "|---|" + "--:|" * len(results)]
    for src in sources:
        cells = []
        for r in results:
            d = r["per_source"].get(src)
            cells.append("-" if d is None else f"{d['per_hour']:.1f} ({d['false_accepts']} in {d['hours']:.2f} h: "
                                               f"{_labels(d['per_label'])})")
        lines.append(f"| {src} | " + " | ".join(cells) + " |")
    lines += [""] + [f"- `{r['bundle']}` false accepts by label, all test sources: {_labels(r['overall']['per_label'])}."
                     for r in results]
    lines += [f"- `{r['bundle']}` per-keyword thresholds: "
              + ", ".join(f"{k} {v:g}" for k, v in r["settings"]["label_thresholds"].items())
              + f"; misses by keyword: {_labels(r['positives'].get('misses_by_label') or {})}."
              for r in results if r["settings"].get("label_thresholds")]
    return "\n".join(lines)


def merge_peers(parts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Peer rows of runs over disjoint sources added up per model; an error if a source was counted twice."""
    from edge.intervals import rate_interval

    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for part in parts:
        for r in part["rows"]:
            m = merged.setdefault((r["engine"], r["model"]), {"engine": r["engine"], "model": r["model"],
                                                              "false_accepts": 0, "hours": 0.0, "cpu_seconds": 0.0,
                                                              "sources": [], "per_source": {}})
            if set(m["sources"]) & set(r["sources"]):
                raise AuricleError(f"peer runs overlap on {sorted(set(m['sources']) & set(r['sources']))}; "
                                   "remove one peers*.json")
            for k in ("false_accepts", "hours", "cpu_seconds"):
                m[k] += r[k]
            m["sources"] += r["sources"]
            m["per_source"].update(r["per_source"])
    for m in merged.values():
        lo, hi = rate_interval(m["false_accepts"], m["hours"])
        m.update(per_hour=m["false_accepts"] / m["hours"], ci95=[lo, hi],
                 cpu_seconds_per_audio_hour=m["cpu_seconds"] / m["hours"])
    return list(merged.values())


def peers_table(rows: Sequence[dict[str, Any]], note: str) -> str:
    lines = ["Peers on the test sources (each model at its own shipped threshold):", "",
             "| detector | model | test hours | FA | FA/h (95 % CI) | CPU s per audio hour |", "|---|---|--:|--:|--:|--:|"]
    for row in rows:
        lines.append(f"| {row['engine']} | `{row['model']}` | {row['hours']:.2f} | {row['false_accepts']} "
                     f"| {row['per_hour']:.1f} ({row['ci95'][0]:.1f}-{row['ci95'][1]:.1f}) "
                     f"| {row['cpu_seconds_per_audio_hour']:.0f} |")
    return "\n".join(lines + ["", note])


def write_report(out: Path) -> str:
    from edge.fileio import write_text_atomic

    results = [json.loads(p.read_text()) for p in sorted(out.glob("fa_sources_*.json"))]
    parts = [json.loads(p.read_text()) for p in sorted(out.glob("peers*.json"))]
    peers = {"rows": merge_peers(parts), "note": parts[0]["note"]} if parts else None
    table = markdown(results, peers) if results else "(no bundle measured yet)"
    write_text_atomic(out / REPORT, "# False accepts on test-role sources\n\n" + table + "\n")
    return table


def _source_hours(items: Sequence[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, hours = item.partition("=")
        try:
            out[name] = float(hours)
        except ValueError:
            raise AuricleError(f"--source-hours {item}: write SOURCE=HOURS, e.g. tts-espeak-ng=0.5") from None
        if out[name] <= 0:
            raise AuricleError(f"--source-hours {item}: hours must be positive")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.false_accepts_sources", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, required=True, help="folder built by python -m tools.negative_corpora")
    p.add_argument("--bundle", type=Path, default=Path("firmware_assets/kws_mobilenet_edge"))
    p.add_argument("--stream", type=Path, default=Path("results/streams/test_stream.wav"),
                   help="positive stream with a same-name .csv truth (ESC-10: samples/esc10_stream.wav)")
    p.add_argument("--sources", nargs="+", metavar="NAME", help="only these test sources (default: all)")
    p.add_argument("--out", type=Path, default=Path("benchmarks"))
    p.add_argument("--scores-cache", type=Path,
                   help="keep each source's window scores here (per bundle model and source build): a later run "
                        "with more sources scores only the new ones")
    p.add_argument("--source-hours", nargs="+", default=[], metavar="SOURCE=H",
                   help="measure only a source's first H hours (its manifest's file order), e.g. tts-espeak-ng=0.5")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from the JSON files in --out")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from edge.fileio import write_json_atomic

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    a = build_parser().parse_args(argv)
    if not a.report_only:
        if not a.stream.is_file() or not a.stream.with_suffix(".csv").is_file():
            raise AuricleError(f"need {a.stream} and its .csv; build the keyword one with python -m "
                               "tools.make_sample_stream --split test --duration 160 --seed 23 --out results/streams "
                               "--name test_stream")
        result = measure(a.bundle, a.corpus, a.stream, a.sources, a.quiet, a.scores_cache, _source_hours(a.source_hours))
        a.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(a.out / f"fa_sources_{result['bundle']}.json", result)
        plot(result, a.out / f"det_sources_{result['bundle']}.png")
    print(write_report(a.out), flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
