"""The lean-runtime rule: the serving side never needs torch or tensorflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.unit

EXPORT_ONLY = ("torch", "tensorflow", "tensorflow-cpu", "transformers", "tf2onnx", "keras", "onnxscript")


def _name(requirement: str) -> str:
    return requirement.split("==")[0].split(">")[0].split("<")[0].strip().lower()


def test_bentofile_pins_equal_pyproject_runtime_group():
    groups = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["dependency-groups"]
    bentofile = yaml.safe_load((PROJECT_ROOT / "bentofile.yaml").read_text())
    assert sorted(bentofile["python"]["packages"]) == sorted(groups["runtime"])
    assert bentofile["python"]["lock_packages"] is False  # builds offline
    assert not {_name(r) for r in groups["runtime"]} & set(EXPORT_ONLY)
    assert "torch==2.13.0" in groups["export"]


def test_serving_imports_no_torch_or_tensorflow(model_store):
    """Import the whole serving graph (the server and the batch runner, which the same image
    runs) in a fresh interpreter and list the heavy modules loaded."""
    probe = (
        "import sys, json, service, batch.cli, batch.runner; "
        "sys.stdout.write(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('torch', 'tensorflow', 'transformers', 'keras', 'tf2onnx'))))"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_fresh_store_lists_nothing_instead_of_failing(tmp_path):
    """`make models` on a fresh clone asks the empty store what it holds (it once crashed)."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "BENTOML_HOME": str(tmp_path / "fresh")}
    probe = (
        "import sys, json; from models.store import find_stored, list_stored; "
        "sys.stdout.write(json.dumps([find_stored('vit-dima806', 'fp32'), list_stored('vit-dima806')]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [None, []]
