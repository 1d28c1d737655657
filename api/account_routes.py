"""Accounts, keys, usage, history, stats and admin routes."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request, Response, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from api.openapi import ACCOUNT_ERRORS
from auth.accounts import Accounts, normalise_email
from auth.invites import check_invite, make_invite
from auth.principal import Principal
from auth.quotas import (
    AUDIO_UNITS_PER_MINUTE,
    EXPLAIN_UNITS,
    VIDEO_UNITS_PER_MINUTE,
    daily_limit_of,
    next_midnight,
)
from auth.throttle import AuthThrottle, client_address, throttle_of_app
from errors import Forbidden, NotFound, ServiceUnavailable, Unauthorized
from store.records import SCOPES, iso_epoch

router = APIRouter(responses=ACCOUNT_ERRORS)


def accounts_of(request: Request) -> Accounts:
    accounts = getattr(request.app.state, "accounts", None)
    if accounts is None:
        raise ServiceUnavailable("the service is starting", code="starting")
    return accounts


# Declared for the OpenAPI document (two alternative security schemes, and the Authorize button of
# /docs); the auth middleware has already checked them by the time a route runs.
API_KEY = APIKeyHeader(name="x-api-key", auto_error=False, description="an API key (vk_live_...)")
BEARER = HTTPBearer(auto_error=False, description="a JWT from POST /v1/auth/login or a configured issuer")


def principal_of(
    request: Request,
    _key: Annotated[str | None, Security(API_KEY)] = None,
    _token: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
) -> Principal:
    principal = request.scope.get("state", {}).get("principal")
    if principal is None:  # the middleware guards every non-public path; this is a backstop
        raise Unauthorized("authentication required", code="unauthenticated")
    return principal


def _refuse_without(principal: Principal, scope: str) -> Principal:
    if not principal.has_scope(scope):
        raise Forbidden(
            f"this API key lacks the `{scope}` scope; use a key that has it, or a login session",
            code="insufficient_scope",
        )
    return principal


def admin_of(principal: Annotated[Principal, Depends(principal_of)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("admin role required", code="admin_only")
    return _refuse_without(principal, "admin")


def needs_scope(scope: str) -> Any:
    """A dependency: the caller, if it holds ``scope`` (store.records.SCOPES); else 403
    ``insufficient_scope``. Login sessions hold every scope of their role."""

    def dependency(request: Request, principal: Annotated[Principal, Depends(principal_of)]) -> Principal:
        if not principal.has_scope(scope):
            # The auth middleware metered a detection before any route ran: a refusal costs
            # nothing (its settling reads the route's cost from the request state).
            request.scope.setdefault("state", {})["cost_units"] = 0
        return _refuse_without(principal, scope)

    return dependency


AccountsDep = Annotated[Accounts, Depends(accounts_of)]
# Record ids in paths have one shape (prefix_ULID): anything else is a 422 before any lookup.
RecordId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_]+$")]
CurrentPrincipal = Annotated[Principal, Depends(principal_of)]
AdminPrincipal = Annotated[Principal, Depends(admin_of)]
# What each route needs of an API key (README, "API key scopes").
DetectPrincipal = Annotated[Principal, Depends(needs_scope("detect"))]
ReadPrincipal = Annotated[Principal, Depends(needs_scope("read"))]
KeysPrincipal = Annotated[Principal, Depends(needs_scope("keys"))]


async def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Store calls are blocking I/O: keep them off the event loop."""
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))


class StrictBody(BaseModel):
    """Unknown fields are refused (422 naming them), never silently dropped: an admin who sends
    `{"role": "admin"}` must learn that nothing changed."""

    model_config = ConfigDict(extra="forbid")


class Credentials(StrictBody):
    email: str = Field(max_length=254, json_schema_extra={"format": "email"})
    password: str = Field(max_length=1024)


class SignupRequest(Credentials):
    invite: str | None = Field(None, max_length=1024, description="needed when signups are by invite")


class InviteRequest(StrictBody):
    email: str = Field(max_length=254, json_schema_extra={"format": "email"})


class KeyRequest(StrictBody):
    name: str = Field("default", max_length=64)
    scopes: list[Annotated[str, Field(max_length=32)]] | None = Field(
        None,
        max_length=8,
        description="among detect, read, keys, admin (admins only); default: those of the key or "
        "session making it. A key can grant only scopes it holds.",
        examples=[["detect"], ["read"], ["detect", "read"]],
    )


class RollRequest(StrictBody):
    grace_seconds: int = Field(0, ge=0, le=7 * 86400)


class UserUpdate(StrictBody):
    daily_limit: int | None = Field(None, ge=0, le=10_000_000)
    disabled: bool | None = None


