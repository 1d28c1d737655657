"""What the fuzzers (tests/*/test_fuzz_*.py) share: their budgets, strategies for hostile inputs
(arbitrary JSON, mutated media, multipart bodies built part by part) and the one property they
all check: any input ends as a result or a 4xx error in the project's shape, never as a 500 or an
exception escaping the code under test.

Budgets are written against the "ci" profile of tests/conftest.py (CI_EXAMPLES examples by
default), so another profile (``--hypothesis-profile=deep``) scales them all alike."""

from __future__ import annotations

import functools
import json
import string
from collections.abc import Callable
from typing import Any

from hypothesis import event, settings
from hypothesis import strategies as st

from errors import ERROR_CODES, VerityError
from tests import audio_factory, media_factory, video_factory

CI_EXAMPLES = 100


def budget(examples: int) -> settings:
    """``examples`` under the ci profile, scaled by whichever profile is loaded."""
    return settings(max_examples=max(1, examples * settings.default.max_examples // CI_EXAMPLES))


# --- the property ------------------------------------------------------------------------------------


def assert_client_error(exc: VerityError) -> None:
    """A decoder or parser refused its input: a 4xx with a code the README's error table lists,
    at the status the table gives it."""
    event(f"{exc.status} {exc.code}")  # --hypothesis-show-statistics: how far the inputs got
    assert 400 <= exc.status < 500, (exc.status, exc.code, exc.message)
    assert exc.code in ERROR_CODES, f"{exc.code!r} is not in errors.ERROR_CODES"
    assert ERROR_CODES[exc.code][0] == exc.status, (exc.code, exc.status)
    assert exc.message


def assert_answer(response: Any) -> dict[str, Any] | None:
    """An HTTP answer to hostile input: 2xx, or a 4xx in the one error shape with a listed code.
    Returns the 2xx body (None for an empty 204)."""
    status = response.status_code
    assert status < 500, f"{status}: {response.text[:500]}"
    assert response.headers["x-request-id"]
    if status >= 400:
        assert response.headers["content-type"].startswith("application/json"), response.headers
        error = response.json()["error"]
        assert set(error) >= {"code", "message", "request_id"}, error
        assert error["message"], error
        assert error["request_id"] == response.headers["x-request-id"]
        assert error["code"] in ERROR_CODES, f"{error['code']!r} is not in errors.ERROR_CODES: {error}"
        assert ERROR_CODES[error["code"]][0] == status, (status, error)
        event(f"{status} {error['code']}")  # --hypothesis-show-statistics: how far the inputs got
        return None
    event(str(status))
    assert 200 <= status < 300, status
    if status == 204:
        assert not response.content
        return None
    body = response.json()
    assert isinstance(body, dict), body
    return body


# --- JSON ---------------------------------------------------------------------------------------------

# Every string a JSON parser can hand over: lone surrogates ("\ud800" is valid JSON text), NUL,
# controls, astral characters.
json_text = st.text(st.characters(exclude_categories=()), max_size=40)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)  # json.dumps writes NaN/Infinity: accepted by Python
    | json_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(json_text, children, max_size=4),
    max_leaves=16,
)


