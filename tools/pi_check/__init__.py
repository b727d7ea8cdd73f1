"""``make pi-check``: run the edge runtime on an emulated Raspberry Pi and compare it with x86.

A Raspberry Pi 4/5 runs 64-bit Raspberry Pi OS: Debian bookworm, aarch64, Python 3.11. This check builds
that userland once, caches it outside the repo, and then, under ``qemu-aarch64-static`` (user-mode
emulation, no binfmt, no root needed after the first build), does what a Pi user does:

    python3 -m venv .venv
    .venv/bin/pip install 'dist/auricle-*.whl[edge]'   # the wheel of this tree; pip *on aarch64* picks the rest
    .venv/bin/python -m edge.listen --list-devices
    .venv/bin/python -m edge.listen --file STREAM --json            (the default bundle)
    .venv/bin/python -m edge.listen --file CLIP --json --bundle B    (every shipped int8 bundle, one clip each)

(both with ``--all-scores``, so every window's scores are compared, and the stream capped by ``--duration``).

The same ``edge.listen`` commands run on x86 with the project's own venv. Events must have the same labels
at the same times and every window's scores must agree within ``--tolerance``; any difference is
reported and the check fails (exit 1). Setup problems (missing tools, no aarch64 wheel, ...) are one line
on stderr and exit 2.

The cache (``$AURICLE_PI_CACHE``, default ``~/.cache/auricle/pi-check``) holds:

    root/      arm64 bookworm: ``debootstrap --foreign --variant=minbase`` + ``dpkg-deb -x`` of its .debs
    venv/      the Pi-side venv, made by the root's python3 -m venv + ensurepip + pip install 'WHEEL[edge]'
    src/       the Pi-side working folder: dist/ holds the wheel, built from this tree on every run and
               reinstalled (--no-deps) into a cached venv; no source to import, so the installed one runs
    logs/      debootstrap, venv, ensurepip, pip and probe output; last-report.json: the last comparison

Delete the folder for a cold run. The venv is rebuilt when setup.cfg or pyproject.toml change, or with
``--refresh`` (to pick up new releases).

How the emulation is wired, and why:

* ``QEMU_LD_PREFIX=root`` makes qemu look up every absolute path in the root first, then on the host.
* There is no binfmt_misc here, so an emulated process cannot exec an aarch64 binary, and the venv's
  ``bin/python`` symlink (-> /usr/bin/python3) would resolve to the *host's* x86 python. So the venv's
  ``bin/python`` is a small sh wrapper that execs qemu on the root's python3.11 with ``argv[0]`` set to
  itself (Python then finds ``pyvenv.cfg``). pip's own subprocesses, build isolation included, go through
  the same wrapper, so every python that runs is the Pi's aarch64 one.
* qemu 7.2 passes the host's x86 ``/proc/cpuinfo`` through; LiteRT's cpuinfo library then crashes
  (SIGSEGV while creating the interpreter). A real Pi kernel shows an ARM cpuinfo, so the root gets one
  for the emulated CPU model: ``cortex-a72`` (Pi 4, the default) or ``cortex-a76`` (Pi 5). qemu raises
  SIGILL for instructions that model lacks, which is how "Illegal instruction" on a Pi 4 shows up here.
* ``ctypes.util.find_library('portaudio')`` (sounddevice) runs ``/sbin/ldconfig -p``; an emulated
  process execs the *host's* ldconfig, so the soname is found through the host's libportaudio2 entry. The
  library that is then loaded is the root's arm64 one (the probe prints its path). The host needs
  libportaudio2 anyway, for the x86 side.

Only the standard library (and ``edge.fileio``, which needs nothing else) is used here, so any python3 can
run it from the checkout: ``python3 -m tools.pi_check``. Before the slow emulated pip runs, the host's pip (of
``--x86-python``) resolves the same requirements for bookworm's aarch64 tags in a few seconds, so a missing
wheel is reported at once, naming the package and the Python version (``--resolve-only`` does just that).

The steps, one module each: :mod:`~tools.pi_check.common` (the Pi being emulated, the cache layout, host tools),
:mod:`~tools.pi_check.root` (the arm64 root, qemu wrappers, cpuinfo), :mod:`~tools.pi_check.wheels` (the aarch64
wheels and the Pi venv), :mod:`~tools.pi_check.probe`, :mod:`~tools.pi_check.runs` (the ``edge.listen`` runs on
both sides and their comparison), :mod:`~tools.pi_check.check` (the steps in order), :mod:`~tools.pi_check.report`
and :mod:`~tools.pi_check.cli` (the command line).
"""
from __future__ import annotations

from tools.pi_check.check import CheckResult, PiSide, resolve_inputs
from tools.pi_check.cli import build_parser, cli, main
from tools.pi_check.common import (DEFAULT_MIRROR, EDGE_PACKAGES, PI_PYTHON, Cache, PiCheckError, check_tools,
                                   default_cache, missing_tools)
from tools.pi_check.probe import probe_problems
from tools.pi_check.report import format_table, print_results, report_problems, write_report
from tools.pi_check.root import apt_mirror, cpuinfo_text
from tools.pi_check.runs import Case, Outcome, compare, plan_cases
from tools.pi_check.wheels import (cache_is_warm, canonical, edge_requirements, explain_pip_failure,
                                   pi_platform_tags, sync_src)

__all__ = [
    "Cache", "Case", "CheckResult", "DEFAULT_MIRROR", "EDGE_PACKAGES", "Outcome", "PI_PYTHON", "PiCheckError",
    "PiSide", "apt_mirror", "build_parser", "cache_is_warm", "canonical", "check_tools", "cli", "compare",
    "cpuinfo_text", "default_cache", "edge_requirements", "explain_pip_failure", "format_table", "main",
    "missing_tools", "pi_platform_tags", "plan_cases", "print_results", "probe_problems", "report_problems",
    "resolve_inputs", "sync_src", "write_report",
]
