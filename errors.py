"""Errors that carry their HTTP status.

Every failure a client can cause is one of these; ``api.app`` maps them to the single JSON error
shape ``{"error": {"code", "message", "request_id"}}``. Anything else reaching the handler is a
bug and becomes a 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, Field


class VerityError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.headers = headers or {}
        self.details = details or {}


class BadRequest(VerityError):
    status, code = 400, "bad_request"


class NotFound(VerityError):
    status, code = 404, "not_found"


class MethodNotAllowed(VerityError):
    status, code = 405, "method_not_allowed"


class TooLarge(VerityError):
    status, code = 413, "payload_too_large"


class UnsupportedMedia(VerityError):
    status, code = 415, "unsupported_media_type"


class BadMedia(VerityError):
    """The bytes claim a supported type but cannot be decoded (truncated, corrupt, empty)."""

    status, code = 422, "invalid_media"


class InvalidInput(VerityError):
    status, code = 422, "invalid_input"


class ServiceUnavailable(VerityError):
    status, code = 503, "service_unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 5, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.headers.setdefault("Retry-After", str(retry_after_s))


class ModelError(Exception):
    """Raised by the export side; not an HTTP error."""


class ParityError(ModelError):
    """An export disagrees with its source framework beyond the stated tolerance."""

    def __init__(self, model_id: str, max_abs_diff: float, tolerance: float, where: str) -> None:
        super().__init__(
            f"{model_id}: ONNX output differs from the source model by {max_abs_diff:.3g} "
            f"(tolerance {tolerance:.3g}) at {where}"
        )
        self.model_id = model_id
        self.max_abs_diff = max_abs_diff
        self.tolerance = tolerance
        self.where = where


class Unauthorized(VerityError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.headers.setdefault("WWW-Authenticate", 'Bearer realm="verity"')


class Forbidden(VerityError):
    status, code = 403, "forbidden"


class Conflict(VerityError):
    status, code = 409, "conflict"


class QuotaExceeded(VerityError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, *, kind: str | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        # What refused the request, for verity_quota_rejections_total (metrics.QUOTA_KINDS): the
        # code tells the user's own limits apart; the auth throttles name theirs.
        self.kind = kind or {"daily_quota_exceeded": "daily", "login_locked": "login_locked"}.get(
            self.code, "per_minute"
        )


class StoreUnavailable(ServiceUnavailable):
    """The account store failed: fail closed, never a free pass."""

    code = "store_unavailable"


class ErrorDetail(BaseModel):
    code: str = Field(description="one of the codes in ERROR_CODES")
    message: str
    request_id: str | None = Field(description="also in the x-request-id response header")
    details: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    """Every error: ``{"error": {"code", "message", "request_id"}}`` (the OpenAPI schema)."""

    error: ErrorDetail


def error_document(
    code: str, message: str, request_id: str | None, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The one JSON error shape, for the app's handlers and the middlewares alike."""
    error: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if details:
        error["details"] = details
    return {"error": error}


# Outages are reported to the client in these words; the driver's own message (SQLite's, boto's:
# table names, endpoints, paths) goes to the log with the request id.
PUBLIC_MESSAGES = {
    "store_unavailable": "the store does not answer; retry shortly",
    "blobs_unavailable": "the upload storage does not answer; retry shortly",
    "queue_unavailable": "the jobs queue does not answer; retry shortly",
}


def public_message(exc: VerityError) -> str:
    """What the client reads of ``exc``: its message, or for an outage a fixed sentence."""
    public = PUBLIC_MESSAGES.get(exc.code)
    if public is None:
        return exc.message
    logging.getLogger("errors").warning("%s: %s", exc.code, exc.message)
    return public


def note_error(scope: dict[str, Any], code: str, exc: Exception | None = None) -> None:
    """Leave the code of the error being answered (and a 429's kind) in the request's state: the
    metrics middleware (``api.middleware.MetricsMiddleware``) counts it once the answer is sent.
    Both renderers call this, the app's handlers (``api.app.error_response``) and ``send_error``."""
    state = scope.setdefault("state", {})
    state["error_code"] = code
    if isinstance(exc, QuotaExceeded):
        state["quota_kind"] = exc.kind


