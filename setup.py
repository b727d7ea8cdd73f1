"""The one build step setup.cfg cannot say: the wheel carries the device bundles and the demo streams.

``edge/bundles/NAME/`` gets each of ``edge.shipped.WHEEL_BUNDLES`` as a *device bundle*: its int8 model (and
Edge TPU model, if any), labels and a manifest whose ``files`` list exactly what is there, every sha256
checked against the repository's manifest first. What is left out (float32 model, reports, plots) is named
in the manifest's ``device_bundle`` entry and, for a model, under ``regenerable_files`` with where to get it,
so the installed bundle verifies and says honestly what it lacks. ``edge/samples/`` gets the demo streams.
An editable install reads ``firmware_assets/`` and ``samples/`` in place and skips this step.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from edge.fileio import sha256_file, write_json_atomic  # noqa: E402  (stdlib-only modules of this source tree)
from edge.shipped import WHEEL_BUNDLES, WHEEL_SAMPLES  # noqa: E402

DEVICE_FILES = ("labels.txt", "model_int8.tflite", "model_edgetpu.tflite")


def device_manifest(manifest: dict, kept: set[str]) -> dict:
    """The repository manifest cut down to the files in ``kept``, saying what was left out and where it is."""
    name = manifest["name"]
    left = sorted(set(manifest["files"]) - kept)
    regen = dict(manifest.get("regenerable_files") or {})
    for kind, entry in (manifest.get("models") or {}).items():
        if entry["file"] not in kept and entry["file"] in manifest["files"]:
            regen[entry["file"]] = {
                "sha256": manifest["files"][entry["file"]], "why": "an installed wheel carries device files only",
                "source": f"it is firmware_assets/{name}/{entry['file']} in the auricle repository",
                "model": {"kind": kind, "input": entry["input"], "output": entry["output"]}}
    return {**manifest,
            "files": {n: d for n, d in manifest["files"].items() if n in kept},
            "models": {k: e for k, e in manifest["models"].items() if e["file"] in kept},
            "regenerable_files": regen,
            "device_bundle": {"left_out": left, "full_bundle": f"firmware_assets/{name} in the auricle repository",
                              "why": "the wheel carries what the runtime needs: int8 model, labels, manifest"}}


def write_device_bundle(src: Path, dst: Path) -> None:
    manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    kept = {n for n in DEVICE_FILES if n in manifest["files"]}
    for name in sorted(kept):
        if not (src / name).is_file() or sha256_file(src / name) != manifest["files"][name]:
            raise SystemExit(f"build: {src / name} is missing or does not match its manifest's sha256; "
                             "restore it (git checkout) before building the wheel")
    if os.path.exists(dst):
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for name in sorted(kept):
        shutil.copyfile(src / name, dst / name)
    write_json_atomic(dst / "manifest.json", device_manifest(manifest, kept))


class BuildWithAssets(build_py):
    """build_py, then the device bundles and demo streams as package data of ``edge``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        edge = Path(self.build_lib) / "edge"
        for name in WHEEL_BUNDLES:
            write_device_bundle(HERE / "firmware_assets" / name, edge / "bundles" / name)
        (edge / "samples").mkdir(parents=True, exist_ok=True)
        for stem in WHEEL_SAMPLES:
            for suffix in (".wav", ".csv"):
                shutil.copyfile(HERE / "samples" / f"{stem}{suffix}", edge / "samples" / f"{stem}{suffix}")


setup(cmdclass={"build_py": BuildWithAssets})
