"""Normalize and PriorBox against hand-computed values and a loop reference."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd_keras.ssd_layers import Normalize, PriorBox


def loop_priors(img_w, img_h, feat_w, feat_h, sizes, variances, clip=True):
    """One prior at a time, as the original describes it: cells row-major, then each size."""
    rows = []
    step_x, step_y = img_w / feat_w, img_h / feat_h
    for j in range(feat_h):
        for i in range(feat_w):
            cx = 0.5 * step_x + i * (img_w - step_x) / max(feat_w - 1, 1)
            cy = 0.5 * step_y + j * (img_h - step_y) / max(feat_h - 1, 1)
            for w, h in sizes:
                box = [(cx - w / 2) / img_w, (cy - h / 2) / img_h,
                       (cx + w / 2) / img_w, (cy + h / 2) / img_h]
                if clip:
                    box = [min(max(v, 0.0), 1.0) for v in box]
                rows.append(box + list(variances))
    return np.array(rows)


def run_layer(layer, feature_shape, batch=1):
    return keras.ops.convert_to_numpy(layer(np.zeros((batch,) + feature_shape, "float32")))


# --- Normalize ---------------------------------------------------------------------------------

def test_normalize_matches_numpy_l2():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype("float32")
    layer = Normalize(20.0)
    y = keras.ops.convert_to_numpy(layer(x))
    expected = x / np.sqrt((x ** 2).sum(axis=-1, keepdims=True)) * 20.0
    np.testing.assert_allclose(y, expected, rtol=1e-5)
    assert len(layer.weights) == 1
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.gamma), np.full(5, 20.0))


def test_normalize_gamma_is_per_channel_and_zero_vectors_stay_finite():
    layer = Normalize(1.0)
    x = np.zeros((1, 1, 2, 3), "float32")
    x[0, 0, 1] = [3.0, 4.0, 0.0]
    layer.build(x.shape)
    layer.gamma.assign([1.0, 2.0, 3.0])
    y = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_array_equal(y[0, 0, 0], [0.0, 0.0, 0.0])  # epsilon: no NaN
    np.testing.assert_allclose(y[0, 0, 1], [0.6, 1.6, 0.0], rtol=1e-6)


def test_normalize_config_round_trip():
    layer = Normalize(7.5, name="n")
    clone = Normalize.from_config(layer.get_config())
    assert clone.scale == 7.5 and clone.name == "n"


# --- PriorBox ----------------------------------------------------------------------------------

@pytest.mark.parametrize("max_size, ratios, flip, expected", [
    (None, [2.0], True, [1.0, 2.0, 0.5]),
    (114.0, [2.0, 3.0], True, [1.0, 1.0, 2.0, 0.5, 3.0, 1 / 3]),
    (114.0, [2.0, 3.0], False, [1.0, 1.0, 2.0, 3.0]),
    (None, [1.0, 2.0, 2.0], True, [1.0, 2.0, 0.5]),  # present ratios are skipped
    (None, None, True, [1.0]),
])
def test_prior_box_ratio_list(max_size, ratios, flip, expected):
    layer = PriorBox((300, 300), 30.0, max_size, ratios, flip=flip)
    np.testing.assert_allclose(layer.aspect_ratios, expected)
    assert layer.num_priors == len(expected)


def test_prior_box_hand_computed_2x2_grid():
    # 300x200 image, 2x2 feature map: steps 150 x 100, centres x in {75, 225}, y in {50, 150}.
    layer = PriorBox((300, 200), 100.0, 400.0, [4.0], flip=False, variances=[0.1, 0.1, 0.2, 0.2],
                     clip=False)
    out = run_layer(layer, (2, 2, 8))
    assert out.shape == (1, 2 * 2 * 3, 8)
    # cell (x=1, y=0) is the second cell; its priors are rows 3, 4, 5.
    cx, cy = 225.0, 50.0
    expected = [
        [cx - 50, cy - 50, cx + 50, cy + 50],           # min_size square
        [cx - 100, cy - 100, cx + 100, cy + 100],       # sqrt(100 * 400) = 200 square
        [cx - 100, cy - 25, cx + 100, cy + 25],         # ratio 4: 200 wide, 50 high
    ]
    expected = np.array(expected) / [300, 200, 300, 200]
    np.testing.assert_allclose(out[0, 3:6, :4], expected, atol=1e-6)
    np.testing.assert_allclose(out[0, :, 4:], np.tile([0.1, 0.1, 0.2, 0.2], (12, 1)), atol=1e-7)
    assert out.min() < 0 and out[0, :, :4].max() > 1  # clip=False is honoured


def test_prior_box_clips_and_repeats_single_variance():
    out = run_layer(PriorBox((300, 300), 200.0, variances=[0.1]), (2, 2, 8))  # overhangs
    assert out[..., :4].min() == 0.0 and out[..., :4].max() <= 1.0
    np.testing.assert_allclose(out[0, :, 4:], 0.1)


def test_prior_box_tiles_to_dynamic_batch():
    inputs = keras.Input((5, 5, 4))
    model = keras.Model(inputs, PriorBox((300, 300), 60.0, 114.0, [2.0, 3.0])(inputs))
    out = model.predict(np.zeros((3, 5, 5, 4), "float32"), verbose=0)
    assert out.shape == (3, 150, 8)
    np.testing.assert_array_equal(out[0], out[2])


@pytest.mark.parametrize("kwargs, message", [
    ({"min_size": 0.0}, "min_size"),
    ({"min_size": -3.0}, "min_size"),
    ({"min_size": 60.0, "max_size": 30.0}, "max_size"),
    ({"min_size": 30.0, "variances": [0.1, 0.2]}, "variances"),
])
def test_prior_box_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PriorBox((300, 300), **kwargs)


def test_prior_box_config_round_trip():
    layer = PriorBox((300, 200), 60.0, 114.0, [2.0, 3.0], flip=False, variances=[0.1, 0.1, 0.2, 0.2],
                     clip=False, name="p")
    clone = PriorBox.from_config(layer.get_config())
    np.testing.assert_array_equal(run_layer(clone, (3, 4, 2)), run_layer(layer, (3, 4, 2)))


@settings(max_examples=25, deadline=None)
@given(feat_w=st.integers(1, 6), feat_h=st.integers(1, 6), min_size=st.floats(5, 200),
       extra=st.one_of(st.none(), st.floats(0, 150)),
       ratios=st.lists(st.sampled_from([2.0, 3.0, 0.25]), max_size=2, unique=True),
       flip=st.booleans(), clip=st.booleans())
def test_prior_box_matches_loop_reference(feat_w, feat_h, min_size, extra, ratios, flip, clip):
    max_size = None if extra is None else min_size + extra
    sizes = [(min_size, min_size)]
    if max_size:
        sizes.append((math.sqrt(min_size * max_size),) * 2)
    for r in ratios:  # no ratio here is another's inverse, so none is skipped
        for ratio in ([r, 1 / r] if flip else [r]):
            sizes.append((min_size * math.sqrt(ratio), min_size / math.sqrt(ratio)))
    layer = PriorBox((320, 240), min_size, max_size, ratios, flip=flip, clip=clip,
                     variances=[0.1, 0.1, 0.2, 0.2])
    out = run_layer(layer, (feat_h, feat_w, 3))[0]
    expected = loop_priors(320, 240, feat_w, feat_h, sizes,
                           [0.1, 0.1, 0.2, 0.2], clip)
    assert layer.num_priors == len(sizes)
    np.testing.assert_allclose(out, expected, atol=1e-6)
