"""Settings for a process that is starting: a bad or missing setting stops it in plain words.

Every entry point (the server in ``service.py``, ``python -m models``, ``python -m auth``) starts
here. A settings error raised deep inside an import reaches BentoML's loader, which hides it
behind "Failed to import module ..." and, on a worker, restarts the process in a loop; a
``SystemExit`` with the reason is printed as is and ends the process with status 1 instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TypeVar

from pydantic import ValidationError

from config.settings import Settings, get_settings, without_auth

T = TypeVar("T")


class StartupError(Exception):
    """A setting (or what it points at) makes starting impossible; the message says what to do."""


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the environment variable rather than pydantic's field path."""
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error.get("loc", ()) if part != "__root__")
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        lines.append(f"VERITY_{field.upper()}: {message}" if field else message)
    return "; ".join(lines)


def check_store_credentials(settings: Settings) -> None:
    """DynamoDB, S3 and SQS need AWS credentials even for a local endpoint (moto, DynamoDB Local),
    which accepts any values. Without them every store call fails, and a server would keep
    restarting its worker; say so once, before anything starts."""
    uses = [
        (name, endpoint)
        for name, used, endpoint in (
            ("VERITY_STORE=dynamodb", settings.store == "dynamodb", settings.dynamodb_endpoint_url),
            ("VERITY_BLOBS=s3", settings.blobs == "s3", settings.s3_endpoint_url),
            ("VERITY_QUEUE=sqs", settings.queue == "sqs", settings.sqs_endpoint_url),
        )
        if used
    ]
    if not uses:
        return
    import boto3

    if boto3.session.Session().get_credentials() is None:
        name, endpoint = uses[0]
        where = (
            f"the local endpoint {endpoint} accepts any values, e.g. "
            "AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local"
            if endpoint
            else "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with an IAM role"
        )
        raise StartupError(f"{name} needs AWS credentials and none were found: {where}")


def startup_or_exit(step: Callable[[], T]) -> T:
    """``step()``, or ``SystemExit`` (status 1) with its ``StartupError`` in plain words."""
    try:
        return step()
    except StartupError as exc:
        raise SystemExit(f"Verity cannot start: {exc}") from None


def _settings(check_store: bool, serves_auth: bool) -> Settings:
    try:
        with contextlib.nullcontext() if serves_auth else without_auth():
            settings = get_settings()
    except ValidationError as exc:
        raise StartupError(describe_validation_error(exc)) from None
    if check_store:
        check_store_credentials(settings)
    return settings


def settings_or_exit(*, check_store: bool = True, serves_auth: bool = True) -> Settings:
    """The process's settings, or ``SystemExit`` (status 1) with the reason in plain words
    (Python prints a SystemExit's message on stderr, whether or not logging is set up yet).
    ``serves_auth=False``: for a process that never issues or checks a token (``python -m
    batch``), which then runs in production without VERITY_JWT_SECRET."""
    return startup_or_exit(lambda: _settings(check_store, serves_auth))
