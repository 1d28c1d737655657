"""AWS Lambda entry point: ``infra.aws_lambda.handler.http`` behind API Gateway (HTTP API payload
v2, REST API v1 with binary media types) or a Lambda Function URL.

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

import logging

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
