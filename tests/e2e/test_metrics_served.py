"""``/metrics`` of a real ``bentoml serve service:Verity``: BentoML's series and Verity's in one
scrape (every worker writes to BentoML's multiprocess folder), request labels that are route
templates for both, and no user's ids in any label."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Account
from tests.e2e.servers import bentoml_serve
from tests.media_factory import jpeg_bytes

pytestmark = pytest.mark.e2e

FAKE_JOB = "job_01JD0000000000000000000000"


@pytest.fixture(scope="module")
def served(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url, timeout=60.0) as client:
        yield client


def scrape(client: httpx.Client) -> dict[str, list]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def total(families: dict[str, list], name: str, sample: str, **labels: str) -> float:
    return sum(
        s.value
        for s in families.get(name, [])
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_holds_bentoml_and_verity_series_after_a_detection(
    served: httpx.Client, server_account: Account
) -> None:
    before = scrape(served)
    response = served.post(
        "/v1/detect/image",
        files={"image": ("face.jpg", jpeg_bytes(seed=41), "image/jpeg")},
        headers=server_account.headers,
    )
    assert response.status_code == 200, response.text
    verdict = response.json()["verdict"]
    # Paths with ids in them: a job that is not there, another user's admin route.
    assert served.get(f"/v1/jobs/{FAKE_JOB}", headers=server_account.headers).status_code == 404
    served.get(f"/v1/admin/users/{server_account.user_id}", headers=server_account.headers)

    after = scrape(served)
    detections = {"modality": "image", "verdict": verdict, "model": "vit-dima806"}
    name = "verity_detections"
    assert (
        total(after, name, f"{name}_total", **detections)
        == total(before, name, f"{name}_total", **detections) + 1
    )
    duration = "verity_request_duration_seconds"
    route = {"route": "/v1/detect/image", "method": "POST", "status": "200"}
    assert total(after, duration, f"{duration}_count", **route) >= 1
    assert total(after, duration, f"{duration}_count", route="/v1/jobs/{job_id}", status="404") >= 1

    # BentoML's own series are there, from the API service and from the model services.
    bentoml_requests = after["bentoml_service_request"]
    assert any(s.labels.get("runner_name") == "Verity" for s in bentoml_requests)
    assert "bentoml_service_adaptive_batch_size" in after
    # BentoML labels the API's requests by path; the scrape shows the route templates instead.
    endpoints = {s.labels["endpoint"] for s in bentoml_requests if s.labels.get("runner_name") == "Verity"}
    assert "/v1/jobs/{job_id}" in endpoints and "/v1/detect/image" in endpoints

    labels = {v for samples in after.values() for s in samples for v in s.labels.values()}
    for secret in (server_account.user_id, server_account.email, server_account.key, FAKE_JOB):
        assert not [v for v in labels if secret in v], secret


def test_a_token_guards_bentomls_metrics_route(model_store, bentoml_home, tmp_path) -> None:
    """BentoML answers /metrics ahead of the app: the token is checked in front of its route."""
    token = "e2e-scrape-token-0123456789"
    server = bentoml_serve(
        bentoml_home,
        tmp_path,
        # Only the default image model: this server answers scrapes, not detections.
        env={
            "VERITY_METRICS_TOKEN": token,
            "VERITY_IMAGE_MODELS": "",
            "VERITY_AUDIO_MODEL": "",
            "VERITY_TEXT_MODEL": "",
            "VERITY_VIDEO_MODEL": "",
        },
    )
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            refused = client.get("/metrics")
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthenticated"
            assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
            allowed = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert allowed.status_code == 200 and "verity_request_duration_seconds" in allowed.text
            assert client.get("/health/ready").status_code == 200  # nothing else needs it
    finally:
        server.stop()
