"""API keys: format, checksum, digests, constant-time comparison."""

from __future__ import annotations

import hashlib
import hmac
import random
import zlib
from pathlib import Path

import pytest

from auth import api_keys
from auth.api_keys import KEY_LENGTH, PREFIX, digest_key, digests_match, generate_key, well_formed

pytestmark = pytest.mark.unit

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BODY_LEN, CHECK_LEN = 43, 6


def base62_value(text: str) -> int:
    value = 0
    for char in text:
        value = value * 62 + BASE62.index(char)
    return value


def split(key: str) -> tuple[str, str, str]:
    return key[: len(PREFIX)], key[len(PREFIX) : -CHECK_LEN], key[-CHECK_LEN:]


# --- format ------------------------------------------------------------------------------------


def test_key_format_prefix_length_base62_and_crc32() -> None:
    key = generate_key()
    prefix, body, check = split(key.secret)
    assert prefix == "vk_live_"
    assert KEY_LENGTH == len(key.secret) == 8 + BODY_LEN + CHECK_LEN
    assert set(body + check) <= set(BASE62)
    # 43 base62 digits hold 256 random bits; the checksum is the body's CRC32, in 6 base62 digits.
    assert 62**BODY_LEN >= 2**256 > 62 ** (BODY_LEN - 1)
    assert base62_value(body) < 2**256
    assert base62_value(check) == zlib.crc32(body.encode("ascii"))
    assert well_formed(key.secret)


def test_keys_are_random_and_the_display_prefix_reveals_little() -> None:
    keys = [generate_key() for _ in range(500)]
    assert len({k.secret for k in keys}) == len(keys)
    assert len({k.digest for k in keys}) == len(keys)
    for key in keys[:20]:
        assert key.display_prefix == key.secret[:14]
        assert key.display_prefix.startswith(PREFIX)
        assert key.digest == digest_key(key.secret)
        assert key.secret not in key.digest
    # The random bodies spread over the whole alphabet (a broken encoder would not).
    assert set("".join(split(k.secret)[1] for k in keys)) == set(BASE62)


# --- checksum: typos are refused before any lookup ---------------------------------------------


def test_every_single_character_substitution_fails() -> None:
    """Exhaustive over 5 keys: every position (prefix, body, checksum) times every other base62
    character, plus a few characters outside the alphabet."""
    alphabet = BASE62 + "_-+/= é"
    checked = 0
    for _ in range(5):
        secret = generate_key().secret
        for position, original in enumerate(secret):
            for char in alphabet:
                if char == original:
                    continue
                typo = secret[:position] + char + secret[position + 1 :]
                assert not well_formed(typo), (secret, position, char)
                checked += 1
    assert checked > 5 * KEY_LENGTH * 60


def test_sampled_substitutions_over_many_keys_fail() -> None:
    rng = random.Random(20261121)
    for _ in range(20_000):
        secret = generate_key().secret
        position = rng.randrange(len(PREFIX), KEY_LENGTH)
        char = rng.choice(BASE62.replace(secret[position], ""))
        assert not well_formed(secret[:position] + char + secret[position + 1 :])


def test_adjacent_transpositions_fail() -> None:
    secret = generate_key().secret
    for i in range(len(PREFIX), KEY_LENGTH - 1):
        if secret[i] != secret[i + 1]:
            swapped = secret[:i] + secret[i + 1] + secret[i] + secret[i + 2 :]
            assert not well_formed(swapped)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s[:-1],  # one character short
        lambda s: s + "0",  # one character long
        lambda s: "vk_test_" + s[8:],  # another prefix
        lambda s: s.upper(),
        lambda s: " " + s[:-1],
        lambda s: "",
        lambda s: PREFIX + "0" * (KEY_LENGTH - len(PREFIX)),
    ],
    ids=["short", "long", "prefix", "upper", "space", "empty", "zeros"],
)
def test_malformed_keys(mutate) -> None:
    assert not well_formed(mutate(generate_key().secret))


def test_a_key_with_a_recomputed_checksum_is_well_formed() -> None:
    """The checksum catches typos, not forgeries: it is public (CRC32 of the body)."""
    body = "1" * BODY_LEN
    check = api_keys._base62(zlib.crc32(body.encode()), CHECK_LEN)
    assert well_formed(PREFIX + body + check)


# --- digests ---------------------------------------------------------------------------------


def test_digest_without_pepper_is_sha256() -> None:
    secret = generate_key().secret
    assert digest_key(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert digest_key(secret, None) == digest_key(secret, "")


def test_digest_with_pepper_is_hmac_sha256() -> None:
    secret = generate_key().secret
    peppered = digest_key(secret, "server-pepper")
    assert peppered == hmac.new(b"server-pepper", secret.encode(), hashlib.sha256).hexdigest()
    assert peppered != digest_key(secret)
    assert peppered != digest_key(secret, "another-pepper")
    new = generate_key("server-pepper")
    assert new.digest == digest_key(new.secret, "server-pepper")


# --- constant-time comparison ----------------------------------------------------------------


class CompareSpy:
    """Wraps ``hmac.compare_digest`` (still doing the real comparison) and records its calls."""

    def __init__(self) -> None:
        self.real = hmac.compare_digest
        self.calls: list[tuple[object, object]] = []

    def __call__(self, a, b) -> bool:
        self.calls.append((a, b))
        return self.real(a, b)


@pytest.fixture
def compare_spy(monkeypatch) -> CompareSpy:
    spy = CompareSpy()
    monkeypatch.setattr(api_keys.hmac, "compare_digest", spy)
    return spy


def test_digests_match_uses_compare_digest(compare_spy: CompareSpy) -> None:
    digest = digest_key(generate_key().secret)
    assert digests_match(digest, digest)
    assert not digests_match(digest, digest[:-1] + ("0" if digest[-1] != "0" else "1"))
    assert compare_spy.calls[0] == (digest.encode(), digest.encode())
    assert len(compare_spy.calls) == 2


def test_checksum_is_compared_in_constant_time(compare_spy: CompareSpy) -> None:
    secret = generate_key().secret
    assert well_formed(secret)
    assert compare_spy.calls == [(secret[-CHECK_LEN:], secret[-CHECK_LEN:])]


def test_authentication_compares_the_stored_digest_in_constant_time(
    compare_spy: CompareSpy, tmp_path: Path
) -> None:
    """``Accounts.authenticate_key`` against a real SQLite store: the stored digest and the
    presented key's digest go through ``hmac.compare_digest``, never ``==``."""
    from auth.accounts import Accounts
    from config import Settings
    from store.sqlite import SQLiteStore

    settings = Settings(
        environment="test",
        sqlite_path=tmp_path / "verity.db",
        dev_secret_path=tmp_path / "dev-secret",
        api_key_pepper="pepper-for-this-test",
    )
    store = SQLiteStore(settings.sqlite_path)
    accounts = Accounts(store, settings)
    user, key, secret = accounts.signup("someone@example.com", "long enough password")
    assert key.digest == digest_key(secret, "pepper-for-this-test")
    assert store.get_key_by_digest(digest_key(secret)) is None  # the unpeppered digest is not stored
    compare_spy.calls.clear()

    principal = accounts.authenticate_key(secret)
    assert principal.user_id == user.id and principal.key_id == key.id
    assert (key.digest.encode(), key.digest.encode()) in compare_spy.calls
    store.close()
