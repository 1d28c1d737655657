"""The store contract. Both backends pass the same suite (tests/store/test_store_contract.py).

Every method that reads or changes a user's data takes the owner's ``user_id`` and only ever
touches that user's records: ownership is enforced here, not left to callers.
Backends raise ``StoreUnavailable`` for outages, so the API fails closed with a 503.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from store.records import ApiKey, Detection, Page, QuotaDecision, User


class Store(ABC):
    # accounts --------------------------------------------------------------------------------
    @abstractmethod
    def create_user(self, user: User, first_key: ApiKey | None) -> None:
        """Create a user (and their first key) together; ``Conflict`` if the email is taken."""

    @abstractmethod
    def get_user(self, user_id: str) -> User | None: ...

    @abstractmethod
    def get_user_by_email(self, email: str) -> User | None: ...

    @abstractmethod
    def list_users(self, limit: int, cursor: str | None) -> Page: ...

    @abstractmethod
    def update_user(
        self, user_id: str, *, daily_limit: int | None = None, disabled: bool | None = None
    ) -> User | None: ...

    @abstractmethod
    def delete_user(self, user_id: str) -> bool:
        """Delete the user with all their keys, counters and history."""

    # keys ------------------------------------------------------------------------------------
    @abstractmethod
    def add_key(self, key: ApiKey) -> None: ...

    @abstractmethod
    def get_key_by_digest(self, digest: str) -> ApiKey | None: ...

    @abstractmethod
    def list_keys(self, user_id: str) -> list[ApiKey]: ...

    @abstractmethod
    def revoke_key(
        self, user_id: str, key_id: str, at: str, *, expires_at: str | None = None
    ) -> ApiKey | None:
        """Revoke now (``expires_at`` None) or let the key work until ``expires_at`` (roll grace)."""

    @abstractmethod
    def touch_key(self, key_id: str, digest: str, at: str) -> None: ...

    # quotas ----------------------------------------------------------------------------------
    @abstractmethod
    def consume(
        self,
        user_id: str,
        *,
        day: str,
        daily_limit: int,
        minute_bucket: str,
        minute_limit: int,
        expires_at: int,
    ) -> QuotaDecision:
        """Atomically count one request against the day and the endpoint-minute; a refused
        request counts against neither."""

    @abstractmethod
    def usage(self, user_id: str, day: str) -> tuple[int, int]:
        """(requests on ``day``, requests ever)."""

    # history ---------------------------------------------------------------------------------
    @abstractmethod
    def add_detection(self, detection: Detection) -> None: ...

    @abstractmethod
    def get_detection(self, user_id: str, detection_id: str) -> Detection | None: ...

    @abstractmethod
    def list_detections(self, user_id: str, limit: int, cursor: str | None) -> Page:
        """Newest first; ``cursor`` is the last id of the previous page."""

    @abstractmethod
    def delete_detection(self, user_id: str, detection_id: str) -> bool: ...

    @abstractmethod
    def stats(self, user_id: str) -> dict[str, dict[str, int]]:
        """{modality: {"total": n, "FAKE": n, "REAL": n, ...}}"""

    def ping(self) -> None:
        """Readiness: one cheap read, raising ``StoreUnavailable`` when the store cannot answer."""
        self.get_user("usr_readiness_probe")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
