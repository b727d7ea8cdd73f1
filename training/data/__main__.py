"""``python -m training.data DIR``: inspect a dataset (see :mod:`training.data.inspect`)."""
from edge.errors import run_cli
from training.data.inspect import main

run_cli(main)
