"""What the OpenAPI document says a route can answer besides success, in the one error shape.

Routes return ``JSONResponse`` themselves and errors come from ``errors.VerityError`` (or the
middlewares), so these declarations are the contract a client is generated from; the schemathesis
test (tests/http/test_openapi_contract.py) checks the app keeps to them.
"""

from __future__ import annotations

from typing import Any

from errors import ErrorBody

WHEN = {
    400: "the body is not valid JSON",
    401: "no or bad credentials",
    403: "account disabled, or an admin route without the admin role",
    404: "no such route, model or record of yours",
    405: "the route exists for other methods (see Allow)",
    409: "already exists",
    413: "too large: body, file, pixels or duration",
    415: "not an allowed format",
    422: "corrupt media, a bad parameter or body field",
    429: "a quota is reached (Retry-After, RateLimit-*)",
    503: "starting, or a model or the store is unavailable (Retry-After)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": WHEN[status]} for status in statuses}


DETECT_ERRORS = error_responses(400, 401, 403, 404, 413, 415, 422, 429, 503)
ACCOUNT_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)


def media_request_body(field: str, media_types: str) -> dict[str, Any]:
    """The three ways a detect route takes its media (api/payload.py reads the request itself,
    so FastAPI cannot infer them): multipart, a JSON data URL, or the raw bytes."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {field: {"type": "string", "format": "binary"}},
                        "required": [field],
                        "description": f"the file under `{field}` (or `file`)",
                    }
                },
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            field: {
                                "type": "string",
                                "description": f"data:{field}/...;base64,... or plain base64",
                            },
                            "upload_id": {
                                "type": "string",
                                "maxLength": 64,
                                "description": "instead of the media: a file sent with POST /v1/uploads",
                            },
                        },
                        "anyOf": [{"required": [field]}, {"required": ["upload_id"]}],
                    }
                },
                media_types: {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }


def text_request_body() -> dict[str, Any]:
    """``POST /v1/detect/text``'s body (api/text_payload.py reads the request itself)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"text": {"type": "string", "description": "the text, as UTF-8 JSON"}},
                        "required": ["text"],
                    }
                },
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                        "description": "a UTF-8 .txt or .md file under `file` (or `text`)",
                    }
                },
                "text/plain": {"schema": {"type": "string"}},
            },
        }
    }
