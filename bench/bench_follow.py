"""Follow benchmark: ``mailmon serve`` following a Postfix, Exim or KumoMTA log written at a fixed rate.

    .venv/bin/python bench/bench_follow.py [--mta postfix exim kumomta] [--seconds 60]
        [--cpu-seconds 30] [--rate 2000] [--poll-interval 0.2] [--base-db PATH] [--profile]

For each MTA in turn: starts ``mailmon serve`` as a subprocess (a SQLite database in
``bench/out/``, fresh or a copy of ``--base-db`` to measure on a large store, a config
with one log of that kind polled every ``--poll-interval`` s, ``MAILMON_RESOLVE_MX=0``,
a free loopback port), then appends lines to that log from this process at ``--rate``
lines/s, a chunk every ``--chunk-ms``.  Postfix lines come from ``gen_postfix_log.py``
(same seed, same lines; its message rate is scaled so that simulated time runs about as
fast as the wall clock), Exim ``mainlog`` lines and KumoMTA JSON records from
``gen_mta_stream.py``; each line gets the wall-clock time (UTC) at the moment of
writing as its timestamp.

Two phases, one writer:

1. ``--seconds`` of writing while the bench scrapes ``/metrics`` every
   ``--scrape-ms``, with a logrotate-style rotation half way (rename to ``.1``,
   create a new file; the writer puts one more chunk into the old file before it
   reopens, as syslog does until its HUP).  Lag: the writer records (time written,
   lines so far) per chunk; the lag of line N is the time of the first scrape whose
   ``mailmon_source_lines_total{source=MTA}`` (counted once the lines' events
   are committed with their checkpoint) is at least N, minus the time line N was
   written.  p50 / p99 / max over every line of the phase, and p99 after the first
   ``WARM_UP_SECONDS``; the scrape interval is the resolution.
2. ``--cpu-seconds`` more of writing, unscraped (a real Prometheus scrapes every
   15 s or so; 10 scrapes/s cost the service several % of a core): the serve
   process's utime + stime (``/proc/PID/stat``) over that wall time, as % of one
   core, is the CPU figure judged.  Phase 1's share (with scrapes) is reported too,
   and so is the idle share, with and without scrapes.

Peak RSS: the larger of the kernel's high-water mark (``VmHWM``) and the process
tree's summed RSS sampled every 100 ms.  Targets at 2,000 lines/s: lag p99 < 2 s;
CPU < 15 % of one core.  A missed target prints MISSED and still exits 0: this is
a report.  It also checks that every line written was counted (``lines_total ==
written``, across the rotation) and the stored events against the generator's
ground truth, and writes everything to ``bench/out/follow.json`` (one report per MTA).  ``--profile``
attaches ``py-spy`` (``.venv/bin/pip install py-spy``; not a project dependency)
to the serve process for the whole writing and summarises the samples of threads
not idle (wall time, I/O waits included); the figures of a profiled run are not
the ones to report.
"""

from __future__ import annotations

import argparse
import bisect
import io
import itertools
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench_ingest import (
    EXPECTED_EVENTS,
    TreeSampler,
    mailmon_command,
    report_header,
    stored_events,
    verdict,
)
from gen_mta_stream import exim_stamp, exim_stream, kumomta_stamp, kumomta_stream
from gen_postfix_log import PostfixLogSimulation

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"

RATE = 2000
LAG_P99_TARGET_SECONDS = 2.0
CPU_TARGET_PERCENT = 15.0
WARM_UP_SECONDS = 10.0
CPU_STEP_SECONDS = 10.0

#: Lines per message in the generated log (about 7.5): sets the simulation's message
#: rate so that its clock runs about as fast as the wall clock at ``--rate`` lines/s.
LINES_PER_MESSAGE = 7.5
#: The simulation starts at 09:00, where its daily traffic curve is at its mean.
SIM_START = datetime(2026, 11, 20, 9, tzinfo=UTC)
#: "Nov 20 09:00:00 " -- the BSD syslog timestamp the writer replaces.
STAMP_CHARS = 16

