"""Export parity: every ONNX export agrees with its source framework and lands in the store with
the metadata serving trusts (models/export/).

Sources are tiny real architectures: the session's seeded-dev ViT and SigLIP (conftest
``model_store``) and small Keras CNNs built here, functional and ``keras.Sequential``, saved as
``.h5`` and ``.keras``, with a 1-unit sigmoid and a 2-unit softmax head. Everything goes through
``models.export.pipeline``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import onnxruntime as ort
import pytest

from errors import ModelError, ParityError, VerityError
from models.catalog import get_entry
from models.export.parity import FP32_TOLERANCE, check_parity
from models.export.pipeline import PROBE_SIZE, export_model, export_source, make_source
from models.export.probe import probe_images
from models.export.quantize import quantize_int8
from models.export.save import save_onnx
from models.export.source import dev_seed
from models.postprocess import fake_probabilities
from models.preprocess import preprocess_batch
from models.runtime import OnnxModel
from models.store import StoredModel, find_stored, list_stored
from tests.conftest import PROJECT_ROOT
from tests.media_factory import photo
from tests.tiny import TINY_SIGLIP, TINY_VIT

pytestmark = pytest.mark.unit

log = logging.getLogger(__name__)

HF_TINY = {"vit-dima806": TINY_VIT, "siglip-open-deepfake": TINY_SIGLIP}
BATCH_SIZES = (1, 5)
KERAS_SIZE = 32


# --- helpers ---------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _by_precision(stored: list[StoredModel]) -> dict[str, StoredModel]:
    by_precision = {model.precision: model for model in stored}
    assert len(by_precision) == len(stored)
    return by_precision


def _pictures(count: int, spec) -> np.ndarray:
    """Preprocessed pictures that are not the probe set export checked: photo-like ones of
    assorted sizes, alternating with differently seeded probe-style ones (colours, shapes)."""
    others = probe_images(count, size=96, seed=4321)
    images = [
        photo(90 + 37 * i, 70 + 23 * i, seed=100 + i) if i % 2 == 0 else others[i] for i in range(count)
    ]
    return preprocess_batch(images, spec)


def _stored_tags(model_id: str) -> set[str]:
    return {str(model.tag) for model in bentoml.models.list(model_id)}


def _assert_stored_metadata(model: StoredModel, *, model_id: str, precision: str) -> dict[str, Any]:
    """What every stored export must carry, whatever its source."""
    meta = model.metadata
    sha = _sha256(model.onnx_path)
    assert meta["model_id"] == model.model_id == model_id
    assert meta["precision"] == precision
    assert meta["sha256"] == sha, "metadata sha256 must be the stored file's"
    assert model.tag == f"{model_id}:{precision}-{sha[:12]}"
    assert meta["parity_tolerance"] == FP32_TOLERANCE
    assert 0.0 <= meta["parity_max_abs_diff"] <= meta["parity_tolerance"]
    assert meta["parity_probe_size"] == PROBE_SIZE
    assert {"onnx", "onnxruntime"} <= set(meta["export_versions"])
    if precision == "int8":
        assert 0.0 <= meta["int8_agreement"] <= 1.0
        assert 0.0 <= meta["int8_max_probability_diff"] <= 1.0
    else:
        assert "int8_agreement" not in meta
    described = model.describe()
    assert described["sha256"] == sha and described["precision"] == precision
    return meta


def _assert_dynamic_batch(path: Path) -> None:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch_dim = session.get_inputs()[0].shape[0]
    assert not isinstance(batch_dim, int), f"batch axis is static ({batch_dim})"
    assert not isinstance(session.get_outputs()[0].shape[0], int)


# --- HF: ViT and SigLIP (session model store) ------------------------------------------------------


@pytest.mark.parametrize("model_id", sorted(HF_TINY))
def test_hf_exports_stored_with_metadata(model_store, model_id):
    entry = get_entry(model_id)
    by_precision = _by_precision(model_store[model_id])
    assert set(by_precision) == {"fp32", "int8"}
    for precision, model in by_precision.items():
        meta = _assert_stored_metadata(model, model_id=model_id, precision=precision)
        assert meta["weights"] == "dev"  # seeded random weights are never silent
        assert meta["source"].startswith(f"dev:{entry.architecture}")
        assert meta["architecture"] == entry.architecture
        assert meta["labels"] == list(entry.labels)
        assert meta["fake_index"] == entry.fake_index
        assert meta["threshold"] == entry.threshold
        assert meta["output"] == "logits"
        assert {"torch", "transformers"} <= set(meta["export_versions"])
        spec = model.input_spec
        image_size = HF_TINY[model_id]["image_size"]
        assert spec.size == (image_size, image_size)  # the tiny config's, not the catalog's 224
        assert (spec.layout, spec.resample) == ("NCHW", entry.input.resample)
        assert (spec.rescale, spec.mean, spec.std) == (entry.input.rescale, entry.input.mean, entry.input.std)
        assert find_stored(model_id, precision) is not None
    log.info(
        "%s parity %.3g, int8 agreement %.3f",
        model_id,
        by_precision["fp32"].metadata["parity_max_abs_diff"],
        by_precision["int8"].metadata["int8_agreement"],
    )


@pytest.mark.parametrize("model_id", sorted(HF_TINY))
def test_hf_onnx_matches_torch_at_batch_1_and_5(model_store, model_id):
    by_precision = _by_precision(model_store[model_id])
    fp32, int8 = by_precision["fp32"], by_precision["int8"]
    # Same catalog entry, same dev seed: the very weights that were exported.
    source = make_source(model_id, offline=True, dev_overrides=HF_TINY[model_id])
    onnx_fp32 = OnnxModel(fp32.onnx_path, intra_op_threads=1)
    onnx_int8 = OnnxModel(int8.onnx_path, intra_op_threads=1)
    for path in (fp32.onnx_path, int8.onnx_path):
        _assert_dynamic_batch(path)
    for batch_size in BATCH_SIZES:
        batch = _pictures(batch_size, fp32.input_spec)
        expected = source.predict(batch)
        got = onnx_fp32.run(batch)
        assert got.shape == expected.shape == (batch_size, len(fp32.metadata["labels"]))
        np.testing.assert_allclose(got, expected, rtol=0, atol=FP32_TOLERANCE)
        quantized = onnx_int8.run(batch)
        assert quantized.shape == got.shape and np.all(np.isfinite(quantized))
    # Rows do not depend on their batch neighbours.
    batch = _pictures(5, fp32.input_spec)
    together = onnx_fp32.run(batch)
    alone = np.concatenate([onnx_fp32.run(batch[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)


def test_hf_re_export_is_idempotent(model_store):
    before = _stored_tags("vit-dima806")
    again = export_model("vit-dima806", offline=True, dev_overrides=TINY_VIT)
    assert [m.tag for m in again] == [m.tag for m in model_store["vit-dima806"]]
    assert _stored_tags("vit-dima806") == before


def test_dev_weights_are_seeded_per_model_id(tmp_path):
    """Two catalog ids with one architecture and dev config get different dev weights (hence
    different exports), each id the same weights every time: comparing two dev models compares
    two models, and a re-export stays the idempotent no-op it is."""
    import torch

    first, second = "vit-dima806", "vit-deepfake-v2"
    assert get_entry(first).architecture == get_entry(second).architecture
    assert get_entry(first).dev_config == get_entry(second).dev_config
    sources = {
        name: make_source(model_id, offline=True, dev_overrides=TINY_VIT)
        for name, model_id in (("first", first), ("again", first), ("second", second))
    }
    weights = {name: source.model.state_dict() for name, source in sources.items()}
    assert weights["first"].keys() == weights["second"].keys()  # the same architecture...
    assert any(  # ...with other weights
        not torch.equal(tensor, weights["second"][key])
        for key, tensor in weights["first"].items()
        if tensor.is_floating_point()
    )
    assert all(torch.equal(tensor, weights["again"][key]) for key, tensor in weights["first"].items())
    # The seed is a stable hash of the id (not ``hash()``, salted per process): pinned, as a
    # change would give every dev export a new store tag.
    assert dev_seed(first) == 374720517 and dev_seed(second) != dev_seed(first)
    assert sources["first"].info.source == f"dev:ViTForImageClassification(seed={dev_seed(first)})"
    digests = {}
    for name, source in sources.items():
        path = tmp_path / f"{name}.onnx"
        source.export_onnx(path)
        digests[name] = _sha256(path)
    assert digests["first"] == digests["again"] != digests["second"]


def test_saving_the_same_file_twice_returns_the_same_tag(model_store):
    fp32 = _by_precision(model_store["siglip-open-deepfake"])["fp32"]
    before = _stored_tags("siglip-open-deepfake")
    metadata = {k: v for k, v in fp32.metadata.items() if k != "sha256"}
    first = save_onnx(fp32.onnx_path, metadata)
    second = save_onnx(fp32.onnx_path, metadata)
    assert first.tag == second.tag == fp32.tag
    assert _stored_tags("siglip-open-deepfake") == before
    assert list_stored("siglip-open-deepfake")  # the store lists what was saved


# --- Keras CNNs: .h5 / .keras x sigmoid / softmax ------------------------------------------------


def _seed_weights(model, seed: int) -> None:
    """Non-trivial weights without training: every kernel, bias and BatchNorm statistic random."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        shape = tuple(weight.shape)
        if weight.path.endswith(("gamma", "moving_variance")):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.3, shape)
        weight.assign(value.astype("float32"))


