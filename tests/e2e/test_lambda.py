"""The AWS Lambda entry point (``infra.aws_lambda.handler.http``) invoked in-process with the event
documents API Gateway and Lambda Function URLs send: HTTP API (payload v2), REST API (v1, binary
media types: bodies and binary answers base64-encoded) and Function URLs (v2 shape, their own
domain). The engine is the in-process one: real tiny ONNX models of the session's store."""

from __future__ import annotations

import base64
import importlib
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from auth.api_keys import well_formed
from infra.aws_lambda.events import FUNCTION_URL_DOMAIN, Context, decode_answer, http_api_event, multipart
from tests.conftest import TEST_PASSWORD, unique_email
from tests.e2e.servers import BIN_DIR, PROJECT_ROOT, server_env
from tests.media_factory import jpeg_bytes

pytestmark = pytest.mark.e2e

MB = 1024 * 1024


def function_url_event(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    return http_api_event(method, path, domain=FUNCTION_URL_DOMAIN, **kwargs)


def rest_api_event(
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    query: str = "",
) -> dict[str, Any]:
    """API Gateway REST API (payload v1) with a `{proxy+}` resource and binary media types."""
    headers = {
        "Host": "1234567890.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "curl/8.5.0",
        **(headers or {}),
    }
    if body is not None:
        headers["Content-Length"] = str(len(body))
    params = dict(p.split("=", 1) for p in query.split("&") if p) or None
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": params,
        "multiValueQueryStringParameters": {k: [v] for k, v in params.items()} if params else None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "1234567890",
            "httpMethod": method,
            "identity": {"sourceIp": "198.51.100.7", "userAgent": "curl/8.5.0"},
            "path": f"/prod{path}",
            "protocol": "HTTP/1.1",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "resourcePath": "/{proxy+}",
            "stage": "prod",
        },
        "body": base64.b64encode(body).decode() if body is not None else None,
        "isBase64Encoded": body is not None,
    }


SHAPES: dict[str, Callable[..., dict[str, Any]]] = {
    "http-api-v2": http_api_event,
    "rest-api-v1": rest_api_event,
    "function-url": function_url_event,
}


@pytest.fixture(scope="module")
def handler(model_store) -> Any:
    import infra.aws_lambda.handler as module

    return module


