"""Videos and broken video files the tests make themselves (no downloaded media).

Frames are RGB uint8 ``[height, width, 3]``. Each pattern frame carries its own index as a row of
black/white blocks (``read_index`` reads it back through lossy codecs) and a red marker in its
top-left corner (``marker_corner`` finds it, to check rotation). Writers: OpenCV's ``VideoWriter``
(MP4 with MPEG-4 Part 2, AVI with MJPEG) and the ffmpeg binary for everything else (MOV, WebM,
MKV, audio tracks, rotation metadata, variable frame rate, lavfi test sources for long clips).
ffmpeg is a declared system dependency (``make system-deps``), so tests fail loudly without it.
"""

from __future__ import annotations

import functools
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import psutil

INDEX_BITS = 10
_BLOCK = 8  # pixels per index block (the code survives 8x8 DCT codecs at this size)

# container -> (ffmpeg muxer, video codec args, audio codec args)
FFMPEG_FORMATS: dict[str, tuple[str, list[str], list[str]]] = {
    "mp4": ("mp4", ["-c:v", "mpeg4", "-q:v", "3"], ["-c:a", "aac", "-b:a", "64k"]),
    "mov": ("mov", ["-c:v", "mpeg4", "-q:v", "3"], ["-c:a", "aac", "-b:a", "64k"]),
    "avi": ("avi", ["-c:v", "mjpeg", "-q:v", "3"], ["-c:a", "pcm_s16le"]),
    "webm": (
        "webm",
        ["-c:v", "libvpx", "-b:v", "1M", "-deadline", "realtime", "-cpu-used", "8"],
        ["-c:a", "libopus", "-b:a", "48k"],
    ),
    "mkv": ("matroska", ["-c:v", "mpeg4", "-q:v", "3"], ["-c:a", "aac", "-b:a", "64k"]),
}


def ffmpeg_path() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise RuntimeError("ffmpeg is not installed; the project needs it (run `make system-deps`)")
    return path


def pattern_frame(index: int, width: int = 128, height: int = 96, *, marker: bool = True) -> np.ndarray:
    """A grey frame with ``index`` as INDEX_BITS blocks along its bottom edge (white = 1) and a
    red square (a quarter of the shorter side) in the top-left corner."""
    frame = np.full((height, width, 3), 96, dtype=np.uint8)
    if marker:
        side = min(width, height) // 4
        frame[:side, :side] = (255, 0, 0)
    top = height - 2 * _BLOCK
    for bit in range(INDEX_BITS):
        value = 255 if (index >> bit) & 1 else 0
        left = width // 2 - INDEX_BITS * _BLOCK // 2 + bit * _BLOCK
        frame[top : top + _BLOCK, left : left + _BLOCK] = value
    return frame


def read_index(frame: np.ndarray) -> int:
    """The index ``pattern_frame`` wrote (frame not rotated, not downscaled)."""
    height, width = frame.shape[:2]
    top = height - 2 * _BLOCK
    index = 0
    for bit in range(INDEX_BITS):
        left = width // 2 - INDEX_BITS * _BLOCK // 2 + bit * _BLOCK
        block = frame[top + 2 : top + _BLOCK - 2, left + 2 : left + _BLOCK - 2]
        if block.mean() > 128:
            index |= 1 << bit
    return index


def marker_corner(frame: np.ndarray) -> str:
    """Which corner holds the red marker: "top-left", "top-right", "bottom-left", "bottom-right"."""
    height, width = frame.shape[:2]
    side = min(width, height) // 8
    corners = {
        "top-left": frame[:side, :side],
        "top-right": frame[:side, -side:],
        "bottom-left": frame[-side:, :side],
        "bottom-right": frame[-side:, -side:],
    }

    def redness(patch: np.ndarray) -> float:
        patch = patch.astype(np.float64)
        return float((patch[..., 0] - (patch[..., 1] + patch[..., 2]) / 2).mean())

    return max(corners, key=lambda name: redness(corners[name]))


def pattern_frames(count: int, width: int = 128, height: int = 96) -> list[np.ndarray]:
    return [pattern_frame(i, width, height) for i in range(count)]


def write_opencv(frames: Iterable[np.ndarray], fps: float, fmt: str = "mp4") -> bytes:
    """Bytes of ``frames`` written by cv2.VideoWriter: "mp4" (mp4v) or "avi" (MJPG)."""
    fourcc = {"mp4": "mp4v", "avi": "MJPG"}[fmt]
    frames = list(frames)
    height, width = frames[0].shape[:2]
    with tempfile.TemporaryDirectory(prefix="verity-test-video-") as workdir:
        target = Path(workdir) / f"out.{fmt}"
        writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
        if not writer.isOpened():
            raise RuntimeError(f"cv2.VideoWriter cannot write {fmt}/{fourcc}")
        try:
            for frame in frames:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        return target.read_bytes()


