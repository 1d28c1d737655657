"""The video model (issue 5): a Keras CNN-LSTM split into a CNN encoder and an LSTM head, two ONNX
graphs (models/export/keras_video.py), and the sliding windows the head runs on (models/temporal.py).

The "user's pair" is built here: a small image classifier saved as ``finetuned_model.h5`` and a
CNN-LSTM ``video_model_v2.keras`` = Input(T, H, W, 3) -> TimeDistributed(the classifier cut at its
feature layer) -> LSTM(8) -> Dropout -> Dense(1, sigmoid), every weight seeded at random.
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import bentoml
import numpy as np
import onnxruntime as ort
import pytest

from models.catalog import SequenceInputSpec, get_entry
from models.export.parity import FP32_TOLERANCE
from models.export.pipeline import export_model
from models.export.probe import probe_images
from models.preprocess import preprocess_batch
from models.runtime import OnnxModel
from models.store import StoredModel, find_video_pair, get_stored
from models.temporal import WindowScore, encoder_id_for, score_windows, sequence_windows, window_batch
from tests.conftest import PROJECT_ROOT, TINY_CNN_LSTM
from tests.media_factory import photo

pytestmark = pytest.mark.unit

log = logging.getLogger(__name__)

SIZE = 32
SEQ_LEN = 4  # the user's model's fixed time axis
FEATURES = 8  # the classifier's "embedding" width: what the LSTM takes
POOLED = 6  # a narrower 2-D layer before it, which the encoder rule must skip
HEAD, ENCODER = "cnn-lstm", "cnn-lstm-encoder"


# --- sliding windows (numpy only) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_frames", "seq_len", "stride", "expected"),
    [
        (0, 4, 2, []),
        (1, 4, 2, [(0, 1)]),
        (3, 4, 2, [(0, 3)]),  # shorter than a window: one window at its own length
        (4, 4, 2, [(0, 4)]),
        (8, 4, 2, [(0, 4), (2, 6), (4, 8)]),  # fits the stride: no duplicate last window
        (9, 4, 2, [(0, 4), (2, 6), (4, 8), (5, 9)]),  # the last one aligned to the end
        (23, 10, 5, [(0, 10), (5, 15), (10, 20), (13, 23)]),
        (5, 4, 4, [(0, 4), (1, 5)]),
        (6, 1, 1, [(i, i + 1) for i in range(6)]),
    ],
)
def test_sequence_windows(n_frames, seq_len, stride, expected):
    assert sequence_windows(n_frames, seq_len, stride) == expected


def test_sequence_windows_cover_every_frame_with_full_windows():
    for seq_len in range(1, 7):
        for stride in range(1, seq_len + 1):
            for n in range(1, 40):
                windows = sequence_windows(n, seq_len, stride)
                assert {end - start for start, end in windows} == {min(n, seq_len)}
                covered = np.zeros(n, dtype=bool)
                for start, end in windows:
                    covered[start:end] = True
                assert covered.all()
                starts = [start for start, _ in windows]
                assert starts == sorted(set(starts)) and windows[-1][1] == n
                assert all(b - a <= stride for a, b in itertools.pairwise(starts))


@pytest.mark.parametrize(("n", "seq_len", "stride"), [(5, 0, 1), (5, 4, 0), (5, 4, 5), (-1, 4, 2)])
def test_sequence_windows_rejects_bad_arguments(n, seq_len, stride):
    with pytest.raises(ValueError):
        sequence_windows(n, seq_len, stride)


def test_score_windows_feeds_the_head_one_batch_of_windows():
    features = np.arange(9 * 3, dtype=np.float32).reshape(9, 3)
    seen: list[np.ndarray] = []

    def head(batch: np.ndarray) -> np.ndarray:
        seen.append(batch)
        return batch[:, -1, :1] / 100.0  # "probability" = last frame's first feature / 100

    spec = SequenceInputSpec(seq_len=4, stride=2, feature_dim=3)
    scores = score_windows(features, head, spec, output_kind="probabilities", fake_index=1)
    assert [(s.start, s.end) for s in scores] == [(0, 4), (2, 6), (4, 8), (5, 9)]
    assert len(seen) == 1 and seen[0].shape == (4, 4, 3) and seen[0].dtype == np.float32
    np.testing.assert_array_equal(seen[0][3], features[5:9])
    assert scores[-1] == WindowScore(5, 9, pytest.approx(features[8, 0] / 100.0))
    assert score_windows(features[:0], head, spec, output_kind="probabilities", fake_index=1) == []
    with pytest.raises(ValueError, match=r"\(frames, 3\)"):
        score_windows(features[:, :2], head, spec, output_kind="probabilities", fake_index=1)
    with pytest.raises(ValueError, match="one length"):
        window_batch(features, [(0, 4), (0, 3)])


def test_encoder_id_for_a_head():
    assert encoder_id_for(HEAD) == ENCODER
    with pytest.raises(ValueError, match="not a video head"):
        encoder_id_for("vit-dima806")


def test_temporal_runtime_imports_no_tensorflow():
    code = (
        "import sys, models.temporal, models.runtime, models.store\n"
        "bad = [m for m in ('tensorflow', 'keras', 'tf2onnx', 'torch') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]


# --- the user's Keras pair -------------------------------------------------------------------------


def _seed_weights(weights: list[Any], seed: int) -> None:
    """Non-trivial weights without training: kernels, biases and BatchNorm statistics random."""
    rng = np.random.default_rng(seed)
    for weight in weights:
        shape = tuple(weight.shape)
        if weight.path.endswith(("gamma", "moving_variance")):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.3, shape)
        weight.assign(value.astype("float32"))


def _classifier(seed: int = 0, size: int = SIZE):
    """The user's fine-tuned image classifier: CNN -> pooled (6) -> embedding (8) -> sigmoid."""
    import keras

    inputs = keras.Input(shape=(size, size, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(POOLED, 3, padding="same")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D(name="pooled")(x)
    x = keras.layers.Dense(FEATURES, activation="tanh", name="embedding")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="fake")(x)
    model = keras.Model(inputs, outputs, name="finetuned")
    _seed_weights(model.weights, seed)
    return model


def _cnn_lstm(encoder, *, seed: int = 1, time_steps: int | None = SEQ_LEN, units: int = 1, recurrent=True):
    """``Input(T, H, W, 3) -> TimeDistributed(encoder) -> LSTM(8) -> Dropout -> Dense``; the head
    layers get seeded weights, the encoder keeps its own."""
    import keras

    frames = keras.Input(shape=(time_steps, *encoder.input_shape[1:]), name="frames")
    x = keras.layers.TimeDistributed(encoder, name="cnn")(frames)
    layers = [
        keras.layers.LSTM(8, name="lstm") if recurrent else keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dropout(0.3, name="dropout"),
        keras.layers.Dense(units, activation="sigmoid" if units == 1 else "softmax", name="out"),
    ]
    for layer in layers:
        x = layer(x)
    model = keras.Model(frames, x, name="video_model_v2")
    _seed_weights([w for layer in layers for w in layer.weights], seed)
    return model


def _embedding_encoder(classifier):
    import keras

    return keras.Model(classifier.input, classifier.get_layer("embedding").output, name="embedder")


def _pictures(count: int, seed: int = 0) -> np.ndarray:
    """Crops that are not the probe set export checked, preprocessed as the encoder's spec."""
    others = probe_images(count, size=64, seed=4321 + seed)
    images = [
        photo(70 + 13 * i, 60 + 11 * i, seed=200 + i + seed) if i % 2 else others[i] for i in range(count)
    ]
    spec = replace(get_entry(ENCODER).input, size=(SIZE, SIZE))  # as export reads it from the model
    return preprocess_batch(images, spec)  # type: ignore[arg-type]


@dataclass
class UserPair:
    h5: Path
    keras_path: Path
    stored: dict[tuple[str, str], StoredModel]  # (model id, precision) -> stored

    def model(self, model_id: str, precision: str = "fp32") -> StoredModel:
        return self.stored[(model_id, precision)]

    def onnx(self, model_id: str, precision: str = "fp32") -> OnnxModel:
        return OnnxModel(self.model(model_id, precision).onnx_path, intra_op_threads=1)


def _keyed(stored: list[StoredModel]) -> dict[tuple[str, str], StoredModel]:
    keyed = {(model.model_id, model.precision): model for model in stored}
    assert len(keyed) == len(stored) == 4
    return keyed


@pytest.fixture(scope="module")
def user_pair(tmp_path_factory, bentoml_home) -> UserPair:
    folder = tmp_path_factory.mktemp("user-pair")
    classifier = _classifier(seed=3)
    classifier.save(folder / "finetuned_model.h5")
    _cnn_lstm(_embedding_encoder(classifier), seed=4).save(folder / "video_model_v2.keras")
    stored = export_model(
        HEAD, source=str(folder / "video_model_v2.keras"), encoder=str(folder / "finetuned_model.h5")
    )
    return UserPair(folder / "finetuned_model.h5", folder / "video_model_v2.keras", _keyed(stored))


@pytest.fixture(scope="module")
def keras_model(user_pair):
    """The user's CNN-LSTM, loaded afresh from their file: the reference the graphs must match."""
    import keras

    return keras.models.load_model(user_pair.keras_path, compile=False)


def _keras_head(model, features: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The CNN-LSTM's own LSTM -> Dropout -> Dense layers, called eagerly on (B, T, D) features of
    any length (independent of the head the exporter rebuilt)."""
    x = model.get_layer("lstm")(features, mask=mask)
    x = model.get_layer("dropout")(x, training=False)
    return np.asarray(model.get_layer("out")(x))


def test_user_pair_stored_with_metadata(user_pair):
    head_entry = get_entry(HEAD)
    for precision in ("fp32", "int8"):
        encoder, head = user_pair.model(ENCODER, precision), user_pair.model(HEAD, precision)
        for model, modality in ((encoder, "video-encoder"), (head, "video-head")):
            meta = model.metadata
            assert (model.modality, model.precision, model.weights) == (modality, precision, "pretrained")
            assert model.tag == f"{model.model_id}:{precision}-{meta['sha256'][:12]}"
            assert 0.0 <= meta["parity_max_abs_diff"] <= meta["parity_tolerance"] == FP32_TOLERANCE
            assert (meta["labels"], meta["fake_index"]) == (list(head_entry.labels), head_entry.fake_index)
            assert meta["threshold"] == head_entry.threshold
            assert {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"} <= set(meta["export_versions"])
            if precision == "int8":
                assert 0.0 <= meta["int8_agreement"] <= 1.0
                assert 0.0 <= meta["int8_max_probability_diff"] <= 1.0
        # The encoder: crops in, features out, described as an image model.
        assert encoder.metadata["output"] == "features" and encoder.metadata["feature_dim"] == FEATURES
        assert encoder.metadata["source"] == "file:video_model_v2.keras"  # the TimeDistributed CNN
        assert encoder.metadata["head"] == HEAD and encoder.describe()["head"] == HEAD
        spec = encoder.input_spec
        assert (spec.size, spec.layout, spec.rescale) == ((SIZE, SIZE), "NHWC", pytest.approx(1 / 255))
        # The head: its window from the model's fixed time axis, the stride capped to it.
        assert head.sequence_spec == SequenceInputSpec(seq_len=SEQ_LEN, stride=SEQ_LEN, feature_dim=FEATURES)
        assert (head.metadata["seq_len"], head.metadata["stride"]) == (SEQ_LEN, SEQ_LEN)
        with pytest.raises(TypeError, match="sequence_spec"):
            _ = head.input_spec
        assert head.metadata["output"] == "probabilities"
        assert head.metadata["architecture"] == "Keras:LSTM->Dropout->Dense"
        assert head.metadata["parity_lengths"] == [1, 2, SEQ_LEN, 2 * SEQ_LEN + 1]
        assert 0.0 <= head.metadata["split_max_abs_diff"] <= FP32_TOLERANCE
        # The .h5 cut at its 8-wide layer gives the TimeDistributed CNN's features exactly.
        file_check = head.metadata["encoder_file"]
        assert file_check["source"] == "file:finetuned_model.h5" and file_check["matches"] is True
        assert file_check["max_abs_diff"] <= 1e-6
        # Each head names the exact encoder export (same precision) it was verified with.
        assert head.metadata["encoder"]["tag"] == encoder.tag == head.describe()["encoder"]["tag"]
        assert get_stored(head.metadata["encoder"]["tag"]).onnx_path == encoder.onnx_path
    int8_meta = user_pair.model(HEAD, "int8").metadata
    log.info(
        "user pair: encoder parity %.3g, head parity %.3g, split %.3g; int8 agreement %.3f, "
        "max prob diff %.3g, min feature cosine %.4f, quantized %s",
        user_pair.model(ENCODER).metadata["parity_max_abs_diff"],
        user_pair.model(HEAD).metadata["parity_max_abs_diff"],
        user_pair.model(HEAD).metadata["split_max_abs_diff"],
        int8_meta["int8_agreement"],
        int8_meta["int8_max_probability_diff"],
        int8_meta["int8_feature_min_cosine"],
        int8_meta["int8_quantized_nodes"],
    )


def test_encoder_onnx_matches_keras_at_batch_1_and_5(user_pair, keras_model):
    import keras

    reference = keras_model.get_layer("cnn").layer  # the TimeDistributed CNN, from the user's file
    from_h5 = _embedding_encoder(keras.models.load_model(user_pair.h5, compile=False))
    session = ort.InferenceSession(
        str(user_pair.model(ENCODER).onnx_path), providers=["CPUExecutionProvider"]
    )
    assert [type(d) for d in session.get_inputs()[0].shape] == [str, int, int, int]  # dynamic batch
    fp32, int8 = user_pair.onnx(ENCODER), user_pair.onnx(ENCODER, "int8")
    for batch_size in (1, 5):
        crops = _pictures(batch_size, seed=batch_size)
        expected = np.asarray(reference(crops, training=False))
        got = fp32.run(crops)
        assert got.shape == expected.shape == (batch_size, FEATURES)
        np.testing.assert_allclose(got, expected, rtol=0, atol=FP32_TOLERANCE)
        np.testing.assert_allclose(got, np.asarray(from_h5(crops)), rtol=0, atol=FP32_TOLERANCE)
        quantized = int8.run(crops)
        assert quantized.shape == got.shape and np.all(np.isfinite(quantized))
    assert float(np.ptp(fp32.run(_pictures(5)), axis=0).max()) > 1e-2  # features depend on the crop


def test_head_onnx_runs_any_number_of_frames(user_pair, keras_model):
    session = ort.InferenceSession(str(user_pair.model(HEAD).onnx_path), providers=["CPUExecutionProvider"])
    batch_dim, time_dim, feature_dim = session.get_inputs()[0].shape
    assert isinstance(batch_dim, str) and isinstance(time_dim, str) and feature_dim == FEATURES
    fp32, int8 = user_pair.onnx(HEAD), user_pair.onnx(HEAD, "int8")
    rng = np.random.default_rng(7)
    outputs = []
    for length in (1, SEQ_LEN, 3 * SEQ_LEN + 1):
        for batch_size in (1, 3):
            features = rng.normal(0.0, 0.5, (batch_size, length, FEATURES)).astype(np.float32)
            expected = _keras_head(keras_model, features)
            got = fp32.run(features)
            assert got.shape == expected.shape == (batch_size, 1)
            np.testing.assert_allclose(got, expected, rtol=0, atol=FP32_TOLERANCE)
            quantized = int8.run(features)
            assert quantized.shape == got.shape and np.all((quantized >= 0) & (quantized <= 1))
            outputs.append(got)
    assert float(np.ptp(np.concatenate(outputs))) > 1e-2  # the head's output depends on its input


def test_encoder_then_head_reproduces_the_cnn_lstm(user_pair, keras_model):
    crops = _pictures(2 * SEQ_LEN, seed=11)
    clips = crops.reshape(2, SEQ_LEN, SIZE, SIZE, 3)
    expected = np.asarray(keras_model(clips, training=False))
    features = user_pair.onnx(ENCODER).run(crops).reshape(2, SEQ_LEN, FEATURES)
    np.testing.assert_allclose(user_pair.onnx(HEAD).run(features), expected, rtol=0, atol=FP32_TOLERANCE)


def test_window_scores_equal_the_cnn_lstm_on_each_window(user_pair, keras_model):
    head = user_pair.model(HEAD)
    crops = _pictures(7, seed=21)
    features = user_pair.onnx(ENCODER).run(crops)
    scores = score_windows(
        features,
        user_pair.onnx(HEAD).run,
        head.sequence_spec,
        output_kind=head.metadata["output"],
        fake_index=head.metadata["fake_index"],
    )
    assert [(s.start, s.end) for s in scores] == [(0, 4), (3, 7)]
    for score in scores:
        clip = crops[score.start : score.end][None]
        expected = float(np.asarray(keras_model(clip, training=False))[0, 0])  # sigmoid = P(fake)
        assert score.fake_probability == pytest.approx(expected, abs=FP32_TOLERANCE)


def test_short_sequences_run_at_their_own_length_as_a_masked_model_would(user_pair, keras_model):
    """The documented rule (models/temporal.py): fewer frames than seq_len run unpadded. That
    equals the Keras LSTM over post-padded zeros WITH a mask, and zero padding without a mask
    gives another answer, which is why nothing is padded."""
    onnx_head = user_pair.onnx(HEAD)
    features = user_pair.onnx(ENCODER).run(_pictures(2, seed=31))[None]  # (1, 2, D)
    assert np.all(np.abs(features).max(axis=-1) > 0)  # no frame looks like padding
    padded = np.concatenate([features, np.zeros((1, SEQ_LEN - 2, FEATURES), np.float32)], axis=1)
    mask = np.array([[True, True] + [False] * (SEQ_LEN - 2)])
    own_length = onnx_head.run(features)
    np.testing.assert_allclose(
        own_length, _keras_head(keras_model, padded, mask), rtol=0, atol=FP32_TOLERANCE
    )
    np.testing.assert_allclose(own_length, _keras_head(keras_model, features), rtol=0, atol=FP32_TOLERANCE)
    assert float(np.abs(onnx_head.run(padded) - own_length).max()) > 10 * FP32_TOLERANCE


def test_int8_pair_figures(user_pair):
    encoder8, head8 = user_pair.model(ENCODER, "int8"), user_pair.model(HEAD, "int8")
    for meta in (encoder8.metadata, head8.metadata):
        assert meta["int8_feature_min_cosine"] > 0.9
        assert meta["int8_feature_max_abs_diff"] > 0.0  # the encoder really was quantized
        assert 0.0 <= meta["int8_head_max_probability_diff"] <= 1.0
    # Encoder: its Dense only (ConvInteger is slower than fp32 Conv on CPU); head: LSTM and Dense.
    assert head8.metadata["int8_quantized_nodes"] == {
        "encoder": {"MatMulInteger": 1},
        "head": {"DynamicQuantizeLSTM": 1, "MatMulInteger": 1},
    }
    assert encoder8.metadata["sha256"] != user_pair.model(ENCODER).metadata["sha256"]
    assert find_video_pair(HEAD, "int8") is not None


def test_cli_exports_the_keras_pair_with_the_same_tags(user_pair):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [
            sys.executable, "-m", "models", "export", HEAD,
            "--source", str(user_pair.keras_path), "--encoder", str(user_pair.h5),
        ],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # Another process converted the same files: the same bytes, so nothing new was stored.
    for model_id in (HEAD, ENCODER):
        tags = {str(model.tag) for model in bentoml.models.list(model_id)}
        assert {user_pair.model(model_id, p).tag for p in ("fp32", "int8")} <= tags


# --- a head-only .keras with the .h5 as its encoder --------------------------------------------------


def _head_only(feature_dim: int, *, units: int = 2, seed: int = 5):
    import keras

    inputs = keras.Input(shape=(None, feature_dim), name="features")
    x = keras.layers.LSTM(8, name="lstm")(inputs)
    outputs = keras.layers.Dense(units, activation="softmax" if units == 2 else "sigmoid", name="out")(x)
    model = keras.Model(inputs, outputs, name="head_only")
    _seed_weights(model.weights, seed)
    return model


def test_head_only_keras_takes_the_h5_cut_at_its_feature_layer(tmp_path, bentoml_home):
    import keras

    classifier = _classifier(seed=8)
    classifier.save(tmp_path / "finetuned_model.h5")
    head_model = _head_only(FEATURES)
    head_model.save(tmp_path / "lstm_head.keras")
    stored = _keyed(
        export_model(
            HEAD,
            source=str(tmp_path / "lstm_head.keras"),
            encoder=str(tmp_path / "finetuned_model.h5"),
            int8=True,
        )
    )
    encoder, head = stored[(ENCODER, "fp32")], stored[(HEAD, "fp32")]
    assert encoder.metadata["source"] == "file:finetuned_model.h5"
    assert encoder.metadata["architecture"] == "Keras:finetuned_to_embedding"
    assert head.metadata["output"] == "probabilities"
    assert head.sequence_spec.seq_len == get_entry(HEAD).sequence.seq_len  # variable T: the catalog's
    crops = _pictures(3, seed=41)
    reference = _embedding_encoder(keras.models.load_model(tmp_path / "finetuned_model.h5", compile=False))
    features = OnnxModel(encoder.onnx_path, intra_op_threads=1).run(crops)
    np.testing.assert_allclose(features, np.asarray(reference(crops)), rtol=0, atol=FP32_TOLERANCE)
    probabilities = OnnxModel(head.onnx_path, intra_op_threads=1).run(features[None])
    assert probabilities.shape == (1, 2)
    np.testing.assert_allclose(
        probabilities, np.asarray(head_model(features[None])), rtol=0, atol=FP32_TOLERANCE
    )


@pytest.mark.parametrize("fmt", ["h5", "keras"])
def test_an_encoder_inside_a_nested_backbone_is_cut_at_the_backbone(tmp_path, fmt):
    """``classifier = Dense(1)(backbone(image))``: the features are the nested model's output."""
    import keras

    from models.export.keras_video import encoder_from_image_model

    inputs = keras.Input(shape=(SIZE, SIZE, 3))
    backbone = _embedding_encoder(_classifier(seed=15))
    classifier = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(backbone(inputs)))
    classifier.save(tmp_path / f"nested.{fmt}")
    loaded = keras.models.load_model(tmp_path / f"nested.{fmt}", compile=False)
    encoder = encoder_from_image_model(loaded, FEATURES, f"nested.{fmt}")
    crops = _pictures(3, seed=51)
    np.testing.assert_allclose(np.asarray(encoder(crops)), np.asarray(backbone(crops)), rtol=0, atol=1e-6)


# --- models written as keras.Sequential ----------------------------------------------------------------


def _sequential_classifier(seed: int):
    """``_classifier`` written as ``keras.Sequential``, the most common way to write a small CNN."""
    import keras

    model = keras.Sequential(
        [
            keras.Input(shape=(SIZE, SIZE, 3)),
            keras.layers.Conv2D(4, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(POOLED, 3, padding="same"),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(name="pooled"),
            keras.layers.Dense(FEATURES, activation="tanh", name="embedding"),
            keras.layers.Dense(1, activation="sigmoid", name="fake"),
        ],
        name="finetuned_seq",
    )
    _seed_weights(model.weights, seed)
    return model


def _sequential_embedder(classifier):
    """The classifier's layers up to its embedding (the same layer objects) as a Sequential."""
    import keras

    inputs = keras.Input(shape=(SIZE, SIZE, 3))
    return keras.Sequential([inputs, *classifier.layers[:-1]], name="embedder_seq")


def _fp32(stored: list[StoredModel]) -> dict[str, StoredModel]:
    by_id = {model.model_id: model for model in stored if model.precision == "fp32"}
    assert set(by_id) == {HEAD, ENCODER}
    return by_id


def test_a_sequential_cnn_lstm_over_a_sequential_cnn_exports(tmp_path, bentoml_home):
    """``Sequential([Input(T, H, W, 3), TimeDistributed(Sequential CNN), LSTM, Dropout, Dense])``
    with a Sequential ``--encoder`` .h5: the TimeDistributed CNN is the encoder converted."""
    import keras

    classifier = _sequential_classifier(seed=16)
    classifier.save(tmp_path / "finetuned_model.h5")
    layers = [
        keras.layers.LSTM(8, name="lstm"),
        keras.layers.Dropout(0.3, name="dropout"),
        keras.layers.Dense(1, activation="sigmoid", name="out"),
    ]
    video = keras.Sequential(
        [
            keras.Input(shape=(SEQ_LEN, SIZE, SIZE, 3)),
            keras.layers.TimeDistributed(_sequential_embedder(classifier), name="cnn"),
            *layers,
        ],
        name="video_model_seq",
    )
    _seed_weights([w for layer in layers for w in layer.weights], 17)
    video.save(tmp_path / "video_model_v2.keras")
    stored = _fp32(
        export_model(
            HEAD,
            source=str(tmp_path / "video_model_v2.keras"),
            encoder=str(tmp_path / "finetuned_model.h5"),
            int8=False,
        )
    )
    encoder, head = stored[ENCODER], stored[HEAD]
    assert encoder.metadata["architecture"] == "Keras:embedder_seq"
    assert head.metadata["encoder_file"]["matches"] is True  # the .h5 cut at its embedding
    original = keras.models.load_model(tmp_path / "video_model_v2.keras", compile=False)
    crops = _pictures(2 * SEQ_LEN, seed=61)
    features = OnnxModel(encoder.onnx_path, intra_op_threads=1).run(crops)
    reference = original.get_layer("cnn").layer
    np.testing.assert_allclose(features, np.asarray(reference(crops)), rtol=0, atol=FP32_TOLERANCE)
    clips = crops.reshape(2, SEQ_LEN, SIZE, SIZE, 3)
    probabilities = OnnxModel(head.onnx_path, intra_op_threads=1).run(features.reshape(2, SEQ_LEN, FEATURES))
    np.testing.assert_allclose(
        probabilities, np.asarray(original(clips, training=False)), rtol=0, atol=FP32_TOLERANCE
    )
    assert float(np.ptp(features, axis=0).max()) > 1e-2  # a non-vacuous parity


@pytest.mark.parametrize("fmt", ["h5", "keras"])
def test_a_head_only_keras_takes_a_sequential_encoder_whole(tmp_path, bentoml_home, fmt):
    """``--encoder`` a Sequential whose output already is the head's (batch, D) features: the
    file itself is the encoder converted."""
    import keras

    # Seeds per format: the same weights would be the same ONNX bytes, i.e. the other case's export.
    embedder = _sequential_embedder(_sequential_classifier(seed=18 + len(fmt)))
    embedder.save(tmp_path / f"embedder.{fmt}")
    head_model = _head_only(FEATURES, seed=19)
    head_model.save(tmp_path / "lstm_head.keras")
    stored = _fp32(
        export_model(
            HEAD,
            source=str(tmp_path / "lstm_head.keras"),
            encoder=str(tmp_path / f"embedder.{fmt}"),
            int8=False,
        )
    )
    encoder, head = stored[ENCODER], stored[HEAD]
    assert encoder.metadata["source"] == f"file:embedder.{fmt}"
    assert encoder.metadata["architecture"] == "Keras:embedder_seq"
    reference = keras.models.load_model(tmp_path / f"embedder.{fmt}", compile=False)
    crops = _pictures(3, seed=71)
    features = OnnxModel(encoder.onnx_path, intra_op_threads=1).run(crops)
    np.testing.assert_allclose(features, np.asarray(reference(crops)), rtol=0, atol=FP32_TOLERANCE)
    probabilities = OnnxModel(head.onnx_path, intra_op_threads=1).run(features[None])
    np.testing.assert_allclose(
        probabilities, np.asarray(head_model(features[None])), rtol=0, atol=FP32_TOLERANCE
    )


# --- refusals ------------------------------------------------------------------------------------------


def _image_cnn():
    return _classifier(seed=9)


def _conv3d_video():
    import keras

    frames = keras.Input(shape=(SEQ_LEN, SIZE, SIZE, 3))
    x = keras.layers.Conv3D(4, 3)(frames)
    x = keras.layers.GlobalAveragePooling3D()(x)
    return keras.Model(frames, keras.layers.Dense(1, activation="sigmoid")(x))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (_image_cnn, r"CNN-LSTM on \(T, H, W, 3\) frames or an LSTM head"),
        (_conv3d_video, "not TimeDistributed"),
        (lambda: _cnn_lstm(_embedding_encoder(_classifier()), recurrent=False), "no recurrent layer"),
        (lambda: _cnn_lstm(_embedding_encoder(_classifier()), units=3), "1-unit sigmoid or 2-unit softmax"),
        (lambda: _head_only(FEATURES), "needs the encoder"),
    ],
    ids=["image-cnn", "conv3d", "no-lstm", "3-unit-head", "head-without-encoder"],
)
def test_keras_files_that_are_not_a_cnn_lstm_are_refused(tmp_path, make, match):
    path = tmp_path / "not-a-video-model.keras"
    make().save(path)
    with pytest.raises(ValueError, match=match) as err:
        export_model(HEAD, source=str(path))
    assert "not-a-video-model.keras" in str(err.value)  # names the user's file


