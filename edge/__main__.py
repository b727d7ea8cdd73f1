"""``python -m edge`` is ``python -m edge.listen``."""
from edge.listen import cli

if __name__ == "__main__":
    cli()
