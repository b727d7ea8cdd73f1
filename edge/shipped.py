"""What this project ships, where it is found, and the rule that a command never replaces it unasked.

A **checkout** keeps its bundles in ``firmware_assets/`` and its demo streams in ``samples/``; an **installed
wheel** carries the device bundles (:data:`WHEEL_BUNDLES`: int8 model, labels, manifest) and the demo
streams as package data under ``edge/bundles/`` and ``edge/samples/`` (written by ``setup.py``'s build step).
A checkout looks in its own folders first, so a bundle rebuilt there wins over an installed copy.

A shipped file -- anything under the checkout's ``firmware_assets/``, ``samples/``, ``benchmarks/``
(results), ``docs/``, ``tests/data/`` or ``README.md`` -- is replaced only with ``--force``
(:func:`refuse_to_replace`); examples write to ``runs/``, ``results/`` or a folder the user names.
"""
from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from edge.errors import AuricleError

__all__ = ["SHIPPED_BUNDLES", "WHEEL_BUNDLES", "WHEEL_SAMPLES", "repo_root", "is_checkout", "installed_dir",
           "bundle_dirs", "find_bundle", "find_sample", "is_shipped", "refuse_to_replace"]

#: the bundles the repository ships in git (firmware_assets/NAME)
SHIPPED_BUNDLES = ("kws_mobilenet_edge", "kws_resnet18_edge", "esc10_mobilenet_edge")
#: the bundles a wheel carries as package data: the default keyword bundle and the everyday-sounds one
WHEEL_BUNDLES = ("kws_mobilenet_edge", "esc10_mobilenet_edge")
#: the demo streams a wheel carries (each with its ground-truth .csv)
WHEEL_SAMPLES = ("speech_commands_stream", "esc10_stream")
#: what a command may replace only with --force, relative to the checkout's root
_SHIPPED_PLACES = ("firmware_assets", "samples", "benchmarks", "docs", "tests/data", "README.md")


def repo_root() -> Path:
    """The folder above ``edge/``: the checkout's root, or site-packages for an installed wheel."""
    return Path(__file__).resolve().parent.parent


def is_checkout() -> bool:
    """True when ``edge`` runs from a source tree (it has ``firmware_assets/`` beside it), not from a wheel."""
    return (repo_root() / "firmware_assets").is_dir()


def installed_dir(kind: str) -> Path:
    """``edge/bundles`` or ``edge/samples`` of the installed package (package data of the wheel)."""
    return Path(str(importlib.resources.files("edge").joinpath(kind)))


def bundle_dirs() -> list[Path]:
    """Where shipped bundles are looked up by name, first match wins: the checkout, then the wheel's data."""
    return [repo_root() / "firmware_assets", installed_dir("bundles")]


def find_bundle(name: str) -> Path | None:
    """The folder of the shipped bundle ``name`` (one holding a manifest), or None."""
    for base in bundle_dirs():
        if (base / name / "manifest.json").is_file():
            return base / name
    return None


def find_sample(name: str) -> Path | None:
    """``NAME.wav`` of a shipped demo stream: the checkout's ``samples/``, then the wheel's; None if neither."""
    for base in (repo_root() / "samples", installed_dir("samples")):
        if (base / f"{name}.wav").is_file():
            return base / f"{name}.wav"
    return None


def is_shipped(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` exists and is (or is inside) a file or folder the checkout ships."""
    p = Path(path)
    if not (p.exists() or p.is_symlink()) or not is_checkout():
        return False
    root = repo_root()
    try:
        rel = Path(os.path.realpath(p)).relative_to(root)
    except ValueError:
        return False
    return any(rel == Path(place) or Path(place) in rel.parents for place in _SHIPPED_PLACES)


def refuse_to_replace(path: str | os.PathLike[str], *, force: bool, what: str) -> None:
    """Raise :class:`AuricleError` (one line, exit 2 in a CLI) when ``path`` is shipped and ``force`` is off."""
    if force or not is_shipped(path):
        return
    rel = Path(os.path.relpath(os.path.realpath(path), repo_root())).as_posix()
    raise AuricleError(f"{what} {rel} is a file the repository ships; pass --force to replace it, or write to "
                       "runs/, results/ or a folder you name")
