"""ffprobe on an untrusted video (time-limited, file protocol only, the sniffed demuxer): size,
declared duration, audio track; the pixel and duration caps checked before anything decodes; the
ffmpeg command that extracts the audio track."""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from errors import BadMedia, TooLarge, UnsupportedMedia, VerityError
from media.tools import input_format, run_tool

log = logging.getLogger(__name__)
AUDIO_RATE = 16_000  # extract_audio's output rate: the audio model's
FFPROBE_DEMUXERS = {"mp4": "mov", "mov": "mov", "avi": "avi", "webm": "matroska", "matroska": "matroska"}
_INVALID_SIZE = re.compile(r"Picture size (\d{1,9})x(\d{1,9}) is invalid")


def audio_command(path: Path, kind: str, target: Path | None, max_duration_s: float | None) -> list[str]:
    """ffmpeg: the first audio track as 16 kHz mono 16-bit PCM, a WAV at ``target`` or, without
    one, headerless samples on stdout (the same samples)."""
    command = [_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error"]
    command += ["-protocol_whitelist", "file", *input_format(FFPROBE_DEMUXERS[kind]), "-i", str(path)]
    command += ["-map", "0:a:0", "-vn", "-sn", "-dn"]
    if max_duration_s is not None:
        command += ["-t", f"{max_duration_s:g}"]
    command += ["-af", "aresample=resampler=soxr:precision=20", "-ac", "1", "-ar", str(AUDIO_RATE)]
    if target is None:
        return [*command, "-c:a", "pcm_s16le", "-f", "s16le", "pipe:1"]
    return [*command, "-c:a", "pcm_s16le", "-f", "wav", str(target)]


# --- probe ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
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


def probe_video(path: Path, kind: str, deadline: float, timeout_s: float) -> Probe:
    """Streams and container of ``path`` by ffprobe with the demuxer named, file protocol only."""
    command = [_tool("ffprobe"), "-v", "error", "-protocol_whitelist", "file"]
    command += [
        *input_format(FFPROBE_DEMUXERS[kind]),
        "-show_streams",
        "-show_format",
        "-of",
        "json",
        str(path),
    ]
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
    return Probe(
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


def check_probe(probe: Probe, kind: str, *, max_pixels: int, max_duration_s: float) -> None:
    check_pixels(kind, probe.width, probe.height, max_pixels)
    if probe.duration_s is not None and probe.duration_s > max_duration_s:
        raise too_long(kind, max_duration_s, probe.duration_s)


def check_pixels(kind: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise TooLarge(
            f"the {kind} video is {width}x{height} = {width * height} pixels per frame; "
            f"the limit is {max_pixels}",
            code="too_many_pixels",
            details={"width": width, "height": height, "max_pixels": max_pixels},
        )
    if width <= 0 or height <= 0:
        raise BadMedia(f"the {kind} video declares no frame size", code="corrupt_video")


def too_long(kind: str, max_duration_s: float, duration_s: float | None = None) -> TooLarge:
    said = f"{duration_s:.1f} s long" if duration_s is not None else "longer than that"
    details: dict[str, object] = {"max_duration_s": max_duration_s}
    if duration_s is not None:
        details["duration_s"] = round(duration_s, 3)
    return TooLarge(
        f"the {kind} video is {said}; the limit is {max_duration_s:g} s",
        code="video_too_long",
        details=details,
    )
