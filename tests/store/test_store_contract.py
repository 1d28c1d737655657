"""The store contract (store/base.py): one suite, run against SQLite and DynamoDB (a real
``moto_server``). Also: the quota race, and outages turning into ``StoreUnavailable``."""

from __future__ import annotations

import contextlib
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.stub import Stubber

from auth import api_keys
from errors import Conflict, StoreUnavailable
from store.ids import new_id
from store.records import ApiKey, Detection, QuotaDecision, User
from tests.store.conftest import free_port, make_dynamodb_store

pytestmark = pytest.mark.unit

NOW = "2030-01-01T12:00:00Z"
DAY = "2030-01-01"
NEXT_DAY = "2030-01-02"
EXPIRES = 1_893_628_800  # 2030-01-03T00:00:00Z: a day after the counter stops mattering


def make_user(email: str | None = None, **fields) -> User:
    user_id = new_id("usr")
    return User(
        id=user_id,
        email=email or f"{user_id.lower()}@example.com",
        password_hash="$2b$04$not-a-real-hash",
        created_at=NOW,
        **fields,
    )


def make_key(user_id: str, name: str = "default") -> tuple[ApiKey, str]:
    generated = api_keys.generate_key()
    key = ApiKey(
        id=new_id("key"),
        user_id=user_id,
        name=name,
        digest=generated.digest,
        display_prefix=generated.display_prefix,
        created_at=NOW,
    )
    return key, generated.secret


def make_detection(user_id: str, modality: str = "image", verdict: str = "FAKE", **fields) -> Detection:
    detection_id = fields.pop("id", None) or new_id("det")
    return Detection(
        id=detection_id,
        user_id=user_id,
        created_at=NOW,
        modality=modality,
        verdict=verdict,
        model_id="vit-dima806",
        result={"id": detection_id, "verdict": verdict, "segments": [{"start_s": 0.0}], "warnings": []},
        **{"fake_probability": 0.75, **fields},
    )


def new_user(store, email: str | None = None, **fields) -> tuple[User, ApiKey, str]:
    user = make_user(email, **fields)
    key, secret = make_key(user.id)
    store.create_user(user, key)
    return user, key, secret


def consume(store, user_id: str, *, day=DAY, daily=100, minute="image:203001011200", per_minute=1000):
    return store.consume(
        user_id,
        day=day,
        daily_limit=daily,
        minute_bucket=minute,
        minute_limit=per_minute,
        expires_at=EXPIRES,
    )


# --- users ---------------------------------------------------------------------------------


def test_create_and_get_user(store):
    user, key, _ = new_user(store, "alice@example.com", daily_limit=7)
    assert store.get_user(user.id) == user
    assert store.get_user_by_email("alice@example.com") == user
    assert store.get_user("usr_missing") is None
    assert store.get_user_by_email("nobody@example.com") is None
    assert store.get_key_by_digest(key.digest) == key  # the first key comes with the user


def test_user_defaults_round_trip(store):
    user = make_user()
    store.create_user(user, None)
    stored = store.get_user(user.id)
    assert stored == user
    assert stored.daily_limit is None and stored.disabled is False and stored.role == "user"
    assert store.list_keys(user.id) == []


def test_email_is_unique(store):
    first, _, _ = new_user(store, "taken@example.com")
    with pytest.raises(Conflict) as info:
        new_user(store, "taken@example.com")
    assert info.value.status == 409 and info.value.code == "email_taken"
    assert store.get_user_by_email("taken@example.com") == first
    page = store.list_users(10, None)
    assert [u.id for u in page.items] == [first.id]  # the refused user left nothing behind


def test_update_user(store):
    user, _, _ = new_user(store)
    updated = store.update_user(user.id, daily_limit=5)
    assert updated.daily_limit == 5 and updated.disabled is False
    updated = store.update_user(user.id, disabled=True)
    assert updated.daily_limit == 5 and updated.disabled is True
    assert store.get_user(user.id) == updated
    assert store.update_user("usr_missing", daily_limit=3) is None
    assert store.get_user("usr_missing") is None


