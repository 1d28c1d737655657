"""The Keras CNN-LSTM video model -> two ONNX graphs: a CNN encoder and an LSTM head.

A TimeDistributed CNN with a variable time axis does not run in ONNX Runtime, so the model is
split where the per-frame work ends:

- **encoder** ``cnn-lstm-encoder``: one face crop ``(N, H, W, 3)`` -> its features ``(N, D)``;
  dynamic batch. Stored with an image input spec (models/preprocess.py prepares the crops).
- **head** ``cnn-lstm``: features ``(B, T, D)`` -> ``(B, 1)`` sigmoid or ``(B, 2)`` softmax;
  dynamic batch AND time (models/temporal.py cuts the windows; nothing is padded).

Where the two graphs come from (``python -m models export cnn-lstm --source video_model_v2.keras
[--encoder finetuned_model.h5]``):

1. A CNN-LSTM ``.keras`` (``Input(T, H, W, 3) -> TimeDistributed(CNN) [-> TimeDistributed(...)]
   -> LSTM(...) [-> Dropout] -> Dense(...)``): the encoder is the inner layers of the leading
   TimeDistributed layers (the CNN whose features the LSTM was trained on); the head is every
   layer after them, rebuilt on ``Input(None, D)`` with the same weights. The split is checked:
   the Keras CNN-LSTM on probe clips must equal ``head(encoder(frames))``, so a model whose
   layers after TimeDistributed are not one linear stack is refused, not silently mis-served.
   An ``--encoder`` file is then only cross-checked (its features vs the TimeDistributed CNN's,
   figure stored, a warning when they differ): the LSTM was trained on the ``.keras``'s CNN.
2. A head-only ``.keras`` (``Input(T, D) -> LSTM -> ... -> Dense``, trained on precomputed
   features) needs ``--encoder``: a Keras image model, used whole when its output is
   ``(batch, D)``, else cut at its LAST layer whose output is ``(batch, D)`` (for a full
   classifier: the pooled features or the penultimate Dense). No such layer is an error naming
   the widths it has.
3. No ``--source``: the dev pair, built from the catalog's ``dev`` configs with seeded weights
   (``weights: "dev"``), then split exactly as case 1.

The image size comes from the model's input shape (the catalog's when it is None); ``seq_len``
from its fixed time axis (the catalog's when variable). A last layer with a sigmoid/softmax
activation gives ``output = "probabilities"``, a linear one ``"logits"``.

Both graphs are verified against Keras (encoder: the image probe set; head: sequences of 1,
seq_len/2, seq_len and 2*seq_len+1 frames) and stored at fp32 and int8 (ONNX Runtime dynamic
quantization; the encoder's MatMul/Gemm only, see ENCODER_INT8_OP_TYPES; the head's LSTM and
Dense), the int8 figures being the agreement of int8 encoder -> int8 head with the fp32 pair.
The head's ONNX carries the fp32 encoder's sha256, and its stored metadata names the encoder
export it was verified with (``encoder.tag``): ``models.store.find_video_pair`` loads that
pair, never a mix. ONNX names are canonicalized (``canonical_names``): same model, same bytes.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from errors import ParityError
from models.catalog import CatalogEntry, ImageInputSpec, SequenceInputSpec, get_entry
from models.export.keras import OPSET, convertible
from models.export.parity import FP32_TOLERANCE, check_parity, int8_agreement
from models.export.probe import probe_batch
from models.export.quantize import INT8_SCHEME, quantize_int8
from models.export.save import save_onnx, sha256_of
from models.export.source import DEV_SEED as DEV_SEED  # the base seed; bench/ imports it from here
from models.export.source import SourceInfo, dev_seed
from models.runtime import run_session
from models.store import StoredModel

log = logging.getLogger(__name__)

PROBE_SIZE = 16  # probe pictures for the encoder (as models/export/pipeline.py)
HEAD_PROBE_BATCH = 4  # sequences per probed length
SPLIT_CLIPS = 2  # clips the CNN-LSTM and head(encoder(frames)) are compared on
RECURRENT = ("LSTM", "GRU", "SimpleRNN", "Bidirectional", "RNN")
ENCODER_SHA_KEY = "verity.encoder_sha256"
# INT8 encoder: MatMul/Gemm only. Dynamic quantization turns convolutions into ConvInteger, which
# ONNX Runtime's CPU provider runs ~7x SLOWER than fp32 Conv (full-size EfficientNetB0, 224x224,
# 2 threads: 321 ms vs 47 ms per crop), so an int8 encoder with int8 convolutions would be a trap
# for VERITY_PRECISION=int8. The head's LSTM and Dense do quantize (DynamicQuantizeLSTM,
# MatMulInteger: 0.44 vs 1.3 ms per 10-frame window of 1280 features).
ENCODER_INT8_OP_TYPES = ["MatMul", "Gemm"]
# Ops ONNX Runtime's dynamic quantization turns integer; counted to say what an int8 graph holds.
_INTEGER_OPS = ("MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul")


def _keras() -> Any:
    import keras

    return keras


def _name(path: Path | None, fallback: str) -> str:
    return path.name if path is not None else fallback


def _is_recurrent(layer: Any) -> bool:
    return type(layer).__name__ in RECURRENT


def _outer_output(layer: Any) -> Any:
    """The tensor ``layer`` produces in the model it belongs to. A nested model's ``.output``
    is its own graph's output (disconnected from the outer input), so read its first call."""
    if isinstance(layer, _keras().Model):
        return layer._inbound_nodes[0].output_tensors[0]
    return layer.output


