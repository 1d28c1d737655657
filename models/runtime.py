"""ONNX Runtime sessions: the only thing a model service holds."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.catalog import ImageInputSpec
from models.preprocess import normalize_pixels

log = logging.getLogger(__name__)


def _feed(session: ort.InferenceSession, batch: np.ndarray) -> dict[str, np.ndarray]:
    """The session's inputs for ``batch``: float32 for pictures, sounds and features; int64 token
    ids for a text model, with its all-ones ``attention_mask`` (text windows are never padded)."""
    inputs = session.get_inputs()
    if np.issubdtype(batch.dtype, np.integer):
        ids = np.ascontiguousarray(batch, dtype=np.int64)
        feed = {inputs[0].name: ids}
        feed.update({extra.name: np.ones_like(ids) for extra in inputs[1:]})
        return feed
    return {inputs[0].name: np.ascontiguousarray(batch, dtype=np.float32)}


def run_session(session: ort.InferenceSession, batch: np.ndarray, *, rows_alone: bool = False) -> np.ndarray:
    """``batch`` through the session (``_feed``), its first output; ``rows_alone`` one row at a
    time (``OnnxModel`` says why). Export's checks run INT8 graphs through here too, so the
    agreement figures they store are measured exactly as serving runs the graph."""
    if rows_alone and len(batch) > 1:
        return np.concatenate(
            [session.run(None, _feed(session, batch[i : i + 1]))[0] for i in range(len(batch))]
        )
    return session.run(None, _feed(session, batch))[0]


class OnnxModel:
    """One ONNX Runtime session with a single input and the first output returned.

    ``rows_alone`` runs a batch one row at a time. INT8 graphs need it: dynamic quantization
    picks each activation's scale from the whole batch, so a row's score would move (up to 1e-2)
    with whatever other requests' rows it was batched with. Run alone, a row gets the same
    answer in any company, and on a 2-core CPU a batch is no faster per row anyway.

    ``pixels``: a picture model's input spec. uint8 batches (``models.preprocess.model_pixels``,
    what the pipelines send: a quarter of the bytes between processes) are normalized here;
    float32 batches are taken as the model's input already.
    """

    def __init__(
        self,
        path: Path,
        *,
        intra_op_threads: int,
        inter_op_threads: int = 1,
        rows_alone: bool = False,
        pixels: ImageInputSpec | None = None,
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No spin-waiting between runs. On a 2-core machine with spinning on, a session's speed
        # depended on the session: of 30 INT8 ViT-base sessions opened in turn, about half ran
        # a picture in 61-66 ms and the rest in 90-96 ms, each keeping its speed; with spinning off
        # every one ran in 66-68 ms (fp32 185 ms either way). A spinning thread also takes the
        # core the API process and the other model services need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.rows_alone = rows_alone
        self.pixels = pixels
        log.info(
            "onnx session ready",
            extra={"model_path": str(path), "intra_op_threads": intra_op_threads, "rows_alone": rows_alone},
        )

    def run(self, batch: np.ndarray) -> np.ndarray:
        if batch.dtype == np.uint8:
            if self.pixels is None:
                raise TypeError("uint8 input for a model that takes no pictures")
            batch = normalize_pixels(batch, self.pixels)
        return run_session(self.session, batch, rows_alone=self.rows_alone)
