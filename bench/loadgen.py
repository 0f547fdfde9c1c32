"""A light HTTP/1.1 load generator: requests built and signed beforehand, sent over raw asyncio
keep-alive connections, from one or several processes.

Its cost per request is writing prepared bytes and reading one small response, so the
generator is not what a latency figure measures.  Two shapes:

- :func:`closed_loop`: ``concurrency`` connections posting back to back (throughput);
- :func:`open_loop`: request i due at ``start + i / rate`` whatever the answers, its latency
  counted from that moment (a stall counts for every request it delays: no coordinated
  omission); a request due while ``max_connections`` are unanswered is not sent and counted.

:func:`run_processes` splits a phase over processes (forked: the prepared requests are
shared, not copied); each reports its results and its own CPU seconds.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import resource
import time
from collections.abc import Callable, Sequence
from typing import Any

#: (path, body, headers) of one request
Request = tuple[str, bytes, dict[str, str]]
#: (latency seconds, HTTP status or 0 for a transport error, events acknowledged)
Result = tuple[float, int, int, float]


def encode(host: str, request: Request) -> bytes:
    """The request's bytes on the wire: a keep-alive POST with its Content-Length."""
    path, body, headers = request
    head = [f"POST {path} HTTP/1.1", f"host: {host}", f"content-length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, raw: bytes) -> tuple[int, int]:
        """(status, events acknowledged); reconnects when the server closed the connection.

        A keep-alive connection the server closed while it was idle is opened again, and a
        request that met that close before any answer byte is sent once more on a new
        connection, as HTTP clients do (the server never read it)."""
        reused = self.writer is not None and not self.writer.is_closing()
        if reused and self.reader is not None and self.reader.at_eof():
            self.close()
            reused = False
        try:
            return await self._exchange(raw)
        except asyncio.IncompleteReadError as exc:
            if not reused or exc.partial:
                raise
        except (ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
        # Sent again: had the server stored it after all, the copy is a duplicate it drops.
        return await self._exchange(raw)

    async def _exchange(self, raw: bytes) -> tuple[int, int]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None and self.writer is not None
        try:
            self.writer.write(raw)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            body = await self.reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        events = int(json.loads(body).get("events", 0)) if status == 200 else 0
        return status, events

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def closed_loop(host: str, port: int, raws: Sequence[bytes], concurrency: int,
                      start: float, seconds: float) -> tuple[list[Result], dict[str, int]]:  # fmt: skip
    """``concurrency`` connections each posting the next prepared request as soon as the one
    before is answered, from monotonic time ``start`` for ``seconds`` (or until the requests
    run out: counted as ``ran_out``)."""
    results: list[Result] = []
    errors: dict[str, int] = {}
    deadline = start + seconds
    queue = iter(raws)
    await asyncio.sleep(max(0.0, start - time.monotonic()))

    async def worker() -> None:
        connection = Connection(host, port)
        try:
            while time.monotonic() < deadline:
                raw = next(queue, None)
                if raw is None:
                    errors["ran_out"] = errors.get("ran_out", 0) + 1
                    return
                sent = time.monotonic()
                try:
                    status, events = await connection.send(raw)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    results.append((time.monotonic() - sent, 0, 0, sent))
                    continue
                results.append((time.monotonic() - sent, status, events, sent))
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results, errors


async def open_loop(host: str, port: int, raws: Sequence[bytes], dues: Sequence[float],
                    max_connections: int) -> tuple[list[Result], dict[str, int]]:  # fmt: skip
    """Send ``raws[i]`` at monotonic time ``dues[i]`` whatever the answers; latency from then."""
    results: list[Result] = []
    errors: dict[str, int] = {}
    idle: list[Connection] = []
    opened = 0
    pending: set[asyncio.Task[None]] = set()

    async def one(connection: Connection, raw: bytes, due: float) -> None:
        try:
            status, events = await connection.send(raw)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            results.append((time.monotonic() - due, 0, 0, due))
        else:
            results.append((time.monotonic() - due, status, events, due))
        idle.append(connection)

    for raw, due in zip(raws, dues, strict=True):
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if idle:
            connection = idle.pop()
        elif opened < max_connections:
            connection, opened = Connection(host, port), opened + 1
        else:
            errors["not_sent"] = errors.get("not_sent", 0) + 1
            continue
        task = asyncio.create_task(one(connection, raw, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)
    for connection in idle:
        connection.close()
    return results, errors


def _child(run: Callable[[], Any], send: Any) -> None:
    try:
        results, errors = asyncio.run(run())
        usage = resource.getrusage(resource.RUSAGE_SELF)
        send.send((results, errors, usage.ru_utime + usage.ru_stime))
    except BaseException as exc:  # the parent reports it
        send.send(([], {f"client failed: {exc!r}": 1}, 0.0))
    finally:
        send.close()


def run_processes(runs: Sequence[Callable[[], Any]]) -> tuple[list[Result], dict[str, int], float]:
    """Each of ``runs`` (a coroutine function returning (results, errors)) in a forked process
    of its own; their results and errors together, and the CPU seconds they used."""
    context = multiprocessing.get_context("fork")  # the prepared requests are inherited
    children = []
    for run in runs:
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_child, args=(run, send), daemon=True)
        process.start()
        send.close()
        children.append((process, receive))
    results: list[Result] = []
    errors: dict[str, int] = {}
    cpu = 0.0
    for process, receive in children:
        try:
            part, part_errors, part_cpu = receive.recv()
        except EOFError:
            part, part_errors, part_cpu = [], {"client process died": 1}, 0.0
        process.join()
        results += part
        for name, count in part_errors.items():
            errors[name] = errors.get(name, 0) + count
        cpu += part_cpu
    return results, errors, cpu
