"""Daily and per-minute quotas: which endpoints are metered, the counting, the headers.

The counting itself is the store's atomic ``consume`` (a SQLite write transaction or DynamoDB
conditional updates); this module decides the buckets and renders the IETF RateLimit headers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from config import Settings
from store.base import Store
from store.records import QuotaDecision, User

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Meter:
    endpoint: str
    per_minute: int


def meter_for(method: str, path: str, settings: Settings) -> Meter | None:
    """The metered endpoints: detections and job submissions."""
    if method != "POST":
        return None
    limits = {
        "/v1/detect/image": ("image", settings.rate_limit_image_per_min),
        "/v1/detect/audio": ("audio", settings.rate_limit_audio_per_min),
        "/v1/detect/video": ("video", settings.rate_limit_video_per_min),
        "/v1/jobs": ("jobs", settings.rate_limit_jobs_per_min),
    }
    if path in limits:
        endpoint, per_minute = limits[path]
        return Meter(endpoint, per_minute)
    return None


def next_midnight(now: datetime) -> datetime:
    return (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


def daily_limit_of(user: User, settings: Settings) -> int:
    return user.daily_limit if user.daily_limit is not None else settings.daily_limit


@dataclass(frozen=True)
class QuotaOutcome:
    decision: QuotaDecision
    headers: dict[str, str]
    retry_after_s: int | None


def consume(store: Store, user: User, meter: Meter, settings: Settings, now: datetime) -> QuotaOutcome:
    midnight = next_midnight(now)
    minute_end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    decision = store.consume(
        user.id,
        day=now.strftime("%Y-%m-%d"),
        daily_limit=daily_limit_of(user, settings),
        minute_bucket=f"{meter.endpoint}:{now.strftime('%Y%m%d%H%M')}",
        minute_limit=meter.per_minute,
        expires_at=int(midnight.timestamp()) + 86400,  # TTL: a day after the counter stops mattering
    )
    to_midnight = math.ceil((midnight - now).total_seconds())
    to_minute = math.ceil((minute_end - now).total_seconds())
    daily_left = decision.daily_limit - decision.daily_used
    minute_left = decision.minute_limit - decision.minute_used
    # Report the policy closest to refusing, as RateLimit headers describe one limit.
    if minute_left < daily_left:
        limit, remaining, reset = decision.minute_limit, minute_left, to_minute
    else:
        limit, remaining, reset = decision.daily_limit, daily_left, to_midnight
    headers = {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(max(remaining, 0)),
        "RateLimit-Reset": str(reset),
        "RateLimit-Policy": f"{decision.daily_limit};w=86400, {decision.minute_limit};w=60",
    }
    retry_after = None
    if not decision.allowed:
        retry_after = to_midnight if decision.scope == "daily" else to_minute
        headers.update(
            {
                "Retry-After": str(retry_after),
                "RateLimit-Limit": str(
                    decision.daily_limit if decision.scope == "daily" else decision.minute_limit
                ),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(retry_after),
            }
        )
    return QuotaOutcome(decision, headers, retry_after)
