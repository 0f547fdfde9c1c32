"""The store on SQLite and PostgreSQL: idempotent writes, delivery states, counters, queries."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from factories import T0, downgrade, ev

from monitor.errors import StoreError
from monitor.store import Store
from monitor.store.migrations import LATEST
from monitor.store.writer import stream_tag


def _flow() -> list:
    """A message to two recipients: one deferred then delivered, one bounced."""
    return [
        ev("submitted", 0, recipient="alice@gmail.com"),
        ev(
            "deferred",
            1,
            recipient="alice@gmail.com",
            reply_code=421,
            enhanced_status="4.7.28",
            reason="speeding",
            attempt=1,
        ),
        ev(
            "delivered",
            9,
            recipient="alice@gmail.com",
            reply_code=250,
            attempt=2,
            delay_seconds=540.0,
        ),
        ev("submitted", 0, recipient="bob@outlook.com"),
        ev(
            "bounced",
            1,
            recipient="bob@outlook.com",
            reply_code=550,
            enhanced_status="5.1.1",
            reason="userunknown",
            hard=True,
            diagnostic="550 5.1.1 user unknown",
        ),
    ]


def test_write_is_idempotent(db_url: str) -> None:
    """Writing the same events twice stores them once and changes no counter."""
    with Store.open(db_url) as store:
        assert len(store.write(_flow())) == 5
        before = (store.stats("domain"), store.count("events"), store.count("deliveries"))
        assert store.write(_flow()) == []
        assert (store.stats("domain"), store.count("events"), store.count("deliveries")) == before


def test_duplicates_inside_one_batch_count_once(db_url: str) -> None:
    """The same event twice in one batch is stored once."""
    with Store.open(db_url) as store:
        assert len(store.write([ev("delivered"), ev("delivered")])) == 1


def test_stats_by_domain_and_provider(db_url: str) -> None:
    """Stats count final outcomes per recipient and deferrals per attempt, with rates."""
    flow = [
        e.replace(provider="google" if "gmail" in (e.recipient or "") else "microsoft")
        for e in _flow()
    ]
    with Store.open(db_url) as store:
        store.write(flow)
        rows = {r["domain"]: r for r in store.stats("domain")}
        gmail = rows["gmail.com"]
        assert (gmail["submitted"], gmail["delivered"], gmail["deferred"], gmail["bounced"]) == (
            1,
            1,
            1,
            0,
        )
        assert gmail["delivery_rate"] == 1.0 and gmail["deferral_rate"] == 0.5
        assert rows["outlook.com"]["bounced"] == 1 and rows["outlook.com"]["bounce_rate"] == 1.0
        by_provider = {r["provider"]: r for r in store.stats("provider")}
        assert set(by_provider) == {"google", "microsoft"}
        assert store.stats("domain", since=(T0.timestamp() + 5 * 60))[0]["delivered"] == 1


def test_ndr_stream_is_excluded_by_default(db_url: str) -> None:
    """Our own non-delivery notices do not count as the sender's mail unless asked."""
    with Store.open(db_url) as store:
        store.write(
            [
                ev(
                    "delivered",
                    recipient="noreply@app.example",
                    sender="",
                    tags=("ndr",),
                    message_id="dsn1@mx1",
                )
            ]
        )
        assert store.stats("domain") == []
        assert store.stats("domain", include_ndr=True)[0]["delivered"] == 1


def test_delivery_state_follows_the_outcome_in_any_order(db_url: str) -> None:
    """A delivery row ends in its final state whatever order its events arrive in."""
    flow = _flow()
    with Store.open(db_url) as store:
        store.write([flow[2]])
        store.write([flow[1], flow[0]])
        (found,) = store.trace("alice@gmail.com")
        row = found["delivery"]
        assert row["state"] == "delivered"
        assert row["attempts"] == 2 and row["deferrals"] == 1
        assert row["submitted_at"] == T0.timestamp()
        assert [e.type.value for e in found["events"]] == ["submitted", "deferred", "delivered"]


def test_trace_by_message_id_queue_id_and_recipient(db_url: str) -> None:
    """trace finds deliveries by Message-ID (with or without <>), queue id and recipient."""
    with Store.open(db_url) as store:
        store.write(_flow())
        assert len(store.trace("<abc123@app.example>")) == 2
        assert len(store.trace("abc123@app.example")) == 2
        assert len(store.trace("4B1C2D3E4F")) == 2
        (bob,) = store.trace("Bob@OUTLOOK.com".replace("Bob", "bob"))
        assert bob["delivery"]["state"] == "bounced" and bob["delivery"]["hard"] is True
        assert bob["delivery"]["reason"] == "userunknown"
        assert store.trace("nobody@nowhere.example") == []


