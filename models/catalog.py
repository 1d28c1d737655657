"""The declarative model catalog (``models/catalog.toml``) as typed objects."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

CATALOG_PATH = Path(__file__).with_name("catalog.toml")

Modality = Literal["image", "video-encoder", "video-head", "audio", "text", "faces"]
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


@dataclass(frozen=True)
class SequenceInputSpec:
    """What a video head (``video-head``) takes: sequences of ``feature_dim`` encoder features,
    one per sampled frame, cut into windows of ``seq_len`` frames every ``stride`` frames
    (models/temporal.py). ``feature_dim`` is 0 in the catalog ("read from the model"); export
    stores the real one."""

    seq_len: int = 10
    stride: int = 5
    feature_dim: int = 0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SequenceInputSpec:
        spec = cls(
            seq_len=int(raw.get("seq_len", 10)),
            stride=int(raw.get("stride", 5)),
            feature_dim=int(raw.get("feature_dim", 0)),
        )
        # A stride past the window would leave frames no window sees.
        if not (spec.seq_len >= 1 and 1 <= spec.stride <= spec.seq_len and spec.feature_dim >= 0):
            raise ValueError(f"video head input needs seq_len >= 1 and 1 <= stride <= seq_len: {raw}")
        return spec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TextInputSpec:
    """How a text becomes a text classifier's input (``models/text_tokens.py``): windows of
    ``max_tokens`` tokens, the model's ``<s>`` (``bos_id``) and ``</s>`` (``eos_id``) included,
    overlapping by ``overlap_tokens``; a text under ``min_tokens`` tokens is not judged. Export
    stores the checkpoint's special-token ids and caps ``max_tokens`` at its positions."""

    max_tokens: int = 512
    overlap_tokens: int = 128
    min_tokens: int = 24
    bos_id: int = 0
    eos_id: int = 2

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TextInputSpec:
        spec = cls(
            max_tokens=int(raw.get("max_tokens", 512)),
            overlap_tokens=int(raw.get("overlap_tokens", 128)),
            min_tokens=int(raw.get("min_tokens", 24)),
            bos_id=int(raw.get("bos_id", 0)),
            eos_id=int(raw.get("eos_id", 2)),
        )
        # A window holds max_tokens - 2 text tokens; the overlap must leave it a stride of one or more.
        if not (
            spec.max_tokens >= 4 and 0 <= spec.overlap_tokens <= spec.max_tokens - 3 and spec.min_tokens >= 1
        ):
            raise ValueError(
                f"text input needs max_tokens >= 4 and 0 <= overlap_tokens <= max_tokens - 3: {raw}"
            )
        return spec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


InputSpec = ImageInputSpec | AudioInputSpec | SequenceInputSpec | TextInputSpec


def input_spec_from_dict(modality: str, raw: dict[str, Any]) -> InputSpec:
    """The ``input`` table of a catalog entry (or stored metadata) for its modality."""
    if modality == "text":
        return TextInputSpec.from_dict(raw)
    if modality == "audio":
        return AudioInputSpec.from_dict(raw)
    if modality == "video-head":
        return SequenceInputSpec.from_dict(raw)
    return ImageInputSpec.from_dict(raw)


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    modality: Modality
    source: str
    architecture: str
    threshold: float
    labels: tuple[str, ...]
    fake_index: int
    # "features": a video encoder, whose output is a feature vector for its head, not a verdict.
    output: Literal["logits", "probabilities", "features"]
    # The modality's input spec: an ImageInputSpec for image entries and video encoders, an
    # AudioInputSpec for audio ones, a SequenceInputSpec for video heads (``audio`` and
    # ``sequence`` give the latter two typed, None for other modalities).
    input: InputSpec
    license: str = ""
    dev_config: dict[str, Any] = field(default_factory=dict)
    # Video models come in pairs exported together: a head names its encoder, an encoder its head.
    pair: str | None = None

    @property
    def audio(self) -> AudioInputSpec | None:
        return self.input if isinstance(self.input, AudioInputSpec) else None

    @property
    def text(self) -> TextInputSpec | None:
        return self.input if isinstance(self.input, TextInputSpec) else None

    @property
    def sequence(self) -> SequenceInputSpec | None:
        return self.input if isinstance(self.input, SequenceInputSpec) else None

    @property
    def hub_id(self) -> str | None:
        return self.source.removeprefix("hf:") if self.source.startswith("hf:") else None


def _entry(model_id: str, raw: dict[str, Any], models: dict[str, Any]) -> CatalogEntry:
    # A video encoder gives no verdict itself: it carries its head's labels, fake index and
    # threshold, so that every stored model describes the verdict rule of what it serves.
    pair = raw.get("encoder") or raw.get("head")
    verdict = models[raw["head"]] if raw["modality"] == "video-encoder" else raw
    return CatalogEntry(
        id=model_id,
        modality=raw["modality"],
        source=raw["source"],
        architecture=raw["architecture"],
        threshold=float(verdict["threshold"]),
        labels=tuple(verdict["labels"]),
        fake_index=int(verdict["fake_index"]),
        output=raw.get("output", "logits"),
        input=input_spec_from_dict(raw["modality"], raw["input"]),
        license=raw.get("license", ""),
        dev_config=dict(raw.get("dev", {})),
        pair=pair,
    )


@functools.lru_cache(maxsize=1)
def load_catalog(path: Path = CATALOG_PATH) -> dict[str, CatalogEntry]:
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    models = raw["models"]
    return {model_id: _entry(model_id, spec, models) for model_id, spec in models.items()}


def get_entry(model_id: str) -> CatalogEntry:
    catalog = load_catalog()
    try:
        return catalog[model_id]
    except KeyError:
        raise KeyError(f"unknown model {model_id!r}; catalog has {sorted(catalog)}") from None
