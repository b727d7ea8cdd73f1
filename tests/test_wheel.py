"""The wheel a Pi user installs: built from this tree, installed into a fresh venv outside the checkout, run
from yet another folder. Only edge, training and converters are installed; the device bundles and demo
streams travel as package data and verify; a damaged installed bundle is one line naming the file, exit 2.

The venv gets the wheel with --no-deps and sees this interpreter's numpy and ai-edge-litert through a
plain path entry (no network here); CI's `make wheel-check` installs the same wheel with its [edge] extra
from the package index."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WHEEL_MAX_BYTES = 8 * 1024 * 1024


def _env() -> dict[str, str]:
    """This environment without what would let a subprocess see the checkout or another bundle (a PYTHONPATH
    naming the checkout also shows pip its auricle.egg-info, and pip would then skip the install)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AURICLE_BUNDLE")}


def _run(cmd, *, cwd, timeout=300, check=True):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env=_env())
    if check:
        assert r.returncode == 0, f"{cmd}: {r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # this venv's setuptools when it has one (no download); else pip fetches it into an isolated build env
    isolation = ["--no-build-isolation"] if all(importlib.util.find_spec(n) for n in ("setuptools", "wheel")) else []
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", out, REPO], cwd=REPO)
    wheels = sorted(out.glob("auricle-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv under tmp (outside the checkout) holding only the wheel, plus a path to numpy/litert."""
    root = tmp_path_factory.mktemp("pi_user") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", root], cwd=root.parent)
    py = root / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", wheel],
         cwd=root.parent)
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=root.parent).stdout.strip())
    deps = {str(Path(importlib.util.find_spec(m).origin).parent.parent) for m in ("numpy", "ai_edge_litert")}
    (site / "zz_auricle_test_deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    return root


def _elsewhere(tmp_path: Path) -> Path:
    folder = tmp_path / "somewhere_else"
    folder.mkdir(exist_ok=True)
    return folder


def test_the_wheel_installs_only_the_packages_users_import_and_is_small(wheel):
    assert wheel.stat().st_size <= WHEEL_MAX_BYTES, f"{wheel.stat().st_size / 2**20:.1f} MB"
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"edge", "training", "converters"}
    for name in ("kws_mobilenet_edge", "esc10_mobilenet_edge"):
        assert {f"edge/bundles/{name}/{f}" for f in ("manifest.json", "labels.txt", "model_int8.tflite")} \
            <= set(names)
    assert "edge/samples/speech_commands_stream.wav" in names
    assert not [n for n in names if n.endswith((".cc", "model_float32.tflite", ".png"))]


def test_installed_bundles_verify_and_say_what_they_left_out(venv, tmp_path):
    code = ("import json, edge, edge.bundle as b\n"
            "from edge.shipped import WHEEL_BUNDLES, find_bundle\n"
            "out = {'edge': edge.__file__, 'default': str(b.default_bundle_path())}\n"
            "for n in WHEEL_BUNDLES:\n"
            "    bd = b.load_bundle(n, verify=True)\n"
            "    out[n] = {'path': str(bd.path), 'models': sorted(bd.models), 'files': sorted(bd.manifest['files']),\n"
            "              'left_out': bd.manifest['device_bundle']['left_out'],\n"
            "              'present': sorted(p.name for p in bd.path.iterdir())}\n"
            "print(json.dumps(out))")
    r = _run([venv / "bin" / "python", "-c", code], cwd=_elsewhere(tmp_path))
    info = json.loads(r.stdout)
    assert info["edge"].startswith(str(venv)), info["edge"]
    assert info["default"] == info["kws_mobilenet_edge"]["path"]
    for name in ("kws_mobilenet_edge", "esc10_mobilenet_edge"):
        b = info[name]
        assert b["path"].startswith(str(venv)) and b["models"] == ["int8"]
        assert b["present"] == sorted([*b["files"], "manifest.json"])          # the file list is what is there
        assert "model_float32.tflite" in b["left_out"]
    for repo_only in ("tools", "benchmarks"):
        r = _run([venv / "bin" / "python", "-c", f"import {repo_only}"], cwd=_elsewhere(tmp_path), check=False)
        assert r.returncode == 1 and "No module named" in r.stderr


def test_auricle_demo_finds_its_words_from_any_folder(venv, tmp_path):
    r = _run([venv / "bin" / "auricle-demo", "--json"], cwd=_elsewhere(tmp_path), timeout=120)
    score = [json.loads(line) for line in r.stdout.splitlines() if '"type": "score"' in line][-1]
    assert score["truth_words"] == 10 and score["hits"] >= 9 and score["false_alarms"] == 0, score
    r = _run([venv / "bin" / "python", "-m", "edge.demo", "--bundle", "esc10_mobilenet_edge", "--stream",
              "esc10_stream", "--json"], cwd=_elsewhere(tmp_path), timeout=120)
    score = [json.loads(line) for line in r.stdout.splitlines() if '"type": "score"' in line][-1]
    assert score["truth_words"] == 10 and score["hits"] >= 1, score


def _one_error_line(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_a_damaged_installed_bundle_is_one_line_naming_the_file(venv, tmp_path):
    site = next((venv / "lib").glob("python3*/site-packages"))
    model = site / "edge" / "bundles" / "kws_mobilenet_edge" / "model_int8.tflite"
    kept = tmp_path / "kept.tflite"
    shutil.copyfile(model, kept)
    try:
        with open(model, "ab") as fh:
            fh.write(b"\0")
        line = _one_error_line(_run([venv / "bin" / "auricle-demo"], cwd=_elsewhere(tmp_path), check=False))
        assert str(model) in line and "sha256" in line and "reinstall" in line, line
        model.unlink()
        line = _one_error_line(_run([venv / "bin" / "auricle-listen", "--duration", "1"], cwd=_elsewhere(tmp_path),
                                    check=False))
        assert str(model) in line and "missing" in line, line
    finally:
        shutil.copyfile(kept, model)
    samples = site / "edge" / "samples"
    moved = tmp_path / "samples"
    shutil.move(samples, moved)
    try:
        line = _one_error_line(_run([venv / "bin" / "auricle-demo"], cwd=_elsewhere(tmp_path), check=False))
        assert "--stream WAV" in line, line
    finally:
        shutil.move(moved, samples)
