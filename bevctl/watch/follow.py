"""Tailing log files the way `tail -F` does, plus what `tail` cannot: new files in the run folder.

A `FileTail` remembers its offset and inode. It hands out complete lines only (a partial last line waits for
its newline), starts over when the file shrinks (copytruncate rotation), and when the path points to a new
inode (rename rotation) it drains the old file before opening the new one.

`Waker` decides when to look: watchdog's file events by default, a plain timer with ``--poll`` or when the
folder sits on a network filesystem, where inotify sees nothing (watchdog#504) and stat-polling a handful of
files is cheap and always right.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from bevctl.watch.sources import Parser, Pattern, discover

# Filesystems on which inotify misses writes made by other hosts.
NETWORK_FS = frozenset(
    {"nfs", "nfs4", "cifs", "smbfs", "smb3", "fuse.sshfs", "sshfs", "9p", "afs", "ceph", "fuse.ceph", "glusterfs",
     "fuse.glusterfs", "lustre", "gpfs", "beegfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "virtiofs"}
)
READ_CHUNK = 16 << 20  # bytes handed to a parser at once


class FileTail:
    def __init__(self, path: Path, parser: Parser):
        self.path = path
        self.parser = parser
        self.offset = 0
        self.truncations = 0
        self.rotations = 0
        self._file: Any = None
        self._inode: int | None = None
        self._partial = b""
        self.eof = True

    def _open(self) -> bool:
        try:
            self._file = open(self.path, "rb")
        except OSError:
            self._file = None
            return False
        self._inode = os.fstat(self._file.fileno()).st_ino
        self.offset = 0
        self._partial = b""
        return True

    def read_lines(self, limit: int = READ_CHUNK) -> list[str]:
        """Complete lines added since the last call, at most about `limit` bytes of them (`eof` tells whether more
        is waiting): a long backlog goes to the parser in slices, so memory stays bounded."""
        if self._file is None and not self._open():
            return []
        lines = self._drain(limit)
        if not self.eof:
            return lines
        try:
            st = os.stat(self.path)
        except OSError:
            return lines  # renamed away and not recreated yet: keep the old file
        if st.st_ino != self._inode:
            self.rotations += 1
            self._file.close()
            if self._open():
                lines += self._drain(limit)
        elif st.st_size < self.offset:
            self.truncations += 1
            self._file.seek(0)
            self.offset = 0
            self._partial = b""
            lines += self._drain(limit)
        return lines

    def _drain(self, limit: int) -> list[str]:
        data = self._file.read(limit)
        self.eof = len(data) < limit
        if not data:
            return []
        self.offset += len(data)
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        if not cut:
            return []
        text = str(memoryview(data)[:cut], "utf-8", "replace")  # no copy of the bytes before decoding
        if "\r" in text:
            return text.splitlines()
        lines = text.split("\n")  # twice as fast as splitlines, which also looks for \r, \f, \u2028 ...
        lines.pop()  # the empty string after the last newline
        return lines

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Follower:
    """All the files of one run: tails them, feeds their lines to their parsers, rescans for new files."""

    def __init__(self, path: Path, on_records: Callable[[list[dict[str, Any]]], None], rescan_s: float = 2.0):
        self.path = path
        self.on_records = on_records
        self.rescan_s = rescan_s
        self.patterns: list[Pattern] = discover(path)
        self.tails: dict[Path, FileTail] = {}
        self._last_scan = 0.0

    @property
    def folders(self) -> list[Path]:
        return sorted({p.folder for p in self.patterns})

    def rescan(self) -> None:
        self._last_scan = time.monotonic()
        if not self.tails and self.path.is_dir():
            self.patterns = discover(self.path)  # a folder that had no logs yet may have some now
        for pattern in self.patterns:
            for file in pattern.files():
                if file not in self.tails:
                    self.tails[file] = FileTail(file, pattern.make())

    def poll(self, force_scan: bool = False) -> int:
        """Read what is new everywhere; returns how many records went to `on_records`."""
        if force_scan or time.monotonic() - self._last_scan >= self.rescan_s:
            self.rescan()
        count = 0
        for tail in list(self.tails.values()):
            while True:
                lines = tail.read_lines()
                if lines:
                    records = tail.parser.feed(lines)
                    if records:
                        count += len(records)
                        self.on_records(records)
                if tail.eof:
                    break
        return count

    def stats(self) -> dict[str, Any]:
        tails = list(self.tails.values())
        return {
            "files": [{"path": str(t.path), "format": t.parser.name, "lines": t.parser.lines} for t in tails],
            "lines": sum(t.parser.lines for t in tails),
            "garbage": sum(t.parser.garbage for t in tails),
            "truncations": sum(t.truncations for t in tails),
            "rotations": sum(t.rotations for t in tails),
        }

    def close(self) -> None:
        for tail in self.tails.values():
            tail.close()


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding path, from /proc/mounts (None where that is not available)."""
    try:
        real = os.path.realpath(path)
        best, fstype = "", None
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1].replace("\\040", " ")
                if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                    best, fstype = mount, parts[2]
        return fstype
    except OSError:
        return None


class Waker:
    """Sleeps until a followed folder changes (watchdog) or a poll interval passes."""

    def __init__(self, folders: list[Path], poll: bool = False, poll_s: float = 0.25):
        self.poll_s = poll_s
        self._event = threading.Event()
        self._observer: Any = None
        self.mode = "poll"
        self.reason = "--poll" if poll else ""
        if poll:
            return
        network = [f for f in folders if filesystem_type(f) in NETWORK_FS]
        if network:
            self.reason = f"{network[0]} is on {filesystem_type(network[0])} (no inotify)"
            return
        try:
            self._start_watchdog(folders)
            self.mode = "events"
        except Exception as exc:  # inotify limits, missing module: polling is always correct
            self.reason = f"file events unavailable ({type(exc).__name__}: {exc})"
            self._observer = None

    def _start_watchdog(self, folders: list[Path]) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        wake = self._event

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if event.event_type not in ("opened", "closed", "closed_no_write"):  # our reads, or after a modify
                    wake.set()

        observer = Observer()
        handler = _Handler()
        for folder in folders:
            if folder.is_dir():
                observer.schedule(handler, str(folder), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def wait(self, timeout: float) -> bool:
        """True when woken by a file event; polling mode wakes every poll interval."""
        if self._observer is None:
            timeout = min(timeout, self.poll_s)
        woke = self._event.wait(timeout)
        self._event.clear()
        return woke

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer = None
