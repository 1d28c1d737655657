"""Passwords: bcrypt, and inputs over 72 bytes are a 422, never a crash or a truncation."""

from __future__ import annotations

import bcrypt
import pytest

from auth.passwords import (
    MAX_PASSWORD_BYTES,
    MIN_PASSWORD_CHARS,
    ROUNDS,
    hash_password,
    validate_password,
    verify_password,
)
from errors import InvalidInput

pytestmark = pytest.mark.unit

FAST = 4  # bcrypt's minimum cost keeps these tests quick; one test checks the real cost


def test_hash_and_verify() -> None:
    hashed = hash_password("correct horse battery", rounds=FAST)
    assert hashed.startswith("$2b$04$")
    assert bcrypt.checkpw(b"correct horse battery", hashed.encode())
    assert verify_password("correct horse battery", hashed)
    assert not verify_password("correct horse batterY", hashed)
    assert not verify_password("", hashed)


def test_default_cost_and_random_salt() -> None:
    first, second = hash_password("the same password"), hash_password("the same password")
    assert ROUNDS >= 12
    assert first.startswith(f"$2b${ROUNDS}$")
    assert first != second  # salted
    assert verify_password("the same password", first) and verify_password("the same password", second)


def test_exactly_72_bytes_is_accepted() -> None:
    password = "p" * MAX_PASSWORD_BYTES
    assert verify_password(password, hash_password(password, rounds=FAST))
    two_byte = "é" * 36  # 36 characters, 72 bytes
    assert len(two_byte.encode()) == 72
    assert verify_password(two_byte, hash_password(two_byte, rounds=FAST))


@pytest.mark.parametrize(
    "password",
    [
        "p" * 73,
        "p" * 1000,
        "é" * 37,  # 37 characters, 74 bytes
        "€" * 25,  # 25 characters, 75 bytes
        "😀" * 19,  # 19 characters, 76 bytes
        "a" * 71 + "ß",  # 72 characters, 73 bytes
    ],
    ids=["73-ascii", "1000-ascii", "37-e-acute", "25-euro", "19-emoji", "71+sharp-s"],
)
def test_over_72_bytes_is_422_password_too_long(password: str) -> None:
    assert len(password.encode("utf-8")) > MAX_PASSWORD_BYTES
    with pytest.raises(InvalidInput) as raised:
        hash_password(password, rounds=FAST)
    assert raised.value.status == 422
    assert raised.value.code == "password_too_long"
    assert str(len(password.encode("utf-8"))) in raised.value.message
    with pytest.raises(InvalidInput):
        validate_password(password)


def test_multibyte_under_72_characters_is_measured_in_bytes() -> None:
    password = "日本語のパスワード" * 3  # 27 characters, 81 bytes
    assert len(password) < MAX_PASSWORD_BYTES < len(password.encode())
    with pytest.raises(InvalidInput) as raised:
        validate_password(password)
    assert raised.value.code == "password_too_long"


@pytest.mark.parametrize("password", ["", "short", "7-chars", "é" * 7])
def test_short_passwords_are_422(password: str) -> None:
    assert len(password) < MIN_PASSWORD_CHARS
    with pytest.raises(InvalidInput) as raised:
        hash_password(password, rounds=FAST)
    assert raised.value.status == 422
    assert raised.value.code == "weak_password"


def test_minimum_length_counts_characters() -> None:
    assert validate_password("8-chars!") == b"8-chars!"
    assert validate_password("😀" * MIN_PASSWORD_CHARS) == ("😀" * MIN_PASSWORD_CHARS).encode()


def test_verify_never_truncates_to_72_bytes() -> None:
    """bcrypt itself reads only 72 bytes; a longer guess sharing them must not pass."""
    stored = hash_password("x" * 72, rounds=FAST)
    assert verify_password("x" * 72, stored)
    assert verify_password("x" * 72 + "anything", stored) is False
    assert verify_password("é" * 40, hash_password("é" * 36, rounds=FAST)) is False


@pytest.mark.parametrize("stored", ["!", "", "not-a-bcrypt-hash", "$2b$04$short"])
def test_verify_against_a_non_bcrypt_value_is_false(stored: str) -> None:
    """Accounts made for external issuers store "!" as their hash; logging in to one by email
    must be a plain failure (401), not a bcrypt ``ValueError`` (500)."""
    assert verify_password("any password at all", stored) is False
