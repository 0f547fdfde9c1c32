"""Integration tests: real servers on 127.0.0.1, the CLI run as a user runs it."""
