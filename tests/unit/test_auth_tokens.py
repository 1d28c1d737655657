"""JWT (issue 3): Verity's own tokens and external JWKS issuers, attacked.

Keys are generated with ``cryptography``; forged tokens (``alg: none``, HS256 signed with an RSA
public key, non-string issuers) are assembled by hand because PyJWT refuses to make them. The JWKS
issuer is a real ``http.server`` on 127.0.0.1 that counts every fetch.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm

from auth.tokens import (
    LEEWAY_S,
    MAX_JWKS_BYTES,
    REQUIRED_CLAIMS,
    ExternalIssuer,
    JwksVerifier,
    OwnTokens,
    TokenVerifier,
)
from errors import ServiceUnavailable, Unauthorized
from tests.jwks import JwksEndpoint, rsa_jwk, serving

pytestmark = pytest.mark.unit

log = logging.getLogger(__name__)

ISSUER, AUDIENCE = "verity", "verity-api"
EXT_ISSUER, EXT_AUDIENCE = "https://issuer.example.test/", "verity-external"
HS_SECRET = b"0123456789abcdef0123456789abcdef-test-secret"


# --- keys and hand-made tokens ------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def hand_token(header: dict[str, Any], payload: dict[str, Any], sign: Any = None) -> str:
    """``base64url(header).base64url(payload).base64url(signature)``; ``sign`` maps the signing
    input to the signature bytes (none: an empty signature)."""
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    signature = sign(signing_input.encode("ascii")) if sign else b""
    return f"{signing_input}.{b64url(signature)}"


def hs256_with(secret: bytes):
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


def valid_claims(
    issuer: str = ISSUER, audience: str = AUDIENCE, now: float | None = None, **overrides: Any
) -> dict[str, Any]:
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": "usr_test",
        "iss": issuer,
        "aud": audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + 600,
        "role": "user",
        "email": "someone@example.com",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def pem_private(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem_public(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def own(algorithm: str, private: Any = None, public: Any = None, ttl_s: int = 600) -> OwnTokens:
    return OwnTokens(
        algorithm=algorithm,
        signing_key=private if private is not None else HS_SECRET,
        verifying_key=public if public is not None else HS_SECRET,
        issuer=ISSUER,
        audience=AUDIENCE,
        ttl_s=ttl_s,
    )


@pytest.fixture(scope="module")
def verifiers(rsa_key, ec_key) -> dict[str, OwnTokens]:
    return {
        "HS256": own("HS256"),
        "RS256": own("RS256", pem_private(rsa_key), pem_public(rsa_key)),
        "ES256": own("ES256", pem_private(ec_key), pem_public(ec_key)),
    }


def rejected(verifier: Any, token: str, code: str = "invalid_token") -> Unauthorized:
    with pytest.raises(Unauthorized) as raised:
        verifier.verify(token)
    assert raised.value.status == 401
    assert raised.value.code == code, raised.value.message
    assert raised.value.headers["WWW-Authenticate"].startswith("Bearer")
    return raised.value


ALGORITHMS = ["HS256", "RS256", "ES256"]


# --- own tokens: configuration and the happy path -----------------------------------------------


def test_hs256_needs_a_32_byte_secret_and_known_algorithms() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        OwnTokens(
            algorithm="HS256", signing_key=b"x" * 31, verifying_key=b"x" * 31, issuer=ISSUER,
            audience=AUDIENCE, ttl_s=60,
        )  # fmt: skip
    for algorithm in ("none", "HS512", "PS256"):
        with pytest.raises(ValueError, match="unsupported"):
            own(algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_issue_and_verify(verifiers, algorithm: str) -> None:
    tokens = verifiers[algorithm]
    token = tokens.issue("usr_1", role="admin", email="a@example.com")
    assert jwt.get_unverified_header(token)["alg"] == algorithm
    claims = tokens.verify(token)
    assert (claims.subject, claims.issuer, claims.role, claims.email) == (
        "usr_1",
        ISSUER,
        "admin",
        "a@example.com",
    )
    assert set(REQUIRED_CLAIMS) <= set(claims.raw)
    assert claims.raw["exp"] - claims.raw["iat"] == 600


# --- alg: none ----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_alg_none_is_rejected(verifiers, algorithm: str, alg: str) -> None:
    token = hand_token({"alg": alg, "typ": "JWT"}, valid_claims())
    assert token.endswith(".")  # the classic unsigned token
    rejected(verifiers[algorithm], token)
    # ... also with some signature bytes, and through the issuer router.
    rejected(verifiers[algorithm], hand_token({"alg": alg}, valid_claims(), lambda _: b"sig"))
    rejected(TokenVerifier(verifiers[algorithm], []), token)


def test_missing_alg_header_is_rejected(verifiers) -> None:
    rejected(verifiers["HS256"], hand_token({"typ": "JWT"}, valid_claims(), hs256_with(HS_SECRET)))


# --- algorithm confusion: HS256 signed with the RS256 public key ---------------------------------


def test_hs256_signed_with_the_rs256_public_key_is_rejected(verifiers, rsa_key) -> None:
    public_pem = pem_public(rsa_key)
    # PyJWT will not even make this token (a PEM is refused as an HMAC secret) ...
    with pytest.raises(jwt.InvalidKeyError):
        jwt.encode(valid_claims(), public_pem, algorithm="HS256")
    # ... so forge it by hand, exactly as an attacker would (with and without the trailing newline).
    for secret in (public_pem, public_pem.strip()):
        forged = hand_token({"alg": "HS256", "typ": "JWT"}, valid_claims(role="admin"), hs256_with(secret))
        head, body, signature = forged.split(".")
        assert hmac.compare_digest(
            base64.urlsafe_b64decode(signature + "=="),
            hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest(),
        )
        error = rejected(verifiers["RS256"], forged)
        assert "algorithm" in error.message
        rejected(TokenVerifier(verifiers["RS256"], []), forged)


def test_hs256_signed_with_the_es256_public_key_is_rejected(verifiers, ec_key) -> None:
    forged = hand_token({"alg": "HS256"}, valid_claims(), hs256_with(pem_public(ec_key)))
    rejected(verifiers["ES256"], forged)


def test_a_token_of_another_pinned_algorithm_is_rejected(verifiers) -> None:
    hs_token = verifiers["HS256"].issue("usr_1", role="user", email="a@example.com")
    rs_token = verifiers["RS256"].issue("usr_1", role="user", email="a@example.com")
    rejected(verifiers["RS256"], hs_token)
    rejected(verifiers["HS256"], rs_token)
    rejected(verifiers["ES256"], rs_token)


def test_a_token_signed_by_another_key_is_rejected(verifiers, other_rsa_key) -> None:
    stranger = own("RS256", pem_private(other_rsa_key), pem_public(other_rsa_key))
    rejected(verifiers["RS256"], stranger.issue("usr_1", role="admin", email="a@example.com"))
    other_secret = jwt.encode(valid_claims(), b"another-secret-of-at-least-32-bytes!", algorithm="HS256")
    rejected(verifiers["HS256"], other_secret)


# --- time claims ----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_expired_beyond_leeway_is_rejected(verifiers, algorithm: str) -> None:
    tokens = verifiers[algorithm]
    expired = tokens.issue("usr_1", role="user", email="a@x.io", now=time.time() - 600 - LEEWAY_S - 5)
    error = rejected(tokens, expired, "token_expired")
    assert "expired" in error.message


def test_expired_within_leeway_is_accepted(verifiers) -> None:
    tokens = verifiers["HS256"]
    token = tokens.issue("usr_1", role="user", email="a@x.io", now=time.time() - 600 - LEEWAY_S + 10)
    assert tokens.verify(token).subject == "usr_1"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_future_nbf_is_rejected(verifiers, rsa_key, ec_key, algorithm: str) -> None:
    signing = {"HS256": HS_SECRET, "RS256": pem_private(rsa_key), "ES256": pem_private(ec_key)}[algorithm]
    future = valid_claims(nbf=int(time.time()) + LEEWAY_S + 60)
    token = jwt.encode(future, signing, algorithm=algorithm)
    rejected(verifiers[algorithm], token, "token_not_yet_valid")
    # Within the leeway a slightly fast clock elsewhere is tolerated.
    near = jwt.encode(valid_claims(nbf=int(time.time()) + LEEWAY_S - 10), signing, algorithm=algorithm)
    assert verifiers[algorithm].verify(near).subject == "usr_test"


def test_future_iat_is_rejected(verifiers) -> None:
    token = jwt.encode(valid_claims(now=time.time() + LEEWAY_S + 120), HS_SECRET, algorithm="HS256")
    rejected(verifiers["HS256"], token, "token_not_yet_valid")


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_missing_required_claim_is_rejected(verifiers, claim: str) -> None:
    token = jwt.encode(valid_claims(**{claim: None}), HS_SECRET, algorithm="HS256")
    assert claim not in jwt.decode(token, options={"verify_signature": False})
    error = rejected(verifiers["HS256"], token)
    assert claim in error.message


def test_missing_exp_is_rejected_for_every_algorithm(verifiers, rsa_key, ec_key) -> None:
    keys = {"HS256": HS_SECRET, "RS256": pem_private(rsa_key), "ES256": pem_private(ec_key)}
    for algorithm, signing in keys.items():
        token = jwt.encode(valid_claims(exp=None), signing, algorithm=algorithm)
        assert "exp" in rejected(verifiers[algorithm], token).message


# --- audience and issuer ---------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_wrong_audience_is_rejected(verifiers, rsa_key, ec_key, algorithm: str) -> None:
    signing = {"HS256": HS_SECRET, "RS256": pem_private(rsa_key), "ES256": pem_private(ec_key)}[algorithm]
    for audience in ("another-api", ["another-api"], ""):
        token = jwt.encode(valid_claims(audience=audience), signing, algorithm=algorithm)
        rejected(verifiers[algorithm], token)


def test_wrong_issuer_is_rejected(verifiers) -> None:
    token = jwt.encode(valid_claims(issuer="someone-else"), HS_SECRET, algorithm="HS256")
    assert "issuer" in rejected(verifiers["HS256"], token).message
    # The router does not know that issuer at all.
    assert "issuer" in rejected(TokenVerifier(verifiers["HS256"], []), token).message


@pytest.mark.parametrize("issuer", [["verity"], {"iss": "verity"}, 7, None])
def test_a_non_string_issuer_is_401_not_a_crash(verifiers, issuer) -> None:
    """A forged ``iss`` that is a list or object used to raise TypeError (unhashable) in the
    router: a 500 from the auth middleware instead of a 401."""
    payload = valid_claims()
    payload["iss"] = issuer
    token = hand_token({"alg": "HS256", "typ": "JWT"}, payload, hs256_with(HS_SECRET))
    rejected(TokenVerifier(verifiers["HS256"], []), token)


# --- tampering -------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_tampered_payload_is_rejected(verifiers, algorithm: str) -> None:
    tokens = verifiers[algorithm]
    token = tokens.issue("usr_1", role="user", email="a@example.com")
    head, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    for change in ({"role": "admin"}, {"sub": "usr_2"}, {"exp": claims["exp"] + 86400}):
        tampered = f"{head}.{b64json({**claims, **change})}.{signature}"
        rejected(tokens, tampered)
        rejected(TokenVerifier(tokens, []), tampered)
    # A flipped signature byte, and a dropped signature.
    flipped = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    flipped[0] ^= 1
    rejected(tokens, f"{head}.{body}.{b64url(bytes(flipped))}")
    rejected(tokens, f"{head}.{body}.")


@pytest.mark.parametrize("garbage", ["", "abc", "a.b", "a.b.c", "....", "Bearer x", "eyJ.eyJ.eyJ"])
def test_garbage_tokens_are_rejected(verifiers, garbage: str) -> None:
    rejected(TokenVerifier(verifiers["HS256"], []), garbage)
    rejected(verifiers["HS256"], garbage)


# --- external issuers: a real JWKS endpoint ---------------------------------------------------------


@pytest.fixture(scope="module")
def endpoint() -> Iterator[JwksEndpoint]:
    with serving() as served:
        yield served


def external_token(key: Any, kid: str, algorithm: str = "RS256", **overrides: Any) -> str:
    claims = valid_claims(
        **{"issuer": EXT_ISSUER, "audience": EXT_AUDIENCE, "sub": "ext-user-1", **overrides}
    )
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


def jwks_verifier(
    endpoint: JwksEndpoint, cooldown_s: float = 60.0, verifier: dict[str, Any] | None = None, **config: Any
) -> JwksVerifier:
    """A verifier of the test issuer; the endpoint is plain http on 127.0.0.1, so allow-listed."""
    issuer = ExternalIssuer(issuer=EXT_ISSUER, jwks_url=endpoint.url, audience=EXT_AUDIENCE, **config)
    options = {"insecure_hosts": ["127.0.0.1"], **(verifier or {})}
    return JwksVerifier(issuer, refetch_cooldown_s=cooldown_s, **options)


def unavailable(verifier: Any, token: str) -> ServiceUnavailable:
    """The issuer's keys cannot be had: a 503 to retry, never a 401 (nor an exception: a 500)."""
    with pytest.raises(ServiceUnavailable) as raised:
        verifier.verify(token)
    assert raised.value.status == 503
    assert raised.value.code == "issuer_unavailable", raised.value.message
    assert int(raised.value.headers["Retry-After"]) >= 1
    return raised.value


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_external_issuers_need_pinned_asymmetric_algorithms(endpoint) -> None:
    for algorithms in (["HS256"], ["RS256", "HS512"], ["none"], []):
        with pytest.raises(ValueError, match="asymmetric"):
            jwks_verifier(endpoint, algorithms=algorithms)


