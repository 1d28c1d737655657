"""Content Credentials (C2PA manifests) read offline with ``c2pa-python``, and the rule that
decides when they outweigh the classifier.

What a result's ``provenance`` block says:

- ``present``: whether the media carries a manifest store.
- ``validation_state``: ``Invalid`` (the manifest or the media it covers was altered, or its
  signature does not verify), ``Valid`` (intact and well signed) or ``Trusted`` (valid, and its
  signing certificate chains to one of the configured trust anchors, ``VERITY_C2PA_TRUST_ANCHORS``).
  With no anchors configured a manifest is ``Valid`` at most.
- who signed it, the claim generator, the ``digitalSourceType`` the active manifest declares,
  its actions, and the validation failures.

Reading never leaves the process: remote manifests and OCSP are not fetched.

The rule (``apply_provenance``), in order:

1. a ``Valid`` or ``Trusted`` manifest that declares AI-generated media (one of
   ``AI_SOURCE_TYPES``) makes the verdict ``FAKE`` with ``reason: "provenance"``, whatever the
   classifier says; the classifier's verdict and probability stay in the result
   (``classifier``, ``fake_probability``);
2. an ``Invalid`` manifest adds a ``provenance_invalid`` warning; the classifier decides;
3. a valid manifest that declares no AI source, or no manifest at all: the classifier decides.

``provenance.rule`` names the case that applied.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

IPTC_SOURCE_TYPES = "http://cv.iptc.org/newscodes/digitalsourcetype/"
# IPTC digital source types that say a model or an algorithm made the media (or part of it).
AI_SOURCE_TYPES = frozenset(
    {
        "trainedAlgorithmicMedia",
        "compositeWithTrainedAlgorithmicMedia",
        "algorithmicMedia",
        "compositeSynthetic",
    }
)
# Our media formats (media/*.py names them) as the MIME types the C2PA library reads.
# BMP, Ogg, AAC, WebM and Matroska cannot carry Content Credentials: reported as not checked.
MIME_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "tiff": "image/tiff",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "avi": "video/msvideo",
}
VALIDATION_STATES = ("Invalid", "Valid", "Trusted")

RULE_DECLARED_AI = "declared_ai"
RULE_INVALID = "invalid_manifest"
RULE_NO_AI_CLAIM = "manifest_without_ai_claim"
RULE_NO_MANIFEST = "no_manifest"


def not_checked() -> dict[str, Any]:
    """The block for media whose credentials could not be looked for (a format that cannot
    carry them, a container the library cannot parse, the reader failing): the classifier decides."""
    return {"present": False, "checked": False, "rule": RULE_NO_MANIFEST}


class ProvenanceReader:
    """Reads the manifest store of one piece of media. ``trust_anchors_pem``: the PEM bundle of
    root certificates a ``Trusted`` signer must chain to (none: ``Valid`` at most)."""

    def __init__(self, trust_anchors_pem: str | None = None) -> None:
        verify = {"remote_manifest_fetch": False, "ocsp_fetch": False}
        self._settings: dict[str, Any] = {"verify": verify}
        if trust_anchors_pem:
            self._settings["trust"] = {"trust_anchors": trust_anchors_pem}

    @classmethod
    def from_file(cls, anchors: Path | None) -> ProvenanceReader:
        return cls(anchors.read_text() if anchors else None)

    def read(self, media: bytes | Path | BinaryIO, media_format: str) -> dict[str, Any]:
        """The ``provenance`` block for ``media`` in ``media_format`` (a key of ``MIME_TYPES``)."""
        import c2pa

        mime = MIME_TYPES.get(media_format)
        if mime is None:
            return not_checked()
        with _stream(media) as stream:
            context = c2pa.Context.from_dict(self._settings)
            try:
                reader = c2pa.Reader.try_create(mime, stream, context=context)
            except _broken_manifest_errors() as exc:
                # A manifest store is there but cannot be parsed: as good as tampered with.
                return _unreadable(exc)
            except c2pa.C2paError as exc:
                # The container itself is beyond the library (our decoders took it): not checked.
                log.info("C2PA reader could not parse the %s container: %s", media_format, exc)
                return not_checked()
            if reader is None:
                return {"present": False, "checked": True, "rule": RULE_NO_MANIFEST}
            with reader:
                return _block(reader)


@contextmanager
def _stream(media: bytes | Path | BinaryIO) -> Iterator[BinaryIO]:
    if isinstance(media, bytes | bytearray | memoryview):
        yield io.BytesIO(bytes(media))
    elif isinstance(media, Path):
        with media.open("rb") as handle:
            yield handle
    else:
        yield media


def _broken_manifest_errors() -> tuple[type[Exception], ...]:
    """The library's errors that mean "a manifest store is there and it is broken"."""
    import c2pa

    error = c2pa.C2paError
    return (error.Verify, error.Manifest, error.Decoding, error.Json, error.Assertion, error.Signature)


