"""BentoML services: thin wiring of the parts in api/, detect/, models/ and config/. Top-down:

1. ``settings`` and ``SERVED``: the stored export of every model the settings serve.
2. ``MODEL_SERVICES``: one model service per served model (``model_service``: one ONNX Runtime
   session, one batchable API; adaptive batching merges rows from concurrent requests):
   ``ImageDetector`` (+ ``ImageDetector_<id>`` per extra image model), ``AudioDetector``,
   ``TextDetector``, ``FrameEncoder`` and ``TemporalHead``.
3. ``Verity``: the public API service. It mounts the FastAPI app from ``api.app`` and depends on
   every model service; its engine (``detect.hosting.build_engine``) reaches them through
   ``BentoModelClient``. All request handling (decoding, validation, aggregation) lives there.
   The app is built when the API service starts (``api.deferred``), so the other processes of
   the tree never import it; ``service.app`` builds it on demand elsewhere (tests, tools).

Serve with ``make serve`` (``bentoml serve service:Verity``). Models come from the BentoML store
under ``$BENTOML_HOME`` (``bentos/``), filled by ``make models``. Nothing here imports torch.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import anyio
import bentoml
import numpy as np

import metrics
from api.deferred import DeferredApp
from api.middleware import MetricsGuard, route_template
from config.startup import settings_or_exit, startup_or_exit
from detect.hosting import ServedModels, build_engine, served_models
from logs import configure_logging
from models.store import ONNX_FILE, StoredModel

settings = settings_or_exit()
log = logging.getLogger("service")


def _build_app() -> Any:
    from api.app import create_app

    return create_app(settings)


MOUNTED_APP = DeferredApp(_build_app)


def __getattr__(name: str) -> Any:
    """``service.app``: the FastAPI app, built on first use (see ``api.deferred``)."""
    if name == "app":
        return MOUNTED_APP.built
    raise AttributeError(f"module 'service' has no attribute {name!r}")


def model_service(stored: StoredModel, name: str, *, max_batch_size: int, max_latency_ms: int) -> Any:
    """A model service for one stored model: its ONNX session, one batchable API for inputs of
    one shape, and an unbatched one for the odd input that cannot share a batch (an audio clip
    shorter than one window)."""

    class ModelService:
        model = bentoml.models.BentoModel(stored.tag)

        def __init__(self) -> None:
            # Imported here: the supervisor and the API service never open this session.
            from models.runtime import OnnxModel

            configure_logging(settings)
            self.session = OnnxModel(
                self.model.path_of(ONNX_FILE),
                intra_op_threads=settings.intra_op_threads,
                inter_op_threads=settings.ort_inter_op_threads,
                rows_alone=stored.rows_alone,
                pixels=stored.pixel_spec,
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


@dataclass(frozen=True)
class ModelServiceSpec:
    """One model service of the tree: the ``bentoml.depends`` attribute the API service holds it
    under, the stored model it serves, and the service class."""

    attribute: str
    stored: StoredModel
    service: Any


def _model_services(served: ServedModels) -> list[ModelServiceSpec]:
    """The model services, named as ``bentoml serve`` lists them: ``ImageDetector`` (the default
    image model), ``ImageDetector_<id>`` (each extra one), ``AudioDetector``, ``TextDetector``,
    ``FrameEncoder`` and ``TemporalHead`` (the video pair). Images, video crops and text windows
    share the image batching settings; audio windows have their own."""
    image = (settings.batch_max_size, settings.batch_max_latency_ms)
    audio = (settings.audio_batch_max_size, settings.audio_batch_max_latency_ms)
    wanted: list[tuple[str, StoredModel, tuple[int, int]]] = [
        (_name("ImageDetector", mid, settings.image_model), stored, image)
        for mid, stored in served.image.items()
    ]
    wanted += [
        (_name("AudioDetector", mid, settings.audio_model), s, audio) for mid, s in served.audio.items()
    ]
    # Text windows batch like pictures: a full window of a base-size model is ~0.1-0.2 s of CPU.
    wanted += [(_name("TextDetector", mid, settings.text_model), s, image) for mid, s in served.text.items()]
    if served.video:
        wanted += [
            ("FrameEncoder", served.video["encoder"], image),
            ("TemporalHead", served.video["head"], image),
        ]
    return [
        ModelServiceSpec(
            attribute=name.lower(),
            stored=stored,
            service=model_service(stored, name, max_batch_size=size, max_latency_ms=latency),
        )
        for name, stored, (size, latency) in wanted
    ]


def _name(kind: str, model_id: str, default: str | None) -> str:
    return kind if model_id == default else f"{kind}_{model_id.replace('-', '_')}"


# --- the tree: the stored models the settings serve, one model service each -------------------
SERVED = startup_or_exit(lambda: served_models(settings))
MODEL_SERVICES = _model_services(SERVED)
ImageDetector = MODEL_SERVICES[0].service  # the default image model's service
STORED_IMAGE_MODELS = SERVED.image


class _VerityAPI:
    """The public API service: the FastAPI app, with an engine whose model clients call the
    model services above (``bentoml.depends`` attributes, one per ``MODEL_SERVICES`` entry)."""

    def __init__(self) -> None:
        from api.app import attach_backends
        from detect.model_clients import BentoModelClient

        configure_logging(settings)
        app = MOUNTED_APP.built
        attach_backends(app, settings)
        services = {spec.stored.tag: getattr(self, spec.attribute) for spec in MODEL_SERVICES}
        app.state.engine = build_engine(
            settings, SERVED, lambda stored: BentoModelClient(stored.model_id, services[stored.tag])
        )

    def __metrics__(self, content: str) -> str:
        """BentoML's /metrics text, before it is sent (BentoML's hook). Its request series label
        this service's requests with the raw path; they get the route template instead, as
        Verity's own series do (``metrics.bound_bentoml_endpoints``)."""
        return metrics.bound_bentoml_endpoints(content, API_SERVICE_NAME, _template_of_path)


API_SERVICE_NAME = "Verity"


def _template_of_path(path: str) -> str:
    scope = {"type": "http", "path": path, "root_path": "", "method": "GET", "headers": []}
    return route_template(MOUNTED_APP.built.state.template_routes, scope)


# The API's request timeout outlasts the longest a model call may queue, plus decoding and running.
_LONGEST_QUEUE_MS = max(settings.batch_max_latency_ms, settings.audio_batch_max_latency_ms)
_API_TIMEOUT_S = max(300, math.ceil(_LONGEST_QUEUE_MS / 1000) + 120)

# BentoML finds a service's dependencies and models among its class attributes when the class is
# decorated, and which model services exist depends on the settings: attach them first.
for _spec in MODEL_SERVICES:
    setattr(_VerityAPI, _spec.attribute, bentoml.depends(_spec.service))
if SERVED.face is not None:
    # The face detector runs in the API process (it needs whole frames, which would cost more to
    # ship to another process than to scan here); declared, so a built bento carries it.
    _VerityAPI.face_model = bentoml.models.BentoModel(SERVED.face.tag)  # type: ignore[attr-defined]
Verity = bentoml.service(name=API_SERVICE_NAME, workers=1, traffic={"timeout": _API_TIMEOUT_S})(
    bentoml.asgi_app(MOUNTED_APP, path="/")(_VerityAPI)
)
# BentoML serves /metrics ahead of the mounted app and its middleware: the guard (off, or a
# token: VERITY_METRICS_*) stands in front of BentoML's route.
Verity.add_asgi_middleware(MetricsGuard, settings=settings)