def test_jwks_token_is_verified_and_keys_are_cached(endpoint, rsa_key) -> None:
    endpoint.reset([rsa_jwk(rsa_key, "k1")])
    verifier = jwks_verifier(endpoint)
    for _ in range(5):
        claims = verifier.verify(external_token(rsa_key, "k1"))
        assert (claims.subject, claims.issuer, claims.role) == ("ext-user-1", EXT_ISSUER, "user")
    assert endpoint.fetches == 1
    assert verifier.fetches == 1


def test_unknown_kid_flood_fetches_at_most_once_per_cooldown(endpoint, rsa_key, other_rsa_key) -> None:
    endpoint.reset([rsa_jwk(rsa_key, "k1")])
    verifier = jwks_verifier(endpoint, cooldown_s=60.0)
    assert verifier.verify(external_token(rsa_key, "k1")).subject == "ext-user-1"
    assert endpoint.fetches == 1
    for i in range(100):
        rejected(verifier, external_token(other_rsa_key, f"forged-{i}"))
    assert endpoint.fetches == 1  # the flood cost no fetch: the first one is within the cooldown
    # Known keys keep working during and after the flood.
    assert verifier.verify(external_token(rsa_key, "k1")).subject == "ext-user-1"


def test_unknown_kid_flood_on_a_cold_cache_fetches_once(endpoint, other_rsa_key) -> None:
    endpoint.reset([])
    verifier = jwks_verifier(endpoint, cooldown_s=60.0)
    tokens = [external_token(other_rsa_key, f"forged-{i}") for i in range(100)]

    def attempt(token: str) -> str:
        try:
            verifier.verify(token)
        except Unauthorized as exc:
            return exc.code
        return "accepted"

    with ThreadPoolExecutor(max_workers=16) as pool:  # concurrently, too
        outcomes = list(pool.map(attempt, tokens))
    assert outcomes == ["invalid_token"] * 100
    assert endpoint.fetches == 1


