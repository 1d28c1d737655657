"""An ONNX file exported elsewhere: stored with a catalog entry's input spec and labels.

Its "source framework" is the file itself, so parity is checked against the file as given (it
catches a file that ONNX Runtime cannot run or whose batch axis is not dynamic); INT8 works as
for any export.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.catalog import CatalogEntry, ImageInputSpec
from models.export.source import SourceInfo


class OnnxFileSource:
    def __init__(
        self, model_id: str, *, path: Path, like: CatalogEntry, fake_index: int | None = None
    ) -> None:
        self.path = path
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        shape = self.session.get_inputs()[0].shape
        spec = like.input
        if len(shape) == 4:
            height, width = (shape[2], shape[3]) if spec.layout == "NCHW" else (shape[1], shape[2])
            if isinstance(height, int) and isinstance(width, int):
                spec = ImageInputSpec(**{**spec.__dict__, "size": (height, width)})
        self.info = SourceInfo(
            model_id=model_id,
            modality=like.modality,
            source=f"onnx:{path.name}",
            architecture=f"ONNX (preprocessing like {like.id})",
            weights="pretrained",
            labels=list(like.labels),
            fake_index=like.fake_index if fake_index is None else fake_index,
            output=like.output,
            threshold=like.threshold,
            input=spec,
            license="the file owner's",
        )

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.session.get_inputs()[0].name: batch})[0]

    def export_onnx(self, path: Path) -> None:
        shutil.copyfile(self.path, path)
