"""The store contract. Both backends pass the same suite (tests/store/test_store_contract.py).

Every method that reads or changes a user's data takes the owner's ``user_id`` and only ever
touches that user's records: ownership is enforced here, not left to callers.
Backends raise ``StoreUnavailable`` for outages, so the API fails closed with a 503.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from store.records import (
    ApiKey,
    Claim,
    Delivery,
    Detection,
    Job,
    JobStatus,
    Page,
    QuotaDecision,
    Upload,
    User,
)


class Store(ABC):
    # accounts --------------------------------------------------------------------------------
    @abstractmethod
    def create_user(self, user: User, first_key: ApiKey | None) -> None:
        """Create a user (and their first key) together; ``Conflict`` if the email is taken."""

    @abstractmethod
    def get_user(self, user_id: str) -> User | None: ...

    @abstractmethod
    def get_user_by_email(self, email: str) -> User | None: ...

    @abstractmethod
    def list_users(self, limit: int, cursor: str | None) -> Page: ...

    @abstractmethod
    def update_user(
        self, user_id: str, *, daily_limit: int | None = None, disabled: bool | None = None
    ) -> User | None: ...

    @abstractmethod
    def delete_user(self, user_id: str) -> bool:
        """Delete the user with all their keys, history and lifetime count. The day's and
        minute's quota counters stay until they expire on their own, so that an account deleted
        and made again with the same id (an external identity) does not start the day afresh."""

    # keys ------------------------------------------------------------------------------------
    @abstractmethod
    def add_key(self, key: ApiKey) -> None: ...

    @abstractmethod
    def get_key_by_digest(self, digest: str) -> ApiKey | None: ...

    @abstractmethod
    def list_keys(self, user_id: str) -> list[ApiKey]: ...

    @abstractmethod
    def revoke_key(
        self, user_id: str, key_id: str, at: str, *, expires_at: str | None = None, only_active: bool = False
    ) -> ApiKey | None:
        """Revoke now (``expires_at`` None) or let the key work until ``expires_at`` (roll grace).
        ``only_active`` (a roll): only a key neither revoked nor rolled before, atomically, so that
        of two concurrent rolls one wins; None when the key is missing or (``only_active``) not
        active any more."""

    @abstractmethod
    def touch_key(self, key_id: str, digest: str, at: str) -> None: ...

    # quotas ----------------------------------------------------------------------------------
    @abstractmethod
    def consume(
        self,
        user_id: str,
        *,
        day: str,
        daily_limit: int,
        minute_bucket: str,
        minute_limit: int,
        expires_at: int,
    ) -> QuotaDecision:
        """Atomically count one request against the day and the endpoint-minute; a refused
        request counts against neither."""

    @abstractmethod
    def usage(self, user_id: str, day: str) -> tuple[int, int]:
        """(units used on ``day``, units used ever)."""

    @abstractmethod
    def charge(self, user_id: str, *, day: str, units: int, expires_at: int) -> int:
        """Add ``units`` (negative: give back) to the day's and the lifetime count, never taking
        either below 0 and never refusing (the work is done); the day's new count."""

    # history ---------------------------------------------------------------------------------
    @abstractmethod
    def add_detection(self, detection: Detection) -> None: ...

    @abstractmethod
    def get_detection(self, user_id: str, detection_id: str) -> Detection | None: ...

    @abstractmethod
    def list_detections(self, user_id: str, limit: int, cursor: str | None) -> Page:
        """Newest first; ``cursor`` is the last id of the previous page."""

    @abstractmethod
    def delete_detection(self, user_id: str, detection_id: str) -> bool: ...

    @abstractmethod
    def stats(self, user_id: str) -> dict[str, dict[str, int]]:
        """{modality: {"total": n, "FAKE": n, "REAL": n, ...}}"""

    def ping(self) -> None:
        """Readiness: one cheap read, raising ``StoreUnavailable`` when the store cannot answer."""
        self.get_user("usr_readiness_probe")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class UploadStore(ABC):
    """Upload records, each owned by one user. An upload past ``expires_at`` is gone for its
    owner (``get_upload`` answers None) even before a sweep removes it."""

    @abstractmethod
    def add_upload(self, upload: Upload) -> None: ...

    @abstractmethod
    def get_upload(self, user_id: str, upload_id: str, *, now: float) -> Upload | None: ...

    @abstractmethod
    def attach_upload(self, user_id: str, upload_id: str, job_id: str) -> bool:
        """Give the upload to ``job_id``; False when another job has it already (atomic)."""

    @abstractmethod
    def detach_upload(self, user_id: str, upload_id: str, job_id: str) -> None:
        """Undo ``attach_upload`` (the job could not be created after all)."""

    @abstractmethod
    def delete_upload(self, user_id: str, upload_id: str) -> bool: ...

    @abstractmethod
    def list_uploads(self, user_id: str) -> list[Upload]: ...

    @abstractmethod
    def expired_uploads(self, now: float, limit: int) -> list[Upload]:
        """Uploads of any user past their expiry, for the sweeper. DynamoDB expires them with
        the table's TTL instead (and S3 with the bucket's lifecycle rule): it answers []."""


