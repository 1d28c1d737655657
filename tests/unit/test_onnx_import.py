"""Any ONNX file exported elsewhere can be stored and served with a catalog entry's preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

from models.export.pipeline import export_model
from models.export.probe import probe_batch
from models.runtime import OnnxModel

pytestmark = pytest.mark.unit


def test_onnx_file_is_stored_with_like_models_spec(model_store, tmp_path):
    fp32 = model_store["vit-dima806"][0]
    stored = export_model("my-onnx-detector", source=str(fp32.onnx_path), like_model="vit-dima806")
    by_precision = {s.precision: s for s in stored}
    assert set(by_precision) == {"fp32", "int8"}
    imported = by_precision["fp32"]
    assert imported.model_id == "my-onnx-detector"
    assert imported.metadata["source"] == "onnx:model.onnx"
    assert imported.input_spec == fp32.input_spec  # size read from the file's static input shape
    assert imported.metadata["parity_max_abs_diff"] == 0.0
    assert 0.0 <= by_precision["int8"].metadata["int8_agreement"] <= 1.0
    batch = probe_batch(imported.input_spec, 3)
    same = OnnxModel(imported.onnx_path, intra_op_threads=1).run(batch)
    original = OnnxModel(fp32.onnx_path, intra_op_threads=1).run(batch)
    np.testing.assert_array_equal(same, original)


def test_onnx_source_with_unknown_like_model_is_rejected(model_store):
    with pytest.raises(KeyError, match="unknown model"):
        export_model("x", source=str(model_store["vit-dima806"][0].onnx_path), like_model="nope")