def test_an_encoder_without_the_heads_feature_width_is_refused(tmp_path):
    _classifier(seed=10).save(tmp_path / "finetuned_model.h5")
    _head_only(5).save(tmp_path / "lstm_head.keras")
    with pytest.raises(ValueError, match=r"no layer outputs \(batch, 5\) features") as err:
        export_model(
            HEAD, source=str(tmp_path / "lstm_head.keras"), encoder=str(tmp_path / "finetuned_model.h5")
        )
    message = str(err.value)
    assert (
        "finetuned_model.h5" in message
        and f"embedding ({FEATURES})" in message
        and f"pooled ({POOLED})" in message
    )


def test_an_encoder_file_of_another_image_size_is_refused(tmp_path):
    _classifier(seed=12, size=48).save(tmp_path / "big.h5")
    _cnn_lstm(_embedding_encoder(_classifier(seed=13))).save(tmp_path / "video.keras")
    with pytest.raises(ValueError, match=r"big.h5: takes \(48, 48\) images"):
        export_model(HEAD, source=str(tmp_path / "video.keras"), encoder=str(tmp_path / "big.h5"))


def test_the_encoder_id_and_misplaced_encoders_are_refused(tmp_path):
    with pytest.raises(ValueError, match="exported with its head: python -m models export cnn-lstm"):
        export_model(ENCODER)
    with pytest.raises(ValueError, match="--encoder is for video models"):
        export_model("keras-cnn", source="x.h5", encoder="y.h5")
    with pytest.raises(ValueError, match="--encoder needs --source"):
        export_model(HEAD, encoder="y.h5")


