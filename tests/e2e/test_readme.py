"""The README is honest: ``make serve`` starts a working server and every curl example answers 2xx JSON.

The server is started with the README's own command (``make serve``, with HOST/PORT overridden so
it binds a free loopback port) and the test session's BENTOML_HOME, whose tiny models are already
stored, so ``python -m models ensure`` has nothing to export.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.servers import PROJECT_ROOT, ServerProcess, free_port, server_env, server_home
from tests.media_factory import jpeg_bytes

pytestmark = pytest.mark.e2e

log = logging.getLogger(__name__)

README = PROJECT_ROOT / "README.md"
README_ADDRESS = "localhost:3000"
# First run: `make serve` also runs its (no-op) dependency installs before serving.
MAKE_READY_TIMEOUT_S = 240.0
CURL_TIMEOUT_S = 60


def bash_blocks(markdown: str) -> list[str]:
    """The ```bash blocks of a Markdown text, with backslash-continued lines joined."""
    return [re.sub(r"\\\n\s*", " ", block) for block in re.findall(r"```bash\n(.*?)```", markdown, re.S)]


def readme_curl_commands() -> list[str]:
    commands = []
    for block in bash_blocks(README.read_text(encoding="utf-8")):
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("curl ") and README_ADDRESS in line:
                commands.append(line)
    return commands


CURL_COMMANDS = readme_curl_commands()


@pytest.fixture(scope="module")
def make_serve(model_store, bentoml_home: Path, tmp_path_factory) -> Iterator[ServerProcess]:
    if shutil.which("make") is None:
        pytest.fail("`make` is not installed; the README's quick start needs it")
    workdir = tmp_path_factory.mktemp("make-serve")
    port = free_port()
    server = ServerProcess(
        ["make", "--no-print-directory", "serve", "HOST=127.0.0.1", f"PORT={port}"],
        port=port,
        bentoml_home=server_home(bentoml_home, workdir / "bentoml-home"),
        log_path=workdir / "make-serve.log",
    )
    try:
        server.wait_ready(MAKE_READY_TIMEOUT_S)
        yield server
    finally:
        server.stop()


def test_quick_start_is_make_serve_and_make_test() -> None:
    quick_start = bash_blocks(README.read_text(encoding="utf-8"))[0]
    commands = [line.split("#")[0].strip() for line in quick_start.splitlines() if line.strip()]
    assert commands == ["make serve", "make test"]


def test_readme_has_curl_examples() -> None:
    assert len(CURL_COMMANDS) >= 3, CURL_COMMANDS
    assert any("/v1/detect/image" in c for c in CURL_COMMANDS)


@pytest.mark.parametrize("command", CURL_COMMANDS, ids=[f"curl-{i}" for i in range(len(CURL_COMMANDS))])
def test_readme_curl_example(make_serve: ServerProcess, command: str, tmp_path: Path) -> None:
    (tmp_path / "face.jpg").write_bytes(jpeg_bytes(320, 240))
    body = tmp_path / "response.json"
    runnable = command.replace(README_ADDRESS, f"localhost:{make_serve.port}")
    runnable = re.sub(r"^curl ", f"curl -sS -o {body} -w '%{{http_code}}' ", runnable)
    done = subprocess.run(
        ["bash", "-c", runnable],
        cwd=tmp_path,
        env=server_env(make_serve.bentoml_home),
        capture_output=True,
        text=True,
        timeout=CURL_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"{runnable}\n{done.stderr}\nserver log:\n{make_serve.log_tail(30)}"
    status = int(done.stdout.strip())
    text = body.read_text(encoding="utf-8")
    assert 200 <= status < 300, f"{runnable} -> {status}: {text[:500]}"
    answer = json.loads(text)
    log.info("%s -> %d", command, status)

    if "/v1/detect/image" in command:
        assert answer["verdict"] in {"FAKE", "REAL", "UNCERTAIN"}
        assert answer["media"]["width"] == 320
        assert answer["model"]["weights"] == "dev"
        if match := re.search(r"[?&]model=([\w.-]+)", command):
            assert answer["model"]["id"] == match.group(1)
        if "explain=true" in command:
            assert answer["explanation"]["heatmap_png"]
    elif "/health/ready" in command:
        assert answer["status"] == "ready"
    elif "/v1/models" in command:
        assert any(m.get("served") for m in answer["models"])
