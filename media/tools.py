"""ffmpeg / ffprobe on an untrusted file: time-limited, and every failure a 4xx for the request."""

from __future__ import annotations

import logging
import math
import subprocess
import time
from pathlib import Path

from errors import BadMedia, UnsupportedMedia
from media import sandbox

log = logging.getLogger(__name__)


def input_format(demuxer: str) -> list[str]:
    """ffmpeg/ffprobe input options: the named demuxer only, and for QuickTime/MP4 no external
    data references (a crafted file cannot make the demuxer open other files)."""
    return ["-f", demuxer, *(["-enable_drefs", "0"] if demuxer == "mov" else [])]


def undecodable(kind: str, code: str, detail: object, *, verb: str = "decoded") -> BadMedia:
    """422 for a file a decoder refused. The decoder's own words (library messages, ffmpeg's
    stderr: paths, offsets, heap addresses) go to the log with the request id, not to the client."""
    log.info("%s file refused by its decoder (%s): %s", kind, code, str(detail)[:500], extra={"format": kind})
    return BadMedia(
        f"the {kind} file could not be {verb}: it is corrupt, truncated or not what its type says", code=code
    )


def decode_timeout(kind: str, timeout_s: float) -> BadMedia:
    return BadMedia(f"decoding the {kind} file took longer than {timeout_s:g} s", code="decode_timeout")


def run_tool(
    command: list[str],
    *,
    kind: str,
    deadline: float,
    timeout_s: float,
    source: Path,
    code: str,
    needed_by: str,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``command`` (on ``source``, a ``kind`` file) with what is left until ``deadline``
    (``time.monotonic()``). Past it: 422 ``decode_timeout``; the tool missing: 415
    ``decoder_unavailable`` ("<needed_by> needs <tool>"); a non-zero exit: 422 ``code`` with the
    tool's last stderr line, the private temporary path hidden."""
    remaining = deadline - time.monotonic()
    try:
        if remaining <= 0:
            raise subprocess.TimeoutExpired(command, timeout_s)
        # run() kills the child on timeout and waits for it: no process outlives the request.
        result = subprocess.run(
            command,
            capture_output=True,
            timeout=remaining,
            check=False,
            env=sandbox.child_env(),  # no secret of the service's (media/sandbox.py)
            preexec_fn=sandbox.limits(3 * timeout_s + 10),
        )
    except subprocess.TimeoutExpired as exc:
        log.warning("%s timed out after %g s", Path(command[0]).name, timeout_s, extra={"format": kind})
        raise decode_timeout(kind, timeout_s) from exc
    except OSError as exc:
        log.error("could not run %s: %s", command[0], exc)
        raise UnsupportedMedia(
            f"{needed_by} needs {Path(command[0]).name}, which could not be run on this server",
            code="decoder_unavailable",
        ) from exc
    if result.returncode != 0:
        lines = result.stderr.decode("utf-8", "replace").replace(str(source), "input").strip().splitlines()
        reason = lines[-1][:300] if lines else f"{Path(command[0]).name} exited with {result.returncode}"
        raise undecodable(kind, code, reason)
    return result


class DecodeClock:
    """The time limit of one file's decode, counting only the decoder's own time.

    A job's file is decoded while what came out of it is scored, and the pipe between the two
    holds the decoder back while the models work. That wait is not decoding, so between ``pause``
    and ``resume`` the deadline moves with the clock. ``allow`` raises the limit to what the media
    seen so far earns (``per_media_s`` seconds per second of media): a file whose duration was not
    declared still gets the time its length needs. ``margin_s`` makes the deadline that much
    earlier (a child process gives up before its parent kills it); ``elapsed_s`` starts the clock
    that far in (the parent's time already spent). One reader thread; ``cancel`` from any thread.
    """

    def __init__(
        self, limit_s: float, *, per_media_s: float = 0.0, elapsed_s: float = 0.0, margin_s: float = 0.0
    ) -> None:
        self.limit_s = limit_s
        self.per_media_s = per_media_s
        self.margin_s = margin_s
        self.cancelled = False
        self._origin = time.monotonic() - elapsed_s
        self._paused_at: float | None = None

    @classmethod
    def until(cls, deadline: float) -> DecodeClock:
        """A clock that ends at ``deadline`` (``time.monotonic()``) whatever happens."""
        return cls(deadline - time.monotonic())

    @property
    def deadline(self) -> float:
        paused = 0.0 if self._paused_at is None else time.monotonic() - self._paused_at
        return self._origin + paused + self.limit_s - self.margin_s

    def elapsed(self) -> float:
        """Decoding time spent so far (pauses excluded)."""
        return self.limit_s - self.margin_s - self.remaining()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def expired(self) -> bool:
        return self.cancelled or time.monotonic() > self.deadline

    def allow(self, media_s: float) -> None:
        if self.per_media_s and math.isfinite(media_s):
            self.limit_s = max(self.limit_s, media_s * self.per_media_s)

    def pause(self) -> None:
        if self._paused_at is None:
            self._paused_at = time.monotonic()

    def resume(self) -> None:
        if self._paused_at is not None:
            self._origin += time.monotonic() - self._paused_at
            self._paused_at = None

    def cancel(self) -> None:
        self.cancelled = True