def test_a_rotated_key_is_picked_up_after_the_cooldown(endpoint, rsa_key, other_rsa_key) -> None:
    cooldown = 0.5
    endpoint.reset([rsa_jwk(rsa_key, "k1")])
    verifier = jwks_verifier(endpoint, cooldown_s=cooldown)
    started = time.monotonic()  # before the first fetch: the cooldown runs from a later instant
    assert verifier.verify(external_token(rsa_key, "k1")).subject == "ext-user-1"

    endpoint.reset([rsa_jwk(other_rsa_key, "k2")])  # the issuer rotates: k1 out, k2 in
    rotated = external_token(other_rsa_key, "k2")
    if time.monotonic() - started < cooldown * 0.8:  # still within the cooldown: no refetch yet
        rejected(verifier, rotated)
        assert endpoint.fetches == 0
    time.sleep(cooldown + 0.1)
    assert verifier.verify(rotated).subject == "ext-user-1"
    assert endpoint.fetches == 1
    # The retired key is gone with the refetch; asking for it again within the cooldown costs nothing.
    rejected(verifier, external_token(rsa_key, "k1"))
    assert endpoint.fetches == 1


def test_external_algorithm_confusion_is_rejected_without_a_fetch(endpoint, rsa_key) -> None:
    endpoint.reset([rsa_jwk(rsa_key, "k1")])
    verifier = jwks_verifier(endpoint)
    claims = valid_claims(issuer=EXT_ISSUER, audience=EXT_AUDIENCE)
    forged_hs = hand_token({"alg": "HS256", "kid": "k1"}, claims, hs256_with(pem_public(rsa_key)))
    unsigned = hand_token({"alg": "none", "kid": "k1"}, claims)
    jwk_secret = hand_token(  # HMAC keyed with the published JWK's modulus
        {"alg": "HS256", "kid": "k1"}, claims, hs256_with(rsa_jwk(rsa_key, "k1")["n"].encode())
    )
    for token in (forged_hs, unsigned, jwk_secret):
        assert "algorithm" in rejected(verifier, token).message
    assert endpoint.fetches == 0  # refused on the pinned list, before any key lookup


