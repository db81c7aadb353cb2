"""The destination contract suite: the checks every built-in adapter passes, for any adapter.

Each check writes a real project (a DuckDB warehouse with the table `people`, a destination
file pointing at the fake, a sync), runs the CLI as users run it, and asserts on what the fake
then holds and received. Subclass DestinationContract in a test module (its name must start
with `Test`, as pytest collects it) with the reverse_etl.testing plugin enabled:

    class TestAcmeContract(DestinationContract):
        destination_class = AcmeDestination   # the class your entry point names
        fake_class = AcmeFake                 # a reverse_etl.testing.Fake of the vendor's API

To run the suite over several fakes, override the `fake` fixture (parametrised) and the
`adapter` fixture (from the fake), as the project's own tests do for the built-in types."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest

from ..destinations.base import Destination
from ..destinations.registry import adapter_class
from .fake import Fake, running
from .project import ProjectFolder

PLUGIN = "reverse_etl.testing"


class DestinationContract:
    """The shared contract checks, as test methods inherited by a `Test...` subclass.

    Set on the subclass:
        destination_class     the adapter class (a Destination subclass)
        fake_class            its fake (a Fake subclass), constructed with no arguments
        destination_settings  extra destination-file keys for every check (e.g. a shorter
                              timeout_seconds); the fake's destination() comes first, these
                              override it, and each check's own settings override these
    """

    destination_class: ClassVar[type[Destination]]
    fake_class: ClassVar[type[Fake]]
    destination_settings: ClassVar[Mapping[str, Any]] = {}

    # -- fixtures a subclass may override ----------------------------------------------------

    @pytest.fixture(autouse=True)
    def _plugin_enabled(self, request: pytest.FixtureRequest) -> None:
        if not request.config.pluginmanager.has_plugin(PLUGIN):
            pytest.fail(
                f'the {PLUGIN} plugin is not enabled: add `pytest_plugins = ["{PLUGIN}"]` to '
                "the conftest.py at the root of your tests",
                pytrace=False,
            )

    @pytest.fixture
    def fake(self) -> Iterator[Fake]:
        """The fake under test, started, and stopped after the check."""
        yield from running(self.fake_class())

    @pytest.fixture
    def adapter(self, fake: Fake) -> type[Destination]:
        """The adapter class under test: `destination_class`."""
        return self.destination_class

    # -- the checks --------------------------------------------------------------------------

    def test_the_registry_finds_the_adapter_by_its_type(
        self, reverse_etl_project: ProjectFolder, fake: Fake, adapter: type[Destination]
    ) -> None:
        """Proves that the engine finds this adapter under the fake's type name (built in, or
        installed through the entry-point group `reverse_etl.destinations`) and that
        `reverse-etl destinations` describes it: its settings model loads."""
        assert adapter.type == fake.type, "the adapter's type is the fake's"
        found = adapter_class(fake.type)
        assert found is adapter, f"type {fake.type!r} loads {found!r}, not {adapter!r}"
        outcome = reverse_etl_project.cli("destinations", "--json")
        described = {item["type"]: item for item in outcome.json_lines()}
        assert fake.type in described, outcome.stderr
        assert described[fake.type]["max_batch_size"] == adapter.max_batch_size

    def test_each_record_is_delivered_once_within_the_batch_limit(
        self, reverse_etl_project: ProjectFolder, fake: Fake, adapter: type[Destination]
    ) -> None:
        """Proves one result per record and the vendor's batch limit kept: 2.5 batches' worth
        of rows, asking for 10 times the limit, all arrive, each once, no request larger than
        the vendor accepts, with the values the warehouse holds. The adapter's max_batch_size
        must be the vendor's limit (`batch_limit`); None only for a destination without one."""
        cap = adapter.max_batch_size
        if fake.batch_limit:
            assert cap == fake.max_batch_size, (
                f"the vendor takes at most {fake.max_batch_size} records a request: the adapter "
                f"must declare max_batch_size = {fake.max_batch_size} (it declares {cap})"
            )
        else:
            assert cap in (None, fake.max_batch_size), "the adapter's cap is the fake's"
        rows = 2 * fake.max_batch_size + fake.max_batch_size // 2
        # Asking for more than the vendor allows: the adapter's cap must win. (Without a cap,
        # as for the webhook, the batch size asked for is the limit.)
        asked = 10 * fake.max_batch_size if cap else fake.max_batch_size
        self.prepare(reverse_etl_project, fake, rows=rows, batch_size=asked)
        result = run(reverse_etl_project)
        assert result["status"] == "success" and result["delivered"] == rows, result
        assert sorted(fake.stored()) == sorted(fake.key_of(i) for i in range(1, rows + 1))
        sizes = fake.batch_sizes()
        assert max(sizes) <= fake.max_batch_size and sum(sizes) == rows, sizes
        stored = fake.stored()[fake.key_of(7)]
        assert stored["email"] == "person7@example.com" and stored["name"] == "Person 7"

    def test_only_changes_are_sent_again(
        self, reverse_etl_project: ProjectFolder, fake: Fake
    ) -> None:
        """Proves the second run sends one request with the one changed record, and that the
        destination applies the change (an update through the adapter's upsert)."""
        self.prepare(reverse_etl_project, fake)
        run(reverse_etl_project)
        before = len(fake.batch_sizes())
        reverse_etl_project.warehouse("update people set name = 'Renamed' where id = 3")
        result = run(reverse_etl_project)
        assert result["delivered"] == 1 and fake.batch_sizes()[before:] == [1], result
        assert fake.stored()[fake.key_of(3)]["name"] == "Renamed"

    def test_too_many_requests_is_waited_out(
        self, reverse_etl_project: ProjectFolder, fake: Fake
    ) -> None:
        """Proves the vendor's "too many requests" answer is raised as Throttled (not a
        failure): two throttled answers, then every record delivered, with no retry of a
        failure allowed (max_retries = 0). Skipped for a vendor without one
        (`rate_limited = False`)."""
        if not fake.rate_limited:
            pytest.skip(f"{fake.type} has no rate-limit answer")
        # No retries allowed: an adapter raising the 429 as a failure (Retryable) fails the
        # records, where Throttled waits them out without counting against max_retries.
        self.prepare(
            reverse_etl_project, fake, rows=30, batch_size=10, max_concurrency=1, max_retries=0
        )
        fake.throttle(2)
        result = run(reverse_etl_project)
        assert result["status"] == "success" and result["delivered"] == 30, result
        assert fake.throttled() == 2
        assert len(fake.stored()) == 30

    def test_refused_credentials_stop_the_run(
        self, reverse_etl_project: ProjectFolder, fake: Fake
    ) -> None:
        """Proves refused credentials are raised as CredentialsError: the run ends "error"
        (exit 2) saying the credentials were refused, after at most one request with records,
        and nothing is stored."""
        self.prepare(
            reverse_etl_project,
            fake,
            rows=30,
            batch_size=10,
            max_concurrency=1,
            good_credentials=False,
        )
        outcome = reverse_etl_project.cli("run", "people", "--json")
        [result] = outcome.json_lines()
        assert outcome.exit_code == 2 and result["status"] == "error", result
        assert "refused the credentials" in result["error"], result
        assert result["delivered"] == 0 and result["failed"] == 30
        assert len(fake.batch_sizes()) <= 1  # nothing more after the first refusal
        assert fake.stored() == {}

    def test_a_bad_record_is_rejected_alone_with_the_vendors_message(
        self, reverse_etl_project: ProjectFolder, fake: Fake
    ) -> None:
        """Proves a record the vendor refuses is answered Rejected with the vendor's message,
        alone and as itself: of 24 rows, in batches of an even size, the 13th is refused; the
        others are delivered, the run is "partial" (exit 1), and `reverse-etl rejected` lists
        that record, and no other, with that message. (In a batch of even size every place
        has another opposite it: results in reverse or shifted order pin the refusal on
        another record, and the check fails.) Skipped for a vendor that refuses no record on
        its own (`invalid_email_error = None`)."""
        if fake.invalid_email_error is None:
            pytest.skip(f"{fake.type} refuses no record on its own")
        even = max(2, min(24, fake.max_batch_size) // 2 * 2)
        self.prepare(reverse_etl_project, fake, rows=24, batch_size=even)
        reverse_etl_project.warehouse("update people set email = 'not-an-email' where id = 13")
        outcome = reverse_etl_project.cli("run", "people", "--json")
        [result] = outcome.json_lines()
        assert outcome.exit_code == 1 and result["status"] == "partial", result
        assert result["delivered"] == 23 and result["rejected"] == 1, result
        stored = fake.stored()
        assert fake.key_of(13) not in stored and len(stored) == 23, sorted(stored)
        listed = reverse_etl_project.cli("rejected", "people", "--json").json_lines()
        assert [entry["key"] for entry in listed] == [fake.key_of(13)], (
            "the refusal is pinned on another record: are the results in the records' order?",
            listed,
        )
        assert listed[0]["reason"] == "rejected", listed
        assert fake.invalid_email_error.lower() in listed[0]["error"].lower(), listed

    def test_sending_an_upsert_again_is_harmless(
        self, reverse_etl_project: ProjectFolder, fake: Fake
    ) -> None:
        """Proves an upsert sent twice (`run --full-resync` sends every row again) succeeds
        and leaves the destination as it was: no duplicate, no error."""
        self.prepare(reverse_etl_project, fake, rows=15)
        run(reverse_etl_project)
        before = fake.stored()
        result = run(reverse_etl_project, "--full-resync")
        assert result["status"] == "success" and result["delivered"] == 15, result
        assert fake.stored() == before

    def test_deletes_where_supported(
        self, reverse_etl_project: ProjectFolder, fake: Fake, adapter: type[Destination]
    ) -> None:
        """Proves rows gone from the model are deleted at the destination in mode "mirror",
        and no other. Skipped for a destination that does not delete (its adapter must then
        not declare the operation)."""
        deletes = "delete" in adapter.operations
        assert deletes == fake.supports_delete, (
            f"the adapter {'declares' if deletes else 'does not declare'} deletes; the fake "
            f"says supports_delete = {fake.supports_delete}"
        )
        if not fake.supports_delete:
            pytest.skip(f"{fake.type} does not delete")
        self.prepare(reverse_etl_project, fake, rows=12, mode="mirror")
        run(reverse_etl_project)
        reverse_etl_project.warehouse("delete from people where id in (4, 5)")
        result = run(reverse_etl_project)
        assert result["status"] == "success" and result["removed"] == 2, result
        kept = sorted(fake.key_of(i) for i in range(1, 13) if i not in (4, 5))
        assert sorted(fake.stored()) == kept

    def test_check_tests_the_credentials_without_sending_data(
        self, reverse_etl_project: ProjectFolder, fake: Fake
    ) -> None:
        """Proves `reverse-etl check` (the adapter's check()) accepts good credentials, refuses
        bad ones with exit 2 saying so, and sends no record either way."""
        self.prepare(reverse_etl_project, fake)
        good = reverse_etl_project.cli("check", "dest", "--json")
        assert good.exit_code == 0, good
        [answer] = good.json_lines()
        assert answer["destination"] == "dest" and answer["ok"] is True, answer
        self.prepare(reverse_etl_project, fake, good_credentials=False)
        bad = reverse_etl_project.cli("check", "dest")
        assert bad.exit_code == 2 and "refused the credentials" in bad.stderr, bad
        assert fake.stored() == {} and fake.batch_sizes() == []

    # -- helpers -----------------------------------------------------------------------------

    def prepare(
        self,
        project: ProjectFolder,
        fake: Fake,
        rows: int = 10,
        mode: str = "upsert",
        good_credentials: bool = True,
        **settings: Any,
    ) -> None:
        """The project of a check: `rows` people in the warehouse, the destination `dest`
        pointing at the fake (retries 0.05 s apart, so throttled checks run fast), and the
        sync `people` in `mode`."""
        project.people(rows)
        values = {
            **fake.destination(good_credentials),
            "retry_backoff_seconds": 0.05,
            **self.destination_settings,
            **settings,
        }
        project.destination("dest", values)
        header = {"destination": "dest", "mode": mode, **fake.sync_header()}
        project.sync("people", header, fake.model_sql())


def run(project: ProjectFolder, *args: str) -> dict[str, Any]:
    """`reverse-etl run people --json ARGS`: the run's fields."""
    [result] = project.cli("run", "people", "--json", *args).json_lines()
    return result
