"""The daemon's metrics, in the Prometheus text format (served at /metrics).

prometheus_client writes the exposition format (escaping, histogram buckets, _total suffixes)
exactly as Prometheus reads it; a registry of our own keeps it out of any global state."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..delivery.ratelimit import limiters

CONTENT_TYPE = CONTENT_TYPE_LATEST
OUTCOMES = ("delivered", "rejected", "failed", "invalid")
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200)


class Metrics:
    def __init__(self, scope: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["sync"]
        self.runs = Counter(
            "reverse_etl_runs",
            "Sync runs, by final status",
            ["sync", "status"],
            registry=self.registry,
        )
        self.records = Counter(
            "reverse_etl_records",
            "Records of runs, by outcome",
            ["sync", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "reverse_etl_run_duration_seconds",
            "How long runs took",
            labels,
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.skipped = Counter(
            "reverse_etl_skipped_runs",
            "Scheduled runs not started, by reason",
            ["sync", "reason"],
            registry=self.registry,
        )
        self.running = Gauge(
            "reverse_etl_sync_running", "1 while the sync runs", labels, registry=self.registry
        )
        self.last_success = Gauge(
            "reverse_etl_last_success_timestamp_seconds",
            "When the sync last finished with everything delivered (Unix time)",
            labels,
            registry=self.registry,
        )
        self.problems = Gauge(
            "reverse_etl_project_problems",
            "Problems in the project's files (a broken sync is not scheduled)",
            registry=self.registry,
        )
        self.registry.register(_RateLimits(scope))

    def observe_run(self, result: dict[str, Any], finished_at: float) -> None:
        sync = result["sync"]
        self.runs.labels(sync, result["status"]).inc()
        for outcome in OUTCOMES:
            if result.get(outcome):
                self.records.labels(sync, outcome).inc(result[outcome])
        self.duration.labels(sync).observe(result.get("duration_seconds") or 0.0)
        if result["status"] == "success":
            self.last_success.labels(sync).set(finished_at)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _RateLimits:
    """Read at each scrape from the process's rate limiters (one per destination)."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        waited = CounterMetricFamily(
            "reverse_etl_rate_limit_wait_seconds",
            "Time requests waited for the destination's rate limit",
            labels=["destination"],
        )
        throttled = CounterMetricFamily(
            "reverse_etl_rate_limited_responses",
            "Answers saying the rate limit was exceeded (HTTP 429)",
            labels=["destination"],
        )
        for destination, limiter in sorted(limiters(self.scope).items()):
            waited.add_metric([destination], limiter.waited_seconds)
            throttled.add_metric([destination], limiter.throttled_total)
        yield waited
        yield throttled
