"""One run of a sync, end to end: the pipeline of stages (pipeline.py) and the safety rails that
hold a run that looks like a broken model (rails.py)."""

from .pipeline import RunResult, plan_sync, run_sync, shutdown

__all__ = ["RunResult", "plan_sync", "run_sync", "shutdown"]
