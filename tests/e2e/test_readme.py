"""The README is honest: ``make serve`` starts a working server and every curl example answers 2xx JSON.

The server is started with the README's own command (``make serve``, with HOST/PORT overridden so
it binds a free loopback port) and the test session's BENTOML_HOME, whose tiny models are already
stored, so ``python -m models ensure`` has nothing to export.

Credentials (issue 3): the README's examples read ``$VERITY_API_KEY`` and ``$VERITY_TOKEN``. Its
signup example runs as written (the README's account is deleted first if an earlier test made it)
and the key in its answer becomes ``$VERITY_API_KEY``; every other example runs with
``VERITY_API_KEY`` (that key, or one from a signup with the README's email and password) and
``VERITY_TOKEN`` (from ``POST /v1/auth/login`` with them) in its environment.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from auth.api_keys import well_formed
from tests.audio_factory import encode_ffmpeg, speech_like
from tests.e2e.servers import PROJECT_ROOT, ServerProcess, free_port, server_env, server_home
from tests.face_factory import Paste, compose, moving_face_frames
from tests.media_factory import encode, jpeg_bytes
from tests.video_factory import encode_ffmpeg as encode_ffmpeg_video

pytestmark = pytest.mark.e2e

log = logging.getLogger(__name__)

README = PROJECT_ROOT / "README.md"
README_ADDRESS = "localhost:3000"
# First run: `make serve` also runs its (no-op) dependency installs before serving.
MAKE_READY_TIMEOUT_S = 240.0
CURL_TIMEOUT_S = 60
SIGNUP, LOGIN = "/v1/auth/signup", "/v1/auth/login"
PUBLIC = ("/health", "/v1/models", "/.well-known/jwks.json", SIGNUP, LOGIN)


def bash_blocks(markdown: str) -> list[str]:
    """The ```bash blocks of a Markdown text, with backslash-continued lines joined."""
    return [re.sub(r"\\\n\s*", " ", block) for block in re.findall(r"```bash\n(.*?)```", markdown, re.S)]


WALK_THROUGH = "# walk-through: one script"


def walk_throughs() -> list[str]:
    """Blocks the README presents as one script (their lines depend on each other)."""
    return [b for b in bash_blocks(README.read_text(encoding="utf-8")) if b.startswith(WALK_THROUGH)]


def readme_curl_commands() -> list[str]:
    commands = []
    for block in bash_blocks(README.read_text(encoding="utf-8")):
        if block.startswith(WALK_THROUGH):
            continue  # run whole, by test_readme_walk_through
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


def readme_credentials() -> dict[str, str]:
    """The email and password in the README's signup example (``-d '{"email":…,"password":…}'``)."""
    for command in CURL_COMMANDS:
        if SIGNUP in command:
            match = re.search(r"-d '(\{.*?\})'", command)
            assert match, f"the signup example has no -d '{{...}}' body: {command}"
            body = json.loads(match.group(1))
            return {"email": body["email"], "password": body["password"]}
    pytest.fail("the README has no signup example (curl ... /v1/auth/signup)")


class ReadmeAccount:
    """The README's account on the server ``make serve`` started, and the variables its examples read."""

    def __init__(self, url: str, credentials: dict[str, str]) -> None:
        self.http = httpx.Client(base_url=url, timeout=30.0)
        self.credentials = credentials
        self.key: str | None = None

    def _login(self) -> httpx.Response:
        return self.http.post(LOGIN, json=self.credentials)

    def absent(self) -> None:
        """Delete the account if it exists, so the README's signup runs exactly as written."""
        response = self._login()
        if response.status_code == 200:
            bearer = {"authorization": f"Bearer {response.json()['access_token']}"}
            assert self.http.delete("/v1/auth/me", headers=bearer).status_code == 204
        else:
            assert response.status_code == 401, response.text
        self.key = None

    def adopt(self, key: str) -> None:
        """The key from the README's own signup: what the reader exports as VERITY_API_KEY."""
        self.key = key

    def env(self) -> dict[str, str]:
        response = self._login()
        if response.status_code == 401:  # this test runs without the signup example before it
            signed = self.http.post(SIGNUP, json=self.credentials)
            assert signed.status_code == 201, signed.text
            self.key = signed.json()["api_key"]["key"]
            response = self._login()
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        if self.key is None:  # the account exists but its key was shown to someone else
            made = self.http.post(
                "/v1/keys", json={"name": "readme"}, headers={"authorization": f"Bearer {token}"}
            )
            assert made.status_code == 201, made.text
            self.key = made.json()["key"]
        return {"VERITY_API_KEY": self.key, "VERITY_TOKEN": token}


@pytest.fixture(scope="module")
def readme_account(make_serve: ServerProcess) -> Iterator[ReadmeAccount]:
    account = ReadmeAccount(make_serve.url, readme_credentials())
    try:
        yield account
    finally:
        account.http.close()


def test_quick_start_is_make_serve_and_make_test() -> None:
    quick_start = bash_blocks(README.read_text(encoding="utf-8"))[0]
    commands = [line.split("#")[0].strip() for line in quick_start.splitlines() if line.strip()]
    assert commands == ["make serve", "make test"]


def test_readme_has_curl_examples() -> None:
    assert len(CURL_COMMANDS) >= 3, CURL_COMMANDS
    assert any("/v1/detect/image" in c for c in CURL_COMMANDS)
    assert any(SIGNUP in c for c in CURL_COMMANDS) and any(LOGIN in c for c in CURL_COMMANDS)
    assert readme_credentials()["email"]
    # The line after the signup example names the field of the answer that holds the key, as
    # the signup test below reads it (answer["api_key"]["key"]).
    readme = README.read_text(encoding="utf-8")
    export = next(line for line in readme.splitlines() if line.startswith("export VERITY_API_KEY="))
    assert "api_key.key" in export, export
    # Every example of an authenticated route shows how to authenticate.
    for command in CURL_COMMANDS:
        if not any(path in command for path in PUBLIC):
            assert "$VERITY_API_KEY" in command or "$VERITY_TOKEN" in command, command


@pytest.mark.parametrize("command", CURL_COMMANDS, ids=[f"curl-{i}" for i in range(len(CURL_COMMANDS))])
def test_readme_curl_example(
    make_serve: ServerProcess, readme_account: ReadmeAccount, command: str, tmp_path: Path
) -> None:
    (tmp_path / "face.jpg").write_bytes(jpeg_bytes(320, 240))
    (tmp_path / "essay.txt").write_text(
        "The committee met on Tuesday to review the budget and postponed the vote until March. " * 20,
        encoding="utf-8",
    )
    (tmp_path / "call.m4a").write_bytes(encode_ffmpeg(speech_like(6.0, 44_100), 44_100, "m4a"))
    (tmp_path / "clip.mp4").write_bytes(readme_clip())
    (tmp_path / "photo.jpg").write_bytes(
        encode(Image.fromarray(compose([Paste(60, 40, 200)], 0, 320, 240)), "JPEG")
    )
    body = tmp_path / "response.json"
    signup = SIGNUP in command
    if signup:
        readme_account.absent()
    credentials = {} if signup else readme_account.env()
    runnable = command.replace(README_ADDRESS, f"localhost:{make_serve.port}")
    runnable = re.sub(r"^curl ", f"curl -sS -o {body} -w '%{{http_code}}' ", runnable)
    done = subprocess.run(
        ["bash", "-c", runnable],
        cwd=tmp_path,
        env={**server_env(make_serve.bentoml_home), **credentials},
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

    if "faces=auto" in command:
        assert answer["verdict"] in {"FAKE", "REAL", "UNCERTAIN"} and len(answer["faces"]) == 1
        assert answer["fake_probability"] == answer["faces"][0]["fake_probability"]
    elif "/v1/detect/video" in command:
        assert answer["modality"] == "video" and answer["strategy"] == "temporal"
        assert answer["media"]["frames_analyzed"] == 3 and answer["faces"] and answer["segments"]
        assert answer["verdict"] in {"FAKE", "REAL", "UNCERTAIN"}
    elif "/v1/detect/text" in command:
        assert answer["modality"] == "text" and answer["verdict"] in {"FAKE", "REAL", "UNCERTAIN"}
        assert answer["segments"][0]["start_char"] == 0
    elif "/v1/detect/image" in command:
        assert answer["verdict"] in {"FAKE", "REAL", "UNCERTAIN"}
        assert answer["media"]["width"] == 320
        assert answer["model"]["weights"] == "dev"
        if match := re.search(r"[?&]model=([\w.-]+)", command):
            assert answer["model"]["id"] == match.group(1)
        if "explain=true" in command:
            assert answer["explanation"]["heatmap_png"]
        # The result's id is its history id.
        stored = readme_account.http.get(
            f"/v1/history/{answer['id']}", headers={"x-api-key": readme_account.key}
        )
        assert stored.status_code == 200 and stored.json() == answer
    elif "/v1/detect/audio" in command:
        assert answer["modality"] == "audio" and answer["model"]["weights"] == "dev"
        assert answer["media"]["duration_s"] == pytest.approx(6.0, abs=0.15)
        assert answer["segments"] and answer["segments"][-1]["end_s"] == answer["media"]["duration_s"]
    elif "/health/ready" in command:
        assert answer["status"] == "ready"
    elif "/v1/models" in command:
        assert any(m.get("served") for m in answer["models"])
    elif signup:
        assert status == 201
        assert answer["user"]["email"] == readme_account.credentials["email"]
        assert well_formed(answer["api_key"]["key"])
        readme_account.adopt(answer["api_key"]["key"])
    elif LOGIN in command:
        assert answer["token_type"] == "bearer" and answer["access_token"].count(".") == 2
    elif "/v1/usage" in command:
        assert answer["requests_today"] <= answer["daily_limit"]
        assert answer["reset_at"].endswith("T00:00:00Z")
    elif "/v1/history" in command:
        assert isinstance(answer["items"], list)
        assert all(item["id"].startswith("det_") for item in answer["items"])
    elif "/v1/stats" in command:
        assert answer["totals"]["total"] >= 0
    elif "/v1/webhook-secret" in command:
        assert status == 201 and answer["secret"].startswith("whsec_")
    elif "/v1/jobs" in command:
        assert isinstance(answer["items"], list) and all(j["id"].startswith("job_") for j in answer["items"])
    elif "/v1/keys" in command:
        if "-d " in command:  # a new key, shown once
            assert status == 201 and well_formed(answer["key"])
        else:
            assert answer["keys"] and all("key" not in k and "digest" not in k for k in answer["keys"])
            assert credentials["VERITY_API_KEY"] not in text


def test_readme_walk_through(
    make_serve: ServerProcess, readme_account: ReadmeAccount, tmp_path: Path
) -> None:
    """The uploads + jobs walk-through, run as the one bash script it is, against `make serve`
    (local blobs, the in-process workers): the job ends with the video's result."""
    (block,) = [b for b in walk_throughs() if "/v1/uploads" in b]
    (tmp_path / "talk.mp4").write_bytes(readme_clip())
    script = "set -euo pipefail\n" + block.replace(README_ADDRESS, f"localhost:{make_serve.port}")
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env={**server_env(make_serve.bentoml_home), **readme_account.env()},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"{done.stderr}\nserver log:\n{make_serve.log_tail(40)}"
    job = json.loads((tmp_path / "job.json").read_text(encoding="utf-8"))
    assert job["status"] == "succeeded", job
    assert job["result"]["modality"] == "video" and job["result"]["media"]["frames_analyzed"] == 3
    summary = json.loads(done.stdout)
    assert summary["status"] == "succeeded" and summary["verdict"] == job["result"]["verdict"]


@functools.cache
def readme_clip() -> bytes:
    """3 s of a face drifting across 320x240 frames, H.264 MP4."""
    return encode_ffmpeg_video(moving_face_frames(30), 10, "mp4")


def readme_cli_commands() -> list[str]:
    """The README's ops CLI lines (``... python -m auth ...``)."""
    return [
        line.strip()
        for block in bash_blocks(README.read_text(encoding="utf-8"))
        for line in block.splitlines()
        if " -m auth " in line
    ]


def run_cli_line(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One README CLI line in bash from the checkout, with this test run's interpreter."""
    return subprocess.run(
        ["bash", "-c", command.replace(".venv/bin/python", sys.executable)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_readme_ops_cli_commands(tmp_path: Path) -> None:
    """The README's ``python -m auth`` lines run as written against a fresh SQLite store; only the
    password placeholder is filled in, and users they act on (other than those they create) exist."""
    from auth.accounts import Accounts
    from config import Settings
    from store.sqlite import SQLiteStore

    commands = readme_cli_commands()
    assert any("create-user" in c and "--admin" in c for c in commands), commands
    env = {
        **server_env(tmp_path),
        "VERITY_SQLITE_PATH": str(tmp_path / "verity.db"),
        "VERITY_DEV_SECRET_PATH": str(tmp_path / "dev-secret"),
    }
    settings = Settings(sqlite_path=tmp_path / "verity.db", dev_secret_path=tmp_path / "dev-secret")
    created = {m.group(1) for c in commands if "create-user" in c and (m := re.search(r"--email (\S+)", c))}
    store = SQLiteStore(settings.sqlite_path)
    accounts = Accounts(store, settings)
    for command in commands:
        email = re.search(r"--email (\S+)", command).group(1)
        if email not in created and store.get_user_by_email(email) is None:
            accounts.signup(email, "an existing user's password")
    store.close()

    for command in commands:
        runnable = re.sub(
            r"VERITY_NEW_PASSWORD='[^']*'", "VERITY_NEW_PASSWORD='a real password 123'", command
        )
        done = run_cli_line(runnable, env)
        assert done.returncode == 0, f"{runnable}\n{done.stderr[-2000:]}"
        output = json.loads(done.stdout)
        log.info("%s -> %s", command, sorted(output))
        if "create-user" in command:
            assert output["user"]["role"] == ("admin" if "--admin" in command else "user")
            assert well_formed(output["api_key"]["key"])
        elif "create-key" in command:
            assert well_formed(output["key"])
        elif "set-limit" in command:
            assert output["daily_limit"] == int(re.search(r"--daily-limit (\d+)", command).group(1))
        elif " disable " in command:
            assert output["disabled"] is True


def test_readme_ops_cli_refusals_are_plain_errors(tmp_path: Path) -> None:
    """The README's create-user line exactly as written (its password is the placeholder `…`, too
    short), then with a real password twice: refusals are one `error: <code>: ...` line and exit 2,
    never a traceback."""
    line = next(c for c in readme_cli_commands() if "create-user" in c)
    env = {
        **server_env(tmp_path),
        "VERITY_SQLITE_PATH": str(tmp_path / "verity.db"),
        "VERITY_DEV_SECRET_PATH": str(tmp_path / "dev-secret"),
    }

    def run(command: str) -> subprocess.CompletedProcess[str]:
        return run_cli_line(command, env)

    as_written = run(line)
    assert as_written.returncode == 2, as_written.stderr[-2000:]
    assert re.search(r"^error: weak_password: ", as_written.stderr, re.M), as_written.stderr[-2000:]
    real = re.sub(r"VERITY_NEW_PASSWORD='[^']*'", "VERITY_NEW_PASSWORD='a real password 123'", line)
    assert run(real).returncode == 0
    again = run(real)
    assert again.returncode == 2, again.stderr[-2000:]
    assert re.search(r"^error: email_taken: ", again.stderr, re.M), again.stderr[-2000:]
    for done in (as_written, again):
        assert "Traceback" not in done.stderr and done.stdout == ""


def test_readme_calibration_walk_through(model_store, bentoml_home: Path, tmp_path: Path) -> None:
    """The calibration walk-through as the README tells it: the README's ``labeled.jsonl`` lines
    (their media made here), its ``python -m models calibrate`` line on a model store of its own,
    then ``make serve`` again and its curl line: the answer decides at the calibrated operating point."""
    from tests.e2e.servers import signup_over_http

    readme = README.read_text(encoding="utf-8")
    (block,) = [b for b in walk_throughs() if "models calibrate" in b]
    (jsonl,) = re.findall(r"```jsonl\n(.*?)```", readme, re.S)
    lines = [json.loads(line) for line in jsonl.splitlines() if line.strip()]
    assert {"media", "label", "domain"} <= set(lines[0]), lines
    for i, line in enumerate(lines):
        (tmp_path / line["media"]).write_bytes(jpeg_bytes(160, 120, seed=200 + i))
    (tmp_path / "labeled.jsonl").write_text(jsonl, encoding="utf-8")
    (tmp_path / "face.jpg").write_bytes(jpeg_bytes(320, 240))
    home = tmp_path / "bentoml-home"
    shutil.copytree(bentoml_home / "models", home / "models")  # calibration writes model.yaml

    commands = [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]
    calibrate = [c for c in commands if "models calibrate" in c]
    curls = [c for c in commands if c.startswith("curl ")]
    assert len(calibrate) == 1 and len(curls) == 1 and "operating_point=" in curls[0], commands
    done = subprocess.run(
        ["bash", "-c", calibrate[0].replace(".venv/bin/python", sys.executable)],
        cwd=tmp_path,
        env=server_env(home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    point = re.search(r"operating_point=(\w+)", curls[0]).group(1)
    thresholds = {
        json.loads(line)["tag"]: json.loads(line)["calibration"]["thresholds"]
        for line in done.stdout.splitlines()
    }
    assert len(thresholds) == 2  # fp32 and int8

    port = free_port()
    server = ServerProcess(
        ["make", "--no-print-directory", "serve", "HOST=127.0.0.1", f"PORT={port}"],
        port=port,
        bentoml_home=home,
        log_path=tmp_path / "make-serve.log",
    )
    try:
        server.wait_ready(MAKE_READY_TIMEOUT_S)
        account = signup_over_http(server.url)
        body = tmp_path / "response.json"
        runnable = curls[0].replace(README_ADDRESS, f"localhost:{port}")
        runnable = re.sub(r"^curl ", f"curl -sS -o {body} -w '%{{http_code}}' ", runnable)
        done = subprocess.run(
            ["bash", "-c", runnable],
            cwd=tmp_path,
            env={**server_env(home), "VERITY_API_KEY": account.key},
            capture_output=True,
            text=True,
            timeout=CURL_TIMEOUT_S,
            check=False,
        )
        answer = json.loads(body.read_text(encoding="utf-8"))
        assert done.stdout.strip() == "200", answer
        assert answer["calibrated"] is True and answer["operating_point"]["name"] == point
        served_tag = f"{answer['model']['id']}:{answer['model']['version']}"
        assert answer["threshold"] == thresholds[served_tag][point]
        listed = {m["id"]: m for m in httpx.get(f"{server.url}/v1/models").json()["models"]}
        assert listed["vit-dima806"]["calibration"]["thresholds"] == thresholds[served_tag]
    finally:
        server.stop()
