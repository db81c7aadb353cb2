"""reverse-etl destination for the Acme Contacts API: `type = "acme"` in a destination file."""

from .adapter import AcmeDestination, AcmeSettings

__all__ = ["AcmeDestination", "AcmeSettings"]
