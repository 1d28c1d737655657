"""Uploads and jobs the AWS way, against a real ``moto_server`` process: DynamoDB for the records,
S3 presigned POSTs for the media, SQS (with a dead-letter queue) for the messages. The API is the
in-process app the Lambda handler serves; jobs run in ``python -m jobs.worker`` processes and in
the real Lambda SQS handler (``infra.aws_lambda.handler.sqs``), both in their own interpreters.

moto does not enforce presigned-POST policies, so the policy each form carries is decoded and
checked here (the local backend enforces the same rules itself: tests/http/test_jobs.py).
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.e2e.servers import BIN_DIR, PROJECT_ROOT, server_env
from tests.e2e.workers import api_client, kill_group, settings_with, wait_for_job, worker_process
from tests.media_factory import jpeg_bytes
from tests.store.conftest import _FAKE_AWS_ENV, REGION, MotoServer
from tests.video_factory import long_clip

pytestmark = pytest.mark.e2e

LEASE_S = 4
JOB_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def aws(model_store, bentoml_home: Path) -> Iterator[dict[str, str]]:
    """A moto server with a bucket, a jobs queue + DLQ and a table name: the settings (as
    environment variables) of a deployment that uses them."""
    patch = pytest.MonkeyPatch()
    for name, value in _FAKE_AWS_ENV.items():
        patch.setenv(name, value)  # boto3 in this process (the in-process app) uses them too
    server = MotoServer().start()
    try:
        endpoint = server.endpoint
        suffix = uuid.uuid4().hex[:8]
        bucket, table = f"verity-uploads-{suffix}", f"verity-{suffix}"
        queue = f"{endpoint}/123456789012/verity-jobs-{suffix}"
        env = {
            **_FAKE_AWS_ENV,
            "VERITY_STORE": "dynamodb",
            "VERITY_DYNAMODB_TABLE": table,
            "VERITY_DYNAMODB_ENDPOINT_URL": endpoint,
            "VERITY_DYNAMODB_CREATE_TABLE": "true",
            "VERITY_BLOBS": "s3",
            "VERITY_S3_BUCKET": bucket,
            "VERITY_S3_ENDPOINT_URL": endpoint,
            "VERITY_QUEUE": "sqs",
            "VERITY_SQS_QUEUE_URL": queue,
            "VERITY_SQS_ENDPOINT_URL": endpoint,
            "VERITY_SQS_WAIT_S": "0",  # moto answers one request at a time: no long polls
            "VERITY_JOB_LEASE_S": str(LEASE_S),
            "VERITY_JOB_WORKERS": "0",
            "VERITY_RATE_LIMIT_JOBS_PER_MIN": "1000",
        }
        # The bucket and the queue + DLQ, made the way the README's AWS mode makes them.
        made = provision_with(env)
        env["VERITY_SQS_QUEUE_URL"] = made["queue_url"]
        yield {**env, "_endpoint": endpoint, "_dlq": made["dead_letter_queue_url"]}
    finally:
        server.stop()
        patch.undo()


def provision_with(env: dict[str, str]) -> dict[str, str]:
    from infra.local_aws import provision

    return provision(settings_with(env))


@pytest.fixture(scope="module")
def aws_api(aws: dict[str, str]) -> Iterator[Any]:
    """The in-process app (what the Lambda HTTP handler serves) on the moto-backed settings."""
    with api_client(settings_with(aws), "aws") as client:
        yield client


def worker_env(aws: dict[str, str], bentoml_home: Path) -> dict[str, str]:
    return {**server_env(bentoml_home), **{k: v for k, v in aws.items() if not k.startswith("_")}}


def worker(aws: dict[str, str], bentoml_home: Path, log_path: Path):
    """``python -m jobs.worker`` on the moto-backed settings, stopped (by its PID) when done."""
    return worker_process(worker_env(aws, bentoml_home), log_path)


def s3_upload(api: Any, data: bytes, content_type: str = "image/jpeg") -> dict[str, Any]:
    form = api.post(
        "/v1/uploads", json={"filename": "clip name.jpg", "content_type": content_type, "size": len(data)}
    )
    assert form.status_code == 201, form.text
    form = form.json()
    sent = httpx.post(form["url"], data=form["fields"], files={"file": ("x", data, content_type)}, timeout=30)
    assert sent.status_code == 204, sent.text
    return form


def wait_for(api: Any, job_id: str, until: tuple[str, ...] = ("succeeded", "failed", "canceled")) -> dict:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is still {job['status']}")


def test_presigned_post_policy_is_exact(aws_api: Any, aws: dict[str, str]) -> None:
    data = jpeg_bytes(seed=21)
    started = time.time()
    answer = aws_api.post(
        "/v1/uploads", json={"filename": "../a b.jpg", "content_type": "image/jpeg", "size": len(data)}
    )
    assert answer.status_code == 201, answer.text
    form = answer.json()
    fields = form["fields"]
    policy = json.loads(base64.b64decode(fields["policy"]))
    conditions = policy["conditions"]
    key = fields["key"]
    assert key == f"uploads/{aws_api.user_id}/{form['upload_id']}"  # server-chosen, under the user's prefix
    assert {"key": key} in conditions and {"bucket": aws["VERITY_S3_BUCKET"]} in conditions
    assert {"Content-Type": "image/jpeg"} in conditions and fields["Content-Type"] == "image/jpeg"
    assert ["content-length-range", 1, len(data)] in conditions
    expires = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00")).timestamp()
    assert started + 800 <= expires <= time.time() + 901  # VERITY_UPLOAD_URL_TTL_S (900 s)
    assert form["url"].startswith(aws["_endpoint"])


def test_job_runs_in_a_worker_process_from_sqs(
    aws_api: Any, aws: dict[str, str], bentoml_home: Path, tmp_path
) -> None:
    form = s3_upload(aws_api, jpeg_bytes(seed=22))
    job = aws_api.post("/v1/jobs", json={"upload_id": form["upload_id"], "modality": "image"})
    assert job.status_code == 202, job.text
    with worker(aws, bentoml_home, tmp_path / "worker.log") as process:
        done = wait_for(aws_api, job.json()["id"])
        assert done["status"] == "succeeded", (done, (tmp_path / "worker.log").read_text()[-3000:])
        assert done["result"]["modality"] == "image" and done["attempts"] == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0  # stops cleanly between messages
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=aws["_endpoint"])
    listed = s3.list_objects_v2(Bucket=aws["VERITY_S3_BUCKET"], Prefix=form["fields"]["key"])
    assert listed.get("KeyCount", 0) == 0  # the media went with its job
    history = aws_api.get("/v1/history").json()["items"]
    assert done["result"]["id"] in [item["id"] for item in history]


def test_duplicate_deliveries_run_a_job_once(
    aws_api: Any, aws: dict[str, str], bentoml_home: Path, tmp_path
) -> None:
    form = s3_upload(aws_api, jpeg_bytes(seed=23))
    job = aws_api.post("/v1/jobs", json={"upload_id": form["upload_id"], "modality": "image"}).json()
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=aws["_endpoint"])
    body = json.dumps({"kind": "job", "user_id": aws_api.user_id, "id": job["id"]})
    for _ in range(2):  # SQS is at-least-once: the same message twice more
        sqs.send_message(QueueUrl=aws["VERITY_SQS_QUEUE_URL"], MessageBody=body)
    history_before = len(aws_api.get("/v1/history?limit=100").json()["items"])
    with worker(aws, bentoml_home, tmp_path / "worker.log"):
        done = wait_for(aws_api, job["id"])
        time.sleep(1.0)  # let the duplicates arrive and be dropped
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert len(aws_api.get("/v1/history?limit=100").json()["items"]) == history_before + 1


LAMBDA_SQS_PROBE = """
import json, sys
import boto3
from infra.aws_lambda import handler
from infra.aws_lambda.events import Context

sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=sys.argv[1])
url = sys.argv[2]
records = []
for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
    record = {"messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"],
              "body": message["Body"], "attributes": {"ApproximateReceiveCount": "1"},
              "messageAttributes": {}, "eventSource": "aws:sqs", "awsRegion": "us-east-1",
              "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:verity-jobs"}
    records += [record, {**record, "messageId": record["messageId"] + "-again"}]
records.append({**records[0], "messageId": "not-json", "body": "{nope"})
print("ANSWER " + json.dumps(handler.sqs({"Records": records}, Context())))
"""


def test_lambda_sqs_handler_reports_partial_failures(
    aws_api: Any, aws: dict[str, str], bentoml_home: Path
) -> None:
    form = s3_upload(aws_api, jpeg_bytes(seed=24))
    job = aws_api.post("/v1/jobs", json={"upload_id": form["upload_id"], "modality": "image"}).json()
    done = subprocess.run(
        [str(BIN_DIR / "python"), "-c", LAMBDA_SQS_PROBE, aws["_endpoint"], aws["VERITY_SQS_QUEUE_URL"]],
        cwd=PROJECT_ROOT,
        env=worker_env(aws, bentoml_home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.split("ANSWER ", 1)[1])
    assert answer == {"batchItemFailures": [{"itemIdentifier": "not-json"}]}
    finished = aws_api.get(f"/v1/jobs/{job['id']}").json()
    assert finished["status"] == "succeeded" and finished["attempts"] == 1, finished


def test_a_worker_killed_mid_job_loses_nothing(
    aws_api: Any, aws: dict[str, str], bentoml_home: Path, tmp_path
) -> None:
    """SIGKILL in the middle of a job: the message comes back once its visibility runs out, the
    next worker claims the job once its lease has run out, and the job completes exactly once."""
    form = s3_upload(aws_api, long_clip(), "video/mp4")
    job = aws_api.post(
        "/v1/jobs", json={"upload_id": form["upload_id"], "modality": "video", "options": {"fps": 2}}
    )
    job = job.json()
    with worker(aws, bentoml_home, tmp_path / "first.log") as first:
        running = wait_for_job(aws_api.get, job["id"], ("running", "succeeded", "failed"))
        assert running["status"] == "running", running
        kill_group(first)
    with worker(aws, bentoml_home, tmp_path / "second.log"):
        done = wait_for_job(aws_api.get, job["id"], ("succeeded", "failed"))
    assert done["status"] == "succeeded", (done, (tmp_path / "second.log").read_text()[-3000:])
    assert done["attempts"] == 2 and done["result"]["media"]["frames_analyzed"] == 120
    history = aws_api.get("/v1/history?limit=100").json()["items"]
    assert [item["id"] for item in history].count(done["result"]["id"]) == 1


def test_local_aws_resources_match_the_template(aws: dict[str, str]) -> None:
    """``python -m infra.local_aws`` makes what the template declares: a dead-letter queue after
    five receives, visibility as long as a lease; running it again changes nothing."""
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=aws["_endpoint"])
    attributes = sqs.get_queue_attributes(QueueUrl=aws["VERITY_SQS_QUEUE_URL"], AttributeNames=["All"])[
        "Attributes"
    ]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == 5 and redrive["deadLetterTargetArn"].endswith("-dlq")
    assert attributes["VisibilityTimeout"] == str(LEASE_S)
    assert (
        provision_with({k: v for k, v in aws.items() if not k.startswith("_")})["queue_url"]
        == aws["VERITY_SQS_QUEUE_URL"]
    )
