"""Classification benchmark: reason accuracy against Sisimai, and responses classified per second.

    .venv/bin/python bench/bench_classify.py [--corpus ../shared/corpora/sisimai] [--seconds 2]

Accuracy: for every row of the Sisimai corpus's ``expected.jsonl`` (one recipient of one
bounce email, with the reason and hard flag Sisimai's own tests assert), the reply code,
enhanced status and diagnostic text are pulled out of the email with a *minimal* stdlib
extractor (the ``message/delivery-status`` part's ``Status`` / ``Diagnostic-Code`` /
``Action`` per recipient; else the email's first plain-text part as the text) and handed to
:func:`monitor.classify.classify`.  This measures the classification engine, not DSN
parsing (a later slice of issue 4): rows whose email has no delivery-status part are
reported apart, and ARF / auto-reply rows are out of scope for a reply classifier.

Throughput: the corpus's distinct DSN ``Diagnostic-Code`` lines (single SMTP responses),
classified uncached (target 50,000/s) and through the pipeline's cached entry point; the
whole-body texts of the non-DSN emails are timed apart (they are 5x longer).  A missed target prints MISSED and exits 0.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from monitor.classify import classify  # noqa: E402
from monitor.classify.engine import classify_uncached  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpora" / "sisimai"
TARGET_PER_SECOND = 50_000

#: Corpus rows that are not replies to classify (complaints, auto-replies).
OUT_OF_SCOPE_KINDS = frozenset({"arf", "rfc3834"})

#: The newer go-sisimai spellings some rows use, mapped to the v5.2 vocabulary.
_NEWER = {"emailtoolarge": "mesgtoobig"}

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY = re.compile(r"(?:^|[\s;:(\[])([245]\d\d)(?:[\s\-]|$)")


@dataclass(frozen=True)
class Sample:
    """One corpus recipient: what the email says and what Sisimai expects."""

    file: str
    index: int
    kind: str
    engine: str
    reply_code: int | None
    status: str | None
    diagnostic: str
    command: str | None
    final: bool
    has_dsn: bool
    expected_reason: str
    expected_hard: bool


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        charset = part.get_content_charset() or "utf-8"
        try:
            return payload.decode(charset, "replace")
        except LookupError:
            return payload.decode("utf-8", "replace")
    raw = part.get_payload()
    return raw if isinstance(raw, str) else ""


def _field_blocks(part: Message) -> list[dict[str, str]]:
    """The header blocks of a message/delivery-status part (first: per message)."""
    blocks: list[dict[str, str]] = []
    payload = part.get_payload()
    if isinstance(payload, list):  # the stdlib parses each block as a sub-message
        for sub in payload:
            if isinstance(sub, Message):
                blocks.append({k.lower(): " ".join(str(v).split()) for k, v in sub.items()})
        return blocks
    text = payload if isinstance(payload, str) else ""
    for chunk in re.split(r"\r?\n\s*\r?\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in chunk.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                name, _, value = line.partition(":")
                key = name.strip().lower()
                fields[key] = value.strip()
        if fields:
            blocks.append(fields)
    return blocks


def _strip_type(value: str) -> str:
    """``smtp; 550 ...`` -> ``550 ...`` (the diagnostic type is not part of the text)."""
    head, sep, rest = value.partition(";")
    if sep and re.fullmatch(r"\s*[A-Za-z][\w.-]*\s*", head):
        return rest.strip()
    return value.strip()


def _first_plain(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "message/rfc822":
            break
        if part.get_content_type() == "text/plain" and not part.is_multipart():
            return _text(part)
    if not message.is_multipart():
        return _text(message)
    return ""


def extract(path: Path, index: int) -> tuple[int | None, str | None, str, str | None, bool, bool]:
    """(reply code, status, diagnostic, command, final, had a DSN part) for recipient ``index``."""
    message = email.message_from_bytes(path.read_bytes())
    recipients: list[dict[str, str]] = []
    for part in message.walk():
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            blocks = _field_blocks(part)
            recipients = [b for b in blocks if "final-recipient" in b or "original-recipient" in b]
            if not recipients:
                recipients = blocks[1:] or blocks
            break
    command = None
    if recipients:
        block = recipients[min(index, len(recipients)) - 1]
        diagnostic = _strip_type(block.get("diagnostic-code", ""))
        status = block.get("status", "").strip() or None
        final = block.get("action", "failed").lower() not in ("delayed", "relayed")
        has_dsn = True
        if not diagnostic:  # some MTAs put the reply only in the human-readable part
            diagnostic = " ".join(_first_plain(message).split())[:2000]
    else:
        diagnostic = " ".join(_first_plain(message).split())[:2000]
        status = None
        final = True
        has_dsn = False
    if status is not None and not _STATUS.fullmatch(status):
        found = _STATUS.search(status)
        status = found.group(0) if found else None
    if status is None:
        found = _STATUS.search(diagnostic)
        status = found.group(0) if found else None
    reply = _REPLY.search(diagnostic)
    found_command = re.search(
        r"in reply to (?:end of )?(RCPT|MAIL|DATA|HELO|EHLO)", diagnostic, re.I
    )
    if found_command:
        command = found_command.group(1).upper()
    return (int(reply.group(1)) if reply else None, status, diagnostic, command, final, has_dsn)


def samples(corpus: Path = DEFAULT_CORPUS) -> Iterator[Sample]:
    """Every row of ``expected.jsonl`` with what the minimal extractor finds in its email."""
    base = corpus / "set-of-emails"
    with (corpus / "expected.jsonl").open(encoding="utf-8") as rows:
        for line in rows:
            row = json.loads(line)
            reply, status, diagnostic, command, final, has_dsn = extract(
                base / row["file"], int(row["index"])
            )
            reason = _NEWER.get(row["reason"], row["reason"])
            yield Sample(
                file=row["file"], index=int(row["index"]), kind=row["kind"],
                engine=row["engine"], reply_code=reply, status=status, diagnostic=diagnostic,
                command=command, final=final, has_dsn=has_dsn, expected_reason=reason,
                expected_hard=bool(row["hardbounce"]),
            )  # fmt: skip


def same_reason(expected: str, got: str) -> bool:
    """Sisimai's newer ``ratelimited`` covers ``speeding`` and ``toomanyconn``."""
    if expected == got:
        return True
    rate = {"ratelimited", "speeding", "toomanyconn"}
    return expected in rate and got in rate


