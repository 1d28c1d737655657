"""AWS Lambda entry points: ``infra.aws_lambda.handler.http`` behind API Gateway (HTTP API payload
v2, REST API v1 with binary media types) or a Lambda Function URL, and
``infra.aws_lambda.handler.sqs`` for the jobs queue (batch size 1, partial batch failures).

The same FastAPI app as ``bentoml serve``, with its engine in this process: every served model is
an ONNX Runtime session opened once per container, at init (this module's import), not per
invocation. Mangum adapts the events; its lifespan handling is off, because it would run the
app's startup on every invocation, and nothing here needs one.

Every container has its own ``/tmp``, so accounts and quotas kept in SQLite there would differ
from one container to the next: in production the handler refuses to start unless
``VERITY_STORE=dynamodb``. Lambda's CPU follows its memory size: set
``VERITY_ORT_INTRA_OP_THREADS`` to the vCPUs it gives.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from mangum import Mangum

from api.app import create_inprocess_app
from config.startup import StartupError, settings_or_exit, startup_or_exit
from logs import configure_logging

log = logging.getLogger(__name__)


def _check_lambda_settings(environment: str, store: str) -> None:
    if environment == "production" and store != "dynamodb":
        raise StartupError(
            "on AWS Lambda every container has its own /tmp, so a SQLite store would give each one "
            "its own accounts and quotas: set VERITY_STORE=dynamodb"
        )


settings = settings_or_exit()
configure_logging(settings)
startup_or_exit(lambda: _check_lambda_settings(settings.environment, settings.store))
app = startup_or_exit(lambda: create_inprocess_app(settings))
http = Mangum(app, lifespan="off")


# One event loop for the container's life: the engine's limiters and the store clients outlive
# an invocation, as the models do.
_jobs_loop = asyncio.new_event_loop()


def sqs(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Handle SQS job and webhook messages. A message that asks to be retried later is re-sent
    with a delay and reported handled; one that raised is reported in ``batchItemFailures``, so
    SQS delivers it again after its visibility timeout (and to the DLQ after maxReceiveCount),
    while the batch's other messages are not repeated."""
    from jobs.runner import JobRunner

    runner = JobRunner(app.state.jobs, app.state.engine)
    failures = []
    for record in event.get("Records", []):
        try:
            body = json.loads(record["body"])
            outcome = _jobs_loop.run_until_complete(runner.handle(body))
            if outcome.retry_at is not None:
                app.state.jobs.queue.send(body, max(0.0, outcome.retry_at - app.state.jobs.clock()))
        except Exception:
            log.exception("SQS message %s failed; it will be delivered again", record.get("messageId"))
            failures.append({"itemIdentifier": record.get("messageId")})
    return {"batchItemFailures": failures}
