"""The `reverse-etl` command (commands.py), what it shows people (output.py), and the demo."""

from typing import TYPE_CHECKING

from .commands import main

__all__ = ["main"]

if not TYPE_CHECKING:  # 0.3's module of this name, for one release (docs: changelog)
    from .._moved import forward

    __getattr__ = forward(__name__, f"{__name__}.commands")
    del forward