MTAS = ("postfix", "exim", "kumomta")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def generate(
    mta: str, lines: int, rate: int, seed: int
) -> tuple[list[bytes], dict[str, int], Callable[[float], bytes]]:
    """``lines`` log lines without their timestamp, what they hold, and the timestamp's maker."""
    if mta == "exim":
        return (*exim_stream(lines, seed), exim_stamp)
    if mta == "kumomta":
        return (*kumomta_stream(lines, seed), kumomta_stamp)
    sim = PostfixLogSimulation(
        seed, start=SIM_START, rate=rate / LINES_PER_MESSAGE, max_inflight=50_000
    )
    buffer = io.StringIO()
    counts = sim.run(buffer, lines)
    payloads = [line[STAMP_CHARS:].encode("ascii") for line in buffer.getvalue().splitlines()]
    return payloads, dict(counts), syslog_stamp


def syslog_stamp(now: float) -> bytes:
    """BSD syslog time of ``now`` in UTC, as the generator writes it: "Nov  4 09:05:01 "."""
    moment = datetime.fromtimestamp(now, UTC)
    return f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S} ".encode("ascii")


class Writer(threading.Thread):
    """Appends the lines at a fixed rate, with one rename-and-create rotation half way."""

    def __init__(
        self,
        log: Path,
        payloads: list[bytes],
        rate: int,
        chunk_seconds: float,
        rotate_at: int,
        stamp: Callable[[float], bytes] = syslog_stamp,
    ) -> None:
        super().__init__(name="writer", daemon=True)
        self.log = log
        self.stamp = stamp
        self.payloads = payloads
        self.rate = rate
        self.chunk_seconds = chunk_seconds
        #: (monotonic time the chunk was in the file, lines written so far), per chunk
        self.marks: list[tuple[float, int]] = []
        self.started = 0.0
        self.finished = 0.0
        self.rotate_at = rotate_at
        self.rotated_at = 0  # lines written when the log was renamed
        self.written = 0
        self.max_late = 0.0  # how far behind its schedule the writer itself fell

    def run(self) -> None:
        total = len(self.payloads)
        out = open(self.log, "ab", buffering=0)  # noqa: SIM115 -- swapped at the rotation
        old = None  # the renamed file, still written once before the writer reopens
        written, tick = 0, 0
        self.started = time.monotonic()
        while written < total:
            tick += 1
            wake = self.started + tick * self.chunk_seconds
            pause = wake - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                self.max_late = max(self.max_late, -pause)
            due = min(total, int(self.rate * (time.monotonic() - self.started)))
            if due <= written:
                continue
            stamp = self.stamp(time.time())
            data = b"".join(stamp + p + b"\n" for p in self.payloads[written:due])
            (old or out).write(data)
            self.marks.append((time.monotonic(), due))
            written = self.written = due
            if old is not None:  # the writer reopens its log, as after logrotate's HUP
                old.close()
                old = None
            elif not self.rotated_at and written >= self.rotate_at:
                self.rotated_at = written
                os.rename(self.log, self.log.with_name(self.log.name + ".1"))
                old, out = out, open(self.log, "xb", buffering=0)  # noqa: SIM115
        out.close()
        self.finished = time.monotonic()


