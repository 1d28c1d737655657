"""S3 blobs: presigned browser POSTs straight to the bucket, so large media never passes through
the API (nor Lambda's 6 MB payload limit).

The policy S3 enforces for each form: the exact object key (under the owner's prefix), the exact
``Content-Type``, a ``content-length-range`` of 1..``max_bytes`` and an expiry.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from blobs.base import BlobStore, UploadForm
from config import Settings
from errors import ServiceUnavailable

log = logging.getLogger(__name__)

TEMP_PREFIX = "verity-blob-"
# Without s3:ListBucket, S3 answers a missing object with 403 rather than 404 (the worker's role
# has no list permission on purpose): both mean "nothing was uploaded there".
_MISSING = {"404", "403", "NoSuchKey", "NotFound", "AccessDenied"}


class S3Blobs(BlobStore):
    def __init__(self, bucket: str, *, region: str, endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        config = Config(signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"})
        self.client = boto3.client("s3", region_name=region, endpoint_url=endpoint_url, config=config)

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Blobs:
        if not settings.s3_bucket:
            raise ValueError("VERITY_BLOBS=s3 needs VERITY_S3_BUCKET")
        return cls(settings.s3_bucket, region=settings.aws_region, endpoint_url=settings.s3_endpoint_url)

    def upload_form(
        self, key: str, *, content_type: str, max_bytes: int, expires_at: float, base_url: str
    ) -> UploadForm:
        import time

        expires_in = max(1, int(expires_at - time.time()))
        try:
            post = self.client.generate_presigned_post(
                Bucket=self.bucket,
                Key=key,
                Fields={"Content-Type": content_type},
                Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
                ExpiresIn=expires_in,
            )
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable(f"cannot sign an upload form: {exc}", code="blobs_unavailable") from exc
        return UploadForm(url=post["url"], fields={k: str(v) for k, v in post["fields"].items()})

    def size(self, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise ServiceUnavailable(f"S3 error: {exc}", code="blobs_unavailable") from exc
        except BotoCoreError as exc:
            raise ServiceUnavailable(f"S3 unreachable: {exc}", code="blobs_unavailable") from exc

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        workdir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
        try:
            target = workdir / "media"  # never the user's file name
            try:
                self.client.download_file(self.bucket, key, str(target))  # streamed to disk
            except (BotoCoreError, ClientError) as exc:
                raise ServiceUnavailable(
                    f"cannot read the upload from S3: {exc}", code="blobs_unavailable"
                ) from exc
            yield target
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            log.warning("could not delete s3://%s/%s: %s", self.bucket, key, exc)
