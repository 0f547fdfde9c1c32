"""The ingest path's hot modules, compiled with mypyc, or their source.

``make install`` (``pip install``) compiles :data:`MODULES` into C extension modules
beside their source (``setup.py``): a Postfix log then parses in about a quarter less CPU
time (bench/README.md).  It builds :data:`EXTENSIONS`, written in C, with them: the
helpers of ``monitor/slots.py``, used when the compiled modules are.  Where nothing can
be compiled (no C compiler), or with ``MAILMON_PURE_PYTHON=1`` at build time, the
install is the source alone; both give the same results (``tests/test_native.py``).

The compiled modules share one library whose name carries a digest of the sources they
were built from (the C sources too).  At start-up :func:`choose` looks for the library of
the sources on disk: a module edited since the build would otherwise run as it was
before the edit.  When it is missing, or a module's compiled file is (a build that failed
part way), or ``MAILMON_PURE_PYTHON=1`` is set when running, every one of them is
imported from its source: all or none, since compiled code takes the classes of the
other compiled modules for native ones.  Checking costs about a millisecond at start-up
(reading and hashing their 125 KB of source).  This module uses the standard library
only: ``setup.py`` runs it before anything is installed (``python monitor/native.py``
prints the source paths).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = [
    "ACTIVE",
    "EXTENSIONS",
    "MODULES",
    "REASON",
    "choose",
    "compiled_beside",
    "library_name",
    "sources",
]

#: Compiled together, in this order (the digest follows it).  Each must stay within what
#: mypyc compiles as Python runs it: no class attribute aliasing a method, no subclass of
#: OrderedDict, no attribute read back after a call that may change it when this function
#: set it just before (mypyc keeps mypy's narrowed type: see ``QueueTable.has_unborn``).
MODULES = (
    "monitor.collectors.syslog",
    "monitor.collectors.mta.postfix_state",
    "monitor.collectors.mta.postfix_lines",
    "monitor.collectors.mta.postfix_events",
    "monitor.collectors.mta.postfix",
    "monitor.collectors.mta.exim_lines",
    "monitor.collectors.mta.exim",
    "monitor.store.wire",
    "monitor.store.rows",
    "monitor.store.fold",
)

#: Extension modules written in C, built with :data:`MODULES` and used with them, all or
#: none (``monitor/slots.py``): module name -> its source, from the repository.
EXTENSIONS = {"monitor._slots": "monitor/_slots.c"}

PURE_ENV = "MAILMON_PURE_PYTHON"

#: Whether the compiled modules are the ones imported, and why not when they are not.
ACTIVE = False
REASON = "not chosen yet"

_ROOT = Path(__file__).resolve().parent.parent


def sources(root: Path = _ROOT) -> list[Path]:
    """The source file of each of :data:`MODULES`, then of each of :data:`EXTENSIONS`,
    under ``root`` (the repository)."""
    return [
        *(root.joinpath(*name.split(".")).with_suffix(".py") for name in MODULES),
        *(root / path for path in EXTENSIONS.values()),
    ]


def library_name(root: Path = _ROOT) -> str:
    """The mypyc group name of the sources under ``root`` now (its library adds
    ``__mypyc``)."""
    digest = hashlib.sha256()
    for path in sources(root):
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return f"mailmon_native_{digest.hexdigest()[:16]}"


def compiled_beside(source: Path) -> bool:
    """Whether the compiled module of ``source`` lies beside it."""
    return any(
        source.with_name(source.stem + suffix).is_file()
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Imports :data:`MODULES` from their ``.py`` file even where a compiled one lies."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES or not path:
            return None
        leaf = fullname.rpartition(".")[2]
        for folder in path:
            file = Path(folder, leaf + ".py")
            if file.is_file():
                return importlib.util.spec_from_file_location(fullname, file)
        return None


def choose() -> None:
    """Decide, once and before any of :data:`MODULES` is imported, which kind is used."""
    global ACTIVE, REASON
    if any(finder.__class__ is _SourceFinder for finder in sys.meta_path) or ACTIVE:
        return
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        REASON = f"{PURE_ENV} is set"
    else:
        try:
            name = library_name()
        except OSError as exc:  # a source missing: the compiled ones cannot be checked
            name, REASON = None, f"source unreadable ({exc})"
        if name is not None:
            missing = [p.stem for p in sources() if not compiled_beside(p)]
            if importlib.util.find_spec(name + "__mypyc") is None:
                REASON = "not compiled for these sources (make install compiles them)"
            elif missing:  # a part of the build failed
                REASON = f"not compiled: {', '.join(missing)}"
            else:
                ACTIVE, REASON = True, f"compiled ({name})"
                return
    sys.meta_path.insert(0, _SourceFinder())


if __name__ == "__main__":
    print("\n".join(str(p.relative_to(_ROOT)) for p in sources()))
