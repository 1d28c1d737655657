"""Signed results (provenance/signing.py) and ``python -m provenance``: the stated scheme
(RFC 8785 JSON, Ed25519, RFC 7638 kid), any change detected, rotation, the command's exits."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from provenance.__main__ import main
from provenance.signing import (
    ResultSigner,
    SignatureProblem,
    _unb64url,
    jwk_of,
    load_public_keys,
    public_keys,
    public_pem,
    signed_bytes,
    verify,
)

pytestmark = pytest.mark.unit

RESULT = {
    "id": "det_01J0000000000000000000000A",
    "verdict": "REAL",
    "fake_probability": 0.123457,
    "segments": [{"start_s": 0.0, "end_s": 4.0, "fake_probability": 0.1}],
    "warnings": [{"code": "dev_weights", "message": "développement"}],
}


def signed(signer: ResultSigner) -> dict:
    return json.loads(json.dumps(signer.sign(copy.deepcopy(RESULT))))  # as saved and read back


def test_the_kid_is_the_rfc_7638_thumbprint_of_rfc_8037s_example_key() -> None:
    example = Ed25519PublicKey.from_public_bytes(_unb64url("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"))
    assert jwk_of(example)["kid"] == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_the_signed_bytes_are_canonical_json_without_the_signature() -> None:
    assert signed_bytes({"b": 1.0, "a": [0.5, "é"], "signature": {"x": 1}}) == b'{"a":[0.5,"\xc3\xa9"],"b":1}'


def test_a_saved_result_verifies_and_any_change_is_caught() -> None:
    signer = ResultSigner(Ed25519PrivateKey.generate())
    keys = public_keys(json.loads(json.dumps(signer.jwks())))
    result = signed(signer)
    assert result["signature"]["alg"] == "EdDSA" and verify(result, keys) == signer.kid
    for change in (
        lambda r: r.update(verdict="FAKE"),
        lambda r: r.update(fake_probability=0.123458),
        lambda r: r["segments"][0].update(end_s=4.5),
        lambda r: r["warnings"].pop(),
        lambda r: r.update(extra=None),
    ):
        altered = copy.deepcopy(result)
        change(altered)
        with pytest.raises(SignatureProblem, match="changed after signing"):
            verify(altered, keys)


def test_key_order_and_whitespace_do_not_matter() -> None:
    signer = ResultSigner(Ed25519PrivateKey.generate())
    result = signed(signer)
    reordered = json.loads(json.dumps(dict(reversed(list(result.items()))), indent=4))
    assert verify(reordered, public_keys(signer.jwks())) == signer.kid


def test_rotation_old_results_still_verify_with_the_published_previous_key() -> None:
    old = ResultSigner(Ed25519PrivateKey.generate())
    before = signed(old)
    new = ResultSigner(Ed25519PrivateKey.generate(), previous=load_public_keys(public_pem(old.key)))
    published = public_keys(new.jwks())
    assert verify(before, published) == old.kid and verify(signed(new), published) == new.kid
    with pytest.raises(SignatureProblem, match="no published key"):
        verify(before, public_keys(ResultSigner(new.key).jwks()))  # the old key dropped


def test_unsigned_and_wrong_algorithm_are_refused() -> None:
    with pytest.raises(SignatureProblem, match="no signature"):
        verify(dict(RESULT), {})
    result = signed(ResultSigner(Ed25519PrivateKey.generate()))
    result["signature"]["alg"] = "none"
    with pytest.raises(SignatureProblem, match="algorithm"):
        verify(result, {})


def test_the_command_exits_0_when_intact_1_when_changed_2_when_it_cannot_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    signer = ResultSigner(Ed25519PrivateKey.generate())
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(signer.jwks()))
    saved = tmp_path / "result.json"
    saved.write_text(json.dumps(signed(signer), indent=2))
    assert main(["verify", str(saved), "--keys", str(jwks)]) == 0
    text = saved.read_text().replace('"REAL"', '"FAKE"')
    saved.write_text(text)
    assert main(["verify", str(saved), "--keys", str(jwks)]) == 1
    assert "NOT intact" in caplog.text
    assert main(["verify", str(tmp_path / "missing.json"), "--keys", str(jwks)]) == 2


def test_keygen_writes_a_private_key_once(tmp_path: Path) -> None:
    out = tmp_path / "signing-key.pem"
    assert main(["keygen", "--out", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o600 and b"PRIVATE KEY" in out.read_bytes()
    assert main(["keygen", "--out", str(out)]) == 2  # never overwrites


def test_the_key_settings_must_hold_ed25519_keys(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from config.settings import Settings
    from provenance.signing import private_pem, signer_from_settings

    key_file, previous = tmp_path / "signing-key.pem", tmp_path / "previous.pem"
    with pytest.raises(ValidationError, match="VERITY_SIGNING_KEY_FILE: cannot read"):
        Settings(signing_key_file=key_file)
    key_file.write_text("not a key")
    with pytest.raises(ValidationError, match="not an unencrypted PEM private key"):
        Settings(signing_key_file=key_file)
    previous.write_text("")
    with pytest.raises(ValidationError, match="no PEM public key"):
        Settings(signing_previous_keys_file=previous)
    key = Ed25519PrivateKey.generate()
    key_file.write_bytes(private_pem(key))
    previous.write_bytes(public_pem(Ed25519PrivateKey.generate()))
    signer = signer_from_settings(Settings(signing_key_file=key_file, signing_previous_keys_file=previous))
    assert signer is not None and signer.kid == jwk_of(key.public_key())["kid"]
    assert len(signer.jwks()["keys"]) == 2


def test_without_a_key_file_the_key_follows_the_jwt_secret() -> None:
    from config.settings import Settings
    from provenance.signing import signer_from_settings

    one = signer_from_settings(Settings(jwt_secret="a" * 40))
    again = signer_from_settings(Settings(jwt_secret="a" * 40))
    other = signer_from_settings(Settings(jwt_secret="b" * 40))
    assert one is not None and again is not None and other is not None
    assert one.kid == again.kid != other.kid  # every instance sharing the secret signs alike
