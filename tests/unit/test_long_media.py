"""Files on disk of any length (jobs): ``detect_video_file`` / ``detect_audio_file`` and the
streaming decoders under them (media/video_files.py ``open_video_file``, media/audio_files.py
``open_audio_file``). The file path answers as the inline path does on the same clip, never
holds more than two chunks of frames, samples past the inline frame cap, refuses hostile files
with 4xx errors and leaves no temporary file or child process behind."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import media.video
import media.video_decode
import media.video_files
from errors import BadMedia, TooLarge, VerityError
from media.audio import WindowCutter, make_windows
from media.audio_files import open_audio_file
from media.video import (
    SamplingPlan,
    VideoFileStream,
    VideoFrame,
    decode_video,
    open_video_file,
    plan_sampling,
)
from media.video_sampling import StreamSampler
from tests.audio_factory import encode as encode_audio
from tests.audio_factory import encode_ffmpeg as encode_audio_ffmpeg
from tests.audio_factory import speech_like
from tests.conftest import PROJECT_ROOT
from tests.face_factory import moving_face_frames
from tests.video_factory import decoder_children, encode_ffmpeg, lavfi_video, pattern_frames, write_opencv

pytestmark = pytest.mark.unit

FPS = 10
PREFIXES = (media.video.TEMP_PREFIX, "verity-audio-")


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def portal() -> Iterator[Any]:
    """One event loop for the module: the engine's limiters belong to the loop that first uses them."""
    from anyio.from_thread import start_blocking_portal

    with start_blocking_portal() as running:
        yield running


@pytest.fixture(scope="module")
def engine(model_store, portal):
    """Every served model in this process (what a job worker runs), on the session's tiny models."""
    from config.settings import Settings
    from detect.hosting import build_inprocess_engine

    return portal.call(lambda: _build(build_inprocess_engine, Settings()))


