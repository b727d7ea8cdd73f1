"""The one log-mel frontend (numpy only), shared by training, conversion and the device.

Everything that turns audio into model input lives here:

* :class:`FeatureConfig` -- every parameter, frozen, JSON round-trippable.
* :func:`log_mel` -- offline log-mel frames ``(frames, mels)`` in dB with a fixed reference.
  It equals ``librosa.feature.melspectrogram(center=False, htk=False, norm="slaney")`` followed by
  ``librosa.power_to_db(ref=ref_power, amin=amin, top_db=None)``.
* :class:`StreamingLogMel` -- push any number of samples, get only the new frames.
* :func:`to_model_input` -- the profile transform: ``edge`` (normalised frames x mels x 1) or
  ``seed`` (dB -> 0..255 per window -> 224x224 -> 3 channels, as the original study fed images); it lives
  in :mod:`edge.model_input` and is re-exported here, as is :func:`model_input_shape`.

Framing is ``center=False``: frame ``i`` covers samples ``[i*hop, i*hop + n_fft)``. That is what makes the
streaming extractor exact -- a frame depends only on audio that has already arrived.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import threading
from typing import Mapping

import numpy as np

from edge.errors import AuricleError
from edge.model_input import model_input_shape, to_model_input  # re-exported: the profile transforms

__all__ = [
    "FeatureConfig",
    "PROFILES",
    "edge_config",
    "seed_config",
    "mel_filterbank",
    "log_mel",
    "StreamingLogMel",
    "to_model_input",
    "model_input_shape",
    "fit_to_clip",
]

PROFILES = ("edge", "seed")

#: the type of one FeatureConfig setting (as a keyword override, or a value in its JSON form)
FeatureValue = int | float | str


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """All frontend settings. Derived values are properties, never stored twice."""

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float = 8000.0
    power: float = 2.0
    amin: float = 1e-10
    ref_power: float = 1.0
    clip_duration: float = 1.0
    profile: str = "edge"
    image_size: int = 224        # seed profile only
    image_channels: int = 3      # seed profile only
    seed_dynamic_range_db: float = 80.0  # seed profile: window max - this maps to 0
    norm_mean: float = 0.0       # edge profile: (dB - mean) / std, statistics of the training split
    norm_std: float = 1.0

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise AuricleError(f"invalid feature config: {msg}")

        if self.profile not in PROFILES:
            bad(f"profile {self.profile!r} is not one of {PROFILES}")
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "image_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                bad(f"{name}={value!r} must be a positive integer")
        for name in ("fmin", "fmax", "power", "amin", "ref_power", "clip_duration", "seed_dynamic_range_db",
                     "norm_mean", "norm_std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
                bad(f"{name}={value!r} must be a finite number")
        if self.win_length > self.n_fft:
            bad(f"win_length={self.win_length} exceeds n_fft={self.n_fft}; raise n_fft")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            bad(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin}, fmax={self.fmax}")
        if self.clip_samples < self.n_fft:
            bad(f"clip_duration={self.clip_duration}s is shorter than one FFT window ({self.n_fft} samples)")
        if not self.norm_std > 0:
            bad(f"norm_std={self.norm_std} must be > 0")
        if self.amin <= 0 or self.ref_power <= 0:
            bad("amin and ref_power must be > 0")
        if self.image_channels not in (1, 3):
            bad(f"image_channels={self.image_channels} must be 1 or 3")

    # -- derived values ------------------------------------------------------------------------
    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_duration * self.sample_rate))

    @property
    def n_frames(self) -> int:
        """Frames in one clip (= one model window)."""
        return 1 + (self.clip_samples - self.n_fft) // self.hop_length

    @property
    def frontend_key(self) -> dict[str, FeatureValue]:
        """The settings that change log-mel values (what a feature cache must be keyed by)."""
        keys = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "fmin", "fmax",
                "power", "amin", "ref_power", "clip_duration")
        return {k: getattr(self, k) for k in keys}

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, FeatureValue]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, FeatureValue]) -> "FeatureConfig":
        if not isinstance(data, Mapping):
            raise AuricleError("feature config must be a JSON object; regenerate the bundle/run")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise AuricleError(f"feature config has unknown keys {unknown}; it was written by a newer "
                               "auricle -- upgrade auricle")
        return cls(**dict(data))  # type: ignore[arg-type]  # __post_init__ checks each value

    @classmethod
    def from_json(cls, text: str) -> "FeatureConfig":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise AuricleError(f"feature config is not valid JSON ({exc}); regenerate it") from None


def edge_config(**overrides: FeatureValue) -> FeatureConfig:
    """Native log-mel frames for small CPUs: 97 frames x 40 mels for 1 s at 16 kHz."""
    return FeatureConfig(**{"profile": "edge", **overrides})  # type: ignore[arg-type]  # checked there


def seed_config(**overrides: FeatureValue) -> FeatureConfig:
    """The original study's form, a mel spectrogram rendered as a 224x224x3 image: 64 ms windows every
    16 ms, 64 mel bands (59 frames for 1 s), upsampled to the image."""
    return FeatureConfig(**{"profile": "seed", "n_fft": 1024, "win_length": 1024, "hop_length": 256,
                            "n_mels": 64, **overrides})  # type: ignore[arg-type]  # checked there


# -- mel filterbank (Slaney scale and area normalisation, as librosa's defaults) ----------------
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_region = hz >= _MIN_LOG_HZ
    return np.where(log_region, _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-12) / _MIN_LOG_HZ) / _LOGSTEP, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * _F_SP
    log_region = mel >= _MIN_LOG_MEL
    return np.where(log_region, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), hz)


@functools.lru_cache(maxsize=16)
def mel_filterbank(*, sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_fft//2+1, n_mels) float64 triangular filters, Slaney-normalised. Cached per setting."""
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mel_points = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]
    out = np.ascontiguousarray(weights.T)
    out.setflags(write=False)
    return out


