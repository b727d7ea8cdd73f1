"""A day of audio through the real pipeline: RSS over time, dropped windows, latency per window.

    python -m benchmarks.soak                       # 24 h unpaced + 10 min paced, results/soak/
    python -m benchmarks.soak --hours 1 --paced-minutes 2 --out /tmp/soak

Two parts, each in its own process so that its RSS is its own; they run side by side:

* **unpaced**: ``--hours`` of audio made on the fly (never a file: 24 h would be 2.7 GB) by looping
  ``samples/speech_commands_stream.wav`` -- real Speech Commands words -- with a fresh gain and noise
  level on every pass, fed in hop-sized chunks through :func:`edge.run.run_source` and a
  :class:`edge.detector.StreamingDetector` as fast as the CPU allows.
* **paced**: ``--paced-minutes`` at real time through the same path a microphone takes -- PortAudio,
  ALSA and :class:`edge.microphone.Microphone` with its watchdog -- from a :class:`FifoMic`: an ALSA
  ``file`` capture pcm whose input is a FIFO that a writer thread fills at real time.

Latency per window is the time from handing the chunk that completes a window to the worker until that
window's result exists (resampling, frontend, invoke, smoothing and gate). Dropped windows are the windows
the audio covered minus those classified. RSS is the resident set (``/proc/self/statm``) sampled as the
run goes; its growth is measured from the sample at 10 % of the run (after warm-up) and from the start. The
unpaced part runs at the lowest CPU priority (``nice 19``), the paced one at the caller's, as a service
would. Results: ``soak.json`` and ``soak.png`` (RSS and latency over time) in ``--out``. Not a test: on a
shared 2-core x86 machine 24 h of audio took 11 minutes, the paced part takes what it is given.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from edge.bundle import default_bundle_path, repo_root
from edge.fileio import atomic_writer, write_json_atomic
from edge.pcm import to_float32

__all__ = ["FifoMic", "LoopedAudio", "main"]

DEFAULT_CLIP = repo_root() / "samples" / "speech_commands_stream.wav"
RATE = 16000
HOP = 1600                      # samples per chunk: one detector hop at 16 kHz, so a chunk completes <= 1 window
UNPACED_SAMPLE_SECONDS = 600.0  # unpaced: one RSS/latency row per 10 minutes of audio
PACED_SAMPLE_SECONDS = 30.0     # paced: one row per 30 s
WARMUP_FRACTION = 0.1           # RSS growth is measured from the row at 10 % of the run on
LAT_BINS = np.concatenate([[0.0], np.geomspace(0.01, 10_000.0, 601)])   # ms, log-spaced, for percentiles


class FifoMic:
    """A virtual ALSA capture device ``name``: what :meth:`write` puts into a FIFO comes out of PortAudio.

    ``home`` holds an ``.asoundrc`` defining ``<name>_file`` (``type file`` on the ``null`` pcm, ``infile``
    = the FIFO, raw S16_LE mono at ``rate``) and ``<name>`` (a ``plug`` in front of it); run the capturing
    process with ``HOME`` set to it. The FIFO is held open read-write, so opening it never blocks, the reader
    never sees end-of-file, and a writer that stops writing looks exactly like a device that stopped
    delivering: PortAudio's read blocks. Capture with ``blocksize`` equal to the writes' size: the file
    plugin fills a short read's remainder with stale samples.
    """

    def __init__(self, folder: str | os.PathLike[str], *, name: str = "fifomic", rate: int = RATE) -> None:
        self.folder = Path(folder)
        self.name, self.rate = name, rate
        self.home = self.folder / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.fifo = self.folder / f"{name}.fifo"
        if not self.fifo.exists():
            os.mkfifo(self.fifo)
        (self.home / ".asoundrc").write_text(textwrap.dedent(f"""
            pcm.{name}_file {{
              type file
              slave.pcm "null"
              file "/dev/null"
              infile "{self.fifo}"
              format "raw"
            }}
            pcm.{name} {{
              type plug
              slave {{ pcm "{name}_file" format S16_LE rate {rate} channels 1 }}
            }}
            """))
        self._fd = os.open(self.fifo, os.O_RDWR)
        self.closed = threading.Event()
        self.samples_written = 0
        self.last_write = 0.0       # time.monotonic() of the last write

    def write(self, samples: np.ndarray) -> None:
        """Int16 samples into the FIFO (blocks while the pipe is full)."""
        data = memoryview(np.ascontiguousarray(samples, dtype="<i2").tobytes())
        while data:
            n = os.write(self._fd, data)
            data = data[n:]
        self.samples_written += samples.size
        self.last_write = time.monotonic()

    def feed(self, blocks: Iterable[np.ndarray], *, realtime: bool = True, speed: float = 1.0,
             stop: threading.Event | None = None) -> None:
        """Write ``blocks`` one after the other; ``realtime``: no faster than ``speed`` x ``rate`` samples/s.

        Ends early when ``stop`` is set or the FIFO is closed."""
        stop = stop or self.closed
        t0, n = time.monotonic(), 0
        for block in blocks:
            if realtime:
                delay = t0 + n / (self.rate * speed) - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return
            if stop.is_set() or self.closed.is_set():
                return
            try:
                self.write(block)
            except OSError:
                if self.closed.is_set():
                    return
                raise
            n += block.size

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            with contextlib.suppress(OSError):
                os.close(self._fd)

    def __enter__(self) -> "FifoMic":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LoopedAudio:
    """Endless int16 blocks of ``block`` samples: a clip looped, each pass at its own gain and noise level.

    Every fourth pass is noise alone. Seeded, so two runs hear the same day.
    """

    def __init__(self, clip: str | os.PathLike[str] = DEFAULT_CLIP, *, block: int = HOP, seed: int = 0) -> None:
        import soundfile as sf

        x, rate = sf.read(str(clip), dtype="float32", always_2d=True)
        if rate != RATE:
            raise SystemExit(f"{clip} is {rate} Hz; the soak needs a {RATE} Hz clip")
        self.clip = x.mean(axis=1)
        self.block = block
        self.rng = np.random.default_rng(seed)

    def blocks(self, total: int | None = None) -> Iterator[np.ndarray]:
        done, n = 0, self.clip.size
        pass_no = 0
        while total is None or done < total:
            gain = 0.0 if pass_no % 4 == 3 else float(self.rng.uniform(0.25, 1.0))
            sigma = float(self.rng.uniform(0.001, 0.02))
            for pos in range(0, n - self.block + 1, self.block):
                take = self.block if total is None else min(self.block, total - done)
                if take <= 0:
                    return
                x = self.clip[pos:pos + take] * gain + self.rng.normal(0.0, sigma, take).astype(np.float32)
                yield np.clip(np.rint(x * 32767.0), -32768, 32767).astype(np.int16)
                done += take
            pass_no += 1


class _Timed:
    """A source whose chunks remember when they were handed over (``handed``, perf_counter)."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self.handed = time.perf_counter()

    def chunks(self) -> Iterator[Any]:
        for chunk in self._source.chunks():
            self.handed = time.perf_counter()
            yield chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)


