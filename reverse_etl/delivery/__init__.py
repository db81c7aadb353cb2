"""Delivery: batches → rate limiter → adapter.send → one result per record, with retries.
The one place that talks to destination adapters."""
