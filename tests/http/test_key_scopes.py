"""API key scopes (issue 12): `detect`, `read`, `keys`, `admin`. A leaked detection key must not
mint, roll or revoke keys, delete the account or reach admin routes; a key can grant only scopes
it holds; keys made before scopes existed keep what they could do; a login session keeps every
right of its role."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from auth.api_keys import generate_key
from store.ids import new_id
from store.records import ApiKey
from tests.conftest import Account, Caller, assert_error, login
from tests.media_factory import jpeg_bytes

pytestmark = pytest.mark.http

# Every authenticated route but GET /v1/auth/me (any key), by the scope it needs.
ROUTES = {
    "detect": [
        ("POST", "/v1/detect/image"),
        ("POST", "/v1/detect/audio"),
        ("POST", "/v1/detect/video"),
        ("POST", "/v1/uploads"),
        ("POST", "/v1/jobs"),
        ("DELETE", "/v1/jobs/job_0"),
        ("DELETE", "/v1/history/det_0"),
    ],
    "read": [
        ("GET", "/v1/usage"),
        ("GET", "/v1/history"),
        ("GET", "/v1/history/det_0"),
        ("GET", "/v1/stats"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/job_0"),
    ],
    "keys": [
        ("POST", "/v1/keys"),
        ("GET", "/v1/keys"),
        ("DELETE", "/v1/keys/key_0"),
        ("POST", "/v1/keys/key_0/roll"),
        ("DELETE", "/v1/auth/me"),
        ("POST", "/v1/webhook-secret"),
    ],
    "admin": [
        ("GET", "/v1/admin/users"),
        ("PATCH", "/v1/admin/users/usr_0"),
        ("POST", "/v1/admin/invites"),
    ],
}
USER_SCOPES = ["detect", "read", "keys"]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def key_with(client, accounts, account: Account, scopes: list[str] | None) -> Caller:
    """A key of ``account`` with ``scopes`` (None: stored without any, as keys made before
    scopes existed are), put in the store directly so that any mix can be had."""
    pepper = accounts.settings.api_key_pepper
    generated = generate_key(pepper.get_secret_value() if pepper else None)
    key = ApiKey(
        id=new_id("key"),
        user_id=account.user_id,
        name="scoped" if scopes is not None else "legacy",
        digest=generated.digest,
        display_prefix=generated.display_prefix,
        created_at=now_iso(),
        scopes=scopes,
    )
    accounts.store.add_key(key)
    return Caller(client, {"x-api-key": generated.secret}, account)


def detect(caller: Caller) -> None:
    response = caller.post("/v1/detect/image", files={"image": ("a.jpg", jpeg_bytes(64, 64), "image/jpeg")})
    assert response.status_code == 200, response.text


def refused(response, scope: str) -> None:
    error = assert_error(response, 403, "insufficient_scope")
    assert f"`{scope}`" in error["message"]


@pytest.fixture
def admin_account(accounts) -> Account:
    from tests.conftest import TEST_PASSWORD, unique_email

    user, _, secret = accounts.signup(unique_email("admin"), TEST_PASSWORD, role="admin")
    return Account(user.id, user.email, TEST_PASSWORD, secret)


# --- each scope guards its routes ---------------------------------------------------------------


@pytest.mark.parametrize("missing", USER_SCOPES)
def test_a_key_without_a_scope_is_refused_on_every_route_of_it(client, accounts, user, missing: str) -> None:
    caller = key_with(client, accounts, user, [s for s in USER_SCOPES if s != missing])

    def keys() -> list[tuple]:
        return [(k.id, k.revoked_at, k.expires_at, k.scopes) for k in accounts.store.list_keys(user.user_id)]

    keys_before = keys()
    for method, path in ROUTES[missing]:
        refused(caller.request(method, path, json={}), missing)
    # Nothing happened: the account and its keys are as they were.
    assert accounts.store.get_user(user.user_id) is not None
    assert keys() == keys_before
    assert caller.get("/v1/auth/me").json()["scopes"] == [s for s in USER_SCOPES if s != missing]


def test_a_leaked_detection_key_can_detect_and_nothing_else(client, accounts, user) -> None:
    leaked = key_with(client, accounts, user, ["detect"])
    detect(leaked)
    for scope in ("read", "keys", "admin"):
        for method, path in ROUTES[scope]:
            response = leaked.request(method, path, json={})
            if scope == "admin":  # not an admin at all: the role is checked first
                assert_error(response, 403, "admin_only")
            else:
                refused(response, scope)
    owner = Caller(client, user.headers, user)  # the account's own full key still works
    assert owner.get("/v1/usage").json()["requests_today"] >= 1
    assert len(owner.get("/v1/keys").json()["keys"]) == 2


def test_each_scope_opens_its_own_routes(client, accounts, user) -> None:
    detect(key_with(client, accounts, user, ["detect"]))
    reader = key_with(client, accounts, user, ["read"])
    for path in ("/v1/usage", "/v1/history", "/v1/stats", "/v1/jobs"):
        assert reader.get(path).status_code == 200, path
    assert_error(reader.get("/v1/jobs/job_0"), 404, "job_not_found")  # reaches the route
    keeper = key_with(client, accounts, user, ["keys"])
    assert keeper.get("/v1/keys").status_code == 200
    made = keeper.post("/v1/keys", json={"name": "by the keeper"})
    assert made.status_code == 201, made.text
    assert made.json()["scopes"] == ["keys"]  # by default, the maker's own scopes
    assert keeper.delete(f"/v1/keys/{made.json()['id']}").status_code == 200
    assert keeper.post("/v1/webhook-secret").status_code == 201


def test_admin_routes_need_the_admin_scope_and_the_admin_role(client, accounts, admin_account, user) -> None:
    without = key_with(client, accounts, admin_account, USER_SCOPES)
    for method, path in ROUTES["admin"]:
        refused(without.request(method, path, json={}), "admin")
    with_admin = key_with(client, accounts, admin_account, ["admin"])
    assert with_admin.get("/v1/admin/users", params={"limit": 1}).status_code == 200
    refused(with_admin.get("/v1/usage"), "read")  # admin alone is not read
    # An admin scope on a user's key (stored by some other way) is not honoured.
    forged = key_with(client, accounts, user, ["admin", "read"])
    assert_error(forged.get("/v1/admin/users"), 403, "admin_only")
    assert forged.get("/v1/auth/me").json()["scopes"] == ["read"]


# --- making keys -----------------------------------------------------------------------------------


def test_new_keys_take_a_validated_subset_of_scopes(client, api: Caller) -> None:
    made = api.post("/v1/keys", json={"name": "ci", "scopes": ["read", "detect", "detect"]})
    assert made.status_code == 201, made.text
    assert made.json()["scopes"] == ["detect", "read"]  # canonical order, no duplicates
    listed = {k["id"]: k["scopes"] for k in api.get("/v1/keys").json()["keys"]}
    assert listed[made.json()["id"]] == ["detect", "read"]
    ci = Caller(client, {"x-api-key": made.json()["key"]})
    assert client.get("/v1/auth/me", headers=ci.headers).json()["scopes"] == ["detect", "read"]
    refused(ci.get("/v1/keys"), "keys")

    for scopes, code in (
        (["detect", "write"], "invalid_scope"),
        ([], "invalid_scope"),
        (["admin"], "invalid_scope"),  # a user is no admin
        (["ADMIN"], "invalid_scope"),
    ):
        assert_error(api.post("/v1/keys", json={"scopes": scopes}), 422, code)
    assert_error(api.post("/v1/keys", json={"scopes": "detect"}), 422, "invalid_input")
    assert_error(api.post("/v1/keys", json={"scopes": ["x" * 33]}), 422, "invalid_input")
    assert len(api.get("/v1/keys").json()["keys"]) == 2  # none of the refused ones was made


def test_a_key_cannot_grant_or_roll_into_scopes_it_lacks(client, accounts, user) -> None:
    keeper = key_with(client, accounts, user, ["keys"])
    error = assert_error(keeper.post("/v1/keys", json={"scopes": ["detect"]}), 403, "insufficient_scope")
    assert "detect" in error["message"]
    full_id = accounts.store.list_keys(user.user_id)[0].id  # the account's first key: every scope
    assert_error(keeper.post(f"/v1/keys/{full_id}/roll"), 403, "insufficient_scope")
    assert accounts.store.list_keys(user.user_id)[0].revoked_at is None  # the roll did nothing
    # Its own scopes it can pass on, and roll itself.
    own_id = next(k.id for k in accounts.store.list_keys(user.user_id) if k.scopes == ["keys"])
    rolled = keeper.post(f"/v1/keys/{own_id}/roll", json={"grace_seconds": 60})
    assert rolled.status_code == 201, rolled.text
    assert rolled.json()["new_key"]["scopes"] == ["keys"] and rolled.json()["old_key"]["scopes"] == ["keys"]


# --- old keys, sessions, the CLI -------------------------------------------------------------------


def test_keys_made_before_scopes_keep_working(client, accounts, user, admin_account) -> None:
    legacy = key_with(client, accounts, user, None)
    assert client.get("/v1/auth/me", headers=legacy.headers).json()["scopes"] == USER_SCOPES
    detect(legacy)
    for path in ("/v1/usage", "/v1/history", "/v1/stats", "/v1/jobs", "/v1/keys"):
        assert legacy.get(path).status_code == 200, path
    listed = {k["name"]: k["scopes"] for k in legacy.get("/v1/keys").json()["keys"]}
    assert listed["legacy"] == USER_SCOPES
    made = legacy.post("/v1/keys", json={"name": "from a legacy key"})
    assert made.status_code == 201 and made.json()["scopes"] == USER_SCOPES
    assert legacy.post("/v1/webhook-secret").status_code == 201
    legacy_id = next(k.id for k in accounts.store.list_keys(user.user_id) if k.scopes is None)
    rolled = legacy.post(f"/v1/keys/{legacy_id}/roll", json={"grace_seconds": 60})
    assert rolled.status_code == 201, rolled.text
    assert rolled.json()["new_key"]["scopes"] == USER_SCOPES

    old_admin = key_with(client, accounts, admin_account, None)
    assert old_admin.get("/v1/admin/users", params={"limit": 1}).status_code == 200
    assert old_admin.get("/v1/auth/me").json()["scopes"] == [*USER_SCOPES, "admin"]
    assert old_admin.post("/v1/keys", json={}).json()["scopes"] == [*USER_SCOPES, "admin"]


def test_a_login_session_keeps_every_right_of_its_role(client, user, admin_account) -> None:
    session = Caller(client, {"Authorization": f"Bearer {login(client, user.email)}"}, user)
    assert session.get("/v1/auth/me").json()["scopes"] == USER_SCOPES
    detect(session)
    assert session.get("/v1/usage").status_code == 200
    made = session.post("/v1/keys", json={"name": "from a session", "scopes": ["read"]})
    assert made.status_code == 201 and made.json()["scopes"] == ["read"]
    assert session.post(f"/v1/keys/{made.json()['id']}/roll").status_code == 201
    assert session.post("/v1/webhook-secret").status_code == 201
    assert_error(session.get("/v1/admin/users"), 403, "admin_only")

    admin_session = Caller(client, {"Authorization": f"Bearer {login(client, admin_account.email)}"})
    assert admin_session.get("/v1/admin/users", params={"limit": 1}).status_code == 200
    assert admin_session.post("/v1/keys", json={"scopes": ["admin"]}).json()["scopes"] == ["admin"]
    assert session.delete("/v1/auth/me").status_code == 204  # and may delete its account


def test_signup_and_cli_keys_show_their_scopes(client) -> None:
    import json

    from tests.conftest import TEST_PASSWORD, unique_email
    from tests.http.test_accounts import run_cli

    email = unique_email("scopes")
    signed = client.post("/v1/auth/signup", json={"email": email, "password": TEST_PASSWORD})
    assert signed.status_code == 201 and signed.json()["api_key"]["scopes"] == USER_SCOPES
    done = run_cli("create-key", "--email", email, "--name", "batch", "--scope", "detect")
    assert done.returncode == 0, done.stderr
    batch = json.loads(done.stdout)
    assert batch["scopes"] == ["detect"]
    refused(client.get("/v1/keys", headers={"x-api-key": batch["key"]}), "keys")
    bad = run_cli("create-key", "--email", email, "--scope", "admin")
    assert bad.returncode == 2 and "invalid_scope" in bad.stderr