def test_checkpoint_is_written_with_the_batch(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint stored with a batch is read back; a batch the database cannot take now stores neither."""
    with Store.open(db_url) as store:
        store.write(_flow()[:1], checkpoint=("postfix:/var/log/mail.log", {"offset": 42}))
        assert store.checkpoint("postfix:/var/log/mail.log") == {"offset": 42}

        def down(*args: object) -> list[object]:
            raise sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))

        monkeypatch.setattr("monitor.store.write_events", down)
        with pytest.raises(sa.exc.OperationalError):
            store.write([ev("delivered", 2)], checkpoint=("postfix:/x", {"offset": 1}))
        assert store.checkpoint("postfix:/x") is None
        assert store.count("events") == 1


def test_an_event_the_database_refuses_is_left_out_of_its_batch(db_url: str) -> None:
    """One event that cannot be stored is reported and left out; its batch and checkpoint are stored."""
    with Store.open(db_url) as store:
        broken = ev("delivered", 3)
        object.__setattr__(broken, "occurred_at", None)  # makes the insert fail
        refused: list[tuple[str, str]] = []
        fresh = store.write([ev("delivered", 2), broken], checkpoint=("postfix:/x", {"offset": 1}),
                            on_reject=lambda e, why: refused.append((e.id, why)))  # fmt: skip
        assert [e.id for e in fresh] == [ev("delivered", 2).id]
        assert refused == [(broken.id, "store_refused")]
        assert store.checkpoint("postfix:/x") == {"offset": 1}
        assert store.count("events") == 1


def test_provider_cache_round_trip(db_url: str) -> None:
    """The provider cache keeps the latest answer per domain."""
    with Store.open(db_url) as store:
        assert store.get_provider("acme.example") is None
        store.put_provider("acme.example", "google", ["aspmx.l.google.com"], 100.0)
        store.put_provider("acme.example", "microsoft", ["x.mail.protection.outlook.com"], 200.0)
        assert store.get_provider("acme.example") == ("microsoft", 200.0, None)


def test_schema_is_versioned(db_url: str) -> None:
    """A new database is created at the latest schema; reopening it migrates nothing."""
    with Store.open(db_url) as store:
        store.write(_flow())
    with Store.open(db_url) as store, store.engine.connect() as conn:
        version = conn.execute(
            sa.text("SELECT value FROM mailmon_meta WHERE key = 'schema_version'")
        ).scalar_one()
        assert int(version) == LATEST
        assert store.count("events") == 5


def test_newer_schema_is_refused(db_url: str) -> None:
    """A database written by a newer mailmon is refused with a clear error."""
    Store.open(db_url).close()
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE mailmon_meta SET value = '999' WHERE key = 'schema_version'"))
    engine.dispose()
    with pytest.raises(StoreError, match="newer"):
        Store.open(db_url)


def test_bad_url_is_a_clear_error() -> None:
    """An unsupported or malformed URL raises StoreError, not a traceback."""
    with pytest.raises(StoreError):
        Store.open("mysql://x@localhost/db")
    with pytest.raises(StoreError):
        Store.open("not a url")


def test_schema_1_database_is_migrated(db_url: str) -> None:
    """A database at schema 1 (no blame/rule columns) is migrated on open and keeps its data."""
    with Store.open(db_url) as store:
        store.write(_flow())
    downgrade(db_url, 1)
    with Store.open(db_url) as store:
        assert store.count("events") == 5
        store.write([ev("bounced", 20, recipient="carol@gmail.com", reason="userunknown",
                        blame="recipient", rule="rfc3463.5.1.1")])
        (carol,) = store.trace("carol@gmail.com")
        assert (carol["delivery"]["blame"], carol["events"][0].rule) == ("recipient", "rfc3463.5.1.1")
        indexes = {i["name"] for i in sa.inspect(store.engine).get_indexes("deliveries")}
        assert "ix_deliveries_delivered_final" in indexes


def test_stats_by_reason(db_url: str) -> None:
    """Failures break down by their classified reason; successes carry none."""
    with Store.open(db_url) as store:
        store.write(_flow())
        rows = {r["reason"]: r for r in store.stats("reason")}
        assert rows["userunknown"]["bounced"] == 1
        assert rows["speeding"]["deferred"] == 1
        assert rows[""]["delivered"] == 1


def _senders() -> list:
    """Two sending domains, two IPs and three streams, one event of each kind per row."""
    return [
        ev("submitted", 0, sender="news@Mail.Example", tags=("campaign:spring", "x")),
        ev("delivered", 1, sender="news@Mail.Example", sending_ip="203.0.113.7",
           tags=("campaign:spring",), provider="google"),
        ev("submitted", 0, recipient="bob@outlook.com", sender="billing@app.example",
           tags=("stream:billing", "category:ignored")),
        ev("bounced", 1, recipient="bob@outlook.com", sender="billing@app.example",
           sending_ip="203.0.113.8", reason="blocked", provider="microsoft",
           tags=("stream:billing",)),
        ev("deferred", 1, recipient="carol@outlook.com", queue_id="Q2",
           sender="billing@app.example", sending_ip="203.0.113.7", reason="blocked",
           provider="microsoft"),
        ev("delivered", 2, sender="", recipient="dave@gmail.com", queue_id="Q3",
           sending_ip="203.0.113.7", tags=("ndr",), provider="google"),
    ]  # fmt: skip


def test_stats_by_sender_domain_ip_and_stream(db_url: str) -> None:
    """Sender-side groups count like recipient-side ones; NDRs are left out unless asked."""
    with Store.open(db_url) as store:
        store.write(_senders())
        by_domain = {r["sender_domain"]: r for r in store.stats("sender_domain")}
        assert set(by_domain) == {"mail.example", "app.example"}
        app = by_domain["app.example"]
        assert (app["submitted"], app["bounced"], app["deferred"]) == (1, 1, 1)
        assert app["bounce_rate"] == 1.0 and app["deferral_rate"] == 0.5
        by_ip = {r["sending_ip"]: r for r in store.stats("sending_ip")}
        assert set(by_ip) == {"", "203.0.113.7", "203.0.113.8"}
        assert (by_ip["203.0.113.7"]["delivered"], by_ip["203.0.113.7"]["deferred"]) == (1, 1)
        assert by_ip["203.0.113.8"]["bounced"] == 1
        by_ip_ndr = {r["sending_ip"]: r for r in store.stats("sending_ip", include_ndr=True)}
        assert by_ip_ndr["203.0.113.7"]["delivered"] == 2
        by_stream = {r["stream"]: r for r in store.stats("stream")}
        assert set(by_stream) == {"spring", "billing", ""}
        assert by_stream["spring"]["delivered"] == 1 and by_stream["billing"]["bounced"] == 1
        with_ndr = {r["stream"] for r in store.stats("stream", include_ndr=True)}
        assert with_ndr == {"spring", "billing", "", "ndr"}


def test_sender_counters_are_idempotent(db_url: str) -> None:
    """A duplicate event adds nothing to the sender counters, in one batch or a later one."""
    with Store.open(db_url) as store:
        store.write(_senders() + _senders())
        before = [store.stats(by) for by in ("sender_domain", "sending_ip", "stream")]
        rows = store.count("sender_counters")
        assert store.write(_senders()) == []
        assert [store.stats(by) for by in ("sender_domain", "sending_ip", "stream")] == before
        assert store.count("sender_counters") == rows


def test_stats_by_unknown_group_is_refused(db_url: str) -> None:
    """A grouping the store does not know is an error, not an empty table."""
    with Store.open(db_url) as store, pytest.raises(ValueError, match="sender_domain"):
        store.stats("sender")


def test_stream_tag_names() -> None:
    """stream: wins over category: over campaign:; ndr only when no tag names a stream."""
    assert stream_tag(()) == ""
    assert stream_tag(("queue:x",)) == ""
    assert stream_tag(("campaign:c", "category:k")) == "k"
    assert stream_tag(("category:k", "stream:s")) == "s"
    assert stream_tag(("ndr",)) == "ndr"
    assert stream_tag(("stream:",)) == ""
    assert stream_tag(("stream:" + "x" * 100,)) == "x" * 64


def test_schema_4_database_gets_sender_counters(db_url: str) -> None:
    """Migrating a schema-4 store counts its stored events per sender, as the writer would."""
    with Store.open(db_url) as store:
        store.write(_senders())
        expected = [store.stats(by, include_ndr=True)
                    for by in ("sender_domain", "sending_ip", "stream")]  # fmt: skip
    downgrade(db_url, 4)
    with Store.open(db_url) as store:
        assert store.schema_version == LATEST == 11
        found = [store.stats(by, include_ndr=True)
                 for by in ("sender_domain", "sending_ip", "stream")]  # fmt: skip
        assert found == expected and expected[0]
        store.write([ev("delivered", 30, queue_id="Q9", sending_ip="203.0.113.9")])
        assert "203.0.113.9" in {r["sending_ip"] for r in store.stats("sending_ip")}


def _failures() -> list:
    """A hard and a soft bounce, a deferral and an unclassified bounce, one NDR."""
    return [
        ev("bounced", 1, reason="userunknown", hard=True, blame="recipient"),
        ev("bounced", 1, recipient="bob@gmail.com", reason="blocked", hard=False,
           blame="reputation"),
        ev("deferred", 2, recipient="carol@gmail.com", reason="speeding", hard=False,
           blame="rate"),
        ev("bounced", 2, recipient="dave@gmail.com", queue_id="Q7"),
        ev("bounced", 2, recipient="erin@gmail.com", queue_id="Q8", reason="userunknown",
           hard=True, blame="recipient", tags=("ndr",)),
        ev("delivered", 3, recipient="fred@gmail.com", queue_id="Q9"),
    ]  # fmt: skip


def _failure_rows(store: Store) -> dict[tuple, int]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT outcome, reason, hard, blame, stream, count FROM failure_counters"
        ))  # fmt: skip
        return {tuple(r[:5]): r[5] for r in rows}


_EXPECTED_FAILURES = {
    ("bounced", "userunknown", "hard", "recipient", ""): 1,
    ("bounced", "blocked", "soft", "reputation", ""): 1,
    ("deferred", "speeding", "soft", "rate", ""): 1,
    ("bounced", "", "", "", ""): 1,
    ("bounced", "userunknown", "hard", "recipient", "ndr"): 1,
}


def test_failure_counters_by_hard_and_blame(db_url: str) -> None:
    """Failures count by hard/soft and blame; unclassified is neither; deliveries not at all."""
    with Store.open(db_url) as store:
        store.write(_failures())
        assert _failure_rows(store) == _EXPECTED_FAILURES


def test_failure_counters_are_idempotent(db_url: str) -> None:
    """A duplicate event adds nothing to the failure counters, in one batch or a later one."""
    with Store.open(db_url) as store:
        store.write(_failures() + _failures())
        assert store.write(_failures()) == []
        assert _failure_rows(store) == _EXPECTED_FAILURES


def test_schema_5_database_gets_failure_counters(db_url: str) -> None:
    """Migrating a schema-5 store counts its stored failures, as the writer would."""
    with Store.open(db_url) as store:
        store.write(_failures())
    downgrade(db_url, 5)
    with Store.open(db_url) as store:
        assert store.schema_version == LATEST == 11
        assert _failure_rows(store) == _EXPECTED_FAILURES
        store.write([ev("bounced", 30, recipient="gina@gmail.com", queue_id="QA",
                        reason="spamdetected", hard=True, blame="content")])  # fmt: skip
        assert _failure_rows(store)[("bounced", "spamdetected", "hard", "content", "")] == 1


def test_stats_by_blame(db_url: str) -> None:
    """Failures break down by blame; NDRs are left out unless asked; deliveries appear nowhere."""
    with Store.open(db_url) as store:
        store.write(_failures())
        rows = {r["blame"]: r for r in store.stats("blame")}
        assert set(rows) == {"recipient", "reputation", "rate", ""}
        assert (rows["recipient"]["bounced"], rows["rate"]["deferred"]) == (1, 1)
        assert all(r["delivered"] == 0 for r in rows.values())
        with_ndr = {r["blame"]: r for r in store.stats("blame", include_ndr=True)}
        assert with_ndr["recipient"]["bounced"] == 2


def _delivery_rows(store: Store) -> dict[str, tuple[str | None, str]]:
    """recipient -> (sending_ip, stream_tag) of its delivery row."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT recipient, sending_ip, stream_tag FROM deliveries"))
        return {r: (ip, stream) for r, ip, stream in rows}


