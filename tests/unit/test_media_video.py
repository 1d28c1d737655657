"""Untrusted video bytes -> sampled upright RGB frames with their times, or a 4xx error
(media/video.py, media/sniff.py, issue 5 scope items 1 and 6). Every video is generated
here (tests/video_factory.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc

import cv2
import numpy as np
import pytest

import media.video
import media.video_decode
from errors import BadMedia, InvalidInput, TooLarge, UnsupportedMedia, VerityError
from media.audio import decode_audio
from media.sniff import AUDIO_FORMATS, IMAGE_FORMATS, VIDEO_FORMATS, sniff
from media.video import (
    TEMP_PREFIX,
    DecodedVideo,
    SamplingPlan,
    VideoFrame,
    decode_video,
    extract_audio,
    plan_sampling,
)
from media.video_sampling import Sampler
from tests.audio_factory import dominant_frequency, sine
from tests.audio_factory import encode as encode_audio
from tests.audio_factory import encode_ffmpeg as encode_audio_ffmpeg
from tests.media_factory import encode as encode_image
from tests.media_factory import photo
from tests.video_factory import (
    decoder_children,
    encode_ffmpeg,
    ffmpeg_audio_only_mp4,
    ffmpeg_path,
    lavfi_video,
    marker_corner,
    patch_avi_size,
    patch_mp4_duration,
    pattern_frames,
    raw_avi,
    read_index,
    resolution_change_avi,
    variable_frame_rate_mkv,
    write_opencv,
)

pytestmark = pytest.mark.unit

MB = 1024 * 1024
MAX_BYTES = 32 * MB
MAX_PIXELS = 3840 * 2160
MAX_DURATION_S = 300.0
TIMEOUT_S = 30.0


def decode(
    data: bytes,
    *,
    fps: float | None = None,
    max_frames: int | None = None,
    isolated: bool = False,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_duration_s: float = MAX_DURATION_S,
    timeout_s: float = TIMEOUT_S,
    **kwargs,
) -> DecodedVideo:
    return decode_video(
        data,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        max_duration_s=max_duration_s,
        fps=fps,
        max_frames=max_frames,
        timeout_s=timeout_s,
        isolated=isolated,
        **kwargs,
    )


def codes(decoded: DecodedVideo) -> set[str]:
    return {w["code"] for w in decoded.warnings}


def times(decoded: DecodedVideo) -> list[float]:
    return [f.t_s for f in decoded.frames]


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """The decoder's temporary directory, private to this test, so leaks are counted exactly."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert tempfile.gettempdir() == str(tmp_path)
    return tmp_path


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX))


@pytest.fixture(scope="module")
def clip_4s() -> bytes:
    """4 s at 30 fps, 128x96, MPEG-4 Part 2 in MP4 by cv2.VideoWriter; frame i shows index i."""
    return write_opencv(pattern_frames(120), 30, "mp4")


@pytest.fixture(scope="module")
def long_clip() -> bytes:
    """3 minutes at 30 fps (5400 frames), 160x120, generated inside ffmpeg."""
    return lavfi_video(180, width=160, height=120, fps=30)


# --- sniffing ------------------------------------------------------------------------------------


def test_video_allow_list_and_audio_unchanged():
    assert {"mp4", "mov", "avi", "webm", "matroska"} == VIDEO_FORMATS
    assert not VIDEO_FORMATS & IMAGE_FORMATS
    assert "m4a" not in VIDEO_FORMATS  # audio-only brand
    # QuickTime audio (an audio-only .mov) stays accepted by the audio endpoint.
    assert {"mp4", "m4a", "mov"} <= AUDIO_FORMATS


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00", "mov"),
        (b"\x00\x00\x00\x20ftypisom", "mp4"),
        (b"\x00\x00\x00\x20ftypmp42", "mp4"),
        (b"\x00\x00\x00\x1cftypM4A ", "m4a"),
        (b"\x00\x00\x01\x00moov\x00\x00\x00\x6cmvhd", "mov"),  # QuickTime before ftyp existed
        (b"\x00\x00\x00\x08wide\x00\x10\x00\x00mdat", "mov"),
        (b"\x00\x00\x00\x00moov", None),  # an atom size below 8 is no atom
        (b"RIFF\x00\x00\x00\x00AVI LIST", "avi"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm\x42\x87", "webm"),
        (b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x88matroska", "matroska"),
        (b"\x1a\x45\xdf\xa3", "matroska"),  # no DocType in reach: the generic name
    ],
)
def test_sniff_video_signatures(head, kind):
    assert sniff(head) == kind


