"""The records the store keeps. Plain dataclasses: backends map them to rows or items."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Role = Literal["user", "admin"]

# What an API key may do: `detect` (detections, uploads, jobs: make, cancel, delete), `read`
# (usage, stats, history, jobs), `keys` (API keys, the webhook secret, deleting the account),
# `admin` (the admin routes; honoured for admin accounts only).
SCOPES = ("detect", "read", "keys", "admin")


def role_scopes(role: str) -> tuple[str, ...]:
    """Every scope an account of ``role`` can hold: what its login session has, and what a key
    made before scopes existed keeps."""
    return SCOPES if role == "admin" else tuple(s for s in SCOPES if s != "admin")


def key_scopes(stored: list[str] | None, role: str) -> tuple[str, ...]:
    """What a key with ``stored`` scopes can do for an account of ``role``: a key stored without
    scopes (made before they existed) keeps everything its account could do, as it always did;
    `admin` counts only for an admin account."""
    allowed = role_scopes(role)
    if stored is None:
        return allowed
    return tuple(s for s in SCOPES if s in stored and s in allowed)


@dataclass
class User:
    id: str
    email: str
    password_hash: str
    created_at: str
    role: Role = "user"
    daily_limit: int | None = None  # None: the configured default
    disabled: bool = False

    def public(self, default_daily_limit: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "role": self.role,
            "created_at": self.created_at,
            "daily_limit": self.daily_limit if self.daily_limit is not None else default_daily_limit,
            "disabled": self.disabled,
        }


@dataclass
class ApiKey:
    id: str
    user_id: str
    name: str
    digest: str
    display_prefix: str
    created_at: str
    last_used_at: str | None = None
    revoked_at: str | None = None
    expires_at: str | None = None  # set when rolled with a grace period
    scopes: list[str] | None = None  # None: made before scopes existed (see key_scopes)

    def public(self, role: Role = "user") -> dict[str, Any]:
        """What the owner sees; ``scopes`` is what the key can do for an account of ``role``."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.display_prefix,
            "scopes": list(key_scopes(self.scopes, role)),
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "revoked_at": self.revoked_at,
            "expires_at": self.expires_at,
        }


@dataclass
class Detection:
    """One history item: a detection result the user made, owned by them."""

    id: str
    user_id: str
    created_at: str
    modality: str
    verdict: str
    fake_probability: float | None  # None: NO_FACE (no face to score)
    model_id: str
    result: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "modality": self.modality,
            "verdict": self.verdict,
            "fake_probability": self.fake_probability,
            "model_id": self.model_id,
        }


@dataclass(frozen=True)
class QuotaDecision:
    allowed: bool
    scope: Literal["daily", "minute"] | None  # which limit refused, when not allowed
    daily_used: int
    daily_limit: int
    minute_used: int
    minute_limit: int


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None


# --- uploads, jobs, webhook deliveries ---------------------------------------------------------

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})


@dataclass
class Upload:
    """A signed upload target and, once the client has sent it, the media behind it. The blob key
    is chosen by the server under the owner's prefix; the user's file name is display only."""

    id: str
    user_id: str
    created_at: str
    expires_at: float  # unix seconds: the upload (record and blob) is swept after this
    blob_key: str
    filename: str
    content_type: str
    max_bytes: int
    keep: bool = False  # keep the media after its job (until expires_at) instead of deleting it
    job_id: str | None = None  # the one job that uses it


@dataclass
class Job:
    """A detection run on an upload, processed by a worker that holds a lease on it."""

    id: str
    user_id: str
    created_at: str
    updated_at: str
    status: JobStatus
    modality: str
    upload_id: str
    options: dict[str, Any]
    max_attempts: int
    webhook_url: str | None = None
    attempts: int = 0
    progress: float = 0.0
    lease_until: float | None = None  # unix seconds; a running job past it may be claimed again
    worker: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass
class Delivery:
    """One webhook message for one job: its id is the ``webhook-id`` on every attempt."""

    id: str
    user_id: str
    job_id: str
    url: str
    event: str
    payload: dict[str, Any]
    created_at: str
    status: Literal["pending", "delivered", "failed"] = "pending"
    attempts: list[dict[str, Any]] = field(default_factory=list)
    next_attempt_at: float | None = None  # unix seconds, while pending

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event": self.event,
            "url": self.url,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": iso_epoch(self.next_attempt_at) if self.next_attempt_at else None,
        }


@dataclass(frozen=True)
class Claim:
    """What ``JobStore.claim_job`` found: the claimed job, or why not."""

    job: Job | None
    reason: Literal["claimed", "missing", "finished", "leased", "exhausted"]


def iso_epoch(seconds: float) -> str:
    """Unix seconds as the API writes times: ISO 8601 UTC to the second, with a Z."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
