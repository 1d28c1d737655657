"""E2E fixtures: one real ``bentoml serve service:Verity`` process tree for the session.

The server binds 127.0.0.1 on a free port, serves the tiny models of the session's model store
(``model_store`` in tests/conftest.py), keeps its accounts in a SQLite file of its own and is
stopped by this fixture, by the process group and PIDs it started (see tests/e2e/servers.py).
Detection needs an API key (issue 3): ``server_account`` signs up through the server's own HTTP API.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Account
from tests.e2e.servers import ServerProcess, bentoml_serve, signup_over_http

READY_TIMEOUT_S = 120.0
# These tests measure batching and throughput, not quotas (tests/http/test_quotas.py does): one
# caller sends ~100 detections within a minute, past the default 60/min and 100/day.
THROUGHPUT_LIMITS = {"VERITY_RATE_LIMIT_IMAGE_PER_MIN": "100000", "VERITY_DAILY_LIMIT": "100000"}


@pytest.fixture(scope="session")
def verity_server(model_store, bentoml_home: Path, tmp_path_factory) -> Iterator[ServerProcess]:
    """A running ``bentoml serve service:Verity``; ``.url``, ``.pid`` (the root) and ``.tree()``."""
    workdir = tmp_path_factory.mktemp("verity-server")
    server = bentoml_serve(
        bentoml_home,
        workdir,
        env=THROUGHPUT_LIMITS,
    )
    try:
        server.wait_ready(READY_TIMEOUT_S)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server_url(verity_server: ServerProcess) -> str:
    return verity_server.url


@pytest.fixture(scope="session")
def server_pid(verity_server: ServerProcess) -> int:
    """PID of the ``bentoml serve`` process (the circus arbiter): the root of the server's tree."""
    return verity_server.pid


@pytest.fixture(scope="session")
def server_account(server_url: str) -> Account:
    """A user of the served process, signed up through its HTTP API."""
    return signup_over_http(server_url)


@pytest.fixture(scope="session")
def server_headers(server_account: Account) -> dict[str, str]:
    return server_account.headers
