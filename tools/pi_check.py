#!/usr/bin/env python3
"""``make pi-check``: run the edge runtime on an emulated Raspberry Pi and compare it with x86.

A Raspberry Pi 4/5 runs 64-bit Raspberry Pi OS: Debian bookworm, aarch64, Python 3.11. This check builds
that userland once, caches it outside the repo, and then, under ``qemu-aarch64-static`` (user-mode
emulation, no binfmt, no root needed after the first build), does what a Pi user does:

    python3 -m venv .venv
    .venv/bin/pip install 'dist/auricle-*.whl[edge]'   # the wheel of this tree; pip *on aarch64* picks the rest
    .venv/bin/python -m edge.listen --list-devices
    .venv/bin/python -m edge.listen --file STREAM --json            (the default bundle)
    .venv/bin/python -m edge.listen --file CLIP --json --model B     (every shipped int8 bundle, one clip each)

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
"""
from __future__ import annotations

import argparse
import concurrent.futures
import configparser
import contextlib
import dataclasses
import datetime
import fcntl
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from edge.fileio import sha256_bytes, write_text_atomic

REPO = Path(__file__).resolve().parent.parent

# -- what a Raspberry Pi runs ------------------------------------------------------------------------
SUITE = "bookworm"                      # Raspberry Pi OS 12 is Debian bookworm
DEB_ARCH = "arm64"
PI_PYTHON = "3.11"                      # bookworm's python3 (3.11.2)
PI_GLIBC = (2, 36)                      # bookworm's libc6: the newest manylinux tag a Pi's pip accepts
DEB_INCLUDE = ("python3", "python3-venv", "libportaudio2")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
EDGE_PACKAGES = ("numpy", "ai-edge-litert", "sounddevice", "soundfile")   # versions printed
# never importable on the Pi side: the point of the edge/ dependency rule (DESIGN.md)
FORBIDDEN = ("tensorflow", "keras", "librosa", "pydub", "tflite_runtime", "torch", "jax")
# installed by the wheel (one package, three namespaces) but never loaded by the device commands
NOT_LOADED = FORBIDDEN + ("training", "converters")
APT_FOR_TOOL = {"qemu-aarch64-static": "qemu-user-static", "debootstrap": "debootstrap", "dpkg-deb": "dpkg"}
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

ROOT_FORMAT = 1                         # bump to force a new root
VENV_FORMAT = 2                         # bump to force a new venv (2: the wheel, not an editable install)

DEFAULT_BUNDLE_NAME = "kws_mobilenet_edge"
DEFAULT_STREAM = "samples/speech_commands_stream.wav"
DEFAULT_CLIPS = "tests/data/speech_commands"
# Scores are int8 outputs (steps of 1/256) averaged over a few windows. Same model, same input: the only
# source of difference is the CPU's kernels (XNNPACK NEON vs AVX) and float rounding in the numpy
# frontend, i.e. a few output steps at most. A wrong kernel or a broken wheel gives garbage, far above.
DEFAULT_TOLERANCE = 0.02
DEFAULT_STREAM_SECONDS = 20.0           # emulation runs ~100x slower than native: cap the stream
RUN_TIMEOUT = 900

EXIT_MISMATCH = 1
EXIT_SETUP = 2

# /proc/cpuinfo as the Pi kernels print it, per emulated CPU (qemu -cpu NAME)
CPU_MODELS: dict[str, dict[str, str]] = {
    "cortex-a72": {  # Raspberry Pi 4 (BCM2711; no crypto extension)
        "pi": "Raspberry Pi 4", "features": "fp asimd evtstrm crc32 cpuid", "variant": "0x0",
        "part": "0xd08", "revision": "3", "board_revision": "c03111",
        "model": "Raspberry Pi 4 Model B Rev 1.1"},
    "cortex-a76": {  # Raspberry Pi 5 (BCM2712)
        "pi": "Raspberry Pi 5",
        "features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
                    "dcpop asimddp",
        "variant": "0x4", "part": "0xd0b", "revision": "1", "board_revision": "d04170",
        "model": "Raspberry Pi 5 Model B Rev 1.0"},
}


class PiCheckError(Exception):
    """A setup problem the user can fix; printed as one line, exit 2."""


# -- small helpers -----------------------------------------------------------------------------------
_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


