"""Verity's Prometheus series, and the one function each seam calls to move them.

The series live in ``prometheus_client``'s default registry, the one BentoML's own series use.
Under ``bentoml serve`` every worker process starts with ``PROMETHEUS_MULTIPROC_DIR`` set, so
``prometheus_client`` keeps each process's values in that folder and BentoML's ``/metrics``
(``MultiProcessCollector``) shows ours beside its own, summed over the API worker and the model
services. A process without that folder (the Lambda handler, ``python -m jobs.worker``, tests)
keeps them in memory; ``exposition`` renders whichever applies.

Every label value is bounded and says nothing about a user: routes are templates
(``/v1/jobs/{job_id}``, never the raw path), methods and outcomes come from fixed sets, codes
from ``errors.ERROR_CODES``, models from the served catalog. No user id, email or key ever
becomes a label.

Where each series moves (one seam each):

* requests, media and quota rejections: ``api.middleware.MetricsMiddleware``, from the answer's
  status and the error code the error renderers leave in the request's state (``errors.note_error``);
* detections: where a result is written to its caller's history (``api.app.record_detection``
  for the detection routes, ``jobs.runner.JobRunner`` for jobs);
* jobs: the job runner's status transitions; webhooks: the outcome of each delivery attempt;
* live streams: ``stream_session_started`` / ``stream_session_ended`` / ``stream_frame``, called
  by the WebSocket route.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

CONTENT_TYPE = CONTENT_TYPE_LATEST
UNMATCHED_ROUTE = "unmatched"
OTHER_METHOD = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# 4xx answers about the media itself (what a client sent could not be, or may not be, decoded),
# by their code in errors.ERROR_CODES. Request-shape errors (a missing field, bad base64, a
# bad option) are not media rejections; tests/unit/test_metrics.py keeps this set in the table.
MEDIA_REJECTION_CODES = frozenset(
    {
        "file_too_large",
        "too_many_pixels",
        "audio_too_long",
        "too_many_samples",
        "video_too_long",
        "too_many_frames",
        "unsupported_media_type",
        "decoder_unavailable",
        "empty_file",
        "corrupt_image",
        "corrupt_audio",
        "corrupt_video",
        "decode_failed",
        "decode_timeout",
        "bad_sample_rate",
        "bad_channels",
        "invalid_samples",
        "too_short",
        "no_audio",
        "no_video",
        "no_frames",
        "modality_mismatch",
        "text_too_long",
        "not_text",
        "invalid_text_encoding",
        "empty_text",
    }
)
# What refused a 429 (``errors.QuotaExceeded.kind``).
QUOTA_KINDS = frozenset({"daily", "per_minute", "auth_per_address", "login_per_email", "login_locked"})
JOB_STATUSES = frozenset({"running", "retrying", "succeeded", "failed"})
WEBHOOK_OUTCOMES = frozenset({"delivered", "retrying", "failed"})
STREAM_FRAME_OUTCOMES = frozenset({"analysed", "dropped", "rejected"})

# Requests run from milliseconds (health, history) to minutes (explain, long audio and video).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, math.inf)
# Jobs run from a second (an image) to hours (a long video at a high frame rate).
JOB_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 10800, math.inf)

DETECTIONS = Counter(
    "verity_detections_total",
    "Detections answered (inline routes and jobs), by modality, verdict and model.",
    ["modality", "verdict", "model"],
)
REQUEST_DURATION = Histogram(
    "verity_request_duration_seconds",
    "HTTP requests of the API, by route template, method and status, until the answer is sent.",
    ["route", "method", "status"],
    buckets=REQUEST_BUCKETS,
)
MEDIA_REJECTIONS = Counter(
    "verity_media_rejections_total",
    "4xx answers about the media sent (corrupt, too large, unsupported), by error code.",
    ["code"],
)
QUOTA_REJECTIONS = Counter(
    "verity_quota_rejections_total",
    "429 answers, by what refused the request (daily, per_minute, auth_per_address, ...).",
    ["kind"],
)
JOBS = Counter(
    "verity_jobs_total",
    "Job status transitions made by the job runner (running, retrying, succeeded, failed).",
    ["status"],
)
JOB_DURATION = Histogram(
    "verity_job_duration_seconds",
    "Time from a job's claim to its outcome (succeeded or failed), per finishing run.",
    buckets=JOB_BUCKETS,
)
WEBHOOK_DELIVERIES = Counter(
    "verity_webhook_deliveries_total",
    "Webhook delivery attempts, by outcome (delivered, retrying, failed).",
    ["outcome"],
)
STREAM_SESSIONS = Counter("verity_stream_sessions_total", "Live stream sessions started.")
STREAM_ACTIVE = Gauge(
    "verity_stream_active_sessions",
    "Live stream sessions open now.",
    # Summed over the live processes only: a dead worker's sessions are closed.
    multiprocess_mode="livesum",
)
STREAM_FRAMES = Counter(
    "verity_stream_frames_total",
    "Live stream frames, by outcome (analysed, dropped, rejected).",
    ["outcome"],
)


def _one_of(value: str, allowed: frozenset[str], what: str) -> str:
    # A label value outside its fixed set is a bug at the call site; refusing it keeps the
    # series bounded instead of silently adding one.
    if value not in allowed:
        raise ValueError(f"{what} must be one of {sorted(allowed)}, not {value!r}")
    return value


# --- the seams ----------------------------------------------------------------------------------
def request_answered(
    route: str, method: str, status: int, duration_s: float, error_code: str | None, quota_kind: str | None
) -> None:
    """One HTTP request, once answered (``api.middleware.MetricsMiddleware``)."""
    method = method if method in METHODS else OTHER_METHOD
    REQUEST_DURATION.labels(route=route, method=method, status=str(status)).observe(max(0.0, duration_s))
    if 400 <= status < 500 and error_code in MEDIA_REJECTION_CODES:
        MEDIA_REJECTIONS.labels(code=error_code).inc()
    if status == 429:
        QUOTA_REJECTIONS.labels(kind=quota_kind if quota_kind in QUOTA_KINDS else "other").inc()


def detection_answered(result: dict[str, Any]) -> None:
    """One detection result handed to its caller (an inline answer or a job's result)."""
    DETECTIONS.labels(
        modality=str(result["modality"]), verdict=str(result["verdict"]), model=str(result["model"]["id"])
    ).inc()


def job_status(status: str, duration_s: float | None = None) -> None:
    """A transition the job runner made; ``duration_s`` (claim to outcome) with a finishing run."""
    JOBS.labels(status=_one_of(status, JOB_STATUSES, "a job status")).inc()
    if duration_s is not None:
        JOB_DURATION.observe(max(0.0, duration_s))


def webhook_delivery(outcome: str) -> None:
    """The outcome of one webhook delivery attempt."""
    WEBHOOK_DELIVERIES.labels(outcome=_one_of(outcome, WEBHOOK_OUTCOMES, "a delivery outcome")).inc()


def stream_session_started() -> None:
    STREAM_SESSIONS.inc()
    STREAM_ACTIVE.inc()


def stream_session_ended() -> None:
    STREAM_ACTIVE.dec()


@contextlib.contextmanager
def stream_session() -> Iterator[None]:
    """``with metrics.stream_session():`` around a session: started, then ended however it ends."""
    stream_session_started()
    try:
        yield
    finally:
        stream_session_ended()


def stream_frame(outcome: str) -> None:
    """One frame of a live stream: ``analysed``, ``dropped`` (busy or over the frame rate) or
    ``rejected`` (a bad frame, or one the quota refused)."""
    STREAM_FRAMES.labels(outcome=_one_of(outcome, STREAM_FRAME_OUTCOMES, "a frame outcome")).inc()


# --- exposition ---------------------------------------------------------------------------------
def exposition() -> bytes:
    """This process's series (or, under a multiprocess folder, every process's): what the
    in-process app's ``/metrics`` answers. ``bentoml serve`` answers with BentoML's own route."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


# BentoML's own paths of the API service (not routes of Verity's app): kept as they are.
BENTOML_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/schema.json", "/docs.json"})


def bound_bentoml_endpoints(text: str, service_name: str, template: Callable[[str], str]) -> str:
    """BentoML's request series label the API service's requests with the raw path
    (``endpoint="/v1/jobs/job_01..."``): one series per job, key or user id, and one per path
    anyone cares to send. This rewrites those labels of ``service_name``'s series to route
    templates (``template``) and sums the series that then coincide (right for every BentoML
    series with an endpoint label: counters, histograms, summaries and ``livesum`` gauges), so a
    scrape shows bounded labels and no ids. The model services' endpoints (their fixed API
    names) stay as they are. (BentoML still keeps one entry per raw path in its files until the
    server restarts.)"""
    registry = CollectorRegistry(auto_describe=False)
    families = list(text_string_to_metric_families(text))
    for family in families:
        merged: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
        for sample in family.samples:
            labels = dict(sample.labels)
            endpoint = labels.get("endpoint")
            if endpoint is not None and labels.get("runner_name") == service_name:
                labels["endpoint"] = endpoint if endpoint in BENTOML_PATHS else template(endpoint)
            key = (sample.name, tuple(sorted(labels.items())))
            if key in merged:
                merged[key] = merged[key]._replace(value=merged[key].value + sample.value)
            else:
                merged[key] = sample._replace(labels=labels)
        family.samples = list(merged.values())
    registry.register(_Families(families))
    return generate_latest(registry).decode("utf-8")


class _Families:
    """A collector that yields families already collected (for ``generate_latest``)."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> list[Any]:
        return self.families
