"""auricle's on-device runtime: numpy + a TFLite runtime + sounddevice. Never imports TF, Keras or librosa."""
from __future__ import annotations

from typing import Any

__all__ = ["Classifier", "StreamingDetector", "DetectorSettings", "RuntimeOptions", "Event", "load_bundle",
           "AuricleError"]

from edge.errors import AuricleError


def __getattr__(name: str) -> Any:  # lazy: `import edge.features` must stay light
    if name == "Classifier":
        from edge.classifier import Classifier
        return Classifier
    if name in ("StreamingDetector", "Event"):
        from edge import detector
        return getattr(detector, name)
    if name in ("DetectorSettings", "RuntimeOptions"):
        from edge import settings
        return getattr(settings, name)
    if name == "load_bundle":
        from edge.bundle import load_bundle
        return load_bundle
    raise AttributeError(name)
