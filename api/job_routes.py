"""Uploads, jobs and the webhook secret: long media the asynchronous way.

1. ``POST /v1/uploads`` -> a signed form (S3 presigned POST, or the same shape pointed at
   ``POST /v1/uploads/local`` on this service) for one file of a declared type and size.
2. The client posts the file with that form, straight to S3 or to the service.
3. ``POST /v1/jobs`` with the upload id -> 202 and a queued job; a worker runs it;
   ``GET /v1/jobs/{id}`` shows status, progress and the result; a webhook tells when it is done.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from api.account_routes import DetectPrincipal, KeysPrincipal, ReadPrincipal, RecordId, StrictBody, run
from api.openapi import error_responses
from api.upload_form import receive_form
from blobs.base import upload_key
from blobs.local import LOCAL_UPLOAD_PATH, LocalBlobs
from detect.files import check_models, parse_options
from errors import (
    Conflict,
    InvalidInput,
    NotFound,
    ServiceUnavailable,
    TooLarge,
)
from jobs.backend import JobsBackend, iso_now, job_document
from jobs.queue import message
from store.ids import new_id
from store.records import Job, Upload, iso_epoch
from webhooks.signing import new_secret
from webhooks.targets import check_webhook_url

log = logging.getLogger(__name__)

router = APIRouter(responses=error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503))

# Declared types an upload may have; the job checks the bytes themselves (magic numbers).
UPLOAD_TYPES: dict[str, str] = {
    **{t: "image" for t in ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff")},
    **{
        t: "video"
        for t in ("video/mp4", "video/quicktime", "video/x-msvideo", "video/webm", "video/x-matroska")
    },
    **{
        t: "audio"
        for t in (
            "audio/wav",
            "audio/x-wav",
            "audio/wave",
            "audio/mpeg",
            "audio/flac",
            "audio/x-flac",
            "audio/ogg",
            "audio/mp4",
            "audio/x-m4a",
            "audio/aac",
        )
    },
}
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def backend_of(request: Request) -> JobsBackend:
    backend = getattr(request.app.state, "jobs", None)
    if backend is None:
        raise ServiceUnavailable("the service is starting", code="starting")
    return backend


# --- uploads ---------------------------------------------------------------------------------------


class UploadRequest(StrictBody):
    filename: str = Field(
        min_length=1, max_length=255, description="shown back to you only; never a path or key"
    )
    content_type: str = Field(max_length=100, description="the exact Content-Type the form will require")
    size: int = Field(ge=1, description="bytes you will send: the form accepts 1..size")
    keep: bool = Field(False, description="keep the media after its job (until the retention ends)")


@router.post("/v1/uploads", status_code=201, tags=["uploads"])
async def create_upload(body: UploadRequest, request: Request, principal: DetectPrincipal) -> dict[str, Any]:
    """A signed form for one upload: POST `fields` and then the file (field `file`, last) as
    multipart/form-data to `url`."""
    backend = backend_of(request)
    settings = backend.settings
    content_type = body.content_type.strip().lower()
    if content_type not in UPLOAD_TYPES:
        raise InvalidInput(
            f"content_type {body.content_type!r} is not one of {sorted(UPLOAD_TYPES)}",
            code="unsupported_upload_type",
        )
    if body.size > settings.max_upload_bytes:
        raise TooLarge(
            f"an upload of {body.size} bytes is over the limit of {settings.max_upload_bytes}",
            code="upload_too_large",
        )
    now = backend.clock()
    upload_id = new_id("upl")
    key = upload_key(settings.upload_prefix, principal.user_id, upload_id)
    form_expires = now + settings.upload_url_ttl_s
    upload = Upload(
        id=upload_id,
        user_id=principal.user_id,
        created_at=iso_now(),
        expires_at=now + max(settings.upload_retention_s, settings.upload_url_ttl_s),
        blob_key=key,
        filename=body.filename,
        content_type=content_type,
        max_bytes=body.size,
        keep=body.keep,
    )
    base_url = settings.public_url or str(request.base_url)
    form = await run(
        backend.blobs.upload_form,
        key,
        content_type=content_type,
        max_bytes=body.size,
        expires_at=form_expires,
        base_url=base_url,
    )
    await run(backend.stores.uploads.add_upload, upload)
    return {
        "upload_id": upload_id,
        "method": "POST",
        "url": form.url,
        "fields": form.fields,
        "expires_at": iso_epoch(form_expires),
        "max_bytes": body.size,
        "modality": UPLOAD_TYPES[content_type],
    }


@router.post(LOCAL_UPLOAD_PATH, status_code=204, tags=["uploads"], responses=error_responses(400, 403, 413))
async def receive_local_upload(request: Request) -> Response:
    """The target of local upload forms (``VERITY_BLOBS=local``), authorised by the form's
    signature, not by a key: the fields first, the file (field `file`) last, as S3 takes them."""
    backend = backend_of(request)
    blobs = backend.blobs
    if not isinstance(blobs, LocalBlobs):
        raise NotFound(
            "this service keeps uploads in S3: post the form to the url it gave", code="route_not_found"
        )
    await receive_form(request, backend, blobs)
    return Response(status_code=204)


# --- jobs ------------------------------------------------------------------------------------------


class JobRequest(StrictBody):
    upload_id: str = Field(max_length=64)
    modality: Literal["image", "video", "audio"]
    options: dict[str, Any] = Field(default_factory=dict)
    webhook_url: str | None = Field(None, max_length=2048)


def _options(request: Request, body: JobRequest) -> dict[str, Any]:
    settings = backend_of(request).settings
    options = parse_options(body.modality, body.options, max_frames_cap=settings.job_video_max_frames_cap)
    engine = getattr(request.app.state, "engine", None)
    if engine is not None:
        check_models(engine, body.modality, options)  # unknown model: 404 now, not later
    return options


@router.post("/v1/jobs", status_code=202, tags=["jobs"])
async def submit_job(
    body: JobRequest,
    request: Request,
    principal: DetectPrincipal,
    idempotency_key: Annotated[
        str | None, Header(description="the same key and body answer the same job; another body is a 409")
    ] = None,
) -> JSONResponse:
    backend = backend_of(request)
    settings = backend.settings
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise InvalidInput(
            "Idempotency-Key must be 1-255 printable ASCII characters", code="invalid_idempotency_key"
        )
    options = _options(request, body)
    if body.webhook_url is not None:
        check_webhook_url(body.webhook_url, settings.webhook_allowed_hosts)
        if await run(backend.stores.webhooks.get_secret, principal.user_id) is None:
            raise Conflict(
                "create a webhook secret first (POST /v1/webhook-secret): every webhook is signed with it",
                code="webhook_secret_missing",
            )
    stores = backend.stores
    canonical = {**body.model_dump(), "options": options}
    now = iso_now()
    job = Job(
        id=new_id("job"),
        user_id=principal.user_id,
        created_at=now,
        updated_at=now,
        status="queued",
        modality=body.modality,
        upload_id=body.upload_id,
        options=options,
        max_attempts=settings.job_max_attempts,
        webhook_url=body.webhook_url,
        idempotency_key=idempotency_key,
        request_hash=hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest(),
    )
    # The job (and its Idempotency-Key) first: a replay must find its job even after that job
    # has finished and its upload is gone. Anything that fails below takes the job back out.
    stored, created = await run(stores.jobs.create_job, job)
    if not created:
        return _job_answer(stored, replayed=True)
    upload = None
    try:
        upload = await run(
            lambda: stores.uploads.get_upload(principal.user_id, body.upload_id, now=backend.clock())
        )
        if upload is None:
            raise NotFound(f"no upload {body.upload_id} of yours (or it expired)", code="upload_not_found")
        if upload.job_id is None and await run(backend.blobs.size, upload.blob_key) is None:
            raise Conflict(
                "nothing was uploaded yet: post the file with the upload's form first",
                code="upload_incomplete",
            )
        if not await run(stores.uploads.attach_upload, principal.user_id, upload.id, job.id):
            raise Conflict(f"upload {upload.id} belongs to another job already", code="upload_in_use")
        backend.queue.send(message("job", principal.user_id, job.id))
    except Exception:
        if upload is not None:
            await run(stores.uploads.detach_upload, principal.user_id, upload.id, job.id)
        await run(stores.jobs.delete_job, principal.user_id, job.id)
        raise
    log.info("job %s queued for upload %s", job.id, upload.id)
    return _job_answer(job, replayed=False)


def _job_answer(job: Job, *, replayed: bool) -> JSONResponse:
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(job_document(job), status_code=202, headers=headers)


async def _owned_job(backend: JobsBackend, user_id: str, job_id: str) -> Job:
    job = await run(backend.stores.jobs.get_job, user_id, job_id)
    if job is None:
        raise NotFound(f"no job {job_id} of yours", code="job_not_found")
    return job


@router.get("/v1/jobs/{job_id}", tags=["jobs"])
async def get_job(job_id: RecordId, request: Request, principal: ReadPrincipal) -> dict[str, Any]:
    backend = backend_of(request)
    job = await _owned_job(backend, principal.user_id, job_id)
    deliveries = (
        await run(backend.stores.webhooks.list_deliveries, principal.user_id, job_id)
        if job.webhook_url
        else []
    )
    return job_document(job, deliveries)


@router.get("/v1/jobs", tags=["jobs"])
async def list_jobs(
    request: Request,
    principal: ReadPrincipal,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    page = await run(backend_of(request).stores.jobs.list_jobs, principal.user_id, limit, cursor)
    items = [{k: v for k, v in job_document(j).items() if k != "result"} for j in page.items]
    return {"items": items, "next_cursor": page.next_cursor}


@router.delete("/v1/jobs/{job_id}", tags=["jobs"])
async def cancel_job(job_id: RecordId, request: Request, principal: DetectPrincipal) -> dict[str, Any]:
    """Cancel a queued or running job (a running one stops being tracked at once; its result, if
    it still comes, is dropped). A finished job is answered unchanged."""
    backend = backend_of(request)
    job = await run(backend.stores.jobs.cancel_job, principal.user_id, job_id, iso_now())
    if job is None:
        raise NotFound(f"no job {job_id} of yours", code="job_not_found")
    if job.status == "canceled":
        await run(backend.notify, job)
        upload = await run(
            lambda: backend.stores.uploads.get_upload(principal.user_id, job.upload_id, now=backend.clock())
        )
        if upload is not None and not upload.keep:
            await run(backend.blobs.delete, upload.blob_key)
            await run(backend.stores.uploads.delete_upload, principal.user_id, upload.id)
    return job_document(job)


# --- webhook secret --------------------------------------------------------------------------------


@router.post("/v1/webhook-secret", status_code=201, tags=["webhooks"])
async def rotate_webhook_secret(request: Request, principal: KeysPrincipal) -> dict[str, Any]:
    """A new `whsec_` secret for this account's webhooks, shown once; the previous one stops
    signing at once. A secret like a key: it needs the `keys` scope."""
    secret = new_secret()
    await run(backend_of(request).stores.webhooks.set_secret, principal.user_id, secret, iso_now())
    return {
        "secret": secret,
        "scheme": "Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature (v1,<HMAC-SHA256>)",
        "note": "shown once: store it now",
    }
