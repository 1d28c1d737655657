"""POST /v1/detect/audio: decode -> 16 kHz mono -> overlapping windows -> batched model -> timeline.

Aggregation (stated in every result under ``aggregation``): the clip's ``fake_probability`` is
the mean of its windows' probabilities and decides the verdict against the threshold (with the
uncertain band); ``max`` is reported beside it, and a ``localized_fake`` warning is added when
some window crosses the threshold while the mean does not: a spliced-in synthetic phrase shows
up there and in ``segments`` even when most of the clip is genuine.

Files (jobs, ``detect_audio_file``): the same result for a file on disk of any length. The file
is decoded a block at a time (``media.audio.open_audio_file``), the blocks are cut into exactly
the inline windows (``WindowCutter``) and the windows are scored in batches of
``audio_batch_max_size`` as they come, so memory holds a batch and a block, not the clip. A
video's audio track in a job goes the same way (``score_audio_stream``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from detect.applicability import audio_problem, mark_not_applicable, window_levels_dbfs
from detect.engine import Engine, ServedModel, audio_hop_s
from detect.trust import with_provenance
from media.audio import WindowCutter, decode_audio, make_windows
from media.audio_files import AudioFileStream, open_audio_file
from models.audio_features import normalize_windows
from models.calibration import Decision
from models.postprocess import verdict_for
from store.ids import new_id


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


class Progress:
    """A caller's progress callback (fraction 0..1), called only when the value grows: never
    backwards, never past 1. ``part(start, end)`` maps a step's own 0..1 onto its share."""

    def __init__(self, callback: Callable[[float], None] | None) -> None:
        self._callback = callback
        self._last = 0.0

    def __call__(self, fraction: float) -> None:
        value = min(1.0, max(0.0, fraction))
        if self._callback is not None and value > self._last:
            self._last = value
            self._callback(value)

    def part(self, start: float, end: float) -> Callable[[float], None]:
        return lambda fraction: self(start + (end - start) * min(1.0, max(0.0, fraction)))


async def _run_windows(served: ServedModel, windows: np.ndarray, window_len: int) -> np.ndarray:
    if windows.shape[1] != window_len:
        # A clip shorter than one window runs alone at its own length: it cannot be
        # concatenated with other requests' full-length windows, and padding would bias it.
        return await served.client.predict_together(windows)
    return await served.client.predict(windows)


async def detect_audio(
    engine: Engine, data: bytes, *, model_id: str | None, operating_point: str | None = None
) -> dict[str, Any]:
    """``score_audio``'s result with the clip's Content Credentials weighed beside it."""
    result = await score_audio(engine, data, model_id=model_id, operating_point=operating_point)
    return await with_provenance(engine, result, data)


async def score_audio(
    engine: Engine, data: bytes, *, model_id: str | None, operating_point: str | None = None
) -> dict[str, Any]:
    """The classifier's result for the clip in ``data`` (a video's audio track uses it as is)."""
    started = time.perf_counter()
    settings = engine.settings
    served = engine.audio_model(model_id)
    decision = engine.decision(served, operating_point)
    stored = served.stored
    spec = stored.audio_spec
    decoded = await engine.decode_pool.run(
        lambda: decode_audio(
            data,
            target_rate=spec.sample_rate,
            max_bytes=settings.max_audio_bytes,
            max_duration_s=settings.max_audio_duration_s,
            min_duration_s=spec.min_duration_s,
            ffmpeg_timeout_s=settings.ffmpeg_timeout_s,
        )
    )
    decode_ms = _ms(started)
    mark = time.perf_counter()
    hop_s = audio_hop_s(settings, spec)
    windows, spans = make_windows(decoded.samples, decoded.sample_rate, spec.window_s, hop_s)
    levels = window_levels_dbfs(windows)
    if spec.do_normalize:
        windows = normalize_windows(windows, None)
    preprocess_ms = _ms(mark)
    mark = time.perf_counter()
    outputs = await _run_windows(served, windows, spec.window_samples)
    inference_ms = _ms(mark)
    probs = stored.fake_probabilities(outputs)
    media = {
        "format": decoded.format,
        "duration_s": round(decoded.duration_s, 3),
        "sample_rate": decoded.sample_rate,
        "original_sample_rate": decoded.original_rate,
        "channels": decoded.channels,
        "windows": len(spans),
        "window_s": spec.window_s,
        "hop_s": hop_s,
    }
    timing = {"decode": decode_ms, "preprocess": preprocess_ms, "inference": inference_ms}
    warnings = [*served.warnings, *decoded.warnings]
    return _result(engine, served, decision, probs, levels, spans, media, warnings, timing, started)


async def detect_audio_file(
    engine: Engine,
    path: Path,
    *,
    model_id: str | None,
    progress: Callable[[float], None] | None = None,
    max_duration_s: float | None = None,
    operating_point: str | None = None,
) -> dict[str, Any]:
    """``detect_audio``'s result for the audio file at ``path``, which is never read whole (see
    the module docstring). Job limits: ``job_max_video_duration_s`` (or ``max_duration_s``, lower
    for a request that waits for its answer), ``max_upload_bytes``, and a
    time limit of ``ffmpeg_timeout_s`` or ``decode_s_per_media_s`` per declared second, whichever
    is longer. ``progress`` gets fractions 0..1, growing, ending at 1.0 on success."""
    started = time.perf_counter()
    settings = engine.settings
    served = engine.audio_model(model_id)
    decision = engine.decision(served, operating_point)
    spec = served.stored.audio_spec
    stream = await engine.decode_pool.run(
        lambda: open_audio_file(
            Path(path),
            target_rate=spec.sample_rate,
            max_bytes=settings.max_upload_bytes,
            max_duration_s=max_duration_s or settings.job_max_video_duration_s,
            min_duration_s=spec.min_duration_s,
            timeout_s=settings.ffmpeg_timeout_s,
            s_per_media_s=settings.decode_s_per_media_s,
        )
    )
    report = Progress(progress)
    try:
        result = await score_audio_stream(
            engine, served, stream, expected_s=stream.info.declared_s, report=report, decision=decision
        )
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(stream.close)
    result["timing_ms"]["total"] = _ms(started)
    result = await with_provenance(engine, result, Path(path))
    report(1.0)
    return result