def test_es256_key_cannot_verify_a_pinned_rs256_issuer(endpoint, rsa_key, ec_key) -> None:
    es_jwk = {**ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True), "kid": "e1", "alg": "ES256"}
    endpoint.reset([rsa_jwk(rsa_key, "k1"), es_jwk])
    verifier = jwks_verifier(endpoint)  # pinned to RS256
    rejected(verifier, external_token(ec_key, "e1", algorithm="ES256"))
    both = jwks_verifier(endpoint, algorithms=["RS256", "ES256"])
    assert both.verify(external_token(ec_key, "e1", algorithm="ES256")).subject == "ext-user-1"
    # A key published for RS256 does not verify a token claiming ES256, and vice versa.
    forged = hand_token({"alg": "ES256", "kid": "k1"}, valid_claims(issuer=EXT_ISSUER, audience=EXT_AUDIENCE))
    rejected(both, forged)


def test_external_claims_are_checked(endpoint, rsa_key) -> None:
    endpoint.reset([rsa_jwk(rsa_key, "k1")])
    verifier = jwks_verifier(endpoint)
    past = time.time() - 600 - LEEWAY_S - 5
    rejected(verifier, external_token(rsa_key, "k1", now=past), "token_expired")
    future = int(time.time()) + LEEWAY_S + 60
    rejected(verifier, external_token(rsa_key, "k1", nbf=future), "token_not_yet_valid")
    rejected(verifier, external_token(rsa_key, "k1", exp=None))
    rejected(verifier, external_token(rsa_key, "k1", audience="verity-api"))
    rejected(verifier, external_token(rsa_key, "k1", aud=None))
    rejected(verifier, external_token(rsa_key, "k1", issuer="https://elsewhere.example/"))
    token = external_token(rsa_key, "k1", role="admin")
    head, body, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    rejected(verifier, f"{head}.{b64json({**payload, 'sub': 'someone-else'})}.{signature}")
    # An external token's role claim is never trusted: external users are plain users.
    assert verifier.verify(token).role == "user"


