"""Compare an ONNX export with its source framework, and INT8 with FP32."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from errors import ParityError
from models.postprocess import fake_probabilities
from models.runtime import run_session

# Largest allowed |onnx - source| on raw outputs. fp32 exports of the catalog architectures
# land near 1e-5 on this machine; 1e-3 leaves room for op-fusion differences, not for bugs.
FP32_TOLERANCE = 1e-3


def run_onnx(path: Path, batch: np.ndarray, *, rows_alone: bool = False) -> np.ndarray:
    """``batch`` through the graph at ``path``; ``rows_alone`` as served INT8 runs it, one row at
    a time (``models.runtime.OnnxModel``), so agreement figures describe what users get."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return run_session(session, batch, rows_alone=rows_alone)


def check_parity(
    model_id: str, onnx_out: np.ndarray, source_out: np.ndarray, tolerance: float = FP32_TOLERANCE
) -> float:
    """Return the max abs difference, or raise ParityError naming the worst element."""
    if onnx_out.shape != source_out.shape:
        raise ParityError(model_id, float("inf"), tolerance, f"shape {onnx_out.shape} vs {source_out.shape}")
    diff = np.abs(onnx_out.astype(np.float64) - source_out.astype(np.float64))
    # A NaN on either side is the worst difference there is: count it as inf, so the error
    # names the NaN's index (nanargmax skipped it, and raised ValueError when all were NaN).
    diff = np.where(np.isnan(diff), np.inf, diff)
    worst = float(diff.max()) if diff.size else 0.0
    if not np.isfinite(worst) or worst > tolerance:
        where = np.unravel_index(int(np.argmax(diff)), diff.shape)
        raise ParityError(model_id, worst, tolerance, f"output index {tuple(int(i) for i in where)}")
    return worst


@dataclass(frozen=True)
class Agreement:
    verdict_agreement: float  # share of probe items with the same thresholded verdict
    max_probability_diff: float
    mean_probability_diff: float

    def metadata(self, prefix: str = "int8") -> dict[str, float]:
        """The figures as stored with an export and shown by /v1/models."""
        return {
            f"{prefix}_agreement": self.verdict_agreement,
            f"{prefix}_max_probability_diff": self.max_probability_diff,
            f"{prefix}_mean_probability_diff": self.mean_probability_diff,
        }


def int8_agreement(
    fp32_out: np.ndarray,
    int8_out: np.ndarray,
    *,
    output_kind: str,
    fake_index: int,
    threshold: float,
) -> Agreement:
    p32 = fake_probabilities(fp32_out, output_kind, fake_index)  # type: ignore[arg-type]
    p8 = fake_probabilities(int8_out, output_kind, fake_index)  # type: ignore[arg-type]
    same = (p32 >= threshold) == (p8 >= threshold)
    diff = np.abs(p32 - p8)
    return Agreement(float(same.mean()), float(diff.max()), float(diff.mean()))
