"""Sounds and broken audio files the tests make themselves (no downloaded media).

Signals are float32 in [-1, 1], shaped ``[frames]`` (mono) or ``[frames, channels]``. Writers go
through libsndfile (``soundfile``) for WAV/FLAC/OGG/MP3 and through the ffmpeg binary for M4A/AAC.
ffmpeg is a declared system dependency (``make system-deps``), so a missing ffmpeg makes the
tests that need it fail loudly instead of skipping.
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

# libsndfile format/subtype per test format name.
SOUNDFILE_WRITERS: dict[str, tuple[str, str | None]] = {
    "wav": ("WAV", "PCM_16"),
    "wav-float": ("WAV", "FLOAT"),
    "flac": ("FLAC", "PCM_16"),
    "ogg-vorbis": ("OGG", "VORBIS"),
    "ogg-opus": ("OGG", "OPUS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}
_WRITE_BLOCK = 1 << 15  # frames per libsndfile write


def _time(duration_s: float, rate: int) -> np.ndarray:
    return np.arange(round(duration_s * rate), dtype=np.float64) / rate


def sine(
    freq: float = 440.0, duration_s: float = 2.0, rate: int = 16_000, amplitude: float = 0.5
) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * _time(duration_s, rate))).astype(np.float32)


def chirp(
    f0: float = 100.0, f1: float = 4000.0, duration_s: float = 2.0, rate: int = 16_000, amplitude: float = 0.5
) -> np.ndarray:
    """Linear sweep from ``f0`` to ``f1`` Hz."""
    t = _time(duration_s, rate)
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration_s))
    return (amplitude * np.sin(phase)).astype(np.float32)


def noise(duration_s: float = 2.0, rate: int = 16_000, amplitude: float = 0.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0.0, amplitude, round(duration_s * rate)), -1, 1).astype(np.float32)


def speech_like(duration_s: float = 3.0, rate: int = 16_000, seed: int = 0) -> np.ndarray:
    """Harmonics of a wandering pitch (~120 Hz), gated by a ~4 Hz syllable envelope, plus breath."""
    rng = np.random.default_rng(seed)
    t = _time(duration_s, rate)
    pitch = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, np.pi)), 0, None) ** 2
    signal = 0.3 * envelope * voice / 2.6 + rng.normal(0, 0.005, t.shape)
    return signal.astype(np.float32)


def stereo(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return np.stack([left, right], axis=1)


def encode(samples: np.ndarray, rate: int, fmt: str = "wav") -> bytes:
    """Bytes of ``samples`` written by libsndfile as ``fmt`` (a key of ``SOUNDFILE_WRITERS``)."""
    container, subtype = SOUNDFILE_WRITERS[fmt]
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", rate, channels, subtype, format=container) as sound:
        # libsndfile 1.2's Vorbis encoder crashes (SIGSEGV) on one write of a few minutes of
        # audio; blocks keep every writer safe.
        for start in range(0, len(samples), _WRITE_BLOCK):
            sound.write(samples[start : start + _WRITE_BLOCK])
    return buffer.getvalue()


def ffmpeg_path() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise RuntimeError("ffmpeg is not installed; the project needs it (run `make system-deps`)")
    return path


def encode_ffmpeg(samples: np.ndarray, rate: int, fmt: str = "m4a", *extra: str) -> bytes:
    """Bytes of ``samples`` encoded by ffmpeg as AAC: ``m4a`` (iTunes ``M4A `` brand), ``mp4``
    (``isom`` brand) or ``adts`` (raw AAC stream). ``extra`` goes before the output name."""
    muxer = {"m4a": "ipod", "mp4": "mp4", "adts": "adts"}[fmt]
    with tempfile.TemporaryDirectory(prefix="verity-test-audio-") as workdir:
        source, target = Path(workdir) / "in.wav", Path(workdir) / f"out.{fmt}"
        source.write_bytes(encode(samples, rate, "wav-float"))
        command = [ffmpeg_path(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(source)]
        command += ["-c:a", "aac", "-b:a", "128k", *extra, "-f", muxer, str(target)]
        subprocess.run(command, check=True, capture_output=True, timeout=60)
        return target.read_bytes()


def wav_header(
    rate: int = 16_000, *, channels: int = 1, bits: int = 16, data_size: int = 0, riff_size: int | None = None
) -> bytes:
    """A canonical 44-byte PCM WAV header declaring ``data_size`` bytes of samples."""
    block_align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block_align, block_align, bits)
    riff = (36 + data_size) & 0xFFFFFFFF if riff_size is None else riff_size
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", data_size & 0xFFFFFFFF)
    )


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def id3_tag(title: str = "verity") -> bytes:
    """A minimal ID3v2.4 tag (one TIT2 frame) to put in front of an MP3."""
    text = b"\x03" + title.encode()  # encoding byte 3 = UTF-8
    frame = b"TIT2" + _syncsafe(len(text)) + b"\x00\x00" + text
    return b"ID3\x04\x00\x00" + _syncsafe(len(frame)) + frame


def _syncsafe(value: int) -> bytes:
    return bytes((value >> shift) & 0x7F for shift in (21, 14, 7, 0))


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    """Frequency (Hz) of the FFT peak of a Hann-windowed signal."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])
