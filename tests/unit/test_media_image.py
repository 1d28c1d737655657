"""Untrusted image bytes -> upright 8-bit RGB, or a 4xx error (media/image.py, media/sniff.py)."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from errors import BadMedia, TooLarge, UnsupportedMedia
from media.image import decode_image
from media.sniff import IMAGE_FORMATS, sniff
from tests.media_factory import encode, jpeg_bytes, photo, png_header_only

pytestmark = pytest.mark.unit

MAX_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def decode(data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS):
    return decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels)


def _close(pixel, expected, tol: int = 12) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected, strict=True))


# --- accepted formats ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pil_format", "kind", "lossless"),
    [
        ("JPEG", "jpeg", False),
        ("PNG", "png", True),
        ("WEBP", "webp", False),
        ("GIF", "gif", False),  # 256-colour palette
        ("BMP", "bmp", True),
        ("TIFF", "tiff", True),
    ],
)
def test_supported_formats_decode_to_rgb(pil_format, kind, lossless):
    source = photo(320, 240, seed=1)
    data = encode(source, pil_format)
    assert sniff(data) == kind
    decoded = decode(data)
    assert decoded.format == kind
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == decoded.image.size == (320, 240)
    got = np.asarray(decoded.image, dtype=np.int16)
    want = np.asarray(source, dtype=np.int16)
    if lossless:
        np.testing.assert_array_equal(got, want)
    else:
        assert np.abs(got - want).mean() < 8  # same picture, codec loss only


def test_supported_formats_list_is_the_image_allow_list():
    assert {"jpeg", "png", "webp", "gif", "bmp", "tiff"} == IMAGE_FORMATS


# --- EXIF orientation ----------------------------------------------------------------------------


def _left_red_right_blue(width: int = 40, height: int = 20) -> Image.Image:
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image


def _jpeg_with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def test_exif_orientation_6_rotates_clockwise():
    """Orientation 6: the camera stored the picture rotated; a viewer turns it 90° clockwise,
    so the stored left half (red) ends up on top and the size swaps."""
    decoded = decode(_jpeg_with_orientation(_left_red_right_blue(40, 20), 6))
    assert decoded.image.size == (20, 40)
    assert (decoded.width, decoded.height) == (20, 40)
    assert _close(decoded.image.getpixel((10, 5)), RED)
    assert _close(decoded.image.getpixel((10, 34)), BLUE)
    assert decoded.image.getexif().get(0x0112) in (None, 1)  # orientation consumed, not re-applied


@pytest.mark.parametrize(
    ("orientation", "size", "where_red", "where_blue"),
    [
        (1, (40, 20), (5, 10), (34, 10)),  # as stored
        (3, (40, 20), (34, 10), (5, 10)),  # 180°
        (8, (20, 40), (10, 34), (10, 5)),  # 90° counter-clockwise: left half to the bottom
    ],
)
def test_other_exif_orientations(orientation, size, where_red, where_blue):
    decoded = decode(_jpeg_with_orientation(_left_red_right_blue(40, 20), orientation))
    assert decoded.image.size == size
    assert _close(decoded.image.getpixel(where_red), RED)
    assert _close(decoded.image.getpixel(where_blue), BLUE)


# --- modes -----------------------------------------------------------------------------------------


def test_grayscale_l_becomes_grey_rgb():
    grey = Image.new("L", (16, 8), 77)
    decoded = decode(encode(grey, "PNG"))
    assert decoded.original_mode == "L"
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((3, 3)) == (77, 77, 77)


def test_rgba_is_composited_on_white():
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((1, 1), (0, 0, 255, 255))  # opaque blue
    rgba.putpixel((2, 2), (0, 0, 0, 128))  # half-transparent black
    decoded = decode(encode(rgba, "PNG"))
    assert decoded.original_mode == "RGBA"
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((0, 0)) == WHITE  # not the hidden red
    assert decoded.image.getpixel((1, 1)) == BLUE
    assert _close(decoded.image.getpixel((2, 2)), (127, 127, 127), tol=1)


@pytest.mark.parametrize("pil_format", ["PNG", "GIF"])
def test_palette_with_transparency_is_composited_on_white(pil_format):
    palette = Image.new("P", (10, 10), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    palette.putpixel((4, 4), 2)  # blue, opaque
    decoded = decode(encode(palette, pil_format, transparency=1))  # index 1 (red) is transparent
    assert decoded.original_mode == "P"
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((0, 0)) == WHITE
    assert decoded.image.getpixel((4, 4)) == BLUE


def test_palette_without_transparency_keeps_its_colours():
    palette = Image.new("P", (6, 6), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * (256 * 3 - 6))
    decoded = decode(encode(palette, "PNG"))
    assert decoded.image.getpixel((0, 0)) == (0, 200, 0)


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 16), (255, 0, 0, 0))  # pure cyan
    cmyk.paste((0, 0, 0, 0), (0, 0, 8, 16))  # left half: no ink = white
    decoded = decode(encode(cmyk, "JPEG", quality=100))
    assert decoded.format == "jpeg"
    assert decoded.original_mode == "CMYK"
    assert decoded.image.mode == "RGB"
    assert _close(decoded.image.getpixel((2, 8)), WHITE)
    assert _close(decoded.image.getpixel((13, 8)), (0, 255, 255))


def test_16_bit_grayscale_png_is_scaled_not_clipped():
    """PIL's own convert("RGB") clips I;16 at 255: a mid-grey 16-bit photo would turn white."""
    values = np.full((8, 12), 32768, dtype=np.uint16)
    values[0, 0], values[0, 1] = 0, 65535
    data = encode(Image.fromarray(values), "PNG")
    decoded = decode(data)
    assert decoded.original_mode in ("I;16", "I")  # Pillow >= 10 says I;16
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((5, 5)) == (128, 128, 128)
    assert decoded.image.getpixel((0, 0)) == (0, 0, 0)
    assert decoded.image.getpixel((1, 0)) == WHITE


