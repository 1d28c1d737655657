"""Property-based fuzzing of the decoders (issue 12, reliability suite): whatever the bytes, sniffing
and decoding end as a valid result or a 4xx ``VerityError`` whose code the error table lists, never
as another exception (which the API would answer with a 500). Inputs: random bytes behind each
format's magic bytes, and real small files (tests/*_factory.py) with bytes flipped, overwritten,
inserted, deleted, duplicated or cut off. Bounded by the "ci" hypothesis profile (tests/conftest.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from config import Settings
from errors import VerityError
from media.audio import decode_audio
from media.audio_files import open_audio_file
from media.image import decode_image
from media.sniff import AUDIO_FORMATS, IMAGE_FORMATS, SNIFF_BYTES, VIDEO_FORMATS, admit, admit_file, sniff
from media.video import decode_video, open_video_file
from tests.fuzz import (
    MAGIC,
    after_magic,
    assert_client_error,
    budget,
    ffmpeg_audio,
    images,
    named,
    soundfile_audio,
    videos,
)

# Hostile TIFF and EXIF bytes make Pillow warn while it decodes them: expected here, not news.
pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")]

SETTINGS = Settings()
RATE = 16_000
MIN_AUDIO_S = 0.5
# The byte caps are the service's. The pixel cap is smaller than its 40 MP: a mutated header that
# claims a big picture is then refused (413) instead of making every example allocate hundreds of
# megabytes; the cap's own checks are tested in test_media_image.py.
MAX_IMAGE_PIXELS = 4_000_000
# Short limits: a hostile file that hangs the decoder should fail fast here (422 decode_timeout),
# which is within the property.
AUDIO_TIMEOUT_S = 10.0
VIDEO_TIMEOUT_S = 10.0

IMAGE_MAGIC = ["jpeg", "png", "gif", "bmp", "tiff", "webp"]
# Decoded by libsndfile in-process (fast) and by ffmpeg in a child (a process per example).
SOUNDFILE_MAGIC = ["wav", "flac", "ogg", "mp3", "mp3-frame"]
FFMPEG_AUDIO_MAGIC = ["aac", "m4a", "mp4"]
VIDEO_MAGIC = ["mp4", "mov", "avi", "webm", "matroska"]


# --- the decoders under test ----------------------------------------------------------------------


def image_or_4xx(data: bytes) -> None:
    try:
        decoded = decode_image(data, max_bytes=SETTINGS.max_image_bytes, max_pixels=MAX_IMAGE_PIXELS)
    except VerityError as exc:
        assert_client_error(exc)
        return
    event("decoded")
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (decoded.width, decoded.height)
    assert 0 < decoded.width * decoded.height <= MAX_IMAGE_PIXELS
    assert decoded.format in IMAGE_FORMATS


def audio_or_4xx(data: bytes) -> None:
    try:
        decoded = decode_audio(
            data,
            target_rate=RATE,
            max_bytes=SETTINGS.max_audio_bytes,
            max_duration_s=SETTINGS.max_audio_duration_s,
            min_duration_s=MIN_AUDIO_S,
            ffmpeg_timeout_s=AUDIO_TIMEOUT_S,
        )
    except VerityError as exc:
        assert_client_error(exc)
        return
    event("decoded")
    assert decoded.samples.dtype == np.float32 and decoded.samples.ndim == 1
    assert np.isfinite(decoded.samples).all()
    assert decoded.sample_rate == RATE and decoded.duration_s >= MIN_AUDIO_S - 0.05
    assert decoded.format in AUDIO_FORMATS


def video_or_4xx(data: bytes) -> None:
    try:
        # In a decoder child, as the service does: a decoder that crashes on hostile bytes then
        # fails its request (422 decode_failed) instead of taking the test process down.
        decoded = decode_video(
            data,
            max_bytes=SETTINGS.max_video_bytes,
            max_pixels=SETTINGS.max_video_pixels,
            max_duration_s=SETTINGS.max_video_duration_s,
            fps=None,
            max_frames=8,
            timeout_s=VIDEO_TIMEOUT_S,
            max_side=SETTINGS.video_frame_max_side,
            isolated=True,
            with_audio=True,
        )
    except VerityError as exc:
        assert_client_error(exc)
        return
    event("decoded")
    assert 0 < len(decoded.frames) <= 8
    for frame in decoded.frames:
        assert frame.rgb.dtype == np.uint8 and frame.rgb.ndim == 3 and frame.rgb.shape[2] == 3
    assert decoded.format in VIDEO_FORMATS


def on_disk(data: bytes) -> tempfile.TemporaryDirectory:
    """A private directory holding ``data`` as ``upload`` (hypothesis examples cannot take the
    function-scoped ``tmp_path``)."""
    directory = tempfile.TemporaryDirectory(prefix="verity-test-fuzz-")
    (Path(directory.name) / "upload").write_bytes(data)
    return directory


# --- sniffing -----------------------------------------------------------------------------------------


@budget(300)
@given(
    data=st.binary(max_size=80) | st.sampled_from(sorted(MAGIC)).flatmap(lambda k: after_magic(MAGIC[k])),
    allowed=st.sampled_from([IMAGE_FORMATS, AUDIO_FORMATS, VIDEO_FORMATS]),
)
def test_sniff_and_admit_take_any_bytes(data: bytes, allowed: frozenset[str]) -> None:
    kind = sniff(data)
    assert kind is None or isinstance(kind, str)
    try:
        admitted = admit(data, max_bytes=1 << 20, allowed=allowed, noun="file", send="something else")
    except VerityError as exc:
        assert_client_error(exc)
    else:
        assert admitted == kind and admitted in allowed


@budget(60)
@given(
    data=st.binary(max_size=80) | st.sampled_from(sorted(MAGIC)).flatmap(lambda k: after_magic(MAGIC[k])),
    allowed=st.sampled_from([IMAGE_FORMATS, AUDIO_FORMATS, VIDEO_FORMATS]),
)
def test_admit_file_judges_a_file_as_admit_judges_its_bytes(data: bytes, allowed: frozenset[str]) -> None:
    """Uploads are sniffed from disk (their first SNIFF_BYTES); inline media from memory. A file
    of the same bytes must get the same answer either way."""
    assert len(data) <= SNIFF_BYTES
    outcomes = []
    with on_disk(data) as directory:
        for check in (
            lambda: admit(data, max_bytes=1 << 20, allowed=allowed, noun="file", send="x"),
            lambda: admit_file(
                Path(directory) / "upload", max_bytes=1 << 20, allowed=allowed, noun="file", send="x"
            ),
        ):
            try:
                outcomes.append(check())
            except VerityError as exc:
                assert_client_error(exc)
                outcomes.append((exc.status, exc.code))
    assert outcomes[0] == outcomes[1]


# --- images ---------------------------------------------------------------------------------------------


@budget(150)
@given(data=st.sampled_from(IMAGE_MAGIC).flatmap(lambda k: after_magic(MAGIC[k])))
def test_random_bytes_behind_image_magic_are_a_result_or_4xx(data: bytes) -> None:
    image_or_4xx(data)


@budget(250)
@given(case=named(images))
def test_mutated_images_are_a_result_or_4xx(case: tuple[str, bytes]) -> None:
    image_or_4xx(case[1])


# --- audio -----------------------------------------------------------------------------------------------


@budget(100)
@given(data=st.sampled_from(SOUNDFILE_MAGIC).flatmap(lambda k: after_magic(MAGIC[k])))
def test_random_bytes_behind_soundfile_magic_are_a_result_or_4xx(data: bytes) -> None:
    audio_or_4xx(data)


@budget(150)
@given(case=named(soundfile_audio))
def test_mutated_soundfile_audio_is_a_result_or_4xx(case: tuple[str, bytes]) -> None:
    audio_or_4xx(case[1])


@budget(15)
@given(data=st.sampled_from(FFMPEG_AUDIO_MAGIC).flatmap(lambda k: after_magic(MAGIC[k])))
def test_random_bytes_behind_ffmpeg_audio_magic_are_a_result_or_4xx(data: bytes) -> None:
    audio_or_4xx(data)


@budget(20)
@given(case=named(ffmpeg_audio))
def test_mutated_ffmpeg_audio_is_a_result_or_4xx(case: tuple[str, bytes]) -> None:
    audio_or_4xx(case[1])


@budget(25)
@given(case=named(lambda: {**soundfile_audio(), **ffmpeg_audio()}))
def test_mutated_audio_files_stream_to_a_result_or_4xx(case: tuple[str, bytes]) -> None:
    """The job path: an uploaded file on disk, opened and read block by block to its end."""
    with on_disk(case[1]) as directory:
        try:
            with open_audio_file(
                Path(directory) / "upload",
                target_rate=RATE,
                max_bytes=None,
                max_duration_s=SETTINGS.max_audio_duration_s,
                min_duration_s=MIN_AUDIO_S,
                timeout_s=AUDIO_TIMEOUT_S,
                s_per_media_s=0.5,
            ) as stream:
                while (block := stream.read_block()) is not None:
                    assert block.dtype == np.float32 and np.isfinite(block).all()
                assert stream.summary is not None and stream.summary.duration_s > 0
                event("decoded")
        except VerityError as exc:
            assert_client_error(exc)


# --- video ------------------------------------------------------------------------------------------------


@budget(6)
@given(data=st.sampled_from(VIDEO_MAGIC).flatmap(lambda k: after_magic(MAGIC[k])))
def test_random_bytes_behind_video_magic_are_a_result_or_4xx(data: bytes) -> None:
    video_or_4xx(data)


@budget(20)
@given(case=named(videos))
def test_mutated_videos_are_a_result_or_4xx(case: tuple[str, bytes]) -> None:
    video_or_4xx(case[1])


@budget(8)
@given(case=named(videos))
def test_mutated_video_files_stream_to_a_result_or_4xx(case: tuple[str, bytes]) -> None:
    """The job path: an uploaded file on disk, decoded in a child and read chunk by chunk."""
    with on_disk(case[1]) as directory:
        try:
            with open_video_file(
                Path(directory) / "upload",
                max_bytes=None,
                max_pixels=SETTINGS.max_video_pixels,
                max_duration_s=SETTINGS.max_video_duration_s,
                fps=None,
                max_frames=8,
                timeout_s=VIDEO_TIMEOUT_S,
                s_per_media_s=0.5,
                max_frames_cap=SETTINGS.video_max_frames_cap,
                max_side=SETTINGS.video_frame_max_side,
                isolated=True,
            ) as stream:
                while (chunk := stream.read_chunk()) is not None:
                    assert all(frame.rgb.dtype == np.uint8 for frame in chunk)
                assert stream.summary is not None and stream.summary.frames_analyzed > 0
                event("decoded")
        except VerityError as exc:
            assert_client_error(exc)


def test_the_valid_files_the_mutations_start_from_decode() -> None:
    """Mutating a file that never decoded would only fuzz the error paths."""
    for data in images().values():
        decode_image(data, max_bytes=SETTINGS.max_image_bytes, max_pixels=MAX_IMAGE_PIXELS)
    for data in {**soundfile_audio(), **ffmpeg_audio()}.values():
        decoded = decode_audio(
            data,
            target_rate=RATE,
            max_bytes=SETTINGS.max_audio_bytes,
            max_duration_s=SETTINGS.max_audio_duration_s,
            min_duration_s=MIN_AUDIO_S,
            ffmpeg_timeout_s=AUDIO_TIMEOUT_S,
        )
        assert decoded.duration_s > MIN_AUDIO_S
    for name, data in videos().items():
        decoded = decode_video(
            data,
            max_bytes=SETTINGS.max_video_bytes,
            max_pixels=SETTINGS.max_video_pixels,
            max_duration_s=SETTINGS.max_video_duration_s,
            fps=None,
            max_frames=8,
            timeout_s=VIDEO_TIMEOUT_S,
            isolated=True,
        )
        assert decoded.frames, name
