"""``mailmon serve --demo``: the real service fed by simulated traffic, for a first look.

    settings = DemoSettings(directory=Path("~/.local/share/mailmon/demo"))
    config = demo_config(base, settings)        # the real service's config: a log, a webhook,
    demo = Demo(settings, url=...)              # a DMARC directory, all in the demo directory
    demo.start(); ...; demo.stop()

The simulator only writes what a real mail system would leave: Postfix log lines in
``DIR/mail.log`` (read by the real log follower), Mailmon-signed Mailgun webhook posts to
the real ``/webhooks/mailgun`` endpoint, and DMARC aggregate reports dropped in
``DIR/dmarc`` (read by the real ``dmarc_reports`` job).  Nothing takes a shortcut into the
store: the incident the demo provokes is opened by the real detector.

Time: the demo starts with ``history_seconds`` of traffic before the moment it starts,
written ``speed`` times faster than real time until it has caught up with the clock, and
in real time after that.  Gmail starts rejecting ``incident_after_seconds`` (wall clock)
after the start.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import random
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from monitor.config import Config, DmarcConfig, JobConfig, LogSource, WebhookSettings
from monitor.demo.traffic import DOMAINS, PostfixTraffic
from monitor.errors import ConfigError

__all__ = ["DEMO_KEY_ENV", "MARKER", "Demo", "DemoSettings", "demo_config", "prepare"]

log = logging.getLogger(__name__)

#: The demo's Mailgun signing key, made up at each start and handed over in the environment.
DEMO_KEY_ENV = "MAILMON_DEMO_MAILGUN_KEY"
#: Our domains in the simulated DMARC reports.
OUR_DOMAIN = "shop.example"


@dataclass(frozen=True)
class DemoSettings:
    directory: Path
    history_seconds: float = 1800.0
    speed: float = 60.0
    incident_after_seconds: float = 120.0
    per_minute: float = 120.0
    seed: int = 1
    tick_seconds: float = 0.25


def demo_config(base: Config, settings: DemoSettings) -> Config:
    """``base`` with the demo's sources: its log, its webhook and its DMARC directory; no
    DNS (the demo's domains are the well-known ones), and the detectors run often."""
    d = settings.directory
    jobs = dict(base.jobs)
    jobs["dmarc_reports"] = JobConfig(interval_seconds=5)
    return base.model_copy(update={
        "logs": (LogSource(kind="postfix", path=str(d / "mail.log"), poll_interval_seconds=0.25),),
        "providers": base.providers.model_copy(update={"resolve_mx": False}),
        # The demo's domains get their own `domain` label from the first scrape on.
        "metrics": base.metrics.model_copy(update={"domains": tuple(d for d, _, _ in DOMAINS)}),
        "rollup": base.rollup.model_copy(update={"interval_seconds": 2.0}),
        "dmarc": DmarcConfig(domains=(OUR_DOMAIN,), directory=str(d / "dmarc"),
                             min_age_seconds=1.0),
        "webhooks": {**base.webhooks, "mailgun": WebhookSettings(secret_env=DEMO_KEY_ENV)},
        "jobs": jobs,
    })  # fmt: skip


#: Marks a directory as the demo's: only such a directory (or an empty one) is emptied.
MARKER = ".mailmon-demo"


def prepare(settings: DemoSettings) -> None:
    """A fresh demo directory (what an earlier demo left is removed) and its signing key.

    A directory that holds anything and is not marked as the demo's is refused: ``--demo-dir``
    pointed at ``/var/log`` must not cost anyone their mail log."""
    d = settings.directory
    if d.is_dir() and any(d.iterdir()) and not (d / MARKER).exists():
        raise ConfigError(f"--demo-dir {d}: not empty and not a demo directory (no {MARKER}); "
                          "name a new or empty directory")  # fmt: skip
    d.mkdir(parents=True, exist_ok=True)
    (d / MARKER).write_text("written by `mailmon serve --demo`; emptied at each start\n")
    for name in ("mail.log", "mailmon.db", "mailmon.db-wal", "mailmon.db-shm"):
        (d / name).unlink(missing_ok=True)
    shutil.rmtree(d / "dmarc", ignore_errors=True)
    (d / "dmarc").mkdir()
    (d / "mail.log").touch()
    os.environ[DEMO_KEY_ENV] = secrets.token_hex(16)


class Demo:
    """The simulator's thread: log lines, webhook posts and DMARC reports as time goes on."""

    def __init__(self, settings: DemoSettings, *, url: str,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.settings = settings
        self.url = url.rstrip("/")
        self.clock = clock
        self.started_at = clock()
        self.origin = self.started_at - settings.history_seconds
        self.incident_at = self.sim_time(self.started_at + settings.incident_after_seconds)
        self.traffic = PostfixTraffic(seed=settings.seed, per_minute=settings.per_minute,
                                      start=self.origin, incident_at=self.incident_at)
        self.rng = random.Random(settings.seed + 1)
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_webhook = self.origin
        self._reports = 0
        self.webhooks_sent = 0
        self.webhooks_failed = 0

    def sim_time(self, wall: float) -> float:
        """The event time at wall-clock ``wall``: ``speed`` times faster until caught up."""
        s = self.settings
        return min(wall, self.origin + s.speed * (wall - self.started_at))

    def start(self) -> None:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per webhook post is noise
        self._write_dmarc_report()
        self._thread = threading.Thread(target=self._run, name="mailmon-demo", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        path = self.settings.directory / "mail.log"
        with httpx.Client(timeout=5) as client, path.open("a", encoding="utf-8") as out:
            while not self.stop_event.is_set():
                try:
                    now = self.sim_time(self.clock())
                    lines = list(self.traffic.advance(now))
                    if lines:
                        out.write("\n".join(lines) + "\n")
                        out.flush()
                    self._post_webhooks(client, now)
                except Exception:  # the demo goes on; the service is what it shows
                    log.exception("demo traffic failed; going on")
                self.stop_event.wait(self.settings.tick_seconds)

    def _post_webhooks(self, client: httpx.Client, now: float) -> None:
        """About one Mailgun event per simulated 20 seconds: delivered, opened, complained."""
        while self._next_webhook <= now:
            at = self._next_webhook
            self._next_webhook += 20.0
            kind = self.rng.choices(("delivered", "opened", "complained"), (70, 29, 1))[0]
            n = int(at)
            data = {
                "event": kind, "id": f"demo{n}", "timestamp": at,
                "recipient": f"member{n % 997:03d}@{self.rng.choice(('gmail.com', 'yahoo.com'))}",
                "message": {"headers": {"message-id": f"{n}.mg@accounts.{OUR_DOMAIN}",
                                        "from": f"Shop <no-reply@accounts.{OUR_DOMAIN}>"}},
                "delivery-status": {"code": 250, "message": "OK"} if kind == "delivered" else {},
                "tags": ["stream:transactional"],
            }  # fmt: skip
            token = secrets.token_hex(25)
            stamp = str(int(self.clock()))  # signed now: the endpoint refuses stale signatures
            key = os.environ.get(DEMO_KEY_ENV, "").encode()
            body = {"signature": {"timestamp": stamp, "token": token,
                                  "signature": hmac.new(key, f"{stamp}{token}".encode(),
                                                        hashlib.sha256).hexdigest()},
                    "event-data": data}  # fmt: skip
            try:
                answer = client.post(f"{self.url}/webhooks/mailgun", content=json.dumps(body),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
                ok = answer.status_code < 300
            except httpx.HTTPError:
                ok = False
            self.webhooks_sent += ok
            self.webhooks_failed += not ok
            if not ok and self.webhooks_failed in (1, 100):
                log.warning("demo: a webhook post to %s/webhooks/mailgun failed", self.url)

    def _write_dmarc_report(self) -> None:
        """Yesterday's aggregate report from google.com: our own servers pass, and someone
        else sends as us and fails (the unknown sender ``mailmon dmarc summary`` shows)."""
        day = int(self.started_at // 86400 * 86400) - 86400
        rows = [("192.0.2.10", 4200, "pass", "pass"), ("192.0.2.11", 1300, "pass", "pass"),
                ("203.0.113.66", 37, "fail", "fail")]  # fmt: skip
        records = "".join(f"""
  <record>
    <row><source_ip>{ip}</source_ip><count>{count}</count>
      <policy_evaluated><disposition>{"none" if dkim == "pass" else "reject"}</disposition><dkim>{dkim}</dkim><spf>{spf}</spf></policy_evaluated>
    </row>
    <identifiers><header_from>{OUR_DOMAIN}</header_from></identifiers>
    <auth_results>
      <dkim><domain>{OUR_DOMAIN}</domain><selector>s1</selector><result>{dkim}</result></dkim>
      <spf><domain>{OUR_DOMAIN}</domain><result>{spf}</result></spf>
    </auth_results>
  </record>""" for ip, count, dkim, spf in rows)  # noqa: E501
        xml = f"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata>
    <org_name>google.com</org_name>
    <email>noreply-dmarc-support@google.com</email>
    <report_id>demo-{day}</report_id>
    <date_range><begin>{day}</begin><end>{day + 86399}</end></date_range>
  </report_metadata>
  <policy_published>
    <domain>{OUR_DOMAIN}</domain><adkim>r</adkim><aspf>r</aspf><p>reject</p><sp>reject</sp><pct>100</pct>
  </policy_published>{records}
</feedback>
"""
        directory = self.settings.directory / "dmarc"
        partial = directory / f".google.com!{OUR_DOMAIN}!{day}.xml.part"
        partial.write_text(xml, encoding="utf-8")
        partial.rename(directory / f"google.com!{OUR_DOMAIN}!{day}!{day + 86399}.xml")
        self._reports += 1

    def hint(self) -> str:
        """A Message-ID the demo wrote, to try the search with."""
        return self.traffic.messages[-1][0] if self.traffic.messages else ""
