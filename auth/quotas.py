"""Daily and per-minute quotas: which endpoints are metered, the counting, the headers.

The counting itself is the store's atomic ``consume`` (a SQLite write transaction or DynamoDB
conditional updates); this module decides the buckets and renders the IETF RateLimit headers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

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
        "/v1/detect/text": ("text", settings.rate_limit_text_per_min),
        "/v1/detect/video": ("video", settings.rate_limit_video_per_min),
        "/v1/jobs": ("jobs", settings.rate_limit_jobs_per_min),
    }
    if path in limits:
        endpoint, per_minute = limits[path]
        return Meter(endpoint, per_minute)
    return None


# What a detection costs, in units of the daily quota (documented in the README's quota
# section): the model work grows with the media's length and with explanations, so a request
# count alone would let one caller spend a hundred times what another does for the same quota.
EXPLAIN_UNITS = 5  # an occlusion map is ~50 more model inputs, in a few batched calls
AUDIO_UNITS_PER_MINUTE = 1
VIDEO_UNITS_PER_MINUTE = 2  # up to 128 face crops a clip, and its audio track as well
TEXT_CHARS_PER_UNIT = 10_000  # ~7 windows of a base-size text model


def cost_units(result: dict[str, Any]) -> int:
    """The units a finished detection costs: an image 1 (+5 with an explanation), audio 1 per
    started minute, video 2 per started minute, text 1 per started 10,000 characters."""
    modality = result.get("modality")
    if modality == "text":
        characters = int((result.get("media") or {}).get("characters") or 0)
        return max(1, math.ceil(characters / TEXT_CHARS_PER_UNIT))
    duration_s = float((result.get("media") or {}).get("duration_s") or 0.0)
    minutes = max(1, math.ceil(duration_s / 60 - 1e-9))
    if modality == "audio":
        return AUDIO_UNITS_PER_MINUTE * minutes
    if modality == "video":
        return VIDEO_UNITS_PER_MINUTE * minutes
    return 1 + (EXPLAIN_UNITS if result.get("explanation") else 0)


def next_midnight(now: datetime) -> datetime:
    return (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


def daily_limit_of(user: User, settings: Settings) -> int:
    return user.daily_limit if user.daily_limit is not None else settings.daily_limit


@dataclass(frozen=True)
class QuotaOutcome:
    decision: QuotaDecision
    headers: dict[str, str]
    retry_after_s: int | None


def counter_expiry(now: datetime) -> int:
    """TTL of a day's counter: a day after it stops mattering."""
    return int(next_midnight(now).timestamp()) + 86400


def consume(store: Store, user: User, meter: Meter, settings: Settings, now: datetime) -> QuotaOutcome:
    """Admit one request: one unit against the day and one request against the endpoint-minute.
    What the request cost beyond that first unit is settled when it answers (``settle``)."""
    decision = store.consume(
        user.id,
        day=now.strftime("%Y-%m-%d"),
        daily_limit=daily_limit_of(user, settings),
        minute_bucket=f"{meter.endpoint}:{now.strftime('%Y%m%d%H%M')}",
        minute_limit=meter.per_minute,
        expires_at=counter_expiry(now),
    )
    return outcome_of(decision, now)


def settle(store: Store, user: User, outcome: QuotaOutcome, units: int, now: datetime) -> QuotaOutcome:
    """Charge ``units`` for an admitted request, of which ``consume`` took one already (0 gives
    that one back: a failure on the server's side, or a replay that did no new work). The
    outcome's headers then show the day as it stands after this request."""
    extra = units - 1
    if extra == 0:
        return outcome
    used = store.charge(user.id, day=now.strftime("%Y-%m-%d"), units=extra, expires_at=counter_expiry(now))
    return outcome_of(replace(outcome.decision, daily_used=used), now)


def outcome_of(decision: QuotaDecision, now: datetime) -> QuotaOutcome:
    midnight = next_midnight(now)
    minute_end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
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