def score(rows: list[Sample]) -> dict[str, object]:
    """Reason and hard/soft agreement of ``classify`` on ``rows``, with the misses by pair."""
    reason_ok = hard_ok = 0
    misses: Counter[tuple[str, str]] = Counter()
    for s in rows:
        v = classify(s.reply_code, s.status, s.diagnostic, command=s.command, final=s.final)
        if same_reason(s.expected_reason, v.reason):
            reason_ok += 1
        else:
            misses[(s.expected_reason, v.reason)] += 1
        hard_ok += v.hard == s.expected_hard
    n = len(rows) or 1
    return {
        "rows": len(rows),
        "reason": reason_ok / n,
        "hard": hard_ok / n,
        "misses": misses,
    }


def throughput(
    texts: list[tuple[int | None, str | None, str]], seconds: float
) -> tuple[float, float]:
    """Responses per second: uncached engine, and the cached entry point the pipeline uses."""
    rates = []
    for fn in (classify_uncached, classify):
        done = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            for code, status, text in texts:
                fn(code, status, text)
            done += len(texts)
        rates.append(done / (time.perf_counter() - started))
    return rates[0], rates[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--show", type=int, default=0, help="print N missed rows with their text")
    args = parser.parse_args(argv)
    if not (args.corpus / "expected.jsonl").exists():
        print(f"no corpus at {args.corpus}: skipped")
        return 0
    rows = list(samples(args.corpus))
    bounces = [s for s in rows if s.kind not in OUT_OF_SCOPE_KINDS]
    with_dsn = [s for s in bounces if s.has_dsn]
    print(f"Sisimai corpus: {len(rows)} rows, {len(bounces)} bounce rows "
          f"({len(with_dsn)} with a delivery-status part)")  # fmt: skip
    print(f"{'subset':<34} {'rows':>5} {'reason':>8} {'hard/soft':>10}")
    results = {}
    for name, subset in (
        ("all rows", rows),
        ("bounce rows (no ARF/auto-reply)", bounces),
        ("bounce rows with a DSN part", with_dsn),
    ):
        r = score(subset)
        results[name] = r
        print(f"{name:<34} {r['rows']:>5} {r['reason']:>8.1%} {r['hard']:>10.1%}")
    misses = results["bounce rows (no ARF/auto-reply)"]["misses"]
    assert isinstance(misses, Counter)
    print("\nwhere bounce rows fail (expected -> got: rows):")
    for (want, got), count in misses.most_common(25):
        print(f"  {want:>16} -> {got:<16} {count}")
    if args.show:
        shown = 0
        for s in bounces:
            v = classify(s.reply_code, s.status, s.diagnostic, command=s.command, final=s.final)
            if not same_reason(s.expected_reason, v.reason) and shown < args.show:
                shown += 1
                print(f"\n{s.file}#{s.index} want={s.expected_reason} got={v.reason} "
                      f"rule={v.rule} code={s.reply_code} status={s.status} cmd={s.command}\n"
                      f"  {s.diagnostic[:300]}")  # fmt: skip
    print(
        "\nthroughput (distinct responses, uncached engine; the pipeline's cached entry in brackets):"
    )
    for name, subset in (
        ("DSN Diagnostic-Code lines", with_dsn),
        ("all bounce texts (incl. whole bodies)", bounces),
    ):
        texts = sorted({(s.reply_code, s.status, s.diagnostic) for s in subset}, key=str)
        uncached, cached = throughput(texts, args.seconds)
        mean = sum(len(t[2]) for t in texts) // max(len(texts), 1)
        verdict = "ok" if uncached >= TARGET_PER_SECOND else "MISSED"
        print(f"  {name:<38} {len(texts):>4} texts, mean {mean:>4} chars: "
              f"{uncached:>9,.0f}/s [{cached:,.0f}/s]  target {TARGET_PER_SECOND:,}: {verdict}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
