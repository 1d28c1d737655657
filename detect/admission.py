"""How much decoding and heavy work one process takes on at once.

Two bounds, both per process (each Lambda container, Cloud Run instance or API worker has its
own):

* ``DecodePool``: decoding runs on its own few threads, never on the thread pool that
  authentication, quotas and store calls share. A flood of slow uploads then queues behind
  the decoders instead of leaving no thread for a login or a key check. A decode that passes
  its time limit answers its request at once (422 ``decode_timeout``); its thread cannot be
  interrupted, so it keeps its slot until the decoder returns, and no more than
  ``VERITY_DECODE_THREADS`` such decodes ever run together.
* ``WorkGate``: whole requests of heavy work (audio, video, image explanations), at most
  ``capacity`` running and ``queue`` waiting. Past that the request is shed before its body is
  read: 503 ``server_busy`` with ``Retry-After``, which costs the caller no quota. Shedding
  early is what keeps a burst from holding dozens of decoded videos in memory at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import anyio

from errors import ServiceUnavailable, VerityError

log = logging.getLogger(__name__)

T = TypeVar("T")
BUSY_RETRY_AFTER_S = 5


def server_busy(what: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"the server is busy with other {what}; retry in {BUSY_RETRY_AFTER_S} s",
        code="server_busy",
        retry_after_s=BUSY_RETRY_AFTER_S,
    )


class WorkGate:
    """At most ``capacity`` holders and ``queue`` waiters; one more is refused with 503."""

    def __init__(self, what: str, capacity: int, queue: int) -> None:
        self.what = what
        self.capacity = capacity
        self.queue = queue
        self._limiter = anyio.CapacityLimiter(capacity)
        self.in_flight = 0  # holding or waiting; only touched on the event loop

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        if self.in_flight >= self.capacity + self.queue:
            log.warning("shedding a request: %d %s in flight", self.in_flight, self.what)
            raise server_busy(self.what)
        self.in_flight += 1
        token = object()  # one slot per admission, even for two admissions in one task
        try:
            await self._limiter.acquire_on_behalf_of(token)
            try:
                yield
            finally:
                self._limiter.release_on_behalf_of(token)
        finally:
            self.in_flight -= 1


class DecodePool:
    """Decoding's own threads. ``run`` never sheds: the requests that reach it were admitted
    (heavy ones by a ``WorkGate``), and a job's decode must wait its turn, not fail."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="decode")
        self.running = 0  # submitted and not yet returned (including abandoned ones)

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        timeout_s: float | None = None,
        on_timeout: Callable[[], VerityError] | None = None,
    ) -> T:
        """``fn(*args)`` on a decode thread. Past ``timeout_s`` the caller gets ``on_timeout()``
        while the thread finishes on its own slot."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # the request id reaches the decoder's log lines
        self.running += 1
        future: Future[T] = self._executor.submit(context.run, fn, *args)
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._returned))
        waiting = asyncio.wrap_future(future, loop=loop)
        if timeout_s is None:
            return await waiting
        try:
            return await asyncio.wait_for(asyncio.shield(waiting), timeout_s)
        except TimeoutError:
            log.warning("a decode passed its %g s limit; its thread is left to finish", timeout_s)
            waiting.add_done_callback(_consume_outcome)
            if on_timeout is None:
                raise
            raise on_timeout() from None

    def _returned(self) -> None:
        self.running -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _consume_outcome(future: asyncio.Future[Any]) -> None:
    """An abandoned decode's outcome is read, so that asyncio does not log it as lost."""
    if not future.cancelled():
        future.exception()
