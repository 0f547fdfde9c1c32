"""The tests' private MTAs keep working when another test run locks up pytest's temp dirs."""

from __future__ import annotations

import os
import threading
from contextlib import ExitStack
from email.message import EmailMessage
from pathlib import Path

import pytest
from servers.exim import EximInstance, EximMissing, find_exim
from servers.mta import MtaInstance
from servers.postfix import PostfixInstance, PostfixMissing, find_postfix
from servers.prometheus import free_port
from servers.smtp_sink import SmtpSink


def _message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "sender@app.test"
    message["To"] = "a@ok.test"
    message["Subject"] = "private directories"
    message["Message-ID"] = "<private-dirs@app.test>"
    message.set_content("hello")
    return message


def _instance(kind: str, tmpdir: Path, sink_port: int) -> MtaInstance:
    if kind == "postfix":
        return PostfixInstance(tmpdir, free_port(), {"ok.test": f"smtp:[127.0.0.1]:{sink_port}"})
    return EximInstance(tmpdir, free_port(), sink_port, ["ok.test"])


def _keep_private(directory: Path, stop: threading.Event) -> None:
    """What another root pytest run does to /tmp/pytest-of-root, over and over."""
    while not stop.is_set():
        directory.chmod(0o700)
        stop.wait(0.001)


@pytest.mark.parametrize("kind", ["postfix", "exim"])
def test_mta_survives_its_test_directory_turning_private(tmp_path: Path, kind: str) -> None:
    """An MTA starts, delivers and logs although the test's directory keeps turning 0700 (as
    another root pytest run does to /tmp/pytest-of-root); its log is kept there once stopped."""
    try:
        find_postfix() if kind == "postfix" else find_exim()
    except (PostfixMissing, EximMissing) as missing:
        pytest.fail(str(missing), pytrace=False)
    if os.geteuid() != 0:
        pytest.fail(f"the private {kind} runs as root", pytrace=False)
    shared = tmp_path / "pytest-of-root"
    (shared / "run").mkdir(parents=True)
    with ExitStack() as stack:
        sink = stack.enter_context(SmtpSink())
        mta = _instance(kind, shared / "run", sink.port)
        stack.callback(mta.stop)
        stop = threading.Event()
        resetter = threading.Thread(target=_keep_private, args=(shared, stop), daemon=True)
        resetter.start()
        stack.callback(resetter.join)
        stack.callback(stop.set)
        mta.start()
        mta.submit(_message(), "sender@app.test", ["a@ok.test"])
        mta.wait_for_log(lambda lines: any("a@ok.test" in line and
                                           ("status=sent" in line or " => " in line)
                                           for line in lines))  # fmt: skip
        private = mta.root
        mta.stop()
    assert [list(m.rcpt_tos) for m in sink.accepted] == [["a@ok.test"]]
    assert mta.log_file.is_relative_to(shared) and "a@ok.test" in mta.log_file.read_text()
    assert not private.exists()
