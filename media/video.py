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
checks, decode loop (``media.video_decode._sampled_frames``), isolation and protections, with
three differences.

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
  duration (or with none) ``StreamSampler`` spends the rest of the budget geometrically
  (``sampling_reduced``).
* The time limit is ``timeout_s`` or ``s_per_media_s`` per declared second, whichever is longer,
  raised further as the decoded timestamps pass the declared duration, and it counts only
  decoding: time the child waits on the pipe for the caller's scoring is not spent
  (``media.tools.DecodeClock``, in the parent and the child alike).

Modules: this one holds the entry points for bytes (``decode_video``, ``extract_audio``) and
re-exports the rest; ``media.video_sampling`` (the plan and the samplers), ``media.video_probe``
(ffprobe, caps, the audio-extraction command), ``media.video_decode`` (the decode loop and the
child process with its protocol), ``media.video_files`` (files: ``open_video_file``,
``open_audio_track``).

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
import logging
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from errors import UnsupportedMedia, VerityError
from media import sandbox
from media.sniff import VIDEO_FORMATS, admit, sniff
from media.tools import run_tool
from media.video_decode import DecodeJob, DecoderChild, decode_frames_or_422, restrict_ffmpeg_in_process
from media.video_files import FILE_CHUNK_FRAMES, VideoFileStream, open_audio_track, open_video_file
from media.video_probe import audio_command, check_probe, probe_video
from media.video_sampling import TEMP_PREFIX, VIDEO_SEND, SamplingPlan, VideoFrame, plan_sampling

log = logging.getLogger(__name__)

__all__ = [
    "FILE_CHUNK_FRAMES",
    "TEMP_PREFIX",
    "DecodedVideo",
    "SamplingPlan",
    "VideoFileStream",
    "VideoFrame",
    "decode_video",
    "extract_audio",
    "open_audio_track",
    "open_video_file",
    "plan_sampling",
]


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
    kind = admit(data, max_bytes=max_bytes, allowed=VIDEO_FORMATS, noun="video", send=VIDEO_SEND)
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
            child: DecoderChild | None = None
            audio: _AudioAlongside | None = None
            if isolated:
                child = DecoderChild(kind, Path(workdir), cpu_s=3 * timeout_s + 10)
                cleanup.callback(child.stop)
            probe = probe_video(source, kind, deadline, timeout_s)
            check_probe(probe, kind, max_pixels=max_pixels, max_duration_s=max_duration_s)
            plan = plan_sampling(
                probe.duration_s,
                fps=fps,
                max_frames=max_frames,
                default_max_frames=default_max_frames,
                max_frames_cap=max_frames_cap,
            )
            job = DecodeJob(
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
                restrict_ffmpeg_in_process()
                sampled = decode_frames_or_422(job, deadline)
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
        if not probe_video(path, kind, deadline, timeout_s).has_audio:
            return None
        target = Path(workdir) / "audio.wav"
        command = audio_command(path, kind, target, max_duration_s)
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
                audio_command(path, kind, self.target, max_duration_s),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                env=sandbox.child_env(),
                preexec_fn=sandbox.limits(3 * max_duration_s + 10),
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
