"""The README's model commands, run as a user runs them outside `make`: from the checkout with
`.venv/bin/python` / `.venv/bin/bentoml` and no BENTOML_HOME in the environment.

The project's store (`bentos/`) must be the default for every entry point, every export says
where it stored what, and `python -m models ensure` (what `make serve` runs) never replaces a
model a user exported. Exports into a store go to a temporary BENTOML_HOME named explicitly, so
these tests never write into the developer's own `bentos/`."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.servers import BIN_DIR, PROJECT_ROOT, free_port, server_env

pytestmark = pytest.mark.e2e

TIMEOUT_S = 300
# Only the image model is served in the `ensure` tests: the others would be exported for real.
IMAGE_ONLY = {
    "VERITY_AUDIO_MODEL": "",
    "VERITY_TEXT_MODEL": "",
    "VERITY_VIDEO_MODEL": "",
    "VERITY_FACE_MODEL": "",
    "VERITY_IMAGE_MODELS": "",
}


def user_env(**overrides: str) -> dict[str, str]:
    """The environment of a user's shell: none of make's or the test session's store settings."""
    env = server_env(PROJECT_ROOT)
    for name in ("BENTOML_HOME", "BENTOML_DO_NOT_TRACK", "PYTHONPATH"):
        env.pop(name, None)
    env.update(overrides)
    return env


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


