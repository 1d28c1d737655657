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
class AudioInputSpec:
    """How a decoded mono waveform becomes the model's input: resampled to ``sample_rate``, cut
    into ``window_s`` windows every ``hop_s`` seconds, each zero-mean/unit-variance normalized
    when the checkpoint's feature extractor says ``do_normalize`` (models/audio_features.py)."""

    sample_rate: int = 16_000
    window_s: float = 4.0
    hop_s: float = 2.0
    do_normalize: bool = True
    min_duration_s: float = 0.5

    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.sample_rate)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_s * self.sample_rate)

    @property
    def min_samples(self) -> int:
        return round(self.min_duration_s * self.sample_rate)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AudioInputSpec:
        spec = cls(
            sample_rate=int(raw.get("sample_rate", 16_000)),
            window_s=float(raw.get("window_s", 4.0)),
            hop_s=float(raw.get("hop_s", 2.0)),
            do_normalize=bool(raw.get("do_normalize", True)),
            min_duration_s=float(raw.get("min_duration_s", 0.5)),
        )
        if not (0 < spec.hop_s <= spec.window_s and 0 < spec.min_duration_s <= spec.window_s):
            raise ValueError(
                f"audio input needs 0 < hop_s <= window_s and 0 < min_duration_s <= window_s: {raw}"
            )
        return spec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


InputSpec = ImageInputSpec | AudioInputSpec


def input_spec_from_dict(modality: str, raw: dict[str, Any]) -> InputSpec:
    """The ``input`` table of a catalog entry (or stored metadata) for its modality."""
    return AudioInputSpec.from_dict(raw) if modality == "audio" else ImageInputSpec.from_dict(raw)


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
    # The modality's input spec: an ImageInputSpec for image entries, an AudioInputSpec for
    # audio ones (``audio`` gives the latter typed, None for other modalities).
    input: ImageInputSpec | AudioInputSpec
    license: str = ""
    dev_config: dict[str, Any] = field(default_factory=dict)

    @property
    def audio(self) -> AudioInputSpec | None:
        return self.input if isinstance(self.input, AudioInputSpec) else None

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
        input=input_spec_from_dict(raw["modality"], raw["input"]),
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
