"""Uploads, jobs and webhooks through the HTTP API with the embedded default backends: local
blobs (the signed form posted to the service itself), the SQLite store and the in-process
workers, exactly as the README's curl walk-through does it."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from detect.results import DetectionResult
from provenance.signing import public_keys, verify
from tests.conftest import assert_error, early_in_a_clock_minute
from tests.media_factory import jpeg_bytes
from tests.receiver import Receiver

pytestmark = pytest.mark.http

JOB_TIMEOUT_S = 60


def new_upload(api, data: bytes, content_type: str = "image/jpeg", **extra) -> dict:
    response = api.post(
        "/v1/uploads",
        json={"filename": "../../etc/passwd", "content_type": content_type, "size": len(data), **extra},
    )
    assert response.status_code == 201, response.text
    return response.json()


def send_form(client, form: dict, data: bytes, content_type: str = "image/jpeg", fields: dict | None = None):
    return client.post(
        form["url"],
        data=fields if fields is not None else form["fields"],
        files={"file": ("x", data, content_type)},
    )


def uploaded(api, client, data: bytes, content_type: str = "image/jpeg", **extra) -> str:
    form = new_upload(api, data, content_type, **extra)
    response = send_form(client, form, data, content_type)
    assert response.status_code == 204, response.text
    return form["upload_id"]


def wait_for(api, job_id: str, statuses: tuple[str, ...] = ("succeeded", "failed", "canceled")) -> dict:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['status']} after {JOB_TIMEOUT_S} s")


def eventually(check, timeout_s: float = 10.0) -> None:
    """The worker finishes a job's record first and then releases its media and settles its
    cost: what follows a "succeeded" is checked until it holds (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout_s} s: {check.__doc__ or check}")
        time.sleep(0.05)


def blob_files(state_dir: Path) -> list[Path]:
    return [p for p in (state_dir / "blobs").rglob("*") if p.is_file()]


def test_upload_then_job_gives_the_result_and_deletes_the_media(api, client, state_dir):
    data = jpeg_bytes(seed=3)
    form = new_upload(api, data)
    assert form["method"] == "POST" and form["url"].endswith("/v1/uploads/local")
    assert form["max_bytes"] == len(data) and form["expires_at"].endswith("Z")
    key = form["fields"]["key"]
    assert key == f"uploads/{api.account.user_id}/{form['upload_id']}"  # the server's key, not the name
    assert send_form(client, form, data).status_code == 204
    assert (state_dir / "blobs" / key).read_bytes() == data

    submitted = api.post("/v1/jobs", json={"upload_id": form["upload_id"], "modality": "image"})
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert job["status"] in ("queued", "running") and submitted.headers["location"] == f"/v1/jobs/{job['id']}"
    done = wait_for(api, job["id"])
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1 and done["progress"] == 1.0 and done["error"] is None
    result = DetectionResult.model_validate(done["result"]).model_dump()
    assert result["modality"] == "image"
    assert any(w["code"] == "dev_weights" for w in done["result"]["warnings"])
    eventually(lambda: not (state_dir / "blobs" / key).exists())  # deleted after its job
    assert api.get(f"/v1/history/{done['result']['id']}").status_code == 200
    # Signed where it was finished, by the key the service publishes.
    assert verify(done["result"], public_keys(client.get("/.well-known/jwks.json").json()))
    listed = api.get("/v1/jobs").json()["items"]
    assert listed[0]["id"] == job["id"] and "result" not in listed[0]


def test_kept_uploads_survive_their_job(api, client, state_dir):
    data = jpeg_bytes(seed=4)
    upload_id = uploaded(api, client, data, keep=True)
    job = api.post("/v1/jobs", json={"upload_id": upload_id, "modality": "image"}).json()
    assert wait_for(api, job["id"])["status"] == "succeeded"
    assert any(p.name == upload_id for p in blob_files(state_dir))
    again = api.post("/v1/jobs", json={"upload_id": upload_id, "modality": "image"})
    assert_error(again, 409, "upload_in_use")  # one job per upload


