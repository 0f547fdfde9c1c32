"""Four days of per-minute counters with rejection episodes at several volumes, and decoys.

What the rollup's *starts rejecting* detectors must catch, and what they must leave alone
(issue 16 part 3)::

    scenario = rejecting_scenario(seed=7)
    with store.engine.begin() as conn:
        conn.execute(counters.insert(), list(scenario.rows()))
    for episode in scenario.episodes: ...   # who starts rejecting, when, by when to page

Traffic is written as ``counters`` rows (what ingest leaves), one row per (minute, domain,
outcome, reason).  Volumes are Poisson per minute around an hourly rate, failures binomial
around a share, from one seeded generator: the same seed is the same traffic.  Every domain
has a 1 % background of ``blocked`` deferrals, so baselines are not zero.

Episodes (``Episode``): Gmail at high volume (600 an hour, 50 per 5 minutes), a domain at
20 attempts per 5 minutes (Yahoo), Microsoft at ~150 an hour across outlook.com (100) and
hotmail.com (50) answering ``550 5.7.1 ... blocked using Spamhaus`` to 80 % for 90
minutes, and orange.fr alone at 100 an hour refusing half of it for an hour.  Decoys
(``Scenario.decoys``): a stale list (userunknown bounces at aol.com), a tiny domain
refusing every attempt, a nightly batch to comcast.net with its usual rate-limit
deferrals, and a domain whose MX does not answer (deferred, network errors).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["DAY", "Domain", "Episode", "Scenario", "rejecting_scenario"]

DAY = 86400
MINUTE = 60
#: 2026-03-02T00:00:00Z, a Monday: the scenario's first minute.
START = 1_772_409_600


@dataclass(frozen=True)
class Domain:
    """A recipient domain's steady traffic: ``hourly`` attempts an hour (a nightly batch
    adds ``batch`` an hour from 02:00 for 20 minutes, ``batch_share`` of it rate-limited)."""

    name: str
    provider: str
    hourly: float
    background: float = 0.01  # share of attempts deferred as blocked, always
    batch: float = 0.0
    batch_share: float = 0.0


@dataclass(frozen=True)
class Episode:
    """From ``start`` for ``minutes``, ``share`` of the attempts to ``domains`` fail for
    ``reason`` (``outcome``: bounced or deferred).  ``deadline`` is how soon a rejecting
    incident must open for each domain (``domain_deadlines``) and for the provider
    (``provider_deadline``); None: no promise (too little volume), only "it opens"."""

    name: str
    provider: str
    domains: tuple[str, ...]
    start: int
    minutes: int
    share: float
    reason: str = "blocked"
    outcome: str = "bounced"
    domain_deadlines: dict[str, int | None] = field(default_factory=dict)
    provider_deadline: int | None = None

    @property
    def end(self) -> int:
        return self.start + self.minutes * MINUTE


@dataclass
class Scenario:
    """Domains, episodes and decoys over ``days`` days from ``start``."""

    seed: int
    days: int
    start: int
    domains: list[Domain]
    episodes: list[Episode]
    #: What must stay quiet, as episodes (the nightly batch's rate-limiting comes with its
    #: domain every night; its episode fails nothing more, it names the nights).
    decoys: list[Episode]

    @property
    def end(self) -> int:
        return self.start + self.days * DAY

    def rows(self) -> Iterator[dict[str, object]]:
        """``counters`` rows, minute by minute (ascending buckets)."""
        rng = random.Random(self.seed)
        bad = [(d, e) for e in (*self.episodes, *self.decoys) for d in e.domains]
        for bucket in range(self.start, self.end, MINUTE):
            for domain in self.domains:
                yield from self._minute(rng, bucket, domain, bad)

    def _minute(
        self, rng: random.Random, bucket: int, domain: Domain, bad: list[tuple[str, Episode]]
    ) -> Iterator[dict[str, object]]:
        rate = domain.hourly / 60
        failures: dict[tuple[str, str], int] = {}
        batch = domain.batch and 2 * 3600 <= bucket % DAY < 2 * 3600 + 20 * MINUTE
        n = _poisson(rng, rate)
        if batch:
            extra = _poisson(rng, domain.batch / 60)
            n += extra
            _add(failures, ("deferred", "ratelimited"), _binomial(rng, extra, domain.batch_share))
        for (name, episode) in bad:
            if name == domain.name and episode.start <= bucket < episode.end:
                k = _binomial(rng, n - sum(failures.values()), episode.share)
                _add(failures, (episode.outcome, episode.reason), k)
        left = n - sum(failures.values())
        _add(failures, ("deferred", "blocked"), _binomial(rng, left, domain.background))
        delivered = n - sum(failures.values())
        row = {"bucket": bucket, "recipient_domain": domain.name, "provider": domain.provider,
               "stream": ""}  # fmt: skip
        if delivered:
            yield row | {"outcome": "delivered", "reason": "", "count": delivered}
        for (outcome, reason), k in sorted(failures.items()):
            if k:
                yield row | {"outcome": outcome, "reason": reason, "count": k}


def _add(into: dict[tuple[str, str], int], key: tuple[str, str], k: int) -> None:
    into[key] = into.get(key, 0) + k


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: fine for the few attempts a minute these domains see."""
    if mean <= 0:
        return 0
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _binomial(rng: random.Random, n: int, share: float) -> int:
    return sum(1 for _ in range(max(0, n)) if rng.random() < share)


