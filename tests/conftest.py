"""Shared fixtures. The BentoML model store for the whole test session is a temporary directory
filled once with tiny real models (ViT for the default `vit-dima806`, SigLIP as a second served
model); BENTOML_HOME must point there before bentoml is first imported."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_TEST_HOME = Path(tempfile.mkdtemp(prefix="verity-test-bentoml-"))
os.environ["BENTOML_HOME"] = str(_TEST_HOME)
os.environ["BENTOML_DO_NOT_TRACK"] = "True"
os.environ["VERITY_ENVIRONMENT"] = "test"
os.environ["VERITY_LOG_JSON"] = "false"
os.environ["VERITY_IMAGE_MODELS"] = "siglip-open-deepfake"
os.environ["VERITY_BATCH_MAX_LATENCY_MS"] = "300"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tests.tiny import TINY_SIGLIP, TINY_VIT  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def bentoml_home() -> Iterator[Path]:
    yield _TEST_HOME


@pytest.fixture(scope="session")
def model_store(bentoml_home: Path) -> dict[str, list]:
    """Export the tiny served models (fp32 + int8) once per test session."""
    from models.export.pipeline import export_model

    return {
        "vit-dima806": export_model("vit-dima806", offline=True, dev_overrides=TINY_VIT),
        "siglip-open-deepfake": export_model("siglip-open-deepfake", offline=True, dev_overrides=TINY_SIGLIP),
    }


@pytest.fixture(scope="session")
def service_module(model_store):
    """``service.py``, imported only once the store holds its models."""
    import service

    return service


@pytest.fixture(scope="session")
def client(service_module) -> Iterator:
    """The public API in-process: BentoML's ASGI app with its lifespan, via TestClient."""
    from starlette.testclient import TestClient

    with TestClient(service_module.Verity.to_asgi(), raise_server_exceptions=False) as test_client:
        yield test_client


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_TEST_HOME, ignore_errors=True)
