"""Ingest benchmark: ``mailmon ingest postfix`` against pflogsumm on generated logs.

    .venv/bin/python bench/bench_ingest.py [--sizes 1000000 3000000] [--seed 42]

Generates (or reuses, from ``bench/out/``) a Postfix log of each size with
``gen_postfix_log.py``, then runs each command as a subprocess and measures its
wall time, lines per second and peak RSS:

- ``pflogsumm LOG`` on the first (smallest) log, the speed reference;
- ``mailmon ingest postfix LOG --db sqlite:///bench/out/bench-N.db`` on every
  log, into a fresh database, with ``MAILMON_RESOLVE_MX=0`` so no DNS is used;
- the same on the first log with resolution ON: MX lookups go to the tests' DNS
  server on 127.0.0.1, which holds MX records for every domain of the log and answers
  each query 30 ms late (``dns_zone.py``); target: lines/s within 20% of the OFF run.

Peak RSS is the larger of the kernel's high-water mark for the child
(``os.wait4`` rusage: the largest single process of the tree) and the largest
sum of the RSS of all live processes of the tree, sampled from /proc every
20 ms (it catches helpers that run side by side).  The same samples give each
process's CPU seconds (``main``: parsing; ``writer``: the store's writer process),
printed under the table: the slower side bounds the wall time.

It also measures the storage floor: the rows mailmon stored for the first log
(events and deliveries), re-inserted with Python's sqlite3 into fresh tables of
the same columns with no key and no index, in batches, one transaction.  That is
what persisting those rows costs before any reading, parsing, deduplication or
indexing; the lines/s it allows is a ceiling for any Python ingest that stores
them, and the report sets it beside pflogsumm's.

Targets (issue 23): ``mailmon ingest`` of the first log with MX resolution ON takes
no more wall time than pflogsumm on it (the ratio is printed); CPU seconds (user +
system) per 1M lines <= 9 with resolution OFF; peak RSS of the first log < 250 MB;
peak RSS of the largest log <= 1.2x that of the first (memory must not grow with
the input); lines/s with resolution ON >= 0.8x OFF.  A missed target prints MISSED and still exits 0:
this is a report.  It also checks the stored events against what the generator
says the log holds, and writes everything to ``bench/out/ingest.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
GENERATOR = BENCH / "gen_postfix_log.py"

WALL_TARGET = 1.0  # mailmon (MX resolution ON) wall seconds / pflogsumm's, same log
CPU_TARGET_PER_MILLION = 9.0  # CPU s per 1M lines, resolution OFF
DNS_DELAY_SECONDS = 0.03
RESOLUTION_TARGET = 0.8  # lines/s with MX resolution ON / OFF
RSS_TARGET_BYTES = 250_000_000
RSS_GROWTH_TARGET = 1.2

#: Stored event type -> the generator's count of the log lines that must yield it.
EXPECTED_EVENTS = {
    "delivered": "sent",
    "deferred": "deferred",
    "bounced": "bounced",
    "expired": "expired_rcpt",
    "rejected": "rejected",
}


@dataclass
class Run:
    """One measured command."""

    name: str
    command: list[str]
    lines: int
    wall_seconds: float
    peak_rss_bytes: int
    returncode: int
    output: str = ""
    cpu_seconds: float = 0.0  # user + system, all threads: barely moved by other load
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after
    events: dict[str, int] = field(default_factory=dict)
    db_bytes: int = 0
    #: CPU s of each process of the tree, as last sampled (up to 20 ms short): which side
    #: of mailmon's two (parsing, the store's writer) is the slower one
    cpu_by_process: dict[str, float] = field(default_factory=dict)

    @property
    def lines_per_second(self) -> float:
        return self.lines / self.wall_seconds if self.wall_seconds else 0.0

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["lines_per_second"] = round(self.lines_per_second)
        out["peak_rss_mb"] = round(self.peak_rss_bytes / 1e6, 1)
        out["wall_seconds"] = round(self.wall_seconds, 3)
        out["cpu_seconds"] = round(self.cpu_seconds, 3)
        return out


class TreeSampler(threading.Thread):
    """Polls /proc for the summed RSS of a process and all its descendants, and each one's
    CPU time."""

    def __init__(self, root: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.peak_bytes = 0
        self.done = threading.Event()
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.tick = os.sysconf("SC_CLK_TCK")
        self.cpu: dict[int, tuple[str, float]] = {}  # pid -> (what it is, CPU s)

    def run(self) -> None:
        while not self.done.is_set():
            self.peak_bytes = max(self.peak_bytes, self.sample())
            self.done.wait(self.interval)

    def sample(self) -> int:
        children: dict[int, list[int]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            # the command name may hold spaces and parens: the fields follow the last ')'
            fields = stat.rpartition(b")")[2].split()
            ppid = int(fields[1])
            children.setdefault(ppid, []).append(int(entry.name))
            if int(entry.name) == self.root or int(entry.name) in self.cpu or ppid in self.cpu:
                self._cpu(int(entry.name), fields)
        total, todo = 0, [self.root]
        while todo:
            pid = todo.pop()
            todo.extend(children.get(pid, ()))
            try:
                with open(f"/proc/{pid}/statm", "rb") as f:
                    total += int(f.read().split()[1]) * self.page
            except (OSError, IndexError, ValueError):
                continue  # exited (or a zombie) between the scan and the read
        return total

    def _cpu(self, pid: int, fields: list[bytes]) -> None:
        seconds = (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime
        known = self.cpu.get(pid)
        if known is None:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                return
            what = "main" if pid == self.root else "writer" if b"monitor.store.process" in argv else (
                os.path.basename(argv[0].decode(errors="replace")) or str(pid)
            )
            known = (what, seconds)
        if seconds >= known[1]:  # a zombie reads 0
            self.cpu[pid] = (known[0], seconds)

    def cpu_by_process(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for what, seconds in self.cpu.values():
            out[what] = round(out.get(what, 0.0) + seconds, 2)
        return out


def measure(
    name: str,
    command: list[str],
    lines: int,
    *,
    env: dict[str, str] | None = None,
    output: Path | None = None,
) -> Run:
    """Run ``command`` to completion; its stdout goes to ``output`` (or /dev/null)."""
    sink = open(output, "wb") if output else open(os.devnull, "wb")  # noqa: SIM115
    # What the previous command wrote reaches the disk before the clock starts, not during
    # this run: a 3M ingest leaves gigabytes for the kernel to write back.
    os.sync()
    load_before = os.getloadavg()[0]
    with sink, open(OUT / f"{name}.stderr", "wb") as errors:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=sink, stderr=errors, env=env, cwd=REPO)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        sampler.done.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak = max(usage.ru_maxrss * 1024, sampler.peak_bytes)  # ru_maxrss is in KiB on Linux
    text = output.read_text(errors="replace") if output else ""
    if proc.returncode:
        text += (OUT / f"{name}.stderr").read_text(errors="replace")[-4000:]
    cpu = usage.ru_utime + usage.ru_stime
    load = (round(load_before, 2), round(os.getloadavg()[0], 2))
    return Run(name, command, lines, wall, peak, proc.returncode, text, cpu_seconds=cpu, load=load,
               cpu_by_process=sampler.cpu_by_process())  # fmt: skip


def fingerprint() -> str:
    """Changes whenever the generator does, so a stale cached log is never reused."""
    return hashlib.sha256(GENERATOR.read_bytes()).hexdigest()[:10]


def ensure_log(lines: int, seed: int) -> tuple[Path, dict[str, int]]:
    """The cached log of ``lines`` lines and its ground-truth counts, made if missing."""
    stem = f"postfix-{lines}-seed{seed}-{fingerprint()}"
    log, counts = OUT / f"{stem}.log", OUT / f"{stem}.counts.json"
    if log.exists() and counts.exists():
        print(f"reusing {log.relative_to(REPO)}")
    else:
        for stale in OUT.glob(f"postfix-{lines}-seed{seed}-*"):
            stale.unlink()  # an older generator's output: hundreds of MB each
        print(f"generating {log.relative_to(REPO)} ...", flush=True)
        started = time.perf_counter()
        tmp = log.with_suffix(".tmp")
        subprocess.run(
            [
                sys.executable,
                str(GENERATOR),
                "--lines",
                str(lines),
                "--seed",
                str(seed),
                "--out",
                str(tmp),
                "--counts",
                str(counts),
            ],
            check=True,
        )
        tmp.rename(log)
        print(f"  {time.perf_counter() - started:.1f} s, {log.stat().st_size / 1e6:.0f} MB")
    return log, json.loads(counts.read_text())


def stored_events(db: Path) -> dict[str, int]:
    """``SELECT count(*) FROM events``, in total and by type."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        out = {"total": conn.execute("SELECT count(*) FROM events").fetchone()[0]}
        try:
            rows = conn.execute("SELECT type, count(*) FROM events GROUP BY type").fetchall()
        except sqlite3.Error:
            rows = []
    conn.close()
    out.update({str(kind): n for kind, n in sorted(rows)})
    return out


