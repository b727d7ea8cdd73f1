"""What every command shares: one help formatter, ``--verbose`` / ``--quiet`` with ``logging``, and old flag
spellings that keep working with a deprecation line; the argparse number types (:func:`positive`,
:func:`probability`) and ``--bundle`` (:func:`add_bundle_argument`).

Library code logs through ``logging.getLogger(<package>)`` and never prints; a command calls
:func:`setup_logging` once with what its user asked for.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import textwrap
from typing import Any, Callable, Sequence, TextIO

#: one logger per package; modules log through these (or a child: ``logging.getLogger(__name__)``)
PACKAGE_LOGGERS = ("edge", "training", "converters", "tools", "benchmarks")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's own line breaks (wrapping only lines too long to fit) and shows a default only
    where it says something: not for flags (on/off switches), not for options whose default is None or
    empty, not where the help already names one."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """The text's own line breaks kept; a line longer than the width (an epilog paragraph) wrapped."""
        return "\n".join(indent + line if len(indent + line) <= width
                         else textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent)
                         for line in text.splitlines())

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or not action.option_strings or action.nargs == 0:
            return text
        if action.default in (None, "", (), [], argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def add_verbosity_arguments(parser: argparse.ArgumentParser, *, quiet_help: str | None = None) -> None:
    """``-v/--verbose`` (debug lines) and ``-q/--quiet`` (warnings and errors only)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", help="also print debug lines")
    group.add_argument("-q", "--quiet", action="store_true",
                       help=quiet_help or "print only warnings and errors (results still go to stdout)")


def log_level(args: argparse.Namespace) -> int:
    if getattr(args, "verbose", False):
        return logging.DEBUG
    if getattr(args, "quiet", False):
        return logging.WARNING
    return logging.INFO


def setup_logging(level: int | argparse.Namespace = logging.INFO) -> None:
    """Send the packages' log records to stderr as bare lines (a command's own results go to stdout)."""
    if isinstance(level, argparse.Namespace):
        level = log_level(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in PACKAGE_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


class _Deprecated(argparse.Action):
    """An old spelling of an option: stores into the new option's destination and says so once on stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str, extend: bool = False,
                 **kwargs: Any) -> None:
        self.new = new
        self.extend = extend
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: {option_string} is deprecated; use {self.new}", file=sys.stderr, flush=True)
        before = getattr(namespace, self.dest, None)
        if self.extend and isinstance(before, list):
            values = before + list(values)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs: Any) -> None:
    """Accept ``old`` as a hidden spelling of ``new`` (same destination), with a deprecation line when used."""
    parser.add_argument(old, dest=dest, action=_Deprecated, new=new, help=argparse.SUPPRESS,
                        default=argparse.SUPPRESS, **kwargs)


def positive(kind: Callable[[str], Any], name: str, *, allow_zero: bool = False) -> Callable[[str], Any]:
    """An argparse ``type`` for a number that must be > 0 (``allow_zero``: >= 0), finite, named ``name``."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} {text!r} is not a number") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{name} {text!r} must be finite")
        if value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"{name} {text!r} must be {'>= 0' if allow_zero else '> 0'}")
        return value
    return parse


def probability(name: str) -> Callable[[str], float]:
    """An argparse ``type`` for a probability between 0 and 1, named ``name``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} {text!r} is not a number") from None
        if not 0.0 <= value <= 1.0:
            raise argparse.ArgumentTypeError(f"{name} {text!r} must be between 0 and 1")
        return value
    return parse


def add_bundle_argument(parser: argparse.ArgumentParser, *, dest: str = "bundle", several: bool = False,
                        help: str | None = None) -> None:
    """``--bundle BUNDLE`` (``several``: one or more, repeatable); the old ``--model`` spelling still works."""
    text = help or ("model bundle folder, or the name of a shipped one (default: the shipped bundle, or "
                    "$AURICLE_BUNDLE)")
    if several:
        parser.add_argument("--bundle", dest=dest, action="extend", nargs="+", metavar="BUNDLE", help=text)
        add_deprecated_alias(parser, "--model", "--bundle", dest, nargs="+", extend=True)
    else:
        parser.add_argument("--bundle", dest=dest, metavar="BUNDLE", help=text)
        add_deprecated_alias(parser, "--model", "--bundle", dest)


def own_stderr() -> TextIO:
    """A log stream on a copy of fd 2, for a server: a model loading for one client holds fd 2 back (the
    TFLite runtime's chatter) while other clients' lines are still being logged."""
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding=sys.stderr.encoding,
                         errors=sys.stderr.errors or "backslashreplace")
    except (OSError, ValueError, AttributeError):
        return sys.stderr
