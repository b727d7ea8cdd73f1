"""Benchmarks (``python benchmarks/latency.py``); not part of the installed package."""
