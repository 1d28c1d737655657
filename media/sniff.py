"""Media type from magic bytes, never from the file name or the client's content type."""

from __future__ import annotations

# (offset, signature, format). Order matters only for formats sharing a prefix.
_SIGNATURES: list[tuple[int, bytes, str]] = [
    (0, b"\xff\xd8\xff", "jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "png"),
    (0, b"GIF87a", "gif"),
    (0, b"GIF89a", "gif"),
    (0, b"BM", "bmp"),
    (0, b"II*\x00", "tiff"),
    (0, b"MM\x00*", "tiff"),
    (0, b"%PDF", "pdf"),
    (0, b"PK\x03\x04", "zip"),
    (0, b"\x1a\x45\xdf\xa3", "matroska"),
    (0, b"ID3", "mp3"),
    (0, b"fLaC", "flac"),
    (0, b"OggS", "ogg"),
]

IMAGE_FORMATS = frozenset({"jpeg", "png", "webp", "gif", "bmp", "tiff"})


def sniff(data: bytes) -> str | None:
    """Best guess of the container format of ``data`` from its first bytes, or None."""
    head = data[:64]
    if head[:4] == b"RIFF" and len(head) >= 12:
        return {b"WEBP": "webp", b"WAVE": "wav", b"AVI ": "avi"}.get(head[8:12], "riff")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"mif1", b"msf1"):
            return "heif"
        if brand == b"avif":
            return "avif"
        return "mp4"
    for offset, signature, name in _SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            return name
    return None
