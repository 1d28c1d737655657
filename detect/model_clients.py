"""How the pipelines reach a model: a ``ModelClient`` takes whole batches, and the adapter decides
how they travel.

* ``BentoModelClient``: a model service of ``bentoml serve`` (another process). BentoML's batcher
  prices a batch by its number of *calls*, not rows, so a shareable batch goes as one call per
  row: calls of equal cost keep its queue estimates right (whole batches of 4-29 audio windows
  made it shed load, 16-row explanation chunks stalled other requests), and the rows of
  concurrent requests merge into shared batches. A dropped connection is retried once.
* ``InProcessModelClient``: an ONNX Runtime session in this process (the Lambda handler, a job
  worker, the batch runner). A batch is one session run in a worker thread, one run at a time per
  model: its session already uses every core, so 64 face crops as 64 concurrent runs would only
  thrash them.

The pipelines (detect/image.py, audio.py, video.py) call ``predict`` for rows that may share a
batch with other requests' rows, and ``predict_together`` for an input that must run as one unit
(the windows of one video for the sequence head; an audio clip shorter than one window, whose
length no other input shares).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import anyio
import numpy as np

from errors import ServiceUnavailable, VerityError
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


class InProcessModelClient:
    """One ONNX Runtime session in this process, opened once."""

    def __init__(
        self, model_id: str, onnx_path: Path, *, intra_op_threads: int, inter_op_threads: int = 1
    ) -> None:
        self.model_id = model_id
        self.session = OnnxModel(
            onnx_path, intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads
        )
        self._one_run = anyio.CapacityLimiter(1)

    async def predict(self, batch: np.ndarray) -> np.ndarray:
        return await anyio.to_thread.run_sync(self.session.run, batch, limiter=self._one_run)

    async def predict_together(self, batch: np.ndarray) -> np.ndarray:
        return await self.predict(batch)

    async def health(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "loaded": True}
