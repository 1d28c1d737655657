"""POST /v1/detect/text: text -> token windows -> batched model -> result with character segments.

The text is tokenized in this process (``models/text_tokens.py``, the checkpoint's own tokenizer)
and cut into windows of the model's length with overlap; full windows go to the model service
as shareable rows (they batch with other requests' windows), a text shorter than one window runs
alone at its own length. Each window's probability is a ``segments`` entry over the characters
it covers (``start_char``, ``end_char``: Python string indices, end exclusive).

Aggregation (stated in every result under ``aggregation``): the text's raw score is the mean of
its windows' scores, calibrated when the model is (``models/calibration.py``), against the
threshold; ``max`` is beside it, and ``localized_fake`` warns when a window crosses the threshold
while the mean does not (a machine-written paragraph inside a human text).

A text under the model's ``min_tokens`` is ``NOT_APPLICABLE`` (``too_short``): too little for a
classifier to judge, and the model is not called.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from detect.applicability import mark_not_applicable
from detect.engine import Engine
from models.postprocess import verdict_for
from store.ids import new_id


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


async def detect_text(
    engine: Engine,
    text: str,
    *,
    model_id: str | None,
    text_format: str = "text",
    byte_count: int | None = None,
    operating_point: str | None = None,
) -> dict[str, Any]:
    """The result for ``text`` (already checked: UTF-8, not empty, within the caps)."""
    started = time.perf_counter()
    served = engine.text_model(model_id)
    decision = engine.decision(served, operating_point)
    stored = served.stored
    spec = stored.text_spec
    tokenizer = engine.tokenizer_for(served)
    windows = await engine.decode_pool.run(
        lambda: tokenizer.windows(text, spec.max_tokens, spec.overlap_tokens)
    )
    timing = {"tokenize": _ms(started)}
    media = {
        "format": text_format,
        "characters": len(text),
        "bytes": byte_count if byte_count is not None else len(text.encode("utf-8")),
        "tokens": windows.tokens,
        "windows": len(windows.spans),
        "window_tokens": spec.max_tokens,
        "overlap_tokens": spec.overlap_tokens,
    }
    result: dict[str, Any] = {
        "id": new_id("det"),
        "modality": "text",
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "verdict": "NOT_APPLICABLE",
        "fake_probability": None,
        "raw_score": None,
        "calibrated": decision.calibrated,
        "operating_point": decision.block(),
        "threshold": decision.threshold,
        "model": stored.summary(),
        "segments": [],
        "faces": [],
        "media": media,
        "timing_ms": timing,
        "warnings": list(served.warnings),
    }
    if windows.tokens < spec.min_tokens:
        timing["total"] = _ms(started)
        return mark_not_applicable(
            result,
            {
                "reason": "too_short",
                "message": f"the text is {windows.tokens} tokens; "
                f"under {spec.min_tokens} tokens is too short to judge",
                "measured": {"tokens": windows.tokens, "min_tokens": spec.min_tokens},
            },
        )
    mark = time.perf_counter()
    if windows.ids.shape[1] == spec.max_tokens:
        outputs = await served.client.predict(windows.ids)
    else:  # shorter than one window: its own length, alone
        outputs = await served.client.predict_together(windows.ids)
    timing["inference"] = _ms(mark)
    raw = stored.fake_probabilities(outputs)
    raw_mean = float(raw.mean())
    probs = decision.probabilities(raw)
    probability = decision.probability(raw_mean)
    threshold = decision.threshold
    over = int((probs >= threshold).sum())
    if float(probs.max()) >= threshold > probability:
        result["warnings"].append(
            {
                "code": "localized_fake",
                "message": f"{over} of {len(probs)} windows score above the threshold; see segments",
            }
        )
    result.update(
        verdict=verdict_for(probability, threshold, engine.settings.uncertain_band),
        fake_probability=round(probability, 6),
        raw_score=round(raw_mean, 6),
        aggregation={
            "method": "mean",
            "over": "windows",
            "rule": "verdict from the mean window score (calibrated when the model is) vs threshold",
            "max": round(float(probs.max()), 6),
            "windows_over_threshold": over,
        },
        segments=[
            {"start_char": a, "end_char": b, "fake_probability": round(float(p), 6)}
            for (a, b), p in zip(windows.spans, np.atleast_1d(probs), strict=True)
        ],
    )
    timing["total"] = _ms(started)
    return result
