"""Where a bundle is built and how it is put in place: a ``.NAME.tmp-<pid>-XXXX`` folder beside the target,
swapped in with one atomic rename (the files inside are written with :mod:`edge.fileio`'s atomic helpers);
leftovers of dead processes are removed; a re-conversion keeps the tuned ``detector`` block."""
from __future__ import annotations

import ctypes
import os
import re
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from converters.config import QuantizeConfig
from converters.console import say
from converters.manifest import portable
from edge.bundle import MANIFEST
from edge.errors import AuricleError
from training.run_folder import RunFolder

_TMP_TAG = ".tmp-"
_OLD_TAG = ".old-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def clean_stale(out: Path, progress: bool) -> None:
    """Remove ``.NAME.tmp-<pid>-*`` / ``.NAME.old-<pid>-*`` folders whose process is gone."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}(?:{re.escape(_TMP_TAG)}|{re.escape(_OLD_TAG)})(\d+)-")
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or not entry.is_dir() or entry.is_symlink():
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and _pid_alive(pid):
            continue  # another conversion into the same target is running
        shutil.rmtree(entry, ignore_errors=True)
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
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{_TMP_TAG}{os.getpid()}-", dir=out.parent))
    except OSError as exc:
        raise AuricleError(f"cannot write the bundle at {out}: {exc.strerror or exc} ({exc.filename or out.parent}); "
                           "choose a writable --out") from None
    return tmp


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False when not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    return False


def install(tmp: Path, out: Path) -> None:
    """Put the finished ``tmp`` folder at ``out``; an existing bundle is replaced in one atomic step."""
    tmp.chmod(0o755)
    _fsync_dir(tmp)
    if out.exists():
        if _exchange(tmp, out):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous bundle
        else:  # two renames; a crash in between leaves the old bundle in .NAME.old-<pid>-*
            old = out.parent / f".{out.name}{_OLD_TAG}{os.getpid()}-{secrets.token_hex(3)}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)
    _fsync_dir(out.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
