"""Video baseline worker: what earlier projects do, one clip at a time, on TensorFlow, eager.

Per clip: ``cv2.VideoCapture`` reads EVERY frame and keeps one per second (the frame at each
whole second); the ``mtcnn`` package's ``detect_faces`` runs on each kept full-resolution
(1280x720) frame; the largest face is cropped with faces/crops.py's margin rule and resized to
the encoder's input; the Keras CNN encoder runs once per crop (``model(x, training=False)`` on a
batch of 1); the Keras LSTM head then scores the sequence of features in the windows
models/temporal.py cuts (the same windows Verity scores, so the probabilities are comparable;
an earlier project would run one whole-sequence pass, which is not cheaper for the head: its
cost is per time step). Verdict: the mean over windows, as Verity's.

Run by ``bench.video`` in its own process (so its peak RSS is its own):

    python -m bench.video_baseline --clip DIR/clip-10s.mp4=3 --clip DIR/clip-60s.mp4=1 --out FILE

Same weights as the served model: for a ``weights: "dev"`` store the Keras pair is rebuilt with
``models.export.keras_video.make_video_source`` (the catalog's dev configs, the export's seed),
exactly as the stored export was built; a file-sourced export needs ``--source`` [``--encoder``],
the files it was exported from. The equality check runs a few crops of the first clip through
the Keras encoder and head and through the stored fp32 (and int8) ONNX pair.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import latency_stats, setup_logging, write_json

log = logging.getLogger("bench.video_baseline")

HEAD_ID = "cnn-lstm"
CHECK_CROPS = 6  # crops of the first clip in the equality check
EQUALITY_TOLERANCE = 1e-3


def load_pair(model_id: str, source: str | None, encoder: str | None) -> tuple[Any, dict[str, Any]]:
    """The Keras encoder + head with the stored fp32 export's weights."""
    from models.export.keras_video import DEV_SEED, make_video_source
    from models.store import find_video_pair

    pair = find_video_pair(model_id, "fp32")
    if pair is None:
        raise SystemExit(f"{model_id} is not in the model store: run `make models` first")
    _, head = pair
    if head.weights != "dev" and source is None:
        raise SystemExit(
            f"{model_id} was exported from {head.metadata.get('source')}: pass --source (and --encoder) "
            "with the same files to rebuild it in Keras"
        )
    started = time.perf_counter()
    keras_pair = make_video_source(model_id, source=source, encoder=encoder)
    info = {
        "weights": head.weights,
        "source": head.metadata.get("source"),
        "dev_seed": DEV_SEED if head.weights == "dev" else None,
        "encoder_architecture": keras_pair.encoder_info.architecture,
        "head_architecture": keras_pair.head_info.architecture,
        "build_s": time.perf_counter() - started,
    }
    return keras_pair, info


