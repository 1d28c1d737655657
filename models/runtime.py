"""ONNX Runtime sessions: the only thing a model service holds."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)


class OnnxModel:
    """One ONNX Runtime session with a single input and the first output returned."""

    def __init__(self, path: Path, *, intra_op_threads: int, inter_op_threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        log.info(
            "onnx session ready",
            extra={"model_path": str(path), "intra_op_threads": intra_op_threads},
        )

    def run(self, batch: np.ndarray) -> np.ndarray:
        feed = {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
        return self.session.run(None, feed)[0]
