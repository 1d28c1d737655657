"""A deterministic probe set of audio windows for parity and INT8 agreement checks.

Signals with speech-like structure (a harmonic voice with a moving pitch under a syllable-rate
envelope), plus tones, chirps, noise and near-silence, so quantization error shows up as it
would on real inputs. Lengths follow the serving path: most probes are one full window (what
every clip of at least one window becomes), a few are shorter (a short clip runs alone at its
own length, down to the spec's minimum duration), one of them not a multiple of any conv stride.
"""

from __future__ import annotations

import numpy as np

from models.audio_features import normalize_windows
from models.catalog import AudioInputSpec


def _speech_like(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    f0 = rng.uniform(90, 240) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t))
    dt = float(t[1] - t[0]) if len(t) > 1 else 0.0
    phase = 2 * np.pi * np.cumsum(f0) * dt
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, np.pi)), 0, None) ** 2
    return voice * syllables + rng.normal(0, 0.02, t.shape)


def _chirp(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    f_start, f_end = rng.uniform(50, 400), rng.uniform(1000, 7000)
    duration = max(float(t[-1]), 1e-3)
    return np.sin(2 * np.pi * (f_start * t + (f_end - f_start) * t**2 / (2 * duration)))


def _tones(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    freqs = rng.uniform(100, 4000, size=int(rng.integers(1, 4)))
    return sum(np.sin(2 * np.pi * f * t + rng.uniform(0, np.pi)) for f in freqs)


def _noise(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    white = rng.normal(0, 1, t.shape)
    if rng.random() < 0.5:
        return white
    pinkish = np.cumsum(white)  # brown-ish, then high-passed a little
    return pinkish - np.convolve(pinkish, np.ones(64) / 64, mode="same")


def _quiet(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    signal = rng.normal(0, 1e-3, t.shape)
    clicks = rng.integers(0, len(t), size=3)
    signal[clicks] += rng.uniform(0.2, 0.5, size=3)
    return signal


_KINDS = (_speech_like, _chirp, _speech_like, _tones, _noise, _speech_like, _quiet)


def probe_signal(length: int, sample_rate: int, index: int, seed: int = 1234) -> np.ndarray:
    """One raw (un-normalized) probe signal of ``length`` samples, in [-1, 1]."""
    rng = np.random.default_rng(seed + 7919 * index)
    t = np.arange(length) / sample_rate
    raw = _KINDS[index % len(_KINDS)](t, rng)
    raw = np.asarray(raw, dtype=np.float64)
    peak = float(np.abs(raw).max()) or 1.0
    return (raw / peak * rng.uniform(0.05, 0.9)).astype(np.float32)


def probe_lengths(spec: AudioInputSpec, count: int) -> list[tuple[int, int]]:
    """(length in samples, how many) groups: about 3/4 full windows, the rest shorter clips."""
    full = spec.window_samples
    short = sorted(
        {
            max(spec.min_samples, 1),
            max(spec.min_samples, min(full - 1, int(full * 0.3) + 17)),  # odd: not a stride multiple
        }
    )
    n_short = min(max(count // 4, len(short)), count - 1) if count > 1 else 0
    groups = [(full, count - n_short)]
    for i, length in enumerate(short):
        share = n_short // len(short) + (1 if i < n_short % len(short) else 0)
        if share:
            groups.append((length, share))
    return groups


def probe_audio_batches(spec: AudioInputSpec, count: int = 16, seed: int = 1234) -> list[np.ndarray]:
    """``count`` probe windows as model input, grouped by length (one array per length)."""
    batches, index = [], 0
    for length, how_many in probe_lengths(spec, count):
        raw = np.stack([probe_signal(length, spec.sample_rate, index + i, seed) for i in range(how_many)])
        index += how_many
        batches.append(normalize_windows(raw) if spec.do_normalize else raw)
    return batches
