"""MX lookups off the parsing path: concurrent, cached when negative, skipped when the
relay host already names the provider; events wait for their provider, counted once."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import sqlalchemy as sa
from dns_server import DNSServer
from factories import Clock, ev

from monitor.metrics import Metrics
from monitor.model import Event, Provider
from monitor.pipeline import Pipeline
from monitor.providers import CachedProvider, MemoryProviderCache, ProviderResolver
from monitor.store import Store

DELAY = 0.2  # seconds the server sits on every answer
DOMAINS = 24


def _zone() -> str:
    lines = [f"corp{i} MX 10 aspmx.l.google.com." for i in range(DOMAINS)]
    lines += ["contoso MX 10 contoso-test.mail.protection.outlook.com.", "own MX 10 mx.own.test."]
    return "\n".join(lines) + "\n"




@pytest.fixture
def server() -> Iterator[DNSServer]:
    with DNSServer({"test.": _zone()}, delay_seconds=DELAY) as dns_server:
        yield dns_server


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as s:
        yield s


def _resolver(server: DNSServer, **options: object) -> ProviderResolver:
    """A resolver asking ``server``, patient enough for a loaded machine (no timeouts)."""
    options.setdefault("clock", Clock())
    options.setdefault("lifetime_seconds", 10.0)
    return ProviderResolver(resolver=server.resolver(lifetime=10.0), **options)  # type: ignore[arg-type]


def test_lookups_run_concurrently_on_a_bounded_pool(server: DNSServer) -> None:
    """Unknown domains are looked up side by side, never more at once than the pool allows."""
    resolver = _resolver(server, concurrency=8)
    domains = [f"corp{i}.test" for i in range(DOMAINS)]
    server.pause()
    try:
        assert [resolver.provider_soon(d) for d in domains] == [None] * DOMAINS
        deadline = time.monotonic() + 30
        while server.max_in_flight < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # time for a ninth query, were the pool not bounded
    finally:
        server.resume()
    assert {resolver.wait_for(d) for d in domains} == {Provider.GOOGLE}
    assert server.max_in_flight == 8
    assert server.count() == DOMAINS


def test_pipeline_goes_on_while_domains_resolve(server: DNSServer, store: Store) -> None:
    """Putting events of unknown domains never waits for DNS: every put returns while the
    server holds all answers back, and the lookups are in flight together."""
    pipeline = Pipeline(store, resolver=_resolver(server, cache=store), batch_size=10_000)
    events = [ev("delivered", i, recipient=f"r@corp{i}.test") for i in range(DOMAINS)]
    server.pause()
    try:
        pipeline.put_many(events)
        assert {e.provider for e in events} == {None}  # not enriched yet: nothing answered
        deadline = time.monotonic() + 30
        while server.max_in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        server.resume()
    pipeline.close()
    assert server.max_in_flight > 1
    assert {e.provider for e in events} == {"google"}
    assert store.count("events") == DOMAINS


@pytest.mark.parametrize("writer_process", [False, True])
def test_events_of_a_resolving_domain_are_stored_and_counted_once_with_its_provider(
    server: DNSServer, store: Store, db_url: str, writer_process: bool
) -> None:
    """Events that waited for their lookup end in store, counters and /metrics under the real
    provider only: nothing counted as other first (with a writer process, an event whose
    answer is still out when its batch is handed over goes with a later one)."""
    metrics = Metrics()
    pipeline = Pipeline(store, resolver=_resolver(server, cache=store), metrics=metrics,
                        batch_size=3, writer_process=writer_process)  # fmt: skip
    events: list[Event] = [
        ev("delivered", 0, recipient="a@contoso.test", queue_id="A1"),
        ev("deferred", 1, recipient="b@contoso.test", queue_id="A2", reply_code=451,
           enhanced_status="4.7.500", diagnostic="451 4.7.500 Server busy. Please try again later"),
        ev("delivered", 2, recipient="c@contoso.test", queue_id="A3"),
        ev("delivered", 3, recipient="d@contoso.test", queue_id="A4"),
    ]  # fmt: skip
    pipeline.put_many(events)
    pipeline.close()
    assert server.count("contoso.test") == 1
    assert {e.provider for e in events} == {"microsoft"}
    assert events[1].reason is not None  # classified after its provider was known
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT DISTINCT provider FROM events")).scalars().all()
        counted = conn.execute(
            sa.text("SELECT provider, outcome, SUM(count) FROM counters GROUP BY provider, outcome")
        ).all()
    engine.dispose()
    assert stored == ["microsoft"]
    assert sorted(counted) == [("microsoft", "deferred", 1), ("microsoft", "delivered", 3)]
    exposed: dict[tuple[str, str], float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "mailmon_deliveries_total":
                key = (sample.labels["provider"], sample.labels["outcome"])
                exposed[key] = exposed.get(key, 0) + sample.value
    assert exposed == {("microsoft", "delivered"): 3, ("microsoft", "deferred"): 1}


def test_a_handed_off_batch_leaves_its_unanswered_events_to_the_next(
    server: DNSServer, store: Store
) -> None:
    """With a writer process, a full batch goes over without the events whose MX answer is
    still out: parsing never stops for DNS.  They lead the next batch, which waits for them
    (each is held back once), and every event ends stored once, under its real provider."""
    pipeline = Pipeline(store, resolver=_resolver(server, cache=store), batch_size=3,
                        writer_process=True)  # fmt: skip
    first = [
        ev("delivered", 0, recipient="a@corp1.test", queue_id="A1"),
        ev("delivered", 1, recipient="b@gmail.com", queue_id="A2"),  # well known: no DNS
        ev("delivered", 2, recipient="c@corp2.test", queue_id="A3"),
    ]
    second = [ev("delivered", 3 + i, recipient=f"d{i}@gmail.com", queue_id=f"B{i}") for i in range(3)]
    server.pause()
    try:
        handing = threading.Thread(target=pipeline.put_many, args=(first,))
        handing.start()
        handing.join(5.0)
        assert not handing.is_alive(), "the hand-off waited for DNS"
        assert pipeline.flush(wait=False) == []  # the batch of one is in flight: collected later
        assert [e.provider for e in first] == [None, "google", None]
        # The next full batch waits for the two held back: they are not held twice.
        waiting = threading.Thread(target=pipeline.put_many, args=(second,))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive(), "events were held back twice"
    finally:
        server.resume()
    waiting.join(30.0)
    assert not waiting.is_alive()
    pipeline.close()
    assert {e.provider for e in first + second} == {"google"}
    assert (pipeline.received, pipeline.stored, pipeline.duplicates) == (6, 6, 0)
    assert store.count("events") == 6
    assert server.count() == 2


def test_with_a_writer_process_answers_are_saved_between_its_transactions(
    server: DNSServer, store: Store
) -> None:
    """The parsing thread never saves MX answers while batches are handed over (a save
    from there stopped the parsing): the thread that collects each batch's reply saves
    them, after the writer's commit, and by the end every answer is in the store."""
    saves: list[tuple[bool, list[str]]] = []  # (from the parsing thread, domains)
    put = store.put_providers

    def recording(entries: Mapping[str, CachedProvider]) -> None:
        saves.append((threading.current_thread() is parsing, sorted(entries)))
        put(entries)

    store.put_providers = recording  # type: ignore[method-assign]
    parsing = threading.current_thread()
    pipeline = Pipeline(store, resolver=_resolver(server, cache=store), batch_size=2,
                        writer_process=True)  # fmt: skip
    events = [ev("delivered", i, recipient=f"u{i}@corp{i}.test", queue_id=f"Q{i}") for i in range(8)]
    pipeline.put_many(events)
    pipeline.flush(wait=False)
    deadline = time.monotonic() + 30
    while len({d for _, domains in saves for d in domains}) < 6 and time.monotonic() < deadline:
        pipeline.put(ev("delivered", 100, recipient="x@gmail.com", queue_id="G"))
        pipeline.flush(wait=False)
        time.sleep(0.05)
    during = list(saves)
    pipeline.close()
    assert {e.provider for e in events} == {"google"}
    assert during and not any(on_parsing for on_parsing, _ in during), during
    saved = {d for _, domains in saves for d in domains}
    assert saved == {f"corp{i}.test" for i in range(8)}
    with store.engine.connect() as conn:
        cached = conn.execute(sa.text("SELECT domain, provider FROM provider_cache")).all()
    assert sorted(cached) == sorted((f"corp{i}.test", "google") for i in range(8))


