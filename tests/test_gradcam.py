"""Tests of ssd_keras.gradcam: Grad-CAM, guided backprop, guided Grad-CAM, overlays.

Expectations are independent of the code under test: a classifier trained here on images whose
class is a coloured patch at a known place, the prior's cell computed from its default box, a
2-layer network differentiated by hand, and reference gradients taken with a tape in the test.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssd_keras.gradcam import (GradCAM, explain_detections, gradient_image, guided_backprop, guided_grad_cam,
                               overlay)
from ssd_keras.image import preprocess_input, resize_image
from ssd_keras.ssd import prior_boxes
from ssd_keras.ssd_utils import BBoxUtility

NUM_CLASSES = 21
NUM_PRIORS = 7308
SIZE = 300

# The patch task: a red (class 0) or green (class 1) square on noise, anywhere in the image.
SIDE, PATCH = 64, 12
MARGIN = 4  # pixels: one cell of the 16x16 Grad-CAM layer
TRAIN, HELD_OUT = 2048, 100


@pytest.fixture(scope="module")
def ssd_input(sample_image) -> np.ndarray:
    """The sample photograph as one preprocessed SSD300 input (1, 300, 300, 3)."""
    return preprocess_input(resize_image(sample_image, (SIZE, SIZE))[None].astype(np.float32))


@pytest.fixture(scope="module")
def ssd_batch(ssd_input) -> np.ndarray:
    """Two different inputs: the photograph and its mirror image."""
    return np.concatenate([ssd_input, ssd_input[:, :, ::-1]])


@pytest.fixture(scope="module")
def cam(thin_ssd) -> GradCAM:
    return GradCAM(thin_ssd)


def _reference_gradients(model, layer: str, images: np.ndarray, score) -> tuple[np.ndarray, np.ndarray]:
    """Activations of ``layer`` and d sum(score(logits, output)) / d activations, with a tape."""
    probe = keras.Model(model.inputs, [model.get_layer(layer).output, model.get_layer("mbox_conf_logits").output,
                                       model.output])
    with tf.GradientTape() as tape:
        features, logits, output = probe(tf.constant(images), training=False)
        total = tf.reduce_sum(score(logits, output))
    return features.numpy(), tape.gradient(total, features).numpy()


def _reference_cam(features: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM written out: channel weights = mean gradient, ReLU, bilinear upsampling, / max."""
    weights = gradients.mean(axis=(1, 2), keepdims=True)
    cam = np.maximum((features * weights).sum(axis=-1), 0.0)
    cam = tf.image.resize(cam[..., None], (SIZE, SIZE), method="bilinear").numpy()[..., 0]
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, cam / np.where(peak > 0, peak, 1.0), 0.0)


