"""Integer PCM to float32 in [-1, 1): the one conversion every source, loader and test uses."""
from __future__ import annotations

import numpy as np

from edge.errors import AudioError

__all__ = ["pcm_bytes_to_float32", "to_float32", "to_mono_float32"]


def to_float32(samples: np.ndarray) -> np.ndarray:
    """Scale integer PCM by its range (uint8 is offset binary); float input is cast to float32."""
    x = np.asarray(samples)
    if np.issubdtype(x.dtype, np.integer):
        if x.dtype == np.uint8:
            return (x.astype(np.float32) - 128.0) / np.float32(128.0)
        return x.astype(np.float32) / np.float32(np.iinfo(x.dtype).max + 1)
    return x if x.dtype == np.float32 else x.astype(np.float32)


def to_mono_float32(samples: np.ndarray) -> np.ndarray:
    """``(n,)`` or ``(n, channels)`` audio -> mono float32 in [-1, 1). Integer PCM is scaled by its range."""
    x = to_float32(samples)
    if x.ndim == 2:
        x = x[:, 0] if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float32)
    elif x.ndim != 1:
        raise AudioError(f"expected audio of shape (n,) or (n, channels), got {x.shape}")
    return x


def pcm_bytes_to_float32(raw: bytes, sample_width: int, channels: int = 1) -> np.ndarray:
    """Little-endian PCM bytes (8-bit unsigned, 16/24/32-bit signed) -> float32 of shape (frames, channels)."""
    if sample_width == 1:
        x = to_float32(np.frombuffer(raw, np.uint8))
    elif sample_width == 2:
        x = to_float32(np.frombuffer(raw, "<i2"))
    elif sample_width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = v.astype(np.float32) / np.float32(1 << 23)
    elif sample_width == 4:
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    else:
        raise AudioError(f"unsupported PCM sample width {sample_width} bytes; use 8, 16, 24 or 32-bit PCM")
    return x.reshape(-1, channels)
