"""The uploads / jobs / webhook-deliveries contract (store/base.py): one suite for SQLite and
DynamoDB (a real ``moto_server``), including the races that durable jobs rely on."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from errors import Conflict
from store.factory import JobStores
from store.ids import new_id
from store.records import Delivery, Job, Upload
from tests.store.test_store_contract import NOW, new_user

pytestmark = pytest.mark.unit

T0 = 1_900_000_000.0  # "now" of these tests, in unix seconds


@pytest.fixture
def stores(backend: str, request, tmp_path: Path) -> Iterator[tuple]:
    """(accounts store, JobStores) over one fresh database."""
    from tests.store.conftest import fresh_store

    with fresh_store(backend, request, tmp_path) as accounts:
        if backend == "sqlite":
            from store.sqlite_jobs import SQLiteJobs, SQLiteUploads, SQLiteWebhooks

            made = JobStores(
                SQLiteUploads(accounts.path), SQLiteJobs(accounts.path), SQLiteWebhooks(accounts.path)
            )
        else:
            from store.dynamodb_jobs import DynamoJobs, DynamoUploads, DynamoWebhooks

            options = {
                "region": "us-east-1",
                "endpoint_url": accounts._resource.meta.client.meta.endpoint_url,
            }
            made = JobStores(
                DynamoUploads(accounts.table_name, **options),
                DynamoJobs(accounts.table_name, **options),
                DynamoWebhooks(accounts.table_name, **options),
            )
        yield accounts, made


def make_upload(user_id: str, *, expires_at: float = T0 + 3600, **fields) -> Upload:
    upload_id = new_id("upl")
    return Upload(
        id=upload_id,
        user_id=user_id,
        created_at=NOW,
        expires_at=expires_at,
        blob_key=f"uploads/{user_id}/{upload_id}",
        filename="talk.mp4",
        content_type="video/mp4",
        max_bytes=1000,
        **fields,
    )


def make_job(user_id: str, *, key: str | None = None, request_hash: str = "h1", max_attempts: int = 3) -> Job:
    return Job(
        id=new_id("job"),
        user_id=user_id,
        created_at=NOW,
        updated_at=NOW,
        status="queued",
        modality="video",
        upload_id="upl_x",
        options={"fps": 1},
        max_attempts=max_attempts,
        webhook_url="https://example.com/hook",
        idempotency_key=key,
        request_hash=request_hash,
    )


# --- uploads -------------------------------------------------------------------------------------


def test_upload_round_trip_owner_and_expiry(stores):
    accounts, s = stores
    owner, _, _ = new_user(accounts)
    other, _, _ = new_user(accounts)
    upload = make_upload(owner.id)
    s.uploads.add_upload(upload)
    assert s.uploads.get_upload(owner.id, upload.id, now=T0) == upload
    assert s.uploads.get_upload(other.id, upload.id, now=T0) is None  # someone else's: not found
    assert s.uploads.get_upload(owner.id, upload.id, now=upload.expires_at + 1) is None  # expired
    assert [u.id for u in s.uploads.list_uploads(owner.id)] == [upload.id]
    assert s.uploads.list_uploads(other.id) == []


def test_an_upload_serves_one_job(stores):
    accounts, s = stores
    owner, _, _ = new_user(accounts)
    upload = make_upload(owner.id)
    s.uploads.add_upload(upload)
    assert s.uploads.attach_upload(owner.id, upload.id, "job_a")
    assert s.uploads.attach_upload(owner.id, upload.id, "job_a")  # the same job again: idempotent
    assert not s.uploads.attach_upload(owner.id, upload.id, "job_b")
    s.uploads.detach_upload(owner.id, upload.id, "job_b")  # not its job: no effect
    assert s.uploads.get_upload(owner.id, upload.id, now=T0).job_id == "job_a"
    s.uploads.detach_upload(owner.id, upload.id, "job_a")
    assert s.uploads.attach_upload(owner.id, upload.id, "job_b")
    assert s.uploads.delete_upload(owner.id, upload.id)
    assert not s.uploads.delete_upload(owner.id, upload.id)


def test_expired_uploads_are_found_or_left_to_ttl(stores, backend):
    accounts, s = stores
    owner, _, _ = new_user(accounts)
    old, fresh = make_upload(owner.id, expires_at=T0 - 10), make_upload(owner.id, expires_at=T0 + 10)
    s.uploads.add_upload(old)
    s.uploads.add_upload(fresh)
    expired = [u.id for u in s.uploads.expired_uploads(T0, 100)]
    assert expired == ([old.id] if backend == "sqlite" else [])  # DynamoDB: the table's TTL


# --- jobs ----------------------------------------------------------------------------------------


def test_job_lifecycle(stores):
    accounts, s = stores
    owner, _, _ = new_user(accounts)
    job, created = s.jobs.create_job(make_job(owner.id))
    assert created and s.jobs.get_job(owner.id, job.id) == job
    assert (owner.id, job.id) in s.jobs.pending_jobs(T0, 100)
    claim = s.jobs.claim_job(owner.id, job.id, "w1", T0, 30, NOW)
    assert claim.reason == "claimed" and claim.job.attempts == 1 and claim.job.lease_until == T0 + 30
    assert s.jobs.claim_job(owner.id, job.id, "w2", T0 + 1, 30, NOW).reason == "leased"  # duplicate delivery
    assert s.jobs.renew_lease(owner.id, job.id, "w1", T0 + 60, 0.5)
    assert not s.jobs.renew_lease(owner.id, job.id, "w2", T0 + 60, 0.9)
    assert not s.jobs.finish_job(owner.id, job.id, "w2", status="succeeded", at=NOW, result={"x": 1})
    assert s.jobs.finish_job(owner.id, job.id, "w1", status="succeeded", at=NOW, result={"verdict": "REAL"})
    done = s.jobs.get_job(owner.id, job.id)
    assert done.status == "succeeded" and done.result == {"verdict": "REAL"} and done.progress == 1.0
    assert s.jobs.claim_job(owner.id, job.id, "w3", T0 + 999, 30, NOW).reason == "finished"
    assert (owner.id, job.id) not in s.jobs.pending_jobs(T0 + 999, 100)
    assert s.jobs.cancel_job(owner.id, job.id, NOW).status == "succeeded"  # finished: unchanged


def test_an_expired_lease_lets_another_worker_claim_until_attempts_run_out(stores):
    accounts, s = stores
    owner, _, _ = new_user(accounts)
    job, _ = s.jobs.create_job(make_job(owner.id, max_attempts=2))
    assert s.jobs.claim_job(owner.id, job.id, "w1", T0, 30, NOW).reason == "claimed"
    assert (owner.id, job.id) in s.jobs.pending_jobs(T0 + 31, 100)  # the worker died: candidate again
    second = s.jobs.claim_job(owner.id, job.id, "w2", T0 + 31, 30, NOW)
    assert second.reason == "claimed" and second.job.attempts == 2
    assert not s.jobs.finish_job(owner.id, job.id, "w1", status="succeeded", at=NOW)  # the old holder lost it
    assert s.jobs.claim_job(owner.id, job.id, "w3", T0 + 62, 30, NOW).reason == "exhausted"
    assert not s.jobs.fail_exhausted(owner.id, job.id, T0 + 40, NOW, {"code": "x"})  # still leased then
    assert s.jobs.fail_exhausted(
        owner.id, job.id, T0 + 62, NOW, {"code": "attempts_exhausted", "message": "m"}
    )
    failed = s.jobs.get_job(owner.id, job.id)
    assert failed.status == "failed" and failed.error["code"] == "attempts_exhausted"


def test_release_returns_a_job_to_the_queue(stores):
    accounts, s = stores
    owner, _, _ = new_user(accounts)
    job, _ = s.jobs.create_job(make_job(owner.id))
    s.jobs.claim_job(owner.id, job.id, "w1", T0, 30, NOW)
    assert s.jobs.release_job(owner.id, job.id, "w1", NOW, {"code": "model_unavailable", "message": "m"})
    again = s.jobs.claim_job(owner.id, job.id, "w2", T0 + 1, 30, NOW)
    assert again.reason == "claimed" and again.job.attempts == 2


def test_cancel_stops_the_holder(stores):
    accounts, s = stores
    owner, _, _ = new_user(accounts)
    other, _, _ = new_user(accounts)
    job, _ = s.jobs.create_job(make_job(owner.id))
    s.jobs.claim_job(owner.id, job.id, "w1", T0, 30, NOW)
    assert s.jobs.cancel_job(other.id, job.id, NOW) is None  # not theirs
    assert s.jobs.cancel_job(owner.id, job.id, NOW).status == "canceled"
    assert not s.jobs.renew_lease(owner.id, job.id, "w1", T0 + 60, 0.5)
    assert not s.jobs.finish_job(owner.id, job.id, "w1", status="succeeded", at=NOW)
    assert s.jobs.get_job(owner.id, job.id).status == "canceled"


def test_idempotency_key(stores):
    accounts, s = stores
    owner, _, _ = new_user(accounts)
    other, _, _ = new_user(accounts)
    first, created = s.jobs.create_job(make_job(owner.id, key="k1"))
    again, created_again = s.jobs.create_job(make_job(owner.id, key="k1"))
    assert created and not created_again and again.id == first.id
    with pytest.raises(Conflict):
        s.jobs.create_job(make_job(owner.id, key="k1", request_hash="other body"))
    theirs, created_theirs = s.jobs.create_job(make_job(other.id, key="k1"))  # keys are per user
    assert created_theirs and theirs.id != first.id
    s.jobs.delete_job(owner.id, first.id)  # a failed submission frees its key
    _, created_after = s.jobs.create_job(make_job(owner.id, key="k1"))
    assert created_after


def test_concurrent_submissions_with_one_key_make_one_job(stores):
    accounts, s = stores
    owner, _, _ = new_user(accounts)
    start = threading.Barrier(20)

    def submit(_: int) -> str:
        with contextlib.suppress(threading.BrokenBarrierError):
            start.wait(timeout=30)
        for _ in range(20):  # DynamoDB may answer "another request holds the key": retry
            try:
                return s.jobs.create_job(make_job(owner.id, key="same"))[0].id
            except Exception:
                continue
        raise AssertionError("never answered")

    with ThreadPoolExecutor(max_workers=20) as pool:
        ids = set(pool.map(submit, range(20)))
    assert len(ids) == 1
    assert [j.id for j in s.jobs.list_jobs(owner.id, 50, None).items] == list(ids)


def test_concurrent_claims_have_one_winner(stores):
    accounts, s = stores
    owner, _, _ = new_user(accounts)
    job, _ = s.jobs.create_job(make_job(owner.id))
    start = threading.Barrier(10)

    def claim(i: int) -> str:
        with contextlib.suppress(threading.BrokenBarrierError):
            start.wait(timeout=30)
        return s.jobs.claim_job(owner.id, job.id, f"w{i}", T0, 30, NOW).reason

    with ThreadPoolExecutor(max_workers=10) as pool:
        reasons = list(pool.map(claim, range(10)))
    assert reasons.count("claimed") == 1 and reasons.count("leased") == 9
    assert s.jobs.get_job(owner.id, job.id).attempts == 1


def test_list_jobs_newest_first_with_pages_and_owners(stores):
    accounts, s = stores
    owner, _, _ = new_user(accounts)
    other, _, _ = new_user(accounts)
    made = [s.jobs.create_job(make_job(owner.id))[0].id for _ in range(5)]
    s.jobs.create_job(make_job(other.id))
    first = s.jobs.list_jobs(owner.id, 2, None)
    second = s.jobs.list_jobs(owner.id, 2, first.next_cursor)
    third = s.jobs.list_jobs(owner.id, 2, second.next_cursor)
    seen = [j.id for page in (first, second, third) for j in page.items]
    assert seen == sorted(made, reverse=True) and third.next_cursor is None
    assert s.jobs.get_job(other.id, made[0]) is None


# --- webhooks ------------------------------------------------------------------------------------


def make_delivery(user_id: str, job_id: str, due: float = T0) -> Delivery:
    return Delivery(
        id=f"msg_{job_id}",
        user_id=user_id,
        job_id=job_id,
        url="https://example.com/hook",
        event="job.succeeded",
        payload={"type": "job.succeeded"},
        created_at=NOW,
        next_attempt_at=due,
    )


def test_webhook_secret_rotates(stores):
    accounts, s = stores
    owner, _, _ = new_user(accounts)
    assert s.webhooks.get_secret(owner.id) is None
    s.webhooks.set_secret(owner.id, "whsec_one", NOW)
    s.webhooks.set_secret(owner.id, "whsec_two", NOW)
    assert s.webhooks.get_secret(owner.id) == "whsec_two"


def test_deliveries_are_stored_once_and_attempts_recorded(stores):
    accounts, s = stores
    owner, _, _ = new_user(accounts)
    delivery = make_delivery(owner.id, "job_1")
    assert s.webhooks.add_delivery(delivery) == delivery
    duplicate = make_delivery(owner.id, "job_1", due=T0 + 500)
    assert s.webhooks.add_delivery(duplicate).next_attempt_at == T0  # the stored one, not a second
    assert s.webhooks.due_deliveries(T0, 10) == [(owner.id, delivery.id)]
    attempt = {"at": NOW, "status": 500, "error": None}
    retried = s.webhooks.record_attempt(
        owner.id, delivery.id, attempt, status="pending", next_attempt_at=T0 + 60
    )
    assert retried.attempts == [attempt]
    assert s.webhooks.due_deliveries(T0 + 1, 10) == []
    assert s.webhooks.due_deliveries(T0 + 60, 10) == [(owner.id, delivery.id)]
    done = s.webhooks.record_attempt(owner.id, delivery.id, attempt, status="delivered", next_attempt_at=None)
    assert done.status == "delivered" and len(done.attempts) == 2
    assert (
        s.webhooks.record_attempt(owner.id, delivery.id, attempt, status="failed", next_attempt_at=None)
        is None
    )
    assert s.webhooks.due_deliveries(T0 + 9999, 10) == []
    assert [d.id for d in s.webhooks.list_deliveries(owner.id, "job_1")] == [delivery.id]


def test_deleting_a_user_removes_uploads_jobs_and_deliveries(stores):
    accounts, s = stores
    owner, _, _ = new_user(accounts)
    upload = make_upload(owner.id)
    s.uploads.add_upload(upload)
    job, _ = s.jobs.create_job(make_job(owner.id, key="k"))
    s.webhooks.add_delivery(make_delivery(owner.id, job.id))
    s.webhooks.set_secret(owner.id, "whsec_x", NOW)
    assert accounts.delete_user(owner.id)
    assert s.uploads.get_upload(owner.id, upload.id, now=T0) is None
    assert s.jobs.get_job(owner.id, job.id) is None
    assert s.webhooks.list_deliveries(owner.id, job.id) == []
    assert s.webhooks.get_secret(owner.id) is None
    for user_id, job_id in s.jobs.pending_jobs(T0, 100):  # what is left is a pointer to nothing
        assert s.jobs.claim_job(user_id, job_id, "w", T0, 30, NOW).reason == "missing"


# --- throttles of the unauthenticated routes -------------------------------------------------------


@pytest.fixture
def throttles(backend: str, request, tmp_path: Path) -> Iterator:
    from tests.store.conftest import fresh_store

    with fresh_store(backend, request, tmp_path) as accounts:
        if backend == "sqlite":
            from store.sqlite_throttles import SQLiteThrottles

            yield SQLiteThrottles(accounts.path)
        else:
            from store.dynamodb_throttles import DynamoThrottles

            endpoint = accounts._resource.meta.client.meta.endpoint_url
            yield DynamoThrottles(accounts.table_name, region="us-east-1", endpoint_url=endpoint)


def test_throttle_counts_up_to_its_limit_per_bucket(throttles):
    hits = [throttles.hit("ip:203.0.113.9", "auth:203001011200", 3, 1_900_000_100) for _ in range(4)]
    assert hits == [(True, 1), (True, 2), (True, 3), (False, 3)]
    assert throttles.hit("ip:203.0.113.9", "auth:203001011201", 3, 1_900_000_160) == (True, 1)  # next minute
    assert throttles.hit("ip:203.0.113.10", "auth:203001011200", 3, 1_900_000_100) == (True, 1)  # other key


def test_throttle_never_overshoots_under_concurrency(throttles):
    start = threading.Barrier(20)

    def one(_: int) -> bool:
        with contextlib.suppress(threading.BrokenBarrierError):
            start.wait(timeout=30)
        return throttles.hit("email:x", "login:2030010112", 10, 1_900_007_200)[0]

    with ThreadPoolExecutor(max_workers=20) as pool:
        allowed = list(pool.map(one, range(20)))
    assert allowed.count(True) == 10


def test_login_failures_count_and_clear(throttles):
    assert throttles.failures("email:y") == (0, None)
    assert [throttles.add_failure("email:y", T0 + i, int(T0) + 86400) for i in range(3)] == [1, 2, 3]
    assert throttles.failures("email:y") == (3, T0 + 2)
    throttles.clear_failures("email:y")
    assert throttles.failures("email:y") == (0, None)
