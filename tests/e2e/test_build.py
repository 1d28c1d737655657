"""``bentoml build`` works offline and yields a lean bento that carries the served models."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tarfile
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.servers import (
    BIN_DIR,
    PROJECT_ROOT,
    ServerProcess,
    free_port,
    server_env,
    server_home,
    with_env,
)

pytestmark = pytest.mark.e2e

log = logging.getLogger(__name__)

BUILD_TIMEOUT_S = 300
# Export-time only: none of these may reach the serving image.
EXPORT_ONLY = {"torch", "tensorflow", "tensorflow-cpu", "transformers", "tf2onnx", "keras", "onnxscript"}
SERVED = (
    "vit-dima806",
    "siglip-open-deepfake",
    "wav2vec2-audio",
    "roberta-openai-detector",
    "cnn-lstm",
    "mtcnn",
)


def served_stored() -> list:
    """The stored models a server started now would serve, precision by the default rule (auto:
    int8 where its agreement meets the bars): what a bento built now must hold."""
    from config import Settings
    from detect.hosting import served_models

    served = served_models(Settings())
    return [
        *served.image.values(),
        *served.audio.values(),
        *served.text.values(),
        *served.video.values(),
        served.face,
    ]


def _run(argv: list[str], home: Path) -> str:
    started = time.monotonic()
    done = subprocess.run(
        argv,
        cwd=PROJECT_ROOT,
        env=server_env(home),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    log.info("%s: exit %d in %.1f s", " ".join(argv[1:3]), done.returncode, time.monotonic() - started)
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


@pytest.fixture(scope="module")
def built(model_store, bentoml_home: Path) -> Iterator[tuple[Path, Path, str]]:
    """`make build`, twice in a row as a user runs it, into a BENTOML_HOME inside the checkout's
    bentos/ (where the project's store lives, inside the build context: a second build once copied
    the first bento into itself). Models link to the session's store; the folder is removed after."""
    home = server_home(bentoml_home, PROJECT_ROOT / "bentos" / f".e2e-build-{uuid.uuid4().hex[:8]}")
    try:
        tags = []
        for _ in range(2):
            output = _run(["make", "--no-print-directory", "build"], home)
            match = re.search(r"^built bento (verity:[a-z0-9]+) in (\S+)$", output, re.M)
            assert match, f"`make build` did not say what it built:\n{output}"
            tags.append(match.group(1))
            # ... which models, and where they are.
            for stored in served_stored():
                assert re.search(rf"^  {re.escape(stored.tag)}\b", output, re.M), output
            assert "model files: " in output and str(home / "models") in output, output
        assert tags[0] != tags[1]
        tag = tags[1]
        bento_dir = home / "bentos" / "verity" / tag.split(":", 1)[1]
        assert (bento_dir / "bento.yaml").is_file(), list(bento_dir.parent.iterdir())
        yield home, bento_dir, tag
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_requirements_are_the_lean_runtime_group(built) -> None:
    _, bento_dir, _ = built
    lines = (bento_dir / "env" / "python" / "requirements.txt").read_text().splitlines()
    requirements = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    names = {_name(r) for r in requirements}
    assert {"onnxruntime", "bentoml", "numpy", "pillow"} <= names
    assert not names & EXPORT_ONLY, names & EXPORT_ONLY
    # Exactly pyproject's runtime group (BentoML repeats its own pin, hence the set).
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    assert requirements == set(pyproject["dependency-groups"]["runtime"])

    image = yaml.safe_load((bento_dir / "bento.yaml").read_text())["image"]
    image_names = {_name(r) for r in image["python_requirements"].splitlines() if r.strip()}
    assert not image_names & EXPORT_ONLY


