"""API Gateway HTTP API (payload format 2.0) event documents, for invoking the handler locally:
the benchmark's cold start (bench/lambda_cold.py) and the tests (tests/e2e/test_lambda.py).
A Lambda Function URL sends the same shape from its own domain."""

from __future__ import annotations

import base64
import uuid
from typing import Any

API_DOMAIN = "r3pmxmplak.execute-api.us-east-1.amazonaws.com"
FUNCTION_URL_DOMAIN = "abcdefg1234567890.lambda-url.us-east-1.on.aws"


def http_api_event(
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    query: str = "",
    domain: str = API_DOMAIN,
) -> dict[str, Any]:
    """One request as API Gateway hands it to Lambda; a body is base64-encoded, as API Gateway
    does for anything it does not know as text."""
    headers = {"host": domain, "user-agent": "curl/8.5.0", **(headers or {})}
    if body is not None:
        headers["content-length"] = str(len(body))
    api_id = domain.split(".")[0]
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": api_id,
            "domainName": domain,
            "domainPrefix": api_id,
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "198.51.100.7",
                "userAgent": "curl/8.5.0",
            },
            "requestId": uuid.uuid4().hex[:16],
            "routeKey": "$default",
            "stage": "$default",
            "time": "04/Dec/2026:19:16:57 +0000",
            "timeEpoch": 1796411817000,
        },
        "body": base64.b64encode(body).decode() if body is not None else None,
        "isBase64Encoded": body is not None,
    }


def multipart(field: str, filename: str, data: bytes, content_type: str) -> tuple[bytes, str]:
    """A one-file multipart/form-data body and its Content-Type header."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    )
    return (
        head.encode() + data + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


class Context:
    """What Lambda passes as ``context`` (Mangum keeps it in the ASGI scope, reads nothing)."""

    function_name = "verity-api"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"


def decode_answer(answer: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """Status, lower-cased headers and body bytes of a handler's answer (v1 or v2 format)."""
    headers = {k.lower(): v for k, v in (answer.get("headers") or {}).items()}
    for key, values in (answer.get("multiValueHeaders") or {}).items():
        headers[key.lower()] = values[-1]
    body = answer.get("body") or ""
    raw = base64.b64decode(body) if answer.get("isBase64Encoded") else body.encode()
    return int(answer["statusCode"]), headers, raw
