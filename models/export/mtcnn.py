"""The ``mtcnn`` package's P/R/O-nets -> three ONNX graphs, stored together as model ``mtcnn``.

Export-time only (TensorFlow, the ``mtcnn`` package, tf2onnx). The package ships its real
weights (``assets/weights/*.lz4``), so nothing is downloaded and the export is always
``weights: "pretrained"``. The three graphs only make sense together (faces/mtcnn.py runs the
cascade over them), so they are ONE stored model holding ``pnet.onnx``, ``rnet.onnx`` and
``onet.onnx``, not three catalog entries that could be stored at different versions.

- PNet is fully convolutional: batch, height and width are all dynamic.
- RNet takes (batch, 24, 24, 3), ONet (batch, 48, 48, 3); batch is dynamic.
- Outputs are named (``offsets``, ``probs``, and ONet's ``landmarks``): the package's Keras
  models return unnamed lists, and the runtime must not depend on output order.

Each graph is checked against its Keras model on probe inputs (photo-like pictures, normalized
as the package does, at several PNet sizes); the max abs differences are stored as parity figures.

Only fp32 is exported. The nets are tiny (PNet 7k, RNet 100k, ONet 390k parameters) and their
time is spent in small convolutions over activations, which dynamic INT8 quantization does not
speed up on CPU (it adds quantize/dequantize work per call), while moving the face probabilities
that the cascade cuts at 0.6/0.7/0.8, i.e. changing which faces are found.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from errors import ParityError
from faces import cascade
from faces.mtcnn import (
    DEFAULT_MIN_FACE_SIZE,
    DEFAULT_NMS,
    DEFAULT_SCALE_FACTOR,
    DEFAULT_THRESHOLDS,
    GRAPH_FILES,
    INPUT_NAME,
    ONET_SIZE,
    OUTPUTS,
    RNET_SIZE,
)
from models.catalog import CatalogEntry, ImageInputSpec
from models.export.keras import OPSET, _renumber_generated_names
from models.export.probe import probe_images
from models.export.source import SourceInfo
from models.store import StoredModel

log = logging.getLogger(__name__)

PACKAGE_VERSION = "1.0.0"
# |onnx - keras| on probabilities and box/landmark regressions (all O(1)). Tighter than the image
# models' 1e-3: the cascade cuts raw probabilities at fixed thresholds and multiplies regressions
# by box sizes (1e-4 x a 100 px box = 0.01 px). Measured figures are ~1e-6.
PARITY_TOLERANCE = 1e-4
# PNet probe sizes (height, width), batch: the smallest input PNet accepts, odd sizes (the
# max-pool pads with "same"), and a first pyramid level of a 640x360 frame.
PNET_PROBES = (((12, 12), 2), ((37, 53), 3), ((216, 384), 1))
CROP_PROBES = 16


def load_keras_nets() -> dict[str, Any]:
    """The package's three Keras models with its shipped weights, keyed pnet/rnet/onet."""
    from mtcnn.stages import StageONet, StagePNet, StageRNet

    return {"pnet": StagePNet().model, "rnet": StageRNet().model, "onet": StageONet().model}


def probe_inputs() -> dict[str, list[np.ndarray]]:
    """Normalized float32 NHWC probe batches per graph, deterministic."""
    pictures = [np.asarray(p, dtype=np.uint8) for p in probe_images(CROP_PROBES)]

    def batch(shape: tuple[int, int], count: int, offset: int = 0) -> np.ndarray:
        height, width = shape
        return np.stack(
            [
                cascade.normalize(
                    cv2.resize(
                        pictures[(offset + i) % len(pictures)], (width, height), interpolation=cv2.INTER_AREA
                    )
                )
                for i in range(count)
            ]
        )

    return {
        "pnet": [batch(shape, count, offset=i) for i, (shape, count) in enumerate(PNET_PROBES)],
        "rnet": [batch((RNET_SIZE, RNET_SIZE), CROP_PROBES)],
        "onet": [batch((ONET_SIZE, ONET_SIZE), CROP_PROBES)],
    }


def _input_shape(name: str) -> tuple[int | None, ...]:
    side = {"pnet": None, "rnet": RNET_SIZE, "onet": ONET_SIZE}[name]
    return (None, side, side, 3)


def keras_outputs(model: Any, name: str, batch: np.ndarray) -> dict[str, np.ndarray]:
    return {
        key: np.asarray(value) for key, value in zip(OUTPUTS[name], model(batch, training=False), strict=True)
    }


def convert(model: Any, name: str) -> Any:
    """One Keras net -> an ONNX ModelProto with input ``images`` and named outputs; the same
    bytes on every run (tf2onnx's counters renumbered, the graph named after the net)."""
    import tensorflow as tf
    import tf2onnx

    names = OUTPUTS[name]

    @tf.function
    def forward(images: Any) -> dict[str, Any]:
        return dict(zip(names, model(images, training=False), strict=True))

    signature = (tf.TensorSpec(_input_shape(name), tf.float32, name=INPUT_NAME),)
    proto, _ = tf2onnx.convert.from_function(forward, input_signature=signature, opset=OPSET)
    _renumber_generated_names(proto.graph)
    _canonical_names(proto.graph, name)
    proto.graph.name = f"mtcnn-{name}"
    proto.graph.doc_string = (
        f"mtcnn=={PACKAGE_VERSION} {name}, converted by tf2onnx"  # was a traced function's counter
    )
    return proto


