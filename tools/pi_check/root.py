"""Step 1, the emulated Raspberry Pi OS: the arm64 bookworm root (debootstrap, once), the qemu
wrappers that stand in for its python, its /proc/cpuinfo and the clean guest environment."""
from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

from edge.fileio import write_text_atomic
from tools.pi_check.common import (CPU_MODELS, DEB_ARCH, DEB_INCLUDE, DEFAULT_MIRROR, PI_PYTHON, ROOT_FORMAT,
                                   SUITE, Cache, PiCheckError, find_tool, one_line, pip_env, read_json, say,
                                   tail, tool_search_path)

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



def root_wanted() -> dict[str, Any]:
    return {"format": ROOT_FORMAT, "suite": SUITE, "arch": DEB_ARCH, "include": list(DEB_INCLUDE)}


def root_ready(cache: Cache) -> bool:
    stamp = read_json(cache.root_stamp)
    return bool(stamp) and all(stamp.get(k) == v for k, v in root_wanted().items()) \
        and (cache.root / "usr/bin/python3.11").is_file()



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
# (argv[0] = this path, so a venv finds its pyvenv.cfg). Written by tools/pi_check/root.py.
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


