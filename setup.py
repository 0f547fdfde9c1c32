"""Builds the ingest path's hot modules with mypyc, and its C helpers (monitor/native.py
says which and why).

Everything else about the package is in pyproject.toml.  The compiled modules are an
option: with ``MAILMON_PURE_PYTHON=1``, without mypyc, or where the C compiler fails, the
package installs as source alone and works the same, only slower.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
native = runpy.run_path(str(ROOT / "monitor" / "native.py"))


class OptionalBuildExt(build_ext):
    """A failed compilation leaves the source modules in use: a warning, not an error."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers: the source still works
            print(f"mailmon: compiled modules not built ({exc}); using the source",
                  file=sys.stderr)  # fmt: skip

    def build_extension(self, ext: object) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"mailmon: {getattr(ext, 'name', ext)} not compiled ({exc})", file=sys.stderr)


#: Commands that only describe the package: pip runs two before the build.
METADATA_ONLY = {"egg_info", "dist_info", "sdist"}


def forget_earlier_builds() -> None:
    """Delete the compiled modules of earlier builds from the source tree (an editable
    install builds there): a module no longer compiled would still load its old build."""
    for path in [*ROOT.glob("mailmon_native_*__mypyc*"), *(ROOT / "monitor").rglob("*.so")]:
        path.unlink()


def extensions() -> list[object]:
    if sys.argv[1:2] and sys.argv[1] in METADATA_ONLY:
        return []  # mypy would analyse the sources for nothing
    forget_earlier_builds()  # also when this build compiles nothing
    if os.environ.get(native["PURE_ENV"], "") not in ("", "0"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("mailmon: mypyc is not installed; using the source", file=sys.stderr)
        return []
    os.chdir(ROOT)  # mypyc names the modules by their paths from here
    paths = [str(p.relative_to(ROOT)) for p in native["sources"](ROOT) if p.suffix == ".py"]
    try:
        compiled = list(mypycify(
            ["--config-file", "mypyc.ini", *paths],
            opt_level="3",
            group_name=native["library_name"](ROOT),
        ))  # fmt: skip
    except BaseException as exc:  # type errors stop mypyc with SystemExit
        print(f"mailmon: mypyc failed ({exc}); using the source", file=sys.stderr)
        return []
    # The C ones are used with the mypyc ones or not at all (monitor/native.py).
    written = [Extension(name, [path]) for name, path in native["EXTENSIONS"].items()]
    return [*compiled, *written]


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