def _shown_once(key: Any, secret: str, role: str) -> dict[str, Any]:
    return {**key.public(role), "key": secret, "note": "store this key now: it is shown only once"}


# --- auth ------------------------------------------------------------------------------------


def throttle_of(request: Request) -> AuthThrottle:
    return throttle_of_app(request.app.state, accounts_of(request).settings)


ThrottleDep = Annotated[AuthThrottle, Depends(throttle_of)]


@router.post("/v1/auth/signup", status_code=201, tags=["auth"])
async def signup(
    body: SignupRequest, request: Request, accounts: AccountsDep, throttle: ThrottleDep
) -> dict[str, Any]:
    """Throttled per client address (auth/throttle.py); `VERITY_SIGNUP_POLICY` decides who may.

    A registered email is answered 409 `email_taken`, on purpose: a generic answer would need a
    confirmation mail to tell the real owner anything, and this answer carries the first API key.
    That it tells whether an address has an account is bounded by the per-address throttle
    (`VERITY_AUTH_PER_IP_PER_MIN`), which counts these attempts like any other (429 past it,
    taken email or not), and by bcrypt: the 409 takes as long as a signup. Login, where
    guessing pays, answers alike for a wrong password and an unknown email."""
    settings = accounts.settings
    if settings.signup_policy == "closed":
        raise Forbidden("signing up is closed on this service; ask its operators", code="signup_closed")
    now = accounts.clock()
    await run(throttle.check_address, client_address(request, settings.trusted_proxy_hops), now)
    if settings.signup_policy == "invite":
        check_invite(settings, body.invite, body.email, now.timestamp())
    user, key, secret = await throttle.run_bcrypt(lambda: accounts.signup(body.email, body.password))
    return {"user": user.public(settings.daily_limit), "api_key": _shown_once(key, secret, user.role)}


@router.post("/v1/auth/login", tags=["auth"])
async def login(
    body: Credentials, request: Request, accounts: AccountsDep, throttle: ThrottleDep
) -> dict[str, Any]:
    """Throttled per client address and per email, with a lockout after repeated failures."""
    now = accounts.clock()
    await run(throttle.check_address, client_address(request, accounts.settings.trusted_proxy_hops), now)
    await run(throttle.check_email, body.email, now)
    try:
        answer = await throttle.run_bcrypt(lambda: accounts.login(body.email, body.password))
    except Unauthorized:
        await run(throttle.login_failed, body.email, now)
        raise
    await run(throttle.login_succeeded, body.email)
    return answer


@router.get("/v1/auth/me", tags=["auth"])
async def me(principal: CurrentPrincipal, accounts: AccountsDep) -> dict[str, Any]:
    """Any key or session; `scopes` says what this one may do."""
    scopes = [s for s in SCOPES if principal.has_scope(s)]
    return {
        **principal.user.public(accounts.settings.daily_limit),
        "auth": principal.method,
        "scopes": scopes,
    }


@router.delete("/v1/auth/me", status_code=204, tags=["auth"])
async def delete_me(request: Request, principal: KeysPrincipal, accounts: AccountsDep) -> Response:
    """Needs the `keys` scope: a leaked detection key must not delete the account."""
    jobs = getattr(request.app.state, "jobs", None)
    if jobs is not None:  # uploaded media first: the records that point at it go with the account
        await run(jobs.delete_user_media, principal.user_id)
    await run(accounts.store.delete_user, principal.user_id)
    return Response(status_code=204)


# --- keys ------------------------------------------------------------------------------------


# Key management needs the `keys` scope (a login session has it).


@router.post("/v1/keys", status_code=201, tags=["keys"])
async def create_key(body: KeyRequest, principal: KeysPrincipal, accounts: AccountsDep) -> dict[str, Any]:
    """`scopes` (optional): what the new key may do; it cannot exceed the caller's."""
    key, secret = await run(
        accounts.create_key, principal.user, body.name, scopes=body.scopes, within=principal.scopes
    )
    return _shown_once(key, secret, principal.user.role)


@router.get("/v1/keys", tags=["keys"])
async def list_keys(principal: KeysPrincipal, accounts: AccountsDep) -> dict[str, Any]:
    keys = await run(accounts.store.list_keys, principal.user_id)
    return {"keys": [k.public(principal.user.role) for k in keys]}


@router.delete("/v1/keys/{key_id}", tags=["keys"])
async def revoke_key(key_id: RecordId, principal: KeysPrincipal, accounts: AccountsDep) -> dict[str, Any]:
    return (await run(accounts.revoke_key, principal.user, key_id)).public(principal.user.role)


