"""Run a bundle: interpreter factory, small stateless helpers, :class:`Classifier`, :class:`StreamingDetector`.

numpy + a TFLite runtime only. Backends are tried in order (see ../shared/docs/DESIGN.md, "Runtime
backends"): ``ai_edge_litert``, then ``tflite_runtime``, then ``tensorflow.lite``; ``$AURICLE_TFLITE_BACKEND``
forces one. Quantisation parameters always come from the interpreter, never from constants.

The streaming path (one worker, any chunking, bit-identical results)::

    samples (source rate) -> Resampler -> StreamingLogMel -> frame ring (preallocated, mirrored)
      every hop: last n_frames frames -> normalise (manifest) -> [seed: image] -> quantise (interpreter
      scale/zero point) -> invoke -> dequantise (widened ints) -> mean of the last ``smooth`` windows
      -> threshold + per-label debounce (``min_gap``, and hysteresis: after an event the label must fall below
         REARM_FRACTION x threshold before it can fire again) -> events (background labels never fire)

Event time = end of the window, in seconds of the stream (dropped audio counted, so it stays wall-clock-like).
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from edge.audio import Resampler, check_source_rate, resample, to_mono_float32
from edge.bundle import Bundle, load_bundle
from edge.errors import AuricleError, BundleError, captured_c_stderr
from edge.features import StreamingLogMel, fit_to_clip, log_mel, model_input_shape, to_model_input

__all__ = [
    "BACKENDS",
    "DEFAULT_HOP",
    "DEFAULT_THRESHOLD",
    "DEFAULT_SMOOTH",
    "DEFAULT_MIN_GAP",
    "import_backend",
    "make_interpreter",
    "input_details",
    "output_details",
    "quantize",
    "dequantize",
    "set_input",
    "get_scores",
    "top_k",
    "Classifier",
    "StreamingDetector",
    "Event",
    "WindowResult",
    "measure_window_overhead",
]

BACKENDS = ("ai_edge_litert", "tflite_runtime", "tensorflow.lite")
DEFAULT_HOP = 0.1          # seconds between windows (rounded to whole frames)
DEFAULT_THRESHOLD = 0.5    # smoothed score needed for an event
DEFAULT_SMOOTH = 3         # windows averaged
DEFAULT_MIN_GAP = 1.0      # seconds between two events of one label
REARM_FRACTION = 0.5       # after an event, a label fires again only once its score fell below this x threshold
_EDGETPU_LIB = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}


# -- interpreter factory ----------------------------------------------------------------------------
def import_backend(prefer: str | None = None) -> tuple[Any, Any, str]:
    """``(Interpreter class, load_delegate, backend name)`` of the first TFLite runtime that imports."""
    prefer = prefer or os.environ.get("AURICLE_TFLITE_BACKEND") or None
    if prefer is not None and prefer not in BACKENDS:
        raise AuricleError(f"AURICLE_TFLITE_BACKEND={prefer!r} is not one of {', '.join(BACKENDS)}")
    errors = []
    for name in ([prefer] if prefer else BACKENDS):
        try:
            if name == "ai_edge_litert":
                from ai_edge_litert.interpreter import Interpreter, load_delegate
            elif name == "tflite_runtime":
                from tflite_runtime.interpreter import Interpreter, load_delegate
            else:
                # DESIGN's last resort, tried only when neither runtime above is installed: edge/ never
                # needs TensorFlow, and with ai-edge-litert present this line is never reached
                tf = importlib.import_module("tensorflow")
                Interpreter, load_delegate = tf.lite.Interpreter, tf.lite.experimental.load_delegate
        except Exception as exc:  # ImportError, or a wheel broken against this numpy
            errors.append(f"{name}: {type(exc).__name__}")
            continue
        return Interpreter, load_delegate, name
    raise AuricleError(f"no TFLite runtime could be imported ({'; '.join(errors)}); install one: "
                       "`pip install ai-edge-litert`")


def load_edgetpu_delegate(load_delegate: Any) -> Any:
    lib = _EDGETPU_LIB.get(platform.system(), "libedgetpu.so.1")
    try:
        # load it with ctypes first: a failed load_delegate leaves a half-built Delegate whose __del__
        # prints a stray traceback at exit
        import ctypes
        ctypes.CDLL(lib)
        return load_delegate(lib)
    except (ValueError, OSError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())[:160]
        raise AuricleError(f"--coral: the Edge TPU runtime {lib} could not be loaded ({detail}); install it "
                           "(`sudo apt install libedgetpu1-std` from the Coral apt repository) and plug in the "
                           "Coral device, or run without --coral") from None


def make_interpreter(model_path: str | os.PathLike[str], *, num_threads: int | None = None,
                     edgetpu: bool = False, backend: str | None = None) -> tuple[Any, str]:
    """A ready interpreter (tensors allocated) and the name of the backend that made it."""
    Interpreter, load_delegate, name = import_backend(backend)
    if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
        raise AuricleError(f"--threads {num_threads!r} must be a whole number >= 1")
    kwargs: dict[str, Any] = {"model_path": str(model_path)}
    if num_threads is not None:
        kwargs["num_threads"] = num_threads
    if edgetpu:
        kwargs["experimental_delegates"] = [load_edgetpu_delegate(load_delegate)]
    with captured_c_stderr() as captured:
        try:
            interpreter = Interpreter(**kwargs)
            interpreter.allocate_tensors()
            error = None
        except (ValueError, RuntimeError) as exc:
            error = exc
    if error is not None:
        logged = " ".join(captured().split())
        detail = " ".join(f"{error} {logged}".split())[:300]
        raise BundleError(f"cannot load model {model_path} with {name} ({detail}); rebuild the bundle")
    return interpreter, name + (" + edgetpu" if edgetpu else "")


# -- small stateless helpers (pycoral adapters style) --------------------------------------------------
def input_details(interpreter: Any, index: int = 0) -> dict[str, Any]:
    return interpreter.get_input_details()[index]


def output_details(interpreter: Any, index: int = 0) -> dict[str, Any]:
    return interpreter.get_output_details()[index]


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: Any, *, out: np.ndarray | None = None,
             work: np.ndarray | None = None) -> np.ndarray:
    """``clip(rint(x / scale) + zero_point)`` in float32, cast to ``dtype`` (int8/uint8/int16).

    ``scale == 0`` means a float tensor: ``x`` is returned as ``dtype``. ``out``/``work`` (float32, same
    shape) avoid allocation; results are identical either way.
    """
    dtype = np.dtype(dtype)
    if not scale or not np.issubdtype(dtype, np.integer):
        if out is None:
            return np.asarray(x, dtype=dtype).copy()
        out[...] = x
        return out
    info = np.iinfo(dtype)
    w = work if work is not None else np.empty(np.shape(x), dtype=np.float32)
    np.divide(x, np.float32(scale), out=w)
    np.rint(w, out=w)
    np.add(w, np.float32(zero_point), out=w)
    np.clip(w, np.float32(info.min), np.float32(info.max), out=w)
    if out is None:
        return w.astype(dtype)
    out[...] = w
    return out


def dequantize(q: np.ndarray, scale: float, zero_point: int, *, out: np.ndarray | None = None,
               wide: np.ndarray | None = None) -> np.ndarray:
    """``scale * (q - zero_point)`` with the subtraction done in widened ints (no int8 overflow), float64."""
    q = np.asarray(q)
    if not scale or not np.issubdtype(q.dtype, np.integer):
        if out is None:
            return q.astype(np.float64)
        out[...] = q
        return out
    w = wide if wide is not None else np.empty(q.shape, dtype=np.int64)
    np.subtract(q, zero_point, out=w, dtype=w.dtype)
    if out is None:
        out = np.empty(q.shape, dtype=np.float64)
    np.multiply(w, scale, out=out, dtype=np.float64)
    return out


def set_input(interpreter: Any, x: np.ndarray) -> None:
    """Quantise a float input with the interpreter's own scale/zero point and set it (batch dim added)."""
    d = input_details(interpreter)
    scale, zero_point = d["quantization"]
    q = quantize(np.asarray(x, dtype=np.float32), scale, zero_point, d["dtype"])
    interpreter.set_tensor(d["index"], q.reshape(d["shape"]))


