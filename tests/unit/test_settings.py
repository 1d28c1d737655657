"""The token secret in production: demanded of every process that serves auth, not of one that
loads its settings with ``serves_auth=False`` (``python -m batch``), whose auth code would still
refuse to issue or check a token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from auth.accounts import build_token_verifier
from config.settings import Settings, get_settings, without_auth
from config.startup import settings_or_exit

pytestmark = pytest.mark.unit


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's environment says production and holds no token secret; the cached settings
    are dropped before and after, so no other test sees these."""
    monkeypatch.setenv("VERITY_ENVIRONMENT", "production")
    monkeypatch.delenv("VERITY_JWT_SECRET", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_production_demands_the_token_secret(production: None) -> None:
    with pytest.raises(ValidationError, match="VERITY_JWT_SECRET"):
        Settings()


def test_settings_made_without_auth_need_no_token_secret(production: None) -> None:
    with without_auth():
        settings = Settings()
    assert settings.environment == "production" and settings.jwt_secret is None
    # Only inside the block, and a block left by an exception restores the check too.
    with pytest.raises(ValidationError, match="VERITY_JWT_SECRET"):
        Settings()
    with pytest.raises(RuntimeError), without_auth():
        raise RuntimeError
    with pytest.raises(ValidationError, match="VERITY_JWT_SECRET"):
        Settings()


def test_a_given_secret_is_still_checked_only_where_auth_is_served(production: None) -> None:
    with pytest.raises(ValidationError, match="VERITY_JWT_SECRET"):
        Settings(jwt_secret="changeme-" + "x" * 40)  # a placeholder
    with without_auth():
        assert Settings(jwt_secret="changeme-" + "x" * 40).jwt_secret is not None


def test_the_token_code_still_refuses_to_run_without_the_secret(production: None) -> None:
    with without_auth():
        settings = Settings()
    with pytest.raises(ValueError, match="VERITY_JWT_SECRET is required"):
        build_token_verifier(settings)


def test_settings_or_exit_serves_auth_unless_told_otherwise(production: None) -> None:
    with pytest.raises(SystemExit, match="Verity cannot start: VERITY_JWT_SECRET"):
        settings_or_exit(check_store=False)
    settings = settings_or_exit(check_store=False, serves_auth=False)
    assert settings.environment == "production" and settings.jwt_secret is None
