"""`diff = "warehouse"` against the real PostgreSQL: the snapshot lives in the warehouse, the diff
runs there, only the rows to send leave it, and a kill loses nothing."""

from __future__ import annotations

import signal
import threading

import pytest
from conftest import ProjectFixture
from test_crash_and_concurrency import wait_for
from test_postgres_warehouse import pg  # noqa: F401 (the fixture)

from reverse_etl.project.loader import Project
from reverse_etl.run.pipeline import _bind, _open_state


def users_table(sql, rows: int) -> None:
    sql(f"""create table users as select i as id, 'user' || i || '@example.com' as email,
            (i * 1.5)::numeric(10, 2) as score from generate_series(1, {rows}) i""")


def warehouse_sync(
    project: ProjectFixture, sql, receiver, mode: str = "upsert", **destination
) -> None:
    """A sync diffed in the warehouse; its snapshot in the test's own schema."""
    with (project.root / "config.toml").open("a") as config:
        config.write(f'state_schema = "{sql.schema}"\n')
    project.webhook("hook", receiver.url, **destination)
    project.sync(
        "users",
        {"destination": "hook", "primary_key": "id", "mode": mode, "diff": "warehouse"},
        "select id, email, score from users",
    )


def snapshot_keys(rows_of, sql) -> set[str]:
    """The keys in the warehouse's snapshot (none before the first fold)."""
    table = f"{sql.schema}.snapshot_users"
    if rows_of(f"select to_regclass('{table}')")[0][0] is None:
        return set()
    return {key for (key,) in rows_of(f"select key from {table}")}


@pytest.fixture
def rows_of(pg):  # noqa: F811
    """Read the warehouse: a function from SQL to its rows."""
    import psycopg
    from conftest import postgres_dsn

    connection = psycopg.connect(postgres_dsn(), autocommit=True)
    yield lambda sql: connection.execute(sql).fetchall()
    connection.close()


def test_the_diff_runs_in_the_warehouse_and_only_changes_leave_it(pg, rows_of, receiver):  # noqa: F811
    project, sql = pg
    users_table(sql, 2000)
    warehouse_sync(project, sql, receiver, mode="mirror")
    [plan] = project.cli("plan", "users", "--json").json_lines()
    assert plan["added"] == 2000 and not rows_of(
        f"select 1 from information_schema.tables where table_schema = '{sql.schema}' "
        "and table_name = 'snapshot_users'"
    ), "plan creates nothing"
    [first] = project.cli("run", "users", "--json").json_lines()
    assert first["status"] == "success" and first["delivered"] == 2000, first
    assert len(snapshot_keys(rows_of, sql)) == 2000
    assert receiver.data["7"] == {"id": 7, "email": "user7@example.com", "score": 10.5}

    sql("update users set email = 'new@example.com' where id = 7")
    sql("delete from users where id in (8, 9)")
    sql("insert into users values (5000, 'late@example.com', 1.00)")
    # What leaves the warehouse: the changed and added rows, and the removed keys.
    loaded = Project.open(project.root)
    sync = loaded.sync("users")
    with _open_state(loaded, sync, read_only=False) as state:
        _bind(loaded, sync, state)
        counts = state.diff("mirror", full_resync=False, build_pending=True)
        changes = state.con.execute("select count(*) from __retl_changes").fetchall()[0][0]
        removed = state.con.execute("select count(*) from __retl_removed").fetchall()[0][0]
        moved = state.warehouse.bytes_read
        state.outbox.remove()
    assert (counts.added, counts.changed, counts.removed, counts.unchanged) == (1, 1, 2, 1997)
    assert (changes, removed) == (2, 2)
    assert moved < 2_000, f"{moved} bytes left the warehouse for 4 changes"

    [second] = project.cli("run", "users", "--json").json_lines()
    assert (second["delivered"], second["removed"], second["unchanged"]) == (4, 2, 1997), second
    assert receiver.data["7"]["email"] == "new@example.com" and "8" not in receiver.data
    assert "5000" in receiver.data and snapshot_keys(rows_of, sql) == set(receiver.data)
    [third] = project.cli("run", "users", "--json").json_lines()
    assert third["delivered"] == 0 and third["unchanged"] == 1999, third


