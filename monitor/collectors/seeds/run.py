"""One probe run: send a probe to every seed, poll the mailboxes, record where each landed.

    result = run_probes(config.seeds, driver, store)

The sends are stored (``seed_probes``, ``submitted`` events) before polling starts, so
the MTA's log lines about the probes join their deliveries at once.  Each mailbox is
polled every ``poll_interval_seconds`` until its probe is found or ``timeout_seconds``
after the send have passed, with one last look at the deadline.  A probe not found then
is ``missing``, with what the store's other sources say of its delivery (bounced with
its reply, deferred, delivered but not found); a mailbox that could not be read at its
last look is ``error`` with the reason (a refused login is not tried again), never
``missing``.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from monitor.collectors.seeds.headers import parse_headers, received_time, verdicts
from monitor.collectors.seeds.imap import Found, ImapFailure, SeedMailbox
from monitor.collectors.seeds.message import Probe, SendResult, build_probe, submit
from monitor.collectors.seeds.settings import SeedConfig, SeedsConfig
from monitor.collectors.seeds.source import SOURCE, Outcome, SeedSource
from monitor.driver import Driver
from monitor.errors import ConfigError
from monitor.model import Event, EventType
from monitor.store import Store

__all__ = ["RunResult", "delivery_finding", "run_probes"]

log = logging.getLogger(__name__)

MailboxFactory = Callable[[SeedConfig, str, float], Any]


@dataclass
class RunResult:
    """What one run sent and found (also stored: ``seed_probes``, ``seed_placements``)."""

    run_id: str
    started_at: datetime
    sent: list[SendResult] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    deleted: int = 0

    def placements(self) -> dict[str, str]:
        """seed -> placement."""
        return {o.probe.seed: o.placement for o in self.outcomes}


def _mailbox(seed: SeedConfig, secret: str, timeout: float) -> SeedMailbox:
    return SeedMailbox(seed, secret, timeout=timeout)


def run_probes(
    config: SeedsConfig,
    driver: Driver,
    store: Store,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], object] = time.sleep,
    mailbox: MailboxFactory = _mailbox,
    stop: threading.Event | None = None,
) -> RunResult:
    """Send, poll, record; returns the run's results (stored through ``driver``).

    ``stop`` set (the service stops) ends the polling: probes not found by then get no
    placement (their sends stay stored), as the run could not tell where they are.
    """
    if not config.mailboxes:
        raise ConfigError("[seeds] lists no mailboxes")
    assert config.sender is not None, "validated with the mailboxes"
    sender = config.sender
    started = clock()
    run_id = f"{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    templates = config.probe_templates()
    offset = secrets.randbelow(len(templates))
    probes = []
    for i, seed in enumerate(config.mailboxes):
        template = templates[(offset + i) % len(templates)]
        probes.append(build_probe(
            run_id=run_id, seed=seed.address, provider=seed.provider, template=template,
            sender=sender, sender_name=config.sender_name, at=started,
            list_unsubscribe=config.list_unsubscribe,
        ))  # fmt: skip
    result = RunResult(run_id, started)
    source = SeedSource(sender)
    result.sent = submit(config.smtp, sender, probes, clock=clock)
    driver.run(source, result.sent, f"{SOURCE}:{run_id}:sent")
    driver.commit(source)
    for r in result.sent:
        if r.error:
            log.warning("seed probe to %s not submitted: %s", r.probe.seed, r.error)

    seeds = {s.address: s for s in config.mailboxes}
    sent = {r.probe.seed: r for r in result.sent if r.error is None}
    if stop is not None:
        sleep = stop.wait
    found, errors, deleted = _poll(config, seeds, sent, clock=clock, sleep=sleep,
                                   mailbox=mailbox, stop=stop)  # fmt: skip
    result.deleted = deleted
    end = clock()
    stopped = stop is not None and stop.is_set()
    for r in result.sent:
        address = r.probe.seed
        if stopped and address in sent and address not in found and address not in errors:
            continue
        result.outcomes.append(_outcome(r, sender, found, errors, store, end))
    driver.run(source, result.outcomes, f"{SOURCE}:{run_id}:placed")
    driver.commit(source)
    return result


def _poll(
    config: SeedsConfig,
    seeds: Mapping[str, SeedConfig],
    sent: Mapping[str, SendResult],
    *,
    clock: Callable[[], datetime],
    sleep: Callable[[float], object],
    mailbox: MailboxFactory,
    stop: threading.Event | None = None,
) -> tuple[dict[str, tuple[Found, datetime]], dict[str, str], int]:
    """Poll until every probe is found or past its deadline; (found, errors, deleted)."""
    found: dict[str, tuple[Found, datetime]] = {}
    errors: dict[str, str] = {}
    deleted = 0
    secrets_of: dict[str, str] = {}
    outstanding = dict(sent)
    for address in list(outstanding):
        try:
            secrets_of[address] = seeds[address].secret()
        except ConfigError as exc:
            errors[address] = str(exc)
            del outstanding[address]
    deadlines = {a: r.sent_at.timestamp() + config.timeout_seconds for a, r in outstanding.items()}
    while outstanding and not (stop is not None and stop.is_set()):
        for address, r in list(outstanding.items()):
            seed = seeds[address]
            try:
                with mailbox(seed, secrets_of[address], config.imap_timeout_seconds) as box:
                    hits = box.find({r.probe.token: r.probe.message_id})
                    errors.pop(address, None)
                    if r.probe.token in hits:
                        found[address] = (hits[r.probe.token], clock())
                        del outstanding[address]
                        if config.delete_after_read:
                            deleted += box.delete(hits)
            except ImapFailure as exc:
                errors[address] = exc.reason
                log.warning("seed %s: %s", address, exc.reason)
                if exc.final:
                    del outstanding[address]
        now = clock().timestamp()
        late = [a for a in outstanding if now >= deadlines[a]]
        for address in late:
            del outstanding[address]
        if outstanding:
            wait = min(config.poll_interval_seconds,
                       max(0.0, min(deadlines[a] for a in outstanding) - now))  # fmt: skip
            sleep(wait)
    return found, errors, deleted


def _outcome(
    r: SendResult,
    sender: str,
    found: Mapping[str, tuple[Found, datetime]],
    errors: Mapping[str, str],
    store: Store,
    end: datetime,
) -> Outcome:
    probe = r.probe
    if r.error is not None:
        return Outcome(probe, sender, r.sent_at, "error", sent=False,
                       error=f"not submitted: {r.error}")  # fmt: skip
    hit = found.get(probe.seed)
    if hit is not None:
        copy, at = hit
        header = parse_headers(copy.header)
        arrived = copy.internaldate or received_time(header)
        seconds = None
        if arrived is not None:
            # INTERNALDATE has whole seconds: a fast delivery may read as before the send.
            seconds = max(0.0, (arrived - r.sent_at).total_seconds())
        return Outcome(probe, sender, at, copy.placement, folder=copy.folder,
                       seconds_to_inbox=seconds, verdicts=verdicts(header))  # fmt: skip
    if probe.seed in errors:
        return Outcome(probe, sender, end, "error", error=errors[probe.seed])
    return Outcome(probe, sender, end, "missing", finding=delivery_finding(store, probe))


def delivery_finding(store: Store, probe: Probe) -> str:
    """What the store's other sources (MTA logs, webhooks, DSNs) say of a missing probe."""
    decisive: Event | None = None
    for delivery in store.trace(probe.message_id, by="message"):
        if (delivery["delivery"].get("recipient") or "").lower() != probe.seed.lower():
            continue
        for event in delivery["events"]:
            if event.source.partition(":")[0] == SOURCE or event.type not in _WEIGHT:
                continue
            if decisive is None or _WEIGHT[event.type] >= _WEIGHT[decisive.type]:
                decisive = event
    if decisive is None:
        return "no delivery event: not seen in the MTA logs or webhooks"
    if decisive.type is EventType.DELIVERED:
        return "delivered but not found"
    reply = " ".join(str(v) for v in (decisive.reply_code, decisive.enhanced_status) if v)
    text = " ".join((decisive.diagnostic or "").split())[:200]
    parts = [str(decisive.type), reply, f"({decisive.reason})" if decisive.reason else "", text]
    return " ".join(p for p in parts if p)


#: Which of a delivery's events decides the finding (a later one of equal weight wins).
_WEIGHT = {
    EventType.DEFERRED: 1, EventType.DELIVERED: 2, EventType.BOUNCED: 3,
    EventType.REJECTED: 3, EventType.EXPIRED: 3,
}  # fmt: skip
