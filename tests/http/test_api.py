"""The public API in-process: BentoML's ASGI app (``Verity.to_asgi()``) through TestClient.

Detection needs credentials (issue 3): ``api`` is the client acting as a fresh user with an API
key; ``client`` sends none and is used for the public endpoints and the 401s."""

from __future__ import annotations

import base64
import io
import json
import re
import socket

import pytest
from PIL import Image

from tests.conftest import Caller, assert_error
from tests.media_factory import encode, jpeg_bytes, photo, png_header_only

pytestmark = pytest.mark.http

RESULT_KEYS = {
    "id",
    "modality",
    "created_at",
    "verdict",
    "fake_probability",
    "threshold",
    "model",
    "segments",
    "faces",
    "media",
    "timing_ms",
    "warnings",
}


def post_image(client, data: bytes, *, name: str = "face.jpg", params: str = "", field: str = "image"):
    return client.post(f"/v1/detect/image{params}", files={field: (name, data, "application/octet-stream")})


def assert_result(body: dict, *, model_id: str = "vit-dima806") -> None:
    assert set(body) >= RESULT_KEYS
    assert body["id"].startswith("det_")
    assert body["modality"] == "image"
    assert body["verdict"] in {"FAKE", "REAL", "UNCERTAIN"}
    assert 0.0 <= body["fake_probability"] <= 1.0
    assert body["threshold"] == 0.5
    assert body["model"]["id"] == model_id
    # The default precision, auto: the tiny exports' int8 agreement meets the bars (test_api's
    # test_models_lists_served_and_catalog reads the reason in /v1/models).
    assert body["model"]["precision"] == "int8"
    assert body["model"]["version"].startswith("int8-")
    # Dev weights are never silent.
    assert body["model"]["weights"] == "dev"
    assert any(w["code"] == "dev_weights" for w in body["warnings"])
    assert set(body["timing_ms"]) >= {"decode", "inference", "total"}
    assert body["timing_ms"]["total"] >= body["timing_ms"]["inference"] >= 0


# --- health and catalog --------------------------------------------------------------------


