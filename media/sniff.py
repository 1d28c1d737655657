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
    (0, b"OggS", "ogg"),  # Vorbis, Opus (and FLAC-in-Ogg) alike: libsndfile tells them apart
]

# ISO BMFF major brands that declare an audio-only file (iTunes audio, audiobook, protected).
_M4A_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P "})

IMAGE_FORMATS = frozenset({"jpeg", "png", "webp", "gif", "bmp", "tiff"})
# "mp4" is here as well as "m4a": many AAC files carry the generic mp42/isom brands. Whether an
# mp4 holds an audio stream at all is for the decoder (ffprobe) to say.
AUDIO_FORMATS = frozenset({"wav", "flac", "ogg", "mp3", "m4a", "mp4", "aac"})


def _mpeg_audio_sync(head: bytes) -> str | None:
    """An MPEG audio frame header without an ID3 tag: "mp3" (layers I-III) or "aac" (ADTS).

    The 11 sync bits (0xFFE/0xFFF) alone would also match other formats by chance, so the fields
    that have reserved values are checked too. JPEG's 0xFFD8 never matches: 0xD8 lacks the top
    three bits of the sync.
    """
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    version = (head[1] >> 3) & 0b11
    layer = (head[1] >> 1) & 0b11
    if layer == 0b00:
        # ADTS (raw AAC): 12 sync bits, layer always 00, sampling-frequency index 0-12.
        if head[1] & 0xF0 == 0xF0 and (head[2] >> 2) & 0x0F <= 12:
            return "aac"
        return None
    bitrate_index = head[2] >> 4
    rate_index = (head[2] >> 2) & 0b11
    if version == 0b01 or bitrate_index == 0b1111 or rate_index == 0b11:
        return None  # reserved values: not an MPEG audio frame
    return "mp3"


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
        if brand in _M4A_BRANDS:
            return "m4a"
        return "mp4"
    for offset, signature, name in _SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            return name
    return _mpeg_audio_sync(head)
