"""Step 5, the report: the setup of both sides, the comparison table, every difference and the verdict,
and ``last-report.json``."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, Sequence

from edge.fileio import write_text_atomic
from tools.pi_check.check import CheckResult
from tools.pi_check.common import (CPU_MODELS, EDGE_PACKAGES, SUITE, find_tool, one_line, print_versions,
                                   read_json)
from tools.pi_check.wheels import canonical


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
              "x86_versions": x86_versions, "venv": res.pi.venv_stamp, "root": read_json(cache.root_stamp),
              "rows": res.rows, "stream_seconds": res.stream_seconds}
    text = json.dumps(report, indent=1, default=str) + "\n"
    write_text_atomic(cache.path / "last-report.json", text)
    if extra:
        write_text_atomic(extra, text)



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

