"""Augmentations: the original's formulas, box validity (hypothesis), reproducibility."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd_keras.data.augment import (Augmentation, augment, color_jitter, horizontal_flip,
                                    pca_lighting, random_sized_crop, vertical_flip)

GRAY = np.array([0.299, 0.587, 0.114])


def mid_image(seed=0, shape=(40, 50, 3)):
    """Values in [60, 180]: moderate jitter never clips them."""
    return np.random.default_rng(seed).uniform(60, 180, shape).astype(np.float32)


def only(kind, var):
    return {"saturation_var": 0.0, "brightness_var": 0.0, "contrast_var": 0.0, kind: var}


def test_jitter_switched_off_is_identity():
    image = mid_image()
    np.testing.assert_array_equal(color_jitter(image.copy(), np.random.default_rng(0), 0, 0, 0),
                                  image)


def test_brightness_scales_by_its_own_range():
    # the original drew brightness from the saturation range; here 0.1 means [0.9, 1.1]
    image = mid_image()
    for seed in range(20):
        out = color_jitter(image.copy(), np.random.default_rng(seed), **only("brightness_var", 0.1))
        alpha = out[0, 0, 0] / image[0, 0, 0]
        assert 0.9 - 1e-6 <= alpha <= 1.1 + 1e-6
        np.testing.assert_allclose(out, image * alpha, rtol=1e-5)


def test_saturation_keeps_gray_and_scales_chroma():
    image = mid_image()
    out = color_jitter(image.copy(), np.random.default_rng(3), **only("saturation_var", 0.3))
    gray_in, gray_out = image @ GRAY, out @ GRAY
    np.testing.assert_allclose(gray_out, gray_in, atol=1e-3)
    chroma_in, chroma_out = image - gray_in[..., None], out - gray_out[..., None]
    alpha = chroma_out[0, 0, 0] / chroma_in[0, 0, 0]
    assert 0.7 - 1e-4 <= alpha <= 1.3 + 1e-4
    np.testing.assert_allclose(chroma_out, alpha * chroma_in, atol=2e-3)


def test_contrast_blends_with_the_mean_gray():
    image = mid_image()
    out = color_jitter(image.copy(), np.random.default_rng(5), **only("contrast_var", 0.4))
    mean_gray = float((image @ GRAY).mean())
    alpha = (out[0, 0, 0] - mean_gray) / (image[0, 0, 0] - mean_gray)
    assert 0.6 - 1e-4 <= alpha <= 1.4 + 1e-4
    np.testing.assert_allclose(out, alpha * image + (1 - alpha) * mean_gray, atol=2e-3)


def test_jitter_clips_to_pixel_range():
    image = np.full((8, 8, 3), 250.0, np.float32)
    out = color_jitter(image, np.random.default_rng(0), 0.0, 0.5, 0.0)
    assert out.max() <= 255.0 and out.min() >= 0.0


def test_pca_lighting_follows_the_colour_covariance():
    # a gray ramp varies only along (1, 1, 1): the noise must be a gray shift
    ramp = np.repeat(np.linspace(40, 200, 64, dtype=np.float32)[None, :, None], 16, axis=0)
    image = np.repeat(ramp, 3, axis=2)
    out = pca_lighting(image.copy(), np.random.default_rng(1), std=0.5)
    shift = out - image
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0, 0], shift.shape), atol=1e-3)
    np.testing.assert_allclose(shift[0, 0], shift[0, 0, 0], atol=1e-3)  # along (1, 1, 1)
    assert abs(shift[0, 0, 0]) > 0
    np.testing.assert_array_equal(pca_lighting(image.copy(), np.random.default_rng(1), 0.0),
                                  image)


def test_pca_lighting_matches_np_cov_formulation():
    image = mid_image(seed=4)
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    out = pca_lighting(image.copy(), rng_a, std=0.3)
    cov = np.cov(image.reshape(-1, 3) / 255.0, rowvar=False)  # the original's computation
    eigval, eigvec = np.linalg.eigh(cov)
    noise = eigvec.dot(eigval * rng_b.standard_normal(3) * 0.3) * 255
    np.testing.assert_allclose(out, np.clip(image + noise, 0, 255), atol=1e-3)


def test_flips_map_boxes_and_are_involutions():
    image = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    boxes = np.array([[0.1, 0.2, 0.4, 0.9]])
    flipped, fboxes = horizontal_flip(image, boxes)
    np.testing.assert_array_equal(flipped[:, 0], image[:, -1])
    np.testing.assert_allclose(fboxes, [[0.6, 0.2, 0.9, 0.9]])
    np.testing.assert_allclose(horizontal_flip(flipped, fboxes)[1], boxes)
    flipped, fboxes = vertical_flip(image, boxes)
    np.testing.assert_array_equal(flipped[0], image[-1])
    np.testing.assert_allclose(fboxes, [[0.1, 0.1, 0.4, 0.8]])
    np.testing.assert_allclose(vertical_flip(flipped, fboxes)[1], boxes)


box_lists = st.lists(st.tuples(st.floats(0, 0.9), st.floats(0, 0.9), st.floats(0.02, 1),
                               st.floats(0.02, 1)).map(
    lambda t: [t[0], t[1], min(1.0, t[0] + t[2]), min(1.0, t[1] + t[3])]), max_size=6)


@settings(max_examples=60, deadline=None)
@given(box_lists, st.integers(0, 2**32 - 1), st.integers(20, 90), st.integers(20, 90))
def test_random_sized_crop_keeps_valid_boxes_whose_centres_are_inside(boxes, seed, h, w):
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    image = np.zeros((h, w, 3), np.uint8)
    window, cropped, kept = random_sized_crop(image, boxes, np.random.default_rng(seed))
    wh, ww = window.shape[:2]
    assert 0 < wh <= h and 0 < ww <= w
    assert len(cropped) == len(kept)
    assert (cropped >= 0).all() and (cropped <= 1).all()
    assert (cropped[:, 2] > cropped[:, 0]).all() and (cropped[:, 3] > cropped[:, 1]).all()
    # the window's offset is recovered from the view into the image
    y0 = (window.__array_interface__["data"][0] - image.__array_interface__["data"][0]) // (
        w * 3)
    x0 = (window.__array_interface__["data"][0] - image.__array_interface__["data"][0]) % (
        w * 3) // 3
    centres = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    inside = ((centres[:, 0] > x0 / w) & (centres[:, 0] < (x0 + ww) / w)
              & (centres[:, 1] > y0 / h) & (centres[:, 1] < (y0 + wh) / h))
    assert kept.tolist() == np.flatnonzero(inside).tolist()
    expected = np.clip((boxes[kept] * [w, h, w, h] - [x0, y0, x0, y0]) / [ww, wh, ww, wh], 0, 1)
    np.testing.assert_allclose(cropped, expected, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(box_lists, st.integers(0, 2**32 - 1))
def test_augment_output_is_valid_and_reproducible(boxes, seed):
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    image = np.random.default_rng(seed % 1000).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    config = Augmentation(vflip_prob=0.5)
    out, out_boxes, kept = augment(image, boxes, np.random.default_rng(seed), (48, 64), config)
    again = augment(image, boxes, np.random.default_rng(seed), (48, 64), config)
    assert out.shape == (48, 64, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255
    np.testing.assert_array_equal(out, again[0])
    np.testing.assert_array_equal(out_boxes, again[1])
    assert len(out_boxes) == len(kept) <= len(boxes)
    assert (out_boxes >= 0).all() and (out_boxes <= 1).all()
    assert (out_boxes[:, 2] > out_boxes[:, 0]).all() and (out_boxes[:, 3] > out_boxes[:, 1]).all()


def test_augment_without_config_only_resizes():
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    boxes = np.array([[0.1, 0.2, 0.3, 0.4]])
    out, out_boxes, kept = augment(image, boxes, np.random.default_rng(0), (30, 40), None)
    np.testing.assert_array_equal(out, cv2.resize(image, (40, 30)).astype(np.float32))
    np.testing.assert_array_equal(out_boxes, boxes)
    assert kept.tolist() == [0]


@pytest.mark.parametrize("kwargs", [{"saturation_var": 1.5}, {"hflip_prob": -0.1},
                                    {"lighting_std": -1}, {"crop_area_range": (0.0, 1.0)},
                                    {"crop_area_range": (0.9, 0.8)},
                                    {"aspect_ratio_range": (2.0, 1.0)}])
def test_bad_augmentation_settings_raise(kwargs):
    with pytest.raises(ValueError):
        Augmentation(**kwargs)
