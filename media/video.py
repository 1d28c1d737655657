"""Decode untrusted video into a few upright RGB frames, sampled while streaming, or fail with a
4xx error (issue 5).

MP4, MOV, AVI, WebM and MKV, told by magic bytes (``media.sniff``). The bytes go to a private
temporary file (always removed): MP4 often keeps its index at the end, which a pipe cannot seek to.

1. **Probe** (ffprobe, time-limited subprocess, file protocol only, demuxer named from the
   sniffed type): the video stream's size, the declared duration and whether there is an audio
   track. The pixel cap (413) and the duration cap (413) are checked here, before OpenCV decodes
   anything: opening a stream already decodes a frame, and a 16000x16000 one is ~770 MB.
2. **Decode** with OpenCV's FFmpeg backend: ``grab()`` every frame (demux + decode only), and
   ``retrieve()`` (colour conversion) only the frames the sampling plan keeps, so memory is bounded
   by ``max_frames`` whatever the length. Times come from the frames' own timestamps
   (``CAP_PROP_POS_MSEC``), not from the declared frame rate or count, which are wrong or missing
   for WebM, AVI and variable-frame-rate files.
3. **Isolation** (``isolated=True``, the default): step 2 runs in a child process that the parent
   kills at the deadline. A time check in the read loop cannot interrupt one call that hangs inside
   a decoder, and a decoder that crashes on hostile bytes would take the worker with it; in a child
   both only fail the request (422). The child costs one interpreter start with numpy and cv2
   (~0.2-0.4 s). In-process decoding (``isolated=False``) checks the deadline after every frame and
   gives FFmpeg's I/O interrupt callback the remaining time (``CAP_PROP_OPEN/READ_TIMEOUT_MSEC``);
   the residual risk there is a single decode call that hangs (it keeps a thread busy after the
   request failed) or crashes (it kills the worker).

Sampling (``plan_sampling``): the request's ``fps``; without one the clip's declared duration
decides: <= 10 s at 2 fps, <= 60 s at 1 fps, longer clips ``max_frames`` spread evenly over the
whole clip. A frame is kept when it is the first at or after a target time ``k * interval``. If
more than ``max_frames`` frames would be kept (requested fps too dense, duration unknown or
understated), the interval doubles and every other kept frame is dropped, so the frames stay spread
over the whole clip and never exceed ``max_frames``. ``max_frames`` is capped by the caller's hard
cap (settings ``video_max_frames_cap``).

Rotation: OpenCV's automatic rotation (``CAP_PROP_ORIENTATION_AUTO``) is switched off and the
sampled frames are rotated here by ``CAP_PROP_ORIENTATION_META``, exactly once and independent of
the OpenCV version's default; width and height are reported upright (after rotation).

Files (jobs: uploads of up to hundreds of MB, hours long), ``open_video_file``: the same probe,
checks, decode loop (``_sampled_frames``), isolation and protections, with three differences.

* The file is read where it lies (type from its first bytes, the child opens the path) and the
  frames are **streamed**: the child writes each sampled frame to its stdout as soon as it has
  it (protocol above ``_child_main``), the parent hands them out in chunks (``read_chunk``,
  ``FILE_CHUNK_FRAMES``) and keeps none. The pipe holds the child back while the caller scores a
  chunk, so memory does not grow with the length: measured with ``detect_video_file`` on
  1280x720 H.264, the worker's peak over its idle RSS was +154 MB for 10 s (20 frames) and
  +197 MB for 120 s (120 frames), bounded by two chunks of frames; the decoder child peaked at
  87 MB and 95 MB (tests/unit/test_long_media.py).
* Sampling: the plan from the declared duration with the job's frame cap, 1 fps past 60 s
  (``long_clip_fps``); frames handed out cannot be thinned afterwards, so past the declared
  duration (or with none) ``_StreamSampler`` spends the rest of the budget geometrically
  (``sampling_reduced``).
* The time limit is ``timeout_s`` or ``s_per_media_s`` per declared second, whichever is longer,
  raised further as the decoded timestamps pass the declared duration, and it counts only
  decoding: time the child waits on the pipe for the caller's scoring is not spent
  (``media.tools.DecodeClock``, in the parent and the child alike).

Seek or grab for sparse sampling: measured on 120 s of ``testsrc2`` at 1280x720, 30 fps, H.264
(``ffmpeg -f lavfi -i testsrc2=size=1280x720:rate=30 -t 120 -c:v libx264 -preset veryfast
-g 250|30 -pix_fmt yuv420p``), 1 fps (120 frames), OpenCV 4.14 on the 2 shared cores, three
runs: grab() every frame and retrieve() the sampled ones gave 26-32 sampled frames/s (~800-960
decoded frames/s) for both GOP lengths; seeking (``CAP_PROP_POS_MSEC`` or ``POS_FRAMES`` set
before each sampled frame; OpenCV then decodes forward from the keyframe before it) gave 6.0-6.8
frames/s with ``-g 250`` (4.2-4.8x slower: ~125 frames decoded per seek instead of 30) and
23-30 frames/s with ``-g 30`` (0-12% slower). Grabbing is kept: faster at 1 fps, simpler, and
every frame's timestamp is seen (the frame-rate, frame-count and duration checks rely on it).
Sparser sampling favours seeking with short GOPs (one frame every 3 s: 18.6 vs 10.6 frames/s
with ``-g 30``, but 6.5 vs 11.1 with ``-g 250``); jobs sample sparser than 1 fps only past an
hour (3600 frames), so that is left for when such files matter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import cv2
import numpy as np

from errors import BadMedia, InvalidInput, TooLarge, UnsupportedMedia, VerityError
from media.audio import AudioFileInfo, AudioFileStream, pcm_stream
from media.sniff import VIDEO_FORMATS, admit, admit_file, sniff
from media.tools import DecodeClock, decode_timeout, run_tool

log = logging.getLogger(__name__)

TEMP_PREFIX = "verity-video-"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Adaptive sampling (no fps in the request), by declared duration.
SHORT_CLIP_S, SHORT_CLIP_FPS = 10.0, 2.0
MEDIUM_CLIP_S, MEDIUM_CLIP_FPS = 60.0, 1.0
MAX_REQUEST_FPS = 60.0  # denser than this samples (nearly) every frame of most videos anyway
MAX_STREAM_FPS = 1000.0  # decoded frames per second of duration past this are an attack, not video
AUDIO_RATE = 16_000  # extract_audio's output rate: the audio model's
# Files (jobs): frames per chunk handed to the caller, and a byte cap per chunk for large frames
# (8 frames of 720p are 22 MB; of 1920x1080, 50 MB). A chunk is also one batch of the encoder, and
# ONNX Runtime's arena keeps the largest batch's activations for the life of the session (~25 MB
# per full-size EfficientNet crop): at 16 a 10-minute clip's worker peaked 419 MB above a 10 s
# clip's (10 frames at 1 fps: one smaller batch), at 8 both clips fill the same batches
# (bench/jobs.py); batching more crops gains nothing per crop on 2 CPU cores.
FILE_CHUNK_FRAMES = 8
FILE_CHUNK_BYTES = 64 * 1024 * 1024
FILE_LONG_CLIP_FPS = 1.0  # files without a requested fps: past 60 s, 1 fps up to the frame budget
_VIDEO_SEND = "MP4, MOV, AVI, WebM or MKV"

_TIME_EPS = 1e-3  # a frame 1 ms before a target time (float rounding of pts) counts as on it
_DEFAULT_FRAME_S = 1 / 25  # frame spacing assumed when neither timestamps nor fps can be trusted
_FFPROBE_DEMUXERS = {"mp4": "mov", "mov": "mov", "avi": "avi", "webm": "matroska", "matroska": "matroska"}
# avformat options for OpenCV's FFmpeg backend (key;value|key;value): local files only (a crafted
# playlist-like file cannot make FFmpeg open URLs) and only the container demuxers named here.
_ALL_DEMUXERS = "mov,avi,matroska"
_INVALID_SIZE = re.compile(r"Picture size (\d{1,9})x(\d{1,9}) is invalid")
_ROTATIONS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
_ERRORS: dict[int, type[VerityError]] = {413: TooLarge, 415: UnsupportedMedia, 422: BadMedia}
_KILL_GRACE_S = 0.5  # the child checks a deadline this much earlier than the parent kills it


@dataclass(frozen=True)
class VideoFrame:
    index: int  # position in the decoded stream, 0-based
    t_s: float  # presentation time, seconds from the stream's start
    rgb: np.ndarray  # uint8, [height, width, 3], upright


@dataclass(frozen=True)
class DecodedVideo:
    frames: list[VideoFrame]
    format: str
    codec: str
    width: int  # of the video, upright (after rotation); frames may be downscaled: frame_scale
    height: int
    fps: float  # measured from the timestamps when there are two frames or more
    duration_s: float  # decoded: last frame's time plus one frame
    frame_count: int  # frames decoded (grabbed), not the container's claim
    rotation: int  # 0, 90, 180 or 270 degrees clockwise, applied to the frames
    has_audio: bool
    sample_interval_s: float  # the interval the frames were finally sampled at
    frame_scale: float = 1.0  # frame pixels per video pixel (< 1 when downscaled to max_side)
    audio_wav: bytes | None = None  # 16 kHz mono WAV of the audio track, when asked for and present
    warnings: list[dict[str, str]] = field(default_factory=list)

    @property
    def frames_analyzed(self) -> int:
        return len(self.frames)


@dataclass(frozen=True)
class SamplingPlan:
    interval_s: float  # keep the first frame at or after every multiple of this
    max_frames: int
    rule: str  # how the interval was chosen, for logs and the result's media block


def plan_sampling(
    duration_s: float | None,
    *,
    fps: float | None,
    max_frames: int | None,
    default_max_frames: int,
    max_frames_cap: int,
    long_clip_fps: float | None = None,
) -> SamplingPlan:
    """The sampling interval for a clip of ``duration_s`` (None: unknown) and the frame budget.

    ``fps`` (request) wins; without it: <= 10 s -> 2 fps, <= 60 s -> 1 fps, longer -> ``max_frames``
    spread evenly (or ``long_clip_fps`` when given: files in jobs, whose budget is thousands of
    frames), unknown -> 2 fps (the streaming thinning then halves it as often as the clip's real
    length needs). When ``duration_s * fps`` frames would exceed ``max_frames``, the interval
    becomes ``duration_s / max_frames``: the frames cover the whole clip rather than its start.
    """
    if fps is not None and not 0 < fps <= MAX_REQUEST_FPS:
        raise InvalidInput(f"fps must be in (0, {MAX_REQUEST_FPS:g}]", code="invalid_fps")
    if max_frames is not None and max_frames < 1:
        raise InvalidInput("max_frames must be at least 1", code="invalid_max_frames")
    budget = min(max_frames or default_max_frames, max_frames_cap)
    known = duration_s if duration_s is not None and math.isfinite(duration_s) and duration_s > 0 else None
    if fps is not None:
        interval, rule = 1 / fps, "requested"
    elif known is None or known <= SHORT_CLIP_S:
        interval, rule = 1 / SHORT_CLIP_FPS, "adaptive"
    elif known <= MEDIUM_CLIP_S:
        interval, rule = 1 / MEDIUM_CLIP_FPS, "adaptive"
    elif long_clip_fps is not None:
        interval, rule = 1 / long_clip_fps, "adaptive"
    else:
        interval, rule = known / budget, "spread"
    if known is not None and math.ceil(known / interval - _TIME_EPS) > budget:
        interval, rule = known / budget, "spread"
    return SamplingPlan(interval_s=interval, max_frames=budget, rule=rule)


class _Sampler:
    """Keeps the first frame at or after each target ``k * interval``, at most ``max_frames``.

    One more frame than the budget doubles the interval and keeps only the first frame of each new
    slot, so the kept frames stay spread over everything seen so far (a clip whose length was
    unknown or understated) and memory never holds more than ``max_frames + 1`` frames.
    """

    def __init__(self, plan: SamplingPlan) -> None:
        self.interval = plan.interval_s
        self.max_frames = plan.max_frames
        self.next_t = 0.0
        self.kept: list[VideoFrame] = []
        self.thinned = 0

    def wants(self, t_s: float) -> bool:
        return t_s >= self.next_t - _TIME_EPS

    def keep(self, frame: VideoFrame) -> None:
        self.kept.append(frame)
        while len(self.kept) > self.max_frames:
            self.interval *= 2
            self.thinned += 1
            slots: set[int] = set()
            thinned = []
            for kept in self.kept:
                slot = math.floor(kept.t_s / self.interval + _TIME_EPS)
                if slot not in slots:
                    slots.add(slot)
                    thinned.append(kept)
            self.kept = thinned
        self.next_t = (math.floor(frame.t_s / self.interval + _TIME_EPS) + 1) * self.interval


class _StreamSampler:
    """Keeps the first frame at or after each target ``k * interval``, for a stream whose frames
    are handed over as they come: a kept frame is never taken back, and never more than
    ``max_frames`` are kept in all.

    Within the declared duration the plan's interval holds (the plan fits the budget). Past it,
    or from the start when nothing is declared, the rest of the budget is spent geometrically:
    each time half of what was left at the last change is used, the interval doubles. Any length
    then fits: every halving of the budget covers as much time as the one before (a 2 fps start
    with 3600 frames covers ~15 minutes per step, three hours in 12 steps), and the frames stay
    spread over the whole stream, denser towards its start.
    """

    def __init__(self, plan: SamplingPlan, declared_s: float | None) -> None:
        self.interval = plan.interval_s
        self.max_frames = plan.max_frames
        self.declared_s = declared_s if declared_s is not None and declared_s > 0 else None
        self.next_t = 0.0
        self.kept = 0
        self.doubled = 0
        self._double_at: int | None = None  # kept count at which the interval next doubles

    def wants(self, t_s: float) -> bool:
        return self.kept < self.max_frames and t_s >= self.next_t - _TIME_EPS

    def keep(self, frame: VideoFrame) -> None:
        self.kept += 1
        if self.declared_s is None or frame.t_s > self.declared_s:
            if self._double_at is None:
                self._double_at = self.kept + (self.max_frames - self.kept) // 2
            if self.kept >= self._double_at:
                self.interval *= 2
                self.doubled += 1
                self._double_at = self.kept + max(1, (self.max_frames - self.kept) // 2)
        self.next_t = (math.floor(frame.t_s / self.interval + _TIME_EPS) + 1) * self.interval


# --- public entry points -------------------------------------------------------------------------


def decode_video(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    max_duration_s: float,
    fps: float | None,
    max_frames: int | None,
    timeout_s: float,
    default_max_frames: int = 64,
    max_frames_cap: int = 128,
    max_side: int | None = None,
    isolated: bool = True,
    with_audio: bool = False,
) -> DecodedVideo:
    """Decode ``data`` (any of ``VIDEO_FORMATS``, told by magic bytes) into sampled RGB frames.

    Raises ``UnsupportedMedia`` (415) for other types or without ffprobe, ``TooLarge`` (413) over
    ``max_bytes``, ``max_pixels`` (width x height) or ``max_duration_s`` (declared or decoded),
    ``InvalidInput`` (422) for a bad ``fps``/``max_frames``, ``BadMedia`` (422) for empty, corrupt,
    frameless or video-less files and for anything past ``timeout_s``; never anything else. A
    truncated file whose start decodes is a result with a ``truncated`` warning. ``max_side``
    downscales sampled frames whose longer side exceeds it (``frame_scale`` says by how much).
    ``with_audio`` also extracts the audio track (``extract_audio``'s WAV, in ``audio_wav``) while
    the frames decode; an unreadable track is a warning, not an error.
    """
    kind = admit(data, max_bytes=max_bytes, allowed=VIDEO_FORMATS, noun="video", send=_VIDEO_SEND)
    started = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    try:
        # Validate the request's sampling options before spending a probe on the file.
        plan_sampling(
            None,
            fps=fps,
            max_frames=max_frames,
            default_max_frames=default_max_frames,
            max_frames_cap=max_frames_cap,
        )
        with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as workdir, contextlib.ExitStack() as cleanup:
            # Exits before the directory goes: children are killed and reaped first.
            source = Path(workdir) / f"input.{kind}"
            source.write_bytes(data)
            child: _DecoderChild | None = None
            audio: _AudioAlongside | None = None
            if isolated:
                child = _DecoderChild(kind, Path(workdir))
                cleanup.callback(child.stop)
            probe = _probe(source, kind, deadline, timeout_s)
            _check_probe(probe, kind, max_pixels=max_pixels, max_duration_s=max_duration_s)
            plan = plan_sampling(
                probe.duration_s,
                fps=fps,
                max_frames=max_frames,
                default_max_frames=default_max_frames,
                max_frames_cap=max_frames_cap,
            )
            job = _Job(
                path=str(source),
                kind=kind,
                interval_s=plan.interval_s,
                max_frames=plan.max_frames,
                max_pixels=max_pixels,
                max_duration_s=max_duration_s,
                max_side=max_side,
                declared_duration_s=probe.duration_s,
                timeout_s=timeout_s,
            )
            if with_audio and probe.has_audio:
                audio = _AudioAlongside(source, kind, max_duration_s)
                cleanup.callback(audio.stop)
            if child:
                sampled = child.run(job, deadline)
            else:
                _restrict_ffmpeg_in_process()
                sampled = _decode_frames_or_422(job, deadline)
            audio_wav, audio_warning = audio.finish(deadline) if audio else (None, None)
    except VerityError as exc:
        log.info(
            "video rejected: %s",
            exc.message,
            extra={"format": kind, "bytes": len(data), "status": exc.status, "code": exc.code},
        )
        raise
    warnings = list(sampled.warnings)
    if audio_warning:
        warnings.append(audio_warning)
    if fps is not None and sampled.interval_s > 1 / fps * (1 + 1e-6):
        warnings.append(
            {
                "code": "sampling_reduced",
                "message": f"sampled every {sampled.interval_s:.3g} s instead of at {fps:g} fps to stay "
                f"within {plan.max_frames} frames over the whole clip",
            }
        )
    if max_frames is not None and max_frames > max_frames_cap:
        warnings.append({"code": "max_frames_capped", "message": f"max_frames is capped at {max_frames_cap}"})
    decoded = DecodedVideo(
        frames=sampled.frames,
        format=kind,
        codec=probe.codec,
        width=sampled.width,
        height=sampled.height,
        fps=sampled.fps,
        duration_s=sampled.duration_s,
        frame_count=sampled.frame_count,
        rotation=sampled.rotation,
        has_audio=probe.has_audio,
        sample_interval_s=sampled.interval_s,
        frame_scale=sampled.frame_scale,
        audio_wav=audio_wav,
        warnings=warnings,
    )
    log.debug(
        "video decoded",
        extra={
            "format": kind,
            "bytes": len(data),
            "width": decoded.width,
            "height": decoded.height,
            "duration_s": round(decoded.duration_s, 3),
            "frames_decoded": decoded.frame_count,
            "frames_analyzed": decoded.frames_analyzed,
            "sampling": plan.rule,
            "isolated": isolated,
            "decode_ms": round((time.perf_counter() - started) * 1000, 2),
        },
    )
    return decoded


def extract_audio(
    source: bytes | str | Path, *, timeout_s: float, max_duration_s: float | None = None
) -> bytes | None:
    """The first audio track of a video as a 16 kHz mono 16-bit WAV, or None when it has none.

    ``source`` is the video's bytes (sniffed; 415 unless a ``VIDEO_FORMATS`` type) or a local
    file. ffmpeg mixes down and resamples (soxr, as media/audio.py does), under ``timeout_s``, file
    protocol only; ``max_duration_s`` cuts the audio there. The WAV goes to a file, not a pipe, so
    its header carries real sizes. Raises ``BadMedia`` (422) when the track cannot be decoded or
    the time limit passes; the caller decides whether that fails the video or only its audio.
    """
    deadline = time.monotonic() + timeout_s
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as workdir:
        if isinstance(source, bytes):
            kind = sniff(source)
            if kind not in VIDEO_FORMATS:
                raise UnsupportedMedia(f"not a supported video (detected: {kind or 'unknown'})")
            path = Path(workdir) / f"input.{kind}"
            path.write_bytes(source)
        else:
            path = Path(source)
            with path.open("rb") as handle:
                kind = sniff(handle.read(64))
            if kind not in VIDEO_FORMATS:
                raise UnsupportedMedia(f"not a supported video (detected: {kind or 'unknown'})")
        if not _probe(path, kind, deadline, timeout_s).has_audio:
            return None
        target = Path(workdir) / "audio.wav"
        command = _audio_command(path, kind, target, max_duration_s)
        run_tool(
            command,
            kind=kind,
            deadline=deadline,
            timeout_s=timeout_s,
            source=path,
            code="corrupt_audio",
            needed_by="video",
        )
        return target.read_bytes()


def _audio_command(path: Path, kind: str, target: Path | None, max_duration_s: float | None) -> list[str]:
    """ffmpeg: the first audio track as 16 kHz mono 16-bit PCM, a WAV at ``target`` or, without
    one, headerless samples on stdout (the same samples)."""
    command = [_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error"]
    command += ["-protocol_whitelist", "file", "-f", _FFPROBE_DEMUXERS[kind], "-i", str(path)]
    command += ["-map", "0:a:0", "-vn", "-sn", "-dn"]
    if max_duration_s is not None:
        command += ["-t", f"{max_duration_s:g}"]
    command += ["-af", "aresample=resampler=soxr:precision=20", "-ac", "1", "-ar", str(AUDIO_RATE)]
    if target is None:
        return [*command, "-c:a", "pcm_s16le", "-f", "s16le", "pipe:1"]
    return [*command, "-c:a", "pcm_s16le", "-f", "wav", str(target)]


class _AudioAlongside:
    """extract_audio's ffmpeg, started before the frames are decoded and collected after them, so
    the two run at the same time on the same temporary file. A failure here is a warning on the
    video, not an error: the frames are still worth a verdict."""

    def __init__(self, path: Path, kind: str, max_duration_s: float) -> None:
        self.target = path.parent / "audio.wav"
        self.kind = kind
        self.log_path = path.parent / "audio.log"
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                _audio_command(path, kind, self.target, max_duration_s),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )

    def finish(self, deadline: float) -> tuple[bytes | None, dict[str, str] | None]:
        try:
            code = self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return None, {"code": "audio_skipped", "message": "the audio track took too long to decode"}
        if code != 0:
            lines = self.log_path.read_text("utf-8", "replace").strip().splitlines()
            log.info("audio track not decodable: %s", lines[-1][:300] if lines else code)
            return None, {"code": "audio_unreadable", "message": "the audio track could not be decoded"}
        return self.target.read_bytes(), None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


# --- files on disk (jobs): frames streamed in chunks ------------------------------------------------


@dataclass(frozen=True)
class VideoSummary:
    """What ``decode_video`` says of a clip besides its frames, once a file's stream has ended."""

    format: str
    codec: str
    width: int  # upright
    height: int
    fps: float
    duration_s: float  # decoded
    frame_count: int  # frames decoded (grabbed)
    rotation: int
    has_audio: bool
    sample_interval_s: float  # the interval at the end (it doubles when a stream runs long)
    frame_scale: float
    frames_analyzed: int  # frames handed out, in all
    warnings: list[dict[str, str]]


class VideoFileStream:
    """The sampled frames of a video file, handed out in chunks as they are decoded (see the
    module docstring, "Files"). ``read_chunk`` blocks (call it from a worker thread) and raises
    the file's 4xx errors as soon as they show; ``summary`` is set once it has returned None.
    ``abort`` (any thread) makes a pending ``read_chunk`` give up at once; ``close`` (always; or
    the ``with`` block) kills and reaps the child and removes the temporary directory. Frames
    already handed out are the caller's: nothing here keeps them."""

    def __init__(
        self,
        *,
        job: _Job,
        plan: SamplingPlan,
        probe: _Probe,
        clock: DecodeClock,
        child: _DecoderChild | None,
        cleanup: contextlib.ExitStack,
        requested: tuple[float | None, int | None, int],
        chunk_frames: int,
        chunk_bytes: int,
    ) -> None:
        self.kind = job.kind
        self.plan = plan
        self.declared_s = probe.duration_s
        self.has_audio = probe.has_audio
        self.clock = clock
        self.summary: VideoSummary | None = None
        self.aborted = False
        self._job = job
        self._probe = probe
        self._child = child
        self._cleanup = cleanup
        self._requested = requested  # (fps, max_frames, max_frames_cap) as asked
        self._chunk_frames = max(1, chunk_frames)
        self._chunk_bytes = chunk_bytes
        self._received = 0
        self._sampler: _StreamSampler | None = None
        self._seen = _Seen()
        self._frames: Iterator[VideoFrame] | None = None
        if child is None:
            self._sampler = _StreamSampler(plan, probe.duration_s)
            self._frames = _sampled_frames(job, clock, self._sampler, self._seen)
        clock.pause()  # until the first read: the caller's time is not the decoder's

    def read_chunk(self) -> list[VideoFrame] | None:
        """Up to ``chunk_frames`` frames (and ``chunk_bytes`` of pixels), in time order; None once
        the stream has ended (then ``summary`` is set)."""
        if self.summary is not None:
            return None
        chunk: list[VideoFrame] = []
        size = 0
        self.clock.resume()
        try:
            while len(chunk) < self._chunk_frames and size < self._chunk_bytes:
                frame = self._next()
                if frame is None:
                    break
                chunk.append(frame)
                size += frame.rgb.nbytes
        except VerityError as exc:
            if not self.aborted:  # an aborted stream's error is the abort's echo
                log.info(
                    "video file rejected: %s",
                    exc.message,
                    extra={"format": self.kind, "status": exc.status, "code": exc.code},
                )
            raise
        finally:
            self.clock.pause()
        return chunk or None

    def _next(self) -> VideoFrame | None:
        if self._child is not None:
            item = self._child.receive(self._job, self.clock)
            if isinstance(item, VideoFrame):
                self._received += 1
                if self._received > self.plan.max_frames:
                    raise BadMedia("the video decoder returned too many frames", code="decode_failed")
                return item
            self._end_from_child(item)
            return None
        assert self._frames is not None and self._sampler is not None
        try:
            frame = next(self._frames, None)
            if frame is not None:
                self._received += 1
                return frame
            sampled = _finish_sampled(
                self._job, self._seen, self._sampler.interval, [], kept=self._sampler.kept
            )
        except VerityError:
            raise
        except Exception as exc:
            # cv2.error and friends on hostile bytes: all of them mean the file is broken.
            raise BadMedia(f"the {self.kind} file could not be decoded: {exc}", code="corrupt_video") from exc
        self.summary = self._summarize(sampled, self._sampler.doubled)
        return None

    def _end_from_child(self, header: dict[str, Any]) -> None:
        try:
            kept, doubled = int(header.pop("kept")), int(header.pop("doubled"))
            for key in ("ok", "end", "frames"):
                header.pop(key, None)
            sampled = _Sampled(frames=[], **header)
        except (ValueError, KeyError, TypeError) as exc:
            raise BadMedia("the video decoder returned a malformed answer", code="decode_failed") from exc
        if kept != self._received:
            raise BadMedia("the video decoder lost frames on the way", code="decode_failed")
        self.summary = self._summarize(sampled, doubled)

    def _summarize(self, sampled: _Sampled, doubled: int) -> VideoSummary:
        fps, max_frames, cap = self._requested
        warnings = list(sampled.warnings)
        if doubled:
            warnings.append(
                {
                    "code": "sampling_reduced",
                    "message": f"the video runs longer than it declares: sampled every "
                    f"{sampled.interval_s:.3g} s by its end to stay within {self.plan.max_frames} frames",
                }
            )
        elif fps is not None and sampled.interval_s > 1 / fps * (1 + 1e-6):
            warnings.append(
                {
                    "code": "sampling_reduced",
                    "message": f"sampled every {sampled.interval_s:.3g} s instead of at {fps:g} fps to stay "
                    f"within {self.plan.max_frames} frames over the whole clip",
                }
            )
        if max_frames is not None and max_frames > cap:
            warnings.append({"code": "max_frames_capped", "message": f"max_frames is capped at {cap}"})
        return VideoSummary(
            format=self.kind,
            codec=self._probe.codec,
            width=sampled.width,
            height=sampled.height,
            fps=sampled.fps,
            duration_s=sampled.duration_s,
            frame_count=sampled.frame_count,
            rotation=sampled.rotation,
            has_audio=self._probe.has_audio,
            sample_interval_s=sampled.interval_s,
            frame_scale=sampled.frame_scale,
            frames_analyzed=self._received,
            warnings=warnings,
        )

    def abort(self) -> None:
        """Stop decoding now, from any thread: a pending ``read_chunk`` fails at once."""
        self.aborted = True
        self.clock.cancel()
        if self._child is not None and self._child.process.poll() is None:
            self._child.process.kill()  # reaped by close()

    def close(self) -> None:
        if self._frames is not None:
            close = getattr(self._frames, "close", None)
            if close is not None:
                close()  # releases the capture
        self._cleanup.close()

    def __enter__(self) -> VideoFileStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_video_file(
    path: Path,
    *,
    max_bytes: int | None,
    max_pixels: int,
    max_duration_s: float,
    fps: float | None,
    max_frames: int | None,
    timeout_s: float,
    s_per_media_s: float,
    max_frames_cap: int,
    default_max_frames: int | None = None,
    max_side: int | None = None,
    isolated: bool = True,
    chunk_frames: int | None = None,
    chunk_bytes: int | None = None,
) -> VideoFileStream:
    """A stream of the sampled frames of the video file at ``path``, read from the path itself
    (never into memory, never copied). Raises what ``decode_video`` raises, here for what the
    size, magic bytes and probe tell, later from ``read_chunk``. Sampling: ``plan_sampling`` with
    ``long_clip_fps`` 1 and ``default_max_frames`` (default: ``max_frames_cap``), then
    ``_StreamSampler``. Time limit: ``timeout_s`` or ``s_per_media_s`` per declared (then decoded)
    second, whichever is longer, counting only the decoder's time (``DecodeClock``)."""
    path = Path(path).resolve()  # absolute: FFmpeg never takes the name for a protocol
    kind = admit_file(path, max_bytes=max_bytes, allowed=VIDEO_FORMATS, noun="video", send=_VIDEO_SEND)
    clock = DecodeClock(timeout_s, per_media_s=s_per_media_s)
    default_max_frames = default_max_frames or max_frames_cap
    cleanup = contextlib.ExitStack()
    try:
        # Validate the request's sampling options before spending a probe on the file.
        plan_sampling(
            None,
            fps=fps,
            max_frames=max_frames,
            default_max_frames=default_max_frames,
            max_frames_cap=max_frames_cap,
        )
        child: _DecoderChild | None = None
        if isolated:
            # Only the child's stderr lives here: the file is read where it is.
            workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix=TEMP_PREFIX)))
            child = _DecoderChild(kind, workdir)
            cleanup.callback(child.stop)  # after the directory's removal is registered: runs first
        probe = _probe(path, kind, clock.deadline, timeout_s)
        _check_probe(probe, kind, max_pixels=max_pixels, max_duration_s=max_duration_s)
        if probe.duration_s is not None:
            clock.allow(probe.duration_s)
        plan = plan_sampling(
            probe.duration_s,
            fps=fps,
            max_frames=max_frames,
            default_max_frames=default_max_frames,
            max_frames_cap=max_frames_cap,
            long_clip_fps=FILE_LONG_CLIP_FPS,
        )
        job = _Job(
            path=str(path),
            kind=kind,
            interval_s=plan.interval_s,
            max_frames=plan.max_frames,
            max_pixels=max_pixels,
            max_duration_s=max_duration_s,
            max_side=max_side,
            declared_duration_s=probe.duration_s,
            timeout_s=clock.limit_s,
            stream=True,
            s_per_media_s=s_per_media_s,
        )
        if child is not None:
            child.start(job, clock)
        else:
            _restrict_ffmpeg_in_process()
    except BaseException as exc:
        cleanup.close()
        if isinstance(exc, VerityError):
            log.info(
                "video file rejected: %s",
                exc.message,
                extra={"format": kind, "status": exc.status, "code": exc.code},
            )
        raise
    log.debug(
        "video file opened",
        extra={"format": kind, "declared_s": probe.duration_s, "sampling": plan.rule, "isolated": isolated},
    )
    return VideoFileStream(
        job=job,
        plan=plan,
        probe=probe,
        clock=clock,
        child=child,
        cleanup=cleanup,
        requested=(fps, max_frames, max_frames_cap),
        chunk_frames=chunk_frames or FILE_CHUNK_FRAMES,
        chunk_bytes=chunk_bytes or FILE_CHUNK_BYTES,
    )