def raw_video_input(width: int, height: int, fps: float) -> list[str]:
    """ffmpeg input options for raw RGB24 frames of ``width`` x ``height`` on stdin."""
    return [
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-r",
        f"{fps:g}",
        "-i",
        "pipe:0",
    ]


def _run_ffmpeg(
    inputs: list[str], outputs: list[str], fmt: str, stdin: bytes | None = None, *, streamed: bool = False
) -> bytes:
    """Run ffmpeg; ``streamed`` writes to a pipe, so the muxer cannot seek back to write the
    duration or an index (what a live recorder produces)."""
    with tempfile.TemporaryDirectory(prefix="verity-test-video-") as workdir:
        target = Path(workdir) / f"out.{fmt}"
        command = [ffmpeg_path(), "-hide_banner", "-loglevel", "error"]
        command += ["-nostdin"] if stdin is None else []  # raw frames come on stdin
        command += [*inputs, *outputs, "pipe:1" if streamed else str(target)]
        result = subprocess.run(command, input=stdin, check=True, capture_output=True, timeout=120)
        return result.stdout if streamed else target.read_bytes()


def encode_ffmpeg(
    frames: list[np.ndarray],
    fps: float,
    fmt: str = "mp4",
    *,
    audio: bool = False,
    rotate: int | None = None,
    extra: tuple[str, ...] = (),
    streamed: bool = False,
) -> bytes:
    """Bytes of ``frames`` encoded by ffmpeg into ``fmt`` (a key of ``FFMPEG_FORMATS``), with a
    440 Hz audio track as long as the video when ``audio``, and ffmpeg's ``rotate`` stream tag when
    ``rotate`` (MP4/MOV: a display matrix that turns the picture that many degrees counter-clockwise;
    the same as ``-display_rotation`` in ffmpeg 6+)."""
    muxer, video_codec, audio_codec = FFMPEG_FORMATS[fmt]
    height, width = frames[0].shape[:2]
    inputs = raw_video_input(width, height, fps)
    outputs = ["-map", "0:v"]
    if audio:
        duration = len(frames) / fps
        inputs += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={duration:g}"]
        outputs += ["-map", "1:a", *audio_codec]
    outputs += [*video_codec, "-pix_fmt", "yuv420p", *extra, "-f", muxer]
    raw = b"".join(np.ascontiguousarray(frame).tobytes() for frame in frames)
    data = _run_ffmpeg(inputs, outputs, fmt, stdin=raw, streamed=streamed)
    if rotate is None:
        return data
    # ffmpeg 5.1 drops the tag when it encodes, but a stream copy writes it as a display matrix.
    return _run_ffmpeg(
        ["-f", muxer, "-i", "pipe:0"],
        ["-c", "copy", "-metadata:s:v:0", f"rotate={rotate}", "-f", muxer],
        fmt,
        stdin=data,
    )


def lavfi_video(
    duration_s: float,
    *,
    width: int = 160,
    height: int = 120,
    fps: float = 30,
    fmt: str = "mp4",
    extra: tuple[str, ...] = (),
) -> bytes:
    """A ``testsrc2`` clip generated inside ffmpeg (long clips without piping raw frames)."""
    muxer, video_codec, _ = FFMPEG_FORMATS[fmt]
    source = f"testsrc2=size={width}x{height}:rate={fps:g}:duration={duration_s:g}"
    return _run_ffmpeg(
        ["-f", "lavfi", "-i", source], [*video_codec, "-pix_fmt", "yuv420p", *extra, "-f", muxer], fmt
    )


def variable_frame_rate_mkv(width: int = 128, height: int = 96) -> bytes:
    """An MKV whose first 30 frames are 1/30 s apart and the next 30 are 0.1 s apart (4 s in all),
    so frame index / declared fps gives the wrong time after the first second."""
    frames = pattern_frames(60, width, height)
    # Output time of frame N, in units of 1/30 s: N for N < 30, then 30 + (N - 30) * 3.
    setpts = "setpts='if(lt(N,30),N,30+(N-30)*3)/(30*TB)'"
    raw = b"".join(frame.tobytes() for frame in frames)
    inputs = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", "30", "-i", "pipe:0"]
    outputs = ["-vf", setpts, "-fps_mode", "passthrough", "-c:v", "mpeg4", "-q:v", "3", "-f", "matroska"]
    return _run_ffmpeg(inputs, outputs, "mkv", stdin=raw)


