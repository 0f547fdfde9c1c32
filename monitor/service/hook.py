"""HTTP ingest endpoints: a source's records posted, authenticated, capped, record by record.

:class:`SourceEndpoint` takes any :class:`~monitor.collectors.source.Source` whose units a
``split`` function finds in a request body, and runs them through the driver.  KumoMTA's
log hook (``POST /ingest/kumomta``, :func:`kumomta_hook`) is one: a request carries one
JSON log record, an array of them, or one per line.  With a token
configured, a request without ``Authorization: Bearer TOKEN`` (or, with a username configured,
``Authorization: Basic base64(USERNAME:TOKEN)``) is refused (401) before its body is read.
The body is read as it arrives and refused (413) as soon as it passes the cap.  Each
record is handled on its own: one the source does not understand (for KumoMTA: not JSON,
nested too deeply, holding a NUL character, not a log record) is counted and skipped, and
the records next to it are stored; one the pipeline refuses (dated too far ahead) is
counted there and named here.  A request whose records are mostly not stored answers 400
with the counts (its good records are stored all the same), so a sender pointed at the
wrong URL finds out.

Responses: 200 / 400 ``{"records", "events", "rejected", "problems": {why: count}}``;
401, 413, 503 (the store refused the batch: retry later) ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hmac
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from monitor.collectors.esp.base import Refused, Verifier
from monitor.collectors.jsonbody import split_records
from monitor.collectors.mta.kumomta_records import KumoRecords
from monitor.collectors.source import Source
from monitor.driver import Driver
from monitor.metrics import Metrics
from monitor.model import Event
from monitor.pipeline import Pipeline
from monitor.service.group import Batch, group_of

__all__ = ["MAX_HOOK_BODY_BYTES", "SourceEndpoint", "kumomta_hook"]

log = logging.getLogger(__name__)

MAX_HOOK_BODY_BYTES = 10 << 20
#: Bodies up to this size are checked and fed on the event loop when nothing in that waits
#: (a few milliseconds of work at most); larger ones on a thread.
INLINE_BODY_BYTES = 64 << 10
REFUSED = "refused by the pipeline (dated too far ahead)"
STORE_REFUSED = "refused by the database"

#: what feeding a request gave: records, events, skipped by reason, the events' ids
_Fed = tuple[int, int, collections.Counter[str], list[str]]


def kumomta_hook(pipeline: Pipeline, metrics: Metrics, *, token: str | None = None,
                 username: str | None = None,
                 max_body_bytes: int = MAX_HOOK_BODY_BYTES) -> SourceEndpoint:  # fmt: skip
    """KumoMTA's HTTP log hook, for ``POST /ingest/kumomta``."""
    return SourceEndpoint(pipeline, metrics, KumoRecords(), split_records, name="hook",
                          path="/ingest/kumomta", token=token, username=username,
                          max_body_bytes=max_body_bytes)  # fmt: skip