def open_audio_track(
    path: Path,
    *,
    max_duration_s: float,
    min_duration_s: float,
    timeout_s: float,
    s_per_media_s: float,
) -> AudioFileStream | None:
    """The first audio track of the video file at ``path`` as a stream of the samples
    ``extract_audio``'s WAV holds (16 kHz mono 16-bit PCM, read as libsndfile reads it), straight
    from ffmpeg's pipe in blocks: no WAV in memory or on disk. None when the file has no audio
    track. Cut at ``max_duration_s``; the time limit grows with the declared duration as
    ``open_video_file``'s does. Raises what ``extract_audio`` raises (415, 422)."""
    path = Path(path).resolve()
    kind = admit_file(path, max_bytes=None, allowed=VIDEO_FORMATS, noun="video", send=_VIDEO_SEND)
    clock = DecodeClock(timeout_s, per_media_s=s_per_media_s)
    probe = _probe(path, kind, clock.deadline, timeout_s)
    if not probe.has_audio:
        return None
    if probe.duration_s is not None:
        clock.allow(probe.duration_s)
    # The track as the inline path scores it: its WAV's samples, so the format reads "wav".
    info = AudioFileInfo(format="wav", original_rate=AUDIO_RATE, channels=1, claimed_frames=None)
    return pcm_stream(
        _audio_command(path, kind, None, max_duration_s),
        kind=kind,
        info=info,
        source=path,
        sample_format="s16le",
        target_rate=AUDIO_RATE,
        max_duration_s=None,  # -t cuts it there
        min_duration_s=min_duration_s,
        clock=clock,
    )


