"""Optional INT8: ONNX Runtime dynamic quantization (weights int8, activations quantized at run time)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

log = logging.getLogger(__name__)

# Where ONNX Runtime's quantizer lives, as it appears in its log records' paths.
_QUANTIZER_PATH = f"{os.sep}onnxruntime{os.sep}quantization{os.sep}"
_QUANTIZER_LOGGER = "onnxruntime.quantization"

# How every INT8 export is made and served, stored with it: dynamic quantization, each row run
# alone (models/runtime.py) so that no score depends on its batch-mates. The agreement figures
# stored beside it are measured the same way, on the export's probe set.
INT8_SCHEME = {"int8_scheme": "dynamic, rows run alone"}


class _QuantizerChatter(logging.Filter):
    """Drops the quantizer's records below WARNING, whoever logs them.

    ``quantize_dynamic`` logs through the ROOT logger (module-level ``logging.info``: "Quantization
    parameters for tensor ... not specified", one line per tensor it quantizes, and the like), so
    no named logger's level can silence it. A filter on the root logger sees exactly those records (a
    logger's filters apply to what is logged through it, not to what propagates to it), so our
    own INFO logs, all on named loggers, still get through.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or _QUANTIZER_PATH not in record.pathname


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantizer's INFO/DEBUG chatter off while quantizing (its warnings still show)."""
    root, named = logging.getLogger(), logging.getLogger(_QUANTIZER_LOGGER)
    chatter = _QuantizerChatter()
    level = named.level
    root.addFilter(chatter)
    # Its modules with loggers of their own (onnxruntime.quantization.*) propagate to the root's
    # handlers past the root's filters: their level is what stops them.
    named.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        named.setLevel(level)
        root.removeFilter(chatter)


def quantize_int8(
    fp32_path: Path, int8_path: Path, *, op_types: list[str] | None = None, fused_ops: bool = False
) -> Path:
    """Quantize MatMul/Gemm (and, unless ``op_types`` narrows it, the other supported ops).

    wav2vec2-style models must pass ``op_types=["MatMul", "Gemm"]``: quantizing their
    weight-normed convolutions breaks them. ``fused_ops``: the graph holds ONNX Runtime's fused
    kernels (com.microsoft domain), whose outputs ONNX shape inference cannot type; they are float.
    """
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT} if fused_ops else {}
    with _quiet_quantizer():
        quantize_dynamic(
            str(fp32_path),
            str(int8_path),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=op_types,
            per_channel=False,
            extra_options=extra,
        )
    log.info("quantized %s -> %s", fp32_path.name, int8_path.name)
    return int8_path