def test_list_users_pagination(store):
    users = sorted((new_user(store)[0] for _ in range(7)), key=lambda u: u.id)
    seen, cursor, pages = [], None, 0
    while True:
        page = store.list_users(3, cursor)
        pages += 1
        assert len(page.items) <= 3
        seen.extend(page.items)
        if page.next_cursor is None:
            break
        assert page.next_cursor == page.items[-1].id
        cursor = page.next_cursor
    assert pages == 3
    assert seen == users
    assert store.list_users(10, None).next_cursor is None


# --- keys ----------------------------------------------------------------------------------


def test_keys_add_find_list(store):
    user, first, _ = new_user(store)
    second, _ = make_key(user.id, "ci")
    store.add_key(second)
    assert store.get_key_by_digest(second.digest) == second
    assert store.get_key_by_digest("0" * 64) is None
    listed = store.list_keys(user.id)
    assert sorted(k.id for k in listed) == sorted([first.id, second.id])
    assert {k.name for k in listed} == {"default", "ci"}


def test_key_scopes_round_trip(store):
    """A key stores its scopes (a list); a key stored without them (made before scopes existed)
    reads back as None, which keeps every scope of its role (store.records.key_scopes)."""
    user, first, _ = new_user(store)
    scoped, _ = make_key(user.id, "ci")
    scoped.scopes = ["detect", "read"]
    store.add_key(scoped)
    assert store.get_key_by_digest(scoped.digest).scopes == ["detect", "read"]
    assert store.get_key_by_digest(first.digest).scopes is None
    assert {k.name: k.scopes for k in store.list_keys(user.id)} == {"default": None, "ci": ["detect", "read"]}
    rolled = store.revoke_key(user.id, scoped.id, NOW, expires_at="2030-01-01T13:00:00Z")
    assert rolled.scopes == ["detect", "read"]  # writes to a key leave its scopes alone
    store.touch_key(scoped.id, scoped.digest, NOW)
    assert store.get_key_by_digest(scoped.digest).scopes == ["detect", "read"]


def test_sqlite_keys_from_before_scopes_are_migrated_and_keep_working(tmp_path):
    import sqlite3

    from store.records import key_scopes
    from store.sqlite import SQLiteStore

    path = tmp_path / "old.db"
    user = make_user()
    key, _ = make_key(user.id)
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE,"
        " password_hash TEXT NOT NULL, created_at TEXT NOT NULL, role TEXT NOT NULL,"
        " daily_limit INTEGER, disabled INTEGER NOT NULL);"
        "CREATE TABLE api_keys (id TEXT PRIMARY KEY,"
        " user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
        " name TEXT NOT NULL, digest TEXT NOT NULL UNIQUE, display_prefix TEXT NOT NULL,"
        " created_at TEXT NOT NULL, last_used_at TEXT, revoked_at TEXT, expires_at TEXT);"
        f"INSERT INTO users VALUES ('{user.id}', '{user.email}', 'x', '{NOW}', 'admin', NULL, 0);"
        f"INSERT INTO api_keys VALUES ('{key.id}', '{user.id}', 'old', '{key.digest}',"
        f" '{key.display_prefix}', '{NOW}', NULL, NULL, NULL);"
    )
    old.commit()
    old.close()
    store = SQLiteStore(path)
    migrated = store.get_key_by_digest(key.digest)
    assert migrated is not None and migrated.name == "old" and migrated.scopes is None
    assert key_scopes(migrated.scopes, "admin") == ("detect", "read", "keys", "admin")
    new, _ = make_key(user.id, "new")
    new.scopes = ["read"]
    store.add_key(new)
    assert [k.scopes for k in store.list_keys(user.id)] == [None, ["read"]]
    store.close()
    reopened = SQLiteStore(path)  # an already migrated file is left as it is
    assert reopened.get_key_by_digest(new.digest).scopes == ["read"]
    reopened.close()


def test_revoke_key(store):
    user, key, _ = new_user(store)
    revoked = store.revoke_key(user.id, key.id, "2030-01-01T12:05:00Z")
    assert revoked.revoked_at == "2030-01-01T12:05:00Z" and revoked.expires_at is None
    assert store.get_key_by_digest(key.digest).revoked_at == "2030-01-01T12:05:00Z"
    assert store.revoke_key(user.id, "key_missing", NOW) is None


