"""Raw model outputs -> fake probability -> verdict (models/postprocess.py)."""

from __future__ import annotations

import numpy as np
import pytest

from models.postprocess import fake_probabilities, verdict_for

pytestmark = pytest.mark.unit


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


# --- softmax heads (N, 2) -----------------------------------------------------------------------


def test_softmax_logits_pick_the_fake_column():
    logits = np.array([[0.0, 0.0], [2.0, -1.0], [-3.0, 1.0]])
    expected_p1 = np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)
    np.testing.assert_allclose(fake_probabilities(logits, "logits", 1), expected_p1, rtol=1e-6)
    np.testing.assert_allclose(fake_probabilities(logits, "logits", 0), 1.0 - expected_p1, rtol=1e-6)
    assert fake_probabilities(logits, "logits", 1)[0] == pytest.approx(0.5)


def test_softmax_of_three_classes_returns_the_named_class():
    logits = np.array([[1.0, 2.0, 3.0]])
    exp = np.exp(logits[0])
    for index in range(3):
        assert fake_probabilities(logits, "logits", index)[0] == pytest.approx(exp[index] / exp.sum())


def test_softmax_is_stable_for_huge_logits():
    logits = np.array([[1000.0, -1000.0], [-1000.0, 1000.0], [800.0, 800.0]])
    probs = fake_probabilities(logits, "logits", 1)
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs, [0.0, 1.0, 0.5], atol=1e-12)


def test_two_column_probabilities_are_used_as_given():
    probs = np.array([[0.9, 0.1], [0.25, 0.75]])
    np.testing.assert_allclose(fake_probabilities(probs, "probabilities", 1), [0.1, 0.75])
    np.testing.assert_allclose(fake_probabilities(probs, "probabilities", 0), [0.9, 0.25])


# --- single-unit sigmoid heads (N, 1) / (N,) ----------------------------------------------------


def test_one_unit_logits_go_through_a_sigmoid():
    logits = np.array([[0.0], [2.0], [-1.5]], dtype=np.float32)
    expected = np.array([_sigmoid(0.0), _sigmoid(2.0), _sigmoid(-1.5)])
    np.testing.assert_allclose(fake_probabilities(logits, "logits", 1), expected, rtol=1e-6)
    # fake_index 0: the sigmoid unit scores "real", so fake is its complement.
    np.testing.assert_allclose(fake_probabilities(logits, "logits", 0), 1.0 - expected, rtol=1e-6)


def test_one_unit_probabilities_fake_index_one_and_zero():
    probs = np.array([[0.2], [0.8], [0.5]], dtype=np.float32)
    np.testing.assert_allclose(fake_probabilities(probs, "probabilities", 1), [0.2, 0.8, 0.5], rtol=1e-6)
    np.testing.assert_allclose(fake_probabilities(probs, "probabilities", 0), [0.8, 0.2, 0.5], rtol=1e-6)


def test_flat_vector_is_treated_as_one_unit_head():
    flat = np.array([0.3, 0.9])
    np.testing.assert_allclose(fake_probabilities(flat, "probabilities", 1), [0.3, 0.9])
    np.testing.assert_allclose(fake_probabilities(flat, "logits", 1), [_sigmoid(0.3), _sigmoid(0.9)])


def test_output_shape_dtype_and_range():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 10, size=(7, 2)).astype(np.float32)
    probs = fake_probabilities(logits, "logits", 1)
    assert probs.shape == (7,)
    assert probs.dtype == np.float64
    assert np.all((probs >= 0.0) & (probs <= 1.0))
    # Slightly out-of-range "probabilities" (float error in a user's head) are clipped.
    np.testing.assert_array_equal(
        fake_probabilities(np.array([[1.0000001], [-1e-7]]), "probabilities", 1), [1.0, 0.0]
    )


# --- verdicts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probability", "threshold", "band", "verdict"),
    [
        (0.9, 0.5, 0.0, "FAKE"),
        (0.1, 0.5, 0.0, "REAL"),
        (0.5, 0.5, 0.0, "FAKE"),  # at the threshold counts as fake
        (0.49, 0.5, 0.0, "REAL"),
        (0.6, 0.7, 0.0, "REAL"),  # the threshold is the model's, not a fixed 0.5
        (0.75, 0.7, 0.0, "FAKE"),
        (0.55, 0.5, 0.125, "UNCERTAIN"),
        (0.45, 0.5, 0.125, "UNCERTAIN"),
        (0.5, 0.5, 0.125, "UNCERTAIN"),
        (0.625, 0.5, 0.125, "FAKE"),  # band edge (exact in binary) is outside the band
        (0.375, 0.5, 0.125, "REAL"),
        (0.95, 0.5, 0.125, "FAKE"),
        (0.02, 0.5, 0.125, "REAL"),
    ],
)
def test_verdict_for_threshold_and_uncertain_band(probability, threshold, band, verdict):
    assert verdict_for(probability, threshold, band) == verdict


def test_verdicts_follow_probabilities_end_to_end():
    logits = np.array([[3.0, -3.0], [0.05, 0.0], [-3.0, 3.0]])
    probs = fake_probabilities(logits, "logits", 1)
    verdicts = [verdict_for(float(p), 0.5, 0.1) for p in probs]
    assert verdicts == ["REAL", "UNCERTAIN", "FAKE"]
