"""The decode loop (OpenCV's FFmpeg backend: grab() every frame, retrieve() the sampled ones,
upright RGB, timestamps from the frames) and the isolated child process that runs it, answering
all frames at once (inline) or streaming them (files). See ``media.video`` for why a child."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import select
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import cv2
import numpy as np

from errors import BadMedia, TooLarge, UnsupportedMedia, VerityError
from media import sandbox
from media.tools import DecodeClock, decode_timeout, undecodable
from media.video_probe import FFPROBE_DEMUXERS, check_pixels, too_long
from media.video_sampling import MAX_STREAM_FPS, Sampler, SamplingPlan, StreamSampler, VideoFrame

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parent.parent
_DEFAULT_FRAME_S = 1 / 25  # frame spacing assumed when neither timestamps nor fps can be trusted
# avformat options for OpenCV's FFmpeg backend (key;value|key;value): local files only (a crafted
# playlist-like file cannot make FFmpeg open URLs) and only the container demuxers named here.
_ALL_DEMUXERS = "mov,avi,matroska"
_ROTATIONS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
_ERRORS: dict[int, type[VerityError]] = {413: TooLarge, 415: UnsupportedMedia, 422: BadMedia}
_KILL_GRACE_S = 0.5  # the child checks a deadline this much earlier than the parent kills it


# --- the streaming decode (in the child, or in-process) -------------------------------------------


@dataclass(frozen=True)
class DecodeJob:
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
    budget_s: float = 0.0  # what is left of it when the child starts (set by DecoderChild.run)
    stream: bool = False  # files: frames go out as they are sampled (_child_stream)
    s_per_media_s: float = 0.0  # files: the limit grows by this per second of media decoded
    elapsed_s: float = 0.0  # files: decoding time the parent had spent when the child started


@dataclass
class Sampled:
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


def _capture_options(kind: str | None, operator: str = "") -> str:
    """avformat options for OpenCV (``key;value|key;value``): local files only, only the sniffed
    demuxer (or the known ones), no QuickTime external references. An operator's own options are
    kept, but never in place of these three."""
    demuxers = FFPROBE_DEMUXERS[kind] if kind else _ALL_DEMUXERS
    ours = {"protocol_whitelist": "file", "format_whitelist": demuxers, "enable_drefs": "0"}
    theirs = [item for item in operator.split("|") if item and item.split(";", 1)[0] not in ours]
    return "|".join([*theirs, *(f"{key};{value}" for key, value in ours.items())])


def restrict_ffmpeg_in_process() -> None:
    # OpenCV reads this at every open; one value for all formats, since threads share the process.
    operator = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS", "")
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = _capture_options(None, operator)


def decode_frames_or_422(job: DecodeJob, deadline: float) -> Sampled:
    try:
        return _decode_frames(job, deadline)
    except VerityError:
        raise
    except Exception as exc:
        # cv2.error and friends on hostile bytes: all of them mean the file is broken.
        raise undecodable(job.kind, "corrupt_video", exc) from exc


def _decode_frames(job: DecodeJob, deadline: float) -> Sampled:
    """grab() every frame, retrieve() the sampled ones; the deadline is checked after every frame.
    The frames are thinned to ``max_frames`` over the whole clip as they come (``Sampler``)."""
    sampler = Sampler(SamplingPlan(job.interval_s, job.max_frames, ""))
    seen = Seen()
    for _ in sampled_frames(job, DecodeClock.until(deadline), sampler, seen):
        pass  # the sampler keeps (and thins) them
    return finish_sampled(job, seen, sampler.interval, sampler.kept, kept=len(sampler.kept))


@dataclass
class Seen:
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


def sampled_frames(
    job: DecodeJob, clock: DecodeClock, sampler: _Sampling, seen: Seen
) -> Iterator[VideoFrame]:
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
        check_pixels(kind, coded_w, coded_h, job.max_pixels)
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
                raise too_long(kind, job.max_duration_s)
            clock.allow(t)  # a file in a job earns decoding time by its length
            if not sampler.wants(t):
                continue
            ok, bgr = capture.retrieve()
            if not ok or bgr is None or bgr.ndim != 3:
                seen.retrieve_failures += 1
                continue
            # The header's size is not the frames' size: a stream may change resolution midway,
            # so every sampled frame is held to the pixel cap and scaled by its own size.
            frame_h, frame_w = bgr.shape[:2]
            check_pixels(kind, frame_w, frame_h, job.max_pixels)
            scale = min(1.0, job.max_side / max(frame_w, frame_h)) if job.max_side else 1.0
            frame = VideoFrame(index=count - 1, t_s=round(t, 6), rgb=_upright_rgb(bgr, rotation, scale))
            sampler.keep(frame)
            yield frame
    finally:
        capture.release()


def finish_sampled(
    job: DecodeJob, seen: Seen, interval_s: float, frames: list[VideoFrame], *, kept: int
) -> Sampled:
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
    return Sampled(
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
    return [sys.executable, "-c", "from media.video_decode import _child_main; _child_main()"]


class DecoderChild:
    """The decoding child. Started before the probe, so that its interpreter start and numpy/cv2
    imports (~0.3 s) overlap ffprobe's run; it then waits for its job on stdin. Killed and reaped
    by ``stop`` whatever happened."""

    def __init__(self, kind: str, workdir: Path, cpu_s: float) -> None:
        self.kind = kind
        self.stderr_path = workdir / "decoder.log"
        # No secret of the service's in its environment, and kernel limits (media/sandbox.py).
        env = sandbox.child_env({"OPENCV_FFMPEG_CAPTURE_OPTIONS": _capture_options(kind)})
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                _child_command(),
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                preexec_fn=sandbox.limits(cpu_s),
            )

    def run(self, job: DecodeJob, deadline: float) -> Sampled:
        """Inline: the job, then its one answer, all before ``deadline``."""
        assert self.process.stdout is not None
        with self._failures(job, job.timeout_s):
            # The child's own deadline is a little earlier than the kill, so a slow file gets its
            # clear 422 from the child, with the child's own warnings.
            budget = deadline - time.monotonic() - _KILL_GRACE_S
            self._send(dataclasses.replace(job, budget_s=budget))
            return self._read_answer(self.process.stdout.fileno(), job, deadline)

    def start(self, job: DecodeJob, clock: DecodeClock) -> None:
        """Files: the job, with the parent's clock as it stands; frames then come by ``receive``."""
        with self._failures(job, clock.limit_s):
            self._send(dataclasses.replace(job, elapsed_s=clock.elapsed(), timeout_s=clock.limit_s))

    def receive(self, job: DecodeJob, clock: DecodeClock) -> VideoFrame | dict[str, Any]:
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

    def _send(self, job: DecodeJob) -> None:
        process = self.process
        assert process.stdin is not None
        try:
            process.stdin.write(json.dumps(asdict(job)).encode())
            process.stdin.close()
        except OSError as exc:  # the child died before it read its job
            raise _ChildGone from exc

    @contextlib.contextmanager
    def _failures(self, job: DecodeJob, limit_s: float) -> Iterator[None]:
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
    def _read_answer(fd: int, job: DecodeJob, deadline: float) -> Sampled:
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
        return Sampled(**header)

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
    kind = "video"
    try:
        job = DecodeJob(**json.loads(request))
        kind = job.kind
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
            "message": undecodable(kind, "corrupt_video", exc).message,
        }
    header["end"] = True
    _write_message(answer, header, payloads)


