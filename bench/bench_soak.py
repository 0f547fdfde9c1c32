"""Soak: ``mailmon serve`` killed with SIGKILL and its log rotated every way while it is written.

    .venv/bin/python bench/bench_soak.py [--lines 600000] [--rate 3000] [--kills 5] [--seed 1]

A Postfix log from ``gen_postfix_log.py`` (cut so that its first line is over 256
bytes, as a ``status=sent`` line often is) is appended to ``bench/out/soak/mail.log`` by
a writer thread at ``--rate`` lines/s, while ``mailmon serve`` follows it.  Every file
the writer starts begins with a line over 256 bytes.  Along the way:

- SIGKILL at random points (``--kills``, 5 by default), each restart after a random pause;
- a rename rotation (``mail.log`` -> ``mail.log.1``): the writer goes on appending to the
  renamed file for ``--late-seconds`` before it reopens (as syslog does until its HUP),
  and serve is killed and restarted inside that window;
- a copytruncate rotation (copy to ``mail.log.2``, truncate), and at once more lines than
  the old size, so the file has grown past the old offset before the next poll;
- serve killed, a rename rotation (``mail.log.3``) and a gzip of the rotated file while
  serve is stopped (``mail.log.3.gz``), then a restart.

When the writer is done and serve has caught up, the store is compared with a clean
single ``mailmon ingest`` of the same lines (the ground truth): events by id (lost,
spurious), per-domain counts by outcome (cells wrong, events lost, double counted), the
delivery rows, and the lines serve counted against the lines written.  The report is
printed and written to ``bench/out/soak.json``; the pass mark is 0 lost, 0 double
counted, 0 wrong cells.  Bounded in time: the writing takes ``--lines / --rate``
seconds, the catch-up at most ``CATCH_UP_SECONDS``.  ``tests/test_soak.py`` runs a
small version of the same (:func:`soak`) in seconds.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import queue
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
#: The longest a serve may take to catch up once the writer is done.
CATCH_UP_SECONDS = 180.0
_LONG = 257  # a line longer than the 256 bytes a file's fingerprint covers (with its newline)


def long_first(lines: Sequence[bytes]) -> list[bytes]:
    """``lines`` from the first one longer than 256 bytes on."""
    for i, line in enumerate(lines):
        if len(line) > _LONG:
            return list(lines[i:])
    raise ValueError("no line longer than 256 bytes")


@dataclass
class _Action:
    kind: str  # "rename" or "copytruncate"
    target: Path
    started: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class Writer(threading.Thread):
    """Appends ``lines`` to ``log`` at ``rate`` lines/s and rotates it when asked."""

    def __init__(self, log: Path, lines: Sequence[bytes], rate: float, late: float) -> None:
        super().__init__(name="soak-writer", daemon=True)
        self.log, self.lines, self.rate, self.late = log, lines, rate, late
        self.written = 0
        #: The writer waits at this line until the soak has done its step there (a serve
        #: slow to start on a busy machine must not see the whole log go by).
        self.gate = len(lines)
        self.actions: queue.Queue[_Action] = queue.Queue()
        self.error: BaseException | None = None
        self._out: IO[bytes] | None = None

    def rotate(self, kind: str, target: Path) -> _Action:
        action = _Action(kind, target)
        self.actions.put(action)
        return action

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the soak, not lost in a thread
            self.error = exc
        finally:
            if self._out is not None:
                self._out.close()

    def _run(self) -> None:
        self._out = open(self.log, "ab")  # noqa: SIM115
        last, credit = time.monotonic(), 0.0
        reopen: tuple[float, _Action] | None = None
        while self.written < len(self.lines):
            if reopen is None:
                try:
                    action = self.actions.get_nowait()
                except queue.Empty:
                    pass
                else:
                    reopen = self._do(action)
            elif time.monotonic() >= reopen[0]:
                self._to_long_line()  # the new file starts with a long line too
                self._out.close()
                self._out = open(self.log, "ab")  # noqa: SIM115
                reopen[1].done.set()
                reopen = None
            now = time.monotonic()
            credit, last = credit + (now - last) * self.rate, now
            due = min(len(self.lines), self.gate, self.written + int(credit))
            if due > self.written:
                credit -= due - self.written
                self._write(due)
            credit = min(credit, self.rate * 0.05)  # no burst after a wait at the gate
            time.sleep(0.005)
        if reopen is not None:  # the lines ran out inside the late window
            reopen[1].done.set()

    def _write(self, upto: int) -> None:
        assert self._out is not None
        self._out.write(b"".join(self.lines[self.written : upto]))
        self._out.flush()
        self.written = upto

    def _to_long_line(self) -> None:
        """Write up to the next line longer than the fingerprint."""
        i = self.written
        while i < len(self.lines) and len(self.lines[i]) <= _LONG:
            i += 1
        self._write(i)

    def _do(self, action: _Action) -> tuple[float, _Action] | None:
        assert self._out is not None
        self._to_long_line()
        if action.kind == "rename":
            os.rename(self.log, action.target)
            action.started.set()
            return time.monotonic() + self.late, action  # late lines go to the renamed file
        # copytruncate, then more than the old size at once: grown past the old offset
        # before serve polls again.
        shutil.copyfile(self.log, action.target)
        size = self._out.tell()
        self._out.truncate(0)
        action.started.set()
        end, grown = self.written, 0
        while end < len(self.lines) and grown <= size:
            grown += len(self.lines[end])
            end += 1
        self._write(end)
        action.done.set()
        return None


class Serve:
    """``mailmon serve`` as a child process, killed and restarted at will."""

    def __init__(self, command: Sequence[str], config: Path, workdir: Path) -> None:
        self.command, self.config, self.workdir = list(command), config, workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.kills = 0

    def start(self) -> None:
        self.runs += 1
        stderr = open(self.workdir / f"serve-{self.runs}.log", "wb")  # noqa: SIM115
        env = {**os.environ, "MAILMON_RESOLVE_MX": "0", "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([*self.command, "serve", "--config", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=stderr, cwd=REPO,
                                     env=env)  # fmt: skip
        stderr.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("serve-*.log")))


def _position(db: Path, log: Path) -> dict[str, Any] | None:
    """serve's checkpoint of ``log`` (found by the path it stores, whatever its key)."""
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            rows = conn.execute("SELECT state FROM checkpoints").fetchall()
    except sqlite3.Error:  # the schema is not created yet
        return None
    for (state,) in rows:
        value = json.loads(state)
        if isinstance(value, dict) and value.get("path") == str(log):
            return value
    return None


