"""Which counter rows a rollup reader sums, and what a row counts towards.

A :class:`View` names a counters table, the column that is the subject (recipient domain,
or the value of a ``sender_counters`` dimension), the rows it keeps and, through
``extras``, the failure views read alongside it (bounces hard/soft, failures by blame).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, case, literal, literal_column

from monitor.classify.rules import BLAMES
from monitor.store.schema import counters, failure_counters, sender_counters

__all__ = [
    "FAILURES",
    "FAILURE_BLAME",
    "FAILURE_HARDNESS",
    "FAILURE_VIEWS",
    "RECIPIENT_DOMAINS",
    "REJECTING_REASONS",
    "SENDER_DOMAINS",
    "SENDING_IPS",
    "STREAMS",
    "Key",
    "View",
    "sender_view",
]

#: Reasons that mean the receiving side refuses *us* (reputation, policy, rate or block),
#: so a rise of their share says the domain started rejecting our mail.  Recipient-side
#: reasons (userunknown, mailboxfull, hostunknown, hasmoved, suspend, notaccept: the
#: domain takes no mail at all) and our own or network faults do not count: one typo'd
#: address must not look like a block.  ``ratelimited`` is the later Sisimai spelling of
#: speeding + toomanyconn.
REJECTING_REASONS = frozenset(
    {
        "blocked",  # IP/domain on a block list, "550 5.7.1 ... blocked"
        "badreputation",  # Gmail 421 4.7.0 / 550 5.7.1 "low reputation"
        "spamdetected",  # 550 5.7.1 "likely unsolicited mail" (Gmail 4.7.28 too)
        "policyviolation",  # the receiver's policy refuses the message
        "authfailure",  # SPF/DKIM/DMARC required and failing (5.7.26)
        "requireptr",  # no or mismatching reverse DNS for the sending IP
        "securityerror",
        "rejected",  # the envelope sender is refused
        "speeding",
        "toomanyconn",
        "ratelimited",
    }
)

Key = tuple[str, str]  # (provider, recipient domain) or (provider, sending IP)


@dataclass(frozen=True)
class View:
    """Which counter rows a reader sums, and the column that names the subject.

    Windows read only rows whose subject is known (not ``""``); ``where`` is the rest.
    A row counts towards the ``Counts`` field its outcome names, or, with ``field`` set,
    towards ``prefix`` + that column's value (``bounced_hard``, ``blame_policy``); such a
    view's ``where`` must keep that value to a known field.
    """

    table: Table
    subject: str  # the column that is the key's second part
    where: tuple[ColumnElement[bool], ...]
    field: str = "outcome"
    prefix: str = ""
    #: Views of the same subjects read alongside and added into the same windows.
    extras: tuple[View, ...] = ()

    @property
    def c(self) -> Any:
        return self.table.c

    @property
    def column(self) -> Any:
        return self.table.c[self.subject]

    @property
    def outcome(self) -> Any:
        return self.table.c[self.field]

    def rejecting(self) -> Any:
        """1 for rows that count as rejecting too (only outcome views have them)."""
        if self.field != "outcome":
            return literal_column("0").label("rejecting")
        return _rejecting(self)

    def grouped(self, rejecting: Any, *columns: Any) -> list[Any]:
        """``columns``, the field and ``rejecting`` (the very expression selected, so
        PostgreSQL sees the same parameters), to group by; a constant is left out."""
        out = [*columns, self.outcome]
        if self.field == "outcome":
            out.append(rejecting)
        return out

    def name(self, value: str) -> str:
        """The ``Counts`` field a row's field value counts to."""
        return self.prefix + value if self.prefix else value


def _failure_views(
    table: Table, subject: str, where: tuple[ColumnElement[bool], ...]
) -> tuple[View, View]:
    """The hard/soft and blame views of ``table``'s failure rows (schema 6 and 8): bounces
    count to ``bounced_hard``/``_soft`` (unclassified ones, ``hard = ""``, in ``bounced``
    only), failures (deferred attempts, bounces, expiries) to ``blame_<blame>``."""
    c = table.c
    return (
        View(table, subject, (*where, c.outcome == "bounced", c.hard.in_(("hard", "soft"))),
             field="hard", prefix="bounced_"),
        View(table, subject, (*where, c.blame.in_(sorted(BLAMES))), field="blame",
             prefix="blame_"),
    )  # fmt: skip


#: Failures per (provider, recipient domain), our own notices left out (schema 6).
FAILURES = View(failure_counters, "recipient_domain", (failure_counters.c.stream != "ndr",))
#: What ``failure_counters`` adds to the recipient-domain windows.
FAILURE_HARDNESS, FAILURE_BLAME = FAILURE_VIEWS = _failure_views(
    FAILURES.table, FAILURES.subject, FAILURES.where
)
#: (provider, recipient domain): our own non-delivery notices are left out.
RECIPIENT_DOMAINS = View(
    counters, "recipient_domain", (counters.c.stream != "ndr",), extras=FAILURE_VIEWS
)


def sender_view(dimension: str) -> View:
    """(provider, value) of one ``sender_counters`` dimension (``SENDER_DIMENSIONS``), with
    its failures by hard/soft and blame (schema 8) as extras."""
    c = sender_counters.c
    where = (c.dimension == dimension, c.ndr == 0)
    return View(
        sender_counters, "value", where, extras=_failure_views(sender_counters, "value", where)
    )


#: (provider, sending IP) from ``sender_counters``: the same outcomes seen from our side,
#: for the sources that say which address sent.
SENDING_IPS = sender_view("sending_ip")
SENDER_DOMAINS = sender_view("sender_domain")
STREAMS = sender_view("stream")


def _rejecting(view: View) -> Any:
    return case(
        (
            and_(
                view.c.outcome.in_(("deferred", "bounced")),
                view.c.reason.in_(sorted(REJECTING_REASONS)),
            ),
            literal(1),
        ),
        else_=literal(0),
    ).label("rejecting")
