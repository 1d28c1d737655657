"""Media type from magic bytes, never from the file name or the client's content type."""

from __future__ import annotations

from pathlib import Path

from errors import BadMedia, TooLarge, UnsupportedMedia

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
    (0, b"ID3", "mp3"),
    (0, b"fLaC", "flac"),
    (0, b"OggS", "ogg"),  # Vorbis, Opus (and FLAC-in-Ogg) alike: libsndfile tells them apart
]

# Atoms a pre-ftyp QuickTime movie starts with ("free"/"skip" are left out: too generic).
_QUICKTIME_LEADING_ATOMS = frozenset({b"moov", b"mdat", b"wide"})
_EBML_DOCTYPE_ID = b"\x42\x82"

# ISO BMFF major brands that declare an audio-only file (iTunes audio, audiobook, protected).
_M4A_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P "})

IMAGE_FORMATS = frozenset({"jpeg", "png", "webp", "gif", "bmp", "tiff"})
# Containers media/video.py opens with OpenCV's FFmpeg backend. "mp4" is shared with audio: an
# ISO BMFF file's brand does not say whether it holds video (the decoder's probe does).
VIDEO_FORMATS = frozenset({"mp4", "mov", "avi", "webm", "matroska"})
# "mp4" is here as well as "m4a": many AAC files carry the generic mp42/isom brands. Whether an
# mp4 holds an audio stream at all is for the decoder (ffprobe) to say.
AUDIO_FORMATS = frozenset({"wav", "flac", "ogg", "mp3", "m4a", "mp4", "mov", "aac"})


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


def _ebml_doctype(head: bytes) -> str:
    """The EBML header's DocType: "webm", else "matroska" (also when it cannot be read).

    The header is a few dozen bytes at the start of the file, so scanning the sniffed head for the
    DocType id (0x4282) and its one-byte size (0x81-0x88: a short string) is enough.
    """
    pos = head.find(_EBML_DOCTYPE_ID, 4)
    if pos >= 0 and pos + 3 <= len(head) and 0x81 <= head[pos + 2] <= 0x88:
        size = head[pos + 2] & 0x7F
        if head[pos + 3 : pos + 3 + size] == b"webm":
            return "webm"
    return "matroska"


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
        if brand == b"qt  ":
            return "mov"
        return "mp4"
    if head[4:8] in _QUICKTIME_LEADING_ATOMS and int.from_bytes(head[:4], "big") >= 8:
        return "mov"  # QuickTime files older than the ftyp atom start straight with an atom
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return _ebml_doctype(head)
    for offset, signature, name in _SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            return name
    return _mpeg_audio_sync(head)


def admit(data: bytes, *, max_bytes: int, allowed: frozenset[str], noun: str, send: str) -> str:
    """The checks every upload passes before any decoding: not empty (422), within ``max_bytes``
    (413), and of a type in ``allowed`` by its magic bytes (415; ``send`` says what to send
    instead). Returns the detected type."""
    if not data:
        raise BadMedia("the file is empty", code="empty_file")
    if len(data) > max_bytes:
        raise TooLarge(f"{noun} is {len(data)} bytes; the limit is {max_bytes}", code="file_too_large")
    kind = sniff(data)
    if kind not in allowed:
        raise UnsupportedMedia(f"not a supported {noun} (detected: {kind or 'unknown'}); send {send}")
    return kind


SNIFF_BYTES = 4096  # what admit_file reads of a file to tell its type


def admit_file(path: Path, *, max_bytes: int | None, allowed: frozenset[str], noun: str, send: str) -> str:
    """``admit`` for a file on disk, from its size and its first ``SNIFF_BYTES`` only: empty
    (422), over ``max_bytes`` (413, when given), not a type in ``allowed`` (415)."""
    size = path.stat().st_size
    if size == 0:
        raise BadMedia("the file is empty", code="empty_file")
    if max_bytes is not None and size > max_bytes:
        raise TooLarge(f"{noun} is {size} bytes; the limit is {max_bytes}", code="file_too_large")
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    return admit(head, max_bytes=len(head), allowed=allowed, noun=noun, send=send)
