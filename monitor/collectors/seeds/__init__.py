"""Seed-inbox probes: send to seed mailboxes, read them over IMAP, record the placement."""
