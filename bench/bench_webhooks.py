"""Webhook load benchmark: signed SendGrid batches and SES notifications posted to ``mailmon serve``.

    .venv/bin/python bench/bench_webhooks.py [--seconds 60] [--batch 100] [--concurrency 8]
        [--rate 500] [--rate-batch 10] [--ses-every 5] [--clients 2] [--serve-from DIR] [--profile]

Starts ``mailmon serve`` as a subprocess on a free loopback port over a fresh SQLite
database in ``bench/out/``, with ``[webhooks.sendgrid]`` (a throw-away ECDSA P-256 key,
its public half in a secret file) and ``[webhooks.ses]`` (a throw-away RSA key whose
self-signed certificate is pinned with ``certificate_file``, so nothing is fetched).
Before each phase this process builds and signs every request of it as the providers do
(SendGrid: ECDSA over timestamp + raw body; SNS: signature version 2 over the canonical
string); during the phase ``--clients`` forked processes only send them, over raw asyncio
HTTP/1.1 keep-alive connections (``bench/loadgen.py``), so the generator's own cost is
small and reported.  Every ``--ses-every``-th request is one SES ``Delivery`` notification
in its SNS envelope; the others are SendGrid batches (``processed``, ``delivered`` and
some ``open`` events, each with its own ``sg_event_id``).

Two phases of ``--seconds`` each:

1. **throughput**: ``--concurrency`` connections post back to back, SendGrid batches of
   ``--batch`` events; events/s accepted (acknowledged by a 200) is the figure judged.
2. **latency**: an open loop posting ``--rate`` requests/s (SendGrid batches of
   ``--rate-batch``) on a fixed schedule, whatever the answers; each latency runs from
   the request's scheduled time to its answer (so a stall counts for every request it
   delays).  p50 / p99 / max; p99 is judged.

Each phase also reports serve's CPU (from /proc, with its store writer process:
percent of one core, and ms per request), the clients' CPU, and the load average
before and after.  Then serve is stopped (SIGTERM) and the ``events`` table is counted: it must hold exactly the events
the 200 answers acknowledged (their ``events`` field), no more (nothing stored twice,
nothing from a refused request) and no fewer (nothing acknowledged lost).  Targets:
>= 5,000 events/s in batches; p99 < 100 ms at 500 requests/s; zero lost.  A missed
target prints MISSED and still exits 0.  ``--serve-from DIR`` runs the serve of another
checkout (before/after).  ``--profile`` then runs the endpoint's storing half (parse,
pipeline, commit) under cProfile in this process on 200 batches and prints where the
time went.
Everything is written to ``bench/out/webhooks.json``.
"""

from __future__ import annotations

import argparse
import base64
import functools
import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
sys.path.insert(0, str(REPO))

from bench import loadgen  # noqa: E402
from monitor.collectors.esp.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER  # noqa: E402
from monitor.collectors.esp.sns import canonical  # noqa: E402

EVENTS_PER_SECOND_TARGET = 5000.0
P99_TARGET_SECONDS = 0.100
TOPIC = "arn:aws:sns:us-east-1:123456789012:bench-ses-events"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-bench.pem"
DOMAINS = ["gmail.com", "outlook.com", "yahoo.com", "icloud.com",
           *(f"corp{i}.example" for i in range(40))]  # fmt: skip


