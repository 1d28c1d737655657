"""What a shard's results file holds, counted, and how fast this run went.

The counts cover the whole file (lines of earlier runs included: a resumed shard's summary
describes all its results), the throughput only this run. Written beside the results as
``<stem>.summary.json``, replaced whole (a temporary file renamed over it), never half written.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass
class Tally:
    ids: set[str] = field(default_factory=set)
    # modality -> verdict (REAL, FAKE, UNCERTAIN, NO_FACE) or "error" -> count
    by_modality: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, line: dict[str, Any]) -> None:
        self.ids.add(line["id"])
        result = line.get("result")
        modality = line.get("modality") or (result or {}).get("modality") or "unknown"
        if result is not None:
            self.by_modality[modality][str(result.get("verdict"))] += 1
        else:
            self.by_modality[modality]["error"] += 1
            self.errors[str((line.get("error") or {}).get("code", "unknown"))] += 1


def summary_document(
    tally: Tally,
    *,
    input_location: str,
    results: str,
    shard: str,
    items: int,
    remaining: int,
    answered_now: int,
    skipped: int,
    startup_s: float,
    run_s: float,
    status: str,
) -> dict[str, Any]:
    return {
        "status": status,
        "input": input_location,
        "results": results,
        "shard": shard,
        "items": items,
        "answered": len(tally.ids),
        "remaining": remaining,
        "errors": sum(tally.errors.values()),
        "by_modality": {m: dict(sorted(c.items())) for m, c in sorted(tally.by_modality.items())},
        "errors_by_code": dict(tally.errors.most_common()),
        "this_run": {
            "answered": answered_now,
            "skipped_as_answered": skipped,
            "startup_s": round(startup_s, 3),
            "run_s": round(run_s, 3),
            "wall_s": round(startup_s + run_s, 3),
            "items_per_s": round(answered_now / run_s, 3) if run_s > 0 else None,
        },
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def write_summary(path: Path, document: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
