"""The classification engine: reply code + enhanced status + text (+ provider) -> Verdict.

    >>> classify(550, "5.7.1", "550-5.7.1 ... likely unsolicited mail ...", provider="google")
    Verdict(reason='spamdetected', hard=False, blame='content', rule='google.unsolicited')

Text rules (``monitor/data/classify/*.toml``, see :mod:`monitor.classify.rules`) are tried
first, the receiving provider's own families before the others, and the first rule in that
order whose conditions hold and whose regex is found decides; provider texts thereby win
over the bare code.  When no text rule decides, the RFC 3463 table decides from the
enhanced status (then its class-less form, then its subject), then from the reply code
(not a code of many meanings beside an "x.0.0" status and a text: that says nothing);
a text nothing recognises is ``onhold`` and no information at all is ``undefined``
(Sisimai's convention).

Speed and memory: every rule is indexed once, in one matcher: an Aho-Corasick automaton
of their literal prefixes (pyahocorasick) finds, in one pass, the few positions where any
rule can start, and only the rules whose prefix is there are tried.  The conditions (code, status,
provider, command) and the provider's order are applied to those few hits at lookup, from
small per-reply tables (a byte per rule), so memory does not grow with the variety of
replies.  Whole verdicts are cached too.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, NamedTuple

import ahocorasick

from monitor.classify.rules import Rule, RuleSet, load_rules
from monitor.provider_rules import ProviderRules, packaged_rules

__all__ = [
    "HARD_REASONS",
    "Verdict",
    "classify",
    "classify_uncached",
    "normalize",
    "says_temporary",
]

#: Reasons that mean the address will never work (DESIGN.md): hard on a final failure;
#: ``notaccept`` only when permanent.
HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved"})

#: The blame of the reasons the code table and the fallbacks produce.
_FALLBACK_BLAME = {"onhold": "unknown", "undefined": "unknown", "delivered": "unknown"}

_STATUS_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_CODE_RE = re.compile(r"^\s*([245]\d\d)(?=[\s\-]|$)")
# "550-5.1.1 The email ... 550-5.1.1 https://..." : the continuation prefixes of a
# multi-line reply (RFC 5321 section 4.2.1) split phrases; drop them after the first.
_CONTINUATION_RE = re.compile(r"(?<=\s)[245]\d\d[\- ](?:[245]\.\d{1,3}\.\d{1,3}\s+)?(?=\S)")
# A 4xx text that calls itself temporary ("Host not found, try again"): not a verdict on
# the address (Sisimai's is_temporary reads " temporar" and " persistent").
_TEMPORARY_RE = re.compile(r"temporar|persistent|try again|try later")


class Verdict(NamedTuple):
    """What a failure means: the reason, hard or soft, who must act, and the rule that said so."""

    reason: str
    hard: bool
    blame: str = "unknown"
    rule: str = ""


def normalize(text: str) -> str:
    """Lower-case, fold whitespace and drop multi-line reply continuation prefixes."""
    folded = " ".join(text.lower().split())  # str.split's whitespace is re's \s
    if "-" in folded:
        head, rest = folded[:4], folded[4:]
        folded = head + _CONTINUATION_RE.sub("", rest)
    return folded


def says_temporary(text: str) -> bool:
    """Whether a reply text calls the failure temporary ("try again", "temporarily")."""
    return bool(_TEMPORARY_RE.search(normalize(text)))


_META = frozenset(".^$*+?{}[]\\|()")


def literal_prefix(pattern: str) -> str:
    """The literal text every match of ``pattern`` starts with ("" when there is none).

    A leading "^" is skipped: the rule's own regex, tried where the prefix is found,
    still matches only at the start of the text.
    """
    if pattern.startswith("^"):
        pattern = pattern[1:]
    depth = 0
    for i, c in enumerate(pattern):  # a top-level "|" means no common prefix
        if c == "\\":
            continue
        if c == "(" and (i == 0 or pattern[i - 1] != "\\"):
            depth += 1
        elif c == ")" and pattern[i - 1] != "\\":
            depth -= 1
        elif c == "|" and depth == 0 and pattern[i - 1] != "\\":
            return ""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern) and not pattern[i + 1].isalnum():
            out.append(pattern[i + 1])
            i += 2
            continue
        if c in _META:
            if c in "*?{" and out:  # the last literal is optional or repeated
                out.pop()
            break
        out.append(c)
        i += 1
    return "".join(out)


_Entry = tuple[int, "re.Pattern[str]"]


class _Matcher(NamedTuple):
    """Every text rule indexed once, for one pass over the text, whatever the conditions.

    ``screen`` (an Aho-Corasick automaton of the rules' literal prefixes) reports each
    prefix found in the text, as its last character's position and (its length - 1, the
    rules with that prefix); each rule is then confirmed with its own compiled regex at
    the prefix's start.  Alternatives without a usable prefix are searched one by one
    (``loose``: keep few).  Which rules may decide a reply (code, status, provider,
    command) and in which order is applied per hit at lookup, so one matcher serves every
    reply and memory stays that of one.  (A regex of the prefixes, factored as a trie, did
    the screen's work before: 21 us per reply of ~270 characters against 2.8.)
    """

    rules: tuple[Rule, ...]
    screen: Any  # ahocorasick.Automaton (untyped); None when no rule has a prefix
    loose: tuple[_Entry, ...]
    always: tuple[int, ...]  # the rules without a text pattern


@lru_cache(maxsize=1)
def _rules() -> RuleSet:
    return load_rules()


@lru_cache(maxsize=1)
def _index() -> _Matcher:
    rules = _rules().rules
    words: dict[str, list[_Entry]] = {}
    loose: list[_Entry] = []
    for i, rule in enumerate(rules):
        for alternative in rule.alternatives:
            compiled = re.compile(alternative)
            prefix = literal_prefix(alternative)
            if len(prefix) < 3:
                loose.append((i, compiled))
                continue
            words.setdefault(prefix, []).append((i, compiled))
    screen = None
    if words:
        screen = ahocorasick.Automaton()
        for word, entries in words.items():
            screen.add_word(word, (len(word) - 1, tuple(entries)))
        screen.make_automaton()
    always = tuple(i for i, r in enumerate(rules) if r.match is None)
    return _Matcher(rules, screen, tuple(loose), always)


@lru_cache(maxsize=64)
def _rank(provider: str | None) -> tuple[int, ...]:
    """Each rule's place in the order it is tried: the provider's own families first."""
    ruleset = _rules()
    position = {id(r): n for n, r in enumerate(ruleset.ordered(provider))}
    return tuple(position[id(r)] for r in ruleset.rules)


# One byte per rule (~150 B a key): which rules' non-text conditions hold for a reply.
@lru_cache(maxsize=1024)
def _accepted(
    code: int | None, status: str | None, provider: str | None, command: str | None
) -> bytes:
    return bytes(r.accepts(code, status, provider, command) for r in _rules().rules)


def _candidates(
    matcher: _Matcher, text: str, ok: bytes, rank: tuple[int, ...]
) -> list[tuple[int, int]]:
    """(rank, rule index) of every applicable rule found in ``text``, plus the rules
    without a pattern; the caller tries them in rank order."""
    found = {(rank[i], i) for i in matcher.always if ok[i]}
    # nothing ranked after a pattern-less rule can win, unless its veto may set it aside
    sure = [r for r, i in found if matcher.rules[i].unless is None]
    limit = min(sure) if sure else len(rank)
    if text:
        for index, regex in matcher.loose:
            if ok[index] and rank[index] < limit and regex.search(text):
                found.add((rank[index], index))
        if matcher.screen is not None:
            for end, (back, entries) in matcher.screen.iter(text):
                start = end - back
                for index, regex in entries:
                    if ok[index] and rank[index] < limit and regex.match(text, start):
                        found.add((rank[index], index))
    return sorted(found)


def _permanent(code: int | None, status: str | None, final: bool) -> bool:
    if status:
        return status[0] == "5"
    if code is not None:
        return 500 <= code < 600
    return final


def _hard(
    reason: str, permanent: bool, final: bool, override: bool | None, text: str | None
) -> bool:
    """Sisimai 5.2's hard bounces (``SMTP::Failure::is_hardbounce``), once delivery ended.

    An address that never works is hard whatever the reply's class: a final "450 4.1.1
    User unknown" is what Postfix's soft configurations answer until the message expires.
    A 4xx status with no text saying so (``text`` is None: the code table decided) is only
    a guess, and a 4xx text that calls itself temporary is no verdict on the address: both
    stay soft.  ``notaccept`` is hard only when permanent.  A deferral is never hard.
    """
    if not final:
        return False
    if override is not None:
        return override
    if reason in HARD_REASONS:
        return permanent or (text is not None and not _TEMPORARY_RE.search(text))
    return permanent and reason == "notaccept"


def _from_table(code: int | None, status: str | None, text: str) -> tuple[str, str, str]:
    table = _rules().table
    if status:
        klass, _, rest = status.partition(".")
        for key in (status, f"x.{rest}", f"{klass}.{rest.partition('.')[0]}"):
            found = table.status.get(key)
            if found:
                return found[0], found[1], f"rfc3463.{key}"
    # a text nobody recognised beside "x.0.0" and a code of many meanings: onhold, not a guess
    undecided = bool(text and status and status.endswith(".0.0") and str(code) in table.vague)
    if code is not None and not undecided:
        found = table.reply_code.get(str(code))
        if found:
            return found[0], found[1], f"rfc5321.{code}"
    if text:
        return "onhold", "unknown", "fallback.onhold"
    return "undefined", "unknown", "fallback.undefined"


def classify_uncached(
    reply_code: int | None,
    enhanced_status: str | None,
    diagnostic: str | None,
    *,
    command: str | None = None,
    provider: str | None = None,
    mx_host: str | None = None,
    final: bool = True,
    provider_rules: ProviderRules | None = None,
) -> Verdict:
    """Classify one failed reply (``final``: the failure ends delivery, so it may be hard).

    ``mx_host`` names the provider when ``provider`` does not, by ``provider_rules`` (the
    configured ones; None: the packaged ones).
    """
    text = normalize(diagnostic) if diagnostic else ""
    if reply_code is None and text:
        found = _CODE_RE.match(text)
        if found:
            reply_code = int(found.group(1))
    status = enhanced_status.strip() if enhanced_status else None
    if not status or not _STATUS_RE.fullmatch(status):
        found_status = _STATUS_RE.search(text) if text else None
        status = found_status.group(0) if found_status else None
    if provider is None and mx_host:
        provider = provider_of_mx(mx_host, provider_rules)
    if command:
        command = command.upper()
    permanent = _permanent(reply_code, status, final)
    if status and status.startswith("2."):
        return Verdict("delivered", False, "unknown", "rfc3463.2.x.x")

    matcher = _index()
    ok = _accepted(reply_code, status, provider, command)
    for _, index in _candidates(matcher, text, ok, _rank(provider)):
        rule = matcher.rules[index]
        if rule.unless is None or not rule.unless.search(text):  # else vetoed: the next
            hard = _hard(rule.reason, permanent, final, rule.hard, text)
            return Verdict(rule.reason, hard, rule.blame, rule.id)

    reason, blame, rule_id = _from_table(reply_code, status, text)
    return Verdict(reason, _hard(reason, permanent, final, None, None), blame, rule_id)


@lru_cache(maxsize=65536)
def _cached(
    reply_code: int | None,
    enhanced_status: str | None,
    diagnostic: str | None,
    command: str | None,
    provider: str | None,
    final: bool,
) -> Verdict:
    return classify_uncached(
        reply_code, enhanced_status, diagnostic, command=command, provider=provider, final=final
    )


def classify(
    reply_code: int | None,
    enhanced_status: str | None,
    diagnostic: str | None,
    *,
    command: str | None = None,
    provider: str | None = None,
    mx_host: str | None = None,
    final: bool = True,
    provider_rules: ProviderRules | None = None,
) -> Verdict:
    """Classify one failed reply; repeated replies are answered from a cache."""
    if provider is None and mx_host:  # before the cache: the answer depends on the rules
        provider = provider_of_mx(mx_host, provider_rules)
    return _cached(reply_code, enhanced_status, diagnostic, command, provider, final)


def provider_of_mx(host: str, rules: ProviderRules | None = None) -> str | None:
    """The provider whose MX ``host`` is by ``rules`` (None: the packaged rules)."""
    found = (rules if rules is not None else packaged_rules()).for_mx_host(host)
    return found[0].value if found else None
