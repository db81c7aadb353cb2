"""Destination adapters: base.py holds the contract, registry.py finds adapters by `type`."""
