"""The metrics module's series and functions, the /metrics guard, BentoML's endpoint labels, and
the request id / job id on log lines. Values are read from this process's registry (no
multiprocess folder in the tests); tests/http/test_metrics.py moves them through the API and
tests/e2e/test_metrics_served.py reads them from a real ``bentoml serve``."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import metrics
from api.middleware import MetricsGuard, metrics_refusal, route_template
from config import Settings
from errors import ERROR_CODES, QuotaExceeded
from logs import job_context, log_handler, request_id_var
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.unit

# Codes media/ raises that are about a request's options, not its media.
NOT_MEDIA = {"invalid_fps", "invalid_max_frames"}


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_media_rejection_codes_are_4xx_codes_of_the_error_table():
    for code in metrics.MEDIA_REJECTION_CODES:
        assert code in ERROR_CODES, code
        assert 400 <= ERROR_CODES[code][0] < 500, code
    raised = set()
    for path in (PROJECT_ROOT / "media").glob("*.py"):
        raised |= set(re.findall(r'code="([a-z_]+)"', path.read_text(encoding="utf-8")))
    assert raised - NOT_MEDIA <= metrics.MEDIA_REJECTION_CODES


def test_quota_kinds_of_every_refusal():
    assert QuotaExceeded("x", code="daily_quota_exceeded").kind == "daily"
    assert QuotaExceeded("x").kind == "per_minute"
    assert QuotaExceeded("x", code="login_locked").kind == "login_locked"
    assert QuotaExceeded("x", kind="auth_per_address").kind == "auth_per_address"
    assert {"daily", "per_minute", "login_locked"} <= metrics.QUOTA_KINDS


def test_request_answered_bounds_its_labels():
    route = "/v1/detect/image"
    before = value("verity_request_duration_seconds_count", route=route, method="other", status="429")
    quota_before = value("verity_quota_rejections_total", kind="other")
    metrics.request_answered(route, "BREW", 429, 0.01, "rate_limited", "made-up-kind")
    assert (
        value("verity_request_duration_seconds_count", route=route, method="other", status="429")
        == before + 1
    )
    assert value("verity_quota_rejections_total", kind="other") == quota_before + 1

    media_before = value("verity_media_rejections_total", code="corrupt_image")
    metrics.request_answered(route, "POST", 422, 0.01, "corrupt_image", None)
    metrics.request_answered(route, "POST", 422, 0.01, "missing_file", None)  # not about media
    metrics.request_answered(route, "POST", 503, 0.01, "corrupt_image", None)  # not a 4xx
    assert value("verity_media_rejections_total", code="corrupt_image") == media_before + 1
    assert value("verity_media_rejections_total", code="missing_file") == 0


def test_stream_functions_move_their_series():
    sessions = value("verity_stream_sessions_total")
    active = value("verity_stream_active_sessions")
    metrics.stream_session_started()
    assert value("verity_stream_sessions_total") == sessions + 1
    assert value("verity_stream_active_sessions") == active + 1
    metrics.stream_session_ended()
    assert value("verity_stream_active_sessions") == active
    with pytest.raises(RuntimeError), metrics.stream_session():
        assert value("verity_stream_active_sessions") == active + 1
        raise RuntimeError("the socket broke")
    assert value("verity_stream_active_sessions") == active  # ended however the session ended
    assert value("verity_stream_sessions_total") == sessions + 2

    for outcome in ("analysed", "dropped", "rejected"):
        before = value("verity_stream_frames_total", outcome=outcome)
        metrics.stream_frame(outcome)
        assert value("verity_stream_frames_total", outcome=outcome) == before + 1


def test_unknown_label_values_are_refused():
    with pytest.raises(ValueError):
        metrics.stream_frame("queued")
    with pytest.raises(ValueError):
        metrics.job_status("paused")
    with pytest.raises(ValueError):
        metrics.webhook_delivery("maybe")


def test_job_and_webhook_functions():
    running = value("verity_jobs_total", status="running")
    observed = value("verity_job_duration_seconds_count")
    metrics.job_status("running")
    metrics.job_status("succeeded", 2.0)
    assert value("verity_jobs_total", status="running") == running + 1
    assert value("verity_job_duration_seconds_count") == observed + 1
    delivered = value("verity_webhook_deliveries_total", outcome="delivered")
    metrics.webhook_delivery("delivered")
    assert value("verity_webhook_deliveries_total", outcome="delivered") == delivered + 1


@pytest.fixture(scope="module")
def app_routes() -> list:
    from api.app import create_app

    return create_app(Settings()).state.template_routes


def _scope(path: str, method: str = "GET") -> dict:
    return {"type": "http", "path": path, "root_path": "", "method": method, "headers": []}


@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("GET", "/v1/jobs/job_01JD0000000000000000000000", "/v1/jobs/{job_id}"),
        ("DELETE", "/v1/jobs/job_01JD0000000000000000000000", "/v1/jobs/{job_id}"),
        ("POST", "/v1/detect/image", "/v1/detect/image"),
        ("PUT", "/v1/detect/image", "/v1/detect/image"),  # a 405 keeps its route
        ("GET", "/docs/assets/swagger-ui.css", "/docs/assets/{path}"),
        ("GET", "/v1/admin/users/usr_01JD0000000000000000000000", "/v1/admin/users/{user_id}"),
        ("GET", "/wp-admin/usr_01JD0000000000000000000000", metrics.UNMATCHED_ROUTE),
        ("GET", "/v1/jobs/job_1/extra", metrics.UNMATCHED_ROUTE),
    ],
)
def test_route_template_is_the_route_never_the_path(app_routes, method, path, template):
    assert route_template(app_routes, _scope(path, method)) == template


def _line(name: str, labels: dict[str, str], number: float) -> str:
    rendered = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{rendered}}} {number}"


def _bentoml_text() -> str:
    """What BentoML's /metrics gives: request series by raw path (the API service's and a model
    service's), and the batch histogram, which has no endpoint label."""
    service = {"service_name": "verity", "service_version": "not available"}
    total = "bentoml_service_request_total"
    duration = "bentoml_service_request_duration_seconds"
    batch = {"method_name": "predict", "runner_name": "ImageDetector"}
    lines = [f"# HELP {total} Total number of server HTTP requests", f"# TYPE {total} counter"]
    for endpoint, status, runner, number in [
        ("/v1/jobs/job_1", "200", "Verity", 2),
        ("/v1/jobs/job_2", "200", "Verity", 3),
        ("/v1/admin/users/usr_9", "401", "Verity", 1),
        ("/livez", "200", "Verity", 4),
        ('/x\\"y', "404", "Verity", 1),  # escaped in the text: a path is any string
        ("/predict", "200", "ImageDetector", 7),
    ]:
        labels = {"endpoint": endpoint, "http_response_code": status, "runner_name": runner, **service}
        lines.append(_line(total, labels, number))
    lines += [f"# HELP {duration} API HTTP request duration in seconds", f"# TYPE {duration} histogram"]
    for job, under_half, count, total_s in [("job_1", 2, 2, 0.5), ("job_2", 1, 3, 2.5)]:
        labels = {"endpoint": f"/v1/jobs/{job}", "http_response_code": "200", "runner_name": "Verity"}
        lines += [
            _line(f"{duration}_bucket", {**labels, "le": "0.5"}, under_half),
            _line(f"{duration}_bucket", {**labels, "le": "+Inf"}, count),
            _line(f"{duration}_count", labels, count),
            _line(f"{duration}_sum", labels, total_s),
        ]
    lines += [
        "# HELP bentoml_service_adaptive_batch_size Service adaptive batch size",
        "# TYPE bentoml_service_adaptive_batch_size histogram",
        _line("bentoml_service_adaptive_batch_size_bucket", {**batch, "le": "1.0"}, 3),
        _line("bentoml_service_adaptive_batch_size_bucket", {**batch, "le": "+Inf"}, 4),
        _line("bentoml_service_adaptive_batch_size_count", batch, 4),
        _line("bentoml_service_adaptive_batch_size_sum", batch, 6),
    ]
    return "\n".join(lines) + "\n"


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_bentoml_endpoint_labels_become_templates_and_are_summed(app_routes):
    def template(path: str) -> str:
        return route_template(app_routes, _scope(path))

    text = metrics.bound_bentoml_endpoints(_bentoml_text(), "Verity", template)
    assert "job_1" not in text and "job_2" not in text and "usr_9" not in text
    samples = _samples(text)
    extra = (("service_name", "verity"), ("service_version", "not available"))

    def total(endpoint: str, status: str, runner: str = "Verity") -> float:
        labels = (("endpoint", endpoint), ("http_response_code", status), ("runner_name", runner), *extra)
        return samples[("bentoml_service_request_total", tuple(sorted(labels)))]

    assert total("/v1/jobs/{job_id}", "200") == 5.0
    assert total("/v1/admin/users/{user_id}", "401") == 1.0
    assert total("/livez", "200") == 4.0  # BentoML's own path stays
    assert total(metrics.UNMATCHED_ROUTE, "404") == 1.0
    assert total("/predict", "200", "ImageDetector") == 7.0  # a model service's endpoint stays
    jobs = (("endpoint", "/v1/jobs/{job_id}"), ("http_response_code", "200"), ("runner_name", "Verity"))
    assert samples[("bentoml_service_request_duration_seconds_count", jobs)] == 5.0
    assert samples[("bentoml_service_request_duration_seconds_sum", jobs)] == 3.0
    le_half = tuple(sorted((*jobs, ("le", "0.5"))))
    assert samples[("bentoml_service_request_duration_seconds_bucket", le_half)] == 3.0
    # What has no endpoint label comes through as it was.
    batch = (("method_name", "predict"), ("runner_name", "ImageDetector"))
    assert samples[("bentoml_service_adaptive_batch_size_count", batch)] == 4.0
    assert (
        samples[("bentoml_service_adaptive_batch_size_bucket", tuple(sorted((*batch, ("le", "1.0")))))] == 3.0
    )