def test_upload_requests_are_checked(api):
    assert_error(api.post("/v1/uploads", json={"filename": "a", "content_type": "text/html", "size": 5}), 422)
    big = api.post(
        "/v1/uploads", json={"filename": "a", "content_type": "video/mp4", "size": 501 * 1024 * 1024}
    )
    assert_error(big, 413, "upload_too_large")
    assert_error(api.post("/v1/uploads", json={"filename": "a", "content_type": "video/mp4", "size": 0}), 422)
    anonymous = api.client.post("/v1/uploads", json={"filename": "a", "content_type": "video/mp4", "size": 5})
    assert_error(anonymous, 401)


def _tampered_policy(policy: str, **changes) -> str:
    document = json.loads(base64.b64decode(policy))
    document["conditions"][2][2] = changes.get("max_bytes", document["conditions"][2][2])
    return base64.b64encode(json.dumps(document).encode()).decode()


def test_local_form_enforces_its_policy_before_keeping_anything(api, client, state_dir):
    data = jpeg_bytes(seed=5)
    form = new_upload(api, data)
    fields = form["fields"]
    before = set(blob_files(state_dir))
    wrong_type = {**fields, "Content-Type": "video/mp4"}
    assert_error(send_form(client, form, data, fields=wrong_type), 403, "upload_policy_violation")
    other_key = {**fields, "key": fields["key"][:-1] + "X"}
    assert_error(send_form(client, form, data, fields=other_key), 403, "upload_policy_violation")
    bigger = {**fields, "policy": _tampered_policy(fields["policy"], max_bytes=10**9)}
    assert_error(send_form(client, form, data, fields=bigger), 403, "upload_signature_invalid")
    unsigned = {k: v for k, v in fields.items() if k != "x-verity-signature"}
    assert_error(send_form(client, form, data, fields=unsigned), 403, "upload_signature_invalid")
    assert_error(send_form(client, form, data + b"x"), 413, "upload_too_large")  # over the declared size
    assert_error(client.post(form["url"], data=fields), 400, "invalid_upload_form")  # no file
    assert set(blob_files(state_dir)) == before  # nothing half-written or unverified was kept
    not_yet = api.post("/v1/jobs", json={"upload_id": form["upload_id"], "modality": "image"})
    assert_error(not_yet, 409, "upload_incomplete")
    assert send_form(client, form, data).status_code == 204  # the honest form still works


def test_an_expired_form_is_refused(api, client, service_module):
    from blobs.local import LocalBlobs

    data = jpeg_bytes(seed=6)
    form = new_upload(api, data)
    blobs: LocalBlobs = service_module.app.state.jobs.blobs
    expired = blobs.upload_form(
        form["fields"]["key"],
        content_type="image/jpeg",
        max_bytes=len(data),
        expires_at=time.time() - 1,
        base_url="x",
    )
    assert_error(send_form(client, form, data, fields=expired.fields), 403, "upload_expired")


def test_jobs_and_uploads_are_private(api, client, signup):
    upload_id = uploaded(api, client, jpeg_bytes(seed=7))
    job = api.post("/v1/jobs", json={"upload_id": upload_id, "modality": "image"}).json()
    other = signup()
    from tests.conftest import Caller

    stranger = Caller(client, other.headers, other)
    assert_error(stranger.get(f"/v1/jobs/{job['id']}"), 404, "job_not_found")
    assert_error(stranger.delete(f"/v1/jobs/{job['id']}"), 404, "job_not_found")
    assert_error(stranger.post("/v1/jobs", json={"upload_id": upload_id, "modality": "image"}), 404)
    assert stranger.get("/v1/jobs").json()["items"] == []


