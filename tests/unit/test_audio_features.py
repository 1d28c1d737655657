"""Feature-extractor parity: ``normalize_windows`` equals transformers' Wav2Vec2FeatureExtractor
(zero-mean/unit-variance, eps 1e-7), with and without attention masks, padded or not
(issue 4)."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import Wav2Vec2FeatureExtractor

from models.audio_features import normalize_windows
from models.catalog import AudioInputSpec, get_entry
from models.export.audio_probe import probe_signal
from models.export.hf_audio import _spec_from_extractor

pytestmark = pytest.mark.unit

RATE = 16_000
ATOL = 1e-5


def _extractor(return_attention_mask: bool) -> Wav2Vec2FeatureExtractor:
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=return_attention_mask,
    )


def _signals(length: int, count: int = 7) -> list[np.ndarray]:
    """Speech-like, chirps, tones, noise, near-silence (the probe kinds), plus a DC-offset sine
    and an all-zero window (variance 0: only the epsilon keeps it finite)."""
    rng = np.random.default_rng(length)
    signals = [probe_signal(length, RATE, i, seed=99) for i in range(count)]
    t = np.arange(length) / RATE
    signals.append((0.4 + 0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    signals.append(np.zeros(length, dtype=np.float32))
    signals.append(rng.normal(0, 3.0, length))  # float64, loud: HF casts to float32 first
    return signals


def _pad(signals: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    longest = max(len(s) for s in signals)
    padded = np.zeros((len(signals), longest), dtype=np.float32)
    mask = np.zeros((len(signals), longest), dtype=np.int32)
    for i, signal in enumerate(signals):
        padded[i, : len(signal)] = signal
        mask[i, : len(signal)] = 1
    return padded, mask


@pytest.mark.parametrize("return_attention_mask", [True, False])
@pytest.mark.parametrize("length", [64_000, 8_000, 12_345])
def test_equal_length_windows_match_hf(return_attention_mask, length):
    """Serving's case: full windows (or one short clip) never padded, normalized per window."""
    signals = _signals(length)
    expected = _extractor(return_attention_mask)(signals, sampling_rate=RATE, return_tensors="np")
    got = normalize_windows(np.stack(signals), None)
    assert got.dtype == np.float32 and got.shape == (len(signals), length)
    np.testing.assert_allclose(got, expected["input_values"], rtol=0, atol=ATOL)
    # The one-window case: a 1-D clip is a batch of one.
    single = _extractor(return_attention_mask)(signals[0], sampling_rate=RATE, return_tensors="np")
    np.testing.assert_allclose(normalize_windows(signals[0]), single["input_values"], rtol=0, atol=ATOL)


def test_padded_batch_with_mask_matches_hf():
    """With a mask HF takes mean/variance over the valid samples only and sets the padded
    positions to the padding value afterwards."""
    signals = [*_signals(16_000)[:4], *_signals(9_001)[:3], _signals(400)[0]]
    extractor = _extractor(return_attention_mask=True)
    expected = extractor(signals, sampling_rate=RATE, padding="longest", return_tensors="np")
    padded, mask = _pad(signals)
    np.testing.assert_array_equal(expected["attention_mask"], mask)
    got = normalize_windows(padded, mask)
    np.testing.assert_allclose(got, expected["input_values"], rtol=0, atol=ATOL)
    shorter = mask[:, -1] == 0
    assert shorter.any() and np.all(got[shorter][:, -1] == 0.0)  # padding stays padding
    for row, signal in zip(got, signals, strict=True):
        valid = row[: len(signal)].astype(np.float64)
        assert abs(valid.mean()) < 1e-4 and abs(valid.std() - 1) < 1e-3


def test_padded_batch_without_mask_matches_hf():
    """Without a mask (wav2vec2-base's extractor) HF normalizes the whole padded row, zeros
    included: the padding shifts the statistics, one reason Verity never pads a window."""
    signals = [*_signals(16_000)[:3], _signals(5_000)[1]]
    extractor = _extractor(return_attention_mask=False)
    expected = extractor(signals, sampling_rate=RATE, padding="longest", return_tensors="np")
    assert "attention_mask" not in expected
    padded, mask = _pad(signals)
    got = normalize_windows(padded, None)
    np.testing.assert_allclose(got, expected["input_values"], rtol=0, atol=ATOL)
    masked = normalize_windows(padded, mask)
    assert not np.allclose(got[-1], masked[-1], atol=1e-3)  # the padded item differs


def test_all_padding_row_is_silent_not_nan():
    padded, mask = _pad([np.ones(10, dtype=np.float32), np.ones(1, dtype=np.float32)])
    mask[1] = 0
    got = normalize_windows(padded, mask)
    assert np.all(np.isfinite(got)) and np.all(got[1] == 0.0)


def test_shape_errors():
    with pytest.raises(ValueError, match="attention_mask shape"):
        normalize_windows(np.zeros((2, 10)), np.ones((2, 9)))
    with pytest.raises(ValueError, match="expected \\(windows, samples\\)"):
        normalize_windows(np.zeros((2, 1, 10)))


def test_catalog_spec_equals_the_wav2vec2_extractor_config():
    """The catalog entry's sample rate and normalization are wav2vec2-base's extractor's, and a
    checkpoint's extractor config (as export reads it) overrides them; windowing stays Verity's."""
    spec = get_entry("wav2vec2-audio").audio
    assert spec is not None
    assert (spec.sample_rate, spec.do_normalize) == (16_000, True)
    assert (spec.window_s, spec.hop_s) == (4.0, 2.0) and spec.window_samples == 64_000
    assert 0 < spec.min_duration_s < spec.window_s
    base = Wav2Vec2FeatureExtractor()  # wav2vec2-base's defaults
    assert _spec_from_extractor(base.to_dict(), spec) == spec
    other = Wav2Vec2FeatureExtractor(sampling_rate=8_000, do_normalize=False).to_dict()
    assert _spec_from_extractor(other, spec) == AudioInputSpec(
        sample_rate=8_000, window_s=4.0, hop_s=2.0, do_normalize=False, min_duration_s=spec.min_duration_s
    )
    assert AudioInputSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="hop_s <= window_s"):
        AudioInputSpec.from_dict({"window_s": 1.0, "hop_s": 2.0})
