"""HuggingFace image classifiers (ViT, SigLIP, any AutoModelForImageClassification) -> ONNX."""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from models.catalog import CatalogEntry, ImageInputSpec
from models.export.source import DEV_SEED as DEV_SEED  # the base seed; bench/ imports it from here
from models.export.source import SourceInfo, dev_seed

log = logging.getLogger(__name__)

OPSET = 18
_FAKE_LABEL = re.compile(r"fake|deepfake|synthetic|generated|manipulated|spoof", re.IGNORECASE)
_PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


def hub_reachable(timeout_s: float = 3.0) -> bool:
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _fake_index(id2label: dict[int, str], fallback: int) -> int:
    for index, label in sorted(id2label.items()):
        if _FAKE_LABEL.search(str(label)):
            return int(index)
    return fallback


def _spec_from_processor(raw: dict[str, Any], fallback: ImageInputSpec) -> ImageInputSpec:
    size = raw.get("size") or {}
    if isinstance(size, int):
        hw = (size, size)
    elif "height" in size:
        hw = (int(size["height"]), int(size["width"]))
    elif "shortest_edge" in size:
        hw = (int(size["shortest_edge"]),) * 2
    else:
        hw = fallback.size
    return ImageInputSpec(
        size=hw,
        layout="NCHW",
        resample=_PIL_FILTERS.get(int(raw.get("resample", 2)), fallback.resample),  # type: ignore[arg-type]
        rescale=float(raw.get("rescale_factor", fallback.rescale)),
        mean=tuple(raw.get("image_mean", fallback.mean)),  # type: ignore[arg-type]
        std=tuple(raw.get("image_std", fallback.std)),  # type: ignore[arg-type]
    )


def _model_class(architecture: str) -> Any:
    return getattr(transformers, architecture, transformers.AutoModelForImageClassification)


def _load_pretrained(location: str) -> torch.nn.Module:
    # The checkpoint's own config names its architecture (ViT, SigLIP, ConvNeXt, ...).
    return transformers.AutoModelForImageClassification.from_pretrained(location).eval()


def build_dev_model(entry: CatalogEntry, overrides: dict[str, Any] | None = None) -> torch.nn.Module:
    """The catalog architecture with seeded random weights (weights = "dev")."""
    dims = {**entry.dev_config, **(overrides or {})}
    id2label = dict(enumerate(entry.labels))
    label_kwargs = {
        "num_labels": len(entry.labels),
        "id2label": id2label,
        "label2id": {v: k for k, v in id2label.items()},
    }
    if entry.architecture.startswith("Siglip"):
        config = transformers.SiglipConfig(
            vision_config=dims,
            text_config={
                "hidden_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 37,
            },
            **label_kwargs,
        )
    else:
        config = transformers.ViTConfig(**dims, **label_kwargs)
    torch.manual_seed(dev_seed(entry.id))
    return _model_class(entry.architecture)(config).eval()


@dataclass(frozen=True)
class Checkpoint:
    """A loaded HF model, its preprocessor config (``{}`` when there is none), its weights kind
    and where it came from."""

    model: torch.nn.Module
    preprocessor: dict[str, Any]
    weights: str  # "pretrained" | "dev"
    origin: str


def load_checkpoint(
    entry: CatalogEntry,
    location: str | None,
    *,
    offline: bool,
    dev_overrides: dict[str, Any] | None,
    load_pretrained: Callable[[str], torch.nn.Module],
    build_dev: Callable[[CatalogEntry, dict[str, Any] | None], torch.nn.Module],
    auto_preprocessor: Any,
) -> Checkpoint:
    """``location`` as a local directory, else from the hub when reachable (and neither offline
    nor overridden), else the catalog architecture with seeded random weights (``dev``).
    ``auto_preprocessor`` is the transformers Auto* class of the preprocessor config."""
    if location and Path(location).is_dir():
        pre = Path(location) / "preprocessor_config.json"
        return Checkpoint(
            load_pretrained(location),
            json.loads(pre.read_text()) if pre.exists() else {},
            "pretrained",
            f"dir:{Path(location).resolve()}",
        )
    if location and not offline and dev_overrides is None and hub_reachable():
        model = load_pretrained(location)
        try:
            preprocessor = auto_preprocessor.from_pretrained(location).to_dict()
        except Exception:  # noqa: BLE001 - fall back to the catalog's spec, logged
            log.warning("no %s config for %s; using the catalog's", auto_preprocessor.__name__, location)
            preprocessor = {}
        return Checkpoint(model, preprocessor, "pretrained", f"hf:{location}")
    log.warning(
        "model hub unreachable or offline: building %s from its config with seeded "
        "random weights; its verdicts are NOT meaningful (weights=dev)",
        entry.id,
    )
    return Checkpoint(
        build_dev(entry, dev_overrides), {}, "dev", f"dev:{entry.architecture}(seed={dev_seed(entry.id)})"
    )


def hf_source_info(entry: CatalogEntry, checkpoint: Checkpoint, spec: Any) -> SourceInfo:
    """What an HF classifier export records: labels from the checkpoint's id2label (the catalog's
    when it has none), the fake class by name for pretrained weights (the catalog's for dev)."""
    id2label = {int(k): v for k, v in (checkpoint.model.config.id2label or {}).items()}
    pretrained = checkpoint.weights == "pretrained"
    return SourceInfo(
        model_id=entry.id,
        modality=entry.modality,
        source=checkpoint.origin,
        architecture=type(checkpoint.model).__name__,
        weights=checkpoint.weights,  # type: ignore[arg-type]
        labels=[id2label[i] for i in sorted(id2label)] or list(entry.labels),
        fake_index=_fake_index(id2label, entry.fake_index) if pretrained else entry.fake_index,
        output="logits",
        threshold=entry.threshold,
        input=spec,
        license=entry.license,
        versions={"torch": torch.__version__, "transformers": transformers.__version__},
    )


class HFImageSource:
    def __init__(
        self,
        entry: CatalogEntry,
        *,
        source: str | None = None,
        offline: bool = False,
        dev_overrides: dict[str, Any] | None = None,
    ) -> None:
        """``source``: a hub id or a local directory; None means the catalog's hub id."""
        spec = entry.input
        location = source or entry.hub_id
        checkpoint = load_checkpoint(
            entry,
            location,
            offline=offline,
            dev_overrides=dev_overrides,
            load_pretrained=_load_pretrained,
            build_dev=build_dev_model,
            auto_preprocessor=transformers.AutoImageProcessor,
        )
        self.model: torch.nn.Module = checkpoint.model
        processor_raw = checkpoint.preprocessor
        config = self.model.config
        vision = getattr(config, "vision_config", config)
        image_size = int(getattr(vision, "image_size", spec.size[0]))
        spec = _spec_from_processor(processor_raw, spec) if processor_raw else spec
        if spec.size != (image_size, image_size):
            spec = ImageInputSpec(**{**spec.__dict__, "size": (image_size, image_size)})
        self.info = hf_source_info(entry, checkpoint, spec)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model(pixel_values=torch.from_numpy(batch)).logits.numpy()

    def export_onnx(self, path: Path) -> None:
        height, width = self.info.input.size
        dummy = torch.zeros(2, 3, height, width)
        # dynamo=False: the TorchScript exporter is fast, writes one file and quantizes cleanly
        # ; the batch axis is the only dynamic one.
        torch.onnx.export(
            self.model,
            (dummy,),
            str(path),
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
