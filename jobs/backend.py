"""Everything jobs need besides the models: the record stores, the blobs and the queue, made
from settings once per process and shared by the API routes and the workers."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from blobs.base import BlobStore
from blobs.factory import make_blobs
from config import Settings
from jobs.queue import Queue, make_queue, message
from store.base import Store
from store.factory import JobStores, make_job_stores
from store.records import Delivery, Job

log = logging.getLogger(__name__)


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class JobsBackend:
    settings: Settings
    accounts: Store  # history: a finished job's result lands there like any detection
    stores: JobStores
    blobs: BlobStore
    queue: Queue
    clock: Any = time.time

    @classmethod
    def from_settings(cls, settings: Settings, accounts: Store) -> JobsBackend:
        return cls(settings, accounts, make_job_stores(settings), make_blobs(settings), make_queue(settings))

    def notify(self, job: Job) -> Delivery | None:
        """The webhook of a finished (or canceled) job: stored once per job event, so a worker's
        retry or a duplicate message finds the same delivery (same ``webhook-id``), then queued."""
        if not job.webhook_url:
            return None
        event = f"job.{job.status}"
        delivery = self.stores.webhooks.add_delivery(
            Delivery(
                id=f"msg_{job.id.removeprefix('job_')}",
                user_id=job.user_id,
                job_id=job.id,
                url=job.webhook_url,
                event=event,
                payload={"type": event, "timestamp": job.finished_at or iso_now(), "data": job_document(job)},
                created_at=iso_now(),
                next_attempt_at=self.clock(),
            )
        )
        self.queue.send(message("webhook", job.user_id, delivery.id))
        return delivery

    def delete_user_media(self, user_id: str) -> None:
        """Before an account goes: its uploaded media (records go with the account)."""
        for upload in self.stores.uploads.list_uploads(user_id):
            self.blobs.delete(upload.blob_key)


def job_document(job: Job, deliveries: list[Delivery] | None = None) -> dict[str, Any]:
    """A job as the API shows it: status, progress, attempts, the result or a typed error, and
    the webhook's delivery attempts."""
    document: dict[str, Any] = {
        "id": job.id,
        "status": job.status,
        "modality": job.modality,
        "upload_id": job.upload_id,
        "options": job.options,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "progress": round(job.progress, 4),
        "result": job.result,
        "error": job.error,
        "webhook": None,
    }
    if job.webhook_url:
        document["webhook"] = {
            "url": job.webhook_url,
            "deliveries": [d.public() for d in deliveries or []],
        }
    return document
