"""The benchmark's input pictures: realistic JPEGs generated in-process, identical bytes for
every configuration (baseline, model-only and served)."""

from __future__ import annotations

import hashlib
from pathlib import Path

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
    paths = []
    for index, data in enumerate(images):
        path = directory / f"img{index:02d}.jpg"
        path.write_bytes(data)
        paths.append(path)
    return paths


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
