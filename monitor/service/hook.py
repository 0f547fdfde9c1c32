"""``POST /ingest/kumomta``: KumoMTA's HTTP log hook, authenticated, capped, record by record.

A request carries one JSON log record, an array of them, or one per line.  With a token
configured, a request without ``Authorization: Bearer TOKEN`` is refused (401) before its body
is read.  The body is read as it arrives and refused (413) as soon as it passes the cap.  Each
record is handled on its own: one that is not JSON, is nested too deeply, holds a NUL
character or is not a KumoMTA log record is counted and skipped, and the records next to it
are stored; one the pipeline refuses (dated too far ahead) is counted there and named here.
A request whose records are mostly not stored answers 400 with the counts (its good records
are stored all the same), so a sender pointed at the wrong URL finds out.

Responses: 200 / 400 ``{"records", "events", "rejected", "problems": {why: count}}``;
401, 413, 503 (the store refused the batch: retry later) ``{"error": ...}``.
"""

from __future__ import annotations

import collections
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from monitor.collectors.mta.kumomta import record_events
from monitor.metrics import Metrics
from monitor.model import Event
from monitor.pipeline import Pipeline

__all__ = [
    "HOOK_CHECKPOINT", "MAX_HOOK_BODY_BYTES", "KumoHook", "Skipped", "events_of", "split_records",
]

log = logging.getLogger(__name__)

MAX_HOOK_BODY_BYTES = 10 << 20
#: The checkpoint key under which the log hook keeps its input counts.
HOOK_CHECKPOINT = "hook:kumomta"
REF = "http:/ingest/kumomta"
#: Rejected requests (bad token, too large) are stored at most this often: a flood of them
#: must not become a flood of database writes.  /metrics counts each one at once.
REJECTED_STORE_INTERVAL_SECONDS = 1.0

NOT_JSON = "not JSON"
TOO_DEEP = "nested too deeply"
NUL = "contains a NUL character"
NOT_A_RECORD = "not a KumoMTA log record"
REFUSED = "refused by the pipeline (dated too far ahead)"


def _has_nul(value: Any) -> bool:
    """Whether a NUL character is in any string of ``value`` (keys too); iterative, any depth."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class Skipped(Exception):
    """A record that is skipped; ``reason`` is one of the module's short reasons."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _decode(text: str, decoder: json.JSONDecoder, at: int = 0) -> tuple[Any, int]:
    """One JSON value from ``text`` at ``at``: (value, end), or Skipped saying why not."""
    try:
        return decoder.raw_decode(text, at)
    except RecursionError:
        raise Skipped(TOO_DEEP) from None
    except ValueError:
        raise Skipped(NOT_JSON) from None


def events_of(record: Any) -> list[Event]:
    """The events of one record from :func:`split_records`, or Skipped saying why not."""
    if isinstance(record, Skipped):
        raise record
    if _has_nul(record):
        raise Skipped(NUL)
    try:
        return record_events(record, "kumomta", REF)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError,
            RecursionError):  # fmt: skip
        raise Skipped(NOT_A_RECORD) from None


def split_records(text: str) -> Iterator[Any]:
    """Each record of a body: the decoded value, or a Skipped instance saying why not."""
    decoder = json.JSONDecoder()
    text = text.strip()
    if text.startswith("["):
        # An array, element by element: a bad element ends what can be found of it, the
        # elements before it stand.
        at = 1
        while True:
            while at < len(text) and text[at] in " \t\r\n,":
                at += 1
            if at >= len(text) or text[at] == "]":
                return
            try:
                value, at = _decode(text, decoder, at)
            except Skipped as exc:
                yield exc
                return
            yield value
    if text.startswith("{"):
        try:  # one object, perhaps spread over several lines
            value, end = _decode(text, decoder)
        except Skipped:
            pass
        else:
            if end == len(text):
                yield value
                return
    for line in text.splitlines():
        if line.strip():
            try:
                value, end = _decode(line.strip(), decoder)
                if end != len(line.strip()):
                    raise Skipped(NOT_JSON)
            except Skipped as exc:
                yield exc
                continue
            yield value


