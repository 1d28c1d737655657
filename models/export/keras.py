"""Keras CNN image classifiers (``.h5`` / ``.keras``, sigmoid or softmax head) -> ONNX via tf2onnx."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from models.catalog import CatalogEntry, ImageInputSpec
from models.export.source import SourceInfo

log = logging.getLogger(__name__)

OPSET = 17


class KerasImageSource:
    def __init__(self, entry: CatalogEntry, *, path: Path, fake_index: int | None = None) -> None:
        import keras
        import tensorflow as tf

        self._tf = tf
        self.model = keras.models.load_model(path, compile=False)
        shape = self.model.input_shape
        if len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"{path.name}: expected an NHWC RGB image input, got {shape}")
        self._channels = int(shape[-1])
        height, width = int(shape[1] or entry.input.size[0]), int(shape[2] or entry.input.size[1])
        units = int(self.model.output_shape[-1])
        if units not in (1, 2):
            raise ValueError(f"{path.name}: expected a 1-unit sigmoid or 2-unit softmax head, got {units}")
        spec = ImageInputSpec(**{**entry.input.__dict__, "size": (height, width), "layout": "NHWC"})
        self.info = SourceInfo(
            model_id=entry.id,
            modality=entry.modality,
            source=f"file:{path.name}",
            architecture=f"Keras:{type(self.model).__name__}",
            weights="pretrained",
            labels=list(entry.labels),
            fake_index=entry.fake_index if fake_index is None else fake_index,
            output="probabilities",
            threshold=entry.threshold,
            input=spec,
            license=entry.license,
            versions={"tensorflow": tf.__version__, "keras": keras.__version__},
        )

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(batch, training=False))

    def export_onnx(self, path: Path) -> None:
        import tf2onnx

        height, width = self.info.input.size
        signature = (
            self._tf.TensorSpec((None, height, width, self._channels), self._tf.float32, name="pixel_values"),
        )
        tf2onnx.convert.from_keras(self.model, input_signature=signature, opset=OPSET, output_path=str(path))
        self.info.versions["tf2onnx"] = tf2onnx.__version__