# --- probe ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Probe:
    width: int
    height: int
    codec: str
    duration_s: float | None
    has_audio: bool


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        log.error("%s not found on PATH: video cannot be probed (make system-deps)", name)
        raise UnsupportedMedia(
            f"video needs {name}, which is not installed on this server", code="decoder_unavailable"
        )
    return path


def _probe(path: Path, kind: str, deadline: float, timeout_s: float) -> _Probe:
    """Streams and container of ``path`` by ffprobe with the demuxer named, file protocol only."""
    command = [_tool("ffprobe"), "-v", "error", "-protocol_whitelist", "file"]
    command += ["-f", _FFPROBE_DEMUXERS[kind], "-show_streams", "-show_format", "-of", "json", str(path)]
    result = run_tool(
        command,
        kind=kind,
        deadline=deadline,
        timeout_s=timeout_s,
        source=path,
        code="corrupt_video",
        needed_by="video",
    )
    try:
        probe = json.loads(result.stdout or b"{}")
        streams = [s for s in probe.get("streams") or [] if isinstance(s, dict)]
        videos = [
            s
            for s in streams
            if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
        ]
        if not videos:
            raise BadMedia(f"the {kind} file has no video stream", code="no_video")
        video = videos[0]
        declared = [
            float(value)
            for value in ((probe.get("format") or {}).get("duration"), video.get("duration"))
            if value not in (None, "N/A")
        ]
    except VerityError:
        raise
    except (ValueError, TypeError, AttributeError) as exc:
        raise BadMedia(f"the {kind} file could not be probed", code="corrupt_video") from exc
    duration = max((d for d in declared if math.isfinite(d) and d > 0), default=None)
    width, height = _int(video.get("width")), _int(video.get("height"))
    if width <= 0 or height <= 0:
        # FFmpeg refuses sizes whose frame would pass INT_MAX bytes (a 30000x30000 header) and then
        # reports 0x0; its complaint still names the size the file claims.
        claimed = _INVALID_SIZE.search(result.stderr.decode("utf-8", "replace"))
        if claimed:
            width, height = int(claimed[1]), int(claimed[2])
    return _Probe(
        width=width,
        height=height,
        codec=str(video.get("codec_name") or "unknown"),
        duration_s=duration,
        has_audio=any(s.get("codec_type") == "audio" for s in streams),
    )


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


