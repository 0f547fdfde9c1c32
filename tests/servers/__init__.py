"""Real servers for tests, run privately on 127.0.0.1: SMTP sinks, Postfix, Exim, Prometheus, Dovecot."""