# --- broken and unsupported bytes ----------------------------------------------------------------


def test_zero_bytes_is_empty_file():
    with pytest.raises(BadMedia) as err:
        decode(b"")
    assert err.value.status == 422
    assert err.value.code == "empty_file"


def test_truncated_jpeg_is_bad_media():
    data = jpeg_bytes(320, 240)
    with pytest.raises(BadMedia) as err:
        decode(data[: len(data) // 2])
    assert err.value.status == 422
    assert err.value.code == "corrupt_image"


def test_jpeg_with_only_its_magic_is_bad_media():
    with pytest.raises(BadMedia) as err:
        decode(b"\xff\xd8\xff\xe0" + b"\x00" * 16)
    assert err.value.status == 422


def test_png_with_corrupt_image_data_is_bad_media():
    data = bytearray(encode(photo(64, 48), "PNG"))
    idat = data.find(b"IDAT")
    data[idat + 20 : idat + 60] = b"\x00" * 40  # garbage inside the zlib stream
    with pytest.raises(BadMedia) as err:
        decode(bytes(data))
    assert err.value.status == 422
    assert err.value.code == "corrupt_image"


def test_png_with_bad_header_crc_is_bad_media():
    data = bytearray(encode(photo(64, 48), "PNG"))
    data[16 + 8] ^= 0xFF  # a byte inside IHDR: its CRC no longer matches
    with pytest.raises(BadMedia) as err:
        decode(bytes(data))
    assert err.value.status == 422


@pytest.mark.parametrize(
    ("data", "detected"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n", "pdf"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * 64, "mp3"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 32, "heif"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 32, "wav"),
        (b"PK\x03\x04" + b"\x00" * 40, "zip"),
    ],
)
def test_non_image_types_are_unsupported(data, detected):
    assert sniff(data) == detected
    with pytest.raises(UnsupportedMedia) as err:
        decode(data)
    assert err.value.status == 415
    assert detected in err.value.message


def test_random_bytes_are_unsupported():
    data = b"\x00" + np.random.default_rng(7).integers(0, 256, size=4096, dtype=np.uint8).tobytes()
    assert sniff(data) is None
    with pytest.raises(UnsupportedMedia) as err:
        decode(data)
    assert err.value.status == 415
    assert "unknown" in err.value.message


def test_type_comes_from_magic_bytes_not_a_claimed_name():
    """A PNG is a PNG whatever it is called; a text file is not an image even if it says so."""
    assert decode(encode(photo(20, 10), "PNG")).format == "png"
    with pytest.raises(UnsupportedMedia):
        decode(b"this is definitely a .jpg file")


# --- size and pixel caps -------------------------------------------------------------------------


def test_too_many_bytes_is_too_large():
    data = jpeg_bytes(320, 240)
    with pytest.raises(TooLarge) as err:
        decode(data, max_bytes=len(data) - 1)
    assert err.value.status == 413
    assert err.value.code == "file_too_large"
    assert decode(data, max_bytes=len(data)).width == 320  # the cap itself is allowed


def test_header_only_bomb_fails_fast_without_decoding():
    """100000x100000 claimed, no pixel data at all: a full decode would fail as corrupt (422);
    getting 413 proves the size was checked from the header, before any decoding."""
    bomb = png_header_only(100_000, 100_000)
    assert len(bomb) < 100
    start = time.perf_counter()
    with pytest.raises(TooLarge) as err:
        decode(bomb)
    elapsed = time.perf_counter() - start
    assert err.value.status == 413
    assert err.value.code == "too_many_pixels"
    assert "100000x100000" in err.value.message
    assert elapsed < 0.5


@pytest.fixture(scope="module")
def png_7000() -> bytes:
    """A real, complete 7000x7000 PNG (49M pixels, small on disk since it is flat)."""
    return encode(Image.new("L", (7000, 7000), 90), "PNG", compress_level=1)


def test_real_png_over_the_pixel_cap_is_too_large(png_7000):
    assert len(png_7000) < MAX_BYTES  # the byte cap alone would let it through
    start = time.perf_counter()
    with pytest.raises(TooLarge) as err:
        decode(png_7000, max_pixels=40_000_000)
    assert err.value.status == 413
    assert err.value.code == "too_many_pixels"
    assert time.perf_counter() - start < 0.5  # refused from the header, never decoded


def test_pixel_cap_is_inclusive():
    data = encode(photo(200, 100), "PNG")
    assert decode(data, max_pixels=200 * 100).width == 200
    with pytest.raises(TooLarge):
        decode(data, max_pixels=200 * 100 - 1)


# --- sniffing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\xff\xd8\xff\xdb", "jpeg"),
        (b"\x89PNG\r\n\x1a\n", "png"),
        (b"GIF87a", "gif"),
        (b"GIF89a", "gif"),
        (b"BM\x00\x00", "bmp"),
        (b"II*\x00", "tiff"),
        (b"MM\x00*", "tiff"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "avi"),
        (b"\x00\x00\x00\x20ftypisom", "mp4"),
        (b"\x00\x00\x00\x20ftypavif", "avif"),
        (b"\x1a\x45\xdf\xa3", "matroska"),
        (b"fLaC", "flac"),
        (b"OggS", "ogg"),
        (b"", None),
        (b"RIFF", None),  # too short to name the RIFF form
        (b"<html>", None),
    ],
)
def test_sniff_signatures(head, kind):
    assert sniff(head) == kind


