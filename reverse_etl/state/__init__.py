"""The engine's records outside the snapshot: run history (history.py, SQLite), the ledger of
records not delivered and the one place that decides quarantine (ledger.py), one run of a sync
at a time (locks.py), and `reverse-etl reset` (reset.py)."""