# -- the relay host ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relay", "expected"),
    [
        ("aspmx.l.google.com[142.250.1.26]:25", Provider.GOOGLE),  # Postfix
        ("contoso-test.mail.protection.outlook.com[52.101.1.1]", Provider.MICROSOFT),  # Exim, Kumo
        ("mx01.mail.icloud.com", Provider.APPLE),
    ],
)
def test_relay_host_decides_the_provider_without_dns(
    server: DNSServer, store: Store, relay: str, expected: Provider
) -> None:
    """A relay host that is the recipient's MX maps through the suffix map: no DNS query."""
    pipeline = Pipeline(store, resolver=_resolver(server, cache=store))
    event = ev("delivered", 0, recipient="r@unlisted.test", relay=relay)
    pipeline.put(event)
    pipeline.put(ev("submitted", 0, recipient="s@unlisted.test"))  # the memo answers it
    pipeline.close()
    assert event.provider == expected
    assert server.count() == 0
    assert store.get_provider("unlisted.test") is None  # re-derived from the log, never stored


@pytest.mark.parametrize(
    "relay",
    [
        "smtp.google.com[142.250.1.26]:587",  # submission port: a smarthost
        "[10.0.0.5]:25",
        "10.0.0.5[10.0.0.5]:25",
        "none",
        "private/dovecot-lmtp",
        "relay.contoso-test.mail.protection.outlook.com[52.101.1.1]:25",  # listed smarthost
    ],
)
def test_smarthost_relays_leave_the_provider_to_dns(server: DNSServer, relay: str) -> None:
    """A relay that may not be the recipient's MX (port, address, listed smarthost) decides
    nothing: the domain's own MX does."""
    resolver = _resolver(server, smarthosts=["mail.protection.outlook.com"])
    assert resolver.provider_for("own.test", relay) is Provider.OTHER
    assert server.count("own.test") == 1


