"""The request profile's sorting of py-spy samples (bench/request_profile.py): the innermost frame
that names a category wins, and a thread waiting for work is idle, not busy."""

from __future__ import annotations

import pytest

from bench.request_profile import categorize

pytestmark = pytest.mark.unit

LOOP = "main (_bentoml_impl/worker/service.py:242);BaseEventLoop._run_once (asyncio/base_events.py:1922)"


def test_the_innermost_matching_frame_names_the_sample():
    raw = "\n".join(
        [
            f"{LOOP};Router.app (starlette/routing.py:704);SQLiteStore.consume (store/sqlite.py:365) 3",
            f"{LOOP};Router.app (starlette/routing.py:704);decode_image (media/image.py:92) 2",
            f"{LOOP};Router.app (starlette/routing.py:704) 4",
            f"{LOOP} 1",
            "Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:81) 7",
            "WorkerThread.run (anyio/_backends/_asyncio.py:1113);Condition.wait (threading.py:327) 5",
            "Thread.run (threading.py:982);helper (somewhere.py:1) 1",
        ]
    )
    assert categorize(raw) == {
        "SQLite store (quota, history, key)": 3,
        "image decode": 2,
        "FastAPI / Starlette": 4,
        "asyncio event loop": 1,
        "idle (waiting)": 12,
        "other": 1,
    }
