"""Baseline worker: what earlier projects do. ``transformers.pipeline("image-classification")``
in PyTorch eager fp32, one request at a time, with the pipeline's own preprocessing.

Run by ``bench.image`` in its own process (so its peak RSS is its own):

    python -m bench.baseline --images DIR --requests N --out FILE

Same weights as the served model: for a ``weights: "dev"`` store the model is rebuilt with
``build_dev_model`` (same catalog config, same seed as the stored export); for a pretrained
export it is loaded from the same hub id or directory the export came from.
"""

from __future__ import annotations

import argparse
import io
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import latency_stats, setup_logging, write_json
from bench.inputs import read_jpegs

log = logging.getLogger("bench.baseline")


def _processor(spec: Any) -> Any:
    import transformers
    from PIL import Image

    # transformers 5 falls back to the PIL backend without torchvision; name it explicitly then.
    cls = getattr(transformers, "ViTImageProcessorPil", None)
    try:
        import torchvision  # noqa: F401

        cls = transformers.ViTImageProcessor
    except ImportError:
        cls = cls or transformers.ViTImageProcessor
    resample = {
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "nearest": Image.Resampling.NEAREST,
        "lanczos": Image.Resampling.LANCZOS,
    }
    return cls(
        do_resize=True,
        size={"height": spec.size[0], "width": spec.size[1]},
        resample=resample[spec.resample],
        do_rescale=True,
        rescale_factor=spec.rescale,
        do_normalize=True,
        image_mean=list(spec.mean),
        image_std=list(spec.std),
    )


def rebuild_dev_image(entry: Any, stored: Any, workdir: Path) -> dict[str, Any]:
    """The image model with the stored export's dev weights, saved with its image processor."""
    from models.export.hf import DEV_SEED, build_dev_model

    build_dev_model(entry).save_pretrained(workdir)
    _processor(stored.input_spec).save_pretrained(workdir)
    return {"dev_seed": DEV_SEED}


def model_location(
    model_id: str, workdir: Path, rebuild_dev: Callable[[Any, Any, Path], dict[str, Any]] = rebuild_dev_image
) -> tuple[str, dict[str, Any]]:
    """A directory or hub id for ``pipeline(model=...)`` holding the served model's weights.
    For dev weights, ``rebuild_dev(entry, stored, workdir)`` saves the same seeded model (and its
    processor) into ``workdir`` and returns what to record about it."""
    from models.catalog import get_entry
    from models.store import find_stored

    entry = get_entry(model_id)
    stored = find_stored(model_id, "fp32")
    if stored is None:
        raise SystemExit(f"{model_id} fp32 is not in the model store; run `make models` first")
    source = str(stored.metadata.get("source", ""))
    info = {"stored_tag": stored.tag, "weights": stored.weights, "source": source}
    if stored.weights == "pretrained" and source.startswith("hf:"):
        return source.removeprefix("hf:"), info
    if stored.weights == "pretrained" and source.startswith("dir:"):
        return source.removeprefix("dir:"), info
    if stored.weights != "dev":
        raise SystemExit(f"cannot rebuild the baseline for {stored.tag} (source {source!r})")
    info.update(rebuild_dev(entry, stored, workdir))
    return str(workdir), info


def run(images: list[bytes], requests: int, warmup: int, model_id: str) -> dict[str, Any]:
    import numpy as np
    import torch
    import transformers
    from PIL import Image

    from models.preprocess import preprocess_image
    from models.store import find_stored

    with tempfile.TemporaryDirectory(prefix="verity-bench-baseline-") as tmp:
        location, info = model_location(model_id, Path(tmp))
        started = time.perf_counter()
        pipe = transformers.pipeline("image-classification", model=location, device="cpu")
        load_s = time.perf_counter() - started
    stored = find_stored(model_id, "fp32")
    assert stored is not None
    fake_label = stored.metadata["labels"][int(stored.metadata["fake_index"])]
    log.info(
        "baseline pipeline ready in %.1fs (%s, processor %s, torch threads %d)",
        load_s,
        type(pipe.model).__name__,
        type(pipe.image_processor).__name__,
        torch.get_num_threads(),
    )

    def classify(data: bytes) -> list[dict[str, Any]]:
        return pipe(Image.open(io.BytesIO(data)), top_k=None)

    for i in range(warmup):
        classify(images[i % len(images)])
    latencies = []
    wall_start = time.perf_counter()
    for i in range(requests):
        start = time.perf_counter()
        classify(images[i % len(images)])
        latencies.append(time.perf_counter() - start)
    wall = time.perf_counter() - wall_start
    log.info("baseline: %d images in %.1fs = %.2f images/s", requests, wall, requests / wall)

    # Equality check material: the pipeline's fake score on image 0, and the raw torch model's
    # logits on the project's own preprocessing of the same picture.
    scores = {d["label"]: float(d["score"]) for d in classify(images[0])}
    first = Image.open(io.BytesIO(images[0])).convert("RGB")
    pixels = preprocess_image(first, stored.input_spec)[None]
    with torch.no_grad():
        logits = pipe.model(pixel_values=torch.from_numpy(pixels)).logits.numpy()
    return {
        "requests": requests,
        "warmup": warmup,
        "wall_s": wall,
        "images_per_s": requests / wall,
        "latency": latency_stats(latencies),
        "load_s": load_s,
        "model": info,
        "processor": type(pipe.image_processor).__name__,
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "check": {
            "pipeline_scores_image0": scores,
            "pipeline_fake_score_image0": scores.get(fake_label),
            "torch_logits_image0_project_preprocessing": np.asarray(logits).tolist(),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--model-id", default="vit-dima806")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    setup_logging()
    write_json(args.out, run(read_jpegs(args.images), args.requests, args.warmup, args.model_id))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
