"""Face crops for a per-face model (the video encoder, the image model on faces).

Choices, and why:

- **Margin**: each side of the detector's box grows by ``margin`` times the box's longer side
  (0.2 -> a square 1.4x the face). Face-swap artefacts sit at the blend boundary around the
  face (jaw line, hairline, cheeks), which a tight MTCNN box cuts off.
- **Square** around the box centre: the encoders take square inputs, and squaring instead of
  stretching keeps the face's proportions (a stretched face is itself an artefact).
- **Frame edges**: a square that runs off the frame is *shifted* back inside when it fits, so
  the crop holds real pixels only; only a square larger than the frame's short side is padded,
  with black (constant 0), keeping the face at the same scale as every other crop.
- **Resize**: ``INTER_AREA`` when shrinking (averages, no aliasing of fine texture that the
  detector must see), ``INTER_LINEAR`` when enlarging (``INTER_AREA`` would be near-nearest).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from faces.mtcnn import Face


def crop_box(
    box: tuple[float, float, float, float], frame_width: int, frame_height: int, margin: float
) -> tuple[int, int, int]:
    """The square ``(left, top, side)`` in frame pixels for one face box ``(x, y, w, h)``; it
    may extend past the frame only when ``side`` exceeds the frame's width or height."""
    x, y, w, h = box
    longest = max(w, h, 1.0)
    side = max(1, round(longest * (1 + 2 * margin)))
    cx, cy = x + w / 2, y + h / 2

    def place(centre: float, extent: int) -> int:
        start = round(centre - side / 2)
        if side <= extent:  # fits: slide it inside
            return min(max(start, 0), extent - side)
        return start  # larger than the frame: stays centred on the face, padded where it overhangs

    return place(cx, frame_width), place(cy, frame_height), side


def face_crops(frame: np.ndarray, faces: Sequence[Face], *, size: int, margin: float) -> np.ndarray:
    """(N, size, size, 3) uint8 crops of ``faces`` in an RGB uint8 ``frame`` (N may be 0)."""
    if size < 1 or margin < 0:
        raise ValueError(f"need size >= 1 and margin >= 0, got size={size}, margin={margin}")
    height, width = frame.shape[:2]
    out = np.zeros((len(faces), size, size, 3), dtype=np.uint8)
    for i, face in enumerate(faces):
        left, top, side = crop_box(face.box, width, height, margin)
        square = np.zeros((side, side, 3), dtype=np.uint8)  # black where the frame ends
        x0, y0 = max(left, 0), max(top, 0)
        x1, y1 = min(left + side, width), min(top + side, height)
        if x1 > x0 and y1 > y0:
            square[y0 - top : y1 - top, x0 - left : x1 - left] = frame[y0:y1, x0:x1]
        interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        out[i] = square if side == size else cv2.resize(square, (size, size), interpolation=interpolation)
    return out
