"""Raw model outputs -> fake probability -> verdict."""

from __future__ import annotations

from typing import Literal

import numpy as np

Verdict = Literal["FAKE", "REAL", "UNCERTAIN"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def fake_probabilities(
    outputs: np.ndarray, output_kind: Literal["logits", "probabilities"], fake_index: int
) -> np.ndarray:
    """(N, classes) or (N, 1) model outputs -> (N,) probability that each item is fake.

    A single-unit head is a sigmoid over "class 1"; its fake probability is p or 1 - p
    depending on which index the label map calls fake.
    """
    scores = np.asarray(outputs, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.shape[1] == 1:
        positive = _sigmoid(scores[:, 0]) if output_kind == "logits" else scores[:, 0]
        probs = positive if fake_index == 1 else 1.0 - positive
    else:
        probs = (_softmax(scores) if output_kind == "logits" else scores)[:, fake_index]
    return np.clip(probs, 0.0, 1.0)


def verdict_for(probability: float, threshold: float, uncertain_band: float) -> Verdict:
    """FAKE at or above the threshold, REAL below it, UNCERTAIN within the band around it."""
    if abs(probability - threshold) < uncertain_band:
        return "UNCERTAIN"
    return "FAKE" if probability >= threshold else "REAL"
