"""How a file's name becomes its label and split group: the automatic rules, the user's ``--label-regex`` /
``--group-by`` (:class:`Naming`, and the options that fill it), the :class:`Clip` that carries both, and the
warnings when the inferred labels or groups look wrong.

Audio files are those ending in one of :data:`AUDIO_EXTENSIONS` (any case; ``x.wav.wav`` too).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

from edge.errors import AuricleError
from edge.splits import split_of

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".m4a", ".mp3", ".aac", ".wma", ".opus", ".webm"})

_NOHASH = re.compile(r"^(?:(?P<word>.+)_)?(?P<speaker>[^_]+)_nohash_\d+$")
_TRAILING_NUMBER = re.compile(r"^(?P<label>.*?[^_\-\s])[_\-\s]+\d+$")


# -- names, labels, groups ----------------------------------------------------------------------------
def audio_stem(name: str) -> str:
    """File name without its audio extensions: ``bird_0fa1e7a9_nohash_0.wav.wav`` -> ``bird_0fa1e7a9_nohash_0``."""
    stem = Path(name).name
    while True:
        base, ext = os.path.splitext(stem)
        if not base or ext.lower() not in AUDIO_EXTENSIONS:
            return stem
        stem = base


def label_from_name(name: str) -> str | None:
    """The class of a flat file, from its name; ``None`` when the name carries no label.

    Rules, first match wins (on the stem, see :func:`audio_stem`):

    1. ``<word>_<speaker>_nohash_<n>`` -> ``word`` (Speech Commands naming);
    2. a trailing number and the ``_``/``-``/space before it are dropped:
       ``Laughter_284`` -> ``Laughter``, ``dog-bark-3`` -> ``dog-bark``, ``Cat 12`` -> ``Cat``;
    3. otherwise the text before the first ``_`` (``siren_take_a`` -> ``siren``), or the whole stem.

    Stems that are only a number, or ``<speaker>_nohash_<n>`` without a word, give ``None``.
    """
    stem = audio_stem(name).strip()
    m = _NOHASH.match(stem)
    if m:
        return m.group("word") or None
    m = _TRAILING_NUMBER.match(stem)
    if m:
        return m.group("label").strip() or None
    if not stem or stem.isdigit():
        return None
    label = stem.split("_", 1)[0].strip()
    return label or None


def group_of(name: str) -> str:
    """The split group of a file: its speaker for ``[word_]<speaker>_nohash_<n>`` names, else its stem."""
    stem = audio_stem(name)
    m = _NOHASH.match(stem)
    return m.group("speaker") if m else stem


# -- user-controlled and inferred naming rules ----------------------------------------------------------
_LABEL_SPEAKER_N = re.compile(r"^(?P<label>[^_]+)_(?P<speaker>[^_]+)_(?P<n>\d+)$")
NAMING_RULES = ("label-regex", "nohash", "label_speaker_n", "label_n")


def compile_rule(pattern: str | None, option: str) -> re.Pattern | None:
    """A user's regular expression with at least one group, or :class:`AuricleError` naming the problem."""
    if pattern is None:
        return None
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise AuricleError(f"{option} {pattern!r} is not a valid regular expression ({exc}); fix it, e.g. "
                           f"{option} '^([^_]+)_'") from None
    if rx.groups < 1:
        raise AuricleError(f"{option} {pattern!r} has no group; put what you want in parentheses, e.g. "
                           f"{option} '^([^_]+)_'")
    return rx


@dataclasses.dataclass(frozen=True)
class Naming:
    """How names become labels and groups. ``label_regex`` (flat files; first group = label) and
    ``group_regex`` (any layout; first group = split group) are the user's; without them the rule is
    inferred from the names (:func:`infer_rule`). Both regexes are searched in the file's stem."""

    label_regex: str | None = None
    group_regex: str | None = None
    split_file: str | None = None

    def compiled(self) -> tuple[re.Pattern | None, re.Pattern | None]:
        return compile_rule(self.label_regex, "--label-regex"), compile_rule(self.group_regex, "--group-by")