def _check_probe(probe: _Probe, kind: str, *, max_pixels: int, max_duration_s: float) -> None:
    _check_pixels(kind, probe.width, probe.height, max_pixels)
    if probe.duration_s is not None and probe.duration_s > max_duration_s:
        raise _too_long(kind, max_duration_s, probe.duration_s)


def _check_pixels(kind: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise TooLarge(
            f"the {kind} video is {width}x{height} = {width * height} pixels per frame; "
            f"the limit is {max_pixels}",
            code="too_many_pixels",
            details={"width": width, "height": height, "max_pixels": max_pixels},
        )
    if width <= 0 or height <= 0:
        raise BadMedia(f"the {kind} video declares no frame size", code="corrupt_video")


def _too_long(kind: str, max_duration_s: float, duration_s: float | None = None) -> TooLarge:
    said = f"{duration_s:.1f} s long" if duration_s is not None else "longer than that"
    details: dict[str, object] = {"max_duration_s": max_duration_s}
    if duration_s is not None:
        details["duration_s"] = round(duration_s, 3)
    return TooLarge(
        f"the {kind} video is {said}; the limit is {max_duration_s:g} s",
        code="video_too_long",
        details=details,
    )


# --- the streaming decode (in the child, or in-process) -------------------------------------------


@dataclass(frozen=True)
class _Job:
    """Everything the decode needs; JSON-serialisable, since the child gets it on its stdin."""

    path: str
    kind: str
    interval_s: float
    max_frames: int
    max_pixels: int
    max_duration_s: float
    max_side: int | None
    declared_duration_s: float | None
    timeout_s: float  # the request's limit, for messages (files: the decode limit at the start)
    budget_s: float = 0.0  # what is left of it when the child starts (set by _DecoderChild.run)
    stream: bool = False  # files: frames go out as they are sampled (_child_stream)
    s_per_media_s: float = 0.0  # files: the limit grows by this per second of media decoded
    elapsed_s: float = 0.0  # files: decoding time the parent had spent when the child started


@dataclass
class _Sampled:
    frames: list[VideoFrame]
    width: int
    height: int
    fps: float
    duration_s: float
    frame_count: int
    rotation: int
    interval_s: float
    frame_scale: float
    warnings: list[dict[str, str]]

    def meta(self) -> dict[str, Any]:
        out = asdict(self)
        out["frames"] = [{"index": f.index, "t_s": f.t_s, "shape": list(f.rgb.shape)} for f in self.frames]
        return out


def _capture_options(kind: str | None) -> str:
    demuxers = _FFPROBE_DEMUXERS[kind] if kind else _ALL_DEMUXERS
    return f"protocol_whitelist;file|format_whitelist;{demuxers}"


def _restrict_ffmpeg_in_process() -> None:
    # OpenCV reads this at every open; one value for all formats, since threads share the process.
    # An operator's own OPENCV_FFMPEG_CAPTURE_OPTIONS wins (the child always gets the strict one).
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", _capture_options(None))


def _decode_frames_or_422(job: _Job, deadline: float) -> _Sampled:
    try:
        return _decode_frames(job, deadline)
    except VerityError:
        raise
    except Exception as exc:
        # cv2.error and friends on hostile bytes: all of them mean the file is broken.
        raise BadMedia(f"the {job.kind} file could not be decoded: {exc}", code="corrupt_video") from exc


def _decode_frames(job: _Job, deadline: float) -> _Sampled:
    """grab() every frame, retrieve() the sampled ones; the deadline is checked after every frame.
    The frames are thinned to ``max_frames`` over the whole clip as they come (``_Sampler``)."""
    sampler = _Sampler(SamplingPlan(job.interval_s, job.max_frames, ""))
    seen = _Seen()
    for _ in _sampled_frames(job, DecodeClock.until(deadline), sampler, seen):
        pass  # the sampler keeps (and thins) them
    return _finish_sampled(job, seen, sampler.interval, sampler.kept, kept=len(sampler.kept))


@dataclass
class _Seen:
    """What the decode loop saw of the stream, filled in as it goes."""

    width: int = 0  # upright
    height: int = 0
    rotation: int = 0
    scale: float = 1.0
    sane_fps: float = 0.0  # the declared rate when it is believable, else 0
    count: int = 0  # frames grabbed
    first_t: float = -math.inf
    last_t: float = -math.inf
    synthesized: int = 0  # frames whose time was estimated
    retrieve_failures: int = 0


class _Sampling(Protocol):
    interval: float

    def wants(self, t_s: float) -> bool: ...

    def keep(self, frame: VideoFrame) -> None: ...


def _sampled_frames(job: _Job, clock: DecodeClock, sampler: _Sampling, seen: _Seen) -> Iterator[VideoFrame]:
    """grab() every frame, retrieve() each one ``sampler`` wants, tell it, and yield it; the clock
    is checked after every frame. The capture is released when the generator ends or is closed."""
    kind = job.kind
    if clock.expired():
        raise decode_timeout(kind, job.timeout_s)  # the probe used it all: not a broken file
    remaining_ms = max(1, int(clock.remaining() * 1000))
    # FFmpeg's interrupt callback gives up an open or a read that blocks longer than this.
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, remaining_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, remaining_ms]
    capture = cv2.VideoCapture(job.path, cv2.CAP_FFMPEG, params)
    try:
        if not capture.isOpened():
            raise BadMedia(f"the {kind} file could not be opened as video", code="corrupt_video")
        capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)  # rotated below, once, for sampled frames only
        coded_w = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        coded_h = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        _check_pixels(kind, coded_w, coded_h, job.max_pixels)
        rotation = seen.rotation = _rotation(capture.get(cv2.CAP_PROP_ORIENTATION_META))
        seen.width, seen.height = (coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h)
        stream_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        sane_fps = stream_fps if math.isfinite(stream_fps) and 1 <= stream_fps <= MAX_STREAM_FPS else 0.0
        seen.sane_fps = sane_fps
        scale = 1.0
        if job.max_side and max(seen.width, seen.height) > job.max_side:
            scale = job.max_side / max(seen.width, seen.height)
        seen.scale = scale
        max_grabs = math.ceil(job.max_duration_s * MAX_STREAM_FPS) + 1
        while True:
            if clock.expired():
                raise decode_timeout(kind, max(job.timeout_s, clock.limit_s))
            if not capture.grab():
                break
            seen.count += 1
            count = seen.count
            if count > max_grabs:
                raise TooLarge(
                    f"the {kind} video holds more than {MAX_STREAM_FPS:g} frames per second of its "
                    f"{job.max_duration_s:g} s limit",
                    code="too_many_frames",
                )
            t = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
            if not math.isfinite(t) or t <= seen.last_t or (count == 1 and t < 0):
                # Missing or non-increasing timestamps (some AVI/raw streams): step by the frame rate.
                t = 0.0 if count == 1 else seen.last_t + (1 / sane_fps if sane_fps else _DEFAULT_FRAME_S)
                seen.synthesized += count > 1
            if count == 1:
                seen.first_t = t
            seen.last_t = t
            if t > job.max_duration_s:
                raise _too_long(kind, job.max_duration_s)
            clock.allow(t)  # a file in a job earns decoding time by its length
            if not sampler.wants(t):
                continue
            ok, bgr = capture.retrieve()
            if not ok or bgr is None or bgr.ndim != 3:
                seen.retrieve_failures += 1
                continue
            frame = VideoFrame(index=count - 1, t_s=round(t, 6), rgb=_upright_rgb(bgr, rotation, scale))
            sampler.keep(frame)
            yield frame
    finally:
        capture.release()


