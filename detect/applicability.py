"""Media a model cannot judge: verdict ``NOT_APPLICABLE`` with a typed reason, never a score.

Beside ``NO_FACE`` (a face model found no face), a result says ``NOT_APPLICABLE`` when:

* ``too_small`` (pictures): the short side is under ``VERITY_MIN_IMAGE_SIDE`` pixels; a 224-pixel
  model would see it magnified many times, and what it scores is the upscaling, not the media;
* ``too_dark`` (pictures): the picture is near-black: its mean luma under
  ``VERITY_MIN_IMAGE_BRIGHTNESS`` (0–255) *and* its 99th percentile under four times that, so a
  dark photo with lit parts is still judged;
* ``no_speech`` (audio, and a video's audio track): every window's RMS level is under
  ``VERITY_SILENCE_DBFS``; a voice-cloning detector has nothing to judge in silence. The check is
  energy-based: it finds silence, not music or noise.
* ``too_short`` (text, ``detect/text.py``): under the model's ``min_tokens`` tokens.

Such a result has ``fake_probability: null``, ``raw_score: null``, a ``not_applicable`` block
(``reason``, ``message``, what was measured) and a warning with the same code. The model is not
called for pictures; for audio, the windows are scored as they stream and the scores dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from config import Settings

_LUMA = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)


def image_problem(image: Image.Image, pixels: np.ndarray, settings: Settings) -> dict[str, Any] | None:
    """The ``not_applicable`` block for a decoded picture, or None when it can be judged.
    ``pixels`` are the model-size uint8 pixels of it (HWC or CHW), already computed for the model."""
    width, height = image.size
    if min(width, height) < settings.min_image_side:
        return {
            "reason": "too_small",
            "message": f"the picture is {width}x{height}; pictures under {settings.min_image_side} pixels "
            "on the short side are not judged",
            "measured": {"width": width, "height": height, "min_side": settings.min_image_side},
        }
    rgb = pixels if pixels.shape[-1] == 3 else np.moveaxis(pixels, 0, -1)
    luma = rgb.reshape(-1, 3).astype(np.float32) @ _LUMA
    mean, p99 = float(luma.mean()), float(np.percentile(luma, 99))
    floor = settings.min_image_brightness
    if mean < floor and p99 < 4 * floor:
        return {
            "reason": "too_dark",
            "message": f"the picture is near-black (mean luma {mean:.1f} of 255, 99th percentile {p99:.1f}); "
            "nothing in it can be judged",
            "measured": {"mean_luma": round(mean, 2), "p99_luma": round(p99, 2), "min_brightness": floor},
        }
    return None


def window_levels_dbfs(windows: np.ndarray) -> np.ndarray:
    """RMS level of each (raw, not normalized) audio window in dBFS."""
    rms = np.sqrt(np.mean(np.square(windows.astype(np.float64)), axis=-1))
    return 20 * np.log10(np.maximum(rms, 1e-10))


def audio_problem(levels_dbfs: np.ndarray, settings: Settings) -> dict[str, Any] | None:
    """The ``not_applicable`` block when every window is silent, else None."""
    if len(levels_dbfs) == 0 or float(levels_dbfs.max()) >= settings.silence_dbfs:
        return None
    loudest = float(levels_dbfs.max())
    return {
        "reason": "no_speech",
        "message": f"the audio is silent (loudest window {max(loudest, -200):.1f} dBFS, under "
        f"{settings.silence_dbfs} dBFS): there is no voice to judge",
        "measured": {
            "loudest_window_dbfs": round(max(loudest, -200.0), 2),
            "silence_dbfs": settings.silence_dbfs,
        },
    }


def mark_not_applicable(result: dict[str, Any], problem: dict[str, Any]) -> dict[str, Any]:
    """Turn a result into NOT_APPLICABLE for ``problem`` (no probability, no timeline)."""
    result.update(
        verdict="NOT_APPLICABLE",
        fake_probability=None,
        raw_score=None,
        segments=[],
        not_applicable=problem,
    )
    result["warnings"].append({"code": problem["reason"], "message": problem["message"]})
    return result
