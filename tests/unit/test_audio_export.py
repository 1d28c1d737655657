"""Audio export parity (issue 4): a tiny seeded-dev Wav2Vec2ForSequenceClassification exported
through ``models.export.pipeline`` as fp32 and int8, with dynamic batch AND length axes, one
``input_values`` input (no attention mask: no window is ever padded, see models/export/hf_audio.py),
INT8 on MatMul/Gemm only, and its parity figures stored beside it.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import transformers

from models.audio_features import normalize_windows
from models.catalog import get_entry
from models.export.audio_probe import probe_signal
from models.export.hf_audio import HFAudioSource, receptive_field
from models.export.parity import FP32_TOLERANCE
from models.export.pipeline import PROBE_SIZE, export_model, export_source, make_source, probe_batches
from models.postprocess import fake_probabilities
from models.runtime import OnnxModel
from models.store import StoredModel, find_stored
from tests.tiny import TINY_WAV2VEC2

pytestmark = pytest.mark.unit

log = logging.getLogger(__name__)

MODEL_ID = "wav2vec2-audio"
RATE = 16_000
# Two lengths, each at batch 1 and 3: the catalog's full window and a short clip whose length is
# not a multiple of any conv stride (a clip shorter than one window runs at its own length).
LENGTHS = (64_000, 12_345)
BATCH_SIZES = (1, 3)


@pytest.fixture(scope="module")
def audio_store(bentoml_home) -> dict[str, StoredModel]:
    stored = export_model(MODEL_ID, offline=True, dev_overrides=TINY_WAV2VEC2)
    by_precision = {model.precision: model for model in stored}
    assert len(by_precision) == len(stored) == 2
    return by_precision


@pytest.fixture(scope="module")
def torch_source() -> HFAudioSource:
    # Same catalog entry, same dev seed: the very weights that were exported.
    source = make_source(MODEL_ID, offline=True, dev_overrides=TINY_WAV2VEC2)
    assert isinstance(source, HFAudioSource)
    return source


def _windows(batch_size: int, length: int, seed: int) -> np.ndarray:
    """Normalized windows that are not the probe set export checked (other seeds)."""
    raw = np.stack([probe_signal(length, RATE, i, seed=seed) for i in range(batch_size)])
    return normalize_windows(raw)


def _op_types(path: Path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


# --- stored metadata ---------------------------------------------------------------------------------


def test_audio_exports_stored_with_metadata(audio_store):
    entry = get_entry(MODEL_ID)
    assert set(audio_store) == {"fp32", "int8"}
    for precision, model in audio_store.items():
        meta = model.metadata
        assert meta["model_id"] == model.model_id == MODEL_ID
        assert meta["precision"] == precision
        assert meta["modality"] == model.modality == "audio"
        assert meta["weights"] == "dev"  # seeded random weights are never silent
        assert meta["source"].startswith("dev:Wav2Vec2ForSequenceClassification")
        assert meta["architecture"] == entry.architecture == "Wav2Vec2ForSequenceClassification"
        assert meta["labels"] == list(entry.labels) and meta["fake_index"] == entry.fake_index
        assert meta["labels"][meta["fake_index"]] == "fake"
        assert (meta["threshold"], meta["output"]) == (entry.threshold, "logits")
        assert {"torch", "transformers", "onnx", "onnxruntime"} <= set(meta["export_versions"])
        # Parity figures stored with the model.
        assert meta["parity_tolerance"] == FP32_TOLERANCE
        assert 0.0 <= meta["parity_max_abs_diff"] <= FP32_TOLERANCE
        assert meta["parity_probe_size"] == PROBE_SIZE
        if precision == "int8":
            assert 0.0 <= meta["int8_agreement"] <= 1.0
            assert 0.0 <= meta["int8_max_probability_diff"] <= 1.0
        else:
            assert "int8_agreement" not in meta
        # The audio spec is stored under "input" and read back typed.
        assert model.audio_spec == entry.audio
        assert meta["input"] == entry.audio.to_dict()
        with pytest.raises(TypeError, match="audio model"):
            _ = model.input_spec
        described = model.describe()
        assert described["modality"] == "audio" and described["precision"] == precision
        assert find_stored(MODEL_ID, precision) is not None
    log.info(
        "%s parity %.3g, int8 agreement %.3f (max prob diff %.3g)",
        MODEL_ID,
        audio_store["fp32"].metadata["parity_max_abs_diff"],
        audio_store["int8"].metadata["int8_agreement"],
        audio_store["int8"].metadata["int8_max_probability_diff"],
    )


def test_probe_set_covers_full_windows_and_short_clips(torch_source):
    batches = probe_batches(torch_source, PROBE_SIZE)
    assert sum(len(b) for b in batches) == PROBE_SIZE
    lengths = [b.shape[1] for b in batches]
    spec = torch_source.spec
    assert lengths[0] == spec.window_samples and len(batches[0]) >= PROBE_SIZE // 2
    assert min(lengths) == spec.min_samples and len(set(lengths)) == len(lengths) >= 2
    for batch in batches:
        assert batch.dtype == np.float32
        np.testing.assert_allclose(batch.mean(axis=1), 0.0, atol=1e-4)  # normalized per window
        # Unit variance up to HF's epsilon, which shows on the near-silent probes.
        np.testing.assert_allclose(batch.std(axis=1), 1.0, atol=0.01)


# --- the graph -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_one_input_with_dynamic_batch_and_length(audio_store, precision):
    session = ort.InferenceSession(str(audio_store[precision].onnx_path), providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    assert [i.name for i in inputs] == ["input_values"]  # no attention_mask input
    assert [o.name for o in outputs] == ["logits"]
    batch_dim, length_dim = inputs[0].shape
    assert not isinstance(batch_dim, int), f"batch axis is static ({batch_dim})"
    assert not isinstance(length_dim, int), f"length axis is static ({length_dim})"
    assert not isinstance(outputs[0].shape[0], int) and outputs[0].shape[1] == 2


@pytest.mark.parametrize("length", LENGTHS)
def test_onnx_matches_torch_at_batch_1_and_3_and_two_lengths(audio_store, torch_source, length):
    onnx_fp32 = OnnxModel(audio_store["fp32"].onnx_path, intra_op_threads=1)
    onnx_int8 = OnnxModel(audio_store["int8"].onnx_path, intra_op_threads=1)
    for batch_size in BATCH_SIZES:
        batch = _windows(batch_size, length, seed=4321 + length)
        expected = torch_source.predict(batch)
        got = onnx_fp32.run(batch)
        assert got.shape == expected.shape == (batch_size, 2)
        np.testing.assert_allclose(got, expected, rtol=0, atol=FP32_TOLERANCE)
        quantized = onnx_int8.run(batch)
        assert quantized.shape == got.shape and np.all(np.isfinite(quantized))
        p32 = fake_probabilities(got, "logits", audio_store["fp32"].metadata["fake_index"])
        p8 = fake_probabilities(quantized, "logits", audio_store["int8"].metadata["fake_index"])
        assert float(np.abs(p32 - p8).max()) < 0.05
    # Batch independence: an item's logits do not depend on its batch-mates.
    batch = _windows(3, length, seed=99)
    together = onnx_fp32.run(batch)
    alone = np.concatenate([onnx_fp32.run(batch[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)


def test_outputs_depend_on_the_audio(audio_store):
    """A non-vacuous parity: the seeded tiny model's logits move with its input."""
    onnx_fp32 = OnnxModel(audio_store["fp32"].onnx_path, intra_op_threads=1)
    logits = onnx_fp32.run(_windows(5, 16_000, seed=7))
    assert float(np.ptp(logits[:, 0])) > 1e-4


