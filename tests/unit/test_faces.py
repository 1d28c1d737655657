"""Face detection (faces/): the ONNX MTCNN cascade finds what the ``mtcnn`` package finds on the
same frames, its export matches the Keras nets, crops are right, and no TensorFlow is imported.

Frames are made offline: ``skimage.data.astronaut()`` (shipped inside scikit-image) as it is,
and its head pasted into 1280x720 backgrounds at several positions and sizes, mirrored, two per
frame. Frames without faces: noise, a flat colour, and scikit-image's photos without people.
The package (TensorFlow) is only the reference here; the session exports the graphs once
(conftest ``face_model_store``), which pays the TensorFlow import for the whole module.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from faces import Face, FaceDetector, face_crops
from faces.crops import crop_box
from faces.mtcnn import DEFAULT_MAX_SIDE, GRAPH_FILES, LANDMARKS, downscale
from models.store import StoredModel
from tests.conftest import PROJECT_ROOT
from tests.face_factory import FRAME_H, FRAME_W, HEAD, Paste, astronaut, background, compose

pytestmark = pytest.mark.unit

log = logging.getLogger(__name__)


# --- parity tolerances (cascade vs the package on the SAME downscaled frame) ------------------
# Both sides compute the same numbers up to float rounding: crop_and_resize is re-implemented
# bit for bit, OpenCV's area resize differs from TensorFlow's by ~3e-5 on the [-1, 1] pixels,
# ONNX Runtime from Keras by ~1e-6. Compared with the package's unrounded output, the measured
# gaps are <= 2e-4 px on edges and landmarks, <= 1.2e-7 on scores, IoU >= 0.99999. The
# tolerances leave ~50x room for other CPUs' float rounding while still failing on any real
# divergence (a different candidate surviving NMS moves a box by pixels, not hundredths).
EDGE_TOL_PX = 0.01  # pixels of the frame the package saw
IOU_TOL = 0.999
SCORE_TOL = 1e-5
LANDMARK_TOL_PX = 0.01
# Against the package on the FULL frame (a different pyramid: it sees 2x the pixels), measured:
# same faces, IoU >= 0.91, edges <= 2.6 px, scores within 0.004, landmarks within 3.3 px.
FULL_RES_IOU = 0.85
FULL_RES_SCORE = 0.01


# --- frames -------------------------------------------------------------------------------------


FACE_FRAMES = {
    # head patch 240 px: a ~100 px face (the astronaut's own size)
    "centre": [Paste(520, 240, 240)],
    "small-left": [Paste(60, 400, 140)],  # ~60 px face: the smallest the default settings promise
    "large-right": [Paste(800, 120, 440)],
    "mirrored-top": [Paste(300, 10, 200, mirror=True)],
    "two-faces": [Paste(100, 200, 260), Paste(800, 300, 180, mirror=True)],
}


def no_face_frames() -> dict[str, np.ndarray]:
    from skimage import data

    rng = np.random.default_rng(7)
    frames = {
        "noise": rng.integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8),
        "flat": np.full((FRAME_H, FRAME_W, 3), (90, 140, 200), dtype=np.uint8),
        "gradient": background(3),
    }
    for name in ("coffee", "rocket", "chelsea"):
        try:
            picture = getattr(data, name)()
        except Exception:  # a picture this scikit-image would have to download
            continue
        frames[name] = cv2.resize(
            np.ascontiguousarray(picture), (FRAME_W, FRAME_H), interpolation=cv2.INTER_LINEAR
        )
    return frames


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stored(face_model_store: list[StoredModel]) -> StoredModel:
    (model,) = face_model_store
    return model


@pytest.fixture(scope="module")
def detector(stored: StoredModel) -> FaceDetector:
    return FaceDetector(stored.path, intra_op_threads=2)


@pytest.fixture(scope="module")
def package():
    """The reference: the ``mtcnn`` package itself, on TensorFlow."""
    from mtcnn import MTCNN

    return MTCNN()


# --- helpers ------------------------------------------------------------------------------------


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def package_faces(package, frame: np.ndarray) -> list[Face]:
    """The package's result as Face objects, unrounded: its ``output_type="numpy"`` rows are
    ``[image, x, y, w, h, score, 5 landmark x, 5 landmark y]`` before the whole-pixel rounding
    of its JSON output (which alone would cost up to 0.5 px per coordinate)."""
    rows = package.detect_faces(frame, output_type="numpy")
    return [
        Face(
            box=tuple(float(v) for v in row[1:5]),
            score=float(row[5]),
            landmarks={k: (float(row[6 + i]), float(row[11 + i])) for i, k in enumerate(LANDMARKS)},
        )
        for row in np.asarray(rows).reshape(-1, 16)
    ]


def in_frame(face: Face, sx: float, sy: float) -> Face:
    """A Face from original-frame pixels into the downscaled frame the package saw."""
    x, y, w, h = face.box
    return Face(
        box=(x / sx, y / sy, w / sx, h / sy),
        score=face.score,
        landmarks={k: (px / sx, py / sy) for k, (px, py) in face.landmarks.items()},
    )


@dataclass
class Agreement:
    count_ours: int
    count_theirs: int
    min_iou: float = 1.0
    max_edge: float = 0.0
    max_score: float = 0.0
    max_landmark: float = 0.0


def compare(ours: list[Face], theirs: list[Face]) -> Agreement:
    """Pair each of the package's faces with our best-overlapping one."""
    result = Agreement(len(ours), len(theirs))
    for ref in theirs:
        best = max(ours, key=lambda f: iou(f.box, ref.box), default=None)
        if best is None:
            result.min_iou = 0.0
            continue
        ox, oy, ow, oh = best.box
        rx, ry, rw, rh = ref.box
        edges = (ox - rx, oy - ry, (ox + ow) - (rx + rw), (oy + oh) - (ry + rh))
        result.min_iou = min(result.min_iou, iou(best.box, ref.box))
        result.max_edge = max(result.max_edge, *(abs(e) for e in edges))
        result.max_score = max(result.max_score, abs(best.score - ref.score))
        for k in LANDMARKS:
            dx = best.landmarks[k][0] - ref.landmarks[k][0]
            dy = best.landmarks[k][1] - ref.landmarks[k][1]
            result.max_landmark = max(result.max_landmark, float(np.hypot(dx, dy)))
    return result


