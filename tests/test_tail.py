"""The file follower: one named test per rotation and edge case (mtail's list)."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

from monitor.collectors.tail import MAX_LINE_BYTES, FileTailer, Position, gunzipped


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _write(path: Path, text: str, mode: str = "a") -> None:
    with path.open(mode) as f:
        f.write(text)


def _lines(tailer: FileTailer) -> list[str]:
    return [line.decode() for line in tailer.poll()]


def test_append(tmp_path: Path) -> None:
    """Lines present at start and lines appended later are each read once."""
    log = tmp_path / "mail.log"
    _write(log, "a\nb\n")
    tailer = FileTailer(str(log))
    assert _lines(tailer) == ["a", "b"]
    assert _lines(tailer) == []
    _write(log, "c\n")
    assert _lines(tailer) == ["c"]
    assert tailer.position().offset == log.stat().st_size


def test_partial_line_is_held(tmp_path: Path) -> None:
    """A line without its newline yet is held, never handed out half, and the offset stays before it."""
    log = tmp_path / "mail.log"
    _write(log, "one\ntw")
    tailer = FileTailer(str(log))
    assert _lines(tailer) == ["one"]
    assert tailer.position().offset == 4
    _write(log, "o\n")
    assert _lines(tailer) == ["two"]


def test_rename_rotation(tmp_path: Path) -> None:
    """logrotate's rename-and-create: the old file is read to its end, then the new one from 0."""
    log = tmp_path / "mail.log"
    _write(log, "1\n2\n")
    tailer = FileTailer(str(log), rotate_wait_seconds=0)
    assert _lines(tailer) == ["1", "2"]
    _write(log, "3\n")
    log.rename(tmp_path / "mail.log.1")
    _write(log, "4\n", "w")
    assert _lines(tailer) == ["3", "4"]
    _write(log, "5\n")
    assert _lines(tailer) == ["5"]


def test_rename_rotation_writer_not_reopened_yet(tmp_path: Path) -> None:
    """Lines the writer still appends to the renamed file are read during the grace period."""
    clock = Clock()
    log = tmp_path / "mail.log"
    _write(log, "1\n")
    tailer = FileTailer(str(log), rotate_wait_seconds=10, clock=clock)
    assert _lines(tailer) == ["1"]
    rotated = tmp_path / "mail.log.1"
    log.rename(rotated)
    _write(log, "new\n", "w")
    assert _lines(tailer) == ["new"]
    _write(rotated, "late\n")
    clock.now = 5
    assert _lines(tailer) == ["late"]


def test_copytruncate(tmp_path: Path) -> None:
    """copytruncate: what was written before the truncation is read from the copy, then the file from 0."""
    log = tmp_path / "mail.log"
    _write(log, "first line\n2\n")
    tailer = FileTailer(str(log))
    assert _lines(tailer) == ["first line", "2"]
    _write(log, "3\n")
    (tmp_path / "mail.log.1").write_bytes(log.read_bytes())
    with log.open("r+") as f:
        f.truncate(0)
    assert _lines(tailer) == ["3"]
    _write(log, "fresh\n")
    assert _lines(tailer) == ["fresh"]


def test_delete_and_recreate(tmp_path: Path) -> None:
    """A deleted file that is created again is read from its start."""
    log = tmp_path / "mail.log"
    _write(log, "old\n")
    tailer = FileTailer(str(log), rotate_wait_seconds=0)
    assert _lines(tailer) == ["old"]
    log.unlink()
    assert _lines(tailer) == []
    _write(log, "new\n", "w")
    assert _lines(tailer) == ["new"]


def test_gz_after_rotation(tmp_path: Path) -> None:
    """Rotated and compressed while stopped: the rest is read from the .gz, then the new file."""
    log = tmp_path / "mail.log"
    _write(log, "header line\nread\n")
    first = FileTailer(str(log))
    assert _lines(first) == ["header line", "read"]
    saved = first.position()
    first.close()
    _write(log, "unread\n")
    (tmp_path / "mail.log.1.gz").write_bytes(gzip.compress(log.read_bytes()))
    log.unlink()
    _write(log, "after\n", "w")
    restarted = FileTailer(str(log), position=Position.from_dict(saved.to_dict()))
    assert _lines(restarted) == ["unread", "after"]


def test_restart_resumes_at_the_checkpoint(tmp_path: Path) -> None:
    """A new tailer with a saved position reads only what came after it."""
    log = tmp_path / "mail.log"
    _write(log, "a\nb\n")
    first = FileTailer(str(log))
    _lines(first)
    _write(log, "c\n")
    again = FileTailer(str(log), position=first.position())
    assert _lines(again) == ["c"]


def test_start_at_end(tmp_path: Path) -> None:
    """start_at=end skips what is already there on a first start."""
    log = tmp_path / "mail.log"
    _write(log, "old\n")
    tailer = FileTailer(str(log), start_at="end")
    assert _lines(tailer) == []
    _write(log, "new\n")
    assert _lines(tailer) == ["new"]


def test_file_absent_at_start(tmp_path: Path) -> None:
    """A file that does not exist yet is an error to report, then followed once it appears."""
    log = tmp_path / "mail.log"
    tailer = FileTailer(str(log))
    assert _lines(tailer) == []
    assert tailer.error is not None and "No such file" in tailer.error
    _write(log, "hello\n", "w")
    assert _lines(tailer) == ["hello"]
    assert tailer.error is None


def test_permission_denied(tmp_path: Path) -> None:
    """An unreadable file gives a clear error and no crash; the tailer keeps trying."""
    log = tmp_path / "mail.log"
    _write(log, "secret\n")
    os.chmod(log, 0o600)
    os.chown(log, 65534, 65534)  # owned by nobody; we read it without root's override
    code = (
        "from monitor.collectors.tail import FileTailer\n"
        f"t = FileTailer({str(log)!r}); print(t.poll()); print(t.error); print(t.poll())\n"
    )
    repo = Path(__file__).resolve().parents[1]
    drop = [shutil.which("setpriv") or "setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    proc = subprocess.run(
        [*drop, sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
        cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[]", f"cannot read {log}: Permission denied", "[]"]
    assert proc.stderr.count("Permission denied") == 1  # logged once, not once per poll


def test_very_long_line(tmp_path: Path) -> None:
    """A line longer than the cap is handed out in pieces; memory stays bounded; neighbours kept."""
    log = tmp_path / "mail.log"
    _write(log, "before\n" + "x" * (MAX_LINE_BYTES + 10) + "\nafter\n")
    tailer = FileTailer(str(log))
    lines = tailer.poll()
    assert lines[0] == b"before" and lines[-1] == b"after"
    assert sum(len(line) for line in lines[1:-1]) == MAX_LINE_BYTES + 10
    assert tailer.position().offset == log.stat().st_size


def test_gunzipped_reads_gzip_and_passes_plain_through() -> None:
    """A gzip stream is decompressed by its magic bytes; plain and unpeekable ones are kept."""
    packed = io.BufferedReader(io.BytesIO(gzip.compress(b"a line\n")))
    assert gunzipped(packed).read() == b"a line\n"
    plain = io.BufferedReader(io.BytesIO(b"\x1f not gzip\n"))
    assert gunzipped(plain) is plain
    unpeekable = io.BytesIO(gzip.compress(b"x"))
    assert gunzipped(unpeekable) is unpeekable
