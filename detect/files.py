"""Detection on a media file at a path, whatever runs it: a job's worker (``jobs/runner.py``) and
the batch runner (``batch/``) both come here, so a file gets the same checks, options and result
whichever of them reads it.

* ``modality_of``: what a file is by its magic bytes (never its name).
* ``parse_options``: the options a job or a manifest line may give per modality (those of the
  inline routes), validated, with defaults dropped; ``check_models`` says early when one names a
  model that is not served.
* ``detect_file``: the file's result, with the job limits (durations, frames, bytes) of
  ``detect_audio_file`` / ``detect_video_file`` and the inline image cap.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from detect.engine import Engine
from errors import BadMedia, InvalidInput
from media.sniff import AUDIO_FORMATS, IMAGE_FORMATS, SNIFF_BYTES, VIDEO_FORMATS, sniff
from models.calibration import OperatingPoint

MODALITIES = ("image", "audio", "video", "text")
# Text has no magic bytes: a file is text by its name, and its content is checked when it runs.
TEXT_SUFFIXES = (".txt", ".md", ".markdown")


class _Options(BaseModel):
    # An unknown option is refused, naming it: a misspelt "fsp" must not quietly run at the default.
    model_config = ConfigDict(extra="forbid")


class ImageOptions(_Options):
    model: str | None = None
    explain: bool = False
    faces: Literal["auto", "off"] = "off"
    stability: bool = False
    operating_point: OperatingPoint | None = None
    models: list[str] | None = Field(None, description="an ensemble: two or more served image models")


class AudioOptions(_Options):
    model: str | None = None
    operating_point: OperatingPoint | None = None


class VideoOptions(_Options):
    fps: float | None = Field(None, gt=0, le=30, description="frames sampled per second")
    max_frames: int | None = Field(None, ge=1, description="most frames sampled")
    strategy: Literal["temporal", "frames"] = "temporal"
    model: str | None = Field(None, description="image model for strategy=frames")
    stability: bool = False
    operating_point: OperatingPoint | None = None


class TextOptions(_Options):
    model: str | None = None
    operating_point: OperatingPoint | None = None


OPTIONS: dict[str, type[_Options]] = {
    "image": ImageOptions,
    "audio": AudioOptions,
    "video": VideoOptions,
    "text": TextOptions,
}


def parse_options(modality: str, raw: dict[str, Any], *, max_frames_cap: int) -> dict[str, Any]:
    """``raw`` validated for ``modality``, defaults left out; ``InvalidInput`` naming the field."""
    try:
        options = OPTIONS[modality].model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"options.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(problems, code="invalid_input") from exc
    if isinstance(options, VideoOptions) and (options.max_frames or 0) > max_frames_cap:
        raise InvalidInput(
            f"max_frames is at most {max_frames_cap} for a file read in full", code="invalid_max_frames"
        )
    return options.model_dump(exclude_defaults=True)


def check_models(engine: Engine, modality: str, options: dict[str, Any]) -> None:
    """Raise now (404 ``model_not_found``, 422 ``model_not_served``, 503 ``modality_unavailable``,
    422 ``operating_point_unavailable``) rather than after the file was read, when ``options``
    (parsed) need a model not served here, or an operating point a model has not."""
    from detect.image import image_models_for

    point = options.get("operating_point")
    if modality == "video":
        if options.get("strategy", "temporal") == "frames":
            deciding = engine.image_model(options.get("model"))
        else:
            deciding = engine.video_models().head
        engine.decision(deciding, point)
    elif modality == "text":
        engine.decision(engine.text_model(options.get("model")), point)
    elif modality == "image":
        members = image_models_for(
            engine, options.get("model"), options.get("models"), explain=bool(options.get("explain"))
        )
        for served in members:
            engine.decision(served, point)
    else:
        engine.decision(engine.audio_model(options.get("model")), point)


def modality_of(path: Path) -> str | None:
    """The file's modality by its magic bytes ("image", "video", "audio"), or "text" for a
    ``.txt`` / ``.md`` file that is none of those; else None."""
    with path.open("rb") as handle:
        kind = sniff(handle.read(SNIFF_BYTES))
    if kind is None and path.suffix.lower() in TEXT_SUFFIXES:
        return "text"
    if kind in IMAGE_FORMATS:
        return "image"
    if kind in VIDEO_FORMATS:
        return "video"  # an mp4 may be audio only: the video decoder's probe says so
    if kind in AUDIO_FORMATS:
        return "audio"
    return None


def check_modality(detected: str | None, modality: str) -> None:
    """``BadMedia`` (``modality_mismatch``) unless a file detected as ``detected`` can be run as
    ``modality``. A video container may be run as audio (its audio track); any file that is no
    known media may be run as text (its bytes are checked as text then)."""
    if modality == "text" and detected in (None, "text"):
        return
    if detected is None or (detected != modality and not (detected == "video" and modality == "audio")):
        raise BadMedia(
            f"the file is not {modality} by its content (detected: {detected or 'unknown'})",
            code="modality_mismatch",
        )


async def detect_file(
    engine: Engine,
    path: Path,
    modality: str,
    options: dict[str, Any],
    *,
    detected: str | None,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """The result for the file at ``path`` run as ``modality`` with parsed ``options``.
    ``detected`` is what ``modality_of`` said of the file (the caller has asked it already, to
    choose a modality or to report it); it must fit ``modality``. Bad media raises its typed error."""
    check_modality(detected, modality)
    if modality == "text":
        from detect.text import detect_text
        from media.text import read_text_file

        payload = await anyio.to_thread.run_sync(read_text_file, path, engine.settings)
        return await detect_text(
            engine,
            payload.text,
            model_id=options.get("model"),
            text_format=payload.format,
            byte_count=payload.bytes,
            operating_point=options.get("operating_point"),
        )
    if modality == "image":
        from detect.image import detect_image
        from media.image import read_image_file

        data = await anyio.to_thread.run_sync(read_image_file, path, engine.settings.max_image_bytes)
        return await detect_image(
            engine,
            data,
            model_id=options.get("model"),
            explain=bool(options.get("explain", False)),
            faces=options.get("faces", "off"),
            stability=bool(options.get("stability", False)),
            operating_point=options.get("operating_point"),
            models=options.get("models"),
        )
    if modality == "audio":
        from detect.audio import detect_audio_file

        return await detect_audio_file(
            engine,
            path,
            model_id=options.get("model"),
            progress=progress,
            operating_point=options.get("operating_point"),
        )
    from detect.video import detect_video_file

    return await detect_video_file(
        engine,
        path,
        fps=options.get("fps"),
        max_frames=options.get("max_frames"),
        strategy=options.get("strategy", "temporal"),
        model_id=options.get("model"),
        progress=progress,
        stability=bool(options.get("stability", False)),
        operating_point=options.get("operating_point"),
    )
