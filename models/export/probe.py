"""A deterministic probe set of pictures for parity and INT8 agreement checks."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from models.catalog import ImageInputSpec
from models.preprocess import preprocess_batch


def probe_images(count: int = 16, size: int = 256, seed: int = 1234) -> list[Image.Image]:
    """Pictures with photo-like structure (gradients, shapes, noise), not just white noise,
    so quantization error shows up as it would on real inputs."""
    rng = np.random.default_rng(seed)
    images = []
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        base = np.stack(
            [
                (xx * rng.uniform(0.2, 1.0) + yy * rng.uniform(0, 0.8)) % 1.0,
                (yy * rng.uniform(0.2, 1.0) + rng.uniform(0, 1)) % 1.0,
                np.sin(xx * rng.uniform(2, 12) + yy * rng.uniform(2, 12)) * 0.5 + 0.5,
            ],
            axis=-1,
        )
        noisy = np.clip(base + rng.normal(0, 0.03 * (i % 4), base.shape), 0, 1)
        image = Image.fromarray((noisy * 255).astype(np.uint8), mode="RGB")
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(1, 5))):
            x0, y0 = rng.integers(0, size - 40, size=2)
            x1, y1 = x0 + rng.integers(20, 120), y0 + rng.integers(20, 120)
            colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
        images.append(image)
    return images


def probe_batch(spec: ImageInputSpec, count: int = 16) -> np.ndarray:
    return preprocess_batch(probe_images(count), spec)