class KumoHook:
    """The ASGI endpoint: ``Route("/ingest/kumomta", KumoHook(...), methods=["POST"])``."""

    def __init__(self, pipeline: Pipeline, metrics: Metrics, *, token: str | None = None,
                 max_body_bytes: int = MAX_HOOK_BODY_BYTES) -> None:  # fmt: skip
        self.pipeline = pipeline
        self.metrics = metrics
        self.token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes
        self.lock = threading.Lock()  # the pipeline batches; one request at a time fills it
        # What the hook has read, kept in a checkpoint stored with each request's events, so
        # a restarted service's counters (seeded from the store) include it.
        saved = pipeline.store.checkpoint(HOOK_CHECKPOINT) or {}
        self.counts: dict[str, Any] = saved.get("counts") or {
            "source": "kumomta", "lines": 0, "rejected": {},
        }  # fmt: skip
        self.pending: collections.Counter[str] = collections.Counter()  # rejected, not stored
        self.pending_lock = threading.Lock()
        self.rejected_stored_at = float("-inf")
        self.failure: str | None = None  # why the last request could not be stored
        self.last_request_at: float | None = None

    def health(self) -> dict[str, object]:
        """The hook's status for /healthz."""
        if self.failure:
            return {"status": "failing", "reason": self.failure}
        return {"status": "ok", "last_request_at": self.last_request_at}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        response = await self.handle(Request(scope, receive))
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        if self.token is not None and not self._authorized(request):
            await self._reject("bad_auth")
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        try:
            body = await self._read_body(request)
        except ClientDisconnect:
            # Cut off (by the sender, or by the request deadline): nothing of it is stored;
            # the sender that meant it sends it again.
            await self._reject("incomplete")
            return Response(status_code=400)
        if body is None:
            await self._reject("too_large")
            # Connection: close: the rest of the body is not read, so the connection ends.
            return JSONResponse({"error": f"body over {self.max_body_bytes} bytes"},
                                status_code=413, headers={"Connection": "close"})  # fmt: skip
        try:
            records, events, problems = await run_in_threadpool(self._ingest, body)
        except Exception:
            log.exception("the KumoMTA hook could not store a request; the sender should retry")
            return JSONResponse({"error": "storing failed; retry later"}, status_code=503)
        bad = sum(problems.values())
        answer: dict[str, object] = {"records": records, "events": events, "rejected": bad,
                                     "problems": dict(sorted(problems.items()))}  # fmt: skip
        if records == 0 or 2 * bad > records:
            error = "most records were not stored: see problems"
            return JSONResponse({"error": error} | answer, status_code=400)
        return JSONResponse(answer)

    def _authorized(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        assert self.token is not None
        # Constant time: the comparison must not tell how much of a guess was right.
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                  self.token)

    async def _read_body(self, request: Request) -> bytes | None:
        """The body, or None once it passes the cap (the rest is never read); ClientDisconnect."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_bytes:
                return None
        return bytes(body)

    async def _reject(self, reason: str) -> None:
        self.metrics.rejected.labels("kumomta", reason).inc()
        with self.pending_lock:
            self.pending[reason] += 1
        if time.monotonic() - self.rejected_stored_at >= REJECTED_STORE_INTERVAL_SECONDS:
            self.rejected_stored_at = time.monotonic()
            try:
                await run_in_threadpool(self._store_pending)
            except Exception:  # counted on /metrics already; stored with the next request
                log.warning("storing the KumoMTA hook's rejected counts failed", exc_info=True)

    def _store_pending(self) -> None:
        with self.lock:
            self._store_counts(0, {})

    def _store_counts(self, lines: int, rejected: dict[str, int]) -> None:
        """Add to the counts and store them with the pending events (hold self.lock)."""
        with self.pending_lock:
            pending, self.pending = self.pending, collections.Counter()
        counts = {"source": "kumomta", "lines": self.counts["lines"] + lines,
                  "rejected": dict(self.counts["rejected"])}  # fmt: skip
        for reason, n in (collections.Counter(rejected) + pending).items():
            counts["rejected"][reason] = counts["rejected"].get(reason, 0) + n
        try:
            self.pipeline.flush(checkpoint=(HOOK_CHECKPOINT, {"counts": counts}))
        except Exception:
            with self.pending_lock:
                self.pending.update(pending)
            raise
        self.counts = counts

    def _ingest(self, body: bytes) -> tuple[int, int, collections.Counter[str]]:
        """Store the body's records: (records, events, skipped by reason)."""
        self.last_request_at = time.time()
        problems: collections.Counter[str] = collections.Counter()
        records = events = 0
        refused = self.pipeline.refused  # counted (and logged) by the pipeline itself
        with self.lock:
            try:
                for record in split_records(body.decode("utf-8", "replace")):
                    records += 1
                    try:
                        new = events_of(record)
                    except Skipped as skipped:
                        problems[skipped.reason] += 1
                        continue
                    before = refused.total()
                    for event in new:
                        self.pipeline.put(event)
                    if refused.total() > before:
                        problems[REFUSED] += 1
                    events += len(new) - (refused.total() - before)
                unparsed = sum(problems.values()) - problems[REFUSED]
                self._store_counts(records, {"unparsed": unparsed})
            except Exception:
                self.pipeline.discard()
                self.failure = "storing failed"
                raise
            self.failure = None
        self.metrics.count_input("kumomta", records, unparsed)
        if unparsed:
            log.warning("KumoMTA hook: %d of %d records skipped (%s)", unparsed, records,
                        ", ".join(f"{why}: {n}" for why, n in sorted(problems.items())))
        return records, events, problems
