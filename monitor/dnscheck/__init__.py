"""DNS posture of our domains (SPF, DKIM, DMARC, MX, MTA-STS, TLS-RPT, BIMI) and DNSBL listings."""
