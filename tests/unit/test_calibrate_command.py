"""``python -m models calibrate`` as the README runs it: labelled media in a JSONL file, the map and
figures stored in the model's metadata, read back by serving. On a copy of the session's model
store, so the other tests keep their uncalibrated models."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.media_factory import jpeg_bytes

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BENTOML_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "models", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def store_copy(model_store, bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("calibrated") / "bentos"
    shutil.copytree(bentoml_home, copy)
    return copy


def labelled(folder: Path, count: int = 12) -> Path:
    media = folder / "media"
    media.mkdir(parents=True)
    lines = []
    for i in range(count):
        (media / f"{i}.jpg").write_bytes(jpeg_bytes(96, 96, seed=100 + i))
        label = "fake" if i % 2 else "real"
        lines.append({"media": f"media/{i}.jpg", "label": label, "domain": "q90" if i < 6 else "q50"})
    (media / "tiny.jpg").write_bytes(jpeg_bytes(20, 20, seed=99))  # too small: skipped, counted
    lines.append({"media": "media/tiny.jpg", "label": "real"})
    data = folder / "labeled.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return data


def test_calibrate_stores_the_map_thresholds_and_figures_for_each_export(
    store_copy: Path, tmp_path: Path
) -> None:
    data = labelled(tmp_path)
    done = run(store_copy, "calibrate", "vit-dima806", "--data", str(data))
    assert done.returncode == 0, done.stderr
    reported = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(reported) == 2  # fp32 and int8: each has its own scores, so its own map
    for entry in reported:
        block = entry["calibration"]
        assert block["method"] == "platt" and set(block["params"]) == {"a", "b"}
        assert set(block["thresholds"]) == {"balanced", "high_precision", "high_recall"}
        assert all(0.0 <= t <= 1.0 for t in block["thresholds"].values())
        figures = block["figures"]
        assert set(figures) >= {
            "ece",
            "brier",
            "roc_auc",
            "tpr_at_fpr_1pct",
            "tpr_at_fpr_5pct",
            "fpr_by_domain",
        }
        assert set(figures["fpr_by_domain"]) == {"q90", "q50"}
        assert block["data"]["items"] == 13 and block["data"]["skipped"] == 1
        assert (block["data"]["fake"], block["data"]["real"]) == (6, 6)
        media_bytes = sum(p.stat().st_size for p in (tmp_path / "media").iterdir())
        assert block["data"]["media_bytes"] == media_bytes
        assert (
            len(block["data"]["sha256"]) == 64
            and block["data"]["sha256"] != hashlib.sha256(data.read_bytes()).hexdigest()
        )
    # Stored with the model: `python -m models list` (and /v1/models) publish it, serving applies it.
    listed = {
        json.loads(line)["tag"]: json.loads(line) for line in run(store_copy, "list").stdout.splitlines()
    }
    for entry in reported:
        assert listed[entry["tag"]]["calibration"] == entry["calibration"]
    check = (
        "from models.store import get_stored; from models.calibration import decision_for; "
        f"s = get_stored({reported[0]['tag']!r}); "
        "d = decision_for(s.model_id, s.metadata, s.threshold, 'high_recall', 'balanced'); "
        "print(d.threshold, d.calibrated)"
    )
    env = {**os.environ, "BENTOML_HOME": str(store_copy)}
    out = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.split() == [str(reported[0]["calibration"]["thresholds"]["high_recall"]), "True"], (
        out.stderr
    )


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"media": "media/0.jpg"}'], "expected"),
        (['{"media": "nowhere.jpg", "label": "fake"}'], "no file"),
        (
            ['{"media": "media/0.jpg", "label": "real"}', '{"media": "media/1.jpg", "label": "real"}'],
            "at least 2 fake",
        ),
    ],
)
def test_bad_calibration_data_is_refused_with_the_reason(
    store_copy: Path, tmp_path: Path, lines: list[str], message: str
) -> None:
    labelled(tmp_path)
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = run(store_copy, "calibrate", "vit-dima806", "--data", str(data), "--precision", "fp32")
    assert done.returncode == 2 and message in done.stderr, done.stderr