class _Meter:
    """Latency per window (constant memory: a fixed histogram plus the current row's values) and rows of
    RSS, windows and latency every ``every`` seconds of stream time (``wall``: of wall time instead)."""

    def __init__(self, source: _Timed, *, every: float, wall: bool = False) -> None:
        self.source, self.every, self.wall = source, every, wall
        self.hist = np.zeros(LAT_BINS.size + 1, dtype=np.int64)
        self.row_lat = np.zeros(int(every * RATE / HOP) * 4 + 64, dtype=np.float64)
        self.n_row = 0
        self.windows = self.events = 0
        self.rows: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self.next_mark = every

    def on_window(self, w: Any, src: Any) -> None:
        ms = (time.perf_counter() - self.source.handed) * 1e3
        self.hist[np.searchsorted(LAT_BINS, ms)] += 1
        if self.n_row < self.row_lat.size:
            self.row_lat[self.n_row] = ms
            self.n_row += 1
        self.windows += 1
        self.events += len(w.events)
        clock = time.monotonic() - self.t0 if self.wall else w.time
        if clock >= self.next_mark:
            self.row(stream_seconds=w.time)
            self.next_mark += self.every

    def row(self, *, stream_seconds: float) -> None:
        lat = self.row_lat[:self.n_row]
        self.rows.append({"stream_seconds": round(stream_seconds, 1),
                          "wall_seconds": round(time.monotonic() - self.t0, 2), "rss_mb": round(_rss_mb(), 2),
                          "windows": self.windows, "events": self.events,
                          "latency_ms_p50": _pct(lat, 50), "latency_ms_p99": _pct(lat, 99),
                          "latency_ms_max": round(float(lat.max()), 4) if lat.size else None})
        self.n_row = 0

    def percentile(self, q: float) -> float | None:
        total = int(self.hist.sum())
        if not total:
            return None
        i = int(np.searchsorted(np.cumsum(self.hist), q / 100.0 * total))
        return round(float(LAT_BINS[min(i, LAT_BINS.size - 1)]), 4)   # upper edge of the bin


def _pct(a: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(a, q)), 4) if a.size else None


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _expected_windows(detector: Any, n_samples: int) -> int:
    """Windows ``n_samples`` of uninterrupted model-rate audio hold (the resampler aside)."""
    cfg = detector.config
    if n_samples < cfg.n_fft:
        return 0
    frames = 1 + (n_samples - cfg.n_fft) // cfg.hop_length
    return 0 if frames < cfg.n_frames else 1 + (frames - cfg.n_frames) // detector.hop_frames


