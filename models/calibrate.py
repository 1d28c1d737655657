"""``python -m models calibrate MODEL --data labeled.jsonl``: fit a calibration map for a stored
model on labelled media, measure how reliable it is, and store both in the model's metadata.

The data: one JSON object per line, ``{"media": "clips/a.wav", "label": "fake", "domain": "q50"}``
(``media`` relative to the file; ``label`` ``fake``/``real``, ``1``/``0`` or ``true``/``false``;
``domain`` optional: a compression level, a source, anything a reader wants false positives
counted by). Each item is scored by the exported model exactly as a request is (the same decoding,
windows and aggregation; ``raw_score`` of the result), in this process.

The map (``--method``): ``platt`` (a, b: sigmoid(a·logit(s) + b)), ``temperature`` (b = 0), or
``isotonic`` (a monotone step function); ``auto`` takes isotonic with at least 500 items of each
class, else Platt. Thresholds on the calibrated probability, per operating point: ``balanced``
(the most TPR − FPR), ``high_precision`` (the lowest threshold with FPR ≤ 1%), ``high_recall``
(the highest with TPR ≥ 95%). Figures: ECE (15 equal bins) and Brier score before and after,
ROC AUC, TPR at 1% and 5% FPR, the false-positive rate per domain at the balanced threshold, and
the data's sha256 and size. They are measured on the calibration data itself (in-sample): hold
data out and calibrate again to check them.

Export-time code (scikit-learn fits the maps); serving only reads the stored block
(``models/calibration.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from config import Settings
from errors import VerityError
from models.calibration import OPERATING_POINTS, Calibration, logit
from models.store import StoredModel, find_stored

log = logging.getLogger(__name__)

ISOTONIC_MIN_PER_CLASS = 500
ECE_BINS = 15
_LABELS = {"fake": 1, "real": 0, "1": 1, "0": 0, "true": 1, "false": 0}


@dataclass(frozen=True)
class LabelledItem:
    path: Path
    label: int  # 1 = fake
    domain: str | None


def read_labelled(data: Path) -> list[LabelledItem]:
    """The JSONL file's items; ``ValueError`` naming the line for anything malformed."""
    items = []
    for number, line in enumerate(data.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            label = _LABELS[str(row["label"]).strip().lower()]
            path = (data.parent / str(row["media"])).resolve()
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{data}:{number}: expected {{'media': PATH, 'label': fake|real, 'domain'?: ...}} ({exc!r})"
            ) from exc
        if not path.is_file():
            raise ValueError(f"{data}:{number}: no file {path}")
        items.append(LabelledItem(path, label, None if row.get("domain") is None else str(row["domain"])))
    return items


def data_fingerprint(data: Path, items: list[LabelledItem]) -> dict[str, Any]:
    """sha256 over the JSONL's bytes and every media file's, and the data's size."""
    digest = hashlib.sha256(data.read_bytes())
    total = 0
    for item in items:
        content = item.path.read_bytes()
        total += len(content)
        digest.update(hashlib.sha256(content).digest())
    return {"sha256": digest.hexdigest(), "items": len(items), "media_bytes": total, "file": data.name}


async def raw_scores(
    settings: Settings, stored: StoredModel, items: list[LabelledItem]
) -> list[float | None]:
    """Each item's ``raw_score`` as the served pipeline computes it (None: NOT_APPLICABLE, or a
    file the pipeline refuses, logged)."""
    from detect.audio import score_audio
    from detect.hosting import ServedModels, build_inprocess_engine
    from detect.image import detect_image

    image = stored.modality == "image"
    models = ServedModels(
        image={stored.model_id: stored} if image else {}, audio={} if image else {stored.model_id: stored}
    )
    engine = build_inprocess_engine(settings.model_copy(update={"provenance": False}), models)
    scores: list[float | None] = []
    for item in items:
        data = await anyio.to_thread.run_sync(item.path.read_bytes)
        try:
            if image:
                result = await detect_image(
                    engine, data, model_id=stored.model_id, explain=False, provenance=False
                )
            else:
                result = await score_audio(engine, data, model_id=stored.model_id)
        except VerityError as exc:
            log.warning("skipped %s: %s (%s)", item.path, exc, exc.code)
            scores.append(None)
            continue
        scores.append(result["raw_score"])
    return scores


def _ece(probs: np.ndarray, labels: np.ndarray) -> float:
    bins = np.minimum((probs * ECE_BINS).astype(int), ECE_BINS - 1)
    total = 0.0
    for b in range(ECE_BINS):
        inside = bins == b
        if inside.any():
            total += float(inside.mean()) * abs(float(probs[inside].mean()) - float(labels[inside].mean()))
    return total