def expected_face_box(paste: Paste, head_face: tuple[float, float, float, float]) -> tuple[float, ...]:
    """Where the astronaut's face (its box in the 512 px picture) lands in a composed frame."""
    x, y, w, h = head_face
    scale = paste.size / (HEAD[1].stop - HEAD[1].start)
    fx = (x - HEAD[1].start) * scale
    if paste.mirror:
        fx = paste.size - fx - w * scale
    return (paste.x + fx, paste.y + (y - HEAD[0].start) * scale, w * scale, h * scale)


@pytest.fixture(scope="module")
def astronaut_face(detector: FaceDetector) -> Face:
    (face,) = detector.detect([astronaut()])[0]
    return face


# --- export -------------------------------------------------------------------------------------


def test_export_stores_three_verified_graphs(stored: StoredModel):
    meta = stored.metadata
    assert stored.model_id == "mtcnn" and stored.precision == "fp32"
    assert meta["modality"] == "faces" and meta["weights"] == "pretrained"
    assert meta["source"] == "pypi:mtcnn==1.0.0"
    assert set(meta["files"]) == set(GRAPH_FILES.values())
    for filename in GRAPH_FILES.values():
        assert (stored.path / filename).is_file()
    assert set(meta["parity_by_graph"]) == set(GRAPH_FILES)
    assert all(0 <= v <= meta["parity_tolerance"] <= 1e-4 for v in meta["parity_by_graph"].values())
    assert meta["parity_max_abs_diff"] == max(meta["parity_by_graph"].values())


def test_export_parity_on_fresh_inputs(stored: StoredModel):
    """Each graph against its Keras net on inputs the export never probed: other sizes, batches."""
    from models.export.mtcnn import keras_outputs, load_keras_nets, onnx_outputs

    nets = load_keras_nets()
    rng = np.random.default_rng(11)
    shapes = {
        "pnet": [(1, 12, 19), (4, 64, 31), (2, 101, 157)],
        "rnet": [(1, 24, 24), (33, 24, 24)],
        "onet": [(1, 48, 48), (9, 48, 48)],
    }
    worst = {}
    for name, filename in GRAPH_FILES.items():
        worst[name] = 0.0
        for shape in shapes[name]:
            batch = rng.uniform(-1, 1, (*shape, 3)).astype(np.float32)
            expected = keras_outputs(nets[name], name, batch)
            got = onnx_outputs(stored.path / filename, name, batch)
            for key, value in expected.items():
                assert got[key].shape == value.shape
                worst[name] = max(worst[name], float(np.abs(got[key] - value).max()))
    log.info("mtcnn export parity on fresh inputs: %s", worst)
    assert max(worst.values()) < 1e-4, worst


