"""Video files on disk (jobs): sampled frames streamed from the decoder child in chunks of
``FILE_CHUNK_FRAMES``, never the whole file in memory, and the audio track streamed through
ffmpeg's pipe. See ``media.video``'s docstring, "Files"."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from errors import BadMedia, VerityError
from media.audio_files import AudioFileInfo, AudioFileStream, pcm_stream
from media.sniff import VIDEO_FORMATS, admit_file
from media.tools import DecodeClock, undecodable
from media.video_decode import (
    DecodeJob,
    DecoderChild,
    Sampled,
    Seen,
    finish_sampled,
    restrict_ffmpeg_in_process,
    sampled_frames,
)
from media.video_probe import AUDIO_RATE, Probe, audio_command, check_probe, probe_video
from media.video_sampling import (
    TEMP_PREFIX,
    VIDEO_SEND,
    SamplingPlan,
    StreamSampler,
    VideoFrame,
    plan_sampling,
)

log = logging.getLogger(__name__)
# Files (jobs): frames per chunk handed to the caller, and a byte cap per chunk for large frames
# (8 frames of 720p are 22 MB; of 1920x1080, 50 MB). A chunk is also one batch of the encoder, and
# ONNX Runtime's arena keeps the largest batch's activations for the life of the session (~25 MB
# per full-size EfficientNet crop): at 16 a 10-minute clip's worker peaked 419 MB above a 10 s
# clip's (10 frames at 1 fps: one smaller batch), at 8 both clips fill the same batches
# (bench/jobs.py); batching more crops gains nothing per crop on 2 CPU cores.
FILE_CHUNK_FRAMES = 8
FILE_CHUNK_BYTES = 64 * 1024 * 1024
FILE_LONG_CLIP_FPS = 1.0  # files without a requested fps: past 60 s, 1 fps up to the frame budget


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
        job: DecodeJob,
        plan: SamplingPlan,
        probe: Probe,
        clock: DecodeClock,
        child: DecoderChild | None,
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
        self._sampler: StreamSampler | None = None
        self._seen = Seen()
        self._frames: Iterator[VideoFrame] | None = None
        if child is None:
            self._sampler = StreamSampler(plan, probe.duration_s)
            self._frames = sampled_frames(job, clock, self._sampler, self._seen)
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
            sampled = finish_sampled(
                self._job, self._seen, self._sampler.interval, [], kept=self._sampler.kept
            )
        except VerityError:
            raise
        except Exception as exc:
            # cv2.error and friends on hostile bytes: all of them mean the file is broken.
            raise undecodable(self.kind, "corrupt_video", exc) from exc
        self.summary = self._summarize(sampled, self._sampler.doubled)
        return None

    def _end_from_child(self, header: dict[str, Any]) -> None:
        try:
            kept, doubled = int(header.pop("kept")), int(header.pop("doubled"))
            for key in ("ok", "end", "frames"):
                header.pop(key, None)
            sampled = Sampled(frames=[], **header)
        except (ValueError, KeyError, TypeError) as exc:
            raise BadMedia("the video decoder returned a malformed answer", code="decode_failed") from exc
        if kept != self._received:
            raise BadMedia("the video decoder lost frames on the way", code="decode_failed")
        self.summary = self._summarize(sampled, doubled)

    def _summarize(self, sampled: Sampled, doubled: int) -> VideoSummary:
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
    ``StreamSampler``. Time limit: ``timeout_s`` or ``s_per_media_s`` per declared (then decoded)
    second, whichever is longer, counting only the decoder's time (``DecodeClock``)."""
    path = Path(path).resolve()  # absolute: FFmpeg never takes the name for a protocol
    kind = admit_file(path, max_bytes=max_bytes, allowed=VIDEO_FORMATS, noun="video", send=VIDEO_SEND)
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
        child: DecoderChild | None = None
        if isolated:
            # Only the child's stderr lives here: the file is read where it is.
            workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix=TEMP_PREFIX)))
            # Its CPU cap fits the longest decode this file may be given (its limit grows with
            # the duration, which the probe below has not read yet).
            child = DecoderChild(kind, workdir, cpu_s=3 * max(timeout_s, max_duration_s * s_per_media_s) + 10)
            cleanup.callback(child.stop)  # after the directory's removal is registered: runs first
        probe = probe_video(path, kind, clock.deadline, timeout_s)
        check_probe(probe, kind, max_pixels=max_pixels, max_duration_s=max_duration_s)
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
        job = DecodeJob(
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
            restrict_ffmpeg_in_process()
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
    kind = admit_file(path, max_bytes=None, allowed=VIDEO_FORMATS, noun="video", send=VIDEO_SEND)
    clock = DecodeClock(timeout_s, per_media_s=s_per_media_s)
    probe = probe_video(path, kind, clock.deadline, timeout_s)
    if not probe.has_audio:
        return None
    if probe.duration_s is not None:
        clock.allow(probe.duration_s)
    # The track as the inline path scores it: its WAV's samples, so the format reads "wav".
    info = AudioFileInfo(format="wav", original_rate=AUDIO_RATE, channels=1, claimed_frames=None)
    return pcm_stream(
        audio_command(path, kind, None, max_duration_s),
        kind=kind,
        info=info,
        source=path,
        sample_format="s16le",
        target_rate=AUDIO_RATE,
        max_duration_s=None,  # -t cuts it there
        min_duration_s=min_duration_s,
        clock=clock,
    )
