"""Who is calling: what the middleware puts on the request scope."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from store.records import User


@dataclass(frozen=True)
class Principal:
    user: User
    method: Literal["api_key", "jwt"]
    key_id: str | None = None

    @property
    def user_id(self) -> str:
        return self.user.id

    @property
    def is_admin(self) -> bool:
        return self.user.role == "admin"
