"""Workers inside one process (``VERITY_QUEUE=local``, the embedded default): asyncio tasks on
the process's event loop, taking messages from the in-memory ``LocalQueue``.

The queue is only a fast path. Every ``VERITY_JOB_SCAN_S`` seconds (and at start) a scan asks the
store which jobs wait for a worker (queued, or running past their lease: their worker died) and
which webhook deliveries are due, so nothing depends on a message kept in memory: a restart, a
crash or another process's jobs are all picked up. The same scan sweeps expired uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import anyio

from detect.engine import Engine
from jobs.backend import JobsBackend
from jobs.queue import LocalQueue, message
from jobs.runner import JobRunner

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 300.0
SCAN_BATCH = 50


class LocalWorkers:
    def __init__(
        self,
        backend: JobsBackend,
        engine_of: Callable[[], Engine | None],
        *,
        count: int,
    ) -> None:
        self.backend = backend
        self.engine_of = engine_of
        self.count = count
        self.scan_every_s = backend.settings.job_scan_s
        self._tasks: list[asyncio.Task[None]] = []
        self._busy: set[tuple[str, str]] = set()  # (kind, id) queued or running here
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._runner: JobRunner | None = None
        self._last_sweep = 0.0

    async def start(self) -> None:
        queue = self.backend.queue
        own = queue if isinstance(queue, LocalQueue) else LocalQueue()
        self._queue = own.bind(asyncio.get_running_loop())
        self._tasks = [asyncio.create_task(self._consume(i)) for i in range(self.count)]
        self._tasks.append(asyncio.create_task(self._scan_forever()))
        log.info("%d local job worker(s) started", self.count)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def _runner_ready(self) -> JobRunner:
        while self._runner is None:
            engine = self.engine_of()
            if engine is not None:
                self._runner = JobRunner(self.backend, engine)
                break
            await asyncio.sleep(0.2)  # the service is still loading its models
        return self._runner

    def _enqueue(self, body: dict[str, Any]) -> None:
        key = (body["kind"], body["id"])
        if key in self._busy or self._queue is None:
            return
        self._busy.add(key)
        self._queue.put_nowait(body)

    async def _consume(self, number: int) -> None:
        assert self._queue is not None
        while True:
            body = await self._queue.get()
            key = (body.get("kind"), body.get("id"))
            try:
                runner = await self._runner_ready()
                outcome = await runner.handle(body)
                if outcome.retry_at is not None:
                    delay = max(0.0, outcome.retry_at - self.backend.clock())
                    self._later(body, delay)
            except asyncio.CancelledError:
                raise
            except Exception:  # a worker never dies of one message: the scan brings it back
                log.exception("local worker %d: message %r failed", number, body)
            finally:
                self._busy.discard(key)  # type: ignore[arg-type]

    def _later(self, body: dict[str, Any], delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self._enqueue, body)

    async def _scan_forever(self) -> None:
        while True:
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception:  # a store outage: try again at the next scan
                log.warning("job scan failed", exc_info=True)
            await asyncio.sleep(self.scan_every_s)

    async def scan(self) -> None:
        now = self.backend.clock()
        stores = self.backend.stores
        pending = await anyio.to_thread.run_sync(stores.jobs.pending_jobs, now, SCAN_BATCH)
        for user_id, job_id in pending:
            self._enqueue(message("job", user_id, job_id))
        due = await anyio.to_thread.run_sync(stores.webhooks.due_deliveries, now, SCAN_BATCH)
        for user_id, delivery_id in due:
            self._enqueue(message("webhook", user_id, delivery_id))
        if now - self._last_sweep >= SWEEP_EVERY_S:
            self._last_sweep = now
            await anyio.to_thread.run_sync(sweep_uploads, self.backend, now)


def sweep_uploads(backend: JobsBackend, now: float) -> int:
    """Delete expired uploads (record and media) and media files older than any upload may live."""
    removed = 0
    for upload in backend.stores.uploads.expired_uploads(now, 500):
        backend.blobs.delete(upload.blob_key)
        backend.stores.uploads.delete_upload(upload.user_id, upload.id)
        removed += 1
    settings = backend.settings
    backend.blobs.sweep(now - settings.upload_retention_s - settings.upload_url_ttl_s)
    if removed:
        log.info("swept %d expired upload(s)", removed)
    return removed
