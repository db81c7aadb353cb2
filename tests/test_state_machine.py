"""Issue 10's stateful property-based test: one rule-based state machine per destination type,
each against its fake (tests/stateful/machine.py says what it does and checks).

CI runs a fixed seed and few, short examples (fakes answering in 0-10 ms, but HubSpot's second
machine at the realistic 0.1-0.3 s); REVERSE_ETL_STATEFUL_PROFILE=long (bench/state_machine.py)
runs many more. A failing example is printed as the steps that reproduce it."""

from __future__ import annotations

import os

import pytest
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
    return type(
        f"{kind.title()}Machine", (SyncMachine,), {"target_class": target, "latency": latency}
    )


# What the machines found (each also a fixed reproduction below). A machine that can meet one
# is an xfail, not strict: CI's fixed seed may miss it, the long profile finds it.
UNREADABLE_2XX = (
    "issue 10 §3, found by the state machine: a row delivered as 'Ann'; the model changes it to "
    "'Bo'; a run whose batch is answered 200 with an HTML page (not applied) reports 'success, "
    "1 delivered'; the next clean run sends nothing and the destination keeps 'Ann' for good"
)
REUSED_IDEMPOTENCY_KEY = (
    "found by the state machine: the webhook's Idempotency-Key is the SHA-256 of the body, so a "
    "record changed 'Ann' → 'Bo' → 'Ann' (three clean runs) sends the first body again with the "
    "first key; a receiver honouring the key (IETF draft: same key and body, the stored answer "
    "is replayed and nothing applied) keeps 'Bo', and the run reports it delivered"
)


def case(
    kind: str,
    examples: int,
    steps: int,
    latency: tuple[float, float] = (0.0, 0.01),
    known: str | None = None,
) -> type:
    test = machine(kind, latency).TestCase
    test.settings = profile(examples, steps)
    return pytest.mark.xfail(strict=False, reason=known)(test) if known else test


TestWebhook = case("webhook", 5, 25, known=f"{UNREADABLE_2XX}; {REUSED_IDEMPOTENCY_KEY}")
TestHubSpot = case("hubspot", 5, 25, known=UNREADABLE_2XX)
TestHubSpotRealisticLatency = case("hubspot", 3, 10, latency=(0.1, 0.3), known=UNREADABLE_2XX)
TestSalesforce = case("salesforce", 5, 25)
TestBraze = case("braze", 5, 25, known=UNREADABLE_2XX)
TestPostgres = case("postgres", 3, 25)


# -- what the machines found, as fixed reproductions -------------------------------------------


def reproduce(kind: str, *steps: str) -> None:
    """Run `steps` on a fresh machine: 'name=X' renames the one row, 'fault=F' injects F for
    the next run, 'run' runs, 'clean' runs clean and checks every invariant."""
    m = machine(kind)()
    try:
        for step in steps:
            if step.startswith("name="):
                m.rows = [("ada0", step.removeprefix("name="))]
                m.write_model()
            elif step.startswith("fault="):
                m.target.inject(step.removeprefix("fault="))
            elif step == "run":
                m.run()
                m.target.clear_faults()
            else:
                m.clean_run()
            m.nothing_created_twice()
    finally:
        m.close()


def known(kind: str, reason: str) -> object:
    return pytest.param(kind, marks=pytest.mark.xfail(strict=False, reason=reason))


@pytest.mark.parametrize(
    "kind",
    [known("webhook", UNREADABLE_2XX), known("hubspot", UNREADABLE_2XX),
     known("braze", UNREADABLE_2XX), "salesforce"],
)  # fmt: skip
def test_an_unreadable_2xx_is_not_a_delivery(kind: str) -> None:
    reproduce(kind, "clean", "name=Bo", "fault=garbage", "run", "clean")


@pytest.mark.parametrize(
    "kind",
    [known("webhook", REUSED_IDEMPOTENCY_KEY), "hubspot", "salesforce", "braze", "postgres"],
)
def test_a_value_that_comes_back_is_sent_again(kind: str) -> None:
    reproduce(kind, "clean", "name=Bo", "clean", "name=Ann", "clean")


def test_the_webhook_fake_can_hold_keys_by_a_case_insensitive_identity() -> None:
    import httpx
    from fakes import webhook

    fake = webhook.Fake(latency=(0, 0), key_identity="case_insensitive")
    fake.start()
    try:
        auth = fake.destination()["headers"]
        for key, name in (("Ada0", "Ann"), ("ada0", "Bo")):
            body = {"sync": "s", "object": None, "operation": "upsert",
                    "records": [{"key": key, "fields": {"name": name}}]}  # fmt: skip
            assert httpx.post(fake.url, json=body, headers=auth).status_code == 200
        assert fake.stored() == {"ada0": {"name": "Bo"}} and fake.created("ADA0") == 1
    finally:
        fake.stop()
