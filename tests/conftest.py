"""Shared fixtures. The BentoML model store for the whole test session is a temporary directory
filled once with tiny real models (ViT for the default `vit-dima806`, SigLIP as a second served
model); BENTOML_HOME must point there before bentoml is first imported. The account store (SQLite)
and the development JWT secret live in a temporary directory too, so tests never touch `var/`.

Accounts (issue 3): ``signup`` goes through the real HTTP API; ``new_user`` makes a user through
the store and ``Accounts`` (what the ops CLI does) without paying a bcrypt hash per user; the admin
is made with ``Accounts.signup(..., role="admin")``, exactly like ``python -m auth create-user
--admin``. Product code has no test backdoor."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_TEST_HOME = Path(tempfile.mkdtemp(prefix="verity-test-bentoml-"))
_TEST_STATE = Path(tempfile.mkdtemp(prefix="verity-test-state-"))
os.environ["BENTOML_HOME"] = str(_TEST_HOME)
os.environ["BENTOML_DO_NOT_TRACK"] = "True"
os.environ["VERITY_ENVIRONMENT"] = "test"
os.environ["VERITY_LOG_JSON"] = "false"
os.environ["VERITY_IMAGE_MODELS"] = "siglip-open-deepfake"
# Long enough that a burst of tests is never shed as overload (the product default is 30 s).
os.environ["VERITY_BATCH_MAX_LATENCY_MS"] = "10000"
os.environ["VERITY_STORE"] = "sqlite"
os.environ["VERITY_SQLITE_PATH"] = str(_TEST_STATE / "verity.db")
os.environ["VERITY_DEV_SECRET_PATH"] = str(_TEST_STATE / "dev-secret")
os.environ["VERITY_BLOB_DIR"] = str(_TEST_STATE / "blobs")
# Webhook receivers of the tests listen on 127.0.0.1 (allow-listed: loopback is refused otherwise)
# and their retries come quickly.
os.environ["VERITY_WEBHOOK_ALLOWED_HOSTS"] = "127.0.0.1"
os.environ["VERITY_WEBHOOK_BACKOFF_S"] = "0.2"
# Every test signs up and logs in from the same address: the per-address throttle is for tests of
# its own (tests/http/test_auth_throttle.py, which set their limits and addresses themselves).
os.environ["VERITY_AUTH_PER_IP_PER_MIN"] = "1000000"
os.environ["VERITY_BCRYPT_QUEUE"] = "1000"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Hypothesis keeps caches (and, with a database, examples) in .hypothesis/ of the working directory:
# the session's temporary directory instead, so a test run writes nothing into the checkout.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(_TEST_STATE / "hypothesis"))

import pytest  # noqa: E402
from hypothesis import HealthCheck  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402

from tests.tiny import TINY_ROBERTA, TINY_SIGLIP, TINY_VIT, TINY_WAV2VEC2  # noqa: E402

# The video pair (models/export/keras_video.py): 2 conv blocks -> 8 pooled features, 4-frame
# windows, LSTM(8) -> Dense(1, sigmoid). SmallCNN takes 0..1 pixels (EfficientNet's 0..255).
TINY_CNN_LSTM = {
    "backbone": "SmallCNN",
    "filters": [4, 8],
    "image_size": 32,
    "rescale": 1 / 255,
    "seq_len": 4,
    "lstm_units": 8,
    "dropout": 0.5,
}

# Property-based tests (hypothesis; the fuzzers of tests/*/test_fuzz_*.py). The "ci" profile runs
# in `make test`: the same examples on every run (derandomize), so a failure in CI reproduces
# anywhere; no example database, so nothing is written into the checkout; no deadline, since a
# decoder child or a shared CPU makes single examples slow without being wrong. The fuzz tests
# size their own budgets against CI_EXAMPLES (tests/fuzz.py), so "deep" (random, 20x the examples:
# `pytest --hypothesis-profile=deep tests/unit/test_fuzz_media.py`) scales every one of them.
hypothesis_settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
hypothesis_settings.register_profile(
    "deep", hypothesis_settings.get_profile("ci"), max_examples=2000, derandomize=False
)
hypothesis_settings.load_profile("ci")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEST_PASSWORD = "correct horse battery staple"


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


@dataclass(frozen=True)
class Account:
    """A user the test made, with the one API key it was shown."""

    user_id: str
    email: str
    password: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.key}


class Caller:
    """The in-process client, sending one caller's credentials with every request."""

    def __init__(self, client: Any, headers: dict[str, str], account: Account | None = None) -> None:
        self.client = client
        self.headers = headers
        self.account = account

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        headers = {**self.headers, **(kwargs.pop("headers", None) or {})}
        response = self.client.request(method, url, headers=headers, **kwargs)
        if url.startswith("/v1/detect/") and response.status_code == 200:
            # Every detection answer of the HTTP tests holds to the declared result model.
            from detect.results import DetectionResult

            DetectionResult.model_validate(response.json())
        return response

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Any:
        return self.request("POST", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> Any:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> Any:
        return self.request("DELETE", url, **kwargs)


def early_in_a_clock_minute(seconds_needed: float) -> None:
    """Wait, when needed, until the current clock minute has ``seconds_needed`` left: limits
    counted per clock minute (sign-ups per address, jobs per minute) restart at its turn, so a
    test that expects a refusal after N requests must make all of them inside one minute."""
    second = datetime.now(UTC).second + datetime.now(UTC).microsecond / 1e6
    if second > 60 - seconds_needed:
        import time

        time.sleep(60.05 - second)


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """every error is ``{"error": {"code", "message", "request_id"}}`` as JSON, and the
    request id is the one in the ``x-request-id`` header."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) >= {"code", "message", "request_id"}
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.fixture(scope="session")
def bentoml_home() -> Iterator[Path]:
    yield _TEST_HOME


@pytest.fixture(scope="session")
def state_dir() -> Path:
    """Where the session's SQLite store and development JWT secret live."""
    return _TEST_STATE


@pytest.fixture(scope="session")
def face_model_store(bentoml_home: Path) -> list:
    """The MTCNN face detector, exported once per session from the `mtcnn` package (its real
    weights ship inside the package: no download, no tiny config needed)."""
    from models.export.pipeline import export_model

    return export_model("mtcnn")


@pytest.fixture(scope="session")
def model_store(bentoml_home: Path, face_model_store: list) -> dict[str, list]:
    """Export the tiny served models (fp32 + int8) and the face detector once per test session."""
    from models.export.pipeline import export_model

    return {
        "mtcnn": face_model_store,
        "vit-dima806": export_model("vit-dima806", offline=True, dev_overrides=TINY_VIT),
        "siglip-open-deepfake": export_model("siglip-open-deepfake", offline=True, dev_overrides=TINY_SIGLIP),
        "wav2vec2-audio": export_model("wav2vec2-audio", offline=True, dev_overrides=TINY_WAV2VEC2),
        "roberta-openai-detector": export_model(
            "roberta-openai-detector", offline=True, dev_overrides=TINY_ROBERTA
        ),
        # Four models: cnn-lstm-encoder and cnn-lstm (the head), each fp32 and int8.
        "cnn-lstm": export_model("cnn-lstm", offline=True, dev_overrides=TINY_CNN_LSTM),
    }


@pytest.fixture(scope="session")
def service_module(model_store):
    """``service.py``, imported only once the store holds its models."""
    import service

    return service


@pytest.fixture(scope="session")
def client(service_module) -> Iterator:
    """The public API in-process: BentoML's ASGI app with its lifespan, via TestClient.
    Sends no credentials: use ``api`` (or ``auth_headers``) for authenticated calls."""
    from starlette.testclient import TestClient

    with TestClient(service_module.Verity.to_asgi(), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def accounts(client, service_module):
    """The running service's ``Accounts`` (its store is the session's SQLite file)."""
    return service_module.app.state.accounts


@pytest.fixture(scope="session")
def signup(client) -> Callable[..., Account]:
    """Sign up through ``POST /v1/auth/signup``; returns the account and its first key."""

    def _signup(email: str | None = None, password: str = TEST_PASSWORD) -> Account:
        email = email or unique_email()
        response = client.post("/v1/auth/signup", json={"email": email, "password": password})
        assert response.status_code == 201, response.text
        body = response.json()
        return Account(body["user"]["id"], body["user"]["email"], password, body["api_key"]["key"])

    return _signup


@pytest.fixture(scope="session")
def new_user(accounts) -> Callable[..., Account]:
    """Make a user through the store and ``Accounts.create_key`` (no HTTP). All share one bcrypt
    hash of ``TEST_PASSWORD``, computed once, so a fresh user per test stays cheap."""
    from auth.accounts import normalise_email
    from auth.passwords import hash_password
    from store.ids import new_id
    from store.records import User

    password_hash = hash_password(TEST_PASSWORD)

    def _new_user(email: str | None = None, *, daily_limit: int | None = None) -> Account:
        user = User(
            id=new_id("usr"),
            email=normalise_email(email or unique_email()),
            password_hash=password_hash,
            created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            daily_limit=daily_limit,
        )
        accounts.store.create_user(user, None)
        _, secret = accounts.create_key(user, "test")
        return Account(user.id, user.email, TEST_PASSWORD, secret)

    return _new_user


@pytest.fixture
def user(new_user) -> Account:
    """A fresh user of this test alone (its own quota, history and keys)."""
    return new_user()


@pytest.fixture
def api_key(user: Account) -> str:
    return user.key


@pytest.fixture
def auth_headers(api_key: str) -> dict[str, str]:
    return {"x-api-key": api_key}


def login(client, email: str, password: str = TEST_PASSWORD) -> str:
    response = client.post("/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


@pytest.fixture
def jwt_headers(client, user: Account) -> dict[str, str]:
    """A bearer token from ``POST /v1/auth/login`` for the same user as ``auth_headers``."""
    return {"Authorization": f"Bearer {login(client, user.email, user.password)}"}


@pytest.fixture
def api(client, user: Account, auth_headers: dict[str, str]) -> Caller:
    """The in-process client acting as ``user`` with their API key."""
    return Caller(client, auth_headers, user)


@pytest.fixture(scope="session")
def admin(accounts) -> Account:
    """An admin made the way ``python -m auth create-user --admin`` makes one."""
    user, _, secret = accounts.signup(unique_email("admin"), TEST_PASSWORD, role="admin")
    assert user.role == "admin"
    return Account(user.id, user.email, TEST_PASSWORD, secret)


@pytest.fixture(scope="session")
def admin_headers(admin: Account) -> dict[str, str]:
    return admin.headers


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_TEST_HOME, ignore_errors=True)
    shutil.rmtree(_TEST_STATE, ignore_errors=True)
