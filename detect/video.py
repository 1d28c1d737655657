"""POST /v1/detect/video: sampled frames -> faces -> per-frame or temporal scores -> timeline.

Strategies (``?strategy=``):

* ``temporal`` (default): the largest face of each sampled frame is cropped and encoded by the
  video model's CNN encoder (``FrameEncoder``, batched across frames and requests); the sequence
  of feature vectors, in time order, is cut into windows of the head's sequence length (stride
  half of it; a video with fewer face frames runs at its own length: the head has a dynamic time
  axis, so nothing is padded) and the LSTM head (``TemporalHead``) scores each window. A frame's
  probability is the mean of the windows that contain it.
* ``frames``: the image model scores every face crop (``ImageDetector``, batched); a frame's
  probability is its most-fake face (one manipulated face makes the frame fake).

The video's ``fake_probability`` is the mean over analyzed frames (temporal: over windows), which
decides the verdict; ``aggregation`` also reports the max, the share of frames at or over the
threshold (majority vote) and the mean of the top 3. ``segments`` has one entry per second of
video that holds analyzed frames (per sampling interval when frames are sparser than 1 fps).
No face in any frame gives verdict ``NO_FACE`` with ``fake_probability: null``.

Audio (stated under ``fusion``): when the video has an audio track and an audio model is served,
the track is scored like ``/v1/detect/audio`` and reported under ``audio``; the fused verdict is
FAKE when either modality says FAKE, else UNCERTAIN when either does, else REAL, and the fused
``fake_probability`` is the larger of the two. A track too short or unreadable is skipped with a
warning, never an error.

Files (jobs, ``detect_video_file``): the same result for a video file on disk of any length,
whose frames never accumulate. The decoder (``media.video.open_video_file``) streams the sampled
frames in chunks of ``FILE_CHUNK_FRAMES``; each chunk goes through faces and the model (temporal:
the encoder, keeping only the feature vectors; frames: the image model, keeping only the
probabilities) and is dropped, while the decoder works on the next one (one chunk is read ahead:
at most two chunks of pixels are alive). The LSTM head then runs over the whole feature
sequence as inline, ``HEAD_WINDOWS_PER_CALL`` windows per call. The audio track is streamed from
the file through ffmpeg's pipe (``media.video.open_audio_track``) and scored like an audio file.
Sampling: the request's fps, else 1 fps past 60 s, within ``job_video_max_frames_cap`` frames.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import anyio
import numpy as np
from PIL import Image

from detect.audio import Progress, score_audio, score_audio_stream
from detect.engine import Engine, ServedModel
from detect.faces import crops_for, face_entry, find_faces
from detect.stability import NAMES, apply_stability, stability_block, with_variants
from detect.trust import with_provenance
from errors import VerityError
from faces.crops import face_crops
from faces.mtcnn import Face
from media.video import (
    DecodedVideo,
    VideoFileStream,
    VideoFrame,
    decode_video,
    open_audio_track,
    open_video_file,
)
from models.calibration import Decision
from models.postprocess import verdict_for
from models.preprocess import pixel_batch
from models.temporal import sequence_windows, window_batch
from store.ids import new_id

log = logging.getLogger(__name__)

Strategy = Literal["temporal", "frames"]
TOP_K = 3
_SEVERITY = {"FAKE": 2, "UNCERTAIN": 1, "REAL": 0}
# Files: head windows per call (an hour at 1 fps is ~700 windows of 10 frames; one call would be
# a (700, 20, features) batch). All windows of one video have one length, so splitting them
# changes nothing but the batch.
HEAD_WINDOWS_PER_CALL = 64
VIDEO_SHARE = 0.9  # of a file's progress, when its audio track is scored too


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Clip(Protocol):
    """What the result says of the media: ``DecodedVideo`` (inline) or ``VideoSummary`` (files)."""

    format: str
    width: int
    height: int
    fps: float
    duration_s: float
    rotation: int
    has_audio: bool
    sample_interval_s: float
    frame_scale: float


@dataclass
class _Analysis:
    """What scoring keeps of the sampled frames: their times, faces and small model outputs,
    never their pixels; filled a chunk at a time (inline: one chunk of all the frames)."""

    times: list[float] = field(default_factory=list)  # every sampled frame
    faces: list[list[Face]] = field(default_factory=list)  # per sampled frame
    per_face: list[list[float]] = field(default_factory=list)  # frames strategy: per sampled frame
    features: list[np.ndarray] = field(default_factory=list)  # temporal: per chunk, frames with a face
    # stability=true: the largest face's crop of the first few frames with a face (their pixels
    # are the only ones kept), and how many to keep.
    sample: list[Image.Image] = field(default_factory=list)
    sample_size: int = 0
    faces_ms: float = 0.0
    inference_ms: float = 0.0


async def _score_frames(
    engine: Engine, frames: list[np.ndarray], faces: list[list[Any]], model_id: str | None
) -> tuple[ServedModel, list[list[float]]]:
    """``frames`` strategy: the image model on every face crop; probabilities per face."""
    served = engine.image_model(model_id)
    spec = served.stored.input_spec
    margin = engine.settings.face_crop_margin
    batches = await anyio.to_thread.run_sync(
        lambda: [crops_for(f, found, spec, margin) for f, found in zip(frames, faces, strict=True) if found]
    )
    if not batches:
        return served, [[] for _ in frames]
    outputs = await served.client.predict(np.concatenate(batches))
    probs = served.stored.fake_probabilities(outputs)
    per_face, at = [], 0
    for found in faces:
        per_face.append([float(p) for p in probs[at : at + len(found)]])
        at += len(found)
    return served, per_face


async def _encode_faces(engine: Engine, frames: list[np.ndarray], faces: list[list[Any]]) -> np.ndarray:
    """``temporal`` strategy, per frame with a face: the encoder's feature vector of its largest
    face (the subject whose sequence the LSTM follows)."""
    encoder = engine.video_models().encoder
    spec = encoder.stored.input_spec
    margin = engine.settings.face_crop_margin
    crops = await anyio.to_thread.run_sync(
        lambda: np.concatenate(
            [crops_for(f, found[:1], spec, margin) for f, found in zip(frames, faces, strict=True) if found]
        )
    )
    return np.asarray(await encoder.client.predict(crops), dtype=np.float32)


async def _score_sequence(
    engine: Engine, features: np.ndarray, windows_per_call: int | None
) -> tuple[list[ServedModel], list[float], list[float]]:
    """``temporal`` strategy over the feature sequence of the frames with a face: the models used,
    per-frame and per-window probabilities (a frame's: the mean of the windows that contain it)."""
    video = engine.video_models()
    encoder, head = video.encoder, video.head
    sequence = video.sequence
    windows = sequence_windows(len(features), sequence.seq_len, sequence.stride)
    # All windows of one video have one length (seq_len, or all the frames when fewer), so the
    # head takes them as (windows, time, features) batches.
    step = windows_per_call or len(windows)
    raw = np.concatenate(
        [
            np.asarray(await head.client.predict_together(window_batch(features, windows[at : at + step])))
            for at in range(0, len(windows), step)
        ]
    )
    window_probs = head.stored.fake_probabilities(raw)
    covering: list[list[float]] = [[] for _ in range(len(features))]
    for (start, end), p in zip(windows, window_probs, strict=True):
        for i in range(start, end):
            covering[i].append(float(p))
    frame_probs = [float(np.mean(c)) for c in covering]
    return [encoder, head], frame_probs, [float(p) for p in window_probs]


async def _analyze_chunk(
    engine: Engine, analysis: _Analysis, frames: list[VideoFrame], strategy: Strategy, model_id: str | None
) -> None:
    """Faces and model outputs of ``frames`` into ``analysis``; the pixels are not kept (but for
    the stability check's few face crops)."""
    pixels = [f.rgb for f in frames]
    mark = time.perf_counter()
    faces = await find_faces(engine, pixels)
    analysis.faces_ms += _ms(mark)
    if len(analysis.sample) < analysis.sample_size:
        spec = _per_face_model(engine, strategy, model_id).stored.input_spec
        margin = engine.settings.face_crop_margin
        for frame, found in zip(pixels, faces, strict=True):
            if found and len(analysis.sample) < analysis.sample_size:
                crop = face_crops(frame, found[:1], size=max(spec.size), margin=margin)[0]
                analysis.sample.append(Image.fromarray(crop))
    mark = time.perf_counter()
    analysis.times += [f.t_s for f in frames]
    analysis.faces += faces
    with_face = [i for i, found in enumerate(faces) if found]
    if strategy == "frames":
        per_face = [[] for _ in frames]
        if with_face:
            _, per_face = await _score_frames(engine, pixels, faces, model_id)
        analysis.per_face += per_face
    elif with_face:
        analysis.features.append(
            await _encode_faces(engine, [pixels[i] for i in with_face], [faces[i] for i in with_face])
        )
    analysis.inference_ms += _ms(mark)


def _segments(
    times: list[float], probs: list[float], duration_s: float, step_s: float
) -> list[dict[str, Any]]:
    """One segment per ``step_s`` of video that holds analyzed frames: the mean of their
    probabilities."""
    bins: dict[int, list[float]] = {}
    for t, p in zip(times, probs, strict=True):
        bins.setdefault(int(t // step_s), []).append(p)
    return [
        {
            "start_s": round(k * step_s, 3),
            "end_s": round(min((k + 1) * step_s, max(duration_s, k * step_s)), 3),
            "fake_probability": round(float(np.mean(ps)), 6),
            "frames": len(ps),
        }
        for k, ps in sorted(bins.items())
    ]


def _aggregation(values: list[float], threshold: float, strategy: Strategy) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    top = np.sort(arr)[::-1][:TOP_K]
    unit = "windows" if strategy == "temporal" else "frames"
    return {
        "method": "mean",
        "rule": f"verdict from the mean {unit[:-1]} probability vs threshold",
        "over": unit,
        "count": int(arr.size),
        "max": round(float(arr.max()), 6),
        "share_over_threshold": round(float((arr >= threshold).mean()), 6),
        f"top{TOP_K}_mean": round(float(top.mean()), 6),
    }


async def _audio_track(engine: Engine, decoded: DecodedVideo) -> tuple[dict[str, Any] | None, list[dict]]:
    """The audio track (extracted by the decoder as 16 kHz WAV) scored like /v1/detect/audio."""
    wav = decoded.audio_wav
    if not decoded.has_audio or not engine.audio_models or wav is None:
        return None, []
    try:
        result = await score_audio(engine, wav, model_id=None)
    except VerityError as exc:  # too short, silent container, ...: the video verdict stands alone
        return None, [{"code": "audio_skipped", "message": f"audio track not scored: {exc}"}]
    return _audio_part(result)


async def _audio_track_file(
    engine: Engine, path: Path, duration_s: float, report: Callable[[float], None], max_duration_s: float
) -> tuple[dict[str, Any] | None, list[dict]]:
    """Files: the audio track streamed from the file and scored a batch of windows at a time."""
    settings = engine.settings
    served = engine.audio_model(None)
    try:
        stream = await engine.decode_pool.run(
            lambda: open_audio_track(
                path,
                max_duration_s=max_duration_s,
                min_duration_s=served.stored.audio_spec.min_duration_s,
                timeout_s=settings.video_decode_timeout_s,
                s_per_media_s=settings.decode_s_per_media_s,
            )
        )
        if stream is None:
            return None, []
        try:
            result = await score_audio_stream(engine, served, stream, expected_s=duration_s, report=report)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(stream.close)
    except VerityError as exc:  # as inline: the video verdict stands alone
        if exc.code == "corrupt_audio":
            return None, [{"code": "audio_unreadable", "message": "the audio track could not be decoded"}]
        if exc.code == "decode_timeout":
            return None, [{"code": "audio_skipped", "message": "the audio track took too long to decode"}]
        return None, [{"code": "audio_skipped", "message": f"audio track not scored: {exc}"}]
    return _audio_part(result)


def _audio_part(result: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict]]:
    if result["verdict"] == "NOT_APPLICABLE":  # a silent track: the video verdict stands alone
        reason = result["not_applicable"]
        return None, [{"code": reason["reason"], "message": f"audio track not judged: {reason['message']}"}]
    keep = ("verdict", "fake_probability", "threshold", "model", "aggregation", "segments", "media")
    return {k: result[k] for k in keep}, [w for w in result["warnings"] if w["code"] != "dev_weights"]


def _fuse(video_verdict: str, video_p: float, audio: dict[str, Any]) -> tuple[str, float]:
    verdict = max((video_verdict, audio["verdict"]), key=lambda v: _SEVERITY[v])
    return verdict, max(video_p, float(audio["fake_probability"]))


@dataclass
class _Outcome:
    """The video's verdict from an ``_Analysis``: what the result reports besides the media."""

    models: list[ServedModel]
    decision: Decision
    verdict: str
    video_p: float | None  # calibrated when the deciding model is
    raw_p: float | None
    threshold: float
    segments: list[dict[str, Any]]
    aggregation: dict[str, Any]
    face_entries: list[dict[str, Any]]
    frames_with_face: int
    warnings: list[dict[str, Any]]


async def _conclude(
    engine: Engine,
    analysis: _Analysis,
    clip: _Clip,
    *,
    strategy: Strategy,
    model_id: str | None,
    windows_per_call: int | None,
    operating_point: str | None,
) -> _Outcome:
    """The video's verdict: the mean raw score of its windows (temporal) or frames (frames), through
    the deciding model's calibration (the head, or the image model) against its threshold."""
    times, faces = analysis.times, analysis.faces
    with_face = [i for i, found in enumerate(faces) if found]
    scale = clip.frame_scale  # boxes are found on (possibly downscaled) frames
    warnings: list[dict[str, Any]] = []
    face_entries: list[dict[str, Any]] = []
    models: list[ServedModel]
    if not with_face:
        models = [engine.image_model(model_id)] if strategy == "frames" else engine.video_models().served
        decision = engine.decision(models[-1], operating_point)
        warnings.append({"code": "no_face", "message": f"no face found in {len(times)} sampled frames"})
        return _Outcome(
            models=models,
            decision=decision,
            verdict="NO_FACE",
            video_p=None,
            raw_p=None,
            threshold=decision.threshold,
            segments=[],
            aggregation={"method": "mean", "over": "faces", "count": 0},
            face_entries=[],
            frames_with_face=0,
            warnings=warnings,
        )
    if strategy == "frames":
        models = [engine.image_model(model_id)]
        per_face = analysis.per_face
        frame_probs = [max(per_face[i]) for i in with_face]
        for i in with_face:
            face_entries += [
                face_entry(times[i], f, p, scale) for f, p in zip(faces[i], per_face[i], strict=True)
            ]
        scored = frame_probs
    else:
        features = np.concatenate(analysis.features)
        models, frame_probs, window_probs = await _score_sequence(engine, features, windows_per_call)
        for i, p in zip(with_face, frame_probs, strict=True):
            face_entries.append(face_entry(times[i], faces[i][0], p, scale))
            face_entries += [face_entry(times[i], f, None, scale) for f in faces[i][1:]]
        scored = window_probs
    decision = engine.decision(models[-1], operating_point)
    threshold = decision.threshold
    raw_p = float(np.mean(scored))
    video_p = decision.probability(raw_p)
    # The same monotone map for the parts: frames (segments, faces) and windows.
    frame_probs = [float(p) for p in decision.probabilities(np.asarray(frame_probs))]
    scored = [float(p) for p in decision.probabilities(np.asarray(scored))]
    for entry in face_entries:
        if entry["fake_probability"] is not None:
            entry["fake_probability"] = round(decision.probability(entry["fake_probability"]), 6)
    step = max(1.0, clip.sample_interval_s)
    if len(with_face) < len(times):
        warnings.append(
            {
                "code": "frames_without_face",
                "message": f"{len(times) - len(with_face)} of {len(times)} sampled frames had no face",
            }
        )
    return _Outcome(
        models=models,
        decision=decision,
        verdict=verdict_for(video_p, threshold, engine.settings.uncertain_band),
        video_p=video_p,
        raw_p=raw_p,
        threshold=threshold,
        segments=_segments([times[i] for i in with_face], frame_probs, clip.duration_s, step),
        aggregation=_aggregation(scored, threshold, strategy),
        face_entries=face_entries,
        frames_with_face=len(with_face),
        warnings=warnings,
    )


def _per_face_model(engine: Engine, strategy: Strategy, model_id: str | None) -> ServedModel:
    """The model that takes the face crops: the image model (``frames``), or the encoder."""
    return engine.image_model(model_id) if strategy == "frames" else engine.video_models().encoder


async def _stability(
    engine: Engine, analysis: _Analysis, outcome: _Outcome, strategy: Strategy, model_id: str | None
) -> dict[str, Any] | None:
    """``stability=true`` for a video: the sampled face crops and their variants in one call of
    the per-face model (the image model, or the encoder), then per variant the sample's score as
    the video's is made (frames: the mean; temporal: the head over the sample's sequence), all
    through the deciding model's calibration. None without a face."""
    sample = analysis.sample
    if not sample or outcome.video_p is None:
        return None
    width = len(NAMES)
    per_face = _per_face_model(engine, strategy, model_id)
    rows = await anyio.to_thread.run_sync(
        lambda: pixel_batch([v for crop in sample for v in with_variants(crop)], per_face.stored.input_spec)
    )
    outputs = await per_face.client.predict(rows)
    if strategy == "frames":
        raw = per_face.stored.fake_probabilities(outputs).reshape(-1, width).mean(axis=0)
    else:
        features = np.asarray(outputs, dtype=np.float32)
        # (frames, variants, features) -> one sequence per variant, as the head takes them.
        sequences = np.ascontiguousarray(features.reshape(len(sample), width, -1).transpose(1, 0, 2))
        head = engine.video_models().head
        raw = head.stored.fake_probabilities(await head.client.predict_together(sequences))
    scores = outcome.decision.probabilities(raw)
    return stability_block(
        list(scores), outcome.threshold, engine.settings.uncertain_band, frames=len(sample)
    )


def _with_stability(result: dict[str, Any], outcome: _Outcome, block: dict[str, Any] | None) -> None:
    """The block into the result; an unstable video verdict is UNCERTAIN before it meets the
    audio track's (the fusion reads ``outcome.verdict``)."""
    if block is not None:
        apply_stability(result, block)
        outcome.verdict = result["verdict"]


def _sample_size(engine: Engine, strategy: Strategy, stability: bool) -> int:
    """Frames the stability check re-scores: a few for the image model; one head window for the
    temporal model (its sequence must be as long as the windows it was scored with)."""
    if not stability:
        return 0
    if strategy == "frames":
        return engine.settings.stability_video_frames
    return engine.video_models().sequence.seq_len


def _result(
    clip: _Clip,
    outcome: _Outcome,
    *,
    strategy: Strategy,
    frames_analyzed: int,
    warnings: list[dict[str, Any]],
    timing: dict[str, float],
) -> dict[str, Any]:
    for served in outcome.models:
        warnings.extend(w for w in served.warnings if w not in warnings)
    models = outcome.models
    return {
        "id": new_id("det"),
        "modality": "video",
        "created_at": _now(),
        "verdict": outcome.verdict,
        "fake_probability": None if outcome.video_p is None else round(outcome.video_p, 6),
        "raw_score": None if outcome.raw_p is None else round(outcome.raw_p, 6),
        "calibrated": outcome.decision.calibrated,
        "operating_point": outcome.decision.block(),
        "threshold": outcome.threshold,
        "strategy": strategy,
        "model": models[-1].stored.summary(),
        "models": [
            m.stored.summary() | {"role": role} for m, role in zip(models, _roles(strategy), strict=False)
        ],
        "aggregation": outcome.aggregation,
        "segments": outcome.segments,
        "faces": outcome.face_entries,
        "media": {
            "format": clip.format,
            "width": clip.width,
            "height": clip.height,
            "duration_s": round(clip.duration_s, 3),
            "fps": round(clip.fps, 3) if clip.fps else None,
            "rotation": clip.rotation,
            "frames_analyzed": frames_analyzed,
            "frames_with_face": outcome.frames_with_face,
            "sample_interval_s": round(clip.sample_interval_s, 3),
            "has_audio": clip.has_audio,
        },
        "timing_ms": timing,
        "warnings": warnings,
    }


def _add_audio(result: dict[str, Any], outcome: _Outcome, audio: dict[str, Any]) -> None:
    result["audio"] = audio
    rule = "FAKE if video or audio is FAKE, else UNCERTAIN if either is, else REAL; probability: the max"
    result["fusion"] = {
        "rule": rule,
        "video_verdict": outcome.verdict,
        "video_fake_probability": result["fake_probability"],
    }
    if outcome.video_p is not None:
        fused_verdict, fused_p = _fuse(outcome.verdict, outcome.video_p, audio)
        result["verdict"], result["fake_probability"] = fused_verdict, round(fused_p, 6)


async def detect_video(
    engine: Engine,
    data: bytes,
    *,
    fps: float | None,
    max_frames: int | None,
    strategy: Strategy,
    model_id: str | None,
    stability: bool = False,
    operating_point: str | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    settings = engine.settings
    want_audio = bool(engine.audio_models)
    sample_size = _sample_size(engine, strategy, stability)
    decoded: DecodedVideo = await engine.decode_pool.run(
        lambda: decode_video(
            data,
            max_bytes=settings.max_video_bytes,
            max_pixels=settings.max_video_pixels,
            max_duration_s=settings.max_video_duration_s,
            fps=fps,
            max_frames=max_frames,
            timeout_s=settings.video_decode_timeout_s,
            default_max_frames=settings.video_max_frames,
            max_frames_cap=settings.video_max_frames_cap,
            max_side=settings.video_frame_max_side,
            isolated=settings.video_decode_isolated,
            with_audio=want_audio,
        )
    )
    timing: dict[str, float] = {"decode": _ms(started)}
    analysis = _Analysis(sample_size=sample_size)
    await _analyze_chunk(engine, analysis, decoded.frames, strategy, model_id)
    timing["faces"] = round(analysis.faces_ms, 2)
    mark = time.perf_counter()
    outcome = await _conclude(
        engine,
        analysis,
        decoded,
        strategy=strategy,
        model_id=model_id,
        windows_per_call=None,
        operating_point=operating_point,
    )
    timing["inference"] = round(analysis.inference_ms + _ms(mark), 2)
    mark = time.perf_counter()
    block = await _stability(engine, analysis, outcome, strategy, model_id)
    if block is not None:
        timing["stability"] = _ms(mark)
    warnings: list[dict[str, Any]] = [*decoded.warnings, *outcome.warnings]
    mark = time.perf_counter()
    audio, audio_warnings = await _audio_track(engine, decoded)
    frames_analyzed = len(decoded.frames)
    result = _result(
        decoded, outcome, strategy=strategy, frames_analyzed=frames_analyzed, warnings=warnings, timing=timing
    )
    _with_stability(result, outcome, block)
    result["warnings"] += audio_warnings
    if audio is not None:
        timing["audio"] = _ms(mark)
        _add_audio(result, outcome, audio)
    timing["total"] = _ms(started)
    return await with_provenance(engine, result, data)


async def detect_video_file(
    engine: Engine,
    path: Path,
    *,
    fps: float | None,
    max_frames: int | None,
    strategy: Strategy,
    model_id: str | None,
    progress: Callable[[float], None] | None = None,
    max_duration_s: float | None = None,
    stability: bool = False,
    operating_point: str | None = None,
) -> dict[str, Any]:
    """``detect_video``'s result for the video file at ``path``, with frames streamed and scored
    a chunk at a time (module docstring, "Files"). Job limits: ``job_max_video_duration_s`` (or
    ``max_duration_s``, lower for a request that waits for its answer),
    ``job_video_max_frames_cap``, ``max_upload_bytes``; decode time ``video_decode_timeout_s`` or
    ``decode_s_per_media_s`` per declared second, whichever is longer. ``progress`` gets
    fractions 0..1, growing, ending at 1.0 on success."""
    started = time.perf_counter()
    settings = engine.settings
    path = Path(path)
    # The models first: a job should not decode an hour of video to learn its model is not served.
    if strategy == "frames":
        engine.image_model(model_id)
    else:
        engine.video_models()
    report = Progress(progress)
    stream = await engine.decode_pool.run(
        lambda: open_video_file(
            path,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_video_pixels,
            max_duration_s=max_duration_s or settings.job_max_video_duration_s,
            fps=fps,
            max_frames=max_frames,
            timeout_s=settings.video_decode_timeout_s,
            s_per_media_s=settings.decode_s_per_media_s,
            max_frames_cap=settings.job_video_max_frames_cap,
            max_side=settings.video_frame_max_side,
            isolated=settings.video_decode_isolated,
        )
    )
    with_audio = stream.has_audio and bool(engine.audio_models)
    video_share = VIDEO_SHARE if with_audio else 1.0
    try:
        analysis, waited_ms = await _analyze_stream(
            engine,
            stream,
            strategy,
            model_id,
            report.part(0.0, 0.95 * video_share),
            _sample_size(engine, strategy, stability),
        )
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(stream.close)
    clip = stream.summary
    assert clip is not None  # the stream ended without an error
    timing: dict[str, float] = {"decode": waited_ms, "faces": round(analysis.faces_ms, 2)}
    mark = time.perf_counter()
    outcome = await _conclude(
        engine,
        analysis,
        clip,
        strategy=strategy,
        model_id=model_id,
        windows_per_call=HEAD_WINDOWS_PER_CALL,
        operating_point=operating_point,
    )
    timing["inference"] = round(analysis.inference_ms + _ms(mark), 2)
    mark = time.perf_counter()
    block = await _stability(engine, analysis, outcome, strategy, model_id)
    if block is not None:
        timing["stability"] = _ms(mark)
    report(video_share)
    warnings: list[dict[str, Any]] = [*clip.warnings, *outcome.warnings]
    mark = time.perf_counter()
    audio, audio_warnings = (
        await _audio_track_file(
            engine,
            path,
            clip.duration_s,
            report.part(video_share, 1.0),
            max_duration_s or settings.job_max_video_duration_s,
        )
        if with_audio
        else (None, [])
    )
    result = _result(
        clip,
        outcome,
        strategy=strategy,
        frames_analyzed=clip.frames_analyzed,
        warnings=warnings,
        timing=timing,
    )
    _with_stability(result, outcome, block)
    result["warnings"] += audio_warnings
    if audio is not None:
        timing["audio"] = _ms(mark)
        _add_audio(result, outcome, audio)
    timing["total"] = _ms(started)
    result = await with_provenance(engine, result, Path(path))
    report(1.0)
    return result


async def _analyze_stream(
    engine: Engine,
    stream: VideoFileStream,
    strategy: Strategy,
    model_id: str | None,
    report: Callable[[float], None],
    sample_size: int = 0,
) -> tuple[_Analysis, float]:
    """Every chunk of ``stream`` through ``_analyze_chunk``, while a worker thread decodes the
    next one (a zero-size channel: the reader waits with one chunk until the scorer takes it).
    Returns the analysis and the time the scorer waited for frames. A failure on either side
    aborts the decoder and is raised as itself (never an exception group)."""
    analysis = _Analysis(sample_size=sample_size)
    send, receive = anyio.create_memory_object_stream[list[VideoFrame] | Exception](0)
    expected = stream.declared_s
    waited = 0.0
    failure: Exception | None = None

    async def read() -> None:
        async with send:
            while True:
                try:
                    chunk = await engine.decode_pool.run(stream.read_chunk)
                except Exception as exc:  # noqa: BLE001 - handed to the scorer, which raises it
                    if not stream.aborted:
                        await send.send(exc)
                    return
                if chunk is None:
                    return
                await send.send(chunk)
                del chunk  # the scorer's now

    async with anyio.create_task_group() as group:
        group.start_soon(read)
        try:
            async with receive:
                while True:
                    mark = time.perf_counter()
                    try:
                        item = await receive.receive()
                    except anyio.EndOfStream:
                        break
                    waited += time.perf_counter() - mark
                    if isinstance(item, Exception):
                        raise item
                    last_t = item[-1].t_s
                    await _analyze_chunk(engine, analysis, item, strategy, model_id)
                    del item  # the pixels go now: only the analysis stays
                    if expected:
                        report(last_t / expected)
        except BaseException as exc:
            stream.abort()  # a reader blocked on the decoder returns at once
            if not isinstance(exc, Exception):
                raise
            failure = exc
            group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return analysis, round(waited * 1000, 2)


def _roles(strategy: Strategy) -> list[str]:
    return ["image"] if strategy == "frames" else ["encoder", "head"]
