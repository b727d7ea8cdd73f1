"""The one log-mel frontend (numpy only), shared by training, conversion and the device.

Everything that turns audio into model input lives here:

* :class:`FeatureConfig` -- every parameter, frozen, JSON round-trippable.
* :func:`log_mel` -- offline log-mel frames ``(frames, mels)`` in dB with a fixed reference.
  It equals ``librosa.feature.melspectrogram(center=False, htk=False, norm="slaney")`` followed by
  ``librosa.power_to_db(ref=ref_power, amin=amin, top_db=None)``.
* :class:`StreamingLogMel` -- push any number of samples, get only the new frames.
* :func:`to_model_input` -- the profile transform: ``edge`` (normalised frames x mels x 1) or
  ``seed`` (dB -> 0..255 per window -> 224x224 -> 3 channels, as the original study fed images).

Framing is ``center=False``: frame ``i`` covers samples ``[i*hop, i*hop + n_fft)``. That is what makes the
streaming extractor exact -- a frame depends only on audio that has already arrived.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Mapping

import numpy as np

from edge.errors import AuricleError

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
]

PROFILES = ("edge", "seed")


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
    def frontend_key(self) -> dict[str, Any]:
        """The settings that change log-mel values (what a feature cache must be keyed by)."""
        keys = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "fmin", "fmax",
                "power", "amin", "ref_power", "clip_duration")
        return {k: getattr(self, k) for k in keys}

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FeatureConfig":
        if not isinstance(data, Mapping):
            raise AuricleError("feature config must be a JSON object; regenerate the bundle/run")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise AuricleError(f"feature config has unknown keys {unknown}; it was written by a newer "
                               "auricle -- upgrade auricle")
        return cls(**dict(data))

    @classmethod
    def from_json(cls, text: str) -> "FeatureConfig":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise AuricleError(f"feature config is not valid JSON ({exc}); regenerate it") from None


def edge_config(**overrides: Any) -> FeatureConfig:
    """Native log-mel frames for small CPUs: 97 frames x 40 mels for 1 s at 16 kHz."""
    return FeatureConfig(**{"profile": "edge", **overrides})


def seed_config(**overrides: Any) -> FeatureConfig:
    """The original study's form, a mel spectrogram rendered as a 224x224x3 image: 64 ms windows every
    16 ms, 64 mel bands (59 frames for 1 s), upsampled to the image."""
    return FeatureConfig(**{"profile": "seed", "n_fft": 1024, "win_length": 1024, "hop_length": 256,
                            "n_mels": 64, **overrides})


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


@functools.lru_cache(maxsize=16)
def _window(n_fft: int, win_length: int) -> np.ndarray:
    """Periodic Hann of win_length, zero-padded to n_fft and centred (as librosa pads it)."""
    n = np.arange(win_length)
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    out = np.zeros(n_fft)
    start = (n_fft - win_length) // 2
    out[start:start + win_length] = hann
    out.setflags(write=False)
    return out


class _Frontend:
    """Cached per-config arrays; turns framed audio (k, n_fft) into log-mel (k, n_mels)."""

    def __init__(self, config: FeatureConfig) -> None:
        self.window = _window(config.n_fft, config.win_length)
        self.mel = mel_filterbank(sample_rate=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
                                  fmin=float(config.fmin), fmax=float(config.fmax))
        self.power = float(config.power)
        self.amin = float(config.amin)
        self.db_offset = 10.0 * np.log10(max(self.amin, float(config.ref_power)))

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        # FFT and mel projection in float64 (parity with librosa to ~1e-5 dB); |X|^2 straight from the
        # real/imaginary parts (no sqrt); the log in float32, which is twice as fast and exact to ~1e-6 dB
        z = np.fft.rfft(frames * self.window, axis=-1)
        if self.power == 2.0:
            spec = z.real * z.real
            spec += z.imag * z.imag
        else:
            spec = np.abs(z)
            if self.power != 1.0:
                spec **= self.power
        mel = (spec @ self.mel).astype(np.float32)
        np.maximum(mel, np.float32(self.amin), out=mel)
        np.log10(mel, out=mel)
        mel *= np.float32(10.0)
        if self.db_offset:
            mel -= np.float32(self.db_offset)
        return mel


@functools.lru_cache(maxsize=16)
def _frontend(config_key: tuple) -> _Frontend:
    return _Frontend(FeatureConfig(**dict(config_key)))


def _get_frontend(config: FeatureConfig) -> _Frontend:
    return _frontend(tuple(sorted(config.frontend_key.items())))


def _as_mono_float(waveform: np.ndarray) -> np.ndarray:
    x = np.asarray(waveform)
    if x.ndim != 1:
        raise AuricleError(f"expected a mono 1-D waveform, got shape {x.shape}; mix down to mono first")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64) / float(np.iinfo(x.dtype).max + 1)
    return x.astype(np.float64, copy=False)


def _frame(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    if x.size < n_fft:
        return np.empty((0, n_fft), dtype=np.float64)
    n = 1 + (x.size - n_fft) // hop
    return np.lib.stride_tricks.as_strided(x, shape=(n, n_fft), strides=(x.strides[0] * hop, x.strides[0]),
                                           writeable=False)


def log_mel(waveform: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Log-mel spectrogram in dB, shape ``(frames, n_mels)``, float32.

    ``waveform`` is mono at ``config.sample_rate``; int16 input is scaled to [-1, 1).
    Returns zero frames when the waveform is shorter than one FFT window.
    """
    x = np.ascontiguousarray(_as_mono_float(waveform))
    frames = _frame(x, config.n_fft, config.hop_length)
    if frames.shape[0] == 0:
        return np.empty((0, config.n_mels), dtype=np.float32)
    return _get_frontend(config)(frames)


