"""Verity's series move through the API in-process (``client``: BentoML's ASGI app), read from this
process's registry; the in-process app (``create_inprocess_app``'s, the Lambda handler's) answers
``/metrics`` itself; log lines carry the request id and the job id."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

import metrics
from config import Settings
from logs import log_handler
from tests.audio_factory import wav_header
from tests.conftest import assert_error
from tests.http.test_jobs import uploaded, wait_for
from tests.media_factory import jpeg_bytes
from tests.receiver import Receiver

pytestmark = pytest.mark.http

DETECT_IMAGE = "/v1/detect/image"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def requests_seen(route: str, method: str, status: int) -> float:
    return value("verity_request_duration_seconds_count", route=route, method=method, status=str(status))


def post_image(api, data: bytes, **kwargs):
    return api.post(DETECT_IMAGE, files={"image": ("face.jpg", data, "application/octet-stream")}, **kwargs)


def eventually(check, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout_s} s")
        time.sleep(0.05)


def test_a_detection_moves_its_series(api):
    seen = requests_seen(DETECT_IMAGE, "POST", 200)
    before = {
        verdict: value("verity_detections_total", modality="image", verdict=verdict, model="vit-dima806")
        for verdict in ("FAKE", "REAL", "UNCERTAIN")
    }
    response = post_image(api, jpeg_bytes(seed=31))
    assert response.status_code == 200, response.text
    verdict = response.json()["verdict"]
    labels = {"modality": "image", "verdict": verdict, "model": "vit-dima806"}
    assert value("verity_detections_total", **labels) == before[verdict] + 1
    assert requests_seen(DETECT_IMAGE, "POST", 200) == seen + 1


def test_a_corrupt_image_is_a_media_rejection_by_code(api):
    rejected = value("verity_media_rejections_total", code="corrupt_image")
    seen = requests_seen(DETECT_IMAGE, "POST", 422)
    assert_error(post_image(api, jpeg_bytes()[:400]), 422, "corrupt_image")
    assert value("verity_media_rejections_total", code="corrupt_image") == rejected + 1
    assert requests_seen(DETECT_IMAGE, "POST", 422) == seen + 1
    # A request-shape error is not about media.
    missing = value("verity_media_rejections_total", code="missing_file")
    response = api.post(DETECT_IMAGE, files={"other": ("a.jpg", jpeg_bytes(), "image/jpeg")})
    assert_error(response, 422, "missing_file")
    assert value("verity_media_rejections_total", code="missing_file") == missing == 0


def test_a_quota_rejection_by_kind(client, new_user):
    caller = new_user(daily_limit=1)
    daily = value("verity_quota_rejections_total", kind="daily")
    seen = requests_seen(DETECT_IMAGE, "POST", 429)
    files = {"image": ("face.jpg", jpeg_bytes(seed=32), "application/octet-stream")}
    assert client.post(DETECT_IMAGE, files=files, headers=caller.headers).status_code == 200
    refused = client.post(DETECT_IMAGE, files=files, headers=caller.headers)
    assert_error(refused, 429, "daily_quota_exceeded")
    assert value("verity_quota_rejections_total", kind="daily") == daily + 1
    # Answered by the auth middleware before any routing, and still labelled by its route.
    assert requests_seen(DETECT_IMAGE, "POST", 429) == seen + 1


def test_a_job_moves_the_job_series_and_its_route_is_the_template(api, client):
    succeeded = value("verity_jobs_total", status="succeeded")
    running = value("verity_jobs_total", status="running")
    durations = value("verity_job_duration_seconds_count")
    polled = requests_seen("/v1/jobs/{job_id}", "GET", 200)
    upload_id = uploaded(api, client, jpeg_bytes(seed=33))
    job = api.post("/v1/jobs", json={"upload_id": upload_id, "modality": "image"}).json()
    done = wait_for(api, job["id"])
    assert done["status"] == "succeeded", done
    # The job's record is finished before the runner counts it: wait for the count.
    eventually(lambda: value("verity_jobs_total", status="succeeded") == succeeded + 1)
    assert value("verity_jobs_total", status="running") == running + 1
    assert value("verity_job_duration_seconds_count") == durations + 1
    assert requests_seen("/v1/jobs/{job_id}", "GET", 200) > polled


def test_a_webhook_delivery_outcome(api, client):
    assert api.post("/v1/webhook-secret").status_code == 201
    retrying = value("verity_webhook_deliveries_total", outcome="retrying")
    delivered = value("verity_webhook_deliveries_total", outcome="delivered")
    with Receiver(statuses=[500]) as receiver:
        body = {"upload_id": uploaded(api, client, jpeg_bytes(seed=34)), "modality": "image"}
        job = api.post("/v1/jobs", json={**body, "webhook_url": receiver.url}).json()
        assert wait_for(api, job["id"])["status"] == "succeeded"
        eventually(lambda: value("verity_webhook_deliveries_total", outcome="delivered") == delivered + 1, 30)
    assert value("verity_webhook_deliveries_total", outcome="retrying") == retrying + 1


def test_no_label_holds_a_user_id_key_email_or_record_id(api, client):
    """After a detection, a job and routes with ids in their paths, no label value of any series
    is a user's: no user id, email, key, job or detection id, nor a raw path."""
    detection = post_image(api, jpeg_bytes(seed=35)).json()
    job = api.post(
        "/v1/jobs", json={"upload_id": uploaded(api, client, jpeg_bytes(seed=36)), "modality": "image"}
    )
    wait_for(api, job.json()["id"])
    api.get(f"/v1/history/{detection['id']}")
    api.get(f"/v1/admin/users/{api.account.user_id}")  # 403, and still no id in a label
    api.get(f"/no/such/route/{api.account.user_id}")
    assert requests_seen(metrics.UNMATCHED_ROUTE, "GET", 404) >= 1
    values = {
        label
        for family in text_string_to_metric_families(metrics.exposition().decode())
        if family.name.startswith("verity_")
        for sample in family.samples
        for label in sample.labels.values()
    }
    secrets = (api.account.user_id, api.account.email, api.account.key, detection["id"], job.json()["id"])
    assert not [v for v in values for s in secrets if s in v]
    assert not [v for v in values if v.startswith(("usr_", "det_", "job_", "vk_"))]
    assert "/v1/history/{detection_id}" in values