class Scraper(threading.Thread):
    """Scrapes ``/metrics`` at a fixed interval while ``active`` is set."""

    def __init__(self, url: str, interval: float, source: str = "postfix") -> None:
        super().__init__(name="scraper", daemon=True)
        self.url = url
        self.lines_metric = re.compile(
            rb'^mailmon_source_lines_total\{source="%s"\} (\S+)$' % source.encode(), re.M
        )
        self.last_event_metric = re.compile(
            rb'^mailmon_source_last_event_timestamp_seconds\{source="%s"\} (\S+)$'
            % source.encode(),
            re.M,
        )
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (monotonic time of the answer, lines)
        #: (monotonic time, wall time minus the newest event's time): what a staleness
        #: alert on mailmon_source_last_event_timestamp_seconds sees
        self.freshness: list[tuple[float, float]] = []
        self.slowest = 0.0
        self.errors = 0
        self.active = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.done.is_set():
            if self.active.is_set():
                self.scrape()
            next_at += self.interval
            self.done.wait(max(0.0, next_at - time.monotonic()))

    def scrape(self) -> int | None:
        asked = time.monotonic()
        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:
                body = response.read()
        except (OSError, urllib.error.URLError):
            self.errors += 1
            return None
        answered = time.monotonic()
        self.slowest = max(self.slowest, answered - asked)
        found = self.lines_metric.search(body)
        lines = int(float(found.group(1))) if found else 0
        self.samples.append((answered, lines))
        if last := self.last_event_metric.search(body):
            self.freshness.append((answered, time.time() - float(last.group(1))))
        return lines

    def latest(self) -> int:
        return self.samples[-1][1] if self.samples else 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` so far."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rpartition(b")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat(5)


def high_water_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mailmon serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (OSError, urllib.error.URLError):
            time.sleep(0.1)
    raise RuntimeError(f"mailmon serve not answering {url} after {timeout:.0f} s")


def idle_cpu(pid: int, seconds: float, scraper: Scraper | None = None) -> float:
    """% of one core ``pid`` uses over ``seconds`` with no input (scraped or not)."""
    if scraper is not None:
        scraper.active.set()
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    used, wall = cpu_seconds(pid) - before, time.monotonic() - started
    if scraper is not None:
        scraper.active.clear()
    return 100.0 * used / wall


def lags(marks: list[tuple[float, int]], samples: list[tuple[float, int]]) -> list[float | None]:
    """Per line written: seconds until a scrape counted it (None: never counted)."""
    times = [t for t, _ in samples]
    # a counter scraped from one process never goes down; the running max makes sure
    counted = list(itertools.accumulate((n for _, n in samples), max))
    out: list[float | None] = []
    previous = 0
    for written_at, upto in marks:
        for n in range(previous + 1, upto + 1):
            i = bisect.bisect_left(counted, n)
            out.append(times[i] - written_at if i < len(times) else None)
        previous = upto
    return out


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100.0 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def start_profiler(pid: int, seconds: float) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` on the serve process for the writing phase, if py-spy is here."""
    py_spy = Path(sys.executable).parent / "py-spy"
    found = str(py_spy) if py_spy.exists() else shutil.which("py-spy")
    if not found:
        print("--profile: py-spy not found (.venv/bin/pip install py-spy); not profiling")
        return None
    command = [found, "record", "--pid", str(pid), "--rate", "200", "--threads",
               "--format", "raw", "--duration", str(max(1, round(seconds))),
               "--output", str(OUT / "follow-profile.txt"), "--nonblocking"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_summary(path: Path, top: int = 15) -> dict[str, object]:
    """Collapsed stacks (py-spy raw) -> samples per thread, and self / inclusive per function."""
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        count = int(n)
        threads[frames[0]] += count
        names = [re.sub(r" \((.*?)(?::\d+)?\)$", r" (\1)", f) for f in frames[1:]]
        if names and not re.search(r"\b(wait|select|sleep|acquire|poll)\b", names[-1]):
            busy += count
            own[names[-1]] += count
            for name in set(names):
                inclusive[name] += count
    return {
        "samples_by_thread": dict(threads.most_common()),
        "busy_samples": busy,
        "self": [(k, v) for k, v in own.most_common(top)],
        "inclusive": [(k, v) for k, v in inclusive.most_common(top * 2)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help="writing while scraped: the lag, and the rotation half way",
    )
    parser.add_argument(
        "--cpu-seconds",
        type=float,
        default=30.0,
        help="then writing on, unscraped: the CPU share (0: judge the scraped one)",
    )
    parser.add_argument("--rate", type=int, default=RATE, help="lines written per second")
    parser.add_argument("--chunk-ms", type=float, default=20.0, help="writer's chunk interval")
    parser.add_argument("--poll-interval", type=float, default=0.2,
                        help="the log's poll_interval_seconds in the serve config")  # fmt: skip
    parser.add_argument("--scrape-ms", type=float, default=100.0, help="/metrics scrape interval")
    parser.add_argument("--settle-seconds", type=float, default=60.0,
                        help="how long to wait after the writer for the service to catch up")  # fmt: skip
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--mta", nargs="+", choices=MTAS, default=list(MTAS),
                        help="which logs to follow, one run each")  # fmt: skip
    parser.add_argument("--base-db", type=Path,
                        help="start from a copy of this store (a large one: bench_ingest's)")  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="attach py-spy to serve")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)

    reports = {mta: follow(args, mta) for mta in args.mta}
    if len(reports) > 1:
        print_summary(reports)
    (OUT / "follow.json").write_text(json.dumps(reports, indent=2) + "\n")
    print(f"\nwrote {(OUT / 'follow.json').relative_to(REPO)}")
    return 0


def follow(args: argparse.Namespace, mta: str) -> dict[str, object]:
    """One run: serve following a log of ``mta``'s kind; its report."""
    total = round(args.rate * (args.seconds + args.cpu_seconds))
    print(f"\n=== {mta}: generating {total:,} lines (seed {args.seed}) ...", flush=True)
    payloads, truth, stamp = generate(mta, total, args.rate, args.seed)

    log, db = OUT / f"follow-{mta}.log", OUT / f"follow-{mta}.db"
    for stale in [*OUT.glob(f"follow-{mta}.log*"), *OUT.glob(f"follow-{mta}.db*")]:
        stale.unlink()
    base_events = 0
    if args.base_db:
        with sqlite3.connect(args.base_db) as conn:  # one file, the WAL folded in
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copyfile(args.base_db, db)
        base_events = stored_events(db).get("total", 0)
        print(f"starting from a copy of {args.base_db} ({base_events:,} events)", flush=True)
    log.touch()
    config = OUT / f"follow-{mta}.toml"
    config.write_text(
        "# the follow benchmark's config (bench/bench_follow.py)\n"
        "[providers]\nresolve_mx = false\n\n"
        f'[[logs]]\nkind = "{mta}"\npath = "{log}"\n'
        f"poll_interval_seconds = {args.poll_interval}\n"
    )
    port = free_port()
    env = dict(os.environ, MAILMON_RESOLVE_MX="0", MAILMON_CONFIG=str(config))
    command = [*mailmon_command(), "serve", "--config", str(config), "--db", f"sqlite:///{db}",
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with open(OUT / f"follow-{mta}-serve.log", "wb") as serve_log:
        proc = subprocess.Popen(command, stdout=serve_log, stderr=subprocess.STDOUT, env=env,
                                cwd=REPO)  # fmt: skip
    started = time.monotonic()
    try:
        wait_ready(f"{base}/healthz", proc, timeout=600)
        ready = time.monotonic() - started
        report = run(args, proc, base, log, db, payloads, truth, total, mta, stamp)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # uvicorn's graceful shutdown
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    report["mta"] = mta
    report["serve_ready_seconds"] = round(ready, 2)
    report["base_events"] = base_events
    report["serve_exit"] = proc.returncode
    if db.exists():
        try:
            events = stored_events(db)
        except Exception as exc:  # a report, not a test: say so and go on
            print(f"cannot count events in {db.name}: {exc}")
            events = {}
        if base_events:
            print("(a copy of --base-db: the events stored are not checked against the log)")
        else:
            report["event_checks"] = {
                kind: {"stored": events.get(kind, 0), "in_log": truth.get(key, 0)}
                for kind, key in EXPECTED_EVENTS.items()
            }
        report["events_stored"] = events.get("total", 0)
    report["command"] = command
    report["config"] = config.read_text()
    print_report(report)
    return report


def print_summary(reports: dict[str, dict[str, object]]) -> None:
    """One line per MTA: the figures the targets judge."""
    print(f"\n{'mta':<9} {'lag p50':>8} {'lag p99':>8} {'CPU %':>6}  counted")
    for mta, report in reports.items():
        f = report["figures"]
        assert isinstance(f, dict)
        print(f"{mta:<9} {f['lag_p50_seconds']:>7.2f}s {f['lag_p99_seconds']:>7.2f}s "
              f"{f['cpu_percent_of_one_core']:>6.1f}  {f['lines_counted']:,} / "
              f"{f['lines_written']:,}")  # fmt: skip


def run(
    args: argparse.Namespace,
    proc: subprocess.Popen[bytes],
    base: str,
    log: Path,
    db: Path,
    payloads: list[bytes],
    truth: dict[str, int],
    total: int,
    mta: str = "postfix",
    stamp: Callable[[float], bytes] = syslog_stamp,
) -> dict[str, object]:
    """Write, scrape and measure; everything for the report."""
    scraper = Scraper(f"{base}/metrics", args.scrape_ms / 1000.0, source=mta)
    scraper.start()
    sampler = TreeSampler(proc.pid, interval=0.1)
    sampler.start()
    lag_lines = min(total, round(args.rate * args.seconds))
    writer = Writer(log, payloads, args.rate, args.chunk_ms / 1000.0, rotate_at=lag_lines // 2,
                    stamp=stamp)  # fmt: skip
    quiet = args.cpu_seconds > 0
    profiler = start_profiler(proc.pid, total / args.rate) if args.profile else None

    print(f"writing {args.rate:,} lines/s to {log.relative_to(REPO)}: {args.seconds:g} s scraped "
          f"every {args.scrape_ms:g} ms (rotation half way), then {args.cpu_seconds:g} s "
          f"unscraped; serve polls every {args.poll_interval:g} s", flush=True)  # fmt: skip
    # Phase 1: lag, scraping /metrics every --scrape-ms (which costs the service CPU too).
    scraper.active.set()
    cpu_start = cpu_seconds(proc.pid)
    writer.start()
    while writer.is_alive() and writer.written < lag_lines:
        time.sleep(0.01)
    cpu_scraped, wall_scraped = cpu_seconds(proc.pid) - cpu_start, time.monotonic()
    wall_scraped -= writer.started
    written_scraped = writer.written
    deadline = time.monotonic() + args.settle_seconds
    while scraper.latest() < written_scraped and time.monotonic() < deadline:
        time.sleep(0.02)
    scraper.active.clear()
    # Phase 2: CPU alone, no scrapes but the final ones (Prometheus scrapes every 15 s or so).
    time.sleep(0.3)  # an in-flight scrape ends
    cpu_quiet, wall_quiet = cpu_seconds(proc.pid), time.monotonic()
    steps = [(wall_quiet, cpu_quiet)]  # every CPU_STEP_SECONDS: does the share drift?
    while writer.is_alive():
        writer.join(timeout=CPU_STEP_SECONDS)
        steps.append((time.monotonic(), cpu_seconds(proc.pid)))
    cpu_quiet, wall_quiet = cpu_seconds(proc.pid) - cpu_quiet, time.monotonic() - wall_quiet
    deadline = time.monotonic() + args.settle_seconds
    while (scraper.scrape() or 0) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    counted = scraper.latest()
    caught_up = scraper.samples[-1][0] - writer.finished if counted >= total else None

    if profiler is not None:
        try:
            profiler.wait(timeout=30)
        except subprocess.TimeoutExpired:
            profiler.kill()

    # What the bench's own scraping costs the service: idle, with and without it.
    idle = idle_cpu(proc.pid, 3.0) if proc.poll() is None else float("nan")
    idle_scraped = idle_cpu(proc.pid, 3.0, scraper) if proc.poll() is None else float("nan")
    scraper.done.set()
    scraper.join()
    sampler.done.set()
    sampler.join()
    peak = max(sampler.peak_bytes, high_water_rss(proc.pid) if proc.poll() is None else 0)

    per_line = lags(writer.marks, scraper.samples)[:lag_lines]
    seen = sorted(v for v in per_line if v is not None)
    # After the first WARM_UP_SECONDS: the service's first seconds of input are its slowest.
    warm = round(min(WARM_UP_SECONDS, args.seconds / 2) * args.rate)
    steady = sorted(v for v in per_line[warm:] if v is not None)
    share_scraped = 100.0 * cpu_scraped / wall_scraped
    share_quiet = 100.0 * cpu_quiet / wall_quiet if quiet and wall_quiet > 0 else float("nan")
    cpu_share = share_quiet if quiet else share_scraped
    written = writer.written
    ages = sorted(
        a for t, a in scraper.freshness if t <= writer.started + wall_scraped
    )  # fmt: skip

    # per second of writing: lines written then, and the worst lag of those lines
    timeline: list[dict[str, float]] = []
    previous = 0
    for written_at, upto in writer.marks:
        if previous >= lag_lines:
            break
        second = int(written_at - writer.started)
        while len(timeline) <= second:
            timeline.append({"second": len(timeline), "written": 0, "max_lag": 0.0})
        chunk = per_line[previous:upto]
        timeline[second]["written"] += upto - previous
        worst = max((v if v is not None else float("inf") for v in chunk), default=0.0)
        timeline[second]["max_lag"] = round(max(timeline[second]["max_lag"], worst), 3)
        previous = upto

    figures = {
        "lines_written": written,
        "lines_counted": counted,
        "lines_never_counted": len(per_line) - len(seen),
        "rotated_after_lines": writer.rotated_at,
        "lag_lines": lag_lines,
        "write_seconds": round(writer.finished - writer.started, 3),
        "write_rate": round(written / (writer.finished - writer.started), 1),
        "writer_max_late_seconds": round(writer.max_late, 3),
        "lag_p50_seconds": round(percentile(seen, 50), 3),
        "lag_p99_seconds": round(percentile(seen, 99), 3),
        "lag_max_seconds": round(seen[-1], 3) if seen else None,
        "steady_lag_p99_seconds": round(percentile(steady, 99), 3),
        "steady_after_lines": warm,
        "caught_up_seconds_after_writer": round(caught_up, 3) if caught_up is not None else None,
        "freshness_p99_seconds": round(percentile(ages, 99), 3),
        "cpu_percent_of_one_core": round(cpu_share, 2),
        # The cost a mail server pays (issue 23): the share of one core per 1,000 lines/s.
        "cpu_percent_per_1k_lines_per_second": round(
            1000.0 * cpu_share / (written / (writer.finished - writer.started)), 2
        ),
        "cpu_unscraped": {
            "cpu_seconds": round(cpu_quiet, 3),
            "wall_seconds": round(wall_quiet, 3),
            "percent": round(share_quiet, 2),
        },
        "cpu_unscraped_steps_percent": [
            round(100.0 * (c1 - c0) / (t1 - t0), 1)
            for (t0, c0), (t1, c1) in itertools.pairwise(steps)
            if t1 - t0 > 1.0
        ],
        "cpu_scraped": {
            "cpu_seconds": round(cpu_scraped, 3),
            "wall_seconds": round(wall_scraped, 3),
            "percent": round(share_scraped, 2),
        },
        "idle_cpu_percent": round(idle, 2),
        "idle_scraped_cpu_percent": round(idle_scraped, 2),
        "peak_rss_bytes": peak,
        "scrapes": len(scraper.samples),
        "scrape_errors": scraper.errors,
        "slowest_scrape_seconds": round(scraper.slowest, 3),
    }
    lag_p99 = percentile(seen, 99)
    targets = {
        "lag": {
            "what": f"lag p99 < {LAG_P99_TARGET_SECONDS:g} s at {args.rate:,} lines/s",
            "value": figures["lag_p99_seconds"],
            "ok": len(seen) == len(per_line) > 0 and lag_p99 < LAG_P99_TARGET_SECONDS,
        },
        "cpu": {
            "what": f"CPU < {CPU_TARGET_PERCENT:g} % of one core at {args.rate:,} lines/s"
            + ("" if quiet else f" (scraped every {args.scrape_ms:g} ms)"),
            "value": figures["cpu_percent_of_one_core"],
            "ok": cpu_share < CPU_TARGET_PERCENT,
        },
        "complete": {
            "what": "every line written is counted (lines_total == written), across the rotation",
            "value": f"{counted:,} / {written:,}",
            "ok": counted == written == total,
        },
    }
    return {
        **report_header(),
        "settings": {
            "rate_lines_per_second": args.rate,
            "seconds": args.seconds,
            "cpu_seconds": args.cpu_seconds,
            "chunk_ms": args.chunk_ms,
            "poll_interval_seconds": args.poll_interval,
            "scrape_ms": args.scrape_ms,
            "seed": args.seed,
            "profiled": bool(profiler),
        },
        "db": str(db.relative_to(REPO)),
        "log_truth": truth,
        "figures": figures,
        "targets": targets,
        "timeline": timeline,
        "profile": profile_summary(OUT / "follow-profile.txt") if profiler else None,
    }


def print_report(report: dict[str, object]) -> None:
    code, settings, f = report["code"], report["settings"], report["figures"]
    assert isinstance(code, dict) and isinstance(settings, dict) and isinstance(f, dict)
    dirty = " + uncommitted changes in monitor/" if code["monitor_dirty"] else ""
    print(f"\nmailmon at commit {code['commit']}{dirty}; poll_interval_seconds "
          f"{settings['poll_interval_seconds']}, scrapes every {settings['scrape_ms']:g} ms "
          f"(the lag's resolution)")  # fmt: skip
    if settings["profiled"]:
        print("PROFILED RUN (py-spy attached): CPU and lag figures are not the ones to report")
    rows = [
        ("lines written / counted", f"{f['lines_written']:,} / {f['lines_counted']:,}"),
        (
            "rotation after line",
            f"{f['rotated_after_lines']:,} (lag over the first {f['lag_lines']:,})",
        ),
        ("write rate", f"{f['write_rate']:,.0f} lines/s over {f['write_seconds']:.1f} s"),
        (
            "lag p50 / p99 / max",
            f"{f['lag_p50_seconds']:.2f} / {f['lag_p99_seconds']:.2f} / "
            f"{f['lag_max_seconds'] or 0:.2f} s",
        ),
        (
            f"  p99 after the first {f['steady_after_lines'] / settings['rate_lines_per_second']:g} s",
            f"{f['steady_lag_p99_seconds']:.2f} s",
        ),
        ("caught up after writer", f"{f['caught_up_seconds_after_writer']} s"),
        ("newest event age p99", f"{f['freshness_p99_seconds']:.2f} s (1 s timestamps)"),
        (
            "serve CPU, unscraped",
            f"{f['cpu_unscraped']['percent']:.1f} % of one core ("
            f"{f['cpu_unscraped']['cpu_seconds']:.1f} s CPU in {f['cpu_unscraped']['wall_seconds']:.1f} s)",
        ),
        (
            "  per 1,000 lines/s followed",
            f"{f['cpu_percent_per_1k_lines_per_second']:.2f} % of one core",
        ),
        (
            f"  scraped every {settings['scrape_ms']:g} ms",
            f"{f['cpu_scraped']['percent']:.1f} % ("
            f"{f['cpu_scraped']['cpu_seconds']:.1f} s CPU in {f['cpu_scraped']['wall_seconds']:.1f} s)",
        ),
        (
            f"  per {CPU_STEP_SECONDS:g} s, unscraped",
            " ".join(f"{v:g}" for v in f["cpu_unscraped_steps_percent"]) + " %",
        ),
        (
            "  idle / idle + scrapes",
            f"{f['idle_cpu_percent']:.1f} / {f['idle_scraped_cpu_percent']:.1f} %",
        ),
        ("peak RSS", f"{f['peak_rss_bytes'] / 1e6:.1f} MB"),
        (
            "serve ready after",
            f"{report.get('serve_ready_seconds')} s (store of {report.get('base_events', 0):,} "
            "events: its counters seeded first)",
        ),
        (
            "scrapes / errors / slowest",
            f"{f['scrapes']:,} / {f['scrape_errors']} / {f['slowest_scrape_seconds']:.3f} s",
        ),
    ]
    for name, value in rows:
        print(f"  {name:<28} {value}")
    if f["writer_max_late_seconds"] > 0.1:
        print(f"  (the writer fell {f['writer_max_late_seconds']:.2f} s behind its own schedule)")

    checks = report.get("event_checks")
    if isinstance(checks, dict):
        parts = []
        for kind, c in checks.items():
            mark = "" if c["stored"] == c["in_log"] else " MISMATCH"
            parts.append(f"{kind} {c['stored']:,}/{c['in_log']:,}{mark}")
        print(f"\nevents stored / in the log: {'; '.join(parts)}")
    if report.get("serve_exit") not in (0, -signal.SIGTERM):  # uvicorn re-raises SIGTERM
        print(f"mailmon serve exited with {report['serve_exit']} (see bench/out/follow-serve.log)")

    profile = report.get("profile")
    if isinstance(profile, dict):
        busy = profile["busy_samples"] or 1
        print(f"\nprofile (py-spy, {busy:,} busy samples; bench/out/follow-profile.txt):")
        print("  self:")
        for name, n in profile["self"][:10]:
            print(f"    {100 * n / busy:5.1f} %  {name}")
        print("  inclusive:")
        for name, n in profile["inclusive"][:20]:
            print(f"    {100 * n / busy:5.1f} %  {name}")

    print("\ntargets:")
    targets = report["targets"]
    assert isinstance(targets, dict)
    for t in targets.values():
        print(f"  {verdict(bool(t['ok'])):<6} {t['what']}: {t['value']}")


if __name__ == "__main__":
    raise SystemExit(main())
