"""Mailmon: email deliverability observability and monitoring."""

from monitor import native

__version__ = "0.1.0"

native.choose()  # before any compiled module can be imported: monitor.native