def _output_kind(layer: Any) -> str:
    activation = getattr(getattr(layer, "activation", None), "__name__", "")
    return "probabilities" if activation in ("sigmoid", "softmax") else "logits"


def canonical_names(graph: onnx.GraphProto, axes: list[str]) -> None:
    """Name every node and inner tensor by its position, so that the bytes of a conversion (hence
    its store tag) depend on the model only.

    tf2onnx's optimizer merges identical constants and subgraphs (an LSTM's zero h0 and c0) and
    keeps whichever name a hash-ordered set yields first, so the head came out under another
    sha256 on every run; models/export/keras.py's renumbering of ``__<n>`` suffixes does not
    cover that. Node order is stable, so tensors are numbered by first appearance in it
    (subgraphs included, sharing one numbering), initializers sorted by their new names. Graph
    inputs and outputs keep their names; the inputs' symbolic axes become ``axes`` (in order:
    "batch", "time"), the output's first axis the batch one.
    """
    keep = {value.name for value in (*graph.input, *graph.output)}
    names: dict[str, str] = {}
    dims: dict[str, str] = {}
    for value in graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param and dim.dim_param not in dims:
                dims[dim.dim_param] = axes[len(dims)] if len(dims) < len(axes) else f"d{len(dims)}"
    for value in graph.output:  # tf2onnx gives the output's batch axis a symbol of its own
        first = value.type.tensor_type.shape.dim[:1]
        if first and first[0].dim_param:
            dims.setdefault(first[0].dim_param, axes[0])

    def tensor(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    def walk(g: onnx.GraphProto, prefix: str) -> None:
        for index, node in enumerate(g.node):
            node.input[:] = [tensor(name) for name in node.input]
            node.output[:] = [tensor(name) for name in node.output]
            node.name = f"{prefix}{node.op_type}_{index}"
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    walk(attribute.g, f"{node.name}/")
        for value in (*g.input, *g.output, *g.value_info, *g.initializer):
            value.name = tensor(value.name)
        for value in (*g.input, *g.output, *g.value_info):
            for dim in value.type.tensor_type.shape.dim:
                if dim.dim_param:
                    dim.dim_param = dims.setdefault(dim.dim_param, f"d{len(dims)}")
        initializers = sorted(g.initializer, key=lambda t: int(t.name[1:]) if t.name[1:].isdigit() else -1)
        del g.initializer[:]
        g.initializer.extend(initializers)

    walk(graph, "")


# --- splitting a CNN-LSTM ------------------------------------------------------------------------


def _compose(layers: list[Any], input_shape: tuple[Any, ...], name: str, input_name: str) -> Any:
    keras = _keras()
    inputs = keras.Input(shape=input_shape, name=input_name)
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x, name=name)


