"""Calibrated probabilities and operating points, as served (numpy only).

``python -m models calibrate MODEL --data labeled.jsonl`` (``models/calibrate.py``, fitting with
scikit-learn) stores a ``calibration`` block in the model's metadata: the map from the model's raw
score to a calibrated probability, a threshold per operating point, and the reliability figures
measured on the data. Serving reads that block here:

* ``fake_probability`` is the calibrated probability when a map exists (``calibrated: true``), the
  raw score beside it as ``raw_score``;
* the threshold is the chosen operating point's: ``balanced`` (the most TPR − FPR on the data),
  ``high_precision`` (the lowest threshold with FPR ≤ 1%), ``high_recall`` (the highest threshold
  with TPR ≥ 95%); ``VERITY_OPERATING_POINT`` picks the default, ``?operating_point=`` a request's;
* a model without calibration keeps its catalog threshold (operating point ``catalog``), and a
  request that names another operating point for it is refused (422 ``operating_point_unavailable``)
  rather than answered against a threshold it did not ask for.

The maps are monotone (temperature / Platt scaling: a sigmoid of the score's logit; isotonic: a
piecewise-linear step function), so they may be applied to the parts of a result too (audio
windows, seconds of video, faces) and keep their order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from errors import InvalidInput

OperatingPoint = Literal["balanced", "high_precision", "high_recall"]
OPERATING_POINTS: tuple[OperatingPoint, ...] = ("balanced", "high_precision", "high_recall")
Method = Literal["temperature", "platt", "isotonic"]
_EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(clipped / (1 - clipped))


@dataclass(frozen=True)
class Calibration:
    """A stored calibration map and its operating points."""

    method: Method
    params: dict[str, Any]  # temperature: {"a"}; platt: {"a", "b"}; isotonic: {"x", "y"}
    thresholds: dict[str, float]  # operating point -> threshold on the calibrated probability

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> Calibration | None:
        block = metadata.get("calibration")
        if not block:
            return None
        return cls(method=block["method"], params=dict(block["params"]), thresholds=dict(block["thresholds"]))

    def apply(self, raw: np.ndarray | float) -> np.ndarray:
        """Calibrated probabilities for raw scores (any shape)."""
        values = np.asarray(raw, dtype=np.float64)
        if self.method == "isotonic":
            calibrated = np.interp(values, self.params["x"], self.params["y"])
        else:
            a = float(self.params["a"])
            b = float(self.params.get("b", 0.0))
            calibrated = 1.0 / (1.0 + np.exp(-(a * logit(values) + b)))
        return np.clip(calibrated, 0.0, 1.0)


@dataclass(frozen=True)
class Decision:
    """How a model's raw scores become a result's probability and threshold."""

    calibration: Calibration | None
    threshold: float
    operating_point: str  # a name of OPERATING_POINTS, or "catalog"

    def probability(self, raw: float) -> float:
        return raw if self.calibration is None else float(self.calibration.apply(raw))

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        return np.asarray(raw, dtype=np.float64) if self.calibration is None else self.calibration.apply(raw)

    @property
    def calibrated(self) -> bool:
        return self.calibration is not None

    def block(self) -> dict[str, Any]:
        """The result's ``operating_point``."""
        return {
            "name": self.operating_point,
            "threshold": self.threshold,
            "source": "calibration" if self.calibrated else "catalog",
        }


def decision_for(
    model_id: str, metadata: dict[str, Any], catalog_threshold: float, requested: str | None, default: str
) -> Decision:
    """The decision rule for one model: its calibration at the ``requested`` operating point (or
    ``default``); an uncalibrated model keeps ``catalog_threshold`` and refuses a named point."""
    calibration = Calibration.from_metadata(metadata)
    if calibration is None:
        if requested is not None:
            raise InvalidInput(
                f"model {model_id} has no calibration, so no operating point {requested!r}: it decides at "
                f"its catalog threshold {catalog_threshold} (calibrate it: python -m models calibrate)",
                code="operating_point_unavailable",
            )
        return Decision(None, catalog_threshold, "catalog")
    name = requested or default
    return Decision(calibration, float(calibration.thresholds[name]), name)
