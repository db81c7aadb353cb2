"""One destination type as the state machine sees it: its fake, the sync pointed at it, and
what the fake holds, created and was asked to delete, by the vendor's key identity.

The model is always the warehouse table `m (k varchar, name varchar)`; each target maps it to
the columns its destination wants (key column, one value column)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from typing import Any

import psycopg
import psycopg.sql
from fakes import braze, hubspot, postgres, salesforce, webhook
from fakes.base import Fault

# Faults the HTTP fakes take (fakes.base.Fault). `applied`: the vendor applies the request
# although the client never reads its answer (a create that lands after the client's timeout).
HTTP_FAULTS: dict[str, dict[str, Any]] = {
    "429": {"kind": "status", "status": 429},
    "429_retry_after": {"kind": "status", "status": 429, "headers": {"Retry-After": "1"}},
    "503": {"kind": "status", "status": 503},
    "500": {"kind": "status", "status": 500, "body": b"Internal Server Error"},
    "hang": {"kind": "hang"},
    "hang_applied": {"kind": "hang", "applied": True},
    "drop": {"kind": "drop"},
    "drop_applied": {"kind": "drop", "applied": True},
    "garbage": {"kind": "garbage"},
    "truncated": {"kind": "truncated"},
    "late": {"kind": "late"},
}


class Target:
    type: str
    identity_rule = "exact"  # or "case_insensitive": the vendor's key identity
    faults: tuple[str, ...] = (*HTTP_FAULTS, "partial")
    settling_seconds = 0.05  # after a kill: requests already received are applied by then

    def __init__(self, latency: tuple[float, float], seed: int) -> None:
        self.latency, self.seed = latency, seed
        # The destination's timeout_seconds: well above an answer's time even on a loaded
        # machine (a clean run must not time out); hangs and late answers last longer.
        self.timeout = 0.75 + 5 * latency[1]

    def identity(self, key: str) -> str:
        return key.lower() if self.identity_rule == "case_insensitive" else key

    # What each target defines (start sets self.fake; the rest defaults to the fake's own).
    def start(self) -> None: ...
    def header(self) -> dict[str, Any]: ...  # type: ignore[empty-body]
    def model_sql(self) -> str: ...  # type: ignore[empty-body]

    def held(self) -> dict[str, list[str]]:
        """Identity → the `name` of each record holding it (two: created twice)."""
        raise NotImplementedError

    def creates(self) -> Counter[str]:
        """Identity → records created through the API."""
        raise NotImplementedError

    def deletes(self) -> list[str]:
        """Identities named by delete requests, in order (live records for id-based APIs)."""
        raise NotImplementedError

    def stop(self) -> None:
        self.fake.stop()  # type: ignore[attr-defined]

    def destination(self) -> dict[str, Any]:
        return self.fake.destination()  # type: ignore[attr-defined,no-any-return]

    def requests_with_records(self) -> int:
        return len(self.fake.batch_sizes())  # type: ignore[attr-defined]

    # Faults for the next run.
    def inject(self, name: str) -> None:
        spec = dict(HTTP_FAULTS[name])
        if spec["kind"] in ("hang", "late"):
            spec["seconds"] = self.timeout + 0.3
        self.fake.inject(Fault(**spec))  # type: ignore[attr-defined]

    def fail_record(self, key: str) -> None:
        raise NotImplementedError

    def clear_faults(self) -> None:
        fake = self.fake  # type: ignore[attr-defined]
        with fake._fault_lock:
            fake._faults.clear()

    def request_count(self) -> int:
        return len(self.fake.requests)  # type: ignore[attr-defined]


class WebhookTarget(Target):
    type = "webhook"
    identity_rule = "case_insensitive"

    def start(self) -> None:
        self.fake = webhook.Fake(
            latency=self.latency, seed=self.seed, key_identity=self.identity_rule
        )
        self.fake.start()

    def destination(self) -> dict[str, Any]:
        return {**self.fake.destination(), "key_identity": self.identity_rule}

    def header(self) -> dict[str, Any]:
        return {"primary_key": "k"}

    def model_sql(self) -> str:
        return "select k, name from m"

    def held(self) -> dict[str, list[str]]:
        return {ident: [fields.get("name")] for ident, fields in self.fake.stored().items()}

    def creates(self) -> Counter[str]:
        with self.fake._lock:
            return Counter(self.fake.creates)

    def deletes(self) -> list[str]:
        found = []
        with self.fake._lock:
            for request in self.fake.requests:
                try:
                    body = json.loads(request["body"])
                except ValueError:
                    continue
                if isinstance(body, dict) and body.get("operation") == "delete":
                    found += [self.identity(r["key"]) for r in body["records"]]
        return found

    def fail_record(self, key: str) -> None:
        self.fake.fail_keys[self.identity(key)] = "refused by the state machine"

    def clear_faults(self) -> None:
        super().clear_faults()
        self.fake.fail_keys.clear()


class _HubSpot(hubspot.Fake):
    """Logs the identity of each record archived (archive names record ids)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.archived: list[str] = []

    def _archive(self, obj: Any, inputs: list[dict], payload: dict) -> tuple[int, dict]:
        for item in inputs:
            props = obj.records.get(str(item.get("id")))
            if props and props.get("warehouse_id"):
                self.archived.append(self.identity("warehouse_id", props["warehouse_id"]))
        return super()._archive(obj, inputs, payload)


