"""SQLite backend: the embedded default, one file on disk (``VERITY_SQLITE_PATH``)."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from errors import Conflict, StoreUnavailable
from store.base import Store
from store.records import ApiKey, Detection, Page, QuotaDecision, User

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL, role TEXT NOT NULL, daily_limit INTEGER, disabled INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL, digest TEXT NOT NULL UNIQUE, display_prefix TEXT NOT NULL,
    created_at TEXT NOT NULL, last_used_at TEXT, revoked_at TEXT, expires_at TEXT, scopes TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys(user_id);
CREATE TABLE IF NOT EXISTS counters (
    user_id TEXT NOT NULL, bucket TEXT NOT NULL,
    count INTEGER NOT NULL, expires_at INTEGER, PRIMARY KEY (user_id, bucket)
);
"""
# Quota counters name their user without a foreign key: they outlive the account until they
# expire, so that deleting an account (an external identity comes back with the same id) does
# not reset the day's quota. delete_user removes the lifetime count and sweeps the expired rows.
_COUNTERS_TABLE = """CREATE TABLE counters (
    user_id TEXT NOT NULL, bucket TEXT NOT NULL,
    count INTEGER NOT NULL, expires_at INTEGER, PRIMARY KEY (user_id, bucket)
)"""
# fake_probability is null for a NO_FACE result (faces=auto or video without any face).
_DETECTIONS_TABLE = """CREATE TABLE IF NOT EXISTS detections (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL, modality TEXT NOT NULL, verdict TEXT NOT NULL,
    fake_probability REAL, model_id TEXT NOT NULL, result TEXT NOT NULL
)"""
_DETECTIONS_INDEX = "CREATE INDEX IF NOT EXISTS detections_user ON detections(user_id, id DESC)"
_SCHEMA += f"{_DETECTIONS_TABLE};\n{_DETECTIONS_INDEX};\n"

TOTAL = "total"


def _user(row: sqlite3.Row | None) -> User | None:
    if row is None:
        return None
    return User(
        id=row["id"],
        email=row["email"],
        password_hash=row["password_hash"],
        created_at=row["created_at"],
        role=row["role"],
        daily_limit=row["daily_limit"],
        disabled=bool(row["disabled"]),
    )


def _key(row: sqlite3.Row | None) -> ApiKey | None:
    if row is None:
        return None
    fields = {k: row[k] for k in row.keys()}  # noqa: SIM118 - sqlite3.Row is not a Mapping
    # A JSON list; NULL for keys made before scopes existed (they keep every scope of their role).
    fields["scopes"] = json.loads(fields["scopes"]) if fields.get("scopes") is not None else None
    return ApiKey(**fields)


def _detection(row: sqlite3.Row) -> Detection:
    return Detection(
        id=row["id"],
        user_id=row["user_id"],
        created_at=row["created_at"],
        modality=row["modality"],
        verdict=row["verdict"],
        fake_probability=row["fake_probability"],
        model_id=row["model_id"],
        result=json.loads(row["result"]),
    )


class SQLiteDatabase:
    """One SQLite file: a connection per thread, WAL, foreign keys on, transactions that turn
    driver errors into ``StoreUnavailable``. Each store over the file creates its own tables."""

    schema = ""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        try:
            self._connection().executescript(self.schema)  # executescript manages its own transaction
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the SQLite store at {self.path}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        # One connection per thread: sqlite3 connections must not be shared across threads.
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    @contextmanager
    def _tx(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        try:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"store unavailable: {exc}") from exc
        try:
            yield db
        except sqlite3.IntegrityError:
            db.execute("ROLLBACK")
            raise
        except sqlite3.Error as exc:
            db.execute("ROLLBACK")
            raise StoreUnavailable(f"store unavailable: {exc}") from exc
        except BaseException:
            db.execute("ROLLBACK")
            raise
        else:
            db.execute("COMMIT")

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        try:
            return self._connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"store unavailable: {exc}") from exc

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


# Migrations of databases made by earlier versions (SQLiteStore._migrate runs them) ----------------


