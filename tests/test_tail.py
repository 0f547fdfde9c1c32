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


#: A Postfix ``status=sent`` line is often longer than the 256 bytes a fingerprint covers.
LONG_FIRST = "Dec  6 02:00:00 mx postfix/smtp[1]: 4ABC: to=<a@example.com>, " + "x" * 400


def test_restart_with_a_first_line_longer_than_the_fingerprint(tmp_path: Path) -> None:
    """A file whose first line is over 256 bytes is the same file after a restart: only new lines are read."""
    log = tmp_path / "mail.log"
    _write(log, LONG_FIRST + "\nsecond\n")
    first = FileTailer(str(log))
    assert _lines(first) == [LONG_FIRST, "second"]
    saved = first.position()
    first.close()
    _write(log, "third\n")
    again = FileTailer(str(log), position=Position.from_dict(saved.to_dict()))
    assert _lines(again) == ["third"]


def test_copytruncate_with_a_first_line_longer_than_the_fingerprint(tmp_path: Path) -> None:
    """copytruncate of a file with a long first line: the copy is found by its head and its rest read."""
    log = tmp_path / "mail.log"
    _write(log, LONG_FIRST + "\n2\n")
    tailer = FileTailer(str(log))
    assert _lines(tailer) == [LONG_FIRST, "2"]
    _write(log, "3\n")
    (tmp_path / "mail.log.1").write_bytes(log.read_bytes())
    with log.open("r+") as f:
        f.truncate(0)
    assert _lines(tailer) == ["3"]


def test_copytruncate_regrown_past_the_offset_before_the_next_poll(tmp_path: Path) -> None:
    """Truncated and grown past the old offset between two polls: the copy's rest, then every new line."""
    log = tmp_path / "mail.log"
    old = [f"old {i}" for i in range(50)]
    _write(log, "".join(f"{line}\n" for line in old))
    tailer = FileTailer(str(log))
    assert _lines(tailer) == old
    _write(log, "old tail\n")
    (tmp_path / "mail.log.1").write_bytes(log.read_bytes())
    with log.open("r+") as f:
        f.truncate(0)
    new = [f"new line number {i}" for i in range(150)]
    _write(log, "".join(f"{line}\n" for line in new))
    assert log.stat().st_size > tailer.position().offset
    assert _lines(tailer) == ["old tail", *new]


def test_copytruncate_regrown_while_stopped(tmp_path: Path) -> None:
    """Truncated and regrown past the checkpoint while stopped: the copy's rest, then the new content."""
    log = tmp_path / "mail.log"
    _write(log, LONG_FIRST + "\nread\n")
    first = FileTailer(str(log))
    _lines(first)
    saved = first.position()
    first.close()
    _write(log, "unread\n")
    (tmp_path / "mail.log.1").write_bytes(log.read_bytes())
    with log.open("r+") as f:
        f.truncate(0)
    new = [f"new line number {i}" for i in range(50)]
    _write(log, "".join(f"{line}\n" for line in new))
    again = FileTailer(str(log), position=Position.from_dict(saved.to_dict()))
    assert _lines(again) == ["unread", *new]


def test_renamed_file_still_written_after_a_restart(tmp_path: Path) -> None:
    """Rotated while stopped, the writer not reopened yet: lines it still appends to the old file are read."""
    clock = Clock()
    log = tmp_path / "mail.log"
    _write(log, "1\n")
    first = FileTailer(str(log))
    _lines(first)
    saved = first.position()
    first.close()
    rotated = tmp_path / "mail.log.1"
    log.rename(rotated)
    _write(log, "", "w")
    again = FileTailer(str(log), position=saved, rotate_wait_seconds=10, clock=clock)
    assert _lines(again) == []
    _write(rotated, "late\n")
    clock.now = 5
    assert _lines(again) == ["late"]
    _write(log, "new\n")
    assert _lines(again) == ["new"]


def test_rotated_file_being_drained_survives_a_restart(tmp_path: Path) -> None:
    """The checkpoint names a rotated file still read in the grace period; a restarted tailer goes on with it."""
    clock = Clock()
    log = tmp_path / "mail.log"
    _write(log, "1\n")
    first = FileTailer(str(log), rotate_wait_seconds=10, clock=clock)
    assert _lines(first) == ["1"]
    rotated = tmp_path / "mail.log.1"
    log.rename(rotated)
    _write(log, "", "w")
    assert _lines(first) == []
    _write(rotated, "late 1\n")
    assert _lines(first) == ["late 1"]
    saved = Position.from_dict(first.position().to_dict())
    first.close()  # killed here
    _write(rotated, "late 2\nlate 3\n")
    again = FileTailer(str(log), position=saved, rotate_wait_seconds=10, clock=clock)
    assert _lines(again) == ["late 2", "late 3"]
    _write(rotated, "late 4\n")
    _write(log, "new\n")
    assert _lines(again) == ["late 4", "new"]


def test_rotated_file_compressed_while_stopped_mid_drain(tmp_path: Path) -> None:
    """A rotated file the checkpoint was still reading, gzipped while stopped: its rest is read from the .gz."""
    clock = Clock()
    log = tmp_path / "mail.log"
    _write(log, LONG_FIRST + "\n")
    first = FileTailer(str(log), rotate_wait_seconds=10, clock=clock)
    _lines(first)
    rotated = tmp_path / "mail.log.1"
    log.rename(rotated)
    _write(log, "new\n", "w")
    assert _lines(first) == ["new"]
    saved = Position.from_dict(first.position().to_dict())
    first.close()
    _write(rotated, "late\n")
    (tmp_path / "mail.log.1.gz").write_bytes(gzip.compress(rotated.read_bytes()))
    rotated.unlink()
    again = FileTailer(str(log), position=saved, rotate_wait_seconds=10, clock=clock)
    assert _lines(again) == ["late"]
