"""How the pipelines reach a model: a ``ModelClient`` takes whole batches, and the adapter decides
how they travel.

* ``BentoModelClient``: a model service of ``bentoml serve`` (another process). BentoML's batcher
  prices a batch by its number of *calls*, not rows, so a shareable batch goes as one call per
  row: calls of equal cost keep its queue estimates right (whole batches of 4-29 audio windows
  made it shed load, 16-row explanation chunks stalled other requests), and the rows of
  concurrent requests merge into shared batches. A dropped connection is retried once.
* ``InProcessModelClient``: an ONNX Runtime session in this process (the Lambda handler, a job
  worker, the batch runner). One session run at a time per model, in a worker thread: its session
  already uses every core, so 64 face crops as 64 concurrent runs would only thrash them. Rows
  that wait while the session is busy go together in its next run (up to ``max_batch_rows``):
  the batch runner's items in flight share ONNX Runtime calls the way concurrent requests share
  BentoML's batches, and a lone caller never waits for company.

The pipelines (detect/image.py, audio.py, video.py) call ``predict`` for rows that may share a
batch with other requests' rows, and ``predict_together`` for an input that must run as one unit
(the windows of one video for the sequence head; an audio clip shorter than one window, whose
length no other input shares).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import anyio
import numpy as np

from errors import ServiceUnavailable, VerityError
from models.catalog import ImageInputSpec
from models.runtime import OnnxModel

log = logging.getLogger(__name__)


class ModelClient(Protocol):
    model_id: str

    async def predict(self, batch: np.ndarray) -> np.ndarray:
        """Raw outputs for ``batch``, row for row; rows may be batched with other requests'."""
        ...

    async def predict_together(self, batch: np.ndarray) -> np.ndarray:
        """Raw outputs for ``batch`` run as one unit."""
        ...

    async def health(self) -> dict[str, Any]: ...


class BentoModelClient:
    """A BentoML model service (``service.model_service``) behind ``bentoml.depends``."""

    def __init__(self, model_id: str, service: Any) -> None:
        self.model_id = model_id
        self.service = service

    async def predict(self, batch: np.ndarray) -> np.ndarray:
        rows = await asyncio.gather(*(self._call("predict", batch[i : i + 1]) for i in range(len(batch))))
        return np.concatenate([np.asarray(row) for row in rows])

    async def predict_together(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(await self._call("predict_unbatched", batch))

    async def health(self) -> dict[str, Any]:
        return dict(await self.service.health())

    async def _call(self, method: str, inputs: np.ndarray) -> Any:
        try:
            call = getattr(self.service, method)
            try:
                return await call(inputs)
            except aiohttp.ClientConnectionError:
                # A dropped connection to the model service (e.g. a recycled client session) is
                # worth one retry: inference is idempotent and the service is usually fine.
                log.warning("model call lost its connection; retrying once")
                return await call(inputs)
        except VerityError:
            raise
        except Exception as exc:  # the model service is down, restarting or overloaded
            log.exception("model call failed", extra={"model_id": self.model_id})
            raise ServiceUnavailable(
                f"model {self.model_id} is unavailable, retry shortly", code="model_unavailable"
            ) from exc


@dataclass(eq=False)  # compared by identity: rows are arrays
class _Waiting:
    """Rows waiting for the session, and what became of them."""

    rows: np.ndarray
    done: bool = False
    outputs: np.ndarray | None = None
    error: BaseException | None = None
    key: tuple[Any, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.rows.shape[1:], self.rows.dtype)  # rows that can be stacked together


class InProcessModelClient:
    """One ONNX Runtime session in this process, opened once."""

    def __init__(
        self,
        model_id: str,
        onnx_path: Path,
        *,
        intra_op_threads: int,
        inter_op_threads: int = 1,
        max_batch_rows: int = 32,
        rows_alone: bool = False,
        pixels: ImageInputSpec | None = None,
    ) -> None:
        self.model_id = model_id
        self.session = OnnxModel(
            onnx_path,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            rows_alone=rows_alone,
            pixels=pixels,
        )
        self.max_batch_rows = max_batch_rows
        self._one_run = anyio.CapacityLimiter(1)
        # Loop-free on purpose: the Lambda handler and the workers may drive this client from
        # different event loops, so the queue is a plain list behind a thread lock.
        self._waiting: list[_Waiting] = []
        self._lock = threading.Lock()

    async def predict(self, batch: np.ndarray) -> np.ndarray:
        entry = _Waiting(np.asarray(batch))
        with self._lock:
            self._waiting.append(entry)
        # One caller at a time holds the session; it runs whatever waits (its own rows among them,
        # maybe in a later run when shapes differ). The others then find their rows answered.
        try:
            await anyio.to_thread.run_sync(self._serve, entry, limiter=self._one_run)
        except BaseException:  # cancelled while waiting for the session: nobody wants these rows
            with self._lock:
                if entry in self._waiting:
                    self._waiting.remove(entry)
            raise
        if entry.error is not None:
            raise entry.error
        if entry.outputs is None:  # the run was interrupted by something other than an Exception
            raise ServiceUnavailable(f"model {self.model_id} did not answer", code="model_unavailable")
        return entry.outputs

    async def predict_together(self, batch: np.ndarray) -> np.ndarray:
        return await anyio.to_thread.run_sync(self.session.run, batch, limiter=self._one_run)

    async def health(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "loaded": True}

    def _serve(self, entry: _Waiting) -> None:
        while not entry.done:
            self._run_group(self._next_group(entry))

    def _next_group(self, entry: _Waiting) -> list[_Waiting]:
        """The oldest waiting rows and those that stack with them, at most ``max_batch_rows``
        (always at least one entry, however many rows it has: a caller's batch is never split)."""
        with self._lock:
            if entry not in self._waiting:  # defensive: already taken by a run that failed midway
                entry.done = True
                return []
            first = self._waiting[0]
            group, rows = [], 0
            for waiting in self._waiting:
                if waiting.key != first.key:
                    continue
                if group and rows + len(waiting.rows) > self.max_batch_rows:
                    break
                group.append(waiting)
                rows += len(waiting.rows)
            self._waiting = [w for w in self._waiting if w not in group]
        return group

    def _run_group(self, group: list[_Waiting]) -> None:
        if not group:
            return
        try:
            if len(group) == 1:
                group[0].outputs = self.session.run(group[0].rows)
            else:
                outputs = self.session.run(np.concatenate([w.rows for w in group]))
                start = 0
                for waiting in group:
                    waiting.outputs = outputs[start : start + len(waiting.rows)]
                    start += len(waiting.rows)
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the run, raised there
            for waiting in group:
                waiting.error = exc
        finally:
            for waiting in group:
                waiting.done = True
