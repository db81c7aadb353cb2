"""The `reverse-etl` command (commands.py), what it shows people (output.py), and the demo."""

from .commands import main

__all__ = ["main"]
