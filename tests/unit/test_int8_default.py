"""INT8 by default: every INT8 export gives a row the same score in any company, and
``VERITY_PRECISION=auto`` serves it only when the agreement with fp32 stored beside it meets the
bars, else fp32 with the reason said.

The tiny exports of the session's model store (tests/conftest.py) are real dynamic-INT8 graphs:
their activation scales come from whatever batch they see, which is what running rows alone
(models/runtime.py) takes away.
"""

from __future__ import annotations

import logging

import anyio
import numpy as np
import pytest
from PIL import Image

from config import Settings
from detect.hosting import int8_verdict, served_models
from detect.model_clients import InProcessModelClient
from models.postprocess import fake_probabilities
from models.preprocess import model_pixels, normalize_pixels, preprocess_image
from models.runtime import OnnxModel
from models.store import StoredModel, find_stored

pytestmark = pytest.mark.unit

BATCH = 32
SAME = 1e-6  # |p alone - p in a batch of 32|


def _inputs(stored: StoredModel, count: int, seed: int = 7) -> np.ndarray:
    """``count`` different inputs as the pipelines send them to ``stored``."""
    rng = np.random.default_rng(seed)
    if stored.pixel_spec is not None:
        height, width = stored.pixel_spec.size
        shape = (count, 3, height, width) if stored.pixel_spec.layout == "NCHW" else (count, height, width, 3)
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    if stored.modality == "audio":
        windows = rng.normal(0, 1, size=(count, stored.audio_spec.window_samples)).astype(np.float32)
        # Some quiet, some loud: batch-mates with other ranges are what move a dynamic scale.
        return windows * np.linspace(0.01, 3.0, count, dtype=np.float32)[:, None]
    spec = stored.sequence_spec  # a video head: feature sequences
    return rng.normal(0, 1, size=(count, spec.seq_len, spec.feature_dim)).astype(np.float32) * 3


def _probabilities(stored: StoredModel, outputs: np.ndarray) -> np.ndarray:
    return fake_probabilities(outputs, stored.metadata["output"], int(stored.metadata["fake_index"]))


@pytest.mark.parametrize("model_id", ["vit-dima806", "wav2vec2-audio", "cnn-lstm-encoder", "cnn-lstm"])
def test_an_int8_score_does_not_depend_on_its_batch_mates(model_store, model_id: str) -> None:
    int8 = find_stored(model_id, "int8")
    assert int8 is not None and int8.rows_alone
    session = OnnxModel(int8.onnx_path, intra_op_threads=1, rows_alone=True, pixels=int8.pixel_spec)
    batch = _inputs(int8, BATCH)
    together = session.run(batch)
    for index in (0, 13, BATCH - 1):
        alone = session.run(batch[index : index + 1])
        if int8.modality == "video-encoder":  # features, not scores: compared as they are
            np.testing.assert_allclose(together[index : index + 1], alone, rtol=0, atol=SAME)
        else:
            p_alone = _probabilities(int8, alone)
            p_together = _probabilities(int8, together[index : index + 1])
            assert np.abs(p_alone - p_together).max() <= SAME


def test_the_same_graph_run_as_one_batch_would_move_the_score(model_store) -> None:
    """Why rows run alone: the dynamic-INT8 graph given the whole batch at once answers a row
    differently than alone (the test above would fail without ``rows_alone``)."""
    int8 = find_stored("vit-dima806", "int8")
    batched = OnnxModel(int8.onnx_path, intra_op_threads=1, rows_alone=False, pixels=int8.pixel_spec)
    batch = _inputs(int8, BATCH)
    batch[1:] = np.where(np.arange(256)[batch[1:]] > 128, 255, 0)  # harsher batch-mates
    moved = np.abs(batched.run(batch)[:1] - batched.run(batch[:1])).max()
    assert moved > SAME


def test_concurrent_callers_of_the_in_process_client_get_the_scores_they_get_alone(model_store) -> None:
    """The batch runner's and Lambda's path: rows of concurrent callers share session runs."""
    int8 = find_stored("vit-dima806", "int8")
    client = InProcessModelClient(
        int8.model_id, int8.onnx_path, intra_op_threads=1, rows_alone=True, pixels=int8.pixel_spec
    )
    batch = _inputs(int8, BATCH)

    async def scores() -> tuple[np.ndarray, list[np.ndarray]]:
        alone = await client.predict(batch[:1])
        together: list[np.ndarray] = [np.empty(0)] * BATCH

        async def one(i: int) -> None:
            together[i] = await client.predict(batch[i : i + 1])

        async with anyio.create_task_group() as group:
            for i in range(BATCH):
                group.start_soon(one, i)
        return alone, together

    alone, together = anyio.run(scores)
    assert np.abs(_probabilities(int8, alone) - _probabilities(int8, together[0])).max() <= SAME


