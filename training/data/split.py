"""Which split each clip is in: a user's ``--split-file`` (:func:`read_split_assignments`), the sha1 rule
with never-empty dealing (:func:`never_empty`, from :mod:`edge.splits`), and the run folder's split CSV
(``path,label,group,split``, read and written by :mod:`training.run_folder`): :func:`write_split_csv` and
:func:`read_split_csv` take and give :class:`Clip`.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
from pathlib import Path
from typing import Iterable, Sequence

from edge.errors import AuricleError
from edge.splits import SHA1_RULE, SPLITS, choose_splits
from training.data.naming import Clip, group_of
from training.run_folder import SplitRow, read_split, write_split


def read_split_assignments(path: str | os.PathLike, root: Path) -> dict[Path, str]:
    """A user's split file: CSV with a header holding ``path`` and ``split`` columns (others ignored; the run
    folder's ``split.csv`` qualifies). Paths are relative to the data folder (or absolute). Split values are
    train / val / test (``validation`` is read as val)."""

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise AuricleError(f"cannot read --split-file {str(path)!r}: {exc.strerror or exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"path", "split"} <= {f.strip() for f in reader.fieldnames}:
        raise AuricleError(f"--split-file {path}: needs a header with 'path' and 'split' columns, got "
                           f"{reader.fieldnames}; write e.g. 'path,split' then 'dog/1.wav,train'")
    out: dict[Path, str] = {}
    for line_no, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not row.get("path"):
            continue
        split = {"validation": "val", "valid": "val"}.get(row["split"].lower(), row["split"].lower())
        if split not in SPLITS:
            raise AuricleError(f"--split-file {path}:{line_no}: split {row['split']!r} is not one of {SPLITS}")
        out[Path(os.path.abspath(root / Path(row["path"])))] = split
    if not out:
        raise AuricleError(f"--split-file {path} lists no clips; add 'path,split' rows")
    return out


def assign_splits(clips: list[Clip], split_file: str, root: Path) -> tuple[list[Clip], list[Path]]:
    """Clips with the split file's splits, and the clips it does not list. Paths it names that are not
    labelled clips under ``root`` are an error (one line, the first of them)."""
    wanted = read_split_assignments(split_file, root)
    by_path = {c.path: c for c in clips}
    unknown = [p for p in wanted if p not in by_path]
    if unknown:
        raise AuricleError(f"--split-file {split_file} names {len(unknown)} path(s) that are not labelled clips "
                           f"under {str(root)!r} (first: {relative_path(unknown[0], root)!r}); paths must be "
                           "relative to the data folder")
    kept = [dataclasses.replace(c, assigned=wanted[c.path]) for c in clips if c.path in wanted]
    return kept, [c.path for c in clips if c.path not in wanted]


def groups_across_splits(clips: Iterable[Clip]) -> int:
    """How many groups have clips in more than one split (0 whenever splits come from the group rule)."""
    seen: dict[str, set[str]] = {}
    for c in clips:
        seen.setdefault(c.group, set()).add(c.split)
    return sum(1 for s in seen.values() if len(s) > 1)


def never_empty(clips: list[Clip]) -> tuple[list[Clip], str]:
    """The clips with their splits and the rule that gave them (:func:`edge.splits.choose_splits`: the sha1
    rule unless it leaves a split empty)."""
    splits, rule = choose_splits([c.group for c in clips])
    if rule == SHA1_RULE:
        return clips, rule
    return [dataclasses.replace(c, assigned=s) for c, s in zip(clips, splits)], rule


def relative_path(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(path).as_posix()


def write_split_csv(path: str | os.PathLike, clips: Iterable[Clip], *, root: str | os.PathLike | None = None,
                    splits: Sequence[str] | None = None) -> Path:
    """Write ``path,label,group,split`` rows (paths relative to ``root``), atomically.

    ``root`` defaults to the folder all clips share; ``splits`` defaults to :func:`split_of` of each group.
    """
    clips = list(clips)
    if splits is not None and len(splits) != len(clips):
        raise AuricleError(f"got {len(splits)} splits for {len(clips)} clips")
    if root is None:
        root = os.path.commonpath([str(c.path.parent) for c in clips]) if clips else "."
    root = Path(root).absolute()
    return write_split(path, [SplitRow(relative_path(Path(c.path).absolute(), root), c.label, c.group,
                                       splits[i] if splits else c.split) for i, c in enumerate(clips)])


def read_split_csv(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> list[tuple[Clip, str]]:
    """Read a split file: ``(clip, recorded split)`` per row. Clip paths are joined to ``root`` when given, else
    left relative; a three-column file of an older run gets each clip's group from its name."""
    base = Path(root) if root is not None else None
    return [(Clip(base / r.path if base is not None else Path(r.path), r.label, r.group or group_of(r.path)),
             r.split) for r in read_split(path)]
