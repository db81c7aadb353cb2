"""Issue 10's stateful property-based test: one rule-based state machine per destination type,
each against its fake (tests/stateful/machine.py says what it does and checks).

CI runs a fixed seed and few, short examples (fakes answering in 0-10 ms, but HubSpot's second
machine at the realistic 0.1-0.3 s); REVERSE_ETL_STATEFUL_PROFILE=long (bench/state_machine.py)
runs many more. A failing example is printed as the steps that reproduce it."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings
from stateful.machine import SyncMachine
from stateful.targets import TARGETS, Target

PROFILE = os.environ.get("REVERSE_ETL_STATEFUL_PROFILE", "ci")
LONG = PROFILE == "long"


def profile(examples: int, steps: int) -> settings:
    return settings(
        derandomize=not LONG,
        database=None,
        max_examples=examples * (10 if LONG else 1),
        stateful_step_count=steps * (3 if LONG else 1),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        # Shrinking replays real runs: minutes. The long profile shrinks a failure to its
        # shortest reproduction; CI reports the example found.
        phases=[Phase.explicit, Phase.generate, *([Phase.shrink] if LONG else [])],
    )


def machine(kind: str, latency: tuple[float, float] = (0.0, 0.01)) -> type[SyncMachine]:
    target: type[Target] = TARGETS[kind]
    return type(f"{kind.title()}Machine", (SyncMachine,), {"target_class": target, "latency": latency})


TestWebhook = machine("webhook").TestCase
TestWebhook.settings = profile(examples=3, steps=30)
TestHubSpot = machine("hubspot").TestCase
TestHubSpot.settings = profile(examples=3, steps=30)
TestHubSpotRealisticLatency = machine("hubspot", latency=(0.1, 0.3)).TestCase
TestHubSpotRealisticLatency.settings = profile(examples=1, steps=10)
TestSalesforce = machine("salesforce").TestCase
TestSalesforce.settings = profile(examples=3, steps=30)
TestBraze = machine("braze").TestCase
TestBraze.settings = profile(examples=3, steps=30)
TestPostgres = machine("postgres").TestCase
TestPostgres.settings = profile(examples=3, steps=30)