def test_relay_carrying_another_providers_domain_is_a_smarthost(server: DNSServer) -> None:
    """A relay seen delivering yahoo.com mail is not Google's MX for the domains after it."""
    resolver = _resolver(server)
    relay = "aspmx.l.google.com[142.250.1.26]:25"
    assert resolver.provider_for("yahoo.com", relay) is Provider.YAHOO
    assert resolver.provider_for("own.test", relay) is Provider.OTHER
    assert server.count("own.test") == 1


def test_relay_host_is_not_used_with_resolution_off(server: DNSServer) -> None:
    """With resolve_mx off a domain is other on every line, relay or not, so what a read
    counts never depends on which of the domain's lines came first."""
    resolver = _resolver(server, resolve_mx=False)
    assert resolver.provider_for("r1.test", "aspmx.l.google.com[142.250.1.26]:25") == "other"
    assert server.count() == 0


# -- lookups put off for a relay host -------------------------------------------------------

GOOGLE_RELAY = "aspmx.l.google.com[142.250.1.26]:25"


def test_a_lookup_put_off_is_not_asked_when_a_relay_host_decides_first(
    server: DNSServer,
) -> None:
    """With ``defer_seconds`` the first line of a domain starts no lookup; when the relay of
    a later line names the provider, no query is ever sent for it; a domain no relay
    decided is asked once :meth:`start_deferred` runs."""
    resolver = _resolver(server, defer_seconds=60.0)
    assert resolver.provider_soon("corp1.test") is None
    assert resolver.provider_soon("corp2.test") is None
    assert resolver.provider_soon("corp1.test", GOOGLE_RELAY) is Provider.GOOGLE
    assert server.count() == 0
    resolver.start_deferred()
    assert resolver.wait_for("corp2.test") is Provider.GOOGLE
    assert resolver.wait_for("corp1.test") is Provider.GOOGLE
    assert (server.count("corp1.test"), server.count("corp2.test")) == (0, 1)
    assert (resolver.stats.relay_first, resolver.stats.dns_queries) == (1, 1)


def test_a_lookup_put_off_starts_once_due_or_when_waited_for(server: DNSServer) -> None:
    """A lookup put off starts by itself on a later call past its delay (no batch end
    needed), and at once when a caller waits for it."""
    resolver = _resolver(server, defer_seconds=0.05)
    assert resolver.provider_soon("corp1.test") is None
    time.sleep(0.1)
    assert resolver.provider_soon("gmail.com") is Provider.GOOGLE  # well known: no DNS
    deadline = time.monotonic() + 30
    while server.count("corp1.test") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.count("corp1.test") == 1
    waiting = _resolver(server, defer_seconds=60.0)
    assert waiting.provider_soon("corp2.test") is None
    assert waiting.wait_for("corp2.test") is Provider.GOOGLE
    waiting.start_deferred()  # started already: not asked twice
    assert waiting.wait_for("corp2.test") is Provider.GOOGLE
    assert server.count("corp2.test") == 1
    assert waiting.stats.dns_queries == 1


@pytest.mark.parametrize("writer_process", [False, True])
def test_pipeline_starts_put_off_lookups_before_it_waits(
    server: DNSServer, store: Store, writer_process: bool
) -> None:
    """The events of domains put off get their provider when the batch is written, the
    lookups side by side (not one after the other), with or without a writer process."""
    resolver = _resolver(server, cache=store, defer_seconds=60.0)
    pipeline = Pipeline(store, resolver=resolver, batch_size=10_000,
                        writer_process=writer_process)  # fmt: skip
    events = [ev("delivered", i, recipient=f"r@corp{i}.test") for i in range(DOMAINS)]
    pipeline.put_many(events)
    assert server.count() == 0
    pipeline.close()
    resolver.close()
    assert server.count() == DOMAINS
    assert server.max_in_flight > 1
    assert {e.provider for e in events} == {"google"}
    assert store.count("events") == DOMAINS