def one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def tail(text: str, n: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def default_cache() -> Path:
    env = os.environ.get("AURICLE_PI_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "auricle" / "pi-check"


def tool_search_path() -> str:
    """Where the host tools are looked up: $PI_CHECK_TOOL_PATH, else $PATH plus the sbin folders
    (debootstrap lives in /usr/sbin, which a normal user's PATH on Debian lacks)."""
    env = os.environ.get("PI_CHECK_TOOL_PATH")
    if env is not None:
        return env
    parts = os.environ.get("PATH", os.defpath).split(os.pathsep)
    parts += [p for p in ("/usr/sbin", "/sbin") if p not in parts]
    return os.pathsep.join(parts)


def find_tool(name: str) -> str | None:
    return shutil.which(name, path=tool_search_path())


def missing_tools(*, building_root: bool) -> list[str]:
    """Host tools that are missing: qemu always; debootstrap/dpkg-deb only to build the root."""
    needed = ["qemu-aarch64-static"] + (["debootstrap", "dpkg-deb"] if building_root else [])
    return [t for t in needed if find_tool(t) is None]


def check_tools(*, building_root: bool) -> None:
    missing = missing_tools(building_root=building_root)
    keyring_missing = building_root and not Path(DEBIAN_KEYRING).is_file()
    if not missing and not keyring_missing:
        return
    packages = [APT_FOR_TOOL[t] for t in missing] + (["debian-archive-keyring"] if keyring_missing else [])
    what = ", ".join(missing + ([DEBIAN_KEYRING] if keyring_missing else []))
    raise PiCheckError(f"{what} not found (needed to emulate a Raspberry Pi); install: "
                       f"sudo apt-get install {' '.join(packages)}")


def host_has_portaudio() -> bool:
    import ctypes.util
    return ctypes.util.find_library("portaudio") is not None


def apt_mirror(sources_dir: str | os.PathLike[str] = "/etc/apt") -> str:
    """The first Debian mirror this machine's apt uses (a URI ending in /debian), else deb.debian.org."""
    base = Path(sources_dir)
    files = [base / "sources.list"] + sorted((base / "sources.list.d").glob("*.list")) \
        + sorted((base / "sources.list.d").glob("*.sources"))
    uris: list[str] = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if f.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, flags=re.M))
                if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes").lower() != "no":
                    uris += fields.get("URIs", "").split()
        else:
            for line in text.splitlines():
                line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
                if len(line) >= 3 and line[0] == "deb":
                    uris.append(line[1])
    for uri in uris:
        uri = uri.rstrip("/")
        if uri.startswith(("http://", "https://")) and uri.endswith("/debian"):
            return uri
    return DEFAULT_MIRROR


def cpuinfo_text(cpu: str, possible: str) -> str:
    """An ARM /proc/cpuinfo for ``cpu`` with one processor per host CPU (``possible``: e.g. "0-3")."""
    m = CPU_MODELS[cpu]
    ids: list[int] = []
    for part in possible.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        ids += range(int(lo), int(hi or lo) + 1)
    blocks = [f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {m['features']}\nCPU implementer\t: 0x41\n"
              f"CPU architecture: 8\nCPU variant\t: {m['variant']}\nCPU part\t: {m['part']}\n"
              f"CPU revision\t: {m['revision']}\n" for i in ids or [0]]
    return "\n".join(blocks) + (f"\nRevision\t: {m['board_revision']}\nSerial\t\t: 10000000deadbeef\n"
                                f"Model\t\t: {m['model']}\n")


# -- requirements and the aarch64 wheels -------------------------------------------------------------
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


def pip_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """pip as a Pi user's pip: no config files (local indexes, constraints, find-links of this machine);
    only the index URL, certificates, timeouts and proxies carry over."""
    base = dict(os.environ if base is None else base)
    keep = {"PIP_INDEX_URL", "PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_TRUSTED_HOST", "PIP_RETRIES"}
    env = {k: v for k, v in base.items() if not k.startswith("PIP_") or k in keep}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


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


# -- the cached root -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Cache:
    path: Path

    @property
    def root(self) -> Path:
        return self.path / "root"

    @property
    def root_stamp(self) -> Path:
        return self.path / "root.json"

    @property
    def venv(self) -> Path:
        return self.path / "venv"

    @property
    def venv_stamp(self) -> Path:
        return self.path / "venv.json"

    @property
    def src(self) -> Path:
        return self.path / "src" / "auricle"

    @property
    def home(self) -> Path:
        return self.path / "home"

    @property
    def tmp(self) -> Path:
        return self.path / "tmp"

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def logs(self) -> Path:
        return self.path / "logs"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def root_wanted() -> dict[str, Any]:
    return {"format": ROOT_FORMAT, "suite": SUITE, "arch": DEB_ARCH, "include": list(DEB_INCLUDE)}


