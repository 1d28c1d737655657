"""SQLite backend of the signup/login throttles (``store.base.ThrottleStore``), in the accounts' file.
Keys are client addresses or hashed emails, not users: no foreign key, rows expire with their window."""

from __future__ import annotations

from store.base import ThrottleStore
from store.sqlite import SQLiteDatabase

_THROTTLES = """
CREATE TABLE IF NOT EXISTS throttles (
    key TEXT NOT NULL, bucket TEXT NOT NULL, count INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    PRIMARY KEY (key, bucket)
);
CREATE TABLE IF NOT EXISTS login_failures (
    key TEXT PRIMARY KEY, count INTEGER NOT NULL, last_at REAL NOT NULL, expires_at INTEGER NOT NULL
);
"""


class SQLiteThrottles(SQLiteDatabase, ThrottleStore):
    schema = _THROTTLES

    def hit(self, key: str, bucket: str, limit: int, expires_at: int) -> tuple[bool, int]:
        with self._tx(immediate=True) as db:
            row = db.execute(
                "SELECT count FROM throttles WHERE key = ? AND bucket = ?", (key, bucket)
            ).fetchone()
            used = row["count"] if row else 0
            if used >= limit:
                return False, used
            db.execute(
                "INSERT INTO throttles VALUES (?, ?, 1, ?) "
                "ON CONFLICT(key, bucket) DO UPDATE SET count = count + 1",
                (key, bucket, expires_at),
            )
            # Old buckets go as new ones come: the table stays the size of the active window.
            db.execute("DELETE FROM throttles WHERE key = ? AND expires_at < ?", (key, expires_at - 86400))
        return True, used + 1

    def failures(self, key: str) -> tuple[int, float | None]:
        rows = self._read("SELECT count, last_at FROM login_failures WHERE key = ?", (key,))
        return (rows[0]["count"], rows[0]["last_at"]) if rows else (0, None)

    def add_failure(self, key: str, at: float, expires_at: int) -> int:
        with self._tx(immediate=True) as db:
            db.execute(
                "INSERT INTO login_failures VALUES (?, 1, ?, ?) ON CONFLICT(key) DO UPDATE "
                "SET count = count + 1, last_at = excluded.last_at, expires_at = excluded.expires_at",
                (key, at, expires_at),
            )
            return db.execute("SELECT count FROM login_failures WHERE key = ?", (key,)).fetchone()["count"]

    def clear_failures(self, key: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM login_failures WHERE key = ?", (key,))