def test_every_venv_entry_point_defaults_to_the_projects_store(tmp_path: Path) -> None:
    env = user_env(HOME=str(tmp_path))  # BentoML's own default would be $HOME/bentoml
    probe = run(
        [
            str(BIN_DIR / "python"),
            "-c",
            "import os; from models.store import store_home; "
            "print(store_home()); print(os.environ['BENTOML_DO_NOT_TRACK'])",
        ],
        env,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == [str(PROJECT_ROOT / "bentos"), "True"]
    # BentoML's own CLI, as the README's `bentoml export` line runs it.
    listed = run([str(BIN_DIR / "bentoml"), "models", "list", "-o", "json"], env)
    assert listed.returncode == 0, listed.stderr
    assert not (tmp_path / "bentoml").exists(), "the bentoml CLI used ~/bentoml instead of ./bentos"


def _export_onnx(model_id: str, source: Path, home: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The README's `python -m models export ID --source model.onnx --like vit-dima806`."""
    argv = [str(BIN_DIR / "python"), "-m", "models", "export", model_id, "--source", str(source)]
    return run(
        [*argv, "--like", "vit-dima806", *extra], user_env(BENTOML_HOME=str(home), VERITY_LOG_JSON="false")
    )


def _listed(home: Path) -> list[dict]:
    done = run([str(BIN_DIR / "python"), "-m", "models", "list"], user_env(BENTOML_HOME=str(home)))
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_export_says_where_it_stored_what(model_store, tmp_path: Path) -> None:
    home = tmp_path / "home"
    source = model_store["vit-dima806"][0].onnx_path
    done = _export_onnx("my-detector", source, home)
    assert done.returncode == 0, done.stderr[-3000:]
    stored = [line for line in done.stderr.splitlines() if " stored model my-detector:" in line]
    assert len(stored) == 2, done.stderr[-3000:]  # fp32 and int8
    for line in stored:
        assert f" at {home}/models/my-detector/" in line, line
    # The quantizer's INFO chatter stays out of the export's output.
    assert "Quantization parameters" not in done.stderr
    assert {m["precision"] for m in _listed(home) if m["id"] == "my-detector"} == {"fp32", "int8"}


def test_ensure_never_replaces_a_users_export(model_store, tmp_path: Path) -> None:
    """A user exported their own file as the default image model, fp32 only. `make serve`'s
    `ensure` serves it as it is, and when asked for a precision it lacks it stops with the command
    to run instead of exporting hub or dev weights over it."""
    home = tmp_path / "home"
    done = _export_onnx("vit-dima806", model_store["vit-dima806"][0].onnx_path, home, "--no-int8")
    assert done.returncode == 0, done.stderr[-3000:]
    before = _listed(home)
    assert [(m["id"], m["precision"], m["source"]) for m in before] == [
        ("vit-dima806", "fp32", "onnx:model.onnx")
    ]

    ensure = [str(BIN_DIR / "python"), "-m", "models", "ensure"]
    served = run(ensure, user_env(BENTOML_HOME=str(home), VERITY_LOG_JSON="false", **IMAGE_ONLY))
    assert served.returncode == 0, served.stderr[-3000:]
    assert "vit-dima806 already in the model store" in served.stderr
    assert "source onnx:model.onnx" in served.stderr

    int8 = run(
        ensure,
        user_env(BENTOML_HOME=str(home), VERITY_PRECISION="int8", VERITY_LOG_JSON="false", **IMAGE_ONLY),
    )
    assert int8.returncode != 0
    assert "cannot be served as int8" in int8.stderr, int8.stderr
    assert "python -m models export vit-dima806 --source YOUR_FILE" in int8.stderr, int8.stderr
    assert "never replaces a stored model" in int8.stderr, int8.stderr
    assert _listed(home) == before  # nothing exported, nothing replaced


def test_ensure_asks_for_the_file_of_a_file_only_model(tmp_path: Path) -> None:
    env = user_env(BENTOML_HOME=str(tmp_path / "home"), VERITY_IMAGE_MODEL="keras-cnn", **IMAGE_ONLY)
    done = run([str(BIN_DIR / "python"), "-m", "models", "ensure"], env)
    assert done.returncode != 0
    assert "python -m models export keras-cnn --source FILE" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_a_missing_jwt_secret_in_production_is_said_in_plain_words(tmp_path: Path) -> None:
    env = user_env(HOME=str(tmp_path), VERITY_ENVIRONMENT="production")
    env.pop("VERITY_JWT_SECRET", None)
    done = run([str(BIN_DIR / "python"), "-m", "auth", "create-key", "--email", "x@example.com"], env)
    assert done.returncode == 1
    assert "Verity cannot start: VERITY_JWT_SECRET" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def no_aws_credentials(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(name, None)
    env.update(
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def test_dynamodb_without_credentials_fails_fast_in_the_cli(tmp_path: Path) -> None:
    env = user_env(VERITY_STORE="dynamodb", VERITY_DYNAMODB_ENDPOINT_URL="http://127.0.0.1:9")
    done = run(
        [str(BIN_DIR / "python"), "-m", "auth", "create-key", "--email", "x@example.com"],
        no_aws_credentials(env, tmp_path),
    )
    assert done.returncode == 1
    assert "needs AWS credentials" in done.stderr and "AWS_ACCESS_KEY_ID=local" in done.stderr, done.stderr


def test_readme_local_dynamodb_serve_without_credentials_fails_fast(
    model_store, bentoml_home, tmp_path
) -> None:
    """The README's local-DynamoDB `make serve` line, minus the credentials it now shows: the
    server exits at once with the reason, instead of restarting its worker for minutes."""
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    line = next(
        line
        for line in readme.splitlines()
        if "VERITY_DYNAMODB_ENDPOINT_URL=" in line and "make serve" in line
    )
    assert "AWS_ACCESS_KEY_ID=" in line and "AWS_SECRET_ACCESS_KEY=" in line, line
    settings = dict(re.findall(r"(VERITY_\w+)=(\S+)", line))
    env = no_aws_credentials(server_env(bentoml_home), tmp_path)
    env.update(settings)
    started = time.monotonic()
    done = subprocess.run(
        ["make", "--no-print-directory", "serve", "HOST=127.0.0.1", f"PORT={free_port()}"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert "Verity cannot start: VERITY_STORE=dynamodb needs AWS credentials" in output, output[-3000:]
    assert time.monotonic() - started < 120