def test_roll_grace_sets_expiry_then_revoke_clears_it(store):
    user, key, _ = new_user(store)
    rolled = store.revoke_key(user.id, key.id, NOW, expires_at="2030-01-01T13:00:00Z")
    assert rolled.revoked_at is None and rolled.expires_at == "2030-01-01T13:00:00Z"
    assert store.get_key_by_digest(key.digest).expires_at == "2030-01-01T13:00:00Z"
    revoked = store.revoke_key(user.id, key.id, "2030-01-01T12:10:00Z")
    assert revoked.revoked_at == "2030-01-01T12:10:00Z" and revoked.expires_at is None
    # A revoked key cannot be given a grace period again.
    again = store.revoke_key(user.id, key.id, NOW, expires_at="2030-01-02T00:00:00Z")
    assert again.revoked_at == "2030-01-01T12:10:00Z" and again.expires_at is None


def test_touch_key(store):
    user, key, _ = new_user(store)
    store.touch_key(key.id, key.digest, "2030-01-01T12:30:00Z")
    assert store.get_key_by_digest(key.digest).last_used_at == "2030-01-01T12:30:00Z"
    assert store.list_keys(user.id)[0].last_used_at == "2030-01-01T12:30:00Z"


# --- quotas --------------------------------------------------------------------------------


def test_consume_enforces_the_daily_limit(store):
    user, _, _ = new_user(store)
    for n in range(1, 6):
        decision = consume(store, user.id, daily=5)
        assert decision == QuotaDecision(True, None, n, 5, n, 1000)
    refused = consume(store, user.id, daily=5)
    assert not refused.allowed and refused.scope == "daily"
    assert refused.daily_used == 5 and refused.daily_limit == 5
    assert store.usage(user.id, DAY) == (5, 5)  # the refused request counted against nothing
    assert consume(store, user.id, daily=6).allowed  # the limit is whatever the caller passes now
    assert store.usage(user.id, DAY) == (6, 6)


def test_minute_refusal_gives_the_day_slot_back(store):
    user, _, _ = new_user(store)
    assert consume(store, user.id, daily=10, per_minute=2).allowed
    assert consume(store, user.id, daily=10, per_minute=2).allowed
    refused = consume(store, user.id, daily=10, per_minute=2)
    assert not refused.allowed and refused.scope == "minute"
    assert (refused.daily_used, refused.minute_used, refused.minute_limit) == (2, 2, 2)
    assert store.usage(user.id, DAY) == (2, 2)
    # Another endpoint (or the next minute) is a different bucket; the day count goes on.
    nxt = consume(store, user.id, daily=10, minute="image:203001011201", per_minute=2)
    assert nxt.allowed and nxt.daily_used == 3 and nxt.minute_used == 1
    other = consume(store, user.id, daily=10, minute="audio:203001011200", per_minute=2)
    assert other.allowed and other.daily_used == 4 and other.minute_used == 1
    assert store.usage(user.id, DAY) == (4, 4)


def test_day_rollover_is_a_new_bucket(store):
    user, _, _ = new_user(store)
    for _ in range(3):
        assert consume(store, user.id, daily=3).allowed
    assert not consume(store, user.id, daily=3).allowed
    tomorrow = consume(store, user.id, day=NEXT_DAY, daily=3, minute="image:203001020000")
    assert tomorrow.allowed and tomorrow.daily_used == 1
    assert store.usage(user.id, DAY) == (3, 4)
    assert store.usage(user.id, NEXT_DAY) == (1, 4)
    assert store.usage(user.id, "2030-01-03") == (0, 4)


def test_usage_of_a_user_without_requests(store):
    user, _, _ = new_user(store)
    assert store.usage(user.id, DAY) == (0, 0)


