"""Video through a real `bentoml serve`: decoding in a child process, faces in the API process,
face crops batched in the FrameEncoder service, windows scored by the TemporalHead service."""

from __future__ import annotations

import asyncio
import functools

import httpx
import pytest

from tests.e2e.test_served import batch_stats
from tests.face_factory import moving_face_frames
from tests.video_factory import encode_ffmpeg

pytestmark = pytest.mark.e2e


@functools.cache
def clip(seed: int) -> bytes:
    return encode_ffmpeg(moving_face_frames(30, seed=seed), 10, "mp4", audio=seed == 0)


@pytest.fixture(scope="module")
def http(server_url: str, server_headers: dict[str, str]):
    with httpx.Client(base_url=server_url, timeout=120.0, headers=server_headers) as client:
        yield client


def test_video_with_audio_from_the_server(http: httpx.Client) -> None:
    response = http.post("/v1/detect/video?fps=2", files={"video": ("clip.mp4", clip(0))})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["modality"] == "video" and body["verdict"] in {"FAKE", "REAL", "UNCERTAIN"}
    assert body["media"]["frames_analyzed"] == 6 == body["media"]["frames_with_face"]
    assert [s["start_s"] for s in body["segments"]] == [0, 1, 2]
    assert body["audio"]["model"]["id"] == "wav2vec2-audio" and body["fusion"]["rule"]


async def _burst(url: str, headers: dict[str, str], clips: list[bytes]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120.0, headers=headers) as client:
        return await asyncio.gather(
            *(client.post("/v1/detect/video?fps=2", files={"video": ("c.mp4", c)}) for c in clips)
        )


def test_crops_from_concurrent_videos_share_encoder_batches(
    http: httpx.Client, server_url: str, server_headers: dict[str, str]
) -> None:
    before = batch_stats(http, service="FrameEncoder")
    responses = asyncio.run(_burst(server_url, server_headers, [clip(seed) for seed in range(1, 5)]))
    assert [r.status_code for r in responses] == [200] * 4, [
        r.text for r in responses if r.status_code != 200
    ]
    after = batch_stats(http, service="FrameEncoder")
    # 4 videos x 6 face crops arrive as 24 one-crop encoder requests (as audio windows do); the
    # service answered them in fewer calls: crops of many frames and requests shared batches.
    requests = after.total - before.total
    calls = after.count - before.count
    assert requests == 24
    assert 0 < calls < requests
