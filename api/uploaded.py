"""Detection routes on uploaded media (``{"upload_id": ...}`` instead of the bytes): the same
pipelines as jobs read the file where it lies (or its S3 copy), while the request waits.

An upload serves one use at a time: it is attached to the request (as it would be to a job) and
deleted afterwards unless the user asked to keep it; a kept upload is released for another use.
The inline duration caps apply (``VERITY_MAX_VIDEO_DURATION_S``, ``VERITY_MAX_AUDIO_DURATION_S``),
not the job ones: a longer file belongs in a job. The byte caps do not: that is what uploads are for.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from fastapi import Request

from api.account_routes import run
from api.job_routes import backend_of
from auth.principal import Principal
from errors import Conflict, NotFound

log = logging.getLogger(__name__)

Detect = Callable[[Path], Awaitable[dict[str, Any]]]


async def detect_uploaded(
    request: Request, principal: Principal, upload_id: str, detect: Detect
) -> dict[str, Any]:
    backend = backend_of(request)
    uploads = backend.stores.uploads
    upload = await run(lambda: uploads.get_upload(principal.user_id, upload_id, now=backend.clock()))
    if upload is None:
        raise NotFound(f"no upload {upload_id} of yours (or it expired)", code="upload_not_found")
    if await run(backend.blobs.size, upload.blob_key) is None:
        raise Conflict(
            "nothing was uploaded yet: post the file with the upload's form first", code="upload_incomplete"
        )
    holder = f"req_{request.scope.get('state', {}).get('request_id', 'sync')}"
    if not await run(uploads.attach_upload, principal.user_id, upload.id, holder):
        raise Conflict(f"upload {upload.id} is in use by a job or another request", code="upload_in_use")
    try:
        copy = backend.blobs.local_copy(upload.blob_key)
        path = await anyio.to_thread.run_sync(copy.__enter__)
        try:
            return await detect(path)
        finally:
            await anyio.to_thread.run_sync(copy.__exit__, None, None, None)
    finally:
        with anyio.CancelScope(shield=True):
            if upload.keep:
                await run(uploads.detach_upload, principal.user_id, upload.id, holder)
            else:
                await run(backend.blobs.delete, upload.blob_key)
                await run(uploads.delete_upload, principal.user_id, upload.id)
