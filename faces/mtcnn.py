"""MTCNN face detection on ONNX Runtime: the ``mtcnn`` package's cascade without TensorFlow.

The P/R/O-nets are the package's own (exported by ``models/export/mtcnn.py`` into the model store
as ``mtcnn``); the cascade around them is ``faces/cascade.py``, step for step the package's. Two
things make it fast enough for video (the package takes 1.1-1.7 s per 1280x720 frame here):

1. **Downscaling.** The cascade runs on the frame shrunk (``INTER_AREA``) so its longest side is
   ``max_side``, and the boxes are mapped back to original pixels. PNet's cost grows with the
   frame's area, so 1280x720 -> 640x360 is ~4x less work; the price is the smallest face found,
   nominally ``min_face_size`` in *downscaled* pixels (20 at 640 px = 40 px of a 1280-px-wide
   frame; PNet's box regression reaches a little lower, ~16 px measured).
2. **Batching.** PNet runs per pyramid level over frames of the same size, as many per call as
   fit in ~64k pixels (small levels: all frames in one call; a 216x384 level: one frame, since
   bigger batches there were slower on CPU); RNet and ONet run once each over the candidate
   crops of all frames.

Results equal the package's run on the same (downscaled) frame within the tolerances stated in
``tests/unit/test_faces.py``. Serving-path module: numpy, OpenCV and onnxruntime only.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from faces import cascade

log = logging.getLogger(__name__)

MODEL_ID = "mtcnn"
GRAPH_FILES = {"pnet": "pnet.onnx", "rnet": "rnet.onnx", "onet": "onet.onnx"}
INPUT_NAME = "images"
# Output names of the exported graphs (models/export/mtcnn.py names them).
OUTPUTS = {
    "pnet": ("offsets", "probs"),
    "rnet": ("offsets", "probs"),
    "onet": ("offsets", "landmarks", "probs"),
}
RNET_SIZE, ONET_SIZE = 24, 48
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

# 640 px: a 1280x720 frame costs ~35-45 ms of one core (the pyramid's resizes + PNet are ~3/4
# of it), well under the 100 ms budget on the shared 2-core machine, and faces from ~40 px of the
# original are still found (min_face_size 20 at half size). 1280 would be ~4x the PNet work.
DEFAULT_MAX_SIDE = 640
# The package's defaults (StagePNet/StageRNet/StageONet keyword arguments).
DEFAULT_MIN_FACE_SIZE = 20
DEFAULT_SCALE_FACTOR = 0.709
DEFAULT_THRESHOLDS = (0.6, 0.7, 0.8)  # PNet, RNet, ONet face probability (strictly above)
DEFAULT_NMS = (0.5, 0.7, 0.7, 0.7)  # PNet per level, PNet across levels, RNet, ONet ("min")
# Crops per RNet/ONet call: bounds memory on a frame full of face-like texture.
_MAX_CROPS_PER_CALL = 4096
# Most pixels per PNet call (frames x level height x width), see _propose.
_PNET_BATCH_PIXELS = 65_536


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x, y, w, h in ORIGINAL frame pixels
    score: float  # ONet's face probability
    landmarks: dict[str, tuple[float, float]]  # LANDMARKS -> (x, y) in original frame pixels


@dataclass
class _Frame:
    """One frame's state through the cascade (downscaled image and its candidates)."""

    image: np.ndarray  # normalized float32 (h, w, 3) of the downscaled frame
    scale_x: float  # original / downscaled, per axis
    scale_y: float
    width: int  # original size, for clipping
    height: int
    boxes: np.ndarray  # (n, 5) x1, y1, x2, y2, score in downscaled pixels
    landmarks: np.ndarray | None = None  # (n, 10) 5 x then 5 y, set by ONet