async def score_audio_stream(
    engine: Engine,
    served: ServedModel,
    stream: AudioFileStream,
    *,
    expected_s: float | None,
    report: Callable[[float], None],
    decision: Decision | None = None,
) -> dict[str, Any]:
    """The audio result for ``stream``: windows cut as the blocks come and scored a batch at a
    time. ``report`` gets the share of ``expected_s`` (when known) decoded and scored so far.
    ``decision``: the model's calibration and threshold (default: at the default operating point)."""
    started = time.perf_counter()
    settings = engine.settings
    decision = decision or engine.decision(served, None)
    spec = served.stored.audio_spec
    hop_s = audio_hop_s(settings, spec)
    cutter = WindowCutter(stream.sample_rate, spec.window_s, hop_s)
    batch = max(1, settings.audio_batch_max_size)
    pending: list[np.ndarray] = []  # windows waiting for a full batch, one row each
    probs: list[np.ndarray] = []
    levels: list[np.ndarray] = []  # each window's RMS level (dBFS), for the silence check
    spans: list[tuple[float, float]] = []
    timing = {"decode": 0.0, "preprocess": 0.0, "inference": 0.0}

    async def score(rows: list[np.ndarray]) -> None:
        mark = time.perf_counter()
        windows = np.stack(rows)
        levels.append(window_levels_dbfs(windows))
        if spec.do_normalize:
            windows = normalize_windows(windows, None)
        timing["preprocess"] += _ms(mark)
        mark = time.perf_counter()
        outputs = await _run_windows(served, windows, spec.window_samples)
        timing["inference"] += _ms(mark)
        stored = served.stored
        probs.append(stored.fake_probabilities(outputs))

    while True:
        mark = time.perf_counter()
        block = await engine.decode_pool.run(stream.read_block)
        timing["decode"] += _ms(mark)
        if block is None:
            break
        windows, cut = cutter.feed(block)
        pending.extend(windows)
        spans += cut
        while len(pending) >= batch:
            await score(pending[:batch])
            del pending[:batch]
        if expected_s:
            report(stream.decoded_s / expected_s)
    windows, cut = cutter.finish()
    spans += cut
    if pending:
        await score(pending)
    if len(windows):
        # The last windows; a clip shorter than one window is one window of its own length.
        await score(list(windows))
    summary = stream.summary
    assert summary is not None  # read_block returned None
    info = stream.info
    media = {
        "format": info.format,
        "duration_s": round(summary.duration_s, 3),
        "sample_rate": stream.sample_rate,
        "original_sample_rate": info.original_rate,
        "channels": info.channels,
        "windows": len(spans),
        "window_s": spec.window_s,
        "hop_s": hop_s,
    }
    timing = {k: round(v, 2) for k, v in timing.items()}
    warnings = [*served.warnings, *summary.warnings]
    return _result(
        engine,
        served,
        decision,
        np.concatenate(probs),
        np.concatenate(levels),
        spans,
        media,
        warnings,
        timing,
        started,
    )


def _result(
    engine: Engine,
    served: ServedModel,
    decision: Decision,
    raw: np.ndarray,
    levels: np.ndarray,
    spans: list[tuple[float, float]],
    media: dict[str, Any],
    warnings: list[dict[str, str]],
    timing: dict[str, float],
    started: float,
) -> dict[str, Any]:
    """The clip's result from its windows' raw scores: the mean raw score calibrated is the clip's
    probability (the map was fitted on clip-level scores); each window goes through the same map."""
    stored = served.stored
    raw_mean = float(raw.mean())
    probs = decision.probabilities(raw)
    mean_p, max_p = decision.probability(raw_mean), float(probs.max())
    threshold = decision.threshold
    fake_windows = int((probs >= threshold).sum())
    if max_p >= threshold > mean_p:
        warnings.append(
            {
                "code": "localized_fake",
                "message": f"{fake_windows} of {len(probs)} windows score above the threshold; see segments",
            }
        )
    result = {
        "id": new_id("det"),
        "modality": "audio",
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "verdict": verdict_for(mean_p, threshold, engine.settings.uncertain_band),
        "fake_probability": round(mean_p, 6),
        "raw_score": round(raw_mean, 6),
        "calibrated": decision.calibrated,
        "operating_point": decision.block(),
        "threshold": threshold,
        "model": stored.summary(),
        "aggregation": {
            "method": "mean",
            "rule": "verdict from the mean window score (calibrated when the model is) vs threshold",
            "max": round(max_p, 6),
            "windows_over_threshold": fake_windows,
        },
        "segments": [
            {"start_s": round(a, 3), "end_s": round(b, 3), "fake_probability": round(float(p), 6)}
            for (a, b), p in zip(spans, probs, strict=True)
        ],
        "faces": [],
        "media": media,
        "timing_ms": {**timing, "total": _ms(started)},
        "warnings": warnings,
    }
    problem = audio_problem(levels, engine.settings)
    return mark_not_applicable(result, problem) if problem is not None else result
