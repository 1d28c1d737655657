"""Keras CNN image classifiers (``.h5`` / ``.keras``, sigmoid or softmax head) -> ONNX via tf2onnx."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from models.catalog import CatalogEntry, ImageInputSpec
from models.export.source import SourceInfo

log = logging.getLogger(__name__)

OPSET = 17
_GENERATED = re.compile(r"__(\d+)")


def _renumber_generated_names(graph: Any) -> None:
    """Make the bytes of a conversion depend on the model only.

    tf2onnx suffixes the names it makes up (``__<n>``, also the batch axis' ``unk__<n>``) from a
    process-wide counter, drawn in an order that varies with the hash seed, and emits folded
    constants in varying order. Without this, re-exporting the same file gave a new sha256 each
    time, hence a new store tag instead of the idempotent no-op ``save_onnx`` promises. Node order
    is stable, so number the suffixes by first appearance in it and sort the initializers.
    """
    order: dict[str, str] = {}

    def seen(name: str) -> None:
        for number in _GENERATED.findall(name):
            order.setdefault(number, str(len(order)))

    for node in graph.node:
        for name in (node.name, *node.input, *node.output):
            seen(name)
    values = (*graph.input, *graph.output, *graph.value_info)
    dims = [d for v in values for d in v.type.tensor_type.shape.dim if d.dim_param]  # "unk__<n>"
    for name in (*(d.dim_param for d in dims), *sorted({t.name for t in graph.initializer})):
        seen(name)

    def rename(name: str) -> str:
        return _GENERATED.sub(lambda m: f"__g{order[m.group(1)]}", name)

    for node in graph.node:
        node.name = rename(node.name)
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for value in (*values, *graph.initializer):
        value.name = rename(value.name)
    for dim in dims:
        dim.dim_param = rename(dim.dim_param)
    initializers = sorted(graph.initializer, key=lambda t: t.name)
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def convertible(model: Any) -> Any:
    """``model`` in a form tf2onnx 1.17 converts: a ``keras.Sequential`` rebuilt as a functional
    model (same layer objects, hence the same weights) on a fresh ``keras.Input``; any other model
    as it is.

    tf2onnx names the graph's outputs by ``model.output_names``, which Keras 3 defines for
    functional models only (the output layers' names, also the keys of the traced function's
    outputs). For a Sequential it falls back to the output KerasTensor's generated name
    (``keras_tensor_<n>``), which is no key of the traced outputs: ``KeyError: 'keras_tensor_<n>'``
    for every Sequential file, ``.h5`` or ``.keras``. Rebuilt, the graph's output is named after
    the last layer, as a functional model's is. The Sequential itself stays the reference the
    export's parity is checked against.
    """
    import keras

    if not isinstance(model, keras.Sequential):
        return model
    # Named as the ONNX input (the conversion's signature names it; this name is not in the bytes).
    inputs = keras.Input(shape=tuple(model.input_shape[1:]), dtype=model.inputs[0].dtype, name="pixel_values")
    outputs = inputs
    for layer in model.layers:  # the InputLayer is not among them
        outputs = layer(outputs)
    return keras.Model(inputs, outputs, name=model.name)


class KerasImageSource:
    def __init__(self, entry: CatalogEntry, *, path: Path, fake_index: int | None = None) -> None:
        import keras
        import tensorflow as tf

        self._tf = tf
        self.model = keras.models.load_model(path, compile=False)
        shape = self.model.input_shape
        if len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"{path.name}: expected an NHWC RGB image input, got {shape}")
        self._channels = int(shape[-1])
        height, width = int(shape[1] or entry.input.size[0]), int(shape[2] or entry.input.size[1])
        out_shape = self.model.output_shape
        # One (batch, units) output: a list of shapes (several heads) or a spatial map would be
        # accepted by the units check alone and then misread as class probabilities at serving.
        if not (isinstance(out_shape, tuple) and len(out_shape) == 2 and out_shape[-1] in (1, 2)):
            raise ValueError(
                f"{path.name}: expected one (batch, units) output from a 1-unit sigmoid or 2-unit "
                f"softmax head, got {out_shape}"
            )
        if fake_index is not None and fake_index not in (0, 1):
            raise ValueError(f"{path.name}: fake_index must be 0 or 1 for a 2-label head, got {fake_index}")
        spec = ImageInputSpec(**{**entry.input.__dict__, "size": (height, width), "layout": "NHWC"})
        self.info = SourceInfo(
            model_id=entry.id,
            modality=entry.modality,
            source=f"file:{path.name}",
            architecture=f"Keras:{type(self.model).__name__}",
            weights="pretrained",
            labels=list(entry.labels),
            fake_index=entry.fake_index if fake_index is None else fake_index,
            output="probabilities",
            threshold=entry.threshold,
            input=spec,
            license=entry.license,
            versions={"tensorflow": tf.__version__, "keras": keras.__version__},
        )

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(batch, training=False))

    def export_onnx(self, path: Path) -> None:
        import tf2onnx

        height, width = self.info.input.size
        signature = (
            self._tf.TensorSpec((None, height, width, self._channels), self._tf.float32, name="pixel_values"),
        )
        model_proto, _ = tf2onnx.convert.from_keras(
            convertible(self.model), input_signature=signature, opset=OPSET
        )
        _renumber_generated_names(model_proto.graph)
        path.write_bytes(model_proto.SerializeToString())
        self.info.versions["tf2onnx"] = tf2onnx.__version__