class StreamingLogMel:
    """Incremental log-mel: ``push(samples)`` returns only the frames completed by those samples.

    Keeps at most ``n_fft - 1`` + one hop of pending audio; each call computes only new frames.
    Its output equals :func:`log_mel` on the concatenated audio, for any chunking.
    """

    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        self._frontend = _get_frontend(config)
        self._pending = np.empty(0, dtype=np.float64)
        self.frames_emitted = 0
        self.samples_seen = 0

    def reset(self) -> None:
        self._pending = np.empty(0, dtype=np.float64)
        self.frames_emitted = 0
        self.samples_seen = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        x = _as_mono_float(samples)
        self.samples_seen += x.size
        buf = np.concatenate((self._pending, x)) if self._pending.size else np.ascontiguousarray(x)
        n_fft, hop = self.config.n_fft, self.config.hop_length
        frames = _frame(buf, n_fft, hop)
        k = frames.shape[0]
        if k == 0:
            self._pending = buf.copy() if buf is x else buf
            return np.empty((0, self.config.n_mels), dtype=np.float32)
        out = self._frontend(frames)
        self._pending = buf[k * hop:].copy()
        self.frames_emitted += k
        return out


# -- profile transforms ----------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights, align_corners=False (half-pixel centres)."""
    pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), lo] += (1 - frac).astype(np.float32)
    m[np.arange(n_out), hi] += frac.astype(np.float32)
    m.setflags(write=False)
    return m


def model_input_shape(config: FeatureConfig) -> tuple[int, int, int]:
    """The (H, W, C) a network built for this config takes."""
    if config.profile == "seed":
        return (config.image_size, config.image_size, config.image_channels)
    return (config.n_frames, config.n_mels, 1)


def to_model_input(frames: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Profile transform of one window ``(n_frames, n_mels)`` or a batch ``(B, n_frames, n_mels)``.

    * edge: ``(dB - norm_mean) / norm_std`` -> ``(..., n_frames, n_mels, 1)`` float32
    * seed: per window, dB clipped to ``[max - range, max]`` and scaled to 0..255, bilinearly resized
      to ``image_size`` squared and repeated to ``image_channels`` -> ``(..., S, S, C)`` float32 in 0..255
    """
    x = np.asarray(frames, dtype=np.float32)
    if x.ndim not in (2, 3) or x.shape[-1] != config.n_mels:
        raise AuricleError(f"expected (frames, {config.n_mels}) log-mel input, got shape {x.shape}")
    if x.shape[-2] != config.n_frames:
        raise AuricleError(f"window has {x.shape[-2]} frames but the model takes {config.n_frames}; "
                           "pad or crop audio to clip_duration first")
    if config.profile == "edge":
        return ((x - np.float32(config.norm_mean)) / np.float32(config.norm_std))[..., None]
    top = x.max(axis=(-2, -1), keepdims=True)
    rng = np.float32(config.seed_dynamic_range_db)
    scaled = (np.clip(x, top - rng, top) - (top - rng)) * (np.float32(255.0) / rng)
    rows = _interp_matrix(config.n_frames, config.image_size)
    cols = _interp_matrix(config.n_mels, config.image_size)
    img = rows @ scaled @ cols.T
    return np.repeat(img[..., None], config.image_channels, axis=-1).astype(np.float32, copy=False)


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