# --------------------------------------------------------------------------- #
# (1) Grad-CAM finds the evidence on a classifier trained here
# --------------------------------------------------------------------------- #
def _patch_images(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise images with a red (label 0) or green (label 1) patch; returns images, labels, corners."""
    images = rng.uniform(0.0, 0.5, (count, SIDE, SIDE, 3)).astype(np.float32)
    labels = rng.integers(0, 2, count)
    corners = rng.integers(0, SIDE - PATCH + 1, (count, 2))  # (row, column) of the top-left pixel
    for image, label, (row, col) in zip(images, labels, corners):
        image[row:row + PATCH, col:col + PATCH] = (1.0, 0.0, 0.0) if label == 0 else (0.0, 1.0, 0.0)
    return images, labels, corners


def _patch_classifier() -> keras.Model:
    inputs = keras.Input((SIDE, SIDE, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


def test_gradcam_peak_falls_on_the_patch_that_decides_the_class():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y, _ = _patch_images(rng, TRAIN)
    model = _patch_classifier()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=4, verbose=0)  # 256 steps
    test_x, test_y, corners = _patch_images(rng, HELD_OUT)
    accuracy = float(np.mean(model.predict_on_batch(test_x).argmax(axis=1) == test_y))
    assert accuracy >= 0.95, f"the classifier did not learn the task (accuracy {accuracy})"

    explainer = GradCAM(model)
    assert explainer.feature_layers == ("last_conv",)  # the last 4-D output
    maps = explainer(test_x, test_y)
    assert maps.shape == (HELD_OUT, SIDE, SIDE) and maps.dtype == np.float32
    peaks = np.stack(np.unravel_index(maps.reshape(HELD_OUT, -1).argmax(axis=1), (SIDE, SIDE)), axis=1)
    inside = np.all((peaks >= corners - MARGIN) & (peaks < corners + PATCH + MARGIN), axis=1)
    assert inside.mean() >= 0.9, f"Grad-CAM peak on the patch for only {inside.mean():.0%} of the images"


# --------------------------------------------------------------------------- #
# (2) One detection's gradient stays in its prior's receptive field
# --------------------------------------------------------------------------- #
# (head source, feature layer, a cell (row, column) away from the border)
CONV_HEADS = [("conv4_3_norm", "conv4_3", (20, 9)), ("fc7", "fc7", (5, 13)), ("conv6_2", "conv6_2", (3, 6)),
              ("conv7_2", "conv7_2", (2, 3)), ("conv8_2", "conv8_2", (1, 1))]


def _head_start(model, source: str) -> int:
    """Index of a head's first prior: the sum of the PriorBox outputs before it."""
    start = 0
    for name in ["conv4_3_norm", "fc7", "conv6_2", "conv7_2", "conv8_2", "pool6"]:
        if name == source:
            return start
        start += model.get_layer(f"{name}_mbox_priorbox").output.shape[1]
    raise AssertionError(source)


@pytest.mark.parametrize("use_logits", [True, False])
def test_detection_gradient_reaches_only_the_prior_cell_neighbourhood(thin_ssd, cam, ssd_input, use_logits):
    priors = prior_boxes(thin_ssd)
    indices, expected = [], []
    for source, layer, (row, col) in CONV_HEADS:
        height, width = thin_ssd.get_layer(layer).output.shape[1:3]
        per_cell = (_head_start(thin_ssd, _next_head(source)) - _head_start(thin_ssd, source)) // (height * width)
        index = _head_start(thin_ssd, source) + (row * width + col) * per_cell + per_cell - 1
        # The cell, independently: where the prior's box centre lies on the feature map.
        centre_x, centre_y = priors[index, [0, 2]].mean(), priors[index, [1, 3]].mean()
        assert (int(centre_y * height), int(centre_x * width)) == (row, col)
        indices.append(index)
        expected.append((layer, row, col))
    images = np.repeat(ssd_input, len(indices), axis=0)
    names, activations, gradients = cam.feature_gradients(images, 15, indices, use_logits=use_logits)
    assert names == [layer for layer, _, _ in expected]
    for (layer, row, col), activation, gradient in zip(expected, activations, gradients):
        assert activation.shape == gradient.shape == tuple(thin_ssd.get_layer(layer).output.shape[1:])
        magnitude = np.abs(gradient).sum(axis=-1)
        near = np.zeros(magnitude.shape, dtype=bool)
        near[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2] = True
        assert np.all(magnitude[~near] == 0), f"{layer}: gradient outside the 3x3 neighbourhood"
        assert np.all(magnitude[near] > 0), f"{layer}: no gradient in the 3x3 neighbourhood"


def _next_head(source: str) -> str:
    order = ["conv4_3_norm", "fc7", "conv6_2", "conv7_2", "conv8_2", "pool6"]
    return order[order.index(source) + 1]


def test_pool6_prior_spreads_evenly_over_conv8_2(thin_ssd, cam, ssd_input):
    names, _, gradients = cam.feature_gradients(ssd_input, 4, NUM_PRIORS - 1)
    assert names == ["conv8_2"]
    cells = gradients[0].reshape(-1, gradients[0].shape[-1])
    assert np.abs(cells).sum() > 0
    np.testing.assert_allclose(cells, np.broadcast_to(cells[:1], cells.shape), rtol=1e-6)


def test_default_layer_follows_the_head_of_the_prior(cam):
    boundaries = {0: "conv4_3", 4331: "conv4_3", 4332: "fc7", 6497: "fc7", 6498: "conv6_2", 7097: "conv6_2",
                  7098: "conv7_2", 7247: "conv7_2", 7248: "conv8_2", 7301: "conv8_2", 7302: "conv8_2",
                  7307: "conv8_2"}
    assert cam.layers_for(np.array(list(boundaries)), len(boundaries)) == list(boundaries.values())
    assert cam.layers_for(None, 2) == ["conv4_3", "conv4_3"]
    assert GradCAM(cam.model, "fc7").layers_for(np.array([0, 7307]), 2) == ["fc7", "fc7"]


@pytest.mark.parametrize("prior, use_logits", [(1234, True), (5000, False), (None, True), (None, False)])
def test_gradcam_matches_a_tape_written_in_the_test(thin_ssd, cam, ssd_batch, prior, use_logits):
    classes = np.array([15, 8])

    def score(logits, output):
        scores = logits if use_logits else output[..., 4:4 + NUM_CLASSES]
        chosen = tf.gather(scores, classes, axis=2, batch_dims=1)  # (N, priors)
        return chosen if prior is None else chosen[:, prior]

    layer = "conv4_3" if prior in (None, 1234) else "fc7"
    features, gradients = _reference_gradients(thin_ssd, layer, ssd_batch, score)
    names, _, got = cam.feature_gradients(ssd_batch, classes, prior, use_logits=use_logits)
    assert names == [layer, layer]
    np.testing.assert_allclose(np.stack(got), gradients, rtol=1e-4, atol=1e-6 * np.abs(gradients).max())
    maps = cam(ssd_batch, classes, prior, use_logits=use_logits)
    np.testing.assert_allclose(maps, _reference_cam(features, gradients), atol=1e-4)


# --------------------------------------------------------------------------- #
# (3) Guided backprop, against a network differentiated by hand
# --------------------------------------------------------------------------- #
W1 = 2.0 * np.eye(3, dtype=np.float32)
B1 = np.array([1.0, -3.0, 0.0], np.float32)
W2 = np.array([[2.0, -3.0], [-1.0, 4.0], [5.0, 1.0]], np.float32)  # column c scores class c
HAND_X = np.array([[1.0, 2.0, -1.0], [-1.0, 2.0, 3.0]], np.float32).reshape(2, 1, 1, 3)
# Hidden pre-activations z = W1^T x + b1: image 0 -> [3, 1, -2], image 1 -> [-1, 1, 6].
# d score / d h = W2[:, c]; ReLU passes where z > 0; guided also needs the gradient > 0; dx = W1 dh.
HAND = {  # class of each image -> (guided, plain) input gradients
    (0, 1): ([[4.0, 0.0, 0.0], [0.0, 8.0, 2.0]], [[4.0, -2.0, 0.0], [0.0, 8.0, 2.0]]),
    (1, 0): ([[0.0, 8.0, 0.0], [0.0, 0.0, 10.0]], [[-6.0, 8.0, 0.0], [0.0, -2.0, 10.0]]),
}


def _hand_network(kind: str) -> keras.Model:
    """Input (1, 1, 3) -> Dense(3) + ReLU -> Dense(2), as ``activation="relu"``, a ``ReLU`` layer,
    or a Sequential model."""
    if kind == "sequential":
        model = keras.Sequential([keras.Input((1, 1, 3)), keras.layers.Flatten(),
                                  keras.layers.Dense(3, activation="relu"), keras.layers.Dense(2)])
    else:
        inputs = keras.Input((1, 1, 3))
        x = keras.layers.Flatten()(inputs)
        if kind == "activation":
            x = keras.layers.Dense(3, activation="relu")(x)
        else:
            x = keras.layers.ReLU()(keras.layers.Dense(3)(x))
        model = keras.Model(inputs, keras.layers.Dense(2)(x))
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    dense[0].set_weights([W1, B1])
    dense[1].set_weights([W2, np.zeros(2, np.float32)])
    return model


@pytest.mark.parametrize("kind", ["activation", "relu_layer", "sequential"])
@pytest.mark.parametrize("classes", list(HAND))
def test_guided_backprop_blocks_negative_gradients_through_relus(kind, classes):
    model = _hand_network(kind)
    guided, plain = (np.array(v, np.float32).reshape(2, 1, 1, 3) for v in HAND[classes])
    x = tf.constant(HAND_X)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(tf.gather(model(x), classes, axis=1, batch_dims=1))
    np.testing.assert_allclose(tape.gradient(total, x).numpy(), plain)  # the hand computation holds
    np.testing.assert_allclose(guided_backprop(model, HAND_X, list(classes)), guided)
    # ReLUs are the model's own: the forward pass and the plain gradient are unchanged afterwards.
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(tf.gather(model(x), classes, axis=1, batch_dims=1))
    np.testing.assert_allclose(tape.gradient(total, x).numpy(), plain)


def test_guided_gradcam_is_guided_backprop_times_the_map(thin_ssd, ssd_batch):
    classes, priors = [15, 3], [1000, 7000]
    guided = guided_backprop(thin_ssd, ssd_batch, classes, priors)
    maps = GradCAM(thin_ssd)(ssd_batch, classes, priors)
    assert guided.shape == ssd_batch.shape and guided.dtype == np.float32 and np.abs(guided).max() > 0
    np.testing.assert_allclose(guided_grad_cam(thin_ssd, ssd_batch, classes, priors), guided * maps[..., None],
                               rtol=1e-5, atol=1e-12)
    picture = gradient_image(guided[0], bgr=True)
    assert picture.dtype == np.uint8 and picture.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(picture, gradient_image(guided[0])[..., ::-1])
    assert np.all(gradient_image(np.zeros((2, 2, 3))) == 128)


# --------------------------------------------------------------------------- #
# (4) The model is left as it was
# --------------------------------------------------------------------------- #
def _snapshot(model, images) -> dict:
    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in ("conv4_3", "fc7", "conv8_2")])
    return {
        "weights": [w.copy() for w in model.get_weights()],
        "activations": [a.numpy() for a in probe(tf.constant(images))] + [model.predict_on_batch(images)],
        "nodes": [len(layer._inbound_nodes) for layer in model.layers],
        "layer_activations": [getattr(layer, "activation", None) for layer in model.layers],
        "layers": list(model.layers),
    }