class Signer:
    """Throw-away keys; signed SendGrid batches and SNS envelopes with unique event ids."""

    def __init__(self, out: Path) -> None:
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        der = self.ec.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.sendgrid_key = out / "webhooks-sendgrid.key"
        self.sendgrid_key.write_text(base64.b64encode(der).decode() + "\n")
        now = datetime.now(UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self.rsa.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
                .sign(self.rsa, hashes.SHA256()))  # fmt: skip
        self.certificate = out / "webhooks-sns.pem"
        self.certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.ids = itertools.count(1)

    def sendgrid(self, events: int) -> tuple[str, bytes, dict[str, str]]:
        """A batch of ``events``: per message processed, delivered, and every third an open."""
        now = int(time.time())
        batch: list[dict[str, Any]] = []
        while len(batch) < events:
            n = next(self.ids)
            rcpt = f"user{n}@{DOMAINS[n % len(DOMAINS)]}"
            common = {"email": rcpt, "smtp-id": f"<b{n}@app.example>",
                      "sg_message_id": f"sg{n}.filter0001.1.0", "category": ["newsletter"]}  # fmt: skip
            kinds = ["processed", "delivered", "open"] if n % 3 == 0 else ["processed", "delivered"]
            for kind in kinds[: events - len(batch)]:
                event = common | {"event": kind, "timestamp": now, "sg_event_id": f"e{n}-{kind}"}
                if kind == "delivered":
                    event["response"] = "250 2.0.0 OK 1700000000 a1si123 - gsmtp"
                batch.append(event)
        body = json.dumps(batch).encode()
        signature = self.ec.sign(str(now).encode() + body, ec.ECDSA(hashes.SHA256()))
        headers = {SIGNATURE_HEADER: base64.b64encode(signature).decode(),
                   TIMESTAMP_HEADER: str(now), "content-type": "application/json"}  # fmt: skip
        return "/webhooks/sendgrid", body, headers

    def ses(self) -> tuple[str, bytes, dict[str, str]]:
        """One SES Delivery event in its SNS envelope, signed (version 2)."""
        n = next(self.ids)
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        rcpt = f"user{n}@{DOMAINS[n % len(DOMAINS)]}"
        message = {
            "eventType": "Delivery",
            "mail": {"timestamp": now, "source": "news@app.example", "messageId": f"ses-{n}",
                     "destination": [rcpt], "tags": {"campaign": ["bench"]}},
            "delivery": {"timestamp": now, "recipients": [rcpt], "processingTimeMillis": 512,
                         "smtpResponse": "250 2.6.0 Message received",
                         "reportingMTA": "a8-1.smtp-out.amazonses.com"},
        }  # fmt: skip
        envelope = {"Type": "Notification", "MessageId": f"sns-{n}", "TopicArn": TOPIC,
                    "Message": json.dumps(message), "Timestamp": now, "SignatureVersion": "2",
                    "SigningCertURL": CERT_URL}  # fmt: skip
        signature = self.rsa.sign(canonical(envelope), padding.PKCS1v15(), hashes.SHA256())
        envelope["Signature"] = base64.b64encode(signature).decode()
        return "/webhooks/ses", json.dumps(envelope).encode(), {"content-type": "text/plain"}

    def request(self, i: int, batch: int, ses_every: int) -> tuple[str, bytes, dict[str, str]]:
        return self.ses() if ses_every and i % ses_every == ses_every - 1 else self.sendgrid(batch)


class Tally:
    """Per phase: (latency, status, events acknowledged) of every request."""

    def __init__(self, results: list[loadgen.Result], errors: dict[str, int]) -> None:
        self.results = results
        self.errors = errors

    def summary(self, wall: float) -> dict[str, Any]:
        latencies = sorted(r[0] for r in self.results)
        acked = sum(r[2] for r in self.results)
        statuses: dict[str, int] = {}
        for _, status, _, _ in self.results:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        errors = dict(self.errors)
        not_sent = errors.pop("not_sent", 0)
        return {
            "requests": len(self.results), "statuses": statuses, "transport_errors": errors,
            "not_sent": not_sent, "events_acknowledged": acked, "seconds": round(wall, 2),
            "requests_per_second": round(len(self.results) / wall, 1),
            "events_per_second": round(acked / wall, 1),
            "latency_p50_ms": round(1000 * percentile(latencies, 0.50), 1),
            "latency_p99_ms": round(1000 * percentile(latencies, 0.99), 1),
            "latency_max_ms": round(1000 * (latencies[-1] if latencies else 0.0), 1),
            "slow_seconds": self.slow_seconds(),
        }  # fmt: skip

    def slow_seconds(self, over: float = 0.1) -> dict[str, Any]:
        """Where the requests slower than ``over`` seconds were sent: in a few seconds (a
        stall: a job, a checkpoint) or spread over the run (a server near its capacity)."""
        if not self.results:
            return {"requests": 0, "seconds": 0, "worst": []}
        first = min(r[3] for r in self.results)
        per: dict[int, int] = {}
        for latency, _, _, sent in self.results:
            if latency > over:
                per[int(sent - first)] = per.get(int(sent - first), 0) + 1
        worst = sorted(per.items(), key=lambda item: -item[1])[:5]
        return {"requests": sum(per.values()), "seconds": len(per),
                "worst": [f"{n} at {second} s" for second, n in worst]}  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


