"""The stability check (``?stability=true``): does the verdict survive what a picture goes through
when it is shared?

Each picture the model judges (the whole picture, or each face crop with ``faces=auto``, or a
sample of a video's face crops) is re-scored after three everyday changes, in the same model call
as the original rows:

* ``jpeg_q75``: re-compressed as JPEG at quality 75 (what messaging apps and social networks do);
* ``resize_0.75``: scaled to 0.75× its width and height (a downscaled repost);
* ``crop_0.9``: the centre 90% of each side (a slightly cropped repost).

The result's ``stability`` lists each variant's probability and verdict and their ``spread``
(max − min). When the variants do not all fall on the same side of the threshold, the verdict is
``UNCERTAIN`` with an ``unstable_verdict`` warning: a detector whose answer flips under a
re-compression is not telling the user anything about the media.

Cost: four rows instead of one per judged picture (one model call); for a video, the check runs on
at most ``VERITY_STABILITY_VIDEO_FRAMES`` sampled frames.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from models.postprocess import verdict_for

ORIGINAL = "original"


def _jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=75)
    buffer.seek(0)
    with Image.open(buffer) as reread:
        return reread.convert("RGB")


def _resize(image: Image.Image) -> Image.Image:
    width, height = image.size
    return image.resize(
        (max(1, round(width * 0.75)), max(1, round(height * 0.75))), Image.Resampling.BILINEAR
    )


def _centre_crop(image: Image.Image) -> Image.Image:
    width, height = image.size
    keep_w, keep_h = max(1, round(width * 0.9)), max(1, round(height * 0.9))
    left, top = (width - keep_w) // 2, (height - keep_h) // 2
    return image.crop((left, top, left + keep_w, top + keep_h))


VARIANTS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg_q75": _jpeg,
    "resize_0.75": _resize,
    "crop_0.9": _centre_crop,
}
NAMES: tuple[str, ...] = (ORIGINAL, *VARIANTS)


def with_variants(image: Image.Image) -> list[Image.Image]:
    """``image`` followed by its variants, in the order of ``NAMES``."""
    return [image, *(make(image) for make in VARIANTS.values())]


def stability_block(
    scores: Sequence[float], threshold: float, uncertain_band: float, *, frames: int | None = None
) -> dict[str, Any]:
    """The result's ``stability`` from the probability of each of ``NAMES`` (same order)."""
    variants = [
        {
            "name": name,
            "fake_probability": round(float(p), 6),
            "verdict": verdict_for(float(p), threshold, uncertain_band),
        }
        for name, p in zip(NAMES, scores, strict=True)
    ]
    sides = {float(p) >= threshold for p in scores}
    block: dict[str, Any] = {
        "variants": variants,
        "spread": round(float(max(scores) - min(scores)), 6),
        "stable": len(sides) == 1,
    }
    if frames is not None:
        block["frames"] = frames
    return block


def apply_stability(result: dict[str, Any], block: dict[str, Any]) -> None:
    """Put ``block`` in ``result``; an unstable verdict becomes UNCERTAIN with a warning."""
    result["stability"] = block
    if block["stable"] or result["verdict"] not in ("FAKE", "REAL", "UNCERTAIN"):
        return
    sides = ", ".join(f"{v['name']} {v['fake_probability']:.2f}" for v in block["variants"])
    result["verdict"] = "UNCERTAIN"
    result["warnings"].append(
        {
            "code": "unstable_verdict",
            "message": f"the verdict flips under re-compression, resizing or cropping ({sides}; "
            f"threshold {result['threshold']})",
        }
    )