def _rss_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """RSS at the start (model loaded, row 0), after warm-up (10 % of the run) and at the end; growth since both."""
    rss = [r["rss_mb"] for r in rows]
    if len(rss) < 3:
        return {"rss_mb_start": rss[0] if rss else None, "rss_mb_last": rss[-1] if rss else None}
    w = max(1, int(round(WARMUP_FRACTION * (len(rss) - 1))))
    after = rss[w:]
    stream_h = np.array([r["stream_seconds"] for r in rows[w:]]) / 3600.0
    slope = float(np.polyfit(stream_h, after, 1)[0]) if len(after) >= 3 and np.ptp(stream_h) > 0 else None
    return {"rss_mb_start": rss[0], "rss_mb_after_warmup": after[0], "warmup_stream_seconds": rows[w]["stream_seconds"],
            "rss_mb_last": rss[-1], "rss_mb_max": max(rss), "rss_growth_mb": round(rss[-1] - after[0], 2),
            "rss_growth_from_start_mb": round(rss[-1] - rss[0], 2),
            "rss_slope_mb_per_audio_hour": None if slope is None else round(slope, 4)}


def _detector(bundle: str | None) -> Any:
    from edge.detector import StreamingDetector
    from edge.settings import RuntimeOptions

    return StreamingDetector(bundle, runtime=RuntimeOptions(num_threads=1), sample_rate=RATE)


def run_unpaced(*, hours: float, bundle: str | None, seed: int = 0) -> dict[str, Any]:
    """``hours`` of looped audio through run_source + StreamingDetector, unpaced."""
    from edge.run import run_source
    from edge.sources import Chunk, Source

    total = int(round(hours * 3600 * RATE))
    audio = LoopedAudio(seed=seed)

    class Looped(Source):
        kind, name, sample_rate = "loop", "looped speech_commands_stream.wav", RATE

        def chunks(self) -> Iterator[Chunk]:
            start = 0
            for block in audio.blocks(total):
                yield Chunk(start, to_float32(block))
                start += block.size

    det = _detector(bundle)
    src = _Timed(Looped())
    meter = _Meter(src, every=UNPACED_SAMPLE_SECONDS)
    meter.row(stream_seconds=0.0)
    t0 = time.monotonic()
    stats = run_source(src, det, on_window=meter.on_window)
    wall = time.monotonic() - t0
    meter.row(stream_seconds=stats.audio_seconds)
    expected = _expected_windows(det, total)
    return {"part": "unpaced", "audio_hours": round(stats.audio_seconds / 3600, 3), "wall_seconds": round(wall, 1),
            "speed_x_realtime": round(stats.audio_seconds / wall, 1), **_common(det, meter, expected),
            "rows": meter.rows}