def _probability_not_null(db: sqlite3.Connection) -> bool:
    """Made before NO_FACE results (``fake_probability`` null): the column is NOT NULL."""
    columns = {row["name"]: row for row in db.execute("PRAGMA table_info(detections)")}
    return bool(columns["fake_probability"]["notnull"])


def _allow_null_probability(tx: sqlite3.Connection) -> None:
    # SQLite cannot drop a constraint: the table is rebuilt, every row copied (nothing a user
    # stored is lost).
    tx.execute("ALTER TABLE detections RENAME TO detections_old")
    tx.execute(_DETECTIONS_TABLE)
    tx.execute("INSERT INTO detections SELECT * FROM detections_old")
    tx.execute("DROP TABLE detections_old")
    tx.execute(_DETECTIONS_INDEX)


def _counters_cascade(db: sqlite3.Connection) -> bool:
    """Made before: ``counters.user_id`` a foreign key with ON DELETE CASCADE, which wiped the
    day's quota with the account."""
    return bool(db.execute("PRAGMA foreign_key_list(counters)").fetchall())


def _counters_outlive_users(tx: sqlite3.Connection) -> None:
    tx.execute("ALTER TABLE counters RENAME TO counters_old")
    tx.execute(_COUNTERS_TABLE)
    tx.execute(
        "INSERT INTO counters (user_id, bucket, count, expires_at) "
        "SELECT user_id, bucket, count, expires_at FROM counters_old"
    )
    tx.execute("DROP TABLE counters_old")


def _keys_lack_scopes(db: sqlite3.Connection) -> bool:
    """Made before API key scopes: no ``api_keys.scopes`` column."""
    return not any(row["name"] == "scopes" for row in db.execute("PRAGMA table_info(api_keys)"))


def _add_key_scopes(tx: sqlite3.Connection) -> None:
    # NULL for every existing key, which keeps the scopes it needs (store.records.key_scopes).
    tx.execute("ALTER TABLE api_keys ADD COLUMN scopes TEXT")


