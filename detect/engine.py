"""The models the API service can call, and how to find one by catalog id."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import numpy as np

from config import Settings
from detect.admission import DecodePool, WorkGate
from detect.model_clients import ModelClient
from errors import InvalidInput, NotFound, ServiceUnavailable
from media import sandbox
from models.calibration import Decision, decision_for
from models.catalog import AudioInputSpec, SequenceInputSpec, load_catalog
from models.store import StoredModel
from provenance.manifests import ProvenanceReader, not_checked
from provenance.signing import signer_from_settings

if TYPE_CHECKING:
    from models.text_tokens import TextTokenizer

log = logging.getLogger(__name__)

DEV_WEIGHTS_MESSAGE = (
    "model {id} runs with randomly initialised development weights (weights=dev): "
    "the verdict is NOT meaningful"
)


@dataclass(frozen=True)
class ServedModel:
    """A stored model (what it is: metadata, version, weights) and how to call it."""

    stored: StoredModel
    client: ModelClient
    precision_reason: str = ""  # why this precision (detect.hosting.served_models)

    @property
    def warnings(self) -> list[dict[str, str]]:
        if self.stored.weights == "dev":
            return [{"code": "dev_weights", "message": DEV_WEIGHTS_MESSAGE.format(id=self.stored.model_id)}]
        return []


@dataclass(frozen=True)
class VideoModels:
    """The temporal video model: a per-crop CNN encoder and a sequence head, served apart."""

    encoder: ServedModel
    head: ServedModel

    @property
    def sequence(self) -> SequenceInputSpec:
        return self.head.stored.sequence_spec

    @property
    def served(self) -> list[ServedModel]:
        return [self.encoder, self.head]


class FaceFinder(Protocol):
    """What the API needs from a face detector (``faces.mtcnn.FaceDetector``)."""

    def detect(self, frames: list[np.ndarray]) -> list[list[Any]]: ...


def _tokenizer_of(stored: StoredModel) -> TextTokenizer:
    from models.text_tokens import TOKENIZER_FILE, TextTokenizer

    spec = stored.text_spec
    return TextTokenizer(stored.path / TOKENIZER_FILE, bos_id=spec.bos_id, eos_id=spec.eos_id)


def audio_hop_s(settings: Settings, spec: AudioInputSpec) -> float:
    """Seconds between window starts: ``VERITY_AUDIO_HOP_S`` when set, else the catalog's."""
    hop_s = settings.audio_hop_s or spec.hop_s
    if hop_s > spec.window_s:
        # Gaps between windows would leave audio unexamined.
        raise ValueError(f"VERITY_AUDIO_HOP_S={hop_s} is longer than the {spec.window_s} s window")
    return hop_s


