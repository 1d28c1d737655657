"""Pick the store backend from settings (``VERITY_STORE``), never by code edits."""

from __future__ import annotations

from config import Settings
from store.base import Store


def make_store(settings: Settings) -> Store:
    if settings.store == "dynamodb":
        from store.dynamodb import DynamoDBStore

        return DynamoDBStore(
            settings.dynamodb_table,
            region=settings.aws_region,
            endpoint_url=settings.dynamodb_endpoint_url,
            create_table=settings.dynamodb_create_table,
        )
    from store.sqlite import SQLiteStore

    return SQLiteStore(settings.sqlite_path)
