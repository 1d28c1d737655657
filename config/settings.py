"""The one settings class (SPEC §9): every knob comes from a ``VERITY_*`` environment variable."""

from __future__ import annotations

import functools
import json
import os
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VERITY_", env_file=None, extra="ignore")

    environment: Literal["development", "production", "test"] = "development"
    log_level: str = "INFO"
    log_json: bool = True

    # Models -----------------------------------------------------------------------------
    image_model: str = Field("vit-dima806", description="catalog id of the default image model")
    image_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="catalog ids served as image detectors; the default model is always served",
    )
    precision: Literal["fp32", "int8"] = Field("fp32", description="which stored export to serve")
    ort_intra_op_threads: int = Field(0, ge=0, description="0 = one per CPU core")
    ort_inter_op_threads: int = Field(1, ge=1)
    batch_max_size: int = Field(32, ge=2)
    # BentoML sheds a queued request (503 + Retry-After) once its expected wait plus run time
    # passes this. One full-size ViT image takes 0.2-0.3 s on 2 CPU cores, so 32 concurrent
    # requests need ~10 s; 200 ms rejected nearly everything past concurrency 1 (bench/image.py).
    batch_max_latency_ms: int = Field(
        30_000, ge=1, description="load shedding: longest a request may wait for its batch"
    )
    uncertain_band: float = Field(0.05, ge=0.0, lt=0.5, description="|p - threshold| below this is UNCERTAIN")

    # Media limits (SPEC §6) ---------------------------------------------------------------
    max_image_bytes: int = Field(10 * MB, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1, description="width*height cap (bombs)")
    max_json_body_bytes: int = Field(1 * MB, ge=1, description="cap for non-media requests")

    @field_validator("image_models", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        # Accept "a,b" as well as a JSON list so the variable is easy to set by hand.
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @property
    def served_image_models(self) -> list[str]:
        """The default model first, then any extra ones, without duplicates."""
        ordered = [self.image_model, *self.image_models]
        return list(dict.fromkeys(ordered))

    @property
    def intra_op_threads(self) -> int:
        return self.ort_intra_op_threads or (os.cpu_count() or 1)


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