def _offset(db: Path, log: Path) -> int:
    saved = _position(db, log)
    return int(saved["position"]["offset"]) if saved else -1


def _contents(db: Path) -> dict[str, Any]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        ids = {r[0] for r in conn.execute("SELECT id FROM events")}
        cells = {(d, o): n for d, o, n in conn.execute(
            "SELECT recipient_domain, outcome, SUM(count) FROM counters"
            " GROUP BY recipient_domain, outcome")}  # fmt: skip
        deliveries = {r[0]: r for r in conn.execute("SELECT * FROM deliveries")}
    return {"ids": ids, "cells": cells, "deliveries": deliveries}


def compare(truth: dict[str, Any], store: dict[str, Any]) -> dict[str, int]:
    """What the store has wrong against the ground truth."""
    keys = truth["cells"].keys() | store["cells"].keys()
    diffs = [store["cells"].get(k, 0) - truth["cells"].get(k, 0) for k in keys]
    rows = truth["deliveries"].keys() | store["deliveries"].keys()
    return {
        "events_truth": len(truth["ids"]),
        "events_stored": len(store["ids"]),
        "events_lost": len(truth["ids"] - store["ids"]),
        "events_spurious": len(store["ids"] - truth["ids"]),
        "cells": len(keys),
        "cells_wrong": sum(1 for d in diffs if d),
        "counted_lost": sum(-d for d in diffs if d < 0),
        "double_counted": sum(d for d in diffs if d > 0),
        "deliveries_wrong": sum(
            1 for k in rows if truth["deliveries"].get(k) != store["deliveries"].get(k)
        ),
    }


def _config(workdir: Path, log: Path, poll_interval: float) -> Path:
    config = workdir / "mailmon.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{workdir / "serve.db"}"\n'
        "[service]\nlisten_port = 0\n"
        f'[[logs]]\npath = "{log}"\npoll_interval_seconds = {poll_interval}\n'
    )
    return config


