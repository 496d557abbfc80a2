"""SSD300: layer names and shapes of the original port, its 7308 priors, width multiplier, saving."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from ssd_keras.ssd import SSD300, prior_boxes
from tests.conftest import assert_same_detections

# Kernel shapes of the original port at width 1.0 and 21 classes (from its architecture).
ORIGINAL_KERNELS = {
    "conv1_1": (3, 3, 3, 64), "conv1_2": (3, 3, 64, 64),
    "conv2_1": (3, 3, 64, 128), "conv2_2": (3, 3, 128, 128),
    "conv3_1": (3, 3, 128, 256), "conv3_2": (3, 3, 256, 256), "conv3_3": (3, 3, 256, 256),
    "conv4_1": (3, 3, 256, 512), "conv4_2": (3, 3, 512, 512), "conv4_3": (3, 3, 512, 512),
    "conv5_1": (3, 3, 512, 512), "conv5_2": (3, 3, 512, 512), "conv5_3": (3, 3, 512, 512),
    "fc6": (3, 3, 512, 1024), "fc7": (1, 1, 1024, 1024),
    "conv6_1": (1, 1, 1024, 256), "conv6_2": (3, 3, 256, 512),
    "conv7_1": (1, 1, 512, 128), "conv7_2": (3, 3, 128, 256),
    "conv8_1": (1, 1, 256, 128), "conv8_2": (3, 3, 128, 256),
    "conv4_3_norm": (512,),
    "conv4_3_norm_mbox_loc": (3, 3, 512, 12), "conv4_3_norm_mbox_conf": (3, 3, 512, 63),
    "fc7_mbox_loc": (3, 3, 1024, 24), "fc7_mbox_conf": (3, 3, 1024, 126),
    "conv6_2_mbox_loc": (3, 3, 512, 24), "conv6_2_mbox_conf": (3, 3, 512, 126),
    "conv7_2_mbox_loc": (3, 3, 256, 24), "conv7_2_mbox_conf": (3, 3, 256, 126),
    "conv8_2_mbox_loc": (3, 3, 256, 24), "conv8_2_mbox_conf": (3, 3, 256, 126),
    "pool6_mbox_loc_flat": (256, 24), "pool6_mbox_conf_flat": (256, 126),
}
FEATURE_SIZES = {"conv4_3": 38, "fc7": 19, "conv6_2": 10, "conv7_2": 5, "conv8_2": 3}
HEAD_OFFSETS = {"conv4_3_norm": 0, "fc7": 4332, "conv6_2": 6498, "conv7_2": 7098,
                "conv8_2": 7248, "pool6": 7302}


@pytest.fixture(scope="module")
def full_ssd():
    return SSD300()


def test_full_model_has_the_original_layers_and_shapes(full_ssd):
    for name, shape in ORIGINAL_KERNELS.items():
        assert tuple(full_ssd.get_layer(name).weights[0].shape) == shape, name
    weighted = {layer.name for layer in full_ssd.layers if layer.weights}
    assert weighted == set(ORIGINAL_KERNELS)
    for name, size in FEATURE_SIZES.items():
        assert full_ssd.get_layer(name).output.shape[1:3] == (size, size), name
    # kernels + biases (the Normalize layer has gamma only)
    expected_params = sum(math.prod(s) + (s[-1] if len(s) > 1 else 0)
                          for s in ORIGINAL_KERNELS.values())
    assert full_ssd.count_params() == expected_params
    assert full_ssd.get_layer("fc6").dilation_rate == (6, 6)
    assert full_ssd.get_layer("pool5").pool_size == (3, 3)
    assert full_ssd.get_layer("pool5").strides == (1, 1)
    assert full_ssd.output.shape == (None, 7308, 4 + 21 + 8)
    for name in ["mbox_loc", "mbox_conf", "mbox_priorbox", "mbox_loc_final", "mbox_conf_logits",
                 "mbox_conf_final", "predictions", "pool6_reshaped"]:
        full_ssd.get_layer(name)


def test_priors_equal_the_original_port(full_ssd, reference_dir):
    reference = np.load(reference_dir / "prior_boxes_ssd300.npy")
    priors = prior_boxes(full_ssd)
    assert priors.shape == reference.shape == (7308, 8)
    assert priors.dtype == np.float32
    np.testing.assert_allclose(priors, reference, atol=1e-6, rtol=0)


def _square_or_ratio(cx, cy, w, h):
    box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) / 300.0
    return np.clip(box, 0.0, 1.0)


@pytest.mark.parametrize("head, cell, grid, prior, size", [
    # conv4_3_norm: 38x38 cells, ratios [1, 2, 1/2] -> prior 1 is 30*sqrt(2) x 30/sqrt(2)
    ("conv4_3_norm", (10, 5), 38, 1, (30 * math.sqrt(2), 30 / math.sqrt(2))),
    # fc7: 19x19, prior 1 is the sqrt(60*114) square
    ("fc7", (9, 9), 19, 1, (math.sqrt(60 * 114),) * 2),
    # conv6_2: 10x10, ratios [1, 1, 2, 1/2, 3, 1/3] -> prior 4 is ratio 3
    ("conv6_2", (3, 7), 10, 4, (114 * math.sqrt(3), 114 / math.sqrt(3))),
    ("conv7_2", (2, 2), 5, 0, (168.0, 168.0)),
    ("conv8_2", (1, 1), 3, 3, (222 * math.sqrt(0.5), 222 / math.sqrt(0.5))),  # clipped in y
    ("pool6", (0, 0), 1, 0, (276.0, 276.0)),
    ("pool6", (0, 0), 1, 1, (math.sqrt(276 * 330),) * 2),  # clipped to the whole image
])
def test_hand_computed_prior_of_every_head(thin_ssd, head, cell, grid, prior, size):
    x, y = cell
    step = 300.0 / grid
    row = HEAD_OFFSETS[head] + (y * grid + x) * (3 if head == "conv4_3_norm" else 6) + prior
    expected = _square_or_ratio((x + 0.5) * step, (y + 0.5) * step, *size)
    priors = prior_boxes(thin_ssd)  # priors do not depend on the width
    np.testing.assert_allclose(priors[row, :4], expected, atol=1e-6)
    np.testing.assert_allclose(priors[row, 4:], [0.1, 0.1, 0.2, 0.2], atol=1e-7)


def test_predictions_layout(thin_ssd):
    x = np.random.default_rng(0).uniform(-128, 128, (2, 300, 300, 3)).astype("float32")
    y = thin_ssd.predict(x, verbose=0)
    assert y.shape == (2, 7308, 33) and y.dtype == np.float32
    np.testing.assert_allclose(y[..., 4:25].sum(-1), 1.0, atol=1e-5)  # softmax over 21 classes
    np.testing.assert_array_equal(y[0, :, -8:], prior_boxes(thin_ssd))
    np.testing.assert_array_equal(y[1, :, -8:], prior_boxes(thin_ssd))


def test_width_multiplier_scales_channels_only():
    thin = SSD300(width_multiplier=0.1)
    assert thin.get_layer("conv1_1").filters == 8          # round(6.4) = 6 -> at least 8
    assert thin.get_layer("conv3_1").filters == 26         # round(25.6)
    assert thin.get_layer("fc6").filters == 102            # round(102.4)
    assert thin.get_layer("fc7_mbox_conf").filters == 6 * 21   # heads unchanged
    assert thin.get_layer("conv4_3_norm_mbox_loc").filters == 3 * 4
    assert thin.output.shape == (None, 7308, 33)
    assert [layer.name for layer in thin.layers] == [layer.name for layer in SSD300().layers]


def test_other_class_counts_rename_conf_heads():
    model = SSD300(num_classes=4, width_multiplier=0.125)
    names = {layer.name for layer in model.layers}
    for src in ["conv4_3_norm", "fc7", "conv6_2", "conv7_2", "conv8_2"]:
        assert f"{src}_mbox_conf_4" in names and f"{src}_mbox_conf" not in names
        assert f"{src}_mbox_loc" in names
        assert model.get_layer(f"{src}_mbox_conf_4").filters % 4 == 0
    assert "pool6_mbox_conf_flat_4" in names
    assert model.output.shape == (None, 7308, 4 + 4 + 8)


@pytest.mark.parametrize("kwargs", [
    {"num_classes": 1}, {"num_classes": 2.5}, {"width_multiplier": 0},
    {"input_shape": (300, 300)}, {"input_shape": (0, 300, 3)},
])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        SSD300(**kwargs)


def test_keras_save_and_load_round_trip(thin_ssd, tmp_path):
    path = tmp_path / "ssd.keras"
    thin_ssd.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects needed
    x = np.random.default_rng(1).uniform(-128, 128, (1, 300, 300, 3)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), thin_ssd.predict(x, verbose=0))
    np.testing.assert_array_equal(prior_boxes(loaded), prior_boxes(thin_ssd))


@pytest.fixture(scope="module")
def decoding_model(thin_ssd):
    from ssd_keras.ssd import with_detection_output

    return with_detection_output(thin_ssd, keep_top_k=50, confidence_threshold=0.05)


@pytest.fixture(scope="module")
def two_images(sample_image):
    from ssd_keras.image import preprocess_input, resize_image

    image = resize_image(sample_image, (300, 300))
    return preprocess_input(np.stack([image, image[:, ::-1]]))


def test_with_detection_output_equals_detection_out(thin_ssd, decoding_model, two_images):
    from ssd_keras.ssd_utils import BBoxUtility

    assert decoding_model.input_shape == (None, 300, 300, 3)
    assert decoding_model.output_shape == (None, 50, 6)
    detections = decoding_model.predict(two_images, verbose=0)
    expected = BBoxUtility(21).detection_out(thin_ssd.predict(two_images, verbose=0),
                                             keep_top_k=50, confidence_threshold=0.05)
    for rows, got in zip(expected, detections):
        assert len(rows) > 0
        # two forward passes round the near-tied scores of an untrained net differently
        assert_same_detections(got[:len(rows)], rows, atol=1e-5)
        assert (got[len(rows):] == 0).all()


def test_decoding_model_saves_and_exports(decoding_model, two_images, tmp_path):
    import tensorflow as tf

    expected = decoding_model.predict(two_images, verbose=0)
    decoding_model.save(tmp_path / "decoder.keras")
    reloaded = keras.models.load_model(tmp_path / "decoder.keras")
    np.testing.assert_allclose(reloaded.predict(two_images, verbose=0), expected, atol=1e-6)
    decoding_model.export(str(tmp_path / "saved"), verbose=False)
    artifact = tf.saved_model.load(str(tmp_path / "saved"))  # keep it alive while serving
    served = artifact.serve(tf.constant(two_images))
    np.testing.assert_allclose(np.asarray(served), expected, atol=1e-5)


def test_mixed_precision_keeps_outputs_float32_and_finite(two_images):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = SSD300(width_multiplier=0.125)
        assert model.get_layer("conv1_1").compute_dtype == "float16"
        y = model.predict(two_images, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert y.dtype == np.float32 and np.isfinite(y).all()
    np.testing.assert_allclose(y[..., 4:25].sum(-1), 1.0, atol=1e-3)
    np.testing.assert_array_equal(y[0, :, -8:], prior_boxes(model))


def test_default_prior_config_is_todays_network_exactly(full_ssd):
    from ssd_keras.priors import DEFAULT_PRIORS
    from ssd_keras.ssd import HEADS, prior_config

    assert full_ssd.count_params() == 25_765_497
    assert prior_config(full_ssd) == DEFAULT_PRIORS and HEADS == DEFAULT_PRIORS.heads
    for given in (DEFAULT_PRIORS, DEFAULT_PRIORS.to_dict()):
        model = SSD300(priors=given)
        assert [layer.name for layer in model.layers] == [layer.name for layer in full_ssd.layers]
        assert [(w.path, tuple(w.shape)) for w in model.weights] == [(w.path, tuple(w.shape))
                                                                     for w in full_ssd.weights]
        np.testing.assert_array_equal(prior_boxes(model), prior_boxes(full_ssd))


def test_custom_prior_config_model_saves_and_loads(tmp_path):
    from ssd_keras.priors import HeadSpec, PriorConfig

    config = PriorConfig((HeadSpec("conv3_3", 10.0, 16.0, (2.0,)), HeadSpec("conv6_2", 90.0)))
    model = SSD300((96, 96, 3), num_classes=3, width_multiplier=0.125, priors=config)
    model.save(tmp_path / "custom.keras")
    loaded = keras.models.load_model(tmp_path / "custom.keras")
    x = np.random.default_rng(2).uniform(-128, 128, (1, 96, 96, 3)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_array_equal(prior_boxes(loaded), config.priors((96, 96, 3)))


def test_bad_prior_config_raises():
    with pytest.raises(ValueError, match="source must be one of"):
        SSD300(width_multiplier=0.125, priors={"heads": [{"source": "conv2_2", "min_size": 8}]})
    with pytest.raises(FileNotFoundError):
        SSD300(width_multiplier=0.125, priors="no_such_priors.json")