class Engine:
    def __init__(
        self,
        settings: Settings,
        image_models: dict[str, ServedModel],
        audio_models: dict[str, ServedModel] | None = None,
        *,
        text_models: dict[str, ServedModel] | None = None,
        video: VideoModels | None = None,
        face_detector: FaceFinder | None = None,
        face_stored: StoredModel | None = None,
    ) -> None:
        self.settings = settings
        sandbox.configure(settings.decoder_memory_mb)  # every entry point builds an engine
        self.image_models = image_models
        self.audio_models = audio_models or {}
        self.text_models = text_models or {}
        # Text is tokenized here, in the API process, with each model's own tokenizer.json.
        self._tokenizers = {mid: _tokenizer_of(m.stored) for mid, m in self.text_models.items()}
        self.video = video
        self.face_detector = face_detector
        self.face_stored = face_stored  # what /health/ready and /v1/models say about it
        # One cascade at a time: its ONNX sessions already use every core, and a second one
        # would only interleave with it.
        self.face_limiter = anyio.CapacityLimiter(1)
        # Decoding on its own threads, heavy requests admitted a few at a time (detect/admission).
        self.decode_pool = DecodePool(settings.decode_threads)
        self.heavy_gate = WorkGate("heavy requests", settings.heavy_concurrency, settings.heavy_queue)
        self.default_image_model = settings.image_model
        # Results are signed where they are finished (the API, the job runner, the batch runner).
        self.signer = signer_from_settings(settings)
        if self.signer is None:
            log.warning(
                "results are NOT signed: set VERITY_SIGNING_KEY_FILE (or VERITY_JWT_SECRET) to sign them"
            )
        # Content Credentials read beside the classifier; a missing anchors file stops the start.
        self.provenance = (
            ProvenanceReader.from_file(settings.c2pa_trust_anchors) if settings.provenance else None
        )
        for served in self.audio_models.values():
            audio_hop_s(settings, served.stored.audio_spec)  # a bad VERITY_AUDIO_HOP_S fails at start
        for served in self.served.values():
            for warning in served.warnings:
                log.warning(warning["message"], extra={"model": served.stored.describe()})

    def sign(self, result: dict[str, Any]) -> dict[str, Any]:
        """``result`` signed where it is finished (the API, the job runner, the batch runner):
        last, since nothing may change in a signed result; left unsigned when this process has
        no signing key (said once at start)."""
        return self.signer.sign(result) if self.signer is not None else result

    async def provenance_of(self, media: Any, media_format: str) -> dict[str, Any] | None:
        """The media's Content Credentials (``provenance/manifests.py``), or None when reading
        them is turned off (``VERITY_PROVENANCE=false``). A failure of the reader itself is
        logged and reported as "not checked": it never fails the detection."""
        if self.provenance is None:
            return None
        try:
            return await anyio.to_thread.run_sync(self.provenance.read, media, media_format)
        except Exception:
            log.exception("could not read Content Credentials", extra={"format": media_format})
            return not_checked()

    def decision(self, served: ServedModel, operating_point: str | None) -> Decision:
        """How ``served``'s raw scores become a result's probability and threshold: its stored
        calibration at ``operating_point`` (else ``VERITY_OPERATING_POINT``), or its catalog
        threshold when it has none (``models/calibration.py``)."""
        stored = served.stored
        return decision_for(
            stored.model_id, stored.metadata, stored.threshold, operating_point, self.settings.operating_point
        )

    @property
    def served(self) -> dict[str, ServedModel]:
        video = {m.stored.model_id: m for m in self.video.served} if self.video else {}
        return {**self.image_models, **self.audio_models, **self.text_models, **video}

    def video_models(self) -> VideoModels:
        if self.video is None:
            raise ServiceUnavailable("no video model is served here", code="modality_unavailable")
        return self.video

    def image_model(self, model_id: str | None) -> ServedModel:
        return self._find(model_id or self.default_image_model, self.image_models, "image")

    def text_model(self, model_id: str | None) -> ServedModel:
        return self._named_or_first(model_id, self.text_models, "text")

    def tokenizer_for(self, served: ServedModel) -> TextTokenizer:
        return self._tokenizers[served.stored.model_id]

    def audio_model(self, model_id: str | None) -> ServedModel:
        return self._named_or_first(model_id, self.audio_models, "audio")

    def _named_or_first(
        self, model_id: str | None, served: dict[str, ServedModel], modality: str
    ) -> ServedModel:
        """``model_id`` among ``served``, or the modality's one served model when none is named."""
        if model_id is None:
            if not served:
                raise ServiceUnavailable(f"no {modality} model is served here", code="modality_unavailable")
            model_id = next(iter(served))
        return self._find(model_id, served, modality)

    @staticmethod
    def _find(model_id: str, served: dict[str, ServedModel], modality: str) -> ServedModel:
        if model_id in served:
            return served[model_id]
        catalog = load_catalog()
        if model_id in catalog and catalog[model_id].modality == modality:
            raise InvalidInput(
                f"model {model_id!r} is in the catalog but not served here; "
                f"served {modality} models: {sorted(served)}",
                code="model_not_served",
            )
        raise NotFound(f"unknown {modality} model {model_id!r}; see GET /v1/models", code="model_not_found")