def _largest(faces: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(faces, key=lambda f: f["box"][2] * f["box"][3]) if faces else None


class Baseline:
    """The per-clip pipeline, with its timings."""

    def __init__(self, keras_pair: Any, spec: Any, seq: Any, margin: float) -> None:
        from mtcnn import MTCNN

        self.pair = keras_pair
        self.spec = spec
        self.seq = seq
        self.margin = margin
        self.detector = MTCNN()  # the package's defaults: TensorFlow P/R/O-nets, CPU

    def preprocess(self, crop: np.ndarray) -> np.ndarray:
        """An uint8 crop -> the encoder's float input (the stored spec's rescale / mean / std)."""
        x = crop.astype(np.float32) * np.float32(self.spec.rescale)
        mean = np.asarray(self.spec.mean, dtype=np.float32)
        std = np.asarray(self.spec.std, dtype=np.float32)
        return ((x - mean) / std)[None]

    def crop(self, frame_rgb: np.ndarray, face: dict[str, Any]) -> np.ndarray:
        from faces.crops import face_crops
        from faces.mtcnn import Face

        box = tuple(float(v) for v in face["box"])
        found = Face(box=box, score=float(face["confidence"]), landmarks={})  # type: ignore[arg-type]
        return face_crops(frame_rgb, [found], size=max(self.spec.size), margin=self.margin)[0]

    def run(self, path: Path) -> dict[str, Any]:
        import cv2

        from models.postprocess import fake_probabilities
        from models.temporal import sequence_windows, window_batch

        started = time.perf_counter()
        capture = cv2.VideoCapture(str(path))
        fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
        step = max(1, round(fps))  # 1 frame per second
        detect_s, encode_s, crops, features = [], [], [], []
        read_s = 0.0
        index = 0
        try:
            while True:
                mark = time.perf_counter()
                ok, frame = capture.read()
                read_s += time.perf_counter() - mark
                if not ok:
                    break
                if index % step == 0:
                    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                    mark = time.perf_counter()
                    face = _largest(self.detector.detect_faces(rgb))
                    detect_s.append(time.perf_counter() - mark)
                    if face is not None:
                        crop = self.crop(rgb, face)
                        mark = time.perf_counter()
                        feature = np.asarray(self.pair.encoder(self.preprocess(crop), training=False))
                        encode_s.append(time.perf_counter() - mark)
                        crops.append(crop)
                        features.append(feature[0])
                index += 1
        finally:
            capture.release()
        mark = time.perf_counter()
        window_probs: list[float] = []
        if features:
            stacked = np.stack(features).astype(np.float32)
            windows = sequence_windows(len(stacked), self.seq.seq_len, self.seq.stride)
            raw = np.asarray(self.pair.head(window_batch(stacked, windows), training=False))
            window_probs = [
                float(p)
                for p in fake_probabilities(raw, self.pair.head_info.output, self.pair.head_info.fake_index)
            ]
        head_s = time.perf_counter() - mark
        return {
            "wall_s": time.perf_counter() - started,
            "frames_read": index,
            "frames_kept": len(detect_s),
            "frames_with_face": len(features),
            "read_all_frames_s": read_s,
            "detect_ms": [s * 1000 for s in detect_s],
            "encode_ms": [s * 1000 for s in encode_s],
            "head_ms": head_s * 1000,
            "fake_probability": float(np.mean(window_probs)) if window_probs else None,
            "windows": len(window_probs),
            "_crops": crops,
            "_features": features,
        }


def equality_check(baseline: Baseline, crops: list[np.ndarray], model_id: str) -> dict[str, Any]:
    """Keras vs the stored ONNX pair on the same crops: encoder features and head probabilities
    (fp32: must agree within the tolerance; int8: reported), and this worker's preprocessing vs the
    serving path's (models/preprocess.py)."""
    from PIL import Image

    from config import get_settings
    from models.postprocess import fake_probabilities
    from models.preprocess import preprocess_batch
    from models.runtime import OnnxModel
    from models.store import find_video_pair

    settings = get_settings()
    crops = crops[:CHECK_CROPS]
    batch = np.concatenate([baseline.preprocess(c) for c in crops])
    served_input = preprocess_batch([Image.fromarray(c) for c in crops], baseline.spec)
    keras_features = np.asarray(baseline.pair.encoder(batch, training=False))
    sequence = keras_features[None]  # one window of all the check crops
    head_info = baseline.pair.head_info
    keras_p = fake_probabilities(
        np.asarray(baseline.pair.head(sequence, training=False)), head_info.output, head_info.fake_index
    )
    out: dict[str, Any] = {
        "crops": len(crops),
        "preprocess_vs_served_max_abs_diff": float(np.abs(batch - served_input).max()),
        "keras_fake_probability": float(keras_p[0]),
        "onnx": {},
    }
    for precision in ("fp32", "int8"):
        pair = find_video_pair(model_id, precision)
        if pair is None:
            continue
        enc, head = pair
        threads = {
            "intra_op_threads": settings.intra_op_threads,
            "inter_op_threads": settings.ort_inter_op_threads,
        }
        onnx_features = np.asarray(OnnxModel(enc.onnx_path, **threads).run(batch))
        onnx_raw = np.asarray(OnnxModel(head.onnx_path, **threads).run(sequence))
        onnx_p = fake_probabilities(onnx_raw, head.metadata["output"], int(head.metadata["fake_index"]))
        out["onnx"][precision] = {
            "encoder_tag": enc.tag,
            "head_tag": head.tag,
            "feature_max_abs_diff": float(np.abs(onnx_features - keras_features).max()),
            "feature_scale": float(np.abs(keras_features).max()),
            "fake_probability": float(onnx_p[0]),
            "probability_abs_diff": float(abs(onnx_p[0] - keras_p[0])),
        }
    fp32 = out["onnx"].get("fp32")
    out["tolerance"] = EQUALITY_TOLERANCE
    out["pass"] = bool(fp32) and fp32["probability_abs_diff"] <= EQUALITY_TOLERANCE
    return out


def run(
    clips: list[tuple[Path, int]], warmup: int, model_id: str, source: str | None, encoder: str | None
) -> dict[str, Any]:
    import cv2
    import keras
    import mtcnn
    import tensorflow as tf

    from config import get_settings
    from models.store import find_video_pair

    pair = find_video_pair(model_id, "fp32")
    assert pair is not None
    stored_encoder, stored_head = pair
    keras_pair, info = load_pair(model_id, source, encoder)
    started = time.perf_counter()
    baseline = Baseline(
        keras_pair, stored_encoder.input_spec, stored_head.sequence_spec, get_settings().face_crop_margin
    )
    detector_load_s = time.perf_counter() - started
    log.info("baseline ready: Keras pair built in %.1fs, MTCNN in %.1fs", info["build_s"], detector_load_s)
    per_clip = []
    check_crops: list[np.ndarray] = []
    for index, (path, requests) in enumerate(clips):
        # The first run of a fresh process pays TensorFlow's tracing of the three nets and the
        # encoder: it and the warm-up runs are on the first clip only (the process is warm after).
        first = baseline.run(path) if index == 0 else None
        for _ in range(warmup if index == 0 else 0):
            baseline.run(path)
        latencies, runs = [], []
        wall_start = time.perf_counter()
        for _ in range(requests):
            result = baseline.run(path)
            latencies.append(result["wall_s"])
            runs.append(result)
        wall = time.perf_counter() - wall_start
        check_crops = check_crops or runs[0]["_crops"]
        detect = [ms for r in runs for ms in r["detect_ms"]]
        encode = [ms for r in runs for ms in r["encode_ms"]]
        last = runs[-1]
        log.info(
            "baseline %s: %d runs in %.1fs = %.4f clips/s; %d frames read, %d kept, %d with a face; "
            "detect median %.0f ms/frame, encoder median %.0f ms/crop",
            path.name,
            requests,
            wall,
            requests / wall,
            last["frames_read"],
            last["frames_kept"],
            last["frames_with_face"],
            float(np.median(detect)) if detect else float("nan"),
            float(np.median(encode)) if encode else float("nan"),
        )
        per_clip.append(
            {
                "clip": path.name,
                "requests": requests,
                "warmup": warmup if index == 0 else 0,
                "first_call": {"wall_s": first["wall_s"]} if first else None,
                "wall_s": wall,
                "clips_per_s": requests / wall,
                "frames_per_s": sum(r["frames_kept"] for r in runs) / wall,
                "latency": latency_stats(latencies),
                "frames_read": last["frames_read"],
                "frames_kept": last["frames_kept"],
                "frames_with_face": last["frames_with_face"],
                "windows": last["windows"],
                "read_all_frames_median_s": float(np.median([r["read_all_frames_s"] for r in runs])),
                "detect_ms_per_frame": latency_stats([ms / 1000 for ms in detect]),
                "encode_ms_per_crop": latency_stats([ms / 1000 for ms in encode]),
                "head_median_ms": float(np.median([r["head_ms"] for r in runs])),
                "fake_probability": last["fake_probability"],
            }
        )
    check = equality_check(baseline, check_crops, model_id) if check_crops else {"pass": False, "crops": 0}
    log.info(
        "equality check: %s", {k: v for k, v in check.items() if k != "onnx"} | {"onnx": check.get("onnx")}
    )
    return {
        "clips": per_clip,
        "model": info,
        "detector_load_s": detector_load_s,
        "tf_threads": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
            "cpus": os.cpu_count(),
        },
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "mtcnn": getattr(mtcnn, "__version__", "?"),
            "opencv": cv2.__version__,
        },
        "check": check,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.video_baseline")
    parser.add_argument("--clip", action="append", required=True, help="PATH=REQUESTS (repeatable)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up runs of the first clip")
    parser.add_argument("--model-id", default=HEAD_ID)
    parser.add_argument("--source", help="the .keras file a file-sourced export came from")
    parser.add_argument("--encoder", help="the encoder file it came with, if any")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    setup_logging()
    clips = [(Path(path), int(n)) for path, n in (item.rsplit("=", 1) for item in args.clip)]
    write_json(args.out, run(clips, args.warmup, args.model_id, args.source, args.encoder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
