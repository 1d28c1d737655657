"""``python -m jobs.worker``: a job worker as its own process, for media that can outlast
Lambda's 15 minutes (a container on ECS, Cloud Run or any host) and for local runs beside the
server.

* ``VERITY_QUEUE=sqs``: long-polls the jobs queue, one message at a time. While a job runs, the
  message's visibility is extended together with the job's lease, so SQS does not hand the
  message to another worker; if this process dies, both run out and the job runs again
  elsewhere. A message is deleted only once handled; one to retry later is re-sent with a delay.
* ``VERITY_QUEUE=local``: no queue to poll; the worker scans the store for jobs waiting (queued,
  or past their lease) and due webhook deliveries, like the server's own local workers.

The models are loaded in this process (the in-process engine), once. SIGTERM/SIGINT stop it after
the message in hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
from typing import Any

import anyio

from config import Settings
from config.startup import settings_or_exit, startup_or_exit
from jobs.backend import JobsBackend
from jobs.local_workers import LocalWorkers
from jobs.queue import SQSQueue
from jobs.runner import JobRunner, Outcome
from logs import configure_logging

log = logging.getLogger("jobs.worker")

IDLE_SLEEP_S = 0.2  # between empty receives when long polling is off (VERITY_SQS_WAIT_S=0)


def build(settings: Settings) -> tuple[JobsBackend, Any]:
    from detect.hosting import build_inprocess_engine
    from store.factory import make_store

    backend = JobsBackend.from_settings(settings, make_store(settings))
    return backend, build_inprocess_engine(settings)


async def handle_sqs_message(
    runner: JobRunner, queue: SQSQueue, record: dict[str, Any], *, extend_s: float | None
) -> None:
    """Run one SQS message; delete it when handled, re-send it delayed when it asks to be retried.
    Raises when the message should come back after its visibility timeout (an outage)."""
    body = json.loads(record["Body"])
    keeper = (
        asyncio.create_task(_keep_invisible(queue, record["ReceiptHandle"], extend_s)) if extend_s else None
    )
    try:
        outcome: Outcome = await runner.handle(body)
    finally:
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
    if outcome.retry_at is not None:
        await anyio.to_thread.run_sync(queue.send, body, max(0.0, outcome.retry_at - runner.backend.clock()))
    await anyio.to_thread.run_sync(
        lambda: queue.client.delete_message(QueueUrl=queue.url, ReceiptHandle=record["ReceiptHandle"])
    )


async def _keep_invisible(queue: SQSQueue, receipt: str, extend_s: float) -> None:
    while True:
        await asyncio.sleep(extend_s / 3)
        try:
            await anyio.to_thread.run_sync(
                lambda: queue.client.change_message_visibility(
                    QueueUrl=queue.url, ReceiptHandle=receipt, VisibilityTimeout=int(extend_s)
                )
            )
        except Exception:  # the lease still protects the job; the next try may work
            log.warning("could not extend the message's visibility", exc_info=True)


async def run_sqs(backend: JobsBackend, engine: Any, stop: asyncio.Event) -> None:
    queue = backend.queue
    assert isinstance(queue, SQSQueue)
    runner = JobRunner(backend, engine)
    log.info("worker %s polling %s", runner.worker, queue.url)
    while not stop.is_set():
        answer = await anyio.to_thread.run_sync(
            lambda: queue.client.receive_message(
                QueueUrl=queue.url,
                MaxNumberOfMessages=1,
                WaitTimeSeconds=backend.settings.sqs_wait_s,
                VisibilityTimeout=backend.settings.job_lease_s,
            )
        )
        records = answer.get("Messages", [])
        if not records and backend.settings.sqs_wait_s == 0:
            await asyncio.sleep(IDLE_SLEEP_S)
        for record in records:
            try:
                await handle_sqs_message(runner, queue, record, extend_s=backend.settings.job_lease_s)
            except Exception:  # left on the queue: it comes back after its visibility timeout
                log.exception("message %s failed; SQS will deliver it again", record.get("MessageId"))


async def run_local(backend: JobsBackend, engine: Any, stop: asyncio.Event) -> None:
    workers = LocalWorkers(backend, lambda: engine, count=max(1, backend.settings.job_workers))
    await workers.start()
    try:
        await stop.wait()
    finally:
        await workers.stop()


async def main_async(settings: Settings) -> None:
    backend, engine = startup_or_exit(lambda: build(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if settings.queue == "sqs":
        await run_sqs(backend, engine, stop)
    else:
        await run_local(backend, engine, stop)
    log.info("worker stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.worker", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    settings = settings_or_exit()
    configure_logging(settings)
    asyncio.run(main_async(settings))


if __name__ == "__main__":
    main()
