"""The project files the destination tests write: the warehouse table every fake's model reads
and a destination file pointing at a fake. (Not a fake: fakes.all_fakes skips it.)"""

from __future__ import annotations

from typing import Any

from conftest import ProjectFixture, toml_value


def people(project: ProjectFixture, rows: int) -> None:
    """`people (id integer, email varchar, name varchar)`: person i is 'person<i>@example.com',
    named 'Person <i>', for i from 1 to `rows`."""
    project.warehouse(f"""
        create or replace table people as
        select i::integer as id, 'person' || i || '@example.com' as email, 'Person ' || i as name
        from range(1, {rows} + 1) t(i)""")


def write_destination(
    project: ProjectFixture,
    name: str,
    values: dict[str, Any],
    *,
    retry_backoff_seconds: float = 0.05,
    **settings: Any,
) -> None:
    """The destination file `name`: `values` (a fake's destination()), then `settings`; a None
    value leaves its key out. Retries wait little so that throttled tests run fast."""
    keys = {**values, "retry_backoff_seconds": retry_backoff_seconds, **settings}
    project.destination(
        name, "\n".join(f"{k} = {toml_value(v)}" for k, v in keys.items() if v is not None)
    )
