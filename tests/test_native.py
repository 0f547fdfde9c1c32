"""The compiled ingest modules (monitor/native.py): in use, and alike to their source.

The rest of the suite runs on whatever ``make install`` built (compiled here); these tests
run the same inputs through the source modules (``MAILMON_PURE_PYTHON=1``) in another
process and compare every event, every counter and every stored row.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import CORPORA, REPO
from factories import generated_log, store_contents

from monitor import native

POSTFIX_LOGS = sorted(
    p for p in (CORPORA / "mta-logs").iterdir() if "postfix" in p.name and p.suffix == ".log"
)
EXIM_LOGS = sorted(
    p for p in (CORPORA / "mta-logs").iterdir() if "exim" in p.name and p.suffix == ".log"
)

# Parses the logs named on the command line (Postfix or Exim) with one parser (as `mailmon ingest` reads a
# file: one parser, lines in order), pickles what it made to the path given first.
PARSE = """
import dataclasses, pickle, sys
from datetime import UTC, datetime
from monitor import native
from monitor.collectors.mta.exim import EximParser
from monitor.collectors.mta.postfix import PostfixParser
from monitor.store.wire import to_wire
out, kind, *logs = sys.argv[1:]
make = PostfixParser if kind == "postfix" else EximParser
parser = make(reference_time=datetime(2024, 3, 10, tzinfo=UTC), tz="UTC")
events = []
for log in logs:
    with open(log, encoding="utf-8", errors="surrogateescape") as f:
        for n, line in enumerate(f, 1):
            events.extend(parser.feed(line, f"{log}:{n}"))
with open(out, "wb") as f:
    pickle.dump({
        "native": native.ACTIVE,
        "events": [dataclasses.astuple(e) for e in events],
        "wire": [tuple(to_wire(e)) for e in events],
        "stats": parser.stats.to_dict(),
        "state": parser.state_size(),
        "heads": type(getattr(parser, "_heads", None)).__name__,
    }, f)
"""


def _run(code: str, *args: str, pure: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    if pure:
        env[native.PURE_ENV] = "1"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd=REPO, capture_output=True,
        text=True, timeout=300, check=True,
    )  # fmt: skip


def _parsed(
    tmp_path: Path, logs: list[Path], *, pure: bool, kind: str = "postfix"
) -> dict[str, object]:
    out = tmp_path / ("pure.pickle" if pure else "native.pickle")
    _run(PARSE, str(out), kind, *map(str, logs), pure=pure)
    with out.open("rb") as f:
        result: dict[str, object] = pickle.load(f)
    return result


def _alike(tmp_path: Path, logs: list[Path], kind: str = "postfix") -> dict[str, object]:
    """Both kinds parse ``logs`` with one parser into the same events, wire tuples, counters
    and state; then each log alone with a parser of its own. The source's result."""
    compiled = _parsed(tmp_path, logs, pure=False, kind=kind)
    pure = _parsed(tmp_path, logs, pure=True, kind=kind)
    assert compiled["native"] is native.ACTIVE and pure["native"] is False
    assert compiled == {**pure, "native": compiled["native"]}
    for log in logs:
        alone = _parsed(tmp_path, [log], pure=False, kind=kind)
        source = _parsed(tmp_path, [log], pure=True, kind=kind)
        assert alone == {**source, "native": alone["native"]}, log.name
    return pure


def _junk_log(path: Path, valid: Path) -> Path:
    """Bad input among good lines: binary noise, a NUL, an over-long line, lines cut short."""
    good = valid.read_text(errors="surrogateescape").splitlines(keepends=True)[:400]
    rng = random.Random(9)
    out = []
    for n, line in enumerate(good):
        out.append(line)
        if n % 7 == 0:
            out.append(line[: rng.randrange(1, max(2, len(line)))] + "\n")  # cut short
        if n % 31 == 0:
            out.append(bytes(rng.randrange(256) for _ in range(80)).decode("latin-1") + "\n")
    out.insert(50, good[10].replace(":", ":\x00", 1))
    out.insert(90, good[11].rstrip("\n") + "x" * 70_000 + "\n")
    path.write_text("".join(out), errors="surrogateescape")
    return path


