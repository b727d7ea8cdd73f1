"""The project's deterministic split rule, in one place (training and the evaluator both use it).

``sha1(group) % 100``: below 80 is train, 80-89 validation, 90 and above test. For clips the group is the
speaker or source recording; for long negative recordings it is the file's path relative to the folder given.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edge.errors import AuricleError

SPLITS = ("train", "val", "test")
SPLIT_BOUNDS = (80, 90)


def split_of(group: str) -> str:
    """``train`` / ``val`` / ``test`` from ``int(sha1(group)) % 100``: < 80, 80-89, >= 90."""
    bucket = int(hashlib.sha1(group.encode("utf-8")).hexdigest(), 16) % 100
    if bucket < SPLIT_BOUNDS[0]:
        return "train"
    return "val" if bucket < SPLIT_BOUNDS[1] else "test"


#: what each split rule is called in run folders and reports
SHA1_RULE = "sha1(group) % 100: <80 train, 80-89 val, >=90 test"
DEALT_RULE = ("groups dealt (the sha1 rule left a split empty): the two smallest groups to validation and test, "
              "then each group, in sha1 order, to the split furthest below 80/10/10 of the clips")
BY_CLIP_RULE = ("split by clip (fewer than 3 groups): clips dealt as groups of one, so groups (speakers) cross "
                "splits")
SPLIT_TARGETS = {"train": 0.8, "val": 0.1, "test": 0.1}
#: a corpus source's role (``tools.negative_corpora``) -> the split all its files serve: whole sources, never parts
ROLE_SPLIT = {"train": "train", "tune": "val", "test": "test"}


def source_roles(root: Path) -> dict[Path, str]:
    """Corpus sources at or directly below ``root`` (folders whose ``manifest.json`` names a ``role``, as
    ``tools.negative_corpora`` writes them) -> their role. Empty for a plain folder of recordings."""
    roles: dict[Path, str] = {}
    if not root.is_dir():
        return roles
    for folder in [root, *sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))]:
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            continue
        try:
            role = json.loads(manifest.read_text()).get("role")
        except (OSError, ValueError, AttributeError):
            raise AuricleError(f"{manifest} is not a readable corpus manifest; rebuild the source with "
                               "python -m tools.negative_corpora") from None
        if role not in ROLE_SPLIT:
            raise AuricleError(f"{manifest} names role {role!r}; a source's role is train, tune or test")
        roles[folder] = role
    _check_complete(root, roles)
    return roles


def _check_complete(root: Path, roles: dict[Path, str]) -> None:
    """In a corpus every sub-folder is a source with a manifest: one without (a build still running or cut
    short) has no role, and the sha1 rule would put most of a test source into train."""
    if not roles or root in roles:
        return
    loose = [d.name for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".") and d not in roles]
    if loose:
        raise AuricleError(f"{root / loose[0]} has no manifest.json, so its role is unknown (a corpus build still "
                           "running or cut short?); finish it with python -m tools.negative_corpora, or move it out")


def file_split(path: Path, root: Path, roles: dict[Path, str]) -> str:
    """The split of a negative recording found under ``root``: its corpus source's role if it has one, else the
    sha1 rule on its path relative to ``root``."""
    for source, role in roles.items():
        if source == path.parent or source in path.parents:
            return ROLE_SPLIT[role]
    return split_of(path.relative_to(root).as_posix())


def _hash(group: str) -> str:
    return hashlib.sha1(group.encode("utf-8")).hexdigest()


def deal_groups(sizes: dict[str, int]) -> dict[str, str]:
    """Split of each group (``sizes``: clips per group, >= 3 groups) such that train, validation and test all
    get at least one group and the clips come close to 80/10/10; deterministic (sizes and sha1 order only)."""
    if len(sizes) < 3:
        raise ValueError(f"dealing needs at least 3 groups, got {len(sizes)}")
    by_size = sorted(sizes, key=lambda g: (sizes[g], _hash(g)))
    out = {by_size[0]: "val", by_size[1]: "test"}
    total = sum(sizes.values())
    have = {"train": 0, "val": sizes[by_size[0]], "test": sizes[by_size[1]]}
    for g in sorted(by_size[2:], key=_hash):
        split = max(SPLITS, key=lambda s: (SPLIT_TARGETS[s] * total - have[s], s == "train"))
        out[g] = split
        have[split] += sizes[g]
    return out


def choose_splits(groups: list[str]) -> tuple[list[str], str]:
    """The split of each item given its group, and the rule that made it: the sha1 rule when it leaves no
    split empty (the project's figures), else groups dealt (>= 3 groups), else the items dealt one by one
    (their position is their group)."""
    hashed = [split_of(g) for g in groups]
    if set(hashed) == set(SPLITS) or not groups:
        return hashed, SHA1_RULE
    sizes: dict[str, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    if len(sizes) >= 3:
        dealt = deal_groups(sizes)
        return [dealt[g] for g in groups], DEALT_RULE
    if len(groups) < 3:
        return hashed, SHA1_RULE
    keys = [f"{g}\x00{i}" for i, g in enumerate(groups)]
    dealt = deal_groups({k: 1 for k in keys})
    return [dealt[k] for k in keys], BY_CLIP_RULE