@pytest.mark.parametrize(
    "broken",
    [
        {"raw": b"<html>502 Bad Gateway</html>"},
        {"raw": b"[1, 2, 3]"},
        {"raw": b'{"keys": "none"}'},
        {"raw": b'{"keys": [' + b"[" * 100_000 + b"]"},  # nesting: RecursionError in json
        {"raw": b"\xff\xfe\x00garbage"},
        {"status": 500},
        {"status": 404},
        {"redirect_to": "http://localhost:9/jwks.json"},  # a hop off the allow-list
        {"redirect_to": "file:///etc/passwd"},
    ],
    ids=[
        "html",
        "list",
        "keys-not-list",
        "deep-nesting",
        "binary",
        "http-500",
        "http-404",
        "redirect",
        "file",
    ],
)
def test_a_broken_jwks_endpoint_is_a_503_not_a_401_or_a_crash(
    endpoint, rsa_key, broken: dict[str, Any]
) -> None:
    endpoint.reset([rsa_jwk(rsa_key, "k1")])
    for attribute, value in broken.items():
        setattr(endpoint, attribute, value)
    verifier = jwks_verifier(endpoint, cooldown_s=0.2)
    unavailable(verifier, external_token(rsa_key, "k1"))
    unavailable(verifier, external_token(rsa_key, "k1"))  # within the cooldown: no second fetch
    assert endpoint.fetches == 1
    endpoint.reset([rsa_jwk(rsa_key, "k1")])  # the issuer recovers
    time.sleep(0.3)
    assert verifier.verify(external_token(rsa_key, "k1")).subject == "ext-user-1"


