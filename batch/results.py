"""The results file: one JSON line per answered item, appended so that a crash loses at most the
items in flight and never leaves a line that parses wrong.

Each line goes out in one ``write`` on a file opened for appending, then ``fsync``: once a line
is in the file it is on disk, and the next run trusts it. A process killed inside a write (or a
machine losing power) can leave a last line without its newline; opening the file again cuts that
partial line off, so its item simply runs again. A complete line that is not a batch line means
``--output`` names someone else's file: the run refuses to append to it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batch.usage import UsageError

log = logging.getLogger(__name__)


def _is_line(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("id"), str)
        and ("result" in entry or "error" in entry)
    )


def encode(line: dict[str, Any]) -> bytes:
    # json.dumps escapes newlines inside strings: one item is always one physical line.
    return (json.dumps(line, separators=(",", ":")) + "\n").encode("utf-8")


class ResultsFile:
    """Open with ``ResultsFile.open``."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._lock = threading.Lock()  # lines are written from worker threads

    @classmethod
    def open(cls, path: Path, on_line: Callable[[dict[str, Any]], None]) -> ResultsFile:
        """Create ``path`` (and its folder) or reopen it: ``on_line`` sees each line a previous
        run left (read as a stream: the file may be large), and a partial last line is cut off."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise UsageError(f"--output: cannot write {path}: {exc.strerror or exc}") from None
        try:
            complete_bytes, size = scan(path, on_line)
            if complete_bytes < size:
                os.ftruncate(fd, complete_bytes)
                os.fsync(fd)
                log.warning(
                    "dropped a partial last line (%d bytes) of %s: a run stopped while writing it; "
                    "its item runs again",
                    size - complete_bytes,
                    path,
                )
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def append(self, line: dict[str, Any]) -> None:
        data = encode(line)
        with self._lock:
            view = memoryview(data)
            while view:  # a regular file takes it all at once; a short write is finished anyway
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def scan(path: Path, on_line: Callable[[dict[str, Any]], None]) -> tuple[int, int]:
    """Read a results file without changing it: each complete line goes to ``on_line``; returns
    (bytes up to the last newline, file size)."""
    complete = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                return complete, complete + len(raw)  # the partial tail
            complete += len(raw)
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                entry = None
            if not _is_line(entry):
                raise UsageError(
                    f"--output {path}:{number} is not a line of a batch run: refusing to add to "
                    "a file this runner did not write"
                )
            on_line(entry)
    return complete, complete
