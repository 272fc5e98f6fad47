"""ADM centre crop: geometry checked against the same steps spelled out with plain PIL calls."""
import numpy as np
import pytest
from PIL import Image

from pixeldit.infra.images import center_crop_arr


def _noise_image(width, height, mode="RGB", seed=0):
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    shape = (height, width, channels) if channels else (height, width)
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


def test_large_landscape_image_is_box_halved_twice_then_bicubic_then_centre_cropped():
    image = _noise_image(1000, 600)
    # 600 >= 256 -> 500x300; 300 >= 256 -> 250x150; 150 < 256 stops. Scale 128/150: 250 -> round(213.3) = 213.
    expected = image.resize((500, 300), Image.Resampling.BOX).resize((250, 150), Image.Resampling.BOX)
    expected = np.asarray(expected.resize((213, 128), Image.Resampling.BICUBIC))[:, 42:42 + 128]
    result = center_crop_arr(image, 128)
    assert result.shape == (128, 128, 3) and result.dtype == np.uint8
    np.testing.assert_array_equal(result, expected)


def test_small_portrait_image_is_upsampled_without_halving():
    image = _noise_image(20, 30, seed=1)
    # Short side 20 -> 32 (scale 1.6): 20x30 -> 32x48, crop rows (48 - 32) // 2 = 8.
    expected = np.asarray(image.resize((32, 48), Image.Resampling.BICUBIC))[8:40]
    np.testing.assert_array_equal(center_crop_arr(image, 32), expected)


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_any_mode_becomes_rgb(mode):
    image = _noise_image(40, 50, mode=mode, seed=2)
    assert center_crop_arr(image, 16).shape == (16, 16, 3)


def test_resolution_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        center_crop_arr(_noise_image(8, 8), 0)
