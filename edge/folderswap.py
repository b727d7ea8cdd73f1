"""A whole folder put in place at once: it is built in a ``.NAME.tmp-<pid>-XXXX`` folder beside its target
and swapped in with one atomic rename, so a reader sees the old folder or the new one, never half of either.

:func:`make_temp` makes the temporary folder, :func:`install` swaps it in (Linux: ``renameat2`` exchange;
elsewhere two renames, a crash between them leaving the old folder as ``.NAME.old-<pid>-*``) and
:func:`clean_stale` removes what interrupted writers left (only those whose process is gone). The files inside
are written with :mod:`edge.fileio`'s atomic helpers. No third-party imports.
"""
from __future__ import annotations

import ctypes
import os
import re
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["TMP_TAG", "OLD_TAG", "pid_alive", "clean_stale", "make_temp", "install"]

TMP_TAG = ".tmp-"
OLD_TAG = ".old-"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def clean_stale(out: Path) -> list[Path]:
    """Remove the ``.NAME.tmp-<pid>-*`` / ``.NAME.old-<pid>-*`` folders beside ``out`` whose process is gone
    (another writer into the same target may still be running: its folder stays). Returns those removed."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}(?:{re.escape(TMP_TAG)}|{re.escape(OLD_TAG)})(\d+)-")
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return []
    removed = []
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or not entry.is_dir() or entry.is_symlink():
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and pid_alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def make_temp(out: Path) -> Path:
    """A new empty ``.NAME.tmp-<pid>-XXXX`` folder beside ``out`` (its parent made first); OSError when that
    place is not writable -- the caller says what to do about it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}{TMP_TAG}{os.getpid()}-", dir=out.parent))


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
    """Put the finished ``tmp`` folder at ``out``; an existing folder there is replaced in one atomic step."""
    tmp.chmod(0o755)
    _fsync_dir(tmp)
    if out.exists():
        if _exchange(tmp, out):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous folder
        else:  # two renames; a crash in between leaves the old folder in .NAME.old-<pid>-*
            old = out.parent / f".{out.name}{OLD_TAG}{os.getpid()}-{secrets.token_hex(3)}"
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
