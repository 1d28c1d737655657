"""The page people use: ``GET /`` serves ``web/index.html`` to browsers, ``/static/<file>`` its
script and style sheet. Everything the page does goes through the public API (``/v1/...``).

``GET /`` answers by its ``Accept`` header: a browser (``text/html``) gets the page, anything else
(curl's ``*/*``, ``application/json``) the JSON index it always answered, now with the inline
``limits`` the page needs to choose between a plain request and an upload + job.

The files are read once, when the app is made (three small files, no build step). The page links
them as ``/static/app.js?v=<version>`` (a digest of the three), so a matching ``v`` is cached for
a year as immutable and a new version is fetched at once; the page itself is revalidated on every
load (``no-cache`` with an ``ETag``). The page's Content-Security-Policy allows only this origin
(scripts and styles from files, no inline code), its WebSocket (the live camera), ``data:`` and
``blob:`` pictures and ``blob:`` media (the user's own files), and the upload forms' origin when
uploads go elsewhere (S3, ``VERITY_PUBLIC_URL``).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from config import Settings
from errors import NotFound

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC_PREFIX = "/static/"
VERSION_MARK = "__VERSION__"
ASSET_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# A Host header is the client's to write: only host[:port] characters go into the policy.
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


@dataclass(frozen=True)
class WebFiles:
    index: bytes  # the page, with its assets' version filled in
    assets: dict[str, bytes]
    version: str

    @classmethod
    def load(cls, directory: Path = WEB_DIR) -> WebFiles | None:
        try:
            template = (directory / "index.html").read_text(encoding="utf-8")
            assets = {name: (directory / name).read_bytes() for name in ASSET_TYPES}
        except OSError as exc:
            log.warning("the page is not served: %s", exc)
            return None
        digest = hashlib.sha256(template.encode())
        for name in sorted(assets):
            digest.update(assets[name])
        version = digest.hexdigest()[:12]
        return cls(template.replace(VERSION_MARK, version).encode(), assets, version)

    def etag(self, name: str) -> str:
        body = self.index if name == "index.html" else self.assets[name]
        return '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "").lower()


def _origin(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def upload_origins(settings: Settings) -> list[str]:
    """Where the page may POST an upload form besides its own origin."""
    origins = []
    if settings.blobs == "s3":
        # A presigned POST goes to the bucket: the endpoint given (moto, MinIO) or AWS's hosts.
        origins.append(_origin(settings.s3_endpoint_url) or "https://*.amazonaws.com")
    public = _origin(settings.public_url)
    if public:
        origins.append(public)
    return origins


def content_security_policy(request: Request, settings: Settings) -> str:
    host = request.headers.get("host", "")
    sockets = f" ws://{host} wss://{host}" if _HOST.match(host) else ""
    extra = "".join(f" {origin}" for origin in upload_origins(settings))
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data: blob:",
            "media-src 'self' blob:",
            f"connect-src 'self'{sockets}{extra}",
            "font-src 'self'",
            "manifest-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def page_headers(request: Request, settings: Settings) -> dict[str, str]:
    return {
        "content-security-policy": content_security_policy(request, settings),
        "referrer-policy": "no-referrer",
        "x-frame-options": "DENY",
        "permissions-policy": "camera=(self), microphone=(), geolocation=()",
        "cross-origin-opener-policy": "same-origin",
    }


def service_index(settings: Settings) -> dict[str, Any]:
    """``GET /`` for clients that do not ask for HTML."""
    return {
        "service": "verity",
        "page": "/",
        "docs": "/docs",
        "models": "/v1/models",
        "health": "/health/ready",
        # What a plain detection request takes; larger media go through POST /v1/uploads + a job.
        "limits": {
            "image_bytes": settings.max_image_bytes,
            "audio_bytes": settings.max_audio_bytes,
            "video_bytes": settings.max_video_bytes,
            "audio_duration_s": settings.max_audio_duration_s,
            "video_duration_s": settings.max_video_duration_s,
            "upload_bytes": settings.max_upload_bytes,
        },
    }


def _not_modified(request: Request, etag: str) -> bool:
    sent = request.headers.get("if-none-match", "")
    return etag in {tag.strip() for tag in sent.split(",")} or sent.strip() == "*"


def add_page_routes(app: FastAPI, settings: Settings) -> None:
    """``GET /`` and ``GET /static/{name}`` on ``app`` (before its catch-all route)."""
    files = WebFiles.load()
    app.state.web_files = files

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def root(request: Request) -> Response:
        if files is None or not wants_html(request):
            return JSONResponse(service_index(settings), headers={"vary": "Accept"})
        etag = files.etag("index.html")
        headers = {**page_headers(request, settings), "cache-control": REVALIDATE, "etag": etag}
        headers["vary"] = "Accept"
        if _not_modified(request, etag):
            return Response(status_code=304, headers=headers)
        return Response(files.index, media_type="text/html; charset=utf-8", headers=headers)

    @app.api_route(STATIC_PREFIX + "{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def static(request: Request, name: str) -> Response:
        if files is None or name not in files.assets:
            raise NotFound(f"no file {STATIC_PREFIX}{name}", code="route_not_found")
        etag = files.etag(name)
        current = request.query_params.get("v") == files.version
        headers = {"cache-control": IMMUTABLE if current else REVALIDATE, "etag": etag}
        if _not_modified(request, etag):
            return Response(status_code=304, headers=headers)
        return Response(files.assets[name], media_type=ASSET_TYPES[name], headers=headers)