def test_health_endpoints(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/health/live").status_code == 200
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    weights = {m["id"]: m["weights"] for m in body["models"]}
    assert weights == {
        "vit-dima806": "dev",
        "siglip-open-deepfake": "dev",
        "wav2vec2-audio": "dev",
        "roberta-openai-detector": "dev",
        "cnn-lstm": "dev",
        "cnn-lstm-encoder": "dev",
        "mtcnn": "pretrained",  # the package's own weights
    }
    assert {w["code"] for w in body["warnings"]} == {"dev_weights"}


def test_models_lists_served_and_catalog(client):
    models = {m["id"]: m for m in client.get("/v1/models").json()["models"]}
    default = models["vit-dima806"]
    assert default["served"] and default["default"]
    assert default["modality"] == "image"
    # The default precision (auto) serves int8 where its stored agreement with fp32 meets the bars,
    # as the tiny exports' does, and says so.
    assert default["precision"] == "int8" and default["weights"] == "dev"
    assert default["precision_reason"].startswith("int8: verdict agreement"), default["precision_reason"]
    assert default["int8_agreement"] >= 0.99 and default["int8_mean_probability_diff"] <= 0.01
    assert default["int8_scheme"] == "dynamic, rows run alone"
    assert default["threshold"] == 0.5 and default["version"]
    assert default["parity_max_abs_diff"] < 1e-3
    assert models["siglip-open-deepfake"]["served"] and not models["siglip-open-deepfake"]["default"]
    assert models["vit-deepfake-v2"]["served"] is False
    assert models["keras-cnn"]["served"] is False
    # The default of each modality is marked so: what a request that names no model gets.
    defaults = {mid for mid, m in models.items() if m.get("default")}
    assert defaults == {"vit-dima806", "wav2vec2-audio", "roberta-openai-detector", "cnn-lstm", "mtcnn"}


# --- detection -----------------------------------------------------------------------------


def test_detect_multipart(api):
    response = post_image(api, jpeg_bytes(320, 240))
    assert response.status_code == 200, response.text
    body = response.json()
    assert_result(body)
    assert body["media"]["width"] == 320 and body["media"]["height"] == 240
    assert body["media"]["format"] == "jpeg"
    assert response.headers["x-request-id"].startswith("req_")


def test_detect_accepts_file_field_and_same_picture_same_score(api):
    data = jpeg_bytes(300, 300, seed=3)
    first = post_image(api, data).json()
    second = post_image(api, data, field="file").json()
    assert first["fake_probability"] == second["fake_probability"]
    assert first["id"] != second["id"]


def test_detect_json_data_url_camera_frame(api):
    data = jpeg_bytes(640, 480, seed=1)
    url = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    response = api.post("/v1/detect/image", json={"image": url})
    assert response.status_code == 200, response.text
    assert_result(response.json())
    bare = api.post("/v1/detect/image", json={"image": base64.b64encode(data).decode()})
    assert bare.json()["fake_probability"] == response.json()["fake_probability"]


def test_detect_raw_body(api):
    response = api.post(
        "/v1/detect/image", content=encode(photo(200, 100), "PNG"), headers={"content-type": "image/png"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["media"]["format"] == "png"


def test_detect_with_second_model(api):
    response = post_image(api, jpeg_bytes(), params="?model=siglip-open-deepfake")
    assert response.status_code == 200, response.text
    assert_result(response.json(), model_id="siglip-open-deepfake")


def test_detect_honours_exif_orientation(api):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    data = encode(photo(320, 200), "JPEG", exif=exif.tobytes())
    media = post_image(api, data).json()["media"]
    assert (media["width"], media["height"]) == (200, 320)


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "I;16"])
def test_detect_converts_modes(api, mode):
    image = photo(64, 48)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    converted = image.convert("L").convert("I;16") if mode == "I;16" else image.convert(mode)
    response = post_image(api, encode(converted, fmt))
    assert response.status_code == 200, response.text
    assert response.json()["media"]["mode"] == mode


def test_explain_returns_heatmap(api):
    response = post_image(api, jpeg_bytes(), params="?explain=true")
    assert response.status_code == 200, response.text
    explanation = response.json()["explanation"]
    assert explanation["method"].startswith("occlusion")
    heatmap = Image.open(io.BytesIO(base64.b64decode(explanation["heatmap_png"])))
    assert heatmap.format == "PNG" and heatmap.size == (32, 32)  # the tiny model's input size
    assert len(explanation["grid"]) == 7 and all(v >= 0 for row in explanation["grid"] for v in row)
    assert "explain" in response.json()["timing_ms"]


def test_openapi_docs(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/v1/detect/image" in spec["paths"]


# --- authentication and history (issue 3) ----------------------------------------------------


def test_detection_without_credentials_is_401_json(client):
    frame = "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes()).decode()
    for response in (
        post_image(client, jpeg_bytes()),
        client.post("/v1/detect/image", json={"image": frame}),
        client.post("/v1/detect/image", content=jpeg_bytes(), headers={"content-type": "image/jpeg"}),
        client.post(
            "/v1/detect/image", json={"image": frame}, headers={"authorization": "Basic Zm9vOmJhcg=="}
        ),
        client.post("/v1/detect/image", json={"image": frame}, headers={"authorization": "Bearer "}),
    ):
        assert_error(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "ratelimit-limit" not in response.headers  # nothing was metered


def test_detection_with_bad_credentials_is_401_json(client, api_key):
    typo = api_key[:-1] + ("A" if api_key[-1] != "A" else "B")
    for headers, code in (
        ({"x-api-key": typo}, "invalid_api_key"),
        ({"x-api-key": "not-a-key"}, "invalid_api_key"),
        ({"authorization": "Bearer not.a.jwt"}, "invalid_token"),
    ):
        response = post_image(Caller(client, headers), jpeg_bytes())
        assert_error(response, 401, code)
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_detection_with_a_jwt(client, jwt_headers):
    response = post_image(Caller(client, jwt_headers), jpeg_bytes())
    assert response.status_code == 200, response.text
    assert_result(response.json())
    assert int(response.headers["ratelimit-remaining"]) >= 0


def test_result_id_is_its_history_id(api):
    response = post_image(api, jpeg_bytes(256, 192, seed=5), params="?model=siglip-open-deepfake")
    assert response.status_code == 200, response.text
    result = response.json()
    stored = api.get(f"/v1/history/{result['id']}")
    assert stored.status_code == 200, stored.text
    assert stored.json() == result
    listed = api.get("/v1/history").json()["items"]
    assert [item["id"] for item in listed] == [result["id"]]
    assert listed[0]["model_id"] == "siglip-open-deepfake"
    assert listed[0]["verdict"] == result["verdict"]


def test_failed_detection_is_not_in_history(api):
    assert_error(post_image(api, b""), 422, "empty_file")
    assert api.get("/v1/history").json()["items"] == []


# --- the error table: every status this issue can produce -----------------------


def test_400_invalid_json(api):
    response = api.post(
        "/v1/detect/image", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "invalid_json")


def test_404_unknown_model_and_route(api):
    assert_error(post_image(api, jpeg_bytes(), params="?model=nope"), 404, "model_not_found")
    assert_error(api.get("/v1/nothing-here"), 404, "route_not_found")


def test_405_wrong_method(api):
    response = api.get("/v1/detect/image")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/auth/signup", {"POST"}),
        ("DELETE", "/v1/auth/login", {"POST"}),
        ("PUT", "/v1/keys", {"GET", "POST"}),
        ("GET", "/v1/keys/key_x/roll", {"POST"}),
        ("POST", "/v1/usage", {"GET"}),
    ],
)
def test_405_on_account_routes_names_the_allowed_methods(api, method, path, allowed):
    response = api.request(method, path)
    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].split(", ")) == allowed


