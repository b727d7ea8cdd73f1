"""``python -m converters`` = ``python converters/quantize.py`` (see :mod:`converters.quantize`)."""
from converters.quantize import main
from edge.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