def test_export_is_repeatable(stored: StoredModel):
    """Exporting again converts to the very same bytes, hence the same stored tag (a no-op)."""
    from models.export.pipeline import export_model

    (again,) = export_model("mtcnn")
    assert again.tag == stored.tag


def test_export_refuses_a_source_file():
    """The graphs come from the pinned package; a --source would silently be ignored otherwise."""
    from models.export.pipeline import export_model

    with pytest.raises(ValueError, match="--source"):
        export_model("mtcnn", source="detector.onnx")


@pytest.mark.parametrize("already_stored", [False, True])
def test_ensure_exports_the_face_detector_unless_stored(monkeypatch, already_stored: bool):
    """``python -m models ensure`` (``make models``) exports ``mtcnn`` when its fp32 export is
    missing (it has no int8 one), and leaves it alone when stored."""
    import argparse

    import models.__main__ as cli
    import models.export.pipeline as pipeline
    import models.store as store

    exported: list[str] = []
    stored = SimpleNamespace(tag="x:fp32-0", weights="dev", metadata={"source": "dev"}, path="/x")
    monkeypatch.setattr(pipeline, "export_model", lambda model_id, **_: exported.append(model_id) or [])
    monkeypatch.setattr(
        store,
        "find_stored",
        lambda model_id, precision: stored if model_id != "mtcnn" or already_stored else None,
    )
    monkeypatch.setattr(store, "find_video_pair", lambda *_: (stored, stored), raising=False)
    monkeypatch.setattr(store, "list_stored", lambda model_id=None: [])  # mtcnn: no version at all
    assert cli._cmd_ensure(argparse.Namespace(offline=True)) == 0
    assert exported == ([] if already_stored else ["mtcnn"])


# --- detection ----------------------------------------------------------------------------------


def test_finds_the_astronaut(astronaut_face: Face):
    face = astronaut_face
    x, y, w, h = face.box
    assert face.score > 0.99
    # Her face, not her suit or the flag: upper middle of the picture, 80-160 px wide.
    assert 150 < x < 260 and 30 < y < 130 and 80 < w < 160 and 90 < h < 190
    marks = face.landmarks
    assert set(marks) == set(LANDMARKS)
    for px, py in marks.values():
        assert x <= px <= x + w and y <= py <= y + h
    assert marks["left_eye"][0] < marks["right_eye"][0]
    assert max(marks["left_eye"][1], marks["right_eye"][1]) < marks["nose"][1]
    assert marks["nose"][1] < min(marks["mouth_left"][1], marks["mouth_right"][1])


@pytest.mark.parametrize("name", sorted(FACE_FRAMES))
def test_finds_pasted_faces_in_original_coordinates(detector: FaceDetector, astronaut_face: Face, name: str):
    pastes = FACE_FRAMES[name]
    (faces,) = detector.detect([compose(pastes)])
    assert len(faces) == len(pastes), faces
    for paste in pastes:
        expected = expected_face_box(paste, astronaut_face.box)
        assert max(iou(f.box, expected) for f in faces) > 0.7, (name, expected, faces)


def test_frames_without_faces_give_nothing(detector: FaceDetector):
    frames = no_face_frames()
    assert {"noise", "flat", "gradient"} <= set(frames)
    results = detector.detect(list(frames.values()))
    assert dict(zip(frames, results, strict=True)) == {name: [] for name in frames}


