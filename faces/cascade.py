"""The steps of the MTCNN cascade in numpy + OpenCV, mirroring the ``mtcnn`` package (1.0.0).

Each function reproduces one helper of the package (``mtcnn/utils/images.py``, ``bboxes.py``,
``landmarks.py``) with the same arithmetic, so that the ONNX cascade in ``faces/mtcnn.py`` finds
the faces the package finds on the same frame. Boxes are float64 rows ``[x1, y1, x2, y2, score]``
of ONE frame (the package keeps a leading image-id column; we process frames one by one after
each batched model call, which is what the package computes for a single image).

Where we knowingly differ from the package, and why it does not change results:

- Pyramid levels are resized with OpenCV ``INTER_AREA`` instead of ``tf.image.resize(AREA)``.
  For a downscale both average exactly the input area each output pixel covers; they differ in
  float rounding only (~1e-6). (For an *up*scale, i.e. ``min_face_size < 12``, the two differ:
  OpenCV interpolates bilinearly there, TF still box-samples. The default is 20.)
- Non-maximum suppression is computed in column blocks instead of one N x N matrix (the same
  comparisons, bounded memory: a noisy frame can give thousands of PNet candidates).
- ``crop_and_resize`` is TensorFlow's bilinear kernel re-implemented on float32, including its
  ``(size - 1)`` sampling grid and the 0.0 it writes for samples outside the frame.
"""

from __future__ import annotations

import cv2
import numpy as np

# The package's constants: PNet looks at 12x12 windows with stride 2 (conv + one 2x2 max-pool),
# and the pyramid stops near 12 px. Normalization is (pixel - 127.5) / 128.
PNET_CELL = 12
PNET_STRIDE = 2
PYRAMID_MIN_SIZE = 12
PIXEL_MEAN = np.float32(127.5)
PIXEL_SCALE = np.float32(1 / 128)

# Columns of NMS per block: 512 x N float64 temporaries stay small for any realistic N.
_NMS_BLOCK = 512


