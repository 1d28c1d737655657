"""The local upload sweeper: expired uploads lose their record and their media; files nobody can
still need (a partial upload abandoned mid-stream, a blob whose record is gone) go too."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from config import Settings
from jobs.backend import JobsBackend
from jobs.local_workers import sweep_uploads
from store.records import Upload
from store.sqlite import SQLiteStore
from tests.store.test_store_contract import new_user

pytestmark = pytest.mark.unit


def test_sweeper_removes_expired_uploads_and_stale_files(tmp_path: Path) -> None:
    settings = Settings(
        sqlite_path=tmp_path / "verity.db", blob_dir=tmp_path / "blobs", dev_secret_path=tmp_path / "s"
    )
    accounts = SQLiteStore(settings.sqlite_path)
    backend = JobsBackend.from_settings(settings, accounts)
    user, _, _ = new_user(accounts)
    now = time.time()

    def upload(upload_id: str, expires_at: float) -> Path:
        key = f"uploads/{user.id}/{upload_id}"
        backend.stores.uploads.add_upload(
            Upload(upload_id, user.id, "2030-01-01T00:00:00Z", expires_at, key, "a.mp4", "video/mp4", 10)
        )
        path = settings.blob_dir / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"0123456789")
        return path

    expired, live = upload("upl_old", now - 1), upload("upl_new", now + 3600)
    abandoned = expired.parent / ".upl_gone.abc.partial"
    abandoned.write_bytes(b"half")
    old = now - settings.upload_retention_s - settings.upload_url_ttl_s - 60
    os.utime(abandoned, (old, old))

    assert sweep_uploads(backend, now) == 1
    assert not expired.exists() and not abandoned.exists()
    assert live.exists()
    assert backend.stores.uploads.get_upload(user.id, "upl_old", now=now - 10) is None  # the record went too
    assert backend.stores.uploads.get_upload(user.id, "upl_new", now=now) is not None