def invoke(handler: Any, event: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return decode_answer(handler.http(event, Context()))


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_event_shape(handler: Any, shape: str) -> None:
    event = SHAPES[shape]

    status, _, body = invoke(handler, event("GET", "/health"))
    assert status == 200 and json.loads(body) == {"status": "ok"}

    status, _, body = invoke(handler, event("GET", "/health/ready"))
    assert status == 200, body
    assert json.loads(body)["status"] == "ready"

    credentials = json.dumps({"email": unique_email("lambda"), "password": TEST_PASSWORD}).encode()
    status, _, body = invoke(
        handler,
        event("POST", "/v1/auth/signup", headers={"content-type": "application/json"}, body=credentials),
    )
    assert status == 201, body
    key = json.loads(body)["api_key"]["key"]
    assert well_formed(key)

    picture, content_type = multipart("image", "face.jpg", jpeg_bytes(320, 240), "image/jpeg")
    detect = event(
        "POST",
        "/v1/detect/image",
        headers={"content-type": content_type, "x-api-key": key},
        body=picture,
        query="model=vit-dima806",
    )
    status, headers, body = invoke(handler, detect)
    assert status == 200, body
    result = json.loads(body)
    assert result["modality"] == "image" and result["verdict"] in {"FAKE", "REAL", "UNCERTAIN"}
    assert result["model"]["id"] == "vit-dima806" and result["model"]["weights"] == "dev"
    assert result["media"] == {"format": "jpeg", "width": 320, "height": 240, "mode": "RGB"}
    assert headers["x-request-id"] and int(headers["ratelimit-remaining"]) >= 0

    # Text: tokenized and scored in the function's own process, like every other modality.
    essay = ("The committee met on Tuesday to review the budget for the coming year. " * 12).encode()
    status, _, body = invoke(
        handler,
        event(
            "POST",
            "/v1/detect/text",
            headers={"content-type": "application/json", "x-api-key": key},
            body=json.dumps({"text": essay.decode()}).encode(),
        ),
    )
    assert status == 200, body
    text_result = json.loads(body)
    assert text_result["modality"] == "text" and text_result["model"]["id"] == "roberta-openai-detector"
    assert text_result["segments"][0]["start_char"] == 0

    anonymous = event("POST", "/v1/detect/image", headers={"content-type": content_type}, body=picture)
    status, _, body = invoke(handler, anonymous)
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthenticated"

    status, _, body = invoke(handler, event("GET", "/v1/nothing-here", headers={"x-api-key": key}))
    assert status == 404 and json.loads(body)["error"]["code"] == "route_not_found"

    too_big = b"\xff\xd8\xff" + b"\0" * (15 * MB)
    status, _, body = invoke(
        handler,
        event(
            "POST", "/v1/detect/image", headers={"content-type": "image/jpeg", "x-api-key": key}, body=too_big
        ),
    )
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"

    # A binary answer (the docs' favicon) comes back base64-encoded, as API Gateway expects.
    answer = handler.http(event("GET", "/docs/assets/favicon.png"), Context())
    assert answer["statusCode"] == 200 and answer["isBase64Encoded"] is True
    assert base64.b64decode(answer["body"]).startswith(b"\x89PNG")


def test_models_load_once_per_container(handler: Any, monkeypatch) -> None:
    """Init (the module's import) opens each ONNX session once; invocations open none, and run
    no lifespan startup (Mangum's would rebuild the app on every invocation)."""
    import detect.model_clients as clients

    opened: list[str] = []
    real = clients.OnnxModel

    class CountingOnnxModel(real):  # the real session, counted
        def __init__(self, path: Any, **kwargs: Any) -> None:
            opened.append(str(path))
            super().__init__(path, **kwargs)

    monkeypatch.setattr(clients, "OnnxModel", CountingOnnxModel)
    fresh = importlib.reload(handler)  # a new container: its init
    served = fresh.app.state.engine.served
    assert len(opened) == len(served) >= 5  # two image models, audio, the video pair
    for _ in range(3):
        status, _, _ = invoke(fresh, http_api_event("GET", "/health/ready"))
        assert status == 200
    picture, content_type = multipart("image", "face.jpg", jpeg_bytes(), "image/jpeg")
    credentials = json.dumps({"email": unique_email("cold"), "password": TEST_PASSWORD}).encode()
    _, _, body = invoke(
        fresh,
        http_api_event(
            "POST", "/v1/auth/signup", headers={"content-type": "application/json"}, body=credentials
        ),
    )
    key = json.loads(body)["api_key"]["key"]
    for _ in range(2):
        status, _, _ = invoke(
            fresh,
            http_api_event(
                "POST",
                "/v1/detect/image",
                headers={"content-type": content_type, "x-api-key": key},
                body=picture,
            ),
        )
        assert status == 200
    assert len(opened) == len(served)
    assert fresh.http.lifespan == "off"


def _import_handler(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _fresh_python(
        "import sys, infra.aws_lambda.handler; "
        "print(sorted(m for m in ('torch', 'tensorflow', 'transformers') if m in sys.modules))",
        env,
    )


def _fresh_python(probe: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``probe`` in a new interpreter: a new Lambda container's init and invocations."""
    return subprocess.run(
        [str(BIN_DIR / "python"), "-c", probe],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_handler_imports_no_torch_or_tensorflow(model_store, bentoml_home) -> None:
    done = _import_handler(server_env(bentoml_home))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_production_refuses_a_sqlite_store(model_store, bentoml_home) -> None:
    env = {
        **server_env(bentoml_home),
        "VERITY_ENVIRONMENT": "production",
        "VERITY_JWT_SECRET": "lambda-" + "0123456789abcdef" * 3,
        "VERITY_STORE": "sqlite",
    }
    done = _import_handler(env)
    assert done.returncode == 1
    assert "Verity cannot start: on AWS Lambda" in done.stderr and "VERITY_STORE=dynamodb" in done.stderr


def _tree(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


def test_the_handler_never_writes_to_its_model_store(model_store, bentoml_home, tmp_path: Path) -> None:
    """Lambda's file system is read-only but for /tmp: init and invocations read the model store
    (BENTOML_HOME, baked into the image) and write nothing there; state goes to VERITY_DATA_DIR."""
    home = tmp_path / "image-bentoml-home"
    shutil.copytree(bentoml_home / "models", home / "models", symlinks=True)
    # The folders the Lambda image recipe makes beside the models (BentoML wants them to exist).
    dockerfile = (PROJECT_ROOT / "infra" / "aws_lambda" / "Dockerfile").read_text(encoding="utf-8")
    made = re.findall(
        r"\$\{LAMBDA_TASK_ROOT\}/bentos/(\w+)", dockerfile.split("RUN mkdir -p", 1)[1].splitlines()[0]
    )
    assert set(made) == {"bentos", "envs", "tmp"}, made
    for folder in made:
        (home / folder).mkdir()
    before = _tree(home)
    probe = (
        "import json, infra.aws_lambda.handler as h; from infra.aws_lambda.events import "
        "Context, decode_answer, http_api_event; "
        "print(decode_answer(h.http(http_api_event('GET', '/health/ready'), Context()))[0])"
    )
    env = {
        **server_env(home),
        "VERITY_DATA_DIR": str(tmp_path / "tmp-verity"),
        "VERITY_SQLITE_PATH": str(tmp_path / "tmp-verity" / "verity.db"),
    }
    env.pop("VERITY_DEV_SECRET_PATH", None)
    done = _fresh_python(probe, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "200"
    assert _tree(home) == before, "the handler wrote into its model store"
    assert (tmp_path / "tmp-verity" / "verity.db").is_file()
