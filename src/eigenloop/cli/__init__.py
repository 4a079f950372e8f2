"""The `eigenloop` command line."""

from eigenloop.cli.main import app

__all__ = ["app"]
