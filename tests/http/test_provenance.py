"""Content Credentials through the API: media signed in the tests by a throwaway CA
(tests/c2pa_factory.py) sent to the detect routes; the result's ``provenance`` block, the rule
it triggered, and the history keeping both."""

from __future__ import annotations

import functools

import pytest

from tests.audio_factory import encode as encode_audio
from tests.audio_factory import speech_like
from tests.c2pa_factory import CAMERA, sign_media, tamper, throwaway_ca
from tests.media_factory import jpeg_bytes
from tests.video_factory import pattern_frames, write_opencv

pytestmark = pytest.mark.http


@functools.cache
def ai_jpeg() -> bytes:
    return sign_media(jpeg_bytes(seed=21), "image/jpeg")


def detect(api, route: str, field: str, data: bytes, name: str) -> dict:
    response = api.post(f"/v1/detect/{route}", files={field: (name, data, "application/octet-stream")})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_picture_declared_ai_by_valid_credentials_is_fake_whatever_the_classifier_says(api) -> None:
    body = detect(api, "image", "image", ai_jpeg(), "generated.jpg")
    assert body["verdict"] == "FAKE" and body["reason"] == "provenance"
    assert body["classifier"]["verdict"] in ("REAL", "FAKE", "UNCERTAIN")
    assert body["classifier"]["fake_probability"] == body["fake_probability"]
    provenance = body["provenance"]
    assert provenance["present"] and provenance["validation_state"] == "Valid"
    assert provenance["digital_source_type"] == "trainedAlgorithmicMedia" and provenance["declares_ai"]
    assert provenance["signer"]["common_name"] == "Verity Test Signer"
    assert provenance["rule"] == "declared_ai"
    assert body["timing_ms"]["provenance"] >= 0
    # The history holds the same result, provenance included.
    stored = api.get(f"/v1/history/{body['id']}").json()
    assert stored["provenance"] == provenance and stored["reason"] == "provenance"


def test_a_tampered_picture_warns_and_the_classifier_decides(api) -> None:
    body = detect(api, "image", "image", tamper(ai_jpeg()), "altered.jpg")
    assert body["reason"] == "classifier" and "classifier" not in body
    assert body["provenance"]["validation_state"] == "Invalid"
    assert body["provenance"]["rule"] == "invalid_manifest"
    assert "provenance_invalid" in [w["code"] for w in body["warnings"]]


def test_plain_and_camera_pictures_leave_the_verdict_to_the_classifier(api) -> None:
    plain = detect(api, "image", "image", jpeg_bytes(seed=22), "plain.jpg")
    assert plain["provenance"] == {"present": False, "checked": True, "rule": "no_manifest"}
    assert plain["reason"] == "classifier"
    camera = detect(
        api, "image", "image", sign_media(jpeg_bytes(seed=23), "image/jpeg", source_type=CAMERA), "c.jpg"
    )
    assert camera["provenance"]["rule"] == "manifest_without_ai_claim" and camera["reason"] == "classifier"


def test_audio_and_video_carry_it_too(api) -> None:
    wav = sign_media(encode_audio(speech_like(2.0), 16_000, "wav"), "audio/wav")
    audio = detect(api, "audio", "audio", wav, "voice.wav")
    assert audio["verdict"] == "FAKE" and audio["provenance"]["rule"] == "declared_ai"
    mp4 = sign_media(write_opencv(pattern_frames(20), 10.0, "mp4"), "video/mp4")
    video = detect(api, "video", "video", mp4, "clip.mp4")
    assert video["provenance"]["validation_state"] == "Valid" and video["provenance"]["declares_ai"]
    assert video["reason"] == "provenance"
    assert "provenance" not in (video.get("audio") or {})  # one block, for the file as a whole


def test_trust_anchors_from_the_settings_make_it_trusted(service_module, api, monkeypatch, tmp_path) -> None:
    from provenance.manifests import ProvenanceReader

    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(throwaway_ca().root_pem)
    engine = service_module.app.state.engine
    monkeypatch.setattr(engine, "provenance", ProvenanceReader.from_file(anchors))
    body = detect(api, "image", "image", ai_jpeg(), "generated.jpg")
    assert body["provenance"]["validation_state"] == "Trusted"


def test_reading_can_be_turned_off(service_module, api, monkeypatch) -> None:
    monkeypatch.setattr(service_module.app.state.engine, "provenance", None)
    body = detect(api, "image", "image", ai_jpeg(), "generated.jpg")
    assert "provenance" not in body and "reason" not in body
