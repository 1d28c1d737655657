"""What the pipelines add beside the classifier's figures: the media's Content Credentials and the
rule that weighs them (``provenance/manifests.py``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from detect.engine import Engine
from provenance.manifests import apply_provenance


async def with_provenance(engine: Engine, result: dict[str, Any], media: bytes | Path) -> dict[str, Any]:
    """``result`` with its ``provenance`` block and the rule applied (unless reading Content
    Credentials is turned off); the reading's time is in ``timing_ms.provenance`` and the total."""
    started = time.perf_counter()
    block = await engine.provenance_of(media, result["media"]["format"])
    if block is None:
        return result
    apply_provenance(result, block)
    spent = round((time.perf_counter() - started) * 1000, 2)
    timing = result["timing_ms"]
    timing["provenance"] = spent
    if "total" in timing:
        timing["total"] = round(timing["total"] + spent, 2)
    return result
