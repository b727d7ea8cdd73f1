"""Step 3, the probe: what the emulated venv really imports (machine, Python, TFLite backend, PortAudio),
and what in it would be wrong on a Pi."""
from __future__ import annotations

import json
import os
from typing import Any

from tools.pi_check.common import (EDGE_PACKAGES, FORBIDDEN, NOT_LOADED, PI_PYTHON, Cache, PiCheckError,
                                   one_line, run_logged, tail)
from tools.pi_check.root import guest_env


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
    proc = run_logged([str(cache.venv / "bin/python"), "-c", code], env=guest_env(cache, cpu), cwd=cache.src,
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