class SQLiteStore(SQLiteDatabase, Store):
    schema = _SCHEMA

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self._migrate(
                _probability_not_null, _allow_null_probability, "detections.fake_probability may now be null"
            )
            self._migrate(
                _counters_cascade, _counters_outlive_users, "quota counters no longer go with their account"
            )
            self._migrate(
                _keys_lack_scopes, _add_key_scopes, "api_keys.scopes added (existing keys keep their scopes)"
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the SQLite store at {self.path}: {exc}") from exc

    def _migrate(
        self,
        needed: Callable[[sqlite3.Connection], bool],
        apply: Callable[[sqlite3.Connection], None],
        what: str,
    ) -> None:
        """One schema migration of a database made by an earlier version: checked first without
        a write lock (the usual case: nothing to do), then again inside the write transaction that
        applies it, since another process may have migrated the file meanwhile."""
        if not needed(self._connection()):
            return
        with self._tx(immediate=True) as tx:
            if not needed(tx):
                return
            apply(tx)
        log.info("migrated %s: %s", self.path, what)

    # accounts --------------------------------------------------------------------------------
    def create_user(self, user: User, first_key: ApiKey | None) -> None:
        try:
            with self._tx(immediate=True) as db:
                db.execute(
                    "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        user.id,
                        user.email,
                        user.password_hash,
                        user.created_at,
                        user.role,
                        user.daily_limit,
                        int(user.disabled),
                    ),
                )
                if first_key is not None:
                    self._insert_key(db, first_key)
        except sqlite3.IntegrityError as exc:
            raise Conflict("an account with this email already exists", code="email_taken") from exc

    def get_user(self, user_id: str) -> User | None:
        rows = self._read("SELECT * FROM users WHERE id = ?", (user_id,))
        return _user(rows[0] if rows else None)

    def get_user_by_email(self, email: str) -> User | None:
        rows = self._read("SELECT * FROM users WHERE email = ?", (email,))
        return _user(rows[0] if rows else None)

    def list_users(self, limit: int, cursor: str | None) -> Page:
        rows = self._read("SELECT * FROM users WHERE id > ? ORDER BY id LIMIT ?", (cursor or "", limit + 1))
        users = [_user(r) for r in rows[:limit]]
        return Page(users, users[-1].id if len(rows) > limit and users else None)  # type: ignore[union-attr]

    def update_user(
        self, user_id: str, *, daily_limit: int | None = None, disabled: bool | None = None
    ) -> User | None:
        with self._tx(immediate=True) as db:
            if daily_limit is not None:
                db.execute("UPDATE users SET daily_limit = ? WHERE id = ?", (daily_limit, user_id))
            if disabled is not None:
                db.execute("UPDATE users SET disabled = ? WHERE id = ?", (int(disabled), user_id))
        return self.get_user(user_id)

    def delete_user(self, user_id: str) -> bool:
        with self._tx(immediate=True) as db:
            deleted = db.execute("DELETE FROM users WHERE id = ?", (user_id,)).rowcount > 0
            # The day's and minute's counters stay until they expire (the table's comment says
            # why); the lifetime count goes with the account. Expired counters of accounts
            # deleted before are swept here, as nothing else would ever touch them again.
            db.execute("DELETE FROM counters WHERE user_id = ? AND expires_at IS NULL", (user_id,))
            db.execute(
                "DELETE FROM counters WHERE expires_at < ? AND user_id NOT IN (SELECT id FROM users)",
                (int(time.time()),),
            )
        return deleted

    # keys ------------------------------------------------------------------------------------
    @staticmethod
    def _insert_key(db: sqlite3.Connection, key: ApiKey) -> None:
        db.execute(
            "INSERT INTO api_keys (id, user_id, name, digest, display_prefix, created_at, "
            "last_used_at, revoked_at, expires_at, scopes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key.id,
                key.user_id,
                key.name,
                key.digest,
                key.display_prefix,
                key.created_at,
                key.last_used_at,
                key.revoked_at,
                key.expires_at,
                json.dumps(key.scopes) if key.scopes is not None else None,
            ),
        )

    def add_key(self, key: ApiKey) -> None:
        with self._tx(immediate=True) as db:
            self._insert_key(db, key)

    def get_key_by_digest(self, digest: str) -> ApiKey | None:
        rows = self._read("SELECT * FROM api_keys WHERE digest = ?", (digest,))
        return _key(rows[0] if rows else None)

    def list_keys(self, user_id: str) -> list[ApiKey]:
        rows = self._read("SELECT * FROM api_keys WHERE user_id = ? ORDER BY id", (user_id,))
        return [k for k in map(_key, rows) if k is not None]

    def revoke_key(
        self, user_id: str, key_id: str, at: str, *, expires_at: str | None = None, only_active: bool = False
    ) -> ApiKey | None:
        with self._tx(immediate=True) as db:
            if only_active:
                changed = db.execute(
                    "UPDATE api_keys SET revoked_at = ?, expires_at = ? "
                    "WHERE id = ? AND user_id = ? AND revoked_at IS NULL AND expires_at IS NULL",
                    (at if expires_at is None else None, expires_at, key_id, user_id),
                ).rowcount
                if not changed:
                    return None
            elif expires_at is None:
                db.execute(
                    "UPDATE api_keys SET revoked_at = ?, expires_at = NULL WHERE id = ? AND user_id = ?",
                    (at, key_id, user_id),
                )
            else:
                db.execute(
                    "UPDATE api_keys SET expires_at = ? WHERE id = ? AND user_id = ? AND revoked_at IS NULL",
                    (expires_at, key_id, user_id),
                )
            row = db.execute(
                "SELECT * FROM api_keys WHERE id = ? AND user_id = ?", (key_id, user_id)
            ).fetchone()
        return _key(row)

    def touch_key(self, key_id: str, digest: str, at: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (at, key_id))

    # quotas ----------------------------------------------------------------------------------
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
        day_bucket = f"day:{day}"
        with self._tx(immediate=True) as db:  # one writer at a time: check-then-increment is atomic
            counts = dict(
                db.execute(
                    "SELECT bucket, count FROM counters WHERE user_id = ? AND bucket IN (?, ?)",
                    (user_id, day_bucket, minute_bucket),
                ).fetchall()
            )
            used_day, used_minute = counts.get(day_bucket, 0), counts.get(minute_bucket, 0)
            if used_day >= daily_limit or used_minute >= minute_limit:
                scope = "daily" if used_day >= daily_limit else "minute"
                return QuotaDecision(False, scope, used_day, daily_limit, used_minute, minute_limit)
            for bucket, expiry in ((day_bucket, expires_at), (minute_bucket, expires_at), (TOTAL, None)):
                db.execute(
                    "INSERT INTO counters VALUES (?, ?, 1, ?) "
                    "ON CONFLICT(user_id, bucket) DO UPDATE SET count = count + 1",
                    (user_id, bucket, expiry),
                )
            db.execute(
                "DELETE FROM counters WHERE user_id = ? AND expires_at < ?", (user_id, expires_at - 2 * 86400)
            )
        return QuotaDecision(True, None, used_day + 1, daily_limit, used_minute + 1, minute_limit)

    def usage(self, user_id: str, day: str) -> tuple[int, int]:
        counts = dict(
            (r["bucket"], r["count"])
            for r in self._read(
                "SELECT bucket, count FROM counters WHERE user_id = ? AND bucket IN (?, ?)",
                (user_id, f"day:{day}", TOTAL),
            )
        )
        return counts.get(f"day:{day}", 0), counts.get(TOTAL, 0)

    def charge(self, user_id: str, *, day: str, units: int, expires_at: int) -> int:
        day_bucket = f"day:{day}"
        with self._tx(immediate=True) as db:
            for bucket, expiry in ((day_bucket, expires_at), (TOTAL, None)):
                db.execute(
                    "INSERT INTO counters VALUES (?, ?, MAX(?, 0), ?) "
                    "ON CONFLICT(user_id, bucket) DO UPDATE SET count = MAX(count + ?, 0)",
                    (user_id, bucket, units, expiry, units),
                )
            row = db.execute(
                "SELECT count FROM counters WHERE user_id = ? AND bucket = ?", (user_id, day_bucket)
            ).fetchone()
        return int(row[0])

    # history ---------------------------------------------------------------------------------
    def add_detection(self, detection: Detection) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO detections VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    detection.id,
                    detection.user_id,
                    detection.created_at,
                    detection.modality,
                    detection.verdict,
                    detection.fake_probability,
                    detection.model_id,
                    json.dumps(detection.result),
                ),
            )

    def get_detection(self, user_id: str, detection_id: str) -> Detection | None:
        rows = self._read("SELECT * FROM detections WHERE id = ? AND user_id = ?", (detection_id, user_id))
        return _detection(rows[0]) if rows else None

    def list_detections(self, user_id: str, limit: int, cursor: str | None) -> Page:
        if cursor:
            sql = "SELECT * FROM detections WHERE user_id = ? AND id < ? ORDER BY id DESC LIMIT ?"
            params: tuple[Any, ...] = (user_id, cursor, limit + 1)
        else:
            sql = "SELECT * FROM detections WHERE user_id = ? ORDER BY id DESC LIMIT ?"
            params = (user_id, limit + 1)
        rows = self._read(sql, params)
        items = [_detection(r) for r in rows[:limit]]
        return Page(items, items[-1].id if len(rows) > limit else None)

    def delete_detection(self, user_id: str, detection_id: str) -> bool:
        with self._tx() as db:
            return (
                db.execute(
                    "DELETE FROM detections WHERE id = ? AND user_id = ?", (detection_id, user_id)
                ).rowcount
                > 0
            )

    def stats(self, user_id: str) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for row in self._read(
            "SELECT modality, verdict, COUNT(*) AS n FROM detections WHERE user_id = ? "
            "GROUP BY modality, verdict",
            (user_id,),
        ):
            per = out.setdefault(row["modality"], {"total": 0})
            per[row["verdict"]] = row["n"]
            per["total"] += row["n"]
        return out
