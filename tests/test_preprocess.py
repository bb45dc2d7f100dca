"""The shared preprocessing function against torchvision's own transforms (the starter's pipeline).
Bit-for-bit equality on real photos and on every awkward image mode the server accepts.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from flower_classifier.model.preprocess import (
    IMAGENET_STD,
    RESIZED_PIXELS_LIMIT,
    Preprocessing,
    preprocess,
    to_rgb,
)


@pytest.fixture(scope="module")
def seed_transform():
    T = torchvision.transforms
    return T.Compose([T.Resize(255), T.CenterCrop(224), T.ToTensor(),
                      T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])


def test_matches_seed_pipeline_exactly_on_real_photos(photos, seed_transform):
    for path in photos:
        image = Image.open(path).convert("RGB")
        assert torch.equal(preprocess(image), seed_transform(image)), path.name


@pytest.mark.parametrize("size", [(224, 224), (255, 255), (256, 1000), (1000, 256), (300, 301),
                                  (1, 1), (40, 2000), (2000, 40), (225, 224)])
def test_matches_seed_pipeline_on_odd_sizes(seed_transform, size):
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    out = preprocess(image)
    assert out.shape == (3, 224, 224)
    assert torch.equal(out, seed_transform(image))


def test_other_normalisation_travels_in_the_spec(photos):
    T = torchvision.transforms
    spec = Preprocessing(resize=256, crop=224, mean=(0.5, 0.25, 0.75), std=(0.5, 0.2, 0.3))
    seed = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                      T.Normalize(spec.mean, spec.std)])
    image = Image.open(photos[0]).convert("RGB")
    assert torch.equal(preprocess(image, spec), seed(image))
    rows, cols = np.indices((256, 256))  # 256 x 256: not resampled, and its centre crop
    every_level = Image.fromarray(  # holds every 8-bit level in every channel
        np.stack([(rows + cols + 85 * c) % 256 for c in range(3)], axis=-1).astype(np.uint8))
    assert all(len(np.unique(np.asarray(every_level)[16:240, 16:240, c])) == 256 for c in range(3))
    assert torch.equal(preprocess(every_level, spec), seed(every_level))
    assert Preprocessing.from_dict(spec.to_dict()) == spec


def test_invalid_spec_is_refused():
    with pytest.raises(ValueError, match="crop"):
        Preprocessing(resize=200, crop=224)


def _roundtrip(image: Image.Image, fmt: str, **kw) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return Image.open(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "RGBA", "LA", "I", "I;16", "F",
                                  "YCbCr"])
def test_every_mode_becomes_rgb(mode):
    base = Image.new("RGB", (40, 30), (10, 200, 90))
    if mode == "I;16":
        image = Image.fromarray(np.full((30, 40), 40000, dtype=np.uint16))
    else:
        image = base.convert(mode)
    out = to_rgb(image)
    assert out.mode == "RGB" and out.size == (40, 30)
    if mode == "I;16":
        assert out.getpixel((0, 0)) == (156, 156, 156)  # 40000/65535 of full scale


def test_16_bit_png_is_scaled_not_clipped():
    array = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    image = _roundtrip(Image.fromarray(array), "PNG")
    out = np.asarray(to_rgb(image))[..., 0]
    assert out.min() == 0 and out.max() == 255 and len(np.unique(out)) > 200


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert to_rgb(image).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.info["transparency"] = 0
    assert to_rgb(palette).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (60, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 20))  # white stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    rotated = to_rgb(_roundtrip(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert rotated.size == (20, 60)
    assert sum(rotated.getpixel((10, 3))) > 600  # the stripe is now at the top


@pytest.mark.parametrize("size", [(1500, 3), (2, 1200), (4000, 1), (3, 2000)])
def test_extreme_aspect_ratios_stay_cheap_and_within_two_levels(seed_transform, size):
    """Past RESIZED_PIXELS_LIMIT only the crop is resampled: the starter's pixels within
    +/-2/255."""
    width, height = size
    assert 255 * int(255 * max(size) / min(size)) > RESIZED_PIXELS_LIMIT
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    fast, full = preprocess(image), seed_transform(image)
    levels = (fast - full).abs() * torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255
    assert fast.shape == full.shape and levels.max().item() <= 2.1


@pytest.mark.parametrize("arch", ["vgg16", "resnet50", "efficientnet_b0", "inception_v3",
                                  "swin_t", "vit_b_16"])
def test_equals_each_architectures_own_eval_transforms_bit_for_bit(photos, arch):
    """The one preprocessing function against torchvision's `weights.transforms()` (resize,
    crop, bilinear or bicubic, mean and std of each architecture's weights)."""
    from flower_classifier.model.architectures import preprocessing_for

    spec = preprocessing_for(arch)
    preset = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
    for path in photos[:4]:
        image = Image.open(path).convert("RGB")
        assert torch.equal(preprocess(image, spec), preset(image)), (arch, path.name)


def test_equals_transforms_v2_within_float_rounding(photos):
    """transforms.v2's ToDtype(scale=True) multiplies by 1/255 where ToTensor divides by 255:
    the same pixels, within 1e-6 after Normalize (measured: at most 7.2e-7)."""
    from torchvision.transforms import v2

    spec = Preprocessing(resize=256, crop=224, interpolation="bicubic")
    pipeline = v2.Compose([v2.Resize(256, interpolation=v2.InterpolationMode.BICUBIC),
                           v2.CenterCrop(224), v2.PILToTensor(),
                           v2.ToDtype(torch.float32, scale=True),
                           v2.Normalize(spec.mean, spec.std)])
    for path in photos[:4]:
        image = Image.open(path).convert("RGB")
        assert (preprocess(image, spec) - pipeline(image)).abs().max().item() < 1e-6