@pytest.mark.parametrize(
    ("fmt", "kind"), [("mp4", "mp4"), ("mov", "mov"), ("avi", "avi"), ("webm", "webm"), ("mkv", "matroska")]
)
def test_sniff_names_every_written_container(fmt, kind):
    assert sniff(encode_ffmpeg(pattern_frames(2), 10, fmt)) == kind


# --- sampling plan -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration_s", "fps", "max_frames", "interval_s", "budget", "rule"),
    [
        (4.0, None, None, 0.5, 64, "adaptive"),  # <= 10 s: 2 fps
        (10.0, None, None, 0.5, 64, "adaptive"),
        (30.0, None, None, 1.0, 64, "adaptive"),  # <= 60 s: 1 fps
        (60.0, None, None, 1.0, 64, "adaptive"),
        (60.0, None, 30, 2.0, 30, "spread"),  # 60 frames over the budget: spread instead
        (128.0, None, None, 2.0, 64, "spread"),  # longer: max_frames over the whole clip
        (None, None, None, 0.5, 64, "adaptive"),  # unknown: dense, thinned while streaming
        (10.0, 4.0, None, 0.25, 64, "requested"),
        (10.0, 4.0, 8, 1.25, 8, "spread"),  # 40 requested frames, 8 allowed: whole clip
        (10.0, 1.0, 500, 1.0, 128, "requested"),  # the hard cap wins over the request
    ],
)
def test_plan_sampling(duration_s, fps, max_frames, interval_s, budget, rule):
    plan = plan_sampling(
        duration_s, fps=fps, max_frames=max_frames, default_max_frames=64, max_frames_cap=128
    )
    assert plan == SamplingPlan(pytest.approx(interval_s), budget, rule)


@pytest.mark.parametrize(("fps", "max_frames"), [(0.0, None), (-1.0, None), (61.0, None), (1.0, 0)])
def test_plan_sampling_refuses_bad_options(fps, max_frames):
    with pytest.raises(InvalidInput) as err:
        plan_sampling(10.0, fps=fps, max_frames=max_frames, default_max_frames=64, max_frames_cap=128)
    assert err.value.status == 422


def test_sampler_thins_evenly_when_the_length_is_unknown():
    """100 s at 30 fps through a 2 fps plan with a budget of 16: the kept frames end up evenly
    spaced over the whole stream, never more than 16 at a time."""
    sampler = Sampler(SamplingPlan(0.5, 16, "adaptive"))
    tiny = np.zeros((1, 1, 3), dtype=np.uint8)
    most = 0
    for index in range(3000):
        t = index / 30
        if sampler.wants(t):
            sampler.keep(VideoFrame(index, t, tiny))
        most = max(most, len(sampler.kept))
    kept = [f.t_s for f in sampler.kept]
    assert most <= 16
    assert 8 <= len(kept) <= 16
    assert kept[0] == 0.0 and kept[-1] >= 90.0  # the whole stream, not its start
    gaps = np.diff(kept)
    assert np.allclose(gaps, sampler.interval, atol=1 / 30)
    assert sampler.interval == pytest.approx(8.0)  # 0.5 s doubled four times


# --- decoding and sampling -----------------------------------------------------------------------