def _build_cnn(
    head: str, *, seed: int = 0, input_shape=(KERAS_SIZE, KERAS_SIZE, 3), units=None, api: str = "functional"
):
    """A small image CNN, written with the functional API or as ``keras.Sequential`` (``api``; the
    same layers either way); ``units`` overrides the head width (for rejections)."""
    import keras

    units = units or (1 if head == "sigmoid" else 2)
    layers = [
        keras.layers.Conv2D(8, 3, padding="same"),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, padding="same"),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(units, activation=head, name="head"),
    ]
    if api == "sequential":
        model = keras.Sequential([keras.Input(shape=input_shape), *layers], name=f"seq_cnn_{head}_{seed}")
    else:
        inputs = keras.Input(shape=input_shape, name="image")
        x = inputs
        for layer in layers:
            x = layer(x)
        model = keras.Model(inputs, x, name=f"cnn_{head}_{seed}")
    _seed_weights(model, seed)
    return model


@dataclass
class KerasCase:
    head: str
    fmt: str
    api: str  # "functional" | "sequential"
    path: Path
    source: Any  # models.export.keras.KerasImageSource
    stored: dict[str, StoredModel]

    @property
    def units(self) -> int:
        return 1 if self.head == "sigmoid" else 2


# Sequential is the most common way to write a small CNN; tf2onnx alone cannot convert one
# (models/export/keras.py, ``convertible``).
KERAS_CASES = [
    (head, fmt, api)
    for api in ("functional", "sequential")
    for head in ("sigmoid", "softmax")
    for fmt in ("h5", "keras")
]


