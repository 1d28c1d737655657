"""DynamoDB backends for uploads, jobs and webhook deliveries, in the accounts' table
(``store.dynamodb``). Items of a user live under the user's partition, so deleting the user
deletes them too.

| pk              | sk                    | holds                                                      |
|-----------------|-----------------------|------------------------------------------------------------|
| ``USER#<id>``   | ``UPL#<upload id>``   | an upload (``ttl``: its expiry)                            |
| ``USER#<id>``   | ``JOB#<job id>``      | a job: ``status``, ``version`` and the JSON ``document``   |
| ``USER#<id>``   | ``IDEM#<key>``        | an Idempotency-Key: ``job_id``, ``request_hash``, ``ttl``  |
| ``USER#<id>``   | ``WHSECRET``          | the account's webhook secret                               |
| ``USER#<id>``   | ``HOOK#<delivery id>``| a webhook delivery                                         |
| ``PENDING#JOB`` | ``<user id>#<job id>``| a job that is not finished (what a recovering worker scans)|
| ``PENDING#HOOK``| ``<user>#<delivery>`` | a pending delivery, ``due`` (unix seconds)                 |

Every change of a job or a delivery is a read, a decision, and a write conditioned on the
``version`` it read (optimistic concurrency): of two workers racing, one write fails its
condition, and that worker reads again and decides again, exactly as the SQLite backend decides
inside its transaction.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from errors import Conflict, StoreUnavailable
from store import transitions
from store.base import JobStore, UploadStore, WebhookStore
from store.dynamodb import DynamoTable, _condition_failed, _plain
from store.records import Claim, Delivery, Job, JobStatus, Page, Upload

T = TypeVar("T")
IDEMPOTENCY_TTL_S = 24 * 3600
_MAX_RACES = 20  # version conflicts tolerated before the store is called unavailable
_PENDING_JOB, _PENDING_HOOK = "PENDING#JOB", "PENDING#HOOK"


def _number(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(round(value, 3)))


class DynamoUploads(DynamoTable, UploadStore):
    @staticmethod
    def _upload(item: dict[str, Any]) -> Upload:
        return Upload(
            id=item["id"],
            user_id=item["user_id"],
            created_at=item["created_at"],
            expires_at=float(item["expires_at"]),
            blob_key=item["blob_key"],
            filename=item["filename"],
            content_type=item["content_type"],
            max_bytes=int(item["max_bytes"]),
            keep=bool(item.get("keep", False)),
            job_id=item.get("job_id"),
        )

    def add_upload(self, upload: Upload) -> None:
        item = {k: v for k, v in upload.__dict__.items() if v is not None}
        item["expires_at"] = _number(upload.expires_at)
        self._call(
            self.table.put_item,
            Item={
                "pk": f"USER#{upload.user_id}",
                "sk": f"UPL#{upload.id}",
                "ttl": int(upload.expires_at) + 1,
                **item,
            },
        )

    def get_upload(self, user_id: str, upload_id: str, *, now: float) -> Upload | None:
        item = self._get(f"USER#{user_id}", f"UPL#{upload_id}")
        # TTL deletes lazily (up to days later): an expired item is gone for its owner at once.
        if item is None or float(item["expires_at"]) <= now:
            return None
        return self._upload(item)

    def attach_upload(self, user_id: str, upload_id: str, job_id: str) -> bool:
        try:
            self._call(
                self.table.update_item,
                Key={"pk": f"USER#{user_id}", "sk": f"UPL#{upload_id}"},
                UpdateExpression="SET job_id = :j",
                ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(job_id) OR job_id = :j)",
                ExpressionAttributeValues={":j": job_id},
            )
        except ClientError as exc:
            if _condition_failed(exc):
                return False
            raise
        return True

    def detach_upload(self, user_id: str, upload_id: str, job_id: str) -> None:
        try:
            self._call(
                self.table.update_item,
                Key={"pk": f"USER#{user_id}", "sk": f"UPL#{upload_id}"},
                UpdateExpression="REMOVE job_id",
                ConditionExpression="job_id = :j",
                ExpressionAttributeValues={":j": job_id},
            )
        except ClientError as exc:
            if not _condition_failed(exc):
                raise

    def delete_upload(self, user_id: str, upload_id: str) -> bool:
        answer = self._call(
            self.table.delete_item,
            Key={"pk": f"USER#{user_id}", "sk": f"UPL#{upload_id}"},
            ReturnValues="ALL_OLD",
        )
        return "Attributes" in answer

    def list_uploads(self, user_id: str) -> list[Upload]:
        items = self._query_all(
            KeyConditionExpression=Key("pk").eq(f"USER#{user_id}") & Key("sk").begins_with("UPL#")
        )
        return [self._upload(i) for i in items]

    def expired_uploads(self, now: float, limit: int) -> list[Upload]:
        """The table's TTL and the bucket's lifecycle rule expire uploads here."""
        return []


class _Versioned(DynamoTable):
    """Read-decide-write with a ``version`` condition, retried when another writer won."""

    def _mutate(
        self, pk: str, sk: str, decide: Callable[[dict[str, Any] | None], tuple[dict | None, T]]
    ) -> T:
        for _ in range(_MAX_RACES):
            item = self._get(pk, sk)
            new_item, answer = decide(item)
            if new_item is None:
                return answer
            version = int(item["version"]) if item else 0
            try:
                self._call(
                    self.table.put_item,
                    Item={**new_item, "pk": pk, "sk": sk, "version": version + 1},
                    ConditionExpression=Attr("version").eq(version) if item else Attr("pk").not_exists(),
                )
            except ClientError as exc:
                if _condition_failed(exc):
                    continue  # someone else wrote first: read again and decide again
                raise
            return answer
        raise StoreUnavailable("too many concurrent changes to one record")


class DynamoJobs(_Versioned, JobStore):
    @staticmethod
    def _job(item: dict[str, Any]) -> Job:
        return Job(**json.loads(item["document"]))

    @staticmethod
    def _item(job: Job) -> dict[str, Any]:
        return {"id": job.id, "status": job.status, "document": json.dumps(job.__dict__)}

    def _change(
        self, user_id: str, job_id: str, decide: Callable[[Job], tuple[Job | None, T]], missing: T
    ) -> T:
        def on_item(item: dict[str, Any] | None) -> tuple[dict | None, T]:
            if item is None:
                return None, missing
            changed, answer = decide(self._job(item))
            return (self._item(changed) if changed is not None else None), answer

        answer = self._mutate(f"USER#{user_id}", f"JOB#{job_id}", on_item)
        return answer

    def _unpend(self, job: Job) -> None:
        self.forget_pending(job.user_id, job.id)

    def create_job(self, job: Job) -> tuple[Job, bool]:
        pk = f"USER#{job.user_id}"
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "Item": {"pk": pk, "sk": f"JOB#{job.id}", "version": 1, **self._item(job)},
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {"Put": {"Item": {"pk": _PENDING_JOB, "sk": f"{job.user_id}#{job.id}", "user_id": job.user_id}}},
        ]
        if job.idempotency_key is not None:
            items.append(
                {
                    "Put": {
                        "Item": {
                            "pk": pk,
                            "sk": f"IDEM#{job.idempotency_key}",
                            "job_id": job.id,
                            "request_hash": job.request_hash,
                            "ttl": int(time.time()) + IDEMPOTENCY_TTL_S,
                        },
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
        try:
            self._transact(items)
        except ClientError:
            # Refused by a condition: the key was taken (the job id is new each time).
            pointer = self._get(pk, f"IDEM#{job.idempotency_key}") if job.idempotency_key else None
            existing = self.get_job(job.user_id, pointer["job_id"]) if pointer else None
            if existing is None:
                raise StoreUnavailable("a concurrent request holds this Idempotency-Key; retry") from None
            if pointer["request_hash"] != job.request_hash:
                raise Conflict(
                    "this Idempotency-Key was used with a different request", code="idempotency_key_reused"
                ) from None
            return existing, False
        return job, True

    def delete_job(self, user_id: str, job_id: str) -> None:
        job = self.get_job(user_id, job_id)
        if job is None:
            return
        self._call(self.table.delete_item, Key={"pk": f"USER#{user_id}", "sk": f"JOB#{job_id}"})
        if job.idempotency_key:
            self._call(
                self.table.delete_item, Key={"pk": f"USER#{user_id}", "sk": f"IDEM#{job.idempotency_key}"}
            )
        self._unpend(job)

    def get_job(self, user_id: str, job_id: str) -> Job | None:
        item = self._get(f"USER#{user_id}", f"JOB#{job_id}")
        return self._job(item) if item else None

    def list_jobs(self, user_id: str, limit: int, cursor: str | None) -> Page:
        pk = f"USER#{user_id}"
        condition = Key("pk").eq(pk) & (
            Key("sk").between("JOB#", f"JOB#{cursor}") if cursor else Key("sk").begins_with("JOB#")
        )
        page = self._call(
            self.table.query, KeyConditionExpression=condition, ScanIndexForward=False, Limit=limit + 2
        )
        items = [{k: _plain(v) for k, v in i.items()} for i in page.get("Items", [])]
        items = [i for i in items if i["id"] != cursor][: limit + 1]
        jobs = [self._job(i) for i in items[:limit]]
        return Page(jobs, jobs[-1].id if len(items) > limit else None)

    def _apply(self, user_id: str, job_id: str, change: Callable[[Job], bool]) -> bool:
        """One state change (``store.transitions``) on the job, written only if nobody else wrote
        it since it was read."""
        return self._change(user_id, job_id, lambda job: (job, True) if change(job) else (None, False), False)

    def cancel_job(self, user_id: str, job_id: str, at: str) -> Job | None:
        job = self._change(
            user_id, job_id, lambda job: (job if transitions.cancel(job, at) else None, job), None
        )
        if job is not None and job.status == "canceled":
            self._unpend(job)
        return job

    def claim_job(self, user_id: str, job_id: str, worker: str, now: float, lease_s: float, at: str) -> Claim:
        def decide(job: Job) -> tuple[Job | None, Claim]:
            claim = transitions.claim(job, worker, now, lease_s, at)
            return (job if claim.reason == "claimed" else None), claim

        return self._change(user_id, job_id, decide, Claim(None, "missing"))

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
        finished = self._apply(
            user_id, job_id, lambda job: transitions.finish(job, worker, status, at, result, error)
        )
        if finished:
            self.forget_pending(user_id, job_id)
        return finished

    def release_job(self, user_id: str, job_id: str, worker: str, at: str, error: dict[str, Any]) -> bool:
        return self._apply(user_id, job_id, lambda job: transitions.release(job, worker, at, error))

    def fail_exhausted(self, user_id: str, job_id: str, now: float, at: str, error: dict[str, Any]) -> bool:
        failed = self._apply(user_id, job_id, lambda job: transitions.fail_exhausted(job, now, at, error))
        if failed:
            self.forget_pending(user_id, job_id)
        return failed

    def pending_jobs(self, now: float, limit: int) -> list[tuple[str, str]]:
        page = self._call(self.table.query, KeyConditionExpression=Key("pk").eq(_PENDING_JOB), Limit=limit)
        return [tuple(i["sk"].split("#", 1)) for i in page.get("Items", [])]  # type: ignore[misc]

    def forget_pending(self, user_id: str, job_id: str) -> None:
        self._call(self.table.delete_item, Key={"pk": _PENDING_JOB, "sk": f"{user_id}#{job_id}"})


class DynamoWebhooks(_Versioned, WebhookStore):
    def set_secret(self, user_id: str, secret: str, at: str) -> None:
        self._call(
            self.table.put_item,
            Item={"pk": f"USER#{user_id}", "sk": "WHSECRET", "secret": secret, "created_at": at},
        )

    def get_secret(self, user_id: str) -> str | None:
        item = self._get(f"USER#{user_id}", "WHSECRET")
        return item["secret"] if item else None

    @staticmethod
    def _delivery(item: dict[str, Any]) -> Delivery:
        return Delivery(**json.loads(item["document"]))

    @staticmethod
    def _item(delivery: Delivery) -> dict[str, Any]:
        return {
            "job_id": delivery.job_id,
            "status": delivery.status,
            "document": json.dumps(delivery.__dict__),
        }

    def _due(self, delivery: Delivery) -> None:
        key = {"pk": _PENDING_HOOK, "sk": f"{delivery.user_id}#{delivery.id}"}
        if delivery.status == "pending":
            self._call(self.table.put_item, Item={**key, "due": _number(delivery.next_attempt_at or 0)})
        else:
            self._call(self.table.delete_item, Key=key)

    def add_delivery(self, delivery: Delivery) -> Delivery:
        def decide(item: dict[str, Any] | None) -> tuple[dict | None, Delivery]:
            if item is not None:
                return None, self._delivery(item)
            return self._item(delivery), delivery

        stored = self._mutate(f"USER#{delivery.user_id}", f"HOOK#{delivery.id}", decide)
        if stored is delivery:
            self._due(delivery)
        return stored

    def get_delivery(self, user_id: str, delivery_id: str) -> Delivery | None:
        item = self._get(f"USER#{user_id}", f"HOOK#{delivery_id}")
        return self._delivery(item) if item else None

    def list_deliveries(self, user_id: str, job_id: str) -> list[Delivery]:
        items = self._query_all(
            KeyConditionExpression=Key("pk").eq(f"USER#{user_id}") & Key("sk").begins_with("HOOK#"),
            FilterExpression=Attr("job_id").eq(job_id),
        )
        return sorted((self._delivery(i) for i in items), key=lambda d: d.id)

    def record_attempt(
        self,
        user_id: str,
        delivery_id: str,
        attempt: dict[str, Any],
        *,
        status: str,
        next_attempt_at: float | None,
    ) -> Delivery | None:
        def decide(item: dict[str, Any] | None) -> tuple[dict | None, Delivery | None]:
            delivery = self._delivery(item) if item is not None else None
            if delivery is None or not transitions.record_attempt(delivery, attempt, status, next_attempt_at):
                return None, None
            return self._item(delivery), delivery

        delivery = self._mutate(f"USER#{user_id}", f"HOOK#{delivery_id}", decide)
        if delivery is not None:
            self._due(delivery)
        return delivery

    def due_deliveries(self, now: float, limit: int) -> list[tuple[str, str]]:
        items = self._query_all(
            KeyConditionExpression=Key("pk").eq(_PENDING_HOOK), FilterExpression=Attr("due").lte(_number(now))
        )
        items.sort(key=lambda i: float(i["due"]))
        return [tuple(i["sk"].split("#", 1)) for i in items[:limit]]  # type: ignore[misc]
