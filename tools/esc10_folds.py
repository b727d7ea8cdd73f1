"""Link the ESC-10 clips of some folds into one folder, to use them as negative audio for a keyword model.

ESC-10's folds keep the takes of one source recording together, so folds 1-3 can teach a keyword detector
to reject everyday sounds while folds 4-5 stay unseen for measuring its false accepts:

    python -m tools.esc10_folds --folds 1,2,3 --out runs/esc10_folds123
    python -m tools.esc10_folds --folds 4,5 --out runs/esc10_folds45
"""
from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path
from typing import Sequence

from edge.errors import AuricleError, run_cli


def link_folds(data: Path, folds: set[int], out: Path) -> int:
    meta = data / "meta.csv"
    if not meta.is_file():
        raise AuricleError(f"{meta} is missing; pass --data with the ESC-10 folder (meta.csv and class folders)")
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(meta, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if int(row["fold"]) not in folds:
                continue
            src = (data / row["path"]).resolve()
            if data.resolve() not in src.parents or not src.is_file():
                raise AuricleError(f"meta.csv names {row['path']!r}, which is not a file inside {data}")
            dst = out / Path(row["path"]).name
            if not dst.exists():
                os.symlink(src, dst)
            n += 1
    return n


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.esc10_folds", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data/esc10"))
    p.add_argument("--folds", required=True, help="comma-separated fold numbers, e.g. 1,2,3")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    try:
        folds = {int(f) for f in a.folds.split(",") if f.strip()}
    except ValueError:
        raise AuricleError(f"--folds {a.folds!r} must be comma-separated numbers, e.g. 1,2,3") from None
    print(f"linked {link_folds(a.data, folds, a.out)} clips into {a.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