def _child_stream(job: DecodeJob, answer: BinaryIO) -> dict[str, Any]:
    """Files: every sampled frame out as soon as it is sampled; the end header is returned. Time
    blocked on the pipe (the parent scoring earlier frames) does not count against the limit."""
    clock = DecodeClock(
        job.timeout_s, per_media_s=job.s_per_media_s, elapsed_s=job.elapsed_s, margin_s=_KILL_GRACE_S
    )
    sampler = StreamSampler(SamplingPlan(job.interval_s, job.max_frames, ""), job.declared_duration_s)
    seen = Seen()
    for frame in sampled_frames(job, clock, sampler, seen):
        height, width = frame.rgb.shape[:2]
        clock.pause()
        _write_message(
            answer, {"frame": [frame.index, frame.t_s, height, width], "next_t": sampler.next_t}, [frame.rgb]
        )
        clock.resume()
    sampled = finish_sampled(job, seen, sampler.interval, [], kept=sampler.kept)
    return {"ok": True, **sampled.meta(), "kept": sampler.kept, "doubled": sampler.doubled}


def _write_message(out: BinaryIO, header: dict[str, Any], payloads: list[np.ndarray]) -> None:
    encoded = json.dumps(header).encode()
    out.write(struct.pack("<I", len(encoded)) + encoded)
    for image in payloads:
        out.write(memoryview(np.ascontiguousarray(image)).cast("B"))
    out.flush()
