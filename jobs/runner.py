"""The worker's side of jobs: handle one queue message, whatever the queue.

A ``job`` message runs the job once a lease on it is claimed in the store (a conditional update),
so a duplicate delivery or a second worker finds it ``leased`` or ``finished`` and does nothing.
While it runs, a heartbeat renews the lease and reports progress; a worker killed mid-job stops
renewing, the lease runs out, and the next claim (the queue's redelivery, or the local workers'
scan) runs it again, until ``max_attempts`` runs have been made. Bad media fails its job with the
same typed error the inline API gives; it never fails the worker.

A ``webhook`` message makes one delivery attempt of a job's event; a failed attempt that may pass
is retried after an exponential, jittered delay with the same ``webhook-id``, until
``VERITY_WEBHOOK_MAX_ATTEMPTS``. Attempts are recorded on the delivery (``GET /v1/jobs/{id}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

import metrics
from auth.quotas import cost_units, counter_expiry
from detect.engine import Engine
from detect.files import detect_file, modality_of
from errors import VerityError
from jobs.backend import JobsBackend, iso_now
from logs import job_context
from store.ids import new_id
from store.records import Delivery, Detection, Job
from webhooks.delivery import deliver, is_retryable, retry_delay_s
from webhooks.signing import sign_headers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """``retry_at`` None: the message is handled (delete it). Otherwise handle it again then
    (unix seconds): the queue re-sends it with a delay."""

    retry_at: float | None = None


DONE = Outcome()
# A job that failed with one of these failed on the server's side, not because of its media.
SERVER_FAILURES = frozenset({"worker_error", "attempts_exhausted"})
JOB_RETRY_BASE_S = 10.0  # a run stopped by an outage is retried after ~10 s, ~20 s, ... (jittered)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{new_id('w')[-8:]}"


class JobRunner:
    def __init__(self, backend: JobsBackend, engine: Engine, worker: str | None = None) -> None:
        self.backend = backend
        self.engine = engine
        self.settings = backend.settings
        self.worker = worker or worker_name()

    async def handle(self, body: dict[str, Any]) -> Outcome:
        kind, user_id, record_id = body.get("kind"), body.get("user_id"), body.get("id")
        if not isinstance(user_id, str) or not isinstance(record_id, str):
            log.warning("dropping a malformed queue message: %r", body)
            return DONE
        if kind == "job":
            return await self.run_job(user_id, record_id)
        if kind == "webhook":
            return await self.deliver_webhook(user_id, record_id)
        log.warning("dropping a queue message of unknown kind: %r", body)
        return DONE

    # -- jobs ----------------------------------------------------------------------------------------
    async def run_job(self, user_id: str, job_id: str) -> Outcome:
        with job_context(job_id):  # every line logged while it runs carries the job id
            return await self._run_job(user_id, job_id)

    async def _run_job(self, user_id: str, job_id: str) -> Outcome:
        """One claim and run of a job. Its status transitions are counted here
        (``verity_jobs_total``), each where the store accepted it."""
        jobs = self.backend.stores.jobs
        lease_s = self.settings.job_lease_s
        claim = await anyio.to_thread.run_sync(
            jobs.claim_job, user_id, job_id, self.worker, self.backend.clock(), lease_s, iso_now()
        )
        if claim.reason == "missing":
            await anyio.to_thread.run_sync(jobs.forget_pending, user_id, job_id)
            return DONE
        if claim.reason == "finished":
            return DONE  # a duplicate delivery
        if claim.reason == "leased":
            # Another worker holds it. Look again when its lease ends: if that worker died, this
            # message is what brings the job back (it must not be dropped).
            return Outcome((claim.job.lease_until or self.backend.clock()) + 1)
        if claim.reason == "exhausted":
            error = {
                "code": "attempts_exhausted",
                "message": f"the job's {claim.job.max_attempts} runs all stopped",
            }
            failed = await anyio.to_thread.run_sync(
                jobs.fail_exhausted, user_id, job_id, self.backend.clock(), iso_now(), error
            )
            if failed:
                assert claim.job is not None
                metrics.job_status("failed")
                await self._settle(claim.job, 0)  # the server's failure: the job costs nothing
                await self._after_finish(user_id, job_id)
            return DONE
        job = claim.job
        assert job is not None
        log.info("job %s claimed (attempt %d/%d)", job.id, job.attempts, job.max_attempts)
        metrics.job_status("running")
        claimed_at = time.monotonic()
        progress = _Progress()
        heartbeat = asyncio.create_task(self._heartbeat(job, progress))
        try:
            status, result, error = await self._execute(job, progress)
        except Exception as exc:  # a bug or an outage, not the media: give the job another run
            log.exception("job %s attempt %d stopped", job.id, job.attempts)
            error = {"code": "worker_error", "message": f"the run stopped: {type(exc).__name__}"}
            if job.attempts >= job.max_attempts:
                status, result = "failed", None
            else:
                released = await anyio.to_thread.run_sync(
                    jobs.release_job, user_id, job_id, self.worker, iso_now(), error
                )
                if released:
                    metrics.job_status("retrying")
                    delay = retry_delay_s(job.attempts, JOB_RETRY_BASE_S)
                    return Outcome(self.backend.clock() + delay)
                return DONE
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        if result is not None:
            result["cost_units"] = cost_units(result)
            self.engine.sign(result)  # last: nothing changes in a signed result
        finished = await anyio.to_thread.run_sync(
            lambda: jobs.finish_job(
                user_id, job_id, self.worker, status=status, at=iso_now(), result=result, error=error
            )
        )
        if not finished:
            log.info("job %s was canceled or taken over meanwhile; its outcome is dropped", job.id)
            await self._release_media(job)
            return DONE
        metrics.job_status(status, time.monotonic() - claimed_at)
        # The submission paid one unit: a result pays the rest of its cost, the server's own
        # failure gets that unit back, and media that could not be read keeps it spent.
        server_failure = error is not None and error.get("code") in SERVER_FAILURES
        await self._settle(job, 0 if server_failure else result["cost_units"] if result else 1)
        if result is not None:
            await anyio.to_thread.run_sync(self._record_history, job, result)
        await self._after_finish(user_id, job_id)
        return DONE

    async def _execute(self, job: Job, progress: _Progress) -> tuple[str, dict | None, dict | None]:
        """(status, result, error) of one run; media problems are a failed job, not an exception."""
        uploads = self.backend.stores.uploads
        upload = await anyio.to_thread.run_sync(
            lambda: uploads.get_upload(job.user_id, job.upload_id, now=self.backend.clock())
        )
        if upload is None:
            return "failed", None, {"code": "upload_missing", "message": "the upload expired or was deleted"}
        try:
            if await anyio.to_thread.run_sync(self.backend.blobs.size, upload.blob_key) is None:
                message = "the upload's media is gone (it expired or was deleted)"
                return "failed", None, {"code": "upload_missing", "message": message}
            # The context manager's enter/exit (an S3 download) is blocking I/O: a thread each.
            copy = self.backend.blobs.local_copy(upload.blob_key)
            path = await anyio.to_thread.run_sync(copy.__enter__)
            try:
                result = await self._detect(job, path, progress)
            finally:
                await anyio.to_thread.run_sync(copy.__exit__, None, None, None)
        except VerityError as exc:
            if exc.status >= 500:
                raise  # a model service or the store is down: another run may succeed
            log.info("job %s failed: %s (%s)", job.id, exc.message, exc.code)
            return "failed", None, {"code": exc.code, "message": exc.message, "status": exc.status}
        return "succeeded", result, None

    async def _detect(self, job: Job, path: Path, progress: _Progress) -> dict[str, Any]:
        detected = await anyio.to_thread.run_sync(modality_of, path)
        return await detect_file(
            self.engine, path, job.modality, job.options, detected=detected, progress=progress
        )

    async def _heartbeat(self, job: Job, progress: _Progress) -> None:
        every = max(1.0, self.settings.job_lease_s / 3)
        jobs = self.backend.stores.jobs
        while True:
            await asyncio.sleep(every)
            lease_until = self.backend.clock() + self.settings.job_lease_s
            try:
                held = await anyio.to_thread.run_sync(
                    jobs.renew_lease, job.user_id, job.id, self.worker, lease_until, progress.value
                )
            except VerityError:
                log.warning("job %s: lease renewal failed (store); retrying", job.id)
                continue
            if not held:
                log.info("job %s: lease lost (canceled or taken over)", job.id)
                return

    async def _settle(self, job: Job, units: int) -> None:
        """Charge the job's cost on the day it was submitted (the one unit it paid then counts)."""
        if units == 1:
            return
        store = self.backend.accounts
        try:
            await anyio.to_thread.run_sync(
                lambda: store.charge(
                    job.user_id,
                    day=job.created_at[:10],
                    units=units - 1,
                    expires_at=counter_expiry(datetime.now(UTC)),
                )
            )
        except Exception:  # the job's outcome stands; the count is best effort
            log.exception("could not settle the cost of job %s", job.id)

    def _record_history(self, job: Job, result: dict[str, Any]) -> None:
        """A job's result joins its user's history, as an inline detection does (and is counted
        as one: ``verity_detections_total``)."""
        self.backend.accounts.add_detection(
            Detection(
                id=result["id"],
                user_id=job.user_id,
                created_at=result["created_at"],
                modality=result["modality"],
                verdict=result["verdict"],
                fake_probability=result["fake_probability"],
                model_id=result["model"]["id"],
                result=result,
            )
        )
        metrics.detection_answered(result)

    async def _release_media(self, job: Job) -> None:
        """An upload is deleted after its job unless the user asked to keep it."""
        uploads = self.backend.stores.uploads
        upload = await anyio.to_thread.run_sync(
            lambda: uploads.get_upload(job.user_id, job.upload_id, now=self.backend.clock())
        )
        if upload is None or upload.keep:
            return
        await anyio.to_thread.run_sync(self.backend.blobs.delete, upload.blob_key)
        await anyio.to_thread.run_sync(uploads.delete_upload, job.user_id, upload.id)

    async def _after_finish(self, user_id: str, job_id: str) -> None:
        job = await anyio.to_thread.run_sync(self.backend.stores.jobs.get_job, user_id, job_id)
        if job is None:
            return
        await self._release_media(job)
        await anyio.to_thread.run_sync(self.backend.notify, job)

    # -- webhooks ------------------------------------------------------------------------------------
    async def deliver_webhook(self, user_id: str, delivery_id: str) -> Outcome:
        hooks = self.backend.stores.webhooks
        delivery = await anyio.to_thread.run_sync(hooks.get_delivery, user_id, delivery_id)
        if delivery is None or delivery.status != "pending":
            return DONE
        with job_context(delivery.job_id):  # the lines of a job's webhook carry its job id too
            return await self._attempt_delivery(user_id, delivery)

    async def _attempt_delivery(self, user_id: str, delivery: Delivery) -> Outcome:
        """One delivery attempt; its outcome is counted here (``verity_webhook_deliveries_total``)."""
        hooks = self.backend.stores.webhooks
        delivery_id = delivery.id
        now = self.backend.clock()
        if delivery.next_attempt_at and delivery.next_attempt_at > now + 1:
            return Outcome(delivery.next_attempt_at)  # early (a capped queue delay): wait on
        secret = await anyio.to_thread.run_sync(hooks.get_secret, user_id)
        body = json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()
        if secret is None:
            attempt = {
                "at": iso_now(),
                "ok": False,
                "status": None,
                "error": "the account has no webhook secret",
            }
            await anyio.to_thread.run_sync(
                lambda: hooks.record_attempt(
                    user_id, delivery_id, attempt, status="failed", next_attempt_at=None
                )
            )
            metrics.webhook_delivery("failed")
            return DONE
        headers = sign_headers(secret, delivery.id, datetime.now(UTC), body)
        result = await anyio.to_thread.run_sync(
            lambda: deliver(
                delivery.url,
                body,
                headers,
                allowed_hosts=self.settings.webhook_allowed_hosts,
                timeout_s=self.settings.webhook_timeout_s,
            )
        )
        attempt = {
            "at": result.at,
            "ok": result.ok,
            "status": result.status,
            "error": result.error,
            "duration_ms": result.duration_ms,
        }
        number = len(delivery.attempts) + 1
        next_at: float | None = None
        if result.ok:
            status = "delivered"
        elif is_retryable(result) and number < self.settings.webhook_max_attempts:
            status = "pending"
            next_at = self.backend.clock() + retry_delay_s(number, self.settings.webhook_backoff_s)
        else:
            status = "failed"
        log.info(
            "webhook %s attempt %d: %s",
            delivery.id,
            number,
            status if result.ok else result.error or result.status,
        )
        recorded = await anyio.to_thread.run_sync(
            lambda: hooks.record_attempt(
                user_id, delivery_id, attempt, status=status, next_attempt_at=next_at
            )
        )
        metrics.webhook_delivery("retrying" if status == "pending" else status)
        if recorded is not None and next_at is not None:
            return Outcome(next_at)
        return DONE


class _Progress:
    """Progress of the running job (0..1), written by the pipeline, read by the heartbeat."""

    def __init__(self) -> None:
        self.value = 0.0
        self.started = time.monotonic()

    def __call__(self, fraction: float) -> None:
        self.value = max(self.value, min(1.0, float(fraction)))
