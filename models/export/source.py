"""What every export source provides to the export pipeline."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from models.catalog import AudioInputSpec, ImageInputSpec, TextInputSpec

# The base seed of every dev build (random weights from the catalog's config); see dev_seed.
DEV_SEED = 20261121


def dev_seed(model_id: str) -> int:
    """The seed of ``model_id``'s dev weights: the base seed mixed with a stable hash of the id.

    Two catalog ids with one architecture (vit-dima806, vit-deepfake-v2) built from one seed had
    byte-identical dev exports, so comparing them compared a model with itself. crc32 is stable
    across processes and Python versions (``hash()`` is salted per process), so each id's weights,
    hence its export's bytes and store tag, stay reproducible. Below 2**32: numpy's legacy seeding
    (``keras.utils.set_random_seed``) refuses larger seeds.
    """
    return DEV_SEED ^ zlib.crc32(model_id.encode("utf-8"))


@dataclass
class SourceInfo:
    model_id: str
    modality: str
    source: str
    architecture: str
    weights: Literal["pretrained", "dev"]
    labels: list[str]
    fake_index: int
    output: Literal["logits", "probabilities"]
    threshold: float
    input: ImageInputSpec | AudioInputSpec | TextInputSpec
    license: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "modality": self.modality,
            "source": self.source,
            "architecture": self.architecture,
            "weights": self.weights,
            "labels": list(self.labels),
            "fake_index": self.fake_index,
            "output": self.output,
            "threshold": self.threshold,
            "input": self.input.to_dict(),
            "license": self.license,
            "export_versions": {k: str(v) for k, v in self.versions.items()},
        }


class ExportSource(Protocol):
    info: SourceInfo

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Raw outputs of the source framework on a preprocessed batch."""

    def export_onnx(self, path: Path) -> None:
        """Write an fp32 ONNX graph with a dynamic batch axis (audio: and a dynamic length axis)."""