class SourceEndpoint:
    """The ASGI endpoint of one source: ``Route(endpoint.path, endpoint, methods=["POST"])``.

    ``split`` finds the units in a body (decoded as UTF-8).  A request's events are stored
    before it is answered; there is no position to checkpoint: a sender that got no 200
    sends the request again, and its events are then duplicates the store drops.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        metrics: Metrics,
        source: Source[Any],
        split: Callable[[str], Iterable[Any]],
        *,
        path: str,
        name: str | None = None,
        token: str | None = None,
        username: str | None = None,
        verifier: Verifier | None = None,
        max_body_bytes: int = MAX_HOOK_BODY_BYTES,
    ) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.driver = Driver(pipeline, metrics)
        self.source = source
        self.split = split
        self.path = path
        self.ref = f"http:{path}"
        #: its part of /healthz
        self.name = name or f"ingest:{source.kind}"
        self.token = token.encode() if token else None
        # The Authorization values taken, whole: a bearer token, and Basic with a username.
        self.accepted = [b"Bearer " + self.token] if self.token else []
        if self.token and username:
            pair = base64.b64encode(username.encode() + b":" + self.token)
            self.accepted.append(b"Basic " + pair)
        self.verifier = verifier
        #: a small request is checked and fed on the event loop: nothing in it waits
        self.inline = verifier is None or getattr(verifier, "offline", False)
        self.max_body_bytes = max_body_bytes
        # Requests fill the pipeline's batch together and share its commits (group commit),
        # whichever endpoint takes them.
        self.group = group_of(pipeline)
        self.refused_logged: dict[str, float] = {}  # reason -> when last logged
        self.failure: str | None = None  # why the last request could not be stored
        self.last_request_at: float | None = None

    def routes(self) -> list[BaseRoute]:
        return [Route(self.path, self, methods=["POST"])]

    def health(self) -> dict[str, object]:
        """The endpoint's status for /healthz."""
        if self.failure:
            return {"status": "failing", "reason": self.failure}
        return {"status": "ok", "last_request_at": self.last_request_at}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        response = await self.handle(Request(scope, receive))
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        if self.token is not None and not self._authorized(request):
            await self._reject("bad_auth")
            return JSONResponse({"error": "missing or wrong credentials"}, status_code=401,
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
        committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            if len(body) <= INLINE_BODY_BYTES and self.inline:
                # Short work: a hop to a thread and back would cost more than it does.
                fed, batch = self._verify_and_feed(request.headers, body, committed)
            else:  # off the event loop, in one hop: a verifier may fetch a certificate
                fed, batch = await run_in_threadpool(self._verify_and_feed, request.headers,
                                                     body, committed)  # fmt: skip
            await committed  # holding no thread: the group's leader commits the batch
            records, events, problems = self._outcome(fed, batch)
        except Refused as refused:
            await self._reject(refused.reason)
            self._log_refused(refused, request)
            return JSONResponse({"error": refused.reason}, status_code=refused.status)
        except Exception:
            log.exception("%s could not store a request; the sender should retry", self.path)
            return JSONResponse({"error": "storing failed; retry later"}, status_code=503)
        bad = sum(problems.values())
        answer: dict[str, object] = {"records": records, "events": events, "rejected": bad,
                                     "problems": dict(sorted(problems.items()))}  # fmt: skip
        if records == 0 or 2 * bad > records:
            error = "most records were not stored: see problems"
            return JSONResponse({"error": error} | answer, status_code=400)
        return JSONResponse(answer)

    def _authorized(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
        # The scheme is case-insensitive (RFC 9110 section 11.1), the credential is not.
        presented = f"{scheme.capitalize()} {given.strip()}".encode("utf-8", "replace")
        matched = False
        for expected in self.accepted:  # constant time, every one compared: nothing to time
            matched |= hmac.compare_digest(presented, expected)
        return matched

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
        self.metrics.rejected.labels(self.source.label, reason).inc()

    def _log_refused(self, refused: Refused, request: Request) -> None:
        """One line per reason and minute (a flood is counted on /metrics), never the body."""
        now = time.monotonic()
        if now - self.refused_logged.get(refused.reason, float("-inf")) < 60.0:
            return
        self.refused_logged[refused.reason] = now
        client = request.client.host if request.client else "unknown"
        log.warning("%s: refused a request from %s: %s (%s); further ones this minute are only "
                    "counted", self.path, client, refused.reason, refused)  # fmt: skip

    def _verify_and_feed(self, headers: Any, body: bytes,
                         committed: asyncio.Future[None]) -> tuple[_Fed, Batch]:  # fmt: skip
        if self.verifier is not None:
            self.verifier.verify(headers, body)
        return self._feed(body, committed)

    def _ingest(self, body: bytes) -> tuple[int, int, collections.Counter[str]]:
        """Store the body's records: (records, events, skipped by reason).  Returns once the
        transaction holding its events has committed (with other requests' events)."""
        fed, batch = self._feed(body)
        batch.done.wait()
        return self._outcome(fed, batch)

    def _feed(self, body: bytes,
              committed: asyncio.Future[None] | None = None) -> tuple[_Fed, Batch]:  # fmt: skip
        """Put the body's records into the pipeline's pending batch; the batch joined."""
        self.last_request_at = time.time()
        refused = self.pipeline.refused  # counted (and logged) by the pipeline itself

        def feed() -> _Fed:
            problems: collections.Counter[str] = collections.Counter()
            records = events = 0
            ids: list[str] = []
            before = collections.Counter(self.source.stats.unparsed)
            for record in self.split(body.decode("utf-8", "replace")):
                records += 1
                was_refused = refused.total()
                new = self.driver.feed(self.source, record, self.ref)
                now_refused = refused.total() - was_refused
                if now_refused:
                    problems[REFUSED] += 1
                made = [item for item in new if isinstance(item, Event)]  # not message_headers
                events += len(made) - now_refused
                ids += [item.id for item in made]
            problems.update(self.source.stats.unparsed - before)
            return records, events, problems, ids

        try:
            return self.group.join(self.driver, self.source, feed, committed)
        except Exception:
            self.failure = "storing failed"
            raise

    def _outcome(self, fed: _Fed, batch: Batch) -> tuple[int, int, collections.Counter[str]]:
        """(records, events, skipped by reason) of a committed request; raises if its batch
        was not stored (not counted either: the sender retries the request)."""
        try:
            rejected = batch.check()
        except Exception:
            self.failure = "storing failed"
            raise
        self.failure = None
        records, events, problems, ids = fed
        # Events the database refused on their own were left out, their neighbours stored.
        if rejected and (refused_here := sum(1 for i in ids if i in rejected)):
            problems[STORE_REFUSED] += refused_here
            events -= refused_here
        unparsed = sum(problems.values()) - problems[REFUSED] - problems[STORE_REFUSED]
        if unparsed:
            log.warning("%s: %d of %d records skipped (%s)", self.path, unparsed, records,
                        ", ".join(f"{why}: {n}" for why, n in sorted(problems.items())))
        return records, events, problems
