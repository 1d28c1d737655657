"""Signed results: anyone holding the service's public keys can check later that a saved result
is the one the service gave, byte for byte in meaning.

The scheme, stated once:

- The signed bytes are the RFC 8785 (JSON Canonicalization Scheme) encoding of the result
  without its ``signature`` member: keys sorted, no whitespace, numbers in their shortest
  round-trip form, so any JSON library that parses the result can rebuild them.
- The signature is Ed25519 (``alg: "EdDSA"``, RFC 8037) over those bytes, base64url without
  padding, in ``signature: {"kid", "alg", "value"}``.
- ``kid`` is the key's RFC 7638 JWK thumbprint (SHA-256, base64url).
- The public keys are published as a JWK Set at ``/.well-known/jwks.json``: the current key and
  every previous one still listed in the settings, so results signed before a rotation still
  verify.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

if TYPE_CHECKING:
    from config import Settings

ALG = "EdDSA"
SIGNATURE = "signature"


class SignatureProblem(Exception):
    """Why a result does not verify, in words a person can act on."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def jwk_of(public: Ed25519PublicKey) -> dict[str, str]:
    """The public key as an OKP JWK (RFC 8037), with its thumbprint as ``kid``."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(_raw(public))}
    # RFC 7638: the required members only, in lexicographic order, no whitespace.
    thumbprint = hashlib.sha256(json.dumps(members, sort_keys=True, separators=(",", ":")).encode())
    return {**members, "kid": _b64url(thumbprint.digest()), "alg": ALG, "use": "sig"}


def signed_bytes(result: dict[str, Any]) -> bytes:
    """What the signature covers: the canonical (RFC 8785) JSON of ``result`` less its signature."""
    return rfc8785.dumps({k: v for k, v in result.items() if k != SIGNATURE})


@dataclass(frozen=True)
class ResultSigner:
    """Signs with the current key; publishes it beside the previous public keys."""

    key: Ed25519PrivateKey
    previous: tuple[Ed25519PublicKey, ...] = ()

    @property
    def kid(self) -> str:
        return jwk_of(self.key.public_key())["kid"]

    def sign(self, result: dict[str, Any]) -> dict[str, Any]:
        """``result`` with its ``signature`` (replacing any earlier one), signed as it stands:
        nothing may change in it afterwards."""
        value = self.key.sign(signed_bytes(result))
        result[SIGNATURE] = {"kid": self.kid, "alg": ALG, "value": _b64url(value)}
        return result

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        keys = [jwk_of(self.key.public_key()), *(jwk_of(p) for p in self.previous)]
        return {"keys": keys}


def public_keys(jwks: dict[str, Any]) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 keys of a JWK Set, by ``kid`` (recomputed: a set cannot lie about them)."""
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in jwks.get("keys", []):
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or "x" not in jwk:
            continue
        public = Ed25519PublicKey.from_public_bytes(_unb64url(jwk["x"]))
        keys[jwk_of(public)["kid"]] = public
    return keys


def verify(result: dict[str, Any], keys: dict[str, Ed25519PublicKey]) -> str:
    """The ``kid`` that signed ``result``; ``SignatureProblem`` when it does not verify."""
    signature = result.get(SIGNATURE)
    if not isinstance(signature, dict):
        raise SignatureProblem("the result carries no signature")
    if signature.get("alg") != ALG:
        raise SignatureProblem(f"unknown signature algorithm {signature.get('alg')!r} (expected {ALG})")
    kid = signature.get("kid")
    public = keys.get(kid) if isinstance(kid, str) else None
    if public is None:
        raise SignatureProblem(f"no published key has kid {kid!r}")
    try:
        value = _unb64url(str(signature.get("value", "")))
        public.verify(value, signed_bytes(result))
    except (InvalidSignature, ValueError) as exc:
        raise SignatureProblem("the signature does not match: the result was changed after signing") from exc
    return kid


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError("not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the signing key must be an Ed25519 private key (PKCS#8 PEM)")
    return key


def load_public_keys(pem: bytes) -> tuple[Ed25519PublicKey, ...]:
    """Every Ed25519 public key in a PEM bundle (previous keys, kept for verification)."""
    keys = []
    for block in _pem_blocks(pem):
        try:
            key = serialization.load_pem_public_key(block)
        except ValueError as exc:
            raise ValueError("a PEM block is not a public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("previous signing keys must be Ed25519 public keys (PEM)")
        keys.append(key)
    if not keys:
        raise ValueError("no PEM public key found")
    return tuple(keys)


def _pem_blocks(pem: bytes) -> Iterable[bytes]:
    end = b"-----END PUBLIC KEY-----"
    for part in pem.split(end)[:-1]:
        start = part.find(b"-----BEGIN PUBLIC KEY-----")
        if start >= 0:
            yield part[start:] + end + b"\n"


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# The label that makes a signing key out of a shared secret: one key per purpose, none reusable.
SIGNING_KEY_INFO = b"verity result signing key v1"


def derived_signing_key(secret: bytes) -> Ed25519PrivateKey:
    """An Ed25519 key from a secret (HKDF-SHA256 with ``SIGNING_KEY_INFO``): every instance that
    shares the secret signs with the same key, and nothing else is derived the same way."""
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=SIGNING_KEY_INFO).derive(secret)
    return Ed25519PrivateKey.from_private_bytes(seed)


def signer_from_settings(settings: Settings) -> ResultSigner | None:
    """The signer the settings describe, or None when none can be had (production with neither
    ``VERITY_SIGNING_KEY_FILE`` nor ``VERITY_JWT_SECRET``: results then go unsigned, and the
    caller says so at start). Order: the key file; a key derived from the JWT secret; in
    development, one derived from the development secret beside the database."""
    previous = ()
    if settings.signing_previous_keys_file is not None:
        previous = load_public_keys(settings.signing_previous_keys_file.read_bytes())
    if settings.signing_key_file is not None:
        return ResultSigner(load_private_key(settings.signing_key_file.read_bytes()), previous)
    if settings.jwt_secret is not None:
        secret = settings.jwt_secret.get_secret_value().encode()
    elif settings.environment in ("development", "test"):
        from auth.accounts import development_secret

        secret = development_secret(settings.dev_secret_path)  # type: ignore[arg-type]
    else:
        return None
    return ResultSigner(derived_signing_key(secret), previous)
