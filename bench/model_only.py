"""Model-only worker: the stored ONNX model in an ONNX Runtime session with the served thread
settings, on preprocessed batches (no HTTP, no decoding, no batching queue).

    python -m bench.model_only --images DIR --precision fp32 --batch-sizes 1,8,32 --out FILE
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import latency_stats, setup_logging, write_json
from bench.inputs import read_jpegs

log = logging.getLogger("bench.model_only")


def worker_args(image_dir: Path, precision: str, batch_sizes: list[int], scale: float) -> list[str]:
    """The arguments of ``python -m bench.model_only`` as the benchmarks run it: at least 32
    images per batch size at full scale, two repetitions at least unless scaled down."""
    return [
        "--images",
        str(image_dir),
        "--precision",
        precision,
        "--batch-sizes",
        ",".join(map(str, batch_sizes)),
        "--min-images",
        str(max(1, math.ceil(32 * scale))),
        "--min-reps",
        "2" if scale >= 1 else "1",
    ]


def run(
    images: list[bytes], precision: str, batch_sizes: list[int], min_images: int, min_reps: int
) -> dict[str, Any]:
    from PIL import Image

    from config import get_settings
    from models.preprocess import preprocess_image
    from models.runtime import OnnxModel
    from models.store import find_stored

    settings = get_settings()
    stored = find_stored(settings.image_model, precision)
    if stored is None:
        raise SystemExit(f"{settings.image_model} {precision} is not stored; run `make models` first")
    session = OnnxModel(
        stored.onnx_path,
        intra_op_threads=settings.intra_op_threads,
        inter_op_threads=settings.ort_inter_op_threads,
        rows_alone=stored.rows_alone,  # as served: an INT8 batch runs row by row
    )
    spec = stored.input_spec
    pool = [preprocess_image(Image.open(io.BytesIO(d)).convert("RGB"), spec) for d in images]
    outputs = session.run(pool[0][None])  # warm-up, and the equality-check figure
    probability = float(stored.fake_probabilities(outputs)[0])
    session.run(np.stack(pool[:2]))
    rows = []
    for batch_size in batch_sizes:
        batch = np.stack([pool[i % len(pool)] for i in range(batch_size)])
        reps = max(min_reps, math.ceil(min_images / batch_size))
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            session.run(batch)
            times.append(time.perf_counter() - start)
        median = float(np.median(times))
        rows.append(
            {
                "batch_size": batch_size,
                "reps": reps,
                "images_per_s": batch_size / median,
                "images_per_s_best": batch_size / min(times),
                "batch_latency": latency_stats(times),
            }
        )
        log.info(
            "model-only %s batch %d: %.2f images/s (median of %d runs, %.0f ms per batch)",
            precision,
            batch_size,
            batch_size / median,
            reps,
            median * 1000,
        )
    return {
        "precision": precision,
        "tag": stored.tag,
        "weights": stored.weights,
        "intra_op_threads": settings.intra_op_threads,
        "inter_op_threads": settings.ort_inter_op_threads,
        "fake_probability_image0": probability,
        "batches": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.model_only")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--precision", choices=["fp32", "int8"], required=True)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--min-images", type=int, default=16)
    parser.add_argument("--min-reps", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    setup_logging()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    write_json(args.out, run(read_jpegs(args.images), args.precision, sizes, args.min_images, args.min_reps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
