"""The page's files and headers (api/web.py) without a server: the Content-Security-Policy for each
blob backend, a hostile Host header, the JSON index's limits, and the asset version."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.requests import Request

from api.web import ASSET_TYPES, WebFiles, content_security_policy, service_index, wants_html
from config import Settings

pytestmark = pytest.mark.unit


def request(host: str = "127.0.0.1:3000", accept: str = "text/html") -> Request:
    headers = [(b"host", host.encode("latin-1")), (b"accept", accept.encode())]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""})


def directives(csp: str) -> dict[str, str]:
    return dict(part.split(" ", 1) for part in csp.split("; "))


def test_the_policy_allows_this_origin_and_its_websocket_only() -> None:
    csp = directives(content_security_policy(request(), Settings()))
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["connect-src"] == "'self' ws://127.0.0.1:3000 wss://127.0.0.1:3000"
    assert csp["img-src"] == "'self' data: blob:" and csp["media-src"] == "'self' blob:"
    assert csp["frame-ancestors"] == "'none'" and csp["base-uri"] == "'none'"


def test_upload_forms_elsewhere_are_allowed_by_their_origin() -> None:
    s3 = Settings(blobs="s3", s3_bucket="uploads", s3_endpoint_url="http://127.0.0.1:5000/")
    assert directives(content_security_policy(request(), s3))["connect-src"].endswith(
        " http://127.0.0.1:5000"
    )
    aws = Settings(blobs="s3", s3_bucket="uploads")
    assert directives(content_security_policy(request(), aws))["connect-src"].endswith(
        " https://*.amazonaws.com"
    )
    public = Settings(public_url="https://verity.example.com/base")
    assert directives(content_security_policy(request(), public))["connect-src"].endswith(
        " https://verity.example.com"
    )


@pytest.mark.parametrize("host", ["evil.com; script-src *", "a b", "x'y", ""])
def test_a_hostile_host_header_never_reaches_the_policy(host: str) -> None:
    csp = directives(content_security_policy(request(host=host), Settings()))
    assert csp["connect-src"] == "'self'"
    assert csp["script-src"] == "'self'"


def test_browsers_get_the_page_and_other_clients_the_json_index() -> None:
    assert wants_html(request(accept="text/html,application/xhtml+xml,*/*;q=0.8"))
    assert not wants_html(request(accept="*/*"))
    assert not wants_html(request(accept="application/json"))
    settings = Settings(max_video_bytes=1234)
    limits = service_index(settings)["limits"]
    assert limits["video_bytes"] == 1234 and limits["image_bytes"] == settings.max_image_bytes
    assert limits["upload_bytes"] == settings.max_upload_bytes


def test_the_assets_version_follows_their_content(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text('<script src="/static/app.js?v=__VERSION__"></script>')
    for name in ASSET_TYPES:
        (tmp_path / name).write_text(f"/* {name} */")
    first = WebFiles.load(tmp_path)
    assert first is not None and f"?v={first.version}".encode() in first.index
    (tmp_path / "app.js").write_text("/* changed */")
    second = WebFiles.load(tmp_path)
    assert second is not None and second.version != first.version
    assert WebFiles.load(tmp_path / "missing") is None  # no page: `/` answers JSON only


def test_the_real_page_loads_only_its_own_files() -> None:
    files = WebFiles.load()
    assert files is not None
    html = files.index.decode()
    assert "__VERSION__" not in html and "<script>" not in html and "style=" not in html
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere
