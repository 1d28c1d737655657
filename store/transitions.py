"""The job and delivery state machines, one copy for every backend.

Each function decides one change on a record the backend has just read (inside its SQLite
transaction, or before its version-checked DynamoDB write) and applies it in place; it answers
whether there is anything to write. The backends only read and store: what a claim, a renewal or
a finish may do is decided here, so both keep to the same contract (tests/store/).
"""

from __future__ import annotations

from typing import Any

from store.records import Claim, Delivery, Job, JobStatus


def cancel(job: Job, at: str) -> bool:
    """queued/running -> canceled; a finished job stays as it is."""
    if job.terminal:
        return False
    job.status, job.updated_at, job.finished_at, job.lease_until = "canceled", at, at, None
    return True


def claim(job: Job, worker: str, now: float, lease_s: float, at: str) -> Claim:
    """Take a queued job, or a running one whose lease ran out, if it has attempts left (the
    job changes only when the answer is ``claimed``)."""
    if job.terminal:
        return Claim(job, "finished")
    if job.status == "running" and (job.lease_until or 0) > now:
        return Claim(job, "leased")
    if job.attempts >= job.max_attempts:
        return Claim(job, "exhausted")
    job.status, job.worker, job.lease_until = "running", worker, now + lease_s
    job.attempts += 1
    job.updated_at = at
    job.started_at = job.started_at or at
    return Claim(job, "claimed")


def holds(job: Job, worker: str) -> bool:
    return job.status == "running" and job.worker == worker


def renew(job: Job, worker: str, lease_until: float, progress: float) -> bool:
    if not holds(job, worker):
        return False
    job.lease_until, job.progress = lease_until, max(job.progress, progress)
    return True


def finish(
    job: Job,
    worker: str,
    status: JobStatus,
    at: str,
    result: dict[str, Any] | None,
    error: dict[str, Any] | None,
) -> bool:
    if not holds(job, worker):
        return False
    job.status, job.result, job.error, job.lease_until = status, result, error, None
    job.updated_at = job.finished_at = at
    if status == "succeeded":
        job.progress = 1.0
    return True


def release(job: Job, worker: str, at: str, error: dict[str, Any]) -> bool:
    """Back to the queue after a failure that may pass; the attempt is kept."""
    if not holds(job, worker):
        return False
    job.status, job.worker, job.lease_until, job.error, job.updated_at = "queued", None, None, error, at
    return True


def fail_exhausted(job: Job, now: float, at: str, error: dict[str, Any]) -> bool:
    """Fail a job with no attempts left that nobody holds."""
    if job.terminal or job.attempts < job.max_attempts:
        return False
    if job.status == "running" and (job.lease_until or 0) > now:
        return False
    job.status, job.error, job.lease_until = "failed", error, None
    job.updated_at = job.finished_at = at
    return True


def record_attempt(
    delivery: Delivery, attempt: dict[str, Any], status: str, next_attempt_at: float | None
) -> bool:
    """Append a delivery attempt; only a pending delivery takes one."""
    if delivery.status != "pending":
        return False
    delivery.attempts.append(attempt)
    delivery.status, delivery.next_attempt_at = status, next_attempt_at  # type: ignore[assignment]
    return True
