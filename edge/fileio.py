"""Files written atomically and hashed: the one place for both.

Every file the project writes for a user (bundles, manifests, reports, split files, models) goes through
:func:`atomic_writer` or one of its wrappers: the data lands in a temporary file in the same folder, is
flushed to disk and renamed into place, so a crash or a full disk never leaves half a file behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, BinaryIO, ContextManager, Iterator, Literal, TextIO, overload

__all__ = ["atomic_writer", "write_bytes_atomic", "write_text_atomic", "write_json_atomic", "json_default",
           "sha256_file", "sha256_bytes"]


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@overload
def atomic_writer(path: str | os.PathLike[str], *, binary: Literal[False] = False) -> ContextManager[TextIO]: ...


@overload
def atomic_writer(path: str | os.PathLike[str], *, binary: Literal[True]) -> ContextManager[BinaryIO]: ...


@contextlib.contextmanager  # type: ignore[misc]  # the overloads above say which file type each mode yields
def atomic_writer(path: str | os.PathLike[str], *, binary: bool = False) -> Iterator[IO[str] | IO[bytes]]:
    """Open a temporary file beside ``path``; on a clean exit fsync it and rename it over ``path``.

    The file gets the permissions an ordinary ``open`` would give (mkstemp's 0600 is undone). On an
    exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline="", encoding="utf-8")) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_writer(path, binary=True) as fh:
        fh.write(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_writer(path) as fh:
        fh.write(text)


def json_default(obj: object) -> object:
    """JSON for numpy scalars/arrays and paths (used by :func:`write_json_atomic`)."""
    try:
        import numpy as np
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return obj.as_posix()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json_atomic(path: str | os.PathLike[str], data: object) -> None:
    """``data`` as indented JSON with a final newline, written atomically."""
    with atomic_writer(path) as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=json_default)
        fh.write("\n")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
