"""``python -m tools.pi_check`` (``make pi-check``): see :mod:`tools.pi_check`."""
from tools.pi_check.cli import cli

if __name__ == "__main__":
    cli()