def split_video_model(model: Any, label: str) -> tuple[Any | None, list[Any], int | None, int]:
    """``(encoder or None, head layers, T or None, D)`` of a CNN-LSTM or head-only Keras model;
    ValueError naming ``label`` (the user's file) when it is neither."""
    keras = _keras()
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"{label}: expected one input and one output, got {len(model.inputs)}/{len(model.outputs)}"
        )
    shape = tuple(model.input_shape)
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    distributed: list[Any] = []
    for layer in layers:
        if not isinstance(layer, keras.layers.TimeDistributed):
            break
        distributed.append(layer)
    head_layers = layers[len(distributed) :]
    if len(shape) == 5:
        if shape[-1] != 3:
            raise ValueError(f"{label}: expected (T, H, W, 3) RGB frames as input, got {shape[1:]}")
        if not distributed:
            first = type(layers[0]).__name__ if layers else "nothing"
            raise ValueError(
                f"{label}: expected Input(T, H, W, 3) -> TimeDistributed(CNN) -> LSTM -> Dense, but "
                f"the first layer is {first}, not TimeDistributed"
            )
        inner = [layer.layer for layer in distributed]
        if len(inner) == 1 and isinstance(inner[0], keras.Model) and len(inner[0].input_shape) == 4:
            encoder = inner[0]  # the user's CNN itself, names and all
        else:
            encoder = _compose(inner, shape[2:], f"{model.name}_encoder", "pixel_values")
        out = tuple(encoder.output_shape)
        if len(out) != 2 or not out[-1]:
            raise ValueError(
                f"{label}: the TimeDistributed layers must give one feature vector per frame, "
                f"got per-frame output {out[1:]} (add pooling or Flatten inside TimeDistributed)"
            )
        time_steps, feature_dim = shape[1], int(out[-1])
    elif len(shape) == 3:
        if distributed:
            raise ValueError(f"{label}: TimeDistributed over feature vectors is not a video model: {shape}")
        encoder, time_steps, feature_dim = None, shape[1], int(shape[2])
    else:
        raise ValueError(
            f"{label}: expected a CNN-LSTM on (T, H, W, 3) frames or an LSTM head on (T, D) "
            f"features, got input shape {shape[1:]}"
        )
    if not any(_is_recurrent(layer) for layer in head_layers):
        found = ", ".join(type(layer).__name__ for layer in head_layers) or "nothing"
        raise ValueError(
            f"{label}: no recurrent layer ({'/'.join(RECURRENT[:3])}) after the frames' features; "
            f"found {found}"
        )
    out_shape = model.output_shape
    if not (isinstance(out_shape, tuple) and len(out_shape) == 2 and out_shape[-1] in (1, 2)):
        raise ValueError(
            f"{label}: expected one (batch, units) output from a 1-unit sigmoid or 2-unit softmax "
            f"head, got {out_shape}"
        )
    return encoder, head_layers, (int(time_steps) if time_steps else None), feature_dim


def rebuild_head(head_layers: list[Any], feature_dim: int, name: str, label: str) -> Any:
    """The head layers (same weight objects) on ``Input(None, D)``: a variable time axis."""
    try:
        return _compose(head_layers, (None, feature_dim), name, "features")
    except Exception as exc:  # any Keras refusal means: not a variable-length head
        names = " -> ".join(type(layer).__name__ for layer in head_layers)
        raise ValueError(
            f"{label}: the head ({names}) cannot run on a variable number of frames: {exc}"
        ) from exc


