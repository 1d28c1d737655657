"""POST /v1/detect/text in-process: JSON and file bodies, windows over character ranges, too-short
texts, and bad input as 4xx JSON."""

from __future__ import annotations

import itertools
import json

import pytest

from detect.results import DetectionResult
from tests.conftest import assert_error
from tests.media_factory import jpeg_bytes

pytestmark = pytest.mark.http

PARAGRAPH = (
    "The committee met on Tuesday to review the budget for the coming year. After a long debate "
    "about the cost of the new library, the members agreed to postpone the vote until March, "
    "when the final figures from the county will be known. "
)


def detect(api, **kwargs):
    return api.post("/v1/detect/text", **kwargs)


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    DetectionResult.model_validate(body)
    return body


def test_a_json_text_gets_a_verdict_and_a_segment_over_its_characters(api) -> None:
    body = ok(detect(api, json={"text": PARAGRAPH}))
    assert body["modality"] == "text" and body["model"]["id"] == "roberta-openai-detector"
    assert body["verdict"] in ("FAKE", "REAL", "UNCERTAIN") and 0 <= body["fake_probability"] <= 1
    assert body["media"]["format"] == "text" and body["media"]["characters"] == len(PARAGRAPH)
    assert body["media"]["windows"] == 1 == len(body["segments"])
    segment = body["segments"][0]
    assert segment["start_char"] == 0 and segment["end_char"] == len(PARAGRAPH)
    assert segment["fake_probability"] == body["fake_probability"]
    assert "dev_weights" in [w["code"] for w in body["warnings"]]
    assert body["cost_units"] == 1 and body["signature"]["alg"] == "EdDSA"
    stored = api.get(f"/v1/history/{body['id']}").json()
    assert stored["modality"] == "text" and stored["segments"] == body["segments"]
    assert sum(api.get("/v1/stats").json()["per_modality"]["text"].values()) >= 1


def test_a_long_text_is_cut_into_overlapping_windows(api) -> None:
    text = PARAGRAPH * 40  # ~9,000 characters: several 512-token windows
    body = ok(detect(api, json={"text": text}))
    segments = body["segments"]
    assert body["media"]["windows"] == len(segments) >= 3
    assert segments[0]["start_char"] == 0 and segments[-1]["end_char"] == len(text)
    for before, after in itertools.pairwise(segments):
        assert before["start_char"] < after["start_char"] < before["end_char"]  # they overlap
    mean = sum(s["fake_probability"] for s in segments) / len(segments)
    assert body["fake_probability"] == pytest.approx(mean, abs=1e-5)
    assert body["aggregation"]["method"] == "mean" and body["aggregation"]["over"] == "windows"
    assert body["cost_units"] == 1


@pytest.mark.parametrize(("name", "fmt"), [("essay.txt", "text"), ("notes.md", "markdown")])
def test_a_text_file_goes_as_multipart(api, name: str, fmt: str) -> None:
    data = ("# Notes\n\n" + PARAGRAPH).encode("utf-8")
    body = ok(detect(api, files={"file": (name, data, "application/octet-stream")}))
    assert body["media"]["format"] == fmt and body["media"]["bytes"] == len(data)
    with_bom = ok(detect(api, files={"file": (name, b"\xef\xbb\xbf" + data, "text/plain")}))
    assert with_bom["media"]["characters"] == len(data.decode("utf-8"))


def test_a_raw_text_body_and_typed_special_tokens_are_plain_text(api) -> None:
    text = "<s> a user may type </s> and <pad> anywhere; they stay text. " + PARAGRAPH
    body = ok(
        detect(api, content=text.encode("utf-8"), headers={"content-type": "text/plain; charset=utf-8"})
    )
    assert body["media"]["characters"] == len(text)


def test_a_short_text_is_not_applicable_too_short(api) -> None:
    body = ok(detect(api, json={"text": "Hello there."}))
    assert body["verdict"] == "NOT_APPLICABLE" and body["fake_probability"] is None
    assert body["not_applicable"]["reason"] == "too_short" and "inference" not in body["timing_ms"]
    assert "too_short" in [w["code"] for w in body["warnings"]]


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        (
            {"files": {"file": ("a.txt", "café".encode("latin-1") + b" " * 40, "text/plain")}},
            415,
            "invalid_text_encoding",
        ),
        ({"files": {"file": ("a.txt", jpeg_bytes(64, 64), "text/plain")}}, 415, "not_text"),
        ({"files": {"file": ("a.txt", b"text with a NUL \x00 byte in it", "text/plain")}}, 415, "not_text"),
        ({"json": {"text": ""}}, 422, "empty_text"),
        ({"json": {"text": " \n\t "}}, 422, "empty_text"),
        ({"json": {"words": "hello"}}, 422, "missing_text"),
        ({"json": {"text": 42}}, 422, "missing_text"),
        ({"json": {"text": "x" * 50_001}}, 413, "text_too_long"),
        (
            {
                "content": b'{"text": "a lone surrogate \\ud800 here"}',
                "headers": {"content-type": "application/json"},
            },
            415,
            "invalid_text_encoding",
        ),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        (
            {"content": b"hello", "headers": {"content-type": "application/pdf"}},
            415,
            "unsupported_content_type",
        ),
        ({"files": {"other": ("a.txt", b"hello", "text/plain")}}, 422, "missing_file"),
    ],
)
def test_bad_text_is_a_clear_4xx(api, kwargs: dict, status: int, code: str) -> None:
    assert_error(detect(api, **kwargs), status, code)


def test_a_50_mb_text_is_refused_before_it_is_read(api) -> None:
    huge = b"a" * (50 * 1024 * 1024)
    response = detect(api, content=huge, headers={"content-type": "text/plain"})
    assert_error(response, 413)


def test_text_needs_credentials_and_names_unknown_models(client, api) -> None:
    assert_error(client.post("/v1/detect/text", json={"text": PARAGRAPH}), 401)
    assert_error(detect(api, json={"text": PARAGRAPH}, params={"model": "nope"}), 404, "model_not_found")
    assert_error(
        detect(api, json={"text": PARAGRAPH}, params={"operating_point": "high_recall"}),
        422,
        "operating_point_unavailable",
    )
    listed = {m["id"]: m for m in api.get("/v1/models").json()["models"]}
    assert listed["roberta-openai-detector"]["served"] and listed["roberta-openai-detector"]["default"]
    assert listed["roberta-openai-detector"]["modality"] == "text"


def test_the_json_body_is_checked_as_text_after_json_escapes(api) -> None:
    escaped = json.dumps({"text": "é" * 30 + " " + PARAGRAPH})  # \\u00e9 escapes: 6 bytes each on the wire
    body = ok(detect(api, content=escaped.encode(), headers={"content-type": "application/json"}))
    assert body["media"]["characters"] == 31 + len(PARAGRAPH)