def test_a_jwks_document_of_unusable_keys_is_a_healthy_fetch(endpoint, rsa_key) -> None:
    """The issuer answered with a well-formed document: its junk keys are skipped, and a token
    whose kid is not among the usable ones is a plain 401."""
    endpoint.reset([42, "x", {"kty": "nope", "kid": "k1"}, {"kty": "RSA", "kid": "k2"}])  # type: ignore[list-item]
    verifier = jwks_verifier(endpoint)
    rejected(verifier, external_token(rsa_key, "k1"))
    assert endpoint.fetches == 1


def test_an_unreachable_issuer_is_a_503(rsa_key) -> None:
    with serving() as gone:
        url = gone.url
    # Nothing listens on that port any more: connection refused.
    issuer = ExternalIssuer(issuer=EXT_ISSUER, jwks_url=url, audience=EXT_AUDIENCE)
    verifier = JwksVerifier(issuer, insecure_hosts=["127.0.0.1"])
    unavailable(verifier, external_token(rsa_key, "k1"))
    unavailable(TokenVerifier(own("HS256"), [verifier]), external_token(rsa_key, "k1"))


# --- JWKS URLs: https only ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://issuer.example.test/.well-known/jwks.json",
        "http://127.0.0.1:8080/jwks.json",  # loopback too, unless allow-listed
        "ftp://issuer.example.test/jwks.json",
        "file:///etc/jwks.json",
        "https:///jwks.json",  # no host
        "https://user:secret@issuer.example.test/jwks.json",
        "issuer.example.test/jwks.json",
    ],
)
def test_a_jwks_url_that_is_not_https_is_refused_at_start(url: str) -> None:
    issuer = ExternalIssuer(issuer=EXT_ISSUER, jwks_url=url, audience=EXT_AUDIENCE)
    with pytest.raises(ValueError, match="JWKS URL"):
        JwksVerifier(issuer)
    if not url.startswith("http://"):  # the allow-list admits plain http, nothing else
        with pytest.raises(ValueError, match="JWKS URL"):
            JwksVerifier(issuer, insecure_hosts=["issuer.example.test", "localhost"])


def test_http_is_accepted_only_for_allow_listed_hosts() -> None:
    def verifier(url: str, hosts: list[str]) -> JwksVerifier:
        return JwksVerifier(
            ExternalIssuer(issuer=EXT_ISSUER, jwks_url=url, audience=EXT_AUDIENCE), insecure_hosts=hosts
        )

    verifier("https://issuer.example.test/.well-known/jwks.json", [])
    verifier("http://127.0.0.1:8080/jwks.json", ["127.0.0.1"])
    verifier("http://LOCALHOST:8080/jwks.json", ["localhost"])
    with pytest.raises(ValueError, match="https"):
        verifier("http://127.0.0.2:8080/jwks.json", ["127.0.0.1"])


def test_the_settings_refuse_an_http_jwks_url_at_start(tmp_path) -> None:
    from auth.accounts import build_token_verifier
    from config import Settings

    issuers = [{"issuer": EXT_ISSUER, "jwks_url": "http://127.0.0.1:1/jwks.json", "audience": EXT_AUDIENCE}]
    base = {"dev_secret_path": tmp_path / "dev-secret", "jwt_external_issuers": issuers}
    with pytest.raises(ValueError, match="must be https"):
        build_token_verifier(Settings(**base))
    _, router = build_token_verifier(Settings(**base, jwks_insecure_hosts="127.0.0.1"))
    assert EXT_ISSUER in router.external
    # The variable takes a comma-separated list, like VERITY_WEBHOOK_ALLOWED_HOSTS.
    assert Settings(jwks_insecure_hosts="127.0.0.1, localhost").jwks_insecure_hosts == [
        "127.0.0.1",
        "localhost",
    ]


# --- JWKS responses: bounded size ---------------------------------------------------------------


