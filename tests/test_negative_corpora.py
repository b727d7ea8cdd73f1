"""The source-disjoint negatives: text never holds a keyword, the table gives each source one role, the
builder writes 16 kHz FLAC with manifests from a real TTS engine and ffmpeg, skips corrupt files with a reason,
and the measure reports per source and per keyword on what it built."""
from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tools import negative_corpora as nc
from tools.negative_text import KEYWORDS, check_word_lists, keyword_tokens, syllables, utterances

REPO = Path(__file__).resolve().parent.parent
needs_tts = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("ffmpeg")),
                               reason="needs espeak-ng and ffmpeg (apt-get install espeak-ng ffmpeg)")


def test_keyword_tokens_are_whole_words():
    assert keyword_tokens("Go. Downtown is going upward") == ["go"]
    assert keyword_tokens("I know it's often off") == ["off"]
    assert keyword_tokens("Write the light") == []


def test_synthesized_text_never_holds_a_keyword_and_has_near_words():
    assert check_word_lists() == []
    texts = list(itertools.islice(utterances(7), 2000))
    assert not [t for t in texts if keyword_tokens(t)]
    words = {w.strip(".,?").lower() for t in texts for w in t.split()}
    assert {"know", "write", "light", "eight", "of", "often", "going"} <= words
    assert sum(len(t.split()) == 1 for t in texts) > 500          # near words said on their own, too
    assert not words & KEYWORDS


def test_table_gives_every_source_one_role_and_ten_test_hours():
    table = nc.load_table()
    assert len({s.name for s in table}) == len(table)
    assert {s.role for s in table} == set(nc.ROLES)
    packages = {r: {p for s in table if s.role == r for p in s.packages if s.kind == "deb"} for r in nc.ROLES}
    assert not packages["test"] & (packages["train"] | packages["tune"])   # no recording in two roles
    voices = {r: {(s.engine, v) for s in table if s.role == r for v in s.voices} for r in nc.ROLES}
    assert not voices["test"] & (voices["train"] | voices["tune"]) and not voices["train"] & voices["tune"]
    assert sum(s.hours or 1.0 for s in table if s.role == "test") >= 10
    assert all(s.licence for s in table)


def test_prompts_with_a_keyword_or_without_a_transcript_are_dropped():
    script = {"vm-goodbye": "Goodbye.", "vm-press": "Press one to go on.", "digits/8": "eight"}
    assert nc._keep(Path("en_US/vm-goodbye.g722"), script) == ("Goodbye.", None)
    assert nc._keep(Path("en_US/digits/8.g722"), script) == ("eight", None)
    assert nc._keep(Path("en_US/vm-press.g722"), script) == (None, "transcript holds a keyword")
    assert nc._keep(Path("en_US/vm-other.g722"), script) == (None, "no transcript")
    assert nc._keep(Path("it/syllab/no.ogg"), None) == (None, "file name is a keyword")


@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs ffmpeg (apt-get install ffmpeg)")
def test_a_corrupt_file_is_skipped_with_its_reason(tmp_path):
    good, bad = tmp_path / "good.wav", tmp_path / "bad.ogg"
    sf.write(good, np.full(22050, 0.1, np.float32), 22050)
    bad.write_bytes(b"OggS" + b"\x00" * 200)
    done = nc.Written()
    out = list(nc._decoded([(bad, "bad.ogg", ""), (good, "good.wav", "")], done))
    assert [name for _x, name, _t in out] == ["good.wav"]
    assert abs(out[0][0].size - 16000) <= 2                       # resampled to 16 kHz
    assert done.skipped[0]["file"] == "bad.ogg" and done.skipped[0]["reason"].startswith("undecodable")


def _tiny_table(tmp_path: Path) -> Path:
    src = {"name": "tts-espeak-ng", "role": "test", "kind": "tts", "engine": "espeak-ng", "packages": ["espeak-ng"],
           "voices": ["en-us", "en-gb"], "variants": ["m3", "f2"], "hours": 0.004, "seed": 5,
           "content": "synthetic speech", "licence": "GPL-3+"}
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"sources": [src]}))
    return path


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=REPO, timeout=120, **kw)


@needs_tts
def test_builder_writes_flac_and_a_manifest_then_keeps_them(tmp_path):
    table, out = _tiny_table(tmp_path), tmp_path / "corpora"
    r = _cli("tools.negative_corpora", "--out", str(out), "--table", str(table))
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "tts-espeak-ng" / "manifest.json").read_text())
    assert m["role"] == "test" and m["hours"] >= 0.004 and m["packages"]["espeak-ng"]["version"] != "unknown"
    for f in m["files"]:
        info = sf.info(out / "tts-espeak-ng" / f["file"])
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
        assert abs(info.duration - f["seconds"]) < 0.01
        assert not [t for t in f["texts"] if keyword_tokens(t)]
    again = _cli("tools.negative_corpora", "--out", str(out), "--table", str(table))
    assert "up to date" in again.stderr