def test_concurrent_consume_never_overshoots(store):
    """200 requests at once against a daily limit of 100: exactly 100 pass, the counter says 100."""
    user, _, _ = new_user(store)
    start = threading.Barrier(50)

    def one(_: int) -> bool:
        with contextlib.suppress(threading.BrokenBarrierError):
            start.wait(timeout=30)
        return consume(store, user.id, daily=100).allowed

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(200)))
    assert results.count(True) == 100
    assert results.count(False) == 100
    assert store.usage(user.id, DAY) == (100, 100)
    assert not consume(store, user.id, daily=100).allowed


# --- history -------------------------------------------------------------------------------


def test_history_add_get_delete(store):
    user, _, _ = new_user(store)
    detection = make_detection(user.id)
    store.add_detection(detection)
    assert store.get_detection(user.id, detection.id) == detection
    assert store.get_detection(user.id, "det_missing") is None
    assert store.delete_detection(user.id, detection.id) is True
    assert store.get_detection(user.id, detection.id) is None
    assert store.delete_detection(user.id, detection.id) is False
    assert store.list_detections(user.id, 10, None).items == []


def test_no_face_detection_has_no_probability(store):
    user, _, _ = new_user(store)
    detection = make_detection(user.id, "video", "NO_FACE", fake_probability=None)
    store.add_detection(detection)
    assert store.get_detection(user.id, detection.id) == detection
    assert store.list_detections(user.id, 10, None).items[0].fake_probability is None
    assert store.stats(user.id)["video"]["NO_FACE"] == 1


def test_sqlite_store_from_before_no_face_is_migrated_without_loss(tmp_path):
    import sqlite3

    from store.sqlite import SQLiteStore

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE users (id TEXT PRIMARY KEY);"
        "CREATE TABLE detections (id TEXT PRIMARY KEY,"
        " user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
        " created_at TEXT NOT NULL, modality TEXT NOT NULL, verdict TEXT NOT NULL,"
        " fake_probability REAL NOT NULL, model_id TEXT NOT NULL, result TEXT NOT NULL);"
        "INSERT INTO users VALUES ('usr_1');"
        "INSERT INTO detections VALUES"
        " ('det_1', 'usr_1', '2030-01-01T00:00:00Z', 'image', 'FAKE', 0.9, 'm', '{}');"
    )
    old.commit()
    old.close()
    store = SQLiteStore(path)
    kept = store.get_detection("usr_1", "det_1")
    assert kept is not None and kept.fake_probability == 0.9
    no_face = make_detection("usr_1", "video", "NO_FACE", fake_probability=None)
    store.add_detection(no_face)
    stored = {d.id: d.fake_probability for d in store.list_detections("usr_1", 10, None).items}
    assert stored == {"det_1": 0.9, no_face.id: None}
    SQLiteStore(path)  # reopening an already migrated file is a no-op


def test_history_is_newest_first_and_paginates(store):
    user, _, _ = new_user(store)
    detections = [make_detection(user.id) for _ in range(25)]
    shuffled = detections[:]
    random.Random(7).shuffle(shuffled)
    for detection in shuffled:
        store.add_detection(detection)
    expected = sorted((d.id for d in detections), reverse=True)  # ULIDs sort by creation time

    seen, cursor, sizes = [], None, []
    while True:
        page = store.list_detections(user.id, 10, cursor)
        sizes.append(len(page.items))
        seen.extend(d.id for d in page.items)
        if page.next_cursor is None:
            break
        assert page.next_cursor == page.items[-1].id
        cursor = page.next_cursor
    assert sizes == [10, 10, 5]
    assert seen == expected
    # Exactly one page's worth: no dangling cursor pointing at an empty page.
    exact = store.list_detections(user.id, 25, None)
    assert [d.id for d in exact.items] == expected and exact.next_cursor is None
    assert store.list_detections(user.id, 5, expected[19]).next_cursor is None