def test_bento_lists_the_served_models(built, model_store) -> None:
    _, bento_dir, _ = built
    info = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    assert info["entry_service"] == "Verity"
    services = {s["name"]: s for s in info["services"]}
    verity_deps = {d["service"] for d in services["Verity"]["dependencies"]}
    assert verity_deps == {
        "ImageDetector",
        "ImageDetector_siglip_open_deepfake",
        "AudioDetector",
        "TextDetector",
        "FrameEncoder",
        "TemporalHead",
    }
    bento_models = {m["tag"] for s in info["services"] for m in s["models"]}
    assert bento_models == {stored.tag for stored in served_stored()}
    assert {tag.split(":")[0] for tag in bento_models} == {*SERVED, "cnn-lstm-encoder"}
    envs = {e["name"]: e["value"] for e in info["envs"]}
    assert envs["VERITY_ENVIRONMENT"] == "production"

    sources = {
        p.relative_to(bento_dir / "src").as_posix() for p in (bento_dir / "src").rglob("*") if p.is_file()
    }
    assert {"service.py", "models/runtime.py", "models/catalog.toml", "api/app.py"} <= sources
    assert {"web/index.html", "web/app.js", "web/style.css"} <= sources  # the page at /
    assert not {s for s in sources if s.startswith(("tests/", "models/export/", "bench/", "bentos/", "var/"))}


@pytest.mark.parametrize("name", ["verity.bento", "verity.tar"])  # the README's two formats
def test_exported_bento_carries_the_onnx_files(built, model_store, tmp_path: Path, name: str) -> None:
    # A bento in the local store references the model store; `bentoml export` packs the models.
    home, _, tag = built
    archive = tmp_path / name
    _run([str(BIN_DIR / "bentoml"), "export", tag, str(archive)], home)
    with tarfile.open(archive) as bento:
        names = set(bento.getnames())
    for stored in served_stored():
        # One model.onnx per model; MTCNN's three graphs are one stored model.
        for graph in sorted(p.name for p in stored.path.glob("*.onnx")):
            assert f"./models/{stored.model_id}/{stored.version}/{graph}" in names, sorted(names)
    # ... and `bentoml import` brings it into another store, as the README says.
    target = tmp_path / "imported-home"  # another machine's store: empty
    _run([str(BIN_DIR / "bentoml"), "import", str(archive)], target)
    assert (target / "bentos" / "verity" / tag.split(":", 1)[1] / "bento.yaml").is_file()
    assert {p.name for p in (target / "models").iterdir()} >= set(SERVED)


def _bento_serve_env(tmp_path: Path, **extra: str | None) -> dict[str, str | None]:
    """A user's shell: none of the test session's own settings, so the bento's envs apply."""
    return {
        "VERITY_ENVIRONMENT": None,
        "VERITY_SQLITE_PATH": None,
        "VERITY_DEV_SECRET_PATH": None,
        "VERITY_JWT_SECRET": None,
        "XDG_DATA_HOME": str(tmp_path / "data"),
        **extra,
    }


def test_built_bento_runs_in_production(built, tmp_path: Path) -> None:
    """`bentoml serve <bento>` as the README says: the bento's production setting holds, a missing
    secret stops it in plain words with a non-zero status, and with a secret it serves while its
    mutable state (the SQLite file) lives outside the bento store."""
    home, bento_dir, tag = built
    before = {p for p in bento_dir.rglob("*")}
    argv = [str(BIN_DIR / "bentoml"), "serve", tag, "--host", "127.0.0.1"]
    env = with_env(server_env(home), _bento_serve_env(tmp_path))
    refused = subprocess.run(
        [*argv, "--port", str(free_port())],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output[-3000:]
    assert "Verity cannot start: VERITY_JWT_SECRET" in output, output[-3000:]

    port = free_port()
    server = ServerProcess(
        [*argv, "--port", str(port)],
        port=port,
        bentoml_home=home,
        log_path=tmp_path / "bento-serve.log",
        env=_bento_serve_env(tmp_path, VERITY_JWT_SECRET="e2e-" + "0123456789abcdef" * 3),
    )
    try:
        server.wait_ready(240)
        signup = httpx.post(
            f"{server.url}/v1/auth/signup",
            json={"email": "prod@example.com", "password": "correct horse battery"},
            timeout=30,
        )
        assert signup.status_code == 201, signup.text
        page = httpx.get(server.url, headers={"accept": "text/html"}, timeout=30)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.text
    finally:
        server.stop()
    assert (tmp_path / "data" / "verity" / "verity.db").is_file()
    assert not (tmp_path / "data" / "verity" / "dev-secret").exists()  # production: no dev secret
    assert {p for p in bento_dir.rglob("*")} == before, "the served bento's folder changed"
