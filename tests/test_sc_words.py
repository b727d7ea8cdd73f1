"""tools/sc_words: a Speech Commands folder as one folder per word (the _unknown_ words too), names kept so
the speaker split does not move; a bad name or word is one line."""
from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import AuricleError
from edge.splits import split_of
from tools.sc_words import link_words


def _corpus(root: Path) -> Path:
    for rel in ("yes/0a7c2a8d_nohash_0.wav", "yes/0b09edd3_nohash_1.wav", "_silence_/3.wav",
                "_unknown_/eight_0c40e715_nohash_0.wav.wav", "_unknown_/bird_0a7c2a8d_nohash_2.wav.wav"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"RIFF")
    return root


def test_every_word_gets_a_folder_and_keeps_its_speaker(tmp_path):
    data = _corpus(tmp_path / "sc")
    counts = link_words(data, tmp_path / "out")
    assert counts == {"yes": 2, "eight": 1, "bird": 1, "_silence_": 1}
    link = tmp_path / "out" / "eight" / "0c40e715_nohash_0.wav"
    assert link.is_symlink() and link.resolve() == (data / "_unknown_" / "eight_0c40e715_nohash_0.wav.wav").resolve()
    from training.data.naming import group_of
    assert split_of(group_of(link.name)) == split_of("0c40e715")
    assert link_words(data, tmp_path / "out") == counts        # again: links left alone


def test_a_word_subset_and_bad_input_are_one_line(tmp_path):
    data = _corpus(tmp_path / "sc")
    assert link_words(data, tmp_path / "sub", ["yes", "bird"]) == {"yes": 2, "bird": 1}
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["bird", "yes"]
    with pytest.raises(AuricleError, match="--words nope"):
        link_words(data, tmp_path / "x", ["nope"])
    (data / "_unknown_" / "oddname.wav").write_bytes(b"RIFF")
    with pytest.raises(AuricleError, match="oddname.wav"):
        link_words(data, tmp_path / "y")
    with pytest.raises(AuricleError, match="_unknown_"):
        link_words(tmp_path / "sub", tmp_path / "z")
