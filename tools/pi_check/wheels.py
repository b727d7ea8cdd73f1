"""Step 2, the Pi user's install: the edge requirements, the aarch64 wheels the host pip expects for a Pi,
and the venv made on emulated aarch64 (python3 -m venv, pip install 'WHEEL[edge]'), reused while setup.cfg
and pyproject.toml stay the same."""
from __future__ import annotations

import configparser
import datetime
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from edge.fileio import sha256_bytes, write_text_atomic
from tools.pi_check.common import (PI_GLIBC, PI_PYTHON, REPO, SUITE, VENV_FORMAT, Cache, PiCheckError,
                                   default_cache, find_tool, one_line, pip_env, read_json, run_logged, say,
                                   tail)
from tools.pi_check.root import guest_env, root_ready, write_wrappers


def edge_requirements(setup_cfg: Path = REPO / "setup.cfg") -> list[str]:
    """install_requires + the ``edge`` extra, as pip requirement strings (what '.[edge]' installs)."""
    cp = configparser.ConfigParser()
    cp.read(setup_cfg, encoding="utf-8")
    reqs: list[str] = []
    for text in (cp.get("options", "install_requires", fallback=""),
                 cp.get("options.extras_require", "edge", fallback="")):
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line and line not in reqs:
                reqs.append(line)
    if not reqs:
        raise PiCheckError(f"{setup_cfg} has no [options.extras_require] edge list")
    return reqs


def pi_platform_tags() -> list[str]:
    """The manylinux tags pip accepts on bookworm aarch64 (glibc 2.36), newest first, as pip orders them."""
    major, minor = PI_GLIBC
    tags = [f"manylinux_{major}_{m}_aarch64" for m in range(minor, 16, -1)]
    return tags + ["manylinux2014_aarch64", "linux_aarch64"]



def explain_pip_failure(output: str, *, where: str) -> str:
    """Turn pip's failure into one line that names the package and the Python version."""
    m = re.search(r"Could not find a version that satisfies the requirement (\S+)"
                  r"(?: \(from versions: ([^)]*)\))?", output)
    m2 = re.search(r"No matching distribution found for (\S+)", output)
    if m or m2:
        req = (m or m2).group(1)
        have = (m.group(2) or "").strip() if m else ""
        seen = f" (versions with a usable wheel: {have})" if have and have != "none" else ""
        return (f"no aarch64 wheel of {req} for CPython {PI_PYTHON} (cp{PI_PYTHON.replace('.', '')}, "
                f"Raspberry Pi OS {SUITE}: manylinux up to glibc {PI_GLIBC[0]}.{PI_GLIBC[1]}){seen}; "
                f"a Pi's pip would try to build it from source. Pin a version that ships a manylinux aarch64 "
                f"wheel for Python {PI_PYTHON}, or drop it from the edge extra ({where})")
    if re.search(r"Failed to establish a new connection|Max retries exceeded|Temporary failure in name "
                 r"resolution|Could not fetch URL|Network is unreachable", output):
        return f"pip could not reach the package index ({where}): {one_line(tail(output, 3))}"
    if "conflict" in output.lower() or "ResolutionImpossible" in output:
        return f"pip found no consistent set of aarch64 wheels ({where}): {one_line(tail(output, 6))}"
    return f"pip failed ({where}): {one_line(tail(output, 4))}"


