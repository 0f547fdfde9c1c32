"""Threads: the connected set of messages around one Message-ID, and what breaks them.

    thread = thread_of(conn, "order-7@app.example")
    thread["messages"]      # oldest first: direction, subject, parents, delivery states
    findings(conn, since=t) # orphan replies, unthreaded replies, lost Re:, bad or reused ids

A message is known from what the sources say of it: outbound messages from the store's
deliveries (their states) and their thread headers (``message_headers``: Postfix
``header_checks`` WARN lines, ``mailmon send``, ESP webhook payloads), inbound messages
from the mailboxes (``inbound_messages``).
Two messages are joined when one names the other in ``In-Reply-To`` or ``References``
(RFC 5322 section 3.6.4), or when the mailbox collector linked one to the other.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, or_, select

from monitor.collectors.mailbox.records import InboundMessage
from monitor.collectors.mailbox.route import has_reply_prefix, message_ids, normal_subject
from monitor.store.records import kind_of
from monitor.store.schema import deliveries
from monitor.threads.headers import MessageHeader

__all__ = ["FINDINGS", "MAX_MESSAGES", "findings", "thread_of", "well_formed"]

#: At most this many messages are gathered into one thread.
MAX_MESSAGES = 500
#: The kinds of broken-thread findings, as ``mailmon threads check`` counts them.
FINDINGS = ("orphan_reply", "unthreaded_reply", "lost_re", "malformed_message_id",
            "reused_message_id", "reply_to_noreply")  # fmt: skip
#: Delivery states of the message itself (not the rows inbound events make on their own).
_SENT_STATES = ("submitted", "deferred", "delivered", "bounced", "expired", "rejected",
                "suppressed", "dropped")  # fmt: skip
# RFC 5322 section 3.6.4 msg-id: id-left "@" id-right, no spaces or brackets inside.
_WELL_FORMED = re.compile(r"[^\s<>@\"]+@[^\s<>@\"]+")


def well_formed(message_id: str) -> bool:
    return bool(_WELL_FORMED.fullmatch(message_id))


def _table(conn: Connection, kind: str) -> Any:
    table = kind_of(kind).table
    return table if conn.dialect.has_table(conn, table.name) else None


class _Facts:
    """What the store says of a set of Message-IDs, loaded as the thread grows."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.inbound = _table(conn, InboundMessage.kind)
        self.headers = _table(conn, MessageHeader.kind)
        self.nodes: dict[str, dict[str, Any]] = {}

    def node(self, mid: str) -> dict[str, Any]:
        return self.nodes.setdefault(mid, {
            "message_id": mid, "direction": None, "at": None, "sender": None,
            "subject": None, "reply_prefix": False, "in_reply_to": None, "references": [],
            "linked_to": None, "link": None, "category": None, "mailbox": None,
            "to_noreply": False, "deliveries": [],
        })  # fmt: skip

    def load(self, mids: list[str]) -> set[str]:
        """Fill the nodes of ``mids``; return the Message-IDs they are joined to."""
        joined: set[str] = set()
        c = deliveries.c
        queues: dict[str, str] = {}
        for row in self.conn.execute(select(
                c.message_id, c.queue_id, c.recipient, c.state, c.reason, c.sender,
                c.submitted_at, c.last_event_at).where(
                c.message_id.in_(mids), c.state.in_(_SENT_STATES))):  # fmt: skip
            node = self.node(row.message_id)
            node["direction"] = "outbound"
            node["sender"] = node["sender"] or row.sender
            at = row.submitted_at or row.last_event_at
            node["at"] = at if node["at"] is None else min(node["at"], at)
            node["deliveries"].append({"recipient": row.recipient, "state": row.state,
                                       "reason": row.reason})  # fmt: skip
            if row.queue_id:
                queues[row.queue_id] = row.message_id
        if self.headers is not None:
            h = self.headers.c
            # queue ids whose Message-ID header names one of these
            for qrow in self.conn.execute(select(h.queue_id, h.value).where(
                    h.name == "message-id")):  # fmt: skip
                ids = message_ids(qrow.value)
                if ids and ids[0] in mids:
                    queues.setdefault(qrow.queue_id, ids[0])
            for hrow in self.conn.execute(select(h.queue_id, h.name, h.value, h.occurred_at,
                                                 h.sender).where(h.queue_id.in_(list(queues)))):
                node = self.node(queues[hrow.queue_id])
                node["direction"] = node["direction"] or "outbound"
                node["sender"] = node["sender"] or hrow.sender
                if hrow.name == "subject":
                    node["subject"] = normal_subject(hrow.value)
                    node["reply_prefix"] = has_reply_prefix(hrow.value)
                elif hrow.name == "in-reply-to":
                    ids = message_ids(hrow.value)
                    node["in_reply_to"] = ids[0] if ids else None
                    joined.update(ids)
                elif hrow.name == "references":
                    node["references"] = message_ids(hrow.value)
                    joined.update(node["references"])
            # children: outbound messages that name one of these
            names = or_(*(h.value.contains(f"<{m}>") for m in mids))
            children = {r.queue_id for r in self.conn.execute(select(h.queue_id).where(
                h.name.in_(("in-reply-to", "references")), names))}  # fmt: skip
            if children:
                for crow in self.conn.execute(select(h.queue_id, h.value).where(
                        h.queue_id.in_(list(children)), h.name == "message-id")):  # fmt: skip
                    joined.update(message_ids(crow.value)[:1])
                joined.update(r.message_id for r in self.conn.execute(select(c.message_id).where(
                    c.queue_id.in_(list(children)), c.message_id.is_not(None))))
        if self.inbound is not None:
            i = self.inbound.c
            # reports (DSNs, complaints) are about a delivery: its state says them
            for irow in self.conn.execute(select(self.inbound).where(
                    i.category.not_in(("bounce", "complaint")),
                    or_(i.message_id.in_(mids), i.linked_message_id.in_(mids),
                        i.in_reply_to.in_(mids),
                        *(i.references.contains(m) for m in mids)))).mappings():  # fmt: skip
                node = self.node(irow["message_id"])
                # read from our mailbox: inbound, whatever our MTA logged relaying it there
                node.update(direction="inbound", deliveries=[])
                node.update(sender=irow["sender"], subject=irow["subject"],
                            reply_prefix=bool(irow["reply_prefix"]),
                            in_reply_to=irow["in_reply_to"], linked_to=irow["linked_message_id"],
                            link=irow["link"], category=irow["category"],
                            mailbox=irow["mailbox"], to_noreply=bool(irow["to_noreply"]),
                            references=[r for r in (irow["references"] or "").split(",") if r])
                node["at"] = irow["occurred_at"]
                joined.add(irow["message_id"])
                joined.update(x for x in (irow["linked_message_id"], irow["in_reply_to"]) if x)
                joined.update(node["references"])
        return joined


