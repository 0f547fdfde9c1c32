"""The long-running service: HTTP app and log followers."""
