"""`reverse-etl daemon`: every sync on its schedule (service.py, scheduler.py), with a status
server (status.py) and Prometheus metrics (metrics.py)."""

from typing import TYPE_CHECKING

from .service import Daemon, run_daemon

__all__ = ["Daemon", "run_daemon"]

if not TYPE_CHECKING:  # 0.3's module of this name, for one release (docs: changelog)
    from .._moved import forward

    __getattr__ = forward(__name__, f"{__name__}.service")
    del forward
