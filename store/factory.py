"""Pick the store backend from settings (``VERITY_STORE``), never by code edits."""

from __future__ import annotations

from dataclasses import dataclass

from config import Settings
from store.base import JobStore, Store, ThrottleStore, UploadStore, WebhookStore


def make_store(settings: Settings) -> Store:
    if settings.store == "dynamodb":
        from store.dynamodb import DynamoDBStore

        return DynamoDBStore(settings.dynamodb_table, **_dynamodb_options(settings))
    from store.sqlite import SQLiteStore

    return SQLiteStore(settings.sqlite_path)


@dataclass(frozen=True)
class JobStores:
    """The stores of the jobs feature, one interface per kind of record, over the same database
    as the accounts (the SQLite file or the DynamoDB table)."""

    uploads: UploadStore
    jobs: JobStore
    webhooks: WebhookStore


def make_job_stores(settings: Settings) -> JobStores:
    if settings.store == "dynamodb":
        from store.dynamodb_jobs import DynamoJobs, DynamoUploads, DynamoWebhooks

        options = {**_dynamodb_options(settings), "create_table": False}  # the accounts store made it
        return JobStores(
            DynamoUploads(settings.dynamodb_table, **options),
            DynamoJobs(settings.dynamodb_table, **options),
            DynamoWebhooks(settings.dynamodb_table, **options),
        )
    from store.sqlite_jobs import SQLiteJobs, SQLiteUploads, SQLiteWebhooks

    return JobStores(
        SQLiteUploads(settings.sqlite_path),
        SQLiteJobs(settings.sqlite_path),
        SQLiteWebhooks(settings.sqlite_path),
    )


def _dynamodb_options(settings: Settings) -> dict:
    return {
        "region": settings.aws_region,
        "endpoint_url": settings.dynamodb_endpoint_url,
        "create_table": settings.dynamodb_create_table,
    }


def make_throttle_store(settings: Settings) -> ThrottleStore:
    """Counters of the unauthenticated routes, in the accounts' database."""
    if settings.store == "dynamodb":
        from store.dynamodb_throttles import DynamoThrottles

        return DynamoThrottles(
            settings.dynamodb_table, **{**_dynamodb_options(settings), "create_table": False}
        )
    from store.sqlite_throttles import SQLiteThrottles

    return SQLiteThrottles(settings.sqlite_path)
