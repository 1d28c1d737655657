"""Pick the blob backend from settings (``VERITY_BLOBS``), never by code edits."""

from __future__ import annotations

from blobs.base import BlobStore
from config import Settings


def make_blobs(settings: Settings) -> BlobStore:
    if settings.blobs == "s3":
        from blobs.s3 import S3Blobs

        return S3Blobs.from_settings(settings)
    from blobs.local import LocalBlobs

    return LocalBlobs.from_settings(settings)