def test_stats_count_per_modality_and_verdict(store):
    user, _, _ = new_user(store)
    image_fake = make_detection(user.id, "image", "FAKE")
    video = make_detection(user.id, "video", "FAKE")
    for detection in (
        image_fake,
        make_detection(user.id, "image", "FAKE"),
        make_detection(user.id, "image", "REAL"),
        video,
        make_detection(user.id, "audio", "UNCERTAIN"),
    ):
        store.add_detection(detection)
    assert store.stats(user.id) == {
        "image": {"total": 3, "FAKE": 2, "REAL": 1},
        "video": {"total": 1, "FAKE": 1},
        "audio": {"total": 1, "UNCERTAIN": 1},
    }
    assert store.delete_detection(user.id, image_fake.id)
    assert store.delete_detection(user.id, video.id)
    assert store.stats(user.id) == {
        "image": {"total": 2, "FAKE": 1, "REAL": 1},
        "audio": {"total": 1, "UNCERTAIN": 1},
    }


# --- ownership and deletion ----------------------------------------------------------------


def test_a_user_never_touches_another_users_records(store):
    alice, alice_key, _ = new_user(store)
    bob, _, _ = new_user(store)
    detection = make_detection(alice.id)
    store.add_detection(detection)
    assert consume(store, alice.id).allowed

    assert store.get_detection(bob.id, detection.id) is None
    assert store.delete_detection(bob.id, detection.id) is False
    assert store.list_detections(bob.id, 10, None).items == []
    assert store.stats(bob.id) == {}
    assert store.revoke_key(bob.id, alice_key.id, NOW) is None
    assert store.revoke_key(bob.id, alice_key.id, NOW, expires_at="2030-01-01T12:01:00Z") is None
    assert alice_key.id not in {k.id for k in store.list_keys(bob.id)}
    assert store.usage(bob.id, DAY) == (0, 0)

    assert store.get_detection(alice.id, detection.id) == detection
    assert store.stats(alice.id) == {"image": {"total": 1, "FAKE": 1}}
    assert store.get_key_by_digest(alice_key.digest) == alice_key  # not revoked, no expiry
    assert store.usage(alice.id, DAY) == (1, 1)


def test_delete_user_cascades(store):
    alice, first_key, _ = new_user(store, "alice@example.com")
    bob, bob_key, _ = new_user(store, "bob@example.com")
    second_key, _ = make_key(alice.id, "ci")
    store.add_key(second_key)
    detections = [make_detection(alice.id) for _ in range(3)]
    for detection in detections:
        store.add_detection(detection)
    bob_detection = make_detection(bob.id)
    store.add_detection(bob_detection)
    assert consume(store, alice.id).allowed
    assert consume(store, bob.id).allowed

    assert store.delete_user(alice.id) is True
    assert store.get_user(alice.id) is None
    assert store.get_user_by_email("alice@example.com") is None
    assert store.get_key_by_digest(first_key.digest) is None
    assert store.get_key_by_digest(second_key.digest) is None
    assert store.list_keys(alice.id) == []
    assert all(store.get_detection(alice.id, d.id) is None for d in detections)
    assert store.list_detections(alice.id, 10, None).items == []
    assert store.stats(alice.id) == {}
    assert store.usage(alice.id, DAY) == (1, 0)  # the day's count stays until it expires
    assert store.delete_user(alice.id) is False

    # Bob is untouched, and the email can sign up again.
    assert store.get_user(bob.id) == bob
    assert store.get_key_by_digest(bob_key.digest) == bob_key
    assert store.get_detection(bob.id, bob_detection.id) == bob_detection
    assert store.usage(bob.id, DAY) == (1, 1)
    again, _, _ = new_user(store, "alice@example.com")
    assert store.get_user_by_email("alice@example.com") == again
    assert [u.id for u in store.list_users(10, None).items] == sorted([bob.id, again.id])


def test_deleting_an_account_does_not_reset_the_days_quota(store):
    """An external identity's account has a deterministic id: deleted and made again on its next
    token, it used to come back with zeroed counters (a fresh daily quota at will)."""
    user = make_user("ext@example.com")
    user.id = "usr_ext_0123456789abcdef01234567"
    store.create_user(user, None)
    for _ in range(2):
        assert consume(store, user.id, daily=3, per_minute=2).allowed
    assert not consume(store, user.id, daily=3, per_minute=2).allowed  # the minute's limit

    assert store.delete_user(user.id)
    assert store.get_user(user.id) is None
    store.create_user(user, None)  # the same identity comes back at once
    assert store.usage(user.id, DAY) == (2, 0)  # the day's count is kept; the lifetime one is not
    refused = consume(store, user.id, daily=3, per_minute=2)
    assert not refused.allowed and refused.scope == "minute"  # the minute's count is kept too
    assert consume(store, user.id, daily=3, minute="image:203001011201", per_minute=2).allowed
    refused = consume(store, user.id, daily=3, minute="image:203001011202", per_minute=2)
    assert not refused.allowed and refused.scope == "daily"
    assert store.usage(user.id, DAY) == (3, 1)
    assert store.usage(user.id, NEXT_DAY) == (0, 1)  # a new day is a new bucket, as ever


