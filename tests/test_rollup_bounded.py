"""Rollup memory bounded in the number of recipient domains: the busiest judged alone, the rest per provider."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from monitor.rollup import ProviderRejectingDetector, RejectingDetector, RollupEngine
from monitor.rollup.windows import REST, Counts, WindowReader
from monitor.store import Store
from monitor.store.schema import counters

START = 1_772_409_600  # a UTC midnight
AT = START + 86400 + 14 * 3600  # day 2, 14:00
SMALL = 2000  # small domains, each a few attempts a day
PROVIDERS = ("google", "microsoft", "other")


def _rows() -> Iterator[dict[str, object]]:
    """Two days: three busy domains every minute, 2,000 small ones once every 8 hours, and
    in the last half hour every small Microsoft domain refuses its one attempt."""
    busy = (("gmail.com", "google", 10), ("outlook.com", "microsoft", 6), ("corp.example", "other", 4))
    for minute in range(START, AT, 60):
        for domain, provider, n in busy:
            yield {"bucket": minute, "recipient_domain": domain, "provider": provider,
                   "outcome": "delivered", "reason": "", "stream": "", "count": n}
    for i in range(SMALL):
        provider = PROVIDERS[i % 3]
        row = {"recipient_domain": f"s{i}.example", "provider": provider, "stream": ""}
        for k, minute in enumerate(range(START + i * 60 % 28800, AT - 1800, 28800)):
            yield row | {"bucket": minute, "outcome": "delivered", "reason": "", "count": 1 + k % 2}
        if provider == "microsoft":  # the last half hour: one refused attempt each
            yield row | {"bucket": AT - 1800 + 60 * (i % 30), "outcome": "bounced",
                         "reason": "blocked", "count": 1}


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as s:
        with s.engine.begin() as conn:
            conn.execute(counters.insert(), list(_rows()))
        yield s


def _per_provider(table: dict[tuple[str, str], dict[str, Counts]]) -> dict[str, dict[str, Counts]]:
    out: dict[str, dict[str, Counts]] = {}
    for (provider, _domain), windows in table.items():
        per = out.setdefault(provider, {})
        for name, counts in windows.items():
            per[name] = per.get(name, Counts()) + counts
    return out


def test_a_bounded_reader_holds_the_busiest_domains_and_one_rest_per_provider(store: Store) -> None:
    """With 10 domains kept (and one configured), a reader loads and holds a bounded number
    of subjects whatever the number of domains, while each provider's sums stay exact."""
    bounded = WindowReader(max_subjects=10, always=("s7.example",))
    full = WindowReader()
    with store.engine.connect() as conn:
        small = bounded.read(conn, AT)
        large = full.read(conn, AT)
    assert len(large) == SMALL + 3
    kept = bounded.kept()
    assert kept is not None and len(kept) == 11
    assert {"gmail.com", "outlook.com", "corp.example", "s7.example"} <= set(kept)
    assert set(small) == {(p, d) for p, d in large if d in kept} | {(p, REST) for p in PROVIDERS}
    # What stays in memory between evaluations grows with the subjects kept, not all.
    assert bounded.held() * 20 < full.held()
    assert _per_provider(small) == _per_provider(large)


def test_the_provider_level_still_sees_the_rest(store: Store) -> None:
    """Small Microsoft domains refusing everything, none of them judged alone, open a
    provider-rejecting incident, and the rest never opens a domain incident."""
    engine = RollupEngine(store, (RejectingDetector(), ProviderRejectingDetector()), weeks=0,
                          max_domains=10)  # fmt: skip
    result = engine.evaluate(AT)
    assert ("provider_rejecting", "microsoft", "") in result.incidents_opened
    assert not [k for k in result.incidents_opened if k[2] == REST]
    judged = {(s.provider, s.domain) for s in result.subjects if s.kind == "domain_rejecting"}
    assert len(judged) <= 10 and ("microsoft", REST) not in judged