def test_frames_at_the_requested_fps_are_the_right_frames(clip_4s):
    decoded = decode(clip_4s, fps=2)
    assert (decoded.format, decoded.width, decoded.height, decoded.rotation) == ("mp4", 128, 96, 0)
    assert decoded.frame_count == 120
    assert decoded.fps == pytest.approx(30, rel=1e-3)
    assert decoded.duration_s == pytest.approx(4.0, abs=1e-3)
    assert times(decoded) == pytest.approx([0.5 * k for k in range(8)], abs=1e-3)
    assert [f.index for f in decoded.frames] == [15 * k for k in range(8)]
    for frame in decoded.frames:
        assert frame.rgb.shape == (96, 128, 3) and frame.rgb.dtype == np.uint8
        assert read_index(frame.rgb) == frame.index  # the pixels are that frame's, not a neighbour's
        assert marker_corner(frame.rgb) == "top-left"
        red = frame.rgb[:10, :10].reshape(-1, 3).mean(axis=0)
        assert red[0] > 200 and red[1] < 60 and red[2] < 60  # RGB, not OpenCV's BGR
    assert decoded.frames_analyzed == 8
    assert decoded.has_audio is False and decoded.warnings == []


def test_adaptive_sampling_follows_the_duration(clip_4s):
    short = decode(clip_4s)  # 4 s -> 2 fps
    assert times(short) == pytest.approx([0.5 * k for k in range(8)], abs=1e-3)
    medium = decode(write_opencv(pattern_frames(40), 2, "mp4"))  # 20 s -> 1 fps
    assert times(medium) == pytest.approx([float(k) for k in range(20)], abs=1e-3)
    long = decode(lavfi_video(90, width=64, height=48, fps=4), default_max_frames=30)  # 90 s -> 30 frames
    assert long.frames_analyzed == 30
    assert long.sample_interval_s == pytest.approx(3.0)
    assert times(long) == pytest.approx([3.0 * k for k in range(30)], abs=0.13)


def test_max_frames_spreads_the_frames_over_the_whole_clip(clip_4s):
    decoded = decode(clip_4s, fps=10, max_frames=4)
    assert times(decoded) == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=1e-3)
    assert "sampling_reduced" in codes(decoded)
    capped = decode(clip_4s, fps=2, max_frames=1000, max_frames_cap=5)
    assert capped.frames_analyzed == 5 and "max_frames_capped" in codes(capped)


def test_sampling_never_repeats_a_frame_when_asked_for_more_than_the_video_has():
    decoded = decode(write_opencv(pattern_frames(6), 2, "mp4"), fps=10)  # 3 s at 2 fps
    assert [f.index for f in decoded.frames] == list(range(6))
    assert times(decoded) == pytest.approx([0.5 * k for k in range(6)], abs=1e-3)


def test_variable_frame_rate_uses_the_frames_timestamps():
    """30 frames in the first second, then one every 0.1 s: index / fps would put frame 40 at
    1.33 s; its timestamp says 2.0 s."""
    decoded = decode(variable_frame_rate_mkv(), fps=2)
    assert decoded.format == "matroska"
    assert times(decoded) == pytest.approx([0.5 * k for k in range(8)], abs=1e-3)
    assert [f.index for f in decoded.frames] == [0, 15, 30, 35, 40, 45, 50, 55]
    assert all(read_index(f.rgb) == f.index for f in decoded.frames)
    assert decoded.duration_s == pytest.approx(4.0, abs=0.15)