def infer_rule(stems: Sequence[str]) -> str:
    """The automatic rule for flat names: ``nohash`` (Speech Commands), ``label_speaker_n`` when most names
    are ``<a>_<b>_<n>`` and the ``<b>`` fields repeat across several ``<a>`` values (spoken digits:
    ``3_jackson_12``), else ``label_n`` (the study's ``Laughter_284``; see :func:`label_from_name`)."""
    if not stems:
        return "label_n"
    if sum(1 for s in stems if _NOHASH.match(s)) >= 0.5 * len(stems):
        return "nohash"
    parts = [m.groups() for m in map(_LABEL_SPEAKER_N.match, stems) if m]
    if len(parts) < 0.8 * len(stems):
        return "label_n"
    firsts = {a for a, _, _ in parts}
    pairs = {(a, b) for a, b, _ in parts}
    seconds = {b for _, b, _ in parts}
    shared = sum(1 for b in seconds if sum(1 for a in firsts if (a, b) in pairs) > 1)
    return "label_speaker_n" if len(firsts) >= 2 and shared >= max(2, 0.5 * len(seconds)) else "label_n"


def labeller(rule: str, label_rx: re.Pattern | None) -> Callable[[str], str | None]:
    if label_rx is not None:
        def by_regex(stem: str) -> str | None:
            m = label_rx.search(stem)
            return (m.group(1) or None) if m else None
        return by_regex
    if rule == "label_speaker_n":
        return lambda stem: m.group("label") if (m := _LABEL_SPEAKER_N.match(stem)) else label_from_name(stem)
    return label_from_name


def grouper(rule: str, group_rx: re.Pattern | None, misses: list[str]) -> Callable[[str], str]:
    """Stem -> group. A name the ``--group-by`` regex does not match is its own group (listed in ``misses``)."""
    if group_rx is not None:
        def by_regex(stem: str) -> str:
            m = group_rx.search(stem)
            if m and m.group(1):
                return m.group(1)
            misses.append(stem)
            return stem
        return by_regex
    if rule == "label_speaker_n":
        return lambda stem: m.group("speaker") if (m := _LABEL_SPEAKER_N.match(stem)) else group_of(stem)
    return group_of


@dataclasses.dataclass(frozen=True)
class Clip:
    """One labelled audio file. ``path`` is absolute; ``group`` decides the split."""

    path: Path
    label: str
    group: str
    assigned: str | None = None     # the split a --split-file or dealing gave; None: the hash rule on the group

    @property
    def split(self) -> str:
        return self.assigned or split_of(self.group)


def naming_warnings(clips: Sequence[Clip], *, layout: str, naming: Naming, rule: str) -> list[str]:
    """Signs that labels or groups were inferred wrongly: many classes of few clips whose names share a leading
    field, or file-name prefixes (speakers?) that land in more than one split."""
    out: list[str] = []
    counts = Counter(c.label for c in clips)
    if layout == "filenames" and naming.label_regex is None and len(counts) >= 8:
        heads = {label.split("_", 1)[0] for label in counts if "_" in label}
        median = sorted(counts.values())[len(counts) // 2]
        if median <= 20 and heads and len(heads) <= len(counts) / 3:
            example = next(iter(sorted(counts)))
            out.append(f"{len(counts)} classes of {median} clips (median) whose names share {len(heads)} leading "
                       f"fields (e.g. {example!r}): if the label is the leading field, pass --label-regex "
                       "'^([^_]+)_' (and --group-by for the speaker)")
    if naming.group_regex is None and rule in ("label_n", "folders") and clips:
        prefix: dict[str, set[str]] = {}
        for c in clips:
            stem = audio_stem(c.path.name)
            if c.group == stem and "_" in stem:
                prefix.setdefault(stem.split("_", 1)[0], set()).add(c.split)
        crossing = [p for p, s in prefix.items() if len(s) > 1]
        if crossing and len(prefix) <= 0.5 * len(clips):
            out.append(f"{len(crossing)} file-name prefixes (e.g. {sorted(crossing)[0]!r}) have clips in more than "
                       "one split; if the prefix is the speaker or source, pass --group-by '^([^_]+)_' so each "
                       "stays in one split")
    return out


def add_naming_options(parser: argparse.ArgumentParser) -> None:
    """--label-regex, --group-by and --split-file (shared by the inspector and the trainer)."""
    parser.add_argument("--label-regex", metavar="REGEX", default=None,
                        help="flat files: the first group of REGEX in the file name is the label")
    parser.add_argument("--group-by", metavar="REGEX", default=None,
                        help="the first group of REGEX in the file name is the split group (speaker/source), "
                             "e.g. '^([^_]+)_'")
    parser.add_argument("--split-file", metavar="CSV", default=None,
                        help="your own split: CSV with path,split columns (paths relative to the data folder)")


def naming_from(args: argparse.Namespace) -> Naming:
    """The :class:`Naming` of parsed options, its regexes checked (bad ones raise one-line errors)."""
    naming = Naming(label_regex=args.label_regex, group_regex=args.group_by, split_file=args.split_file)
    naming.compiled()
    return naming
