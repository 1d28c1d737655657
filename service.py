"""BentoML services: thin wiring of the parts in api/, models/ and config/.

* ``ImageDetector`` (one class per served image model): one ONNX Runtime session and one
  batchable API; adaptive batching merges pixels from concurrent requests.
* ``Verity``: the public API service. It mounts the FastAPI app from ``api.app`` and depends on
  the detectors; all request handling (decoding, validation, aggregation) lives there.

Serve with ``make serve`` (``bentoml serve service:Verity``). Models come from the BentoML store
under ``$BENTOML_HOME`` (``bentos/``), filled by ``make models``. Nothing here imports torch.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import anyio
import bentoml
import numpy as np

from api.app import create_app
from auth.accounts import Accounts
from config.startup import settings_or_exit, startup_or_exit
from detect.engine import Engine, ServedModel, VideoModels
from detect.hosting import face_detector, served_models
from detect.model_clients import BentoModelClient
from logs import configure_logging
from models.runtime import OnnxModel
from models.store import ONNX_FILE, StoredModel
from store.factory import make_store

settings = settings_or_exit()
log = logging.getLogger("service")
app = create_app(settings)


def model_service(stored: StoredModel, name: str, *, max_batch_size: int, max_latency_ms: int) -> Any:
    """A model service for one stored model: its ONNX session, one batchable API for inputs of
    one shape, and an unbatched one for the odd input that cannot share a batch (an audio clip
    shorter than one window)."""

    class ModelService:
        model = bentoml.models.BentoModel(stored.tag)

        def __init__(self) -> None:
            configure_logging(settings)
            self.session = OnnxModel(
                self.model.path_of(ONNX_FILE),
                intra_op_threads=settings.intra_op_threads,
                inter_op_threads=settings.ort_inter_op_threads,
            )
            if stored.weights == "dev":
                log.warning("%s loaded with DEV weights: verdicts are not meaningful", stored.tag)

        @bentoml.api(
            batchable=True,
            batch_dim=0,
            max_batch_size=max_batch_size,
            max_latency_ms=max_latency_ms,
        )
        async def predict(self, inputs: np.ndarray) -> np.ndarray:
            # ORT releases the GIL; a worker thread keeps this process's event loop responsive.
            return await anyio.to_thread.run_sync(self.session.run, inputs)

        @bentoml.api
        async def predict_unbatched(self, inputs: np.ndarray) -> np.ndarray:
            return await anyio.to_thread.run_sync(self.session.run, inputs)

        @bentoml.api
        async def health(self) -> dict[str, Any]:
            return {"tag": stored.tag, "loaded": True}

    ModelService.__name__ = ModelService.__qualname__ = name
    return bentoml.service(
        name=name,
        workers=1,
        # A queued call may wait up to max_latency_ms, then run: the timeout must cover both.
        traffic={"timeout": max(120, math.ceil(max_latency_ms / 1000) + 60)},
        # BentoML 1.4's client to a dependency replaces its HTTP session every 100 calls or
        # 300 s and closes the old one with calls still in flight, failing them; keep one session.
        runner_connection={"max_requests": 2**31 - 1, "max_age": 10.0**9},
    )(ModelService)


def _service_name(kind: str, model_id: str, default: str | None) -> str:
    return kind if model_id == default else f"{kind}_{model_id.replace('-', '_')}"


# Every served model's stored export (a missing one stops start-up with the command to run).
SERVED = startup_or_exit(lambda: served_models(settings))
STORED_IMAGE_MODELS = SERVED.image
IMAGE_DETECTORS = {
    mid: model_service(
        s,
        _service_name("ImageDetector", mid, settings.image_model),
        max_batch_size=settings.batch_max_size,
        max_latency_ms=settings.batch_max_latency_ms,
    )
    for mid, s in STORED_IMAGE_MODELS.items()
}
ImageDetector = IMAGE_DETECTORS[settings.image_model]
STORED_AUDIO_MODELS = SERVED.audio
AUDIO_DETECTORS = {
    mid: model_service(
        s,
        _service_name("AudioDetector", mid, settings.audio_model),
        max_batch_size=settings.audio_batch_max_size,
        max_latency_ms=settings.audio_batch_max_latency_ms,
    )
    for mid, s in STORED_AUDIO_MODELS.items()
}


# The face detector (MTCNN's three graphs, one stored model, fp32 only) runs in the API process:
# it needs whole frames, which would cost more to ship to another process than to scan here.
STORED_FACE = SERVED.face
# The temporal video model is two graphs: a per-crop CNN encoder, batched across the
# frames and requests like images, and a sequence head that takes whole windows of features.
STORED_VIDEO = SERVED.video
VIDEO_SERVICES = (
    {
        "encoder": model_service(
            STORED_VIDEO["encoder"],
            "FrameEncoder",
            max_batch_size=settings.batch_max_size,
            max_latency_ms=settings.batch_max_latency_ms,
        ),
        "head": model_service(
            STORED_VIDEO["head"],
            "TemporalHead",
            max_batch_size=settings.batch_max_size,
            max_latency_ms=settings.batch_max_latency_ms,
        ),
    }
    if STORED_VIDEO
    else {}
)


class _VerityAPI:
    """The public API service: attaches the detectors to the FastAPI app's engine."""

    def __init__(self) -> None:
        configure_logging(settings)
        app.state.accounts = Accounts(make_store(settings), settings)

        def served(stored: dict[str, StoredModel], prefix: str) -> dict[str, ServedModel]:
            return {
                mid: ServedModel(
                    stored=s, client=BentoModelClient(mid, getattr(self, _dep_attr(prefix, mid)))
                )
                for mid, s in stored.items()
            }

        video = (
            VideoModels(
                encoder=ServedModel(
                    stored=STORED_VIDEO["encoder"],
                    client=BentoModelClient(STORED_VIDEO["encoder"].model_id, self.video_encoder),
                ),
                head=ServedModel(
                    stored=STORED_VIDEO["head"],
                    client=BentoModelClient(STORED_VIDEO["head"].model_id, self.video_head),
                ),
            )
            if STORED_VIDEO
            else None
        )
        app.state.engine = Engine(
            settings,
            served(STORED_IMAGE_MODELS, "image"),
            audio_models=served(STORED_AUDIO_MODELS, "audio"),
            video=video,
            face_detector=face_detector(settings, STORED_FACE) if STORED_FACE else None,
            face_stored=STORED_FACE,
        )