@pytest.mark.parametrize("path", ["/v1/auth/signup", "/v1/auth/login", "/v1/keys"])
def test_400_invalid_json_on_account_routes(api, path):
    response = api.post(path, content=b'{"email": "me@', headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid_json")


def test_websockets_are_authenticated_before_any_route(service_module, accounts, api):
    """The auth middleware on the app itself: a WebSocket without valid credentials is refused at
    the handshake (1008), never passed on; with a key it reaches the router (no WebSocket route is
    served yet, so it is closed there with 1000)."""
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    from api.app import create_app

    app = create_app(service_module.settings)
    app.state.accounts = accounts
    with TestClient(app) as client:
        for headers in ({}, {"x-api-key": "vk_live_typo"}):
            with (
                pytest.raises(WebSocketDisconnect) as refused,
                client.websocket_connect("/v1/x", headers=headers),
            ):
                pass
            assert refused.value.code == 1008
        with (
            pytest.raises(WebSocketDisconnect) as routed,
            client.websocket_connect("/v1/x", headers=api.headers),
        ):
            pass
        assert routed.value.code == 1000


def test_openapi_declares_the_result_and_error_shapes(client):
    spec = client.get("/openapi.json").json()
    assert {"DetectionResult", "ErrorBody"} <= set(spec["components"]["schemas"])
    for modality in ("image", "audio", "video"):
        responses = spec["paths"][f"/v1/detect/{modality}"]["post"]["responses"]
        assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/DetectionResult")
        for status in ("401", "413", "415", "422", "429", "503"):
            assert responses[status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


def test_result_model_refuses_undeclared_fields(api):
    from pydantic import ValidationError

    from detect.results import DetectionResult

    body = post_image(api, jpeg_bytes()).json()
    DetectionResult.model_validate(body)
    with pytest.raises(ValidationError):
        DetectionResult.model_validate({**body, "undeclared": 1})


def test_docs_work_offline(client):
    """/docs and /redoc load their scripts and styles from the service, never from a CDN."""
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200
        sources = re.findall(r'(?:src|href)="([^"]+)"', html.text)
        assert sources, html.text[:500]
        assert not [s for s in sources if s.startswith(("http://", "https://", "//"))], sources
        for source in sources:
            asset = client.get(source)
            assert asset.status_code == 200, source
            assert len(asset.content) > 1000 or source.endswith(".png"), source
    assert "SwaggerUIBundle" in client.get("/docs").text


def test_rejected_media_counts_toward_the_quota(api):
    """What the README says: an admitted detection request counts whatever it answers (here 415)."""
    before = api.get("/v1/usage").json()["requests_today"]
    assert_error(post_image(api, b"hello, not a picture\n", name="a.txt"), 415, "unsupported_media_type")
    assert api.get("/v1/usage").json()["requests_today"] == before + 1


def test_413_body_over_cap_before_reading(api):
    big = b"\xff\xd8\xff" + b"\0" * (14 * 1024 * 1024)
    assert_error(post_image(api, big), 413, "payload_too_large")


def test_413_decoded_image_over_byte_cap(api):
    # 10 MB + 1 of real image bytes fits the (base64-sized) body cap but not the image cap.
    data = b"\xff\xd8\xff" + b"\0" * (10 * 1024 * 1024)
    response = api.post("/v1/detect/image", content=data, headers={"content-type": "image/jpeg"})
    assert_error(response, 413, "file_too_large")


def test_413_pixel_bomb(api):
    assert_error(post_image(api, png_header_only(100_000, 100_000), name="x.png"), 413, "too_many_pixels")
    real = encode(Image.new("L", (7000, 7000)), "PNG")  # 49 Mpx, tiny on the wire
    assert len(real) < 1024 * 1024
    assert_error(post_image(api, real, name="big.png"), 413, "too_many_pixels")


def test_415_wrong_type(api):
    assert_error(post_image(api, b"hello, this is text\n" * 10, name="face.jpg"), 415)
    assert_error(post_image(api, b"%PDF-1.7\n%..." + b"\0" * 100, name="x.jpg"), 415)
    response = api.post("/v1/detect/image", content=b"abc", headers={"content-type": "text/plain"})
    assert_error(response, 415, "unsupported_content_type")


def test_422_bad_media_and_inputs(api):
    assert_error(post_image(api, b""), 422, "empty_file")
    assert_error(post_image(api, jpeg_bytes()[:400]), 422, "corrupt_image")
    assert_error(post_image(api, b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, name="x.png"), 422)
    response = api.post("/v1/detect/image", files={"other": ("a.jpg", jpeg_bytes(), "image/jpeg")})
    assert_error(response, 422, "missing_file")
    assert_error(
        api.post("/v1/detect/image", json={"image": "data:image/jpeg;base64,@@@"}), 422, "invalid_base64"
    )
    assert_error(api.post("/v1/detect/image", json={"nothing": 1}), 422, "missing_image")
    assert_error(api.post("/v1/detect/image", json=[1, 2]), 422, "invalid_input")
    assert_error(api.post("/v1/detect/image", json={"upload_id": "up_1"}), 404, "upload_not_found")
    assert_error(post_image(api, jpeg_bytes(), params="?model=vit-deepfake-v2"), 422, "model_not_served")
    assert_error(post_image(api, jpeg_bytes(), params="?explain=maybe"), 422, "invalid_input")


def test_client_request_id_is_echoed(api):
    response = api.post("/v1/detect/image", json={"nothing": 1}, headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert response.json()["error"]["request_id"] == "abc-123"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_503_when_starting_and_when_model_service_is_down(service_module, accounts, auth_headers):
    from _bentoml_impl.client import RemoteProxy
    from starlette.testclient import TestClient

    from api.app import create_app
    from config import get_settings
    from detect.engine import Engine, ServedModel
    from detect.model_clients import BentoModelClient

    settings = get_settings()
    app = create_app(settings)
    with TestClient(app) as starting:
        response = post_image(Caller(starting, auth_headers), jpeg_bytes())
        assert_error(response, 503, "starting")
        assert response.headers["retry-after"]

    app.state.accounts = accounts  # the session's real accounts: the caller's key is valid

    # A real BentoML client for the detector, pointed at a port where nothing listens.
    dead = RemoteProxy(
        f"http://127.0.0.1:{_closed_port()}", service=service_module.ImageDetector
    ).as_service()
    stored = service_module.STORED_IMAGE_MODELS["vit-dima806"]
    client = BentoModelClient("vit-dima806", dead)
    app.state.engine = Engine(settings, {"vit-dima806": ServedModel(stored=stored, client=client)})
    with TestClient(app) as down:
        before = down.get("/v1/usage", headers=auth_headers).json()["units_today"]
        response = post_image(Caller(down, auth_headers), jpeg_bytes())
        assert_error(response, 503, "model_unavailable")
        assert int(response.headers["retry-after"]) > 0
        # The server's failure costs the caller nothing.
        assert down.get("/v1/usage", headers=auth_headers).json()["units_today"] == before
        assert_error(down.get("/health/ready"), 503, "not_ready")


def test_error_bodies_are_json_objects(api):
    body = post_image(api, b"").content
    assert isinstance(json.loads(body)["error"], dict)


def test_413_streamed_body_without_content_length(api):
    """A chunked upload with no Content-Length is cut off at the cap, not buffered whole."""
    sent = 0

    def chunks():
        nonlocal sent
        for _ in range(40):
            sent += 1
            yield b"\xff" * (1024 * 1024)

    response = api.post("/v1/detect/image", content=chunks(), headers={"content-type": "image/jpeg"})
    assert_error(response, 413, "payload_too_large")


def test_deeply_nested_json_is_a_400_not_a_500(api) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    headers = {"content-type": "application/json"}
    assert_error(api.post("/v1/detect/image", content=deep, headers=headers), 400, "invalid_json")
    answer = api.client.post("/v1/auth/login", content=deep, headers=headers)
    assert answer.status_code == 400, answer.text
    jobs = api.post("/v1/jobs", content='{"upload_id": ' + deep + "}", headers=headers)
    assert jobs.status_code == 400, jobs.text


def test_security_headers(api) -> None:
    made = api.post("/v1/keys", json={"name": "shown-once"})
    assert made.status_code == 201
    assert made.headers["cache-control"] == "no-store"  # a key shown once stays in no cache
    assert made.headers["x-content-type-options"] == "nosniff"
    refused = api.client.get("/v1/usage")  # answered by the auth middleware
    assert refused.status_code == 401 and refused.headers["cache-control"] == "no-store"
    assert api.client.get("/health").headers["x-content-type-options"] == "nosniff"


def test_record_ids_in_paths_have_one_shape(api) -> None:
    for path in ("/v1/jobs/job_" + "A" * 80, "/v1/history/det.x", "/v1/keys/key%20x/roll"):
        method = api.post if path.endswith("/roll") else api.get
        assert_error(method(path), 422, "invalid_input")
