"""``bentoml build`` works offline and yields a lean bento that carries the served models."""

from __future__ import annotations

import logging
import re
import subprocess
import tarfile
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.e2e.servers import BIN_DIR, PROJECT_ROOT, server_env, server_home

pytestmark = pytest.mark.e2e

log = logging.getLogger(__name__)

BUILD_TIMEOUT_S = 300
# Export-time only (SPEC §2): none of these may reach the serving image.
EXPORT_ONLY = {"torch", "tensorflow", "tensorflow-cpu", "transformers", "tf2onnx", "keras", "onnxscript"}
SERVED = ("vit-dima806", "siglip-open-deepfake", "wav2vec2-audio", "cnn-lstm", "mtcnn")


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
def built(model_store, bentoml_home: Path, tmp_path_factory) -> tuple[Path, Path, str]:
    """Build the bento into a BENTOML_HOME of its own (sharing the session's model store)."""
    home = server_home(bentoml_home, tmp_path_factory.mktemp("build") / "bentoml-home")
    output = _run([str(BIN_DIR / "bentoml"), "build", "--output", "tag"], home)
    match = re.search(r"__tag__:(verity:[a-z0-9]+)", output)
    assert match, f"no bento tag in the output of bentoml build:\n{output}"
    tag = match.group(1)
    bento_dir = home / "bentos" / "verity" / tag.split(":", 1)[1]
    assert (bento_dir / "bento.yaml").is_file(), list(bento_dir.parent.iterdir())
    return home, bento_dir, tag


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
        "FrameEncoder",
        "TemporalHead",
    }
    bento_models = {m["tag"] for s in info["services"] for m in s["models"]}
    fp32 = {m.tag for mid in SERVED for m in model_store[mid] if m.precision == "fp32"}
    assert bento_models == fp32
    envs = {e["name"]: e["value"] for e in info["envs"]}
    assert envs["VERITY_ENVIRONMENT"] == "production"

    sources = {
        p.relative_to(bento_dir / "src").as_posix() for p in (bento_dir / "src").rglob("*") if p.is_file()
    }
    assert {"service.py", "models/runtime.py", "models/catalog.toml", "api/app.py"} <= sources
    assert not {s for s in sources if s.startswith(("tests/", "models/export/", "bench/"))}


def test_exported_bento_carries_the_onnx_files(built, model_store, tmp_path: Path) -> None:
    # A bento in the local store references the model store; `bentoml export` packs the models.
    home, _, tag = built
    archive = tmp_path / "verity.bento"
    _run([str(BIN_DIR / "bentoml"), "export", tag, str(archive)], home)
    with tarfile.open(archive) as bento:
        names = set(bento.getnames())
    for model_id in SERVED:
        for stored in (m for m in model_store[model_id] if m.precision == "fp32"):
            # One model.onnx per model; MTCNN's three graphs are one stored model.
            for graph in sorted(p.name for p in stored.path.glob("*.onnx")):
                assert f"./models/{stored.model_id}/{stored.version}/{graph}" in names, sorted(names)