async def _build(build: Callable[..., Any], settings: Any) -> Any:
    return build(settings)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """The decoders' temporary directory, private to this test, so leaks are counted exactly."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return tmp_path / "tmp"


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(PREFIXES))


_CLIPS: dict[str, bytes] = {}


def face_clip(seconds: float = 3.0, *, audio: bool = False) -> bytes:
    """A face drifting left to right, 320x240 at 10 fps (the HTTP tests' clip)."""
    key = f"{seconds}-{audio}"
    if key not in _CLIPS:
        frames = moving_face_frames(int(seconds * FPS))
        _CLIPS[key] = (
            encode_ffmpeg(frames, FPS, "mp4", audio=True) if audio else write_opencv(frames, FPS, "mp4")
        )
    return _CLIPS[key]


def on_disk(tmp_path: Path, data: bytes, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def run_video(portal, engine, data_or_path: bytes | Path, **kwargs: Any) -> dict[str, Any]:
    from detect.video import detect_video, detect_video_file

    options = {"fps": None, "max_frames": None, "strategy": "temporal", "model_id": None, **kwargs}
    if isinstance(data_or_path, Path):
        return portal.call(lambda: detect_video_file(engine, data_or_path, **options))
    options.pop("progress", None)
    return portal.call(lambda: detect_video(engine, data_or_path, **options))


def assert_same_result(inline: dict[str, Any], filed: dict[str, Any]) -> None:
    """Same verdict, probabilities (to float noise: chunks batch differently), faces, timeline."""
    from detect.results import DetectionResult

    DetectionResult.model_validate(filed)
    assert filed["verdict"] == inline["verdict"]
    assert filed["fake_probability"] == pytest.approx(inline["fake_probability"], abs=1e-5)
    assert filed["media"] == inline["media"]
    assert filed["aggregation"] == pytest.approx(inline["aggregation"], abs=1e-5)
    assert [s["start_s"] for s in filed["segments"]] == [s["start_s"] for s in inline["segments"]]
    assert [s["fake_probability"] for s in filed["segments"]] == pytest.approx(
        [s["fake_probability"] for s in inline["segments"]], abs=1e-5
    )
    assert len(filed["faces"]) == len(inline["faces"])
    for a, b in zip(inline["faces"], filed["faces"], strict=True):
        assert a["frame_s"] == b["frame_s"]
        assert b["box"] == pytest.approx(a["box"], abs=0.2)
        assert (a["fake_probability"] is None) == (b["fake_probability"] is None)
        if a["fake_probability"] is not None:
            assert b["fake_probability"] == pytest.approx(a["fake_probability"], abs=1e-5)
    assert [w["code"] for w in filed["warnings"]] == [w["code"] for w in inline["warnings"]]
    assert set(filed["timing_ms"]) >= {"decode", "faces", "inference", "total"}


# --- the file path answers as the inline path does -----------------------------------------------


@pytest.mark.parametrize("strategy", ["temporal", "frames"])
def test_video_file_gives_the_inline_result(strategy, portal, engine, tmp_path, private_tmp, monkeypatch):
    monkeypatch.setattr(media.video_files, "FILE_CHUNK_FRAMES", 4)  # 15 frames: 4 chunks, the last short
    path = on_disk(tmp_path, face_clip(), "clip.mp4")
    inline = run_video(portal, engine, face_clip(), fps=5, strategy=strategy)
    filed = run_video(portal, engine, path, fps=5, strategy=strategy)
    assert inline["media"]["frames_analyzed"] == 15 == inline["media"]["frames_with_face"]
    assert_same_result(inline, filed)
    assert leftovers(private_tmp) == [] and decoder_children() == []


def test_in_process_decoding_streams_files_too(portal, engine, tmp_path, private_tmp, monkeypatch):
    """VERITY_VIDEO_DECODE_ISOLATED=false: the capture lives in the worker, read a chunk at a time
    from the worker threads; the answer is the same."""
    monkeypatch.setattr(media.video_files, "FILE_CHUNK_FRAMES", 4)
    monkeypatch.setattr(engine.settings, "video_decode_isolated", False)
    path = on_disk(tmp_path, face_clip(), "clip.mp4")
    assert_same_result(run_video(portal, engine, face_clip(), fps=5), run_video(portal, engine, path, fps=5))
    assert leftovers(private_tmp) == [] and decoder_children() == []


def test_video_file_scores_its_audio_track_as_inline(portal, engine, tmp_path, private_tmp):
    data = face_clip(audio=True)
    inline = run_video(portal, engine, data, fps=2)
    filed = run_video(portal, engine, on_disk(tmp_path, data, "talk.mp4"), fps=2)
    assert_same_result(inline, filed)
    assert filed["audio"]["media"] == inline["audio"]["media"]  # the same 16 kHz samples were scored
    assert filed["audio"]["fake_probability"] == pytest.approx(inline["audio"]["fake_probability"], abs=1e-5)
    assert filed["fusion"] == inline["fusion"]
    assert leftovers(private_tmp) == [] and decoder_children() == []


@pytest.mark.parametrize(("fmt", "seconds"), [("wav", 21.0), ("flac", 7.0), ("m4a", 9.0)])
def test_audio_file_gives_the_inline_result(fmt, seconds, portal, engine, tmp_path, private_tmp):
    from detect.audio import detect_audio, detect_audio_file
    from detect.results import DetectionResult

    samples = speech_like(seconds, 44_100)
    data = encode_audio_ffmpeg(samples, 44_100, "m4a") if fmt == "m4a" else encode_audio(samples, 44_100, fmt)
    path = on_disk(tmp_path, data, f"call.{fmt}")
    progress: list[float] = []
    inline = portal.call(lambda: detect_audio(engine, data, model_id=None))
    filed = portal.call(lambda: detect_audio_file(engine, path, model_id=None, progress=progress.append))
    DetectionResult.model_validate(filed)
    assert filed["verdict"] == inline["verdict"]
    assert filed["fake_probability"] == pytest.approx(inline["fake_probability"], abs=1e-5)
    assert filed["media"] == inline["media"]
    assert [(s["start_s"], s["end_s"]) for s in filed["segments"]] == [
        (s["start_s"], s["end_s"]) for s in inline["segments"]
    ]
    assert [s["fake_probability"] for s in filed["segments"]] == pytest.approx(
        [s["fake_probability"] for s in inline["segments"]], abs=1e-5
    )
    assert filed["warnings"] == inline["warnings"]
    assert progress[-1] == 1.0 and progress == sorted(set(progress))
    assert leftovers(private_tmp) == [] and decoder_children() == []


def test_window_cutter_gives_make_windows_windows():
    rng = np.random.default_rng(0)
    for total in (100, 64_000, 64_001, 192_000, 192_500, 160_008, 137_777):
        samples = rng.standard_normal(total).astype(np.float32)
        expected, spans = make_windows(samples, 16_000, 4.0, 2.0)
        for block in (1_000, 65_536, 300_000):
            cutter = WindowCutter(16_000, 4.0, 2.0)
            cut = [cutter.feed(samples[at : at + block]) for at in range(0, total, block)] + [cutter.finish()]
            assert np.array_equal(np.concatenate([w for w, _ in cut if len(w)]), expected), (total, block)
            assert [s for _, got in cut for s in got] == spans
            # Never more than a window, a hop and a block held.
            assert cutter.total == total


# --- bounded frames ----------------------------------------------------------------------------------


def test_frames_alive_stay_within_two_chunks(portal, engine, tmp_path, monkeypatch):
    """15 sampled frames, 3 per chunk: at no point are more than two chunks of frames alive (the
    one being scored and the one read ahead), and no chunk is larger than asked."""
    monkeypatch.setattr(media.video_files, "FILE_CHUNK_FRAMES", 3)
    handed: list[weakref.ref[np.ndarray]] = []  # every frame's pixels, weakly
    most, sizes = [0], []
    lock = threading.Lock()
    real = VideoFileStream.read_chunk

    def tracking(self: VideoFileStream) -> list[VideoFrame] | None:
        chunk = real(self)
        with lock:
            handed.extend(weakref.ref(frame.rgb) for frame in chunk or [])
            sizes.append(len(chunk or []))
            most[0] = max(most[0], alive())
        return chunk

    def alive() -> int:
        return sum(ref() is not None for ref in handed)

    monkeypatch.setattr(VideoFileStream, "read_chunk", tracking)
    body = run_video(portal, engine, on_disk(tmp_path, face_clip(), "clip.mp4"), fps=5)
    assert body["media"]["frames_analyzed"] == 15 == sum(sizes)
    assert max(sizes) == 3
    assert most[0] <= 6
    assert alive() == 0  # nothing keeps pixels after the result


def test_stream_sampler_never_exceeds_its_budget_nor_goes_back():
    """Three hours at 30 fps with nothing declared, a 2 fps plan and 3600 frames: the interval
    doubles as the budget halves, every kept frame stays, and the whole stream is covered."""
    sampler = StreamSampler(SamplingPlan(0.5, 3600, "adaptive"), None)
    tiny = np.zeros((1, 1, 3), dtype=np.uint8)
    kept = []
    for index in range(0, 3 * 3600 * 30, 3):  # every third frame is enough to hit every target
        t = index / 30
        if sampler.wants(t):
            sampler.keep(VideoFrame(index, t, tiny))
            kept.append(t)
    assert len(kept) == sampler.kept <= 3600
    assert kept == sorted(kept)
    assert kept[-1] > 3 * 3600 - 2 * sampler.interval  # covers (nearly) to the end
    assert sampler.doubled >= 10
    # Within a declared duration the plan's interval holds: no doubling.
    declared = StreamSampler(SamplingPlan(1.0, 120, "requested"), 120.0)
    for index in range(120 * 30):
        if declared.wants(index / 30):
            declared.keep(VideoFrame(index, index / 30, tiny))
    assert (declared.kept, declared.doubled, declared.interval) == (120, 0, 1.0)


def test_long_files_sample_at_one_fps_past_the_inline_cap(portal, engine, tmp_path, private_tmp):
    """150 s (no faces: testsrc2): 1 fps gives 150 frames, past the inline cap of 128, with or
    without a requested fps; the time limit grows with the declared duration."""
    assert engine.settings.video_max_frames_cap == 128
    data = lavfi_video(150, width=96, height=72, fps=5)
    path = on_disk(tmp_path, data, "long.mp4")
    progress: list[float] = []
    body = run_video(portal, engine, path, progress=progress.append)
    assert body["verdict"] == "NO_FACE"
    assert body["media"]["frames_analyzed"] == 150
    assert body["media"]["sample_interval_s"] == 1.0
    assert progress[-1] == 1.0 and progress == sorted(set(progress)) and len(progress) > 3
    requested = run_video(portal, engine, path, fps=1, strategy="frames")
    assert requested["media"]["frames_analyzed"] == 150
    assert not any(w["code"] == "sampling_reduced" for w in requested["warnings"])
    with open_video_file(
        path,
        max_bytes=None,
        max_pixels=10**7,
        max_duration_s=10_800,
        fps=None,
        max_frames=None,
        timeout_s=60,
        s_per_media_s=0.5,
        max_frames_cap=3600,
    ) as stream:
        assert stream.clock.limit_s == pytest.approx(75.0, abs=0.2)  # 150 s x 0.5 > 60 s
        assert stream.plan.max_frames == 3600
    assert leftovers(private_tmp) == [] and decoder_children() == []


@pytest.mark.parametrize("isolated", [True, False], ids=["child", "in-process"])
def test_an_understated_stream_thins_itself_without_taking_frames_back(isolated, tmp_path):
    """A WebM written to a pipe declares no duration: sampling starts at 2 fps and the interval
    doubles as the budget halves, with a sampling_reduced warning."""
    data = encode_ffmpeg(pattern_frames(300, 64, 48), 10, "webm", streamed=True)  # 30 s
    path = on_disk(tmp_path, data, "live.webm")
    with open_video_file(
        path,
        max_bytes=None,
        max_pixels=10**7,
        max_duration_s=10_800,
        fps=None,
        max_frames=12,
        timeout_s=30,
        s_per_media_s=0.5,
        max_frames_cap=3600,
        isolated=isolated,
    ) as stream:
        times = [f.t_s for chunk in iter(stream.read_chunk, None) for f in chunk]
    summary = stream.summary
    assert summary is not None and summary.frames_analyzed == len(times)
    assert 8 <= len(times) <= 12 and times == sorted(times) and times[-1] >= 15
    assert summary.sample_interval_s > 0.5
    assert "sampling_reduced" in {w["code"] for w in summary.warnings}
    assert summary.duration_s == pytest.approx(30.0, abs=0.2)


def test_scoring_time_does_not_count_against_the_decode_limit(portal, engine, tmp_path, monkeypatch):
    """A 3 s decode limit and a scorer that takes 0.8 s per chunk (4.8 s in all): the decoder
    waits on the pipe meanwhile, which is not decoding. (The limit leaves room for the decoding
    itself on a loaded machine.)"""
    import detect.video

    real = detect.video.find_faces

    async def slow(engine_: Any, frames: list[np.ndarray]) -> list[list[Any]]:
        import anyio

        await anyio.sleep(0.8)
        return await real(engine_, frames)

    monkeypatch.setattr(detect.video, "find_faces", slow)
    monkeypatch.setattr(media.video_files, "FILE_CHUNK_FRAMES", 1)
    monkeypatch.setattr(engine.settings, "video_decode_timeout_s", 3.0)
    monkeypatch.setattr(engine.settings, "decode_s_per_media_s", 0.01)
    body = run_video(portal, engine, on_disk(tmp_path, face_clip(), "clip.mp4"), fps=2)
    assert body["media"]["frames_analyzed"] == 6


# --- hostile and broken files --------------------------------------------------------------------


def _zip_bytes() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("clip.mp4", face_clip())
    return buffer.getvalue()


HOSTILE_VIDEOS: dict[str, tuple[Callable[[], bytes], int]] = {
    "empty": (lambda: b"", 422),
    "random-bytes": (lambda: np.random.default_rng(1).integers(0, 256, 50_000, np.uint8).tobytes(), 415),
    "zip": (_zip_bytes, 415),
    "truncated": (lambda: face_clip()[: len(face_clip()) // 2], 422),  # the index (moov) was at the end
    "header-only": (lambda: face_clip()[:48], 422),
    "corrupt": (lambda: b"\x00\x00\x00\x18ftypmp42" + bytes(5000), 422),
}


@pytest.mark.parametrize("name", list(HOSTILE_VIDEOS))
def test_hostile_video_files_are_4xx_and_leave_nothing(name, portal, engine, tmp_path, private_tmp):
    make, status = HOSTILE_VIDEOS[name]
    path = on_disk(tmp_path, make(), "upload.mp4")
    with pytest.raises(VerityError) as err:
        run_video(portal, engine, path, fps=2)
    assert err.value.status == status, err.value.message
    assert leftovers(private_tmp) == [] and decoder_children() == []


def test_file_over_the_upload_cap_is_413(portal, engine, tmp_path, monkeypatch):
    monkeypatch.setattr(engine.settings, "max_upload_bytes", 1000)
    with pytest.raises(TooLarge) as err:
        run_video(portal, engine, on_disk(tmp_path, face_clip(), "clip.mp4"))
    assert err.value.code == "file_too_large"


def test_a_decoder_that_crashes_mid_stream_fails_the_job_not_the_worker(
    portal, engine, tmp_path, private_tmp, monkeypatch
):
    """The child streams two frames, then dies: 422 decode_failed; the next file is served."""
    crash = textwrap.dedent(
        """
        import os, sys
        import media.video_decode as v
        real = v._write_message
        sent = []
        def dying(out, header, payloads):
            if "frame" in header and len(sent) == 2:
                os.abort()
            sent.append(1)
            real(out, header, payloads)
        v._write_message = dying
        v._child_main()
        """
    )
    monkeypatch.setattr(media.video_decode, "_child_command", lambda: [sys.executable, "-c", crash])
    path = on_disk(tmp_path, face_clip(), "clip.mp4")
    with pytest.raises(BadMedia) as err:
        run_video(portal, engine, path, fps=2)
    assert (err.value.status, err.value.code) == (422, "decode_failed")
    assert leftovers(private_tmp) == [] and decoder_children() == []
    monkeypatch.undo()
    assert run_video(portal, engine, path, fps=2)["media"]["frames_analyzed"] == 6


def test_a_hanging_decoder_is_killed_at_the_deadline(portal, engine, tmp_path, private_tmp, monkeypatch):
    monkeypatch.setattr(
        media.video_decode, "_child_command", lambda: [sys.executable, "-c", "import time; time.sleep(60)"]
    )
    monkeypatch.setattr(engine.settings, "video_decode_timeout_s", 3.0)
    start = time.perf_counter()
    with pytest.raises(BadMedia) as err:
        run_video(portal, engine, on_disk(tmp_path, face_clip(), "clip.mp4"), fps=2)
    assert (err.value.status, err.value.code) == (422, "decode_timeout")
    assert time.perf_counter() - start < 4
    assert leftovers(private_tmp) == [] and decoder_children() == []


HOSTILE_AUDIO: dict[str, tuple[Callable[[], bytes], int]] = {
    "empty": (lambda: b"", 422),
    "text": (lambda: b"hello, this is text\n" * 20, 415),
    "zip": (_zip_bytes, 415),
    "truncated-flac": (lambda: encode_audio(speech_like(3.0), 16_000, "flac")[:300], 422),
    "truncated-m4a": (lambda: encode_audio_ffmpeg(speech_like(3.0), 16_000, "m4a")[:2000], 422),
    "too-short": (lambda: encode_audio(speech_like(0.2), 16_000, "wav"), 422),
}


@pytest.mark.parametrize("name", list(HOSTILE_AUDIO))
def test_hostile_audio_files_are_4xx_and_leave_nothing(name, portal, engine, tmp_path, private_tmp):
    from detect.audio import detect_audio_file

    make, status = HOSTILE_AUDIO[name]
    path = on_disk(tmp_path, make(), "upload.wav")
    with pytest.raises(VerityError) as err:
        portal.call(lambda: detect_audio_file(engine, path, model_id=None))
    assert err.value.status == status, err.value.message
    assert str(path) not in err.value.message  # the worker's paths stay private
    assert leftovers(private_tmp) == [] and decoder_children() == []


def test_audio_file_over_the_job_duration_cap_is_413(tmp_path, private_tmp):
    path = on_disk(tmp_path, encode_audio_ffmpeg(speech_like(3.0), 16_000, "m4a"), "call.m4a")
    with pytest.raises(TooLarge) as err:
        open_audio_file(
            path,
            target_rate=16_000,
            max_bytes=None,
            max_duration_s=2.0,
            min_duration_s=0.5,
            timeout_s=30,
            s_per_media_s=0.5,
        )
    assert err.value.code == "audio_too_long"
    assert leftovers(private_tmp) == [] and decoder_children() == []


def test_plan_for_files_samples_long_clips_at_one_fps():
    plan = plan_sampling(
        600.0, fps=None, max_frames=None, default_max_frames=3600, max_frames_cap=3600, long_clip_fps=1
    )
    assert (plan.interval_s, plan.max_frames, plan.rule) == (1.0, 3600, "adaptive")
    hour3 = plan_sampling(
        10_800.0, fps=None, max_frames=None, default_max_frames=3600, max_frames_cap=3600, long_clip_fps=1
    )
    assert (hour3.interval_s, hour3.rule) == (3.0, "spread")
    inline = plan_sampling(600.0, fps=None, max_frames=None, default_max_frames=64, max_frames_cap=128)
    assert inline.interval_s == pytest.approx(600 / 64)  # unchanged without long_clip_fps


def test_inline_decoding_is_unchanged_by_the_streaming_loop():
    """The inline decoder still returns every sampled frame at once, thinned to its cap."""
    decoded = decode_video(
        lavfi_video(150, width=64, height=48, fps=5),
        max_bytes=32 << 20,
        max_pixels=10**7,
        max_duration_s=300,
        fps=1,
        max_frames=None,
        timeout_s=60,
        max_frames_cap=128,
        isolated=False,
    )
    assert decoded.frames_analyzed <= 128
    assert "sampling_reduced" in {w["code"] for w in decoded.warnings}


# --- memory --------------------------------------------------------------------------------------

_MEMORY_SCRIPT = """
import gc, json, resource, sys, anyio
from pathlib import Path
from config.settings import Settings
from detect.hosting import build_inprocess_engine
from detect.video import detect_video_file

def status_kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])

async def main():
    engine = build_inprocess_engine(Settings())
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from here
    base = status_kb("VmRSS")
    body = await detect_video_file(engine, Path(sys.argv[1]), fps=None, max_frames=None,
                                   strategy="temporal", model_id=None)
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"frames": body["media"]["frames_analyzed"], "base_kb": base,
                      "peak_kb": status_kb("VmHWM"), "child_peak_kb": child,
                      "decode_ms": body["timing_ms"]["decode"], "total_ms": body["timing_ms"]["total"]}))

anyio.run(main)
"""


def _h264_720p(path: Path, seconds: int) -> None:
    source = f"testsrc2=size=1280x720:rate=30:duration={seconds}"
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "lavfi", "-i", source]
    command += ["-c:v", "libx264", "-preset", "ultrafast", "-g", "250", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(command, check=True, timeout=300)


def _peak(path: Path, bentoml_home: Path) -> dict[str, Any]:
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home), "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(path)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_length(model_store, bentoml_home, tmp_path):
    """detect_video_file on 10 s and 120 s of 1280x720 H.264 (20 and 120 sampled frames), each in
    a fresh interpreter: the peak RSS of the detection (above the engine's, the kernel's peak
    counter reset in between) grows by far less than 300 MB (120 frames of 720p held at once
    would be 330 MB; all 3600 decoded ones, 10 GB), and so does the decoder child's."""
    short, long = tmp_path / "short.mp4", tmp_path / "long.mp4"
    _h264_720p(short, 10)
    _h264_720p(long, 120)
    small, large = _peak(short, bentoml_home), _peak(long, bentoml_home)
    assert (small["frames"], large["frames"]) == (20, 120)
    assert small["peak_kb"] >= small["base_kb"] and large["peak_kb"] >= large["base_kb"]  # reset worked
    growth_mb = ((large["peak_kb"] - large["base_kb"]) - (small["peak_kb"] - small["base_kb"])) / 1024
    child_growth_mb = (large["child_peak_kb"] - small["child_peak_kb"]) / 1024
    logging.getLogger(__name__).info(
        "peak RSS: 10 s %s, 120 s %s; growth %.1f MB, decoder child %.1f MB",
        small,
        large,
        growth_mb,
        child_growth_mb,
    )
    assert growth_mb <= 300, (small, large)
    assert child_growth_mb <= 100, (small, large)
