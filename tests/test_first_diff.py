"""A first diff (nothing delivered yet) checks that integer keys are distinct in a bitmap of
their numbers, and other keys in DuckDB's hash aggregate: both must find exactly the repeated
keys, wherever their numbers fall (inside the bitmap, below it, beyond it)."""

from __future__ import annotations

import pytest

# 67108864 is 2^26, the first number beyond the bitmap under the default memory_limit
DISTINCT = [0, 7, 42, 67108863, -3, 67108865, 134217728, 1099511627776]
REPEATED = {
    "inside the bitmap": [5, 67108862],
    "below it": [-1],
    "beyond it": [67108864, 1099511627777],
}


@pytest.mark.parametrize("key_type", ["bigint", "varchar"])
@pytest.mark.parametrize("where", sorted(REPEATED))
def test_a_first_diff_finds_exactly_the_repeated_keys(project, receiver, key_type, where):
    repeated = REPEATED[where]
    ids = [*DISTINCT, *repeated, *repeated, None]
    values = ", ".join(f"({'null' if i is None else i}, 'row {n}')" for n, i in enumerate(ids))
    project.warehouse(
        f"create table people as select id::{key_type} as id, name "
        f"from (values {values}) t(id, name)"
    )
    project.webhook("hook", receiver.url)
    project.sync(
        "people", {"destination": "hook", "primary_key": "id"}, "select id, name from people"
    )
    invalid = 2 * len(repeated) + 1
    plan = project.cli("plan", "people", "--json").json_lines()[0]
    assert (plan["rows"], plan["added"], plan["invalid"]) == (len(ids), len(DISTINCT), invalid)

    outcome = project.cli("run", "people", "--json")
    result = outcome.json_lines()[0]
    assert (result["added"], result["invalid"]) == (len(DISTINCT), invalid), outcome.stderr
    assert sorted(receiver.data) == sorted(str(i) for i in DISTINCT)
    listed = project.cli("rejected", "people", "--json").json_lines()
    assert {r["key"]: r["error"] for r in listed if r["key"] is not None} == {
        str(i): "primary key value appears in 2 rows" for i in repeated
    }
    assert [r["key"] for r in listed].count(None) == 1
