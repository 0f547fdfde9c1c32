"""DNS posture of our domains (SPF, DKIM, DMARC, MX, MTA-STS, TLS-RPT, BIMI) and DNSBL listings.

``posture`` checks one domain, ``dnsbl`` asks the blocklists (their codes are data in
``monitor/data/blocklists.toml``), ``lookup`` is the one resolver both use, ``run`` does a
whole run (stored as ``records``, regressions from their history) for ``mailmon dns
check`` and the ``dns_check`` job, ``metrics`` holds the gauges that job sets.  See
docs/dns.md.
"""
