"""Stage 3, the diff: the model's result against the snapshot of what was delivered, giving the
rows added, changed and removed. base.py is the interface a run uses (DiffState); local.py runs
the diff in the engine's DuckDB; in_warehouse.py runs it inside the warehouse (`diff =
"warehouse"`), with the SQL of sql.py."""
