"""The stateful property-based test of every destination type (tests/test_state_machine.py)."""
