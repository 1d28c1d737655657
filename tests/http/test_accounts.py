"""Accounts, keys, tokens, usage, history, stats, admin and the ops CLI through the in-process app
(issue 3). Quota races, rollover and per-minute limits live in
tests/http/test_quotas.py; the store contract in tests/store/."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import pytest

from auth.api_keys import digest_key, generate_key, well_formed
from tests.conftest import PROJECT_ROOT, TEST_PASSWORD, Account, Caller, assert_error, login, unique_email
from tests.media_factory import jpeg_bytes

if TYPE_CHECKING:
    from config import Settings

pytestmark = pytest.mark.http

AUTHENTICATED_ROUTES = [
    ("GET", "/v1/auth/me"),
    ("DELETE", "/v1/auth/me"),
    ("POST", "/v1/keys"),
    ("GET", "/v1/keys"),
    ("DELETE", "/v1/keys/key_0"),
    ("POST", "/v1/keys/key_0/roll"),
    ("GET", "/v1/usage"),
    ("GET", "/v1/history"),
    ("GET", "/v1/history/det_0"),
    ("DELETE", "/v1/history/det_0"),
    ("GET", "/v1/stats"),
    ("GET", "/v1/admin/users"),
    ("PATCH", "/v1/admin/users/usr_0"),
    ("POST", "/v1/detect/image"),
]


def detect(caller: Caller, seed: int = 0) -> dict[str, Any]:
    response = caller.post(
        "/v1/detect/image", files={"image": ("face.jpg", jpeg_bytes(96, 64, seed=seed), "image/jpeg")}
    )
    assert response.status_code == 200, response.text
    return response.json()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def as_caller(client, account: Account) -> Caller:
    return Caller(client, account.headers, account)


def bearer(client, account: Account) -> Caller:
    return Caller(
        client, {"Authorization": f"Bearer {login(client, account.email, account.password)}"}, account
    )


def typo_of(key: str) -> str:
    """The key with one character of its body changed: fails the checksum."""
    i = 20
    return key[:i] + ("x" if key[i] != "x" else "y") + key[i + 1 :]


# --- public paths ---------------------------------------------------------------------------------


def test_public_paths_need_no_credentials(client) -> None:
    for path in ("/health", "/health/live", "/health/ready", "/v1/models", "/docs", "/openapi.json"):
        assert client.get(path).status_code == 200, path
        # Credentials, even bad ones, do not get in the way of a public path.
        assert client.get(path, headers={"x-api-key": "vk_live_nope"}).status_code == 200, path


@pytest.mark.parametrize(
    ("method", "path"), AUTHENTICATED_ROUTES, ids=[f"{m} {p}" for m, p in AUTHENTICATED_ROUTES]
)
def test_every_authenticated_route_is_401_json_without_credentials(client, method: str, path: str) -> None:
    response = client.request(method, path)
    assert_error(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == 'Bearer realm="verity"'


# --- signup ------------------------------------------------------------------------------------


def test_signup_returns_the_user_and_a_key_shown_once(client, accounts) -> None:
    email = unique_email("Signup").upper()
    response = client.post("/v1/auth/signup", json={"email": f"  {email} ", "password": TEST_PASSWORD})
    assert response.status_code == 201, response.text
    body = response.json()
    user, shown = body["user"], body["api_key"]
    assert user["email"] == email.lower()
    assert user["role"] == "user" and user["daily_limit"] == 100 and user["disabled"] is False
    assert user["id"].startswith("usr_")
    assert "password" not in json.dumps(body) and "$2b$" not in response.text
    secret = shown["key"]
    assert well_formed(secret)
    assert shown["prefix"] == secret[:14] and shown["name"] == "default"
    assert "once" in shown["note"]

    me = client.get("/v1/auth/me", headers={"x-api-key": secret})
    assert me.status_code == 200, me.text
    assert me.json()["id"] == user["id"] and me.json()["auth"] == "api_key"

    # Never retrievable again: not in the key list, not in the store, not in the database file.
    listed = client.get("/v1/keys", headers={"x-api-key": secret})
    assert secret not in listed.text
    assert [k["prefix"] for k in listed.json()["keys"]] == [secret[:14]]
    stored = accounts.store.list_keys(user["id"])
    assert len(stored) == 1 and secret not in repr(stored[0])
    pepper = accounts.settings.api_key_pepper
    assert stored[0].digest == digest_key(secret, pepper.get_secret_value() if pepper else None)
    # Dump the whole database through SQLite itself: reading the file directly from this process
    # would drop the app's POSIX locks on it (SQLite's "how to corrupt" §2.2).
    with contextlib.closing(sqlite3.connect(f"file:{accounts.settings.sqlite_path}?mode=ro", uri=True)) as db:
        dump = "\n".join(db.iterdump())
    assert stored[0].digest in dump and secret[:14] in dump
    assert secret not in dump and secret[14:] not in dump


def test_signup_duplicate_email_is_409(client, signup) -> None:
    account = signup()
    for email in (account.email, account.email.upper(), f" {account.email}"):
        response = client.post("/v1/auth/signup", json={"email": email, "password": "another password"})
        assert_error(response, 409, "email_taken")
    assert login(client, account.email)  # the first account is untouched


@pytest.mark.parametrize(
    "email",
    [
        "not-an-email",
        "a@b",
        "",
        "two@@example.com",
        "sp ace@example.com",
        "a\x00@b.co",
        "a@b.co\x00<script>",
        "x<y@example.com",
    ],
)
def test_signup_bad_email_is_422(client, email: str) -> None:
    response = client.post("/v1/auth/signup", json={"email": email, "password": TEST_PASSWORD})
    assert_error(response, 422, "invalid_email")


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("p" * 73, "password_too_long"),
        ("é" * 37, "password_too_long"),  # 37 characters, 74 bytes
        ("😀" * 19, "password_too_long"),  # 19 characters, 76 bytes
        ("p" * 1000, "password_too_long"),
        ("short", "weak_password"),
    ],
    ids=["73-bytes", "multibyte-74", "emoji-76", "1000", "short"],
)
def test_signup_bad_password_is_422(client, password: str, code: str) -> None:
    email = unique_email()
    response = client.post("/v1/auth/signup", json={"email": email, "password": password})
    assert_error(response, 422, code)
    # Nothing was created: the same email signs up fine afterwards.
    assert client.post("/v1/auth/signup", json={"email": email, "password": TEST_PASSWORD}).status_code == 201


def test_signup_malformed_body_is_422(client) -> None:
    assert_error(client.post("/v1/auth/signup", json={"email": unique_email()}), 422, "invalid_input")
    assert_error(client.post("/v1/auth/signup", json=["x"]), 422, "invalid_input")
    response = client.post("/v1/auth/signup", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code in (400, 422)
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]


# --- login --------------------------------------------------------------------------------------


def test_login_issues_a_jwt_that_works(client, user: Account) -> None:
    response = client.post("/v1/auth/login", json={"email": user.email.upper(), "password": user.password})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == user.user_id
    assert (claims["iss"], claims["aud"]) == ("verity", "verity-api")
    assert claims["exp"] - claims["iat"] == 3600
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"

    me = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200, me.text
    assert me.json()["id"] == user.user_id and me.json()["auth"] == "jwt"
    # The scheme is case-insensitive; the JWT also works for detection.
    assert detect(Caller(client, {"authorization": f"bearer {body['access_token']}"}))["id"].startswith(
        "det_"
    )


def test_wrong_password_and_unknown_email_answer_alike(client, user: Account) -> None:
    wrong = client.post("/v1/auth/login", json={"email": user.email, "password": "not the password"})
    unknown = client.post("/v1/auth/login", json={"email": unique_email(), "password": user.password})
    malformed = client.post("/v1/auth/login", json={"email": "nobody", "password": user.password})
    too_long = client.post("/v1/auth/login", json={"email": user.email, "password": "p" * 100})
    errors = [assert_error(r, 401, "invalid_credentials") for r in (wrong, unknown, malformed, too_long)]
    assert len({e["message"] for e in errors}) == 1
    assert "access_token" not in wrong.text


def test_login_to_an_account_without_a_password_is_401(client, accounts) -> None:
    """Accounts made for external JWKS issuers store "!" as their hash: a login attempt on one is
    a plain 401 (it used to be bcrypt's ValueError: a 500)."""
    from store.ids import new_id
    from store.records import User

    email = unique_email("external")
    accounts.store.create_user(
        User(id=new_id("usr"), email=email, password_hash="!", created_at="2026-01-01T00:00:00Z"), None
    )
    response = client.post("/v1/auth/login", json={"email": email, "password": "whatever it is"})
    assert_error(response, 401, "invalid_credentials")


# --- keys ----------------------------------------------------------------------------------------


def test_named_key_is_shown_once_and_listed_without_secrets(client, api: Caller, accounts) -> None:
    created = api.post("/v1/keys", json={"name": "ci runner"})
    assert created.status_code == 201, created.text
    new = created.json()
    assert new["name"] == "ci runner" and well_formed(new["key"]) and new["prefix"] == new["key"][:14]
    assert new["last_used_at"] is None and new["revoked_at"] is None
    assert client.get("/v1/auth/me", headers={"x-api-key": new["key"]}).status_code == 200

    listed = api.get("/v1/keys")
    assert listed.status_code == 200
    keys = {k["id"]: k for k in listed.json()["keys"]}
    assert set(keys) == {k.id for k in accounts.store.list_keys(api.account.user_id)}
    assert keys[new["id"]]["name"] == "ci runner"
    for key in keys.values():
        assert set(key) == {
            "id", "name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at", "expires_at"
        }  # fmt: skip
        assert key["scopes"] == ["detect", "read", "keys"]  # a user's keys by default: all but admin
        assert key["prefix"].startswith("vk_live_") and len(key["prefix"]) == 14
    # Neither secret nor digest ever comes back.
    for stored in accounts.store.list_keys(api.account.user_id):
        assert stored.digest not in listed.text
    assert new["key"] not in listed.text and api.account.key not in listed.text
    # Both keys were used by now: last_used_at is filled in.
    assert keys[new["id"]]["last_used_at"] is not None


def test_key_name_is_validated(api: Caller) -> None:
    assert_error(api.post("/v1/keys", json={"name": "x" * 65}), 422, "invalid_input")
    assert api.post("/v1/keys", json={}).json()["name"] == "default"


def test_revoked_key_is_401_at_once(client, api: Caller) -> None:
    second = api.post("/v1/keys", json={"name": "second"}).json()
    assert client.get("/v1/auth/me", headers={"x-api-key": second["key"]}).status_code == 200
    revoked = api.delete(f"/v1/keys/{second['id']}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None and "key" not in revoked.json()

    response = client.get("/v1/auth/me", headers={"x-api-key": second["key"]})
    assert_error(response, 401, "revoked_api_key")
    assert_error(
        Caller(client, {"x-api-key": second["key"]}).post("/v1/detect/image"), 401, "revoked_api_key"
    )
    assert api.get("/v1/auth/me").status_code == 200  # the other key is unaffected
    assert_error(api.delete("/v1/keys/key_does_not_exist"), 404, "key_not_found")


def test_roll_without_grace_stops_the_old_key_at_once(client, api: Caller) -> None:
    old_id = api.get("/v1/keys").json()["keys"][0]["id"]
    rolled = api.post(f"/v1/keys/{old_id}/roll")
    assert rolled.status_code == 201, rolled.text
    body = rolled.json()
    assert body["old_key"]["id"] == old_id and body["old_key"]["revoked_at"] is not None
    new_key = body["new_key"]["key"]
    assert well_formed(new_key) and new_key != api.account.key and body["new_key"]["name"] == "test"

    assert_error(api.get("/v1/auth/me"), 401, "revoked_api_key")
    assert client.get("/v1/auth/me", headers={"x-api-key": new_key}).status_code == 200
    # A revoked key cannot be rolled again.
    again = client.post(f"/v1/keys/{old_id}/roll", headers={"x-api-key": new_key})
    assert_error(again, 404, "key_not_found")


def test_roll_with_grace_keeps_the_old_key_until_it_expires(
    client, api: Caller, accounts, monkeypatch
) -> None:
    old_id = api.get("/v1/keys").json()["keys"][0]["id"]
    rolled = api.post(f"/v1/keys/{old_id}/roll", json={"grace_seconds": 3600})
    assert rolled.status_code == 201, rolled.text
    old, new_key = rolled.json()["old_key"], rolled.json()["new_key"]["key"]
    assert old["revoked_at"] is None
    expires = datetime.fromisoformat(old["expires_at"].replace("Z", "+00:00"))
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)

    assert api.get("/v1/auth/me").status_code == 200  # within the grace period
    assert detect(api)["id"].startswith("det_")
    # The service's clock (its injected dependency) an hour and a bit later: past expires_at.
    real_clock = accounts.clock
    monkeypatch.setattr(accounts, "clock", lambda: real_clock() + timedelta(seconds=3605))
    assert_error(api.get("/v1/auth/me"), 401, "revoked_api_key")
    assert client.get("/v1/auth/me", headers={"x-api-key": new_key}).status_code == 200


def test_a_rolled_key_cannot_be_rolled_again_to_outlive_its_grace(client, api: Caller, accounts, monkeypatch):
    """Rolling the old key of a roll again used to reset its ``expires_at``: the old key could be
    kept alive for ever, or revived after its grace period ended."""
    old_id = api.get("/v1/keys").json()["keys"][0]["id"]
    first = api.post(f"/v1/keys/{old_id}/roll", json={"grace_seconds": 60}).json()
    new = Caller(client, {"x-api-key": first["new_key"]["key"]})
    expires_at = first["old_key"]["expires_at"]

    again = new.post(f"/v1/keys/{old_id}/roll", json={"grace_seconds": 7 * 86400})
    assert_error(again, 404, "key_not_found")
    real_clock = accounts.clock
    monkeypatch.setattr(accounts, "clock", lambda: real_clock() + timedelta(seconds=120))  # grace over
    assert_error(api.get("/v1/auth/me"), 401, "revoked_api_key")
    assert_error(new.post(f"/v1/keys/{old_id}/roll", json={"grace_seconds": 3600}), 404, "key_not_found")
    assert_error(api.get("/v1/auth/me"), 401, "revoked_api_key")
    old = next(k for k in new.get("/v1/keys").json()["keys"] if k["id"] == old_id)
    assert old["expires_at"] == expires_at
    assert len(new.get("/v1/keys").json()["keys"]) == 2  # no extra successors were made
    # Revoking the old key during its grace period still works (it stops at once).
    assert new.delete(f"/v1/keys/{old_id}").json()["revoked_at"] is not None


def test_roll_validation(api: Caller) -> None:
    key_id = api.get("/v1/keys").json()["keys"][0]["id"]
    for grace in (-1, 7 * 86400 + 1, "soon"):
        assert_error(api.post(f"/v1/keys/{key_id}/roll", json={"grace_seconds": grace}), 422, "invalid_input")
    assert_error(api.post("/v1/keys/key_nope/roll"), 404, "key_not_found")
    assert api.get("/v1/auth/me").status_code == 200  # nothing was rolled


# --- usage, history, stats -------------------------------------------------------------------------


def test_usage_counts_detections_and_resets_at_midnight_utc(api: Caller) -> None:
    fresh = api.get("/v1/usage")
    assert fresh.status_code == 200, fresh.text
    now = datetime.now(UTC)
    usage = fresh.json()
    assert usage["requests_today"] == 0 and usage["total_requests"] == 0
    assert usage["daily_limit"] == 100 and usage["remaining"] == 100
    assert usage["date"] == now.strftime("%Y-%m-%d")
    reset = datetime.fromisoformat(usage["reset_at"].replace("Z", "+00:00"))
    assert usage["reset_at"].endswith("Z")
    assert (reset.hour, reset.minute, reset.second) == (0, 0, 0)
    assert now < reset <= now + timedelta(days=1)

    response = api.post("/v1/detect/image", files={"image": ("a.jpg", jpeg_bytes(64, 64), "image/jpeg")})
    assert response.status_code == 200
    assert response.headers["ratelimit-remaining"] == "59"  # the nearer limit: 60 a minute
    assert "ratelimit-policy" in response.headers
    detect(api, seed=1)
    api.get("/v1/history")  # not metered
    usage = api.get("/v1/usage").json()
    assert (usage["requests_today"], usage["remaining"], usage["total_requests"]) == (2, 98, 2)


def test_history_pages_newest_first_get_and_delete(api: Caller) -> None:
    made = [detect(api, seed=i) for i in range(3)]
    first = api.get("/v1/history", params={"limit": 2}).json()
    assert [i["id"] for i in first["items"]] == [made[2]["id"], made[1]["id"]]
    assert first["next_cursor"] == made[1]["id"]
    second = api.get("/v1/history", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [i["id"] for i in second["items"]] == [made[0]["id"]]
    assert second["next_cursor"] is None
    item = first["items"][0]
    assert set(item) == {"id", "created_at", "modality", "verdict", "fake_probability", "model_id"}
    assert item["fake_probability"] == made[2]["fake_probability"]
    assert first["items"][0]["created_at"] >= first["items"][1]["created_at"]

    full = api.get(f"/v1/history/{made[1]['id']}")
    assert full.status_code == 200 and full.json() == made[1]
    assert api.delete(f"/v1/history/{made[1]['id']}").status_code == 204
    assert_error(api.get(f"/v1/history/{made[1]['id']}"), 404, "detection_not_found")
    assert_error(api.delete(f"/v1/history/{made[1]['id']}"), 404, "detection_not_found")
    remaining = api.get("/v1/history").json()["items"]
    assert [i["id"] for i in remaining] == [made[2]["id"], made[0]["id"]]
    for bad in ({"limit": 0}, {"limit": 101}, {"cursor": "x" * 65}):
        assert_error(api.get("/v1/history", params=bad), 422, "invalid_input")


def test_stats_count_per_modality_and_verdict(api: Caller) -> None:
    assert api.get("/v1/stats").json() == {"totals": {"total": 0}, "per_modality": {}}
    verdicts = Counter(detect(api, seed=i)["verdict"] for i in range(3))
    stats = api.get("/v1/stats").json()
    assert stats["per_modality"]["image"] == {"total": 3, **verdicts}
    assert stats["totals"] == {"total": 3, **verdicts}


# --- deleting the account -------------------------------------------------------------------------


def test_delete_me_removes_the_account_and_its_data(client, user: Account, accounts) -> None:
    caller = as_caller(client, user)
    token = bearer(client, user)
    made = detect(caller)
    assert caller.post("/v1/keys", json={"name": "extra"}).status_code == 201
    assert caller.delete("/v1/auth/me").status_code == 204

    assert_error(caller.get("/v1/auth/me"), 401, "invalid_api_key")
    assert_error(token.get("/v1/auth/me"), 401, "invalid_credentials")
    assert_error(
        client.post("/v1/auth/login", json={"email": user.email, "password": user.password}),
        401,
        "invalid_credentials",
    )
    assert accounts.store.get_user(user.user_id) is None
    assert accounts.store.list_keys(user.user_id) == []
    assert accounts.store.get_detection(user.user_id, made["id"]) is None
    assert accounts.store.list_detections(user.user_id, 10, None).items == []
    # The day's usage stays until it expires (a new account of the same id must not reset it).
    assert accounts.store.usage(user.user_id, datetime.now(UTC).strftime("%Y-%m-%d")) == (1, 0)
    # The address is free again.
    response = client.post("/v1/auth/signup", json={"email": user.email, "password": TEST_PASSWORD})
    assert response.status_code == 201


# --- isolation: A can never see or touch B's data ----------------------------------


def test_user_a_cannot_read_list_or_delete_b_history(client, new_user) -> None:
    a, b = as_caller(client, new_user()), as_caller(client, new_user())
    theirs = detect(b)
    b_before = b.get("/v1/history").json()

    assert_error(a.get(f"/v1/history/{theirs['id']}"), 404, "detection_not_found")
    assert_error(a.delete(f"/v1/history/{theirs['id']}"), 404, "detection_not_found")
    assert a.get("/v1/history").json() == {"items": [], "next_cursor": None}
    assert a.get("/v1/stats").json()["totals"] == {"total": 0}
    # A cursor is no way in either.
    assert a.get("/v1/history", params={"cursor": "det_ZZZZZZZZZZZZZZZZZZZZZZZZZZ"}).json()["items"] == []

    assert b.get("/v1/history").json() == b_before
    assert b.get(f"/v1/history/{theirs['id']}").json() == theirs
    assert b.get("/v1/stats").json()["totals"]["total"] == 1


def test_user_a_cannot_list_revoke_or_roll_b_keys(client, new_user) -> None:
    a, b = as_caller(client, new_user()), as_caller(client, new_user())
    b_second = b.post("/v1/keys", json={"name": "b-second"}).json()
    b_keys = b.get("/v1/keys").json()

    a_keys = a.get("/v1/keys").json()["keys"]
    assert {k["id"] for k in a_keys}.isdisjoint({k["id"] for k in b_keys["keys"]})
    for key in b_keys["keys"]:
        assert_error(a.delete(f"/v1/keys/{key['id']}"), 404, "key_not_found")
        assert_error(a.post(f"/v1/keys/{key['id']}/roll"), 404, "key_not_found")
        assert_error(a.post(f"/v1/keys/{key['id']}/roll", json={"grace_seconds": 60}), 404, "key_not_found")

    # B's keys are exactly as they were (last use aside), and both still work.
    def unchanged(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in key.items() if k != "last_used_at"} for key in keys]

    after = b.get("/v1/keys").json()["keys"]
    assert unchanged(after) == unchanged(b_keys["keys"])
    assert all(key["revoked_at"] is None and key["expires_at"] is None for key in after)
    assert b.get("/v1/auth/me").status_code == 200
    assert client.get("/v1/auth/me", headers={"x-api-key": b_second["key"]}).status_code == 200


def test_user_a_cannot_see_or_spend_b_usage(client, new_user) -> None:
    a, b = as_caller(client, new_user()), as_caller(client, new_user())
    detect(b)
    b_before = b.get("/v1/usage").json()
    for seed in range(2):
        detect(a, seed=seed)
    a_usage = a.get("/v1/usage").json()
    assert (a_usage["requests_today"], a_usage["total_requests"]) == (2, 2)
    assert b.get("/v1/usage").json() == b_before
    assert b_before["requests_today"] == 1
    # And the admin routes that could reach B are closed to A.
    assert_error(a.get("/v1/admin/users"), 403, "admin_only")
    assert_error(a.patch(f"/v1/admin/users/{b.account.user_id}", json={"daily_limit": 0}), 403, "admin_only")
    assert b.get("/v1/usage").json()["daily_limit"] == 100


# --- the checksum is checked before any store lookup -------------------------------------------------


class CountingStore:
    """A spy on the real store: every call goes through to it, and is counted by method name."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


def test_bad_checksum_is_rejected_before_any_store_lookup(client, accounts, api_key, monkeypatch) -> None:
    spy = CountingStore(accounts.store)
    monkeypatch.setattr(accounts, "store", spy)

    for bad in (typo_of(api_key), api_key[:-1], api_key.replace("vk_live_", "vk_test_"), "x" * 57):
        assert not well_formed(bad)
        response = client.post("/v1/detect/image", headers={"x-api-key": bad})
        assert_error(response, 401, "invalid_api_key")
        assert "checksum" in response.json()["error"]["message"]
    assert spy.calls == Counter()  # not one store call of any kind

    # A well-formed key that does not exist costs exactly one lookup: the spy does see lookups.
    unknown = generate_key().secret
    assert_error(client.get("/v1/auth/me", headers={"x-api-key": unknown}), 401, "invalid_api_key")
    assert spy.calls["get_key_by_digest"] == 1
    assert client.get("/v1/auth/me", headers={"x-api-key": api_key}).status_code == 200
    assert spy.calls["get_key_by_digest"] == 2


# --- admin ------------------------------------------------------------------------------------------


def all_users(client, headers: dict[str, str]) -> list[dict[str, Any]]:
    users, cursor = [], None
    while True:
        params = {"limit": 50, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/admin/users", params=params, headers=headers)
        assert page.status_code == 200, page.text
        users += page.json()["users"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return users


def test_admin_lists_users(client, admin_headers, admin: Account, user: Account) -> None:
    users = {u["id"]: u for u in all_users(client, admin_headers)}
    assert users[user.user_id]["email"] == user.email
    assert users[admin.user_id]["role"] == "admin"
    for listed in users.values():
        assert "password_hash" not in listed and set(listed) >= {"id", "email", "role", "daily_limit"}
    first = client.get("/v1/admin/users", params={"limit": 1}, headers=admin_headers).json()
    assert len(first["users"]) == 1 and first["next_cursor"] == first["users"][0]["id"]
    # An admin's JWT is as good as their key (the role comes from the store, not the token).
    token = {"Authorization": f"Bearer {login(client, admin.email)}"}
    assert client.get("/v1/admin/users", params={"limit": 1}, headers=token).status_code == 200


def test_admin_sets_a_daily_limit_enforced_on_the_next_request(client, admin_headers, api: Caller) -> None:
    detect(api)
    patched = client.patch(
        f"/v1/admin/users/{api.account.user_id}", json={"daily_limit": 1}, headers=admin_headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["daily_limit"] == 1

    refused = api.post("/v1/detect/image", files={"image": ("a.jpg", jpeg_bytes(), "image/jpeg")})
    error = assert_error(refused, 429, "daily_quota_exceeded")
    assert "daily" in error["message"]
    assert int(refused.headers["retry-after"]) > 0
    assert refused.headers["ratelimit-limit"] == "1" and refused.headers["ratelimit-remaining"] == "0"
    usage = api.get("/v1/usage").json()
    assert (usage["daily_limit"], usage["remaining"], usage["requests_today"]) == (1, 0, 1)

    raised = client.patch(
        f"/v1/admin/users/{api.account.user_id}", json={"daily_limit": 5}, headers=admin_headers
    )
    assert raised.json()["daily_limit"] == 5
    assert detect(api)["id"].startswith("det_")


def test_admin_disables_a_user_whose_key_and_token_stop_at_once(client, admin_headers, user: Account) -> None:
    key, token = as_caller(client, user), bearer(client, user)
    assert key.get("/v1/auth/me").status_code == 200 and token.get("/v1/auth/me").status_code == 200

    disabled = client.patch(f"/v1/admin/users/{user.user_id}", json={"disabled": True}, headers=admin_headers)
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    for caller in (key, token):
        assert_error(caller.get("/v1/auth/me"), 403, "account_disabled")
        assert_error(caller.post("/v1/detect/image"), 403, "account_disabled")
        assert_error(caller.get("/v1/history"), 403, "account_disabled")
    login_response = client.post("/v1/auth/login", json={"email": user.email, "password": user.password})
    assert_error(login_response, 403, "account_disabled")

    enabled = client.patch(f"/v1/admin/users/{user.user_id}", json={"disabled": False}, headers=admin_headers)
    assert enabled.json()["disabled"] is False
    assert key.get("/v1/auth/me").status_code == 200 and token.get("/v1/auth/me").status_code == 200


@pytest.mark.parametrize("body", [{"role": "admin"}, {"daily_limit": 5, "dailylimit": 6}])
def test_admin_patch_refuses_unknown_fields(client, admin_headers, user: Account, body) -> None:
    response = client.patch(f"/v1/admin/users/{user.user_id}", json=body, headers=admin_headers)
    error = assert_error(response, 422, "invalid_input")
    assert "not permitted" in error["message"]
    unchanged = client.get("/v1/auth/me", headers=user.headers).json()
    assert unchanged["role"] == "user" and unchanged["daily_limit"] != 5


def test_admin_routes_refuse_non_admins_and_validate(client, admin_headers, api: Caller, jwt_headers) -> None:
    for caller in (api, Caller(client, jwt_headers)):
        assert_error(caller.get("/v1/admin/users"), 403, "admin_only")
        response = caller.patch(f"/v1/admin/users/{api.account.user_id}", json={"daily_limit": 10**6})
        assert_error(response, 403, "admin_only")
    assert api.get("/v1/usage").json()["daily_limit"] == 100  # the attempt changed nothing
    assert_error(
        client.patch("/v1/admin/users/usr_nope", json={"disabled": True}, headers=admin_headers), 404
    )
    for bad in ({"daily_limit": -1}, {"disabled": "maybe"}):
        response = client.patch(f"/v1/admin/users/{api.account.user_id}", json=bad, headers=admin_headers)
        assert_error(response, 422, "invalid_input")


# --- every auth failure is the JSON error shape -----------------------------------------------------


def forged_hs256(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def test_token_failures_are_401_json(client, accounts, user: Account) -> None:
    own = accounts.own_tokens
    now = datetime.now(UTC).timestamp()
    claims = {
        "sub": user.user_id,
        "iss": "verity",
        "aud": "verity-api",
        "iat": int(now),
        "exp": int(now) + 60,
    }
    unsigned = f"{b64url(json.dumps({'alg': 'none'}).encode())}.{b64url(json.dumps(claims).encode())}."
    cases = {
        "expired": (own.issue(user.user_id, role="user", email=user.email, now=now - 7200), "token_expired"),
        "alg-none": (unsigned, "invalid_token"),
        "other-secret": (jwt.encode(claims, b"s" * 40, algorithm="HS256"), "invalid_token"),
        "list-issuer": (
            forged_hs256({"alg": "HS256"}, {**claims, "iss": ["verity"]}, b"s" * 40),
            "invalid_token",
        ),
        "unknown-issuer": (
            jwt.encode({**claims, "iss": "elsewhere"}, b"s" * 40, algorithm="HS256"),
            "invalid_token",
        ),
        "garbage": ("not-a-token", "invalid_token"),
    }
    for name, (token, code) in cases.items():
        for method, path in (("GET", "/v1/auth/me"), ("POST", "/v1/detect/image")):
            response = client.request(method, path, headers={"Authorization": f"Bearer {token}"})
            error = assert_error(response, 401, code)
            assert response.headers["www-authenticate"].startswith("Bearer"), name
            assert error["message"], name
    # A valid token for a user that does not exist (any more).
    ghost = own.issue("usr_gone", role="admin", email="gone@example.com")
    assert_error(client.get("/v1/admin/users", headers={"Authorization": f"Bearer {ghost}"}), 401)


def test_key_failures_are_401_json(client, api_key) -> None:
    for key, code in (
        (typo_of(api_key), "invalid_api_key"),
        (generate_key().secret, "invalid_api_key"),
        ("", "unauthenticated"),
        ("é" * 57, "invalid_api_key"),
    ):
        response = client.get("/v1/usage", headers={"x-api-key": key.encode("utf-8")})
        assert_error(response, 401, code)
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_request_id_is_in_every_auth_error(client) -> None:
    response = client.get("/v1/usage", headers={"x-request-id": "trace-42", "x-api-key": "vk_live_short"})
    assert assert_error(response, 401)["request_id"] == "trace-42"


# --- the ops CLI ------------------------------------------------------------------------------------


def run_cli(*args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    if password is not None:
        env["VERITY_NEW_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "auth", *args],
        cwd=PROJECT_ROOT,
        env=env,  # the session's VERITY_SQLITE_PATH and VERITY_DEV_SECRET_PATH
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_ops_cli_creates_an_admin_and_a_key_without_http(client) -> None:
    email = unique_email("ops")
    done = run_cli("create-user", "--email", email, "--admin", password="ops password 123")
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert created["user"]["email"] == email and created["user"]["role"] == "admin"
    key = created["api_key"]["key"]
    assert well_formed(key)

    # The printed key works against the running app at once, with admin rights.
    admin_view = client.get("/v1/admin/users", params={"limit": 500}, headers={"x-api-key": key})
    assert admin_view.status_code == 200, admin_view.text
    assert client.get("/v1/auth/me", headers={"x-api-key": key}).json()["role"] == "admin"
    assert login(client, email, "ops password 123")

    more = run_cli("create-key", "--email", email, "--name", "batch")
    assert more.returncode == 0, more.stderr
    batch = json.loads(more.stdout)
    assert batch["name"] == "batch"
    me = client.get("/v1/auth/me", headers={"x-api-key": batch["key"]})
    assert me.status_code == 200, me.text
    assert me.json()["email"] == email

    missing = run_cli("create-key", "--email", unique_email("nobody"))
    assert missing.returncode == 2 and "error: user_not_found: no user" in missing.stderr


# --- an external JWKS issuer through the HTTP layer ---------------------------------------------------


def local_issuer_settings(tmp_path: Path, issuers: list[dict[str, Any]], **extra: Any) -> Settings:
    """Settings of their own (SQLite file, development secret) that accept ``issuers``, whose
    JWKS endpoints are plain http on loopback (allowed for 127.0.0.1 only)."""
    from config import Settings  # at run time, as the tests here import it

    return Settings(
        sqlite_path=tmp_path / "verity.db",
        dev_secret_path=tmp_path / "dev-secret",
        jwt_external_issuers=issuers,
        jwks_insecure_hosts=["127.0.0.1"],
        **extra,
    )


def test_external_issuer_tokens_over_http(tmp_path) -> None:
    """An app configured with an external issuer (a real JWKS endpoint on 127.0.0.1): its users get
    an account on first sight, forged kids cost at most one JWKS fetch, and every failure is the
    JSON error shape. No model services are needed for these routes."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from starlette.testclient import TestClient

    from api.app import create_app
    from auth.accounts import Accounts
    from store.sqlite import SQLiteStore
    from tests.jwks import rsa_jwk, serving

    issuer, audience = "https://auth.example.test/", "verity-external"
    key, stranger = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    now = int(datetime.now(UTC).timestamp())
    claims = {"iss": issuer, "aud": audience, "sub": "ext-42", "iat": now, "exp": now + 300}

    def bearer_of(signing_key: Any, kid: str, **extra: Any) -> dict[str, str]:
        token = jwt.encode({**claims, **extra}, signing_key, algorithm="RS256", headers={"kid": kid})
        return {"Authorization": f"Bearer {token}"}

    with serving() as endpoint:
        endpoint.reset([rsa_jwk(key, "k1")])
        settings = local_issuer_settings(
            tmp_path,
            [{"issuer": issuer, "jwks_url": endpoint.url, "audience": audience}],
            jwks_refetch_cooldown_s=60,
        )
        app = create_app(settings)
        store = SQLiteStore(settings.sqlite_path)
        app.state.accounts = Accounts(store, settings)
        with TestClient(app) as http:
            me = http.get(
                "/v1/auth/me",
                headers=bearer_of(key, "k1", email="Ext@Example.com", email_verified=True, role="admin"),
            )
            assert me.status_code == 200, me.text
            profile = me.json()
            assert profile["auth"] == "jwt" and profile["email"] == "ext@example.com"
            assert (
                profile["id"].startswith("usr_ext_") and profile["role"] == "user"
            )  # role claims are ignored
            assert http.get("/v1/auth/me", headers=bearer_of(key, "k1")).json()["id"] == profile["id"]
            assert_error(
                http.get("/v1/admin/users", headers=bearer_of(key, "k1", role="admin")), 403, "admin_only"
            )
            assert endpoint.fetches == 1

            for i in range(100):
                response = http.get("/v1/usage", headers=bearer_of(stranger, f"forged-{i}"))
                assert_error(response, 401, "invalid_token")
            assert endpoint.fetches == 1  # the flood cost no JWKS fetch

            assert_error(
                http.get("/v1/usage", headers=bearer_of(key, "k1", aud="other")), 401, "invalid_token"
            )
            expired = bearer_of(key, "k1", iat=now - 4000, exp=now - 3600)
            assert_error(http.get("/v1/usage", headers=expired), 401, "token_expired")
            # The external account has no password: logging in to it is a plain 401.
            login_attempt = http.post(
                "/v1/auth/login", json={"email": "ext@example.com", "password": "guess it 123"}
            )
            assert_error(login_attempt, 401, "invalid_credentials")
        store.close()


def test_an_unreachable_or_broken_issuer_is_a_503_over_http(tmp_path) -> None:
    """When an external issuer's JWKS cannot be fetched (nothing listens, or it answers garbage)
    its tokens are answered 503 ``issuer_unavailable`` with ``Retry-After`` in the JSON error
    shape: never a 500, and not a 401 that would tell the client its token is bad. A token with
    an unknown kid while the issuer answers well stays a 401."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from starlette.testclient import TestClient

    from api.app import create_app
    from auth.accounts import Accounts
    from store.sqlite import SQLiteStore
    from tests.jwks import rsa_jwk, serving

    down, broken, healthy = (f"https://{name}.example.test/" for name in ("down", "broken", "healthy"))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(datetime.now(UTC).timestamp())

    def bearer_for(issuer: str, kid: str = "k1") -> dict[str, str]:
        claims = {"iss": issuer, "aud": "verity-external", "sub": "ext-7", "iat": now, "exp": now + 300}
        return {"Authorization": f"Bearer {jwt.encode(claims, key, algorithm='RS256', headers={'kid': kid})}"}

    with serving() as gone:
        gone_url = gone.url
    with serving() as garbage, serving() as good:
        garbage.raw = b"<html>502 Bad Gateway</html>"
        good.reset([rsa_jwk(key, "k1")])
        issuers = [
            {"issuer": down, "jwks_url": gone_url, "audience": "verity-external"},
            {"issuer": broken, "jwks_url": garbage.url, "audience": "verity-external"},
            {"issuer": healthy, "jwks_url": good.url, "audience": "verity-external"},
        ]
        settings = local_issuer_settings(tmp_path, issuers)
        app = create_app(settings)
        store = SQLiteStore(settings.sqlite_path)
        app.state.accounts = Accounts(store, settings)
        with TestClient(app, raise_server_exceptions=False) as http:
            for issuer in (down, broken):
                for method, path in (("GET", "/v1/auth/me"), ("POST", "/v1/detect/image")):
                    response = http.request(method, path, headers=bearer_for(issuer))
                    error = assert_error(response, 503, "issuer_unavailable")
                    assert int(response.headers["retry-after"]) >= 1
                    assert issuer in error["message"]
            assert garbage.fetches == 1  # the failed fetch is retried once per cooldown, not per token
            assert http.get("/v1/auth/me", headers=bearer_for(healthy)).status_code == 200
            assert_error(http.get("/v1/auth/me", headers=bearer_for(healthy, "k9")), 401, "invalid_token")
        store.close()


@contextlib.contextmanager
def external_issuer_app(tmp_path):
    """An app (no models) that accepts one external issuer, served by a real JWKS endpoint on
    127.0.0.1; yields its client, its accounts and ``bearer(**claims)`` for that issuer's tokens."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from starlette.testclient import TestClient

    from api.app import create_app
    from auth.accounts import Accounts
    from store.sqlite import SQLiteStore
    from tests.jwks import rsa_jwk, serving

    issuer, audience = "https://idp.example.test/", "verity-external"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def bearer_of(**extra: Any) -> dict[str, str]:
        now = int(datetime.now(UTC).timestamp())
        claims = {"iss": issuer, "aud": audience, "sub": "ext-1", "iat": now, "exp": now + 300, **extra}
        return {
            "Authorization": f"Bearer {jwt.encode(claims, key, algorithm='RS256', headers={'kid': 'k1'})}"
        }

    with serving() as endpoint:
        endpoint.reset([rsa_jwk(key, "k1")])
        settings = local_issuer_settings(
            tmp_path, [{"issuer": issuer, "jwks_url": endpoint.url, "audience": audience}]
        )
        app = create_app(settings)
        store = SQLiteStore(settings.sqlite_path)
        accounts = app.state.accounts = Accounts(store, settings)
        try:
            with TestClient(app, raise_server_exceptions=False) as http:
                yield http, accounts, bearer_of
        finally:
            store.close()


def test_an_external_email_is_kept_only_when_the_issuer_verified_it(tmp_path) -> None:
    """An unverified ``email`` claim is whatever the user typed at the issuer: it could name
    someone else's address. It is kept only with ``email_verified: true``."""
    with external_issuer_app(tmp_path) as (http, accounts, bearer_of):
        cases = {
            "verified": ({"email": "Alice@Example.com", "email_verified": True}, "alice@example.com"),
            "verified-string": ({"email": "bob@example.com", "email_verified": "true"}, "bob@example.com"),
            "unverified": ({"email": "carol@example.com", "email_verified": False}, None),
            "unverified-string": ({"email": "dave@example.com", "email_verified": "false"}, None),
            "no-claim": ({"email": "erin@example.com"}, None),
            "truthy-but-not-true": ({"email": "frank@example.com", "email_verified": 1}, None),
            # A verified address that another account holds already: a synthetic one, not a 401.
            "verified-taken": ({"email": "alice@example.com", "email_verified": True}, None),
        }
        for subject, (claims, expected) in cases.items():
            me = http.get("/v1/auth/me", headers=bearer_of(sub=subject, **claims))
            assert me.status_code == 200, (subject, me.text)
            profile = me.json()
            synthetic = f"{subject}@{profile['id']}.external"
            assert profile["email"] == (expected or synthetic), subject
            assert accounts.store.get_user(profile["id"]).email == profile["email"]
        # An unverified claim never takes an address: the real owner can still sign up with it.
        signup = http.post("/v1/auth/signup", json={"email": "carol@example.com", "password": TEST_PASSWORD})
        assert signup.status_code == 201, signup.text


def test_a_deleted_external_account_comes_back_with_its_days_usage(tmp_path) -> None:
    """An external identity's account id is derived from (issuer, subject): deleted, it is made
    again by its next token. It used to come back with zeroed counters, a fresh daily quota."""
    from auth.quotas import Meter, consume

    with external_issuer_app(tmp_path) as (http, accounts, bearer_of):
        headers = bearer_of(sub="ext-quota")
        user_id = http.get("/v1/auth/me", headers=headers).json()["id"]
        accounts.store.update_user(user_id, daily_limit=3)
        user = accounts.store.get_user(user_id)
        for _ in range(3):
            assert consume(
                accounts.store, user, Meter("image", 60), accounts.settings, accounts.clock()
            ).decision.allowed
        assert http.get("/v1/usage", headers=headers).json()["remaining"] == 0

        assert http.delete("/v1/auth/me", headers=headers).status_code == 204
        again = http.get("/v1/usage", headers=headers)  # the same identity, at once
        assert again.status_code == 200, again.text
        usage = again.json()
        # A new account (the default limit again), but today's usage is still counted.
        assert usage["requests_today"] == 3 and usage["remaining"] == accounts.settings.daily_limit - 3
        assert accounts.store.get_user(user_id) is not None


def test_login_takes_as_long_for_an_unknown_email(client, signup):
    """A cheaper check for unknown emails would tell which emails have accounts: both paths run
    bcrypt at the real cost (median of five each, interleaved, within noise)."""
    import statistics
    import time

    account = signup()  # a real account, its password hashed at the real cost

    def timed(email: str) -> float:
        started = time.perf_counter()
        answer = client.post("/v1/auth/login", json={"email": email, "password": "wrong password!"})
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_credentials"
        return time.perf_counter() - started

    known, unknown = [], []
    for _ in range(5):
        known.append(timed(account.email))
        unknown.append(timed(unique_email("nobody")))
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.6 < ratio < 1.6, (known, unknown)
    assert statistics.median(unknown) > 0.05  # bcrypt at cost 12 is ~0.2 s; cost 4 was ~1 ms


def test_concurrent_rolls_of_one_key_make_one_successor(api, user: Account) -> None:
    from concurrent.futures import ThreadPoolExecutor

    key_id = api.get("/v1/keys").json()["keys"][0]["id"]

    def roll(_: int):
        return api.post(f"/v1/keys/{key_id}/roll", json={"grace_seconds": 60})

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(roll, range(6)))
    assert sorted(a.status_code for a in answers) == [201] + [404] * 5
    keys = api.get("/v1/keys").json()["keys"]
    live = [k for k in keys if k["revoked_at"] is None]
    assert len(live) == 2  # the rolled key (in its grace period) and its one successor


def test_keys_per_account_are_capped(service_module, api, monkeypatch) -> None:
    monkeypatch.setattr(service_module.app.state.accounts.settings, "max_keys_per_user", 3)
    answers = [api.post("/v1/keys", json={"name": f"k{i}"}) for i in range(3)]
    assert [a.status_code for a in answers] == [201, 201, 409]  # the account's first key is the third
    assert_error(answers[-1], 409, "too_many_keys")
    rolled = api.post(f"/v1/keys/{answers[0].json()['id']}/roll")  # a roll replaces: allowed at the cap
    assert rolled.status_code == 201, rolled.text
    assert_error(
        api.post("/v1/keys", json={"name": "still full"}), 409, "too_many_keys"
    )  # the successor counts
    assert api.delete(f"/v1/keys/{answers[1].json()['id']}").status_code == 200
    assert api.post("/v1/keys", json={"name": "after a revoke"}).status_code == 201
