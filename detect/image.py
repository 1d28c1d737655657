"""POST /v1/detect/image: payload -> decoded picture -> batch of one -> result.

``faces=auto`` scores faces instead of the whole picture: every face MTCNN finds (at most
``VERITY_FACES_PER_FRAME``, largest first) is cropped with a margin, squared and scored by the
image model in one batch; the picture's ``fake_probability`` is its most-fake face (one
manipulated face makes the picture fake), each face's own is under ``faces``. No face gives
verdict ``NO_FACE`` with ``fake_probability: null`` (``faces=off`` scores the whole picture).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import anyio
import numpy as np

from config import Settings
from detect.engine import Engine
from detect.explain import occlusion_heatmap
from detect.faces import crops_for, face_entry, find_faces
from detect.trust import with_provenance
from media.image import DecodedImage, decode_image
from media.tools import decode_timeout
from models.postprocess import fake_probabilities, verdict_for
from models.preprocess import model_pixels
from store.ids import new_id

log = logging.getLogger(__name__)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


async def detect_image(
    engine: Engine,
    data: bytes,
    *,
    model_id: str | None,
    explain: bool,
    faces: str = "off",
    provenance: bool = True,
) -> dict[str, Any]:
    """The result for the picture in ``data``: the classifier's, then (``provenance``) the
    picture's Content Credentials weighed beside it (``detect/trust.py``). Live camera frames
    skip the latter: a canvas capture carries none."""
    result = await _classify_image(engine, data, model_id=model_id, explain=explain, faces=faces)
    return await with_provenance(engine, result, data) if provenance else result


async def _classify_image(
    engine: Engine, data: bytes, *, model_id: str | None, explain: bool, faces: str
) -> dict[str, Any]:
    started = time.perf_counter()
    settings: Settings = engine.settings
    served = engine.image_model(model_id)
    stored = served.stored
    decoded: DecodedImage = await engine.decode_pool.run(
        lambda: decode_image(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels),
        timeout_s=settings.image_decode_timeout_s,
        on_timeout=lambda: decode_timeout("image", settings.image_decode_timeout_s),
    )
    decode_ms = _ms(started)
    spec = stored.input_spec
    timing: dict[str, float] = {}
    face_entries: list[dict[str, Any]] = []
    if faces == "auto":
        mark = time.perf_counter()
        frame = np.asarray(decoded.image)
        found = (await find_faces(engine, [frame]))[0]
        timing["faces"] = _ms(mark)
        if not found:
            return _no_face(served, decoded, started, decode_ms, timing)
        mark = time.perf_counter()
        batch = await anyio.to_thread.run_sync(crops_for, frame, found, spec, settings.face_crop_margin)
    else:
        mark = time.perf_counter()
        batch = (await anyio.to_thread.run_sync(model_pixels, decoded.image, spec))[None]
    preprocess_ms = _ms(mark)
    mark = time.perf_counter()
    outputs = await served.client.predict(batch)
    inference_ms = _ms(mark)
    probs = fake_probabilities(outputs, stored.metadata["output"], int(stored.metadata["fake_index"]))
    top = int(np.argmax(probs))
    probability = float(probs[top])
    pixels = batch[top]  # what the explanation occludes: the picture, or its most-fake face
    if faces == "auto":
        face_entries = [face_entry(0.0, face, float(p)) for face, p in zip(found, probs, strict=True)]
    threshold = stored.threshold
    result: dict[str, Any] = {
        "id": new_id("det"),
        "modality": "image",
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "verdict": verdict_for(probability, threshold, settings.uncertain_band),
        "fake_probability": round(probability, 6),
        "threshold": threshold,
        "model": stored.summary(),
        "segments": [],
        "faces": face_entries,
        "media": _media(decoded),
        "timing_ms": timing,
        "warnings": list(served.warnings),
    }
    if faces == "auto":
        result["aggregation"] = {"method": "max", "over": "faces", "count": len(face_entries)}
    if explain:
        mark = time.perf_counter()
        result["explanation"] = await occlusion_heatmap(pixels, probability, served.client.predict, stored)
        result["timing_ms"]["explain"] = _ms(mark)
    result["timing_ms"].update(
        {"decode": decode_ms, "preprocess": preprocess_ms, "inference": inference_ms, "total": _ms(started)}
    )
    return result


def _media(decoded: DecodedImage) -> dict[str, Any]:
    return {
        "format": decoded.format,
        "width": decoded.width,
        "height": decoded.height,
        "mode": decoded.original_mode,
    }


def _no_face(
    served: Any, decoded: DecodedImage, started: float, decode_ms: float, timing: dict[str, float]
) -> dict[str, Any]:
    stored = served.stored
    timing.update({"decode": decode_ms, "total": _ms(started)})
    return {
        "id": new_id("det"),
        "modality": "image",
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "verdict": "NO_FACE",
        "fake_probability": None,
        "threshold": stored.threshold,
        "model": stored.summary(),
        "aggregation": {"method": "max", "over": "faces", "count": 0},
        "segments": [],
        "faces": [],
        "media": _media(decoded),
        "timing_ms": timing,
        "warnings": [
            *served.warnings,
            {"code": "no_face", "message": "no face found; send faces=off to score the whole picture"},
        ],
    }
