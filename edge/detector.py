"""Streaming detection: :class:`StreamingDetector` turns audio of any chunking into :class:`Event` s.

The streaming path (one worker, any chunking, bit-identical results)::

    samples (source rate) -> Resampler -> StreamingLogMel -> frame ring (preallocated, mirrored)
      every hop: last n_frames frames -> normalise (manifest) -> [seed: image] -> quantise (interpreter
      scale/zero point) -> invoke -> dequantise (widened ints) -> mean of the last ``smooth`` windows
      -> threshold + per-label debounce (``min_gap``, and hysteresis: after an event the label must fall below
         REARM_FRACTION x threshold before it can fire again) -> events (background labels never fire)

Event time = end of the window, in seconds of the stream (dropped audio counted, so it stays wall-clock-like).
Each event also carries ``start`` (the start of its onset window); when the label's smoothed score falls back
below the threshold, an end record (``phase == "end"``, with ``start`` and ``end``) follows -- from
:meth:`StreamingDetector.push_events`, ``WindowResult.ends`` and :meth:`StreamingDetector.finish`, never from
:meth:`StreamingDetector.push` (see :mod:`edge.gate`).
Settings: an :class:`edge.settings.DetectorSettings` (default: the bundle's tuned values, else the defaults)
and an :class:`edge.settings.RuntimeOptions`.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np

from edge.bundle import Bundle, as_bundle
from edge.classifier import ModelRunner
from edge.features import StreamingLogMel, model_input_shape
from edge.gate import REARM_FRACTION, Event, EventGate
from edge.pcm import to_mono_float32
from edge.resample import Resampler
from edge.settings import (DEFAULT_HOP, DEFAULT_MIN_GAP, DEFAULT_SMOOTH, DEFAULT_THRESHOLD, DetectorSettings,
                           RuntimeOptions)
from edge.sources import check_source_rate

__all__ = ["DEFAULT_HOP", "DEFAULT_THRESHOLD", "DEFAULT_SMOOTH", "DEFAULT_MIN_GAP", "REARM_FRACTION",
           "Event", "WindowResult", "StreamingDetector"]


@dataclasses.dataclass(frozen=True)
class WindowResult:
    time: float
    window: int
    scores: np.ndarray     # smoothed scores (a copy)
    raw: np.ndarray        # this window's own scores (a copy)
    events: tuple[Event, ...]
    ends: tuple[Event, ...] = ()   # end records of sustained events that closed at this window (or before it)


class StreamingDetector:
    """Feed audio of any chunking with :meth:`push`; get :class:`Event` s. Deterministic for any chunking.

    ``settings`` (default: the bundle's tuned values, else the defaults): ``hop`` seconds between windows
    (rounded to whole frames), ``smooth`` windows averaged, an event when a non-background label's smoothed
    score >= ``threshold`` and >= ``min_gap`` s after that label's last one. ``runtime``: threads, Edge TPU,
    model kind. ``sample_rate`` is the rate of what you push (default: the model's); higher rates are
    resampled. ``all_scores``: events carry every label's smoothed score.
    """

    def __init__(self, bundle: Bundle | str | os.PathLike[str] | None = None,
                 settings: DetectorSettings | None = None, runtime: RuntimeOptions | None = None, *,
                 sample_rate: int | None = None, all_scores: bool = False, latency_history: int = 8192) -> None:
        self.bundle = as_bundle(bundle)
        self.settings = settings = settings or DetectorSettings.from_bundle(self.bundle)
        settings.validate()
        self.runtime = runtime = runtime or RuntimeOptions()
        runtime.validate()
        cfg = self.config = self.bundle.feature_config
        self.labels = self.bundle.labels
        self.background = frozenset(self.bundle.background_labels)
        self._model = ModelRunner(self.bundle, model=runtime.model, num_threads=runtime.num_threads,
                                  coral=runtime.coral)
        self.backend = self._model.backend
        self.model_kind = self._model.kind
        self.model_rate = cfg.sample_rate
        self.threshold = float(settings.threshold)
        self.smooth = int(settings.smooth)
        self.min_gap = float(settings.min_gap)
        self.all_scores = bool(all_scores)
        self.hop_frames = max(1, int(round(settings.hop * cfg.sample_rate / cfg.hop_length)))
        self.hop_seconds = self.hop_frames * cfg.hop_length / cfg.sample_rate
        n, m = cfg.n_frames, cfg.n_mels
        self._n = n
        self._ring = np.zeros((2 * n, m), dtype=np.float32)         # frame f lives at f % n and f % n + n
        self._gate = EventGate(self.labels, self.background, settings, all_scores=self.all_scores,
                               window_seconds=((n - 1) * cfg.hop_length + cfg.n_fft) / cfg.sample_rate)
        self._frontend = StreamingLogMel(cfg)
        self._lat = np.zeros(max(1, latency_history), dtype=np.float64)
        self._inv = np.zeros(max(1, latency_history), dtype=np.float64)
        self.windows = 0                 # windows classified, all streams
        self.events = 0
        self.audio_seconds = 0.0         # audio pushed, all streams (gaps not included)
        self.process_seconds = 0.0       # wall time spent in push()
        self.reset(sample_rate=sample_rate)

    # -- stream state -------------------------------------------------------------------------------
    def reset(self, *, sample_rate: int | None = None) -> None:
        """Start a new stream (clock at 0, debounce cleared); optionally at another input rate."""
        if sample_rate is not None or not hasattr(self, "sample_rate"):
            rate = check_source_rate(sample_rate or self.model_rate, self.model_rate, "input audio")
            self.sample_rate = rate
            self._resampler = Resampler(rate, self.model_rate) if rate != self.model_rate else None
        self._gate.reset()
        self._stream_index = 0           # windows in this stream
        self._in_samples = 0             # input samples in this stream, gaps included
        self._restart_segment()

    def skip(self, n_samples: int) -> None:
        """Audio was lost: forget partial state (no window spans a gap) and advance the clock."""
        self._in_samples += int(n_samples)
        self._restart_segment()

    def _restart_segment(self) -> None:
        self._seg_start = self._in_samples
        self._seg_frames = 0
        self._next_end = self._n
        self._gate.restart_segment()
        self._frontend.reset()
        if self._resampler is not None:
            self._resampler.reset()

    @property
    def time(self) -> float:
        """Seconds of the current stream consumed (gaps included)."""
        return self._in_samples / self.sample_rate

    # -- feeding --------------------------------------------------------------------------------------
    def push(self, samples: np.ndarray) -> list[Event]:
        """Feed samples (``(n,)`` or ``(n, channels)``, float or int PCM); returns the events they completed."""
        out: list[Event] = []
        self._feed(samples, out, None)
        return out

    def push_windows(self, samples: np.ndarray) -> list[WindowResult]:
        """Like :meth:`push` but returns every window classified (with its scores, events and end records)."""
        windows: list[WindowResult] = []
        self._feed(samples, [], windows)
        return windows

    def push_events(self, samples: np.ndarray) -> list[Event]:
        """Like :meth:`push`, with the end records of sustained events in stream order among the onsets."""
        out: list[Event] = []
        self._feed(samples, out, None, ends=True)
        return out

    def finish(self) -> list[Event]:
        """The stream ended: end records of the events still active (their ``end`` is their last window above
        the threshold), and any not yet taken."""
        self._gate.close()
        return self._gate.take_ends()

    def _feed(self, samples: np.ndarray, events: list[Event], windows: list[WindowResult] | None,
              ends: bool = False) -> None:
        t0 = time.perf_counter()
        x = to_mono_float32(samples)
        self._in_samples += x.size
        self.audio_seconds += x.size / self.sample_rate
        if self._resampler is not None:
            x = self._resampler.push(x)
        frames = self._frontend.push(x)
        i, k = 0, frames.shape[0]
        while i < k:
            take = min(self._next_end - self._seg_frames, k - i)
            self._write(frames[i:i + take])
            i += take
            if self._seg_frames == self._next_end:
                self._classify(events, windows, ends)
                self._next_end += self.hop_frames
        self.process_seconds += time.perf_counter() - t0

    def _write(self, frames: np.ndarray) -> None:
        n, k = self._n, frames.shape[0]
        s = self._seg_frames
        self._seg_frames += k
        if k > n:
            frames, s, k = frames[-n:], s + k - n, n
        p = s % n
        first = min(k, n - p)
        ring = self._ring
        ring[p:p + first] = frames[:first]
        ring[p + n:p + n + first] = frames[:first]
        rest = k - first
        if rest:
            ring[:rest] = frames[first:]
            ring[n:n + rest] = frames[first:]

    # -- one window -----------------------------------------------------------------------------------
    def _classify(self, events: list[Event], windows: list[WindowResult] | None, ends: bool = False) -> None:
        t_start = time.perf_counter()
        s = self._seg_frames % self._n
        model = self._model
        model.prepare(self._ring[s:s + self._n])
        t_inv = time.perf_counter()
        model.invoke()
        t_inv_end = time.perf_counter()
        raw = model.read_scores()
        sm = self._gate.smooth_scores(raw)
        t = self._window_end_time()
        index = self._stream_index
        fired = self._gate.fire(sm, t, index)
        closed = tuple(self._gate.take_ends())   # always taken: push() callers never pile them up
        if ends:
            events.extend(closed)
        events.extend(fired)
        t_end = time.perf_counter()
        slot = self.windows % self._lat.size
        self._lat[slot] = t_end - t_start
        self._inv[slot] = t_inv_end - t_inv
        self.windows += 1
        self.events += len(fired)
        self._stream_index += 1
        if windows is not None:
            windows.append(WindowResult(time=t, window=index, scores=sm.copy(), raw=raw.copy(),
                                        events=tuple(fired), ends=closed))

    def _window_end_time(self) -> float:
        """Seconds of the stream at the end of the window just completed (gaps included)."""
        cfg = self.config
        return (self._seg_start / self.sample_rate
                + ((self._seg_frames - 1) * cfg.hop_length + cfg.n_fft) / cfg.sample_rate)

    # -- reporting ------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        n = min(self.windows, self._lat.size)
        lat, inv = self._lat[:n], self._inv[:n]

        def pct(a: np.ndarray, q: float) -> float | None:
            return float(np.percentile(a, q)) * 1e3 if a.size else None

        return {
            "windows": self.windows,
            "events": self.events,
            "audio_seconds": self.audio_seconds,
            "process_seconds": self.process_seconds,
            "rtf": self.process_seconds / self.audio_seconds if self.audio_seconds else None,
            "latency_ms_p50": pct(lat, 50), "latency_ms_p95": pct(lat, 95),
            "invoke_ms_p50": pct(inv, 50), "invoke_ms_p95": pct(inv, 95),
            "backend": self.backend, "model": self.model_kind,
        }

    def describe(self) -> str:
        cfg = self.config
        shape = "x".join(str(s) for s in model_input_shape(cfg))
        rs = f", resampling {self.sample_rate} -> {self.model_rate} Hz" if self._resampler is not None else ""
        return (f"bundle {self.bundle.name} ({self.model_kind}, {cfg.profile} {shape}), backend {self.backend}, "
                f"{self.settings.describe(self.hop_seconds)}{rs}")
