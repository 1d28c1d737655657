"""Text through a real `bentoml serve`: tokenized in the API process, windows batched in the
TextDetector model service, rows of concurrent texts sharing its batches."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.e2e.test_served import batch_stats

pytestmark = pytest.mark.e2e

SENTENCE = "The committee met on Tuesday to review the budget and postponed the vote until March. "


@pytest.fixture(scope="module")
def http(server_url: str, server_headers: dict[str, str]):
    with httpx.Client(base_url=server_url, timeout=120.0, headers=server_headers) as client:
        yield client


def test_ready_lists_the_text_model(http: httpx.Client) -> None:
    models = {m["id"]: m for m in http.get("/health/ready").json()["models"]}
    assert models["roberta-openai-detector"]["modality"] == "text"


def test_a_text_and_a_file_from_the_server(http: httpx.Client) -> None:
    text = SENTENCE * 60  # several windows
    body = http.post("/v1/detect/text", json={"text": text}).json()
    assert body["modality"] == "text" and body["model"]["weights"] == "dev", body
    assert body["media"]["windows"] == len(body["segments"]) >= 3
    assert body["segments"][-1]["end_char"] == len(text)
    same = http.post("/v1/detect/text", files={"file": ("essay.txt", text.encode())}).json()
    # The same windows, scored by the same service: the same answer whichever way the text came.
    assert same["fake_probability"] == pytest.approx(body["fake_probability"], abs=1e-5)
    assert [(s["start_char"], s["end_char"]) for s in same["segments"]] == [
        (s["start_char"], s["end_char"]) for s in body["segments"]
    ]
    short = http.post("/v1/detect/text", json={"text": SENTENCE * 2}).json()
    assert short["media"]["windows"] == 1 and short["verdict"] in ("FAKE", "REAL", "UNCERTAIN")
    refused = http.post("/v1/detect/text", files={"file": ("x.txt", b"\xff\xfe\x00binary")})
    assert refused.status_code == 415 and refused.json()["error"]["code"] == "not_text"


async def _burst(url: str, headers: dict[str, str], texts: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120.0, headers=headers) as client:
        return await asyncio.gather(*(client.post("/v1/detect/text", json={"text": t}) for t in texts))


def test_windows_of_concurrent_texts_share_batches(
    http: httpx.Client, server_url: str, server_headers: dict[str, str]
) -> None:
    before = batch_stats(http, service="TextDetector")
    texts = [f"Text number {i}. " + SENTENCE * 30 for i in range(6)]
    responses = asyncio.run(_burst(server_url, server_headers, texts))
    assert [r.status_code for r in responses] == [200] * 6, [
        r.text for r in responses if r.status_code != 200
    ]
    windows = sum(r.json()["media"]["windows"] for r in responses)
    after = batch_stats(http, service="TextDetector")
    calls, merged = after.count - before.count, after.total - before.total
    assert merged == windows and calls < merged  # full windows of different texts ran together