def prepare(signer: Signer, count: int, batch: int, ses_every: int, host: str) -> list[bytes]:
    """``count`` requests, signed and encoded before the phase: the generator then only sends."""
    return [loadgen.encode(host, signer.request(i, batch, ses_every)) for i in range(count)]


class Usage:
    """CPU seconds of serve (from /proc) and of the clients, and the load average, per phase."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.started = time.monotonic()
        self.serve = self.serve_cpu()
        self.load = loadavg()

    def serve_cpu(self) -> float:
        """utime + stime of serve and of its live descendants (its store writer process)."""
        stats: dict[int, list[str]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    text = Path(entry.path, "stat").read_text()
                except OSError:
                    continue  # ended meanwhile
                # the command name may hold spaces and parens: the fields follow the last ')'
                stats[int(entry.name)] = text.rsplit(")", 1)[1].split()
        total, todo = 0, [self.pid]
        while todo:
            pid = todo.pop()
            fields = stats.get(pid)
            if fields is not None:
                total += int(fields[11]) + int(fields[12])  # utime, stime
            todo.extend(p for p, f in stats.items() if int(f[1]) == pid)
        return total / self.ticks

    def report(self, client_cpu: float, requests: int) -> dict[str, Any]:
        wall = time.monotonic() - self.started
        serve = self.serve_cpu() - self.serve
        return {"serve_cpu_percent": round(100 * serve / wall, 1),
                "serve_cpu_ms_per_request": round(1000 * serve / max(1, requests), 2),
                "client_cpu_percent": round(100 * client_cpu / wall, 1),
                "loadavg_before": self.load, "loadavg_after": loadavg()}  # fmt: skip


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def throughput(port: int, pid: int, signer: Signer, args: argparse.Namespace) -> dict[str, Any]:
    """``--concurrency`` connections over ``--clients`` processes posting back to back."""
    count = int(args.seconds * args.throughput_ceiling)
    raws = prepare(signer, count, args.batch, args.ses_every, f"127.0.0.1:{port}")
    clients = max(1, min(args.clients, args.concurrency))
    start = time.monotonic() + 0.2
    usage = Usage(pid)
    runs = [functools.partial(loadgen.closed_loop, "127.0.0.1", port, raws[k::clients],
                              len(range(k, args.concurrency, clients)), start, args.seconds)
            for k in range(clients)]  # fmt: skip
    results, errors, cpu = loadgen.run_processes(runs)
    summary = Tally(results, errors).summary(time.monotonic() - start)
    return summary | usage.report(cpu, len(results)) | {"prepared": count}


def latency(port: int, pid: int, signer: Signer, args: argparse.Namespace) -> dict[str, Any]:
    """An open loop of ``--rate`` requests/s over ``--clients`` processes (request i in
    process i mod clients), each latency counted from the request's due time."""
    total = int(args.rate * args.seconds)
    raws = prepare(signer, total, args.rate_batch, args.ses_every, f"127.0.0.1:{port}")
    clients = max(1, args.clients)
    start = time.monotonic() + 0.2
    dues = [start + i / args.rate for i in range(total)]
    usage = Usage(pid)
    per_client = max(1, args.max_connections // clients)
    runs = [functools.partial(loadgen.open_loop, "127.0.0.1", port, raws[k::clients],
                              dues[k::clients], per_client) for k in range(clients)]  # fmt: skip
    results, errors, cpu = loadgen.run_processes(runs)
    summary = Tally(results, errors).summary(time.monotonic() - start)
    return summary | usage.report(cpu, len(results))


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


def write_config(out: Path, signer: Signer, db: Path, port: int) -> Path:
    config = out / "webhooks.toml"
    config.write_text(
        "# the webhook load benchmark's config (bench/bench_webhooks.py)\n"
        f'[database]\nurl = "sqlite:///{db}"\n\n'
        f'[service]\nlisten_host = "127.0.0.1"\nlisten_port = {port}\n\n'
        "[providers]\nresolve_mx = false\n\n"
        f'[webhooks.sendgrid]\nsecret_file = "{signer.sendgrid_key}"\n\n'
        f'[webhooks.ses]\ntopic_arns = ["{TOPIC}"]\ncertificate_file = "{signer.certificate}"\n'
    )
    return config


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # uvicorn's graceful shutdown
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench(args: argparse.Namespace) -> dict[str, Any]:
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    db = out / "webhooks.db"
    for stale in out.glob("webhooks.db*"):
        stale.unlink()
    signer = Signer(out)
    port = free_port()
    config = write_config(out, signer, db, port)
    env = {k: v for k, v in os.environ.items() if k not in ("MAILMON_DB_URL", "MAILMON_CONFIG")}
    env |= {"MAILMON_RESOLVE_MX": "0", "MAILMON_DATA_DIR": str(out)}
    command = [sys.executable, "-m", "monitor", "serve", "--config", str(config)]
    base = f"http://127.0.0.1:{port}"
    report: dict[str, Any] = {"command": command, "config": config.read_text(),
                              "args": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
    with open(out / "webhooks-serve.log", "wb") as serve_log:
        proc = subprocess.Popen(command, stdout=serve_log, stderr=subprocess.STDOUT, env=env,
                                cwd=args.serve_from)  # fmt: skip
    try:
        wait_ready(f"{base}/healthz", proc)
        print(f"throughput: {args.concurrency} clients, SendGrid batches of {args.batch}, "
              f"every {args.ses_every}th request one SES notification, {args.seconds:.0f} s ...",
              flush=True)  # fmt: skip
        report["throughput"] = throughput(port, proc.pid, signer, args)
        print_phase("throughput", report["throughput"])
        print(f"latency: {args.rate} requests/s, SendGrid batches of {args.rate_batch}, "
              f"{args.seconds:.0f} s ...", flush=True)  # fmt: skip
        report["latency"] = latency(port, proc.pid, signer, args)
        print_phase("latency", report["latency"])
    finally:
        stop(proc)
    report["serve_exit"] = proc.returncode
    acked = sum(report[p]["events_acknowledged"] for p in ("throughput", "latency"))
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    report["events_acknowledged"] = acked
    report["events_stored"] = stored
    report["events_lost"] = max(0, acked - stored)
    if args.profile:
        report["profile"] = profile_ingest(signer, out, args.batch, 200)
    return report


def profile_ingest(signer: Signer, out: Path, batch: int, requests: int, top: int = 25) -> list[str]:
    """cProfile of the endpoint's storing half (what serve runs in its thread pool for each
    request, after the signature check) over ``requests`` SendGrid batches, in this process:
    a profiler attached to serve sees only its event loop thread."""
    import cProfile
    import io
    import pstats

    from prometheus_client import CollectorRegistry

    from monitor.collectors.esp.base import webhooks
    from monitor.metrics import Metrics
    from monitor.pipeline import Pipeline
    from monitor.service.hook import SourceEndpoint
    from monitor.store import Store

    for stale in out.glob("webhooks-profile.db*"):
        stale.unlink()
    bodies = [signer.sendgrid(batch)[1] for _ in range(requests)]
    with Store.open(f"sqlite:///{out / 'webhooks-profile.db'}") as store:
        metrics = Metrics(CollectorRegistry())
        hook = webhooks()["sendgrid"]
        endpoint = SourceEndpoint(Pipeline(store, metrics=metrics), metrics, hook.source(),
                                  hook.split, path="/webhooks/sendgrid")  # fmt: skip
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for body in bodies:
            endpoint._ingest(body)
        profiler.disable()
        wall = time.perf_counter() - started
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    head = f"-- profile: {requests} batches of {batch}: {1000 * wall / requests:.1f} ms each (profiled)"
    return [head, *text.getvalue().splitlines()]


def judge(report: dict[str, Any]) -> list[str]:
    t, lat = report["throughput"], report["latency"]
    verdicts = [
        ("events/s in batches", t["events_per_second"] >= EVENTS_PER_SECOND_TARGET,
         f"{t['events_per_second']:,.0f} (target >= {EVENTS_PER_SECOND_TARGET:,.0f})"),
        (f"p99 at {report['args']['rate']} requests/s",
         lat["latency_p99_ms"] < 1000 * P99_TARGET_SECONDS and not lat["not_sent"],
         f"{lat['latency_p99_ms']:.1f} ms (target < {1000 * P99_TARGET_SECONDS:.0f} ms), "
         f"{lat['requests_per_second']:.0f} requests/s answered, {lat['not_sent']:,} not sent "
         "(server saturated)"),
        ("events lost", report["events_lost"] == 0 and report["events_stored"] == report["events_acknowledged"],
         f"{report['events_stored']:,} stored / {report['events_acknowledged']:,} acknowledged"),
    ]  # fmt: skip
    return [f"{'ok    ' if ok else 'MISSED'} {name}: {text}" for name, ok, text in verdicts]


def print_phase(phase: str, p: dict[str, Any]) -> None:
    print(f"{phase:<10} {p['requests']:>7,} requests {p['requests_per_second']:>8,.1f}/s "
          f"{p['events_per_second']:>9,.1f} events/s  p50 {p['latency_p50_ms']:.1f} ms  "
          f"p99 {p['latency_p99_ms']:.1f} ms  max {p['latency_max_ms']:.1f} ms  "
          f"statuses {p['statuses']} {p['transport_errors'] or ''}"
          f"{' not sent: ' + str(p['not_sent']) if p.get('not_sent') else ''}\n"
          f"{'':<10} CPU: serve {p['serve_cpu_percent']:.0f} % ({p['serve_cpu_ms_per_request']:.2f} ms a request), "
          f"clients {p['client_cpu_percent']:.0f} %"
          f" (of one core); load average {p['loadavg_before']} -> {p['loadavg_after']}\n"
          f"{'':<10} over 100 ms: {p['slow_seconds']['requests']:,} requests sent in "
          f"{p['slow_seconds']['seconds']} different seconds; most: "
          f"{', '.join(p['slow_seconds']['worst']) or 'none'}",
          flush=True)  # fmt: skip


def print_report(report: dict[str, Any]) -> None:
    print()
    for phase in ("throughput", "latency"):
        print_phase(phase, report[phase])
    for line in report.get("profile", []):
        print(line)
    for line in report["verdicts"]:
        print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    parser.add_argument("--batch", type=int, default=100, help="SendGrid events per batch (throughput)")
    parser.add_argument("--concurrency", type=int, default=8, help="clients in the throughput phase")
    parser.add_argument("--rate", type=float, default=500.0, help="requests/s in the latency phase")
    parser.add_argument("--rate-batch", type=int, default=10, help="SendGrid events per batch (latency)")
    parser.add_argument("--max-connections", type=int, default=256, help="client connections (latency)")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--serve-from", type=Path, default=REPO,
                        help="the checkout whose `mailmon serve` runs (before/after comparisons)")
    parser.add_argument("--throughput-ceiling", type=float, default=150.0,
                        help="requests/s prepared for the throughput phase (more than it can take)")
    parser.add_argument("--ses-every", type=int, default=5, help="every Nth request is an SES one (0: none)")
    parser.add_argument("--out", type=Path, default=OUT, help="where the database and report go")
    parser.add_argument("--profile", action="store_true",
                        help="then profile the storing of SendGrid batches in this process")
    args = parser.parse_args(argv)
    report = bench(args)
    report["verdicts"] = judge(report)
    print_report(report)
    (args.out / "webhooks.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