def test_modes_full_resync_invalid_keys_and_reset(pg, rows_of, receiver):  # noqa: F811
    project, sql = pg
    users_table(sql, 10)
    warehouse_sync(project, sql, receiver, mode="insert")
    project.cli("run", "users")
    sql("update users set email = 'changed@example.com' where id = 1")
    sql("insert into users values (11, 'eleven@example.com', 0), (12, 'a@b.c', 0), "
        "(12, 'twin@b.c', 0), (null, 'nokey@b.c', 0)")  # fmt: skip
    outcome = project.cli("run", "users", "--json")
    [result] = outcome.json_lines()
    assert outcome.exit_code == 1 and result["status"] == "partial", result
    assert (result["added"], result["changed"], result["invalid"]) == (1, 1, 3), result
    assert result["delivered"] == 1  # insert mode: only the new key, never the changed one
    assert receiver.data["1"]["email"] == "user1@example.com"
    listed = project.cli("rejected", "users", "--json").json_lines()
    errors = sorted(r["error"] for r in listed if r["reason"] == "invalid")
    assert errors[0].startswith("primary key is NULL in row") and "nokey@b.c" in errors[0]
    assert errors[1] == "primary key value appears in 2 rows", errors

    before = sum(receiver.received.values())
    [resync] = project.cli("run", "users", "--full-resync", "--json").json_lines()
    assert resync["delivered"] == 11 and sum(receiver.received.values()) == before + 11
    assert project.cli("reset", "users").exit_code == 0
    assert not rows_of(
        f"select 1 from information_schema.tables where table_schema = '{sql.schema}' "
        "and table_name = 'snapshot_users'"
    ), "reset drops the warehouse's snapshot"
    [after_reset] = project.cli("run", "users", "--json").json_lines()
    assert after_reset["added"] == 11, after_reset


def test_a_kill_mid_run_loses_nothing(pg, rows_of, receiver):  # noqa: F811
    project, sql = pg
    users_table(sql, 3000)
    warehouse_sync(project, sql, receiver, batch_size=50, max_concurrency=2)
    killed = threading.Event()

    def hold_past_2000(body, headers):
        # However slow this process is to send the kill, the run cannot finish first.
        if receiver.records_received() >= 2000:
            killed.wait(60)
        return None

    receiver.intercept = hold_past_2000
    proc = project.popen("run", "users")
    wait_for(lambda: receiver.records_received() >= 1000)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    killed.set()  # the requests held are applied, answered to no one
    wait_for(lambda: receiver.in_flight == 0)
    receiver.intercept = None
    got = receiver.records_received()
    assert 1000 <= got < 3000, "the kill landed mid-run"
    assert not snapshot_keys(rows_of, sql), "nothing was folded into the warehouse yet"
    [plan] = project.cli("plan", "users", "--json").json_lines()
    assert plan["unchanged"] >= got - 100, "plan counts what the killed run had delivered"
    assert plan["added"] == 3000 - plan["unchanged"]
    [rerun] = project.cli("run", "users", "--json").json_lines()
    assert rerun["status"] == "success", rerun
    assert rerun["unchanged"] >= got - 100, "what was acknowledged is folded, not sent again"
    assert rerun["unchanged"] == plan["unchanged"]
    assert len(receiver.data) == 3000 and len(snapshot_keys(rows_of, sql)) == 3000
    twice = [key for key, count in receiver.received.items() if count > 1]
    assert len(twice) <= 100, f"{len(twice)} keys sent twice (at most the batches in flight)"


def test_diff_in_the_warehouse_needs_a_warehouse_that_can_hold_it(project, receiver):
    project.warehouse("create table users as select 1 as id")
    project.webhook("hook", receiver.url)
    project.sync(
        "users",
        {"destination": "hook", "primary_key": "id", "diff": "warehouse"},
        "select id from users",
    )
    outcome = project.cli("validate")
    assert outcome.exit_code == 2 and "syncs/users.sql:3" in outcome.stderr, outcome.stderr
    assert "DuckDB warehouse" in outcome.stderr


# -- isolation and recovery (docs/state.md, "The diff inside the warehouse") -------


