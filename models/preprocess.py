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


def model_pixels(image: Image.Image, spec: ImageInputSpec) -> np.ndarray:
    """One RGB picture -> uint8 pixels at the model's size, in its layout, without the batch axis.

    What the pipelines send to a model: a quarter of the float32 tensor's bytes. The model side
    turns them into the tensor (``normalize_pixels``), so the result equals ``preprocess_image``."""
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode!r}")
    height, width = spec.size
    if image.size != (width, height):
        image = image.resize((width, height), resample=_RESAMPLE[spec.resample])
    pixels = np.asarray(image, dtype=np.uint8)
    if spec.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels)


def normalize_pixels(pixels: np.ndarray, spec: ImageInputSpec) -> np.ndarray:
    """uint8 pixels in the model's layout (any leading axes) -> the float32 model input:
    rescale, then (x - mean) / std per channel, the same float32 operations as the HF processor."""
    shape = (3, 1, 1) if spec.layout == "NCHW" else (3,)
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(shape)
    std = np.asarray(spec.std, dtype=np.float32).reshape(shape)
    scaled = pixels.astype(np.float32) * np.float32(spec.rescale)
    return np.ascontiguousarray((scaled - mean) / std, dtype=np.float32)


def preprocess_image(image: Image.Image, spec: ImageInputSpec) -> np.ndarray:
    """One RGB picture -> float32 array in the model's layout, without the batch axis."""
    return normalize_pixels(model_pixels(image, spec), spec)


def pixel_batch(images: list[Image.Image], spec: ImageInputSpec) -> np.ndarray:
    """uint8 pixels of several pictures, stacked (see ``model_pixels``)."""
    return np.stack([model_pixels(image, spec) for image in images])


def preprocess_batch(images: list[Image.Image], spec: ImageInputSpec) -> np.ndarray:
    return np.stack([preprocess_image(image, spec) for image in images])
