"""The trust layer through the API: calibrated probabilities and operating points, the stability
check, ensembles with a per-model breakdown, and NOT_APPLICABLE with a typed reason."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from detect.engine import ServedModel
from detect.results import DetectionResult
from models.postprocess import verdict_for
from tests.audio_factory import encode as encode_audio
from tests.audio_factory import speech_like
from tests.conftest import assert_error
from tests.http.test_video import face_clip, post_video
from tests.media_factory import encode, jpeg_bytes

pytestmark = pytest.mark.http

IMAGE = "vit-dima806"
OTHER = "siglip-open-deepfake"


def platt(a: float, b: float, **thresholds: float) -> dict[str, Any]:
    points = {"balanced": 0.5, "high_precision": 0.9, "high_recall": 0.1} | thresholds
    return {"method": "platt", "params": {"a": a, "b": b}, "thresholds": points, "figures": {"ece": 0.01}}


@contextlib.contextmanager
def calibrated(service_module, model_id: str, block: dict[str, Any]) -> Iterator[None]:
    """The served model ``model_id`` as if ``python -m models calibrate`` had stored ``block``
    (the running engine's copy only; the model store is shared by the session)."""
    engine = service_module.app.state.engine
    models = engine.audio_models if model_id in engine.audio_models else engine.image_models
    served = models[model_id]
    stored = dataclasses.replace(served.stored, metadata={**served.stored.metadata, "calibration": block})
    models[model_id] = ServedModel(
        stored=stored, client=served.client, precision_reason=served.precision_reason
    )
    try:
        yield
    finally:
        models[model_id] = served


def post_image(api, data: bytes, params: str = "") -> Any:
    return api.post(f"/v1/detect/image{params}", files={"image": ("p.jpg", data, "application/octet-stream")})


def ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    DetectionResult.model_validate(body)
    return body


def sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


# -- calibration and operating points ------------------------------------------------------------


def test_an_uncalibrated_model_keeps_its_threshold_and_refuses_an_operating_point(api) -> None:
    body = ok(post_image(api, jpeg_bytes(seed=31)))
    assert body["calibrated"] is False and body["raw_score"] == body["fake_probability"]
    assert body["operating_point"] == {"name": "catalog", "threshold": 0.5, "source": "catalog"}
    refused = post_image(api, jpeg_bytes(seed=31), "?operating_point=high_precision")
    assert_error(refused, 422, "operating_point_unavailable")
    assert_error(post_image(api, jpeg_bytes(seed=31), "?operating_point=strict"), 422)


def test_a_calibrated_model_maps_its_score_and_decides_at_the_chosen_point(api, service_module) -> None:
    picture = jpeg_bytes(seed=32)
    raw = ok(post_image(api, picture))["raw_score"]
    with calibrated(service_module, IMAGE, platt(2.0, 0.5, high_precision=0.97, high_recall=0.03)):
        body = ok(post_image(api, picture))
        precise = ok(post_image(api, picture, "?operating_point=high_precision"))
        recall = ok(post_image(api, picture, "?operating_point=high_recall"))
        listed = {m["id"]: m for m in api.get("/v1/models").json()["models"]}
    expected = sigmoid(2.0 * logit(raw) + 0.5)
    assert body["calibrated"] is True and body["raw_score"] == pytest.approx(raw, abs=1e-6)
    assert body["fake_probability"] == pytest.approx(expected, abs=1e-5)
    assert body["operating_point"] == {"name": "balanced", "threshold": 0.5, "source": "calibration"}
    assert precise["threshold"] == 0.97 and precise["operating_point"]["name"] == "high_precision"
    assert recall["threshold"] == 0.03 and recall["verdict"] == "FAKE"  # any score over 0.08 is fake
    assert precise["verdict"] == verdict_for(expected, 0.97, 0.05)
    assert listed[IMAGE]["calibration"]["thresholds"]["high_precision"] == 0.97
    assert listed[OTHER]["calibration"] is None


def test_audio_results_are_calibrated_window_by_window(api, service_module) -> None:
    clip = encode_audio(speech_like(5.0, seed=3), 16_000, "wav")
    audio_id = api.get("/v1/models").json()["models"]
    audio_id = next(m["id"] for m in audio_id if m["modality"] == "audio" and m.get("served"))
    plain = ok(api.post("/v1/detect/audio", files={"audio": ("a.wav", clip, "audio/wav")}))
    with calibrated(service_module, audio_id, platt(-1.0, 0.0)):  # a map that reverses the scores
        body = ok(
            api.post(
                "/v1/detect/audio?operating_point=high_recall", files={"audio": ("a.wav", clip, "audio/wav")}
            )
        )
    assert body["raw_score"] == pytest.approx(plain["fake_probability"], abs=1e-6)
    assert body["fake_probability"] == pytest.approx(1 - plain["fake_probability"], abs=1e-5)
    for mine, theirs in zip(body["segments"], plain["segments"], strict=True):
        assert mine["fake_probability"] == pytest.approx(1 - theirs["fake_probability"], abs=1e-5)
    assert body["threshold"] == 0.1 and body["operating_point"]["name"] == "high_recall"


# -- the stability check -------------------------------------------------------------------------


def test_stability_reports_every_variant_and_its_spread(api) -> None:
    body = ok(post_image(api, jpeg_bytes(seed=33), "?stability=true"))
    stability = body["stability"]
    names = [v["name"] for v in stability["variants"]]
    assert names == ["original", "jpeg_q75", "resize_0.75", "crop_0.9"]
    scores = [v["fake_probability"] for v in stability["variants"]]
    assert scores[0] == body["fake_probability"]
    assert stability["spread"] == pytest.approx(max(scores) - min(scores), abs=2e-6)
    sides = {s >= body["threshold"] for s in scores}
    assert stability["stable"] is (len(sides) == 1)
    assert "stability" not in ok(post_image(api, jpeg_bytes(seed=33)))


def test_a_verdict_that_flips_under_the_variants_is_uncertain(api, service_module) -> None:
    picture = jpeg_bytes(seed=34)
    variants = ok(post_image(api, picture, "?stability=true"))["stability"]["variants"]
    scores = sorted(v["fake_probability"] for v in variants)
    assert scores[0] < scores[-1], "the variants must score apart for this test"
    # An identity map whose balanced threshold falls between the variants' scores.
    middle = round((scores[0] + scores[-1]) / 2, 9)
    with calibrated(service_module, IMAGE, platt(1.0, 0.0, balanced=middle)):
        body = ok(post_image(api, picture, "?stability=true"))
    assert body["stability"]["stable"] is False
    assert body["verdict"] == "UNCERTAIN"
    assert "unstable_verdict" in [w["code"] for w in body["warnings"]]


@pytest.mark.parametrize("strategy", ["temporal", "frames"])
def test_video_stability_runs_on_sampled_frames(api, strategy: str) -> None:
    body = ok(post_video(api, face_clip(), f"?fps=2&strategy={strategy}&stability=true"))
    stability = body["stability"]
    assert len(stability["variants"]) == 4 and 1 <= stability["frames"] <= 6
    assert body["timing_ms"]["stability"] > 0
    if not stability["stable"]:
        assert body["verdict"] == "UNCERTAIN"


def test_job_options_take_the_trust_options() -> None:
    from detect.files import parse_options

    options = parse_options(
        "image",
        {"stability": True, "operating_point": "high_recall", "models": [IMAGE, OTHER]},
        max_frames_cap=10,
    )
    assert options == {"stability": True, "operating_point": "high_recall", "models": [IMAGE, OTHER]}
    assert parse_options("video", {"stability": True}, max_frames_cap=10) == {"stability": True}


# -- ensembles -----------------------------------------------------------------------------------


def test_an_ensemble_keeps_every_models_own_score(api) -> None:
    picture = jpeg_bytes(seed=35)
    alone = {m: ok(post_image(api, picture, f"?model={m}")) for m in (IMAGE, OTHER)}
    body = ok(post_image(api, picture, f"?models={IMAGE},{OTHER}"))
    members = {m["id"]: m for m in body["models"]}
    assert list(members) == [IMAGE, OTHER]
    for model_id, single in alone.items():
        assert members[model_id]["fake_probability"] == pytest.approx(single["fake_probability"], abs=1e-5)
        assert members[model_id]["verdict"] == single["verdict"]
        assert members[model_id]["calibrated"] is False
    mean = (alone[IMAGE]["fake_probability"] + alone[OTHER]["fake_probability"]) / 2
    assert body["fake_probability"] == pytest.approx(mean, abs=1e-5)
    assert body["ensemble"]["method"] == "mean" and body["ensemble"]["count"] == 2
    assert body["model"]["id"] == IMAGE
    dev = [w for w in body["warnings"] if w["code"] == "dev_weights"]
    assert len(dev) == 2  # each member says it carries dev weights
    stable = ok(post_image(api, picture, f"?models={IMAGE},{OTHER}&stability=true"))
    assert stable["stability"]["variants"][0]["fake_probability"] == body["fake_probability"]


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        (f"?models={IMAGE}", 422, "invalid_input"),
        (f"?models={IMAGE},{OTHER}&model={IMAGE}", 422, "invalid_input"),
        (f"?models={IMAGE},{OTHER}&explain=true", 422, "invalid_input"),
        (f"?models={IMAGE},nope", 404, "model_not_found"),
    ],
)
def test_bad_ensembles_are_refused(api, params: str, status: int, code: str) -> None:
    assert_error(post_image(api, jpeg_bytes(seed=36), params), status, code)


