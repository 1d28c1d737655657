"""SQLite backends for uploads, jobs and webhook deliveries: tables in the same file as the
accounts (``store.sqlite``), each row owned by a user and removed with them (``ON DELETE CASCADE``).

Every state change of a job is one ``UPDATE ... WHERE`` naming the state it expects, inside an
``IMMEDIATE`` transaction where it reads first, so concurrent workers and processes serialise on
the database lock and exactly one of them wins.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from errors import Conflict
from store import transitions
from store.base import JobStore, UploadStore, WebhookStore
from store.records import Claim, Delivery, Job, JobStatus, Page, Upload
from store.sqlite import SQLiteDatabase

_UPLOADS = """
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL, expires_at REAL NOT NULL, blob_key TEXT NOT NULL, filename TEXT NOT NULL,
    content_type TEXT NOT NULL, max_bytes INTEGER NOT NULL, keep INTEGER NOT NULL, job_id TEXT
);
CREATE INDEX IF NOT EXISTS uploads_user ON uploads(user_id);
CREATE INDEX IF NOT EXISTS uploads_expiry ON uploads(expires_at);
"""

# The job's full record is the JSON document; the columns the conditions and queries need are
# kept beside it (and win over the document when read back).
_JOBS = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    status TEXT NOT NULL, attempts INTEGER NOT NULL, max_attempts INTEGER NOT NULL,
    lease_until REAL, worker TEXT, idempotency_key TEXT, document TEXT NOT NULL,
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS jobs_user ON jobs(user_id, id DESC);
CREATE INDEX IF NOT EXISTS jobs_pending ON jobs(status, lease_until);
"""

_WEBHOOKS = """
CREATE TABLE IF NOT EXISTS webhook_secrets (
    user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE, secret TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    job_id TEXT NOT NULL, status TEXT NOT NULL, next_attempt_at REAL, document TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_job ON deliveries(user_id, job_id);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(status, next_attempt_at);
"""

_JOB_COLUMNS = ("status", "attempts", "max_attempts", "lease_until", "worker", "idempotency_key")


def _upload(row: sqlite3.Row) -> Upload:
    values = {k: row[k] for k in row.keys()}  # noqa: SIM118 - sqlite3.Row is not a Mapping
    values["keep"] = bool(values["keep"])
    return Upload(**values)


def _job(row: sqlite3.Row) -> Job:
    document = json.loads(row["document"])
    document.update({k: row[k] for k in _JOB_COLUMNS})
    return Job(**document)


def _job_row(job: Job) -> tuple[Any, ...]:
    document = json.dumps(job.__dict__)
    return (job.id, job.user_id, *(getattr(job, k) for k in _JOB_COLUMNS), document)


class SQLiteUploads(SQLiteDatabase, UploadStore):
    schema = _UPLOADS

    def add_upload(self, upload: Upload) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    upload.id,
                    upload.user_id,
                    upload.created_at,
                    upload.expires_at,
                    upload.blob_key,
                    upload.filename,
                    upload.content_type,
                    upload.max_bytes,
                    int(upload.keep),
                    upload.job_id,
                ),
            )

    def get_upload(self, user_id: str, upload_id: str, *, now: float) -> Upload | None:
        rows = self._read(
            "SELECT * FROM uploads WHERE id = ? AND user_id = ? AND expires_at > ?", (upload_id, user_id, now)
        )
        return _upload(rows[0]) if rows else None

    def attach_upload(self, user_id: str, upload_id: str, job_id: str) -> bool:
        with self._tx(immediate=True) as db:
            changed = db.execute(
                "UPDATE uploads SET job_id = ? "
                "WHERE id = ? AND user_id = ? AND (job_id IS NULL OR job_id = ?)",
                (job_id, upload_id, user_id, job_id),
            ).rowcount
        return changed > 0

    def detach_upload(self, user_id: str, upload_id: str, job_id: str) -> None:
        with self._tx(immediate=True) as db:
            db.execute(
                "UPDATE uploads SET job_id = NULL WHERE id = ? AND user_id = ? AND job_id = ?",
                (upload_id, user_id, job_id),
            )

    def delete_upload(self, user_id: str, upload_id: str) -> bool:
        with self._tx() as db:
            return (
                db.execute("DELETE FROM uploads WHERE id = ? AND user_id = ?", (upload_id, user_id)).rowcount
                > 0
            )

    def list_uploads(self, user_id: str) -> list[Upload]:
        return [
            _upload(r) for r in self._read("SELECT * FROM uploads WHERE user_id = ? ORDER BY id", (user_id,))
        ]

    def expired_uploads(self, now: float, limit: int) -> list[Upload]:
        rows = self._read(
            "SELECT * FROM uploads WHERE expires_at <= ? ORDER BY expires_at LIMIT ?", (now, limit)
        )
        return [_upload(r) for r in rows]


