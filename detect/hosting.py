"""Which stored models the settings serve, and the in-process engine built from them.

Both hostings start from ``served_models(settings)``: ``service.py`` declares one BentoML model
service per entry and wraps each dependency in a ``BentoModelClient``; ``build_inprocess_engine``
opens one ONNX Runtime session per entry in this process (``api.app.create_inprocess_app`` for
the AWS Lambda handler, ``python -m jobs.worker``, ``python -m batch``). A missing model stops
start-up with the command that exports it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from config import Settings
from config.startup import StartupError
from detect.engine import Engine, ServedModel, VideoModels
from detect.model_clients import InProcessModelClient, ModelClient
from faces.mtcnn import FaceDetector
from models.store import StoredModel, find_stored, find_video_pair, store_home

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModels:
    image: dict[str, StoredModel]
    audio: dict[str, StoredModel]
    video: dict[str, StoredModel] = field(default_factory=dict)  # {"encoder": ..., "head": ...} or {}
    face: StoredModel | None = None


def _stored_or_fail(model_id: str, precision: str) -> StoredModel:
    stored = find_stored(model_id, precision)
    if stored is None:
        raise StartupError(
            f"model {model_id!r} ({precision}) is not in the model store at {store_home()}; "
            "run `make models` first"
        )
    return stored


def served_models(settings: Settings) -> ServedModels:
    """The stored export of every model the settings serve, at the served precision."""
    video: dict[str, StoredModel] = {}
    if settings.video_model:
        pair = find_video_pair(settings.video_model, settings.precision)
        if pair is None:
            raise StartupError(
                f"video model {settings.video_model!r} ({settings.precision}: head and the encoder it was "
                "verified with) is not in the model store; run `make models` first"
            )
        video = {"encoder": pair[0], "head": pair[1]}
    return ServedModels(
        image={mid: _stored_or_fail(mid, settings.precision) for mid in settings.served_image_models},
        audio={mid: _stored_or_fail(mid, settings.precision) for mid in settings.served_audio_models},
        video=video,
        # The face detector has one export, fp32 (models/export/mtcnn.py says why).
        face=_stored_or_fail(settings.face_model, "fp32") if settings.face_model else None,
    )


def build_engine(
    settings: Settings, models: ServedModels, client_for: Callable[[StoredModel], ModelClient]
) -> Engine:
    """The one composition of the engine: every served model with the client ``client_for``
    gives it (how it is hosted), the face detector in this process."""

    def served(stored: StoredModel) -> ServedModel:
        return ServedModel(stored=stored, client=client_for(stored))

    video = (
        VideoModels(encoder=served(models.video["encoder"]), head=served(models.video["head"]))
        if models.video
        else None
    )
    return Engine(
        settings,
        {mid: served(s) for mid, s in models.image.items()},
        audio_models={mid: served(s) for mid, s in models.audio.items()},
        video=video,
        face_detector=face_detector(settings, models.face) if models.face else None,
        face_stored=models.face,
    )


def build_inprocess_engine(settings: Settings, models: ServedModels | None = None) -> Engine:
    """Every served model as an ONNX Runtime session of this process, opened once; the rows of
    concurrent callers share its runs (``InProcessModelClient``)."""
    models = models or served_models(settings)
    audio = {stored.tag for stored in models.audio.values()}

    def in_process(stored: StoredModel) -> ModelClient:
        return InProcessModelClient(
            stored.model_id,
            stored.onnx_path,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.ort_inter_op_threads,
            # The bounds of the served model services' batches: audio windows are large.
            max_batch_rows=settings.audio_batch_max_size if stored.tag in audio else settings.batch_max_size,
        )

    return build_engine(settings, models, in_process)


def face_detector(settings: Settings, stored: StoredModel) -> FaceDetector:
    return FaceDetector(
        stored.path,
        intra_op_threads=settings.intra_op_threads,
        max_side=settings.face_max_side,
        min_face_size=settings.face_min_size,
    )
