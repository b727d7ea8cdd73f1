"""Log-mel frames -> what a network takes: the profile transform (``edge`` or ``seed``).

* ``edge``: normalised frames x mels x 1.
* ``seed``: dB -> 0..255 per window -> 224x224 -> 3 channels, as the original study fed images.

The frames come from :mod:`edge.features` (which re-exports these names); the transform depends only on
the :class:`~edge.features.FeatureConfig`, so training, conversion and the device share it.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from edge.errors import AuricleError

if TYPE_CHECKING:
    from edge.features import FeatureConfig

__all__ = ["model_input_shape", "to_model_input"]


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
