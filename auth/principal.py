"""Who is calling: what the middleware puts on the request scope."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from store.records import User


@dataclass(frozen=True)
class Principal:
    user: User
    method: Literal["api_key", "jwt"]
    key_id: str | None = None
    # What this caller may do (store.records.SCOPES): a key's own scopes, or for a login session
    # every scope of its role. Empty unless given: a principal made without them can do nothing.
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def user_id(self) -> str:
        return self.user.id

    @property
    def is_admin(self) -> bool:
        return self.user.role == "admin"

    def has_scope(self, scope: str) -> bool:
        # `admin` is honoured for admin accounts only, whatever a key says.
        return scope in self.scopes and (scope != "admin" or self.is_admin)