def _finish_sampled(
    job: _Job, seen: _Seen, interval_s: float, frames: list[VideoFrame], *, kept: int
) -> _Sampled:
    """The stream's measured rate, duration and warnings once it has ended (``kept`` frames were
    sampled; ``frames`` are those still held: all of them inline, none when streamed)."""
    kind = job.kind
    count = seen.count
    if count == 0 or not kept:
        raise BadMedia(f"the {kind} file contains no decodable video frames", code="no_frames")
    span = seen.last_t - seen.first_t
    fps = (count - 1) / span if count > 1 and span > 0 else seen.sane_fps
    frame_s = 1 / fps if fps > 0 else _DEFAULT_FRAME_S
    duration = seen.last_t + frame_s
    warnings: list[dict[str, str]] = []
    if seen.synthesized:
        warnings.append(
            {
                "code": "timestamps_missing",
                "message": f"{seen.synthesized} frames carry no usable timestamp; their times are "
                "estimated from the frame rate",
            }
        )
    if seen.retrieve_failures:
        warnings.append(
            {
                "code": "frames_skipped",
                "message": f"{seen.retrieve_failures} sampled frames could not be decoded",
            }
        )
    declared = job.declared_duration_s
    if declared is not None and duration < 0.9 * declared - 0.5:
        warnings.append(
            {
                "code": "truncated",
                "message": f"the file declares {declared:.2f} s but only {duration:.2f} s could be "
                "decoded; it looks truncated",
            }
        )
    return _Sampled(
        frames=frames,
        width=seen.width,
        height=seen.height,
        fps=round(fps, 4),
        duration_s=round(duration, 6),
        frame_count=count,
        rotation=seen.rotation,
        interval_s=interval_s,
        frame_scale=seen.scale,
        warnings=warnings,
    )