@router.post("/v1/keys/{key_id}/roll", status_code=201, tags=["keys"])
async def roll_key(
    key_id: RecordId, principal: KeysPrincipal, accounts: AccountsDep, body: RollRequest | None = None
) -> dict[str, Any]:
    """The successor keeps the old key's scopes, which the caller must hold too."""
    grace = body.grace_seconds if body else 0
    new, secret, old = await run(accounts.roll_key, principal.user, key_id, grace, within=principal.scopes)
    role = principal.user.role
    return {"new_key": _shown_once(new, secret, role), "old_key": old.public(role)}


# --- usage, history, stats -------------------------------------------------------------------


# What each kind of request costs in units of the daily limit (auth/quotas.py).
COSTS = {
    "image": 1,
    "image_explain": 1 + EXPLAIN_UNITS,
    "audio_per_started_minute": AUDIO_UNITS_PER_MINUTE,
    "video_per_started_minute": VIDEO_UNITS_PER_MINUTE,
    "text_per_started_10000_characters": 1,
}


@router.get("/v1/usage", tags=["usage"])
async def usage(principal: ReadPrincipal, accounts: AccountsDep) -> dict[str, Any]:
    now = accounts.clock()
    today, total = await run(accounts.store.usage, principal.user_id, now.strftime("%Y-%m-%d"))
    limit = daily_limit_of(principal.user, accounts.settings)
    return {
        "date": now.strftime("%Y-%m-%d"),
        "units_today": today,
        "daily_limit": limit,
        "remaining": max(limit - today, 0),
        "reset_at": next_midnight(now).isoformat().replace("+00:00", "Z"),
        "total_units": total,
        "costs": COSTS,
        # The names before quotas counted cost units; the same numbers.
        "requests_today": today,
        "total_requests": total,
    }


@router.get("/v1/history", tags=["history"])
async def history(
    principal: ReadPrincipal,
    accounts: AccountsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    page = await run(accounts.store.list_detections, principal.user_id, limit, cursor)
    return {"items": [d.summary() for d in page.items], "next_cursor": page.next_cursor}


@router.get("/v1/history/{detection_id}", tags=["history"])
async def history_item(
    detection_id: RecordId, principal: ReadPrincipal, accounts: AccountsDep
) -> dict[str, Any]:
    detection = await run(accounts.store.get_detection, principal.user_id, detection_id)
    if detection is None:
        raise NotFound("no such detection in your history", code="detection_not_found")
    return detection.result


@router.delete("/v1/history/{detection_id}", status_code=204, tags=["history"])
async def delete_history_item(
    detection_id: RecordId, principal: DetectPrincipal, accounts: AccountsDep
) -> Response:
    """Needs the `detect` scope (results are made and removed with it; `read` only reads)."""
    if not await run(accounts.store.delete_detection, principal.user_id, detection_id):
        raise NotFound("no such detection in your history", code="detection_not_found")
    return Response(status_code=204)


@router.get("/v1/stats", tags=["history"])
async def stats(principal: ReadPrincipal, accounts: AccountsDep) -> dict[str, Any]:
    per_modality = await run(accounts.store.stats, principal.user_id)
    totals = {"total": 0}
    for counts in per_modality.values():
        for verdict, n in counts.items():
            totals[verdict] = totals.get(verdict, 0) + n
    return {"totals": totals, "per_modality": per_modality}


# --- admin -----------------------------------------------------------------------------------


@router.get("/v1/admin/users", tags=["admin"])
async def admin_users(
    _: AdminPrincipal,
    accounts: AccountsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    page = await run(accounts.store.list_users, limit, cursor)
    return {
        "users": [u.public(accounts.settings.daily_limit) for u in page.items],
        "next_cursor": page.next_cursor,
    }


@router.post("/v1/admin/invites", status_code=201, tags=["admin"])
async def admin_invite(body: InviteRequest, _: AdminPrincipal, accounts: AccountsDep) -> dict[str, Any]:
    """An invite for one email (`VERITY_SIGNUP_POLICY=invite`): pass it as `invite` at signup."""
    token, expires_at = make_invite(accounts.settings, body.email, accounts.clock().timestamp())
    return {"email": normalise_email(body.email), "invite": token, "expires_at": iso_epoch(expires_at)}


@router.patch("/v1/admin/users/{user_id}", tags=["admin"])
async def admin_update_user(
    user_id: RecordId, body: UserUpdate, _: AdminPrincipal, accounts: AccountsDep
) -> dict[str, Any]:
    user = await run(
        accounts.store.update_user, user_id, daily_limit=body.daily_limit, disabled=body.disabled
    )
    if user is None:
        raise NotFound("no such user", code="user_not_found")
    return user.public(accounts.settings.daily_limit)
