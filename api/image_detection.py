"""POST /v1/detect/image: payload -> decoded picture -> batch of one -> result (SPEC §4)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import anyio
import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request

from api.engine import Engine, ServedModel
from api.explain import occlusion_heatmap
from api.ids import new_id
from config import Settings
from errors import BadRequest, InvalidInput, ServiceUnavailable, UnsupportedMedia, VerityError
from media.image import DecodedImage, decode_image
from models.postprocess import fake_probabilities, verdict_for
from models.preprocess import preprocess_image

log = logging.getLogger(__name__)

FILE_FIELDS = ("image", "file")


def _decode_data_url(value: str) -> bytes:
    """``data:image/jpeg;base64,...`` (camera frames) or bare base64."""
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if ";base64" not in header:
            raise InvalidInput("data URL must be base64-encoded", code="invalid_data_url")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"image is not valid base64: {exc}", code="invalid_base64") from exc


async def read_image_payload(request: Request) -> bytes:
    """The image bytes from multipart, JSON (data URL) or a raw ``image/*`` body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_files=2, max_fields=20)
        try:
            upload = next((form[k] for k in FILE_FIELDS if isinstance(form.get(k), UploadFile)), None)
            if upload is None:
                raise InvalidInput(
                    "multipart body needs a file field named 'image' (or 'file')", code="missing_file"
                )
            return await upload.read()
        finally:
            await form.close()
    if content_type == "application/json":
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"body is not valid JSON: {exc}", code="invalid_json") from exc
        if not isinstance(body, dict):
            raise InvalidInput("JSON body must be an object", code="invalid_json")
        if "upload_id" in body and "image" not in body:
            raise InvalidInput(
                "upload_id needs the uploads API, which this deployment does not enable yet",
                code="uploads_unavailable",
            )
        image = body.get("image")
        if not isinstance(image, str) or not image:
            raise InvalidInput("JSON body needs 'image': a data URL or base64 string", code="missing_image")
        return _decode_data_url(image)
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        return await request.body()
    raise UnsupportedMedia(
        f"unsupported request content type {content_type or '(none)'!r}; send multipart/form-data, "
        "application/json with a data URL, or a raw image/* body",
        code="unsupported_content_type",
    )


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
        log.exception("image model call failed", extra={"model_id": served.stored.model_id})
        raise ServiceUnavailable(
            f"model {served.stored.model_id} is unavailable, retry shortly", code="model_unavailable"
        ) from exc


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
