"""Decode an untrusted image into an upright 8-bit RGB picture, or fail with a 4xx error."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from errors import BadMedia, TooLarge, VerityError
from media.sniff import IMAGE_FORMATS, admit
from media.tools import undecodable

# One decompression-bomb policy: Verity's own pixel cap (``max_pixels``), checked from the header
# before anything is decoded (413 ``too_many_pixels``). PIL's global guard (a warning at
# MAX_IMAGE_PIXELS, an error at twice that) would be a second, different limit: it is off.
Image.MAX_IMAGE_PIXELS = None

# The sniffed type names the one PIL plugin allowed to open the bytes: a file that is not what its
# magic bytes say fails as corrupt instead of falling through to another (legacy) decoder.
PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF", "bmp": "BMP", "tiff": "TIFF"}


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied
    format: str
    width: int
    height: int
    original_mode: str


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB the way a viewer would show it."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16/32-bit grey: PIL's convert("RGB") clips at 255 instead of scaling, which turns a
        # normal 16-bit photo into a white sheet. Scale the real range down to 8 bits.
        # In place at 4 bytes a pixel: float64 would cost 8 a pixel for each temporary (~1 GB for a
        # 40-megapixel picture). 32-bit float pictures are scaled in float32.
        grey = np.asarray(image)
        if grey.dtype.kind == "f":
            peak = 65535.0 if float(np.nanmax(grey, initial=0)) > 255 else 255.0
            work = np.nan_to_num(grey.astype(np.float32), copy=False)
            work *= np.float32(255.0 / peak)
            grey8 = np.clip(np.rint(work, out=work), 0, 255, out=work).astype(np.uint8)
        else:
            peak = 65535 if mode.startswith("I;16") or int(grey.max(initial=0)) > 255 else 255
            if grey.dtype == np.uint16:
                work = grey.astype(np.uint32)
            else:  # 32-bit integers: out-of-range values saturate, as a viewer shows them
                work = np.clip(grey, 0, peak).astype(np.uint32, copy=False)
            work *= 255
            work += peak // 2  # round to nearest
            work //= peak
            grey8 = work.astype(np.uint8)
        return Image.fromarray(grey8, mode="L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels carry arbitrary colour; composite on white as a viewer shows them.
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    kind = admit(
        data,
        max_bytes=max_bytes,
        allowed=IMAGE_FORMATS,
        noun="image",
        send=f"one of {', '.join(sorted(IMAGE_FORMATS))}",
    )
    try:
        image = Image.open(io.BytesIO(data), formats=[PIL_FORMATS[kind]])
        width, height = image.size
        if width * height > max_pixels:
            raise TooLarge(
                f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
                code="too_many_pixels",
            )
        if width == 0 or height == 0:
            raise BadMedia("the image has no pixels", code="corrupt_image")
        original_mode = image.mode
        image.load()  # decode now, so truncation fails here and not later
        image = ImageOps.exif_transpose(image) or image
        rgb = _to_rgb(image)
    except VerityError:
        raise
    except UnidentifiedImageError as exc:
        raise BadMedia(f"the {kind} file could not be read as an image", code="corrupt_image") from exc
    except Exception as exc:
        # Decoders raise many types on hostile bytes; all of them mean the file is broken.
        raise undecodable(kind, "corrupt_image", exc) from exc
    return DecodedImage(
        image=rgb, format=kind, width=rgb.width, height=rgb.height, original_mode=original_mode
    )


def read_image_file(path: Path, max_bytes: int) -> bytes:
    """An image on disk (an upload), within the inline image cap: its pixels are what decoding
    costs, and the pixel cap is checked by ``decode_image`` as for inline images."""
    size = path.stat().st_size
    if size > max_bytes:
        raise TooLarge(f"image is {size} bytes; the limit is {max_bytes}", code="file_too_large")
    return path.read_bytes()
