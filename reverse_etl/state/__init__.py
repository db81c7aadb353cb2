"""The engine's records outside the snapshot: run history and the ledger of records not delivered
(history.py, SQLite), one run of a sync at a time (locks.py), and `reverse-etl reset` (reset.py)."""
