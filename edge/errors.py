"""The one exception family. Messages name the bad value and the fix; CLIs print one line and exit 2."""
from __future__ import annotations

import sys
from typing import Callable, NoReturn, Sequence

EXIT_USAGE = 2


class AuricleError(Exception):
    """A problem the user can fix: bad input, missing file, wrong setting. One line, with the fix."""


class BundleError(AuricleError):
    """A model bundle is missing, incomplete or does not verify."""


class AudioError(AuricleError):
    """Audio could not be read, captured or decoded."""


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` on stderr (one line) and exit."""
    text = " ".join(str(message).split())
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        prog = spec.name.removesuffix(".__main__")          # python -m edge.listen -> edge.listen
    else:
        prog = sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "auricle"
    print(f"{prog}: error: {text}", file=sys.stderr, flush=True)
    raise SystemExit(code)


# the package's optional dependencies, by import name -> the extra that installs them (setup.cfg)
EXTRA_OF = {**dict.fromkeys(("ai_edge_litert", "sounddevice", "soundfile"), "edge"),
            **dict.fromkeys(("tensorflow", "keras", "librosa", "pydub", "imageio_ffmpeg", "soxr", "matplotlib",
                             "tflite", "threadpoolctl"), "train"),
            "paho": "mqtt", "wyoming": "wyoming"}


def missing_dependency(exc: ModuleNotFoundError) -> str | None:
    """One line naming the missing package and its extra, if ``exc`` is about one of ours; else None."""
    import importlib.util

    root = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(root)
    if extra is None:
        return None
    try:
        if exc.name != root and importlib.util.find_spec(root) is not None:
            return None            # the package is there and lacks a submodule: a version mismatch, not this
    except (ImportError, ValueError):
        pass
    return f"{root} is not installed and this command needs it: {install_hint(extra)}"


def install_hint(extra: str) -> str:
    """How to install an extra: from the checkout this code runs from, or (an installed wheel) by name."""
    from pathlib import Path

    if (Path(__file__).resolve().parent.parent / "setup.py").is_file():
        return f"pip install -e '.[{extra}]' (or '.[all]')"
    return f"pip install 'auricle[{extra}]'"


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> NoReturn:
    """Run a CLI ``main``; turn AuricleError (and a missing optional dependency) into one line + exit 2 and
    Ctrl-C into exit 130."""
    try:
        code = main(argv)
    except AuricleError as exc:
        fail(str(exc))
    except ModuleNotFoundError as exc:
        line = missing_dependency(exc)
        if line is None:
            raise
        fail(line)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    except BrokenPipeError:
        raise SystemExit(0) from None
    raise SystemExit(code or 0)
