"""Optional INT8: ONNX Runtime dynamic quantization (weights int8, activations quantized at run time)."""

from __future__ import annotations

import logging
from pathlib import Path

from onnxruntime.quantization import QuantType, quantize_dynamic

log = logging.getLogger(__name__)


def quantize_int8(fp32_path: Path, int8_path: Path, *, op_types: list[str] | None = None) -> Path:
    """Quantize MatMul/Gemm (and, unless ``op_types`` narrows it, the other supported ops).

    wav2vec2-style models must pass ``op_types=["MatMul", "Gemm"]``: quantizing their
    weight-normed convolutions breaks them (SPEC §3).
    """
    quantize_dynamic(
        str(fp32_path),
        str(int8_path),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=op_types,
        per_channel=False,
    )
    log.info("quantized %s -> %s", fp32_path.name, int8_path.name)
    return int8_path