def _dep_attr(kind: str, model_id: str) -> str:
    return f"{kind}_detector_" + model_id.replace("-", "_")


# The API's request timeout outlasts the longest a model call may queue, plus decoding and running.
_LONGEST_QUEUE_MS = max(settings.batch_max_latency_ms, settings.audio_batch_max_latency_ms)
_API_TIMEOUT_S = max(300, math.ceil(_LONGEST_QUEUE_MS / 1000) + 120)

# One `bentoml.depends` class attribute per served model; BentoML discovers dependencies from
# class attributes, so the class is assembled here rather than written out per model.
Verity = bentoml.service(name="Verity", workers=1, traffic={"timeout": _API_TIMEOUT_S})(
    bentoml.asgi_app(app, path="/")(
        type(
            "Verity",
            (_VerityAPI,),
            {
                **{_dep_attr("image", mid): bentoml.depends(svc) for mid, svc in IMAGE_DETECTORS.items()},
                **{_dep_attr("audio", mid): bentoml.depends(svc) for mid, svc in AUDIO_DETECTORS.items()},
                **{f"video_{role}": bentoml.depends(svc) for role, svc in VIDEO_SERVICES.items()},
                # Declared, so a built bento carries the face model with the others.
                **({"face_model": bentoml.models.BentoModel(STORED_FACE.tag)} if STORED_FACE else {}),
            },
        )
    )
)
