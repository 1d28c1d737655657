"""Signup and login on the open internet: throttled per client address and per email, a lockout
that doubles after repeated failures, bcrypt on its own bounded pool (503 when too many wait), and
the signup policy. Each test speaks from its own address (``X-Forwarded-For`` behind one trusted
proxy) and sets the limits it tests on the service's settings."""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest

from tests.conftest import TEST_PASSWORD, assert_error, early_in_a_clock_minute, unique_email

pytestmark = pytest.mark.http

_addresses = (f"198.51.100.{i}" for i in itertools.count(1))


@pytest.fixture
def settings(service_module, monkeypatch):
    settings = service_module.app.state.throttle.settings
    monkeypatch.setattr(settings, "trusted_proxy_hops", 1)
    return settings


@pytest.fixture
def address() -> dict[str, str]:
    """A client address of its own, as the trusted proxy reports it."""
    return {"x-forwarded-for": next(_addresses)}


def login(client, email: str, password: str, headers: dict[str, str]):
    return client.post("/v1/auth/login", json={"email": email, "password": password}, headers=headers)


def test_signups_and_logins_per_address_are_limited(client, settings, address, monkeypatch):
    monkeypatch.setattr(settings, "auth_per_ip_per_min", 3)
    early_in_a_clock_minute(15)  # four bcrypt rounds (~0.3 s each) inside one counted minute
    answers = [
        client.post(
            "/v1/auth/signup", json={"email": unique_email(), "password": TEST_PASSWORD}, headers=address
        )
        for _ in range(2)
    ]
    answers.append(login(client, unique_email(), TEST_PASSWORD, address))
    assert [a.status_code for a in answers] == [201, 201, 401]
    refused = client.post(
        "/v1/auth/signup", json={"email": unique_email(), "password": TEST_PASSWORD}, headers=address
    )
    error = assert_error(refused, 429, "rate_limited")
    assert "address" in error["message"] and 1 <= int(refused.headers["retry-after"]) <= 60
    other = {"x-forwarded-for": next(_addresses)}
    assert login(client, unique_email(), TEST_PASSWORD, other).status_code == 401  # another address


def test_a_taken_email_is_a_409_and_asking_again_and_again_is_throttled(
    client, signup, settings, monkeypatch
):
    """The chosen answer to signing up with a registered email: 409 ``email_taken`` (a client must
    be told why no account was made), not a generic answer; what keeps it from listing accounts
    is the per-address throttle, which counts these attempts like any other and answers 429 past
    the limit whether or not the email is taken. The 409 runs the same bcrypt as a signup, so it
    is no faster either."""
    taken = signup().email  # before the limit drops: the fixture signs up from the shared address
    monkeypatch.setattr(settings, "auth_per_ip_per_min", 3)
    early_in_a_clock_minute(20)  # five attempts (~0.3 s of bcrypt each) inside one counted minute
    address = {"x-forwarded-for": next(_addresses)}
    attempts = [
        client.post("/v1/auth/signup", json={"email": taken, "password": TEST_PASSWORD}, headers=address)
        for _ in range(3)
    ]
    for answer in attempts:
        assert_error(answer, 409, "email_taken")
    for email in (taken, unique_email()):  # past the limit the answer says nothing about the email
        refused = client.post(
            "/v1/auth/signup", json={"email": email, "password": TEST_PASSWORD}, headers=address
        )
        assert_error(refused, 429, "rate_limited")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
    other = {"x-forwarded-for": next(_addresses)}
    assert_error(
        client.post(
            "/v1/auth/signup", json={"email": taken.upper(), "password": TEST_PASSWORD}, headers=other
        ),
        409,
        "email_taken",
    )


def test_the_client_cannot_choose_its_address(client, settings, monkeypatch):
    """Only the hop the trusted proxy appended counts: what a client writes to the left of it
    changes nothing."""
    monkeypatch.setattr(settings, "auth_per_ip_per_min", 2)
    early_in_a_clock_minute(15)
    real = next(_addresses)
    for forged in ("203.0.113.1", "203.0.113.2"):
        assert (
            login(client, unique_email(), TEST_PASSWORD, {"x-forwarded-for": f"{forged}, {real}"}).status_code
            == 401
        )
    assert_error(
        login(client, unique_email(), TEST_PASSWORD, {"x-forwarded-for": f"203.0.113.3, {real}"}), 429
    )