def test_model_weights_and_activations_unchanged(thin_ssd, ssd_input, ssd_batch):
    before = _snapshot(thin_ssd, ssd_input)
    rows = np.array([[15, 0.9, 0.1, 0.1, 0.5, 0.6, 1200], [3, 0.5, 0.2, 0.3, 0.4, 0.9, 7100]])
    calls = [
        lambda: GradCAM(thin_ssd)(ssd_batch, 15, [10, 7300]),
        lambda: GradCAM(thin_ssd, "conv5_3")(ssd_batch, 2, None, use_logits=False, box=[0.1, 0.1, 0.9, 0.9]),
        lambda: guided_backprop(thin_ssd, ssd_batch, 15, 3000),
        lambda: guided_grad_cam(thin_ssd, ssd_batch, 15, 3000),
        *[lambda method=method: explain_detections(thin_ssd, ssd_input[0], rows, method=method)
          for method in ("gradcam", "guided", "guided-gradcam")],
    ]
    for call in calls:
        call()
        after = _snapshot(thin_ssd, ssd_input)
        for key in ("weights", "activations"):
            for a, b in zip(before[key], after[key], strict=True):
                np.testing.assert_array_equal(a, b)
        for key in ("nodes", "layer_activations", "layers"):
            assert before[key] == after[key], key


