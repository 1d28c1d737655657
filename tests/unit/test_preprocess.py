"""models/preprocess.py equals the HF image processors of the catalog's checkpoints.

The reference is transformers' PIL/numpy backend (``*ImageProcessorPil``, the "slow" processors;
torchvision is not installed), built from each catalog entry's input spec. Both sides resize the
uint8 picture with the same PIL filter and then rescale/normalize in float32, so they agree to
float32 rounding: the stated tolerance is ``ATOL = 1e-5`` (observed ~1.2e-7).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from transformers.image_utils import PILImageResampling
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

from models.catalog import ImageInputSpec, get_entry
from models.preprocess import preprocess_batch, preprocess_image
from tests.media_factory import photo

pytestmark = pytest.mark.unit

ATOL = 1e-5

PROCESSORS = {"vit-dima806": ViTImageProcessorPil, "siglip-open-deepfake": SiglipImageProcessorPil}


def _noisy(width: int, height: int, seed: int) -> Image.Image:
    """Uniform noise: every pixel differs from its neighbours, the worst case for a resize filter."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8), mode="RGB")


# Different sizes and aspect ratios: landscape, portrait, tiny, huge-ish, odd sizes, upscaling,
# and one already at the model size (no resize on either side).
IMAGES = {
    "landscape-320x240": lambda: photo(320, 240, seed=0),
    "wide-640x360": lambda: photo(640, 360, seed=1),
    "portrait-97x501": lambda: photo(97, 501, seed=2),
    "small-upscaled-50x37": lambda: photo(50, 37, seed=3),
    "large-1031x777": lambda: photo(1031, 777, seed=4),
    "noise-300x211": lambda: _noisy(300, 211, seed=5),
    "exact-224x224": lambda: photo(224, 224, seed=6),
}


def _reference_processor(spec: ImageInputSpec, cls=ViTImageProcessorPil):
    """The HF processor configured from a catalog input spec."""
    return cls(
        do_resize=True,
        size={"height": spec.size[0], "width": spec.size[1]},
        resample=PILImageResampling[spec.resample.upper()],
        do_rescale=True,
        rescale_factor=spec.rescale,
        do_normalize=True,
        image_mean=list(spec.mean),
        image_std=list(spec.std),
    )


def _reference(processor, image: Image.Image) -> np.ndarray:
    return processor(images=image, return_tensors="np")["pixel_values"][0]


@pytest.mark.parametrize("model_id", sorted(PROCESSORS))
def test_catalog_spec_is_the_checkpoint_processor_default(model_id):
    """The catalog's numbers are the processor's own defaults for these checkpoints
    (ViT: bilinear 224, SigLIP: bicubic 224, both mean/std 0.5, rescale 1/255)."""
    from models.export.hf import _spec_from_processor

    spec = get_entry(model_id).input
    default = PROCESSORS[model_id]()
    assert default.size == {"height": spec.size[0], "width": spec.size[1]}
    assert PILImageResampling(default.resample).name.lower() == spec.resample
    assert default.rescale_factor == pytest.approx(spec.rescale)
    assert tuple(default.image_mean) == spec.mean
    assert tuple(default.image_std) == spec.std
    assert default.do_rescale and default.do_normalize and default.do_resize
    # What export derives from a checkpoint's preprocessor_config.json is the same spec again.
    as_json = json.loads(default.to_json_string())
    assert _spec_from_processor(as_json, ImageInputSpec(size=(1, 1))) == spec


@pytest.mark.parametrize("image_name", sorted(IMAGES))
@pytest.mark.parametrize("model_id", sorted(PROCESSORS))
def test_preprocess_equals_hf_processor(model_id, image_name):
    spec = get_entry(model_id).input
    image = IMAGES[image_name]()
    expected = _reference(_reference_processor(spec, PROCESSORS[model_id]), image)
    ours = preprocess_image(image, spec)
    assert ours.dtype == np.float32
    assert ours.shape == expected.shape == (3, *spec.size)
    assert ours.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=ATOL)
    # mean/std 0.5 maps [0, 255] onto [-1, 1].
    assert ours.min() >= -1.0 - ATOL and ours.max() <= 1.0 + ATOL


def test_comparison_is_sensitive_to_the_resample_filter():
    """Guard against a vacuous test: the wrong filter is far outside the tolerance."""
    spec = get_entry("siglip-open-deepfake").input  # bicubic
    wrong = ImageInputSpec(**{**spec.__dict__, "resample": "bilinear"})
    image = IMAGES["noise-300x211"]()
    expected = _reference(_reference_processor(spec, SiglipImageProcessorPil), image)
    assert np.abs(preprocess_image(image, wrong) - expected).max() > 100 * ATOL


def test_keras_spec_is_nhwc_with_the_same_values():
    """keras-cnn: NHWC, rescale 1/255, no mean/std shift; the same numbers as the HF pipeline
    configured alike, only channels-last."""
    spec = get_entry("keras-cnn").input
    assert spec.layout == "NHWC"
    image = IMAGES["wide-640x360"]()
    ours = preprocess_image(image, spec)
    assert ours.shape == (*spec.size, 3)
    assert ours.dtype == np.float32 and ours.flags["C_CONTIGUOUS"]
    expected_nchw = _reference(_reference_processor(spec), image)
    np.testing.assert_allclose(ours, expected_nchw.transpose(1, 2, 0), rtol=0, atol=ATOL)
    assert ours.min() >= 0.0 and ours.max() <= 1.0
    # Same spec in NCHW is exactly the transpose.
    nchw = ImageInputSpec(**{**spec.__dict__, "layout": "NCHW"})
    np.testing.assert_array_equal(preprocess_image(image, nchw), ours.transpose(2, 0, 1))


def test_batch_stacks_items_in_order():
    spec = get_entry("vit-dima806").input
    images = [IMAGES[name]() for name in ("landscape-320x240", "portrait-97x501", "exact-224x224")]
    batch = preprocess_batch(images, spec)
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == np.float32
    for i, image in enumerate(images):
        np.testing.assert_array_equal(batch[i], preprocess_image(image, spec))


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P"])
def test_non_rgb_input_is_refused(mode):
    """Mode conversion belongs to media decoding; preprocessing never guesses."""
    with pytest.raises(ValueError, match="expected an RGB image"):
        preprocess_image(Image.new(mode, (10, 10)), get_entry("vit-dima806").input)
