"""``python -m tools.pi_check`` (``make pi-check``): the edge runtime on emulated Raspberry Pi OS vs x86.

The fast tests need no network, no qemu and no cache: the setup errors (missing tools -> apt packages,
exit 2; no aarch64 wheel -> package and Python version, exit 2) run against an empty tool path and a local
folder of wheels, and the comparison and helpers are checked on made-up data.

The end-to-end test runs the real check on a tiny bundle and a short stream. It is marked slow and
runs only when it is cheap or asked for:
  AURICLE_PI_CHECK=1   always (a cold cache is built first: ~6 min, needs Debian's mirror and PyPI)
  AURICLE_PI_CHECK=0   never
  unset                when qemu-aarch64-static is installed and the cache is warm (about a minute),
                       so `make test` is never slowed by a cold debootstrap.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tools import pi_check as pc

import tiny_bundle  # tests/ is on sys.path through setup.cfg's [tool:pytest] pythonpath

REPO = Path(__file__).resolve().parent.parent


def _run(args, *, env_extra=None, timeout=120):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "tools.pi_check", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


# -- setup errors --------------------------------------------------------------------------------------
def test_missing_tools_name_the_apt_packages(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = _run(["--cache", str(tmp_path / "cache")], env_extra={"PI_CHECK_TOOL_PATH": str(empty)})
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "apt-get install" in err
    assert "qemu-user-static" in err and "debootstrap" in err
    assert not (tmp_path / "cache" / "root").exists()


def test_warm_root_needs_only_qemu(tmp_path, monkeypatch):
    monkeypatch.setenv("PI_CHECK_TOOL_PATH", str(tmp_path))
    assert pc.missing_tools(building_root=False) == ["qemu-aarch64-static"]
    assert pc.missing_tools(building_root=True) == ["qemu-aarch64-static", "debootstrap", "dpkg-deb"]
    with pytest.raises(pc.PiCheckError, match="qemu-user-static") as exc:
        pc.check_tools(building_root=False)
    assert "debootstrap" not in str(exc.value)
    fake = tmp_path / "qemu-aarch64-static"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert pc.missing_tools(building_root=False) == []


def _wheel(folder: Path, name: str, version: str, tag: str) -> Path:
    """A minimal but valid wheel (pip reads its METADATA while resolving)."""
    path = folder / f"{name}-{version}-{tag}.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/__init__.py", "")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n")
        z.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture()
def wheel_dir(tmp_path):
    d = tmp_path / "wheels"
    d.mkdir()
    _wheel(d, "x86only", "1.0", "cp311-cp311-manylinux_2_17_x86_64")
    _wheel(d, "newglibc", "1.0", "cp311-cp311-manylinux_2_39_aarch64")     # needs a newer glibc than bookworm's
    _wheel(d, "py312only", "1.0", "cp312-cp312-manylinux_2_17_aarch64")
    _wheel(d, "modern", "2.0", "cp311-cp311-manylinux_2_28_aarch64")       # invisible to manylinux2014 alone
    _wheel(d, "legacy", "1.0", "cp311-cp311-manylinux2014_aarch64")
    return d


@pytest.mark.parametrize("package", ["x86only", "newglibc", "py312only"])
def test_no_aarch64_wheel_names_package_and_python(wheel_dir, package):
    proc = _run(["--resolve-only", "--wheel-index", str(wheel_dir), "--requirements", package])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert package in err and "aarch64" in err and "3.11" in err


def test_resolve_accepts_every_manylinux_tag_of_bookworm(wheel_dir):
    proc = _run(["--resolve-only", "--wheel-index", str(wheel_dir), "--requirements", "modern", "legacy"])
    assert proc.returncode == 0, proc.stderr
    assert "modern 2.0" in proc.stdout and "legacy 1.0" in proc.stdout


def test_platform_tags_are_bookworms():
    tags = pc.pi_platform_tags()
    assert tags[0] == "manylinux_2_36_aarch64"             # glibc 2.36
    assert "manylinux_2_17_aarch64" in tags and "manylinux2014_aarch64" in tags
    assert "manylinux_2_37_aarch64" not in tags
    assert all(t.endswith("_aarch64") for t in tags)


def test_edge_requirements_are_the_edge_extra():
    reqs = pc.edge_requirements()
    names = {pc.canonical(r.split(">")[0].split("=")[0].split("<")[0].strip()) for r in reqs}
    assert {"numpy", "ai-edge-litert", "sounddevice", "soundfile"} <= names
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "librosa", "pydub"}


def test_pip_failure_messages():
    out = ("ERROR: Could not find a version that satisfies the requirement ai-edge-litert>=9 (from versions: "
           "none)\nERROR: No matching distribution found for ai-edge-litert>=9\n")
    msg = pc.explain_pip_failure(out, where="test")
    assert "ai-edge-litert>=9" in msg and "CPython 3.11" in msg and "aarch64" in msg
    net = pc.explain_pip_failure("WARNING: Retrying ... Failed to establish a new connection", where="test")
    assert "could not reach" in net


# -- comparison ----------------------------------------------------------------------------------------
def _listen_output(events, windows, labels=("yes", "no", "_silence_")):
    lines = []
    for t, scores in windows:
        lines.append(json.dumps({"type": "window", "source": "s.wav", "time": t,
                                 "scores": dict(zip(labels, scores))}))
    for t, label, score in events:
        lines.append(json.dumps({"type": "event", "source": "s.wav", "time": t, "label": label, "score": score}))
    lines.append(json.dumps({"type": "summary", "windows": len(windows), "events": len(events),
                             "invoke_ms_p50": 1.0, "backend": "ai_edge_litert"}))
    return "\n".join(lines) + "\n"


CASE = pc.Case("tiny", "stream", [], input="s.wav")
WINDOWS = [(0.992, [0.9, 0.1, 0.0]), (1.092, [0.95, 0.05, 0.0]), (1.192, [0.2, 0.1, 0.7])]
EVENTS = [(0.992, "yes", 0.9)]


def _outcome(stdout, rc=0, stderr=""):
    return pc.Outcome(rc=rc, stdout=stdout, stderr=stderr, seconds=1.0)


def test_compare_identical_passes():
    out = _listen_output(EVENTS, WINDOWS)
    row = pc.compare(CASE, _outcome(out), _outcome(out), 0.02)
    assert row["ok"] and row["events_equal"] and row["max_score_diff"] == 0.0 and row["windows"] == 3


def test_compare_small_score_difference_within_tolerance():
    a = _listen_output([(0.992, "yes", 0.9039)], [(0.992, [0.9039, 0.0961, 0.0])] + WINDOWS[1:])
    row = pc.compare(CASE, _outcome(a), _outcome(_listen_output(EVENTS, WINDOWS)), 0.02)
    assert row["ok"], row["problems"]
    assert row["max_score_diff"] == pytest.approx(0.0039, abs=1e-9)


def test_compare_reports_score_difference_over_tolerance():
    a = _listen_output(EVENTS, [WINDOWS[0], (1.092, [0.85, 0.15, 0.0]), WINDOWS[2]])
    row = pc.compare(CASE, _outcome(a), _outcome(_listen_output(EVENTS, WINDOWS)), 0.02)
    assert not row["ok"] and row["events_equal"]
    assert row["max_score_diff"] == pytest.approx(0.1)
    assert any("tolerance" in p for p in row["problems"])


@pytest.mark.parametrize("events", [[(1.092, "yes", 0.9)], [(0.992, "no", 0.9)], []])
def test_compare_reports_different_events(events):
    row = pc.compare(CASE, _outcome(_listen_output(events, WINDOWS)), _outcome(_listen_output(EVENTS, WINDOWS)),
                     0.02)
    assert not row["ok"] and row["events_equal"] is False
    assert any("events differ" in p for p in row["problems"])


def test_compare_reports_a_crash_as_illegal_instruction():
    row = pc.compare(CASE, _outcome("", rc=-4, stderr="qemu: uncaught target signal 4 (Illegal instruction)"),
                     _outcome(_listen_output(EVENTS, WINDOWS)), 0.02)
    assert not row["ok"]
    assert "Illegal instruction" in row["problems"][0]


def test_table_lists_every_row():
    out = _listen_output(EVENTS, WINDOWS)
    rows = [pc.compare(CASE, _outcome(out), _outcome(out), 0.02)]
    text = pc.format_table(rows, 0.02)
    assert "events equal" in text and "max score diff" in text and "| tiny " in text and "yes" in text


def _result(tmp_path, rows, *, venv_stamp=None, probe_problems=()):
    pi = pc.PiSide(cache=pc.Cache(tmp_path / "cache"), cold_root=False, cold_venv=False,
                   venv_stamp=venv_stamp or {"resolved_at": "2025-01-01T00:00:00+00:00"})
    return pc.CheckResult(pi=pi, cpu="cortex-a72", tolerance=0.02, stream_seconds=20.0, x86_python=sys.executable,
                          probe={"versions": {"numpy": "2.0"}}, probe_problems=list(probe_problems), rows=rows,
                          phases={"probe_s": 1.0, "runs_s": 2.0}, seconds=3.0)


def test_report_steps_print_and_write_the_comparison(tmp_path, capsys):
    out = _listen_output(EVENTS, WINDOWS)
    same = pc.compare(CASE, _outcome(out), _outcome(out), 0.02)
    res = _result(tmp_path, [same], venv_stamp={"built_from_source": ["somepkg"]})
    problems = pc.report_problems(res)
    assert problems == ["pip on aarch64 built from source (no wheel): somepkg"]
    pc.print_results(res, problems)
    pc.write_report(res, problems, {"numpy": "2.0"}, tmp_path / "extra" / "report.json")
    text = capsys.readouterr().out
    assert "| tiny " in text and "FAIL probe: pip on aarch64 built from source (no wheel): somepkg" in text
    assert "probe 1 s, runs 2 s" in text
    saved = json.loads((tmp_path / "cache" / "last-report.json").read_text())
    assert saved["probe_problems"] == problems and saved["rows"][0]["name"] == "tiny"
    assert (tmp_path / "extra" / "report.json").read_text() == (tmp_path / "cache" / "last-report.json").read_text()

    clean = _result(tmp_path, [same])
    assert clean.ok and pc.report_problems(clean) == []
    pc.print_results(clean, [])
    assert "pi-check passed (warm cache" in capsys.readouterr().out

    differ = pc.compare(CASE, _outcome(_listen_output([], WINDOWS)), _outcome(out), 0.02)
    failed = _result(tmp_path, [same, differ])
    assert not failed.ok and _result(tmp_path, [same], probe_problems=["python is 3.12"]).ok is False
    pc.print_results(failed, pc.report_problems(failed))
    assert "pi-check FAILED" in capsys.readouterr().out


def test_inputs_are_checked_before_anything_is_built(tmp_path):
    b = tmp_path / "b"
    b.mkdir()
    (b / "manifest.json").write_text(json.dumps({"labels": ["yes"], "models": {"int8": {}}}))
    args = pc.build_parser().parse_args(["--bundles", str(b), "--stream", str(tmp_path / "missing.wav")])
    with pytest.raises(pc.PiCheckError, match="demo stream .*missing.wav not found"):
        pc.resolve_inputs(args, sys.executable)
    (tmp_path / "s.wav").write_bytes(b"RIFF")
    args = pc.build_parser().parse_args(["--bundles", str(b), "--stream", str(tmp_path / "s.wav")])
    inputs = pc.resolve_inputs(args, sys.executable)
    assert inputs.bundles == (b.resolve(),) and inputs.stream == (tmp_path / "s.wav").resolve()
    with pytest.raises(pc.PiCheckError, match="x86 python"):
        pc.resolve_inputs(args, str(tmp_path / "no-python"))
    (tmp_path / "nob").mkdir()
    args = pc.build_parser().parse_args(["--bundles", str(tmp_path / "nob")])
    with pytest.raises(pc.PiCheckError, match="is not a model bundle"):
        pc.resolve_inputs(args, sys.executable)


# -- helpers -------------------------------------------------------------------------------------------
def test_apt_mirror_from_deb822_and_one_line_sources(tmp_path):
    d = tmp_path / "apt"
    (d / "sources.list.d").mkdir(parents=True)
    (d / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n")
    assert pc.apt_mirror(d) == "http://mirror.example/debian"
    e = tmp_path / "apt2"
    e.mkdir()
    (e / "sources.list").write_text("# comment\ndeb [arch=amd64] http://other.example/debian bookworm main\n")
    assert pc.apt_mirror(e) == "http://other.example/debian"
    assert pc.apt_mirror(tmp_path / "none") == pc.DEFAULT_MIRROR


def test_cpuinfo_looks_like_a_pi():
    text = pc.cpuinfo_text("cortex-a72", "0-3\n")
    assert text.count("processor\t:") == 4 and "CPU part\t: 0xd08" in text and "Raspberry Pi 4" in text
    text5 = pc.cpuinfo_text("cortex-a76", "0,2-3")
    assert text5.count("processor\t:") == 3 and "0xd0b" in text5 and "asimddp" in text5


def test_plan_uses_a_foreground_clip_and_caps_the_stream(tmp_path):
    b = tmp_path / "b"
    b.mkdir()
    (b / "manifest.json").write_text(json.dumps({"labels": ["_silence_", "yes", "no"],
                                                 "background_labels": ["_silence_"], "models": {"int8": {}}}))
    nob = tmp_path / "float_only"
    nob.mkdir()
    (nob / "manifest.json").write_text(json.dumps({"labels": ["yes"], "models": {"float32": {}}}))
    cases = pc.plan_cases(bundles=[b, nob], default_bundle=b, stream=tmp_path / "s.wav",
                          clips=tiny_bundle.DATA_DIR, stream_seconds=20.0)
    assert [c.what for c in cases] == ["devices", "stream", "clip"]
    assert cases[1].args[-2:] == ["--duration", "20"] and "--bundle" in cases[1].args
    assert cases[2].input.startswith("yes/")


# -- the real thing (slow) -------------------------------------------------------------------------------
def _e2e_skip_reason() -> str | None:
    flag = os.environ.get("AURICLE_PI_CHECK", "")
    if flag == "0":
        return "AURICLE_PI_CHECK=0"
    if flag == "1":
        return None
    if shutil.which("qemu-aarch64-static") is None:
        return "qemu-user-static not installed (make pi-check names what it needs)"
    if not pc.cache_is_warm():
        return (f"the emulated Pi cache ({pc.default_cache()}) is cold: `make pi-check` or AURICLE_PI_CHECK=1 "
                "builds it (~6 min, network)")
    return None


@pytest.mark.slow
def test_pi_check_end_to_end(tmp_path_factory, tmp_path):
    reason = _e2e_skip_reason()
    if reason:                 # before building the bundle (TensorFlow): a skip costs nothing
        pytest.skip(reason)
    import soundfile as sf

    edge_bundle = tiny_bundle.cached_bundle(tmp_path_factory, "edge", train_clips_dir=tiny_bundle.DATA_DIR)

    parts = []
    for label in ("yes", "_silence_", "no"):
        parts.append(tiny_bundle.load_clip(tiny_bundle.clips_for(label)[0]))
        parts.append(np.zeros(4000, np.int16))
    stream = tmp_path / "stream.wav"
    sf.write(stream, np.concatenate(parts), 16000, subtype="PCM_16")
    report = tmp_path / "report.json"
    proc = subprocess.run(["bash", str(REPO / "tools" / "pi_check.sh"), "--bundles", str(edge_bundle),
                           "--default-bundle", str(edge_bundle), "--stream", str(stream), "--report", str(report)],
                          capture_output=True, text=True, timeout=2400, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    r = json.loads(report.read_text())
    assert r["ok"] and not r["probe_problems"]
    assert r["probe"]["machine"] == "aarch64" and r["probe"]["python"].startswith("3.11.")
    assert r["probe"]["forbidden_importable"] == [] and r["probe"]["heavy_modules"] == []
    assert all(r["aarch64_versions"][n] for n in pc.EDGE_PACKAGES)
    kinds = {row["what"]: row for row in r["rows"]}
    assert set(kinds) == {"devices", "stream", "clip"}
    assert kinds["stream"]["events"] >= 1 and kinds["stream"]["events_equal"]
    assert all(row["ok"] for row in r["rows"])
    assert "pi-check passed" in proc.stdout


def test_the_pi_side_gets_this_trees_wheel_and_no_source_to_import(tmp_path):
    cache = pc.Cache(tmp_path / "cache")
    (cache.src / "edge").mkdir(parents=True)                  # what an editable-install cache left behind
    (cache.src / "firmware_assets").symlink_to(REPO / "firmware_assets")
    wheel = pc.sync_src(cache)
    assert wheel.parent == cache.src / "dist" and wheel.name.startswith("auricle-")
    assert sorted(p.name for p in cache.src.iterdir()) == ["dist"]
    assert (REPO / "firmware_assets" / "kws_mobilenet_edge" / "manifest.json").is_file()   # the link only went
    import zipfile
    assert "edge/bundles/kws_mobilenet_edge/model_int8.tflite" in zipfile.ZipFile(wheel).namelist()
    probe = {"machine": "aarch64", "python": pc.PI_PYTHON + ".2", "edge_file": str(REPO / "edge" / "__init__.py")}
    problems = pc.probe_problems(probe, cache)
    assert any("not from the wheel installed in the venv" in p for p in problems), problems
    probe["edge_file"] = str(cache.venv / "lib" / "python3.11" / "site-packages" / "edge" / "__init__.py")
    assert not any("not from the wheel" in p for p in pc.probe_problems(probe, cache))
