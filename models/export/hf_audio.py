"""HuggingFace audio classifiers (Wav2Vec2ForSequenceClassification and kin) -> ONNX.

The graph has ONE input, ``input_values`` (batch, samples), with dynamic batch AND length axes,
and one output, ``logits`` (batch, labels). No ``attention_mask`` input, because no window is
ever padded:

- media/audio.py cuts fixed windows of ``window_s`` and aligns the last one to the clip's end
  (it overlaps backwards), so every window of a clip at least one window long is full; a clip
  shorter than one window runs alone, at its own length, through the dynamic length axis.
- With nothing padded an attention mask would be all ones, and an all-ones mask is the identity
  for wav2vec2 (same frames attended, same mean pooling; tests/unit/test_audio_export.py proves
  it for both ``group`` and ``layer`` feature-encoder norms). So the mask-less graph computes
  exactly what HF computes on the same window, for checkpoints trained with or without masks.
- Zero padding would change the verdict: the ``group``-norm checkpoints (wav2vec2-base, which
  motheecreator/Deepfake-audio-detection is fine-tuned from) normalize the first conv layer
  over the whole time axis and were never trained with a mask (their feature extractor has
  ``return_attention_mask=False``, and HF passes none), so padded zeros leak into every frame.
  Not padding at all is the only way to be faithful to them.

Windows are normalized by models/audio_features.py exactly as the checkpoint's feature
extractor (``do_normalize``), which the stored input spec records.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from models.catalog import AudioInputSpec, CatalogEntry
from models.export.hf import OPSET, hf_source_info, load_checkpoint
from models.export.source import DEV_SEED, dev_seed

log = logging.getLogger(__name__)


def _load_pretrained(location: str) -> torch.nn.Module:
    # The checkpoint's config names its architecture (Wav2Vec2, HuBERT, WavLM, ...).
    return transformers.AutoModelForAudioClassification.from_pretrained(location).eval()


def _spec_from_extractor(raw: dict[str, Any], fallback: AudioInputSpec) -> AudioInputSpec:
    """Sample rate and normalization come from the checkpoint's feature extractor; windowing is
    Verity's (the catalog's)."""
    return AudioInputSpec(
        sample_rate=int(raw.get("sampling_rate", fallback.sample_rate)),
        window_s=fallback.window_s,
        hop_s=fallback.hop_s,
        do_normalize=bool(raw.get("do_normalize", fallback.do_normalize)),
        min_duration_s=fallback.min_duration_s,
    )


def receptive_field(config: Any) -> int:
    """Fewest input samples the conv feature encoder turns into one frame."""
    field = 1
    for kernel, stride in zip(reversed(config.conv_kernel), reversed(config.conv_stride), strict=True):
        field = (field - 1) * int(stride) + int(kernel)
    return field


def build_dev_model(entry: CatalogEntry, overrides: dict[str, Any] | None = None) -> torch.nn.Module:
    """The catalog architecture with seeded random weights (weights = "dev")."""
    dims = {**entry.dev_config, **(overrides or {})}
    if int(dims.get("num_labels", len(entry.labels))) != len(entry.labels):
        raise ValueError(f"{entry.id}: dev num_labels {dims['num_labels']} != {len(entry.labels)} labels")
    id2label = dict(enumerate(entry.labels))
    config = transformers.Wav2Vec2Config(
        **{
            **dims,
            "num_labels": len(entry.labels),
            "id2label": id2label,
            "label2id": {v: k for k, v in id2label.items()},
        }
    )
    torch.manual_seed(dev_seed(entry.id))
    model_class = getattr(transformers, entry.architecture, transformers.Wav2Vec2ForSequenceClassification)
    return model_class(config).eval()


class HFAudioSource:
    def __init__(
        self,
        entry: CatalogEntry,
        *,
        source: str | None = None,
        offline: bool = False,
        dev_overrides: dict[str, Any] | None = None,
    ) -> None:
        """``source``: a hub id or a local directory; None means the catalog's hub id."""
        if entry.audio is None:
            raise ValueError(f"{entry.id} is not an audio model")
        spec = entry.audio
        location = source or entry.hub_id
        checkpoint = load_checkpoint(
            entry,
            location,
            offline=offline,
            dev_overrides=dev_overrides,
            load_pretrained=_load_pretrained,
            build_dev=build_dev_model,
            auto_preprocessor=transformers.AutoFeatureExtractor,
        )
        self.model: torch.nn.Module = checkpoint.model
        extractor_raw = checkpoint.preprocessor
        if not extractor_raw and checkpoint.weights == "pretrained":
            log.warning("%s: no feature extractor config; sample rate, normalization: catalog's", entry.id)
        spec = _spec_from_extractor(extractor_raw, spec)
        config = self.model.config
        if extractor_raw.get("return_attention_mask"):
            # Trained with masks ("layer" norm): still exact without one, as no window is padded.
            log.info("%s: extractor returns attention masks; unpadded windows need none", entry.id)
        field = receptive_field(config)
        if spec.min_samples < field:
            raise ValueError(
                f"{entry.id}: min_duration_s {spec.min_duration_s} is {spec.min_samples} samples, "
                f"fewer than the feature encoder's receptive field ({field})"
            )
        self.spec = spec
        self.info = hf_source_info(entry, checkpoint, spec)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            values = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            return self.model(input_values=values).logits.numpy()

    def export_onnx(self, path: Path) -> None:
        # Traced on two full windows; the batch and length axes stay symbolic (the traced graph
        # computes the frame count from the input's shape), checked at other lengths by parity.
        generator = torch.Generator().manual_seed(DEV_SEED)
        dummy = torch.randn(2, self.spec.window_samples, generator=generator)
        torch.onnx.export(
            self.model,
            (dummy,),
            str(path),
            input_names=["input_values"],
            output_names=["logits"],
            dynamic_axes={"input_values": {0: "batch", 1: "samples"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