def thread_of(conn: Connection, message_id: str) -> dict[str, Any] | None:
    """The thread ``message_id`` belongs to, oldest message first; None when unknown."""
    mid = message_id.strip().strip("<>")
    facts = _Facts(conn)
    seen: set[str] = set()
    frontier = {mid}
    while frontier and len(seen) < MAX_MESSAGES:
        batch = sorted(frontier)[: MAX_MESSAGES - len(seen)]
        seen.update(batch)
        frontier = facts.load(batch) - seen
    known = {k: v for k, v in facts.nodes.items() if v["direction"] is not None}
    if mid not in known:
        return None
    messages = sorted(known.values(), key=lambda n: (n["at"] or 0.0, n["message_id"]))
    for node in messages:
        parent = node["in_reply_to"] or (node["references"][-1] if node["references"] else None)
        node["parent"] = parent if parent in known else node["linked_to"]
        node["parent_seen"] = parent is None or parent in known
    ordered = _conversation_order(messages)
    return {"thread_id": ordered[0]["message_id"], "messages": ordered,
            "truncated": len(seen) >= MAX_MESSAGES}  # fmt: skip


def _conversation_order(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each message after its parent (depth first), siblings by time: clocks of senders
    and MTAs differ, the order of answers does not."""
    children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    ids = {m["message_id"] for m in messages}
    for m in messages:  # already by time
        parent = m["parent"] if m["parent"] in ids and m["parent"] != m["message_id"] else None
        children[parent].append(m)
    out: list[dict[str, Any]] = []
    done: set[str] = set()
    stack = list(reversed(children[None])) or [messages[0]]
    while stack:
        m = stack.pop()
        if m["message_id"] in done:
            continue
        done.add(m["message_id"])
        out.append(m)
        stack.extend(reversed(children[m["message_id"]]))
    out.extend(m for m in messages if m["message_id"] not in done)  # a cycle of references
    return out


def findings(conn: Connection, *, since: float | None = None,
             until: float | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Broken-thread findings among the messages of ``[since, until)``, oldest first."""
    out: list[dict[str, Any]] = []
    inbound = _table(conn, InboundMessage.kind)
    senders: dict[str, set[str]] = defaultdict(set)
    if inbound is not None:
        i = inbound.c
        query = select(inbound)
        if since is not None:
            query = query.where(i.occurred_at >= since)
        if until is not None:
            query = query.where(i.occurred_at < until)
        for r in conn.execute(query).mappings():
            mid, at = r["message_id"], r["occurred_at"]
            threaded = bool(r["in_reply_to"] or r["references"])
            if r["category"] in ("reply", "auto_reply") and threaded and r["link"] == "none":
                out.append(_finding("orphan_reply", mid, at, "inbound",
                                    f"answers {r['in_reply_to'] or r['references']}, never seen"))
            if r["category"] == "reply" and r["link"] in ("in-reply-to", "references") \
                    and not r["reply_prefix"]:  # fmt: skip
                out.append(_finding("lost_re", mid, at, "inbound",
                                    f"answers {r['linked_message_id']} without Re:"))
            if r["to_noreply"]:
                out.append(_finding("reply_to_noreply", mid, at, "inbound",
                                    f"from {r['sender']} to mailbox {r['mailbox']}"))
            if not mid.startswith("digest:") and not well_formed(mid):
                out.append(_finding("malformed_message_id", mid, at, "inbound", "not id@domain"))
            if r["sender"]:
                senders[mid].add(r["sender"].lower())
        for mid, who in senders.items():
            if len(who) > 1:
                out.append(_finding("reused_message_id", mid, None, "inbound",
                                    f"sent by {', '.join(sorted(who))}"))
    inbound_ids = set(senders)
    if inbound is not None:
        inbound_ids |= {r[0] for r in conn.execute(select(inbound.c.message_id))}
    out.extend(f for f in _outbound_findings(conn, since, until)
               if f["message_id"] not in inbound_ids)  # relayed to our mailboxes: inbound
    return sorted(out, key=lambda f: (f["at"] or 0.0, f["kind"], f["message_id"]))


def _outbound_findings(conn: Connection, since: float | None,
                       until: float | None) -> Iterable[dict[str, Any]]:  # fmt: skip
    headers = _table(conn, MessageHeader.kind)
    if headers is not None:
        h = headers.c
        query = select(h.queue_id, h.name, h.value, h.occurred_at)
        if since is not None:
            query = query.where(h.occurred_at >= since)
        if until is not None:
            query = query.where(h.occurred_at < until)
        by_queue: dict[str, dict[str, Any]] = defaultdict(dict)
        for r in conn.execute(query):
            by_queue[r.queue_id][r.name] = r.value
            by_queue[r.queue_id]["at"] = r.occurred_at
        ids: dict[str, set[str]] = defaultdict(set)
        for queue, got in by_queue.items():
            named = message_ids(got.get("message-id"))
            mid = named[0] if named else f"queue:{queue}"
            at = got["at"]
            threaded = "in-reply-to" in got or "references" in got
            if has_reply_prefix(got.get("subject")) and not threaded:
                yield _finding("unthreaded_reply", mid, at, "outbound",
                               "Re: subject without In-Reply-To or References")
            if threaded and "subject" in got and not has_reply_prefix(got["subject"]):
                yield _finding("lost_re", mid, at, "outbound", "a reply without Re:")
            if "message-id" in got:
                ids[mid].add(normal_subject(got.get("subject")) or "")
        for mid, subjects in ids.items():
            if len(subjects) > 1:
                yield _finding("reused_message_id", mid, None, "outbound",
                               f"{len(subjects)} different subjects")
    c = deliveries.c
    query = select(c.message_id, c.submitted_at).where(
        c.message_id.is_not(None), c.state.in_(_SENT_STATES)).distinct()
    if since is not None:
        query = query.where(c.last_event_at >= since)
    if until is not None:
        query = query.where(c.last_event_at < until)
    seen: set[str] = set()
    for r in conn.execute(query):
        if r.message_id not in seen and not well_formed(r.message_id):
            seen.add(r.message_id)
            yield _finding("malformed_message_id", r.message_id, r.submitted_at, "outbound",
                           "not id@domain")


def _finding(kind: str, mid: str, at: float | None, direction: str,
             detail: str) -> dict[str, Any]:  # fmt: skip
    return {"kind": kind, "message_id": mid, "at": at, "direction": direction,
            "detail": detail}  # fmt: skip