def soak(
    workdir: Path,
    lines: Sequence[bytes],
    *,
    mailmon: Sequence[str],
    rate: float = 3000.0,
    kills: int = 5,
    late_seconds: float = 3.0,
    poll_interval: float = 0.5,
    seed: int = 1,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run the soak in ``workdir`` (emptied first) on ``lines``; returns the report."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    lines = long_first(lines)
    log, db = workdir / "mail.log", workdir / "serve.db"
    (workdir / "truth.log").write_bytes(b"".join(lines))
    rng = random.Random(seed)
    serve = Serve(mailmon, _config(workdir, log, poll_interval), workdir)
    writer = Writer(log, lines, rate, late_seconds)
    log.touch()
    started_at: dict[str, Any] | None = None
    regrown = 0
    serve.start()
    writer.start()
    started = time.monotonic()
    n = len(lines)

    def at(fraction: float) -> None:
        """Let the writer go on to that point, and wait until it is there."""
        writer.gate = int(fraction * n)
        while writer.written < writer.gate and writer.is_alive():
            time.sleep(0.01)

    def committed(since: dict[str, Any] | None) -> None:
        """Wait until serve has stored something since ``since`` (a kill before its first
        commit would only test a start-up)."""
        deadline = time.monotonic() + 120
        while _position(db, log) == since and time.monotonic() < deadline:
            time.sleep(0.02)

    def read_to(line: int) -> None:
        """Wait until serve has counted that many lines."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            saved = _position(db, log) or {}
            if int((saved.get("counts") or {}).get("lines", 0)) >= line:
                return
            time.sleep(0.05)

    def kill_and_restart(pause: float, go_on: float | None = None) -> None:
        if go_on is not None:  # killed while lines keep coming, at a random moment
            writer.gate = int(go_on * n)
            time.sleep(rng.uniform(0.0, 0.5))
        serve.kill()
        say(f"  kill -9 #{serve.kills} at line {writer.written:,}")
        time.sleep(pause)
        restart()

    def restart() -> None:
        nonlocal started_at
        started_at = _position(db, log)
        with open(workdir / "restarts.jsonl", "a") as f:  # what each start began from
            f.write(json.dumps({"run": serve.runs + 1, "line": writer.written,
                                "checkpoint": started_at}) + "\n")  # fmt: skip
        serve.start()

    # Random kills spread over the run; the rotations at fixed points between them.
    random_kills = max(0, kills - 2)
    points = sorted(rng.uniform(0.05, 0.9) for _ in range(random_kills))
    plan: list[tuple[float, str]] = [(p, "kill") for p in points]
    plan += [(0.2, "rename"), (0.3, "copytruncate"), (0.5, "gzip")]
    plan.sort()
    for k, (fraction, step) in enumerate(plan):
        at(fraction)
        committed(started_at)
        go_on = plan[k + 1][0] if k + 1 < len(plan) else 1.0
        if step == "kill":
            kill_and_restart(rng.uniform(0.0, 1.0), go_on)
            continue
        writer.gate = int(go_on * n)  # lines keep coming through every rotation
        if step == "rename":
            time.sleep(rng.uniform(0.1, 0.5))
            action = writer.rotate("rename", workdir / "mail.log.1")
            action.started.wait(60)
            say(f"  renamed to mail.log.1 at line {writer.written:,}; restarting serve"
                f" while the writer still appends to it")  # fmt: skip
            kill_and_restart(0.2)
            action.done.wait(60)
        elif step == "copytruncate":
            time.sleep(rng.uniform(0.1, 0.5))
            action = writer.rotate("copytruncate", workdir / "mail.log.2")
            action.done.wait(60)
            regrown = writer.written
            say(f"  copytruncate to mail.log.2 and regrown at line {regrown:,}")
        elif step == "gzip":
            # The file copytruncate left is renamed next: serve must have seen the
            # truncation first (a copytruncate and a rename of one file both unseen is
            # a known limit, see the tailer's docstring).
            read_to(regrown)
            serve.kill()
            say(f"  kill -9 #{serve.kills} at line {writer.written:,}")
            time.sleep(0.5)  # lines serve has not read go into the file rotated next
            action = writer.rotate("rename", workdir / "mail.log.3")
            action.done.wait(60)
            with open(workdir / "mail.log.3", "rb") as src, \
                    gzip.open(workdir / "mail.log.3.gz", "wb") as dst:  # fmt: skip
                shutil.copyfileobj(src, dst)
            os.unlink(workdir / "mail.log.3")
            say(f"  renamed to mail.log.3 and gzipped while stopped, at line {writer.written:,}")
            restart()
    writer.gate = n
    writer.join()
    if writer.error is not None:
        raise RuntimeError(f"the writer failed: {writer.error!r}")
    written_at = time.monotonic()
    say(f"  {n:,} lines written in {written_at - started:.0f} s; waiting for serve to catch up")
    caught_up = False
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while time.monotonic() < deadline:
        if not serve.alive():
            restart()  # it must not die; the logs will tell why if it did
        saved = _position(db, log) or {}
        position, counts = saved.get("position") or {}, saved.get("counts") or {}
        if position.get("offset") == log.stat().st_size and counts.get("lines", 0) >= n:
            caught_up = True
            break
        time.sleep(0.2)
    catch_up = time.monotonic() - written_at
    serve.stop()

    truth_db = workdir / "truth.db"
    env = {**os.environ, "MAILMON_RESOLVE_MX": "0", "PYTHONPATH": str(REPO)}
    subprocess.run([*mailmon, "ingest", "postfix", str(workdir / "truth.log"), "--no-progress",
                    "--db", f"sqlite:///{truth_db}"], check=True, env=env, cwd=REPO,
                   stdout=subprocess.DEVNULL, timeout=1800)  # fmt: skip
    report: dict[str, Any] = compare(_contents(truth_db), _contents(db))
    saved = _position(db, log) or {}
    report.update({
        "lines_written": n,
        "lines_counted": int((saved.get("counts") or {}).get("lines", -1)),
        "kills": serve.kills,
        "serve_runs": serve.runs,
        "rate": rate,
        "seconds_writing": round(written_at - started, 1),
        "seconds_catching_up": round(catch_up, 1),
        "caught_up": caught_up,
        "lost_warnings": serve.logs().count("lines after that point in it are lost"),
        "tracebacks": serve.logs().count("Traceback"),
    })  # fmt: skip
    report["ok"] = (
        caught_up and report["events_lost"] == 0 and report["events_spurious"] == 0
        and report["cells_wrong"] == 0 and report["double_counted"] == 0
        and report["lines_counted"] == n
    )  # fmt: skip
    return report


def _generate(path: Path, lines: int, seed: int) -> list[bytes]:
    """The generator's log of ``lines`` lines (cached beside the outputs)."""
    if not path.exists():
        subprocess.run([sys.executable, str(BENCH / "gen_postfix_log.py"), "--lines", str(lines),
                        "--out", str(path), "--seed", str(seed)], check=True)  # fmt: skip
    return path.read_bytes().splitlines(keepends=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=600_000, help="lines to write")
    parser.add_argument("--rate", type=float, default=3000.0, help="lines written per second")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs, two of them at rotations")
    parser.add_argument("--late-seconds", type=float, default=3.0,
                        help="how long the writer appends to a renamed file")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(BENCH))
    from bench_ingest import mailmon_command, report_header

    out = BENCH / "out"
    out.mkdir(exist_ok=True)
    lines = _generate(out / f"soak-{args.lines}-{args.seed}.log", args.lines, args.seed)
    print(f"soak: {len(lines):,} Postfix lines at {args.rate:,.0f}/s, {args.kills} kill -9,"
          " a rename, a copytruncate regrown past its offset, a gzip while stopped",
          flush=True)  # fmt: skip
    report = soak(out / "soak", lines, mailmon=mailmon_command(), rate=args.rate,
                  kills=args.kills, late_seconds=args.late_seconds, seed=args.seed,
                  say=lambda text: print(text, flush=True))  # fmt: skip
    for key in ("events_truth", "events_stored", "events_lost", "events_spurious",
                "double_counted", "counted_lost", "cells", "cells_wrong", "deliveries_wrong",
                "lines_written", "lines_counted", "kills", "lost_warnings", "tracebacks",
                "seconds_writing", "seconds_catching_up"):  # fmt: skip
        print(f"  {key:20} {report[key]:>12,}")
    print(f"soak: {'ok' if report['ok'] else 'MISSED'} (0 lost, 0 double counted, 0 cells wrong,"
          " every line counted once)")  # fmt: skip
    (out / "soak.json").write_text(json.dumps({**report_header(), **report}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