@pytest.fixture(scope="module", params=KERAS_CASES, ids=["-".join(c) for c in KERAS_CASES])
def keras_case(request, tmp_path_factory, bentoml_home) -> KerasCase:
    head, fmt, api = request.param
    path = tmp_path_factory.mktemp("keras") / f"detector-{head}-{api}.{fmt}"
    _build_cnn(head, seed=len(head) * 10 + len(fmt) + (50 if api == "sequential" else 0), api=api).save(path)
    source = make_source("keras-cnn", source=str(path))
    stored = _by_precision(export_source(source))
    return KerasCase(head, fmt, api, path, source, stored)


def test_keras_exports_stored_with_metadata(keras_case):
    entry = get_entry("keras-cnn")
    assert set(keras_case.stored) == {"fp32", "int8"}
    for precision, model in keras_case.stored.items():
        meta = _assert_stored_metadata(model, model_id="keras-cnn", precision=precision)
        assert meta["weights"] == "pretrained"  # the user's own file
        assert meta["source"] == f"file:{keras_case.path.name}"
        assert meta["architecture"] == f"Keras:{keras_case.api.capitalize()}"  # the file's own model
        assert meta["labels"] == list(entry.labels)
        assert meta["fake_index"] == entry.fake_index
        assert meta["threshold"] == entry.threshold
        assert meta["output"] == "probabilities"  # sigmoid/softmax are inside the graph
        assert {"tensorflow", "keras", "tf2onnx"} <= set(meta["export_versions"])
        spec = model.input_spec
        assert spec.size == (KERAS_SIZE, KERAS_SIZE)  # read from the model's input shape
        assert spec.layout == "NHWC"
        assert (spec.rescale, spec.mean, spec.std) == (entry.input.rescale, (0.0,) * 3, (1.0,) * 3)