#: What _senders() leaves in the deliveries' sending_ip and stream_tag columns.
_SENDER_DELIVERIES = {
    "alice@gmail.com": ("203.0.113.7", "spring"),
    "bob@outlook.com": ("203.0.113.8", "billing"),
    "carol@outlook.com": ("203.0.113.7", ""),
    "dave@gmail.com": ("203.0.113.7", "ndr"),
}


def test_deliveries_carry_sending_ip_and_stream(db_url: str) -> None:
    """A delivery row holds the IP of the attempt that decided its state and its tag stream,
    whatever order its events arrive in."""
    for order in (1, -1):
        with Store.open(db_url) as store:
            if order == -1:
                with store.engine.begin() as conn:
                    for table in ("events", "deliveries", "counters", "sender_counters",
                                  "failure_counters"):  # fmt: skip
                        conn.execute(sa.text(f"DELETE FROM {table}"))
            for e in _senders()[::order]:
                store.write([e])
            assert _delivery_rows(store) == _SENDER_DELIVERIES


def test_schema_6_database_gains_delivery_ip_and_stream(db_url: str) -> None:
    """Migrating a schema-6 database back-fills sending IP and stream from the stored events."""
    with Store.open(db_url) as store:
        store.write(_senders())
    downgrade(db_url, 6)
    with Store.open(db_url) as store:
        assert _delivery_rows(store) == _SENDER_DELIVERIES