# --------------------------------------------------------------------------- #
# (5) Shapes, ranges, batches, boxes, classifiers, bad arguments
# --------------------------------------------------------------------------- #
def test_maps_are_float32_in_unit_range_and_batches_match_single_images(cam, ssd_batch):
    classes, priors = [15, 7], [100, 7305]  # different heads, so different layers
    maps = cam(ssd_batch, classes, priors)
    assert maps.shape == (2, SIZE, SIZE) and maps.dtype == np.float32
    assert np.all(np.isfinite(maps)) and maps.min() >= 0.0
    # each map is divided by its peak; a map whose weighted sum is negative everywhere is all zero
    # after the ReLU (possible for some random weights), never NaN
    peaks = maps.max(axis=(1, 2))
    assert np.all((peaks == 0.0) | np.isclose(peaks, 1.0)) and peaks.max() == 1.0, peaks
    singles = [cam(ssd_batch[i:i + 1], classes[i], priors[i])[0] for i in range(2)]
    np.testing.assert_allclose(maps, np.stack(singles), atol=1e-5)
    # Numpy integer types and integral floats (detection rows) are indices too.
    np.testing.assert_array_equal(cam(ssd_batch, np.float64(15.0), np.array([100.0, 7305.0])), cam(
        ssd_batch, 15, [100, 7305]))