# -- the compute plan: everything one frontend setting needs, built once -----------------------------------
# Work goes in blocks of frames through preallocated scratch buffers. No large temporary is allocated per call:
# glibc serves an array of a few hundred KiB with a fresh mmap, whose page faults can cost more than the FFT
# itself. Blocks also bound the working set (128 frames of 512: ~1.3 MB of buffers).
_BLOCK_BYTES = 1 << 19         # windowed frames per block, offline (512 KiB: 128 frames of 512)
_STREAM_BLOCK_BYTES = 1 << 17  # per stream (128 KiB): pushes are small; a larger one takes several blocks
_GROUP_CALL_MACS = 1024        # multiply-adds per frame one more filterbank group must save to be worth its call
_MAX_THREAD_SPACES = 4         # offline scratch sets kept per thread (one per frontend setting in use)
_RFFT_HAS_OUT = np.lib.NumpyVersion(np.__version__) >= "2.0.0"


def _hann(win_length: int) -> np.ndarray:
    """Periodic Hann of ``win_length`` (librosa centres it in ``n_fft``; the plan keeps that offset)."""
    n = np.arange(win_length)
    out = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    out.setflags(write=False)
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class _Group:
    """Adjacent mel bands ``[m0, m1)`` whose nonzero weights all lie in power bins ``[b0, b1)``."""

    m0: int
    m1: int
    b0: int
    b1: int
    weights: np.ndarray  # (m1 - m0, b1 - b0) float64, C-contiguous: bands x bins, as np.matmul takes it


