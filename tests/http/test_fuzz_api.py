"""Property-based fuzzing through the whole app in-process (issue 12, reliability suite): JSON bodies of
any shape and depth to the JSON routes, multipart bodies built part by part (boundaries, headers,
names) to the detection route and the local upload form, random and mutated media as images,
audio and video, inline and by upload id. Every answer is a result or a 4xx in the one error shape
with a code the README's error table lists; never a 500. Each example acts as a fresh user, so
per-minute and daily quotas (429s) do not end the exploration early. Bounded by the "ci"
hypothesis profile (tests/conftest.py)."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from tests.conftest import Caller, assert_error
from tests.fuzz import (
    MAGIC,
    after_magic,
    assert_answer,
    budget,
    dumps,
    ffmpeg_audio,
    images,
    json_bodies,
    json_objects,
    json_text,
    json_values,
    multipart_forms,
    mutated,
    soundfile_audio,
    videos,
)

# Hostile TIFF and EXIF bytes make Pillow warn while it decodes them: expected here, not news.
pytestmark = [pytest.mark.http, pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")]

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def fresh(client, new_user) -> Callable[[], Caller]:
    """A caller acting as a new user (no bcrypt: ``new_user`` reuses one hash)."""

    def make() -> Caller:
        account = new_user(daily_limit=1_000_000)
        return Caller(client, account.headers, account)

    return make


# --- JSON routes -------------------------------------------------------------------------------------

emails = st.emails() | json_text | st.sampled_from(["a@b.co", " A@B.CO ", "a@b", "@", "a" * 300 + "@x.io"])
passwords = json_text | st.sampled_from(["correct horse battery staple", "short", "é" * 40, "x" * 73])
ids = st.sampled_from(["upl_01J0000000000000000000000", "", "x" * 65, "../etc/passwd"]) | json_text

ROUTES: dict[str, tuple[bool, st.SearchStrategy]] = {
    # path: (needs credentials, objects near its schema)
    "/v1/auth/signup": (False, json_objects({"email": emails, "password": passwords, "invite": json_text})),
    "/v1/auth/login": (False, json_objects({"email": emails, "password": passwords})),
    "/v1/keys": (True, json_objects({"name": json_text})),
    "/v1/uploads": (
        True,
        json_objects(
            {
                "filename": json_text,
                "content_type": st.sampled_from(["image/png", "audio/wav", "video/mp4", " IMAGE/PNG"])
                | json_text,
                "size": st.integers(-1, 2**40),
                "keep": st.booleans(),
            }
        ),
    ),
    "/v1/jobs": (
        True,
        json_objects(
            {
                "upload_id": ids,
                "modality": st.sampled_from(["image", "audio", "video"]),
                "options": json_objects(
                    {
                        "model": st.sampled_from(["vit-dima806", "nope"]),
                        "fps": st.floats(),
                        "max_frames": st.integers(),
                        "strategy": st.sampled_from(["temporal", "frames"]),
                        "faces": st.sampled_from(["auto", "off"]),
                        "explain": st.booleans(),
                    }
                ),
                "webhook_url": st.sampled_from(["https://example.com/h", "http://127.0.0.1/", "ftp://x"])
                | json_text,
            }
        ),
    ),
    "/v1/detect/image": (
        True,
        json_objects(
            {"image": st.sampled_from(["data:image/png;base64,iVBORw0KGgo=", "data:,x"]), "upload_id": ids}
        ),
    ),
}


@budget(60)
@given(
    route=st.sampled_from(sorted(ROUTES)),
    data=st.data(),
    content_type=st.sampled_from(["application/json", "application/json", "text/plain", None]),
)
def test_json_routes_answer_any_body_with_a_result_or_a_4xx(fresh, client, route, data, content_type) -> None:
    authenticated, objects = ROUTES[route]
    # Two in three bodies are objects near the route's schema, so validation is passed now and
    # then and the handler itself runs; the rest are any JSON, odd documents or plain bytes.
    near = data.draw(st.integers(0, 2), label="near the schema") > 0
    body = data.draw(objects.map(dumps) if near else json_bodies, label="body")
    sender = fresh() if authenticated else client
    headers = {"content-type": content_type} if content_type else {}
    response = sender.post(route, content=body, headers=headers)
    assert_answer(response)


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"name": ' + b"1" * 5000 + b"}", b'{"name": "\xff"}'],
    ids=["nested-too-deep", "5000-digit-integer", "not-utf-8"],
)
@pytest.mark.parametrize("route", ["/v1/auth/login", "/v1/keys"])
def test_unparsable_json_is_invalid_json_on_every_route(client, auth_headers, route, body) -> None:
    """FastAPI's own body parsing (the account and job routes) answers as the detection routes
    do: ``python3 -c 'print("[" * 100000)' | curl -H 'content-type: application/json'
    --data-binary @- localhost:3000/v1/auth/login`` is 400 ``invalid_json`` (was ``bad_request``)."""
    response = client.post(route, content=body, headers={**auth_headers, **JSON})
    assert_error(response, 400, "invalid_json")


@budget(20)
@given(
    kind=st.sampled_from(["image", "audio", "video"]),
    upload_id=json_values | ids,
)
@example(kind="image", upload_id="\ud800")
@example(kind="audio", upload_id="a\x00b")
@example(kind="video", upload_id="upl_" + "0" * 60)
def test_any_upload_id_is_a_result_or_a_4xx(fresh, kind, upload_id) -> None:
    """``{"upload_id": ...}`` instead of the media: whatever the id, a 404, a 422 or a result."""
    assert_answer(fresh().post(f"/v1/detect/{kind}", content=dumps({"upload_id": upload_id}), headers=JSON))


# --- multipart -------------------------------------------------------------------------------------------

files = st.binary(max_size=200) | st.deferred(
    lambda: st.sampled_from(sorted(images())).flatmap(lambda k: mutated(images()[k]))
)


@budget(60)
@given(form=multipart_forms(["image", "file", "upload_id", "audio"], files))
def test_multipart_bodies_to_detection_are_a_result_or_a_4xx(fresh, form) -> None:
    content_type, body = form
    assert_answer(fresh().post("/v1/detect/image", content=body, headers={"content-type": content_type}))


@budget(60)
@given(data=st.data(), signed=st.booleans())
def test_local_upload_forms_are_stored_or_refused_with_a_4xx(fresh, client, data, signed) -> None:
    """The public, unauthenticated target of upload forms: any body, and well-signed forms whose
    fields, order and file vary."""
    caller = fresh()
    made = caller.post("/v1/uploads", json={"filename": "f", "content_type": "image/png", "size": 64})
    assert made.status_code == 201, made.text
    form = made.json()
    names = [*form["fields"], "file", "policy"]
    if signed:
        fields = {k: v for k, v in form["fields"].items() if data.draw(st.integers(0, 9), label=f"keep {k}")}
        fields.update(
            data.draw(
                st.dictionaries(st.sampled_from(names), st.text(max_size=20), max_size=1), label="extra"
            )
        )
        file = data.draw(st.binary(max_size=100), label="file")
        response = client.post(form["url"], data=fields, files={"file": ("f.png", file, "image/png")})
    else:
        content_type, body = data.draw(multipart_forms(names, st.binary(max_size=100)), label="form")
        response = client.post(form["url"], content=body, headers={"content-type": content_type})
    assert_answer(response)
    if response.status_code == 204:
        # What was stored is detectable by its id (a result, or a 4xx for bytes that are no image).
        assert_answer(caller.post("/v1/detect/image", json={"upload_id": form["upload_id"]}))


# --- media -----------------------------------------------------------------------------------------------


@st.composite
def sendings(draw: st.DrawFn, kind: str, media: st.SearchStrategy[bytes]) -> tuple[dict, bytes]:
    """``media`` sent one of the three ways a detection route takes it; returns (request kwargs, media)."""
    data = draw(media)
    how = draw(st.sampled_from(["multipart", "raw", "json"]))
    if how == "multipart":
        field = draw(st.sampled_from([kind, "file"]))
        return {"files": {field: ("upload.bin", data, "application/octet-stream")}}, data
    if how == "raw":
        return {
            "content": data,
            "headers": {"content-type": draw(st.sampled_from([f"{kind}/x", "application/octet-stream"]))},
        }, data
    url = f"data:{kind}/x;base64,{base64.b64encode(data).decode()}"
    return {"content": dumps({kind: url}), "headers": JSON}, data


def media_of(files: Callable[[], dict[str, bytes]], magic: list[str]) -> st.SearchStrategy[bytes]:
    """Valid files with one or two edits (often still decodable: the whole pipeline runs on
    them), random bytes behind magic bytes, or plain random bytes."""
    mutations = st.deferred(
        lambda: st.sampled_from(sorted(files())).flatmap(lambda k: mutated(files()[k], max_edits=2))
    )
    return (
        mutations | st.sampled_from(magic).flatmap(lambda k: after_magic(MAGIC[k])) | st.binary(max_size=64)
    )


IMAGE_MEDIA = media_of(images, ["jpeg", "png", "gif", "bmp", "tiff", "webp"])
AUDIO_MEDIA = media_of(
    lambda: {**soundfile_audio(), **ffmpeg_audio()}, ["wav", "flac", "ogg", "mp3", "m4a", "aac"]
)
VIDEO_MEDIA = media_of(videos, ["mp4", "mov", "avi", "webm", "matroska"])


@budget(50)
@given(sent=sendings("image", IMAGE_MEDIA))
def test_random_and_mutated_images_are_a_result_or_a_4xx(fresh, sent) -> None:
    kwargs, _ = sent
    assert_answer(fresh().post("/v1/detect/image", **kwargs))


@budget(25)
@given(sent=sendings("audio", AUDIO_MEDIA))
def test_random_and_mutated_audio_is_a_result_or_a_4xx(fresh, sent) -> None:
    kwargs, _ = sent
    assert_answer(fresh().post("/v1/detect/audio", **kwargs))


@budget(10)
@given(sent=sendings("video", VIDEO_MEDIA))
def test_random_and_mutated_video_is_a_result_or_a_4xx(fresh, sent) -> None:
    kwargs, _ = sent
    assert_answer(fresh().post("/v1/detect/video?max_frames=8", **kwargs))


@budget(12)
@given(
    case=st.sampled_from(
        [
            ("image", "image/png", IMAGE_MEDIA),
            ("audio", "audio/wav", AUDIO_MEDIA),
            ("video", "video/mp4", VIDEO_MEDIA),
        ]
    ).flatmap(lambda c: st.tuples(st.just(c[0]), st.just(c[1]), c[2]))
)
def test_uploaded_media_detected_by_id_is_a_result_or_a_4xx(fresh, client, case) -> None:
    """The upload path (api/uploaded.py): the file is sniffed and decoded where it lies."""
    kind, content_type, data = case
    caller = fresh()
    made = caller.post(
        "/v1/uploads", json={"filename": "f", "content_type": content_type, "size": max(1, len(data))}
    )
    assert made.status_code == 201, made.text
    form = made.json()
    sent = client.post(form["url"], data=form["fields"], files={"file": ("f", data, content_type)})
    assert_answer(sent)
    event(f"upload {sent.status_code}")
    query = "?max_frames=8" if kind == "video" else ""
    assert_answer(caller.post(f"/v1/detect/{kind}{query}", json={"upload_id": form["upload_id"]}))