def test_two_long_sync_names_sharing_a_prefix_keep_separate_snapshots(pg, rows_of, receiver):  # noqa: F811
    """Names alike in their first 54 characters once shared one table (PostgreSQL cuts names
    to 63 bytes), so one mirror sync's deletes carried the other's rows."""
    from reverse_etl.diff.in_warehouse import snapshot_table

    project, sql = pg
    sql("create table a as select i as id, 'a' || i as v from generate_series(1, 5) i")
    sql("create table b as select i as id, 'b' || i as v from generate_series(101, 105) i")
    with (project.root / "config.toml").open("a") as config:
        config.write(f'state_schema = "{sql.schema}"\n')
    project.webhook("hook", receiver.url)
    prefix = "crm_contacts_for_the_enterprise_accounts_of_the_region_"  # 55 characters
    names = [prefix + "emea", prefix + "apac"]
    for name, table in zip(names, ("a", "b"), strict=True):
        header = {"destination": "hook", "primary_key": "id", "mode": "mirror"}
        project.sync(name, {**header, "diff": "warehouse"}, f"select id, v from {table}")
        [run] = project.cli("run", name, "--json").json_lines()
        assert run["status"] == "success" and run["delivered"] == 5, run
    tables = [snapshot_table(name) for name in names]
    assert len(set(tables)) == 2 and all(len(t.encode()) <= 63 for t in tables), tables
    for table, expected in zip(
        tables, ({"1", "2", "3", "4", "5"}, {"101", "102", "103", "104", "105"}), strict=True
    ):
        keys = {k for (k,) in rows_of(f'select key from {sql.schema}."{table}"')}
        assert keys == expected, (table, keys)
    sql("delete from a where id = 1")
    [emea] = project.cli("run", names[0], "--json").json_lines()
    assert emea["removed"] == 1 and emea["unchanged"] == 4, emea
    deletes = [r for r in receiver.requests if r["operation"] == "delete"]
    assert [key for r in deletes for key in r["keys"]] == ["1"]
    [apac] = project.cli("run", names[1], "--json").json_lines()
    assert apac["unchanged"] == 5 and apac["removed"] == 0, apac


def test_snapshot_table_names_never_collide_and_fit_63_bytes():
    from reverse_etl.diff.in_warehouse import snapshot_table

    long = "x" * 54
    names = ["users", long, long + "a", long + "b", "x" * 100, "x" * 99]
    tables = [snapshot_table(n) for n in names]
    assert len(set(tables)) == len(names)
    assert all(len(t.encode()) <= 63 for t in tables)
    assert tables[0] == "snapshot_users" and tables[1] == "snapshot_" + long  # as in 0.2


@pytest.mark.parametrize("mode", ["upsert", "update", "insert"])
def test_a_row_leaving_the_model_outside_mirror_mode_is_forgotten_without_error(
    pg,  # noqa: F811
    rows_of,
    receiver,
    mode,
):
    """DuckDB 2 refuses a new query while an older result is unfinished: forgetting removed
    keys once ended every later run in a traceback."""
    project, sql = pg
    users_table(sql, 20)
    warehouse_sync(project, sql, receiver, mode=mode)
    assert project.cli("run", "users").exit_code == 0
    sql("delete from users where id in (3, 4)")
    sql("update users set email = 'changed@example.com' where id = 5")
    outcome = project.command("run", "users", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    [run] = outcome.json_lines()
    assert run["status"] == "success" and run["removed"] == 2, run
    assert snapshot_keys(rows_of, sql) == {str(i) for i in range(1, 21)} - {"3", "4"}
    sql("insert into users values (3, 'back@example.com', 1.00)")
    [again] = project.command("run", "users", "--json").json_lines()
    assert again["status"] == "success" and again["added"] == 1 and again["removed"] == 0, again


def test_a_long_named_syncs_table_of_0_2_is_not_used_and_that_is_said(pg, rows_of, receiver):  # noqa: F811
    """0.2 cut a long name's table to 63 bytes, maybe sharing it: the sync starts over in its
    own table, and says so, naming the old one."""
    project, sql = pg
    users_table(sql, 5)
    with (project.root / "config.toml").open("a") as config:
        config.write(f'state_schema = "{sql.schema}"\n')
    project.webhook("hook", receiver.url)
    name = "active_users_of_every_enterprise_account_in_every_region_eu"  # 59 characters
    old = f"snapshot_{name}"[:63]
    sql(f'create table "{old}" (wh_key text, key text, hash text, fields text)')
    sql(f"insert into \"{old}\" values ('1', '1', 'x', null)")
    header = {"destination": "hook", "primary_key": "id", "diff": "warehouse"}
    project.sync(name, header, "select id, email, score from users")
    outcome = project.command("run", name, "--json")
    assert outcome.exit_code == 0, outcome.stderr
    assert old in outcome.stderr and "starts over" in outcome.stderr, outcome.stderr
    [run] = outcome.json_lines()
    assert run["added"] == 5 and run["delivered"] == 5, run
    assert rows_of(f'select count(*) from "{sql.schema}"."{old}"') == [(1,)]  # left as it was