def encoder_from_image_model(model: Any, feature_dim: int, label: str) -> Any:
    """A Keras image model as the encoder of a head taking ``feature_dim`` features: whole when
    its output is ``(batch, D)``, else cut at its last layer with that output."""
    keras = _keras()
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"{label}: expected an NHWC RGB image input, got {shape}")
    if tuple(model.output_shape) == (None, feature_dim):
        return model
    widths: list[str] = []
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        tensor = _outer_output(layer)
        if len(tensor.shape) == 2:
            if tensor.shape[-1] == feature_dim:
                log.info("%s: encoder = its layers up to %r (%d features)", label, layer.name, feature_dim)
                return keras.Model(model.inputs, tensor, name=f"{model.name}_to_{layer.name}")
            widths.append(f"{layer.name} ({tensor.shape[-1]})")
    raise ValueError(
        f"{label}: no layer outputs (batch, {feature_dim}) features, which the LSTM head takes; "
        f"layers with one feature vector per image: {', '.join(widths) or 'none'}"
    )


# --- the dev pair ----------------------------------------------------------------------------------


def _small_cnn(filters: list[int], size: int) -> Any:
    """A few conv blocks and global pooling: the tests' tiny stand-in for a real backbone."""
    keras = _keras()
    inputs = keras.Input(shape=(size, size, 3), name="pixel_values")
    x = inputs
    for i, width in enumerate(filters):
        x = keras.layers.Conv2D(int(width), 3, padding="same", name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        if i < len(filters) - 1:
            x = keras.layers.MaxPooling2D(name=f"pool{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(inputs, x, name="small_cnn")


def build_dev_video_model(head: CatalogEntry, encoder: CatalogEntry, config: dict[str, Any]) -> Any:
    """The CNN-LSTM the catalog's dev configs describe, with seeded random weights: ``Input(T, H,
    W, 3) -> TimeDistributed(backbone with global pooling) -> LSTM -> Dropout -> Dense(1,
    sigmoid)``. Keras's name counters are reset first: names end up in the ONNX bytes, and the
    same config must give the same bytes (hence store tag) in any process, at any point in it."""
    keras = _keras()
    keras.backend.clear_session()
    keras.utils.set_random_seed(dev_seed(head.id))
    size = int(config.get("image_size", encoder.input.size[0]))  # type: ignore[union-attr]
    seq_len = int(config.get("seq_len", head.sequence.seq_len))  # type: ignore[union-attr]
    name = str(config.get("backbone", "EfficientNetB0"))
    if name == "SmallCNN":
        backbone = _small_cnn(list(config.get("filters", [8, 16])), size)
    else:
        # keras.applications with weights=None: the architecture only, nothing downloaded.
        backbone = getattr(keras.applications, name)(
            include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg"
        )
    frames = keras.Input(shape=(seq_len, size, size, 3), name="frames")
    x = keras.layers.TimeDistributed(backbone, name="frame_encoder")(frames)
    x = keras.layers.LSTM(int(config.get("lstm_units", 256)), name="lstm")(x)
    x = keras.layers.Dropout(float(config.get("dropout", 0.5)), name="dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="fake")(x)
    return keras.Model(frames, outputs, name="dev_cnn_lstm")


# --- the source ------------------------------------------------------------------------------------


class KerasVideoSource:
    """The encoder and head as Keras models, with what export needs to describe and check them."""

    def __init__(
        self,
        head_entry: CatalogEntry,
        *,
        model: Any,
        label: str,
        weights: str = "pretrained",
        origin: str,
        encoder_model: Any | None = None,
        encoder_label: str | None = None,
        fake_index: int | None = None,
        rescale: float | None = None,
    ) -> None:
        import keras
        import tensorflow as tf

        self._tf = tf
        sequence = head_entry.sequence
        if sequence is None or head_entry.modality != "video-head":
            raise ValueError(f"{head_entry.id} is not a video head")
        encoder_entry = get_entry(str(head_entry.pair))
        encoder, head_layers, time_steps, feature_dim = split_video_model(model, label)
        self.full = model if encoder is not None else None
        self.file_check: dict[str, Any] | None = None
        if encoder is None:
            if encoder_model is None:
                raise ValueError(
                    f"{label} is an LSTM head on ({time_steps}, {feature_dim}) features: it needs the "
                    f"encoder that made them (--encoder finetuned_model.h5)"
                )
            encoder = encoder_from_image_model(encoder_model, feature_dim, str(encoder_label))
        elif encoder_model is not None:
            self._file_encoder = encoder_from_image_model(encoder_model, feature_dim, str(encoder_label))
            self.file_check = {"source": f"file:{encoder_label}"}
        self.encoder = encoder
        self.head = rebuild_head(head_layers, feature_dim, f"{model.name}_head", label)
        self._head_is_model = model if self.full is None else None
        if fake_index is not None and fake_index not in (0, 1):
            raise ValueError(f"{label}: fake_index must be 0 or 1 for a 2-label head, got {fake_index}")
        in_shape = tuple(encoder.input_shape)
        if len(in_shape) != 4 or in_shape[-1] != 3:
            raise ValueError(f"{label}: the encoder must take NHWC RGB crops, got {in_shape}")
        base = encoder_entry.input
        assert isinstance(base, ImageInputSpec)
        size = (int(in_shape[1] or base.size[0]), int(in_shape[2] or base.size[1]))
        if self.file_check is not None:
            file_shape = tuple(self._file_encoder.input_shape)
            if file_shape[1:3] != in_shape[1:3]:
                raise ValueError(
                    f"{encoder_label}: takes {file_shape[1:3]} images but {label}'s CNN takes {in_shape[1:3]}"
                )
        image_spec = ImageInputSpec(
            **{
                **base.__dict__,
                "size": size,
                "layout": "NHWC",
                "rescale": base.rescale if rescale is None else rescale,
            }
        )
        sequence_spec = SequenceInputSpec(
            seq_len=time_steps or sequence.seq_len,
            stride=min(sequence.stride, time_steps or sequence.seq_len),
            feature_dim=feature_dim,
        )
        versions = {"tensorflow": tf.__version__, "keras": keras.__version__}
        head_fake = head_entry.fake_index if fake_index is None else fake_index
        self.encoder_info = SourceInfo(
            model_id=encoder_entry.id,
            modality="video-encoder",
            source=origin if encoder_model is None or self.file_check else f"file:{encoder_label}",
            architecture=f"Keras:{encoder.name}",
            weights=weights,  # type: ignore[arg-type]
            labels=list(head_entry.labels),
            fake_index=head_fake,
            output="features",  # type: ignore[arg-type]
            threshold=head_entry.threshold,
            input=image_spec,
            license=encoder_entry.license,
            versions=dict(versions),
        )
        self.head_info = SourceInfo(
            model_id=head_entry.id,
            modality="video-head",
            source=origin,
            architecture="Keras:" + "->".join(type(layer).__name__ for layer in head_layers),
            weights=weights,  # type: ignore[arg-type]
            labels=list(head_entry.labels),
            fake_index=head_fake,
            output=_output_kind(head_layers[-1]),  # type: ignore[arg-type]
            threshold=head_entry.threshold,
            input=sequence_spec,
            license=head_entry.license,
            versions=dict(versions),
        )

    @property
    def feature_dim(self) -> int:
        return int(self.head_info.input.feature_dim)  # type: ignore[union-attr]

    def predict_encoder(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.encoder(batch, training=False))

    def predict_head(self, sequences: np.ndarray) -> np.ndarray:
        return np.asarray(self.head(sequences, training=False))

    def check_split(self, crops: np.ndarray, features: np.ndarray, tolerance: float) -> float:
        """Max |original Keras model - the split pair| on probe clips (ParityError past
        ``tolerance``): the proof that encoder + head compute what the user's model computes."""
        seq_len = self.head_info.input.seq_len  # type: ignore[union-attr]
        index = np.array(
            [[(3 * clip + k) % len(crops) for k in range(seq_len)] for clip in range(SPLIT_CLIPS)]
        )
        split = self.predict_head(features[index])
        if self.full is not None:
            original = np.asarray(self.full(crops[index], training=False))
        else:
            original = np.asarray(self._head_is_model(features[index], training=False))
        try:
            return check_parity(self.head_info.model_id, split, original, tolerance)
        except ParityError as err:
            raise ParityError(
                err.model_id,
                err.max_abs_diff,
                tolerance,
                f"{err.where}: the model differs from head(encoder(frames)); only a linear stack "
                "of layers after TimeDistributed can be split",
            ) from err

    def check_file_encoder(self, crops: np.ndarray, features: np.ndarray, tolerance: float) -> None:
        """Compare the ``--encoder`` file's features with the TimeDistributed CNN's (stored)."""
        if self.file_check is None:
            return
        diff = float(np.abs(np.asarray(self._file_encoder(crops, training=False)) - features).max())
        self.file_check["max_abs_diff"] = diff
        self.file_check["matches"] = diff <= tolerance
        if diff > tolerance:
            log.warning(
                "%s: its features differ from the CNN inside the CNN-LSTM by %.3g; exporting the "
                "CNN-LSTM's own (the LSTM was trained on its features)",
                self.file_check["source"],
                diff,
            )

    def _convert(self, model: Any, signature: tuple[Any, ...], axes: list[str]) -> onnx.ModelProto:
        import tf2onnx

        model_proto, _ = tf2onnx.convert.from_keras(
            convertible(model), input_signature=signature, opset=OPSET
        )
        canonical_names(model_proto.graph, axes)
        self.encoder_info.versions["tf2onnx"] = self.head_info.versions["tf2onnx"] = tf2onnx.__version__
        return model_proto

    def export_encoder(self, path: Path) -> None:
        height, width = self.encoder_info.input.size  # type: ignore[union-attr]
        spec = self._tf.TensorSpec((None, height, width, 3), self._tf.float32, name="pixel_values")
        path.write_bytes(self._convert(self.encoder, (spec,), ["batch"]).SerializeToString())

    def export_head(self, path: Path, *, encoder_sha256: str) -> None:
        spec = self._tf.TensorSpec((None, None, self.feature_dim), self._tf.float32, name="features")
        proto = self._convert(self.head, (spec,), ["batch", "time"])
        # The encoder's hash inside the head's bytes: a head exported for another encoder is
        # another file, hence another store tag, even when its weights are the same.
        proto.metadata_props.add(key=ENCODER_SHA_KEY, value=encoder_sha256)
        path.write_bytes(proto.SerializeToString())


def make_video_source(
    model_id: str,
    *,
    source: str | None = None,
    encoder: str | None = None,
    dev_overrides: dict[str, Any] | None = None,
    fake_index: int | None = None,
    **_: Any,
) -> KerasVideoSource:
    """The user's Keras pair (``source`` .keras CNN-LSTM or head, ``encoder`` .h5/.keras image
    model), or without ``source`` the seeded dev pair (``dev_overrides`` on the catalog's)."""
    keras = _keras()
    entry = get_entry(model_id)
    if entry.modality != "video-head":
        raise ValueError(f"{model_id} is exported with its head: python -m models export {entry.pair}")
    encoder_entry = get_entry(str(entry.pair))
    if source is None:
        if encoder:
            raise ValueError(f"{model_id}: --encoder needs --source (the CNN-LSTM or head .keras file)")
        config = {**encoder_entry.dev_config, **entry.dev_config, **(dev_overrides or {})}
        log.warning(
            "no --source given: building %s from its config with seeded random weights; its "
            "verdicts are NOT meaningful (weights=dev)",
            model_id,
        )
        model = build_dev_video_model(entry, encoder_entry, config)
        origin = (
            f"dev:{config.get('backbone', 'EfficientNetB0')}+LSTM({config.get('lstm_units', 256)})"
            f"(seed={dev_seed(entry.id)})"
        )
        rescale = float(config["rescale"]) if "rescale" in config else None
        return KerasVideoSource(
            entry, model=model, label="dev CNN-LSTM", weights="dev", origin=origin, rescale=rescale
        )
    path = Path(source)
    for given in (path, Path(encoder) if encoder else None):
        if given is not None and given.suffix not in (".h5", ".keras"):
            raise ValueError(f"{given.name}: expected a Keras .h5 or .keras file")
    model = keras.models.load_model(path, compile=False)
    encoder_path = Path(encoder) if encoder else None
    encoder_model = keras.models.load_model(encoder_path, compile=False) if encoder_path else None
    return KerasVideoSource(
        entry,
        model=model,
        label=path.name,
        origin=f"file:{path.name}",
        encoder_model=encoder_model,
        encoder_label=_name(encoder_path, ""),
        fake_index=fake_index,
    )


# --- export ----------------------------------------------------------------------------------------


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def head_probe(features: np.ndarray, seq_len: int, seed: int = 4321) -> list[np.ndarray]:
    """Feature sequences for the head's parity: ``HEAD_PROBE_BATCH`` per length, of 1 frame,
    half, all and more than twice the training length; rows are probe crops' features (the
    inputs the head really sees) with a little noise, so consecutive frames differ."""
    rng = np.random.default_rng(seed)
    scale = 0.1 * (float(features.std()) or 1.0)
    lengths = sorted({1, max(1, seq_len // 2), seq_len, 2 * seq_len + 1})
    batches = []
    for length in lengths:
        rows = rng.integers(0, len(features), size=(HEAD_PROBE_BATCH, length))
        noise = rng.normal(0.0, scale, size=(*rows.shape, features.shape[1]))
        batches.append((features[rows] + noise).astype(np.float32))
    return batches


def _integer_nodes(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            if node.op_type in _INTEGER_OPS:
                counts[node.op_type] = counts.get(node.op_type, 0) + 1
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    walk(attribute.g)

    walk(onnx.load(str(path)).graph)
    return counts


def _clips(features: np.ndarray, seq_len: int) -> np.ndarray:
    """One clip per probe crop: it and the next ``seq_len - 1`` (wrapping), ``(N, T, D)``."""
    index = (np.arange(len(features))[:, None] + np.arange(seq_len)[None, :]) % len(features)
    return features[index]


def export_video_source(
    src: KerasVideoSource, *, int8: bool = True, tolerance: float = FP32_TOLERANCE
) -> list[StoredModel]:
    """Verify and store both graphs: ``[encoder fp32, head fp32, encoder int8, head int8]``."""
    enc, head = src.encoder_info, src.head_info
    for info in (enc, head):
        info.versions.update({"onnx": onnx.__version__, "onnxruntime": ort.__version__})
    seq_len = head.input.seq_len  # type: ignore[union-attr]
    crops = probe_batch(enc.input, PROBE_SIZE)  # type: ignore[arg-type]
    features = src.predict_encoder(crops)
    split = src.check_split(crops, features, tolerance)
    src.check_file_encoder(crops, features, tolerance)
    sequences = head_probe(features, seq_len)
    keras_head = np.concatenate([src.predict_head(batch) for batch in sequences])
    stored: list[StoredModel] = []
    with tempfile.TemporaryDirectory(prefix="verity-export-") as tmp:
        enc_fp32, head_fp32 = Path(tmp) / "encoder-fp32.onnx", Path(tmp) / "head-fp32.onnx"
        src.export_encoder(enc_fp32)
        src.export_head(head_fp32, encoder_sha256=sha256_of(enc_fp32))
        sessions = {"encoder": _session(enc_fp32), "head": _session(head_fp32)}
        onnx_features = run_session(sessions["encoder"], crops)
        enc_parity = check_parity(enc.model_id, onnx_features, features, tolerance)
        onnx_head = np.concatenate([run_session(sessions["head"], batch) for batch in sequences])
        head_parity = check_parity(head.model_id, onnx_head, keras_head, tolerance)
        lengths = [int(batch.shape[1]) for batch in sequences]
        log.info(
            "%s parity: encoder %.3g, head %.3g (lengths %s), split %.3g (tolerance %.1g)",
            head.model_id, enc_parity, head_parity, lengths, split, tolerance,
        )  # fmt: skip
        enc_base = {
            **enc.metadata(),
            "head": head.model_id,
            "feature_dim": src.feature_dim,
            "parity_max_abs_diff": enc_parity,
            "parity_tolerance": tolerance,
            "parity_probe_size": PROBE_SIZE,
        }
        head_base = {
            **head.metadata(),
            "parity_max_abs_diff": head_parity,
            "parity_tolerance": tolerance,
            "parity_probe_size": len(onnx_head),
            "parity_lengths": lengths,
            # Also under "input" (StoredModel.sequence_spec, the typed accessor); top-level for
            # callers that read the metadata directly.
            "seq_len": seq_len,
            "stride": head.input.stride,  # type: ignore[union-attr]
            "split_max_abs_diff": split,
            **({"encoder_file": src.file_check} if src.file_check else {}),
        }

        def save_pair(enc_path: Path, head_path: Path, precision: str, extra: dict[str, Any]) -> None:
            encoder = save_onnx(enc_path, {**enc_base, **extra, "precision": precision})
            encoder_ref = {"model_id": enc.model_id, "tag": encoder.tag, "sha256": encoder.metadata["sha256"]}
            stored.extend(
                [
                    encoder,
                    save_onnx(
                        head_path, {**head_base, **extra, "precision": precision, "encoder": encoder_ref}
                    ),
                ]
            )

        save_pair(enc_fp32, head_fp32, "fp32", {})
        if int8:
            save_pair(*_quantize_pair(enc_fp32, head_fp32, crops, onnx_features, sequences, head, seq_len))
    stored.sort(key=lambda model: (model.precision != "fp32", model.modality != "video-encoder"))
    return stored


def _quantize_pair(
    enc_fp32: Path,
    head_fp32: Path,
    crops: np.ndarray,
    fp32_features: np.ndarray,
    sequences: list[np.ndarray],
    head: SourceInfo,
    seq_len: int,
) -> tuple[Path, Path, str, dict[str, Any]]:
    """Both graphs through dynamic quantization (encoder: its MatMul/Gemm weights, see
    ENCODER_INT8_OP_TYPES; head: everything ONNX Runtime quantizes, its LSTM included), the
    quantized nodes counted and stored, and their agreement with fp32: the verdicts of int8
    encoder -> int8 head against fp32 -> fp32 on probe clips."""
    enc_int8 = quantize_int8(
        enc_fp32, enc_fp32.with_name("encoder-int8.onnx"), op_types=ENCODER_INT8_OP_TYPES
    )
    head_int8 = quantize_int8(head_fp32, head_fp32.with_name("head-int8.onnx"))
    int8_features = run_session(_session(enc_int8), crops, rows_alone=True)
    head32, head8 = _session(head_fp32), _session(head_int8)
    fp32_out = run_session(head32, _clips(fp32_features, seq_len))
    int8_out = run_session(head8, _clips(int8_features, seq_len), rows_alone=True)
    verdict = dict(output_kind=head.output, fake_index=head.fake_index, threshold=head.threshold)
    pipeline = int8_agreement(fp32_out, int8_out, **verdict)  # type: ignore[arg-type]
    head_only = int8_agreement(
        np.concatenate([run_session(head32, batch) for batch in sequences]),
        np.concatenate([run_session(head8, batch, rows_alone=True) for batch in sequences]),
        **verdict,  # type: ignore[arg-type]
    )
    norms = np.linalg.norm(fp32_features, axis=1) * np.linalg.norm(int8_features, axis=1)
    cosine = np.sum(fp32_features * int8_features, axis=1) / np.maximum(norms, 1e-12)
    figures = {
        # int8 encoder + int8 head vs the fp32 pair, on one clip per probe crop.
        **pipeline.metadata(),
        **INT8_SCHEME,
        "int8_feature_max_abs_diff": float(np.abs(int8_features - fp32_features).max()),
        "int8_feature_min_cosine": float(cosine.min()),
        "int8_head_max_probability_diff": head_only.max_probability_diff,
        "int8_quantized_nodes": {"encoder": _integer_nodes(enc_int8), "head": _integer_nodes(head_int8)},
    }
    log.info(
        "int8 video pair: %.1f%% verdicts agree with fp32, max prob diff %.3g, min feature cosine "
        "%.4f; quantized nodes %s",
        pipeline.verdict_agreement * 100,
        pipeline.max_probability_diff,
        figures["int8_feature_min_cosine"],
        figures["int8_quantized_nodes"],
    )
    return enc_int8, head_int8, "int8", figures


def export_video_model(model_id: str, *, int8: bool = True, **kwargs: Any) -> list[StoredModel]:
    return export_video_source(make_video_source(model_id, **kwargs), int8=int8)
