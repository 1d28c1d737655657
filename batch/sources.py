"""An item's bytes as a file on this machine: a local path as it is, an S3 object downloaded into
a private temporary folder for as long as the item runs (``blobs.s3.S3Blobs``, the uploads'
backend: the same client settings, ``VERITY_AWS_REGION`` and ``VERITY_S3_ENDPOINT_URL``)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from batch.usage import UsageError
from blobs.s3 import S3Blobs
from config import Settings
from errors import NotFound, ServiceUnavailable


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


class Sources:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._buckets: dict[str, S3Blobs] = {}
        # boto3's default session is not safe to make clients from on several threads at once.
        self._lock = threading.Lock()

    def _bucket(self, bucket: str) -> S3Blobs:  # one client per bucket, made once
        with self._lock:
            if bucket not in self._buckets:
                self._buckets[bucket] = S3Blobs(
                    bucket, region=self.settings.aws_region, endpoint_url=self.settings.s3_endpoint_url
                )
            return self._buckets[bucket]

    def s3_client(self, bucket: str) -> Any:
        """The boto3 S3 client this run uses for ``bucket`` (the results' writer shares it)."""
        return self._bucket(bucket).client

    @contextlib.contextmanager
    def local_file(self, source: str) -> Iterator[Path]:
        """The item's file while the context lasts; ``file_not_found`` when there is none.
        Blocking (an S3 download): enter and leave it on a worker thread."""
        if not source.startswith("s3://"):
            path = Path(source)
            if not path.is_file():
                raise NotFound(f"no file at {source}", code="file_not_found")
            yield path
            return
        bucket, key = split_s3(source)
        blobs = self._bucket(bucket)
        if blobs.size(key) is None:  # a 404 (or a 403 without list rights): nothing to read there
            raise NotFound(f"no object at {source}", code="file_not_found")
        with blobs.local_copy(key) as path:
            yield path

    def list_prefix(self, location: str) -> list[tuple[str, str]]:
        """(id, uri) of every object under the prefix ``location`` (a folder: ``s3://b/media`` is
        ``s3://b/media/``), ids relative to it, sorted; folder markers and hidden names skipped."""
        bucket, prefix = split_s3(location)
        if not bucket:
            raise UsageError(f"--input {location}: no bucket named")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        found: list[tuple[str, str]] = []
        try:
            pages = self._bucket(bucket).client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=bucket, Prefix=prefix):
                for entry in page.get("Contents", []):
                    item_id = entry["Key"][len(prefix) :]
                    if item_id and not item_id.endswith("/") and not _hidden(item_id):
                        found.append((item_id, f"s3://{bucket}/{entry['Key']}"))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
                raise UsageError(f"--input {location}: no such bucket") from None
            raise ServiceUnavailable(f"cannot list {location}: {exc}", code="blobs_unavailable") from exc
        except BotoCoreError as exc:
            raise ServiceUnavailable(f"cannot list {location}: {exc}", code="blobs_unavailable") from exc
        return sorted(found)


def _hidden(item_id: str) -> bool:
    return any(part.startswith(".") for part in item_id.split("/"))