# --- the in-process app answers /metrics itself -------------------------------------------------
def _inprocess(settings: Settings) -> TestClient:
    """The app as ``create_inprocess_app`` builds it, without its engine (``/metrics`` needs none)."""
    from api.app import create_app

    return TestClient(create_app(settings), raise_server_exceptions=False)


def test_the_inprocess_app_answers_metrics():
    with _inprocess(Settings()) as client:
        client.get("/health")
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {"verity_request_duration_seconds", "verity_detections", "verity_jobs"} <= names


def test_metrics_can_be_off_or_need_a_token():
    with _inprocess(Settings(metrics_enabled=False)) as client:
        assert_error(client.get("/metrics"), 404, "route_not_found")
    with _inprocess(Settings(metrics_token="s3cret-scrape-token")) as client:
        assert_error(client.get("/metrics"), 401, "unauthenticated")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer guess"})
        assert_error(wrong, 401, "invalid_token")
        right = client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape-token"})
        assert right.status_code == 200 and "verity_request_duration_seconds" in right.text


# --- request id and job id on every log line ----------------------------------------------------
@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Every line of the process, through the handler every Verity process logs with, as JSON."""
    stream = io.StringIO()
    handler = log_handler(Settings(log_json=True), stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def ours(record: dict) -> bool:
    """Verity's own lines (BentoML's access log is written outside the app, after the request)."""
    return not record["logger"].startswith(("bentoml", "httpx", "urllib3"))


def test_every_line_of_a_request_carries_its_request_id(api, log_lines):
    request_id = "req-metrics-log-test-1"
    response = api.post(
        "/v1/detect/audio",
        files={"audio": ("call.wav", wav_header(rate=7), "application/octet-stream")},
        headers={"x-request-id": request_id},
    )
    assert_error(response, 422, "bad_sample_rate")
    lines = [r for r in records(log_lines) if ours(r) and "job_id" not in r]  # a job may run meanwhile
    assert lines, "the request logged nothing"
    assert {r.get("request_id") for r in lines} == {request_id}, lines
    # A line from the decoder, deep in media/, on a decode thread: it carries the id too.
    assert any(r["logger"].startswith("media.") for r in lines), [r["logger"] for r in lines]


def test_an_unhandled_error_is_logged_with_its_request_id(api, log_lines, monkeypatch):
    """A bug's 500 is answered (and logged) outside the middleware, after the request's context
    ended: its line still carries the id the client got, and the request counts as a 500."""

    def broken() -> list:
        raise RuntimeError("a bug")

    monkeypatch.setattr("api.app.list_stored", broken)
    seen = requests_seen("/v1/models", "GET", 500)
    response = api.get("/v1/models", headers={"x-request-id": "req-metrics-bug-1"})
    assert_error(response, 500, "internal_error")
    (line,) = [r for r in records(log_lines) if r["message"] == "unhandled error"]
    assert line["request_id"] == "req-metrics-bug-1" and "RuntimeError: a bug" in line["exc_info"]
    assert requests_seen("/v1/models", "GET", 500) == seen + 1


def test_every_line_of_a_job_carries_its_job_id(api, client, log_lines):
    upload_id = uploaded(api, client, wav_header(rate=7), content_type="audio/wav")
    job = api.post("/v1/jobs", json={"upload_id": upload_id, "modality": "audio"}).json()
    failed = wait_for(api, job["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "bad_sample_rate", failed
    # The worker's lines about this job (the submitting request's lines carry its request id).
    lines = [
        r
        for r in records(log_lines)
        if r.get("job_id") == job["id"] or (job["id"] in r["message"] and r["logger"].startswith("jobs."))
    ]
    assert {r.get("job_id") for r in lines} == {job["id"]}, lines
    assert any(r["logger"] == "jobs.runner" for r in lines)
    assert any(r["logger"].startswith("media.") for r in lines), [r["logger"] for r in lines]
    # The runner's lines are the job's, not a request's: the worker runs outside any request.
    assert all("request_id" not in r for r in lines if r["logger"] == "jobs.runner")
