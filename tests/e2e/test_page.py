"""The page at ``/`` in a real browser (Debian's Chromium driven by Playwright) against a real
``bentoml serve service:Verity``, started as the other e2e servers are (the session's tiny models,
a free 127.0.0.1 port, its own SQLite file), with a small inline video cap so that a small clip
goes through an upload and a job.

Chromium is a declared system dependency (``make system-deps`` installs Debian's package): a
missing browser or a missing ``playwright`` fails these tests, it never skips them. Playwright's
own browser download is never used.

``VERITY_SCREENSHOTS_DIR`` (set by ``python -m tests.e2e.screenshots``) makes the tests save the
page's main states there as PNGs; a plain test run writes nothing into the checkout.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from tests.audio_factory import encode as encode_audio
from tests.audio_factory import speech_like
from tests.conftest import TEST_PASSWORD, unique_email
from tests.e2e.servers import ServerProcess, bentoml_serve, signup_over_http
from tests.face_factory import Paste, compose, moving_face_frames
from tests.media_factory import encode
from tests.video_factory import encode_ffmpeg

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CAMERA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
READY_TIMEOUT_S = 120.0
UI_TIMEOUT_MS = 60_000
# A clip of a few dozen KB is over this inline cap: the page must take the upload + job path.
VIDEO_INLINE_CAP = 4096
SCREENSHOTS = os.environ.get("VERITY_SCREENSHOTS_DIR")
VERDICTS = {"FAKE", "REAL", "UNCERTAIN", "NO_FACE"}


# The WCAG contrast ratio of each selector's first visible element: its text colour against the
# first opaque background behind it.
CONTRAST_CHECKED = [
    "body",
    ".hint",
    "#verdict",
    "button.primary",
    "#dev-banner",
    ".tabs [aria-selected=true]",
    "#warnings li",
    "#history-list .verdict",
    ".meta dt",
    "button.quiet",
]
CONTRAST_JS = """selectors => {
    const rgb = c => c.match(/[\\d.]+/g).map(Number);
    const lum = ([r, g, b]) => [r, g, b]
        .map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
        .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
    const background = e => {
        for (; e; e = e.parentElement) {
            const c = rgb(getComputedStyle(e).backgroundColor);
            if (c.length < 4 || c[3] > 0) return c.slice(0, 3);
        }
        return [255, 255, 255];
    };
    const out = {};
    for (const sel of selectors) {
        const e = [...document.querySelectorAll(sel)].find(x => x.offsetParent || sel === 'body');
        if (!e) continue;
        const a = lum(rgb(getComputedStyle(e).color)), b = lum(background(e));
        out[sel] = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    }
    return out;
}"""


# --- media ------------------------------------------------------------------------------------


@functools.cache
def face_jpeg() -> bytes:
    """One face (skimage's astronaut) on a smooth background: MTCNN finds it."""
    picture = compose([Paste(200, 110, 220)], seed=3, width=640, height=440)
    return encode(Image.fromarray(picture), "JPEG", quality=92)


@functools.cache
def speech_wav() -> bytes:
    """8 s: three 4 s windows at 0, 2 and 4 s."""
    return encode_audio(speech_like(8.0, seed=2), 16_000, "wav")


@functools.cache
def face_clip() -> bytes:
    """3 s of a moving face in WebM (VP8): a format both the server and Chromium decode."""
    return encode_ffmpeg(moving_face_frames(30, seed=1), 10, "webm")


def y4m_of_a_face(path: Path, frames: int = 10, width: int = 320, height: int = 240) -> Path:
    """A YUV4MPEG2 file (what Chromium's fake camera plays from a file) of a face drifting."""
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in moving_face_frames(frames, width=width, height=height, size=150, seed=4):
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


# --- the server and the browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def page_server(model_store, bentoml_home: Path, tmp_path_factory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("page-server")
    server = bentoml_serve(
        bentoml_home,
        workdir,
        env={
            "VERITY_MAX_VIDEO_BYTES": str(VIDEO_INLINE_CAP),
            "VERITY_JOB_SCAN_S": "0.2",
            "VERITY_DAILY_LIMIT": "100000",
            "VERITY_RATE_LIMIT_IMAGE_PER_MIN": "100000",
        },
    )
    try:
        server.wait_ready(READY_TIMEOUT_S)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: it is in the dev dependency group (run `make setup`)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: the page's browser tests need Debian's "
            "chromium package (run `make system-deps`)"
        )
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright_driver) -> Iterator[Any]:
    browser = playwright_driver.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
    yield browser
    browser.close()