def _rotation(meta: float) -> int:
    """CAP_PROP_ORIENTATION_META (degrees clockwise to display upright) as 0/90/180/270."""
    if not math.isfinite(meta):
        return 0
    return round(meta / 90) % 4 * 90


def _upright_rgb(bgr: np.ndarray, rotation: int, scale: float) -> np.ndarray:
    if scale < 1:  # shrink before rotating: fewer pixels to move
        size = (max(1, round(bgr.shape[1] * scale)), max(1, round(bgr.shape[0] * scale)))
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    if rotation:
        bgr = cv2.rotate(bgr, _ROTATIONS[rotation])
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


# --- the child process -----------------------------------------------------------------------------
#
# The job comes as JSON on the child's stdin (EOF without one: nothing to do). Every message on
# its stdout is a 4-byte little-endian length and a JSON header, maybe followed by raw bytes.
# Inline (``stream`` false), one answer at the end: {"ok": true, ...meta, "frames": [{index, t_s,
# shape}]} or {"ok": false, status, code, message, details}, then for a result the frames' raw
# RGB bytes in order. Files (``stream`` true), one message per sampled frame as soon as it is
# sampled: {"frame": [index, t_s, height, width], "next_t": s} and its height*width*3 RGB bytes;
# then {"end": true, "ok": true, ...meta, "kept": n, "doubled": k} or the error header with
# "end". The child blocks on the pipe while the parent scores what it has, so at most one frame
# is in flight there; "next_t" (the next sampling target) lets the parent's deadline grow with
# the media the child may decode before its next message, never less than the child's own.
# stderr (FFmpeg's and Python's messages) goes to a file in the private work directory, read
# only for the log on failure.

