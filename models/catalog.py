"""The declarative model catalog (``models/catalog.toml``) as typed objects."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

CATALOG_PATH = Path(__file__).with_name("catalog.toml")

Modality = Literal["image", "video-encoder", "video-head", "audio", "text"]
Resample = Literal["nearest", "bilinear", "bicubic", "lanczos"]


@dataclass(frozen=True)
class ImageInputSpec:
    """How a decoded RGB picture becomes the model's input tensor."""

    size: tuple[int, int]  # (height, width)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    resample: Resample = "bilinear"
    rescale: float = 1 / 255
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ImageInputSpec:
        return cls(
            size=(int(raw["size"][0]), int(raw["size"][1])),
            layout=raw.get("layout", "NCHW"),
            resample=raw.get("resample", "bilinear"),
            rescale=float(raw.get("rescale", 1 / 255)),
            mean=tuple(float(v) for v in raw.get("mean", (0.0, 0.0, 0.0))),  # type: ignore[arg-type]
            std=tuple(float(v) for v in raw.get("std", (1.0, 1.0, 1.0))),  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["size"] = list(self.size)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    modality: Modality
    source: str
    architecture: str
    threshold: float
    labels: tuple[str, ...]
    fake_index: int
    output: Literal["logits", "probabilities"]
    input: ImageInputSpec
    license: str = ""
    dev_config: dict[str, Any] = field(default_factory=dict)

    @property
    def hub_id(self) -> str | None:
        return self.source.removeprefix("hf:") if self.source.startswith("hf:") else None


def _entry(model_id: str, raw: dict[str, Any]) -> CatalogEntry:
    return CatalogEntry(
        id=model_id,
        modality=raw["modality"],
        source=raw["source"],
        architecture=raw["architecture"],
        threshold=float(raw["threshold"]),
        labels=tuple(raw["labels"]),
        fake_index=int(raw["fake_index"]),
        output=raw.get("output", "logits"),
        input=ImageInputSpec.from_dict(raw["input"]),
        license=raw.get("license", ""),
        dev_config=dict(raw.get("dev", {})),
    )


@functools.lru_cache(maxsize=1)
def load_catalog(path: Path = CATALOG_PATH) -> dict[str, CatalogEntry]:
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    return {model_id: _entry(model_id, spec) for model_id, spec in raw["models"].items()}


def get_entry(model_id: str) -> CatalogEntry:
    catalog = load_catalog()
    try:
        return catalog[model_id]
    except KeyError:
        raise KeyError(f"unknown model {model_id!r}; catalog has {sorted(catalog)}") from None