def get_scores(interpreter: Any) -> np.ndarray:
    """The first output, dequantised (float64, batch dim dropped)."""
    d = output_details(interpreter)
    scale, zero_point = d["quantization"]
    return dequantize(interpreter.get_tensor(d["index"]), scale, zero_point).reshape(-1)


def top_k(scores: np.ndarray, k: int | None = None, *, threshold: float = -math.inf,
          labels: Sequence[str] | None = None) -> list[tuple[Any, float]]:
    """``(label or index, score)`` pairs, best first; ties keep label order."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-s, kind="stable")
    if k is not None:
        order = order[:k]
    return [(labels[i] if labels is not None else int(i), float(s[i])) for i in order if s[i] >= threshold]


# -- one loaded model with preallocated buffers ------------------------------------------------------------
class _Model:
    """Interpreter + input/output buffers for one bundle. ``run(window)`` -> dequantised scores (a view)."""

    def __init__(self, bundle: Bundle, *, model: str | None, num_threads: int | None, coral: bool) -> None:
        kind = "edgetpu" if coral else (model or bundle.default_model)
        path = bundle.model_path(kind)
        if not Path(path).is_file():
            raise BundleError(f"model file {path} is missing; rebuild or re-copy the bundle")
        self.kind = kind
        self.interpreter, self.backend = make_interpreter(path, num_threads=num_threads, edgetpu=coral)
        cfg = bundle.feature_config
        self.config = cfg
        ind, outd = input_details(self.interpreter), output_details(self.interpreter)
        want = (1, *model_input_shape(cfg))
        if tuple(int(s) for s in ind["shape"]) != want:
            raise BundleError(f"model {path} takes input {tuple(ind['shape'])} but the manifest's feature "
                              f"settings give {want}; rebuild the bundle")
        n_out = int(np.prod(outd["shape"]))
        if n_out != len(bundle.labels):
            raise BundleError(f"model {path} has {n_out} outputs but the bundle has {len(bundle.labels)} labels;"
                              " rebuild the bundle")
        self.in_index, self.out_index = ind["index"], outd["index"]
        self.in_dtype = np.dtype(ind["dtype"])
        self.in_scale, self.in_zero = (float(ind["quantization"][0]), int(ind["quantization"][1]))
        self.out_scale, self.out_zero = (float(outd["quantization"][0]), int(outd["quantization"][1]))
        self.num_threads = num_threads
        self._x = np.zeros(want, dtype=np.float32)              # profile-transformed input, then quantised
        self._q = np.zeros(want, dtype=self.in_dtype)           # tensor to set
        self._x2d = self._x[0, :, :, 0] if cfg.profile == "edge" else None
        self._mean = np.float32(cfg.norm_mean)
        self._std = np.float32(cfg.norm_std)
        self._wide = np.zeros(n_out, dtype=np.int64)
        self.scores = np.zeros(n_out, dtype=np.float64)
        self._quantized = bool(self.in_scale) and np.issubdtype(self.in_dtype, np.integer)
        self._out_quantized = bool(self.out_scale) and np.issubdtype(np.dtype(outd["dtype"]), np.integer)
        if self._quantized:
            info = np.iinfo(self.in_dtype)
            self._scale32, self._zero32 = np.float32(self.in_scale), np.float32(self.in_zero)
            self._lo32, self._hi32 = np.float32(info.min), np.float32(info.max)

    def prepare(self, window: np.ndarray) -> None:
        """Window ``(n_frames, n_mels)`` -> input tensor. Same numbers as ``quantize(to_model_input(...))``,
        computed in place in preallocated buffers (no per-window allocation for the edge profile)."""
        x = self._x
        if self._x2d is not None:      # edge profile: (dB - mean) / std in float32
            np.subtract(window, self._mean, out=self._x2d)
            np.divide(self._x2d, self._std, out=self._x2d)
        else:
            x[0] = to_model_input(window, self.config)
        if self._quantized:            # in place (x is rebuilt every window); same ops as quantize()
            np.divide(x, self._scale32, out=x)
            np.rint(x, out=x)
            np.add(x, self._zero32, out=x)
            np.minimum(x, self._hi32, out=x)
            np.maximum(x, self._lo32, out=x)
            np.copyto(self._q, x, casting="unsafe")      # exact: x now holds in-range whole numbers
        else:
            np.copyto(self._q, x, casting="unsafe")
        self.interpreter.set_tensor(self.in_index, self._q)

    def invoke(self) -> None:
        self.interpreter.invoke()

    def read_scores(self) -> np.ndarray:
        """Dequantised scores into the preallocated buffer (widened ints, like ``dequantize``)."""
        raw = self.interpreter.get_tensor(self.out_index).reshape(-1)
        if self._out_quantized:
            np.subtract(raw, self.out_zero, out=self._wide, dtype=np.int64)
            np.multiply(self._wide, self.out_scale, out=self.scores)
        else:
            self.scores[:] = raw
        return self.scores

    def run(self, window: np.ndarray) -> np.ndarray:
        self.prepare(window)
        self.invoke()
        return self.read_scores()


def _as_bundle(bundle: Bundle | str | os.PathLike[str] | None) -> Bundle:
    return bundle if isinstance(bundle, Bundle) else load_bundle(bundle)


# -- offline --------------------------------------------------------------------------------------------
class Classifier:
    """Classify one clip: ``Classifier(bundle).classify(waveform, sample_rate)`` -> ``[(label, score), ...]``.

    ``waveform``: mono or ``(n, channels)``, float in [-1, 1] or integer PCM, any rate >= the model's (it is
    resampled). It is zero-padded or centre-cropped to the bundle's clip duration.
    """

    def __init__(self, bundle: Bundle | str | os.PathLike[str] | None = None, *, model: str | None = None,
                 num_threads: int | None = None, coral: bool = False) -> None:
        self.bundle = _as_bundle(bundle)
        self.config = self.bundle.feature_config
        self.labels = self.bundle.labels
        self._model = _Model(self.bundle, model=model, num_threads=num_threads, coral=coral)
        self.backend = self._model.backend

    def scores(self, waveform: np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        """Dequantised scores in label order (float64)."""
        cfg = self.config
        rate = check_source_rate(sample_rate or cfg.sample_rate, cfg.sample_rate, "waveform")
        x = np.asarray(waveform)
        if x.ndim == 2 or rate != cfg.sample_rate or not np.issubdtype(x.dtype, np.integer):
            x = to_mono_float32(x)
        if rate != cfg.sample_rate:
            x = resample(x, rate, cfg.sample_rate)
        frames = log_mel(fit_to_clip(x, cfg), cfg)
        return self._model.run(frames).copy()

    def classify(self, waveform: np.ndarray, sample_rate: int | None = None, *,
                 top: int | None = None) -> list[tuple[str, float]]:
        """``(label, score)`` pairs, best first (background labels included: this is a classifier)."""
        return top_k(self.scores(waveform, sample_rate), top, labels=self.labels)


# -- streaming ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Event:
    time: float            # end of the window, seconds of stream
    label: str
    score: float           # smoothed score
    window: int            # index of the window since the stream started
    scores: tuple[float, ...] | None = None   # all smoothed scores, when asked for

    def to_dict(self, labels: Sequence[str] | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"time": round(self.time, 4), "label": self.label, "score": round(self.score, 6)}
        if self.scores is not None and labels is not None:
            d["scores"] = {lab: round(s, 6) for lab, s in zip(labels, self.scores)}
        return d


@dataclasses.dataclass(frozen=True)
class WindowResult:
    time: float
    window: int
    scores: np.ndarray     # smoothed scores (a copy)
    raw: np.ndarray        # this window's own scores (a copy)
    events: tuple[Event, ...]


class StreamingDetector:
    """Feed audio of any chunking with :meth:`push`; get :class:`Event` s. Deterministic for any chunking.

    ``sample_rate`` is the rate of what you push (default: the model's); higher rates are resampled.
    ``hop`` seconds between windows (rounded to whole frames), ``smooth`` windows averaged, an event when a
    non-background label's smoothed score >= ``threshold`` and >= ``min_gap`` s after that label's last one.
    """

    def __init__(self, bundle: Bundle | str | os.PathLike[str] | None = None, *, sample_rate: int | None = None,
                 hop: float = DEFAULT_HOP, threshold: float | None = None, smooth: int | None = None,
                 min_gap: float | None = None, model: str | None = None, num_threads: int | None = None,
                 coral: bool = False, all_scores: bool = False, latency_history: int = 8192) -> None:
        self.bundle = _as_bundle(bundle)
        # None: the bundle's tuned detector settings (manifest "detector"), else the library defaults
        tuned = self.bundle.manifest.get("detector") or {}
        threshold = float(tuned.get("threshold", DEFAULT_THRESHOLD)) if threshold is None else threshold
        smooth = int(tuned.get("smooth", DEFAULT_SMOOTH)) if smooth is None else smooth
        min_gap = float(tuned.get("min_gap", DEFAULT_MIN_GAP)) if min_gap is None else min_gap
        _check_settings(hop=hop, threshold=threshold, smooth=smooth, min_gap=min_gap)
        cfg = self.config = self.bundle.feature_config
        self.labels = self.bundle.labels
        self.background = frozenset(self.bundle.background_labels)
        self._model = _Model(self.bundle, model=model, num_threads=num_threads, coral=coral)
        self.backend = self._model.backend
        self.model_kind = self._model.kind
        self.model_rate = cfg.sample_rate
        self.threshold = float(threshold)
        self.smooth = int(smooth)
        self.min_gap = float(min_gap)
        self.all_scores = bool(all_scores)
        self.hop_frames = max(1, int(round(hop * cfg.sample_rate / cfg.hop_length)))
        self.hop_seconds = self.hop_frames * cfg.hop_length / cfg.sample_rate
        n, m = cfg.n_frames, cfg.n_mels
        self._n = n
        self._ring = np.zeros((2 * n, m), dtype=np.float32)         # frame f lives at f % n and f % n + n
        self._hist = np.zeros((self.smooth, len(self.labels)), dtype=np.float64)
        self._smoothed = np.zeros(len(self.labels), dtype=np.float64)
        self._fg = np.array([lab not in self.background for lab in self.labels], dtype=bool)
        self._fg_idx = [int(i) for i in np.flatnonzero(self._fg)]
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
        self._last_event = [-math.inf] * len(self.labels)
        self._armed = [True] * len(self.labels)
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
        self._hist_pos = 0
        self._hist_count = 0
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
        """Like :meth:`push` but returns every window classified (with its scores and events)."""
        windows: list[WindowResult] = []
        self._feed(samples, [], windows)
        return windows

    def _feed(self, samples: np.ndarray, events: list[Event], windows: list[WindowResult] | None) -> None:
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
                self._classify(events, windows)
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

    def _classify(self, events: list[Event], windows: list[WindowResult] | None) -> None:
        cfg = self.config
        t_start = time.perf_counter()
        s = self._seg_frames % self._n
        model = self._model
        model.prepare(self._ring[s:s + self._n])
        t_inv = time.perf_counter()
        model.invoke()
        t_inv_end = time.perf_counter()
        raw = model.read_scores()
        # smoothing: mean of the last `smooth` windows of this segment
        self._hist[self._hist_pos] = raw
        self._hist_pos = (self._hist_pos + 1) % self.smooth
        self._hist_count = min(self._hist_count + 1, self.smooth)
        sm = self._smoothed
        if self._hist_count == 1:
            sm[:] = raw
        else:
            np.add.reduce(self._hist[:self._hist_count], axis=0, out=sm)
            np.divide(sm, float(self._hist_count), out=sm)
        t = (self._seg_start / self.sample_rate
             + ((self._seg_frames - 1) * cfg.hop_length + cfg.n_fft) / cfg.sample_rate)
        index = self._stream_index
        fired: list[Event] = []
        thr = self.threshold
        rearm = thr * REARM_FRACTION
        for li in self._fg_idx:
            score = sm[li]
            if not self._armed[li]:
                if score < rearm or rearm <= 0.0:   # hysteresis (off at threshold 0): the word must fade
                    self._armed[li] = True           # before the same label can fire again
                else:
                    continue
            if score >= thr and t - self._last_event[li] >= self.min_gap - 1e-9:
                self._last_event[li] = t
                self._armed[li] = False
                fired.append(Event(time=t, label=self.labels[li], score=float(score), window=index,
                                   scores=tuple(float(v) for v in sm) if self.all_scores else None))
        if len(fired) > 1:
            fired.sort(key=lambda e: -e.score)
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
                                        events=tuple(fired)))

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
                f"hop {self.hop_seconds:.2f} s, threshold {self.threshold:g}, smooth {self.smooth}, "
                f"min-gap {self.min_gap:g} s{rs}")


def _check_settings(*, hop: float, threshold: float, smooth: int, min_gap: float) -> None:
    if not (isinstance(hop, (int, float)) and math.isfinite(hop) and hop > 0):
        raise AuricleError(f"--hop {hop!r} must be a positive number of seconds, e.g. 0.1")
    if not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
        raise AuricleError(f"--threshold {threshold!r} must be a probability between 0 and 1, e.g. 0.5")
    if isinstance(smooth, bool) or not isinstance(smooth, (int, np.integer)) or smooth < 1:
        raise AuricleError(f"--smooth {smooth!r} must be a whole number of windows >= 1")
    if not (isinstance(min_gap, (int, float)) and math.isfinite(min_gap) and min_gap >= 0):
        raise AuricleError(f"--min-gap {min_gap!r} must be >= 0 seconds")


def measure_window_overhead(bundle: Bundle | str | os.PathLike[str] | None = None, *, windows: int = 300,
                            num_threads: int | None = 1, seed: int = 0) -> dict[str, float]:
    """Per-window pipeline time vs bare ``invoke()``, measured side by side on one interpreter.

    Each round times a bare ``invoke()`` and then one full window (normalise, profile transform, quantise,
    set, invoke, dequantise, smooth, threshold), interleaved so machine noise hits both alike. Medians in
    microseconds; ``ratio`` = pipeline / invoke (the goal is <= 1.10 with the shipped bundles).
    """
    det = StreamingDetector(bundle, num_threads=num_threads)
    rng = np.random.default_rng(seed)
    det.push(rng.normal(0.0, 0.05, int(det.config.clip_samples * 1.5)).astype(np.float32))
    model, clock = det._model, time.perf_counter
    bare, full, sink = [], [], []
    for i in range(windows + 20):
        t0 = clock()
        model.invoke()
        t1 = clock()
        det._classify(sink, None)
        t2 = clock()
        sink.clear()
        if i >= 20:  # warm-up rounds
            bare.append(t1 - t0)
            full.append(t2 - t1)
    inv, pipe = float(np.median(bare)) * 1e6, float(np.median(full)) * 1e6
    return {"invoke_us": inv, "pipeline_us": pipe, "ratio": pipe / inv, "backend": det.backend,
            "threads": num_threads or 0}


def classify_stream(bundle: Bundle, chunks: Iterable[np.ndarray], **kwargs: Any) -> list[Event]:
    """Convenience: all events of an iterable of chunks (for scripts and tests)."""
    det = StreamingDetector(bundle, **kwargs)
    out: list[Event] = []
    for c in chunks:
        out.extend(det.push(c))
    return out