def test_keras_onnx_matches_keras_at_batch_1_and_5(keras_case):
    import keras

    fp32, int8 = keras_case.stored["fp32"], keras_case.stored["int8"]
    # The source framework, loaded afresh from the user's file.
    original = keras.models.load_model(keras_case.path, compile=False)
    onnx_fp32 = OnnxModel(fp32.onnx_path, intra_op_threads=1)
    onnx_int8 = OnnxModel(int8.onnx_path, intra_op_threads=1)
    for path in (fp32.onnx_path, int8.onnx_path):
        _assert_dynamic_batch(path)
    for batch_size in BATCH_SIZES:
        batch = _pictures(batch_size, fp32.input_spec)
        assert batch.shape == (batch_size, KERAS_SIZE, KERAS_SIZE, 3)
        expected = np.asarray(original(batch, training=False))
        got = onnx_fp32.run(batch)
        assert got.shape == expected.shape == (batch_size, keras_case.units)
        np.testing.assert_allclose(got, expected, rtol=0, atol=FP32_TOLERANCE)
        np.testing.assert_allclose(got, keras_case.source.predict(batch), rtol=0, atol=FP32_TOLERANCE)
        assert np.all((got >= 0) & (got <= 1))
        if keras_case.units == 2:
            np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
        quantized = onnx_int8.run(batch)
        assert quantized.shape == got.shape and np.all(np.isfinite(quantized))
        fake = fake_probabilities(got, "probabilities", fp32.metadata["fake_index"])
        assert fake.shape == (batch_size,)
    # The seeded weights make a model whose outputs depend on the picture (a non-vacuous parity).
    spread = onnx_fp32.run(_pictures(5, fp32.input_spec))
    assert float(np.ptp(spread[:, -1])) > 1e-3


def test_keras_re_export_is_idempotent(keras_case):
    before = _stored_tags("keras-cnn")
    again = _by_precision(export_source(make_source("keras-cnn", source=str(keras_case.path))))
    assert {p: m.tag for p, m in again.items()} == {p: m.tag for p, m in keras_case.stored.items()}
    assert _stored_tags("keras-cnn") == before


# --- Keras models that are not image classifiers -------------------------------------------------


def _save(model, tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    model.save(path)
    return str(path)


def _dense_model():
    import keras

    inputs = keras.Input(shape=(10,))
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))


def _spatial_output_model():
    import keras

    inputs = keras.Input(shape=(KERAS_SIZE, KERAS_SIZE, 3))
    return keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="softmax")(inputs))


