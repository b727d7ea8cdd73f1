"""Where a bundle is built and how it is put in place: a ``.NAME.tmp-<pid>-XXXX`` folder beside the target,
swapped in with one atomic rename (:mod:`edge.folderswap`; the files inside are written with :mod:`edge.fileio`'s
atomic helpers); leftovers of dead processes are removed; a re-conversion keeps the tuned ``detector`` block;
a folder that is not a bundle is never replaced."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from converters.config import QuantizeConfig
from converters.console import say
from converters.manifest import portable
from edge import folderswap
from edge.bundle import MANIFEST
from edge.errors import AuricleError
from edge.folderswap import install
from training.run_folder import RunFolder

__all__ = ["clean_stale", "check_target", "make_temp", "install", "previous_detector"]


def clean_stale(out: Path, progress: bool) -> None:
    """Remove the temporary and old folders of interrupted conversions into ``out`` (their process is gone)."""
    for entry in folderswap.clean_stale(out):
        say(f"removed {entry} left by an interrupted conversion", enabled=progress)


def check_target(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise AuricleError(f"--out {out} exists and is not a folder; choose a folder path for the bundle")
    if out.is_dir():
        try:
            contents = [p.name for p in out.iterdir()]
        except OSError as exc:
            raise AuricleError(f"cannot read --out {out}: {exc.strerror or exc}") from None
        if contents and MANIFEST not in contents:
            raise AuricleError(f"--out {out} is a folder with other files and no {MANIFEST}; refusing to replace "
                               "something that is not a bundle -- choose a new or bundle folder")


def make_temp(out: Path) -> Path:
    """The temporary bundle folder beside ``out``; not writable: a one-line error."""
    try:
        return folderswap.make_temp(out)
    except OSError as exc:
        raise AuricleError(f"cannot write the bundle at {out}: {exc.strerror or exc} ({exc.filename or out.parent}); "
                           "choose a writable --out") from None


def previous_detector(out: Path, cfg: QuantizeConfig, run: RunFolder) -> dict[str, Any] | None:
    """The ``detector`` block of the bundle at ``out`` when it was converted from the same run with the same
    labels (a re-conversion, e.g. ``--io uint8`` for Coral, keeps the tuning); else None."""
    import json

    try:
        old = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(old, dict) or not isinstance(old.get("detector"), dict):
        return None
    old_run = ((old.get("conversion") or {}).get("resolved") or {}).get("run")
    if old.get("labels") != list(run.labels) or old_run != portable(run.path):
        return None
    return old["detector"]
