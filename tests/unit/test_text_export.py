"""The text classifier export (models/export/hf_text.py): ONNX equal to transformers at every
window length, the tokenizer stored beside the graph, INT8 rows independent of their batch."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from models.runtime import OnnxModel, run_session
from models.text_tokens import TOKENIZER_FILE, TextTokenizer
from tests.tiny import TINY_ROBERTA

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def source():
    from models.catalog import get_entry
    from models.export.hf_text import HFTextSource

    return HFTextSource(get_entry("roberta-openai-detector"), offline=True, dev_overrides=TINY_ROBERTA)


def test_the_onnx_graph_equals_transformers_at_every_window_length(source, tmp_path) -> None:
    path = tmp_path / "text.onnx"
    source.export_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    rng = np.random.default_rng(0)
    vocab = source.model.config.vocab_size
    for length in (3, 17, 200, source.spec.max_tokens):
        ids = rng.integers(5, vocab, size=(3, length)).astype(np.int64)
        ids[:, 0], ids[:, -1] = 0, 2
        onnx_out = run_session(session, ids)
        assert np.abs(onnx_out - source.predict(ids)).max() < 1e-4, length


def test_the_stored_export_carries_its_tokenizer_and_figures(model_store) -> None:
    fp32, int8 = model_store["roberta-openai-detector"]
    for stored in (fp32, int8):
        assert stored.modality == "text" and stored.weights == "dev"
        assert (stored.path / TOKENIZER_FILE).is_file()
        assert set(stored.metadata["files"]) == {"model.onnx", TOKENIZER_FILE}
        assert stored.text_spec.max_tokens == 512 and stored.text_spec.bos_id == 0
        assert stored.metadata["parity_max_abs_diff"] <= 1e-3
        # ONNX Runtime's fused kernels were kept: they gave the plain graph's logits.
        assert "SkipLayerNormalization" in stored.metadata["export_versions"]["graph_fusions"]
    assert int8.metadata["int8_agreement"] >= 0.9 and int8.precision == "int8"


def test_an_int8_window_scores_the_same_alone_or_in_a_batch(model_store) -> None:
    _, int8 = model_store["roberta-openai-detector"]
    tokenizer = TextTokenizer(int8.path / TOKENIZER_FILE, bos_id=0, eos_id=2)
    text = "The committee met on Tuesday to review the budget and postponed the vote. " * 60
    windows = tokenizer.windows(text, 512, 128).ids
    assert len(windows) >= 3
    model = OnnxModel(int8.onnx_path, intra_op_threads=1, rows_alone=int8.rows_alone)
    together = model.run(windows)
    alone = np.concatenate([model.run(windows[i : i + 1]) for i in range(len(windows))])
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_a_local_hf_checkpoint_brings_its_labels_and_tokenizer(tmp_path) -> None:
    """Any AutoModelForSequenceClassification directory: labels from its config, the fake class by
    name, its own tokenizer stored beside the graph."""
    from transformers import PreTrainedTokenizerFast

    from models.catalog import get_entry
    from models.export.hf_text import HFTextSource, build_dev_model, build_dev_tokenizer

    entry = get_entry("roberta-openai-detector")
    model = build_dev_model(entry, dict(TINY_ROBERTA))
    model.config.id2label = {0: "human", 1: "machine-generated"}
    model.config.label2id = {"human": 0, "machine-generated": 1}
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_dev_tokenizer(1000),
        bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
    )  # fmt: skip
    tokenizer.save_pretrained(checkpoint)

    source = HFTextSource(entry, source=str(checkpoint))
    assert source.info.weights == "pretrained" and source.info.labels == ["human", "machine-generated"]
    assert source.info.fake_index == 1  # found by name, not the catalog's 0
    assert (source.spec.bos_id, source.spec.eos_id) == (0, 2)
    text = "The committee met on Tuesday to review the budget."
    ours, _ = source.runtime_tokenizer().encode(text)
    assert ours.tolist() == tokenizer(text, add_special_tokens=False)["input_ids"]
    path = tmp_path / "model.onnx"
    source.export_onnx(path)
    ids = source.runtime_tokenizer().windows(text, 512, 128).ids
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert np.abs(run_session(session, ids) - source.predict(ids)).max() < 1e-4
