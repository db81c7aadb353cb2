"""Salesforce sObjects, looked up with SOQL (soql.py)."""

from .adapter import SalesforceDestination, SalesforceSettings

__all__ = ["SalesforceDestination", "SalesforceSettings"]
