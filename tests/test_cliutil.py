"""The shared command-line pieces: the help formatter, verbosity and logging, deprecated spellings."""
import argparse
import logging

from edge.cliutil import HelpFormatter, add_deprecated_alias, add_verbosity_arguments, setup_logging
from edge.errors import install_hint


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cmd", formatter_class=HelpFormatter, description="line one\n  kept 90%")
    p.add_argument("--bundle", help="bundle folder")
    p.add_argument("--hop", type=float, default=0.1, help="hop in seconds")
    p.add_argument("--sure", action="store_true", help="a switch")
    add_deprecated_alias(p, "--model", "--bundle", "bundle")
    add_verbosity_arguments(p)
    return p


def test_help_shows_only_meaningful_defaults():
    text = _parser().format_help()
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "hop in seconds (default: 0.1)" in text
    assert "line one\n  kept 90%" in text          # description line breaks kept, no doubled percent
    assert "--model" not in text                   # the old spelling is accepted, not advertised


def test_deprecated_spelling_stores_into_new_option(capsys):
    args = _parser().parse_args(["--model", "b1"])
    assert args.bundle == "b1"
    assert "--model is deprecated; use --bundle" in capsys.readouterr().err
    assert _parser().parse_args(["--bundle", "b2"]).bundle == "b2"


def test_verbosity_sets_package_loggers(capsys):
    setup_logging(_parser().parse_args(["-q"]))
    logging.getLogger("edge.some_module").info("hidden")
    logging.getLogger("training").warning("shown")
    err = capsys.readouterr().err
    assert "shown" in err and "hidden" not in err
    setup_logging(_parser().parse_args(["-v"]))
    assert logging.getLogger("converters").isEnabledFor(logging.DEBUG)
    setup_logging(logging.INFO)


def test_install_hint_from_a_checkout_names_the_extra():
    assert "'.[mqtt]'" in install_hint("mqtt")


def test_bundle_argument_old_spelling_still_works_and_extends_a_list(capsys):
    from edge.cliutil import add_bundle_argument

    one = argparse.ArgumentParser(prog="one")
    add_bundle_argument(one)
    assert one.parse_args(["--model", "b1"]).bundle == "b1"
    assert "--model is deprecated; use --bundle" in capsys.readouterr().err
    several = argparse.ArgumentParser(prog="several")
    add_bundle_argument(several, dest="bundles", several=True)
    assert several.parse_args(["--bundle", "a", "--model", "b", "c"]).bundles == ["a", "b", "c"]
    assert several.parse_args([]).bundles is None


def test_number_types_name_the_flag():
    from edge.cliutil import positive, probability

    assert positive(float, "--hop")("0.5") == 0.5 and positive(int, "--n", allow_zero=True)("0") == 0
    for parse, text, why in ((positive(float, "--hop"), "0", "--hop '0' must be > 0"),
                             (positive(float, "--hop"), "nan", "must be finite"),
                             (probability("--threshold"), "1.5", "--threshold '1.5' must be between 0 and 1")):
        try:
            parse(text)
        except argparse.ArgumentTypeError as exc:
            assert why in str(exc)
        else:
            raise AssertionError(f"{text!r} was accepted")