class SQLiteJobs(SQLiteDatabase, JobStore):
    schema = _JOBS

    def _one(self, db: sqlite3.Connection, user_id: str, job_id: str) -> Job | None:
        row = db.execute("SELECT * FROM jobs WHERE id = ? AND user_id = ?", (job_id, user_id)).fetchone()
        return _job(row) if row else None

    def _write(self, db: sqlite3.Connection, job: Job) -> None:
        db.execute(
            "UPDATE jobs SET status = ?, attempts = ?, max_attempts = ?, lease_until = ?, worker = ?, "
            "idempotency_key = ?, document = ? WHERE id = ? AND user_id = ?",
            (*_job_row(job)[2:], job.id, job.user_id),
        )

    def create_job(self, job: Job) -> tuple[Job, bool]:
        with self._tx(immediate=True) as db:
            if job.idempotency_key is not None:
                row = db.execute(
                    "SELECT * FROM jobs WHERE user_id = ? AND idempotency_key = ?",
                    (job.user_id, job.idempotency_key),
                ).fetchone()
                if row is not None:
                    existing = _job(row)
                    if existing.request_hash != job.request_hash:
                        raise Conflict(
                            "this Idempotency-Key was used with a different request",
                            code="idempotency_key_reused",
                        )
                    return existing, False
            db.execute("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", _job_row(job))
        return job, True

    def delete_job(self, user_id: str, job_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE id = ? AND user_id = ?", (job_id, user_id))

    def get_job(self, user_id: str, job_id: str) -> Job | None:
        rows = self._read("SELECT * FROM jobs WHERE id = ? AND user_id = ?", (job_id, user_id))
        return _job(rows[0]) if rows else None

    def list_jobs(self, user_id: str, limit: int, cursor: str | None) -> Page:
        if cursor:
            rows = self._read(
                "SELECT * FROM jobs WHERE user_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
                (user_id, cursor, limit + 1),
            )
        else:
            rows = self._read(
                "SELECT * FROM jobs WHERE user_id = ? ORDER BY id DESC LIMIT ?", (user_id, limit + 1)
            )
        jobs = [_job(r) for r in rows[:limit]]
        return Page(jobs, jobs[-1].id if len(rows) > limit else None)

    def _apply(self, user_id: str, job_id: str, change: Callable[[Job], bool]) -> bool:
        """One state change (``store.transitions``) on the job, read and written in one transaction."""
        with self._tx(immediate=True) as db:
            job = self._one(db, user_id, job_id)
            if job is None or not change(job):
                return False
            self._write(db, job)
            return True

    def cancel_job(self, user_id: str, job_id: str, at: str) -> Job | None:
        with self._tx(immediate=True) as db:
            job = self._one(db, user_id, job_id)
            if job is not None and transitions.cancel(job, at):
                self._write(db, job)
            return job

    def claim_job(self, user_id: str, job_id: str, worker: str, now: float, lease_s: float, at: str) -> Claim:
        with self._tx(immediate=True) as db:
            job = self._one(db, user_id, job_id)
            if job is None:
                return Claim(None, "missing")
            claim = transitions.claim(job, worker, now, lease_s, at)
            if claim.reason == "claimed":
                self._write(db, job)
            return claim

    def renew_lease(
        self, user_id: str, job_id: str, worker: str, lease_until: float, progress: float
    ) -> bool:
        return self._apply(user_id, job_id, lambda job: transitions.renew(job, worker, lease_until, progress))

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
        return self._apply(
            user_id, job_id, lambda job: transitions.finish(job, worker, status, at, result, error)
        )

    def release_job(self, user_id: str, job_id: str, worker: str, at: str, error: dict[str, Any]) -> bool:
        return self._apply(user_id, job_id, lambda job: transitions.release(job, worker, at, error))

    def fail_exhausted(self, user_id: str, job_id: str, now: float, at: str, error: dict[str, Any]) -> bool:
        return self._apply(user_id, job_id, lambda job: transitions.fail_exhausted(job, now, at, error))

    def pending_jobs(self, now: float, limit: int) -> list[tuple[str, str]]:
        rows = self._read(
            "SELECT user_id, id FROM jobs "
            "WHERE status = 'queued' OR (status = 'running' AND lease_until <= ?) "
            "ORDER BY id LIMIT ?",
            (now, limit),
        )
        return [(r["user_id"], r["id"]) for r in rows]

    def forget_pending(self, user_id: str, job_id: str) -> None:
        """Nothing to do: a deleted user's jobs went with them."""


class SQLiteWebhooks(SQLiteDatabase, WebhookStore):
    schema = _WEBHOOKS

    def set_secret(self, user_id: str, secret: str, at: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO webhook_secrets VALUES (?, ?, ?) "
                "ON CONFLICT(user_id) DO UPDATE "
                "SET secret = excluded.secret, created_at = excluded.created_at",
                (user_id, secret, at),
            )

    def get_secret(self, user_id: str) -> str | None:
        rows = self._read("SELECT secret FROM webhook_secrets WHERE user_id = ?", (user_id,))
        return rows[0]["secret"] if rows else None

    @staticmethod
    def _delivery(row: sqlite3.Row) -> Delivery:
        document = json.loads(row["document"])
        document.update(status=row["status"], next_attempt_at=row["next_attempt_at"])
        return Delivery(**document)

    def add_delivery(self, delivery: Delivery) -> Delivery:
        with self._tx(immediate=True) as db:
            row = db.execute(
                "SELECT * FROM deliveries WHERE id = ? AND user_id = ?", (delivery.id, delivery.user_id)
            ).fetchone()
            if row is not None:
                return self._delivery(row)
            db.execute(
                "INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, ?)",
                (
                    delivery.id,
                    delivery.user_id,
                    delivery.job_id,
                    delivery.status,
                    delivery.next_attempt_at,
                    json.dumps(delivery.__dict__),
                ),
            )
        return delivery

    def get_delivery(self, user_id: str, delivery_id: str) -> Delivery | None:
        rows = self._read("SELECT * FROM deliveries WHERE id = ? AND user_id = ?", (delivery_id, user_id))
        return self._delivery(rows[0]) if rows else None

    def list_deliveries(self, user_id: str, job_id: str) -> list[Delivery]:
        rows = self._read(
            "SELECT * FROM deliveries WHERE user_id = ? AND job_id = ? ORDER BY id", (user_id, job_id)
        )
        return [self._delivery(r) for r in rows]

    def record_attempt(
        self,
        user_id: str,
        delivery_id: str,
        attempt: dict[str, Any],
        *,
        status: str,
        next_attempt_at: float | None,
    ) -> Delivery | None:
        with self._tx(immediate=True) as db:
            row = db.execute(
                "SELECT * FROM deliveries WHERE id = ? AND user_id = ?", (delivery_id, user_id)
            ).fetchone()
            delivery = self._delivery(row) if row is not None else None
            if delivery is None or not transitions.record_attempt(delivery, attempt, status, next_attempt_at):
                return None
            db.execute(
                "UPDATE deliveries SET status = ?, next_attempt_at = ?, document = ? WHERE id = ?",
                (status, next_attempt_at, json.dumps(delivery.__dict__), delivery_id),
            )
            return delivery

    def due_deliveries(self, now: float, limit: int) -> list[tuple[str, str]]:
        rows = self._read(
            "SELECT user_id, id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ? "
            "ORDER BY next_attempt_at LIMIT ?",
            (now, limit),
        )
        return [(r["user_id"], r["id"]) for r in rows]