def _two_head_model():
    import keras

    inputs = keras.Input(shape=(KERAS_SIZE, KERAS_SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    heads = [keras.layers.Dense(1, activation="sigmoid")(pooled), keras.layers.Dense(2)(pooled)]
    return keras.Model(inputs, heads)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (_dense_model, "expected an NHWC RGB image input"),
        (lambda: _build_cnn("softmax", input_shape=(KERAS_SIZE, KERAS_SIZE, 1)), "NHWC RGB image input"),
        (lambda: _build_cnn("softmax", input_shape=(KERAS_SIZE, KERAS_SIZE, 4)), "NHWC RGB image input"),
        (lambda: _build_cnn("softmax", units=3), "1-unit sigmoid or 2-unit softmax head"),
        (lambda: _build_cnn("softmax", units=10), "1-unit sigmoid or 2-unit softmax head"),
        (_spatial_output_model, "one \\(batch, units\\) output"),
        (_two_head_model, "one \\(batch, units\\) output"),
    ],
    ids=["dense-input", "grayscale", "rgba", "3-unit-head", "10-unit-head", "spatial-output", "two-heads"],
)
def test_keras_non_image_classifier_is_rejected(tmp_path, make, match):
    path = _save(make(), tmp_path, "not-a-detector.keras")
    with pytest.raises(ValueError, match=match) as err:
        make_source("keras-cnn", source=path)
    assert "not-a-detector.keras" in str(err.value)  # names the user's file


def test_keras_fake_index_outside_the_head_is_rejected(tmp_path):
    path = _save(_build_cnn("softmax"), tmp_path, "detector.keras")
    with pytest.raises(ValueError, match="fake_index must be 0 or 1"):
        make_source("keras-cnn", source=path, fake_index=2)
    flipped = make_source("keras-cnn", source=path, fake_index=0)
    assert flipped.info.fake_index == 0


def test_keras_cnn_without_a_file_is_refused():
    with pytest.raises(ValueError, match="needs --source"):
        make_source("keras-cnn")


# --- parity errors ----------------------------------------------------------------------------------


def test_check_parity_returns_the_max_abs_diff_within_tolerance():
    rng = np.random.default_rng(3)
    source = rng.normal(size=(6, 2)).astype(np.float32)
    onnx = source.copy()
    onnx[4, 0] += 4e-4
    assert check_parity("m", onnx, source) == pytest.approx(4e-4, rel=1e-3)
    assert check_parity("m", source, source) == 0.0


def test_check_parity_raises_a_typed_error_naming_the_worst_element():
    rng = np.random.default_rng(4)
    source = rng.normal(size=(5, 2)).astype(np.float32)
    onnx = source.copy()
    onnx[1, 0] += 0.002
    onnx[3, 1] -= 0.25  # the worst
    with pytest.raises(ParityError) as err:
        check_parity("vit-test", onnx, source, tolerance=1e-3)
    error = err.value
    assert isinstance(error, ModelError) and not isinstance(error, VerityError)  # export-side, not HTTP
    assert error.max_abs_diff == pytest.approx(0.25, rel=1e-5)
    assert (error.model_id, error.tolerance, error.where) == ("vit-test", 1e-3, "output index (3, 1)")
    message = str(error)
    assert "vit-test" in message and "(3, 1)" in message and "0.25" in message and "0.001" in message


def test_check_parity_shape_mismatch():
    with pytest.raises(ParityError) as err:
        check_parity("m", np.zeros((4, 1)), np.zeros((4, 2)))
    assert err.value.max_abs_diff == float("inf")
    assert "shape (4, 1) vs (4, 2)" in str(err.value)


def test_check_parity_nan_is_a_parity_error_at_its_index():
    source = np.zeros((3, 2), dtype=np.float32)
    onnx = source.copy()
    onnx[0, 1] = 5e-4  # within tolerance
    onnx[2, 0] = np.nan
    with pytest.raises(ParityError) as err:
        check_parity("m", onnx, source)
    assert not np.isfinite(err.value.max_abs_diff)
    assert err.value.where == "output index (2, 0)"
    with pytest.raises(ParityError) as all_nan:
        check_parity("m", np.full((2, 2), np.nan), np.zeros((2, 2)))
    assert all_nan.value.where == "output index (0, 0)"