def test_a_stream_without_declared_duration_is_sampled_over_its_whole_length():
    """A WebM written to a pipe declares no duration and has no index; sampling starts dense and
    thins itself to the budget."""
    data = encode_ffmpeg(pattern_frames(300, 64, 48), 10, "webm", streamed=True)  # 30 s
    probe = subprocess.run(
        [
            shutil.which("ffprobe") or "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
            "pipe:0",
        ],
        input=data,
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert probe.stdout.strip() in (b"N/A", b"")
    decoded = decode(data, max_frames=10)
    assert 5 <= decoded.frames_analyzed <= 10
    assert times(decoded)[-1] >= 24.0
    assert decoded.duration_s == pytest.approx(30.0, abs=0.2)
    assert np.allclose(np.diff(times(decoded)), decoded.sample_interval_s, atol=0.11)


# (factory, sniffed format, has audio)
CONTAINERS = {
    "opencv-mp4": (lambda f: write_opencv(f, 10, "mp4"), "mp4", False),
    "opencv-avi": (lambda f: write_opencv(f, 10, "avi"), "avi", False),
    "mp4": (lambda f: encode_ffmpeg(f, 10, "mp4"), "mp4", False),
    "mp4-audio": (lambda f: encode_ffmpeg(f, 10, "mp4", audio=True), "mp4", True),
    "mov-audio": (lambda f: encode_ffmpeg(f, 10, "mov", audio=True), "mov", True),
    "avi-audio": (lambda f: encode_ffmpeg(f, 10, "avi", audio=True), "avi", True),
    "webm": (lambda f: encode_ffmpeg(f, 10, "webm"), "webm", False),
    "webm-audio": (lambda f: encode_ffmpeg(f, 10, "webm", audio=True), "webm", True),
    "mkv-audio": (lambda f: encode_ffmpeg(f, 10, "mkv", audio=True), "matroska", True),
}


@pytest.mark.parametrize("name", list(CONTAINERS))
def test_every_container_decodes_in_the_child(name, private_tmp):
    make, kind, has_audio = CONTAINERS[name]
    data = make(pattern_frames(20))  # 2 s at 10 fps
    decoded = decode(data, fps=2, isolated=True)
    assert (decoded.format, decoded.has_audio) == (kind, has_audio)
    assert (decoded.width, decoded.height) == (128, 96)
    assert times(decoded) == pytest.approx([0.0, 0.5, 1.0, 1.5], abs=1e-3)
    assert [f.index for f in decoded.frames] == [0, 5, 10, 15]
    assert [read_index(f.rgb) for f in decoded.frames] == [0, 5, 10, 15]
    assert decoded.duration_s == pytest.approx(2.0, abs=0.02)
    assert leftovers(private_tmp) == []
    assert decoder_children() == []


def test_the_child_opens_only_the_sniffed_demuxer(clip_4s, monkeypatch):
    """The avformat options the child passes to OpenCV are enforced: with only AVI's demuxer
    allowed, an MP4 does not open (and with the real options, only local files ever do)."""
    assert (
        media.video_decode._capture_options("mp4")
        == "protocol_whitelist;file|format_whitelist;mov|enable_drefs;0"
    )
    monkeypatch.setattr(
        media.video_decode, "_capture_options", lambda kind: "protocol_whitelist;file|format_whitelist;avi"
    )
    with pytest.raises(BadMedia) as err:
        decode(clip_4s, isolated=True)
    assert (err.value.status, err.value.code) == (422, "corrupt_video")


def test_child_and_in_process_decoding_agree(clip_4s):
    child, local = decode(clip_4s, fps=3, isolated=True), decode(clip_4s, fps=3, isolated=False)
    assert times(child) == times(local)
    assert child.frame_count == local.frame_count and child.warnings == local.warnings
    for a, b in zip(child.frames, local.frames, strict=True):
        assert a.index == b.index and np.array_equal(a.rgb, b.rgb)


# ffmpeg 5.1 writes its ``rotate`` tag as a display matrix turning the picture that many degrees
# counter-clockwise; OpenCV reports the clockwise turn that shows it upright.
@pytest.mark.parametrize(
    ("rotate", "rotation", "corner", "size"),
    [
        (0, 0, "top-left", (128, 96)),
        (90, 270, "bottom-left", (96, 128)),
        (180, 180, "bottom-right", (128, 96)),
        (270, 90, "top-right", (96, 128)),
    ],
)
@pytest.mark.parametrize("fmt", ["mp4", "mov"])
def test_rotation_metadata_is_honoured_once(fmt, rotate, rotation, corner, size, tmp_path):
    data = encode_ffmpeg(pattern_frames(10), 10, fmt, rotate=rotate)
    decoded = decode(data, fps=5)
    assert decoded.rotation == rotation
    assert (decoded.width, decoded.height) == size
    for frame in decoded.frames:
        assert frame.rgb.shape == (size[1], size[0], 3)
        assert marker_corner(frame.rgb) == corner
    # The same frame as ffmpeg itself shows it (its autorotation applies the display matrix).
    path = tmp_path / f"in.{fmt}"
    path.write_bytes(data)
    raw = subprocess.run(
        [
            ffmpeg_path(),
            "-v",
            "error",
            "-i",
            str(path),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    shown = np.frombuffer(raw, np.uint8).reshape(size[1], size[0], 3)
    assert np.abs(shown.astype(int) - decoded.frames[0].rgb.astype(int)).mean() < 6


def test_large_frames_are_downscaled_to_max_side(clip_4s):
    decoded = decode(clip_4s, fps=1, max_side=64)
    assert (decoded.width, decoded.height) == (128, 96)  # the video's own size is reported
    assert decoded.frame_scale == 0.5
    assert {f.rgb.shape for f in decoded.frames} == {(48, 64, 3)}
    assert marker_corner(decoded.frames[0].rgb) == "top-left"


# --- bad input: 4xx, never anything else -------------------------------------------------------


def test_empty_and_oversized_files():
    with pytest.raises(BadMedia) as err:
        decode(b"")
    assert (err.value.status, err.value.code) == (422, "empty_file")
    data = write_opencv(pattern_frames(4), 10, "mp4")
    with pytest.raises(TooLarge) as err:
        decode(data, max_bytes=len(data) - 1)
    assert (err.value.status, err.value.code) == (413, "file_too_large")
    assert decode(data, max_bytes=len(data)).frame_count == 4


@pytest.mark.parametrize(
    ("make", "detected"),
    [
        (lambda: encode_image(photo(64, 48), "PNG"), "png"),
        (lambda: encode_audio(sine(440, 1.0), 16_000, "wav"), "wav"),
        (lambda: encode_audio_ffmpeg(sine(440, 1.0, 44_100), 44_100, "m4a"), "m4a"),
        (lambda: b"definitely a video, trust me\n" * 20, "unknown"),
    ],
    ids=["png", "wav", "m4a", "text"],
)
def test_wrong_type_is_415(make, detected, private_tmp):
    with pytest.raises(UnsupportedMedia) as err:
        decode(make())
    assert err.value.status == 415
    assert detected in err.value.message
    assert leftovers(private_tmp) == []


def test_mp4_without_video_is_422():
    with pytest.raises(BadMedia) as err:
        decode(ffmpeg_audio_only_mp4())
    assert (err.value.status, err.value.code) == (422, "no_video")


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(range(256)) * 8,
        b"RIFF\x00\x10\x00\x00AVI LIST" + b"\xab" * 2048,
        b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm" + b"\x00\xff" * 1024,
    ],
    ids=["mp4", "avi", "webm"],
)
@pytest.mark.parametrize("isolated", [False, True], ids=["in-process", "child"])
def test_corrupt_container_is_422(data, isolated, private_tmp):
    with pytest.raises(BadMedia) as err:
        decode(data, isolated=isolated)
    assert err.value.status == 422
    assert err.value.code in ("corrupt_video", "no_video")
    assert "verity-video-" not in err.value.message  # the private path is not the client's business
    assert leftovers(private_tmp) == []
    assert decoder_children() == []


def test_truncated_files(private_tmp):
    data = encode_ffmpeg(pattern_frames(40), 10, "mp4")  # index (moov) at the end
    with pytest.raises(BadMedia) as err:
        decode(data[: len(data) // 2])
    assert (err.value.status, err.value.code) == (422, "corrupt_video")
    faststart = encode_ffmpeg(pattern_frames(40), 10, "mp4", extra=("-movflags", "+faststart"))
    decoded = decode(faststart[: len(faststart) * 6 // 10])  # index first: the start still plays
    assert 0 < decoded.frame_count < 40
    assert "truncated" in codes(decoded)
    assert leftovers(private_tmp) == []


@pytest.mark.parametrize("isolated", [False, True], ids=["in-process", "child"])
def test_zero_frames_is_422(isolated, private_tmp):
    """Valid headers, no frames: an AVI cut where its frame data (movi) begins, and an MKV cut
    right after the headers of its first Cluster."""
    avi = raw_avi()
    with pytest.raises(BadMedia) as err:
        decode(avi[: avi.find(b"movi") + 4], isolated=isolated)
    assert (err.value.status, err.value.code) == (422, "no_frames")
    mkv = encode_ffmpeg(pattern_frames(10), 10, "mkv")
    cluster = mkv.find(b"\x1f\x43\xb6\x75")  # the first Cluster element
    assert cluster > 0
    with pytest.raises(BadMedia) as err:
        decode(mkv[: cluster + 40], isolated=isolated)
    assert (err.value.status, err.value.code) == (422, "no_frames")
    with pytest.raises(BadMedia) as err:
        decode(mkv[:cluster], isolated=isolated)  # not even a cluster: the probe gives up
    assert (err.value.status, err.value.code) == (422, "corrupt_video")
    assert leftovers(private_tmp) == []


def test_pixel_cap_is_413_before_decoding():
    data = write_opencv(pattern_frames(4), 10, "mp4")  # 128 x 96 = 12288 pixels
    with pytest.raises(TooLarge) as err:
        decode(data, max_pixels=12287)
    assert (err.value.status, err.value.code) == (413, "too_many_pixels")
    assert decode(data, max_pixels=12288).width == 128


@pytest.mark.parametrize("claimed", [(30_000, 30_000), (16_000, 16_000)])
@pytest.mark.parametrize("isolated", [False, True], ids=["in-process", "child"])
def test_absurd_resolution_header_is_413(claimed, isolated, private_tmp):
    """Tiny raw frames under headers claiming a huge size: refused from the probe, before OpenCV
    allocates a single frame (16000^2 BGR would be 768 MB each)."""
    data = patch_avi_size(raw_avi(), *claimed)
    assert decode(raw_avi()).width == 16  # the unpatched file is fine
    start = time.perf_counter()
    with pytest.raises(TooLarge) as err:
        decode(data, isolated=isolated)
    assert (err.value.status, err.value.code) == (413, "too_many_pixels")
    assert err.value.details["width"] == claimed[0]
    assert time.perf_counter() - start < 5
    assert leftovers(private_tmp) == []
    assert decoder_children() == []  # the child started before the probe is gone too


def test_declared_duration_over_the_cap_is_413():
    data = write_opencv(pattern_frames(12), 1, "mp4")  # 12 s
    with pytest.raises(TooLarge) as err:
        decode(data, max_duration_s=5)
    assert (err.value.status, err.value.code) == (413, "video_too_long")
    assert err.value.details["duration_s"] == pytest.approx(12.0, abs=0.1)
    assert decode(data, max_duration_s=12.5).frame_count == 12


def test_header_claiming_ten_hours_is_413_without_decoding():
    data = patch_mp4_duration(encode_ffmpeg(pattern_frames(10), 10, "mp4"), 36_000)
    with pytest.raises(TooLarge) as err:
        decode(data)
    assert (err.value.status, err.value.code) == (413, "video_too_long")


def test_undeclared_duration_over_the_cap_is_cut_while_decoding():
    """A streamed MKV declares no duration: the frames' own timestamps hit the cap."""
    data = encode_ffmpeg(pattern_frames(120, 32, 32), 10, "mkv", streamed=True)  # 12 s
    with pytest.raises(TooLarge) as err:
        decode(data, max_duration_s=5)
    assert (err.value.status, err.value.code) == (413, "video_too_long")


def _mutations(data: bytes, count: int, seed: int) -> list[bytes]:
    """Copies of ``data`` with a burst of random bytes somewhere past its magic, randomly cut."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        mutated = bytearray(data)
        start = int(rng.integers(16, len(data) - 16))
        length = int(rng.integers(1, 64))
        mutated[start : start + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        out.append(bytes(mutated[: int(rng.integers(len(data) // 2, len(data) + 1))]))
    return out


@pytest.mark.parametrize("fmt", ["mp4", "avi", "webm"])
def test_corrupted_files_never_escape_as_anything_but_4xx(fmt, private_tmp):
    data = encode_ffmpeg(
        pattern_frames(20), 10, fmt, extra=("-movflags", "+faststart") if fmt == "mp4" else ()
    )
    for mutated in _mutations(data, 6, seed=len(fmt)):
        try:
            decoded = decode(mutated, isolated=True, timeout_s=10)
        except VerityError as exc:
            assert 400 <= exc.status < 500
        else:
            assert decoded.frames and decoded.frames[0].rgb.dtype == np.uint8
    assert leftovers(private_tmp) == []
    assert decoder_children() == []


# --- time limits, crashes, memory ---------------------------------------------------------------


def test_in_process_decode_past_the_time_limit_is_cut(clip_4s, private_tmp, monkeypatch):
    """Every grab() made slow (100 ms; 120 frames = 12 s): the read loop's deadline cuts it. The
    limit (3 s) leaves room for the normal decode after it on a loaded machine."""
    real = cv2.VideoCapture

    class SlowCapture:
        def __init__(self, *args):
            self._capture = real(*args)

        def grab(self) -> bool:
            time.sleep(0.1)
            return self._capture.grab()

        def __getattr__(self, name):
            return getattr(self._capture, name)

    monkeypatch.setattr(cv2, "VideoCapture", SlowCapture)
    start = time.perf_counter()
    with pytest.raises(BadMedia) as err:
        decode(clip_4s, timeout_s=3.0)
    assert (err.value.status, err.value.code) == (422, "decode_timeout")
    assert time.perf_counter() - start < 5.0  # cut at 3 s, not after the 12 s of grabs
    assert leftovers(private_tmp) == []
    monkeypatch.undo()
    assert decode(clip_4s, timeout_s=3.0).frames_analyzed == 8


def test_a_hanging_decoder_child_is_killed_at_the_deadline(clip_4s, private_tmp, monkeypatch):
    """One call that never returns (simulated: a child that sleeps) cannot outlive the limit."""
    monkeypatch.setattr(
        media.video_decode, "_child_command", lambda: [sys.executable, "-c", "import time; time.sleep(60)"]
    )
    start = time.perf_counter()
    with pytest.raises(BadMedia) as err:
        decode(clip_4s, isolated=True, timeout_s=1.5)
    assert (err.value.status, err.value.code) == (422, "decode_timeout")
    assert time.perf_counter() - start < 3
    assert leftovers(private_tmp) == []
    assert decoder_children() == []


def test_a_crashing_decoder_child_fails_only_its_request(clip_4s, private_tmp, monkeypatch):
    monkeypatch.setattr(
        media.video_decode, "_child_command", lambda: [sys.executable, "-c", "import os; os.abort()"]
    )
    with pytest.raises(BadMedia) as err:
        decode(clip_4s, isolated=True)
    assert (err.value.status, err.value.code) == (422, "decode_failed")
    assert leftovers(private_tmp) == []
    monkeypatch.undo()
    assert decode(clip_4s, isolated=True).frames_analyzed == 8  # the next request is served


@pytest.mark.slow
def test_memory_is_bounded_by_max_frames_not_length(long_clip):
    """Peak traced memory (numpy frames included) of a 3-minute clip is that of a 20 s one."""
    short = lavfi_video(20, width=160, height=120, fps=30)
    frame_bytes = 160 * 120 * 3

    def peak(data: bytes) -> int:
        tracemalloc.start()
        try:
            decoded = decode(data, max_frames=8, timeout_s=60)
            _, top = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert 4 <= decoded.frames_analyzed <= 8
        return top

    short_peak, long_peak = peak(short), peak(long_clip)
    # Measured: ~0.53 MB for both (8 frames of 57.6 KB kept, one in flight); all 5400 would be 311 MB.
    assert long_peak < 9 * frame_bytes + 1 * MB
    assert long_peak < short_peak + 256 * 1024


# --- audio track -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["mp4", "webm", "avi"])
def test_extract_audio_gives_16k_mono_wav_of_the_track(fmt, private_tmp):
    data = encode_ffmpeg(pattern_frames(20), 10, fmt, audio=True)  # 2 s, 440 Hz
    wav = extract_audio(data, timeout_s=30)
    assert wav is not None and wav[:4] == b"RIFF" and sniff(wav) == "wav"
    audio = decode_audio(
        wav,
        target_rate=16_000,
        max_bytes=20 * MB,
        max_duration_s=300,
        min_duration_s=0.5,
        ffmpeg_timeout_s=30,
    )
    assert audio.original_rate == 16_000 and audio.channels == 1
    assert audio.duration_s == pytest.approx(2.0, abs=0.1)
    assert dominant_frequency(audio.samples, 16_000) == pytest.approx(440, abs=5)
    assert leftovers(private_tmp) == []


def test_extract_audio_without_a_track_is_none_and_takes_paths(tmp_path, private_tmp):
    assert extract_audio(encode_ffmpeg(pattern_frames(10), 10, "mp4"), timeout_s=30) is None
    path = tmp_path / "clip.mkv"
    path.write_bytes(encode_ffmpeg(pattern_frames(30), 10, "mkv", audio=True))
    wav = extract_audio(path, timeout_s=30, max_duration_s=1.0)
    assert wav is not None
    audio = decode_audio(
        wav,
        target_rate=16_000,
        max_bytes=20 * MB,
        max_duration_s=300,
        min_duration_s=0.5,
        ffmpeg_timeout_s=30,
    )
    assert audio.duration_s == pytest.approx(1.0, abs=0.05)
    with pytest.raises(UnsupportedMedia):
        extract_audio(encode_audio(sine(440, 1.0), 16_000, "wav"), timeout_s=30)
    assert leftovers(private_tmp) == []


@pytest.mark.parametrize("isolated", [False, True], ids=["in-process", "child"])
def test_audio_track_decodes_alongside_the_frames(isolated, private_tmp):
    data = encode_ffmpeg(pattern_frames(20), 10, "mov", audio=True)
    decoded = decode(data, fps=2, isolated=isolated, with_audio=True)
    assert decoded.frames_analyzed == 4 and decoded.has_audio
    assert decoded.audio_wav == extract_audio(data, timeout_s=30)
    silent = decode(encode_ffmpeg(pattern_frames(20), 10, "mov"), isolated=isolated, with_audio=True)
    assert silent.audio_wav is None and not silent.has_audio and silent.warnings == []
    assert decode(data, fps=2, isolated=isolated).audio_wav is None  # only when asked for
    assert leftovers(private_tmp) == []
    assert decoder_children() == []


# --- every frame's size, not only the header's ------------------------------------------------------


@pytest.mark.parametrize("isolated", [False, True])
def test_mid_stream_resolution_change_stays_within_the_header_size(isolated):
    """The header says 160x120, the second half of the stream is 1280x720: the pixel cap is set
    to the header's size, and no frame handed on is larger (OpenCV scales to the opened size)."""
    data = resolution_change_avi()
    decoded = decode(data, fps=10, max_pixels=160 * 120, isolated=isolated)
    assert decoded.frames and {f.rgb.shape for f in decoded.frames} == {(120, 160, 3)}


class _GrowingCapture:
    """The real capture, except that sampled frames after the first are 4 times larger: what a
    decoder that follows a mid-stream resolution change would hand back."""

    def __init__(self, *args):
        self._capture = _REAL_CAPTURE(*args)
        self._retrieved = 0

    def retrieve(self):
        ok, frame = self._capture.retrieve()
        self._retrieved += 1
        if ok and self._retrieved > 1:
            frame = cv2.resize(frame, (frame.shape[1] * 2, frame.shape[0] * 2))
        return ok, frame

    def __getattr__(self, name):
        return getattr(self._capture, name)


_REAL_CAPTURE = cv2.VideoCapture


def test_a_frame_larger_than_the_pixel_cap_is_refused_even_after_a_good_header(clip_4s, monkeypatch):
    monkeypatch.setattr(media.video_decode.cv2, "VideoCapture", _GrowingCapture)
    with pytest.raises(TooLarge) as caught:
        decode(clip_4s, fps=2, max_pixels=128 * 96)  # the header's size passes
    assert caught.value.code == "too_many_pixels"


def test_each_frame_is_downscaled_by_its_own_size(clip_4s, monkeypatch):
    monkeypatch.setattr(media.video_decode.cv2, "VideoCapture", _GrowingCapture)
    decoded = decode(clip_4s, fps=2, max_side=128)
    assert {max(f.rgb.shape[:2]) for f in decoded.frames} == {128}