def _band_ranges(mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last nonzero bin of each band of a (bins, mels) filterbank (an empty band: n, 0)."""
    nz = mel != 0
    has = nz.any(axis=0)
    lo = np.where(has, nz.argmax(axis=0), mel.shape[0])
    hi = np.where(has, mel.shape[0] - nz[::-1].argmax(axis=0), 0)
    return lo, hi


def _split_bands(lo: np.ndarray, hi: np.ndarray) -> list[tuple[int, int]]:
    """Runs of adjacent bands minimising sum(bands x bins spanned) + a fixed cost per run (dynamic programming).

    A band touches a few bins only, so one dense product over all bins multiplies mostly zeros. Runs have at
    least two bands (one would turn np.matmul into a matrix-vector product, which orders its sums differently).
    """
    n = lo.size
    if n < 4:
        return [(0, n)]
    best = [0.0] + [math.inf] * n
    start = [0] * (n + 1)
    for j in range(2, n + 1):
        b0, b1 = int(lo[j - 1]), int(hi[j - 1])
        for i in range(j - 2, -1, -1):
            b0, b1 = min(b0, int(lo[i])), max(b1, int(hi[i]))
            cost = best[i] + (j - i) * max(0, b1 - b0) + _GROUP_CALL_MACS
            if cost < best[j]:
                best[j], start[j] = cost, i
    runs, j = [], n
    while j > 0:
        runs.append((start[j], j))
        j = start[j]
    return runs[::-1]


def _groups(mel: np.ndarray) -> tuple[_Group, ...]:
    lo, hi = _band_ranges(mel)
    out = []
    for m0, m1 in _split_bands(lo, hi):
        b1 = int(hi[m0:m1].max())
        b0 = min(int(lo[m0:m1].min()), b1)  # a run of empty bands spans no bins (its product is zeros)
        weights = np.ascontiguousarray(mel[b0:b1, m0:m1].T)
        weights.setflags(write=False)
        out.append(_Group(m0, m1, b0, b1, weights))
    return tuple(out)


@dataclasses.dataclass(frozen=True, eq=False)
class _Plan:
    """Read-only arrays and sizes of one frontend setting (shared by every stream and thread)."""

    n_fft: int
    hop: int
    n_mels: int
    lead: int                 # offset of the window inside a frame
    window: np.ndarray        # (win_length,) float64
    groups: tuple[_Group, ...]
    power: float
    amin: float
    db_offset: float

    def frames_in(self, n_samples: int) -> int:
        return 0 if n_samples < self.n_fft else 1 + (n_samples - self.n_fft) // self.hop

    def block_frames(self, budget_bytes: int) -> int:
        return max(2, budget_bytes // (8 * self.n_fft))


@functools.lru_cache(maxsize=16)
def _plan_from_key(key: tuple) -> _Plan:
    config = FeatureConfig(**dict(key))
    mel = mel_filterbank(sample_rate=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
                         fmin=float(config.fmin), fmax=float(config.fmax))
    amin = float(config.amin)
    return _Plan(n_fft=config.n_fft, hop=config.hop_length, n_mels=config.n_mels,
                 lead=(config.n_fft - config.win_length) // 2, window=_hann(config.win_length),
                 groups=_groups(mel), power=float(config.power), amin=amin,
                 db_offset=10.0 * np.log10(max(amin, float(config.ref_power))))


@functools.lru_cache(maxsize=32)
def _plan_for(config: FeatureConfig) -> _Plan:
    """The plan of ``config``'s frontend settings (configs differing only in profile or norm share it)."""
    return _plan_from_key(tuple(sorted(config.frontend_key.items())))


class _Workspace:
    """Scratch buffers for one block of frames: one per stream, one per thread for offline calls."""

    def __init__(self, plan: _Plan, block: int) -> None:
        n_bins = plan.n_fft // 2 + 1
        self.block = block
        self.frames = np.zeros((block, plan.n_fft))  # zero outside the window span, the only part written
        self.spectrum = np.empty((block, n_bins), dtype=np.complex128)
        self.power = np.empty((block, n_bins))
        self.mel = np.empty((plan.n_mels, block))    # bands x frames: each group fills whole rows


_LOCAL = threading.local()


def _thread_workspace(plan: _Plan) -> _Workspace:
    """This thread's scratch buffers for offline calls with ``plan`` (threads never share buffers)."""
    spaces = _LOCAL.__dict__.setdefault("spaces", {})
    ws = spaces.get(plan)
    if ws is None:
        if len(spaces) >= _MAX_THREAD_SPACES:
            spaces.clear()
        ws = spaces[plan] = _Workspace(plan, plan.block_frames(_BLOCK_BYTES))
    return ws


def _block(plan: _Plan, ws: _Workspace, spans: np.ndarray, out: np.ndarray) -> None:
    """Log-mel of up to ``ws.block`` frames (``spans``: each frame's window span) into ``out`` (float32).

    FFT, power and mel sums in float64 (librosa parity ~1e-5 dB), the log in float32 on the small mel output.
    A frame's value does not depend on which other frames share its block (every step is row by row; the
    products keep at least two frame columns): streaming equals offline bit for bit.
    """
    k = spans.shape[0]
    kk = max(k, 2)  # a single column would send np.matmul to a matrix-vector product (other summation order)
    np.multiply(spans, plan.window, out=ws.frames[:k, plan.lead:plan.lead + plan.window.size])
    z = ws.spectrum[:kk]
    if _RFFT_HAS_OUT:
        np.fft.rfft(ws.frames[:kk], axis=1, out=z)
    else:  # numpy 1.x: no out=
        z[...] = np.fft.rfft(ws.frames[:kk], axis=1)
    power = ws.power[:kk]
    if plan.power == 2.0:  # |z|^2 from whole rows: each step is one flat loop
        parts = z.view(np.float64)  # re, im interleaved, squared in place
        np.multiply(parts, parts, out=parts)
        np.add(parts[:, 0::2], parts[:, 1::2], out=power)
    else:
        np.abs(z, out=power)
        if plan.power != 1.0:
            np.power(power, plan.power, out=power)
    for g in plan.groups:
        np.matmul(g.weights, power[:, g.b0:g.b1].T, out=ws.mel[g.m0:g.m1, :kk])
    np.maximum(ws.mel[:, :k].T, plan.amin, out=out)
    np.log10(out, out=out)
    out *= np.float32(10.0)
    if plan.db_offset:
        out -= np.float32(plan.db_offset)


def _as_mono_float(waveform: np.ndarray) -> np.ndarray:
    """C-contiguous float32/float64 samples (no copy when already so); integer PCM scaled to [-1, 1)."""
    x = np.asarray(waveform)
    if x.ndim != 1:
        raise AuricleError(f"expected a mono 1-D waveform, got shape {x.shape}; mix down to mono first")
    if x.dtype.kind in "iu":
        return x.astype(np.float64) / float(np.iinfo(x.dtype).max + 1)
    if x.dtype != np.float32:
        x = x.astype(np.float64, copy=False)
    return np.ascontiguousarray(x)


def _window_spans(x: np.ndarray, plan: _Plan, k: int) -> np.ndarray:
    """(k, win_length) view of C-contiguous ``x``: row ``i`` is frame ``i``'s window span (no copy).

    Built with the ndarray constructor (a fifth of as_strided's cost); only ever read.
    """
    size = x.itemsize
    return np.ndarray((k, plan.window.size), dtype=x.dtype, buffer=x, offset=plan.lead * size,
                      strides=(plan.hop * size, size))


def log_mel(waveform: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Log-mel spectrogram in dB, shape ``(frames, n_mels)``, float32.

    ``waveform`` is mono at ``config.sample_rate``; int16 input is scaled to [-1, 1).
    Returns zero frames when the waveform is shorter than one FFT window.
    """
    x = _as_mono_float(waveform)
    plan = _plan_for(config)
    k = plan.frames_in(x.size)
    out = np.empty((k, plan.n_mels), dtype=np.float32)
    if k:
        ws = _thread_workspace(plan)
        spans = _window_spans(x, plan, k)
        for s in range(0, k, ws.block):
            _block(plan, ws, spans[s:s + ws.block], out[s:s + ws.block])
    return out


class StreamingLogMel:
    """Incremental log-mel: ``push(samples)`` returns only the frames completed by those samples.

    Keeps less than ``n_fft`` samples of pending audio in a preallocated buffer and computes only new frames,
    in its own scratch buffers. Its output equals :func:`log_mel` on the concatenated audio bit for bit, for
    any chunking.
    """

    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        self._plan = plan = _plan_for(config)
        self._ws = _Workspace(plan, plan.block_frames(_STREAM_BLOCK_BYTES))
        self._buf = np.zeros(plan.n_fft + (self._ws.block - 1) * plan.hop)  # holds one block of frames
        self._spans = _window_spans(self._buf, plan, self._ws.block)
        self._fill = 0
        self.frames_emitted = 0
        self.samples_seen = 0

    @property
    def pending_samples(self) -> int:
        """Samples kept for frames not yet complete (always fewer than ``n_fft``)."""
        return self._fill

    def reset(self) -> None:
        """Start a new stream: drop pending audio and zero the counters."""
        self._fill = 0
        self.frames_emitted = 0
        self.samples_seen = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append mono samples; return the ``(k, n_mels)`` float32 frames they complete (k may be 0)."""
        x = _as_mono_float(samples)
        plan, buf, n = self._plan, self._buf, x.size
        self.samples_seen += n
        k = plan.frames_in(self._fill + n)
        out = np.empty((k, plan.n_mels), dtype=np.float32)
        done = used = 0
        while True:  # one pass, unless the push completes more than a block of frames
            take = min(n - used, buf.size - self._fill)
            buf[self._fill:self._fill + take] = x[used:used + take]
            self._fill += take
            used += take
            kb = plan.frames_in(self._fill)
            if kb:
                _block(plan, self._ws, self._spans[:kb], out[done:done + kb])
                done += kb
                rest = self._fill - kb * plan.hop
                buf[:rest] = buf[kb * plan.hop:self._fill]
                self._fill = rest
            if used == n:
                break
        self.frames_emitted += k
        return out


def fit_to_clip(waveform: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Zero-pad at the end or centre-crop to exactly ``config.clip_samples``."""
    x = np.asarray(waveform)
    n = config.clip_samples
    if x.size == n:
        return x
    if x.size > n:
        start = (x.size - n) // 2
        return x[start:start + n]
    return np.pad(x, (0, n - x.size))
