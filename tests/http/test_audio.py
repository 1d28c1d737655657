"""POST /v1/detect/audio in-process: every format, the timeline, bad input as 4xx JSON."""

from __future__ import annotations

import base64

import pytest

from tests.audio_factory import encode, encode_ffmpeg, noise, sine, speech_like, stereo, wav_header
from tests.conftest import assert_error

pytestmark = pytest.mark.http


def post_audio(api, data: bytes, *, name: str = "call.wav", params: str = "", field: str = "audio"):
    return api.post(f"/v1/detect/audio{params}", files={field: (name, data, "application/octet-stream")})


def assert_audio_result(body: dict, duration_s: float) -> None:
    assert body["id"].startswith("det_") and body["modality"] == "audio"
    assert body["verdict"] in {"FAKE", "REAL", "UNCERTAIN"}
    assert 0.0 <= body["fake_probability"] <= 1.0
    assert body["model"]["id"] == "wav2vec2-audio" and body["model"]["weights"] == "dev"
    assert any(w["code"] == "dev_weights" for w in body["warnings"])
    media = body["media"]
    assert media["sample_rate"] == 16_000
    assert media["duration_s"] == pytest.approx(duration_s, abs=0.1)
    segments = body["segments"]
    assert len(segments) == media["windows"] >= 1
    # The timeline covers the clip: starts at 0, ends at its duration, ordered, window-long.
    assert segments[0]["start_s"] == 0.0
    assert segments[-1]["end_s"] == pytest.approx(media["duration_s"], abs=0.01)
    assert [s["start_s"] for s in segments] == sorted(s["start_s"] for s in segments)
    probs = [s["fake_probability"] for s in segments]
    assert body["fake_probability"] == pytest.approx(sum(probs) / len(probs), abs=1e-5)
    assert body["aggregation"]["method"] == "mean"
    assert body["aggregation"]["max"] == pytest.approx(max(probs), abs=1e-6)
    assert set(body["timing_ms"]) >= {"decode", "inference", "total"}


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg-vorbis", "ogg-opus", "mp3"])
def test_detect_audio_formats(api, fmt):
    response = post_audio(api, encode(speech_like(9.0, 48_000), 48_000, fmt), name=f"a.{fmt}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert_audio_result(body, 9.0)
    assert body["media"]["original_sample_rate"] == 48_000
    # 4 s windows, 2 s hop over 9 s: 0-4, 2-6, 4-8, and the last aligned to the end (5-9).
    bounds = [v for s in body["segments"] for v in (s["start_s"], s["end_s"])]
    assert bounds == pytest.approx([0, 4, 2, 6, 4, 8, 5, 9], abs=0.05)


def test_detect_m4a_through_ffmpeg(api):
    response = post_audio(api, encode_ffmpeg(speech_like(5.0, 44_100), 44_100, "m4a"), name="call.m4a")
    assert response.status_code == 200, response.text
    assert_audio_result(response.json(), 5.0)
    assert response.json()["media"]["format"] in {"m4a", "mp4"}


def test_hop_setting_changes_the_windows(api, service_module, monkeypatch):
    # VERITY_AUDIO_HOP_S=4 (no overlap) over 9 s: 0-4, 4-8, and the last aligned to the end (5-9).
    monkeypatch.setattr(service_module.app.state.engine.settings, "audio_hop_s", 4.0)
    body = post_audio(api, encode(speech_like(9.0), 16_000)).json()
    assert body["media"]["hop_s"] == 4.0
    bounds = [v for s in body["segments"] for v in (s["start_s"], s["end_s"])]
    assert bounds == pytest.approx([0, 4, 4, 8, 5, 9], abs=0.05)


def test_hop_longer_than_the_window_is_refused_at_start():
    from config.settings import Settings
    from detect.engine import audio_hop_s
    from models.catalog import get_entry

    spec = get_entry("wav2vec2-audio").audio
    assert audio_hop_s(Settings(), spec) == spec.hop_s
    with pytest.raises(ValueError, match="longer than"):
        audio_hop_s(Settings(audio_hop_s=spec.window_s + 1), spec)


def test_short_clip_runs_alone_without_padding(api):
    response = post_audio(api, encode(sine(300, 1.5), 16_000))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["media"]["windows"] == 1
    assert body["segments"][0]["end_s"] == pytest.approx(1.5, abs=0.01)


def test_same_audio_same_score_and_history(api):
    data = encode(speech_like(6.0), 16_000)
    first = post_audio(api, data).json()
    second = api.post(
        "/v1/detect/audio", json={"audio": "data:audio/wav;base64," + base64.b64encode(data).decode()}
    ).json()
    assert first["fake_probability"] == pytest.approx(second["fake_probability"], abs=1e-6)
    stored = api.get(f"/v1/history/{first['id']}")
    assert stored.status_code == 200 and stored.json()["modality"] == "audio"


def test_stereo_cancelling_mixes_to_silence_warning(api):
    tone = sine(440, 3.0)
    response = post_audio(api, encode(stereo(tone, -tone), 16_000))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["media"]["channels"] == 2
    assert any(w["code"] == "silence" for w in body["warnings"])


def test_audio_requires_auth(client):
    response = client.post("/v1/detect/audio", files={"audio": ("a.wav", encode(noise(1.0), 16_000))})
    assert_error(response, 401, "unauthenticated")


@pytest.mark.parametrize(
    ("make", "status"),
    [
        (lambda: b"", 422),
        (lambda: b"hello, this is text\n" * 20, 415),
        (lambda: encode(sine(440, 0.1), 16_000), 422),  # shorter than the model's minimum
        (lambda: encode(speech_like(3.0), 16_000, "flac")[:300], 422),  # truncated
        (lambda: wav_header(rate=7), 422),  # absurd sample rate
        (lambda: wav_header(rate=16_000, data_size=16_000 * 2 * 36_000), 413),  # claims 10 hours
    ],
    ids=["empty", "text", "too-short", "truncated-flac", "absurd-rate", "ten-hours"],
)
def test_bad_audio_is_4xx_json(api, make, status):
    assert_error(post_audio(api, make()), status)
    assert api.get("/v1/usage").status_code == 200  # still answering


def test_audio_body_over_cap_is_413(api):
    big = b"RIFF" + b"\0" * (28 * 1024 * 1024)
    assert_error(post_audio(api, big), 413)