def test_compiled_modules_are_in_use() -> None:
    """`make install` compiled them, and the suite runs on them (unless asked not to)."""
    import monitor.collectors.mta.postfix as postfix

    if os.environ.get(native.PURE_ENV, "") not in ("", "0"):
        assert not native.ACTIVE and postfix.__file__.endswith(".py")
        return
    assert native.ACTIVE, f"the compiled modules are not in use: {native.REASON}"
    for name in native.MODULES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        assert not spec.origin.endswith(".py"), f"{name} from {spec.origin}"


def test_version_says_which_modules_run() -> None:
    out = _run("from monitor.cli import main; main()", "--version", pure=False).stdout
    assert out.startswith("mailmon ") and f"parsing modules: {native.REASON}" in out
    out = _run("from monitor.cli import main; main()", "--version", pure=True).stdout
    assert f"parsing modules: {native.PURE_ENV} is set" in out


def test_pure_python_is_chosen_by_the_environment() -> None:
    out = _run(
        "from monitor import native; import monitor.collectors.mta.postfix as p, "
        "monitor.store.wire as w; print(native.ACTIVE, native.REASON, p.__file__, w.__file__)",
        pure=True,
    ).stdout.split()
    assert out[0] == "False" and native.PURE_ENV in " ".join(out)
    assert out[-2].endswith("postfix.py") and out[-1].endswith("wire.py")


def test_parsing_alike_on_the_corpora_and_a_generated_log(tmp_path: Path) -> None:
    assert len(POSTFIX_LOGS) >= 4, POSTFIX_LOGS
    generated = generated_log(tmp_path / "gen.log", 30_000, seed=5)
    pure = _alike(tmp_path, [*POSTFIX_LOGS, generated])
    assert len(pure["events"]) > 5_000  # type: ignore[arg-type]


def test_parsing_alike_on_bad_input(tmp_path: Path) -> None:
    generated = generated_log(tmp_path / "gen.log", 2_000, seed=8)
    pure = _alike(tmp_path, [_junk_log(tmp_path / "junk.log", generated)])
    assert pure["stats"]["unparsed"] and pure["events"]  # type: ignore[index]
    pure = _alike(tmp_path, [_junk_log(tmp_path / "exim-junk.log", EXIM_LOGS[0])], "exim")
    assert pure["stats"]["unparsed"]  # type: ignore[index]


def _microsecond_log(path: Path, messages: int) -> Path:
    """RFC 3339 times to the microsecond: no header repeats, so the parser's header cache
    gives up (``_NoHeads``), a path the corpora do not reach."""
    lines = []
    for n in range(messages):
        qid, second = f"{0xA0000 + n:X}", f"2026-11-20T10:{n // 60 % 60:02d}:{n % 60:02d}"
        pid = 2000 + n % 40
        for k, (daemon, text) in enumerate([
            ("smtpd", f"{qid}: client=app{n % 7}.internal[10.0.0.{n % 200}]"),
            ("cleanup", f"{qid}: message-id=<{n}.{qid}@shop.example>"),
            ("qmgr", f"{qid}: from=<shop@shop.example>, size={900 + n}, nrcpt=1 (queue active)"),
            ("smtp", f"{qid}: to=<user{n}@example{n % 30}.net>, relay=mx.example{n % 30}.net"
                     f"[192.0.2.{n % 250}]:25, delay=0.{n % 9}, delays=0/0/0/0, dsn="
                     + ("2.0.0, status=sent (250 2.0.0 Ok)" if n % 11 else
                        "4.2.0, status=deferred (host said: 450 4.2.0 Greylisted)")),
            ("qmgr", f"{qid}: removed"),
        ]):  # fmt: skip
            lines.append(f"{second}.{n * 5 + k:06d}+00:00 mx1 postfix/{daemon}[{pid}]: {text}\n")
    path.write_text("".join(lines))
    return path


