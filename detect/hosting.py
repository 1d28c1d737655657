"""Which stored models the settings serve, and the in-process engine built from them.

Both hostings start from ``served_models(settings)``: ``service.py`` declares one BentoML model
service per entry and wraps each dependency in a ``BentoModelClient``; ``build_inprocess_engine``
opens one ONNX Runtime session per entry in this process (``api.app.create_inprocess_app`` for
the AWS Lambda handler, ``python -m jobs.worker``, ``python -m batch``). A missing model stops
start-up with the command that exports it.

Every model service of ``bentoml serve`` imports this module for ``served_models`` alone, so the
engine's pieces (the pipelines, the model clients, the face detector and OpenCV) are imported
where an engine is built, not here: a model worker starts ~0.3 s sooner without them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from config import Settings
from config.startup import StartupError
from models.store import StoredModel, find_stored, find_video_pair, store_home

if TYPE_CHECKING:
    from detect.engine import Engine
    from detect.model_clients import ModelClient
    from faces.mtcnn import FaceDetector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModels:
    image: dict[str, StoredModel]
    audio: dict[str, StoredModel]
    video: dict[str, StoredModel] = field(default_factory=dict)  # {"encoder": ..., "head": ...} or {}
    text: dict[str, StoredModel] = field(default_factory=dict)
    face: StoredModel | None = None
    # Why each model is served at its precision (model id -> one sentence), for the log and /v1/models.
    precision_reasons: dict[str, str] = field(default_factory=dict)


def int8_verdict(int8: StoredModel | None, settings: Settings) -> tuple[bool, str]:
    """Whether ``precision=auto`` serves this INT8 export, and why, from the agreement with fp32
    stored beside it (measured on the export's probe set, rows run alone as served)."""
    if int8 is None:
        return False, "fp32: no int8 export is stored (exported with --no-int8?)"
    agreement = int8.metadata.get("int8_agreement")
    mean_diff = int8.metadata.get("int8_mean_probability_diff")
    if agreement is None or mean_diff is None:
        return False, f"fp32: {int8.tag} predates the stored agreement figures; export it again"
    bars = (
        f"verdict agreement {agreement:.1%} (bar {settings.int8_min_verdict_agreement:.0%}), "
        f"mean |p_int8 - p_fp32| {mean_diff:.2g} (bar {settings.int8_max_mean_probability_diff:g})"
    )
    if (
        agreement >= settings.int8_min_verdict_agreement
        and mean_diff <= settings.int8_max_mean_probability_diff
    ):
        return True, f"int8: {bars}"
    return False, f"fp32: int8 misses the bar, {bars}"


def _stored_or_fail(model_id: str, precision: str) -> StoredModel:
    stored = find_stored(model_id, precision)
    if stored is None:
        raise StartupError(
            f"model {model_id!r} ({precision}) is not in the model store at {store_home()}; "
            "run `make models` first"
        )
    return stored


def _precision_for(model_id: str, settings: Settings, int8: StoredModel | None) -> tuple[str, str]:
    """The precision ``model_id`` is served at, and why."""
    if settings.precision != "auto":
        return settings.precision, f"{settings.precision}: VERITY_PRECISION={settings.precision}"
    chosen, reason = int8_verdict(int8, settings)
    return ("int8" if chosen else "fp32"), reason


def served_models(settings: Settings) -> ServedModels:
    """The stored export of every model the settings serve, at the precision each is served at."""
    reasons: dict[str, str] = {}

    def one(model_id: str) -> StoredModel:
        precision, reasons[model_id] = _precision_for(model_id, settings, find_stored(model_id, "int8"))
        return _stored_or_fail(model_id, precision)

    video: dict[str, StoredModel] = {}
    if settings.video_model:
        # The head's figures are the pipeline's (int8 encoder -> int8 head against the fp32 pair).
        int8_pair = find_video_pair(settings.video_model, "int8")
        precision, reason = _precision_for(
            settings.video_model, settings, int8_pair[1] if int8_pair else None
        )
        pair = int8_pair if precision == "int8" else find_video_pair(settings.video_model, precision)
        if pair is None:
            raise StartupError(
                f"video model {settings.video_model!r} ({precision}: head and the encoder it was "
                "verified with) is not in the model store; run `make models` first"
            )
        video = {"encoder": pair[0], "head": pair[1]}
        reasons[pair[0].model_id] = reasons[pair[1].model_id] = reason
    served = ServedModels(
        image={mid: one(mid) for mid in settings.served_image_models},
        audio={mid: one(mid) for mid in settings.served_audio_models},
        video=video,
        text={mid: one(mid) for mid in settings.served_text_models},
        # The face detector has one export, fp32 (models/export/mtcnn.py says why).
        face=_stored_or_fail(settings.face_model, "fp32") if settings.face_model else None,
        precision_reasons=reasons,
    )
    for model_id, reason in reasons.items():
        log.info("%s served at %s", model_id, reason)
    return served


def build_engine(
    settings: Settings, models: ServedModels, client_for: Callable[[StoredModel], ModelClient]
) -> Engine:
    """The one composition of the engine: every served model with the client ``client_for``
    gives it (how it is hosted), the face detector in this process."""
    from detect.engine import Engine, ServedModel, VideoModels

    def served(stored: StoredModel) -> ServedModel:
        reason = models.precision_reasons.get(stored.model_id, "")
        return ServedModel(stored=stored, client=client_for(stored), precision_reason=reason)

    video = (
        VideoModels(encoder=served(models.video["encoder"]), head=served(models.video["head"]))
        if models.video
        else None
    )
    return Engine(
        settings,
        {mid: served(s) for mid, s in models.image.items()},
        audio_models={mid: served(s) for mid, s in models.audio.items()},
        text_models={mid: served(s) for mid, s in models.text.items()},
        video=video,
        face_detector=face_detector(settings, models.face) if models.face else None,
        face_stored=models.face,
    )


def build_inprocess_engine(settings: Settings, models: ServedModels | None = None) -> Engine:
    """Every served model as an ONNX Runtime session of this process, opened once; the rows of
    concurrent callers share its runs (``InProcessModelClient``)."""
    from detect.model_clients import InProcessModelClient

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
            rows_alone=stored.rows_alone,
            pixels=stored.pixel_spec,
        )

    return build_engine(settings, models, in_process)


def face_detector(settings: Settings, stored: StoredModel) -> FaceDetector:
    from faces.mtcnn import FaceDetector

    return FaceDetector(
        stored.path,
        intra_op_threads=settings.intra_op_threads,
        max_side=settings.face_max_side,
        min_face_size=settings.face_min_size,
    )