def test_idempotency_key(api, client):
    upload_id = uploaded(api, client, jpeg_bytes(seed=8))
    body = {"upload_id": upload_id, "modality": "image"}
    headers = {"Idempotency-Key": "7d1c-abc"}
    first = api.post("/v1/jobs", json=body, headers=headers)
    wait_for(api, first.json()["id"])
    spent = api.get("/v1/usage").json()["units_today"]
    again = api.post("/v1/jobs", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert api.get("/v1/usage").json()["units_today"] == spent  # a replay does no new work: free
    changed = api.post("/v1/jobs", json={**body, "options": {"explain": True}}, headers=headers)
    assert_error(changed, 409, "idempotency_key_reused")


def test_concurrent_submissions_with_one_key_make_one_job(api, client):
    """As many at once as the jobs per-minute limit (10) lets through; the store-level contract
    suite races 20."""
    upload_id = uploaded(api, client, jpeg_bytes(seed=9))
    body = {"upload_id": upload_id, "modality": "image"}

    def submit(_: int):
        return api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "burst-1"})

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(submit, range(10)))
    assert {a.status_code for a in answers} == {202}, [a.text for a in answers if a.status_code != 202]
    assert len({a.json()["id"] for a in answers}) == 1


def test_bad_job_requests(api, client):
    upload_id = uploaded(api, client, jpeg_bytes(seed=10))
    assert_error(
        api.post("/v1/jobs", json={"upload_id": "upl_nope", "modality": "image"}), 404, "upload_not_found"
    )
    unknown_option = {"upload_id": upload_id, "modality": "image", "options": {"fps": 1}}
    assert_error(api.post("/v1/jobs", json=unknown_option), 422, "invalid_input")
    bad_fps = {"upload_id": upload_id, "modality": "video", "options": {"fps": 0}}
    assert_error(api.post("/v1/jobs", json=bad_fps), 422, "invalid_input")
    unknown_model = {"upload_id": upload_id, "modality": "image", "options": {"model": "nope"}}
    assert_error(api.post("/v1/jobs", json=unknown_model), 404, "model_not_found")
    no_secret = {"upload_id": upload_id, "modality": "image", "webhook_url": "https://example.com/hook"}
    assert_error(api.post("/v1/jobs", json=no_secret), 409, "webhook_secret_missing")
    assert_error(
        api.post(
            "/v1/jobs", json={"upload_id": upload_id, "modality": "image"}, headers={"Idempotency-Key": ""}
        ),
        422,
    )
    assert_error(api.get("/v1/jobs/job_nope"), 404, "job_not_found")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.2:8080/hook",
        "http://[::1]/hook",
        "http://2130706434/hook",  # 127.0.0.2 in decimal (127.0.0.1 is allow-listed for the tests)
        "http://0x7f000002/hook",
        "http://metadata.google.internal/computeMetadata/v1/",
        "https://user:pw@example.com/hook",
        "ftp://example.com/hook",
    ],
)
def test_webhook_targets_are_refused(api, client, url):
    api.post("/v1/webhook-secret")
    upload_id = uploaded(api, client, jpeg_bytes(seed=11))
    answer = api.post("/v1/jobs", json={"upload_id": upload_id, "modality": "image", "webhook_url": url})
    assert answer.status_code == 422 and answer.json()["error"]["code"] in (
        "invalid_webhook_url",
        "webhook_target_refused",
    )