def _common(det: Any, meter: _Meter, expected: int) -> dict[str, Any]:
    s = det.stats()
    return {"windows": det.windows, "expected_windows": expected, "dropped_windows": expected - det.windows,
            "events": det.events, "latency_ms_p50": meter.percentile(50), "latency_ms_p99": meter.percentile(99),
            "latency_ms_p999": meter.percentile(99.9),
            "latency_ms_max": max((r["latency_ms_max"] or 0.0) for r in meter.rows),
            "detector_latency_ms_p50_last8192": _round(s["latency_ms_p50"]),
            "detector_latency_ms_p95_last8192": _round(s["latency_ms_p95"]),
            "backend": s["backend"], "model": s["model"], **_rss_summary(meter.rows)}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def run_paced(*, minutes: float, bundle: str | None, seed: int = 1) -> dict[str, Any]:
    """``minutes`` at real time: FifoMic -> ALSA -> PortAudio -> Microphone -> run_source -> detector."""
    with tempfile.TemporaryDirectory(prefix="auricle-soak-") as tmp:
        mic = FifoMic(tmp, name="soakmic")
        os.environ["HOME"] = str(mic.home)          # before PortAudio reads the ALSA configuration
        from edge.run import run_source
        from edge.microphone import Microphone, Watchdog

        stop = threading.Event()
        total = int(round(minutes * 60 * RATE)) + 2 * RATE          # the writer runs a little longer
        writer = threading.Thread(target=mic.feed, args=(LoopedAudio(seed=seed).blocks(total),),
                                  kwargs={"stop": stop}, daemon=True)
        try:
            det = _detector(bundle)
            src = Microphone("soakmic", model_rate=RATE, blocksize=HOP, watchdog=Watchdog(stall_timeout=5.0))
            src.start()                               # open the stream first, then start the real-time writer
            writer.start()
            timed = _Timed(src)
            meter = _Meter(timed, every=PACED_SAMPLE_SECONDS, wall=True)
            meter.row(stream_seconds=0.0)
            t0 = time.monotonic()
            stats = run_source(timed, det, duration=minutes * 60, on_window=meter.on_window)
            wall = time.monotonic() - t0
            meter.row(stream_seconds=stats.audio_seconds)
            src.close()
        finally:
            stop.set()
            mic.close()
    expected = _expected_windows(det, int(round(stats.audio_seconds * RATE)))
    return {"part": "paced", "audio_minutes": round(stats.audio_seconds / 60, 3), "wall_seconds": round(wall, 1),
            "blocks_dropped": stats.dropped_blocks, "dropped_seconds": round(stats.dropped_seconds, 3),
            "input_overflows": stats.overflows, "stalls": stats.stalls, "restarts": stats.restarts,
            "capture_rate": _round(stats.capture_rate), **_common(det, meter, expected), "rows": meter.rows}


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 7), sharex="col")
    for col, (key, unit, scale) in enumerate((("unpaced", "hours of audio", 3600.0),
                                              ("paced", "minutes (real time)", 60.0))):
        part = result.get(key)
        if not part:
            continue
        rows = part["rows"]
        x = [r["stream_seconds"] / scale for r in rows]
        axes[0, col].plot(x, [r["rss_mb"] for r in rows], marker=".")
        axes[0, col].set_ylabel("RSS (MB)")
        axes[0, col].set_title(f"{key}: RSS +{part.get('rss_growth_mb')} MB after warm-up "
                               f"(+{part.get('rss_growth_from_start_mb')} from start), "
                               f"{part['dropped_windows']} dropped windows", fontsize=10)
        lat = [(xi, r) for xi, r in zip(x, rows) if r["latency_ms_p50"] is not None]
        axes[1, col].plot([p[0] for p in lat], [p[1]["latency_ms_p50"] for p in lat], label="p50")
        axes[1, col].plot([p[0] for p in lat], [p[1]["latency_ms_p99"] for p in lat], label="p99")
        axes[1, col].plot([p[0] for p in lat], [p[1]["latency_ms_max"] for p in lat], label="max", alpha=0.5)
        axes[1, col].set_yscale("log")
        axes[1, col].set_ylabel("latency per window (ms)")
        axes[1, col].set_xlabel(unit)
        axes[1, col].legend()
    fig.suptitle(f"auricle soak: {result.get('bundle')} on {result.get('cpu')}", fontsize=10)
    fig.tight_layout()
    with atomic_writer(path, binary=True) as fh:
        fig.savefig(fh, dpi=110, format="png")


def _run_parts(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Each part in its own process, side by side; returns their results by name."""
    procs = {}
    for part, amount in (("unpaced", args.hours), ("paced", args.paced_minutes)):
        if amount <= 0:
            continue
        cmd = [sys.executable, "-m", "benchmarks.soak", "--part", part, "--hours", str(args.hours),
               "--paced-minutes", str(args.paced_minutes), "--out", str(out)]
        if args.bundle:
            cmd += ["--bundle", args.bundle]
        # the unpaced part is a batch job (lowest priority); the paced one gets the caller's, as a service would
        procs[part] = subprocess.Popen(cmd, cwd=repo_root(), preexec_fn=(lambda: os.nice(19)) if part == "unpaced"
                                       else None)
    results = {}
    for part, proc in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"the {part} part failed (exit {proc.returncode})")
        results[part] = json.loads((out / f"{part}.json").read_text())
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--hours", type=float, default=24.0, help="hours of audio, unpaced (default 24; 0 skips)")
    p.add_argument("--paced-minutes", type=float, default=10.0,
                   help="minutes at real time through ALSA (default 10; 0 skips)")
    p.add_argument("--bundle", help="model bundle (default: the shipped default bundle)")
    p.add_argument("--out", default=str(repo_root() / "results" / "soak"), help="folder for soak.json/.png")
    p.add_argument("--part", choices=("unpaced", "paced"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part == "unpaced":
        write_json_atomic(out / "unpaced.json", run_unpaced(hours=args.hours, bundle=args.bundle))
        return 0
    if args.part == "paced":
        write_json_atomic(out / "paced.json", run_paced(minutes=args.paced_minutes, bundle=args.bundle))
        return 0
    from edge.sysinfo import cpu_description

    result: dict[str, Any] = {"cpu": cpu_description(), "bundle": str(args.bundle or default_bundle_path().name),
                              "started": time.strftime("%Y-%m-%d %H:%M:%S"), **_run_parts(args, out)}
    write_json_atomic(out / "soak.json", result)
    _plot(result, out / "soak.png")
    brief = {k: {kk: vv for kk, vv in v.items() if kk != "rows"} for k, v in result.items() if isinstance(v, dict)}
    print(json.dumps(brief, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