def rejecting_scenario(seed: int = 7, start: int = START, days: int = 4) -> Scenario:
    """The four-day scenario of the module docstring (episodes on days 2-4)."""
    at = lambda day, hour, minute=0: start + day * DAY + hour * 3600 + minute * MINUTE  # noqa: E731
    domains = [
        Domain("gmail.com", "google", 600),
        Domain("yahoo.com", "yahoo", 240),
        Domain("aol.com", "yahoo", 200),
        Domain("outlook.com", "microsoft", 100),
        Domain("hotmail.com", "microsoft", 50),
        Domain("orange.fr", "orange", 100),
        Domain("comcast.net", "comcast", 10, batch=1800, batch_share=0.08),
        Domain("tiny.example", "other", 3),
        Domain("deadmx.example", "other", 30, background=0.0),
        Domain("corp.example", "other", 40),
    ]
    episodes = [
        Episode("gmail_high_volume", "google", ("gmail.com",), at(1, 14), 40, 0.7,
                reason="spamdetected", domain_deadlines={"gmail.com": 300},
                provider_deadline=300),
        Episode("yahoo_20_per_5min", "yahoo", ("yahoo.com",), at(2, 9), 30, 0.6,
                reason="badreputation", outcome="deferred",
                domain_deadlines={"yahoo.com": 300}, provider_deadline=300),
        Episode("microsoft_150_per_hour", "microsoft", ("outlook.com", "hotmail.com"),
                at(3, 10), 90, 0.8, domain_deadlines={"outlook.com": 900, "hotmail.com": None},
                provider_deadline=900),
        Episode("orange_100_per_hour_half", "orange", ("orange.fr",), at(2, 20), 60, 0.5,
                reason="policyviolation", outcome="deferred",
                domain_deadlines={"orange.fr": 900}, provider_deadline=900),
    ]  # fmt: skip
    decoys = [
        Episode("list_hygiene", "yahoo", ("aol.com",), at(2, 15), 120, 0.4,
                reason="userunknown"),
        Episode("tiny_domain", "other", ("tiny.example",), at(1, 20), 360, 1.0),
        Episode("nightly_batch", "comcast", ("comcast.net",), at(0, 2), days * 1440, 0.0,
                reason="ratelimited", outcome="deferred"),
        Episode("unreachable_mx", "other", ("deadmx.example",), at(2, 18), 720, 1.0,
                reason="networkerror", outcome="deferred"),
    ]  # fmt: skip
    return Scenario(seed, days, start, domains, episodes, decoys)
