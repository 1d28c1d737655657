"""POST /v1/detect/image: payload -> decoded picture -> batch of one -> result (SPEC §4)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import anyio

from api.engine import Engine
from api.explain import occlusion_heatmap
from api.ids import new_id
from api.inference import predict
from config import Settings
from media.image import DecodedImage, decode_image
from models.postprocess import fake_probabilities, verdict_for
from models.preprocess import preprocess_image

log = logging.getLogger(__name__)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


async def detect_image(engine: Engine, data: bytes, *, model_id: str | None, explain: bool) -> dict[str, Any]:
    started = time.perf_counter()
    settings: Settings = engine.settings
    served = engine.image_model(model_id)
    stored = served.stored
    decoded: DecodedImage = await anyio.to_thread.run_sync(
        lambda: decode_image(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    )
    decode_ms = _ms(started)
    mark = time.perf_counter()
    spec = stored.input_spec
    pixels = await anyio.to_thread.run_sync(preprocess_image, decoded.image, spec)
    preprocess_ms = _ms(mark)
    mark = time.perf_counter()
    outputs = await predict(served, pixels[None])
    inference_ms = _ms(mark)
    probability = float(
        fake_probabilities(outputs, stored.metadata["output"], int(stored.metadata["fake_index"]))[0]
    )
    threshold = stored.threshold
    result: dict[str, Any] = {
        "id": new_id("det"),
        "modality": "image",
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "verdict": verdict_for(probability, threshold, settings.uncertain_band),
        "fake_probability": round(probability, 6),
        "threshold": threshold,
        "model": {
            "id": stored.model_id,
            "version": stored.version,
            "precision": stored.precision,
            "weights": stored.weights,
        },
        "segments": [],
        "faces": [],
        "media": {
            "format": decoded.format,
            "width": decoded.width,
            "height": decoded.height,
            "mode": decoded.original_mode,
        },
        "timing_ms": {},
        "warnings": list(served.warnings),
    }
    if explain:
        mark = time.perf_counter()
        result["explanation"] = await occlusion_heatmap(
            pixels, probability, lambda batch: predict(served, batch), stored
        )
        result["timing_ms"]["explain"] = _ms(mark)
    result["timing_ms"].update(
        {"decode": decode_ms, "preprocess": preprocess_ms, "inference": inference_ms, "total": _ms(started)}
    )
    return result