def _canonical_names(graph: Any, prefix: str) -> None:
    """Name every node and inner tensor by its position in the (stable) node order.

    Keras uniquifies the names of a model and its layers per process ("p_net", "p_net_1", ...,
    "conv1_1" on a second trace), and tf2onnx copies them into the graph, so a second export in
    the same process gave other bytes, hence another store tag. Inputs and outputs keep their
    names (the runtime's contract); nodes keep their op type for readability.
    """
    fixed = {value.name for value in (*graph.input, *graph.output)}
    names: dict[str, str] = {}

    def canon(tensor: str) -> str:
        if not tensor or tensor in fixed:
            return tensor
        return names.setdefault(tensor, f"{prefix}/t{len(names)}")

    for index, node in enumerate(graph.node):
        node.name = f"{prefix}/{node.op_type}_{index}"
        node.input[:] = [canon(n) for n in node.input]
        node.output[:] = [canon(n) for n in node.output]
    for value in graph.value_info:
        value.name = canon(value.name)
    for tensor in graph.initializer:
        tensor.name = canon(tensor.name)
    order = {name: i for i, name in enumerate(names.values())}
    initializers = sorted(graph.initializer, key=lambda t: order[t.name])
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def onnx_outputs(path: Path, name: str, batch: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip(OUTPUTS[name], session.run(list(OUTPUTS[name]), {INPUT_NAME: batch}), strict=True))


def graph_parity(path: Path, model: Any, name: str, batches: list[np.ndarray], tolerance: float) -> float:
    """Max |onnx - keras| over every output of every probe batch; ParityError past tolerance."""
    worst = 0.0
    for batch in batches:
        expected = keras_outputs(model, name, batch)
        got = onnx_outputs(path, name, batch)
        for key in OUTPUTS[name]:
            if got[key].shape != expected[key].shape:
                raise ParityError(
                    f"mtcnn/{name}",
                    float("inf"),
                    tolerance,
                    f"{key} shape {got[key].shape} vs {expected[key].shape}",
                )
            diff = np.abs(got[key].astype(np.float64) - expected[key].astype(np.float64))
            diff = np.where(np.isnan(diff), np.inf, diff)
            worst = max(worst, float(diff.max()) if diff.size else 0.0)
            if not np.isfinite(worst) or worst > tolerance:
                raise ParityError(f"mtcnn/{name}", worst, tolerance, f"output {key!r}, probe {batch.shape}")
    return worst


def source_info(entry: CatalogEntry) -> SourceInfo:
    import keras
    import tensorflow as tf
    import tf2onnx

    if not isinstance(entry.input, ImageInputSpec):
        raise ValueError(f"{entry.id}: a faces entry needs an image input spec")
    return SourceInfo(
        model_id=entry.id,
        modality=entry.modality,
        source=entry.source,
        architecture=entry.architecture,
        weights="pretrained",
        labels=list(entry.labels),
        fake_index=entry.fake_index,
        output="probabilities",
        threshold=entry.threshold,
        input=entry.input,
        license=entry.license,
        versions={
            "mtcnn": PACKAGE_VERSION,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "tf2onnx": tf2onnx.__version__,
        },
    )


def export_mtcnn(entry: CatalogEntry, *, tolerance: float = PARITY_TOLERANCE) -> StoredModel:
    """Export, verify and store the three graphs; idempotent (same bytes -> same stored tag)."""
    import onnx
    import onnxruntime

    from models.export.save import save_onnx_files

    installed = _installed_version()
    if installed != PACKAGE_VERSION:
        raise RuntimeError(
            f"{entry.id} needs mtcnn=={PACKAGE_VERSION} (the export group's pin), found {installed}"
        )
    info = source_info(entry)
    info.versions.update({"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__})
    nets = load_keras_nets()
    probes = probe_inputs()
    parity: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="verity-export-mtcnn-") as tmp:
        files: dict[str, Path] = {}
        for name, filename in GRAPH_FILES.items():
            path = Path(tmp) / filename
            path.write_bytes(convert(nets[name], name).SerializeToString())
            parity[name] = graph_parity(path, nets[name], name, probes[name], tolerance)
            files[filename] = path
            log.info(
                "%s/%s parity: max abs diff %.3g (tolerance %.1g)", entry.id, name, parity[name], tolerance
            )
        metadata = {
            **info.metadata(),
            "precision": "fp32",
            "parity_max_abs_diff": max(parity.values()),
            "parity_by_graph": parity,
            "parity_tolerance": tolerance,
            "parity_probe_shapes": {
                name: [list(b.shape) for b in batches] for name, batches in probes.items()
            },
            "graphs": dict(GRAPH_FILES),
            # The package's cascade defaults, which faces/mtcnn.py reproduces.
            "cascade": {
                "min_face_size": DEFAULT_MIN_FACE_SIZE,
                "scale_factor": DEFAULT_SCALE_FACTOR,
                "thresholds": list(DEFAULT_THRESHOLDS),
                "nms_thresholds": list(DEFAULT_NMS),
            },
        }
        return save_onnx_files(files, metadata)


def _installed_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mtcnn")
    except PackageNotFoundError:
        return None
