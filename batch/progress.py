"""How a run talks: on a terminal, a progress bar (tqdm: rate and ETA) with plain log lines
printed above it; anywhere else (Cloud Run, AWS Batch, a pipe, a file), JSON log lines, a progress
line among them every ``JSON_EVERY_S`` seconds with the same numbers, for log queries to read."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

from logs import JsonFormatter

log = logging.getLogger("batch")

JSON_EVERY_S = 10.0


class _AboveTheBar(logging.StreamHandler):
    """A log line printed above the bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging's rule: a handler reports, never raises
            self.handleError(record)


def configure_logging(level: str, stream: TextIO) -> bool:
    """Log to ``stream`` as its kind asks; True when it is a terminal (a bar will be drawn)."""
    tty = stream.isatty()
    handler: logging.Handler
    if tty:
        handler = _AboveTheBar(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # boto's INFO lines ("Found credentials in environment variables") say nothing about the run.
    for noisy in ("botocore", "boto3", "s3transfer"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return tty


class Progress:
    """Counts answered items (``advance``) and shows them: a bar, or a JSON line now and then."""

    def __init__(self, total: int, *, tty: bool, stream: TextIO = sys.stderr) -> None:
        self.total = total
        self.done = 0
        self.errors = 0
        self.started = time.monotonic()
        self._last_line = self.started
        self._bar = (
            tqdm(total=total, unit="item", file=stream, dynamic_ncols=True, smoothing=0.1) if tty else None
        )

    def advance(self, line: dict[str, Any]) -> None:
        self.done += 1
        self.errors += "error" in line
        if self._bar is not None:
            self._bar.update(1)
            if "error" in line:
                self._bar.set_postfix(errors=self.errors, refresh=False)
            return
        now = time.monotonic()
        if now - self._last_line >= JSON_EVERY_S:
            self._last_line = now
            self._log_line(now)

    def _log_line(self, now: float) -> None:
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else None
        log.info(
            "progress %d/%d",
            self.done,
            self.total,
            extra={
                "done": self.done,
                "total": self.total,
                "errors": self.errors,
                "items_per_s": round(rate, 3),
                "eta_s": round(eta, 1) if eta is not None else None,
            },
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            self._log_line(time.monotonic())
