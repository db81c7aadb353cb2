"""`reverse-etl init DIR`: a new project with one example sync and destination."""

from __future__ import annotations

from pathlib import Path

FILES = {
    "config.toml": """\
# Settings of this project; config.example.toml in the reverse-etl repository lists them all.
[warehouse]
type = "duckdb"
path = "warehouse.duckdb"   # your DuckDB warehouse, relative to this folder
""",
    "syncs/example.sql": """\
-- # One sync: the model's columns are the fields sent; aliases rename them.
-- destination = "example"
-- primary_key = "id"
-- mode = "upsert"
select 1 as id, 'hello@example.com' as email
""",
    "destinations/example.toml": """\
type = "webhook"
url = "${EXAMPLE_WEBHOOK_URL}"
headers = { Authorization = "Bearer ${EXAMPLE_TOKEN}" }
batch_size = 100
max_concurrency = 4
""",
    ".gitignore": ".reverse_etl/\n",
}


def scaffold(directory: str) -> list[str]:
    """Write the files that do not exist yet; return those written."""
    root = Path(directory)
    created = []
    for name, text in FILES.items():
        path = root / name
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        created.append(str(path))
    return created
