"""Maintenance scripts, run from the checkout as modules: ``python -m tools.make_firmware``,
``python -m tools.make_sample_stream``, ``python -m tools.tune_detector``, ``python -m tools.readme_results``,
``python -m tools.pi_check`` (``make pi-check``)."""
