"""The live stream: ``POST /v1/stream/token`` then the ``/v1/stream`` WebSocket, in process with
the session's tiny models. Tokens (missing, forged, used, expired, from a revoked key), the
protocol (ready, results with faces and a rolling verdict, typed errors that keep the session),
drop-not-queue under a fast sender, and the limits (fps, frame size, idle, session length,
sessions per user, quota)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cv2
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from tests.face_factory import Paste, compose

pytestmark = pytest.mark.http


def face_jpeg(seed: int = 0) -> bytes:
    frame = compose([Paste(80, 30, 170)], seed=seed, width=320, height=240)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes()


FACE = face_jpeg()


def token_for(client: TestClient, headers: dict[str, str]) -> str:
    response = client.post("/v1/stream/token", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["expires_in"] == 60 and body["url"] == f"/v1/stream?token={body['token']}"
    return body["token"]


def refused(client: TestClient, url: str) -> int:
    with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect(url) as ws:
        ws.receive_json()
    return closed.value.code


@contextmanager
def stream(client: TestClient, headers: dict[str, str]) -> Iterator[Any]:
    with client.websocket_connect(f"/v1/stream?token={token_for(client, headers)}") as ws:
        ready = ws.receive_json()
        assert ready["type"] == "ready", ready
        yield ws


@pytest.fixture(scope="module")
def app_with(service_module, client, accounts):
    """An app like the served one with other stream settings, sharing its engine and accounts."""
    from api.app import create_app

    made = []

    def _app_with(**overrides: Any) -> TestClient:
        settings = service_module.settings.model_copy(update=overrides)
        app = create_app(settings)
        app.state.accounts = accounts
        app.state.engine = service_module.app.state.engine
        test_client = TestClient(app)
        made.append(test_client)
        return test_client

    yield _app_with
    for test_client in made:
        test_client.close()


# --- tokens -----------------------------------------------------------------------------------


def test_a_token_needs_credentials_and_the_detect_scope(client, api, auth_headers):
    assert client.post("/v1/stream/token").status_code == 401
    read_only = api.post("/v1/keys", json={"name": "ro", "scopes": ["read"]}).json()["key"]
    response = client.post("/v1/stream/token", headers={"x-api-key": read_only})
    assert response.status_code == 403 and response.json()["error"]["code"] == "insufficient_scope"
    assert token_for(client, auth_headers)


def test_jwt_sessions_get_tokens_too(client, jwt_headers):
    with stream(client, jwt_headers) as ws:
        ws.send_bytes(FACE)
        assert ws.receive_json()["type"] == "result"


@pytest.mark.parametrize("query", ["", "?token=", "?token=abc.def", "?token=" + "x" * 5000])
def test_no_or_bad_token_is_refused_before_any_frame(client, query):
    assert refused(client, f"/v1/stream{query}") == 1008


def test_a_token_opens_one_session_only(client, auth_headers):
    token = token_for(client, auth_headers)
    with client.websocket_connect(f"/v1/stream?token={token}") as ws:
        assert ws.receive_json()["type"] == "ready"
    assert refused(client, f"/v1/stream?token={token}") == 1008


def test_a_forged_or_expired_token_is_refused(client, accounts, user, auth_headers):
    from auth.principal import Principal
    from auth.stream_tokens import issue_stream_token

    token = token_for(client, auth_headers)
    body, signature = token.rsplit(".", 1)
    claims = base64.urlsafe_b64decode(body + "==").replace(user.user_id.encode(), b"usr_someone_else")
    forged = base64.urlsafe_b64encode(claims).decode().rstrip("=") + "." + signature
    assert refused(client, f"/v1/stream?token={forged}") == 1008

    principal = Principal(
        user=accounts.store.get_user(user.user_id), method="api_key", scopes=frozenset({"detect"})
    )
    old, _ = issue_stream_token(accounts.settings, principal, time.time() - 3600)
    assert refused(client, f"/v1/stream?token={old}") == 1008


def test_a_revoked_key_or_disabled_account_stops_at_the_handshake(client, api, admin_headers, new_user):
    key = api.post("/v1/keys", json={"name": "cam"}).json()
    token = token_for(client, {"x-api-key": key["key"]})
    assert api.delete(f"/v1/keys/{key['id']}").status_code in (200, 204)
    assert refused(client, f"/v1/stream?token={token}") == 1008

    other = new_user()
    token = token_for(client, other.headers)
    response = client.patch(
        f"/v1/admin/users/{other.user_id}", json={"disabled": True}, headers=admin_headers
    )
    assert response.status_code == 200, response.text
    assert refused(client, f"/v1/stream?token={token}") == 1008


# --- protocol ---------------------------------------------------------------------------------


def test_frames_get_results_with_faces_and_a_rolling_verdict(client, auth_headers):
    with stream(client, auth_headers) as ws:
        ws.send_bytes(FACE)
        first = ws.receive_json()
        assert first["type"] == "result" and first["seq"] == 0, first
        assert first["verdict"] in ("REAL", "FAKE", "UNCERTAIN")
        assert first["width"] == 320 and first["height"] == 240
        assert len(first["faces"]) == 1 and len(first["faces"][0]["box"]) == 4
        assert first["rolling"]["frames"] == 1
        assert first["rolling"]["fake_probability"] == first["fake_probability"]
        assert (
            any(w["code"] == "dev_weights" for w in first["warnings"]) or first["model"]["weights"] != "dev"
        )
        time.sleep(0.15)  # past the fps cap (10/s)

        data_url = "data:image/jpeg;base64," + base64.b64encode(face_jpeg(seed=1)).decode()
        ws.send_json({"frame": data_url})
        second = ws.receive_json()
        assert second["type"] == "result" and second["seq"] == 1 and second["rolling"]["frames"] == 2


@pytest.mark.parametrize(
    ("send", "code"),
    [
        (lambda ws: ws.send_bytes(b"\x00garbage" * 50), "unsupported_media_type"),
        (lambda ws: ws.send_bytes(FACE[:400]), "corrupt_image"),
        (lambda ws: ws.send_text("not json"), "invalid_frame"),
        (lambda ws: ws.send_json({"image": "x"}), "invalid_frame"),
        (lambda ws: ws.send_json({"frame": "data:image/jpeg;base64,@@@"}), "invalid_base64"),
    ],
)
def test_a_bad_frame_gets_a_typed_error_and_the_session_goes_on(client, auth_headers, send, code):
    with stream(client, auth_headers) as ws:
        send(ws)
        error = ws.receive_json()
        assert error == {
            "type": "error",
            "seq": 0,
            "error": {"code": code, "message": error["error"]["message"]},
        }
        time.sleep(0.15)
        ws.send_bytes(FACE)
        assert ws.receive_json()["type"] == "result"


def _sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_fast_sender_gets_drops_not_a_queue(client, auth_headers):
    sent = 12
    before = {
        o: _sample("verity_stream_frames_total", outcome=o) for o in ("analysed", "dropped", "rejected")
    }
    sessions = _sample("verity_stream_sessions_total")
    with stream(client, auth_headers) as ws:
        assert _sample("verity_stream_active_sessions") >= 1
        for _ in range(sent):
            ws.send_bytes(FACE)
        answers = [ws.receive_json() for _ in range(sent)]
        ws.send_bytes(b"")  # an empty frame: rejected
        assert ws.receive_json()["error"]["code"] == "invalid_frame"
    assert sorted(a["seq"] for a in answers) == list(range(sent))  # every frame answered once
    kinds = [a["type"] for a in answers]
    assert kinds.count("result") >= 1 and kinds.count("dropped") >= sent // 2, kinds
    assert {a["reason"] for a in answers if a["type"] == "dropped"} <= {"busy", "rate"}
    # The metrics saw every frame, under its outcome, and the session.
    moved = {o: _sample("verity_stream_frames_total", outcome=o) - before[o] for o in before}
    assert moved == {"analysed": kinds.count("result"), "dropped": kinds.count("dropped"), "rejected": 1}
    assert _sample("verity_stream_sessions_total") == sessions + 1


# --- limits -----------------------------------------------------------------------------------


def test_frames_over_the_size_cap_are_refused_in_words(app_with, auth_headers):
    client = app_with(stream_max_frame_bytes=4096)
    with stream(client, auth_headers) as ws:
        ws.send_bytes(b"\xff" * 5000)
        assert ws.receive_json()["error"]["code"] == "file_too_large"
        ws.send_text('{"frame": "' + "A" * 8000 + '"}')
        assert ws.receive_json()["error"]["code"] == "file_too_large"


def test_frames_faster_than_the_fps_cap_are_dropped_for_rate(app_with, auth_headers):
    client = app_with(stream_max_fps=1.0)
    with stream(client, auth_headers) as ws:
        ws.send_bytes(FACE)
        assert ws.receive_json()["type"] == "result"
        ws.send_bytes(FACE)  # well within a second of the first
        assert ws.receive_json() == {"type": "dropped", "seq": 1, "reason": "rate"}


def test_an_idle_session_and_a_long_one_are_closed(app_with, auth_headers):
    client = app_with(stream_idle_timeout_s=0.3)
    with stream(client, auth_headers) as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    assert closed.value.code == 1000 and closed.value.reason == "idle timeout"

    client = app_with(stream_max_session_s=0.6, stream_idle_timeout_s=5)
    started = time.monotonic()
    with stream(client, auth_headers) as ws, pytest.raises(WebSocketDisconnect) as closed:
        while True:
            ws.receive_json()
    assert closed.value.code == 1000 and closed.value.reason == "session length limit reached"
    assert time.monotonic() - started < 5


def test_sessions_per_user_are_capped(app_with, auth_headers, new_user):
    client = app_with(stream_max_sessions_per_user=1)
    with stream(client, auth_headers):
        assert refused(client, f"/v1/stream?token={token_for(client, auth_headers)}") == 4429
        with stream(client, new_user().headers):  # another user is not affected
            pass
    with stream(client, auth_headers):  # the first one closed: room again
        pass


def test_frames_are_metered_and_the_quota_ends_the_session(app_with, new_user, client):
    limited = new_user(daily_limit=2)
    app = app_with(stream_frames_per_unit=2, stream_max_fps=50)
    analysed = 0
    with stream(app, limited.headers) as ws, pytest.raises(WebSocketDisconnect) as closed:
        while True:
            ws.send_bytes(FACE)
            message = ws.receive_json()
            if message["type"] == "result":
                analysed += 1
            elif message["type"] == "error":
                assert message["error"]["code"] == "daily_quota_exceeded"
                ws.receive_json()  # the close
    assert closed.value.code == 4429 and analysed == 4  # two units, two frames each
    usage = client.get("/v1/usage", headers=limited.headers).json()
    assert usage["units_today"] == 2
