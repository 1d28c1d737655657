"""What the jobs e2e tests share: the API in process on settings of their own (``api_client``),
and job worker processes (``python -m jobs.worker``) in their own session, so that a worker and
its decoder children can be killed together, by the process group the test started."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from config import Settings
from tests.conftest import TEST_PASSWORD, unique_email
from tests.e2e.servers import BIN_DIR, PROJECT_ROOT

JOB_TIMEOUT_S = 120


def settings_with(env: dict[str, str]) -> Settings:
    """The settings a process with ``env`` in its environment reads (keys starting with "_" are
    the test's own notes, not variables)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            if not name.startswith("_"):
                patch.setenv(name, value)
        return Settings()


@contextmanager
def api_client(settings: Settings, tag: str) -> Iterator[Any]:
    """The in-process app (what the Lambda HTTP handler serves) on ``settings``, as a client
    signed up through it: its key is sent with every request, ``.user_id`` is its user."""
    from starlette.testclient import TestClient

    from api.app import create_inprocess_app

    with TestClient(create_inprocess_app(settings), raise_server_exceptions=False) as client:
        answer = client.post("/v1/auth/signup", json={"email": unique_email(tag), "password": TEST_PASSWORD})
        assert answer.status_code == 201, answer.text
        client.headers["x-api-key"] = answer.json()["api_key"]["key"]
        client.user_id = answer.json()["user"]["id"]
        yield client


@contextmanager
def worker_process(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """Started in a session of its own; stopped (SIGTERM, then SIGKILL) with its whole group."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(BIN_DIR / "python"), "-m", "jobs.worker"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_group(process, signal.SIGTERM)


def stop_group(process: subprocess.Popen, sig: int) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)  # its own session: the group id is its pid
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL: no handler runs, no lease is given back, the decoder child dies with it."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def wait_for_job(
    get: Callable[[str], Any], job_id: str, statuses: tuple[str, ...], timeout_s: float = JOB_TIMEOUT_S
) -> dict:
    deadline = time.monotonic() + timeout_s
    job: dict = {}
    while time.monotonic() < deadline:
        job = get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} is still {job.get('status')} after {timeout_s} s")
