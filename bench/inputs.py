"""The benchmark's input pictures: realistic JPEGs generated in-process, identical bytes for
every configuration (baseline, model-only and served)."""

from __future__ import annotations

import hashlib
import math
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np

from tests.media_factory import encode, photo

# (width, height) around 640x480, landscape and portrait; one seed each.
SIZES = [
    (640, 480),
    (480, 640),
    (800, 600),
    (640, 480),
    (1024, 768),
    (720, 540),
    (640, 360),
    (600, 800),
]
JPEG_QUALITY = 90


def make_jpegs() -> list[bytes]:
    return [
        encode(photo(width, height, seed=seed), "JPEG", quality=JPEG_QUALITY)
        for seed, (width, height) in enumerate(SIZES)
    ]


def write_jpegs(images: list[bytes], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    digits = max(2, len(str(len(images) - 1)))  # names sort in input order
    paths = []
    for index, data in enumerate(images):
        path = directory / f"img{index:0{digits}d}.jpg"
        path.write_bytes(data)
        paths.append(path)
    return paths


# --- a folder of mixed pictures (the batch runner's bench) ---------------------------------------

# SIZES plus smaller and larger pictures (a phone photo, full HD): decoding and resizing them
# costs more or less than the 640x480 ones, as in a real folder.
MIXED_SIZES = [*SIZES, (320, 240), (1280, 720), (1920, 1080), (2048, 1536), (1080, 1920)]
FACE_EVERY = 4  # every 4th picture: a face (the astronaut's head) on a background


def mixed_jpeg(index: int) -> tuple[bytes, str]:
    """Picture ``index`` of a mixed folder and what it is (``photo`` or ``face``): the size cycles
    through ``MIXED_SIZES``, every ``FACE_EVERY``-th holds one face (``tests.face_factory``) of
    a third to a half of its shorter side at a seeded place, the others are
    ``tests.media_factory.photo`` pictures; the same bytes for every configuration."""
    from PIL import Image

    width, height = MIXED_SIZES[index % len(MIXED_SIZES)]
    if index % FACE_EVERY == FACE_EVERY - 1:
        from tests.face_factory import Paste, compose

        rng = np.random.default_rng(index)
        size = int(min(width, height) * rng.uniform(0.33, 0.5))
        x, y = int(rng.integers(0, width - size)), int(rng.integers(0, height - size))
        picture = Image.fromarray(compose([Paste(x, y, size)], seed=index, width=width, height=height))
        return encode(picture, "JPEG", quality=JPEG_QUALITY), "face"
    return encode(photo(width, height, seed=index), "JPEG", quality=JPEG_QUALITY), "photo"


def make_mixed_jpegs(count: int) -> list[bytes]:
    return [mixed_jpeg(index)[0] for index in range(count)]


def read_jpegs(directory: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted(directory.glob("img*.jpg"))]


def digest(images: list[bytes]) -> str:
    sha = hashlib.sha256()
    for data in images:
        sha.update(data)
    return sha.hexdigest()[:16]


# --- audio (issue 4) -----------------------------------------------------------------------------

AUDIO_RATE = 16_000
AUDIO_FORMAT = "WAV, 16 kHz, mono, 16-bit PCM"


def make_clip(duration_s: float, seed: int = 0) -> bytes:
    """A speech-like clip (``tests.audio_factory.speech_like``) as WAV bytes: the same bytes for
    the baseline and the served runs."""
    from tests.audio_factory import encode, speech_like

    return encode(speech_like(duration_s, AUDIO_RATE, seed=seed), AUDIO_RATE, "wav")


def clip_name(duration_s: float) -> str:
    return f"clip-{duration_s:g}s.wav"


# --- video (issue 5) -----------------------------------------------------------------------------

VIDEO_SIZE = (1280, 720)
VIDEO_FPS = 30
VIDEO_FORMAT = "MP4, H.264 (libx264 veryfast, CRF 23, yuv420p), 1280x720, 30 fps, no audio"
VIDEO_HEAD_SIZE = 240  # px: the astronaut's head patch, a face well inside MTCNN's range


def face_clip_frame(index: int, fps: float, background: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Frame ``index``: the head patch drifting left-right (8 s period) and bobbing (1.3 s) over
    ``background``, so consecutive frames differ as a talking head's do and every sampled frame
    holds one face at a different place."""
    height, width = background.shape[:2]
    size = head.shape[0]
    t = index / fps
    x = int((width - size) * (0.5 + 0.4 * math.sin(2 * math.pi * t / 8.0)))
    y = int((height - size) * (0.5 + 0.3 * math.sin(2 * math.pi * t / 1.3)))
    frame = background.copy()
    frame[y : y + size, x : x + size] = head
    return frame


def make_video_clip(duration_s: float, seed: int = 0) -> bytes:
    """A ``duration_s`` clip of one face (``tests.face_factory``'s astronaut head on one of its
    backgrounds) as H.264 MP4 bytes: the same bytes for the baseline and the served runs. Frames
    are made one at a time and piped to ffmpeg (60 s of raw 720p is ~5 GB)."""
    from tests.face_factory import HEAD, Paste, astronaut, background
    from tests.video_factory import ffmpeg_path, raw_video_input

    width, height = VIDEO_SIZE
    paste = Paste(0, 0, VIDEO_HEAD_SIZE)  # the patch size; its place changes per frame
    head = cv2.resize(astronaut()[HEAD], (paste.size, paste.size), interpolation=cv2.INTER_LINEAR)
    base = background(seed, width, height)
    count = round(duration_s * VIDEO_FPS)
    with tempfile.TemporaryDirectory(prefix="verity-bench-video-") as workdir:
        target = Path(workdir) / "clip.mp4"
        command = [
            ffmpeg_path(),
            "-hide_banner",
            "-loglevel",
            "error",
            *raw_video_input(width, height, VIDEO_FPS),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "23",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
            "-f",
            "mp4",
            str(target),
        ]
        errors = Path(workdir) / "ffmpeg.log"  # a file, not a pipe: nobody reads it while frames go in
        with errors.open("wb") as stderr:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=stderr)
            assert proc.stdin is not None
            try:
                for index in range(count):
                    proc.stdin.write(face_clip_frame(index, VIDEO_FPS, base, head).tobytes())
                proc.stdin.close()
                proc.wait(timeout=600)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        if proc.returncode != 0:
            tail = errors.read_text(errors="replace")[-500:]
            raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {tail}")
        return target.read_bytes()


def video_clip_name(duration_s: float) -> str:
    return f"clip-{duration_s:g}s.mp4"
