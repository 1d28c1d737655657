"""The detection result as a typed model: one shape for every modality.

The pipelines build plain dicts (the wire format); these models are the contract: the detect
routes declare ``DetectionResult`` as their response model, so the OpenAPI document shows it, and
the tests validate every kind of result against it (unknown top-level fields are refused, so a
field added to a pipeline must be added here too).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Verdict = Literal["FAKE", "REAL", "UNCERTAIN", "NO_FACE", "NOT_APPLICABLE"]
Probability = Field(ge=0.0, le=1.0)


class ModelSummary(BaseModel):
    """Which export answered, and with what weights (``dev`` = random: not meaningful)."""

    id: str
    version: str
    precision: Literal["fp32", "int8"]
    weights: Literal["pretrained", "dev"]
    role: str | None = Field(None, description="video: which part of the model pair")
    # An ensemble member's own figures (image models=a,b).
    fake_probability: float | None = Field(None, ge=0.0, le=1.0)
    raw_score: float | None = Field(None, ge=0.0, le=1.0)
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    verdict: Verdict | None = None
    calibrated: bool | None = None


class ResultWarning(BaseModel):
    code: str
    message: str


class Segment(BaseModel):
    """A stretch of the timeline (audio windows, seconds of video), or of a text (its windows'
    characters: Python string indices, end exclusive)."""

    start_s: float | None = Field(None, ge=0.0)
    end_s: float | None = Field(None, ge=0.0)
    start_char: int | None = Field(None, ge=0, description="text: first character of the window")
    end_char: int | None = Field(None, ge=0, description="text: one past its last character")
    fake_probability: float = Probability
    frames: int | None = Field(None, description="video: analysed frames in this stretch")


class FaceResult(BaseModel):
    frame_s: float = Field(ge=0.0, description="time of the frame (0 for a picture)")
    box: list[float] = Field(min_length=4, max_length=4, description="x, y, width, height in media pixels")
    score: float = Field(ge=0.0, le=1.0, description="face detector confidence")
    fake_probability: float | None = Field(None, ge=0.0, le=1.0)
    landmarks: dict[str, list[float]] = Field(default_factory=dict)


class Explanation(BaseModel):
    method: str
    description: str
    grid: list[list[float]]
    heatmap_png: str = Field(description="base64 PNG, RGBA, the size of the model input")
    size: list[int]


class ProvenanceSigner(BaseModel):
    common_name: str | None = None
    issuer: str | None = None
    alg: str | None = None
    time: str | None = None


class Provenance(BaseModel):
    """The media's Content Credentials (C2PA), read offline, and which rule they triggered."""

    present: bool = Field(description="the media carries a C2PA manifest store")
    checked: bool = Field(description="false: the format cannot carry Content Credentials")
    validation_state: Literal["Invalid", "Valid", "Trusted"] | None = None
    signer: ProvenanceSigner | None = None
    claim_generator: str | None = None
    digital_source_type: str | None = Field(
        None, description="IPTC digital source type of the active manifest, e.g. trainedAlgorithmicMedia"
    )
    declares_ai: bool | None = Field(None, description="the source type says a model or algorithm made it")
    actions: list[dict[str, Any]] = Field(default_factory=list)
    validation_errors: list[dict[str, str]] = Field(default_factory=list)
    rule: Literal["declared_ai", "invalid_manifest", "manifest_without_ai_claim", "no_manifest"]


class OperatingPoint(BaseModel):
    name: Literal["balanced", "high_precision", "high_recall", "catalog"] = Field(
        description="catalog: the model has no calibration and decides at its catalog threshold"
    )
    threshold: float = Probability
    source: Literal["calibration", "catalog"]


class StabilityVariant(BaseModel):
    name: Literal["original", "jpeg_q75", "resize_0.75", "crop_0.9"]
    fake_probability: float = Probability
    verdict: Verdict


class Stability(BaseModel):
    """``stability=true``: the verdict re-checked after re-compression, resizing and cropping."""

    variants: list[StabilityVariant]
    spread: float = Field(ge=0.0, le=1.0, description="max - min of the variants' probabilities")
    stable: bool = Field(description="false: the variants fall on both sides of the threshold")
    frames: int | None = Field(None, description="video: sampled frames re-scored")


class NotApplicable(BaseModel):
    reason: Literal["too_small", "too_dark", "no_speech", "too_short"]
    message: str
    measured: dict[str, Any]


class ResultSignature(BaseModel):
    kid: str = Field(description="RFC 7638 thumbprint of the signing key")
    alg: Literal["EdDSA"]
    value: str = Field(description="base64url Ed25519 signature")


class DetectionResult(BaseModel):
    """``POST /v1/detect/{image,audio,video,text}``, and ``GET /v1/history/{id}``."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    id: str = Field(pattern=r"^det_[0-9A-HJKMNP-TV-Z]{26}$", description="also the history id")
    modality: Literal["image", "audio", "video", "text"]
    created_at: str
    verdict: Verdict
    fake_probability: float | None = Field(
        ge=0.0, le=1.0, description="calibrated when `calibrated`; null with NO_FACE and NOT_APPLICABLE"
    )
    raw_score: float | None = Field(
        None, ge=0.0, le=1.0, description="the model's own score, before calibration"
    )
    calibrated: bool | None = Field(None, description="fake_probability went through a stored calibration")
    operating_point: OperatingPoint | None = None
    threshold: float = Probability
    model: ModelSummary
    models: list[ModelSummary] | None = Field(
        None, description="video: every model that took part; an image ensemble: what each model said"
    )
    ensemble: dict[str, Any] | None = Field(None, description="image models=a,b: the rule that combined them")
    stability: Stability | None = None
    not_applicable: NotApplicable | None = Field(None, description="why the verdict is NOT_APPLICABLE")
    strategy: Literal["temporal", "frames"] | None = None
    segments: list[Segment]
    faces: list[FaceResult]
    aggregation: dict[str, Any] | None = Field(None, description="how the probability was aggregated")
    explanation: Explanation | None = None
    media: dict[str, Any]
    timing_ms: dict[str, float]
    warnings: list[ResultWarning]
    audio: dict[str, Any] | None = Field(None, description="video: its audio track's result")
    fusion: dict[str, Any] | None = Field(None, description="video: the rule that fused video and audio")
    provenance: Provenance | None = Field(None, description="absent when VERITY_PROVENANCE=false")
    reason: Literal["classifier", "provenance"] | None = Field(
        None, description="what decided the verdict: the classifier, or Content Credentials"
    )
    classifier: dict[str, Any] | None = Field(
        None, description="when provenance decided: the classifier's own verdict and probability"
    )
    signature: ResultSignature | None = Field(
        None, description="Ed25519 over the RFC 8785 JSON of the rest; keys at /.well-known/jwks.json"
    )
    cost_units: int | None = Field(
        None, ge=1, description="units of the daily limit this detection cost (see GET /v1/usage)"
    )
