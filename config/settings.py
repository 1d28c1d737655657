"""The one settings class: every knob comes from a ``VERITY_*`` environment variable."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MB = 1024 * 1024
PROJECT_ROOT = Path(__file__).resolve().parent.parent
_PLACEHOLDERS = ("changeme", "change-me", "secret", "placeholder", "xxx", "dev")

# Whether the settings being loaded are for a process that serves auth (issues or checks tokens,
# signs upload forms or invites). Only such a process needs VERITY_JWT_SECRET; one that does none
# of it (``python -m batch``) loads its settings inside ``without_auth()`` and is not handed a
# token-signing secret it would never use.
_SERVES_AUTH: contextvars.ContextVar[bool] = contextvars.ContextVar("verity_serves_auth", default=True)


@contextlib.contextmanager
def without_auth() -> Iterator[None]:
    """Settings made inside this block do not demand VERITY_JWT_SECRET in production. Nothing
    else changes: the auth code (``auth.accounts.build_token_verifier``) still refuses to issue or
    check a token in production without it."""
    token = _SERVES_AUTH.set(False)
    try:
        yield
    finally:
        _SERVES_AUTH.reset(token)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VERITY_", env_file=None, extra="ignore")

    environment: Literal["development", "production", "test"] = "development"
    log_level: str = "INFO"
    log_json: bool = True
    # Prometheus /metrics (metrics.py). The series hold no user data, but they show traffic:
    # restrict them with a token, or turn the route off where nothing scrapes (AWS Lambda).
    metrics_enabled: bool = Field(True, description="serve /metrics; off: 404")
    metrics_token: SecretStr | None = Field(
        None, description="when set, /metrics needs Authorization: Bearer <token>"
    )

    # Models -------------------------------------------------------------------------------------------
    image_model: str = Field("vit-dima806", description="catalog id of the default image model")
    image_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="catalog ids served as image detectors; the default model is always served",
    )
    audio_model: str = Field(
        "wav2vec2-audio", description="catalog id of the audio model; empty serves no audio"
    )
    text_model: str = Field(
        "roberta-openai-detector", description="catalog id of the AI-text model; empty serves no text"
    )
    face_model: str = Field("mtcnn", description="catalog id of the face detector; empty: none")
    video_model: str = Field(
        "cnn-lstm", description="catalog id of the video head (served with its encoder); empty: none"
    )
    # The face detector runs on frames shrunk to this longest side (faces/mtcnn.py): 640 keeps a
    # 1280x720 frame well under 100 ms on 2 cores; the smallest face found in the original frame
    # is face_min_size * longest side / face_max_side (40 px at 1280 wide).
    face_max_side: int = Field(
        640, ge=12, description="longest side (px) of the frame the face detector sees (larger: downscaled)"
    )
    face_min_size: int = Field(
        20, ge=1, description="MTCNN min_face_size in pixels of the downscaled frame (the package's default)"
    )
    face_crop_margin: float = Field(
        0.2, ge=0.0, le=2.0, description="face crops grow each side by this fraction of the box's longer side"
    )
    faces_per_frame: int = Field(4, ge=1, le=32, description="most faces scored per picture or frame")
    # "auto" serves each model's INT8 export when the agreement with fp32 stored beside it (on the
    # export's probe set, rows run alone as served) meets both bars below, else fp32, saying why
    # in the log and in /v1/models. fp32 or int8 forces that precision for every model.
    precision: Literal["auto", "fp32", "int8"] = Field(
        "auto", description="which stored export to serve: auto (int8 where it agrees with fp32), fp32, int8"
    )
    int8_min_verdict_agreement: float = Field(
        0.99,
        ge=0.0,
        le=1.0,
        description="auto precision: least share of probe verdicts int8 must share with fp32",
    )
    int8_max_mean_probability_diff: float = Field(
        0.01, ge=0.0, le=1.0, description="auto precision: largest mean |p_int8 - p_fp32| on the probe set"
    )
    ort_intra_op_threads: int = Field(0, ge=0, description="0 = one per CPU core")
    ort_inter_op_threads: int = Field(1, ge=1)
    batch_max_size: int = Field(32, ge=2)
    # BentoML sheds a queued request (503 + Retry-After) once its expected wait plus run time
    # passes this. One full-size ViT image takes 0.2-0.3 s on 2 CPU cores, so 32 concurrent
    # requests need ~10 s; 200 ms rejected nearly everything past concurrency 1 (bench/image.py).
    batch_max_latency_ms: int = Field(
        30_000, ge=1, description="load shedding: longest a request may wait for its batch"
    )
    # Audio windows are ~1-2 s of CPU each and a 60 s clip is 29 of them, so the image budget
    # would shed 8 concurrent one-minute clips that a 2-core machine clears in ~100 s
    # (bench/audio.py). Larger batches do not run faster per window on CPU, only use more
    # memory (~100 MB per extra 4 s window), hence the small default.
    audio_batch_max_size: int = Field(4, ge=1, description="most audio windows per model batch")
    audio_batch_max_latency_ms: int = Field(
        180_000, ge=1, description="load shedding for audio: longest a window may wait for its batch"
    )
    audio_hop_s: float | None = Field(
        None, gt=0, description="seconds between audio window starts; unset = the catalog's (50% overlap)"
    )
    uncertain_band: float = Field(0.05, ge=0.0, lt=0.5, description="|p - threshold| below this is UNCERTAIN")
    # Calibration and operating points (models/calibration.py) ------------------------------------
    operating_point: Literal["balanced", "high_precision", "high_recall"] = Field(
        "balanced",
        description="operating point of calibrated models when a request names none "
        "(uncalibrated models keep their catalog threshold)",
    )
    # Media a model cannot judge: NOT_APPLICABLE (detect/applicability.py) --------------------------
    min_image_side: int = Field(32, ge=1, description="pictures with a shorter side are too_small")
    min_image_brightness: float = Field(
        8.0, ge=0.0, le=255.0, description="near-black pictures (mean luma under this, 0-255) are too_dark"
    )
    silence_dbfs: float = Field(
        -55.0, le=0.0, description="audio whose every window is quieter (RMS, dBFS) is no_speech"
    )
    # The stability check (detect/stability.py) -----------------------------------------------------
    stability_video_frames: int = Field(
        4, ge=1, le=32, description="sampled frames of a video re-scored by ?stability=true"
    )
    # Signed results (provenance/signing.py) ---------------------------------------------------------
    signing_key_file: Path | None = Field(
        None,
        description="Ed25519 private key (PKCS#8 PEM, `python -m provenance keygen`) that signs results; "
        "unset: derived from VERITY_JWT_SECRET (or the development secret)",
    )
    signing_previous_keys_file: Path | None = Field(
        None, description="PEM bundle of earlier public signing keys, still published after a rotation"
    )
    # Content Credentials (C2PA, provenance/manifests.py) ------------------------------------------
    provenance: bool = Field(True, description="read C2PA Content Credentials beside the classifier")
    c2pa_trust_anchors: Path | None = Field(
        None,
        description="PEM bundle of root certificates a C2PA signer must chain to for `Trusted`; "
        "unset: `Valid` at most",
    )

    # Media limits -------------------------------------------------------------------------------------
    max_image_bytes: int = Field(10 * MB, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1, description="width*height cap (bombs)")
    max_json_body_bytes: int = Field(1 * MB, ge=1, description="cap for non-media requests")
    max_audio_bytes: int = Field(20 * MB, ge=1)
    # A text is at most this many UTF-8 bytes and characters (50,000 characters: ~12,000 tokens,
    # ~33 windows of 512 tokens, a few seconds of a base-size model on 2 cores).
    max_text_bytes: int = Field(
        256 * 1024, ge=1, description="largest text (UTF-8 bytes) /v1/detect/text takes"
    )
    max_text_chars: int = Field(50_000, ge=1, description="longest text (characters) /v1/detect/text takes")
    max_audio_duration_s: float = Field(300.0, gt=0, description="inline audio duration cap")
    ffmpeg_timeout_s: float = Field(30.0, gt=0, description="time limit for decoding M4A/AAC")
    max_video_bytes: int = Field(32 * MB, ge=1, description="inline video cap (larger: uploads)")
    max_video_pixels: int = Field(
        3840 * 2160, ge=1, description="width*height cap of the video stream, checked before decoding"
    )
    max_video_duration_s: float = Field(300.0, gt=0, description="video duration cap (declared or decoded)")
    # Every frame is decoded (grab) even when few are kept: ~3.6 ms per 720p H.264 frame on 2 cores,
    # so a 10 s 30 fps clip takes ~1.1 s and the 300 s cap at 720p ~33 s (media/video.py).
    video_decode_timeout_s: float = Field(
        60.0, gt=0, description="time limit for probing and decoding one video (422 past it)"
    )
    video_decode_isolated: bool = Field(
        True,
        description="decode in a child process, so a decoder that hangs or crashes is killed and "
        "fails its request, never the worker; false decodes in-process (deadline checked per frame)",
    )
    decoder_memory_mb: int = Field(
        4096,
        ge=256,
        description="address-space cap of each decoder process (ffmpeg, ffprobe, the OpenCV child)",
    )
    image_decode_timeout_s: float = Field(
        10.0, gt=0, description="time limit for decoding one image (422 decode_timeout past it)"
    )
    decode_threads: int = Field(
        4, ge=1, description="decodes running at once per process, on threads of their own"
    )
    heavy_concurrency: int = Field(
        2, ge=1, description="audio, video and explain requests running at once per process"
    )
    heavy_queue: int = Field(
        16, ge=0, description="heavy requests that may wait for a slot; more are shed (503 server_busy)"
    )
    video_max_frames: int = Field(64, ge=1, description="frames sampled when the request names none")
    video_max_frames_cap: int = Field(
        128, ge=1, description="hard cap on sampled frames per video, whatever the request asks"
    )
    # 1280 is what face detection looks at anyway (face_max_side), and it keeps the worst inline
    # clip (128 frames) at 128 x 1280 x 720 x 3 = 354 MB, in the child and again in the API process.
    video_frame_max_side: int = Field(
        1280, ge=64, description="sampled frames with a longer side are downscaled (memory per frame)"
    )

    # Store: embedded SQLite by default, DynamoDB by setting -------------------------------------------
    store: Literal["sqlite", "dynamodb"] = "sqlite"
    data_dir: Path = Field(
        default_factory=lambda: default_data_dir(),
        description="mutable state (SQLite file, development secret): the checkout's var/, or "
        "$XDG_DATA_HOME/verity when running from a built bento (never inside the bento store)",
    )
    sqlite_path: Path | None = Field(None, description="SQLite file (created); default <data_dir>/verity.db")
    dynamodb_table: str = "verity"
    dynamodb_endpoint_url: str | None = Field(None, description="e.g. a local DynamoDB or moto")
    dynamodb_create_table: bool = Field(False, description="create the table at start (dev/test)")
    aws_region: str = "us-east-1"

    # Uploads (blobs), jobs (queue + workers), webhooks --------------------------------------------------
    blobs: Literal["local", "s3"] = Field("local", description="where uploaded media is kept")
    blob_dir: Path | None = Field(None, description="local blob directory; default <data_dir>/blobs")
    s3_bucket: str | None = Field(None, description="uploads bucket (VERITY_BLOBS=s3)")
    s3_endpoint_url: str | None = Field(None, description="e.g. moto or MinIO; unset: AWS")
    upload_prefix: str = Field("uploads/", description="object key prefix of uploads (lifecycle rule)")
    max_upload_bytes: int = Field(500 * MB, ge=1, description="largest upload accepted")
    upload_url_ttl_s: int = Field(900, ge=30, le=7 * 86400, description="lifetime of a signed upload form")
    upload_retention_s: int = Field(
        86400, ge=60, description="uploads not used by a job (or not asked to be kept) are deleted after this"
    )
    public_url: str | None = Field(
        None, description="the service's public base URL, for local upload targets; unset: the request's"
    )
    queue: Literal["local", "sqs"] = Field("local", description="where jobs wait for a worker")
    sqs_queue_url: str | None = Field(None, description="jobs queue (VERITY_QUEUE=sqs)")
    sqs_endpoint_url: str | None = Field(None, description="e.g. moto; unset: AWS")
    sqs_wait_s: int = Field(10, ge=0, le=20, description="long-poll wait of the container worker's receives")
    job_workers: int = Field(1, ge=0, description="worker threads inside the service (VERITY_QUEUE=local)")
    job_lease_s: int = Field(
        300, ge=1, description="a claimed job returns to the queue if its worker is silent this long"
    )
    job_max_attempts: int = Field(3, ge=1, description="runs of a job before it fails for good")
    job_scan_s: float = Field(
        2.0, gt=0, description="local workers ask the store for waiting jobs and due webhooks this often"
    )
    job_max_video_duration_s: float = Field(3 * 3600.0, gt=0, description="duration cap of media in jobs")
    job_video_max_frames_cap: int = Field(
        3600, ge=1, description="most frames sampled from one video in a job (memory does not grow with it)"
    )
    decode_s_per_media_s: float = Field(
        0.5, gt=0, description="decode time limit per second of declared duration in jobs"
    )
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="hosts webhooks may reach even when they resolve to private or loopback addresses "
        "(local testing only)",
    )
    webhook_timeout_s: float = Field(5.0, gt=0, le=30, description="connect + read limit per delivery")
    webhook_max_attempts: int = Field(8, ge=1, description="deliveries tried before a webhook is given up")
    webhook_backoff_s: float = Field(5.0, gt=0, description="first retry delay; doubles, jittered")

    # Auth ---------------------------------------------------------------------------------------------
    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = "HS256"
    jwt_secret: SecretStr | None = Field(None, description="HS256 secret, >= 32 bytes")
    jwt_private_key_path: Path | None = Field(None, description="PEM key for RS256/ES256")
    jwt_public_key_path: Path | None = None
    jwt_issuer: str = "verity"
    jwt_audience: str = "verity-api"
    jwt_ttl_s: int = Field(3600, ge=60)
    jwt_external_issuers: Annotated[list[dict[str, Any]], NoDecode] = Field(
        default_factory=list,
        description='JSON list: [{"issuer", "jwks_url", "audience", "algorithms": ["RS256"]}]',
    )
    jwks_refetch_cooldown_s: float = Field(60.0, ge=0)
    jwks_cache_ttl_s: float = Field(
        3600.0, gt=0, description="JWKS keys are refetched after this, even for a known kid"
    )
    jwks_insecure_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="hosts whose JWKS URL may be plain http (a loopback issuer in tests and "
        "development only); every other JWKS URL must be https",
    )
    max_keys_per_user: int = Field(20, ge=1, description="unrevoked API keys an account may hold")
    api_key_pepper: SecretStr | None = Field(None, description="HMAC pepper for key digests")
    dev_secret_path: Path | None = Field(
        None, description="development-only JWT secret; default <data_dir>/dev-secret"
    )

    # Unauthenticated routes: signup and login (auth/throttle.py) --------------------------------------
    signup_policy: Literal["open", "invite", "closed"] = Field(
        "open", description="open: anyone; invite: with an admin's invite (POST /v1/admin/invites); closed"
    )
    invite_ttl_s: int = Field(7 * 86400, ge=60, description="how long an invite is valid")
    auth_per_ip_per_min: int = Field(20, ge=1, description="signups + logins per client address per minute")
    login_per_email_per_hour: int = Field(30, ge=1, description="logins per email per hour")
    login_lockout_after: int = Field(5, ge=1, description="consecutive failed logins before an email locks")
    login_lockout_base_s: int = Field(
        30, ge=1, description="first lockout; doubles with each further failure, at most an hour"
    )
    trusted_proxy_hops: int = Field(
        0, ge=0, description="proxies in front that append to X-Forwarded-For; 0: the peer's address"
    )
    bcrypt_concurrency: int = Field(2, ge=1, description="password hashes and checks at once")
    bcrypt_queue: int = Field(16, ge=0, description="password checks that may wait; beyond, 503")

    # Quotas -------------------------------------------------------------------------------------------
    daily_limit: int = Field(100, ge=0)
    rate_limit_image_per_min: int = Field(60, ge=0)
    rate_limit_audio_per_min: int = Field(30, ge=0)
    rate_limit_text_per_min: int = Field(60, ge=0)
    rate_limit_video_per_min: int = Field(10, ge=0)
    rate_limit_jobs_per_min: int = Field(10, ge=0)

    # Live stream (WebSocket /v1/stream, api/stream.py) ------------------------------------------------
    stream_token_ttl_s: int = Field(60, ge=5, le=3600, description="a stream token's life (single use)")
    stream_max_frame_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="largest frame accepted")
    stream_max_fps: float = Field(10.0, gt=0, le=60, description="frames per second analysed at most")
    stream_idle_timeout_s: float = Field(30.0, gt=0, description="a session with no frame for this long ends")
    stream_max_session_s: float = Field(900.0, gt=0, description="a session ends after this long")
    stream_max_sessions_per_user: int = Field(2, ge=1, description="open sessions per user, per instance")
    stream_window: int = Field(10, ge=1, le=300, description="analysed frames in the rolling verdict")
    stream_frames_per_unit: int = Field(10, ge=1, description="analysed frames one quota unit buys")
    rate_limit_stream_per_min: int = Field(60, ge=0, description="stream quota units per minute")

    @field_validator("jwt_external_issuers", mode="before")
    @classmethod
    def _parse_issuers(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) and value.strip() else value or []

    @model_validator(mode="after")
    def _secrets_outside_development(self) -> Settings:
        # Required secrets have no defaults outside development; placeholders are refused. A
        # process that serves no auth (``without_auth``) needs none.
        if self.environment == "production" and self.jwt_algorithm == "HS256" and _SERVES_AUTH.get():
            secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
            if len(secret.encode()) < 32 or secret.lower().startswith(_PLACEHOLDERS):
                raise ValueError(
                    "VERITY_JWT_SECRET must be set to a random value of >= 32 bytes in production"
                )
        return self

    @model_validator(mode="after")
    def _signing_keys_readable(self) -> Settings:
        # Checked here so that a wrong file stops the start in plain words, not at the first result.
        if self.signing_key_file is None and self.signing_previous_keys_file is None:
            return self
        from provenance.signing import load_private_key, load_public_keys

        for name, path, load in (
            ("VERITY_SIGNING_KEY_FILE", self.signing_key_file, load_private_key),
            ("VERITY_SIGNING_PREVIOUS_KEYS_FILE", self.signing_previous_keys_file, load_public_keys),
        ):
            if path is None:
                continue
            try:
                load(path.read_bytes())
            except OSError as exc:
                raise ValueError(f"{name}: cannot read {path}: {exc.strerror}") from exc
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{name}: {path}: {exc}") from exc
        return self

    @model_validator(mode="after")
    def _trust_anchors_readable(self) -> Settings:
        anchors = self.c2pa_trust_anchors
        if anchors is not None:
            try:
                text = anchors.read_text()
            except OSError as exc:
                raise ValueError(f"VERITY_C2PA_TRUST_ANCHORS: cannot read {anchors}: {exc.strerror}") from exc
            if "-----BEGIN CERTIFICATE-----" not in text:
                raise ValueError(f"VERITY_C2PA_TRUST_ANCHORS: {anchors} holds no PEM certificate")
        return self

    @model_validator(mode="after")
    def _backends_named(self) -> Settings:
        if self.blobs == "s3" and not self.s3_bucket:
            raise ValueError("VERITY_BLOBS=s3 needs VERITY_S3_BUCKET (the uploads bucket)")
        if self.queue == "sqs" and not self.sqs_queue_url:
            raise ValueError("VERITY_QUEUE=sqs needs VERITY_SQS_QUEUE_URL (the jobs queue)")
        return self

    @model_validator(mode="after")
    def _state_under_data_dir(self) -> Settings:
        # Relative defaults would follow the working directory, and `bentoml serve <bento>` runs
        # in the bento's own src/ folder: state would land inside the bento store.
        if self.sqlite_path is None:
            self.sqlite_path = self.data_dir / "verity.db"
        if self.dev_secret_path is None:
            self.dev_secret_path = self.data_dir / "dev-secret"
        if self.blob_dir is None:
            self.blob_dir = self.data_dir / "blobs"
        return self

    @field_validator("image_models", "webhook_allowed_hosts", "jwks_insecure_hosts", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        # Accept "a,b" as well as a JSON list so the variable is easy to set by hand.
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @property
    def served_image_models(self) -> list[str]:
        """The default model first, then any extra ones, without duplicates."""
        ordered = [self.image_model, *self.image_models]
        return list(dict.fromkeys(ordered))

    @property
    def served_audio_models(self) -> list[str]:
        return [self.audio_model] if self.audio_model else []

    @property
    def served_text_models(self) -> list[str]:
        return [self.text_model] if self.text_model else []

    @property
    def served_face_models(self) -> list[str]:
        return [self.face_model] if self.face_model else []

    @property
    def served_video_models(self) -> list[str]:
        return [self.video_model] if self.video_model else []

    @property
    def intra_op_threads(self) -> int:
        return self.ort_intra_op_threads or (os.cpu_count() or 1)


def running_from_bento(root: Path = PROJECT_ROOT) -> bool:
    """True when this code is the ``src/`` of a built bento (``bento.yaml`` sits beside it)."""
    return root.name == "src" and (root.parent / "bento.yaml").is_file()


def default_data_dir(root: Path = PROJECT_ROOT) -> Path:
    if running_from_bento(root):
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "verity"
    return root / "var"


def apply_bento_envs(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """The ``envs`` of the bento this code runs from, set where the environment has none.

    A container built from the bento has them as ENV already; ``bentoml serve <bento>`` on a
    host does not apply them, and without this a bento built for production would quietly
    start in development mode. Variables the caller set always win."""
    import yaml  # bentoml's own dependency; only needed inside a bento

    info = yaml.safe_load((root.parent / "bento.yaml").read_text(encoding="utf-8")) or {}
    applied = {}
    for item in info.get("envs") or []:
        name, value = str(item["name"]), str(item.get("value", ""))
        if name not in os.environ:
            os.environ[name] = applied[name] = value
    return applied


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    if running_from_bento():
        apply_bento_envs()
    return Settings()