# -- NOT_APPLICABLE ------------------------------------------------------------------------------


def test_a_tiny_picture_is_not_applicable_too_small(api) -> None:
    body = ok(post_image(api, jpeg_bytes(24, 18, seed=37)))
    assert body["verdict"] == "NOT_APPLICABLE" and body["fake_probability"] is None
    assert body["not_applicable"]["reason"] == "too_small"
    assert "too_small" in [w["code"] for w in body["warnings"]]
    assert "inference" not in body["timing_ms"]  # the model never ran
    history = api.get(f"/v1/history/{body['id']}").json()
    assert history["verdict"] == "NOT_APPLICABLE"


def test_a_black_picture_is_not_applicable_too_dark_but_a_dim_one_is_judged(api) -> None:
    from PIL import Image

    black = encode(Image.new("RGB", (320, 240), (3, 3, 3)), "JPEG", quality=90)
    body = ok(post_image(api, black))
    assert body["verdict"] == "NOT_APPLICABLE" and body["not_applicable"]["reason"] == "too_dark"
    dim = np.full((240, 320, 3), 4, np.uint8)
    dim[100:140, 100:220] = 200  # a lit window in a dark room
    judged = ok(post_image(api, encode(Image.fromarray(dim), "PNG")))
    assert judged["verdict"] != "NOT_APPLICABLE" and judged["fake_probability"] is not None


def test_silent_audio_is_not_applicable_no_speech(api) -> None:
    silent = encode_audio(np.zeros(16_000 * 3, np.float32), 16_000, "wav")
    body = ok(api.post("/v1/detect/audio", files={"audio": ("s.wav", silent, "audio/wav")}))
    assert body["verdict"] == "NOT_APPLICABLE" and body["fake_probability"] is None
    assert body["not_applicable"]["reason"] == "no_speech" and body["segments"] == []
    voiced = ok(
        api.post(
            "/v1/detect/audio",
            files={"audio": ("v.wav", encode_audio(speech_like(3.0), 16_000, "wav"), "audio/wav")},
        )
    )
    assert voiced["verdict"] != "NOT_APPLICABLE"