class Watched:
    """A page and what went wrong in it: uncaught errors and Content-Security-Policy refusals."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))
        page.on("console", self._console)
        page.set_default_timeout(UI_TIMEOUT_MS)

    def _console(self, msg: Any) -> None:
        text = msg.text
        if "Content Security Policy" in text or "Refused to" in text:
            self.problems.append(f"CSP: {text}")

    def check(self) -> None:
        assert self.problems == [], self.problems


def open_page(browser: Any, url: str, **context_options: Any) -> tuple[Any, Watched]:
    options = {"viewport": {"width": 1280, "height": 900}, **context_options}
    context = browser.new_context(base_url=url, **options)
    page = context.new_page()
    watched = Watched(page)
    page.goto("/")
    page.wait_for_selector("body[data-ready='true']", state="attached")
    return page, watched


@pytest.fixture
def page(browser, page_server: ServerProcess) -> Iterator[Any]:
    page, watched = open_page(browser, page_server.url)
    yield page
    try:
        watched.check()
    finally:
        page.context.close()


# Note: wait_for_function takes functions ("() => ..."), never bare expressions: Playwright polls
# an expression with eval(), which the page's Content-Security-Policy refuses (as it should).


def snap(page: Any, name: str, *, full_page: bool = True) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=full_page)


def sign_up(page: Any, email: str | None = None) -> str:
    """Sign up from the page's own form; the key it shows once."""
    page.get_by_role("tab", name="Sign up").click()
    page.locator("#signup-email").fill(email or unique_email("page"))
    page.locator("#signup-password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.locator("#workspace").wait_for(state="visible")
    key = page.locator("#new-key-value").inner_text()
    assert key.startswith("vk_live_"), key
    page.get_by_role("button", name="Done").click()
    return key


def choose_mode(page: Any, mode: str) -> None:
    page.get_by_role("tab", name=mode).click()


def analyse(page: Any, name: str, data: bytes, mime: str, while_working: Any = None) -> dict[str, str]:
    """Choose the file, press Analyse, wait for a new result; what the page then shows."""
    page.get_by_test_id("file-input").set_input_files({"name": name, "mimeType": mime, "buffer": data})
    before = page.locator("#result-panel").get_attribute("data-id")
    page.get_by_role("button", name="Analyse").click()
    if while_working is not None:
        while_working()
    page.wait_for_function(
        "before => { const p = document.getElementById('result-panel');"
        " return !p.hidden && p.dataset.id && p.dataset.id !== before; }",
        arg=before,
    )
    return {
        "id": page.locator("#result-panel").get_attribute("data-id"),
        "verdict": page.get_by_test_id("verdict").get_attribute("data-verdict"),
        "probability": page.get_by_test_id("probability").inner_text(),
    }


def raw_result(page: Any) -> dict[str, Any]:
    import json

    return json.loads(page.locator("#raw-json").text_content())


# --- over HTTP: the page, its assets and their headers ------------------------------------------


def test_the_page_and_its_assets_are_served_with_their_headers(page_server: ServerProcess) -> None:
    with httpx.Client(base_url=page_server.url, timeout=30) as http:
        page = http.get("/", headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-cache" and page.headers["etag"]
        assert page.headers["x-frame-options"] == "DENY"
        csp = dict(part.split(" ", 1) for part in page.headers["content-security-policy"].split("; "))
        host = f"127.0.0.1:{page_server.port}"
        assert csp["default-src"] == "'none'"
        assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
        assert csp["connect-src"] == f"'self' ws://{host} wss://{host}"
        assert csp["img-src"] == "'self' data: blob:" and csp["media-src"] == "'self' blob:"
        assert csp["frame-ancestors"] == "'none'"
        assert "<script" in page.text and "unsafe-inline" not in page.headers["content-security-policy"]
        assert not re.search(r"<script(?![^>]*\bsrc=)", page.text), "an inline script: the CSP would block it"
        again = http.get("/", headers={"accept": "text/html", "if-none-match": page.headers["etag"]})
        assert again.status_code == 304

        # Everyone else (curl's */*, JSON clients) keeps the JSON index, with the inline limits.
        index = http.get("/")
        assert index.headers["content-type"] == "application/json"
        body = index.json()
        assert body["service"] == "verity" and body["docs"] == "/docs"
        assert body["limits"]["video_bytes"] == VIDEO_INLINE_CAP
        assert http.get("/", headers={"accept": "application/json"}).json() == body

        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
        assert {a.split("?")[0] for a in assets} == {"/static/app.js", "/static/style.css"}
        types = {
            "/static/app.js": "text/javascript; charset=utf-8",
            "/static/style.css": "text/css; charset=utf-8",
        }
        for asset in assets:
            response = http.get(asset)
            assert response.status_code == 200, asset
            assert response.headers["content-type"] == types[asset.split("?")[0]]
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
            cached = http.get(asset, headers={"if-none-match": response.headers["etag"]})
            assert cached.status_code == 304
            # Without the current version the asset is revalidated, never kept a year.
            assert http.get(asset.split("?")[0]).headers["cache-control"] == "no-cache"
        missing = http.get("/static/nope.js")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "route_not_found"


# --- in the browser ------------------------------------------------------------------------------


def test_sign_up_from_the_page_keeps_the_key_in_session_storage(page: Any) -> None:
    page.get_by_test_id("dev-banner").wait_for(state="visible")
    assert "not meaningful" in page.get_by_test_id("dev-banner").inner_text()
    snap(page, "sign-up")
    email = unique_email("page")
    key = sign_up(page, email)
    stored = page.evaluate("JSON.parse(sessionStorage.getItem('verity.credentials'))")
    assert stored["kind"] == "key" and stored["value"] == key
    assert page.evaluate("localStorage.length") == 0
    assert page.evaluate("document.cookie") == ""
    assert key not in page.url
    assert page.locator("#account-who").inner_text().endswith("@example.com")
    page.wait_for_function("() => document.getElementById('usage').textContent.includes('units used today')")
    # A reload keeps the tab signed in; signing out forgets the key.
    page.reload()
    page.locator("#workspace").wait_for(state="visible")
    page.get_by_role("button", name="Sign out").click()
    page.locator("#auth-panel").wait_for(state="visible")
    assert page.evaluate("sessionStorage.getItem('verity.credentials')") is None
    # Logging in keeps the session's JWT (Bearer) the same way, and the page works with it.
    page.get_by_role("tab", name="Log in").click()
    page.locator("#login-email").fill(email)
    page.locator("#login-password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.locator("#workspace").wait_for(state="visible")
    stored = page.evaluate("JSON.parse(sessionStorage.getItem('verity.credentials'))")
    assert stored["kind"] == "token" and stored["value"].count(".") == 2
    page.locator("#keys-list li").first.wait_for()  # GET /v1/keys with the Bearer token
    assert page.locator("#account-who").inner_text() == email
    # A wrong password is answered on the form, in words.
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("tab", name="Log in").click()
    page.locator("#login-email").fill(email)
    page.locator("#login-password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_function("() => document.getElementById('auth-error').textContent.length > 0")
    assert page.locator("#auth-error").inner_text() == "Email or password is wrong."


def test_a_pasted_api_key_signs_the_page_in(page: Any, page_server: ServerProcess) -> None:
    account = signup_over_http(page_server.url)  # a key made elsewhere (curl, another tab)
    page.get_by_role("tab", name="API key").click()
    page.get_by_test_id("api-key").fill("vk_live_not-a-real-key")
    page.get_by_role("button", name="Use this key").click()
    page.locator("#auth-error").wait_for(state="visible")
    assert page.locator("#workspace").is_hidden()
    page.get_by_test_id("api-key").fill(account.key)
    page.get_by_role("button", name="Use this key").click()
    page.locator("#workspace").wait_for(state="visible")
    assert page.locator("#account-who").inner_text() == account.email
    page.wait_for_function("() => document.getElementById('usage').textContent.includes('units used today')")


def test_an_image_shows_its_verdict_probability_and_face_boxes(page: Any) -> None:
    sign_up(page)
    shown = analyse(page, "face.jpg", face_jpeg(), "image/jpeg")
    result = raw_result(page)
    assert shown["id"] == result["id"] and shown["verdict"] == result["verdict"]
    assert result["verdict"] in VERDICTS - {"NO_FACE"}, "MTCNN should find the astronaut"
    assert shown["probability"] == f"{result['fake_probability'] * 100:.1f}%"
    assert page.get_by_test_id("verdict").is_visible()
    boxes = page.locator("#media-stage").get_by_test_id("face-box")
    assert boxes.count() == len(result["faces"]) >= 1
    # The box is drawn in the picture's own pixels: [x, y, w, h] of the result's faces.
    x, y, w, h = result["faces"][0]["box"]
    rect = boxes.first.locator("rect")  # a face-box is the box and its label
    assert [float(rect.get_attribute(a)) for a in ("x", "y", "width", "height")] == [x, y, w, h]
    view_box = page.locator("#media-stage svg.overlay").get_attribute("viewBox")
    assert view_box == f"0 0 {result['media']['width']} {result['media']['height']}"
    # The box sits over the face in the displayed picture too.
    img = page.locator("#media-stage img").bounding_box()
    drawn = rect.bounding_box()
    scale = img["width"] / result["media"]["width"]
    assert abs(drawn["x"] - (img["x"] + x * scale)) < 4 and abs(drawn["width"] - w * scale) < 4
    assert any(w["code"] == "dev_weights" for w in result["warnings"])
    assert page.locator("#warnings li[data-code='dev_weights']").is_visible()
    assert result["model"]["weights"] == "dev" and page.get_by_test_id("dev-banner").is_visible()
    # The stability check is on by default: each variant's score and verdict in a table.
    stability = page.get_by_test_id("stability")
    assert (
        stability.is_visible()
        and stability.get_attribute("data-stable") == str(result["stability"]["stable"]).lower()
    )
    rows = stability.locator("tbody tr")
    assert (
        [rows.nth(i).get_attribute("data-variant") for i in range(rows.count())]
        == [v["name"] for v in result["stability"]["variants"]]
        == ["original", "jpeg_q75", "resize_0.75", "crop_0.9"]
    )
    assert (
        rows.nth(1).locator("td").nth(1).inner_text()
        == f"{result['stability']['variants'][1]['fake_probability'] * 100:.1f}%"
    )

    # The raw JSON: hidden, then shown with a click, hidden again from the keyboard.
    raw = page.locator("#raw-json")
    assert not raw.is_visible()
    page.locator("#raw summary").click()
    assert raw.is_visible() and f'"id": "{result["id"]}"' in raw.inner_text()
    snap(page, "image-result")
    page.locator("#raw summary").focus()
    page.keyboard.press("Enter")
    assert not raw.is_visible()


def test_explain_shows_a_heatmap_over_the_picture(page: Any) -> None:
    sign_up(page)
    page.get_by_label("Find faces and score each one").uncheck()
    page.get_by_label("Explain with a heatmap").check()
    analyse(page, "face.jpg", face_jpeg(), "image/jpeg")
    result = raw_result(page)
    assert result["explanation"]["method"].startswith("occlusion")
    heat = page.locator("#media-stage").get_by_test_id("heatmap")
    assert heat.is_visible()
    assert heat.get_attribute("href") == f"data:image/png;base64,{result['explanation']['heatmap_png']}"
    box, img = heat.bounding_box(), page.locator("#media-stage img").bounding_box()
    assert abs(box["width"] - img["width"]) < 2 and abs(box["height"] - img["height"]) < 2
    snap(page, "explain-heatmap")
    page.get_by_label("Show the heatmap").uncheck()
    assert not heat.is_visible()


def test_content_credentials_are_shown_and_decide_a_picture_declared_ai(page: Any) -> None:
    from tests.c2pa_factory import sign_media

    sign_up(page)
    page.get_by_label("Find faces and score each one").uncheck()
    shown = analyse(page, "generated.jpg", sign_media(face_jpeg(), "image/jpeg"), "image/jpeg")
    assert shown["verdict"] == "FAKE"
    box = page.get_by_test_id("provenance")
    assert box.is_visible() and box.get_attribute("data-rule") == "declared_ai"
    text = box.inner_text()
    assert "Valid" in text and "decides the verdict" in text and "Verity Test Signer" in text
    assert "trainedAlgorithmicMedia" in text
    analyse(page, "face.jpg", face_jpeg(), "image/jpeg")  # no credentials: the box goes away
    assert not box.is_visible()


def test_audio_shows_a_timeline_whose_segments_seek_the_player(page: Any) -> None:
    sign_up(page)
    choose_mode(page, "Audio")
    analyse(page, "speech.wav", speech_wav(), "audio/wav")
    result = raw_result(page)
    starts = [s["start_s"] for s in result["segments"]]
    assert starts == [0.0, 2.0, 4.0]
    segments = page.get_by_test_id("timeline").locator("button")
    assert segments.count() == 3
    page.wait_for_function("() => document.getElementById('player').readyState >= 1")
    segments.nth(2).click()
    assert page.evaluate("document.getElementById('player').currentTime") == pytest.approx(4.0, abs=0.05)
    assert segments.nth(2).get_attribute("aria-current") == "true"
    # From the keyboard as well.
    segments.nth(1).focus()
    page.keyboard.press("Enter")
    assert page.evaluate("document.getElementById('player').currentTime") == pytest.approx(2.0, abs=0.05)
    label = segments.nth(1).get_attribute("aria-label")
    assert "2.0 s to 6.0 s" in label and label.endswith("fake")
    snap(page, "audio-timeline")


def test_a_pasted_text_shows_its_windows_over_the_text(page: Any) -> None:
    sign_up(page)
    choose_mode(page, "Text")
    text = "The committee met on Tuesday to review the budget and postponed the vote until March. " * 40
    page.get_by_test_id("text-input").fill(text)
    before = page.locator("#result-panel").get_attribute("data-id")
    page.get_by_role("button", name="Analyse text").click()
    page.wait_for_function(
        "before => { const p = document.getElementById('result-panel');"
        " return !p.hidden && p.dataset.id && p.dataset.id !== before; }",
        arg=before,
    )
    result = raw_result(page)
    assert result["modality"] == "text" and len(result["segments"]) >= 2
    view = page.get_by_test_id("text-view")
    assert view.is_visible() and view.inner_text().replace("\n", " ").strip() == text.strip()
    marks = view.locator("mark")
    assert marks.count() >= len(result["segments"])  # overlaps cut the text into more stretches
    assert page.get_by_test_id("text-windows").locator("li").count() == len(result["segments"])
    assert page.get_by_test_id("verdict").get_attribute("data-verdict") == result["verdict"]
    assert not page.get_by_test_id("timeline").is_visible()
    snap(page, "text-windows")


def test_a_video_over_the_inline_cap_goes_through_an_upload_and_a_job(page: Any) -> None:
    clip = face_clip()
    assert len(clip) > VIDEO_INLINE_CAP
    sign_up(page)
    choose_mode(page, "Video")
    page.get_by_label("Frames per second").select_option("2")
    # What the progress box said, in order (recorded in the page, as it changes).
    page.evaluate(
        """() => {
        window.progressSeen = [];
        const label = document.getElementById('progress-label');
        new MutationObserver(() => window.progressSeen.push(label.textContent))
            .observe(label, {childList: true, characterData: true, subtree: true});
    }"""
    )

    def during_the_job() -> None:
        page.wait_for_function(
            "() => document.getElementById('progress-label').textContent.startsWith('Job')"
        )
        assert page.locator("#progress").is_visible() and page.locator("#cancel-job").is_visible()
        assert re.search(r"\d+% · job_", page.locator("#progress-text").inner_text())
        snap(page, "video-job-progress", full_page=False)

    analyse(page, "clip.webm", clip, "video/webm", while_working=during_the_job)
    seen = page.evaluate("window.progressSeen")
    assert "Uploading…" in seen, seen
    assert any(s.startswith("Job") for s in seen), seen
    assert seen[-1] == "Job done", seen
    assert not any(s.startswith("Sending") for s in seen), "the inline route was tried"
    result = raw_result(page)
    assert result["modality"] == "video" and result["media"]["frames_analyzed"] == 6
    assert page.get_by_test_id("timeline").locator("button").count() == len(result["segments"]) == 3
    assert page.locator("#media-stage video").count() == 1
    assert page.locator("#media-stage").get_by_test_id("face-box").count() >= 1
    # The job's result is in the history like any other.
    page.locator(f"#history-list button[data-id='{result['id']}']").wait_for()
    page.wait_for_function("() => document.getElementById('player').readyState >= 2")  # a frame to show
    snap(page, "video-job")


def test_a_history_item_reopens_its_result(page: Any) -> None:
    sign_up(page)
    first = analyse(page, "face.jpg", face_jpeg(), "image/jpeg")
    choose_mode(page, "Audio")
    second = analyse(page, "speech.wav", speech_wav(), "audio/wav")
    assert page.locator("#result-panel").get_attribute("data-id") == second["id"]
    item = page.locator(f"#history-list button[data-id='{first['id']}']")
    item.wait_for()
    assert page.get_by_test_id("history-item").count() == 2
    item.click()
    page.wait_for_function("id => document.getElementById('result-panel').dataset.id === id", arg=first["id"])
    assert page.get_by_test_id("verdict").get_attribute("data-verdict") == first["verdict"]
    assert page.get_by_test_id("probability").inner_text() == first["probability"]
    assert raw_result(page)["id"] == first["id"]
    # Analysed in this tab: the picture is still here, with its boxes.
    assert page.locator("#media-stage img").is_visible()
    assert page.locator("#media-stage").get_by_test_id("face-box").count() >= 1
    snap(page, "history")


def test_controls_are_labelled_keyboard_operable_with_visible_focus_and_contrast(page: Any) -> None:
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                     && !e.getAttribute('aria-labelledby') && !e.textContent.trim())
        .map(e => e.outerHTML)"""
    )
    assert unlabelled == []
    # Sign up with the keyboard only.
    page.locator("#signup-email").focus()
    page.keyboard.type(unique_email("keys"))
    page.keyboard.press("Tab")
    page.keyboard.type(TEST_PASSWORD)
    page.keyboard.press("Enter")
    page.locator("#workspace").wait_for(state="visible")
    # Signing up ends with the new key in focus (the one thing to do then: copy it); the page
    # moves it there after the workspace shows, so wait for it before moving focus on.
    page.wait_for_function("() => document.activeElement && document.activeElement.id === 'new-key'")
    # Tabs move with the arrow keys; focus is visible on what the keyboard reaches.
    page.locator("#mode-image").focus()
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.id") == "mode-audio"
    assert page.locator("#mode-audio").get_attribute("aria-selected") == "true"
    assert page.locator("#file-label").inner_text() == "Choose an audio file"
    page.keyboard.press("Tab")
    focus = page.evaluate(
        """() => { const s = getComputedStyle(document.activeElement);
        return {id: document.activeElement.id, style: s.outlineStyle, width: parseFloat(s.outlineWidth)}; }"""
    )
    assert focus["id"] == "file-input" and focus["style"] != "none" and focus["width"] >= 2
    # Analyse from the keyboard (a file dialog cannot be typed into: the file is set directly).
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("ArrowLeft")
    picture = {"name": "f.jpg", "mimeType": "image/jpeg", "buffer": face_jpeg()}
    page.get_by_test_id("file-input").set_input_files(picture)
    page.locator("#analyse-button").focus()
    page.keyboard.press("Enter")
    page.locator("#result-panel").wait_for(state="visible")
    # Text contrast (WCAG AA, 4.5:1) on what the page shows.
    ratios = page.evaluate(CONTRAST_JS, CONTRAST_CHECKED)
    assert len(ratios) >= 8, ratios
    assert all(r >= 4.5 for r in ratios.values()), ratios


def test_a_phone_width_layout_has_no_horizontal_scroll(browser, page_server: ServerProcess) -> None:
    page, watched = open_page(
        browser, page_server.url, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    try:
        page.get_by_test_id("dev-banner").wait_for(state="visible")
        snap(page, "phone-sign-up", full_page=False)
        sign_up(page)
        analyse(page, "face.jpg", face_jpeg(), "image/jpeg")
        page.locator("#raw summary").click()  # long lines scroll inside the block, not the page
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        for name in ("Image", "Audio", "Video", "Camera"):
            box = page.get_by_role("tab", name=name).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, name
        for selector in ("#file-input", "#analyse-button", "#verdict", "#sign-out", "#history-refresh"):
            locator = page.locator(selector)
            locator.scroll_into_view_if_needed()
            box = locator.bounding_box()
            assert locator.is_visible() and box["x"] >= 0 and box["x"] + box["width"] <= 390, selector
        page.locator("#raw summary").click()
        page.evaluate("() => document.getElementById('result-panel').scrollIntoView({block: 'start'})")
        snap(page, "phone-result", full_page=False)
        watched.check()
    finally:
        page.context.close()


def test_the_camera_shows_live_verdicts(playwright_driver, page_server: ServerProcess) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with tempfile.TemporaryDirectory(prefix="verity-camera-") as folder:
        video = y4m_of_a_face(Path(folder) / "face.y4m")
        browser = playwright_driver.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[*BROWSER_ARGS, *CAMERA_ARGS, f"--use-file-for-fake-video-capture={video}"],
        )
        try:
            page, watched = open_page(browser, page_server.url)
            sockets: list[str] = []  # what the browser saw of the stream, for a failure's message
            page.on(
                "websocket",
                lambda ws: (sockets.append("open"), ws.on("close", lambda _: sockets.append("closed"))),
            )
            page.context.grant_permissions(["camera"])
            sign_up(page)
            choose_mode(page, "Camera")
            page.get_by_test_id("camera-start").click()
            try:
                page.wait_for_function(
                    "() => /^([3-9]|\\d\\d+) frames analysed/"
                    ".test(document.getElementById('live-stats').textContent)"
                )
            except PlaywrightTimeout:
                status = page.locator("#camera-status").inner_text()
                stats = page.locator("#live-stats").inner_text()
                log = [line[:200] for line in page_server.log_tail(400).splitlines() if "/v1/stream" in line]
                pytest.fail(
                    f"no live verdicts from the camera: status {status!r}, stats {stats!r}, "
                    f"sockets {sockets}, page problems {watched.problems}, server log {log[-6:]}"
                )
            now = page.get_by_test_id("camera-verdict").get_attribute("data-verdict")
            rolling = page.locator("#live-rolling").get_attribute("data-verdict")
            assert now in VERDICTS and rolling in VERDICTS
            assert now != "NO_FACE", "MTCNN should find the face in the fake camera's frames"
            rect = page.locator("#camera-overlay rect").first
            rect.wait_for()
            # The box is drawn over the picture, in the frame's pixels scaled to the preview.
            drawn, preview = rect.bounding_box(), page.locator("#camera-video").bounding_box()
            assert (
                preview["x"] <= drawn["x"]
                and drawn["x"] + drawn["width"] <= preview["x"] + preview["width"] + 1
            )
            assert (
                preview["y"] <= drawn["y"]
                and drawn["y"] + drawn["height"] <= preview["y"] + preview["height"] + 1
            )
            assert "%" in page.locator("#live-probability").inner_text()
            snap(page, "camera")
            page.get_by_role("button", name="Stop camera").click()
            page.wait_for_function("() => document.getElementById('camera-stage').hidden")
            assert page.evaluate("document.getElementById('camera-video').srcObject") is None
            watched.check()
        finally:
            browser.close()
