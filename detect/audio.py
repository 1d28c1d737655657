"""POST /v1/detect/audio: decode -> 16 kHz mono -> overlapping windows -> batched model -> timeline.

Aggregation (stated in every result under ``aggregation``): the clip's ``fake_probability`` is
the mean of its windows' probabilities and decides the verdict against the threshold (with the
uncertain band); ``max`` is reported beside it, and a ``localized_fake`` warning is added when
some window crosses the threshold while the mean does not: a spliced-in synthetic phrase shows
up there and in ``segments`` even when most of the clip is genuine.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import anyio
import numpy as np

from detect.engine import Engine, ServedModel, audio_hop_s
from media.audio import decode_audio, make_windows
from models.audio_features import normalize_windows
from models.postprocess import fake_probabilities, verdict_for
from store.ids import new_id


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


async def _run_windows(served: ServedModel, windows: np.ndarray, window_len: int) -> np.ndarray:
    if windows.shape[1] != window_len:
        # A clip shorter than one window runs alone at its own length: it cannot be
        # concatenated with other requests' full-length windows, and padding would bias it.
        return await served.client.predict_together(windows)
    return await served.client.predict(windows)


async def detect_audio(engine: Engine, data: bytes, *, model_id: str | None) -> dict[str, Any]:
    started = time.perf_counter()
    settings = engine.settings
    served = engine.audio_model(model_id)
    stored = served.stored
    spec = stored.audio_spec
    decoded = await anyio.to_thread.run_sync(
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
    if spec.do_normalize:
        windows = normalize_windows(windows, None)
    preprocess_ms = _ms(mark)
    mark = time.perf_counter()
    outputs = await _run_windows(served, windows, spec.window_samples)
    inference_ms = _ms(mark)
    probs = fake_probabilities(outputs, stored.metadata["output"], int(stored.metadata["fake_index"]))
    mean_p, max_p = float(probs.mean()), float(probs.max())
    threshold = stored.threshold
    warnings = [*served.warnings, *decoded.warnings]
    fake_windows = int((probs >= threshold).sum())
    if max_p >= threshold > mean_p:
        warnings.append(
            {
                "code": "localized_fake",
                "message": f"{fake_windows} of {len(probs)} windows score above the threshold; see segments",
            }
        )
    return {
        "id": new_id("det"),
        "modality": "audio",
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "verdict": verdict_for(mean_p, threshold, settings.uncertain_band),
        "fake_probability": round(mean_p, 6),
        "threshold": threshold,
        "model": stored.summary(),
        "aggregation": {
            "method": "mean",
            "rule": "verdict from the mean window probability vs threshold",
            "max": round(max_p, 6),
            "windows_over_threshold": fake_windows,
        },
        "segments": [
            {"start_s": round(a, 3), "end_s": round(b, 3), "fake_probability": round(float(p), 6)}
            for (a, b), p in zip(spans, probs, strict=True)
        ],
        "faces": [],
        "media": {
            "format": decoded.format,
            "duration_s": round(decoded.duration_s, 3),
            "sample_rate": decoded.sample_rate,
            "original_sample_rate": decoded.original_rate,
            "channels": decoded.channels,
            "windows": len(spans),
            "window_s": spec.window_s,
            "hop_s": hop_s,
        },
        "timing_ms": {
            "decode": decode_ms,
            "preprocess": preprocess_ms,
            "inference": inference_ms,
            "total": _ms(started),
        },
        "warnings": warnings,
    }
