"""Export -> verify -> store (fp32), then quantize -> measure agreement -> store (int8)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime

from models.catalog import AudioInputSpec, TextInputSpec, get_entry
from models.export.audio_probe import probe_audio_batches
from models.export.parity import FP32_TOLERANCE, check_parity, int8_agreement, run_onnx
from models.export.probe import probe_batch
from models.export.quantize import INT8_SCHEME, quantize_int8
from models.export.save import save_onnx, save_onnx_files
from models.export.source import ExportSource
from models.store import ONNX_FILE, StoredModel

log = logging.getLogger(__name__)

PROBE_SIZE = 16
# Audio (wav2vec2-style) INT8 covers the transformer's matrix products only: dynamic quantization
# of the conv feature encoder and the weight-normed positional conv breaks them. Text models
# (RoBERTa) likewise: their matrix products, not the embedding lookups.
AUDIO_INT8_OP_TYPES = ["MatMul", "Gemm"]


def probe_batches(src: ExportSource, count: int = PROBE_SIZE) -> list[np.ndarray]:
    """The probe set as model input, one array per input shape: pictures are one batch; audio
    is full windows plus shorter clips, text full token windows plus short texts (each length its
    own batch, as serving runs them)."""
    info = src.info
    if isinstance(info.input, TextInputSpec):
        from models.export.hf_text import HFTextSource, probe_text_batches

        assert isinstance(src, HFTextSource)
        return probe_text_batches(src, count)
    if isinstance(info.input, AudioInputSpec):
        return probe_audio_batches(info.input, count)
    return [probe_batch(info.input, count)]


def _source_outputs(src: ExportSource, batches: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([src.predict(batch) for batch in batches])


def _onnx_outputs(path: Path, batches: list[np.ndarray], *, rows_alone: bool = False) -> np.ndarray:
    return np.concatenate([run_onnx(path, batch, rows_alone=rows_alone) for batch in batches])


def make_source(
    model_id: str,
    *,
    source: str | None = None,
    offline: bool = False,
    dev_overrides: dict[str, Any] | None = None,
    fake_index: int | None = None,
    like_model: str | None = None,
) -> ExportSource:
    """The export source for ``model_id``: a .onnx file (stored under any id, preprocessing
    ``like_model``'s), a Keras file, or an HF checkpoint (hub id, local dir, or dev weights)."""
    if source and Path(source).suffix == ".onnx":
        from models.export.onnx_file import OnnxFileSource

        like = get_entry(like_model or "vit-dima806")
        return OnnxFileSource(model_id, path=Path(source), like=like, fake_index=fake_index)
    entry = get_entry(model_id)
    if source and Path(source).suffix in (".h5", ".keras"):
        from models.export.keras import KerasImageSource

        return KerasImageSource(entry, path=Path(source), fake_index=fake_index)
    if entry.source == "file":
        raise ValueError(f"{model_id} needs --source pointing at a .h5 or .keras file")
    if entry.modality == "text":
        from models.export.hf_text import HFTextSource

        return HFTextSource(entry, source=source, offline=offline, dev_overrides=dev_overrides)
    if entry.modality == "audio":
        from models.export.hf_audio import HFAudioSource

        return HFAudioSource(entry, source=source, offline=offline, dev_overrides=dev_overrides)
    from models.export.hf import HFImageSource

    return HFImageSource(entry, source=source, offline=offline, dev_overrides=dev_overrides)


def export_source(
    src: ExportSource, *, int8: bool = True, tolerance: float = FP32_TOLERANCE
) -> list[StoredModel]:
    info = src.info
    info.versions.update({"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__})
    probe = probe_batches(src, PROBE_SIZE)
    matmul_only = info.modality in ("audio", "text")
    # Files stored beside the graph (a text model's tokenizer.json).
    extra: dict[str, Path] = src.extra_files() if hasattr(src, "extra_files") else {}

    def save(path: Path, metadata: dict[str, Any]) -> StoredModel:
        return save_onnx_files({ONNX_FILE: path, **extra}, metadata) if extra else save_onnx(path, metadata)

    stored: list[StoredModel] = []
    with tempfile.TemporaryDirectory(prefix="verity-export-") as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        src.export_onnx(fp32_path)
        if hasattr(src, "optimize"):  # text models: fused kernels, kept only when exact (hf_text.py)
            src.optimize(fp32_path)
        source_out = _source_outputs(src, probe)
        fp32_out = _onnx_outputs(fp32_path, probe)
        parity = check_parity(info.model_id, fp32_out, source_out, tolerance)
        log.info("%s fp32 parity: max abs diff %.3g (tolerance %.1g)", info.model_id, parity, tolerance)
        base = {
            **info.metadata(),
            "parity_max_abs_diff": parity,
            "parity_tolerance": tolerance,
            "parity_probe_size": PROBE_SIZE,
        }
        stored.append(save(fp32_path, {**base, "precision": "fp32"}))
        if int8:
            int8_path = quantize_int8(
                fp32_path,
                Path(tmp) / "int8.onnx",
                op_types=AUDIO_INT8_OP_TYPES if matmul_only else None,
                fused_ops=hasattr(src, "optimize"),
            )
            agreement = int8_agreement(
                fp32_out,
                _onnx_outputs(int8_path, probe, rows_alone=True),
                output_kind=info.output,
                fake_index=info.fake_index,
                threshold=info.threshold,
            )
            log.info(
                "%s int8 agreement with fp32: %.1f%% verdicts, prob diff max %.3g mean %.3g",
                info.model_id,
                agreement.verdict_agreement * 100,
                agreement.max_probability_diff,
                agreement.mean_probability_diff,
            )
            stored.append(
                save(
                    int8_path,
                    {
                        **base,
                        "precision": "int8",
                        **agreement.metadata(),
                        **INT8_SCHEME,
                    },
                )
            )
    return stored


def export_model(model_id: str, **kwargs: Any) -> list[StoredModel]:
    int8 = kwargs.pop("int8", True)
    from models.catalog import load_catalog

    entry = load_catalog().get(model_id)
    if entry is not None and entry.modality == "faces":
        from models.export.mtcnn import export_mtcnn

        # The mtcnn package ships its weights (nothing to download, so `offline` changes
        # nothing); fp32 only, models/export/mtcnn.py says why.
        if kwargs.get("source"):
            raise ValueError(f"{model_id} comes from {entry.source} itself; --source does not apply")
        return [export_mtcnn(entry)]
    if entry is not None and entry.modality in ("video-head", "video-encoder"):
        from models.export.keras_video import export_video_model

        # Two graphs (CNN encoder + LSTM head), verified and stored together; the encoder's
        # id is refused there with the command that exports it.
        return export_video_model(model_id, int8=int8, **kwargs)
    if kwargs.pop("encoder", None):
        raise ValueError(f"--encoder is for video models (cnn-lstm), not {model_id}")
    return export_source(make_source(model_id, **kwargs), int8=int8)
