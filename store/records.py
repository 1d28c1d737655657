"""The records the store keeps. Plain dataclasses: backends map them to rows or items."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["user", "admin"]


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

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.display_prefix,
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