def fit_map(raw: np.ndarray, labels: np.ndarray, method: str) -> tuple[str, dict[str, Any]]:
    """The fitted map as (method, params) for ``models.calibration.Calibration``."""
    if method == "auto":
        per_class = min(int(labels.sum()), int((1 - labels).sum()))
        method = "isotonic" if per_class >= ISOTONIC_MIN_PER_CLASS else "platt"
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, labels)
        return method, {
            "x": [float(v) for v in iso.X_thresholds_],
            "y": [float(v) for v in iso.y_thresholds_],
        }
    z = logit(raw)[:, None]
    if method == "temperature":
        from scipy.optimize import minimize_scalar

        def loss(a: float) -> float:
            # Log-loss from the logits directly: log(1 + e^x) without overflow.
            x = a * z[:, 0]
            return float(np.mean(np.logaddexp(0.0, x) - labels * x))

        best = minimize_scalar(loss, bounds=(1e-3, 100.0), method="bounded")
        return method, {"a": float(best.x), "b": 0.0}
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        fitted = LogisticRegression(C=1e6).fit(z, labels)
        return method, {"a": float(fitted.coef_[0, 0]), "b": float(fitted.intercept_[0])}
    raise ValueError(f"unknown calibration method {method!r}: auto, platt, temperature or isotonic")


def operating_thresholds(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """A threshold per operating point, on the calibrated probabilities (``p >= t`` is fake)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(labels, probs)
    thresholds = np.clip(thresholds, 0.0, 1.0)  # the first is +inf: "nothing is fake"
    balanced = int(np.argmax(tpr - fpr))
    precise = int(np.flatnonzero(fpr <= 0.01)[-1])  # the lowest threshold still at FPR <= 1%
    recall = int(np.flatnonzero(tpr >= 0.95)[0])  # the highest threshold already at TPR >= 95%
    chosen = {"balanced": balanced, "high_precision": precise, "high_recall": recall}
    # Not rounded: a rounded-up threshold would drop the items sitting exactly on it.
    return {name: float(thresholds[chosen[name]]) for name in OPERATING_POINTS}


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, limit: float) -> float:
    return float(tpr[np.flatnonzero(fpr <= limit)[-1]])


def figures(
    raw: np.ndarray, probs: np.ndarray, labels: np.ndarray, domains: list[str | None], balanced: float
) -> dict[str, Any]:
    from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(labels, probs)
    per_domain: dict[str, dict[str, Any]] = {}
    for domain in sorted({d for d in domains if d is not None}):
        real = np.asarray([d == domain for d in domains]) & (labels == 0)
        per_domain[domain] = {
            "real_items": int(real.sum()),
            "false_positive_rate": round(float((probs[real] >= balanced).mean()), 6) if real.any() else None,
        }
    return {
        "ece": round(_ece(probs, labels), 6),
        "ece_raw": round(_ece(raw, labels), 6),
        "brier": round(float(brier_score_loss(labels, probs)), 6),
        "brier_raw": round(float(brier_score_loss(labels, raw)), 6),
        "roc_auc": round(float(roc_auc_score(labels, probs)), 6),
        "tpr_at_fpr_1pct": round(_tpr_at(fpr, tpr, 0.01), 6),
        "tpr_at_fpr_5pct": round(_tpr_at(fpr, tpr, 0.05), 6),
        "fpr_by_domain": per_domain,
        "measured_on": "the calibration data (in-sample)",
    }


def calibrate(
    settings: Settings, stored: StoredModel, data: Path, items: list[LabelledItem], method: str
) -> dict[str, Any]:
    """The ``calibration`` block for ``stored`` (not yet stored)."""
    if stored.modality not in ("image", "audio"):
        raise ValueError(
            f"{stored.model_id} is a {stored.modality} model: calibration is for image and audio models"
        )
    scores = anyio.run(raw_scores, settings, stored, items)
    kept = [(s, item) for s, item in zip(scores, items, strict=True) if s is not None]
    labels = np.asarray([item.label for _, item in kept], dtype=np.float64)
    if len(kept) < 4 or labels.sum() < 2 or (1 - labels).sum() < 2:
        raise ValueError(
            f"calibration needs at least 2 fake and 2 real items that the model can judge; got "
            f"{int(labels.sum())} fake, {int((1 - labels).sum())} real ({len(items) - len(kept)} skipped)"
        )
    raw = np.asarray([s for s, _ in kept], dtype=np.float64)
    chosen, params = fit_map(raw, labels, method)
    calibration = Calibration(method=chosen, params=params, thresholds={})  # type: ignore[arg-type]
    probs = calibration.apply(raw)
    thresholds = operating_thresholds(probs, labels)
    block = {
        "method": chosen,
        "params": params,
        "thresholds": thresholds,
        "figures": figures(raw, probs, labels, [item.domain for _, item in kept], thresholds["balanced"]),
        "data": {
            **data_fingerprint(data, items),
            "fake": int(labels.sum()),
            "real": int((1 - labels).sum()),
            "skipped": len(items) - len(kept),
        },
        "fitted_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    # Plain JSON types only: the block is stored in the model's YAML and served as JSON.
    return json.loads(json.dumps(block, default=float))


def exports_to_calibrate(model_id: str, precision: str | None) -> list[StoredModel]:
    """The newest stored export of ``model_id`` at each precision (or at ``precision``): each has
    its own scores, so each gets its own map."""
    found = [find_stored(model_id, p) for p in ((precision,) if precision else ("fp32", "int8"))]
    stored = [s for s in found if s is not None]
    if not stored:
        raise ValueError(f"{model_id} has no {precision or ''} export in the model store: export it first")
    return stored