def _unreadable(exc: Exception) -> dict[str, Any]:
    log.info("unreadable C2PA manifest store: %s", exc)
    return {
        "present": True,
        "checked": True,
        "validation_state": "Invalid",
        "declares_ai": False,
        "validation_errors": [{"code": "manifest.unreadable", "explanation": str(exc)[:300]}],
        "rule": RULE_INVALID,
    }


def _block(reader: Any) -> dict[str, Any]:
    state = reader.get_validation_state()
    manifest = reader.get_active_manifest() or {}
    actions = _actions(manifest)
    source_type = next((a["digital_source_type"] for a in actions if a.get("digital_source_type")), None)
    declares_ai = source_type in AI_SOURCE_TYPES
    block: dict[str, Any] = {
        "present": True,
        "checked": True,
        "validation_state": state if state in VALIDATION_STATES else "Invalid",
        "signer": _signer(manifest.get("signature_info") or {}),
        "claim_generator": _claim_generator(manifest),
        "digital_source_type": source_type,
        "declares_ai": declares_ai,
        "actions": actions,
        "validation_errors": _failures(reader.get_validation_results() or {}),
    }
    if block["validation_state"] == "Invalid":
        block["rule"] = RULE_INVALID
    else:
        block["rule"] = RULE_DECLARED_AI if declares_ai else RULE_NO_AI_CLAIM
    return block


def _short_source_type(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value.removeprefix(IPTC_SOURCE_TYPES)


def _actions(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for assertion in manifest.get("assertions") or []:
        if not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        for action in (assertion.get("data") or {}).get("actions") or []:
            entry = {"action": action.get("action")}
            if source := _short_source_type(action.get("digitalSourceType")):
                entry["digital_source_type"] = source
            agent = action.get("softwareAgent")
            if isinstance(agent, dict):
                agent = agent.get("name")
            if isinstance(agent, str):
                entry["software_agent"] = agent
            found.append(entry)
    return found


def _signer(info: dict[str, Any]) -> dict[str, Any] | None:
    if not info:
        return None
    return {
        "common_name": info.get("common_name"),
        "issuer": info.get("issuer"),
        "alg": info.get("alg"),
        "time": info.get("time"),
    }


def _claim_generator(manifest: dict[str, Any]) -> str | None:
    infos = manifest.get("claim_generator_info") or []
    if infos and isinstance(infos[0], dict):
        name, version = infos[0].get("name"), infos[0].get("version")
        return f"{name} {version}" if version else name
    generator = manifest.get("claim_generator")
    return generator if isinstance(generator, str) else None


# Listed among the failures when no configured anchor vouches for the signer; that is what
# ``Valid`` (rather than ``Trusted``) already says, not a sign of tampering.
NOT_A_FAILURE = frozenset({"signingCredential.untrusted"})


def _failures(results: dict[str, Any]) -> list[dict[str, str]]:
    active = results.get("activeManifest") or {}
    return [
        {"code": str(item.get("code")), "explanation": str(item.get("explanation", ""))[:300]}
        for item in active.get("failure") or []
        if item.get("code") not in NOT_A_FAILURE
    ]


def apply_provenance(result: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
    """Put ``block`` in ``result`` and apply the rule (module docstring). Returns ``result``."""
    result["provenance"] = block
    rule = block.get("rule")
    if rule == RULE_DECLARED_AI:
        result["classifier"] = {
            "verdict": result["verdict"],
            "fake_probability": result.get("fake_probability"),
        }
        result["verdict"] = "FAKE"
        result["reason"] = "provenance"
    else:
        result["reason"] = "classifier"
        if rule == RULE_INVALID:
            result.setdefault("warnings", []).append(
                {
                    "code": "provenance_invalid",
                    "message": "the media carries Content Credentials (C2PA) that do not validate: "
                    "the media or its manifest was altered after signing",
                }
            )
    return result
