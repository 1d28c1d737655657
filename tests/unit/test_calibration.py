"""Calibration maps and operating points: fitting (models/calibrate.py), applying and choosing
(models/calibration.py). Mechanics on synthetic scores: dev weights cannot be calibrated for real."""

from __future__ import annotations

import numpy as np
import pytest

from errors import InvalidInput
from models.calibrate import ISOTONIC_MIN_PER_CLASS, _ece, figures, fit_map, operating_thresholds
from models.calibration import Calibration, decision_for, logit

pytestmark = pytest.mark.unit


def overconfident(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores that are right more often than not but far too sure of themselves: a true
    probability q gives the raw score sigmoid(4 logit(q))."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.02, 0.98, n)
    labels = (rng.uniform(size=n) < q).astype(np.float64)
    raw = 1 / (1 + np.exp(-4 * logit(q)))
    return raw, labels


def test_platt_fitted_on_overconfident_scores_lowers_the_calibration_error() -> None:
    raw, labels = overconfident(2000)
    method, params = fit_map(raw, labels, "platt")
    assert method == "platt"
    assert params["a"] == pytest.approx(0.25, abs=0.06)  # undoes the 4x
    calibrated = Calibration(method, params, {}).apply(raw)
    assert _ece(calibrated, labels) < _ece(raw, labels) / 2


def test_temperature_has_no_offset_and_isotonic_is_monotone() -> None:
    raw, labels = overconfident(1500, seed=1)
    method, params = fit_map(raw, labels, "temperature")
    assert method == "temperature" and params["b"] == 0.0 and params["a"] == pytest.approx(0.25, abs=0.06)
    method, params = fit_map(raw, labels, "isotonic")
    out = Calibration(method, params, {}).apply(np.linspace(0, 1, 101))
    assert method == "isotonic" and np.all(np.diff(out) >= 0) and 0 <= out.min() <= out.max() <= 1


def test_auto_picks_isotonic_only_with_enough_of_each_class() -> None:
    raw, labels = overconfident(200)
    assert fit_map(raw, labels, "auto")[0] == "platt"
    raw, labels = overconfident(4 * ISOTONIC_MIN_PER_CLASS, seed=2)
    assert fit_map(raw, labels, "auto")[0] == "isotonic"
    with pytest.raises(ValueError, match="unknown calibration method"):
        fit_map(raw, labels, "magic")


def test_operating_points_meet_their_rates_and_are_ordered() -> None:
    raw, labels = overconfident(3000, seed=3)
    thresholds = operating_thresholds(raw, labels)
    fake, real = raw[labels == 1], raw[labels == 0]
    assert (real >= thresholds["high_precision"]).mean() <= 0.01
    assert (fake >= thresholds["high_recall"]).mean() >= 0.95
    assert thresholds["high_recall"] <= thresholds["balanced"] <= thresholds["high_precision"]


def test_figures_count_false_positives_per_domain() -> None:
    raw = np.asarray([0.9, 0.8, 0.2, 0.7, 0.1, 0.6])
    labels = np.asarray([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    domains = ["q90", "q90", "q90", "q50", "q50", None]
    result = figures(raw, raw, labels, domains, balanced=0.5)
    assert result["fpr_by_domain"] == {
        "q50": {"real_items": 2, "false_positive_rate": 0.5},
        "q90": {"real_items": 1, "false_positive_rate": 0.0},
    }
    assert result["roc_auc"] == 1.0 and result["tpr_at_fpr_1pct"] == 1.0
    assert result["brier"] == pytest.approx(np.mean((raw - labels) ** 2), abs=1e-6)


def test_a_decision_uses_the_calibration_or_refuses_a_point_it_does_not_have() -> None:
    stored = {
        "calibration": {
            "method": "platt",
            "params": {"a": 2.0, "b": 0.5},
            "thresholds": {"balanced": 0.5, "high_precision": 0.9, "high_recall": 0.2},
        }
    }
    decision = decision_for("m", stored, 0.5, "high_precision", "balanced")
    assert decision.threshold == 0.9 and decision.calibrated
    assert decision.probability(0.6) == pytest.approx(1 / (1 + np.exp(-(2 * np.log(1.5) + 0.5))))
    assert decision.block() == {"name": "high_precision", "threshold": 0.9, "source": "calibration"}
    assert decision_for("m", stored, 0.5, None, "high_recall").threshold == 0.2
    plain = decision_for("m", {}, 0.7, None, "balanced")
    assert (plain.threshold, plain.calibrated, plain.probability(0.6)) == (0.7, False, 0.6)
    assert plain.block() == {"name": "catalog", "threshold": 0.7, "source": "catalog"}
    with pytest.raises(InvalidInput) as refused:
        decision_for("m", {}, 0.7, "high_recall", "balanced")
    assert refused.value.code == "operating_point_unavailable"
