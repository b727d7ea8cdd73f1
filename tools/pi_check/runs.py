"""Step 4, the runs: the same ``edge.listen`` commands (list devices, the stream, one clip per bundle) on
x86 and on the emulated Pi, and the comparison of their events and window scores."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from tools.pi_check.common import DEFAULT_BUNDLE_NAME, REPO, PiCheckError, one_line, say, tail
from tools.pi_check.probe import describe_rc


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
        stream_args += ["--bundle", str(default_bundle)]        # else: the runtime's own default lookup
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
        cases.append(Case(b.name, "clip", ["--file", str(clip), "--json", "--all-scores", "--bundle", str(b)],
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
