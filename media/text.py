"""Untrusted bytes or strings as a text to judge (``POST /v1/detect/text``, batch items).

Refused, and how: a text over ``VERITY_MAX_TEXT_BYTES`` UTF-8 bytes or ``VERITY_MAX_TEXT_CHARS``
characters (413 ``text_too_long``), a binary file (415 ``not_text``: NUL bytes, or the magic bytes
of a picture, sound or video), bytes that are not UTF-8 (415 ``invalid_text_encoding``, naming the
offset; also a lone surrogate from a JSON escape), and an empty or whitespace-only text (422
``empty_text``). A UTF-8 byte-order mark is dropped. ``.md`` / ``.markdown`` files are
``markdown``, anything else ``text``: both are judged as written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath

from config import Settings
from errors import InvalidInput, TooLarge, UnsupportedMedia
from media.sniff import SNIFF_BYTES, sniff

_MARKDOWN = (".md", ".markdown")


@dataclass(frozen=True)
class TextPayload:
    text: str
    format: str  # "text" | "markdown"
    bytes: int


def text_from_bytes(data: bytes, settings: Settings, *, text_format: str = "text") -> TextPayload:
    """Checked UTF-8 text from raw bytes (see the module docstring for what is refused)."""
    if len(data) > settings.max_text_bytes:
        raise TooLarge(
            f"the text is {len(data)} bytes; at most {settings.max_text_bytes}", code="text_too_long"
        )
    kind = sniff(data[:SNIFF_BYTES])
    if kind is not None or b"\x00" in data:
        looks = f" (it looks like {kind})" if kind else ""
        raise UnsupportedMedia(f"the file is binary{looks}, not UTF-8 text", code="not_text")
    try:
        text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsupportedMedia(
            f"the text is not UTF-8: byte {exc.start} cannot be decoded ({exc.reason})",
            code="invalid_text_encoding",
        ) from exc
    return checked_text(text, settings, text_format=text_format, byte_count=len(data))


def checked_text(
    text: str, settings: Settings, *, text_format: str = "text", byte_count: int | None = None
) -> TextPayload:
    if not text.strip():
        raise InvalidInput("the text is empty", code="empty_text")
    if len(text) > settings.max_text_chars:
        raise TooLarge(
            f"the text is {len(text)} characters; at most {settings.max_text_chars}", code="text_too_long"
        )
    try:
        size = byte_count if byte_count is not None else len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # a lone surrogate from a JSON "\\ud800" escape
        raise UnsupportedMedia(
            "the text holds an unpaired surrogate (not valid Unicode)", code="invalid_text_encoding"
        ) from exc
    if size > settings.max_text_bytes:
        raise TooLarge(f"the text is {size} bytes; at most {settings.max_text_bytes}", code="text_too_long")
    return TextPayload(text, text_format, size)


def format_of(filename: str | None) -> str:
    return "markdown" if filename and PurePath(filename).suffix.lower() in _MARKDOWN else "text"


def read_text_file(path: Path, settings: Settings) -> TextPayload:
    """A text on disk (a batch item), as ``media.image.read_image_file`` reads a picture: refused
    by its size before it is read, then checked as an inline text is."""
    size = path.stat().st_size
    if size > settings.max_text_bytes:
        raise TooLarge(f"the text is {size} bytes; at most {settings.max_text_bytes}", code="text_too_long")
    return text_from_bytes(path.read_bytes(), settings, text_format=format_of(path.name))
