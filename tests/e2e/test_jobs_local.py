"""Durable jobs on the embedded default (SQLite, local blobs, no queue service): the API in
process, the jobs run by ``python -m jobs.worker`` processes that find them by scanning the store.
A worker SIGKILLed in the middle of a job loses nothing: the job runs again, once, after its lease."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.servers import server_env
from tests.e2e.workers import api_client, kill_group, settings_with, wait_for_job, worker_process
from tests.media_factory import jpeg_bytes
from tests.receiver import Receiver
from tests.video_factory import long_clip

pytestmark = pytest.mark.e2e

LEASE_S = 3


@pytest.fixture(scope="module")
def local_env(model_store, bentoml_home: Path, tmp_path_factory) -> dict[str, str]:
    state = tmp_path_factory.mktemp("jobs-local")
    return {
        "VERITY_SQLITE_PATH": str(state / "verity.db"),
        "VERITY_BLOB_DIR": str(state / "blobs"),
        "VERITY_QUEUE": "local",
        "VERITY_JOB_WORKERS": "0",  # the API runs none: only the worker processes do
        "VERITY_JOB_LEASE_S": str(LEASE_S),
        "VERITY_RATE_LIMIT_JOBS_PER_MIN": "1000",
    }


@pytest.fixture(scope="module")
def api(local_env: dict[str, str]) -> Iterator[Any]:
    with api_client(settings_with(local_env), "jobs") as client:
        yield client


def worker_env(local_env: dict[str, str], bentoml_home: Path) -> dict[str, str]:
    return {**server_env(bentoml_home), **local_env, "VERITY_JOB_WORKERS": "1"}


def upload(api: Any, data: bytes, content_type: str = "video/mp4") -> str:
    form = api.post(
        "/v1/uploads", json={"filename": "long.mp4", "content_type": content_type, "size": len(data)}
    )
    assert form.status_code == 201, form.text
    form = form.json()
    sent = api.post(form["url"], data=form["fields"], files={"file": ("long.mp4", data, content_type)})
    assert sent.status_code == 204, sent.text
    return form["upload_id"]


def test_a_worker_killed_mid_job_loses_nothing(api: Any, local_env, bentoml_home: Path, tmp_path) -> None:
    job = api.post(
        "/v1/jobs", json={"upload_id": upload(api, long_clip()), "modality": "video", "options": {"fps": 2}}
    ).json()
    env = worker_env(local_env, bentoml_home)
    with worker_process(env, tmp_path / "first.log") as first:
        running = wait_for_job(api.get, job["id"], ("running", "succeeded", "failed"))
        assert running["status"] == "running", running
        kill_group(first)
    assert api.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"  # nobody said otherwise
    with worker_process(env, tmp_path / "second.log"):
        done = wait_for_job(api.get, job["id"], ("succeeded", "failed"))
    assert done["status"] == "succeeded", (done, (tmp_path / "second.log").read_text()[-3000:])
    assert done["attempts"] == 2
    assert done["result"]["media"]["frames_analyzed"] == 120  # 60 s at 2 fps, read from the file
    history = api.get("/v1/history?limit=100").json()["items"]
    assert [item["id"] for item in history].count(done["result"]["id"]) == 1  # completed once


def test_webhook_retries_survive_a_worker_restart(api: Any, local_env, bentoml_home: Path, tmp_path) -> None:
    """The first delivery fails (500) and its worker dies before the retry: the next worker finds
    the due delivery in the store and sends it, with the same webhook-id."""
    api.post("/v1/webhook-secret")
    env = {
        **worker_env(local_env, bentoml_home),
        "VERITY_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "VERITY_WEBHOOK_BACKOFF_S": "1",
    }
    with Receiver(statuses=[500]) as receiver:
        image = upload(api, jpeg_bytes(seed=31), "image/jpeg")
        job = api.post(
            "/v1/jobs", json={"upload_id": image, "modality": "image", "webhook_url": receiver.url}
        ).json()
        with worker_process(env, tmp_path / "first.log") as first:
            wait_until(lambda: bool(delivery_of(api, job["id"])["attempts"]))  # the 500, recorded
            kill_group(first)
        with worker_process(env, tmp_path / "second.log"):
            wait_until(lambda: delivery_of(api, job["id"])["status"] == "delivered")
    delivery = delivery_of(api, job["id"])
    assert [a["status"] for a in delivery["attempts"]] == [500, 200]
    assert len(receiver.received) == 2 and len({r.headers["webhook-id"] for r in receiver.received}) == 1


def delivery_of(api: Any, job_id: str) -> dict:
    deliveries = api.get(f"/v1/jobs/{job_id}").json()["webhook"]["deliveries"]
    return deliveries[0] if deliveries else {"status": "none", "attempts": []}


def wait_until(condition: Callable[[], bool], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