def test_box_zeroes_the_map_outside_and_rescales_inside(cam, ssd_batch):
    boxes = np.array([[0.2, 0.1, 0.6, 0.5], [0.0, 0.5, 1.0, 1.0]])
    full = cam(ssd_batch, 15, 2000)
    boxed = cam(ssd_batch, 15, 2000, box=boxes)
    centres = (np.arange(SIZE) + 0.5) / SIZE
    for n, (xmin, ymin, xmax, ymax) in enumerate(boxes):
        inside = ((centres[:, None] >= ymin) & (centres[:, None] <= ymax)
                  & (centres[None] >= xmin) & (centres[None] <= xmax))
        assert np.all(boxed[n][~inside] == 0)
        expected = full[n] * inside
        np.testing.assert_allclose(boxed[n], expected / expected.max(), atol=1e-6)
    np.testing.assert_allclose(cam(ssd_batch, 15, 2000, box=boxes[0])[1], cam(ssd_batch, 15, 2000,
                                                                               box=boxes[[0, 0]])[1])


def _gap_classifier(last: str) -> keras.Model:
    """Conv(ReLU) -> GAP -> scores, the softmax as a Dense activation, an Activation layer, or none."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs))
    dense = keras.layers.Dense(3, activation="softmax" if last == "dense_softmax" else None, name="scores")
    x = dense(x)
    if last == "activation_softmax":
        x = keras.layers.Activation("softmax")(x)
    return keras.Model(inputs, x)


def test_classifier_logits_are_the_target_however_the_softmax_is_written():
    keras.utils.set_random_seed(1)
    models = {kind: _gap_classifier(kind) for kind in ("dense_softmax", "activation_softmax", "linear")}
    for model in models.values():
        model.set_weights(models["linear"].get_weights())
    x = np.random.default_rng(1).normal(size=(3, 8, 8, 3)).astype(np.float32)
    maps = {kind: GradCAM(model)(x, [0, 1, 2]) for kind, model in models.items()}
    assert np.abs(maps["linear"]).max() > 0
    for kind in ("dense_softmax", "activation_softmax"):
        np.testing.assert_allclose(maps[kind], maps["linear"], atol=1e-6)
    guided = {kind: guided_backprop(model, x, 1) for kind, model in models.items()}
    np.testing.assert_allclose(guided["dense_softmax"], guided["linear"], rtol=1e-5, atol=1e-8)


def test_sequential_and_nested_models_give_the_same_explanations():
    keras.utils.set_random_seed(2)
    functional = _gap_classifier("linear")
    conv = keras.layers.Conv2D(4, 3, activation="relu")
    sequential = keras.Sequential([keras.Input((8, 8, 3)), conv, keras.layers.GlobalAveragePooling2D(),
                                   keras.layers.Dense(3)])
    inputs = keras.Input((8, 8, 3))
    backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu")],
                                name="backbone")
    nested = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(backbone(inputs))))
    for model in (sequential, nested):
        model.set_weights(functional.get_weights())
    assert GradCAM(nested).feature_layers == ("backbone",)
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype(np.float32)
    expected_map, expected_guided = GradCAM(functional)(x, [1, 2]), guided_backprop(functional, x, [1, 2])
    for model in (sequential, nested):
        np.testing.assert_allclose(GradCAM(model)(x, [1, 2]), expected_map, atol=1e-6)
        np.testing.assert_allclose(guided_backprop(model, x, [1, 2]), expected_guided, rtol=1e-5, atol=1e-8)


def test_all_negative_evidence_gives_a_zero_map_not_nan():
    model = _gap_classifier("linear")
    conv, scores = model.get_layer("conv"), model.get_layer("scores")
    conv.set_weights([np.abs(conv.get_weights()[0]), np.ones(4, np.float32)])  # positive features
    scores.set_weights([-np.ones((4, 3), np.float32), np.zeros(3, np.float32)])  # all evidence against
    maps = GradCAM(model)(np.ones((2, 8, 8, 3), np.float32), 0)
    assert maps.shape == (2, 8, 8) and np.all(maps == 0)


def test_bad_arguments_raise_value_errors_that_name_them(thin_ssd, cam, ssd_input):
    with pytest.raises(ValueError, match=r"class_index \[21\] out of range.*21 classes"):
        cam(ssd_input, NUM_CLASSES, 0)
    with pytest.raises(ValueError, match=r"class_index \[-1\]"):
        cam(ssd_input, -1, 0)
    with pytest.raises(ValueError, match=r"prior_index \[7308\] out of range.*7308 priors"):
        cam(ssd_input, 1, NUM_PRIORS)
    with pytest.raises(ValueError, match="prior_index"):
        guided_backprop(thin_ssd, ssd_input, 1, -5)
    with pytest.raises(ValueError, match="layer_name 'conv9'.*valid choices: .*conv4_3.*fc7.*conv8_2"):
        GradCAM(thin_ssd, "conv9")
    with pytest.raises(ValueError, match="layer_name 'mbox_loc'.*valid choices"):  # exists, but not 4-D
        GradCAM(thin_ssd, "mbox_loc")
    with pytest.raises(ValueError, match="one per image"):
        cam(np.repeat(ssd_input, 2, axis=0), [1, 2, 3], 0)
    with pytest.raises(ValueError, match="integers"):
        cam(ssd_input, 2.5, 0)
    with pytest.raises(ValueError, match="integers"):
        cam(ssd_input, True, 0)
    with pytest.raises(ValueError, match="images"):
        cam(ssd_input[0], 1, 0)
    with pytest.raises(ValueError, match="box"):
        cam(ssd_input, 1, 0, box=[0.5, 0.5, 0.2, 0.9])
    with pytest.raises(ValueError, match="prior_index applies to SSD models only"):
        GradCAM(_gap_classifier("linear"))(np.zeros((1, 8, 8, 3), np.float32), 0, 0)
    with pytest.raises(ValueError, match="no layer with a 4-D output"):
        GradCAM(_hand_network("activation"))
    with pytest.raises(ValueError, match="return_indices=True"):
        explain_detections(thin_ssd, ssd_input[0], np.zeros((1, 6)))
    with pytest.raises(ValueError, match="method must be one of gradcam, guided, guided-gradcam"):
        explain_detections(thin_ssd, ssd_input[0], np.zeros((1, 7)), method="cam")


# --------------------------------------------------------------------------- #
# Detections and overlays
# --------------------------------------------------------------------------- #
def test_explain_detections_explains_the_top_rows_of_detection_out(thin_ssd, cam, ssd_input):
    rows = BBoxUtility(NUM_CLASSES).detection_out(thin_ssd.predict_on_batch(ssd_input), keep_top_k=10,
                                                  return_indices=True)[0]
    assert len(rows) > 3
    shuffled = rows[::-1]
    items = explain_detections(thin_ssd, ssd_input[0], shuffled, class_names=["a"] * 20, top=3)
    assert len(items) == 3
    np.testing.assert_array_equal(np.stack([item["detection"] for item in items]), rows[:3])
    expected = cam(np.repeat(ssd_input, 3, axis=0), rows[:3, 0], rows[:3, 6])
    np.testing.assert_allclose(np.stack([item["map"] for item in items]), expected, atol=1e-5)
    assert items[0]["label"] == f"a {rows[0, 1]:.2f}"
    masked = explain_detections(thin_ssd, ssd_input[0], rows, top=1, mask_box=True)[0]
    np.testing.assert_allclose(masked["map"], cam(ssd_input, rows[0, 0], rows[0, 6], box=rows[0, 2:6])[0])
    guided = explain_detections(thin_ssd, ssd_input[0], rows, top=2, method="guided-gradcam")
    assert [item["map"].shape for item in guided] == [(SIZE, SIZE, 3)] * 2
    assert explain_detections(thin_ssd, ssd_input[0], np.zeros((0, 7))) == []


def test_overlay_blends_the_map_and_draws_box_and_caption(sample_image):
    height, width = sample_image.shape[:2]
    heatmap = np.linspace(0.0, 1.0, 50 * 40, dtype=np.float32).reshape(50, 40)
    np.testing.assert_array_equal(overlay(sample_image, heatmap, alpha=0.0), sample_image)
    picture = overlay(sample_image, heatmap, box=[0.25, 0.5, 0.75, 0.9], label="person 0.93", color=(0, 255, 255))
    assert picture.dtype == np.uint8 and picture.shape == sample_image.shape
    plain = overlay(sample_image, heatmap)
    assert not np.array_equal(plain, sample_image)
    left, bottom = int(round(0.25 * width)), int(round(0.9 * height))
    np.testing.assert_array_equal(picture[bottom, left + 5], (0, 255, 255))  # on the box edge
    centre = (int(0.7 * height), int(0.5 * width))
    np.testing.assert_array_equal(picture[centre], plain[centre])  # inside the box: just the map
    caption = picture[int(0.5 * height) - 5, left + 2:left + 40]  # the label sits above the box
    assert not np.array_equal(caption, plain[int(0.5 * height) - 5, left + 2:left + 40])
    with pytest.raises(ValueError, match="box"):
        overlay(sample_image, heatmap, label="x")


# --------------------------------------------------------------------------- #
# (6) A model of another prior configuration
# --------------------------------------------------------------------------- #
def test_gradcam_follows_the_heads_of_a_custom_prior_config():
    from ssd_keras.priors import HeadSpec, PriorConfig
    from ssd_keras.ssd import SSD300

    config = PriorConfig((HeadSpec("conv3_3", 12.0, 20.0, (2.0,)), HeadSpec("fc7", 40.0, None, (2.0,)),
                          HeadSpec("pool6", 100.0)))
    model = SSD300((128, 128, 3), num_classes=3, width_multiplier=0.125, priors=config)
    cam = GradCAM(model)
    assert cam.feature_layers == ("conv3_3", "fc7", "conv8_2")
    # conv3_3: 32x32 cells x 4 priors, fc7: 8x8 x 3, pool6: 1
    starts = {"conv3_3": 0, "fc7": 32 * 32 * 4, "conv8_2": 32 * 32 * 4 + 8 * 8 * 3}
    edges = [0, starts["fc7"] - 1, starts["fc7"], starts["conv8_2"] - 1, starts["conv8_2"]]
    assert cam.layers_for(np.array(edges), len(edges)) == ["conv3_3", "conv3_3", "fc7", "fc7", "conv8_2"]
    assert cam.layers_for(None, 1) == ["conv3_3"]

    # a conv3_3 prior's gradient stays in the 3x3 cells around its own, found from its box
    priors = prior_boxes(model)
    index = (20 * 32 + 9) * 4 + 3
    centre_x, centre_y = priors[index, [0, 2]].mean(), priors[index, [1, 3]].mean()
    row, col = int(centre_y * 32), int(centre_x * 32)
    assert (row, col) == (20, 9)
    x = np.random.default_rng(0).uniform(-100, 100, (2, 128, 128, 3)).astype(np.float32)
    names, _, gradients = cam.feature_gradients(x, np.array([1, 2]), np.array([index, starts["conv8_2"]]))
    assert names == ["conv3_3", "conv8_2"]
    magnitude = np.abs(gradients[0]).sum(axis=-1)
    near = np.zeros(magnitude.shape, dtype=bool)
    near[row - 1:row + 2, col - 1:col + 2] = True
    assert np.all(magnitude[~near] == 0) and np.all(magnitude[near] > 0)
    maps = cam(x, np.array([1, 2]), np.array([index, starts["fc7"] + 7]))
    assert maps.shape == (2, 128, 128) and maps.dtype == np.float32
