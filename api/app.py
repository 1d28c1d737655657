"""The FastAPI application mounted into the BentoML API service (``service.py``).

Routes reach the model services through ``app.state.engine``, which the BentoML service sets
up when it starts; nothing here loads a model or imports torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount, Route

import metrics
from api import account_routes, job_routes
from api.middleware import (
    METRICS_PATH,
    BodySizeLimitMiddleware,
    MetricsMiddleware,
    RequestIdMiddleware,
    metrics_refusal,
)
from api.openapi import DETECT_ERRORS, error_responses, media_request_body, text_request_body
from api.payload import UploadReference, read_media_payload
from api.stream import add_stream_routes
from api.text_payload import read_text_payload
from api.uploaded import detect_uploaded
from api.web import add_page_routes
from auth.accounts import Accounts
from auth.middleware import AuthMiddleware
from auth.principal import Principal
from auth.quotas import cost_units
from blobs.local import LOCAL_UPLOAD_PATH
from config import Settings
from detect.audio import detect_audio, detect_audio_file
from detect.engine import Engine
from detect.files import check_models
from detect.image import detect_image
from detect.results import DetectionResult
from detect.text import detect_text
from detect.video import detect_video, detect_video_file
from errors import (
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
    VerityError,
    error_document,
    note_error,
    public_message,
)
from media.image import read_image_file
from models.calibration import OperatingPoint as OperatingPointName
from models.catalog import load_catalog
from models.store import list_stored
from store.records import Detection

log = logging.getLogger(__name__)

STABILITY_HELP = (
    "re-score after JPEG q75, a 0.75x resize and a 90% centre crop (one model call; four times the "
    "model work); a verdict that flips becomes UNCERTAIN"
)
OPERATING_POINT_HELP = (
    "threshold of a calibrated model: balanced, high_precision (FPR <= 1%) or high_recall (TPR >= 95%); "
    "default VERITY_OPERATING_POINT"
)

MULTIPART_OVERHEAD = 64 * 1024

DOCS_ASSETS = "/docs/assets"
FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"  # fastapi.routing's own words
READY_TIMEOUT_S = 5.0

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    503: "service_unavailable",
}


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    details: dict[str, Any] | None = None,
    exc: Exception | None = None,
) -> JSONResponse:
    note_error(request.scope, code, exc)  # for the metrics middleware
    request_id = request.scope.get("state", {}).get("request_id")
    return JSONResponse(
        error_document(code, message, request_id, details), status_code=status, headers=headers
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VerityError)
    async def _verity_error(request: Request, exc: VerityError) -> JSONResponse:
        return error_response(
            request, exc.status, exc.code, public_message(exc), exc.headers, exc.details, exc=exc
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            # Not a JSON document at all: the same 400 the detection routes give.
            return error_response(request, 400, "invalid_json", "request body is not valid JSON")
        problems = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        message = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems)
        return error_response(request, 422, "invalid_input", message, details={"errors": problems})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == FASTAPI_BODY_PARSE_ERROR:
            # FastAPI could not parse a JSON body (nested past the parser's stack, an integer past
            # 4300 digits, bytes that are not UTF-8): the same answer the detection routes give.
            return error_response(request, 400, "invalid_json", "request body is not valid JSON")
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # This handler runs outside the middleware stack, after the request id's context ended.
        request_id = request.scope.get("state", {}).get("request_id")
        log.exception("unhandled error", extra={"request_id": request_id} if request_id else None)
        # ... and its answer passes no middleware: the headers they would add, added here.
        headers = {"x-content-type-options": "nosniff", "cache-control": "no-store"}
        if request_id:
            headers["x-request-id"] = request_id
        return error_response(request, 500, "internal_error", "an internal error occurred", headers)


def engine_of(request: Request) -> Engine:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        raise ServiceUnavailable("the service is starting", code="starting")
    return engine


async def record_detection(
    request: Request, accounts: Accounts, principal: Principal, result: dict[str, Any]
) -> None:
    """Every detection lands in its caller's history; the result's id is the history id. What
    it cost is in the result, and the auth middleware charges it when the answer starts."""
    result["cost_units"] = request.scope.setdefault("state", {})["cost_units"] = cost_units(result)
    engine_of(request).sign(result)  # last: nothing may change in a result once it is signed
    detection = Detection(
        id=result["id"],
        user_id=principal.user_id,
        created_at=result["created_at"],
        modality=result["modality"],
        verdict=result["verdict"],
        fake_probability=result["fake_probability"],
        model_id=result["model"]["id"],
        result=result,
    )
    await account_routes.run(accounts.store.add_detection, detection)
    metrics.detection_answered(result)


def attach_backends(app: FastAPI, settings: Settings) -> None:
    """The stores, blobs and queue every entry point shares (the engine is attached apart)."""
    from auth.throttle import AuthThrottle
    from jobs.backend import JobsBackend
    from store.factory import make_store, make_throttle_store

    app.state.accounts = Accounts(make_store(settings), settings)
    app.state.jobs = JobsBackend.from_settings(settings, app.state.accounts.store)
    app.state.throttle = AuthThrottle(make_throttle_store(settings), settings)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Local job workers (``VERITY_QUEUE=local``) run on this process's event loop; they wait for
    the engine, which the BentoML service attaches once its model clients exist."""
    from jobs.local_workers import LocalWorkers

    backend = getattr(app.state, "jobs", None)
    workers = None
    if backend is not None and backend.settings.queue == "local" and backend.settings.job_workers > 0:
        workers = LocalWorkers(
            backend, lambda: getattr(app.state, "engine", None), count=backend.settings.job_workers
        )
        await workers.start()
    try:
        yield
    finally:
        if workers is not None:
            await workers.stop()