def downscale(frame: np.ndarray, max_side: int) -> np.ndarray:
    """The frame the cascade actually sees: shrunk with ``INTER_AREA`` so its longest side is
    ``max_side`` (rounded sizes), never enlarged. Public so the parity test can hand the very
    same pixels to the ``mtcnn`` package."""
    height, width = frame.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return frame
    ratio = max_side / longest
    size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def _session(path: Path, intra_op_threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # A frame is ~15 short calls; spinning threads between them burnt twice the CPU time for no
    # gain in latency on the shared 2-core machine, CPU that decoding and the encoder need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class FaceDetector:
    """Faces in RGB uint8 frames; thread-safe (ONNX Runtime sessions are)."""

    def __init__(
        self,
        model_dir: Path,
        *,
        intra_op_threads: int,
        max_side: int = DEFAULT_MAX_SIDE,
        min_face_size: int = DEFAULT_MIN_FACE_SIZE,
        scale_factor: float = DEFAULT_SCALE_FACTOR,
        thresholds: tuple[float, float, float] = DEFAULT_THRESHOLDS,
        nms_thresholds: tuple[float, float, float, float] = DEFAULT_NMS,
    ) -> None:
        if max_side < cascade.PNET_CELL:
            raise ValueError(f"max_side must be at least {cascade.PNET_CELL}, got {max_side}")
        if min_face_size <= 0 or not 0 < scale_factor < 1:
            raise ValueError(
                f"need min_face_size > 0 and 0 < scale_factor < 1, got {min_face_size}, {scale_factor}"
            )
        self.max_side = max_side
        self.min_face_size = min_face_size
        self.scale_factor = scale_factor
        self.thresholds = tuple(thresholds)
        self.nms_thresholds = tuple(nms_thresholds)
        self._sessions = {
            name: _session(Path(model_dir) / filename, intra_op_threads)
            for name, filename in GRAPH_FILES.items()
        }
        log.info(
            "face detector ready",
            extra={"model_dir": str(model_dir), "max_side": max_side, "min_face_size": min_face_size},
        )

    # -- the cascade -------------------------------------------------------------------------

    def detect(self, frames: list[np.ndarray]) -> list[list[Face]]:
        """Faces per frame (RGB uint8 HxWx3 each; sizes may differ), best score first."""
        states = [self._prepare(frame) for frame in frames]
        live = [s for s in states if s is not None]
        self._propose(live)
        self._stage(live, "rnet", RNET_SIZE)
        self._stage(live, "onet", ONET_SIZE)
        return [self._faces(s) if s is not None else [] for s in states]

    def _prepare(self, frame: np.ndarray) -> _Frame | None:
        if (
            not isinstance(frame, np.ndarray)
            or frame.dtype != np.uint8
            or frame.ndim != 3
            or frame.shape[2] != 3
        ):
            shape = getattr(frame, "shape", None)
            raise ValueError(f"frames must be RGB uint8 arrays (H, W, 3), got {type(frame).__name__} {shape}")
        height, width = frame.shape[:2]
        small = downscale(frame, self.max_side)
        h, w = small.shape[:2]
        if min(h, w) < cascade.PNET_CELL:  # not even one PNet window: no face can be found
            return None
        return _Frame(cascade.normalize(small), width / w, height / h, width, height, np.empty((0, 5)))

    def _propose(self, frames: list[_Frame]) -> None:
        """PNet over the pyramid, frames of one size batched per level, then the package's
        per-level and cross-level NMS and squaring, per frame."""
        pnet_threshold = self.thresholds[0]
        nms_level, nms_all = self.nms_thresholds[0], self.nms_thresholds[1]
        groups: dict[tuple[int, int], list[_Frame]] = defaultdict(list)
        for state in frames:
            groups[state.image.shape[:2]].append(state)
        for (height, width), group in groups.items():
            per_frame: list[list[np.ndarray]] = [[] for _ in group]
            scales = cascade.scale_pyramid(
                height, width, min_face_size=self.min_face_size, scale_factor=self.scale_factor
            )
            for scale in scales:
                h, w = cascade.scaled_shape(height, width, float(scale))
                if min(h, w) < cascade.PNET_CELL:  # PNet's output would be empty
                    continue
                # Big levels run a few frames per call: one 10-frame batch of a 216x384 level was
                # ~25% slower than ten 1-frame calls on CPU (activations outgrow the caches);
                # small levels all in one call, where the per-call overhead is what counts.
                per_call = max(1, _PNET_BATCH_PIXELS // (h * w))
                for start in range(0, len(group), per_call):
                    chunk = group[start : start + per_call]
                    batch = np.stack([cascade.resize_level(s.image, h, w) for s in chunk])
                    offsets, probs = self._run("pnet", batch)
                    for i in range(len(chunk)):
                        boxes = cascade.pnet_boxes(offsets[i], probs[i], pnet_threshold, float(scale))
                        per_frame[start + i].append(cascade.nms(boxes, nms_level, sort=False))
            for state, levels in zip(group, per_frame, strict=True):
                boxes = np.concatenate(levels) if levels else np.empty((0, 5))
                state.boxes = cascade.square(cascade.nms(boxes, nms_all))

    def _stage(self, frames: list[_Frame], name: str, size: int) -> None:
        """RNet or ONet over the crops of every frame in one call (chunked), then per frame:
        refine, threshold, NMS (and for ONet, landmarks)."""
        threshold = self.thresholds[1 if name == "rnet" else 2]
        nms_threshold = self.nms_thresholds[2 if name == "rnet" else 3]
        counts = [len(s.boxes) for s in frames]
        if sum(counts) == 0:
            return
        crops = np.concatenate([cascade.crop_and_resize(s.image, s.boxes[:, :4], size) for s in frames])
        outputs = self._run(name, crops)
        start = 0
        for state, count in zip(frames, counts, strict=True):
            part = [out[start : start + count] for out in outputs]
            start += count
            if count == 0:
                continue
            offsets, probs = part[0], part[-1]
            boxes = cascade.refine(state.boxes, offsets, probs[:, 1])
            if name == "onet":
                points = cascade.place_landmarks(part[1], state.boxes)
                boxes = np.concatenate([boxes, points], axis=1)
            boxes = boxes[boxes[:, 4] > threshold]
            if name == "rnet":
                state.boxes = cascade.square(cascade.nms(boxes, nms_threshold))
            else:
                boxes = cascade.nms(boxes, nms_threshold, method="min")
                state.boxes, state.landmarks = boxes[:, :5], boxes[:, 5:]

    def _run(self, name: str, batch: np.ndarray) -> list[np.ndarray]:
        session = self._sessions[name]
        if name == "pnet" or len(batch) <= _MAX_CROPS_PER_CALL:
            return session.run(OUTPUTS[name], {INPUT_NAME: batch})
        chunks = [
            session.run(OUTPUTS[name], {INPUT_NAME: batch[i : i + _MAX_CROPS_PER_CALL]})
            for i in range(0, len(batch), _MAX_CROPS_PER_CALL)
        ]
        return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]

    @staticmethod
    def _faces(state: _Frame) -> list[Face]:
        """Downscaled boxes -> original pixels, clipped to the frame like the package's
        ``fit_to_image`` (landmarks are not clipped, also like the package)."""
        points = state.landmarks
        if points is None or len(state.boxes) == 0:  # no candidate reached ONet
            return []
        sx, sy = state.scale_x, state.scale_y
        x1 = np.clip(state.boxes[:, 0] * sx, 0, state.width - 1)
        x2 = np.clip(state.boxes[:, 2] * sx, 0, state.width - 1)
        y1 = np.clip(state.boxes[:, 1] * sy, 0, state.height - 1)
        y2 = np.clip(state.boxes[:, 3] * sy, 0, state.height - 1)
        faces = []
        for i in range(len(state.boxes)):
            marks = {
                name: (float(points[i, k] * sx), float(points[i, 5 + k] * sy))
                for k, name in enumerate(LANDMARKS)
            }
            box = (float(x1[i]), float(y1[i]), float(x2[i] - x1[i]), float(y2[i] - y1[i]))
            faces.append(Face(box=box, score=float(state.boxes[i, 4]), landmarks=marks))
        return faces