def normalize(image: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 in [-1, 1), exactly the package's ``(x - 127.5) / 128`` (every value
    is a multiple of 1/256, so float32 holds it exactly, as the package's float64 does)."""
    return (image.astype(np.float32) - PIXEL_MEAN) * PIXEL_SCALE


def scale_pyramid(
    height: int, width: int, *, min_face_size: float, scale_factor: float, min_size: int = PYRAMID_MIN_SIZE
) -> np.ndarray:
    """``build_scale_pyramid``: the level count comes from the frame's short side, the first
    level maps a ``min_face_size`` face onto PNet's 12 px window. Python's ``round`` (half to
    even) as in the package."""
    min_dim = min(width, height)
    count = round(-((np.log(min_dim / min_size) / np.log(scale_factor)) + 1))
    return (min_size / min_face_size) * scale_factor ** np.arange(max(count, 0))


def scaled_shape(height: int, width: int, scale: float) -> tuple[int, int]:
    """The size of a pyramid level. The package passes ``shape * scale`` (floats) as the new size
    to ``tf.image.resize``, whose conversion to int32 truncates."""
    return int(height * scale), int(width * scale)


def resize_level(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """One pyramid level of a normalized float32 frame (area average, see the module docs)."""
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def pnet_boxes(offsets: np.ndarray, probs: np.ndarray, threshold: float, scale: float) -> np.ndarray:
    """``generate_bounding_box`` + ``upscale_bboxes`` for one frame at one pyramid level.

    ``offsets`` (h, w, 4) and ``probs`` (h, w, 2) are PNet's outputs. Each cell whose face
    probability is above ``threshold`` becomes the window ``[2x+1, 2y+1, 2x+12, 2y+12]`` moved by
    the regression times 11 (the package's window arithmetic, +1s included), sorted by score
    (descending, the package's argsort reversed), then divided by the level's scale.
    """
    score = probs[:, :, 1]
    ys, xs = np.nonzero(score > threshold)
    if ys.size == 0:
        return np.empty((0, 5))
    reg = offsets[ys, xs].astype(np.float64)
    left, top = xs * PNET_STRIDE + 1, ys * PNET_STRIDE + 1
    right, bottom = xs * PNET_STRIDE + PNET_CELL, ys * PNET_STRIDE + PNET_CELL
    size = PNET_CELL - 1  # (right - left) == (bottom - top) == 11, as the package computes it
    boxes = np.stack(
        [
            left + reg[:, 0] * size,
            top + reg[:, 1] * size,
            right + reg[:, 2] * size,
            bottom + reg[:, 3] * size,
            score[ys, xs].astype(np.float64),
        ],
        axis=1,
    )
    boxes = sort_by_score(boxes)
    boxes[:, :4] /= scale
    return boxes


def sort_by_score(boxes: np.ndarray) -> np.ndarray:
    """Highest score first, with the package's exact ordering (``argsort`` reversed), so ties
    between equal scores break the same way."""
    return boxes[np.argsort(boxes[:, 4])[::-1]]


def nms(boxes: np.ndarray, threshold: float, *, method: str = "union", sort: bool = True) -> np.ndarray:
    """``smart_nms_from_bboxes`` for one frame.

    This is the package's rule, which is NOT greedy NMS: box j is dropped when ANY earlier box i
    (i < j in score order) overlaps it by more than ``threshold``, even a box that was itself
    dropped. Overlap is intersection over union, or over the smaller box (``method="min"``), with
    areas ``(x2 - x1) * (y2 - y1)`` and the same float64 operations in the same order.
    """
    if sort:
        boxes = sort_by_score(boxes)
    count = len(boxes)
    if count < 2:
        return boxes
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    area = (x2 - x1) * (y2 - y1)
    keep = np.ones(count, dtype=bool)
    for start in range(1, count, _NMS_BLOCK):
        stop = min(start + _NMS_BLOCK, count)
        cols = slice(start, stop)
        # rows i < stop against columns j in [start, stop); only i < j counts.
        inter_w = np.maximum(
            0, np.minimum(x2[:stop, None], x2[None, cols]) - np.maximum(x1[:stop, None], x1[None, cols])
        )
        inter_h = np.maximum(
            0, np.minimum(y2[:stop, None], y2[None, cols]) - np.maximum(y1[:stop, None], y1[None, cols])
        )
        inter = inter_w * inter_h
        if method == "union":
            denominator = area[:stop, None] + area[None, cols] - inter
        elif method == "min":
            denominator = np.minimum(area[:stop, None], area[None, cols])
        else:
            raise ValueError(f"NMS method must be 'union' or 'min', got {method!r}")
        with np.errstate(divide="ignore", invalid="ignore"):
            overlap = inter / denominator  # 0/0 is NaN, which never suppresses (as in the package)
        earlier = np.arange(stop)[:, None] < np.arange(start, stop)[None, :]
        keep[cols] = ~((overlap > threshold) & earlier).any(axis=0)
    return boxes[keep]


def square(boxes: np.ndarray) -> np.ndarray:
    """``resize_to_square``: grow the short side to the long one around the box centre."""
    boxes = boxes.copy()
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = np.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2] = boxes[:, 0] + side
    boxes[:, 3] = boxes[:, 1] + side
    return boxes


def refine(boxes: np.ndarray, offsets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``replace_confidence`` + ``adjust_bboxes``: the stage's face probability becomes the
    score, and the regression moves each edge by a fraction of the box size ``x2 - x1 + 1``."""
    boxes = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, :4] += offsets * np.stack([w, h, w, h], axis=-1)
    boxes[:, 4] = scores
    return boxes


def place_landmarks(landmarks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``adjust_landmarks``: ONet's (x1..x5, y1..y5) in [0, 1] of the box it saw -> frame pixels
    (``size * value + corner - 1``, the package's formula)."""
    w = boxes[:, 2:3] - boxes[:, 0:1] + 1
    h = boxes[:, 3:4] - boxes[:, 1:2] + 1
    landmarks = landmarks.astype(np.float64)
    return np.concatenate(
        [w * landmarks[:, :5] + boxes[:, 0:1] - 1, h * landmarks[:, 5:] + boxes[:, 1:2] - 1], axis=1
    )


def crop_and_resize(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """``tf.image.crop_and_resize(method="bilinear", extrapolation_value=0)`` of one normalized
    float32 frame (H, W, 3) at ``boxes`` (x1, y1, x2, y2 in pixels), as the package calls it:
    boxes are divided by the frame size (float64, then float32 as TF takes them) and sampled on
    a ``size`` x ``size`` grid whose ends are the box corners scaled by ``(H - 1)``, ``(W - 1)``.
    Samples outside the frame are 0.0 (mid-grey after normalization). Returns (n, size, size, 3).
    """
    height, width = image.shape[:2]
    count = len(boxes)
    if count == 0:
        return np.empty((0, size, size, image.shape[2]), dtype=np.float32)
    unit = (boxes[:, [1, 0, 3, 2]] / np.asarray([height, width, height, width])).astype(np.float32)
    grid = np.arange(size, dtype=np.float32)
    last = np.float32(max(size - 1, 1))

    def axis(start: np.ndarray, stop: np.ndarray, extent: int) -> tuple[np.ndarray, ...]:
        top = np.float32(extent - 1)
        step = (stop - start) * top / last
        pos = (start * top)[:, None] + grid[None, :] * step[:, None]  # (n, size) float32
        valid = np.isfinite(pos) & (pos >= 0) & (pos <= top)
        safe = np.where(valid, pos, 0).astype(np.float32)
        low = np.floor(safe)
        lerp = (safe - low).astype(np.float32)
        low_i = low.astype(np.intp)
        high_i = np.minimum(np.ceil(safe).astype(np.intp), extent - 1)
        return valid, low_i, high_i, lerp

    valid_y, top_i, bottom_i, y_lerp = axis(unit[:, 0], unit[:, 2], height)
    valid_x, left_i, right_i, x_lerp = axis(unit[:, 1], unit[:, 3], width)
    flat = image.reshape(height * width, -1)
    rows_top, rows_bottom = (top_i * width)[:, :, None], (bottom_i * width)[:, :, None]
    cols_left, cols_right = left_i[:, None, :], right_i[:, None, :]
    xl = x_lerp[:, None, :, None]
    top_left, top_right = flat[rows_top + cols_left], flat[rows_top + cols_right]
    top_row = top_left + (top_right - top_left) * xl
    bottom_left, bottom_right = flat[rows_bottom + cols_left], flat[rows_bottom + cols_right]
    bottom_row = bottom_left + (bottom_right - bottom_left) * xl
    crops = top_row + (bottom_row - top_row) * y_lerp[:, :, None, None]
    inside = valid_y[:, :, None] & valid_x[:, None, :]
    crops[~inside] = 0.0
    return crops