def test_int8_quantizes_matmul_and_gemm_only(audio_store):
    fp32_ops = _op_types(audio_store["fp32"].onnx_path)
    int8_ops = _op_types(audio_store["int8"].onnx_path)
    assert fp32_ops["Conv"] > 0
    assert not {"ConvInteger", "QLinearConv", "QLinearMatMul"} & set(int8_ops), int8_ops
    assert int8_ops["MatMulInteger"] > 0 and int8_ops["DynamicQuantizeLinear"] > 0
    assert int8_ops["Conv"] == fp32_ops["Conv"]  # the feature encoder stays fp32
    assert int8_ops["MatMulInteger"] + int8_ops["MatMul"] + int8_ops["Gemm"] >= fp32_ops["MatMul"]
    fp32_bytes = audio_store["fp32"].onnx_path.stat().st_size
    assert audio_store["int8"].onnx_path.stat().st_size < fp32_bytes


def test_re_export_is_idempotent(audio_store):
    """Tracing is deterministic: the same dev weights store the same bytes, hence the same tags."""
    again = export_source(make_source(MODEL_ID, offline=True, dev_overrides=TINY_WAV2VEC2))
    assert {m.precision: m.tag for m in again} == {p: m.tag for p, m in audio_store.items()}


# --- why the graph needs no attention mask ------------------------------------------------------------