def test_mixed_batch_equals_frame_by_frame(detector: FaceDetector):
    """Frames of different sizes, with and without faces, tiny ones too: one call gives what
    separate calls give (PNet batches per size, RNet/ONet across all frames)."""
    big = compose(FACE_FRAMES["two-faces"])
    frames = [
        big,
        astronaut(),
        compose(FACE_FRAMES["centre"], seed=2),
        no_face_frames()["flat"],
        big[:300, :500].copy(),  # another size, cut through the first face
        np.zeros((8, 8, 3), np.uint8),  # too small for one PNet window
        cv2.resize(astronaut(), (300, 200)),  # squeezed
    ]
    batched = detector.detect(frames)
    assert len(batched) == len(frames)
    assert batched[5] == [] and batched[3] == []
    for frame, together in zip(frames, batched, strict=True):
        (alone,) = detector.detect([frame])
        assert len(alone) == len(together)
        for a, b in zip(alone, together, strict=True):
            assert np.allclose(a.box, b.box, atol=1e-3) and abs(a.score - b.score) < 1e-5


def test_runs_on_the_downscaled_frame(detector: FaceDetector):
    """A 1280x720 frame gives the boxes of its 640x360 version, scaled back up."""
    frame = compose(FACE_FRAMES["centre"])
    small = downscale(frame, DEFAULT_MAX_SIDE)
    assert small.shape == (360, 640, 3)
    (big_faces,) = detector.detect([frame])
    (small_faces,) = detector.detect([small])
    assert len(big_faces) == len(small_faces) == 1
    assert np.allclose(big_faces[0].box, np.asarray(small_faces[0].box) * 2, atol=1e-6)


def test_max_side_trades_speed_for_small_faces(stored: StoredModel):
    """A ~14 px face in a 1280x720 frame: found when the cascade sees the full frame, lost at
    640 px (7 px there, under PNet's 12 px window). Measured: 640 px still finds ~16 px faces,
    below the nominal min_face_size 20 x 2 = 40 px, since PNet's regression reaches smaller."""
    frame = compose([Paste(600, 300, 40)])
    assert len(FaceDetector(stored.path, intra_op_threads=1, max_side=1280).detect([frame])[0]) == 1
    assert FaceDetector(stored.path, intra_op_threads=1, max_side=640).detect([frame])[0] == []


def test_rejects_frames_that_are_not_rgb_uint8(detector: FaceDetector):
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect([np.zeros((50, 50, 3), np.float32)])
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect([np.zeros((50, 50), np.uint8)])
    assert detector.detect([]) == []
    assert detector.detect([np.zeros((0, 0, 3), np.uint8)]) == [[]]


def test_the_served_detector_uses_the_settings(face_model_store):
    """The face detector both hostings build (detect.hosting.face_detector) takes its size
    limits and threads from the settings."""
    from config import Settings
    from detect.hosting import face_detector

    settings = Settings(face_max_side=320, face_min_size=24, ort_intra_op_threads=1)
    detector = face_detector(settings, face_model_store[0])
    assert (detector.max_side, detector.min_face_size) == (320, 24)


