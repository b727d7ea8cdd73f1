"""The command line of ``python -m tools.pi_check``: its options, the steps in order, exit codes."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from tools.pi_check.check import check, resolve_only
from tools.pi_check.common import (CPU_MODELS, DEFAULT_BUNDLE_NAME, DEFAULT_CLIPS, DEFAULT_MIRROR, DEFAULT_STREAM,
                                   DEFAULT_STREAM_SECONDS, DEFAULT_TOLERANCE, EXIT_MISMATCH, EXIT_SETUP, REPO,
                                   RUN_TIMEOUT, PiCheckError, one_line)
from tools.pi_check.report import print_results, print_setup, report_problems, write_report, x86_versions_of
from tools.pi_check.wheels import edge_requirements


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.pi_check",
        description="Run the edge runtime on emulated Raspberry Pi OS (bookworm, aarch64, Python 3.11) under "
                    "qemu-user and compare its events and scores with x86.",
        epilog="Exit 0: all equal within tolerance; 1: a difference (table above says which); 2: setup problem.")
    p.add_argument("--bundles", nargs="+", type=Path, metavar="DIR",
                   help="bundle folders to check on one clip each (default: firmware_assets/*/)")
    p.add_argument("--default-bundle", type=Path, metavar="DIR",
                   help="bundle for the stream run (default: $AURICLE_BUNDLE, "
                        f"firmware_assets/{DEFAULT_BUNDLE_NAME}, else the first of --bundles)")
    p.add_argument("--stream", type=Path, default=REPO / DEFAULT_STREAM, metavar="WAV",
                   help=f"demo stream (default: {DEFAULT_STREAM})")
    p.add_argument("--stream-seconds", type=float, default=DEFAULT_STREAM_SECONDS, metavar="SEC",
                   help="listen to the first SEC s of the stream, on both sides (default "
                        f"{DEFAULT_STREAM_SECONDS:g}; 0: all of it; emulation is ~100x slower than native)")
    p.add_argument("--clips", type=Path, default=REPO / DEFAULT_CLIPS, metavar="DIR",
                   help=f"label folders of test clips (default: {DEFAULT_CLIPS})")
    p.add_argument("--cpu", choices=sorted(CPU_MODELS), default="cortex-a72",
                   help="emulated CPU: cortex-a72 = Raspberry Pi 4 (default), cortex-a76 = Raspberry Pi 5")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, metavar="D",
                   help=f"largest allowed |score difference| per window and label (default {DEFAULT_TOLERANCE})")
    p.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="cache folder (default: $AURICLE_PI_CACHE or ~/.cache/auricle/pi-check)")
    p.add_argument("--refresh", action="store_true",
                   help="rebuild the Pi venv (re-resolve the wheels with pip); the root is kept")
    p.add_argument("--mirror", default=os.environ.get("PI_CHECK_MIRROR"), metavar="URL",
                   help="Debian mirror for debootstrap (default: this machine's apt mirror, else "
                        f"{DEFAULT_MIRROR})")
    p.add_argument("--x86-python", default=None, metavar="PY",
                   help="python of the x86 side (default: .venv/bin/python, else this python)")
    p.add_argument("--requirements", nargs="+", metavar="REQ",
                   help="requirements to resolve (default: setup.cfg's install_requires + edge extra)")
    p.add_argument("--resolve-only", action="store_true",
                   help="only print the aarch64 wheels pip picks for a Pi (host pip, a few seconds) and exit")
    p.add_argument("--wheel-index", metavar="DIR",
                   help="with --resolve-only: resolve from this folder of wheels instead of PyPI (offline)")
    p.add_argument("--report", type=Path, metavar="JSON", help="also write the full report here")
    p.add_argument("--timeout", type=int, default=RUN_TIMEOUT, metavar="SEC",
                   help=f"per emulated edge.listen run (default {RUN_TIMEOUT})")
    return p


def x86_python(arg: str | None) -> str:
    if arg:
        return arg
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable



def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    py86 = x86_python(args.x86_python)
    requirements = list(args.requirements) if args.requirements else edge_requirements()
    if args.resolve_only:
        return resolve_only(requirements, py86, args.wheel_index)
    res = check(args, requirements, py86)
    x86_versions = x86_versions_of(py86)
    problems = report_problems(res)
    print_setup(res, x86_versions)
    print_results(res, problems)
    write_report(res, problems, x86_versions, args.report)
    return 0 if res.ok else EXIT_MISMATCH


def cli() -> None:
    try:
        code = main()
    except PiCheckError as exc:
        print(f"pi-check: error: {one_line(exc, 2000)}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_SETUP) from None
    except KeyboardInterrupt:
        print("pi-check: interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    raise SystemExit(code)