def test_png_chunk_helper_is_a_valid_png_header():
    """The bomb fixture really is a PNG header PIL accepts (so the 413 above is not a 422 in disguise)."""
    bomb = png_header_only(123, 45)
    length, kind = struct.unpack(">I4s", bomb[8:16])
    assert (length, kind) == (13, b"IHDR")
    crc = struct.unpack(">I", bomb[29:33])[0]
    assert crc == zlib.crc32(bomb[12:29]) & 0xFFFFFFFF
    assert Image.open(io.BytesIO(bomb)).size == (123, 45)


def test_every_allowed_format_opens_with_its_own_plugin_only():
    """PIL is told the one plugin the magic bytes name (no probing of the others, some of which
    accept almost anything): every allowed format has that plugin, and a picture of each decodes
    through it."""
    from media.image import PIL_FORMATS

    Image.init()
    assert set(PIL_FORMATS) == set(IMAGE_FORMATS)
    assert all(name in Image.OPEN for name in PIL_FORMATS.values())
    for kind, pil_name in PIL_FORMATS.items():
        data = encode(photo(40, 30), pil_name)
        assert sniff(data) == kind
        assert decode(data).format == kind


def test_pil_has_no_second_bomb_limit():
    """One policy, Verity's cap: a picture under it decodes whatever PIL's default would say."""
    assert Image.MAX_IMAGE_PIXELS is None
    data = encode(Image.new("L", (6000, 6000), 90), "PNG", compress_level=1)  # 36 MP, PIL warns at 89 MP
    assert decode(data, max_pixels=40_000_000).width == 6000


def test_16_bit_png_is_scaled_in_small_integers():
    """A 16-bit grey picture is scaled in place at 4 bytes a pixel, not in float64 temporaries
    (~1 GB for 40 megapixels): numpy's own allocations while decoding stay under 10 bytes a
    pixel (uint16 view 2 + uint32 work 4 + uint8 result 1)."""
    import tracemalloc

    width, height = 2000, 1500
    values = (np.arange(width * height, dtype=np.uint32) % 65536).astype(np.uint16).reshape(height, width)
    data = encode(Image.fromarray(values), "PNG")
    tracemalloc.start()
    try:
        decoded = decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded.image.size == (width, height)
    assert peak / (width * height) < 10, f"{peak / (width * height):.1f} bytes per pixel"
    got = np.asarray(decoded.image)[..., 0]
    want = (values.astype(np.uint64) * 255 + 32767) // 65535
    assert np.array_equal(got, want.astype(np.uint8))


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_grey_is_scaled_like_16_bit(mode):
    values = np.array([[0, 255, 40000, 70000, -5]], dtype=np.int32 if mode == "I" else np.float32)
    image = Image.fromarray(values, mode=mode)
    from media.image import _to_rgb

    grey = np.asarray(_to_rgb(image))[0, :, 0]
    # Max above 255: the 16-bit scale; out-of-range values saturate.
    assert grey.tolist() == [0, 1, 156, 255, 0]
