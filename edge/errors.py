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


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> NoReturn:
    """Run a CLI ``main``; turn AuricleError into one line + exit 2 and Ctrl-C into exit 130."""
    try:
        code = main(argv)
    except AuricleError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    except BrokenPipeError:
        raise SystemExit(0) from None
    raise SystemExit(code or 0)
