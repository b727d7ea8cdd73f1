"""edge.folderswap: a folder is put in place whole, an existing one replaced, and only dead writers' leftovers
are cleaned up."""
from __future__ import annotations

import os
import subprocess
import sys

from edge import folderswap


def _filled(tmp, out, text):
    (tmp / "a.txt").write_text(text)
    folderswap.install(tmp, out)


def test_install_puts_the_folder_in_place_and_replaces_an_existing_one(tmp_path):
    out = tmp_path / "bundle"
    _filled(folderswap.make_temp(out), out, "one")
    assert (out / "a.txt").read_text() == "one"
    (out / "stale.txt").write_text("of the old folder")
    _filled(folderswap.make_temp(out), out, "two")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"] and (out / "a.txt").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]          # no temporary or old folder left


def test_make_temp_is_beside_the_target_and_names_this_process(tmp_path):
    out = tmp_path / "deep" / "bundle"
    tmp = folderswap.make_temp(out)
    assert tmp.parent == out.parent and tmp.name.startswith(f".bundle{folderswap.TMP_TAG}{os.getpid()}-")


def test_clean_stale_removes_only_folders_of_processes_that_are_gone(tmp_path):
    out = tmp_path / "bundle"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    gone = tmp_path / f".bundle{folderswap.TMP_TAG}{dead}-x1"
    old = tmp_path / f".bundle{folderswap.OLD_TAG}{dead}-x2"
    running = tmp_path / f".bundle{folderswap.TMP_TAG}1-x3"     # pid 1 is always there
    other = tmp_path / f".other{folderswap.TMP_TAG}{dead}-x4"   # another target's
    for folder in (gone, old, running, other):
        folder.mkdir()
    assert sorted(folderswap.clean_stale(out)) == sorted([gone, old])
    assert running.is_dir() and other.is_dir() and not gone.exists() and not old.exists()
