"""Password hashing with bcrypt."""

from __future__ import annotations

import bcrypt

from errors import InvalidInput

# bcrypt only reads the first 72 bytes; longer inputs are refused rather than silently truncated
# (bcrypt >= 5 raises on them, which must surface as a 422, not a 500).
MAX_PASSWORD_BYTES = 72
MIN_PASSWORD_CHARS = 8
ROUNDS = 12


def validate_password(password: str) -> bytes:
    encoded = password.encode("utf-8")
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(
            f"password must have at least {MIN_PASSWORD_CHARS} characters", code="weak_password"
        )
    if len(encoded) > MAX_PASSWORD_BYTES:
        raise InvalidInput(
            f"password is {len(encoded)} bytes in UTF-8; the limit is {MAX_PASSWORD_BYTES}",
            code="password_too_long",
        )
    return encoded


def hash_password(password: str, *, rounds: int = ROUNDS) -> str:
    return bcrypt.hashpw(validate_password(password), bcrypt.gensalt(rounds)).decode("ascii")


def verify_password(password: str, hashed: str) -> bool:
    encoded = password.encode("utf-8")
    if len(encoded) > MAX_PASSWORD_BYTES:
        return False
    try:
        return bcrypt.checkpw(encoded, hashed.encode("ascii"))
    except ValueError:  # not a bcrypt hash: accounts made by external issuers store "!"
        return False


def is_password_hash(value: str) -> bool:
    """A bcrypt hash (``$2a$``/``$2b$``/``$2y$``), as opposed to the "!" of accounts without one."""
    return value.startswith(("$2a$", "$2b$", "$2y$"))