def ffmpeg_audio_only_mp4(duration_s: float = 1.0) -> bytes:
    """An ``isom``-branded MP4 holding only an AAC track (sniffs as "mp4", has no video)."""
    source = f"sine=frequency=440:sample_rate=48000:duration={duration_s:g}"
    return _run_ffmpeg(["-f", "lavfi", "-i", source], ["-c:a", "aac", "-f", "mp4"], "mp4")


def raw_avi(width: int = 16, height: int = 16, count: int = 3, fps: float = 5) -> bytes:
    """An AVI of uncompressed BGR frames: its frame size lives only in the headers."""
    frames = [np.full((height, width, 3), 80 + 40 * i, dtype=np.uint8) for i in range(count)]
    raw = b"".join(frame.tobytes() for frame in frames)
    inputs = raw_video_input(width, height, fps)
    return _run_ffmpeg(inputs, ["-c:v", "rawvideo", "-pix_fmt", "bgr24", "-f", "avi"], "avi", stdin=raw)


def patch_avi_size(data: bytes, width: int, height: int) -> bytes:
    """The AVI with its main header (avih) and stream format (strf BITMAPINFOHEADER) claiming
    ``width`` x ``height``: a resolution bomb's header over tiny frames."""
    out = bytearray(data)
    avih = out.find(b"avih")
    # avih: size(4), then 8 dwords before dwWidth, dwHeight.
    struct.pack_into("<II", out, avih + 8 + 32, width, height)
    strf = out.find(b"strf")
    # strf: size(4), BITMAPINFOHEADER: biSize(4), biWidth(4), biHeight(4).
    struct.pack_into("<ii", out, strf + 8 + 4, width, height)
    return bytes(out)


def patch_mp4_duration(data: bytes, seconds: float) -> bytes:
    """The MP4 with its movie (mvhd), track (tkhd) and media (mdhd) headers all declaring
    ``seconds`` (version 0 boxes, as ffmpeg writes short files)."""
    out = bytearray(data)
    for box, timescale_at, duration_at in ((b"mvhd", 12, 16), (b"mdhd", 12, 16)):
        start = 0
        while (pos := out.find(box, start)) >= 0:
            body = pos + 4
            if out[body] != 0:
                raise ValueError(f"{box!r} is not a version-0 box")
            (timescale,) = struct.unpack_from(">I", out, body + timescale_at)
            struct.pack_into(">I", out, body + duration_at, min(0xFFFFFFFF, round(seconds * timescale)))
            start = pos + 4
    pos = out.find(b"mvhd")
    (movie_timescale,) = struct.unpack_from(">I", out, pos + 4 + 12)
    start = 0
    while (pos := out.find(b"tkhd", start)) >= 0:
        # tkhd v0: version/flags(4), created(4), modified(4), track id(4), reserved(4), duration(4)
        struct.pack_into(">I", out, pos + 4 + 20, min(0xFFFFFFFF, round(seconds * movie_timescale)))
        start = pos + 4
    return bytes(out)


@functools.cache
def long_clip() -> bytes:
    """60 s of 640x360 at 30 fps (1800 frames): seconds of work for a job worker at fps=2, long
    enough to kill a worker or cancel a job in the middle of it."""
    return lavfi_video(60, width=640, height=360, fps=30)


def decoder_children() -> list[str]:
    """ffmpeg/ffprobe or decoding children still alive (other fixtures' servers are not ours)."""
    left = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
            if child.name() in ("ffmpeg", "ffprobe") or "_child_main" in cmdline or "sleep(60)" in cmdline:
                left.append(cmdline)
        except psutil.NoSuchProcess:  # exited while we looked: not left behind
            continue
    return left


def resolution_change_avi(small: tuple[int, int] = (160, 120), large: tuple[int, int] = (1280, 720)) -> bytes:
    """One second of MJPEG frames at ``small`` then one at ``large``, joined without re-encoding:
    the header declares the small size, and the stream changes resolution midway."""
    with tempfile.TemporaryDirectory() as tmp:
        parts = []
        for name, (width, height) in (("a", small), ("b", large)):
            part = Path(tmp) / f"{name}.avi"
            source = f"testsrc=size={width}x{height}:rate=10:duration=1"
            subprocess.run(
                [
                    ffmpeg_path(),
                    "-loglevel",
                    "error",
                    "-f",
                    "lavfi",
                    "-i",
                    source,
                    "-c:v",
                    "mjpeg",
                    str(part),
                ],
                check=True,
                timeout=60,
            )
            parts.append(part)
        listing = Path(tmp) / "parts.txt"
        listing.write_text("".join(f"file '{p}'\n" for p in parts))
        out = Path(tmp) / "joined.avi"
        joining = ["-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(out)]
        subprocess.run(
            [ffmpeg_path(), "-loglevel", "error", *joining],
            check=True,
            timeout=60,
        )
        return out.read_bytes()
