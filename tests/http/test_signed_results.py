"""Signed results through the API: every detection is signed, the keys are public at
/.well-known/jwks.json, the history keeps the signed result, and ``python -m provenance verify``
checks a saved one the way the README says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provenance.__main__ import main as provenance_cli
from provenance.signing import SignatureProblem, public_keys, verify
from tests.media_factory import jpeg_bytes

pytestmark = pytest.mark.http


def detect_image(api) -> dict:
    response = api.post("/v1/detect/image", files={"image": ("a.jpg", jpeg_bytes(seed=31), "image/jpeg")})
    assert response.status_code == 200, response.text
    return response.json()


def test_results_are_signed_with_a_published_key(api, client) -> None:
    jwks = client.get("/.well-known/jwks.json")  # no credentials needed
    assert jwks.status_code == 200 and jwks.headers["cache-control"].startswith("public")
    keys = public_keys(jwks.json())
    body = detect_image(api)
    assert body["signature"]["alg"] == "EdDSA" and body["signature"]["kid"] in keys
    assert verify(body, keys) == body["signature"]["kid"]
    stored = api.get(f"/v1/history/{body['id']}").json()
    assert stored == body and verify(stored, keys)
    body["verdict"] = "FAKE" if body["verdict"] != "FAKE" else "REAL"
    with pytest.raises(SignatureProblem):
        verify(body, keys)


def test_a_saved_result_verifies_offline_with_the_command(api, client, tmp_path: Path) -> None:
    saved, keys = tmp_path / "result.json", tmp_path / "jwks.json"
    saved.write_text(json.dumps(detect_image(api)))
    keys.write_text(client.get("/.well-known/jwks.json").text)
    assert provenance_cli(["verify", str(saved), "--keys", str(keys)]) == 0
    altered = json.loads(saved.read_text())
    altered["fake_probability"] = round(1 - altered["fake_probability"], 6)
    saved.write_text(json.dumps(altered))
    assert provenance_cli(["verify", str(saved), "--keys", str(keys)]) == 1
