"""The README's commands stay true: every module and option it shows exists, every command runs from a venv
(never a bare `python`), every example writes to runs/, results/ or a folder the user names (a shipped file
only with --force), and the short ones -- the demos -- run as written and leave the checkout as it was."""
from __future__ import annotations

import configparser
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from edge.shipped import is_shipped

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
VENV_PY = (".venv/bin/python", "~/auricle-venv/bin/python")


def _console_scripts() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return {name.strip(): target.split(":")[0].strip() for name, target in (line.split("=") for line in lines)}


SCRIPTS = _console_scripts()


def _sh_commands() -> list[str]:
    """Every command of the README's ```sh blocks (continuation lines joined, comments dropped, pipelines and
    `&&` lists split), each as its words joined by single spaces."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", README, flags=re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            lex = shlex.shlex(line, posix=True, punctuation_chars=True)
            lex.commenters, lex.wordchars = "#", lex.wordchars + "~-./:=[],%$@+*"
            words: list[str] = []
            for token in [*lex, ";"]:
                if token in ("|", "||", "&&", ";", "&", ">", ">>", "<"):
                    if words:
                        commands.append(" ".join(words))
                    words = [] if token not in (">", ">>", "<") else ["REDIRECT"]
                elif words != ["REDIRECT"]:
                    words.append(token)
    return [c for c in commands if c != "REDIRECT"]


def _invocation(command: str) -> tuple[str, list[str]] | None:
    """``(module, arguments)`` of a command that runs auricle code, else None."""
    words = command.split(" ")
    name = words[0].rsplit("/", 1)[-1]
    if name in SCRIPTS:
        return SCRIPTS[name], words[1:]
    if name.startswith("python") and len(words) > 2 and words[1] == "-m" \
            and words[2].split(".")[0] in ("edge", "training", "converters", "tools", "benchmarks"):
        return words[2], words[3:]
    return None


COMMANDS = [c for c in _sh_commands() if _invocation(c)]


def test_the_readme_shows_its_commands():
    modules = {_invocation(c)[0] for c in COMMANDS}
    assert {"edge.demo", "edge.listen", "training.train", "converters.quantize", "tools.tune_detector",
            "training.ensemble"} <= modules, modules


@pytest.mark.parametrize("command", [c for c in _sh_commands() if re.match(r"(\S*/)?python3?\s", c)])
def test_python_runs_from_a_venv(command):
    exe = command.split()[0]
    assert exe in VENV_PY or command.startswith("python3 -m venv") or "json.tool" in command, \
        f"bare python outside a venv: {command}"


@lru_cache(maxsize=None)
def _help(module: str) -> str:
    r = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, f"{module} --help: {r.stderr[-500:]}"
    return r.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_the_readme_uses_exists(command):
    module, args = _invocation(command)
    text = _help(module)
    for flag in (a.split("=")[0] for a in args if a.startswith("--")):
        assert re.search(rf"(^|[\s,\[]){re.escape(flag)}\b", text), f"{module} has no {flag}: {command}"


@pytest.mark.parametrize("command", [c for c in COMMANDS if "--out" in c.split(" ")])
def test_examples_write_to_runs_results_or_a_shipped_place_only_with_force(command):
    args = command.split(" ")
    out = args[args.index("--out") + 1]
    if out.startswith(("runs/", "results/", "~/")):
        return
    assert is_shipped(REPO / out) and "--force" in args, f"writes {out} without --force: {command}"


@pytest.mark.parametrize("argv", [["edge.demo"], ["edge.demo", "--bundle", "esc10_mobilenet_edge", "--stream",
                                                   "esc10_stream"]], ids=["keywords", "esc10"])
def test_the_demo_commands_run_as_written_and_leave_the_checkout_clean(argv, tmp_path):
    shown = " ".join(["auricle-demo", *argv[1:]])
    assert shown in README
    before = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    r = subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "hits " in r.stdout
    after = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    assert after == before
