"""Pictures and broken files the tests make themselves (no downloaded media)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def photo(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """A photo-like RGB picture: smooth gradients, a face-ish ellipse, mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack(
        [xx / width * 200 + 30, yy / height * 180 + 40, (xx + yy) / (width + height) * 120 + 60], axis=-1
    )
    cy, cx = height / 2, width / 2
    inside = ((yy - cy) / (height * 0.35)) ** 2 + ((xx - cx) / (width * 0.22)) ** 2 < 1
    base[inside] = [224, 172, 140]
    base += rng.normal(0, 4, base.shape)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), mode="RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def jpeg_bytes(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    return encode(photo(width, height, seed), "JPEG", quality=90)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels and carries no image data (a bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
