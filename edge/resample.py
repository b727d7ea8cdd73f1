"""Rational resampling, streaming (:class:`Resampler`) and offline (:func:`resample`), numpy only.

A Kaiser-windowed sinc in polyphase form, linear phase, float32. Sources at 44.1/48 kHz go through it to
the model's rate; the streaming and offline forms give the same samples.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from edge.errors import AudioError

__all__ = ["Resampler", "resample", "MAX_TABLE_ENTRIES"]

MAX_TABLE_ENTRIES = 1 << 21   # polyphase taps (phases x taps); a few MB. Odd rate pairs (48001 Hz...) need more


@functools.lru_cache(maxsize=8)
def _kernel(up: int, down: int, zero_crossings: int, rolloff: float, beta: float) -> tuple[np.ndarray, int]:
    """Polyphase table ``(up, 2*half)`` of a Kaiser-windowed sinc, rows normalised to unit DC gain."""
    fc = 0.5 * min(1.0, up / down) * rolloff            # cutoff in cycles per input sample
    half = int(math.ceil(zero_crossings / (2.0 * fc)))  # taps each side, in input samples
    phase = np.arange(up)[:, None] / up
    k = np.arange(2 * half)[None, :]
    u = phase + (half - 1) - k                          # input-sample offset of each tap
    arg = np.clip(1.0 - (u / half) ** 2, 0.0, None)
    win = np.i0(beta * np.sqrt(arg)) / np.i0(beta)
    taps = 2.0 * fc * np.sinc(2.0 * fc * u) * win
    taps /= taps.sum(axis=1, keepdims=True)
    taps = np.ascontiguousarray(taps)
    taps.setflags(write=False)
    return taps, half


class Resampler:
    """Streaming rational resampler (Kaiser-windowed sinc, linear phase), numpy only, float32.

    Output sample ``n`` is the band-limited value at input time ``n * in_rate / out_rate``: no delay is
    added, the stream just lags by ``half`` input samples until the taps have arrived. ``push`` returns the
    outputs that are complete; the result is bit-identical for any chunking of the same input (each output
    is one fixed-order dot product of the same taps and samples).
    """

    _MAX_OUT = 1024  # outputs per inner step: bounds temporary memory (~0.4 MB) for huge pushes

    def __init__(self, in_rate: int, out_rate: int, *, zero_crossings: int = 16, rolloff: float = 0.92,
                 beta: float = 8.6) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise AudioError(f"cannot resample {in_rate} Hz -> {out_rate} Hz; rates must be positive")
        g = math.gcd(int(in_rate), int(out_rate))
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        self.up, self.down = self.out_rate // g, self.in_rate // g
        fc = 0.5 * min(1.0, self.up / self.down) * rolloff
        if self.up * 2 * math.ceil(zero_crossings / (2.0 * fc)) > MAX_TABLE_ENTRIES:
            raise AudioError(f"cannot resample {in_rate} Hz -> {out_rate} Hz: that rate pair needs a filter of "
                             f"{self.up} phases; resample the audio to a standard rate (16000, 44100 or "
                             "48000 Hz) first, e.g. `ffmpeg -i IN -ar 16000 OUT.wav`")
        taps, self.half = _kernel(self.up, self.down, zero_crossings, float(rolloff), float(beta))
        self._taps = taps.astype(np.float32)
        self._single_phase = self.up == 1
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(self.half - 1, dtype=np.float32)   # holds input from global index _base on
        self._base = -(self.half - 1)
        self._next = 0                                           # next output index

    def push(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        buf = np.concatenate((self._buf, x)) if self._buf.size else x
        end = self._base + buf.size                               # one past the last input index held
        last_j0 = end - 1 - self.half                             # newest usable centre sample
        if last_j0 < 0:
            self._buf = buf.copy() if buf is x else buf
            return np.empty(0, dtype=np.float32)
        n_end = -((-(last_j0 + 1) * self.up) // self.down)       # outputs [_next, n_end) are complete
        n0 = self._next
        out = np.empty(max(0, n_end - n0), dtype=np.float32)
        if out.size:
            rows = np.lib.stride_tricks.sliding_window_view(buf, 2 * self.half)
            for a in range(n0, n_end, self._MAX_OUT):
                b = min(n_end, a + self._MAX_OUT)
                j0, ph = np.divmod(np.arange(a, b, dtype=np.int64) * self.down, self.up)
                taken = rows[j0 - (self.half - 1) - self._base]      # (outputs, taps) copy
                taken *= self._taps[0] if self._single_phase else self._taps[ph]
                np.add.reduce(taken, axis=1, out=out[a - n0:b - n0])
        self._next = n_end
        keep_from = (n_end * self.down) // self.up - (self.half - 1)  # first tap of the next output
        self._buf = buf[keep_from - self._base:].copy()
        self._base = keep_from
        return out


def resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Offline resampling of a whole signal (same filter as :class:`Resampler`, tail flushed)."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if int(in_rate) == int(out_rate):
        return x.copy()
    r = Resampler(in_rate, out_rate)
    n_out = -((-x.size * r.up) // r.down)
    y = np.concatenate((r.push(x), r.push(np.zeros(r.half + 1, np.float32))))
    return y[:n_out]