_MAX_HEADER_BYTES = 1 << 20  # a streamed message header is ~100 bytes; more is a broken child


def _child_command() -> list[str]:
    return [sys.executable, "-c", "from media.video import _child_main; _child_main()"]


class _DecoderChild:
    """The decoding child. Started before the probe, so that its interpreter start and numpy/cv2
    imports (~0.3 s) overlap ffprobe's run; it then waits for its job on stdin. Killed and reaped
    by ``stop`` whatever happened."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.stderr_path = workdir / "decoder.log"
        env = {**os.environ, "OPENCV_FFMPEG_CAPTURE_OPTIONS": _capture_options(kind)}
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                _child_command(),
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )

    def run(self, job: _Job, deadline: float) -> _Sampled:
        """Inline: the job, then its one answer, all before ``deadline``."""
        assert self.process.stdout is not None
        with self._failures(job, job.timeout_s):
            # The child's own deadline is a little earlier than the kill, so a slow file gets its
            # clear 422 from the child, with the child's own warnings.
            budget = deadline - time.monotonic() - _KILL_GRACE_S
            self._send(dataclasses.replace(job, budget_s=budget))
            return self._read_answer(self.process.stdout.fileno(), job, deadline)

    def start(self, job: _Job, clock: DecodeClock) -> None:
        """Files: the job, with the parent's clock as it stands; frames then come by ``receive``."""
        with self._failures(job, clock.limit_s):
            self._send(dataclasses.replace(job, elapsed_s=clock.elapsed(), timeout_s=clock.limit_s))

    def receive(self, job: _Job, clock: DecodeClock) -> VideoFrame | dict[str, Any]:
        """Files: the next streamed frame, or the end header (an error header raises its error)."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        with self._failures(job, clock.limit_s):
            (size,) = struct.unpack("<I", _read_exact(fd, 4, clock.deadline))
            if size > _MAX_HEADER_BYTES:
                raise ValueError(f"a {size}-byte message header")
            header = json.loads(_read_exact(fd, size, clock.deadline))
            if "frame" not in header:
                if not header.get("ok"):
                    raise _error_from(header)
                return header
            index, t_s, height, width = header["frame"]
            if not all(isinstance(v, int) for v in (index, height, width)):
                raise TypeError(f"a frame described as {header['frame']}")
            if not (height >= 1 and width >= 1 and width * height <= job.max_pixels):
                raise ValueError(f"a {width}x{height} frame")
            clock.allow(float(header["next_t"]))
            buffer = _read_exact(fd, height * width * 3, clock.deadline)
            image = np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3)
            return VideoFrame(index=index, t_s=float(t_s), rgb=image)

    def _send(self, job: _Job) -> None:
        process = self.process
        assert process.stdin is not None
        try:
            process.stdin.write(json.dumps(asdict(job)).encode())
            process.stdin.close()
        except OSError as exc:  # the child died before it read its job
            raise _ChildGone from exc

    @contextlib.contextmanager
    def _failures(self, job: _Job, limit_s: float) -> Iterator[None]:
        """The child's failures as the request's errors: past the deadline 422 ``decode_timeout``
        (the caller's cleanup kills it), dead 422 ``decode_failed``, nonsense 422 too."""
        try:
            yield
        except _Deadline as exc:
            log.warning("video decoder timed out after %g s; killed", limit_s, extra={"format": self.kind})
            raise decode_timeout(self.kind, limit_s) from exc
        except _ChildGone as exc:
            returncode = self.stop()
            tail = self.stderr_path.read_bytes()[-2000:].decode("utf-8", "replace").replace(job.path, "input")
            log.warning(
                "video decoder died (exit %s) on a %s file: %s",
                returncode,
                self.kind,
                tail,
                extra={"format": self.kind},
            )
            raise BadMedia(
                f"the {self.kind} file crashed the video decoder; it is corrupt or hostile",
                code="decode_failed",
            ) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise BadMedia("the video decoder returned a malformed answer", code="decode_failed") from exc

    @staticmethod
    def _read_answer(fd: int, job: _Job, deadline: float) -> _Sampled:
        (size,) = struct.unpack("<I", _read_exact(fd, 4, deadline))
        header = json.loads(_read_exact(fd, size, deadline))
        if not header.get("ok"):
            raise _error_from(header)
        if len(header["frames"]) > job.max_frames:
            raise BadMedia("the video decoder returned too many frames", code="decode_failed")
        frames = []
        for item in header["frames"]:
            height, width, channels = (int(v) for v in item["shape"])
            if channels != 3 or width * height > job.max_pixels:
                raise BadMedia("the video decoder returned a malformed frame", code="decode_failed")
            buffer = _read_exact(fd, height * width * 3, deadline)
            image = np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3)
            frames.append(VideoFrame(index=int(item["index"]), t_s=float(item["t_s"]), rgb=image))
        header["frames"] = frames
        header.pop("ok")
        header.pop("end", None)
        return _Sampled(**header)

    def stop(self) -> int:
        """Kill (a no-op after a clean exit) and reap: no child outlives its request."""
        if self.process.poll() is None:
            self.process.kill()
        returncode = self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None and not pipe.closed:
                try:
                    pipe.close()
                except OSError:  # stdin with unflushed bytes to a dead child
                    continue
        return returncode


