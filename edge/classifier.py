"""One loaded bundle model with preallocated buffers (:class:`_Model`) and the offline :class:`Classifier`.

A window of log-mel frames goes: normalise (manifest statistics) -> [seed profile: image] -> quantise with
the interpreter's own scale/zero point -> invoke -> dequantise (widened ints). :class:`_Model` does this in
place for the streaming detector (:mod:`edge.detector`); :class:`Classifier` runs it once on a whole clip.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edge.adapters import input_details, output_details, top_k
from edge.bundle import Bundle, as_bundle
from edge.errors import BundleError
from edge.features import fit_to_clip, log_mel, model_input_shape, to_model_input
from edge.interpreter import make_interpreter
from edge.pcm import to_mono_float32
from edge.resample import resample
from edge.sources import check_source_rate

__all__ = ["Classifier"]


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


class Classifier:
    """Classify one clip: ``Classifier(bundle).classify(waveform, sample_rate)`` -> ``[(label, score), ...]``.

    ``waveform``: mono or ``(n, channels)``, float in [-1, 1] or integer PCM, any rate >= the model's (it is
    resampled). It is zero-padded or centre-cropped to the bundle's clip duration.
    """

    def __init__(self, bundle: Bundle | str | os.PathLike[str] | None = None, *, model: str | None = None,
                 num_threads: int | None = None, coral: bool = False) -> None:
        self.bundle = as_bundle(bundle)
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
