"""Read exported models from the BentoML model store (``bentos/``).

Run-time side: imports bentoml only. Each stored model is one ONNX file plus the metadata that
export wrote beside it (input spec, label map, threshold, precision, weights, parity figures).
The metadata, not the catalog, is what serving trusts: it describes the file actually loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
from bentoml.exceptions import NotFound

from models.catalog import AudioInputSpec, ImageInputSpec, SequenceInputSpec, TextInputSpec
from models.postprocess import fake_probabilities

ONNX_FILE = "model.onnx"


def store_home() -> Path:
    """The BENTOML_HOME in force (the project's ``bentos/`` unless the environment names another):
    where models are stored and read."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.bentoml_home.get())


@dataclass(frozen=True)
class StoredModel:
    tag: str
    path: Path
    metadata: dict[str, Any]
    created_at: str

    @property
    def model_id(self) -> str:
        return str(self.metadata["model_id"])

    @property
    def version(self) -> str:
        return self.tag.split(":", 1)[1]

    @property
    def precision(self) -> str:
        return str(self.metadata["precision"])

    @property
    def pixel_spec(self) -> ImageInputSpec | None:
        """The input spec of a model fed pictures (image models, video encoders), else None: what
        its session needs to take uint8 pixels (``models.runtime.OnnxModel``)."""
        return self.input_spec if self.modality in ("image", "video-encoder") else None

    @property
    def rows_alone(self) -> bool:
        """Whether a batch must run one row at a time for each row's score to be independent of
        its batch-mates (``models.runtime.OnnxModel``): every INT8 export."""
        return self.precision == "int8"

    @property
    def weights(self) -> str:
        return str(self.metadata["weights"])

    @property
    def threshold(self) -> float:
        return float(self.metadata["threshold"])

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def modality(self) -> str:
        return str(self.metadata["modality"])

    @property
    def input_spec(self) -> ImageInputSpec:
        """The image input spec (image models and video encoders)."""
        if self.modality == "audio":
            raise TypeError(f"{self.tag} is an audio model: use audio_spec")
        if self.modality == "video-head":
            raise TypeError(f"{self.tag} is a video head: use sequence_spec")
        if self.modality == "text":
            raise TypeError(f"{self.tag} is a text model: use text_spec")
        return ImageInputSpec.from_dict(self.metadata["input"])

    @property
    def sequence_spec(self) -> SequenceInputSpec:
        """Window length, stride and feature width of a video head (stored under "input")."""
        if self.modality != "video-head":
            raise TypeError(f"{self.tag} is a {self.modality} model, not a video head")
        return SequenceInputSpec.from_dict(self.metadata["input"])

    @property
    def text_spec(self) -> TextInputSpec:
        """Windowing and special-token ids of a text model (stored under "input")."""
        if self.modality != "text":
            raise TypeError(f"{self.tag} is a {self.modality} model, not a text one")
        return TextInputSpec.from_dict(self.metadata["input"])

    @property
    def audio_spec(self) -> AudioInputSpec:
        """Sample rate, windowing and normalization of an audio model (stored under "input")."""
        if self.modality != "audio":
            raise TypeError(f"{self.tag} is a {self.modality} model, not an audio one")
        return AudioInputSpec.from_dict(self.metadata["input"])

    def fake_probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """(N,) probability that each row is fake, from this model's raw outputs, by the output
        kind and fake index its export stored."""
        return fake_probabilities(outputs, self.metadata["output"], int(self.metadata["fake_index"]))

    def summary(self) -> dict[str, Any]:
        """The ``model`` of a detection result: which export answered, and with what weights."""
        return {
            "id": self.model_id,
            "version": self.version,
            "precision": self.precision,
            "weights": self.weights,
        }

    def describe(self) -> dict[str, Any]:
        """The public description used by /v1/models, /health/ready and every result."""
        return {
            "id": self.model_id,
            "modality": self.metadata["modality"],
            "version": self.version,
            "precision": self.precision,
            "weights": self.weights,
            "threshold": self.threshold,
            "architecture": self.metadata.get("architecture"),
            "source": self.metadata.get("source"),
            "labels": list(self.metadata.get("labels", [])),
            "fake_index": self.metadata.get("fake_index"),
            "parity_max_abs_diff": self.metadata.get("parity_max_abs_diff"),
            # INT8 exports: agreement with fp32 on the probe set, measured as served.
            **{
                key: self.metadata.get(key)
                for key in (
                    "int8_agreement",
                    "int8_max_probability_diff",
                    "int8_mean_probability_diff",
                    "int8_scheme",
                )
            },
            "sha256": self.metadata.get("sha256"),
            # python -m models calibrate: the map, the operating points' thresholds, the figures.
            "calibration": self.metadata.get("calibration"),
            # A video head names the exact encoder export its features must come from.
            **({"encoder": self.metadata.get("encoder")} if self.modality == "video-head" else {}),
            **({"head": self.metadata.get("head")} if self.modality == "video-encoder" else {}),
        }


def _stored(model: Any) -> StoredModel:
    info = model.info
    return StoredModel(
        tag=str(model.tag),
        path=Path(model.path),
        metadata=dict(info.metadata),
        created_at=info.creation_time.isoformat(),
    )


def list_stored(model_id: str | None = None) -> list[StoredModel]:
    """Every exported Verity model in the store, newest first."""
    try:
        models = bentoml.models.list(model_id) if model_id else bentoml.models.list()
    except NotFound:  # no model of that name yet (a fresh store)
        return []
    found = []
    for model in models:
        if "model_id" in model.info.metadata:
            found.append(_stored(model))
    return sorted(found, key=lambda m: m.created_at, reverse=True)


def find_stored(model_id: str, precision: str) -> StoredModel | None:
    for stored in list_stored(model_id):
        if stored.precision == precision:
            return stored
    return None


def get_stored(tag: str) -> StoredModel:
    return _stored(bentoml.models.get(tag))


def find_video_pair(head_id: str, precision: str) -> tuple[StoredModel, StoredModel] | None:
    """``(encoder, head)``: the newest stored head at ``precision`` and the encoder export it was
    verified with (its metadata names the tag; a head run on another encoder's features would
    give meaningless verdicts). None when either is missing."""
    head = find_stored(head_id, precision)
    if head is None or head.modality != "video-head":
        return None
    try:
        encoder = get_stored(str(head.metadata["encoder"]["tag"]))
    except (KeyError, TypeError, NotFound):
        return None
    return encoder, head