def test_pixels_sent_as_uint8_give_the_float_tensor_exactly() -> None:
    from models.catalog import get_entry

    for model_id in ("vit-dima806", "siglip-open-deepfake", "keras-cnn"):
        spec = get_entry(model_id).input
        rng = np.random.default_rng(3)
        image = Image.fromarray(rng.integers(0, 256, size=(200, 300, 3), dtype=np.uint8), mode="RGB")
        np.testing.assert_array_equal(
            normalize_pixels(model_pixels(image, spec), spec), preprocess_image(image, spec)
        )


def test_a_session_takes_uint8_pixels_or_the_float_tensor_alike(model_store) -> None:
    fp32 = find_stored("vit-dima806", "fp32")
    session = OnnxModel(fp32.onnx_path, intra_op_threads=1, pixels=fp32.pixel_spec)
    pixels = _inputs(fp32, 2)
    np.testing.assert_array_equal(session.run(pixels), session.run(normalize_pixels(pixels, fp32.pixel_spec)))
    audio = find_stored("wav2vec2-audio", "fp32")
    with pytest.raises(TypeError, match="takes no pictures"):
        OnnxModel(audio.onnx_path, intra_op_threads=1).run(np.zeros((1, 16000), dtype=np.uint8))


# --- the default precision and its fallback ------------------------------------------------------


def _int8_with(metadata: dict) -> StoredModel:
    return StoredModel(tag="m:int8-abc", path=None, metadata={"precision": "int8", **metadata}, created_at="")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("figures", "served", "reason"),
    [
        (
            {"int8_agreement": 1.0, "int8_mean_probability_diff": 0.004},
            True,
            "int8: verdict agreement 100.0%",
        ),
        ({"int8_agreement": 0.99, "int8_mean_probability_diff": 0.01}, True, "int8:"),  # both bars inclusive
        ({"int8_agreement": 0.98, "int8_mean_probability_diff": 0.001}, False, "fp32: int8 misses the bar"),
        ({"int8_agreement": 1.0, "int8_mean_probability_diff": 0.011}, False, "fp32: int8 misses the bar"),
        ({"int8_agreement": 1.0}, False, "predates the stored agreement figures"),
    ],
)
def test_auto_serves_int8_only_when_its_agreement_meets_both_bars(figures, served, reason) -> None:
    chosen, why = int8_verdict(_int8_with(figures), Settings())
    assert chosen is served
    assert why.startswith(reason) or reason in why, why


def test_auto_without_an_int8_export_serves_fp32_and_says_why() -> None:
    assert int8_verdict(None, Settings()) == (
        False,
        "fp32: no int8 export is stored (exported with --no-int8?)",
    )


def test_the_served_precision_follows_the_rule_per_model(model_store, caplog) -> None:
    base = Settings(precision="auto")
    with caplog.at_level(logging.INFO, logger="detect.hosting"):
        served = served_models(base)
    for stored in [*served.image.values(), *served.audio.values(), served.video["head"]]:
        expected, _ = int8_verdict(find_stored(stored.model_id, "int8"), base)
        assert stored.precision == ("int8" if expected else "fp32"), served.precision_reasons
        assert served.precision_reasons[stored.model_id].startswith(stored.precision)
        assert f"{stored.model_id} served at {stored.precision}" in caplog.text
    assert served.video["encoder"].precision == served.video["head"].precision  # a verified pair

    strict = served_models(Settings(int8_max_mean_probability_diff=0.0))
    for model_id, stored in {**strict.image, **strict.audio}.items():
        if stored.precision == "int8":  # only an int8 that matches fp32 exactly passes a 0 bar
            assert find_stored(model_id, "int8").metadata["int8_mean_probability_diff"] == 0.0
        else:
            assert "misses the bar" in strict.precision_reasons[model_id]

    forced = served_models(Settings(precision="int8"))
    assert {s.precision for s in forced.image.values()} == {"int8"}
    assert forced.precision_reasons["vit-dima806"] == "int8: VERITY_PRECISION=int8"


def test_exporting_the_same_bytes_again_records_the_figures_an_older_export_lacked(model_store) -> None:
    """A store filled before the mean difference was recorded: exporting again (deterministic,
    so the same INT8 bytes and tag) adds the figure, and auto can then serve it."""
    from models.export.save import save_onnx

    int8 = find_stored("vit-dima806", "int8")
    old = {k: v for k, v in int8.metadata.items() if k not in ("int8_mean_probability_diff", "sha256")}
    old["model_id"] = "resaved-vit"
    first = save_onnx(int8.onnx_path, old)
    assert "int8_mean_probability_diff" not in first.metadata
    assert not int8_verdict(first, Settings())[0]
    again = save_onnx(int8.onnx_path, {**old, "int8_mean_probability_diff": 0.002, "int8_agreement": 1.0})
    assert again.tag == first.tag
    assert again.metadata["int8_mean_probability_diff"] == 0.002
    assert again.metadata["int8_agreement"] == 1.0  # measured again on the same bytes
    assert int8_verdict(find_stored("resaved-vit", "int8"), Settings())[0]
    worse = save_onnx(int8.onnx_path, {**old, "int8_mean_probability_diff": 0.002, "int8_agreement": 0.5})
    assert not int8_verdict(worse, Settings())[0]