# --- the /metrics guard -------------------------------------------------------------------------
def test_metrics_refusal():
    assert metrics_refusal(Settings(), {}) is None
    off = metrics_refusal(Settings(metrics_enabled=False), {})
    assert off is not None and (off.status, off.code) == (404, "route_not_found")
    protected = Settings(metrics_token="s3cret-scrape-token")
    assert metrics_refusal(protected, {"authorization": "Bearer s3cret-scrape-token"}) is None
    missing = metrics_refusal(protected, {})
    assert missing is not None and (missing.status, missing.code) == (401, "unauthenticated")
    wrong = metrics_refusal(protected, {"authorization": "Bearer guess"})
    assert wrong is not None and (wrong.status, wrong.code) == (401, "invalid_token")
    assert metrics_refusal(Settings(metrics_token=""), {}) is None  # empty: no token


def test_guard_stands_in_front_of_a_metrics_route_it_does_not_own():
    """As on the BentoML service: the route is BentoML's, the guard a service middleware."""

    async def scrape(_request):
        return PlainTextResponse("bentoml_series 1\n")

    inner = Starlette(routes=[Route("/metrics", scrape), Route("/other", scrape)])
    guarded = MetricsGuard(inner, Settings(metrics_token="s3cret-scrape-token"))
    with TestClient(guarded) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthenticated"
        allowed = client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape-token"})
        assert allowed.status_code == 200 and "bentoml_series" in allowed.text
        assert client.get("/other").status_code == 200  # nothing else is guarded
    with TestClient(MetricsGuard(inner, Settings(metrics_enabled=False))) as client:
        assert client.get("/metrics").status_code == 404


# --- request id and job id on log lines ---------------------------------------------------------
@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """The handler every process logs through (``logs.log_handler``), in JSON, into a buffer."""
    stream = io.StringIO()
    handler = log_handler(Settings(log_json=True), stream)
    logger = logging.getLogger("tests.metrics.deep")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def _records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_lines_carry_the_ids_of_their_context(json_lines):
    log = logging.getLogger("tests.metrics.deep")
    token = request_id_var.set("req_test_1")
    try:
        log.info("in a request")
        with job_context("job_test_1"):
            log.info("in a job")

            async def in_a_thread() -> None:
                import anyio

                await anyio.to_thread.run_sync(log.info, "in a worker thread")

            asyncio.run(in_a_thread())
        log.info("an id given by the caller wins", extra={"request_id": "req_given"})
    finally:
        request_id_var.reset(token)
    log.info("outside")
    lines = _records(json_lines)
    assert [(r["message"], r.get("request_id"), r.get("job_id")) for r in lines] == [
        ("in a request", "req_test_1", None),
        ("in a job", "req_test_1", "job_test_1"),
        ("in a worker thread", "req_test_1", "job_test_1"),
        ("an id given by the caller wins", "req_given", None),
        ("outside", None, None),
    ]
