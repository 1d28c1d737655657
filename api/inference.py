"""Calls into the model services, with the failure handling every modality shares."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import numpy as np

from api.engine import ServedModel
from errors import ServiceUnavailable, VerityError

log = logging.getLogger(__name__)


async def predict(served: ServedModel, pixels: np.ndarray) -> np.ndarray:
    try:
        try:
            return np.asarray(await served.detector.predict(pixels))
        except aiohttp.ClientConnectionError:
            # A dropped connection to the model service (e.g. a recycled client session) is
            # worth one retry: inference is idempotent and the service is usually fine.
            log.warning("model call lost its connection; retrying once")
            return np.asarray(await served.detector.predict(pixels))
    except VerityError:
        raise
    except Exception as exc:  # the model service is down, restarting or overloaded
        log.exception("model call failed", extra={"model_id": served.stored.model_id})
        raise ServiceUnavailable(
            f"model {served.stored.model_id} is unavailable, retry shortly", code="model_unavailable"
        ) from exc


async def predict_each(served: ServedModel, batch: np.ndarray) -> np.ndarray:
    """``batch`` as one model call per item, concurrently, outputs in order. BentoML's batcher
    prices a batch by its number of *calls*, so calls of one item each keep its cost model right
    (whole batches of 4-29 audio windows made it over-estimate queues and shed load), and it
    merges the items of concurrent requests into shared batches."""
    outputs = await asyncio.gather(*(predict(served, batch[i : i + 1]) for i in range(len(batch))))
    return np.concatenate([np.asarray(out) for out in outputs])
