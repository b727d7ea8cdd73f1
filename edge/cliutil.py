"""What every command shares: one help formatter, ``--verbose`` / ``--quiet`` with ``logging``, and old flag
spellings that keep working with a deprecation line.

Library code logs through ``logging.getLogger(<package>)`` and never prints; a command calls
:func:`setup_logging` once with what its user asked for.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Sequence

#: one logger per package; modules log through these (or a child: ``logging.getLogger(__name__)``)
PACKAGE_LOGGERS = ("edge", "training", "converters", "tools", "benchmarks")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's own line breaks and shows a default only where it says something: not for
    flags (on/off switches), not for options whose default is None or empty, not where the help already
    names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or not action.option_strings or action.nargs == 0:
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

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: {option_string} is deprecated; use {self.new}", file=sys.stderr, flush=True)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs: Any) -> None:
    """Accept ``old`` as a hidden spelling of ``new`` (same destination), with a deprecation line when used."""
    parser.add_argument(old, dest=dest, action=_Deprecated, new=new, help=argparse.SUPPRESS,
                        default=argparse.SUPPRESS, **kwargs)
