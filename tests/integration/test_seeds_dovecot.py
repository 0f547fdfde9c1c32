"""Seed-inbox probes against a real Dovecot: every placement comes out exactly.

Two private Dovecots hold the seed mailboxes; an aiosmtpd submission server hands each
probe to Dovecot's LMTP as a receiving MX would (stamping its Authentication-Results and
spam headers), holds some back, refuses one.  Sieve decides the truth: a global rule
files mail the MX marked ``X-Spam-Flag: YES`` into Junk, one user's script discards
probes, another files them into Trash.  The MTA's side of the held and discarded probes
(bounced 550 5.7.1, delivered) is written to the store as the log follower would.  IMAP
failures (wrong password, nothing listening, a server that never answers, no spam
folder) must come out as ``error``, never ``missing``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers.dovecot import DovecotInstance, free_port
from servers.lmtp_relay import LmtpRelay, Route
from test_cli import mailmon

from monitor.collectors.seeds.run import run_probes
from monitor.config import load_config
from monitor.driver import Driver
from monitor.model import Event, EventType
from monitor.pipeline import Pipeline
from monitor.store import Store

DOMAIN = "seeds.test"
OTHER_DOMAIN = "other.test"  # the second Dovecot's
SPAM_RULE = """require ["fileinto"];
if header :is "X-Spam-Flag" "YES" { fileinto "Junk"; stop; }
"""
PASSWORDS = {
    "inbox": "pw-inbox-1", "tls": "pw-tls-2", "starttls": "pw-starttls-3", "spam": "pw-spam-4",
    "gone": "pw-gone-5", "bounced": "pw-bounced-6", "lost": "pw-lost-7", "wrongpw": "pw-right-8",
    "badfolder": "pw-badfolder-11", "oauth": "ya29.token-12",
}  # fmt: skip
OTHER_PASSWORDS = {"fallback": "pw-fallback-9", "nofolder": "pw-nofolder-10"}

#: What each seed's probe must come out as: the scenario's design, not the run's output.
EXPECTED = {
    "inbox": "inbox", "tls": "inbox", "starttls": "trash", "spam": "spam", "gone": "missing",
    "bounced": "missing", "lost": "missing", "refused": "error", "wrongpw": "error",
    "down": "error", "silent": "error", "fallback": "spam", "nofolder": "error",
    "badfolder": "error", "oauth": "inbox",
}  # fmt: skip


class SilentServer:
    """Accepts TCP connections and never says a word (an IMAP server that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


class Mx:
    """The receiving side's decisions, and the MTA events it leaves in the store."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url

    def _record(self, event: Event) -> None:
        with Store.open(self.db_url) as store:
            pipeline = Pipeline(store)
            pipeline.put(event)
            pipeline.flush()

    def route(self, rcpt: str, message: Message) -> Route:
        user = rcpt.partition("@")[0]
        message_id = str(message["Message-ID"]).strip("<>")
        now = datetime.now(UTC)
        if user == "bounced":
            self._record(Event(
                type=EventType.BOUNCED, occurred_at=now, source="postfix:mx1",
                message_id=message_id, recipient=rcpt, reply_code=550, enhanced_status="5.7.1",
                diagnostic="550 5.7.1 Message rejected as spam", reason="spamdetected", hard=False,
            ))  # fmt: skip
            return Route.HOLD
        if user == "lost":
            return Route.HOLD
        if user == "gone":
            self._record(Event(type=EventType.DELIVERED, occurred_at=now, source="postfix:mx1",
                               message_id=message_id, recipient=rcpt, reply_code=250,
                               enhanced_status="2.0.0"))  # fmt: skip
        return Route.DELIVER

    @staticmethod
    def stamp(rcpt: str) -> list[tuple[str, str]]:
        user = rcpt.partition("@")[0]
        headers = [
            ("Authentication-Results", "mx.seeds.test; spf=pass smtp.mailfrom=app.test; "
             "dkim=pass header.d=app.test; dmarc=pass (p=reject) header.from=app.test; "
             "compauth=pass reason=100"),
            # An earlier hop's verdict, below the receiver's own: never the one read.
            ("Authentication-Results", "relay.example; spf=fail; dkim=fail; dmarc=fail"),
        ]
        if user == "spam":
            headers = [("X-Spam-Flag", "YES"), ("X-Spam-Status", "Yes, score=7.1 required=5.0"),
                       ("Authentication-Results", "mx.seeds.test; spf=softfail; dkim=none; "
                        "dmarc=fail")]  # fmt: skip
        return headers


def _seed(user: str, port: int, domain: str = DOMAIN, **extra: Any) -> str:
    lines = [f'address = "{user}@{domain}"', 'provider = "own"', 'imap_host = "127.0.0.1"',
             f"imap_port = {port}", 'imap_security = "none"', f'username = "{user}"',
             f'password_env = "SEED_PW_{user.upper()}"']  # fmt: skip
    for key, value in extra.items():
        lines = [line for line in lines if not line.startswith(f"{key} ")]
        lines.append(f"{key} = {json.dumps(value)}")
    return "[[seeds.mailboxes]]\n" + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("seeds")
    db = f"sqlite:///{tmp / 'm.db'}"
    Store.open(db).close()
    main = DovecotInstance(tmp / "a", users=PASSWORDS, sieve_before=SPAM_RULE,
                           oauth2_tokens={PASSWORDS["oauth"]: "oauth"})  # fmt: skip
    other = DovecotInstance(tmp / "b", users=OTHER_PASSWORDS, mailboxes={}, tls=False)
    silent = SilentServer()
    with main, other:
        main.set_sieve("gone", 'if exists "X-Mailmon-Probe" { discard; stop; }\n')
        main.set_sieve("starttls", 'require "fileinto";\n'
                       'if exists "X-Mailmon-Probe" { fileinto "Trash"; stop; }\n')  # fmt: skip
        other.create_folder("fallback", "Spamverdacht")
        other.set_sieve("fallback", 'require "fileinto";\n'
                        'if exists "X-Mailmon-Probe" { fileinto "Spamverdacht"; stop; }\n')  # fmt: skip
        decoy = EmailMessage()
        decoy["From"], decoy["To"] = "news@app.test", f"spam@{DOMAIN}"
        decoy["Subject"] = "Your weekly account summary"  # the probes' subject, no token
        decoy["Message-ID"] = "<decoy@app.test>"
        decoy.set_content("not a probe\n")
        main.append("spam", decoy, "INBOX")
        mx = Mx(db)
        with LmtpRelay({"": main.lmtp_port, OTHER_DOMAIN: other.lmtp_port}, route=mx.route, stamp=mx.stamp,
                       refuse={f"refused@{DOMAIN}": "550 5.1.1 no such user"}) as relay:  # fmt: skip
            a, b = main.imap_port, other.imap_port
            seeds = "".join([
                _seed("inbox", a), _seed("tls", main.imaps_port, imap_security="tls",
                                         ca_file=str(main.cert_file), provider="gmail"),
                _seed("starttls", a, imap_security="starttls", ca_file=str(main.cert_file)),
                _seed("spam", a, provider="outlook"), _seed("gone", a), _seed("bounced", a),
                _seed("lost", a), _seed("refused", a),
                _seed("badfolder", a, junk_folder="Spam Folder That Is Not There"),
                _seed("oauth", a, auth="xoauth2"),
                # After its refused login Dovecot slows every login from 127.0.0.1 (its
                # auth penalty): it comes after the other seeds of this server.
                _seed("wrongpw", a), _seed("down", free_port()),
                _seed("silent", silent.port), _seed("fallback", b, OTHER_DOMAIN), _seed("nofolder", b, OTHER_DOMAIN),
            ])  # fmt: skip
            config = tmp / "mailmon.toml"
            config.write_text(
                f'[database]\nurl = "{db}"\n'
                '[seeds]\nsender = "probe@app.test"\nsender_name = "App"\n'
                'list_unsubscribe = ["mailto:unsub@app.test", "https://app.test/u/1"]\n'
                "timeout_seconds = 4\npoll_interval_seconds = 0.5\nimap_timeout_seconds = 3\n"
                f'[seeds.smtp]\nhost = "127.0.0.1"\nport = {relay.port}\nsecurity = "none"\n'
                + seeds
            )
            yield {"db": db, "config": config, "main": main, "other": other, "relay": relay}
    silent.close()


@pytest.fixture(scope="module")
def probe_run(world: dict[str, Any]) -> dict[str, Any]:
    mp = pytest.MonkeyPatch()
    try:
        for user, password in {**PASSWORDS, **OTHER_PASSWORDS}.items():
            mp.setenv(f"SEED_PW_{user.upper()}", password)
        mp.setenv("SEED_PW_WRONGPW", "not-the-password")
        for user in ("refused", "down", "silent"):
            mp.setenv(f"SEED_PW_{user.upper()}", f"pw-{user}")
        proc = mailmon("probe", "run", "--json", "--config", str(world["config"]), check=False)
    finally:
        mp.undo()
    assert proc.returncode == 1, proc.stderr  # some seeds are errors by design
    return {"proc": proc, "out": json.loads(proc.stdout)}


def _by_seed(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["seed"].partition("@")[0]: r for r in rows}


def test_every_seed_gets_its_true_placement(probe_run: dict[str, Any]) -> None:
    """inbox / trash / spam (by \\Junk and by a fallback name) / missing / error, exactly."""
    rows = _by_seed(probe_run["out"]["placements"])
    assert {seed: r["placement"] for seed, r in rows.items()} == EXPECTED
    assert rows["spam"]["folder"] == "Junk" and rows["fallback"]["folder"] == "Spamverdacht"
    assert rows["starttls"]["folder"] == "Trash"


def test_xoauth2_seed_logs_in_with_its_token(world: dict[str, Any], probe_run: dict[str, Any]) -> None:
    """A seed with auth = "xoauth2" authenticates with AUTHENTICATE XOAUTH2 and its token."""
    assert _by_seed(probe_run["out"]["placements"])["oauth"]["placement"] == "inbox"
    logins = world["main"].wait_for_log("Login: user=<oauth>")
    assert logins and all("method=XOAUTH2" in line for line in logins)


def test_missing_probes_say_what_the_mta_saw(probe_run: dict[str, Any]) -> None:
    """A missing probe is joined with the store's events of its Message-ID."""
    rows = _by_seed(probe_run["out"]["placements"])
    assert rows["gone"]["finding"] == "delivered but not found"
    assert rows["bounced"]["finding"].startswith("bounced 550 5.7.1 (spamdetected)")
    assert rows["lost"]["finding"].startswith("no delivery event")


def test_imap_failures_are_errors_with_reasons(probe_run: dict[str, Any]) -> None:
    """Wrong password, nothing listening, a silent server, no spam folder, a refused send."""
    rows = _by_seed(probe_run["out"]["placements"])
    assert rows["wrongpw"]["error"].startswith("login refused for wrongpw")
    assert "ConnectionRefusedError" in rows["down"]["error"]
    assert "timed out" in rows["silent"]["error"] or "timeout" in rows["silent"]["error"].lower()
    assert rows["nofolder"]["error"].startswith("no spam folder")
    assert rows["badfolder"]["error"] == "configured junk_folder 'Spam Folder That Is Not There' does not exist"
    assert rows["refused"]["error"] == "not submitted: 550 5.1.1 no such user"
    text = probe_run["proc"].stdout + probe_run["proc"].stderr
    assert not any(p in text for p in [*PASSWORDS.values(), "not-the-password"])


def test_found_copy_verdicts_and_time_to_inbox(probe_run: dict[str, Any]) -> None:
    """The receiver's top Authentication-Results, spam headers, List-Unsubscribe and
    the time to inbox from INTERNALDATE."""
    rows = _by_seed(probe_run["out"]["placements"])
    inbox = rows["inbox"]
    assert (inbox["spf"], inbox["dkim"], inbox["dmarc"], inbox["compauth"]) == ("pass",) * 4
    assert inbox["list_unsubscribe"] and inbox["one_click"] and inbox["spam"] is None
    assert 0 <= inbox["seconds_to_inbox"] < 30
    spam = rows["spam"]
    assert (spam["spf"], spam["dkim"], spam["dmarc"]) == ("softfail", "none", "fail")
    assert spam["spam"] == "X-Spam-Flag: YES; X-Spam-Status: Yes, score=7.1 required=5.0"
    assert rows["tls"]["provider"] == "google" and rows["spam"]["provider"] == "microsoft"


def test_reading_changes_no_flag(world: dict[str, Any], probe_run: dict[str, Any]) -> None:
    """EXAMINE + BODY.PEEK: no probe and no other message is marked seen."""
    main: DovecotInstance = world["main"]
    for user, folder in [("inbox", "INBOX"), ("spam", "Junk"), ("spam", "INBOX"),
                         ("starttls", "Trash"), ("tls", "INBOX")]:  # fmt: skip
        flags = main.flags(user, folder)
        assert flags and all(b"\\Seen" not in f for f in flags.values()), (user, folder)
    assert len(main.messages("spam", "INBOX")) == 1  # the decoy, still there, not matched


def test_results_stats_and_trace(world: dict[str, Any], probe_run: dict[str, Any]) -> None:
    """`probe results` reads the stored placements; `stats` counts the probes' submissions
    and the MTA's outcomes, never a placement; `trace` shows the placement in the timeline."""
    config = str(world["config"])
    out = json.loads(mailmon("probe", "results", "--json", "--config", config).stdout)
    [run] = out["runs"]
    assert run["run_id"] == probe_run["out"]["run_id"]
    assert {s: r["placement"] for s, r in _by_seed(run["placements"]).items()} == EXPECTED
    providers = {p["provider"]: p for p in out["providers"]}
    assert providers["google"]["placements"] == {"inbox": 1}
    assert providers["microsoft"]["placements"] == {"spam": 1}
    # "other": 2 inbox (inbox, oauth), trash, 3 missing, 6 errors (refused, wrongpw, down,
    # silent, nofolder, badfolder), spam.
    assert providers["other"]["placements"] == {"error": 6, "inbox": 2, "missing": 3, "spam": 1,
                                                "trash": 1}  # fmt: skip
    assert providers["other"]["inbox_rate"] == round(2 / 7, 4)
    text = mailmon("probe", "results", "--config", config).stdout
    assert "google           1 probes  inbox 100.0%" in text and "microsoft" in text
    assert f"spam@{DOMAIN}" in text and "delivered but not found" in text
    rows = {r["domain"]: r for r in json.loads(mailmon("stats", "--json", "--config", config).stdout)}
    assert set(rows) == {DOMAIN, OTHER_DOMAIN}
    # 12 + 2 probes accepted at submission (one refused); the MTA delivered one and bounced
    # one (its events in the store); the 14 placements count nowhere.
    counted = ("submitted", "delivered", "bounced", "deferred", "expired")
    assert tuple(rows[DOMAIN][k] for k in counted) == (12, 1, 1, 0, 0)
    assert tuple(rows[OTHER_DOMAIN][k] for k in counted) == (2, 0, 0, 0, 0)
    assert not any("placed" in r for r in rows.values())
    with Store.open(world["db"]) as store, store.engine.connect() as conn:
        placed = "SELECT count(*) FROM {} WHERE outcome = 'placed'"
        assert [conn.exec_driver_sql(placed.format(t)).scalar()
                for t in ("counters", "sender_counters", "failure_counters")] == [0, 0, 0]  # fmt: skip
        assert conn.exec_driver_sql("SELECT count(*) FROM events WHERE type = 'placed'").scalar() == 14
    mid = _by_seed(probe_run["out"]["placements"])["spam"]["message_id"]
    [traced] = json.loads(mailmon("trace", mid, "--json", "--config", config).stdout)["deliveries"]
    assert [e["type"] for e in traced["events"]] == ["submitted", "placed"]
    assert traced["events"][1]["diagnostic"] == "spam (Junk)"
    assert traced["state"] == "submitted"  # a placement is no delivery outcome


def test_delete_after_read_touches_only_the_probe(world: dict[str, Any], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """delete_after_read removes the probe's own copy by UID; other mail, even mail already
    flagged \\Deleted (which a plain EXPUNGE would remove), stays."""
    main: DovecotInstance = world["main"]
    main.add_user("cleanup", "pw-cleanup")
    keep = EmailMessage()
    keep["Subject"], keep["Message-ID"] = "keep me", "<keep@app.test>"
    keep.set_content("x\n")
    main.append("cleanup", keep, "INBOX")
    main.append("cleanup", keep, "INBOX", flags=[b"\\Deleted"])
    monkeypatch.setenv("SEED_PW_CLEANUP", "pw-cleanup")
    config = tmp_path / "mailmon.toml"
    config.write_text(
        '[seeds]\nsender = "probe@app.test"\ntimeout_seconds = 4\npoll_interval_seconds = 0.2\n'
        f'delete_after_read = true\n[seeds.smtp]\nport = {world["relay"].port}\nsecurity = "none"\n'
        + _seed("cleanup", main.imap_port))  # fmt: skip
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        result = run_probes(load_config(config).seeds, Driver(Pipeline(store)), store)
    assert result.placements() == {f"cleanup@{DOMAIN}": "inbox"} and result.deleted == 1
    left = main.messages("cleanup", "INBOX")
    assert [m["Message-ID"] for m in left] == ["<keep@app.test>", "<keep@app.test>"]


def test_serve_runs_the_probe_job(world: dict[str, Any], tmp_path: Path) -> None:
    """`mailmon serve` runs seed_probes on its schedule: placements on /metrics (counter and
    time-to-inbox histogram), the job's success in `mailmon jobs`, a clean stop."""
    main: DovecotInstance = world["main"]
    port = free_port()
    config = tmp_path / "mailmon.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "m.db"}"\n[service]\nlisten_port = {port}\n'
        '[seeds]\nsender = "probe@app.test"\ntimeout_seconds = 4\npoll_interval_seconds = 0.2\n'
        f'[seeds.smtp]\nport = {world["relay"].port}\nsecurity = "none"\n'
        + _seed("inbox", main.imap_port, provider="gmail") + _seed("spam", main.imap_port)
        + "[jobs.seed_probes]\ninterval_seconds = 5\n")  # fmt: skip
    env = {**os.environ, "SEED_PW_INBOX": PASSWORDS["inbox"], "SEED_PW_SPAM": PASSWORDS["spam"]}
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    inbox = 'mailmon_seed_probes_total{placement="inbox",provider="google"}'
    spam = 'mailmon_seed_probes_total{placement="spam",provider="other"}'

    def value(text: str, series: str) -> float | None:
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return None

    try:
        text, deadline = "", time.monotonic() + 40
        while value(text, inbox) is None and time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            time.sleep(0.2)
        runs = value(text, inbox)
        assert runs is not None and runs >= 1, text[-2000:]
        # One run stores both placements in one batch: every scrape sees them in step.
        assert value(text, spam) == runs
        assert value(text, 'mailmon_seed_time_to_inbox_seconds_count{provider="google"}') == runs
        listed = json.loads(mailmon("jobs", "--json", "--config", str(config)).stdout)
        [job] = [r for r in listed if r["job"] == "seed_probes"]
        assert job["trigger"] == "every 5 s" and job["last_success"] and not job["last_error"]
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert PASSWORDS["inbox"] not in out


def test_submission_over_starttls_with_auth(world: dict[str, Any], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Probes go through a submission server that requires STARTTLS (verified against the
    configured CA) and AUTH, the password read from a secrets file."""
    main: DovecotInstance = world["main"]
    assert main.root is not None
    tls = (main.cert_file, main.root / "tls" / "key.pem")
    secret = tmp_path / "smtp-password"
    secret.write_text("subm1ssion-pw\n")
    monkeypatch.setenv("SEED_PW_INBOX", PASSWORDS["inbox"])
    with LmtpRelay(main.lmtp_port, tls=tls, users={"probe": "subm1ssion-pw"}) as relay:
        config = tmp_path / "mailmon.toml"
        config.write_text(
            '[seeds]\nsender = "probe@app.test"\ntimeout_seconds = 4\npoll_interval_seconds = 0.2\n'
            f'[seeds.smtp]\nhost = "localhost"\nport = {relay.port}\nsecurity = "starttls"\n'
            f'username = "probe"\npassword_file = "{secret}"\nca_file = "{main.cert_file}"\n'
            + _seed("inbox", main.imap_port))  # fmt: skip
        with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
            result = run_probes(load_config(config).seeds, Driver(Pipeline(store)), store)
    assert relay.logins == ["probe"]
    assert result.placements() == {f"inbox@{DOMAIN}": "inbox"}


def test_a_stopped_run_records_no_placement_for_probes_still_out(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve stopping ends a run at once: the probe found is recorded, the one still out
    gets no placement (neither missing nor error), its send stays stored."""
    from monitor.collectors.seeds.records import SeedPlacement, SeedProbe

    main: DovecotInstance = world["main"]
    for user in ("inbox", "lost"):
        monkeypatch.setenv(f"SEED_PW_{user.upper()}", PASSWORDS[user])
    config = tmp_path / "mailmon.toml"
    config.write_text(
        '[seeds]\nsender = "probe@app.test"\ntimeout_seconds = 600\npoll_interval_seconds = 0.2\n'
        f'[seeds.smtp]\nport = {world["relay"].port}\nsecurity = "none"\n'
        + _seed("inbox", main.imap_port) + _seed("lost", main.imap_port))  # fmt: skip
    stop = threading.Event()
    threading.Timer(2.0, stop.set).start()
    started = time.monotonic()
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        result = run_probes(load_config(config).seeds, Driver(Pipeline(store)), store, stop=stop)
        probes = store.records(SeedProbe.kind)
        placements = store.records(SeedPlacement.kind)
    assert time.monotonic() - started < 10
    assert result.placements() == {f"inbox@{DOMAIN}": "inbox"}
    assert len(probes) == 2
    assert [(p.seed, p.placement) for p in placements if isinstance(p, SeedPlacement)] == [
        (f"inbox@{DOMAIN}", "inbox")]
