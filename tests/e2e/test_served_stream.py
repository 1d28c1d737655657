"""The live stream through a real ``bentoml serve`` (the session's server): the WebSocket upgrade
passes BentoML's HTTP server to the mounted app, a token from ``POST /v1/stream/token`` opens one
session, frames get results with face boxes, a bad frame an error, and a used token is refused."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.ws_client import Closed, WebSocketClient
from tests.http.test_stream import face_jpeg

pytestmark = pytest.mark.e2e


def test_a_camera_session_on_the_served_api(server_url: str, server_headers: dict[str, str]) -> None:
    token = httpx.post(f"{server_url}/v1/stream/token", headers=server_headers, timeout=30).json()["token"]
    ws_url = server_url.replace("http://", "ws://") + f"/v1/stream?token={token}"
    client = WebSocketClient(ws_url)
    try:
        ready = client.receive_json()
        assert ready["type"] == "ready" and ready["max_fps"] > 0
        client.send_bytes(face_jpeg())
        result = client.receive_json()
        assert result["type"] == "result" and result["seq"] == 0, result
        assert len(result["faces"]) == 1 and result["rolling"]["frames"] == 1
        assert result["model"]["weights"] == "dev"
        assert any(w["code"] == "dev_weights" for w in result["warnings"])
        # Frames faster than max_fps are dropped unread: the next one waits out the interval
        # (a fast model answers the first frame well inside it).
        time.sleep(1.2 / ready["max_fps"])
        client.send_bytes(b"not a picture at all")
        error = client.receive_json()
        assert error["type"] == "error" and error["error"]["code"] == "unsupported_media_type"
    finally:
        client.close()

    with pytest.raises(Closed) as refused:
        WebSocketClient(ws_url).receive_json()
    assert refused.value.code == 1008