def root_ready(cache: Cache) -> bool:
    stamp = _read_json(cache.root_stamp)
    return bool(stamp) and all(stamp.get(k) == v for k, v in root_wanted().items()) \
        and (cache.root / "usr/bin/python3.11").is_file()


def venv_key(cache: Cache, requirements: Sequence[str]) -> str:
    stamp = _read_json(cache.root_stamp) or {}
    parts = (str(VENV_FORMAT), stamp.get("built", ""), json.dumps(list(requirements)),
             (REPO / "setup.cfg").read_text(encoding="utf-8"), (REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return sha256_bytes(b"".join(part.encode() + b"\0" for part in parts))


def venv_ready(cache: Cache, requirements: Sequence[str]) -> bool:
    stamp = _read_json(cache.venv_stamp)
    return bool(stamp) and stamp.get("key") == venv_key(cache, requirements) \
        and (cache.venv / "pyvenv.cfg").is_file()


def cache_is_warm(cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """Root and venv built for the current setup.cfg (a run then needs no network and no debootstrap)."""
    cache = Cache(Path(cache_dir) if cache_dir else default_cache())
    try:
        return root_ready(cache) and venv_ready(cache, edge_requirements())
    except PiCheckError:
        return False


def _privileged(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return cmd
    sudo = shutil.which("sudo")
    if sudo is None:
        raise PiCheckError("building the arm64 root runs debootstrap, which needs root: run once as root "
                           "(or install sudo)")
    return [sudo, *cmd]


def build_root(cache: Cache, *, mirror: str) -> None:
    """debootstrap --foreign (download + unpack the base), then dpkg-deb -x every .deb it fetched."""
    partial = cache.path / "root.partial"
    cache.logs.mkdir(parents=True, exist_ok=True)
    log = cache.logs / "debootstrap.log"
    for p in (partial, cache.root):
        if p.exists():
            subprocess.run(_privileged(["rm", "-rf", str(p)]), check=True)
    cache.root_stamp.unlink(missing_ok=True)
    cmd = [find_tool("debootstrap") or "debootstrap", f"--arch={DEB_ARCH}", "--foreign", "--variant=minbase",
           f"--include={','.join(DEB_INCLUDE)}", SUITE, str(partial), mirror]
    say(f"building the arm64 {SUITE} root (once): {' '.join(cmd)}")
    env = dict(os.environ, PATH=tool_search_path())
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run(_privileged(cmd), stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        text = log.read_text(encoding="utf-8", errors="replace")
        raise PiCheckError(f"debootstrap failed (exit {proc.returncode}; log {log}): {one_line(tail(text, 3))}; "
                           f"check the mirror ({mirror}; --mirror {DEFAULT_MIRROR} to use Debian's)")
    if os.geteuid() != 0:
        subprocess.run(_privileged(["chown", "-R", f"{os.getuid()}:{os.getgid()}", str(partial)]), check=True)
    debs = sorted((partial / "var/cache/apt/archives").glob("*.deb"))
    if not debs:
        raise PiCheckError(f"debootstrap downloaded no packages into {partial}/var/cache/apt/archives")
    say(f"unpacking {len(debs)} arm64 packages with dpkg-deb -x")
    dpkg_deb = find_tool("dpkg-deb") or "dpkg-deb"
    for deb in debs:
        proc = subprocess.run([dpkg_deb, "-x", str(deb), str(partial)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise PiCheckError(f"dpkg-deb -x {deb.name} failed: {one_line(proc.stderr)}")
    packages = sorted(d.name[:-4] for d in debs)
    for deb in debs:
        deb.unlink()
    py = partial / "usr/bin/python3.11"
    if not py.is_file():
        raise PiCheckError(f"the arm64 root has no {py.relative_to(partial)} after unpacking; see {log}")
    # shadow host folders that qemu would otherwise fall through to (QEMU_LD_PREFIX looks up the root
    # first, then the host): the host's /usr/local python packages must not leak into the Pi's python
    (partial / f"usr/local/lib/python{PI_PYTHON}/dist-packages").mkdir(parents=True, exist_ok=True)
    os.replace(partial, cache.root)
    stamp = dict(root_wanted(), mirror=mirror, built=datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), packages=packages)
    write_text_atomic(cache.root_stamp, json.dumps(stamp, indent=1) + "\n")


# -- emulated python -----------------------------------------------------------------------------------
WRAPPER = """#!/bin/sh
# pi-check: run the Raspberry Pi OS python3.11 (aarch64) under qemu-user, as this file's name
# (argv[0] = this path, so a venv finds its pyvenv.cfg). Written by tools/pi_check.py.
QEMU_LD_PREFIX={root}; export QEMU_LD_PREFIX
QEMU_CPU="${{QEMU_CPU:-cortex-a72}}"; export QEMU_CPU
exec {qemu} -0 {argv0} {root}/usr/bin/python{pyver} "$@"
"""


def write_wrapper(path: Path, *, root: Path, qemu: str, argv0: str) -> None:
    # the rename replaces a venv's bin/python symlink itself, not what it points at
    write_text_atomic(path, WRAPPER.format(root=shlex.quote(str(root)), qemu=shlex.quote(qemu), argv0=argv0,
                                           pyver=PI_PYTHON))
    path.chmod(0o755)


def write_wrappers(cache: Cache, qemu: str) -> None:
    """bin/python3 = the root's /usr/bin/python3; venv/bin/python{,3,3.11} = the venv's interpreter."""
    write_wrapper(cache.bin / "python3", root=cache.root, qemu=qemu, argv0="/usr/bin/python3")
    vbin = cache.venv / "bin"
    if vbin.is_dir():
        write_wrapper(vbin / "python", root=cache.root, qemu=qemu, argv0='"$0"')
        for alias in ("python3", f"python{PI_PYTHON}"):
            p = vbin / alias
            if p.is_symlink() or p.exists():
                p.unlink()
            p.symlink_to("python")


def write_cpuinfo(cache: Cache, cpu: str) -> None:
    try:
        possible = Path("/sys/devices/system/cpu/possible").read_text(encoding="utf-8")
    except OSError:
        possible = f"0-{max(0, (os.cpu_count() or 1) - 1)}"
    (cache.root / "proc").mkdir(exist_ok=True)
    write_text_atomic(cache.root / "proc/cpuinfo", cpuinfo_text(cpu, possible))


def guest_env(cache: Cache, cpu: str, *, pip: bool = False) -> dict[str, str]:
    """A clean environment for the emulated side: its own HOME and TMPDIR (not the host's ~/.asoundrc,
    ~/.config/pip, ~/.local), no PYTHONPATH, the chosen CPU."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(cache.home), "TMPDIR": str(cache.tmp),
           "LANG": "C.UTF-8", "QEMU_CPU": cpu, "QEMU_LD_PREFIX": str(cache.root)}
    for k in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "TERM"):
        if k in os.environ:
            env[k] = os.environ[k]
    if pip:
        env = pip_env(dict(env, **{k: v for k, v in os.environ.items() if k.startswith("PIP_")}))
        env["PIP_NO_CACHE_DIR"] = "1"   # each venv build downloads afresh, like a new Pi
    return env


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
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
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
    proc = _run_logged([str(cache.venv / "bin/python"), "-m", "pip", "install", "-q", "--no-deps",
                        "--force-reinstall", "--no-index", str(wheel)], env=guest_env(cache, cpu, pip=True),
                       cwd=cache.src, log=cache.logs / "pip-wheel.log", timeout=1200, what="pip install WHEEL")
    if proc.returncode != 0:
        raise PiCheckError(f"emulated pip install of {wheel.name} failed (log {cache.logs / 'pip-wheel.log'}): "
                           f"{one_line(tail(proc.stderr, 3))}")


def _run_logged(cmd: list[str], *, env: dict[str, str], cwd: Path, log: Path, timeout: int, what: str
                ) -> subprocess.CompletedProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PiCheckError(f"{what} took over {timeout} s under emulation") from None
    log.write_text(f"$ {' '.join(map(shlex.quote, cmd))}\n{proc.stdout}\n{proc.stderr}", encoding="utf-8")
    return proc


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
    proc = _run_logged([str(cache.bin / "python3"), "-m", "venv", "--without-pip", str(cache.venv)], env=env,
                       cwd=cache.src, log=cache.logs / "venv.log", timeout=600, what="python3 -m venv")
    if proc.returncode != 0:
        raise PiCheckError(f"emulated python3 -m venv failed: {one_line(tail(proc.stderr, 3))}")
    write_wrappers(cache, find_tool("qemu-aarch64-static") or "qemu-aarch64-static")
    vpy = str(cache.venv / "bin/python")
    proc = _run_logged([vpy, "-m", "ensurepip", "--upgrade", "--default-pip"], env=env, cwd=cache.src,
                       log=cache.logs / "ensurepip.log", timeout=1200, what="ensurepip")
    if proc.returncode != 0:
        raise PiCheckError(f"emulated ensurepip failed (log {cache.logs / 'ensurepip.log'}): "
                           f"{one_line(tail(proc.stderr, 3))}")
    cmd = [vpy, "-m", "pip", "install", f"{wheel}[edge]"]
    say(f"emulated: .venv/bin/pip install '{wheel.name}[edge]' (pip on aarch64 picks the wheels)")
    proc = _run_logged(cmd, env=guest_env(cache, cpu, pip=True), cwd=cache.src, log=cache.logs / "pip.log",
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


PROBE = r"""
import importlib.metadata as md, importlib.util, json, os, platform, sys
out = {"machine": platform.machine(), "python": platform.python_version(),
       "libc": os.confstr("CS_GNU_LIBC_VERSION"), "executable": sys.executable, "prefix": sys.prefix,
       "base_prefix": sys.base_prefix}
names = %(names)r
def version(n):
    try:
        return md.version(n)
    except md.PackageNotFoundError:
        return None
out["versions"] = {n: version(n) for n in names + ["cffi", "auricle"]}
forbidden = %(forbidden)r
not_loaded = %(not_loaded)r
out["forbidden_importable"] = [n for n in forbidden if importlib.util.find_spec(n) is not None]
import edge, edge.listen, edge.demo, edge.interpreter, edge.microphone, edge.detector, edge.bundle, edge.features
out["edge_file"] = edge.__file__
_, _, out["backend"] = edge.interpreter.import_backend()
sd = edge.microphone.import_sounddevice()
out["portaudio"] = sd.get_portaudio_version()[1]
import soundfile
out["libsndfile"] = soundfile.__libsndfile_version__
maps = [l.split(None, 5)[-1].strip() for l in open("/proc/self/maps") if "/" in l]
out["portaudio_lib"] = next((p for p in maps if "libportaudio" in p), None)
out["libsndfile_lib"] = next((p for p in maps if "sndfile" in p), None)
out["heavy_modules"] = sorted({m.split(".")[0] for m in sys.modules} & set(not_loaded))
print("PROBE " + json.dumps(out))
"""


def probe(cache: Cache, cpu: str) -> dict[str, Any]:
    code = PROBE % {"names": list(EDGE_PACKAGES), "forbidden": list(FORBIDDEN),
                    "not_loaded": list(NOT_LOADED)}
    proc = _run_logged([str(cache.venv / "bin/python"), "-c", code], env=guest_env(cache, cpu), cwd=cache.src,
                       log=cache.logs / "probe.log", timeout=600, what="the probe")
    line = next((l for l in proc.stdout.splitlines() if l.startswith("PROBE ")), None)
    if proc.returncode != 0 or line is None:
        raise PiCheckError(f"the emulated venv does not import the edge runtime (exit {proc.returncode}; "
                           f"{describe_rc(proc.returncode)}): {one_line(tail(proc.stderr, 4))}")
    return json.loads(line[6:])


def describe_rc(rc: int) -> str:
    return {-4: "SIGILL: an instruction this CPU lacks (Illegal instruction)", 132: "SIGILL (Illegal instruction)",
            -11: "SIGSEGV", 139: "SIGSEGV (Segmentation fault)", -9: "killed", 137: "killed"}.get(rc, "")


def probe_problems(p: dict[str, Any], cache: Cache) -> list[str]:
    problems = []
    if p.get("machine") != "aarch64":
        problems.append(f"platform.machine() is {p.get('machine')!r}, not aarch64")
    if not str(p.get("edge_file", "")).startswith(str(cache.venv) + os.sep):
        problems.append(f"edge was imported from {p.get('edge_file')}, not from the wheel installed in the venv")
    if not str(p.get("python", "")).startswith(PI_PYTHON + "."):
        problems.append(f"python is {p.get('python')}, not {PI_PYTHON}")
    if p.get("forbidden_importable"):
        problems.append(f"importable on the Pi side: {', '.join(p['forbidden_importable'])} (the edge extra "
                        "must not pull them in)")
    if p.get("heavy_modules"):
        problems.append(f"importing edge loaded {', '.join(p['heavy_modules'])}")
    if p.get("backend") != "ai_edge_litert":
        problems.append(f"TFLite backend is {p.get('backend')}, not ai_edge_litert")
    lib = p.get("portaudio_lib")
    if lib and not str(lib).startswith(str(cache.root)):
        problems.append(f"PortAudio was loaded from {lib}, not from the arm64 root")
    missing = [n for n in EDGE_PACKAGES if not p.get("versions", {}).get(n)]
    if missing:
        problems.append(f"not installed in the Pi venv: {', '.join(missing)}")
    return problems


# -- the runs ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Case:
    name: str                 # row label: bundle name, or "list-devices"
    what: str                 # "devices", "stream" or "clip"
    args: list[str]
    input: str = ""


@dataclasses.dataclass(frozen=True)
class Outcome:
    rc: int
    stdout: str
    stderr: str
    seconds: float


def read_bundle(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PiCheckError(f"{path} is not a model bundle (manifest.json: {exc}); pass bundle folders to "
                           "--bundles") from None


def pick_clip(manifest: dict[str, Any], clips: Path) -> Path:
    """One test clip for a bundle: the first clip of its first foreground label that has clips."""
    background = set(manifest.get("background_labels", []))
    labels = [lab for lab in manifest.get("labels", []) if lab not in background]
    for lab in labels + [lab for lab in manifest.get("labels", []) if lab in background]:
        found = sorted((clips / lab).glob("*.wav"))
        if found:
            return found[0]
    found = sorted(clips.glob("*/*.wav"))
    if not found:
        raise PiCheckError(f"no test clips (*.wav) under {clips}; pass --clips DIR")
    return found[0]


def long_enough(clip: Path, manifest: dict[str, Any]) -> Path:
    """``clip``, or a copy padded with silence to one window of the bundle (a 2 s-window bundle classifies
    nothing in a 1 s clip). The copy lives in a temporary folder; stdlib ``wave`` only (16-bit PCM clips)."""
    import wave

    seconds = float(manifest.get("feature_config", {}).get("clip_duration", 1.0))
    with wave.open(str(clip), "rb") as w:
        params, frames = w.getparams(), w.readframes(w.getnframes())
    need = int(round((seconds + 0.1) * params.framerate)) - params.nframes
    if need <= 0:
        return clip
    out = Path(tempfile.mkdtemp(prefix="pi-check-clip-")) / clip.name
    with wave.open(str(out), "wb") as w:
        w.setparams(params)
        w.writeframes(frames + b"\x00" * need * params.sampwidth * params.nchannels)
    return out


def default_bundles() -> list[Path]:
    base = REPO / "firmware_assets"
    return sorted(p for p in base.glob("*/") if not p.name.startswith(".")     # .NAME.tmp-*: being written
                  and (p / "manifest.json").is_file())


def plan_cases(*, bundles: Sequence[Path], default_bundle: Path, stream: Path, clips: Path,
               stream_seconds: float | None) -> list[Case]:
    cases = [Case("list-devices", "devices", ["--list-devices"])]
    stream_args = ["--file", str(stream), "--json", "--all-scores"]
    if default_bundle.resolve() != (REPO / "firmware_assets" / DEFAULT_BUNDLE_NAME).resolve():
        stream_args += ["--model", str(default_bundle)]        # else: the runtime's own default lookup
    if stream_seconds:
        stream_args += ["--duration", f"{stream_seconds:g}"]
    cases.append(Case(default_bundle.name, "stream", stream_args, input=stream.name))
    for b in bundles:
        manifest = read_bundle(b)
        if "int8" not in manifest.get("models", {}):
            say(f"skipping {b.name}: no int8 model in its manifest")
            continue
        picked = pick_clip(manifest, clips)
        clip = long_enough(picked, manifest)
        cases.append(Case(b.name, "clip", ["--file", str(clip), "--json", "--all-scores", "--model", str(b)],
                          input=f"{picked.parent.name}/{picked.name}" + (" padded" if clip != picked else "")))
    return cases


def x86_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "AURICLE_BUNDLE", "AURICLE_TFLITE_BACKEND")}
    env.setdefault("LANG", "C.UTF-8")
    return env


def run_one(python: str, case: Case, *, env: dict[str, str], cwd: Path, timeout: int) -> Outcome:
    t0 = time.monotonic()
    try:
        proc = subprocess.run([python, "-m", "edge.listen", *case.args], env=env, cwd=cwd, capture_output=True,
                              text=True, timeout=timeout)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout or ""
        out = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
        rc, err = 124, f"timed out after {timeout} s"
    return Outcome(rc, out, err, time.monotonic() - t0)


def parse_listen(stdout: str) -> dict[str, Any]:
    windows, events, summary = [], [], None
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if d.get("type") == "window":
            windows.append(d)
        elif d.get("type") == "event":
            events.append(d)
        elif d.get("type") == "summary":
            summary = d
    return {"windows": windows, "events": events, "summary": summary}


def compare(case: Case, a: Outcome, x: Outcome, tolerance: float) -> dict[str, Any]:
    """aarch64 vs x86 for one case: same events (label, time), window scores within ``tolerance``."""
    row: dict[str, Any] = {"name": case.name, "what": case.what, "input": case.input,
                           "aarch64_s": round(a.seconds, 1), "x86_s": round(x.seconds, 1),
                           "aarch64_rc": a.rc, "x86_rc": x.rc, "problems": []}
    if a.rc != 0 or x.rc != 0:
        for side, o in (("aarch64", a), ("x86", x)):
            if o.rc != 0:
                why = describe_rc(o.rc)
                row["problems"].append(f"{side} exit {o.rc}{' (' + why + ')' if why else ''}: "
                                       f"{one_line(tail(o.stderr, 3), 300)}")
        row["ok"] = False
        return row
    if case.what == "devices":
        row["same_output"] = a.stdout.strip() == x.stdout.strip()
        row["aarch64_output"] = a.stdout.strip()
        row["x86_output"] = x.stdout.strip()
        row["ok"] = True     # PortAudio loaded and enumerated; the device lists differ by host (reported)
        return row
    pa, px = parse_listen(a.stdout), parse_listen(x.stdout)
    ev_a = [(round(e["time"], 3), e["label"]) for e in pa["events"]]
    ev_x = [(round(e["time"], 3), e["label"]) for e in px["events"]]
    row["events"] = len(ev_x)
    row["events_equal"] = ev_a == ev_x
    if not row["events_equal"]:
        row["problems"].append(f"events differ: aarch64 {ev_a} vs x86 {ev_x}")
    times_a = [round(w["time"], 4) for w in pa["windows"]]
    times_x = [round(w["time"], 4) for w in px["windows"]]
    row["windows"] = len(times_x)
    if times_a != times_x:
        row["problems"].append(f"window times differ ({len(times_a)} windows on aarch64, {len(times_x)} on x86)")
    diff = 0.0
    worst = None
    pairs = [(wx["time"], label, wa["scores"].get(label), sx)
             for wa, wx in zip(pa["windows"], px["windows"]) for label, sx in wx["scores"].items()]
    pairs += [(ex["time"], ex["label"], ea.get("score"), ex.get("score"))
              for ea, ex in zip(pa["events"], px["events"])]
    for when, label, sa, sx in pairs:
        d = abs(float(sa) - float(sx)) if sa is not None and sx is not None else float("inf")
        if d != d:                     # NaN: as different as it gets
            d = float("inf")
        if d > diff:
            diff, worst = d, (when, label)
            row["worst"] = {"time": when, "label": label, "aarch64": sa, "x86": sx}
    row["max_score_diff"] = diff
    if not diff <= tolerance:
        row["problems"].append(f"score difference {diff:.4f} > tolerance {tolerance} (at {worst[1]!r}, "
                               f"{worst[0]} s)" if worst else f"score difference {diff} > tolerance {tolerance}")
    if not pa["windows"]:
        row["problems"].append("no windows were classified")
    for side, p in (("aarch64", pa), ("x86", px)):
        s = p["summary"] or {}
        row[f"{side}_invoke_ms"] = s.get("invoke_ms_p50")
        row[f"{side}_backend"] = s.get("backend")
    row["ok"] = not row["problems"]
    return row


def format_table(rows: Sequence[dict[str, Any]], tolerance: float) -> str:
    head = ["bundle", "run", "input", "windows", "events", "events equal", "max score diff", "aarch64 s",
            "x86 s", "result"]
    body = []
    for r in rows:
        if r["what"] == "devices":
            result = ("ok" if r["ok"] else "FAIL") + ("" if r.get("same_output", True) else " (lists differ)")
            body.append([r["name"], "devices", "-", "-", "-", "-", "-", f"{r['aarch64_s']:.1f}",
                         f"{r['x86_s']:.1f}", result])
            continue
        diff = r.get("max_score_diff")
        body.append([r["name"], r["what"], r["input"], str(r.get("windows", "-")), str(r.get("events", "-")),
                     {True: "yes", False: "no"}.get(r.get("events_equal"), "-"),
                     "-" if diff is None else f"{diff:.4f}", f"{r['aarch64_s']:.1f}", f"{r['x86_s']:.1f}",
                     "ok" if r["ok"] else "FAIL"])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(b, widths)) + " |" for b in body]
    lines.append(f"(tolerance on |score aarch64 - score x86|: {tolerance})")
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------------------------
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
    return PiSide(cache, cold_root, cold_venv, _read_json(cache.venv_stamp) or {})


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


# -- the report ----------------------------------------------------------------------------------------
def print_versions(title: str, versions: dict[str, str | None]) -> None:
    print(f"{title}: " + ", ".join(f"{n} {versions.get(n) or 'MISSING'}" for n in EDGE_PACKAGES), flush=True)


def print_setup(res: CheckResult, x86_versions: dict[str, str | None]) -> None:
    """What ran on each side: the emulated OS and CPU, and the package versions pip picked on both."""
    info, stamp = res.probe, res.pi.venv_stamp
    versions = info.get("versions", {})
    qemu = find_tool("qemu-aarch64-static") or "qemu-aarch64-static"
    print()
    print(f"pi-check: Raspberry Pi OS {SUITE} arm64 under {qemu_version(qemu)} -cpu {res.cpu} "
          f"({CPU_MODELS[res.cpu]['pi']}); Python {info.get('python')}, {info.get('libc')}; PortAudio "
          f"{info.get('portaudio', '?').split(',')[0]}; libsndfile {info.get('libsndfile')}")
    print_versions(f"pip on aarch64 resolved (cp311, {stamp.get('resolved_at', '?')})", versions)
    print_versions("x86 venv has", x86_versions)
    exp = stamp.get("host_pip_expected") or {}
    differs = [n for n in EDGE_PACKAGES if exp.get(canonical(n), {}).get("version") not in (None, versions.get(n))]
    if differs:
        print(f"note: the host pip's --platform resolution differs for {', '.join(differs)} "
              f"({', '.join(exp[canonical(n)]['version'] for n in differs)})")
    dev = next((r for r in res.rows if r["what"] == "devices"), None)
    if dev is not None and "aarch64_output" in dev:
        print(f"--list-devices: aarch64 loaded {info.get('portaudio_lib')}; "
              f"{'same output as x86' if dev['same_output'] else 'output differs from x86 (host devices)'}: "
              f"{one_line(dev['aarch64_output'], 160)}")


def report_problems(res: CheckResult) -> list[str]:
    """The probe's problems, and (reported, though it does not fail the check) packages pip built from source."""
    built = res.pi.venv_stamp.get("built_from_source")
    return res.probe_problems + (["pip on aarch64 built from source (no wheel): " + ", ".join(built)]
                                 if built else [])


def print_results(res: CheckResult, problems: Sequence[str]) -> None:
    """The comparison table, every difference, and the verdict line."""
    print()
    print(format_table(res.rows, res.tolerance))
    for r in res.rows:
        w = r.get("worst")
        if w and r.get("max_score_diff"):
            print(f"largest difference, {r['name']} {r['what']}: {w['label']!r} at {w['time']} s, "
                  f"aarch64 {w['aarch64']} vs x86 {w['x86']}")
        for prob in r["problems"]:
            print(f"FAIL {r['name']} ({r['what']}): {prob}")
    for prob in problems:
        print(f"FAIL probe: {prob}")
    state = "cold" if (res.pi.cold_root or res.pi.cold_venv) else "warm"
    print(f"\npi-check {'passed' if res.ok else 'FAILED'} ({state} cache {res.pi.cache.path}): {res.seconds:.0f} s "
          "total" + "".join(f", {k[:-2]} {v:.0f} s" for k, v in res.phases.items()))


def write_report(res: CheckResult, problems: Sequence[str], x86_versions: dict[str, str | None],
                 extra: Path | None) -> None:
    """last-report.json in the cache (and ``--report``): the whole comparison."""
    cache = res.pi.cache
    report = {"ok": res.ok, "cache": str(cache.path),
              "state": "cold" if (res.pi.cold_root or res.pi.cold_venv) else "warm", "seconds": round(res.seconds, 1),
              "phases": {k: round(v, 1) for k, v in res.phases.items()}, "cpu": res.cpu, "tolerance": res.tolerance,
              "probe": res.probe, "probe_problems": list(problems), "aarch64_versions": res.probe.get("versions", {}),
              "x86_versions": x86_versions, "venv": res.pi.venv_stamp, "root": _read_json(cache.root_stamp),
              "rows": res.rows, "stream_seconds": res.stream_seconds}
    text = json.dumps(report, indent=1, default=str) + "\n"
    write_text_atomic(cache.path / "last-report.json", text)
    if extra:
        write_text_atomic(extra, text)


# -- main ----------------------------------------------------------------------------------------------
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


def qemu_version(qemu: str) -> str:
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"version (\S+)", out)
        return f"qemu-aarch64 {m.group(1)}" if m else "qemu-aarch64"
    except (OSError, subprocess.SubprocessError):
        return "qemu-aarch64"


def x86_versions_of(python: str) -> dict[str, str | None]:
    code = ("import importlib.metadata as m, json\nv = {}\nfor n in %r:\n    try: v[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: v[n] = None\nprint(json.dumps(v))") % (list(EDGE_PACKAGES),)
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120).stdout
        return json.loads(out.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return {}


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


if __name__ == "__main__":
    cli()