def test_bad_requests_are_one_line_and_exit_2(tmp_path):
    r = _cli("tools.negative_corpora", "--out", str(tmp_path), "--sources", "no-such-source")
    assert r.returncode == 2 and "unknown source(s) no-such-source" in r.stderr and "Traceback" not in r.stderr
    r = _cli("tools.negative_corpora", "--out", str(tmp_path), "--table", str(_tiny_table(tmp_path)),
             env={"PATH": str(tmp_path)})                             # no espeak-ng on this PATH
    assert r.returncode == 2 and "apt-get install espeak-ng" in r.stderr and "Traceback" not in r.stderr
    r = _cli("benchmarks.false_accepts_sources", "--corpus", str(tmp_path), "--sources", "tts-espeak-ng",
             "--stream", "samples/speech_commands_stream.wav", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "python -m tools.negative_corpora" in r.stderr


@needs_tts
def test_measure_reports_by_source_and_keyword(tmp_path):
    out = tmp_path / "corpora"
    assert _cli("tools.negative_corpora", "--out", str(out), "--table", str(_tiny_table(tmp_path))).returncode == 0
    res = tmp_path / "res"
    r = _cli("benchmarks.false_accepts_sources", "--corpus", str(out), "--sources", "tts-espeak-ng", "--stream",
             "samples/speech_commands_stream.wav", "--out", str(res), "--quiet")
    assert r.returncode == 0, r.stderr
    d = json.loads((res / "fa_sources_kws_mobilenet_edge.json").read_text())
    src = d["per_source"]["tts-espeak-ng"]
    assert src["false_accepts"] == d["overall"]["false_accepts"] == sum(d["overall"]["per_label"].values())
    assert src["hours"] == pytest.approx(d["overall"]["hours"]) and src["hours"] > 0.003
    assert d["positives"]["truth_words"] == 10 and d["positives"]["hits"] >= 9       # the demo stream's bar
    assert [r["threshold"] for r in d["det"]] == sorted(r["threshold"] for r in d["det"])
    assert all(r["false_reject_rate"] is not None for r in d["det"])
    assert "| tts-espeak-ng |" in (res / "FALSE_ACCEPTS_SOURCES.md").read_text()


def test_peer_runs_over_disjoint_sources_add_up_and_overlaps_are_refused():
    from benchmarks.false_accepts_sources import merge_peers
    from edge.errors import AuricleError

    def part(sources, fa, hours, cpu):
        return {"rows": [{"engine": "e", "model": "m", "false_accepts": fa, "hours": hours, "cpu_seconds": cpu,
                          "sources": sources, "per_source": {s: fa for s in sources[:1]}}]}

    (m,) = merge_peers([part(["a"], 2, 1.0, 10.0), part(["b", "c"], 1, 2.0, 20.0)])
    assert (m["false_accepts"], m["hours"], m["per_hour"], m["cpu_seconds_per_audio_hour"]) == (3, 3.0, 1.0, 10.0)
    assert m["ci95"][0] < 1.0 < m["ci95"][1]
    with pytest.raises(AuricleError, match="overlap"):
        merge_peers([part(["a"], 2, 1.0, 10.0), part(["a"], 1, 1.0, 10.0)])


def test_peers_without_their_packages_say_what_to_install(tmp_path):
    pytest.importorskip("soundfile")
    try:
        import pymicro_wakeword  # noqa: F401
        pytest.skip("pymicro-wakeword is installed here")
    except ModuleNotFoundError:
        pass
    r = _cli("benchmarks.peers", "--corpus", str(tmp_path), "--engines", "microwakeword", "--out", str(tmp_path))
    assert r.returncode == 2 and "requirements-peers.txt" in r.stderr and "Traceback" not in r.stderr


def test_a_peers_name_the_report_would_not_read_is_refused_before_any_scoring(tmp_path):
    r = _cli("benchmarks.peers", "--corpus", str(tmp_path / "none"), "--name", "mww_3", "--out", str(tmp_path))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "--name mww_3" in lines[0] and "peers" in lines[0]


def test_a_source_can_be_sampled_by_its_first_hours():
    from benchmarks.false_accepts_sources import _first_hours, _source_hours
    from edge.errors import AuricleError

    rows = [(Path(f"{i}.flac"), 1800.0) for i in range(5)]
    assert _first_hours(rows, 1.0) == rows[:2] and _first_hours(rows, 1.1) == rows[:3]
    assert _first_hours(rows, None) == rows
    assert _source_hours(["tts-espeak-ng=0.5"]) == {"tts-espeak-ng": 0.5}
    with pytest.raises(AuricleError, match="SOURCE=HOURS"):
        _source_hours(["tts-espeak-ng"])


@pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("dpkg-query")),
                    reason="needs espeak-ng and a Debian package database")
def test_a_voice_whose_package_is_missing_is_named_before_any_text(tmp_path):
    table = json.loads(_tiny_table(tmp_path).read_text())
    table["sources"][0]["packages"] = ["espeak-ng", "festvox-no-such-voice"]
    path = tmp_path / "missing.json"
    path.write_text(json.dumps(table))
    r = _cli("tools.negative_corpora", "--out", str(tmp_path / "c"), "--table", str(path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "tts-espeak-ng needs festvox-no-such-voice: apt-get install festvox-no-such-voice" in r.stderr
    assert not list((tmp_path / "c").rglob("*.flac"))


def test_syllable_text_is_short_items_and_never_a_keyword_sound():
    texts = list(itertools.islice(syllables(3), 2000))
    items = [i.strip(". ").lower() for t in texts for i in t.split(". ")]
    assert not [t for t in texts if keyword_tokens(t)] and all(1 <= len(t.split(". ")) <= 4 for t in texts)
    assert not {"go", "no", "on", "up", "goh", "noh", "o"} & set(items)      # no o/u sounds that are keywords
    assert {len(i) for i in items} >= {1, 2, 3} and len(set(items)) > 100
