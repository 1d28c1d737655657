"""Request bodies of the detection endpoints: multipart, JSON data URLs, or raw bytes."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from errors import BadRequest, InvalidInput, UnsupportedMedia

# The shape of the ids the API hands out (prefix_ULID), as for ids in paths: anything else (a lone
# surrogate, NUL, a path) is refused here rather than reaching the store or a blob key.
UPLOAD_ID = re.compile(r"[A-Za-z0-9_]{1,64}")


@dataclass(frozen=True)
class UploadReference:
    """``{"upload_id": ...}`` instead of the media: a file sent earlier with ``POST /v1/uploads``."""

    upload_id: str


def decode_data_url(value: str) -> bytes:
    """``data:image/jpeg;base64,...`` (camera frames), ``data:audio/...`` or bare base64."""
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if ";base64" not in header:
            raise InvalidInput("data URL must be base64-encoded", code="invalid_data_url")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"media is not valid base64: {exc}", code="invalid_base64") from exc


def content_type_of(request: Request) -> str:
    """The request's media type, lower case, without parameters."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_form(request: Request) -> FormData:
    """The multipart form (close it when done). Starlette refuses a body without a boundary, with
    broken framing or with too many parts as its own HTTPException (MultiPartException outside an
    app), which would reach the client under a code the error table does not list."""
    try:
        return await request.form(max_files=2, max_fields=20)
    except (HTTPException, MultiPartException) as exc:
        detail = exc.detail if isinstance(exc, HTTPException) else exc.message
        raise BadRequest(f"the multipart body does not parse: {detail}", code="invalid_multipart") from exc


async def read_json_object(request: Request) -> dict[str, Any]:
    """The JSON body, which must be an object."""
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors, and so is an integer past
        # Python's 4300-digit conversion limit, which the parser raises as a bare ValueError.
        raise BadRequest(f"body is not valid JSON: {exc}", code="invalid_json") from exc
    except RecursionError as exc:  # [[[[...]]]] deeper than the parser's stack
        raise BadRequest("body is JSON nested too deeply", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise InvalidInput("JSON body must be an object", code="invalid_input")
    return body


async def read_media_payload(request: Request, kind: str) -> bytes | UploadReference:
    """The media bytes from multipart (field ``kind`` or ``file``), JSON (``{kind: data URL}``)
    or a raw ``kind/*`` body, or a reference to an upload (JSON ``{"upload_id": ...}``); ``kind``
    is "image", "audio" or "video"."""
    fields = (kind, "file")
    content_type = content_type_of(request)
    if content_type == "multipart/form-data":
        form = await read_form(request)
        try:
            upload = next((form[k] for k in fields if isinstance(form.get(k), UploadFile)), None)
            if upload is None:
                raise InvalidInput(
                    f"multipart body needs a file field named '{kind}' (or 'file')", code="missing_file"
                )
            return await upload.read()
        finally:
            await form.close()
    if content_type == "application/json":
        body = await read_json_object(request)
        if "upload_id" in body and kind not in body:
            upload_id = body["upload_id"]
            if not isinstance(upload_id, str) or not UPLOAD_ID.fullmatch(upload_id):
                raise InvalidInput("upload_id must be the id POST /v1/uploads gave", code="invalid_upload_id")
            return UploadReference(upload_id)
        value = body.get(kind)
        if not isinstance(value, str) or not value:
            raise InvalidInput(
                f"JSON body needs '{kind}': a data URL or base64 string", code=f"missing_{kind}"
            )
        return decode_data_url(value)
    if content_type.startswith(f"{kind}/") or content_type == "application/octet-stream":
        return await request.body()
    raise UnsupportedMedia(
        f"unsupported request content type {content_type or '(none)'!r}; send multipart/form-data, "
        f"application/json with a data URL, or a raw {kind}/* body",
        code="unsupported_content_type",
    )
