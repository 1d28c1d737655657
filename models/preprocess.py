"""Picture -> model input, in numpy/PIL only.

Each step mirrors the HF image processor of the catalog's checkpoints (resize with PIL's filter
on the uint8 image, rescale, normalize), so a served model sees the tensor it saw in training.
``tests/unit/test_preprocess.py`` proves the equality against ``transformers``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from models.catalog import ImageInputSpec

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def preprocess_image(image: Image.Image, spec: ImageInputSpec) -> np.ndarray:
    """One RGB picture -> float32 array in the model's layout, without the batch axis."""
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode!r}")
    height, width = spec.size
    if image.size != (width, height):
        image = image.resize((width, height), resample=_RESAMPLE[spec.resample])
    pixels = np.asarray(image, dtype=np.float32) * np.float32(spec.rescale)
    pixels = (pixels - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    if spec.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels, dtype=np.float32)


def preprocess_batch(images: list[Image.Image], spec: ImageInputSpec) -> np.ndarray:
    return np.stack([preprocess_image(image, spec) for image in images])