def test_ingest_names_providers_by_relay_before_asking_dns(
    server: DNSServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mailmon ingest`` of a log whose delivery lines name each domain's MX asks DNS
    nothing: the submission (read first, no relay) waits for the delivery line's relay."""
    log = tmp_path / "mail.log"
    mx = r"relay=mx\.corp\d+\.test\[192\.0\.2\.1\]"
    log.write_text(re.sub(mx, f"relay={GOOGLE_RELAY}", _log(DOMAINS)))
    config = tmp_path / "mailmon.toml"
    config.write_text(
        f'[providers]\nnameservers = ["127.0.0.1:{server.port}"]\ndns_timeout_seconds = 10\n'
    )
    monkeypatch.setenv("MAILMON_RESOLVE_MX", "1")
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "ingest", "postfix", str(log),
         "--db", f"sqlite:///{tmp_path / 'm.db'}", "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    dns = json.loads(done.stdout)["mx_lookups"]
    assert server.count() == 0
    assert (dns["domains"], dns["relay_first"]) == (0, DOMAINS)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT type, provider, count(*) FROM events GROUP BY 1, 2"))
        assert sorted(found) == [("delivered", "google", DOMAINS), ("submitted", "google", DOMAINS)]
    engine.dispose()


# -- negative answers across runs ------------------------------------------------------


def test_nxdomain_is_kept_in_the_store_for_its_ttl(server: DNSServer, store: Store) -> None:
    """A second run asks nothing about a domain that does not exist, until its TTL passes."""
    server.delay_seconds = 0
    clock = Clock()

    def run() -> None:
        again = Store(store.engine)  # what a new process would read
        pipeline = Pipeline(again, resolver=_resolver(server, cache=again, clock=clock))
        pipeline.put(ev("bounced", 0, recipient="r@gone.test", reply_code=550))
        pipeline.close()

    run()
    run()
    assert server.count("gone.test") == 1
    clock.now += 61  # the test zone's SOA: TTL and MINIMUM 60
    run()
    assert server.count("gone.test") == 2


# -- the command line ------------------------------------------------------------------


def _log(domains: int) -> str:
    lines = []
    for i in range(domains):
        qid = f"{0xA0000 + i:X}"
        lines += [
            f"Mar  4 11:00:{i % 60:02d} mx1 postfix/qmgr[102]: {qid}: from=<n@app.example>, "
            "size=900, nrcpt=1 (queue active)",
            f"Mar  4 11:00:{i % 60:02d} mx1 postfix/smtp[103]: {qid}: to=<r@corp{i}.test>, "
            f"relay=mx.corp{i}.test[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, "
            "status=sent (250 2.0.0 OK)",
        ]
    return "\n".join(lines) + "\n"


def test_ingest_resolves_concurrently_and_says_so(
    server: DNSServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mailmon ingest`` asks the configured DNS for many domains at once, reports the
    lookups in its summary, and asks nothing again on a re-ingest."""
    log = tmp_path / "mail.log"
    log.write_text(_log(DOMAINS))
    config = tmp_path / "mailmon.toml"
    config.write_text(
        f'[providers]\nnameservers = ["127.0.0.1:{server.port}"]\ndns_timeout_seconds = 10\n'
    )
    db = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MAILMON_RESOLVE_MX", "1")

    def ingest(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "monitor", "ingest", "postfix", str(log), "--db", db,
             "--config", str(config), *extra],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip

    summary = json.loads(ingest("--json").stdout)
    assert server.max_in_flight > 1
    assert server.count() == DOMAINS
    dns = summary["mx_lookups"]
    assert (dns["domains"], dns["answers"], dns["dns_timeouts"]) == (DOMAINS, DOMAINS, 0)
    assert dns["dns_seconds"] >= DOMAINS * DELAY * 0.9  # summed over overlapping lookups
    text = ingest().stdout
    assert server.count() == DOMAINS  # the store answered
    assert "MX lookups: none needed" in text


def test_answers_a_save_could_not_write_are_saved_by_the_next(server: DNSServer) -> None:
    class Failing(MemoryProviderCache):
        fail = True

        def put_providers(self, entries: Mapping[str, CachedProvider]) -> None:
            if self.fail:
                raise OSError("disk full")
            super().put_providers(entries)

    cache = Failing()
    resolver = _resolver(server, cache=cache)
    assert resolver.wait_for("corp1.test") is Provider.GOOGLE
    with pytest.raises(OSError, match="disk full"):
        resolver.save()
    assert cache.entries == {}
    cache.fail = False
    assert resolver.wait_for("corp2.test") is Provider.GOOGLE
    resolver.save()
    assert sorted(cache.entries) == ["corp1.test", "corp2.test"]
    assert cache.entries["corp1.test"].provider == "google"
