"""``python -m training.data DIR``: what a dataset holds and whether it can be trained on (:func:`inspect_dataset`,
:func:`format_report`); exits 2 with one line when it cannot."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from edge.cliutil import HelpFormatter, add_verbosity_arguments, setup_logging
from edge.errors import AudioError, AuricleError
from edge.features import FeatureConfig
from edge.splits import BY_CLIP_RULE, DEALT_RULE, SHA1_RULE, SPLITS
from training.data.dataset import auto_clip_seconds, progress_bar, skipper, trainability_problem
from training.data.decode import prepare_audio, read_bytes
from training.data.discover import LAYOUTS, scan
from training.data.naming import Clip, Naming, add_naming_options, naming_from
from training.data.split import groups_across_splits, relative_path


@dataclasses.dataclass(frozen=True)
class DatasetReport:
    """What :func:`inspect_dataset` found. ``problem`` is ``None`` when the data can be trained on."""

    root: Path
    layout: str
    files: int
    clip_counts: dict[str, int]          # usable clips per discovered class
    durations: dict[str, float]          # native seconds per class
    sample_rates: dict[int, int]         # native rate -> clips
    channels: dict[int, int]             # channel count -> clips
    shortest: float
    longest: float
    split_clips: dict[str, int]
    split_groups: dict[str, int]
    skipped: tuple[tuple[Path, str], ...]
    problem: str | None
    rule: str = "label_n"
    groups: int = 0
    groups_across: int = 0                # groups with clips in more than one split
    split_source: str = "hash"            # "hash" (sha1 of the group), a dealing rule's text or the --split-file path
    warnings: tuple[str, ...] = ()
    clip_seconds: tuple[float, str] | None = None   # the automatic clip length and why
    group_rule: str = "speaker of <speaker>_nohash_<n> names, else each file"


def inspect_dataset(root: str | os.PathLike, *, layout: str = "auto", strict: bool = False,
                    sample_rate: int = FeatureConfig.sample_rate, progress: bool = True,
                    naming: Naming | None = None) -> DatasetReport:
    """Decode every clip under ``root`` (mono, resampled to ``sample_rate``) and summarise what is usable.

    Raises :class:`AuricleError` for a missing folder, or on the first unusable file when ``strict``.
    """
    if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise AuricleError(f"sample rate {sample_rate!r} must be a positive integer (Hz)")
    found = scan(root, layout=layout, naming=naming)
    skipped: list[tuple[Path, str]] = []
    skip = skipper(skipped, strict=strict, note=False, fix="fix or remove the file, or drop --strict to skip it")
    for path, reason in found.rejected:
        skip(path, reason)
    counts: Counter[str] = Counter({label: 0 for label in {c.label for c in found.clips}})
    durations: Counter[str] = Counter()
    rates: Counter[int] = Counter()
    chans: Counter[int] = Counter()
    split_clips: Counter[str] = Counter({s: 0 for s in SPLITS})
    split_groups: dict[str, set[str]] = {s: set() for s in SPLITS}
    lengths: list[float] = []
    usable: list[Clip] = []
    bar = progress_bar(len(found.clips), "decoded", progress)
    for clip in found.clips:
        try:
            _, native = prepare_audio(clip.path, read_bytes(clip.path), int(sample_rate))
        except AudioError as exc:
            skip(clip.path, str(exc))
        else:
            counts[clip.label] += 1
            durations[clip.label] += native.duration
            rates[native.sample_rate] += 1
            chans[native.channels] += 1
            split_clips[clip.split] += 1
            split_groups[clip.split].add(clip.group)
            lengths.append(native.duration)
            usable.append(clip)
        bar.step(skipped=len(skipped))
    bar.finish(skipped=len(skipped))
    return DatasetReport(
        root=found.root, layout=found.layout, files=len(found.clips) + len(found.rejected),
        clip_counts=dict(sorted(counts.items())), durations={k: float(durations[k]) for k in sorted(counts)},
        sample_rates=dict(sorted(rates.items())), channels=dict(sorted(chans.items())),
        shortest=min(lengths, default=0.0), longest=max(lengths, default=0.0),
        split_clips={s: split_clips[s] for s in SPLITS}, split_groups={s: len(split_groups[s]) for s in SPLITS},
        skipped=tuple(skipped), problem=trainability_problem(dict(counts), root=found.root),
        rule=found.rule, groups=len({c.group for c in usable}), groups_across=groups_across_splits(usable),
        split_source=(naming.split_file if naming and naming.split_file else
                      "hash" if found.split_rule == SHA1_RULE else found.split_rule), warnings=found.warnings,
        clip_seconds=auto_clip_seconds(lengths) if lengths else None,
        group_rule=_group_rule_text(found.rule, naming),
    )


def _group_rule_text(rule: str, naming: Naming | None) -> str:
    if naming is not None and naming.group_regex:
        return f"--group-by '{naming.group_regex}'"
    if rule == "label_speaker_n":
        return "the <speaker> of <label>_<speaker>_<n>"
    return "speaker of <speaker>_nohash_<n> names, else each file"


_RULE_TEXT = {
    "folders": "class folders",
    "label-regex": "--label-regex (first group of the file name)",
    "nohash": "<word>_<speaker>_nohash_<n> (label: word, group: speaker)",
    "label_speaker_n": "<label>_<speaker>_<n> (label: first field, group: second field)",
    "label_n": "<label>_<n> (a trailing number dropped; each file its own group)",
}


def format_report(report: DatasetReport) -> str:
    """The human-readable summary printed by ``python -m training.data``."""
    lines = [f"dataset {report.root} (layout: {report.layout}, {report.files} audio files)"]
    width = max([len("class")] + [len(k) for k in report.clip_counts])
    lines.append(f"  {'class':<{width}}  {'clips':>6}  {'duration':>10}")
    for label, n in report.clip_counts.items():
        lines.append(f"  {label:<{width}}  {n:>6}  {report.durations[label]:>9.1f}s")
    total = sum(report.clip_counts.values())
    lines.append(f"  {'total':<{width}}  {total:>6}  {sum(report.durations.values()):>9.1f}s")
    if total:
        lines.append(f"clip length: {report.shortest:.2f} s to {report.longest:.2f} s")
    lines.append("sample rates: " + (", ".join(f"{sr} Hz ({n})" for sr, n in report.sample_rates.items()) or "-"))
    lines.append("channels: " + (", ".join(f"{ch} ({n})" for ch, n in report.channels.items()) or "-"))
    lines.append(f"skipped: {len(report.skipped)}")
    for path, reason in report.skipped:
        lines.append(f"  {relative_path(path, report.root)}: {reason}")
    lines.append(f"labels: {_RULE_TEXT.get(report.rule, report.rule)}")
    if report.clip_seconds:
        lines.append(f"--clip-seconds auto would choose {report.clip_seconds[0]:g} s: {report.clip_seconds[1]}")
    short = {"hash": "sha1(group) % 100", DEALT_RULE: "groups dealt: the sha1 rule left a split empty",
             BY_CLIP_RULE: "by clip: fewer than 3 groups"}
    source = short.get(report.split_source, f"--split-file {report.split_source}")
    lines.append(f"split ({source}; clips/groups): " + ", ".join(
        f"{s} {report.split_clips[s]}/{report.split_groups[s]}" for s in SPLITS))
    lines.append(f"groups ({report.group_rule}): {report.groups}, across splits: {report.groups_across}")
    lines.extend(f"warning: {w}" for w in report.warnings)
    empty = [s for s in SPLITS if report.split_clips[s] == 0]
    if total and empty:
        lines.append(f"warning: no clips in the {'/'.join(empty)} split (groups hash by sha1(group) % 100; "
                     "add more speakers/sources)")
    lines.append("trainable: yes" if report.problem is None else f"trainable: no -- {report.problem}")
    return "\n".join(lines)


# -- CLI ----------------------------------------------------------------------------------------------------
_EPILOG = """\
layouts:
  folders    one folder per class: DIR/dog/x.wav (nested folders inside a class are fine)
  filenames  flat files labelled by name: Laughter_284.m4a -> Laughter (a trailing _<n> is dropped;
             without a number, the text before the first '_'); word_<speaker>_nohash_<n> -> word
  auto       folders when any sub-folder holds audio, else filenames