class _MismatchedSource:
    """A real export that does not match the model it claims: ONNX from one Keras CNN, reference
    outputs from another (what a wrong checkpoint or a broken converter looks like)."""

    def __init__(self, exported, reference) -> None:
        self.info = exported.info
        self._exported, self._reference = exported, reference

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self._reference.predict(batch)

    def export_onnx(self, path: Path) -> None:
        self._exported.export_onnx(path)


def test_export_with_a_parity_failure_stores_nothing(tmp_path, bentoml_home):
    exported = make_source("keras-cnn", source=_save(_build_cnn("softmax", seed=1), tmp_path, "a.keras"))
    reference = make_source("keras-cnn", source=_save(_build_cnn("softmax", seed=2), tmp_path, "b.keras"))
    before = _stored_tags("keras-cnn")
    with pytest.raises(ParityError) as err:
        export_source(_MismatchedSource(exported, reference))
    assert err.value.model_id == "keras-cnn"
    assert err.value.max_abs_diff > FP32_TOLERANCE
    assert "output index (" in str(err.value)
    assert _stored_tags("keras-cnn") == before


# --- int8 quantization's logs ----------------------------------------------------------------------


def _matmul_onnx(path: Path) -> None:
    """``x @ weight + bias``: the smallest graph dynamic quantization has work on."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(8, 4)).astype(np.float32), "weight")
    bias = numpy_helper.from_array(rng.normal(size=(4,)).astype(np.float32), "bias")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["h"]), helper.make_node("Add", ["h", "bias"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [weight, bias],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_quantizing_logs_ours_not_the_quantizers_info(tmp_path, caplog):
    """ONNX Runtime's quantizer logs "Quantization parameters for tensor ..." at INFO through the
    root logger (dozens of lines per export); export keeps its own INFO lines and drops those."""
    root, named = logging.getLogger(), logging.getLogger("onnxruntime.quantization")
    filters, level = list(root.filters), named.level
    _matmul_onnx(tmp_path / "fp32.onnx")
    caplog.set_level(logging.DEBUG)
    quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")
    quantizer = os.path.join("onnxruntime", "quantization", "")
    chatter = [
        record.getMessage()
        for record in caplog.records
        if record.levelno < logging.WARNING
        and (quantizer in record.pathname or record.name.startswith("onnxruntime"))
    ]
    assert chatter == []
    assert "quantized fp32.onnx -> int8.onnx" in [
        record.getMessage() for record in caplog.records if record.name == "models.export.quantize"
    ]
    assert (tmp_path / "int8.onnx").stat().st_size > 0
    # Nothing left behind: after quantizing, the quantizer logs as it did before.
    assert (root.filters, named.level) == (filters, level)


# --- the CLI ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["functional", "sequential"])
def test_cli_exports_a_keras_h5_file(tmp_path, bentoml_home, api):
    name = f"cli-detector-{api}.h5"
    path = Path(_save(_build_cnn("sigmoid", seed=77, api=api), tmp_path, name))
    assert os.environ["BENTOML_HOME"] == str(bentoml_home)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "models", "export", "keras-cnn", "--source", str(path)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Our INFO logs on stderr, not ONNX Runtime's quantizer's (models/export/quantize.py).
    assert "INFO models.export.quantize quantized fp32.onnx -> int8.onnx" in result.stderr
    assert "Quantization parameters" not in result.stderr
    stored = [m for m in list_stored("keras-cnn") if m.metadata["source"] == f"file:{name}"]
    by_precision = _by_precision(stored)
    assert set(by_precision) == {"fp32", "int8"}
    for precision, model in by_precision.items():
        _assert_stored_metadata(model, model_id="keras-cnn", precision=precision)
    # The same file exported in this process stores nothing new: the bytes, hence the tags,
    # do not depend on the process that converted them.
    again = _by_precision(export_source(make_source("keras-cnn", source=str(path))))
    assert {p: m.tag for p, m in again.items()} == {p: m.tag for p, m in by_precision.items()}
