"""Where job and webhook messages wait (``VERITY_QUEUE``).

A message is ``{"kind": "job" | "webhook", "user_id": ..., "id": ...}``: a pointer, never state.
The state lives in the store, so a message lost, duplicated or delivered late changes nothing a
claim would not catch, and the local queue may live in memory: at start and every few seconds
the local workers also ask the store what is waiting (``jobs/local_workers.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from abc import ABC, abstractmethod
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from config import Settings
from errors import ServiceUnavailable

log = logging.getLogger(__name__)

SQS_MAX_DELAY_S = 900  # SendMessage's DelaySeconds limit; longer waits are re-sent on arrival


def message(kind: str, user_id: str, record_id: str) -> dict[str, str]:
    return {"kind": kind, "user_id": user_id, "id": record_id}


class Queue(ABC):
    @abstractmethod
    def send(self, body: dict[str, Any], delay_s: float = 0.0) -> None: ...


class LocalQueue(Queue):
    """An asyncio queue in the service's event loop; ``send`` is safe from any thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[dict[str, Any]] | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> asyncio.Queue[dict[str, Any]]:
        self._loop = loop
        self._queue = asyncio.Queue()
        return self._queue

    def send(self, body: dict[str, Any], delay_s: float = 0.0) -> None:
        loop, queue = self._loop, self._queue
        if loop is None or queue is None or loop.is_closed():
            return  # no local workers here: the store holds the job, a worker's scan finds it
        if delay_s > 0:
            loop.call_soon_threadsafe(lambda: loop.call_later(delay_s, queue.put_nowait, body))
        else:
            loop.call_soon_threadsafe(queue.put_nowait, body)


class SQSQueue(Queue):
    def __init__(self, queue_url: str, *, region: str, endpoint_url: str | None = None) -> None:
        self.url = queue_url
        self.client = boto3.client("sqs", region_name=region, endpoint_url=endpoint_url)

    @classmethod
    def from_settings(cls, settings: Settings) -> SQSQueue:
        if not settings.sqs_queue_url:
            raise ValueError("VERITY_QUEUE=sqs needs VERITY_SQS_QUEUE_URL")
        return cls(settings.sqs_queue_url, region=settings.aws_region, endpoint_url=settings.sqs_endpoint_url)

    def send(self, body: dict[str, Any], delay_s: float = 0.0) -> None:
        try:
            self.client.send_message(
                QueueUrl=self.url,
                MessageBody=json.dumps(body),
                DelaySeconds=max(0, min(SQS_MAX_DELAY_S, int(delay_s))),
            )
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable(
                f"the jobs queue does not answer: {exc}", code="queue_unavailable"
            ) from exc


def make_queue(settings: Settings) -> Queue:
    return SQSQueue.from_settings(settings) if settings.queue == "sqs" else LocalQueue()
