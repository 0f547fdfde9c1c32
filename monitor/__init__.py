"""Mailmon: email deliverability observability and monitoring."""

__version__ = "0.1.0"
