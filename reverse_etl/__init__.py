"""reverse-etl: sync warehouse models to the tools your teams use."""

__version__ = "0.1.0"