async def send_error(
    scope: dict[str, Any],
    send: Callable[[dict[str, Any]], Awaitable[None]],
    exc: VerityError,
    extra_headers: dict[str, str] | None = None,
) -> None:
    """Answer ``exc`` from plain ASGI middleware (before any route runs), in the same shape."""
    note_error(scope, exc.code, exc)
    request_id = scope.get("state", {}).get("request_id")
    body = json.dumps(error_document(exc.code, public_message(exc), request_id, exc.details)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in {**exc.headers, **(extra_headers or {})}.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# Every error code a client can receive: code -> (status, when). The README's error table is
# rendered from this (`python -m errors`), and tests/unit/test_error_table.py checks that every
# code the code base can raise is listed here with its status, and that nothing listed is stale.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "the body is not valid JSON"),
    "invalid_upload_form": (
        400,
        "the upload form is not multipart or does not parse, lacks its `file` field (last) or has too many "
        "fields",
    ),
    "invalid_multipart": (
        400,
        "a multipart body that does not parse: no boundary, broken framing, too many parts or fields",
    ),
    "unauthenticated": (401, "no `x-api-key` and no `Authorization: Bearer`"),
    "invalid_api_key": (401, "unknown key, or a typo (refused by its checksum before any lookup)"),
    "revoked_api_key": (401, "the key was revoked or rolled past its grace period"),
    "invalid_stream_token": (401, "a stream without a valid, unused token of `POST /v1/stream/token`"),
    "invalid_token": (401, "bad signature, issuer, audience, algorithm or claims"),
    "token_expired": (401, "the JWT's `exp` has passed"),
    "token_not_yet_valid": (401, "the JWT's `nbf`/`iat` lies in the future"),
    "invalid_credentials": (401, "wrong email or password at login"),
    "account_disabled": (403, "an admin disabled the account (its keys and tokens stop at once)"),
    "admin_only": (403, "an admin route without the admin role"),
    "insufficient_scope": (
        403,
        "the API key lacks the scope the route needs (`detect`, `read`, `keys`, `admin`), or asks to "
        "grant one it lacks",
    ),
    "signup_closed": (403, "`VERITY_SIGNUP_POLICY=closed`: no new accounts"),
    "invite_invalid": (403, "`VERITY_SIGNUP_POLICY=invite` and no valid, unexpired invite for this email"),
    "upload_signature_invalid": (
        403,
        "a local upload form whose policy or signature was altered or is missing",
    ),
    "upload_policy_violation": (
        403,
        "a local upload form whose key or Content-Type differs from what its policy signed",
    ),
    "upload_expired": (403, "the upload form (or its upload) has expired: ask for a new one"),
    "file_unreadable": (403, "(batch) an item's file exists but cannot be read (permissions, I/O error)"),
    "route_not_found": (404, "no such route"),
    "model_not_found": (404, "`model=` names no catalog model"),
    "key_not_found": (404, "no such key among yours"),
    "detection_not_found": (404, "no such result in your history"),
    "user_not_found": (404, "admin: no such user"),
    "upload_not_found": (404, "no such upload of yours (or it expired)"),
    "job_not_found": (404, "no such job of yours"),
    "file_not_found": (404, "(batch) an item's path or S3 object does not exist"),
    "method_not_allowed": (405, "the route exists for other methods (listed in `Allow`)"),
    "email_taken": (409, "the email is already registered (signups are throttled per address)"),
    "too_many_keys": (409, "the account holds `VERITY_MAX_KEYS_PER_USER` unrevoked keys already"),
    "upload_incomplete": (409, "a job for an upload whose file was never sent"),
    "upload_in_use": (409, "the upload already belongs to another job"),
    "idempotency_key_reused": (409, "the Idempotency-Key was used before with a different body"),
    "webhook_secret_missing": (409, "a `webhook_url` before any `POST /v1/webhook-secret`"),
    "payload_too_large": (413, "the body is over the route's cap, refused before it is read"),
    "file_too_large": (413, "the media is over its byte cap (image 10 MB, audio 20 MB, video 32 MB)"),
    "text_too_long": (
        413,
        "the text is over VERITY_MAX_TEXT_BYTES bytes or VERITY_MAX_TEXT_CHARS characters",
    ),
    "upload_too_large": (
        413,
        "an upload over `VERITY_MAX_UPLOAD_BYTES`, or a file over its form's declared size",
    ),
    "too_many_pixels": (413, "width × height over the cap (decompression bombs)"),
    "audio_too_long": (413, "audio longer than the duration cap (checked from the header first)"),
    "too_many_samples": (413, "decoded audio would exceed the duration cap"),
    "video_too_long": (413, "video longer than the duration cap"),
    "too_many_frames": (413, "the video holds more frames per second than its duration cap allows"),
    "unsupported_media_type": (415, "not an allowed format for the route, by its magic bytes"),
    "unsupported_content_type": (415, "a request content type the route does not take"),
    "not_text": (415, "text detection got a binary file (NUL bytes, or a picture, sound or video)"),
    "invalid_text_encoding": (415, "the text is not UTF-8 (or holds an unpaired surrogate)"),
    "decoder_unavailable": (415, "the server lacks the tool this format needs (ffmpeg)"),
    "invalid_input": (422, "a bad query parameter or body field (the message names it)"),
    "invalid_email": (422, "not an email address"),
    "weak_password": (422, "a password under 8 characters"),
    "password_too_long": (422, "a password over 72 bytes (bcrypt's limit)"),
    "invalid_key_name": (422, "a key name over 64 characters"),
    "invalid_scope": (422, "a key scope that does not exist, none at all, or `admin` for a non-admin"),
    "unsupported_upload_type": (422, "an upload `content_type` that is not an image, video or audio type"),
    "invalid_upload_id": (422, "a malformed `upload_id`, or one where an upload key is made"),
    "invalid_idempotency_key": (422, "an Idempotency-Key that is not 1-255 printable ASCII characters"),
    "modality_mismatch": (422, "(job error) the uploaded bytes are not of the job's modality"),
    "invalid_grace": (422, "a roll grace period out of range"),
    "missing_file": (422, "a multipart body without the media field"),
    "missing_text": (422, 'a JSON body without a "text" string'),
    "empty_text": (422, "the text is empty or only whitespace"),
    "missing_image": (422, "a JSON body without `image`"),
    "missing_audio": (422, "a JSON body without `audio`"),
    "missing_video": (422, "a JSON body without `video`"),
    "invalid_frame": (422, 'a stream message that is neither an image nor `{"frame": "data:..."}`'),
    "invalid_base64": (422, "the data URL or base64 string does not decode"),
    "invalid_data_url": (422, "a `data:` URL that is not base64-encoded"),
    "model_not_served": (422, "the model is in the catalog but not served here"),
    "operating_point_unavailable": (
        422,
        "the model has no calibration, so no operating point: it decides at its catalog threshold",
    ),
    "invalid_fps": (422, "`fps` out of range"),
    "invalid_max_frames": (422, "`max_frames` over the cap"),
    "invalid_webhook_url": (422, "a webhook URL that is not https, has credentials, no host or is too long"),
    "webhook_target_refused": (422, "a webhook URL whose host is loopback, private, link-local or metadata"),
    "empty_file": (422, "the media is empty"),
    "corrupt_image": (422, "a truncated or corrupt image"),
    "corrupt_audio": (422, "truncated or corrupt audio"),
    "corrupt_video": (422, "a truncated or corrupt video"),
    "decode_failed": (422, "the decoder crashed or answered nonsense (a corrupt or hostile file)"),
    "decode_timeout": (422, "decoding took longer than its time limit"),
    "bad_sample_rate": (422, "an absurd sample rate in the audio header"),
    "bad_channels": (422, "a channel count outside 1-32 in the audio header"),
    "invalid_samples": (422, "audio samples that are NaN or infinite"),
    "too_short": (422, "audio under 0.5 s"),
    "no_audio": (422, "the file holds no audio stream"),
    "no_video": (422, "the file holds no video stream"),
    "no_frames": (422, "no frame could be decoded"),
    "daily_quota_exceeded": (429, "the daily limit is reached (resets at midnight UTC)"),
    "rate_limited": (429, "the endpoint's per-minute limit is reached"),
    "login_locked": (429, "repeated failed logins locked the email for a while (doubling, at most an hour)"),
    "starting": (503, "the service is still starting"),
    "signing_unavailable": (503, "this service has no key to sign results (GET /.well-known/jwks.json)"),
    "not_ready": (503, "`/health/ready`: models not loaded yet, or the store does not answer"),
    "model_unavailable": (503, "a model service is down, restarting or overloaded"),
    "modality_unavailable": (503, "no model of that modality is served here"),
    "faces_unavailable": (503, "`faces=auto` or video, but no face model is served"),
    "store_unavailable": (503, "the account store is down: fail closed, never a free pass"),
    "auth_busy": (503, "too many password checks already wait: retry shortly"),
    "issuer_unavailable": (
        503,
        "an external issuer's JWKS cannot be fetched and no cached key fits the token: retry shortly",
    ),
    "server_busy": (
        503,
        "too many audio, video or explain requests already run or wait: retry after `Retry-After`",
    ),
    "blobs_unavailable": (503, "the blob store (S3) does not answer"),
    "queue_unavailable": (503, "the jobs queue (SQS) does not answer"),
    "internal_error": (500, "a bug, never bad input: please report it with the request id"),
}


def error_table_markdown() -> str:
    """The README's error table, one row per code."""
    rows = ["| status | code | when |", "|---|---|---|"]
    rows += [f"| {status} | `{code}` | {when} |" for code, (status, when) in ERROR_CODES.items()]
    return "\n".join(rows)


if __name__ == "__main__":
    import sys

    sys.stdout.write(error_table_markdown() + "\n")
