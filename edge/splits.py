"""The project's deterministic split rule, in one place (training and the evaluator both use it).

``sha1(group) % 100``: below 80 is train, 80-89 validation, 90 and above test. For clips the group is the
speaker or source recording; for long negative recordings it is the file's path relative to the folder given.
"""
from __future__ import annotations

import hashlib

SPLITS = ("train", "val", "test")
SPLIT_BOUNDS = (80, 90)


def split_of(group: str) -> str:
    """``train`` / ``val`` / ``test`` from ``int(sha1(group)) % 100``: < 80, 80-89, >= 90."""
    bucket = int(hashlib.sha1(group.encode("utf-8")).hexdigest(), 16) % 100
    if bucket < SPLIT_BOUNDS[0]:
        return "train"
    return "val" if bucket < SPLIT_BOUNDS[1] else "test"
