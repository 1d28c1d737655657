"""Pictures with faces, made offline: ``skimage.data.astronaut()`` (shipped inside scikit-image,
no download) pasted onto smooth backgrounds, at known places and sizes."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FRAME_W, FRAME_H = 1280, 720
# The astronaut's head with some context (hair, collar), rows/cols of skimage's 512x512 picture.
HEAD = (slice(20, 260), slice(120, 360))


def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def background(seed: int, width: int = FRAME_W, height: int = FRAME_H) -> np.ndarray:
    """A smooth, mildly noisy colour field: texture, but nothing face-like."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy) / max(width, height)
    base = np.stack([ramp * rng.uniform(60, 160) + rng.uniform(20, 90) for _ in range(3)], axis=-1)
    base += rng.normal(0, 3, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Paste:
    x: int  # top-left of the pasted head patch in the frame
    y: int
    size: int  # the patch's side in the frame
    mirror: bool = False


def compose(pastes: list[Paste], seed: int = 0, width: int = FRAME_W, height: int = FRAME_H) -> np.ndarray:
    frame = background(seed, width, height)
    head = astronaut()[HEAD]
    for p in pastes:
        patch = cv2.resize(
            head, (p.size, p.size), interpolation=cv2.INTER_AREA if p.size < 240 else cv2.INTER_LINEAR
        )
        if p.mirror:
            patch = patch[:, ::-1]
        frame[p.y : p.y + p.size, p.x : p.x + p.size] = patch
    return frame


def moving_face_frames(
    count: int, width: int = 320, height: int = 240, size: int = 140, seed: int = 0
) -> list[np.ndarray]:
    """``count`` frames of one face drifting left to right over a fixed background."""
    frames = []
    for i in range(count):
        x = int((width - size) * i / max(count - 1, 1))
        frames.append(compose([Paste(x, (height - size) // 2, size)], seed=seed, width=width, height=height))
    return frames