def _ip_failures() -> list:
    """One sending IP's failures with their hard/soft and blame, and a delivery."""
    return [
        ev("bounced", 1, recipient="x@gmail.com", queue_id="Q5", sending_ip="203.0.113.7",
           reason="userunknown", hard=True, blame="recipient", provider="google"),
        ev("deferred", 1, recipient="y@gmail.com", queue_id="Q6", sending_ip="203.0.113.7",
           reason="speeding", hard=False, blame="rate", provider="google"),
        ev("delivered", 2, recipient="z@gmail.com", queue_id="Q7", sending_ip="203.0.113.7",
           provider="google"),
    ]  # fmt: skip


def _ip_rows(store: Store) -> dict[tuple[str, str, str, str], int]:
    """(outcome, reason, hard, blame) -> count of sending IP 203.0.113.7's counters."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT outcome, reason, hard, blame, SUM(count) FROM sender_counters"
            " WHERE dimension = 'sending_ip' AND value = '203.0.113.7'"
            " GROUP BY outcome, reason, hard, blame"
        ))  # fmt: skip
        return {(o, r, h, b): int(n) for o, r, h, b, n in rows}


_IP_ROWS = {
    ("bounced", "userunknown", "hard", "recipient"): 1,
    ("deferred", "speeding", "soft", "rate"): 1,
    ("delivered", "", "", ""): 1,
}


def test_sender_counters_split_failures_by_hard_and_blame(db_url: str) -> None:
    """Sender-side failures are counted by hard/soft and blame as failure_counters are;
    a store from before schema 8 is recounted from its events in that shape."""
    with Store.open(db_url) as store:
        store.write(_ip_failures())
        assert _ip_rows(store) == _IP_ROWS
        stats = store.stats("sending_ip")
    downgrade(db_url, 7)
    with Store.open(db_url) as store:
        assert _ip_rows(store) == _IP_ROWS
        assert store.stats("sending_ip") == stats
        assert store.write(_ip_failures()) == []
        assert _ip_rows(store) == _IP_ROWS


def test_delivery_without_its_submission_dates_it_from_the_delay(db_url: str) -> None:
    """A delivered event's delay says when the message arrived: the delivery row gets that
    submission time when no submitted event was seen, and the earlier of the two otherwise,
    in either order."""
    delivered = ev("delivered", 10, recipient="dan@gmail.com", delay_seconds=90.0)
    submitted = ev("submitted", 9, recipient="dan@gmail.com")  # 30 s after the delay says
    arrival = delivered.timestamp - 90.0
    with Store.open(db_url) as store:
        store.write([delivered])
        (found,) = store.trace("dan@gmail.com")
        assert found["delivery"]["submitted_at"] == arrival
        store.write([submitted])
        (found,) = store.trace("dan@gmail.com")
        assert found["delivery"]["submitted_at"] == arrival
        store.write([ev("submitted", 0, recipient="eve@gmail.com"),
                     ev("delivered", 10, recipient="eve@gmail.com", delay_seconds=60.0)])  # fmt: skip
        (found,) = store.trace("eve@gmail.com")
        assert found["delivery"]["submitted_at"] == T0.timestamp()
