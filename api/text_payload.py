"""The body of ``POST /v1/detect/text``: JSON ``{"text": ...}``, a multipart file (field ``file`` or
``text``: a UTF-8 ``.txt`` or ``.md``), a multipart form field ``text``, or a raw ``text/plain`` /
``text/markdown`` body; the text itself is checked by ``media/text.py``. A body over the route's
cap is refused (413) before it is read, by the body-size middleware.
"""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request

from api.payload import content_type_of, read_form, read_json_object
from config import Settings
from errors import InvalidInput, UnsupportedMedia
from media.text import TextPayload, checked_text, format_of, text_from_bytes


async def read_text_payload(request: Request, settings: Settings) -> TextPayload:
    content_type = content_type_of(request)
    if content_type == "multipart/form-data":
        form = await read_form(request)
        try:
            for field in ("file", "text"):
                value = form.get(field)
                if isinstance(value, UploadFile):
                    return text_from_bytes(
                        await value.read(), settings, text_format=format_of(value.filename)
                    )
                if isinstance(value, str):
                    return checked_text(value, settings)
            raise InvalidInput(
                "multipart body needs a file field named 'file' (or 'text')", code="missing_file"
            )
        finally:
            await form.close()
    if content_type == "application/json":
        body = await read_json_object(request)
        if not isinstance(body.get("text"), str):
            raise InvalidInput('JSON body needs "text": a string', code="missing_text")
        return checked_text(body["text"], settings, text_format=format_of(str(body.get("filename") or "")))
    if content_type in ("text/plain", "text/markdown"):
        return text_from_bytes(
            await request.body(),
            settings,
            text_format="markdown" if content_type == "text/markdown" else "text",
        )
    raise UnsupportedMedia(
        f"unsupported request content type {content_type or '(none)'!r}; send application/json "
        '({"text": ...}), multipart/form-data with a .txt or .md file, or a text/plain body',
        code="unsupported_content_type",
    )
