"""What machine this is, in words a results table can carry (the one place that reads /proc/cpuinfo)."""
from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path


def cpu_name() -> str:
    """The CPU's marketing name (x86 ``model name``; on a Raspberry Pi the board model and core type)."""
    info: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() not in info:
                info[key.strip()] = value.strip()
    board = ""
    with contextlib.suppress(OSError):
        board = Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00 \n")
    name = info.get("model name") or info.get("Model") or info.get("Hardware") or board
    if not name:
        name = platform.processor() or ""
        if not name and platform.system() == "Darwin":
            with contextlib.suppress(Exception):
                name = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                      text=True, timeout=5).stdout.strip()
    if board and board not in name:
        name = f"{board}, {name}" if name else board
    return name or platform.machine() or "unknown"


def cpu_description() -> str:
    """``cpu_name()`` with the core count, e.g. ``AMD EPYC 7B13 (2 cores)``."""
    return f"{cpu_name()} ({os.cpu_count()} cores)"
