"""The README's AWS mode, as written: its ``moto_server`` line, its exports, ``python -m
infra.local_aws``, ``make serve`` and ``python -m jobs.worker``; then the README's upload
walk-through runs unchanged against that server, its form posted to the (moto) bucket and its job
run by the worker through SQS. Only the port differs (a free one instead of 5000/3000), and the
test starts the background commands itself, so that it can stop them by their PIDs."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.servers import (
    PROJECT_ROOT,
    ServerProcess,
    free_port,
    server_env,
    server_home,
    signup_over_http,
)
from tests.e2e.test_readme import README, README_ADDRESS, bash_blocks, readme_clip, walk_throughs
from tests.e2e.workers import stop_group

pytestmark = pytest.mark.e2e

AWS_MODE = "# aws mode:"
MOTO_ADDRESS = "127.0.0.1:5000"


def aws_mode_lines() -> list[str]:
    (block,) = [b for b in bash_blocks(README.read_text(encoding="utf-8")) if b.startswith(AWS_MODE)]
    return [line.split("  #")[0].strip() for line in block.splitlines()[1:] if line.strip()]


def exported(lines: list[str], moto: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in lines:
        if line.startswith("export "):
            for pair in shlex.split(line.replace(MOTO_ADDRESS, moto))[1:]:
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def test_readme_aws_mode_runs_the_walk_through(model_store, bentoml_home: Path, tmp_path: Path) -> None:
    lines = aws_mode_lines()
    commands = [line for line in lines if not line.startswith("export ")]
    assert commands == [
        ".venv/bin/moto_server -H 127.0.0.1 -p 5000 > moto.log 2>&1 &",
        ".venv/bin/python -m infra.local_aws",
        "make serve &",
        ".venv/bin/python -m jobs.worker",
    ], commands
    moto_port = free_port()
    address = f"127.0.0.1:{moto_port}"
    # The README's moto_server line, on a free port, in the foreground of its own session.
    moto_command = commands[0].replace(MOTO_ADDRESS.split(":")[1], str(moto_port)).split(" > ")[0]
    moto = subprocess.Popen(
        ["bash", "-c", f"exec {moto_command}"],
        cwd=PROJECT_ROOT,
        env=server_env(bentoml_home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = worker = None
    try:
        wait_for_port(moto_port, moto)
        env = exported(lines, address)
        assert (
            env["VERITY_BLOBS"] == "s3" and env["VERITY_QUEUE"] == "sqs" and env["VERITY_STORE"] == "dynamodb"
        )
        base = {**server_env(bentoml_home), **env}
        made = subprocess.run(
            ["bash", "-c", commands[1]],
            cwd=PROJECT_ROOT,
            env=base,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["bucket"] == env["VERITY_S3_BUCKET"]

        port = free_port()
        workdir = tmp_path / "server"
        workdir.mkdir()
        server = ServerProcess(
            ["make", "--no-print-directory", "serve", "HOST=127.0.0.1", f"PORT={port}"],
            port=port,
            bentoml_home=server_home(bentoml_home, workdir / "bentoml-home"),
            log_path=workdir / "make-serve.log",
            env=env,
        )
        server.wait_ready(240.0)
        with (tmp_path / "worker.log").open("wb") as log:
            worker = subprocess.Popen(
                ["bash", "-c", f"exec {commands[3]}"],
                cwd=PROJECT_ROOT,
                env=base,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        account = signup_over_http(server.url)
        (block,) = [b for b in walk_throughs() if "/v1/uploads" in b]
        (tmp_path / "talk.mp4").write_bytes(readme_clip())
        script = "set -euo pipefail\n" + block.replace(README_ADDRESS, f"localhost:{port}")
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,
            env={**base, "VERITY_API_KEY": account.key},
            capture_output=True,
            text=True,
            timeout=240,
        )
        worker_log = (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
        assert done.returncode == 0, f"{done.stderr}\nworker:\n{worker_log}\nserver:\n{server.log_tail(40)}"
        upload = json.loads((tmp_path / "upload.json").read_text())
        assert upload["url"].startswith(f"http://{address}/"), upload["url"]  # straight to the bucket
        assert "x-amz-signature" in upload["fields"] and "policy" in upload["fields"]
        job = json.loads((tmp_path / "job.json").read_text())
        assert job["status"] == "succeeded" and job["result"]["modality"] == "video", (job, worker_log)
    finally:
        if worker is not None:
            stop_group(worker, 15)
        if server is not None:
            server.stop()
        stop_group(moto, 15)


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            assert process.poll() is None, f"moto_server exited with {process.returncode}"
            assert time.monotonic() < deadline, "moto_server did not answer"
            time.sleep(0.1)