class JobStore(ABC):
    """Job records. State changes are conditional updates, so that two workers, a duplicate
    queue delivery and a cancel racing a worker can never both win."""

    @abstractmethod
    def create_job(self, job: Job) -> tuple[Job, bool]:
        """Store a new job, or, when ``job.idempotency_key`` was used before by the same user,
        answer the job it made (``created`` False). A reused key with another
        ``request_hash`` raises ``Conflict``."""

    @abstractmethod
    def delete_job(self, user_id: str, job_id: str) -> None:
        """Remove a job that never ran (and its idempotency key): a failed submission."""

    @abstractmethod
    def get_job(self, user_id: str, job_id: str) -> Job | None: ...

    @abstractmethod
    def list_jobs(self, user_id: str, limit: int, cursor: str | None) -> Page:
        """Newest first; ``cursor`` is the last id of the previous page."""

    @abstractmethod
    def cancel_job(self, user_id: str, job_id: str, at: str) -> Job | None:
        """queued/running -> canceled; a finished job is answered unchanged; None when missing."""

    @abstractmethod
    def claim_job(self, user_id: str, job_id: str, worker: str, now: float, lease_s: float, at: str) -> Claim:
        """Take a queued job, or a running one whose lease ran out, if it has attempts left:
        status running, attempts + 1, ``lease_until = now + lease_s``."""

    @abstractmethod
    def renew_lease(
        self, user_id: str, job_id: str, worker: str, lease_until: float, progress: float
    ) -> bool:
        """Extend the lease of a job this worker still holds; False when it does not (canceled,
        or taken over after the lease ran out)."""

    @abstractmethod
    def finish_job(
        self,
        user_id: str,
        job_id: str,
        worker: str,
        *,
        status: JobStatus,
        at: str,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Record the outcome of a job this worker holds (running, same worker); False otherwise."""

    @abstractmethod
    def release_job(self, user_id: str, job_id: str, worker: str, at: str, error: dict[str, Any]) -> bool:
        """Give a held job back to the queue after a failure that may pass (attempt kept)."""

    @abstractmethod
    def fail_exhausted(self, user_id: str, job_id: str, now: float, at: str, error: dict[str, Any]) -> bool:
        """Fail a job with no attempts left that nobody holds (lease run out, or queued)."""

    @abstractmethod
    def pending_jobs(self, now: float, limit: int) -> list[tuple[str, str]]:
        """(user_id, job_id) of jobs that may need a worker: queued, or running past their lease.
        Candidates only: ``claim_job`` decides."""

    @abstractmethod
    def forget_pending(self, user_id: str, job_id: str) -> None:
        """Drop a candidate whose job is gone (its user was deleted)."""


class WebhookStore(ABC):
    """Per-account webhook secrets and the deliveries of job events."""

    @abstractmethod
    def set_secret(self, user_id: str, secret: str, at: str) -> None: ...

    @abstractmethod
    def get_secret(self, user_id: str) -> str | None: ...

    @abstractmethod
    def add_delivery(self, delivery: Delivery) -> Delivery:
        """Store a delivery, or answer the one stored under its id (a job's retry or a duplicate
        queue message must not make a second message with a new ``webhook-id``)."""

    @abstractmethod
    def get_delivery(self, user_id: str, delivery_id: str) -> Delivery | None: ...

    @abstractmethod
    def list_deliveries(self, user_id: str, job_id: str) -> list[Delivery]: ...

    @abstractmethod
    def record_attempt(
        self,
        user_id: str,
        delivery_id: str,
        attempt: dict[str, Any],
        *,
        status: str,
        next_attempt_at: float | None,
    ) -> Delivery | None:
        """Append an attempt to a pending delivery and set its status; None when it is no
        longer pending (another worker finished it)."""

    @abstractmethod
    def due_deliveries(self, now: float, limit: int) -> list[tuple[str, str]]:
        """(user_id, delivery_id) of pending deliveries due at ``now``."""


class ThrottleStore(ABC):
    """Counters for unauthenticated routes (signup, login), keyed by client address or email
    rather than by user, shared by every process and Lambda container that uses the store."""

    @abstractmethod
    def hit(self, key: str, bucket: str, limit: int, expires_at: int) -> tuple[bool, int]:
        """Atomically count one attempt in (``key``, ``bucket``) if it is under ``limit``:
        (allowed, attempts counted including this one when allowed)."""

    @abstractmethod
    def failures(self, key: str) -> tuple[int, float | None]:
        """(consecutive failures, unix time of the last one) for ``key``."""

    @abstractmethod
    def add_failure(self, key: str, at: float, expires_at: int) -> int:
        """One more consecutive failure; the new count."""

    @abstractmethod
    def clear_failures(self, key: str) -> None: ...