def _error_from(header: dict[str, Any]) -> VerityError:
    """The error a child's error header describes (never anything but a 4xx)."""
    error = _ERRORS.get(int(header.get("status", 422)), BadMedia)
    return error(str(header.get("message")), code=header.get("code"), details=header.get("details") or {})


class _Deadline(Exception):
    pass


class _ChildGone(Exception):
    pass


def _read_exact(fd: int, size: int, deadline: float) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    done = 0
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while done < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Deadline
        # poll(), not select(): a busy server's descriptors can be numbered past FD_SETSIZE.
        if not poller.poll(math.ceil(remaining * 1000)):
            raise _Deadline
        got = os.readv(fd, [view[done:]])
        if got == 0:
            raise _ChildGone
        done += got
    return buffer


def _child_main() -> None:
    """Entry point of the decoding child: one job on stdin, the answer on (the original) stdout."""
    answer = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to the log file, never into the protocol
    request = sys.stdin.buffer.read()
    if not request:
        return  # the probe refused the file: nothing to decode
    payloads: list[np.ndarray] = []
    try:
        job = _Job(**json.loads(request))
        if job.stream:
            header = _child_stream(job, answer)
        else:
            deadline = time.monotonic() + job.budget_s
            sampled = _decode_frames(job, deadline)
            header = {"ok": True, **sampled.meta()}
            payloads = [frame.rgb for frame in sampled.frames]
    except VerityError as exc:
        header = {"ok": False, "status": exc.status, "code": exc.code, "message": exc.message}
        header["details"] = exc.details
    except Exception as exc:  # noqa: BLE001 - every failure of the decoder is the file's, as a 422
        header = {
            "ok": False,
            "status": 422,
            "code": "corrupt_video",
            "message": f"the video could not be decoded: {exc}",
        }
    header["end"] = True
    _write_message(answer, header, payloads)


def _child_stream(job: _Job, answer: BinaryIO) -> dict[str, Any]:
    """Files: every sampled frame out as soon as it is sampled; the end header is returned. Time
    blocked on the pipe (the parent scoring earlier frames) does not count against the limit."""
    clock = DecodeClock(
        job.timeout_s, per_media_s=job.s_per_media_s, elapsed_s=job.elapsed_s, margin_s=_KILL_GRACE_S
    )
    sampler = _StreamSampler(SamplingPlan(job.interval_s, job.max_frames, ""), job.declared_duration_s)
    seen = _Seen()
    for frame in _sampled_frames(job, clock, sampler, seen):
        height, width = frame.rgb.shape[:2]
        clock.pause()
        _write_message(
            answer, {"frame": [frame.index, frame.t_s, height, width], "next_t": sampler.next_t}, [frame.rgb]
        )
        clock.resume()
    sampled = _finish_sampled(job, seen, sampler.interval, [], kept=sampler.kept)
    return {"ok": True, **sampled.meta(), "kept": sampler.kept, "doubled": sampler.doubled}


def _write_message(out: BinaryIO, header: dict[str, Any], payloads: list[np.ndarray]) -> None:
    encoded = json.dumps(header).encode()
    out.write(struct.pack("<I", len(encoded)) + encoded)
    for image in payloads:
        out.write(memoryview(np.ascontiguousarray(image)).cast("B"))
    out.flush()
