"""`reverse-etl daemon`: every sync on its schedule (service.py, scheduler.py), with a status
server (status.py) and Prometheus metrics (metrics.py)."""

from .service import Daemon, run_daemon

__all__ = ["Daemon", "run_daemon"]
