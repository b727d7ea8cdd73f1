"""Hostile inputs: ``python -m edge.listen`` with bad bundles and bad WAV files ends in exit 0 or 2.

Every case runs in its own process under a memory limit (``RLIMIT_AS``) and a time limit, and must end
with exit 0 (a normal run) or 2 (one ``edge.listen: error:`` line), with no traceback and no signal.

Bundles stay in their folder: a manifest that names a file outside it (``..``, an absolute path, a symlink
leading out) is refused before anything reads that file. The target is a FIFO with no writer, so a read --
even an ``open()`` for reading -- would block and the case would run into its time limit; where the target
is a valid model, following the path would have ended in a normal run, so exit 2 shows the refusal.

The base bundle is a minimal copy of the shipped default bundle (manifest, labels, int8 model), so this
module needs no TensorFlow.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import tiny_bundle
from edge.bundle import LABELS, MANIFEST, default_bundle_path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
SHIPPED = default_bundle_path()
MODEL = "model_int8.tflite"
MEMORY_LIMIT = 1 << 30          # address space per case: a Raspberry Pi 3 has 1 GB; a normal run peaks at ~0.2 GB
TIME_LIMIT = 60.0               # seconds per case (a normal one takes 1-3 s, on a loaded machine)
CONFINED = ("is not a plain file name inside the bundle", "which is not in the bundle folder")

pytestmark = pytest.mark.skipif(not (SHIPPED / MANIFEST).is_file(), reason="shipped bundle missing")


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_listen(*args: object) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("AURICLE_BUNDLE", None)
    try:
        return subprocess.run([PY, "-m", "edge.listen", *map(str, args)], capture_output=True, text=True, cwd=REPO,
                              env=env, timeout=TIME_LIMIT, preexec_fn=_limits)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"edge.listen {args} ran past {TIME_LIMIT:.0f} s (blocked reading a FIFO?)") from None


def assert_clean(r: subprocess.CompletedProcess) -> str:
    """Exit 0, or exit 2 with exactly one error line; never a traceback or a signal. Returns the error line."""
    assert r.returncode >= 0, f"killed by signal {-r.returncode}: {r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode in (0, 2), (r.returncode, r.stderr[-2000:])
    if r.returncode == 0:
        assert json.loads(r.stdout.splitlines()[-1])["type"] == "summary"
        return ""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edge.listen: error: "), r.stderr
    return lines[0]


# -- fixtures: a minimal real bundle, a clean WAV, a folder outside the bundle ----------------------------------
@pytest.fixture(scope="module")
def base_bundle(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("hostile") / "base"
    base.mkdir()
    for name in (LABELS, MODEL):
        shutil.copyfile(SHIPPED / name, base / name)
    manifest = tiny_bundle.read_manifest(SHIPPED)
    manifest["models"] = {"int8": manifest["models"]["int8"]}
    manifest["default_model"] = "int8"
    tiny_bundle.write_manifest(base, manifest)
    return base


@pytest.fixture(scope="module")
def clean_wav(tmp_path_factory) -> Path:
    import soundfile as sf

    x, rate = sf.read(str(REPO / "samples" / "speech_commands_stream.wav"), dtype="int16")
    path = tmp_path_factory.mktemp("wav") / "clean.wav"
    sf.write(path, x[: 2 * rate], rate, subtype="PCM_16")
    return path


@dataclasses.dataclass(frozen=True)
class Place:
    """``bundle``: a fresh copy of the base bundle; ``outside``: its sibling folder, with a FIFO ``trap`` (no
    writer: reading it blocks) and valid copies of the bundle's files."""
    bundle: Path
    outside: Path

    def manifest(self) -> dict:
        return tiny_bundle.read_manifest(self.bundle)

    def rehash(self, manifest: dict) -> None:
        tiny_bundle.write_manifest(self.bundle, manifest)          # sha256 of every file, as a real bundle has

    def write_raw(self, manifest: dict) -> None:
        (self.bundle / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture
def place(tmp_path, base_bundle) -> Place:
    bundle = tmp_path / "bundle"
    shutil.copytree(base_bundle, bundle)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.mkfifo(outside / "trap")
    for name in (MODEL, LABELS, MANIFEST):
        shutil.copyfile(bundle / name, outside / name)
    return Place(bundle, outside)


# -- bundles that reach outside their folder: refused before anything is read -----------------------------------
def _model_file(value: Callable[[Place], str], *, listed: bool = False) -> Callable[[Place], None]:
    def make(p: Place) -> None:
        m = p.manifest()
        name = value(p)
        m["models"]["int8"]["file"] = name
        if listed:
            m["files"][name] = m["files"][MODEL]
        p.write_raw(m)
    return make


def _files_entry(value: Callable[[Place], str]) -> Callable[[Place], None]:
    def make(p: Place) -> None:
        m = p.manifest()
        m["files"][value(p)] = "0" * 64
        p.write_raw(m)
    return make


def _symlink(name: str, target: Callable[[Place], Path]) -> Callable[[Place], None]:
    def make(p: Place) -> None:
        m = p.manifest()
        (p.bundle / name).unlink()
        os.symlink(target(p), p.bundle / name)
        if name != MANIFEST:
            p.write_raw(m)
    return make


def _subfolder(p: Place) -> None:
    (p.bundle / "sub").mkdir()
    shutil.move(str(p.bundle / MODEL), p.bundle / "sub" / MODEL)
    m = p.manifest()
    m["models"]["int8"]["file"] = f"sub/{MODEL}"
    m["files"] = {k: v for k, v in m["files"].items() if k != MODEL}
    p.write_raw(m)


CONFINEMENT = {
    "traversal-to-fifo": _model_file(lambda p: "../outside/trap", listed=True),
    "deep-traversal": _model_file(lambda p: "../../../../../../../../etc/passwd", listed=True),
    "traversal-to-valid-model": _model_file(lambda p: f"../outside/{MODEL}", listed=True),
    "absolute-to-fifo": _model_file(lambda p: str(p.outside / "trap"), listed=True),
    "absolute-to-valid-model": _model_file(lambda p: str(p.outside / MODEL), listed=True),
    "backslash-traversal": _model_file(lambda p: "..\\outside\\trap"),
    "dot-dot": _model_file(lambda p: ".."),
    "empty-name": _model_file(lambda p: ""),
    "nul-in-name": _model_file(lambda p: f"{MODEL}\x00.txt"),
    "name-not-a-string": _model_file(lambda p: 7),  # type: ignore[arg-type,return-value]
    "subfolder-inside-bundle": _subfolder,
    "files-entry-traversal": _files_entry(lambda p: "../outside/trap"),
    "files-entry-absolute": _files_entry(lambda p: str(p.outside / "trap")),
    "symlinked-model-to-fifo": _symlink(MODEL, lambda p: p.outside / "trap"),
    "symlinked-model-to-valid-model": _symlink(MODEL, lambda p: p.outside / MODEL),
    "relative-symlink-leaving": _symlink(MODEL, lambda p: Path("..") / "outside" / MODEL),
    "symlinked-labels": _symlink(LABELS, lambda p: p.outside / LABELS),
    "symlinked-manifest": _symlink(MANIFEST, lambda p: p.outside / MANIFEST),
}


@pytest.mark.parametrize("case", sorted(CONFINEMENT))
def test_a_bundle_naming_files_outside_its_folder_is_refused_before_any_read(place, clean_wav, case):
    CONFINEMENT[case](place)
    line = assert_clean(run_listen("--bundle", place.bundle, "--file", clean_wav, "--json"))
    assert any(text in line for text in CONFINED), line
    assert "trust" in line                      # the fix: rebuild, and use bundles from a trusted source


def test_a_symlink_that_stays_in_the_bundle_is_fine(place, clean_wav):
    (place.bundle / MODEL).rename(place.bundle / "real.tflite")
    os.symlink("real.tflite", place.bundle / MODEL)
    place.rehash(place.manifest())
    assert assert_clean(run_listen("--bundle", place.bundle, "--file", clean_wav, "--json")) == ""


# -- bundles with bad contents: a clean error (or a normal run) -----------------------------------------------
def _model_bytes(change: Callable[[bytes], bytes]) -> Callable[[Place], None]:
    """Replace the model's bytes and list their sha256, so the checksum passes and the runtime must cope."""
    def make(p: Place) -> None:
        path = p.bundle / MODEL
        path.write_bytes(change(path.read_bytes()))
        p.rehash(p.manifest())
    return make


def _mutate(seed: int, *, head: int | None = None) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        rng = random.Random(seed)
        out = bytearray(data)
        for _ in range(rng.randint(1, 64)):
            out[rng.randrange(head or len(out))] = rng.randrange(256)
        return bytes(out)
    return change


def _labels(text: bytes, *, manifest_too: bool) -> Callable[[Place], None]:
    def make(p: Place) -> None:
        (p.bundle / LABELS).write_bytes(text)
        m = p.manifest()
        if manifest_too:
            m["labels"] = text.decode().split()
        p.rehash(m)
    return make


def _fifo_model(p: Place) -> None:
    (p.bundle / MODEL).unlink()
    os.mkfifo(p.bundle / MODEL)
    p.write_raw(p.manifest())


def _folder_model(p: Place) -> None:
    (p.bundle / MODEL).unlink()
    (p.bundle / MODEL).mkdir()
    p.write_raw(p.manifest())


def _sha_mismatch(p: Place) -> None:
    data = bytearray((p.bundle / MODEL).read_bytes())
    data[1000] ^= 0xFF
    (p.bundle / MODEL).write_bytes(bytes(data))


def _manifest_text(text: str | bytes) -> Callable[[Place], None]:
    def make(p: Place) -> None:
        (p.bundle / MANIFEST).write_bytes(text if isinstance(text, bytes) else text.encode())
    return make


CONTENTS = {
    "random-bytes-model": _model_bytes(lambda d: np.random.default_rng(0).bytes(len(d))),
    "empty-model": _model_bytes(lambda d: b""),
    "model-8-bytes": _model_bytes(lambda d: d[:8]),
    "model-truncated-100": _model_bytes(lambda d: d[:100]),
    "model-truncated-half": _model_bytes(lambda d: d[:len(d) // 2]),
    "model-last-byte-cut": _model_bytes(lambda d: d[:-1]),
    "model-with-trailing-garbage": _model_bytes(lambda d: d + b"\xff" * 4096),
    **{f"model-mutated-{s}": _model_bytes(_mutate(s)) for s in range(6)},
    **{f"model-header-mutated-{s}": _model_bytes(_mutate(s, head=512)) for s in range(4)},
    "model-is-a-fifo": _fifo_model,
    "model-is-a-folder": _folder_model,
    "model-sha-mismatch": _sha_mismatch,
    "labels-one-short": _labels("\n".join(tiny_bundle.read_manifest(SHIPPED)["labels"][:-1]).encode(),
                                manifest_too=True),
    "labels-disagree-with-manifest": _labels(b"a\nb\nc\n", manifest_too=False),
    "labels-empty": _labels(b"", manifest_too=True),
    "labels-not-utf8": _labels(b"\xff\xfe\x00yes\n", manifest_too=False),
    "manifest-not-json": _manifest_text("{not json"),
    "manifest-a-list": _manifest_text("[1, 2]"),
    "manifest-binary": _manifest_text(b"\xff\xfe\x00\x01garbage"),
    "manifest-empty": _manifest_text(""),
}


def _manifest_edit(change: Callable[[dict], None]) -> Callable[[Place], None]:
    def make(p: Place) -> None:
        m = p.manifest()
        change(m)
        p.write_raw(m)
    return make


MANIFEST_FIELDS = {
    "schema-version-99": _manifest_edit(lambda m: m.update(schema_version=99)),
    "no-feature-config": _manifest_edit(lambda m: m.pop("feature_config")),
    "feature-config-a-list": _manifest_edit(lambda m: m.update(feature_config=[1])),
    "feature-config-rate-a-string": _manifest_edit(lambda m: m["feature_config"].update(sample_rate="16000")),
    "feature-config-absurd-mels": _manifest_edit(lambda m: m["feature_config"].update(n_mels=10**9)),
    "feature-config-absurd-clip": _manifest_edit(lambda m: m["feature_config"].update(clip_duration=1e12)),
    "feature-config-nan-clip": _manifest_edit(lambda m: m["feature_config"].update(clip_duration=float("nan"))),
    "no-models": _manifest_edit(lambda m: m.update(models={})),
    "models-a-list": _manifest_edit(lambda m: m.update(models=[1])),
    "model-entry-a-string": _manifest_edit(lambda m: m["models"].update(int8="x")),
    "output-shape-garbage": _manifest_edit(lambda m: m["models"]["int8"]["output"].update(shape="abc")),
    "default-model-unknown": _manifest_edit(lambda m: m.update(default_model="fp64")),
    "files-a-list": _manifest_edit(lambda m: m.update(files=["a"])),
    "labels-not-a-list": _manifest_edit(lambda m: m.update(labels=5)),
    "background-labels-not-a-list": _manifest_edit(lambda m: m.update(background_labels=5)),
    "detector-a-list": _manifest_edit(lambda m: m.update(detector=[1])),
    "detector-threshold-a-word": _manifest_edit(lambda m: m.update(detector={"threshold": "high"})),
    "manifest-nested-100000-deep": _manifest_text("[" * 100_000 + "]" * 100_000),
}


@pytest.mark.parametrize("case", sorted(CONTENTS))
def test_a_bundle_with_bad_contents_ends_cleanly(place, clean_wav, case):
    CONTENTS[case](place)
    assert_clean(run_listen("--bundle", place.bundle, "--file", clean_wav, "--json"))


@pytest.mark.parametrize("case", sorted(MANIFEST_FIELDS))
def test_a_manifest_with_malformed_fields_ends_cleanly(place, clean_wav, case):
    MANIFEST_FIELDS[case](place)
    assert_clean(run_listen("--bundle", place.bundle, "--file", clean_wav, "--json"))


# -- WAV files with absurd headers ----------------------------------------------------------------------------
def riff(*, tag: int = 1, channels: int = 1, rate: int = 16000, bits: int = 16, align: int | None = None,
         byte_rate: int | None = None, fmt_size: int = 16, data: bytes | None = None, data_size: int | None = None,
         riff_size: int | None = None, magic: bytes = b"RIFF") -> bytes:
    """A WAV file with every header field settable (sizes default to the truth)."""
    if data is None:
        data = (np.sin(np.arange(32000) * 0.05) * 3000).astype("<i2").tobytes()
    align = (channels * bits // 8) & 0xFFFF if align is None else align
    byte_rate = (rate * align) & 0xFFFFFFFF if byte_rate is None else byte_rate
    fmt = struct.pack("<HHIIHH", tag, channels, rate, byte_rate, align, bits)
    body = (b"WAVE" + b"fmt " + struct.pack("<I", fmt_size) + fmt + b"data"
            + struct.pack("<I", len(data) if data_size is None else data_size) + data)
    return magic + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def _mutated_header(seed: int) -> bytes:
    rng = random.Random(seed)
    out = bytearray(riff())
    for _ in range(rng.randint(1, 6)):
        out[rng.randrange(44)] = rng.randrange(256)
    return bytes(out)


WAVS = {
    "zero-channels": riff(channels=0),
    "zero-rate": riff(rate=0),
    "rate-1-hz": riff(rate=1),
    "rate-8000-too-low": riff(rate=8000),
    "rate-4294967295": riff(rate=0xFFFFFFFF),
    "rate-1000003-prime": riff(rate=1_000_003),
    "rate-400000000": riff(rate=400_000_000),
    "65535-channels": riff(channels=0xFFFF),
    "bits-0": riff(bits=0),
    "bits-1": riff(bits=1),
    "bits-7": riff(bits=7),
    "bits-12": riff(bits=12),
    "bits-24-odd-data": riff(bits=24, data=b"\x01" * 1001),
    "bits-64-integer": riff(bits=64),
    "bits-65535": riff(bits=0xFFFF),
    "float-tag-16-bits": riff(tag=3, bits=16),
    "unknown-format-tag": riff(tag=0x1234),
    "extensible-tag-short-fmt": riff(tag=0xFFFE),
    "block-align-0": riff(align=0),
    "byte-rate-0": riff(byte_rate=0),
    "data-size-4-gib": riff(data_size=0xFFFFFFF0),
    "riff-size-0": riff(riff_size=0),
    "riff-size-4-gib": riff(riff_size=0xFFFFFFF0),
    "fmt-size-4-gib": riff(fmt_size=0xFFFFFFF0),
    "fmt-size-2": riff(fmt_size=2),
    "no-data": riff(data=b""),
    "odd-data-length": riff(data=b"\x01\x02\x03"),
    "big-endian-rifx": riff(magic=b"RIFX"),
    "header-only-12-bytes": riff()[:12],
    "header-cut-at-40": riff()[:40],
    "empty-file": b"",
    "random-bytes": np.random.default_rng(1).bytes(50_000),
    **{f"header-mutated-{s}": _mutated_header(s) for s in range(10)},
}


@pytest.mark.parametrize("case", sorted(WAVS))
def test_a_wav_with_an_absurd_header_ends_cleanly(tmp_path, base_bundle, case):
    wav = tmp_path / f"{case}.wav"
    wav.write_bytes(WAVS[case])
    assert_clean(run_listen("--bundle", base_bundle, "--file", wav, "--json"))


def test_the_base_bundle_and_wav_run_normally(base_bundle, clean_wav):
    """The cases above change one thing each; unchanged, the inputs give a normal run."""
    r = run_listen("--bundle", base_bundle, "--file", clean_wav, "--json")
    assert assert_clean(r) == "" and json.loads(r.stdout.splitlines()[-1])["windows"] > 0