# --- the dev pair ---------------------------------------------------------------------------------------


def test_dev_pair_is_marked_dev_and_reproducible(bentoml_home):
    import keras

    first = _keyed(export_model(HEAD, offline=True, dev_overrides=TINY_CNN_LSTM))
    for model in first.values():
        assert model.weights == "dev"
        assert model.metadata["source"].startswith("dev:SmallCNN+LSTM(8)(seed=")
    head = first[(HEAD, "fp32")]
    assert head.sequence_spec == SequenceInputSpec(seq_len=4, stride=4, feature_dim=8)
    assert first[(ENCODER, "fp32")].input_spec.size == (32, 32)
    before = {str(m.tag) for mid in (HEAD, ENCODER) for m in bentoml.models.list(mid)}
    _classifier(seed=14)  # more Keras layers in between: name counters move on
    keras.layers.Dense(3)
    again = _keyed(export_model(HEAD, offline=True, dev_overrides=TINY_CNN_LSTM))
    assert {k: m.tag for k, m in again.items()} == {k: m.tag for k, m in first.items()}
    assert {str(m.tag) for mid in (HEAD, ENCODER) for m in bentoml.models.list(mid)} == before
    pair = find_video_pair(HEAD, "fp32")  # the newest head (maybe another test's) and its encoder
    assert pair is not None and pair[1].metadata["encoder"]["tag"] == pair[0].tag
    assert head.metadata["encoder"]["tag"] == first[(ENCODER, "fp32")].tag


def test_ensure_exports_the_video_pair_unless_both_precisions_are_stored(monkeypatch):
    import argparse

    import models.__main__ as cli
    import models.export.pipeline as pipeline
    import models.store as store
    from config.settings import Settings, get_settings

    assert Settings.model_fields["video_model"].default == HEAD
    exported: list[str] = []
    monkeypatch.setattr(pipeline, "export_model", lambda model_id, **_: exported.append(model_id) or [])
    monkeypatch.setattr(store, "find_stored", lambda model_id, precision: None)
    monkeypatch.setattr(store, "list_stored", lambda model_id=None: [])  # an empty store
    assert cli._cmd_ensure(argparse.Namespace(offline=True)) == 0
    assert exported.count(get_settings().video_model) == 1
    exported.clear()
    stored = SimpleNamespace(tag=f"{HEAD}:fp32-x", weights="dev", metadata={"source": "dev"}, path="/x")
    monkeypatch.setattr(store, "find_video_pair", lambda model_id, precision: (stored, stored))
    assert cli._cmd_ensure(argparse.Namespace(offline=True)) == 0
    assert HEAD not in exported
