"""JSON logging with the request id and the job id. ``logging`` everywhere, never ``print``.

``api.middleware.RequestIdMiddleware`` sets ``request_id_var`` for the whole of a request and
``jobs.runner.JobRunner`` sets ``job_id_var`` (``job_context``) while a job runs; contextvars
follow the request into its tasks and worker threads (``anyio.to_thread``, the decode pool copies
the context), so ``ContextFilter`` stamps both on every record, the ones of deep modules
(``detect/``, ``media/``) included, without any of them passing an id around.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TextIO

from config.settings import Settings

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)
_CONTEXT = (("request_id", request_id_var), ("job_id", job_id_var))

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


@contextlib.contextmanager
def job_context(job_id: str | None) -> Iterator[None]:
    """Every line logged inside carries ``job_id`` (tasks and threads started inside too)."""
    token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(token)


def stamp_context(record: logging.LogRecord) -> None:
    """Put the current request id and job id on ``record`` (an id given in ``extra`` wins)."""
    for name, var in _CONTEXT:
        if getattr(record, name, None) is None and (value := var.get()) is not None:
            setattr(record, name, value)


class ContextFilter(logging.Filter):
    """On a handler: every record it handles, propagated ones included, gets the ids of the
    context it was logged in (a logger's own filter would miss records of its children)."""

    def filter(self, record: logging.LogRecord) -> bool:
        stamp_context(record)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp_context(record)  # also behind a handler without ContextFilter (the batch runner's)
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def log_handler(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """The handler every Verity process logs through: JSON lines (or plain text) on ``stream``
    (stderr), each stamped with the request id and job id of its context."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if settings.log_json else logging.Formatter(TEXT_FORMAT))
    return handler


def configure_logging(settings: Settings) -> None:
    root = logging.getLogger()
    root.handlers[:] = [log_handler(settings)]
    root.setLevel(settings.log_level.upper())