def test_sqlite_sweeps_expired_counters_of_deleted_accounts(tmp_path):
    from store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "verity.db")
    gone = make_user()
    store.create_user(gone, None)
    old_day = "2001-01-01"
    store.consume(gone.id, day=old_day, daily_limit=9, minute_bucket="image:1", minute_limit=9, expires_at=1)
    assert consume(store, gone.id).allowed
    assert store.delete_user(gone.id)
    assert store.usage(gone.id, DAY) == (1, 0)  # today's stays until it expires ...
    assert store.usage(gone.id, old_day) == (0, 0)  # ... an expired one is swept, nothing else would
    rows = store._read("SELECT bucket FROM counters WHERE user_id = ?", (gone.id,))
    assert sorted(r["bucket"] for r in rows) == [f"day:{DAY}", "image:203001011200"]
    store.close()


def test_sqlite_store_whose_counters_cascade_is_migrated_without_loss(tmp_path):
    """Databases made before declared the counters' user a foreign key ON DELETE CASCADE: opening
    one drops the cascade and keeps every counter."""
    import sqlite3

    from store.sqlite import SQLiteStore

    path = tmp_path / "old.db"
    user = make_user()
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE,"
        " password_hash TEXT NOT NULL, created_at TEXT NOT NULL, role TEXT NOT NULL,"
        " daily_limit INTEGER, disabled INTEGER NOT NULL);"
        "CREATE TABLE counters (user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
        " bucket TEXT NOT NULL, count INTEGER NOT NULL, expires_at INTEGER,"
        " PRIMARY KEY (user_id, bucket));"
        f"INSERT INTO users VALUES ('{user.id}', '{user.email}', 'x', '{NOW}', 'user', NULL, 0);"
        f"INSERT INTO counters VALUES ('{user.id}', 'day:{DAY}', 4, {EXPIRES});"
        f"INSERT INTO counters VALUES ('{user.id}', 'total', 9, NULL);"
    )
    old.commit()
    old.close()
    store = SQLiteStore(path)
    assert store.usage(user.id, DAY) == (4, 9)
    assert store.delete_user(user.id)
    assert store.usage(user.id, DAY) == (4, 0)
    store.close()
    reopened = SQLiteStore(path)  # an already migrated file is left as it is
    assert reopened.usage(user.id, DAY) == (4, 0)
    reopened.close()


# --- outages: fail closed ------------------------------------------------------------------


def test_dynamodb_unreachable_raises_store_unavailable(aws_env):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(StoreUnavailable):
        make_dynamodb_store(endpoint, max_attempts=1, timeout_s=0.5)

    from store.dynamodb import DynamoDBStore

    dead = DynamoDBStore("verity", region="us-east-1", endpoint_url=endpoint, max_attempts=1, timeout_s=0.5)
    user = make_user()
    for call in (
        lambda: dead.get_user(user.id),
        lambda: dead.get_key_by_digest("0" * 64),
        lambda: consume(dead, user.id),
        lambda: dead.usage(user.id, DAY),
        lambda: dead.create_user(user, None),
        lambda: dead.add_detection(make_detection(user.id)),
        lambda: dead.list_detections(user.id, 10, None),
    ):
        with pytest.raises(StoreUnavailable) as info:
            call()
        assert info.value.status == 503 and info.value.headers["Retry-After"]


def test_sqlite_unopenable_raises_store_unavailable(tmp_path):
    from store.sqlite import SQLiteStore

    (tmp_path / "verity.db").mkdir()  # a directory where the database file should be
    with pytest.raises(StoreUnavailable):
        SQLiteStore(tmp_path / "verity.db")


