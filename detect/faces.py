"""Faces in pictures and video frames: the MTCNN cascade (``faces/``) run off the event loop, the
crops the models see, and the ``faces`` entries of a result.

Which faces count: at most ``VERITY_FACES_PER_FRAME`` per frame, the largest first (a crowd in the
background should not multiply the model's work, and the person on camera is the subject).
"""

from __future__ import annotations

from typing import Any

import anyio
import numpy as np
from PIL import Image

from detect.engine import Engine
from errors import ServiceUnavailable
from faces.crops import face_crops
from faces.mtcnn import Face
from models.catalog import ImageInputSpec
from models.preprocess import pixel_batch


async def find_faces(engine: Engine, frames: list[np.ndarray]) -> list[list[Face]]:
    """Faces per frame, the largest first, at most ``faces_per_frame`` each."""
    detector = engine.face_detector
    if detector is None:
        raise ServiceUnavailable(
            "face detection is not available here (run `make models` to store the mtcnn export)",
            code="faces_unavailable",
        )
    found = await anyio.to_thread.run_sync(detector.detect, frames, limiter=engine.face_limiter)
    limit = engine.settings.faces_per_frame
    return [sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True)[:limit] for faces in found]


def crops_for(frame: np.ndarray, faces: list[Face], spec: ImageInputSpec, margin: float) -> np.ndarray:
    """Model input for each face of ``frame``: a square crop with ``margin`` around the box,
    resized as ``spec`` says, as uint8 pixels (the model side normalizes them)."""
    crops = face_crops(frame, faces, size=max(spec.size), margin=margin)
    return pixel_batch([Image.fromarray(crop) for crop in crops], spec)


def face_entry(frame_s: float, face: Face, probability: float | None, scale: float = 1.0) -> dict[str, Any]:
    """A result's ``faces`` entry; ``scale`` is frame pixels per media pixel (a downscaled video
    frame), so boxes and landmarks are reported in the media's own pixels."""
    x, y, w, h = (v / scale for v in face.box)
    return {
        "frame_s": round(frame_s, 3),
        "box": [round(x, 1), round(y, 1), round(w, 1), round(h, 1)],
        "score": round(face.score, 4),
        "fake_probability": None if probability is None else round(probability, 6),
        "landmarks": {k: [round(v[0] / scale, 1), round(v[1] / scale, 1)] for k, v in face.landmarks.items()},
    }
