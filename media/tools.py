"""ffmpeg / ffprobe on an untrusted file: time-limited, and every failure a 4xx for the request."""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

from errors import BadMedia, UnsupportedMedia

log = logging.getLogger(__name__)


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
        result = subprocess.run(command, capture_output=True, timeout=remaining, check=False)
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
        raise BadMedia(f"the {kind} file could not be decoded: {reason}", code=code)
    return result
