"""Finding the labelled clips under a data folder (:func:`scan`): the layouts, hidden and ignored entries, the
naming rule applied, the split each clip gets and the warnings worth showing."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterator

from edge.errors import AuricleError
from edge.splits import BY_CLIP_RULE, SHA1_RULE
from training.data.naming import (AUDIO_EXTENSIONS, Clip, Naming, audio_stem, grouper, infer_rule, labeller,
                                  naming_warnings)
from training.data.split import assign_splits, never_empty

#: Never a class: Speech Commands' long noise recordings (the source of ``_silence_``), not labelled clips.
IGNORED_DIRS = frozenset({"_background_noise_"})
LAYOUTS = ("auto", "folders", "filenames")


@dataclasses.dataclass(frozen=True)
class Discovery:
    """What :func:`scan` found: the clips, audio files it could not label, the layout and naming rule it used,
    the stems a ``--group-by`` regex did not match (each its own group) and warnings about the naming."""

    root: Path
    layout: str
    clips: tuple[Clip, ...]
    rejected: tuple[tuple[Path, str], ...]
    rule: str = "label_n"
    group_misses: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    split_rule: str = SHA1_RULE


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _is_audio(name: str) -> bool:
    return not _is_hidden(name) and os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


def _sorted_entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise AuricleError(f"cannot list {folder}: {exc.strerror or exc}") from None


def _audio_below(folder: Path) -> Iterator[Path]:
    """Audio files under ``folder`` (recursive, sorted, hidden entries skipped)."""
    for entry in _sorted_entries(folder):
        if _is_hidden(entry.name):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _audio_below(Path(entry.path))
        elif entry.is_file() and _is_audio(entry.name):
            yield Path(entry.path)


def _class_dirs(root: Path) -> list[Path]:
    return [Path(e.path) for e in _sorted_entries(root)
            if e.is_dir() and not _is_hidden(e.name) and e.name not in IGNORED_DIRS]


def _check_root(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise AuricleError(f"dataset folder {str(path)!r} does not exist; pass the folder that holds the "
                           "class folders or labelled files")
    if not path.is_dir():
        raise AuricleError(f"{str(path)!r} is a file, not a dataset folder; pass the folder that holds it")
    return Path(os.path.abspath(path))


def scan(root: str | os.PathLike, *, layout: str = "auto", naming: Naming | None = None) -> Discovery:
    """Find the labelled clips under ``root`` (see the module docstring for layouts and rules; ``naming`` holds
    the user's --label-regex / --group-by / --split-file)."""
    if layout not in LAYOUTS:
        raise AuricleError(f"layout {layout!r} is not one of {LAYOUTS}")
    naming = naming or Naming()
    label_rx, group_rx = naming.compiled()
    root = _check_root(root)
    class_dirs = _class_dirs(root)
    per_class = {d: list(_audio_below(d)) for d in class_dirs} if layout != "filenames" else {}
    if layout == "auto":
        layout = "folders" if any(per_class.values()) and label_rx is None else "filenames"
    loose = [Path(e.path) for e in _sorted_entries(root) if e.is_file() and _is_audio(e.name)]
    rule = "label-regex" if label_rx is not None else (
        infer_rule([audio_stem(f.name) for f in loose]) if layout == "filenames" else "folders")
    misses: list[str] = []
    group = grouper(rule, group_rx, misses)
    clips: list[Clip] = []
    rejected: list[tuple[Path, str]] = []
    if layout == "folders":
        for folder, files in per_class.items():
            clips.extend(Clip(f, folder.name, group(audio_stem(f.name))) for f in files)
        rejected.extend((f, "audio file outside any class folder (layout 'folders')") for f in loose)
    else:
        label = labeller(rule, label_rx)
        why = (f"name does not match --label-regex {naming.label_regex!r}" if label_rx is not None else
               "no label in the file name; name it <label>_<n>.<ext>, use class folders or pass --label-regex")
        for f in loose:
            lab = label(audio_stem(f.name))
            if lab is None:
                rejected.append((f, why))
            else:
                clips.append(Clip(f, lab, group(audio_stem(f.name))))
    clips.sort(key=lambda c: (c.label, str(c.path)))
    if naming.split_file:
        clips, unlisted = assign_splits(clips, naming.split_file, root)
        rejected.extend((f, "not listed in --split-file") for f in unlisted)
        split_rule = f"--split-file {Path(naming.split_file).name} (the user's split)"
    else:
        clips, split_rule = never_empty(clips)
    warns = naming_warnings(clips, layout=layout, naming=naming, rule=rule)
    if split_rule == BY_CLIP_RULE:
        warns.append(f"only {len({c.group for c in clips})} group(s) (speakers/sources): split by clip, so the same "
                     "speaker is in train and test and the test accuracy is optimistic; add speakers or pass "
                     "--split-file")
    if misses:
        warns.append(f"{len(misses)} file name(s) do not match --group-by {naming.group_regex!r} (e.g. "
                     f"{misses[0]!r}); each of them is its own group")
    return Discovery(root=root, layout=layout, clips=tuple(clips), rejected=tuple(rejected), rule=rule,
                     group_misses=tuple(misses), warnings=tuple(warns), split_rule=split_rule)


def discover(root: str | os.PathLike, *, layout: str = "auto", naming: Naming | None = None) -> list[Clip]:
    """The labelled clips under ``root``, sorted by label then path. Unlabelled files are left out."""
    return list(scan(root, layout=layout, naming=naming).clips)