def json_objects(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects near a route's schema: some of its own fields (with plausible or arbitrary values)
    and maybe strangers, so validation is reached past its first check."""
    known = st.sampled_from(sorted(fields)).flatmap(
        lambda name: st.tuples(st.just(name), fields[name] | json_values)
    )
    return st.tuples(
        st.lists(known, max_size=len(fields) + 1), st.dictionaries(json_text, json_values, max_size=2)
    ).map(lambda pair: {**pair[1], **dict(pair[0])})


def dumps(value: Any) -> bytes:
    """JSON text as a client would send it: ASCII, lone surrogates written as ``\\ud800`` escapes."""
    return json.dumps(value, allow_nan=True).encode("ascii")


# Bodies no generator of valid JSON makes: depth beyond the parser's stack, integers past
# Python's 4300-digit conversion limit, bytes that are not UTF-8, documents cut short.
json_oddities = st.sampled_from(
    [
        b"[" * 100_000,
        b'{"a":' * 50_000,
        b"1" * 5000,
        b'{"image": ' + b"9" * 5000 + b"}",
        b'{"upload_id": ' + b"9" * 5000 + b"}",
        b'{"email": "\xff\xfe", "password": "x"}',
        b"\xef\xbb\xbf{}",
        b'{"image": "data:image/png;base64,' + b"A" * 3 + b'"}',
        b'"\\ud800"',
        b"",
        b"NaN",
        b"{",
    ]
)
json_bodies = st.one_of(json_values.map(dumps), json_oddities, st.binary(max_size=200))


# --- media --------------------------------------------------------------------------------------------

# Values that break size and count fields when written over a header.
_BOUNDARY_VALUES = [
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xff",
]


@st.composite
def mutated(draw: st.DrawFn, data: bytes, *, max_edits: int = 4) -> bytes:
    """``data`` after a few edits: bit flips, overwrites with boundary values, inserted or deleted
    runs, a duplicated slice (a repeated box or chunk), or truncation."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, max_edits))):
        at = draw(st.integers(0, max(0, len(out) - 1)))
        edit = draw(st.sampled_from(["flip", "overwrite", "insert", "delete", "duplicate", "truncate"]))
        if edit == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "overwrite":
            value = draw(st.sampled_from(_BOUNDARY_VALUES) | st.binary(min_size=1, max_size=8))
            out[at : at + len(value)] = value
        elif edit == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif edit == "delete":
            del out[at : at + draw(st.integers(1, 64))]
        elif edit == "duplicate":
            size = draw(st.integers(1, 256))
            out[at:at] = out[at : at + size]
        else:
            del out[at:]
    return bytes(out)


# Magic bytes per format name: random bytes behind them pass sniffing and reach the decoder.
MAGIC = {
    "jpeg": b"\xff\xd8\xff",
    "png": b"\x89PNG\r\n\x1a\n",
    "gif": b"GIF89a",
    "bmp": b"BM",
    "tiff": b"II*\x00",
    "webp": b"RIFF\x00\x00\x00\x00WEBP",
    "wav": b"RIFF\x24\x00\x00\x00WAVEfmt ",
    "flac": b"fLaC",
    "ogg": b"OggS",
    "mp3": b"ID3",
    "mp3-frame": b"\xff\xfb\x90\x00",
    "aac": b"\xff\xf1\x50\x80",
    "m4a": b"\x00\x00\x00\x20ftypM4A ",
    "mp4": b"\x00\x00\x00\x20ftypisom",
    "mov": b"\x00\x00\x00\x14ftypqt  ",
    "avi": b"RIFF\x00\x00\x00\x00AVI LIST",
    "webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm",
    "matroska": b"\x1a\x45\xdf\xa3",
}

# Small valid files, made once (when a test first draws from them, not at collection), that the
# mutations start from: a file that never decoded would only fuzz the error paths.


@functools.cache
def images() -> dict[str, bytes]:
    picture = media_factory.photo(24, 16, seed=3)
    return {
        "jpeg": media_factory.encode(picture, "JPEG", quality=80),
        "png": media_factory.encode(picture, "PNG"),
        "png-16bit": media_factory.encode(picture.convert("I;16"), "PNG"),
        "gif": media_factory.encode(picture.convert("P"), "GIF"),
        "bmp": media_factory.encode(picture, "BMP"),
        "tiff": media_factory.encode(picture, "TIFF", compression="tiff_lzw"),
        "webp": media_factory.encode(picture, "WEBP", quality=60),
    }


@functools.cache
def soundfile_audio() -> dict[str, bytes]:
    tone = audio_factory.sine(duration_s=0.8)
    return {
        fmt: audio_factory.encode(tone, 16_000, fmt)
        for fmt in ("wav", "flac", "ogg-vorbis", "ogg-opus", "mp3")
    }


@functools.cache
def ffmpeg_audio() -> dict[str, bytes]:
    tone = audio_factory.sine(duration_s=0.8)
    return {fmt: audio_factory.encode_ffmpeg(tone, 16_000, fmt) for fmt in ("m4a", "adts")}


@functools.cache
def videos() -> dict[str, bytes]:
    frames = video_factory.pattern_frames(4, 32, 24)
    return {
        "mp4": video_factory.write_opencv(frames, 4, "mp4"),
        "avi": video_factory.raw_avi(8, 8, count=3),
        "mov": video_factory.encode_ffmpeg(frames, 4, "mov"),
        "webm": video_factory.encode_ffmpeg(frames, 4, "webm"),
        "mkv": video_factory.encode_ffmpeg(frames, 4, "mkv"),
        "mp4-audio": video_factory.encode_ffmpeg(frames, 4, "mp4", audio=True),
    }


def named(files: Callable[[], dict[str, bytes]]) -> st.SearchStrategy[tuple[str, bytes]]:
    """A file of ``files()`` by name, mutated (the name says which one failed). Deferred: the files
    are made when a test first draws, not when the module is collected."""

    def strategy() -> st.SearchStrategy[tuple[str, bytes]]:
        made = files()
        return st.sampled_from(sorted(made)).flatmap(
            lambda name: st.tuples(st.just(name), mutated(made[name]))
        )

    return st.deferred(strategy)


def after_magic(magic: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes behind a format's magic bytes: admitted by sniffing, garbage to the decoder."""
    return st.binary(max_size=600).map(lambda tail: magic + tail)


# --- multipart ----------------------------------------------------------------------------------------

_TOKEN = string.ascii_letters + string.digits + "'()+_,-./:=?"
_LATIN_1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF)
_HEADER_VALUE = st.text(_LATIN_1, max_size=60)
_PART_HEADERS = [
    "Content-Disposition",
    "Content-Type",
    "Content-Transfer-Encoding",
    "X-Other",
    "content-disposition",
]


@st.composite
def multipart_forms(
    draw: st.DrawFn, names: list[str], files: st.SearchStrategy[bytes]
) -> tuple[bytes, bytes]:
    """``(content_type, body)`` of a multipart form built part by part: boundaries that match the
    header or not, parts with known or random names, files or plain fields, odd or missing
    headers, LF instead of CRLF, preamble and epilogue, a missing close. Half of the forms keep
    the framing well-formed (only names, files and their order vary), so parts reach the route."""
    clean = draw(st.booleans())
    boundary = draw(st.text(_TOKEN, min_size=1, max_size=70) | st.just("x" * (70 if clean else 200))).encode()
    declarations = [
        b"multipart/form-data; boundary=" + boundary,
        b'multipart/form-data; boundary="' + boundary + b'"',
        b"multipart/form-data; charset=utf-8; boundary=" + boundary,
        b"MULTIPART/FORM-DATA; BOUNDARY=" + boundary,
        b"multipart/form-data",
        b"multipart/form-data; boundary=",
        b"multipart/form-data; boundary=other",
        b"multipart/mixed; boundary=" + boundary,
    ]
    # Quoted, since a boundary may hold ':', '=', '?' and '/' (RFC 2046's bchars).
    declared = declarations[1] if clean else draw(st.sampled_from(declarations))
    eol = b"\r\n" if clean else draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
    # python-multipart refuses a preamble (RFC 2046 allows one): a 400, hence only when not clean.
    body = bytearray(b"" if clean else draw(st.sampled_from([b"", b"preamble" + eol])))
    for _ in range(draw(st.integers(0, 4))):
        body += b"--" + boundary + eol
        # Mostly the names the route looks for, so its own checks run on the parts.
        name = draw(st.sampled_from(names) if draw(st.integers(0, 3)) else st.text(_TOKEN, max_size=10))
        name = name.encode()
        disposition = b'form-data; name="' + name + b'"'
        is_file = draw(st.booleans())
        if is_file:
            # A quote or backslash in the name breaks the header's quoting: hostile, so not when clean.
            unquoted = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters='"\\')
            filename = draw(st.text(unquoted if clean else _LATIN_1, max_size=20))
            disposition += b'; filename="' + filename.encode("latin-1") + b'"'
        headers = [(b"Content-Disposition", disposition)]
        if is_file:
            headers.append(
                (b"Content-Type", draw(st.sampled_from([b"application/octet-stream", b"image/png"])))
            )
        for _ in range(0 if clean else draw(st.integers(0, 2))):
            header = draw(st.sampled_from(_PART_HEADERS)).encode()
            headers.append((header, draw(_HEADER_VALUE).encode("latin-1")))
        if not clean and draw(st.integers(0, 9)) == 0:
            headers = draw(st.permutations(headers))[: draw(st.integers(0, len(headers)))]
        for header, value in headers:
            body += header + b": " + value + eol
        body += eol + (draw(files) if is_file else draw(st.binary(max_size=80))) + eol
    endings = [b"--" + boundary + b"--" + eol, b"--" + boundary + b"--", b"", b"--" + boundary]
    ending = endings[0] if clean else draw(st.sampled_from(endings))
    body += ending + (b"" if clean else draw(st.sampled_from([b"", b"epilogue"])))
    return declared, bytes(body)
