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
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any, Literal

import anyio
import numpy as np

from detect.audio import detect_audio
from detect.engine import Engine, ServedModel
from detect.faces import crops_for, face_entry, find_faces
from errors import VerityError
from media.video import DecodedVideo, decode_video
from models.postprocess import fake_probabilities, verdict_for
from models.temporal import sequence_windows, window_batch
from store.ids import new_id

log = logging.getLogger(__name__)

Strategy = Literal["temporal", "frames"]
TOP_K = 3
_SEVERITY = {"FAKE": 2, "UNCERTAIN": 1, "REAL": 0}


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    probs = fake_probabilities(
        outputs, served.stored.metadata["output"], int(served.stored.metadata["fake_index"])
    )
    per_face, at = [], 0
    for found in faces:
        per_face.append([float(p) for p in probs[at : at + len(found)]])
        at += len(found)
    return served, per_face


async def _score_temporal(
    engine: Engine, frames: list[np.ndarray], faces: list[list[Any]]
) -> tuple[list[ServedModel], list[float], list[float]]:
    """``temporal`` strategy over the frames that have a face: the models used, per-frame and
    per-window probabilities (a frame's: the mean of the windows that contain it)."""
    video = engine.video_models()
    encoder, head = video.encoder, video.head
    spec = encoder.stored.input_spec
    margin = engine.settings.face_crop_margin
    # The largest face of each frame is the subject whose sequence the LSTM follows.
    crops = await anyio.to_thread.run_sync(
        lambda: np.concatenate(
            [crops_for(f, found[:1], spec, margin) for f, found in zip(frames, faces, strict=True) if found]
        )
    )
    features = np.asarray(await encoder.client.predict(crops), dtype=np.float32)
    sequence = video.sequence
    windows = sequence_windows(len(features), sequence.seq_len, sequence.stride)
    # All windows of one video have one length (seq_len, or all the frames when fewer), so the
    # head takes them as one (windows, time, features) batch.
    raw = np.asarray(await head.client.predict_together(window_batch(features, windows)))
    window_probs = fake_probabilities(
        raw, head.stored.metadata["output"], int(head.stored.metadata["fake_index"])
    )
    covering: list[list[float]] = [[] for _ in range(len(features))]
    for (start, end), p in zip(windows, window_probs, strict=True):
        for i in range(start, end):
            covering[i].append(float(p))
    frame_probs = [float(np.mean(c)) for c in covering]
    return [encoder, head], frame_probs, [float(p) for p in window_probs]


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
        result = await detect_audio(engine, wav, model_id=None)
    except VerityError as exc:  # too short, silent container, ...: the video verdict stands alone
        return None, [{"code": "audio_skipped", "message": f"audio track not scored: {exc}"}]
    keep = ("verdict", "fake_probability", "threshold", "model", "aggregation", "segments", "media")
    return {k: result[k] for k in keep}, [w for w in result["warnings"] if w["code"] != "dev_weights"]


def _fuse(video_verdict: str, video_p: float, audio: dict[str, Any]) -> tuple[str, float]:
    verdict = max((video_verdict, audio["verdict"]), key=lambda v: _SEVERITY[v])
    return verdict, max(video_p, float(audio["fake_probability"]))


