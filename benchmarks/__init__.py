"""Benchmarks: ``python -m benchmarks.latency`` (see its --help).

Importing the package sets two defaults before numpy or TensorFlow are imported, here and, through the
environment, in every child process; a user's own setting wins. ``OPENBLAS_NUM_THREADS=1``: the frontend's
small matrix products run several times slower with threaded OpenBLAS on small machines (as in
``edge.listen``). ``TF_CPP_MIN_LOG_LEVEL=2``: TensorFlow's start-up chatter. Importing :mod:`training`
sets TensorFlow's kernel choice (see there).
"""
import os

import training  # noqa: F401  (TF_ENABLE_ONEDNN_OPTS, before any TensorFlow import)

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