def test_hostile_files_fail_their_job_and_the_worker_goes_on(api, client):
    random_bytes = bytes(range(256)) * 64
    upload_id = uploaded(api, client, random_bytes, content_type="video/mp4")
    job = api.post("/v1/jobs", json={"upload_id": upload_id, "modality": "video"}).json()
    failed = wait_for(api, job["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "modality_mismatch", failed
    assert failed["attempts"] == 1  # bad media is not retried
    good = api.post(
        "/v1/jobs", json={"upload_id": uploaded(api, client, jpeg_bytes(seed=12)), "modality": "image"}
    )
    assert wait_for(api, good.json()["id"])["status"] == "succeeded"


def test_webhook_is_signed_retried_with_one_id_and_recorded(api, client):
    secret = api.post("/v1/webhook-secret")
    assert secret.status_code == 201 and secret.json()["secret"].startswith("whsec_")
    rotated = api.post("/v1/webhook-secret").json()["secret"]  # the latest one signs
    with Receiver(statuses=[500, 503]) as receiver:
        upload_id = uploaded(api, client, jpeg_bytes(seed=13))
        body = {"upload_id": upload_id, "modality": "image", "webhook_url": receiver.url}
        job = api.post("/v1/jobs", json=body).json()
        assert wait_for(api, job["id"])["status"] == "succeeded"
        deadline = time.monotonic() + 30
        while len(receiver.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert len(receiver.received) == 3
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert len(ids) == 1
    last = receiver.received[-1]
    payload = Webhook(rotated).verify(last.body, last.headers)
    assert payload["type"] == "job.succeeded" and payload["data"]["id"] == job["id"]
    assert payload["data"]["result"]["modality"] == "image"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        shown = api.get(f"/v1/jobs/{job['id']}").json()["webhook"]["deliveries"][0]
        if shown["status"] == "delivered":
            break
        time.sleep(0.1)
    assert shown["status"] == "delivered" and [a["status"] for a in shown["attempts"]] == [500, 503, 200]


def test_cancel_a_finished_job_answers_it_unchanged(api, client):
    job = api.post(
        "/v1/jobs", json={"upload_id": uploaded(api, client, jpeg_bytes(seed=14)), "modality": "image"}
    ).json()
    wait_for(api, job["id"])
    assert api.delete(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"


def test_deleting_the_account_removes_its_uploads(client, signup, state_dir):
    from tests.conftest import Caller

    account = signup()
    caller = Caller(client, account.headers, account)
    form = new_upload(caller, jpeg_bytes(seed=15), keep=True)
    assert send_form(client, form, jpeg_bytes(seed=15)).status_code == 204
    path = state_dir / "blobs" / form["fields"]["key"]
    assert path.exists()
    assert caller.delete("/v1/auth/me").status_code == 204
    assert not path.exists()


def test_a_form_cannot_replace_the_media_of_a_submitted_job(api, client):
    data = jpeg_bytes(seed=16)
    form = new_upload(api, data, keep=True)  # kept: still there whether or not its job is done
    assert send_form(client, form, data).status_code == 204
    assert api.post("/v1/jobs", json={"upload_id": form["upload_id"], "modality": "image"}).status_code == 202
    assert_error(send_form(client, form, jpeg_bytes(seed=17)[: len(data)]), 409, "upload_in_use")


def zip_bomb() -> bytes:
    """A zip whose one member inflates 1000x (what a ".mp4" from an attacker may really be)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("movie.mp4", b"\0" * 20_000_000)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "expected"),
    [("zip bomb", "modality_mismatch"), ("truncated mp4", "corrupt_video"), ("header only", None)],
)
def test_hostile_videos_fail_their_job(api, client, name, expected):
    from tests.video_factory import lavfi_video

    clip = lavfi_video(2.0)
    data = {"zip bomb": zip_bomb(), "truncated mp4": clip[: len(clip) // 3], "header only": clip[:64]}[name]
    upload_id = uploaded(api, client, data, content_type="video/mp4")
    job = api.post("/v1/jobs", json={"upload_id": upload_id, "modality": "video"}).json()
    failed = wait_for(api, job["id"])
    assert failed["status"] == "failed" and failed["attempts"] == 1, failed
    assert failed["error"]["status"] in (413, 415, 422), failed["error"]
    if expected:
        assert failed["error"]["code"] in (expected, "no_frames", "decode_failed", "corrupt_video"), failed[
            "error"
        ]


def test_jobs_count_against_the_jobs_per_minute_limit(api):
    early_in_a_clock_minute(15)
    codes = [api.post("/v1/jobs", json={"upload_id": "upl_nope", "modality": "image"}) for _ in range(11)]
    assert [c.status_code for c in codes[:10]] == [404] * 10
    limited = assert_error(codes[10], 429, "rate_limited")
    assert "jobs" in limited["message"] and codes[10].headers["retry-after"]
    assert api.get("/v1/usage").json()["units_today"] == 10


def test_list_jobs_pages_newest_first(api, client):
    made = [
        api.post(
            "/v1/jobs", json={"upload_id": uploaded(api, client, jpeg_bytes(seed=s)), "modality": "image"}
        ).json()
        for s in (40, 41, 42)
    ]
    first = api.get("/v1/jobs?limit=2").json()
    rest = api.get(f"/v1/jobs?limit=2&cursor={first['next_cursor']}").json()
    assert [j["id"] for j in first["items"] + rest["items"]] == [j["id"] for j in reversed(made)]
    assert rest["next_cursor"] is None


def test_cancel_a_running_job(api, client, state_dir):
    from tests.video_factory import long_clip

    secret = api.post("/v1/webhook-secret").json()["secret"]
    form = new_upload(api, long_clip(), "video/mp4")
    assert send_form(client, form, long_clip(), "video/mp4").status_code == 204
    with Receiver() as receiver:
        body = {
            "upload_id": form["upload_id"],
            "modality": "video",
            "options": {"fps": 2},
            "webhook_url": receiver.url,
        }
        job = api.post("/v1/jobs", json=body).json()
        wait_for(api, job["id"], ("running", "succeeded", "failed"))
        canceled = api.delete(f"/v1/jobs/{job['id']}")
        assert canceled.status_code == 200 and canceled.json()["status"] == "canceled", canceled.text
        assert not (state_dir / "blobs" / form["fields"]["key"]).exists()
        # The service's one worker takes the next job only once it is done with the canceled one.
        next_upload = uploaded(api, client, jpeg_bytes(seed=43))
        later = api.post("/v1/jobs", json={"upload_id": next_upload, "modality": "image"})
        assert wait_for(api, later.json()["id"])["status"] == "succeeded"
    after = api.get(f"/v1/jobs/{job['id']}").json()
    assert after["status"] == "canceled" and after["result"] is None
    assert all(item["modality"] != "video" for item in api.get("/v1/history").json()["items"])
    events = [Webhook(secret).verify(r.body, r.headers) for r in receiver.received]
    assert [e["type"] for e in events] == ["job.canceled"] and events[0]["data"]["id"] == job["id"]


# --- detection routes on an upload (the request waits) ----------------------------------------------


def test_detect_image_on_an_upload(api, client, state_dir):
    data = jpeg_bytes(seed=50)
    form = new_upload(api, data)
    assert send_form(client, form, data).status_code == 204
    answer = api.post("/v1/detect/image", json={"upload_id": form["upload_id"]})
    assert answer.status_code == 200, answer.text
    inline = api.post("/v1/detect/image", files={"image": ("a.jpg", data, "image/jpeg")}).json()
    assert answer.json()["fake_probability"] == inline["fake_probability"]  # the same pipeline
    assert not (state_dir / "blobs" / form["fields"]["key"]).exists()  # used once, then deleted
    again = api.post("/v1/detect/image", json={"upload_id": form["upload_id"]})
    assert_error(again, 404, "upload_not_found")


def test_detect_video_and_audio_on_uploads(api, client):
    from tests.audio_factory import encode as encode_wav
    from tests.audio_factory import speech_like
    from tests.face_factory import moving_face_frames
    from tests.video_factory import write_opencv

    clip = write_opencv(moving_face_frames(30), 10)
    upload_id = uploaded(api, client, clip, content_type="video/mp4")
    video = api.post("/v1/detect/video?fps=1", json={"upload_id": upload_id})
    assert video.status_code == 200, video.text
    inline = api.post("/v1/detect/video?fps=1", files={"video": ("c.mp4", clip, "video/mp4")}).json()
    assert video.json()["media"]["frames_analyzed"] == inline["media"]["frames_analyzed"] == 3
    assert video.json()["fake_probability"] == pytest.approx(inline["fake_probability"], abs=1e-5)

    wav = encode_wav(speech_like(3.0), 16_000, "wav")
    audio = api.post(
        "/v1/detect/audio", json={"upload_id": uploaded(api, client, wav, content_type="audio/wav")}
    )
    assert audio.status_code == 200, audio.text
    assert audio.json()["modality"] == "audio" and audio.json()["segments"]


def test_detect_on_an_upload_keeps_its_checks(api, client, signup):
    from tests.conftest import Caller

    image_upload = uploaded(api, client, jpeg_bytes(seed=51), keep=True)
    wrong = api.post("/v1/detect/video", json={"upload_id": image_upload})
    assert_error(wrong, 415)  # by its bytes: not a video
    kept = api.post("/v1/detect/image", json={"upload_id": image_upload})
    assert kept.status_code == 200  # a kept upload is released for its next use
    stranger = Caller(client, signup().headers)
    assert_error(stranger.post("/v1/detect/image", json={"upload_id": image_upload}), 404, "upload_not_found")
    never_sent = new_upload(api, jpeg_bytes(seed=52))
    assert_error(
        api.post("/v1/detect/image", json={"upload_id": never_sent["upload_id"]}), 409, "upload_incomplete"
    )
    assert_error(api.post("/v1/detect/image", json={"upload_id": 7}), 422, "invalid_upload_id")
    busy = uploaded(api, client, jpeg_bytes(seed=53))
    assert api.post("/v1/jobs", json={"upload_id": busy, "modality": "image"}).status_code == 202
    assert api.post("/v1/detect/image", json={"upload_id": busy}).status_code in (404, 409)  # its job's


def test_a_job_is_charged_its_cost_when_it_finishes(api, client):
    """Submission pays one unit; a 61 s audio job costs two (one per started minute), paid
    when it succeeds, and shown in its result."""
    from tests.audio_factory import encode as encode_audio
    from tests.audio_factory import speech_like

    upload_id = uploaded(
        api, client, encode_audio(speech_like(61.0), 16_000, "wav"), content_type="audio/wav"
    )
    job = api.post("/v1/jobs", json={"upload_id": upload_id, "modality": "audio"}).json()
    done = wait_for(api, job["id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["cost_units"] == 2
    eventually(lambda: api.get("/v1/usage").json()["units_today"] == 2)


def test_a_job_that_fails_on_the_servers_side_costs_nothing(api, client, service_module, monkeypatch):
    """The image model service is down (a real BentoML client for a port where nothing listens)
    and a job gets one run: it fails with worker_error, and the unit its submission paid comes
    back."""
    import socket

    from _bentoml_impl.client import RemoteProxy

    from detect.engine import ServedModel
    from detect.model_clients import BentoModelClient

    engine = service_module.app.state.engine
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = RemoteProxy(f"http://127.0.0.1:{port}", service=service_module.ImageDetector).as_service()
    model_id = engine.default_image_model
    down = ServedModel(stored=engine.image_models[model_id].stored, client=BentoModelClient(model_id, dead))
    monkeypatch.setitem(engine.image_models, model_id, down)
    monkeypatch.setattr(service_module.app.state.jobs.settings, "job_max_attempts", 1)

    upload_id = uploaded(api, client, jpeg_bytes(seed=11))
    job = api.post("/v1/jobs", json={"upload_id": upload_id, "modality": "image"}).json()
    failed = wait_for(api, job["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "worker_error", failed
    eventually(lambda: api.get("/v1/usage").json()["units_today"] == 0)
