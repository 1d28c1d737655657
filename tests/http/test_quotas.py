"""Quotas over HTTP against both store backends: the 200-request race, midnight
rollover and per-minute limits under a controlled clock, and 503 fail-closed on store outages.

Each test builds the FastAPI app (``api.app.create_app``) with its own settings and an
``Accounts`` over the backend under test, and borrows the engine (real tiny ONNX models) of the
session's running BentoML service.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.stub import Stubber
from pydantic import SecretStr

from auth import api_keys
from auth.accounts import Accounts
from config import Settings
from store.records import User
from tests.media_factory import jpeg_bytes
from tests.store import conftest as store_fixtures
from tests.store.conftest import REGION, MotoServer, free_port, make_dynamodb_store

pytestmark = pytest.mark.http

aws_env = store_fixtures.aws_env
moto_server = store_fixtures.moto_server

PASSWORD = "correct horse battery staple"
IMAGE = jpeg_bytes(64, 64)


class FakeClock:
    """What ``Accounts`` reads the time from; tests move it by hand."""

    def __init__(self, moment: datetime) -> None:
        self.now = moment

    def __call__(self) -> datetime:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def quota_settings(**overrides) -> Settings:
    values = {
        "environment": "test",
        "jwt_secret": SecretStr("quota-tests-" + "s" * 40),
        "daily_limit": 100,
        "rate_limit_image_per_min": 1000,
    }
    return Settings(**{**values, **overrides})


@pytest.fixture(scope="module")
def engine(client, service_module):
    """The engine of the running session service: real tiny ViT/SigLIP behind BentoML."""
    engine = service_module.app.state.engine
    assert engine is not None
    return engine


@pytest.fixture(params=["sqlite", "dynamodb"])
def backend_store(request, tmp_path: Path) -> Iterator:
    with store_fixtures.fresh_store(request.param, request, tmp_path) as store:
        yield store


def build_app(engine, store, settings: Settings, clock: FakeClock):
    from api.app import create_app

    app = create_app(settings)
    app.state.accounts = Accounts(store, settings, clock=clock)
    app.state.engine = engine
    return app


async def _send(app, requests: list[tuple[str, str, dict]]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://verity.test", timeout=120) as http:
        return await asyncio.gather(*(http.request(method, url, **kw) for method, url, kw in requests))


def send(app, method: str, url: str, **kwargs) -> httpx.Response:
    return asyncio.run(_send(app, [(method, url, kwargs)]))[0]


def detect(app, key: str) -> httpx.Response:
    return send(app, "POST", "/v1/detect/image", files=image_file(), headers={"x-api-key": key})


def image_file() -> dict:
    return {"image": ("face.jpg", IMAGE, "image/jpeg")}


def signup(accounts: Accounts, **fields) -> tuple[User, str]:
    user, _, secret = accounts.signup(f"quota-{uuid.uuid4().hex[:10]}@example.com", PASSWORD)
    if fields:
        user = accounts.store.update_user(user.id, **fields)
    return user, secret


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"] and error["request_id"] == response.headers["x-request-id"]
    return error


# --- the race ------------------------------------------------------------------------------


def test_200_concurrent_requests_against_a_limit_of_100(engine, backend_store):
    """Exactly 100 x 200 and 100 x 429; the stored counter says 100 and history holds 100."""
    clock = FakeClock(utc(2030, 1, 1, 12, 0, 0))
    settings = quota_settings(daily_limit=5)  # the default; this user's own limit is 100
    app = build_app(engine, backend_store, settings, clock)
    user, key = signup(app.state.accounts, daily_limit=100)
    assert user.daily_limit == 100

    headers = {"x-api-key": key}
    requests = [("POST", "/v1/detect/image", {"files": image_file(), "headers": headers})] * 200
    responses = asyncio.run(_send(app, requests))

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 100, 429: 100}, statuses
    allowed = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    # Every slot was handed out once: remaining 99, 98, ..., 0.
    assert sorted(int(r.headers["ratelimit-remaining"]) for r in allowed) == list(range(100))
    assert {r.headers["ratelimit-limit"] for r in allowed} == {"100"}
    assert {r.json()["verdict"] for r in allowed} <= {"FAKE", "REAL", "UNCERTAIN"}
    for response in refused:
        assert_error(response, 429, "daily_quota_exceeded")
        assert response.headers["retry-after"] == "43200"  # noon -> midnight UTC
        assert response.headers["ratelimit-limit"] == "100"
        assert response.headers["ratelimit-remaining"] == "0"
        assert response.headers["ratelimit-reset"] == "43200"

    store = app.state.accounts.store
    assert store.usage(user.id, "2030-01-01") == (100, 100)
    history = store.list_detections(user.id, 100, None)
    assert len(history.items) == 100 and history.next_cursor is None
    assert {d.id for d in history.items} == {r.json()["id"] for r in allowed}
    assert sum(per["total"] for per in store.stats(user.id).values()) == 100
    usage = send(app, "GET", "/v1/usage", headers=headers).json()
    assert usage["requests_today"] == 100 and usage["remaining"] == 0 and usage["daily_limit"] == 100


# --- the clock -----------------------------------------------------------------------------


def test_midnight_rollover(engine, backend_store):
    clock = FakeClock(utc(2030, 1, 1, 23, 59, 30))
    app = build_app(engine, backend_store, quota_settings(daily_limit=3), clock)
    user, key = signup(app.state.accounts)

    for remaining in (2, 1, 0):
        response = detect(app, key)
        assert response.status_code == 200, response.text
        assert response.headers["ratelimit-remaining"] == str(remaining)
        assert response.headers["ratelimit-reset"] == "30"
    refused = detect(app, key)
    assert_error(refused, 429, "daily_quota_exceeded")
    assert refused.headers["retry-after"] == "30"
    assert refused.headers["ratelimit-reset"] == "30"
    assert refused.headers["ratelimit-limit"] == "3" and refused.headers["ratelimit-remaining"] == "0"
    usage = send(app, "GET", "/v1/usage", headers={"x-api-key": key}).json()
    assert usage == {
        "date": "2030-01-01",
        "units_today": 3,
        "daily_limit": 3,
        "remaining": 0,
        "reset_at": "2030-01-02T00:00:00Z",
        "total_units": 3,
        "costs": {
            "image": 1,
            "image_explain": 6,
            "audio_per_started_minute": 1,
            "video_per_started_minute": 2,
            "text_per_started_10000_characters": 1,
        },
        "requests_today": 3,
        "total_requests": 3,
    }

    clock.set(utc(2030, 1, 2, 0, 0, 5))
    response = detect(app, key)
    assert response.status_code == 200, response.text
    assert response.headers["ratelimit-remaining"] == "2"
    assert response.headers["ratelimit-reset"] == str(24 * 3600 - 5)
    usage = send(app, "GET", "/v1/usage", headers={"x-api-key": key}).json()
    assert usage["date"] == "2030-01-02" and usage["reset_at"] == "2030-01-03T00:00:00Z"
    assert (usage["units_today"], usage["remaining"], usage["total_units"]) == (1, 2, 4)
    assert app.state.accounts.store.usage(user.id, "2030-01-01") == (3, 4)


def test_per_minute_limit(engine, backend_store):
    clock = FakeClock(utc(2030, 1, 1, 12, 0, 10))
    app = build_app(engine, backend_store, quota_settings(rate_limit_image_per_min=3), clock)
    user, key = signup(app.state.accounts)

    for remaining in (2, 1, 0):
        response = detect(app, key)
        assert response.status_code == 200, response.text
        # The minute is closer to refusing than the day, so the headers describe it.
        assert response.headers["ratelimit-limit"] == "3"
        assert response.headers["ratelimit-remaining"] == str(remaining)
        assert response.headers["ratelimit-reset"] == "50"
    refused = detect(app, key)
    assert_error(refused, 429, "rate_limited")
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert refused.headers["retry-after"] == "50"
    assert refused.headers["ratelimit-limit"] == "3" and refused.headers["ratelimit-remaining"] == "0"
    assert app.state.accounts.store.usage(user.id, "2030-01-01") == (3, 3)  # the refusal is free

    # Unmetered endpoints are not limited per minute.
    assert send(app, "GET", "/v1/usage", headers={"x-api-key": key}).status_code == 200

    clock.set(utc(2030, 1, 1, 12, 1, 0))
    response = detect(app, key)
    assert response.status_code == 200, response.text
    assert response.headers["ratelimit-remaining"] == "2"
    assert app.state.accounts.store.usage(user.id, "2030-01-01") == (4, 4)


# --- outages: fail closed ------------------------------------------------------------------


def test_503_when_the_store_is_down_for_authentication(engine, aws_env):
    """A DynamoDB that stops answering: every authenticated request is a 503 with Retry-After,
    never a 401 (a valid key must not look invalid), never a 500, never a free pass."""
    clock = FakeClock(utc(2030, 1, 1, 12, 0, 0))
    settings = quota_settings()
    server = MotoServer().start()
    try:
        store = make_dynamodb_store(server.endpoint, max_attempts=1, timeout_s=1.0)
        app = build_app(engine, store, settings, clock)
        user, key = signup(app.state.accounts)
        assert detect(app, key).status_code == 200
        token = app.state.accounts.own_tokens.issue(user.id, role=user.role, email=user.email)
    finally:
        server.stop()

    for headers in ({"x-api-key": key}, {"authorization": f"Bearer {token}"}):
        response = send(app, "POST", "/v1/detect/image", files=image_file(), headers=headers)
        assert_error(response, 503, "store_unavailable")
        assert int(response.headers["retry-after"]) > 0
        response = send(app, "GET", "/v1/usage", headers=headers)
        assert_error(response, 503, "store_unavailable")
        assert int(response.headers["retry-after"]) > 0

    # A closed endpoint from the start behaves the same, for a key it has never seen.
    from store.dynamodb import DynamoDBStore

    closed = DynamoDBStore(
        "verity",
        region=REGION,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        max_attempts=1,
        timeout_s=0.5,
    )
    app = build_app(engine, closed, settings, clock)
    response = detect(app, api_keys.generate_key().secret)
    error = assert_error(response, 503, "store_unavailable")
    # The driver's words (endpoint, table, botocore's message) stay in the log.
    assert error["message"] == "the store does not answer; retry shortly"
    assert "127.0.0.1" not in response.text and "verity" not in response.text.replace("x-verity", "")
    # A malformed key is refused by its checksum before any store lookup: still a plain 401.
    assert_error(detect(app, "vk_live_" + "x" * 49), 401, "invalid_api_key")

    # Readiness reflects the store (a load balancer stops sending traffic); liveness does not
    # (restarting the process would not bring the store back).
    assert_error(send(app, "GET", "/health/ready"), 503, "not_ready")
    assert send(app, "GET", "/health/live").status_code == 200


def test_ready_is_not_ready_while_starting(engine, tmp_path: Path):
    from api.app import create_app
    from store.sqlite import SQLiteStore

    settings = quota_settings()
    app = create_app(settings)  # neither engine nor accounts yet: the service is starting
    response = send(app, "GET", "/health/ready")
    assert_error(response, 503, "not_ready")
    assert int(response.headers["retry-after"]) > 0
    assert send(app, "GET", "/health/live").status_code == 200
    app = build_app(engine, SQLiteStore(tmp_path / "ready.db"), settings, FakeClock(utc(2030, 1, 1)))
    ready = send(app, "GET", "/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["store"] == "ok"


def test_503_when_the_quota_counter_is_throttled(engine, moto_server):
    """Authentication works but the metered count is throttled: 503, nothing counted or run."""
    clock = FakeClock(utc(2030, 1, 1, 12, 0, 0))
    store = make_dynamodb_store(moto_server.endpoint)
    try:
        app = build_app(engine, store, quota_settings(), clock)
        user, key = signup(app.state.accounts)
        assert detect(app, key).status_code == 200  # also marks the key used for this minute

        # The auth lookups get the real items (read first through a plain client); the quota's
        # conditional UpdateItem is throttled.
        raw = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_server.endpoint)
        digest = api_keys.digest_key(key)

        def item(pk: str, sk: str) -> dict:
            return raw.get_item(
                TableName=store.table_name, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True
            )

        key_item, user_item = item(f"KEY#{digest}", "KEY"), item(f"USER#{user.id}", "PROFILE")
        for code in ("ProvisionedThroughputExceededException", "ThrottlingException"):
            with Stubber(store.table.meta.client) as stub:
                # deep copies: boto3 deserializes a response in place
                stub.add_response("get_item", copy.deepcopy({"Item": key_item["Item"]}))
                stub.add_response("get_item", copy.deepcopy({"Item": user_item["Item"]}))
                stub.add_client_error("update_item", service_error_code=code, http_status_code=400)
                response = detect(app, key)
                stub.assert_no_pending_responses()
            assert_error(response, 503, "store_unavailable")
            assert int(response.headers["retry-after"]) > 0

        assert store.usage(user.id, "2030-01-01") == (1, 1)
        assert len(store.list_detections(user.id, 10, None).items) == 1
        assert detect(app, key).status_code == 200  # and it recovers
        assert store.usage(user.id, "2030-01-01") == (2, 2)
    finally:
        store._resource.meta.client.delete_table(TableName=store.table_name)


# --- cost units ---------------------------------------------------------------------------------


def _usage(app, key: str) -> dict:
    return send(app, "GET", "/v1/usage", headers={"x-api-key": key}).json()


def test_requests_are_charged_their_cost_in_units(engine, backend_store):
    """An explanation costs 6 units, audio 1 per started minute: the result, /v1/usage and the
    RateLimit headers all say the same."""
    from tests.audio_factory import encode as encode_audio
    from tests.audio_factory import speech_like

    clock = FakeClock(utc(2030, 1, 1, 12, 0, 0))
    app = build_app(engine, backend_store, quota_settings(daily_limit=10), clock)
    _, key = signup(app.state.accounts)

    explained = send(
        app, "POST", "/v1/detect/image?explain=true", files=image_file(), headers={"x-api-key": key}
    )
    assert explained.status_code == 200, explained.text
    assert explained.json()["cost_units"] == 6
    assert explained.headers["ratelimit-remaining"] == "4"
    assert _usage(app, key)["units_today"] == 6

    clip = encode_audio(speech_like(61.0), 16_000, "wav")  # 61 s: two started minutes
    audio = send(
        app,
        "POST",
        "/v1/detect/audio",
        files={"audio": ("a.wav", clip, "audio/wav")},
        headers={"x-api-key": key},
    )
    assert audio.status_code == 200, audio.text
    assert audio.json()["cost_units"] == 2
    assert audio.headers["ratelimit-remaining"] == "2"
    usage = _usage(app, key)
    assert (usage["units_today"], usage["remaining"], usage["total_units"]) == (8, 2, 8)
    history = send(app, "GET", f"/v1/history/{audio.json()['id']}", headers={"x-api-key": key}).json()
    assert history["cost_units"] == 2

    # A request admitted with units left finishes even when it costs more than are left; the
    # day is then spent and the next request is refused.
    assert (
        send(
            app, "POST", "/v1/detect/image?explain=true", files=image_file(), headers={"x-api-key": key}
        ).status_code
        == 200
    )
    assert _usage(app, key)["units_today"] == 14
    assert_error(detect(app, key), 429, "daily_quota_exceeded")


def test_client_errors_cost_one_unit_and_shed_requests_none(engine, backend_store, monkeypatch):
    clock = FakeClock(utc(2030, 1, 1, 12, 0, 0))
    app = build_app(engine, backend_store, quota_settings(daily_limit=10), clock)
    _, key = signup(app.state.accounts)
    bad = send(
        app,
        "POST",
        "/v1/detect/image",
        files={"image": ("x.jpg", b"not an image", "image/jpeg")},
        headers={"x-api-key": key},
    )
    assert bad.status_code == 415, bad.text
    assert _usage(app, key)["units_today"] == 1
    monkeypatch.setattr(engine.heavy_gate, "capacity", 0)
    monkeypatch.setattr(engine.heavy_gate, "queue", 0)
    shed = send(app, "POST", "/v1/detect/image?explain=true", files=image_file(), headers={"x-api-key": key})
    assert_error(shed, 503, "server_busy")
    assert shed.headers["ratelimit-remaining"] == "9"
    assert _usage(app, key)["units_today"] == 1
