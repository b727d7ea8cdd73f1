"""What every step shares: the Pi being emulated (constants, CPU models), the cache layout, the
host tools, one-line errors and progress lines."""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent

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

def pip_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """pip as a Pi user's pip: no config files (local indexes, constraints, find-links of this machine);
    only the index URL, certificates, timeouts and proxies carry over."""
    base = dict(os.environ if base is None else base)
    keep = {"PIP_INDEX_URL", "PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_TRUSTED_HOST", "PIP_RETRIES"}
    env = {k: v for k, v in base.items() if not k.startswith("PIP_") or k in keep}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env



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


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None




def run_logged(cmd: list[str], *, env: dict[str, str], cwd: Path, log: Path, timeout: int, what: str
                ) -> subprocess.CompletedProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PiCheckError(f"{what} took over {timeout} s under emulation") from None
    log.write_text(f"$ {' '.join(map(shlex.quote, cmd))}\n{proc.stdout}\n{proc.stderr}", encoding="utf-8")
    return proc



def print_versions(title: str, versions: dict[str, str | None]) -> None:
    print(f"{title}: " + ", ".join(f"{n} {versions.get(n) or 'MISSING'}" for n in EDGE_PACKAGES), flush=True)

