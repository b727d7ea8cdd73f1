"""The check, step by step: the host, the inputs, the emulated Pi (root, venv), the probe, the runs on
both sides and their comparison, under the cache's lock."""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import os
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from tools.pi_check.common import (CPU_MODELS, DEFAULT_BUNDLE_NAME, EDGE_PACKAGES, PI_GLIBC, PI_PYTHON, REPO,
                                   Cache, PiCheckError, check_tools, default_cache, find_tool,
                                   host_has_portaudio, print_versions, read_json, say)
from tools.pi_check.probe import probe, probe_problems
from tools.pi_check.root import apt_mirror, build_root, guest_env, root_ready, write_cpuinfo, write_wrappers
from tools.pi_check.runs import (Case, Outcome, compare, default_bundles, plan_cases, read_bundle, run_one,
                                 x86_env)
from tools.pi_check.wheels import (build_venv, canonical, install_wheel, resolve_aarch64_wheels, sync_src,
                                   venv_ready)


@contextlib.contextmanager
def locked(cache: Cache) -> Iterator[None]:
    cache.path.mkdir(parents=True, exist_ok=True)
    with open(cache.path / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another pi-check using {cache.path}")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


# -- the steps of a check ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Inputs:
    """What both sides run on: the bundles (one clip each), the stream's bundle, the stream and the clips."""
    bundles: tuple[Path, ...]
    default_bundle: Path
    stream: Path
    clips: Path


@dataclasses.dataclass(frozen=True)
class PiSide:
    """The emulated Pi, ready to run: its cache, whether root/venv were built this time, what pip installed."""
    cache: Cache
    cold_root: bool
    cold_venv: bool
    venv_stamp: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """Everything the report prints and writes."""
    pi: PiSide
    cpu: str
    tolerance: float
    stream_seconds: float
    x86_python: str
    probe: dict[str, Any]
    probe_problems: list[str]
    rows: list[dict[str, Any]]
    phases: dict[str, float]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.probe_problems and all(r["ok"] for r in self.rows)


def resolve_only(requirements: Sequence[str], python: str, wheel_index: str | None) -> int:
    """``--resolve-only``: print the aarch64 wheels the host pip picks for a Pi."""
    say(f"resolving {' '.join(requirements)} for aarch64 / CPython {PI_PYTHON} / glibc "
        f"{PI_GLIBC[0]}.{PI_GLIBC[1]} (host pip, wheels only)")
    resolved = resolve_aarch64_wheels(requirements, python=python, wheel_index=wheel_index)
    for name, info in sorted(resolved.items()):
        print(f"{name} {info['version']}  ({info['file']})")
    return 0


def check_host(cache: Cache) -> bool:
    """The host tools this run needs (debootstrap only for a cold root) and PortAudio; True: the root is cold."""
    cold_root = not root_ready(cache)
    check_tools(building_root=cold_root)
    if not host_has_portaudio():
        raise PiCheckError("PortAudio is not installed on this machine (x86 --list-devices needs it, and "
                           "the emulated sounddevice finds its soname through the host's ldconfig); install: "
                           "sudo apt-get install libportaudio2")
    return cold_root


def resolve_inputs(args: argparse.Namespace, py86: str) -> Inputs:
    """The bundles, stream and clips of the command line (each checked), and the x86 python."""
    bundles = tuple(b.resolve() for b in (args.bundles or default_bundles()))
    if not bundles:
        raise PiCheckError(f"no bundles in {REPO / 'firmware_assets'}/*/ (none shipped yet?); "
                           "pass --bundles DIR...")
    for b in bundles:
        read_bundle(b)
    default_bundle = args.default_bundle or (Path(os.environ["AURICLE_BUNDLE"]) if os.environ.get(
        "AURICLE_BUNDLE") else None)
    if default_bundle is None:
        shipped = REPO / "firmware_assets" / DEFAULT_BUNDLE_NAME
        default_bundle = shipped if (shipped / "manifest.json").is_file() else bundles[0]
    default_bundle = default_bundle.resolve()
    read_bundle(default_bundle)
    stream = args.stream.resolve()
    if not stream.is_file():
        raise PiCheckError(f"demo stream {stream} not found; pass --stream WAV")
    if not Path(py86).exists():
        raise PiCheckError(f"x86 python {py86} not found; `make pi-check` creates .venv, or pass --x86-python")
    return Inputs(bundles, default_bundle, stream, args.clips.resolve())


def prepare_pi(cache: Cache, args: argparse.Namespace, requirements: Sequence[str], py86: str, *, cold_root: bool,
               phases: dict[str, float]) -> PiSide:
    """The arm64 root (built once), the wrappers, cpuinfo and sources, and the Pi venv (rebuilt when stale)."""
    qemu = find_tool("qemu-aarch64-static")
    assert qemu is not None          # check_host made sure
    t = time.monotonic()
    if cold_root:
        build_root(cache, mirror=args.mirror or apt_mirror())
        phases["root_s"] = time.monotonic() - t
    for d in (cache.home, cache.tmp, cache.logs):
        d.mkdir(parents=True, exist_ok=True)
    write_cpuinfo(cache, args.cpu)
    wheel = sync_src(cache)
    write_wrappers(cache, qemu)
    cold_venv = args.refresh or not venv_ready(cache, requirements)
    if cold_venv:
        t = time.monotonic()
        say(f"pre-resolving the aarch64 wheels with the host pip ({', '.join(requirements)})")
        expected = resolve_aarch64_wheels(requirements, python=py86)
        print_versions("host pip expects for aarch64 cp311",
                       {n: expected.get(canonical(n), {}).get("version") for n in EDGE_PACKAGES})
        build_venv(cache, requirements, cpu=args.cpu, expected=expected, wheel=wheel)
        phases["venv_s"] = time.monotonic() - t
    else:
        install_wheel(cache, wheel, cpu=args.cpu)
    return PiSide(cache, cold_root, cold_venv, read_json(cache.venv_stamp) or {})


def run_cases(cases: Sequence[Case], *, py86: str, cache: Cache, cpu: str, timeout: int
              ) -> tuple[list[Outcome], list[Outcome]]:
    """Every case on x86 (one at a time), then under qemu (in parallel, the long stream run first)."""
    say(f"x86: {len(cases)} runs with {py86}")
    x86 = [run_one(py86, c, env=x86_env(), cwd=REPO, timeout=timeout) for c in cases]
    say(f"aarch64: {len(cases)} runs under qemu (the stream run is the long one)")
    gpy = str(cache.venv / "bin/python")
    workers = max(1, min(len(cases), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        order = sorted(range(len(cases)), key=lambda i: cases[i].what != "stream")   # longest first
        futs = {i: pool.submit(run_one, gpy, cases[i], env=guest_env(cache, cpu), cwd=cache.src, timeout=timeout)
                for i in order}
        aarch64 = [futs[i].result() for i in range(len(cases))]
    return aarch64, x86


def check(args: argparse.Namespace, requirements: Sequence[str], py86: str) -> CheckResult:
    """Prepare the emulated Pi, run every case on both sides and compare them (under the cache's lock)."""
    cache = Cache((args.cache or default_cache()).expanduser().resolve())
    t_start = time.monotonic()
    phases: dict[str, float] = {}
    with locked(cache):
        cold_root = check_host(cache)
        inputs = resolve_inputs(args, py86)
        pi = prepare_pi(cache, args, requirements, py86, cold_root=cold_root, phases=phases)
        t = time.monotonic()
        say(f"probing the emulated venv (qemu -cpu {args.cpu} = {CPU_MODELS[args.cpu]['pi']})")
        info = probe(cache, args.cpu)
        phases["probe_s"] = time.monotonic() - t
        cases = plan_cases(bundles=inputs.bundles, default_bundle=inputs.default_bundle, stream=inputs.stream,
                           clips=inputs.clips, stream_seconds=args.stream_seconds or None)
        t = time.monotonic()
        aarch64, x86 = run_cases(cases, py86=py86, cache=cache, cpu=args.cpu, timeout=args.timeout)
        phases["runs_s"] = time.monotonic() - t
        rows = [compare(c, a, x, args.tolerance) for c, a, x in zip(cases, aarch64, x86)]
    return CheckResult(pi=pi, cpu=args.cpu, tolerance=args.tolerance, stream_seconds=args.stream_seconds,
                       x86_python=py86, probe=info, probe_problems=probe_problems(info, cache), rows=rows,
                       phases=phases, seconds=time.monotonic() - t_start)