def test_repeated_failures_lock_the_email(client, signup, settings, address, monkeypatch):
    monkeypatch.setattr(settings, "login_lockout_after", 3)
    monkeypatch.setattr(settings, "login_lockout_base_s", 1)
    account = signup()
    for _ in range(3):
        assert_error(login(client, account.email, "wrong password!", address), 401, "invalid_credentials")
    locked = login(client, account.email, account.password, address)  # even the right password
    assert_error(locked, 429, "login_locked")
    assert locked.headers["retry-after"] == "1"
    time.sleep(1.1)
    assert login(client, account.email, account.password, address).status_code == 200  # unlocked
    for _ in range(3):  # the success cleared the failures: three more before the next lockout
        assert_error(login(client, account.email, "wrong password!", address), 401)
    assert_error(login(client, account.email, "wrong password!", address), 429, "login_locked")


def test_the_lockout_doubles(client, service_module, signup, settings, address, monkeypatch):
    from auth.throttle import _email_key

    monkeypatch.setattr(settings, "login_lockout_after", 2)
    monkeypatch.setattr(settings, "login_lockout_base_s", 10)
    account = signup()
    for _ in range(2):
        login(client, account.email, "wrong password!", address)
    assert login(client, account.email, account.password, address).headers["retry-after"] in ("9", "10")
    # A third failure (added directly: a locked email refuses attempts rather than counting them,
    # so only failures after the lockout ends add up) doubles it.
    store = service_module.app.state.throttle.store
    store.add_failure(_email_key(account.email), time.time(), int(time.time()) + 3600)
    assert int(login(client, account.email, account.password, address).headers["retry-after"]) in (19, 20)


def test_logins_per_email_per_hour_are_limited(client, signup, settings, monkeypatch):
    monkeypatch.setattr(settings, "login_per_email_per_hour", 2)
    account = signup()
    for _ in range(2):
        assert (
            login(client, account.email, account.password, {"x-forwarded-for": next(_addresses)}).status_code
            == 200
        )
    refused = login(client, account.email, account.password, {"x-forwarded-for": next(_addresses)})
    assert_error(refused, 429, "rate_limited")
    assert "email" in refused.json()["error"]["message"]


def test_password_checks_beyond_the_queue_are_shed(client, service_module, settings, signup, monkeypatch):
    throttle = service_module.app.state.throttle
    monkeypatch.setattr(throttle, "bcrypt", anyio.CapacityLimiter(1))
    monkeypatch.setattr(settings, "bcrypt_queue", 1)
    account = signup()

    def one(_: int):
        return login(client, account.email, account.password, {"x-forwarded-for": next(_addresses)})

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(one, range(8)))
    codes = sorted(a.status_code for a in answers)
    assert 200 in codes and 503 in codes, codes
    shed = next(a for a in answers if a.status_code == 503)
    assert_error(shed, 503, "auth_busy")
    assert shed.headers["retry-after"]


def test_signup_policy_closed_and_invite(client, settings, admin_headers, monkeypatch):
    monkeypatch.setattr(settings, "signup_policy", "closed")
    email = unique_email("invited")
    body = {"email": email, "password": TEST_PASSWORD}
    assert_error(client.post("/v1/auth/signup", json=body), 403, "signup_closed")

    monkeypatch.setattr(settings, "signup_policy", "invite")
    assert_error(client.post("/v1/auth/signup", json=body), 403, "invite_invalid")
    made = client.post("/v1/admin/invites", json={"email": email.upper()}, headers=admin_headers)
    assert made.status_code == 201, made.text
    invite = made.json()["invite"]
    other = {"email": unique_email(), "password": TEST_PASSWORD, "invite": invite}
    assert_error(client.post("/v1/auth/signup", json=other), 403, "invite_invalid")  # another email
    assert_error(client.post("/v1/auth/signup", json={**body, "invite": invite[:-2] + "xx"}), 403)  # altered
    assert client.post("/v1/auth/signup", json={**body, "invite": invite}).status_code == 201
    assert_error(client.post("/v1/auth/signup", json={**body, "invite": invite}), 409, "email_taken")  # once
    assert_error(client.post("/v1/admin/invites", json={"email": email}), 401)  # admins only