@pytest.mark.parametrize(
    "norm",
    [
        {"feat_extract_norm": "group", "do_stable_layer_norm": False},  # wav2vec2-base style
        {"feat_extract_norm": "layer", "do_stable_layer_norm": True},  # lv60 style, mask-trained
    ],
    ids=["group", "layer"],
)
def test_unpadded_windows_need_no_attention_mask(norm):
    """An all-ones mask is the identity for wav2vec2: with no window padded, the mask-less graph
    computes what HF computes with the extractor's mask, whichever feature-encoder norm."""
    torch.manual_seed(3)
    config = transformers.Wav2Vec2Config(**{**TINY_WAV2VEC2, **norm, "num_labels": 2})
    model = transformers.Wav2Vec2ForSequenceClassification(config).eval()
    for length in LENGTHS:
        values = torch.from_numpy(_windows(2, length, seed=length))
        ones = torch.ones_like(values, dtype=torch.long)
        with torch.no_grad():
            plain = model(input_values=values).logits
            masked = model(input_values=values, attention_mask=ones).logits
        torch.testing.assert_close(plain, masked, rtol=0, atol=1e-6)


def test_receptive_field_bounds_the_shortest_clip():
    assert receptive_field(transformers.Wav2Vec2Config()) == 400  # wav2vec2-base: 25 ms at 16 kHz
    assert receptive_field(transformers.Wav2Vec2Config(**TINY_WAV2VEC2)) == 40
    spec = get_entry(MODEL_ID).audio
    assert spec is not None and spec.min_samples >= 400


# --- python -m models ensure ----------------------------------------------------------------------------


def test_ensure_exports_the_served_audio_model(monkeypatch):
    import models.__main__ as cli
    import models.export.pipeline as pipeline
    import models.store as store
    from config.settings import Settings, get_settings

    exported: list[str] = []
    monkeypatch.setattr(pipeline, "export_model", lambda model_id, **_: exported.append(model_id) or [])
    monkeypatch.setattr(store, "find_stored", lambda model_id, precision: None)
    monkeypatch.setattr(store, "list_stored", lambda model_id=None: [])  # an empty store
    assert cli._cmd_ensure(argparse.Namespace(offline=True)) == 0
    settings = get_settings()
    assert Settings.model_fields["audio_model"].default == MODEL_ID  # the default audio model
    # Image and audio models come first; video pairs and the face detector follow (their own tests).
    served = [*settings.served_image_models, *settings.served_audio_models]
    assert exported[: len(served)] == served
    assert settings.audio_model in exported
