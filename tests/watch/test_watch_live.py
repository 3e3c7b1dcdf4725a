"""The live dashboard under a pseudo-terminal: it draws the metric, picks up appended lines, exits on Ctrl-C."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import threading
import time

import pytest

from tests.conftest import BIN, ROOT
from tests.helpers.watch_fixtures import append, train_event_line, write_run

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Screen:
    """Drains the terminal continuously (a full pty buffer would block the dashboard's writes)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.chunks: list[str] = []
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.1)
                if ready:
                    chunk = os.read(self.fd, 65536)
                    if not chunk:
                        return
                    self.chunks.append(chunk.decode("utf-8", errors="replace"))
            except (OSError, ValueError):
                return

    @property
    def raw(self) -> str:
        return "".join(self.chunks)

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw)

    def wait_for(self, needle: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if needle in self.text:
                return True
            time.sleep(0.05)
        return needle in self.text


@pytest.mark.parametrize("mode", [[], ["--poll"]], ids=["file-events", "poll"])
def test_live_dashboard_in_a_terminal(tmp_path, mode):
    run = write_run(tmp_path / "runs" / "live-run", epochs=2, end=False)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env.update(TERM="xterm-256color", BEVCTL_RUNS=str(tmp_path / "runs"))
    # Ctrl-C as a terminal delivers it: a suite started in the background (nohup, `cmd &` without job control)
    # passes SIGINT on ignored, and a process that starts with SIGINT ignored rightly keeps ignoring it.
    proc = subprocess.Popen([str(BIN / "bevctl"), "watch", *mode], stdin=slave, stdout=slave, stderr=slave,
                            cwd=ROOT, env=env, start_new_session=True, preexec_fn=_default_sigint)
    os.close(slave)
    screen = Screen(master)
    try:
        assert screen.wait_for("losses finite", 20), screen.text[-2000:]
        text = screen.text
        assert "live-run" in text and "loss/map/divider/dice" in text and "task-specific GCA" in text
        assert any(0x2800 < ord(c) <= 0x28FF for c in text)  # the Braille chart
        assert "\x1b[?1049h" not in screen.raw  # screen=False: no alternate screen
        append(run / "events.jsonl", train_event_line(3, 1, 7.777))
        assert screen.wait_for("last 7.777", 5), screen.text[-3000:]
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=10) in (0, 130)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)