def resolve_aarch64_wheels(requirements: Sequence[str], *, python: str,
                           wheel_index: str | None = None) -> dict[str, dict[str, str]]:
    """What pip picks for bookworm aarch64 / CPython 3.11, wheels only, without installing anything.

    Runs the host's pip with ``--platform`` set to every manylinux tag a Pi accepts (manylinux2014 alone,
    as in a hand-written recipe, hides wheels tagged manylinux_2_27/2_28, e.g. numpy 2.3+ and
    ai-edge-litert 2.x, and picks old versions or none). ``wheel_index``: a local folder of wheels
    instead of PyPI (offline; tests).
    """
    with tempfile.TemporaryDirectory(prefix="pi-check-resolve-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
               str(report), "--only-binary=:all:", "--python-version", PI_PYTHON, "--implementation", "cp",
               "--abi", f"cp{PI_PYTHON.replace('.', '')}"]
        for tag in pi_platform_tags():
            cmd += ["--platform", tag]
        if wheel_index is not None:
            cmd += ["--no-index", "--find-links", str(wheel_index)]
        cmd += list(requirements)
        try:
            proc = subprocess.run(cmd, env=pip_env(), capture_output=True, text=True, timeout=600)
        except FileNotFoundError:
            raise PiCheckError(f"--x86-python {python} does not exist; run `make pi-check` (it makes .venv) "
                               "or pass --x86-python") from None
        except subprocess.TimeoutExpired:
            raise PiCheckError("pip took over 10 minutes to resolve the aarch64 wheels; is the index "
                               "reachable?") from None
        output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            if "no such option: --report" in output or "no such option: --dry-run" in output:
                raise PiCheckError(f"the pip of {python} is too old for --dry-run --report (needs pip >= "
                                   f"22.2): {python} -m pip install -U pip")
            raise PiCheckError(explain_pip_failure(output, where="host pip, --platform " + pi_platform_tags()[0]
                                                   + " ... --python-version " + PI_PYTHON))
        data = json.loads(report.read_text(encoding="utf-8"))
    out: dict[str, dict[str, str]] = {}
    for item in data.get("install", []):
        meta = item.get("metadata", {})
        url = item.get("download_info", {}).get("url", "")
        out[canonical(meta.get("name", "?"))] = {"version": meta.get("version", "?"),
                                                 "file": url.rsplit("/", 1)[-1]}
    return out


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def venv_key(cache: Cache, requirements: Sequence[str]) -> str:
    stamp = read_json(cache.root_stamp) or {}
    parts = (str(VENV_FORMAT), stamp.get("built", ""), json.dumps(list(requirements)),
             (REPO / "setup.cfg").read_text(encoding="utf-8"), (REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return sha256_bytes(b"".join(part.encode() + b"\0" for part in parts))


def venv_ready(cache: Cache, requirements: Sequence[str]) -> bool:
    stamp = read_json(cache.venv_stamp)
    return bool(stamp) and stamp.get("key") == venv_key(cache, requirements) \
        and (cache.venv / "pyvenv.cfg").is_file()


def cache_is_warm(cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """Root and venv built for the current setup.cfg (a run then needs no network and no debootstrap)."""
    cache = Cache(Path(cache_dir) if cache_dir else default_cache())
    try:
        return root_ready(cache) and venv_ready(cache, edge_requirements())
    except PiCheckError:
        return False


def sync_src(cache: Cache) -> Path:
    """The Pi-side working folder: this tree's wheel in ``dist/`` (built on the host; it is pure Python), and
    nothing importable beside it, so the emulated runs use what the wheel installed. Returns the wheel."""
    cache.src.mkdir(parents=True, exist_ok=True)
    for stale in ("edge", "firmware_assets", "dist", "setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        path = cache.src / stale                      # (earlier versions installed a copied source tree -e)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.is_symlink() or path.exists():
            path.unlink()
    # this venv's setuptools when it can build a wheel by itself (setuptools < 70.1 needs the wheel package,
    # which an edge-only venv lacks); else pip fetches the build requirements into an isolated environment
    local = all(importlib.util.find_spec(n) for n in ("setuptools", "wheel"))
    isolation = ["--no-build-isolation"] if local else []
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w",
                           str(cache.src / "dist"), str(REPO)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    wheels = sorted((cache.src / "dist").glob("auricle-*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        raise PiCheckError(f"building the wheel failed: {one_line(tail(proc.stderr, 3))}")
    return wheels[0]


def install_wheel(cache: Cache, wheel: Path, *, cpu: str) -> None:
    """This run's wheel into a cached venv (its dependencies are there already): pip on emulated aarch64."""
    say("emulated: pip install --no-deps --force-reinstall the wheel of this tree")
    proc = run_logged([str(cache.venv / "bin/python"), "-m", "pip", "install", "-q", "--no-deps",
                        "--force-reinstall", "--no-index", str(wheel)], env=guest_env(cache, cpu, pip=True),
                       cwd=cache.src, log=cache.logs / "pip-wheel.log", timeout=1200, what="pip install WHEEL")
    if proc.returncode != 0:
        raise PiCheckError(f"emulated pip install of {wheel.name} failed (log {cache.logs / 'pip-wheel.log'}): "
                           f"{one_line(tail(proc.stderr, 3))}")


def build_venv(cache: Cache, requirements: Sequence[str], *, cpu: str, expected: dict[str, dict[str, str]],
               wheel: Path) -> dict[str, Any]:
    """The Pi user's install, run on emulated aarch64: python3 -m venv, then pip install 'WHEEL[edge]'."""
    if cache.venv.exists():
        shutil.rmtree(cache.venv)
    cache.venv_stamp.unlink(missing_ok=True)
    env = guest_env(cache, cpu)
    # `python3 -m venv .venv` is `--without-pip` + ensurepip; split so the venv's python is the qemu
    # wrapper before ensurepip runs it (its symlink would point at the host's x86 /usr/bin/python3)
    say("emulated: python3 -m venv (--without-pip, then the wrapper, then ensurepip)")
    proc = run_logged([str(cache.bin / "python3"), "-m", "venv", "--without-pip", str(cache.venv)], env=env,
                      cwd=cache.src, log=cache.logs / "venv.log", timeout=600, what="python3 -m venv")
    if proc.returncode != 0:
        raise PiCheckError(f"emulated python3 -m venv failed: {one_line(tail(proc.stderr, 3))}")
    write_wrappers(cache, find_tool("qemu-aarch64-static") or "qemu-aarch64-static")
    vpy = str(cache.venv / "bin/python")
    proc = run_logged([vpy, "-m", "ensurepip", "--upgrade", "--default-pip"], env=env, cwd=cache.src,
                      log=cache.logs / "ensurepip.log", timeout=1200, what="ensurepip")
    if proc.returncode != 0:
        raise PiCheckError(f"emulated ensurepip failed (log {cache.logs / 'ensurepip.log'}): "
                           f"{one_line(tail(proc.stderr, 3))}")
    cmd = [vpy, "-m", "pip", "install", f"{wheel}[edge]"]
    say(f"emulated: .venv/bin/pip install '{wheel.name}[edge]' (pip on aarch64 picks the wheels)")
    proc = run_logged(cmd, env=guest_env(cache, cpu, pip=True), cwd=cache.src, log=cache.logs / "pip.log",
                      timeout=2400, what="pip install 'WHEEL[edge]'")
    if proc.returncode != 0:
        raise PiCheckError(explain_pip_failure(proc.stdout + proc.stderr, where=f"pip on emulated aarch64, log "
                                               f"{cache.logs / 'pip.log'}"))
    built_from_source = re.findall(r"Building wheel for (\S+)", proc.stdout)
    stamp = {"key": venv_key(cache, requirements), "requirements": list(requirements), "cpu": cpu,
             "resolved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "host_pip_expected": expected,
             "built_from_source": [n for n in built_from_source if canonical(n) != "auricle"]}
    write_text_atomic(cache.venv_stamp, json.dumps(stamp, indent=1) + "\n")
    return stamp