@pytest.mark.parametrize(
    "code", ["ProvisionedThroughputExceededException", "ThrottlingException", "InternalServerError"]
)
def test_dynamodb_throttling_raises_store_unavailable(moto_server, code):
    store = make_dynamodb_store(moto_server.endpoint)
    try:
        user, key, _ = new_user(store)
        assert consume(store, user.id, daily=5).allowed
        with Stubber(store.table.meta.client) as stub:
            stub.add_client_error("update_item", service_error_code=code, http_status_code=400)
            with pytest.raises(StoreUnavailable) as info:
                consume(store, user.id, daily=5)
            assert code in info.value.message
            stub.add_client_error("get_item", service_error_code=code, http_status_code=400)
            with pytest.raises(StoreUnavailable):
                store.get_key_by_digest(key.digest)
            stub.assert_no_pending_responses()
        # The refused-by-outage request never counted; the store works again afterwards.
        assert store.usage(user.id, DAY) == (1, 1)
        assert store.get_key_by_digest(key.digest) == key
    finally:
        store._resource.meta.client.delete_table(TableName=store.table_name)


def test_dynamodb_cancelled_transaction_is_an_outage_unless_a_condition_failed(moto_server):
    """A transaction cancelled by a concurrent write (TransactionConflict) or throttling is a 503,
    not a 409 and not an unhandled error; a failed condition (email taken) stays a 409."""
    store = make_dynamodb_store(moto_server.endpoint)
    try:
        user, _, _ = new_user(store, "taken@example.com")

        def cancelled(stub: Stubber, *codes: str) -> None:
            stub.add_client_error(
                "transact_write_items",
                service_error_code="TransactionCanceledException",
                modeled_fields={"CancellationReasons": [{"Code": c} for c in codes]},
            )

        with Stubber(store.table.meta.client) as stub:
            cancelled(stub, "None", "TransactionConflict")
            with pytest.raises(StoreUnavailable):
                store.add_detection(make_detection(user.id))
            cancelled(stub, "ThrottlingError", "None", "None")
            with pytest.raises(StoreUnavailable):
                store.create_user(make_user(), None)
            cancelled(stub, "ConditionalCheckFailed", "None")
            with pytest.raises(Conflict):
                store.create_user(make_user("taken@example.com"), None)
            stub.assert_no_pending_responses()
        # Real (moto) condition failure: still a Conflict; nothing was written by the above.
        with pytest.raises(Conflict):
            store.create_user(make_user("taken@example.com"), None)
        assert store.list_detections(user.id, 10, None).items == []
        assert [u.id for u in store.list_users(10, None).items] == [user.id]
    finally:
        store._resource.meta.client.delete_table(TableName=store.table_name)


def test_zero_limits_admit_nothing(store):
    user, _, _ = new_user(store)
    assert not consume(store, user.id, daily=0).allowed
    assert not consume(store, user.id, per_minute=0).allowed
    assert store.usage(user.id, DAY) == (0, 0)


def test_writes_to_a_deleted_key_recreate_nothing(store):
    """A request authenticated just before its user was deleted still touches its key: nothing
    may reappear (a half record would be a 500 at the next lookup instead of a 401)."""
    user, key, _ = new_user(store)
    assert store.delete_user(user.id)
    store.touch_key(key.id, key.digest, NOW)
    assert store.revoke_key(user.id, key.id, NOW) is None
    assert store.get_key_by_digest(key.digest) is None


def test_concurrent_rolls_have_one_winner(store):
    user, key, _ = new_user(store)
    start = threading.Barrier(10)

    def roll(i: int):
        with contextlib.suppress(threading.BrokenBarrierError):
            start.wait(timeout=30)
        expires = None if i % 2 else "2030-01-01T13:00:00Z"
        return store.revoke_key(user.id, key.id, NOW, expires_at=expires, only_active=True)

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(roll, range(10)))
    assert sum(r is not None for r in results) == 1
    assert store.revoke_key(user.id, key.id, NOW, only_active=True) is None  # not active any more
