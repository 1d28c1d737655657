"""Content Credentials read offline (provenance/manifests.py), on media signed in the tests by a
throwaway CA (tests/c2pa_factory.py): the validation states, what the block reports, and the
precedence rule against the classifier."""

from __future__ import annotations

import copy

import pytest

from provenance.manifests import ProvenanceReader, apply_provenance
from tests.audio_factory import encode as encode_audio
from tests.audio_factory import speech_like
from tests.c2pa_factory import AI_GENERATED, CAMERA, other_root_pem, sign_media, tamper, throwaway_ca
from tests.media_factory import encode, jpeg_bytes, photo
from tests.video_factory import pattern_frames, write_opencv

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def signed_jpeg() -> bytes:
    return sign_media(jpeg_bytes(seed=3), "image/jpeg")


def test_no_manifest_means_the_classifier_decides() -> None:
    block = ProvenanceReader().read(jpeg_bytes(), "jpeg")
    assert block == {"present": False, "checked": True, "rule": "no_manifest"}


def test_a_signed_picture_is_valid_and_says_who_signed_it_and_what_it_declares(signed_jpeg) -> None:
    block = ProvenanceReader().read(signed_jpeg, "jpeg")
    assert block["present"] and block["validation_state"] == "Valid", block
    assert block["signer"]["common_name"] == "Verity Test Signer"
    assert block["signer"]["issuer"] == "Verity Test CA"
    assert block["claim_generator"] == "verity-tests 1.0"
    assert block["digital_source_type"] == "trainedAlgorithmicMedia"
    assert block["declares_ai"] is True
    assert block["actions"][0] == {
        "action": "c2pa.created",
        "digital_source_type": "trainedAlgorithmicMedia",
        "software_agent": "a test generator",
    }
    assert block["validation_errors"] == []
    assert block["rule"] == "declared_ai"


def test_trust_anchors_make_it_trusted_and_only_the_right_ones(signed_jpeg) -> None:
    trusted = ProvenanceReader(throwaway_ca().root_pem.decode()).read(signed_jpeg, "jpeg")
    assert trusted["validation_state"] == "Trusted", trusted
    stranger = ProvenanceReader(other_root_pem().decode()).read(signed_jpeg, "jpeg")
    assert stranger["validation_state"] == "Valid", stranger  # signed by a CA it does not trust


def test_a_flipped_byte_makes_it_invalid_with_the_reason(signed_jpeg) -> None:
    block = ProvenanceReader(throwaway_ca().root_pem.decode()).read(tamper(signed_jpeg), "jpeg")
    assert block["validation_state"] == "Invalid", block
    assert block["rule"] == "invalid_manifest"
    assert any("mismatch" in e["code"] or "hash" in e["code"] for e in block["validation_errors"]), block


def test_a_camera_manifest_declares_no_ai() -> None:
    block = ProvenanceReader().read(sign_media(jpeg_bytes(seed=4), "image/jpeg", source_type=CAMERA), "jpeg")
    assert block["digital_source_type"] == "digitalCapture" and block["declares_ai"] is False
    assert block["rule"] == "manifest_without_ai_claim"


@pytest.mark.parametrize(
    ("media_format", "mime", "make"),
    [
        ("png", "image/png", lambda: encode(photo(seed=5), "PNG")),
        ("webp", "image/webp", lambda: encode(photo(seed=6), "WEBP")),
        ("wav", "audio/wav", lambda: encode_audio(speech_like(1.0), 16_000, "wav")),
        ("mp4", "video/mp4", lambda: write_opencv(pattern_frames(10), 10.0, "mp4")),
    ],
)
def test_other_formats_carry_it_too(media_format: str, mime: str, make) -> None:
    signed = sign_media(make(), mime, source_type=AI_GENERATED)
    block = ProvenanceReader().read(signed, media_format)
    assert block["validation_state"] == "Valid" and block["declares_ai"], block


def test_a_format_without_c2pa_support_is_reported_as_unchecked() -> None:
    assert ProvenanceReader().read(b"anything", "bmp") == {
        "present": False,
        "checked": False,
        "rule": "no_manifest",
    }


def _classified(verdict: str = "REAL", probability: float = 0.1) -> dict:
    return {"verdict": verdict, "fake_probability": probability, "warnings": []}


def test_the_rule_a_valid_ai_declaration_outweighs_the_classifier(signed_jpeg) -> None:
    block = ProvenanceReader().read(signed_jpeg, "jpeg")
    result = apply_provenance(_classified(), block)
    assert result["verdict"] == "FAKE" and result["reason"] == "provenance"
    assert result["classifier"] == {"verdict": "REAL", "fake_probability": 0.1}
    assert result["fake_probability"] == 0.1  # the classifier's figure, kept


def test_the_rule_an_invalid_manifest_warns_and_the_classifier_decides(signed_jpeg) -> None:
    block = ProvenanceReader().read(tamper(signed_jpeg), "jpeg")
    result = apply_provenance(_classified(), copy.deepcopy(block))
    assert result["verdict"] == "REAL" and result["reason"] == "classifier"
    assert [w["code"] for w in result["warnings"]] == ["provenance_invalid"]
    assert "classifier" not in result


def test_the_rule_no_manifest_or_no_ai_claim_leaves_the_classifier_alone() -> None:
    for block in (
        ProvenanceReader().read(jpeg_bytes(), "jpeg"),
        ProvenanceReader().read(sign_media(jpeg_bytes(seed=7), "image/jpeg", source_type=CAMERA), "jpeg"),
    ):
        result = apply_provenance(_classified("FAKE", 0.9), block)
        assert result["verdict"] == "FAKE" and result["reason"] == "classifier" and not result["warnings"]


def test_the_trust_anchors_setting_must_be_a_readable_pem_bundle(tmp_path) -> None:
    from pydantic import ValidationError

    from config.settings import Settings

    anchors = tmp_path / "anchors.pem"
    with pytest.raises(ValidationError, match="cannot read"):
        Settings(c2pa_trust_anchors=anchors)
    anchors.write_text("not a certificate")
    with pytest.raises(ValidationError, match="no PEM certificate"):
        Settings(c2pa_trust_anchors=anchors)
    anchors.write_bytes(throwaway_ca().root_pem)
    assert Settings(c2pa_trust_anchors=anchors).c2pa_trust_anchors == anchors


def test_a_broken_manifest_store_is_invalid_and_an_unparseable_container_unchecked(signed_jpeg) -> None:
    broken = bytearray(signed_jpeg)
    broken[200] ^= 0xFF  # inside the manifest store (JPEG carries it in APP11 segments up front)
    block = ProvenanceReader().read(bytes(broken), "jpeg")
    assert block["validation_state"] == "Invalid" and block["rule"] == "invalid_manifest", block
    assert block["validation_errors"][0]["code"] == "manifest.unreadable"
    garbage = ProvenanceReader().read(b"\xff\xd8\xff" + b"x" * 100, "jpeg")
    assert garbage == {"present": False, "checked": False, "rule": "no_manifest"}
