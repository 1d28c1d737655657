"""Calls into the model services, with the failure handling every modality shares."""

from __future__ import annotations

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
