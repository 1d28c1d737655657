"""Load shedding and decoding's own threads through the API: heavy requests past the gate get
503 ``server_busy`` with Retry-After before their body is read; a decode past its limit is a
422; authentication answers while every decode thread is busy."""

from __future__ import annotations

import threading
import time

import pytest

from tests.audio_factory import encode as encode_audio
from tests.audio_factory import speech_like
from tests.conftest import assert_error
from tests.media_factory import jpeg_bytes
from tests.video_factory import pattern_frames, write_opencv

pytestmark = pytest.mark.http


@pytest.fixture
def engine(service_module):
    return service_module.app.state.engine


@pytest.fixture
def gate_full(engine, monkeypatch):
    """No slot and no queue: every heavy request is shed (as when the slots are all taken)."""
    monkeypatch.setattr(engine.heavy_gate, "capacity", 0)
    monkeypatch.setattr(engine.heavy_gate, "queue", 0)


def _post(api, route: str, field: str, data: bytes, params: str = ""):
    return api.post(f"/v1/detect/{route}{params}", files={field: ("media", data, "application/octet-stream")})


@pytest.mark.parametrize(
    ("route", "field", "params"),
    [("audio", "audio", ""), ("video", "video", ""), ("image", "image", "?explain=true")],
)
def test_heavy_requests_are_shed_with_retry_after(api, gate_full, route, field, params):
    media = {
        "audio": lambda: encode_audio(speech_like(2.0), 16_000, "wav"),
        "video": lambda: write_opencv(pattern_frames(10), 10, "mp4"),
        "image": jpeg_bytes,
    }[route]()
    before = api.get("/v1/usage").json()["requests_today"]
    response = _post(api, route, field, media, params)
    assert_error(response, 503, "server_busy")
    assert int(response.headers["Retry-After"]) > 0
    # Shed by the server: it costs the caller nothing.
    assert api.get("/v1/usage").json()["requests_today"] == before


def test_plain_images_are_not_heavy(api, gate_full):
    response = _post(api, "image", "image", jpeg_bytes())
    assert response.status_code == 200, response.text


def test_an_image_decode_past_its_limit_is_a_422(api, engine, monkeypatch):
    monkeypatch.setattr(engine.settings, "image_decode_timeout_s", 1e-6)
    assert_error(_post(api, "image", "image", jpeg_bytes(1600, 1200)), 422, "decode_timeout")


def test_authentication_answers_while_every_decode_thread_is_busy(api, engine):
    release = threading.Event()
    busy = [engine.decode_pool._executor.submit(release.wait, 30) for _ in range(engine.decode_pool.threads)]
    try:
        started = time.monotonic()
        assert api.get("/v1/usage").status_code == 200
        assert api.get("/v1/keys").status_code == 200
        assert time.monotonic() - started < 5
        assert not any(f.done() for f in busy)  # the decoders were busy all along
    finally:
        release.set()
    for future in busy:
        future.result(timeout=5)