def test_serving_side_imports_no_tensorflow(stored: StoredModel):
    """faces/ in a fresh interpreter: load the graphs, detect, and list the heavy modules loaded."""
    probe = (
        "import sys, json, numpy as np; from pathlib import Path; from faces import FaceDetector; "
        f"d = FaceDetector(Path({str(stored.path)!r}), intra_op_threads=1); "
        "faces = d.detect([np.zeros((360, 640, 3), np.uint8)]); "
        "sys.stdout.write(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('torch', 'tensorflow', 'keras', 'tf2onnx', 'mtcnn', 'transformers'))))"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


# --- crops --------------------------------------------------------------------------------------


def _face(x: float, y: float, w: float, h: float) -> Face:
    return Face(box=(x, y, w, h), score=1.0, landmarks={})


def test_crops_are_square_resized_and_centred():
    frame = background(1, 640, 480)
    face = _face(300, 200, 50, 70)  # taller than wide
    crops = face_crops(frame, [face], size=112, margin=0.2)
    assert crops.shape == (1, 112, 112, 3) and crops.dtype == np.uint8
    left, top, side = crop_box(face.box, 640, 480, 0.2)
    assert side == round(70 * 1.4)
    assert (left + side / 2, top + side / 2) == pytest.approx((325, 235), abs=1)
    expected = cv2.resize(
        frame[top : top + side, left : left + side], (112, 112), interpolation=cv2.INTER_LINEAR
    )
    assert np.array_equal(crops[0], expected)


def test_crops_shift_inside_the_frame_at_edges():
    frame = background(2, 640, 480)
    for face in (_face(0, 0, 60, 60), _face(600, 430, 40, 50), _face(-10, 200, 40, 40)):
        left, top, side = crop_box(face.box, 640, 480, 0.3)
        assert left >= 0 and left + side <= 640 and top >= 0 and top + side <= 480
        crop = face_crops(frame, [face], size=side, margin=0.3)[0]
        assert np.array_equal(crop, frame[top : top + side, left : left + side])  # real pixels only


def test_crops_larger_than_the_frame_are_padded_black():
    frame = np.full((100, 160, 3), 200, np.uint8)
    face = _face(40, 20, 80, 70)  # 80 * 1.6 = 128 px square > 100 px high, < 160 px wide
    left, top, side = crop_box(face.box, 160, 100, 0.3)
    assert (side, top) == (128, -9)  # centred on the face vertically (55 - 64)
    assert left >= 0 and left + side <= 160  # but shifted inside horizontally
    crop = face_crops(frame, [face], size=side, margin=0.3)[0]
    assert (crop[:9] == 0).all() and (crop[9:109] == 200).all() and (crop[109:] == 0).all()


def test_crops_of_no_faces_and_bad_arguments():
    frame = background(3, 64, 64)
    assert face_crops(frame, [], size=32, margin=0.2).shape == (0, 32, 32, 3)
    with pytest.raises(ValueError):
        face_crops(frame, [], size=0, margin=0.2)
    with pytest.raises(ValueError):
        face_crops(frame, [], size=32, margin=-0.1)


def test_crops_of_detected_faces(detector: FaceDetector):
    frame = compose(FACE_FRAMES["two-faces"])
    (faces,) = detector.detect([frame])
    crops = face_crops(frame, faces, size=224, margin=0.2)
    assert crops.shape == (2, 224, 224, 3)
    # A crop of a detected face is itself a face to the detector.
    for crop in crops:
        assert len(detector.detect([crop])[0]) == 1


# --- parity with the package (TensorFlow: slow) -------------------------------------------------


def _parity_frames() -> dict[str, np.ndarray]:
    frames = {name: compose(pastes, seed=i) for i, (name, pastes) in enumerate(sorted(FACE_FRAMES.items()))}
    frames["astronaut"] = astronaut()
    frames.update({f"none-{k}": v for k, v in no_face_frames().items() if k in ("noise", "coffee")})
    return frames


@pytest.mark.slow
def test_parity_with_the_package_on_the_same_frame(detector: FaceDetector, package):
    """The cascade on a 1280x720 frame == the package on the same downscaled (640x360) frame."""
    report = {}
    for name, frame in _parity_frames().items():
        small = downscale(frame, detector.max_side)
        sx, sy = frame.shape[1] / small.shape[1], frame.shape[0] / small.shape[0]
        (ours,) = detector.detect([frame])
        theirs = package_faces(package, small)
        agreement = compare([in_frame(f, sx, sy) for f in ours], theirs)
        report[name] = agreement
        assert agreement.count_ours == agreement.count_theirs, (name, ours, theirs)
        assert agreement.min_iou >= IOU_TOL, (name, agreement)
        assert agreement.max_edge <= EDGE_TOL_PX, (name, agreement)
        assert agreement.max_score <= SCORE_TOL, (name, agreement)
        assert agreement.max_landmark <= LANDMARK_TOL_PX, (name, agreement)
    log.info("parity with mtcnn on the downscaled frame: %s", report)


@pytest.mark.slow
def test_full_resolution_package_finds_the_same_large_faces(detector: FaceDetector, package):
    """The package on the FULL 1280x720 frame (its usual use, ~1.5 s) sees every face >= 20 px;
    ours >= 40 px. Every face the test frames hold is >= 60 px, so both find the same faces, with
    boxes that differ only as MTCNN's regression differs between resolutions."""
    for name in ("centre", "two-faces", "small-left"):
        frame = compose(FACE_FRAMES[name])
        (ours,) = detector.detect([frame])
        theirs = package_faces(package, frame)
        agreement = compare(ours, theirs)
        log.info("full-res package vs ours on %s: %s", name, agreement)
        assert agreement.count_ours == agreement.count_theirs, (name, ours, theirs)
        assert agreement.min_iou >= FULL_RES_IOU, (name, agreement)
        assert agreement.max_score <= FULL_RES_SCORE, (name, agreement)