@dataclass
class Floor:
    """Re-inserting stored rows into bare tables: the cost of persisting them at all."""

    rows: dict[str, int]
    wall_seconds: float
    cpu_seconds: float
    lines: int

    @property
    def lines_per_second(self) -> float:
        return self.lines / self.wall_seconds if self.wall_seconds else 0.0


FLOOR_TABLES = ("events", "deliveries")
FLOOR_BATCH = 3000  # what mailmon's pipeline writes per batch by default


def storage_floor(db: Path, lines: int) -> Floor:
    """Time storing ``db``'s events and deliveries again, with nothing else to do.

    The rows are read into memory first, so only the writes are timed: executemany
    into tables of the same columns (no primary key, no index, rowid order), WAL and
    synchronous=NORMAL as mailmon opens SQLite, one commit at the end.
    """
    data: dict[str, tuple[int, list[tuple[object, ...]]]] = {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as source:
        for table in FLOOR_TABLES:
            cursor = source.execute(f"SELECT * FROM {table}")
            data[table] = (len(cursor.description), cursor.fetchall())
    source.close()
    target = OUT / "floor.db"
    for path in OUT.glob("floor.db*"):
        path.unlink()
    conn = sqlite3.connect(target, isolation_level=None)
    conn.execute("PRAGMA page_size=16384")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for table, (width, _) in data.items():
        columns = ", ".join(f"c{i}" for i in range(width))
        conn.execute(f"CREATE TABLE {table} ({columns})")
    cpu, wall = time.process_time(), time.perf_counter()
    conn.execute("BEGIN")
    for table, (width, rows) in data.items():
        sql = f"INSERT INTO {table} VALUES ({', '.join('?' * width)})"
        for start in range(0, len(rows), FLOOR_BATCH):
            conn.executemany(sql, rows[start : start + FLOOR_BATCH])
    conn.execute("COMMIT")
    floor = Floor(
        rows={table: len(rows) for table, (_, rows) in data.items()},
        wall_seconds=time.perf_counter() - wall,
        cpu_seconds=time.process_time() - cpu,
        lines=lines,
    )
    conn.close()
    for path in OUT.glob("floor.db*"):
        path.unlink()
    return floor


def report_header() -> dict[str, object]:
    """What every benchmark report starts with: when, which code, on what machine."""
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "code": code_version(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }


def code_version() -> dict[str, object]:
    """The commit measured, and whether monitor/ had changes not committed yet."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "monitor"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head, dirty = None, None
    # Compiled or source parsing modules (monitor/native.py), as the runs below import them.
    native = subprocess.run(
        [sys.executable, "-c", "from monitor import native; print(native.REASON)"],
        cwd=REPO, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    return {"commit": head, "monitor_dirty": None if dirty is None else bool(dirty),
            "parsing_modules": native or None}  # fmt: skip


def label(lines: int) -> str:
    return f"{lines // 1_000_000}M" if lines % 1_000_000 == 0 else f"{lines // 1000}k"


def mailmon_command() -> list[str]:
    beside = Path(sys.executable).parent / "mailmon"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("mailmon")
    return [found] if found else [sys.executable, "-m", "monitor.cli"]


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[1_000_000, 3_000_000],
        help="log sizes in lines; pflogsumm runs on the first",
    )
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    sizes = sorted(args.sizes)
    OUT.mkdir(parents=True, exist_ok=True)

    logs = {n: ensure_log(n, args.seed) for n in sizes}
    runs: list[Run] = []
    first = sizes[0]

    pflogsumm = shutil.which("pflogsumm")
    reference: Run | None = None
    if pflogsumm:
        log, _ = logs[first]
        print(f"pflogsumm {label(first)} ...", flush=True)
        reference = measure(f"pflogsumm-{label(first)}", [pflogsumm, str(log)], first)
        runs.append(reference)
    else:
        print("pflogsumm not found (Debian package pflogsumm): no speed reference")

    env = dict(os.environ, MAILMON_RESOLVE_MX="0")
    if "MAILMON_CONFIG" not in env:
        # built-in defaults, not whatever ./mailmon.toml or /etc/mailmon/ says on this machine
        defaults = OUT / "defaults.toml"
        defaults.write_text("# mailmon's built-in defaults: the ingest benchmark's config\n")
        env["MAILMON_CONFIG"] = str(defaults)
    mailmon: dict[int, Run] = {}
    for n in sizes:
        log, _ = logs[n]
        db = OUT / f"bench-{label(n)}.db"
        for path in OUT.glob(f"{db.name}*"):  # the db and its -wal / -shm / -journal
            path.unlink()
        name = f"mailmon-{label(n)}"
        print(f"mailmon ingest {label(n)} ...", flush=True)
        command = [*mailmon_command(), "ingest", "postfix", str(log), "--db", f"sqlite:///{db}"]
        run = measure(name, command, n, env=env, output=OUT / f"{name}.txt")
        if db.exists():
            run.db_bytes = sum(p.stat().st_size for p in OUT.glob(f"{db.name}*"))
            try:
                run.events = stored_events(db)
            except sqlite3.Error as exc:
                print(f"  cannot count events in {db.name}: {exc}")
        mailmon[n] = run
        runs.append(run)

    resolving, queries = resolution_on(first, logs[first][0])
    runs.append(resolving)

    floor: Floor | None = None
    first_db = OUT / f"bench-{label(first)}.db"
    if mailmon[first].events and first_db.exists():
        print("storage floor ...", flush=True)
        floor = storage_floor(first_db, first)

    report = build_report(runs, reference, mailmon, logs, floor, resolving)
    report["mailmon_config"] = env["MAILMON_CONFIG"]
    report["resolution"] = resolution_report(mailmon[first], resolving, queries)
    assert isinstance(report["targets"], dict)
    report["targets"]["resolution"] = report["resolution"]["target"]
    print_report(report, runs, mailmon, logs)
    (OUT / "ingest.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {(OUT / 'ingest.json').relative_to(REPO)}")
    failed = [r.name for r in runs if r.returncode]
    if failed:
        print(f"ERROR: {', '.join(failed)} exited non-zero (see bench/out/*.stderr)")
        return 1
    return 0


def resolution_on(lines: int, log: Path) -> tuple[Run, int]:
    """``mailmon ingest`` of ``log`` with MX resolution ON against the delayed test DNS;
    returns the run and how many queries the DNS server answered."""
    from dns_zone import log_dns  # beside this script: it imports the tests' DNS server

    name = f"mailmon-{label(lines)}-dns"
    db = OUT / f"bench-{label(lines)}-dns.db"
    for path in OUT.glob(f"{db.name}*"):
        path.unlink()
    print(f"mailmon ingest {label(lines)}, MX resolution ON (DNS answers "
          f"{DNS_DELAY_SECONDS * 1000:.0f} ms late) ...", flush=True)  # fmt: skip
    with log_dns(log, delay_seconds=DNS_DELAY_SECONDS) as server:
        config = OUT / "resolve-mx.toml"
        config.write_text(f'[providers]\nnameservers = ["127.0.0.1:{server.port}"]\n')
        env = dict(os.environ, MAILMON_RESOLVE_MX="1", MAILMON_CONFIG=str(config))
        command = [*mailmon_command(), "ingest", "postfix", str(log), "--db", f"sqlite:///{db}"]
        run = measure(name, command, lines, env=env, output=OUT / f"{name}.txt")
        return run, server.count()


def resolution_report(off: Run, on: Run, queries: int) -> dict[str, object]:
    ratio = on.lines_per_second / off.lines_per_second if off.lines_per_second else 0.0
    said = [line for line in on.output.splitlines() if line.startswith("MX lookups:")]
    return {
        "dns_delay_ms": round(DNS_DELAY_SECONDS * 1000),
        "dns_queries": queries,
        "off_lines_per_second": round(off.lines_per_second),
        "on_lines_per_second": round(on.lines_per_second),
        "mailmon_says": said[0] if said else "",
        "target": {
            "what": f"lines/s with MX resolution ON >= {RESOLUTION_TARGET:g}x OFF "
            f"({label(off.lines)}, DNS {DNS_DELAY_SECONDS * 1000:.0f} ms)",
            "value": round(ratio, 3),
            "ok": ratio >= RESOLUTION_TARGET,
        },
    }


def build_report(
    runs: list[Run],
    reference: Run | None,
    mailmon: dict[int, Run],
    logs: dict[int, tuple[Path, dict[str, int]]],
    floor: Floor | None = None,
    resolving: Run | None = None,
) -> dict[str, object]:
    sizes = sorted(mailmon)
    first, last = mailmon[sizes[0]], mailmon[sizes[-1]]
    targets: dict[str, dict[str, object]] = {}
    if reference is not None and reference.wall_seconds and resolving is not None:
        ratio = resolving.wall_seconds / reference.wall_seconds
        targets["wall"] = {
            "what": f"mailmon wall s (MX resolution ON) <= {WALL_TARGET:g}x pflogsumm's"
            f" ({label(sizes[0])})",
            "value": round(ratio, 2),
            "ok": ratio <= WALL_TARGET,
        }
    per_million = first.cpu_seconds * 1e6 / first.lines if first.lines else 0.0
    targets["cpu"] = {
        "what": f"mailmon CPU s per 1M lines (resolution OFF) <= {CPU_TARGET_PER_MILLION:g}"
        + (
            f" (pflogsumm's: {reference.cpu_seconds * 1e6 / reference.lines:.2f})"
            if reference is not None and reference.lines
            else ""
        ),
        "value": round(per_million, 2),
        "ok": 0 < per_million <= CPU_TARGET_PER_MILLION,
    }
    targets["rss"] = {
        "what": f"peak RSS ({label(sizes[0])}) < {RSS_TARGET_BYTES / 1e6:.0f} MB",
        "value": round(first.peak_rss_bytes / 1e6, 1),
        "ok": first.peak_rss_bytes < RSS_TARGET_BYTES,
    }
    if len(sizes) > 1:
        growth = last.peak_rss_bytes / first.peak_rss_bytes if first.peak_rss_bytes else 0.0
        targets["rss_growth"] = {
            "what": f"peak RSS ({label(sizes[-1])}) <= {RSS_GROWTH_TARGET:g}x peak RSS "
            f"({label(sizes[0])})",
            "value": round(growth, 3),
            "ok": growth <= RSS_GROWTH_TARGET,
        }
    checks = {}
    for n, run in mailmon.items():
        truth = logs[n][1]
        checks[label(n)] = {
            kind: {"stored": run.events.get(kind, 0), "in_log": truth.get(key, 0)}
            for kind, key in EXPECTED_EVENTS.items()
        }
    floor_report: dict[str, object] | None = None
    if floor is not None:
        floor_report = {
            "rows": floor.rows,
            "wall_seconds": round(floor.wall_seconds, 3),
            "cpu_seconds": round(floor.cpu_seconds, 3),
            "lines_per_second_ceiling": round(floor.lines_per_second),
        }
        if reference is not None and reference.lines_per_second:
            floor_report["ceiling_vs_pflogsumm"] = round(
                floor.lines_per_second / reference.lines_per_second, 2
            )
    return {
        **report_header(),
        "storage_floor": floor_report,
        "logs": {
            label(n): {"path": str(p.relative_to(REPO)), "counts": c} for n, (p, c) in logs.items()
        },
        "runs": [r.to_dict() for r in runs],
        "targets": targets,
        "event_checks": checks,
    }


def print_report(
    report: dict[str, object],
    runs: list[Run],
    mailmon: dict[int, Run],
    logs: dict[int, tuple[Path, dict[str, int]]],
) -> None:
    code = report["code"]
    assert isinstance(code, dict)
    dirty = " + uncommitted changes in monitor/" if code["monitor_dirty"] else ""
    print(f"\nmailmon at commit {code['commit']}{dirty}; config {report['mailmon_config']}")
    print(f"parsing modules: {code.get('parsing_modules')}")
    print(
        f"{'command':<18} {'lines':>10} {'wall s':>8} {'cpu s':>7} {'lines/s':>10} "
        f"{'peak RSS MB':>12}  rc  load before/after"
    )
    for r in runs:
        print(
            f"{r.name:<18} {r.lines:>10,} {r.wall_seconds:>8.2f} {r.cpu_seconds:>7.2f} "
            f"{r.lines_per_second:>10,.0f} {r.peak_rss_bytes / 1e6:>12.1f}  {r.returncode:>2}"
            f"  {r.load[0]:.2f} / {r.load[1]:.2f}"
        )
    print(f"(load: 1-minute load average; {os.cpu_count()} CPUs. Above 1, something else ran.)")
    for r in runs:
        if len(r.cpu_by_process) > 1:
            split = ", ".join(f"{k} {v:.1f}" for k, v in r.cpu_by_process.items())
            print(f"{r.name}: CPU s by process (sampled every 20 ms): {split}")

    for n, run in mailmon.items():
        print(f"\nmailmon {label(n)} says:")
        for line in run.output.strip().splitlines()[-8:]:
            print(f"  {line}")
        print(f"  events stored (SELECT count(*) FROM events): {run.events.get('total', 0):,}")
        log_bytes = logs[n][0].stat().st_size
        print(f"  database {run.db_bytes / 1e6:,.0f} MB for a {log_bytes / 1e6:,.0f} MB log")
        by_type = {k: v for k, v in run.events.items() if k != "total"}
        if by_type:
            print("  by type: " + ", ".join(f"{k} {v:,}" for k, v in by_type.items()))

    print("\nevents against the log (the generator's ground truth):")
    checks = report["event_checks"]
    assert isinstance(checks, dict)
    for size, kinds in checks.items():
        parts = []
        for kind, c in kinds.items():
            mark = "" if c["stored"] == c["in_log"] else " MISMATCH"
            parts.append(f"{kind} {c['stored']:,}/{c['in_log']:,}{mark}")
        print(f"  {size}: " + "; ".join(parts))
    _, first_counts = logs[min(logs)]
    print(f"  (log {label(min(logs))}: {first_counts.get('received', 0):,} messages received)")

    floor = report.get("storage_floor")
    if isinstance(floor, dict):
        rows = ", ".join(f"{n:,} {t}" for t, n in floor["rows"].items())
        print(
            f"\nstorage floor ({label(min(logs))}): re-inserting the stored rows ({rows}) into"
            f" bare tables took {floor['wall_seconds']:.2f} s wall, {floor['cpu_seconds']:.2f}"
            f" s CPU: at most {floor['lines_per_second_ceiling']:,} lines/s for any Python"
            " ingest that stores them, before reading or parsing a line"
        )
        if "ceiling_vs_pflogsumm" in floor:
            print(f"  = {floor['ceiling_vs_pflogsumm']}x pflogsumm's lines/s")

    resolution = report.get("resolution")
    if isinstance(resolution, dict):
        print(
            f"\nMX resolution ON ({resolution['dns_delay_ms']} ms DNS, "
            f"{resolution['dns_queries']:,} queries): {resolution['on_lines_per_second']:,} "
            f"lines/s against {resolution['off_lines_per_second']:,} OFF"
            f" = {resolution['target']['value']}x"
        )
        print(f"  {resolution['mailmon_says']}")

    print("\ntargets:")
    targets = report["targets"]
    assert isinstance(targets, dict)
    for t in targets.values():
        print(f"  {verdict(bool(t['ok'])):<6} {t['what']}: {t['value']}")
    if "wall" not in targets:
        print("  MISSED wall time target not measured (no pflogsumm)")


if __name__ == "__main__":
    raise SystemExit(main())