def create_app(settings: Settings) -> FastAPI:
    # FastAPI's own /docs and /redoc load their scripts from a CDN and render blank offline;
    # fastapi-offline serves the same pages with the assets from the package itself.
    app = FastAPIOffline(
        lifespan=_lifespan,
        static_url=DOCS_ASSETS,
        title="Verity",
        version="1",
        description="Deepfake detection for images, video, audio and camera frames.",
    )
    _install_error_handlers(app)
    image_limit = settings.max_image_bytes * 4 // 3 + MULTIPART_OVERHEAD  # base64 in JSON

    audio_limit = settings.max_audio_bytes * 4 // 3 + MULTIPART_OVERHEAD
    video_limit = settings.max_video_bytes * 4 // 3 + MULTIPART_OVERHEAD

    upload_limit = settings.max_upload_bytes + MULTIPART_OVERHEAD
    # JSON may escape each character as six (\\uXXXX): the text's own caps are checked once read.
    text_limit = settings.max_text_bytes * 6 + MULTIPART_OVERHEAD

    def body_limit(path: str) -> int:
        if path.endswith(LOCAL_UPLOAD_PATH):
            return upload_limit
        if path.endswith("/v1/detect/image"):
            return image_limit
        if path.endswith("/v1/detect/audio"):
            return audio_limit
        if path.endswith("/v1/detect/video"):
            return video_limit
        if path.endswith("/v1/detect/text"):
            return text_limit
        return settings.max_json_body_bytes

    # Outermost first on the wire: metrics -> request id -> auth + quotas -> body cap -> routes.
    app.add_middleware(BodySizeLimitMiddleware, limit_for=body_limit)
    app.add_middleware(AuthMiddleware)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(MetricsMiddleware)
    app.include_router(account_routes.router)
    app.include_router(job_routes.router)
    add_stream_routes(app, settings)

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get(METRICS_PATH, include_in_schema=False)
    async def metrics_route(request: Request) -> Response:
        """Prometheus text format, for a process without BentoML's server (the in-process app):
        its own series. Under ``bentoml serve`` BentoML's ``/metrics`` answers ahead of this
        route, with every process's series, its own included (``service.py``)."""
        refusal = metrics_refusal(settings, {k.lower(): v for k, v in request.headers.items()})
        if refusal is not None:
            raise refusal
        body = await anyio.to_thread.run_sync(metrics.exposition)  # reads files in multiprocess mode
        return Response(body, media_type=metrics.CONTENT_TYPE)

    @app.get("/health/ready", tags=["health"], responses=error_responses(503))
    async def ready(request: Request) -> JSONResponse:
        """200 once every served model answers and the store can be read; 503 ``not_ready`` before
        (starting) and while either is down. ``/health/live`` stays 200 through both: a store
        outage is no reason to restart the process."""
        engine = getattr(request.app.state, "engine", None)
        accounts = getattr(request.app.state, "accounts", None)
        if engine is None or accounts is None:
            raise ServiceUnavailable("the service is starting: models are not loaded yet", code="not_ready")
        models, warnings, failed = [], [], []

        async def probe(model_id: str) -> None:
            served = engine.served[model_id]
            try:
                await asyncio.wait_for(served.client.health(), READY_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - any failure means not ready
                failed.append(model_id)
            models.append(served.stored.describe())
            warnings.extend(served.warnings)

        async def store_answers() -> bool:
            try:
                await asyncio.wait_for(account_routes.run(accounts.store.ping), READY_TIMEOUT_S)
            except Exception:  # an outage, a timeout: not ready either way
                log.warning("readiness: the store does not answer", exc_info=True)
                return False
            return True

        *_, store_ok = await asyncio.gather(*(probe(m) for m in engine.served), store_answers())
        if engine.face_stored is not None:  # in-process: loaded once the engine exists
            models.append(engine.face_stored.describe())
        if failed:
            raise ServiceUnavailable(f"models not loaded yet: {sorted(failed)}", code="not_ready")
        if not store_ok:
            raise ServiceUnavailable(f"the {accounts.settings.store} store does not answer", code="not_ready")
        return JSONResponse({"status": "ready", "models": models, "warnings": warnings, "store": "ok"})

    @app.get("/.well-known/jwks.json", tags=["models"], responses=error_responses(503))
    async def result_signing_keys(request: Request) -> JSONResponse:
        """The Ed25519 public keys (JWK Set) that verify a result's ``signature``: the current
        key and the previous ones still published after a rotation."""
        engine = engine_of(request)
        if engine.signer is None:
            raise ServiceUnavailable("this service does not sign results", code="signing_unavailable")
        return JSONResponse(engine.signer.jwks(), headers={"cache-control": "public, max-age=300"})

    @app.get("/v1/models", tags=["models"])
    async def list_models(request: Request) -> dict[str, Any]:
        engine = engine_of(request)
        served = [
            {
                **m.stored.describe(),
                "served": True,
                # The default of its modality: what a request that names no model gets.
                "default": mid
                in (
                    engine.default_image_model,
                    engine.settings.audio_model,
                    engine.settings.video_model,
                    engine.settings.text_model,
                ),
                "precision_reason": m.precision_reason,
                "warnings": m.warnings,
            }
            for mid, m in engine.served.items()
        ]
        if engine.face_stored is not None:
            served.append({**engine.face_stored.describe(), "served": True, "default": True, "warnings": []})
        stored_versions: dict[str, list[str]] = {}
        # The model store is read from disk (and the catalog parsed): not on the event loop.
        for stored in await anyio.to_thread.run_sync(list_stored):
            stored_versions.setdefault(stored.model_id, []).append(stored.version)
        catalog = await anyio.to_thread.run_sync(load_catalog)
        others = [
            {
                "id": entry.id,
                "modality": entry.modality,
                "architecture": entry.architecture,
                "source": entry.source,
                "threshold": entry.threshold,
                "served": False,
                "stored_versions": stored_versions.get(entry.id, []),
            }
            for entry in catalog.values()
            if entry.id not in engine.served
            and not (engine.face_stored and entry.id == engine.face_stored.model_id)
        ]
        return {"models": served + others}

    @app.post(
        "/v1/detect/image",
        tags=["detect"],
        response_model=DetectionResult,
        responses=DETECT_ERRORS,
        openapi_extra=media_request_body("image", "image/*"),
    )
    async def detect_image_route(
        request: Request,
        principal: account_routes.DetectPrincipal,
        accounts: account_routes.AccountsDep,
        model: Annotated[str | None, Query(description="catalog id; default: the served default")] = None,
        explain: Annotated[bool, Query(description="add an occlusion heatmap")] = False,
        faces: Annotated[
            Literal["auto", "off"], Query(description="auto: find faces and score each face crop")
        ] = "off",
        stability: Annotated[bool, Query(description=STABILITY_HELP)] = False,
        operating_point: Annotated[OperatingPointName | None, Query(description=OPERATING_POINT_HELP)] = None,
        models: Annotated[
            str | None,
            Query(
                description="an ensemble: two or more served image models, comma-separated (instead of model)"
            ),
        ] = None,
    ) -> JSONResponse:
        """Multipart field `image` (or `file`), JSON `{"image": "data:image/...;base64,..."}`,
        or a raw `image/*` body."""
        engine = engine_of(request)
        members = models.split(",") if models is not None else None
        # An unknown model or operating point: fail before reading a large body.
        check_models(
            engine,
            "image",
            {"model": model, "models": members, "explain": explain, "operating_point": operating_point},
        )
        options: dict[str, Any] = {
            "model_id": model,
            "explain": explain,
            "faces": faces,
            "stability": stability,
            "operating_point": operating_point,
            "models": members,
        }
        # An explanation is ~50 model calls: heavy work, admitted (or shed) before the body is read.
        async with engine.heavy_gate.admit() if explain else contextlib.nullcontext():
            data = await read_media_payload(request, "image")
            if isinstance(data, UploadReference):

                async def on_file(path: Path) -> dict[str, Any]:
                    image = await anyio.to_thread.run_sync(read_image_file, path, settings.max_image_bytes)
                    return await detect_image(engine, image, **options)

                result = await detect_uploaded(request, principal, data.upload_id, on_file)
            else:
                result = await detect_image(engine, data, **options)
        await record_detection(request, accounts, principal, result)
        return JSONResponse(result)

    @app.post(
        "/v1/detect/audio",
        tags=["detect"],
        response_model=DetectionResult,
        responses=DETECT_ERRORS,
        openapi_extra=media_request_body("audio", "audio/*"),
    )
    async def detect_audio_route(
        request: Request,
        principal: account_routes.DetectPrincipal,
        accounts: account_routes.AccountsDep,
        model: Annotated[str | None, Query(description="catalog id; default: the served default")] = None,
        operating_point: Annotated[OperatingPointName | None, Query(description=OPERATING_POINT_HELP)] = None,
    ) -> JSONResponse:
        """Multipart field `audio` (or `file`), JSON `{"audio": "data:audio/...;base64,..."}`, or a
        raw `audio/*` body. WAV, FLAC, OGG/Opus, MP3, M4A/AAC."""
        engine = engine_of(request)
        check_models(engine, "audio", {"model": model, "operating_point": operating_point})
        async with engine.heavy_gate.admit():  # shed (503) before the body is read, not after
            data = await read_media_payload(request, "audio")
            if isinstance(data, UploadReference):

                async def on_file(path: Path) -> dict[str, Any]:
                    return await detect_audio_file(
                        engine,
                        path,
                        model_id=model,
                        max_duration_s=settings.max_audio_duration_s,
                        operating_point=operating_point,
                    )

                result = await detect_uploaded(request, principal, data.upload_id, on_file)
            else:
                result = await detect_audio(engine, data, model_id=model, operating_point=operating_point)
        await record_detection(request, accounts, principal, result)
        return JSONResponse(result)

    @app.post(
        "/v1/detect/text",
        tags=["detect"],
        response_model=DetectionResult,
        responses=DETECT_ERRORS,
        openapi_extra=text_request_body(),
    )
    async def detect_text_route(
        request: Request,
        principal: account_routes.DetectPrincipal,
        accounts: account_routes.AccountsDep,
        model: Annotated[str | None, Query(description="catalog id; default: the served default")] = None,
        operating_point: Annotated[OperatingPointName | None, Query(description=OPERATING_POINT_HELP)] = None,
    ) -> JSONResponse:
        """JSON `{"text": "..."}`, a multipart UTF-8 `.txt` / `.md` file (field `file`), or a raw
        `text/plain` body. Segments cover character ranges of the text."""
        engine = engine_of(request)
        check_models(engine, "text", {"model": model, "operating_point": operating_point})
        payload = await read_text_payload(request, settings)
        result = await detect_text(
            engine,
            payload.text,
            model_id=model,
            text_format=payload.format,
            byte_count=payload.bytes,
            operating_point=operating_point,
        )
        await record_detection(request, accounts, principal, result)
        return JSONResponse(result)

    @app.post(
        "/v1/detect/video",
        tags=["detect"],
        response_model=DetectionResult,
        responses=DETECT_ERRORS,
        openapi_extra=media_request_body("video", "video/*"),
    )
    async def detect_video_route(
        request: Request,
        principal: account_routes.DetectPrincipal,
        accounts: account_routes.AccountsDep,
        fps: Annotated[float | None, Query(gt=0, le=30, description="frames sampled per second")] = None,
        max_frames: Annotated[int | None, Query(ge=1, description="most frames sampled")] = None,
        strategy: Annotated[
            Literal["temporal", "frames"],
            Query(description="temporal: CNN encoder + LSTM head; frames: image model per face, averaged"),
        ] = "temporal",
        model: Annotated[str | None, Query(description="image model for strategy=frames")] = None,
        stability: Annotated[bool, Query(description=STABILITY_HELP)] = False,
        operating_point: Annotated[OperatingPointName | None, Query(description=OPERATING_POINT_HELP)] = None,
    ) -> JSONResponse:
        """Multipart field `video` (or `file`), JSON `{"video": "data:video/...;base64,..."}`, or a
        raw `video/*` body. MP4, MOV, AVI, WebM, MKV; up to 32 MB inline."""
        engine = engine_of(request)
        check_models(
            engine, "video", {"strategy": strategy, "model": model, "operating_point": operating_point}
        )
        if max_frames is not None and max_frames > engine.settings.video_max_frames_cap:
            raise InvalidInput(
                f"max_frames is at most {engine.settings.video_max_frames_cap}", code="invalid_max_frames"
            )
        async with engine.heavy_gate.admit():  # shed (503) before the body is read, not after
            data = await read_media_payload(request, "video")
            if isinstance(data, UploadReference):

                async def on_file(path: Path) -> dict[str, Any]:
                    return await detect_video_file(
                        engine,
                        path,
                        fps=fps,
                        max_frames=max_frames,
                        strategy=strategy,
                        model_id=model,
                        max_duration_s=settings.max_video_duration_s,
                        stability=stability,
                        operating_point=operating_point,
                    )

                result = await detect_uploaded(request, principal, data.upload_id, on_file)
            else:
                result = await detect_video(
                    engine,
                    data,
                    fps=fps,
                    max_frames=max_frames,
                    strategy=strategy,
                    model_id=model,
                    stability=stability,
                    operating_point=operating_point,
                )
        await record_detection(request, accounts, principal, result)
        return JSONResponse(result)

    # The page (web/) for browsers, the JSON index (with the inline limits) for everyone else.
    add_page_routes(app, settings)

    # BentoML's router answers unknown paths with plain text; this keeps every error JSON.
    @app.api_route(
        "/{path:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
        include_in_schema=False,
    )
    async def not_found(request: Request, path: str) -> None:
        allowed = sorted(
            {
                method
                for route in request.app.state.api_routes
                if route.matches(request.scope)[0] == Match.PARTIAL
                for method in route.methods
            }
        )
        if allowed:
            raise MethodNotAllowed(
                f"{request.method} is not allowed on /{path}", headers={"Allow": ", ".join(allowed)}
            )
        raise NotFound(f"no route /{path}", code="route_not_found")

    # Every API route, for the 405 answer above and for the auth middleware's metering. FastAPI
    # keeps an included router's routes behind one entry of app.router.routes, so the routers
    # are walked themselves (a wrong method on /v1/keys is a 405, and a metered route added on a
    # router is metered).
    app.state.api_routes = [
        route
        for router in (app.router, account_routes.router, job_routes.router)
        for route in router.routes
        if isinstance(route, APIRoute) and route.path != "/{path:path}"
    ]
    app.state.route_paths = frozenset(route.path for route in app.state.api_routes)
    # What the metrics middleware labels a request with: the template of its route (docs, static
    # files and pages included), never its raw path; the catch-all is the "unmatched" label.
    app.state.template_routes = [
        route
        for router in (app.router, account_routes.router, job_routes.router)
        for route in router.routes
        if isinstance(route, (Route, Mount)) and route.path != "/{path:path}"
    ]
    return app


def create_inprocess_app(settings: Settings) -> FastAPI:
    """The same app with its engine (every served model's ONNX session in this process) and its
    accounts attached at once: for entry points without a BentoML server (the AWS Lambda
    handler)."""
    from detect.hosting import build_inprocess_engine

    app = create_app(settings)
    attach_backends(app, settings)
    app.state.engine = build_inprocess_engine(settings)
    return app
