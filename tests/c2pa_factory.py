"""Content Credentials made in the tests: a throwaway two-level CA (root -> intermediate ->
signer, ECDSA P-256, made with ``cryptography``) and media signed with c2pa-python's Builder.

Nothing here is fetched or checked in: every test run makes its own keys, so no private key
lives in the repository and no certificate expires under the tests.
"""

from __future__ import annotations

import datetime
import io
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
AI_GENERATED = IPTC + "trainedAlgorithmicMedia"
CAMERA = IPTC + "digitalCapture"


@dataclass(frozen=True)
class ThrowawayCA:
    root_pem: bytes
    chain_pem: bytes  # signer + intermediate: what a C2PA signer embeds
    signer_key_pem: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Verity Test CA"),
        ]
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    path_length: int | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if not ca:  # C2PA signers need an extended key usage it accepts
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@lru_cache(maxsize=1)
def throwaway_ca() -> ThrowawayCA:
    root_key, middle_key, signer_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _certificate("Verity Test Root", root_key, "Verity Test Root", root_key, ca=True, path_length=1)
    middle = _certificate(
        "Verity Test Intermediate", middle_key, "Verity Test Root", root_key, ca=True, path_length=0
    )
    signer = _certificate("Verity Test Signer", signer_key, "Verity Test Intermediate", middle_key, ca=False)
    pem = serialization.Encoding.PEM
    return ThrowawayCA(
        root_pem=root.public_bytes(pem),
        chain_pem=signer.public_bytes(pem) + middle.public_bytes(pem),
        signer_key_pem=signer_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def other_root_pem() -> bytes:
    """A root that signed nothing here: as a trust anchor it trusts none of the test media."""
    key = ec.generate_private_key(ec.SECP256R1())
    root = _certificate("Unrelated Root", key, "Unrelated Root", key, ca=True, path_length=1)
    return root.public_bytes(serialization.Encoding.PEM)


def sign_media(
    media: bytes,
    mime: str,
    *,
    source_type: str = AI_GENERATED,
    generator: str = "verity-tests",
) -> bytes:
    """``media`` with a C2PA manifest whose ``c2pa.created`` action declares ``source_type``,
    signed by the test CA's signer."""
    import c2pa

    ca = throwaway_ca()
    signer = c2pa.Signer.from_info(
        c2pa.C2paSignerInfo(alg=b"es256", sign_cert=ca.chain_pem, private_key=ca.signer_key_pem, ta_url=None)
    )
    manifest = {
        "claim_generator_info": [{"name": generator, "version": "1.0"}],
        "title": "test media",
        "format": mime,
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": source_type,
                            "softwareAgent": {"name": "a test generator"},
                        }
                    ]
                },
            }
        ],
    }
    out = io.BytesIO()
    with c2pa.Builder(manifest) as builder:
        builder.sign(signer, mime, io.BytesIO(media), out)
    return out.getvalue()


def tamper(signed: bytes) -> bytes:
    """One byte of the media flipped near its end (past the manifest, which JPEG, PNG and WAV
    carry near the start): the manifest's hash of the content no longer matches."""
    altered = bytearray(signed)
    altered[-64] ^= 0xFF
    return bytes(altered)