audio: .wav .flac .ogg via soundfile; .m4a .mp3 .aac .wma .opus .webm via pydub + imageio-ffmpeg.
  <label>_<speaker>_<n> flat names (e.g. 3_jackson_12.wav, when the middle fields repeat across labels)
             -> label 3, group jackson
  --label-regex REGEX  flat files: the first group of REGEX (searched in the file name without extension)
             is the label, e.g. --label-regex '^([a-z]+)_'

groups and splits: <speaker>_nohash_<n> files are grouped by speaker, <label>_<speaker>_<n> by speaker,
  other files are their own group; --group-by REGEX: the first group of REGEX is the group, e.g.
  --group-by '^([^_]+)_' for 2AV8_4_1_0_44_0_0_0.wav -> 2AV8.
  sha1(group) % 100 < 80 -> train, < 90 -> val, else test, so a speaker never straddles splits.
  --split-file CSV (header with path,split; paths relative to DIR) gives your own split instead; clips it
  does not list are left out. "across splits" counts groups with clips in more than one split (0 under a
  group rule).

exit status: 0 when the data can be trained on; 2 with one line on stderr when it cannot (missing folder,
no audio, only one class, a class whose files were all skipped, a bad regex, a split file naming unknown
paths) or, with --strict, on the first bad file.
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.data",
        description="Inspect an audio dataset: classes with clip counts and durations, sample rates and channel "
                    "counts, files that cannot be used (and why), and train/val/test split sizes.",
        epilog=_EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("dir", metavar="DIR", help="dataset folder")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto", help="how labels are given")
    parser.add_argument("--strict", action="store_true",
                        help="fail on the first unusable file instead of listing it as skipped")
    parser.add_argument("--sample-rate", type=int, default=FeatureConfig.sample_rate, metavar="HZ",
                        help="rate audio is resampled to while checking (default: %(default)s)")
    add_naming_options(parser)
    add_verbosity_arguments(parser, quiet_help="no progress lines; warnings and errors only (the report still "
                                               "goes to stdout)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    setup_logging(args)
    report = inspect_dataset(args.dir, layout=args.layout, strict=args.strict, sample_rate=args.sample_rate,
                             progress=sys.stderr.isatty(), naming=naming_from(args))
    print(format_report(report), flush=True)
    if report.problem:
        raise AuricleError(report.problem)
    return 0
