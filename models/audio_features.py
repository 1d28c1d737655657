"""Audio windows -> model input values, exactly as the checkpoint's HF feature extractor does it.

Run-time side: numpy only. ``Wav2Vec2FeatureExtractor(do_normalize=True)`` normalizes every
sequence to zero mean and unit variance, ``(x - mean) / sqrt(var + 1e-7)``, in float32:

- with an attention mask, mean and variance come from the valid (unpadded) samples only, and
  the padded positions are then set to the padding value (0.0);
- without one (``return_attention_mask=False``, e.g. wav2vec2-base and the ``group``-norm
  checkpoints fine-tuned from it), the whole row is used, zero padding included.

Verity's windows are never padded (media/audio.py aligns the last window to the clip's end and
runs a clip shorter than one window at its own length), so serving passes ``attention_mask=None``
and both branches give the same numbers; the masked branch exists so the function equals the HF
extractor in every case (tests/unit/test_audio_features.py).
"""

from __future__ import annotations

import numpy as np

# Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm's epsilon, added to the variance.
VARIANCE_EPS = 1e-7


def _norm(vector: np.ndarray, length: int, padding_value: float) -> np.ndarray:
    valid = vector[:length]
    if length == 0:  # an all-padding row: HF would divide 0 by NaN; keep it silent (all padding)
        return np.full_like(vector, padding_value)
    normed = (vector - valid.mean()) / np.sqrt(valid.var() + VARIANCE_EPS)
    if length < normed.shape[0]:
        normed[length:] = padding_value
    return normed


def normalize_windows(
    windows: np.ndarray, attention_mask: np.ndarray | None = None, *, padding_value: float = 0.0
) -> np.ndarray:
    """(N, samples) windows -> (N, samples) float32, each row zero-mean/unit-variance.

    ``attention_mask`` (N, samples), 1 on valid samples and 0 on right padding, as the HF
    extractor returns it; None normalizes over the whole row (what HF does without a mask).
    """
    batch = np.asarray(windows, dtype=np.float32)
    if batch.ndim == 1:
        batch = batch[None, :]
    if batch.ndim != 2:
        raise ValueError(f"expected (windows, samples) audio, got shape {batch.shape}")
    if attention_mask is None:
        lengths = [batch.shape[1]] * batch.shape[0]
    else:
        mask = np.asarray(attention_mask, dtype=np.int32)
        if mask.shape != batch.shape:
            raise ValueError(f"attention_mask shape {mask.shape} != windows shape {batch.shape}")
        lengths = [int(n) for n in mask.sum(-1)]
    out = np.empty_like(batch)
    for i, (vector, length) in enumerate(zip(batch, lengths, strict=True)):
        out[i] = _norm(vector, length, padding_value)
    return out