async def detect_video(
    engine: Engine,
    data: bytes,
    *,
    fps: float | None,
    max_frames: int | None,
    strategy: Strategy,
    model_id: str | None,
) -> dict[str, Any]:
    started = time.perf_counter()
    settings = engine.settings
    want_audio = bool(engine.audio_models)
    decoded: DecodedVideo = await anyio.to_thread.run_sync(
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
    frames = [f.rgb for f in decoded.frames]
    times = [f.t_s for f in decoded.frames]
    mark = time.perf_counter()
    faces = await find_faces(engine, frames)
    timing["faces"] = _ms(mark)
    warnings: list[dict[str, Any]] = list(decoded.warnings)
    with_face = [i for i, found in enumerate(faces) if found]
    scale = decoded.frame_scale  # boxes are found on (possibly downscaled) frames
    mark = time.perf_counter()
    face_entries: list[dict[str, Any]] = []
    models: list[ServedModel]
    if not with_face:
        models = [engine.image_model(model_id)] if strategy == "frames" else engine.video_models().served
        video_p: float | None = None
        verdict = "NO_FACE"
        segments: list[dict[str, Any]] = []
        aggregation: dict[str, Any] = {"method": "mean", "over": "faces", "count": 0}
        threshold = models[-1].stored.threshold
        warnings.append({"code": "no_face", "message": f"no face found in {len(frames)} sampled frames"})
    else:
        if strategy == "frames":
            served, per_face = await _score_frames(engine, frames, faces, model_id)
            models = [served]
            frame_probs = [max(per_face[i]) for i in with_face]
            for i in with_face:
                face_entries += [
                    face_entry(times[i], f, p, scale) for f, p in zip(faces[i], per_face[i], strict=True)
                ]
            scored = frame_probs
        else:
            models, frame_probs, window_probs = await _score_temporal(
                engine, [frames[i] for i in with_face], [faces[i] for i in with_face]
            )
            for i, p in zip(with_face, frame_probs, strict=True):
                face_entries.append(face_entry(times[i], faces[i][0], p, scale))
                face_entries += [face_entry(times[i], f, None, scale) for f in faces[i][1:]]
            scored = window_probs
        threshold = models[-1].stored.threshold
        video_p = float(np.mean(scored))
        verdict = verdict_for(video_p, threshold, settings.uncertain_band)
        step = max(1.0, decoded.sample_interval_s)
        segments = _segments([times[i] for i in with_face], frame_probs, decoded.duration_s, step)
        aggregation = _aggregation(scored, threshold, strategy)
        if len(with_face) < len(frames):
            warnings.append(
                {
                    "code": "frames_without_face",
                    "message": f"{len(frames) - len(with_face)} of {len(frames)} sampled frames had no face",
                }
            )
    timing["inference"] = _ms(mark)
    for served in models:
        warnings.extend(w for w in served.warnings if w not in warnings)
    mark = time.perf_counter()
    audio, audio_warnings = await _audio_track(engine, decoded)
    warnings += audio_warnings
    result: dict[str, Any] = {
        "id": new_id("det"),
        "modality": "video",
        "created_at": _now(),
        "verdict": verdict,
        "fake_probability": None if video_p is None else round(video_p, 6),
        "threshold": threshold,
        "strategy": strategy,
        "model": models[-1].stored.summary(),
        "models": [
            m.stored.summary() | {"role": role} for m, role in zip(models, _roles(strategy), strict=False)
        ],
        "aggregation": aggregation,
        "segments": segments,
        "faces": face_entries,
        "media": {
            "format": decoded.format,
            "width": decoded.width,
            "height": decoded.height,
            "duration_s": round(decoded.duration_s, 3),
            "fps": round(decoded.fps, 3) if decoded.fps else None,
            "rotation": decoded.rotation,
            "frames_analyzed": len(frames),
            "frames_with_face": len(with_face),
            "sample_interval_s": round(decoded.sample_interval_s, 3),
            "has_audio": decoded.has_audio,
        },
        "timing_ms": timing,
        "warnings": warnings,
    }
    if audio is not None:
        timing["audio"] = _ms(mark)
        result["audio"] = audio
        rule = "FAKE if video or audio is FAKE, else UNCERTAIN if either is, else REAL; probability: the max"
        result["fusion"] = {
            "rule": rule,
            "video_verdict": verdict,
            "video_fake_probability": result["fake_probability"],
        }
        if video_p is not None:
            fused_verdict, fused_p = _fuse(verdict, video_p, audio)
            result["verdict"], result["fake_probability"] = fused_verdict, round(fused_p, 6)
    timing["total"] = _ms(started)
    return result


def _roles(strategy: Strategy) -> list[str]:
    return ["image"] if strategy == "frames" else ["encoder", "head"]
