"""Link a Speech Commands folder into one folder per *word*, the `_unknown_` clips' words included.

The v0.02 test-set companion files ten keywords in their own folders and the other 25 words together in
``_unknown_`` (named ``<word>_<speaker>_nohash_<n>.wav.wav``). A network that should learn every word -- the
general backbone users fine-tune with ``training.train --init-from`` -- needs a folder per word:

    python -m tools.sc_words --data ../shared/data/speech_commands_v0.02_test --out runs/sc35

Every link keeps the ``<speaker>_nohash_<n>`` name, so the speaker-disjoint split (sha1 of the speaker) puts
each clip in the same split as it has in the keyword bundles' runs: no test speaker reaches the train part.
``_silence_`` is linked as it is. Nothing is copied; an existing link is left alone. ``--words`` links only
those (a word subset for a learning curve: ``--words left right on off --out runs/sc4``).
"""
from __future__ import annotations

import argparse
import os
import re
from collections import Counter
from pathlib import Path
from typing import Sequence

from edge.cliutil import HelpFormatter
from edge.errors import AuricleError, run_cli

_UNKNOWN = re.compile(r"^(?P<word>[a-z]+)_(?P<rest>[0-9a-f]+_nohash_\d+)\.wav(?:\.wav)?$")
SILENCE = "_silence_"
UNKNOWN = "_unknown_"


def word_links(data: Path) -> list[tuple[Path, str, str]]:
    """(source file, word folder, link name) for every clip under ``data``."""
    if not (data / UNKNOWN).is_dir():
        raise AuricleError(f"{data} has no {UNKNOWN}/ folder; pass --data with a Speech Commands folder "
                           "(word folders, _unknown_, _silence_)")
    links = []
    for folder in sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(folder.iterdir()):
            if not f.is_file() or f.is_symlink():
                continue
            if folder.name == UNKNOWN:
                m = _UNKNOWN.match(f.name)
                if m is None:
                    raise AuricleError(f"{f.name} in {UNKNOWN}/ is not named <word>_<speaker>_nohash_<n>.wav")
                links.append((f, m.group("word"), m.group("rest") + ".wav"))
            elif f.suffix.lower() == ".wav":
                links.append((f, folder.name, f.name))
    return links


def link_words(data: Path, out: Path, words: Sequence[str] | None = None) -> Counter:
    """Make the per-word link tree (of ``words`` only, when given); returns clips per word."""
    data = data.resolve()
    links = word_links(data)
    missing = sorted(set(words or ()) - {w for _, w, _ in links})
    if missing:
        raise AuricleError(f"--words {' '.join(missing)}: not in {data}; choose from its words")
    counts: Counter = Counter()
    for src, word, name in links:
        if words and word not in words:
            continue
        dst = out / word / name
        if dst.exists() and not dst.resolve() == src:
            raise AuricleError(f"{dst} exists and is not a link to {src}; remove {out} and run again")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            os.symlink(src, dst)
        counts[word] += 1
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.sc_words", formatter_class=HelpFormatter,
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a Speech Commands folder (word folders, _unknown_)")
    ap.add_argument("--out", type=Path, required=True, help="the folder of per-word links to make")
    ap.add_argument("--words", nargs="+", metavar="WORD", help="link only these words (default: every word and "
                    "_silence_)")
    args = ap.parse_args(argv)
    counts = link_words(args.data, args.out, args.words)
    words = [w for w in counts if w != SILENCE]
    print(f"{sum(counts[w] for w in words)} clips of {len(words)} words (+ {counts[SILENCE]} {SILENCE}) linked "
          f"into {args.out}; fewest: {min(counts[w] for w in words)} ({min(words, key=counts.__getitem__)})")
    return 0


if __name__ == "__main__":
    run_cli(main)