@pytest.mark.parametrize("send_length", [True, False], ids=["declared", "undeclared"])
def test_an_oversized_jwks_document_is_a_failed_fetch(endpoint, rsa_key, send_length: bool) -> None:
    document = {"keys": [rsa_jwk(rsa_key, "k1")], "padding": "x" * MAX_JWKS_BYTES}
    endpoint.reset([])
    endpoint.raw = json.dumps(document).encode()
    endpoint.send_length = send_length
    verifier = jwks_verifier(endpoint)
    unavailable(verifier, external_token(rsa_key, "k1"))
    assert endpoint.fetches == 1
    # Just under the cap is fine (the cap is on bytes read, not on the key count).
    endpoint.reset([])
    endpoint.raw = json.dumps({**document, "padding": "x" * (MAX_JWKS_BYTES - 2000)}).encode()
    endpoint.send_length = send_length
    assert len(endpoint.raw) <= MAX_JWKS_BYTES
    assert jwks_verifier(endpoint).verify(external_token(rsa_key, "k1")).subject == "ext-user-1"


# --- JWKS cache: expiry and stale-if-error ------------------------------------------------------


def test_cached_keys_expire_and_are_refetched_even_for_a_known_kid(endpoint, rsa_key) -> None:
    clock = FakeClock()
    endpoint.reset([rsa_jwk(rsa_key, "k1")])
    verifier = jwks_verifier(endpoint, verifier={"ttl_s": 600, "clock": clock})
    token = external_token(rsa_key, "k1")
    assert verifier.verify(token).subject == "ext-user-1"
    clock.now += 599
    assert verifier.verify(token).subject == "ext-user-1"
    assert endpoint.fetches == 1  # within the TTL: the cache answers
    clock.now += 2
    assert verifier.verify(token).subject == "ext-user-1"
    assert endpoint.fetches == 2  # past it: refetched although k1 was known
    # The issuer withdraws k1: once the TTL runs out again, k1 tokens stop.
    endpoint.reset([])
    clock.now += 601
    rejected(verifier, token)
    assert endpoint.fetches == 1


def test_stale_keys_serve_for_a_bounded_time_when_the_refetch_fails(endpoint, rsa_key) -> None:
    clock = FakeClock()
    endpoint.reset([rsa_jwk(rsa_key, "k1")])
    options = {"ttl_s": 600, "stale_s": 300, "clock": clock}
    verifier = jwks_verifier(endpoint, cooldown_s=60, verifier=options)
    token = external_token(rsa_key, "k1")
    assert verifier.verify(token).subject == "ext-user-1"

    endpoint.status = 503  # the issuer goes down
    clock.now += 650
    assert verifier.verify(token).subject == "ext-user-1"  # stale, within the grace
    assert endpoint.fetches == 2
    clock.now += 30
    assert verifier.verify(token).subject == "ext-user-1"
    assert endpoint.fetches == 2  # failed refetches are retried once per cooldown, not per token
    # A kid it never saw cannot be told apart from a rotation the outage hides: 503, not 401.
    unavailable(verifier, external_token(rsa_key, "k-new"))
    clock.now += 250  # 930 s since the good fetch: past TTL + stale
    unavailable(verifier, token)
    assert endpoint.fetches == 3

    endpoint.reset([rsa_jwk(rsa_key, "k1")])  # back up
    clock.now += 60
    assert verifier.verify(token).subject == "ext-user-1"
    assert endpoint.fetches == 1


def test_router_sends_each_token_to_its_issuer(endpoint, rsa_key, verifiers) -> None:
    endpoint.reset([rsa_jwk(rsa_key, "k1")])
    router = TokenVerifier(verifiers["HS256"], [jwks_verifier(endpoint)])
    assert router.verify(external_token(rsa_key, "k1")).issuer == EXT_ISSUER
    assert router.verify(verifiers["HS256"].issue("usr_9", role="user", email="b@x.io")).subject == "usr_9"
    # An own-issuer token signed with the external key, and vice versa, fail.
    rejected(
        router, jwt.encode(valid_claims(), pem_private(rsa_key), algorithm="RS256", headers={"kid": "k1"})
    )
    forged = jwt.encode(valid_claims(issuer=EXT_ISSUER, audience=EXT_AUDIENCE), HS_SECRET, algorithm="HS256")
    rejected(router, forged)
