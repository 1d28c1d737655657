"""POST /v1/detect/image: payload -> decoded picture -> batch of one -> result.

``faces=auto`` scores faces instead of the whole picture: every face MTCNN finds (at most
``VERITY_FACES_PER_FRAME``, largest first) is cropped with a margin, squared and scored by the
image model in one batch; the picture's ``fake_probability`` is its most-fake face (one
manipulated face makes the picture fake), each face's own is under ``faces``. No face gives
verdict ``NO_FACE`` with ``fake_probability: null`` (``faces=off`` scores the whole picture).

Around the model call (each step in its own module):

* a picture too small or too dark to judge is ``NOT_APPLICABLE`` before any model runs
  (``detect/applicability.py``);
* each model's raw score goes through its calibration at the operating point, or keeps its
  catalog threshold (``models/calibration.py``); ``raw_score`` keeps the model's own figure;
* ``models=a,b`` (an ensemble) runs several served image models on the one decoded picture, in
  parallel; the result's probability is the mean of their (calibrated) probabilities against the
  mean of their thresholds, and ``models`` lists what each one said;
* ``stability=true`` adds three variants of each judged picture to the same model call
  (``detect/stability.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import anyio
import numpy as np
from PIL import Image

from config import Settings
from detect.applicability import image_problem, mark_not_applicable
from detect.engine import Engine, ServedModel
from detect.explain import occlusion_heatmap
from detect.faces import face_entry, find_faces
from detect.stability import NAMES, apply_stability, stability_block, with_variants
from detect.trust import with_provenance
from errors import InvalidInput
from faces.crops import face_crops
from media.image import DecodedImage, decode_image
from media.tools import decode_timeout
from models.calibration import Decision
from models.catalog import ImageInputSpec
from models.postprocess import verdict_for
from models.preprocess import model_pixels, pixel_batch
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
    stability: bool = False,
    operating_point: str | None = None,
    models: list[str] | None = None,
) -> dict[str, Any]:
    """The result for the picture in ``data``: the classifier's, then (``provenance``) the
    picture's Content Credentials weighed beside it (``detect/trust.py``). Live camera frames
    skip the latter: a canvas capture carries none. ``models`` (two or more ids) asks for an
    ensemble instead of ``model_id``."""
    served = image_models_for(engine, model_id, models, explain=explain)
    decisions = [engine.decision(m, operating_point) for m in served]
    result = await _classify_image(
        engine, data, served, decisions, explain=explain, faces=faces, stability=stability
    )
    return await with_provenance(engine, result, data) if provenance else result


def image_models_for(
    engine: Engine, model_id: str | None, models: list[str] | None, *, explain: bool = False
) -> list[ServedModel]:
    """The served models a request names: one (``model``), or an ensemble (``models``)."""
    if not models:
        return [engine.image_model(model_id)]
    if model_id is not None:
        raise InvalidInput("give either model or models, not both", code="invalid_input")
    ids = list(dict.fromkeys(m.strip() for m in models if m.strip()))
    if len(ids) < 2:
        raise InvalidInput("an ensemble (models=) names at least two image models", code="invalid_input")
    if explain:
        raise InvalidInput("explain=true explains one model: name it with model=", code="invalid_input")
    return [engine.image_model(m) for m in ids]


def _subjects(
    decoded: DecodedImage, frame: np.ndarray | None, found: list[Any], spec: ImageInputSpec, margin: float
) -> list[Image.Image]:
    """What a model judges: the picture, or each face crop (square, at the model's size)."""
    if frame is None:
        return [decoded.image]
    crops = face_crops(frame, found, size=max(spec.size), margin=margin)
    return [Image.fromarray(crop) for crop in crops]


def _rows(subjects: list[Image.Image], spec: ImageInputSpec, stability: bool) -> np.ndarray:
    """Model rows: each subject, followed by its variants when the stability check is on."""
    pictures = [v for s in subjects for v in with_variants(s)] if stability else subjects
    return pixel_batch(pictures, spec)


async def _classify_image(
    engine: Engine,
    data: bytes,
    served: list[ServedModel],
    decisions: list[Decision],
    *,
    explain: bool,
    faces: str,
    stability: bool,
) -> dict[str, Any]:
    started = time.perf_counter()
    settings: Settings = engine.settings
    lead = served[0]
    decoded: DecodedImage = await engine.decode_pool.run(
        lambda: decode_image(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels),
        timeout_s=settings.image_decode_timeout_s,
        on_timeout=lambda: decode_timeout("image", settings.image_decode_timeout_s),
    )
    decode_ms = _ms(started)
    timing: dict[str, float] = {}
    mark = time.perf_counter()
    whole = await anyio.to_thread.run_sync(model_pixels, decoded.image, lead.stored.input_spec)
    problem = image_problem(decoded.image, whole, settings)
    if problem is not None:
        timing.update({"decode": decode_ms, "preprocess": _ms(mark), "total": _ms(started)})
        result = _base(served, decisions, decoded, timing)
        return mark_not_applicable(result, problem)
    frame: np.ndarray | None = None
    found: list[Any] = []
    if faces == "auto":
        mark = time.perf_counter()
        frame = np.asarray(decoded.image)
        found = (await find_faces(engine, [frame]))[0]
        timing["faces"] = _ms(mark)
        if not found:
            return _no_face(served, decisions, decoded, decode_ms, timing, started)
    mark = time.perf_counter()
    width = len(NAMES) if stability else 1  # rows per judged picture
    batches: list[np.ndarray] = []
    for model in served:
        spec = model.stored.input_spec
        if frame is None and not stability and model is lead:
            batches.append(whole[None])  # already computed for the applicability check
            continue
        subjects = _subjects(decoded, frame, found, spec, settings.face_crop_margin)
        batches.append(await anyio.to_thread.run_sync(_rows, subjects, spec, stability))
    preprocess_ms = _ms(mark)
    mark = time.perf_counter()
    outputs = await asyncio.gather(*(m.client.predict(b) for m, b in zip(served, batches, strict=True)))
    inference_ms = _ms(mark)
    # (subjects, rows per subject) per model: raw, then calibrated.
    raw = [
        m.stored.fake_probabilities(out).reshape(-1, width) for m, out in zip(served, outputs, strict=True)
    ]
    calibrated = [d.probabilities(r) for d, r in zip(decisions, raw, strict=True)]
    combined = np.mean(calibrated, axis=0)  # one model: its own probabilities
    raw_combined = np.mean(raw, axis=0)
    threshold = round(float(np.mean([d.threshold for d in decisions])), 6)
    top = int(np.argmax(combined[:, 0]))  # the most-fake subject decides the picture
    probability = float(combined[top, 0])
    result = _base(served, decisions, decoded, timing)
    result.update(
        verdict=verdict_for(probability, threshold, settings.uncertain_band),
        fake_probability=round(probability, 6),
        raw_score=round(float(raw_combined[top, 0]), 6),
        threshold=threshold,
    )
    if faces == "auto":
        result["faces"] = [
            face_entry(0.0, face, float(p)) for face, p in zip(found, combined[:, 0], strict=True)
        ]
        result["aggregation"] = {"method": "max", "over": "faces", "count": len(found)}
    if len(served) > 1:
        result["models"] = [
            _member(m, d, float(r[top, 0]), float(c[top, 0]), settings.uncertain_band)
            for m, d, r, c in zip(served, decisions, raw, calibrated, strict=True)
        ]
        result["ensemble"] = {
            "method": "mean",
            "rule": "mean of the models' (calibrated) probabilities vs the mean of their thresholds",
            "count": len(served),
        }
    if stability:
        # Each variant judged as the picture is: its most-fake subject.
        scores = combined.max(axis=0)
        apply_stability(result, stability_block(list(scores), threshold, settings.uncertain_band))
    if explain:
        mark = time.perf_counter()
        pixels = batches[0][top * width]  # the picture, or its most-fake face, as the model saw it
        raw_top = float(raw[0][top, 0])
        result["explanation"] = await occlusion_heatmap(pixels, raw_top, lead.client.predict, lead.stored)
        result["timing_ms"]["explain"] = _ms(mark)
    result["timing_ms"].update(
        {"decode": decode_ms, "preprocess": preprocess_ms, "inference": inference_ms, "total": _ms(started)}
    )
    return result


def _member(
    served: ServedModel, decision: Decision, raw: float, probability: float, band: float
) -> dict[str, Any]:
    """An ensemble member's own figures, as the result's ``models`` lists them."""
    return {
        **served.stored.summary(),
        "fake_probability": round(probability, 6),
        "raw_score": round(raw, 6),
        "threshold": decision.threshold,
        "verdict": verdict_for(probability, decision.threshold, band),
        "calibrated": decision.calibrated,
    }


def _base(
    served: list[ServedModel], decisions: list[Decision], decoded: DecodedImage, timing: dict[str, float]
) -> dict[str, Any]:
    """The fields every image result has, before any model ran."""
    threshold = round(float(np.mean([d.threshold for d in decisions])), 6)
    lead = decisions[0]
    return {
        "id": new_id("det"),
        "modality": "image",
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "verdict": "NOT_APPLICABLE",
        "fake_probability": None,
        "raw_score": None,
        "calibrated": all(d.calibrated for d in decisions),
        "operating_point": {**lead.block(), "threshold": threshold},
        "threshold": threshold,
        "model": served[0].stored.summary(),
        "segments": [],
        "faces": [],
        "media": _media(decoded),
        "timing_ms": timing,
        "warnings": [w for m in served for w in m.warnings],
    }


def _media(decoded: DecodedImage) -> dict[str, Any]:
    return {
        "format": decoded.format,
        "width": decoded.width,
        "height": decoded.height,
        "mode": decoded.original_mode,
    }


def _no_face(
    served: list[ServedModel],
    decisions: list[Decision],
    decoded: DecodedImage,
    decode_ms: float,
    timing: dict[str, float],
    started: float,
) -> dict[str, Any]:
    timing.update({"decode": decode_ms, "total": _ms(started)})
    result = _base(served, decisions, decoded, timing)
    result.update(verdict="NO_FACE", aggregation={"method": "max", "over": "faces", "count": 0})
    result["warnings"].append(
        {"code": "no_face", "message": "no face found; send faces=off to score the whole picture"}
    )
    return result
