"""Store fixtures: one real moto server process per test session (DynamoDB on 127.0.0.1, a free
port, fake credentials), and a ``store`` fixture that runs every contract test against both
backends: a SQLite file in ``tmp_path`` and a fresh, uniquely named DynamoDB table."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

log = logging.getLogger(__name__)

REGION = "us-east-1"
SERIAL_MOTO = Path(__file__).with_name("serial_moto.py")
_FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class MotoServer:
    """A moto server subprocess on 127.0.0.1 in its own process group, stopped by its PID.

    It is moto's own server (``moto.server.main``, what the ``moto_server`` script runs) through
    ``serial_moto.py``, which makes each request atomic the way DynamoDB makes each item update
    atomic; see that module for why the quota race needs it.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> MotoServer:
        self.process = subprocess.Popen(
            [sys.executable, str(SERIAL_MOTO), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while not _answers(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited early with status {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not answer on {self.endpoint} in {timeout_s} s")
            time.sleep(0.1)
        log.info("moto_server pid %s listening on %s", self.process.pid, self.endpoint)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        pid = self.process.pid
        try:
            os.killpg(pid, signal.SIGTERM)  # its own session: the group id is its pid
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass
        log.info("moto_server pid %s stopped", pid)


@pytest.fixture(scope="session")
def aws_env() -> Iterator[None]:
    """Fake credentials so boto3 never looks for (or finds) real ones."""
    saved = {k: os.environ.get(k) for k in _FAKE_AWS_ENV}
    os.environ.update(_FAKE_AWS_ENV)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def moto_server(aws_env) -> Iterator[MotoServer]:
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


def unique_table() -> str:
    return f"verity-test-{uuid.uuid4().hex[:12]}"


def make_dynamodb_store(endpoint: str, **kwargs):
    from store.dynamodb import DynamoDBStore

    return DynamoDBStore(unique_table(), region=REGION, endpoint_url=endpoint, create_table=True, **kwargs)


@pytest.fixture(params=["sqlite", "dynamodb"])
def backend(request) -> str:
    return request.param


@contextmanager
def fresh_store(backend: str, request, tmp_path: Path) -> Iterator:
    """A fresh, empty store: a SQLite file in ``tmp_path`` or a new table on the moto server."""
    if backend == "sqlite":
        from store.sqlite import SQLiteStore

        instance = SQLiteStore(tmp_path / "verity.db")
    else:
        server: MotoServer = request.getfixturevalue("moto_server")
        instance = make_dynamodb_store(server.endpoint)
    try:
        yield instance
    finally:
        if backend == "dynamodb":
            instance._resource.meta.client.delete_table(TableName=instance.table_name)
        instance.close()


@pytest.fixture
def store(backend: str, request, tmp_path: Path) -> Iterator:
    with fresh_store(backend, request, tmp_path) as instance:
        yield instance