def test_parsing_alike_when_no_header_repeats(tmp_path: Path) -> None:
    pure = _alike(tmp_path, [_microsecond_log(tmp_path / "micro.log", 3_000)])
    assert len(pure["events"]) >= 5_000  # type: ignore[arg-type]
    assert pure["stats"]["unparsed"] == {}  # type: ignore[index]
    assert pure["heads"] == "_NoHeads"


def _exim_log(path: Path, lines: int) -> Path:
    """The follow benchmark's Exim stream (``bench/gen_mta_stream.py``), one second per 50
    lines, as a mainlog."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from gen_mta_stream import exim_stamp, exim_stream
    finally:
        sys.path.remove(str(REPO / "bench"))
    stream, _ = exim_stream(lines, seed=3)
    with path.open("wb") as f:
        for n, line in enumerate(stream):
            f.write(exim_stamp(1_795_510_800 + n // 50) + line.rstrip(b"\n") + b"\n")
    return path


def test_exim_parsing_alike(tmp_path: Path) -> None:
    assert len(EXIM_LOGS) >= 3, EXIM_LOGS
    pure = _alike(tmp_path, [*EXIM_LOGS, _exim_log(tmp_path / "exim.log", 30_000)], "exim")
    assert len(pure["events"]) > 20_000  # type: ignore[arg-type]


def test_ingest_stores_alike(tmp_path: Path) -> None:
    """`mailmon ingest` (writer process, bulk load) gives the same rows either way."""
    log = generated_log(tmp_path / "gen.log", 20_000, seed=11)
    summaries = {}
    for pure in (False, True):
        db = tmp_path / f"{pure}.db"
        done = _run(
            "from monitor.cli import main; main()", "ingest", "postfix", str(log),
            "--db", f"sqlite:///{db}", "--no-progress", "--json", pure=pure,
        )  # fmt: skip
        summary = json.loads(done.stdout)
        for varying in ("seconds", "lines_per_second", "mx_lookups", "indexes_built_after_load"):
            summary.pop(varying)
        summaries[pure] = summary
    assert summaries[False] == summaries[True]
    assert summaries[True]["stored"] > 5_000
    assert store_contents(tmp_path / "False.db") == store_contents(tmp_path / "True.db")


def _copied_sources(root: Path) -> list[Path]:
    """The compiled modules' sources copied under ``root``, as they lie in the repository."""
    for source in native.sources():
        copy = root / source.relative_to(REPO)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copy)
    return native.sources(root)


def test_sources_changed_since_the_build_are_not_loaded_compiled(tmp_path: Path) -> None:
    """The library's name follows the sources: an edit makes the built one unfindable."""
    _copied_sources(tmp_path)
    assert native.library_name(tmp_path) == native.library_name()
    edited = native.sources(tmp_path)[-1]
    edited.write_text(edited.read_text() + "\n# edited\n")
    name = native.library_name(tmp_path)
    assert name != native.library_name()
    assert importlib.util.find_spec(name + "__mypyc") is None


def test_a_module_not_compiled_is_noticed(tmp_path: Path) -> None:
    """A build that compiled the library but not every module: none is used compiled."""
    copies = _copied_sources(tmp_path)
    assert not any(native.compiled_beside(c) for c in copies)
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for copy in copies[1:]:
        copy.with_name(copy.stem + suffix).write_bytes(b"")
    assert not native.compiled_beside(copies[0])
    assert all(native.compiled_beside(c) for c in copies[1:])
    if native.ACTIVE:  # this install: every one has its compiled module
        assert all(native.compiled_beside(s) for s in native.sources())


def test_setup_py_compiles_exactly_the_listed_modules() -> None:
    """The build and the runtime check read one list (setup.py runs monitor/native.py)."""
    setup = (REPO / "setup.py").read_text()
    assert 'runpy.run_path(str(ROOT / "monitor" / "native.py"))' in setup
    assert 'native["sources"](ROOT)' in setup and 'native["library_name"](ROOT)' in setup
    listed = subprocess.run(
        [sys.executable, str(REPO / "monitor" / "native.py")], capture_output=True, text=True,
        check=True,
    ).stdout.split()  # fmt: skip
    assert listed == [str(p.relative_to(REPO)) for p in native.sources()]