class HubSpotTarget(Target):
    type = "hubspot"
    identity_rule = "case_insensitive"

    def start(self) -> None:
        # A window far above what the machine sends: its 429s come from injected faults.
        self.fake = _HubSpot(window_limit=100_000, latency=self.latency, seed=self.seed)
        self.fake.start()

    def header(self) -> dict[str, Any]:
        return {"primary_key": "warehouse_id", "object": "contacts"}

    def model_sql(self) -> str:
        return "select k as warehouse_id, name as firstname from m"

    def held(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for props in self.fake.records("contacts").values():
            if props.get("warehouse_id"):
                ident = self.identity(props["warehouse_id"])
                found.setdefault(ident, []).append(props.get("firstname", ""))
        return found

    def creates(self) -> Counter[str]:
        with self.fake._lock:
            return Counter({i: n for (_, prop, i), n in self.fake.creates.items()
                            if prop == "warehouse_id"})  # fmt: skip

    def deletes(self) -> list[str]:
        with self.fake._lock:
            return list(self.fake.archived)

    def fail_record(self, key: str) -> None:
        self.fake.fail_ids[key] = ("VALIDATION_ERROR", "refused by the state machine")

    def clear_faults(self) -> None:
        super().clear_faults()
        self.fake.fail_ids.clear()


class _Salesforce(salesforce.Fake):
    """Logs the identity of each record deleted (deletes name record Ids)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deleted_keys: list[str] = []

    def _delete(self, ids: list[str], all_or_none: bool) -> list[Any]:
        for record_id in ids:
            record = self.records["Contact"].get(record_id)
            if record and record.get("Warehouse_Id__c") is not None:
                key = record["Warehouse_Id__c"]
                self.deleted_keys.append(self.identity("Contact", "Warehouse_Id__c", key))
        return super()._delete(ids, all_or_none)


class SalesforceTarget(Target):
    type = "salesforce"
    identity_rule = "case_insensitive"

    def start(self) -> None:
        self.fake = _Salesforce(latency=self.latency, seed=self.seed)
        self.fake.start()

    def header(self) -> dict[str, Any]:
        return {"primary_key": "Warehouse_Id__c", "object": "Contact"}

    def model_sql(self) -> str:
        return 'select k as "Warehouse_Id__c", name as "LastName" from m'

    def held(self) -> dict[str, list[str]]:
        return {
            ident: [r.get("LastName") for r in records]
            for ident, records in self.fake.held().items()
        }

    def creates(self) -> Counter[str]:
        with self.fake.lock:
            return Counter({i: n for (_, field, i), n in self.fake.creates.items()
                            if field == "Warehouse_Id__c"})  # fmt: skip

    def deletes(self) -> list[str]:
        with self.fake.lock:
            return list(self.fake.deleted_keys)

    def fail_record(self, key: str) -> None:
        self.fake.record_errors[key] = ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "refused by the test")

    def clear_faults(self) -> None:
        super().clear_faults()
        self.fake.record_errors.clear()


class _Braze(braze.Fake):
    """Counts the user profiles /users/track creates."""

    def __init__(self) -> None:
        super().__init__()
        self.created: Counter[str] = Counter()

    def _apply(self, user: dict[str, Any]) -> None:
        if user["external_id"] not in self.users and not user.get("_update_existing_only"):
            self.created[user["external_id"]] += 1
        super()._apply(user)


class BrazeTarget(Target):
    type = "braze"
    faults = tuple(HTTP_FAULTS)  # the fake has no per-record refusal to inject

    def start(self) -> None:
        self.fake = _Braze()  # Braze's fake answers at once (it has no latency setting)
        self.fake.start()

    def header(self) -> dict[str, Any]:
        return {"primary_key": "external_id"}

    def model_sql(self) -> str:
        return "select k as external_id, name as first_name from m"

    def held(self) -> dict[str, list[str]]:
        return {i: [attrs.get("first_name")] for i, attrs in self.fake.stored().items()}

    def creates(self) -> Counter[str]:
        with self.fake._lock:
            return Counter(self.fake.created)

    def deletes(self) -> list[str]:
        with self.fake._lock:
            return [
                i
                for r in self.fake.requests
                if r["path"] == braze.DELETE and isinstance(r["body"], dict)
                for i in r["body"].get("external_ids") or []
            ]


# The PostgreSQL target: a table keyed by text (exact identity), with row-level triggers logging
# each row written: INSERT (created), UPDATE, DELETE.
PG_TABLE_SQL = """
CREATE TABLE {schema}.items (k text PRIMARY KEY, name text);
CREATE TABLE {schema}.item_log (n bigserial PRIMARY KEY, operation text, k text);
CREATE FUNCTION {schema}.log_item() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('INSERT INTO %I.item_log (operation, k) VALUES ($1, $2)', TG_TABLE_SCHEMA)
        USING TG_OP, CASE WHEN TG_OP = 'DELETE' THEN OLD.k ELSE NEW.k END;
    RETURN NULL;
END $$;
CREATE TRIGGER log_items AFTER INSERT OR UPDATE OR DELETE ON {schema}.items
    FOR EACH ROW EXECUTE FUNCTION {schema}.log_item();
"""


class PostgresTarget(Target):
    """A database has no HTTP faults; its own: the table locked by another transaction past
    the statement timeout (`timeout_seconds`), so that writes time out and are retried (reads,
    such as the machine's own, go on)."""

    type = "postgres"
    faults = ("lock",)
    _holder: threading.Thread | None = None

    def start(self) -> None:
        self.fake = postgres.Fake()
        self.fake.schema = f"reverse_etl_sm_{uuid.uuid4().hex[:10]}"
        self.fake.start()
        self.fake.query(PG_TABLE_SQL)

    def destination(self) -> dict[str, Any]:
        return {**self.fake.destination(), "table": f"{self.fake.schema}.items"}

    def header(self) -> dict[str, Any]:
        return {"primary_key": "k"}

    def model_sql(self) -> str:
        return "select k, name from m"

    def held(self) -> dict[str, list[str]]:
        return {k: [name] for k, name in self.fake.query("SELECT k, name FROM {schema}.items")}

    def _log(self, operation: str) -> list[str]:
        rows = self.fake.query(
            "SELECT k FROM {schema}.item_log WHERE operation = %s ORDER BY n", operation
        )
        return [k for (k,) in rows]

    def creates(self) -> Counter[str]:
        return Counter(self._log("INSERT"))

    def deletes(self) -> list[str]:
        return self._log("DELETE")

    def requests_with_records(self) -> int:
        (count,) = self.fake.query("SELECT count(*) FROM {schema}.item_log")[0]
        return int(count)  # rows written stand for requests: none means nothing was sent

    def request_count(self) -> int:
        return self.requests_with_records()

    def inject(self, name: str) -> None:
        """Any fault here is the lock, held about as long as the next run's 3 attempts."""
        conn = psycopg.connect(self.fake.dsn)
        table = psycopg.sql.SQL("LOCK TABLE {}.items IN EXCLUSIVE MODE")
        conn.execute(table.format(psycopg.sql.Identifier(self.fake.schema)))

        def release() -> None:
            time.sleep(3 * self.timeout)
            conn.rollback()
            conn.close()

        self._holder = threading.Thread(target=release, daemon=True)
        self._holder.start()

    def clear_faults(self) -> None:
        if self._holder is not None:
            self._holder.join()
            self._holder = None


TARGETS: dict[str, type[Target]] = {
    t.type: t for t in (WebhookTarget, HubSpotTarget, SalesforceTarget, BrazeTarget, PostgresTarget)
}
