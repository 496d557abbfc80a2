"""Tests for ssd_keras.ssd_training.MultiboxLoss.

Expectations are independent of the module: a plain-Python reference with explicit loops over
images and priors (below), a hand-computed tiny case, serialization round trips, eager vs
``tf.function``, a short overfitting run, and ``MirroredStrategy`` in a subprocess.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from ssd_keras.image import preprocess_input
from ssd_keras.ssd import SSD300, prior_boxes
from ssd_keras.ssd_training import MultiboxLoss
from ssd_keras.ssd_utils import BBoxUtility
from tests.conftest import REPO_ROOT, THIN_WIDTH

NUM_CLASSES = 5  # 4 classes + background
VARIANCES = [0.1, 0.1, 0.2, 0.2]


# --------------------------------------------------------------------------------------------
# Plain-Python reference
# --------------------------------------------------------------------------------------------

def ref_multibox_loss(y_true, y_pred, num_classes, alpha=1.0, neg_pos_ratio=3.0,
                      negatives_for_hard=100.0) -> np.ndarray:
    """The loss of each image, one prior at a time.

    The batch takes ``N`` hard negatives per image: the smallest positive
    ``min(ratio * P, num_priors - P)`` over its images, else ``negatives_for_hard``, truncated
    to an integer and capped at ``num_priors``. Per image, the non-positive priors ranked by
    their best non-background probability give up to ``N`` negatives (never a positive), and
    ``loss = (pos_conf + neg_conf) / (P + N) + alpha * pos_loc / max(P, 1)``.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    batch, num_priors = y_true.shape[:2]
    stats = []  # per image: num_pos, pos_conf, pos_loc, [(score, conf_loss) of non-positives]
    for b in range(batch):
        num_pos = pos_conf = pos_loc = 0.0
        candidates = []
        for p in range(num_priors):
            t, q = y_true[b, p], y_pred[b, p]
            conf_loss = 0.0
            for c in range(num_classes):
                prob = min(max(q[4 + c], 1e-15), 1.0 - 1e-15)
                conf_loss -= t[4 + c] * math.log(prob)
            if t[-8] == 1.0:
                num_pos += 1
                pos_conf += conf_loss
                for i in range(4):
                    d = abs(t[i] - q[i])
                    pos_loc += 0.5 * d * d if d < 1.0 else d - 0.5
            else:
                best_object = max(q[4 + c] for c in range(1, num_classes))
                candidates.append((best_object, conf_loss))
        stats.append((num_pos, pos_conf, pos_loc, candidates))
    positive_counts = [n for n in (min(neg_pos_ratio * s[0], num_priors - s[0]) for s in stats)
                       if n > 0]
    num_neg = min(int(min(positive_counts) if positive_counts else negatives_for_hard),
                  num_priors)
    losses = []
    for num_pos, pos_conf, pos_loc, candidates in stats:
        ranked = sorted(candidates, key=lambda sc: -sc[0])
        neg_conf = sum(conf_loss for _, conf_loss in ranked[:num_neg])
        losses.append((pos_conf + neg_conf) / (num_pos + num_neg)
                      + alpha * pos_loc / (num_pos if num_pos else 1.0))
    return np.array(losses)


# --------------------------------------------------------------------------------------------
# Random data
# --------------------------------------------------------------------------------------------

def random_boxes(rng, n, num_classes=NUM_CLASSES) -> np.ndarray:
    """``(n, 4 + num_classes - 1)`` random ground truth: corners and a one-hot class."""
    xy = rng.uniform(0.0, 0.7, (n, 2))
    wh = rng.uniform(0.05, 0.6, (n, 2))
    classes = np.eye(num_classes - 1)[rng.integers(0, num_classes - 1, n)]
    return np.column_stack([xy, np.minimum(xy + wh, 1.0), classes])


def random_predictions(rng, y_true, priors, num_classes=NUM_CLASSES) -> np.ndarray:
    """Predictions near ``y_true``: loc + noise (some |d| > 1), softmax of random logits,
    then the priors and variances."""
    batch, num_priors = y_true.shape[:2]
    loc = y_true[..., :4] + rng.normal(0.0, 1.0, (batch, num_priors, 4))
    logits = rng.normal(0.0, 2.0, (batch, num_priors, num_classes))
    probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    prior_cols = np.broadcast_to(np.asarray(priors, np.float64), (batch, num_priors, 8))
    return np.concatenate([loc, probs, prior_cols], axis=-1).astype(np.float32)


def targets(bbox_util, boxes_per_image) -> np.ndarray:
    return np.stack([bbox_util.assign_boxes(boxes) for boxes in boxes_per_image])


@pytest.fixture(scope="module")
def real_priors(thin_ssd) -> np.ndarray:
    return prior_boxes(thin_ssd)


def tiny_priors() -> np.ndarray:
    """8 priors: 4 nearly equal ones at the top left, 4 at the bottom right."""
    corners = [[0.10, 0.10, 0.50, 0.50], [0.12, 0.10, 0.50, 0.52], [0.10, 0.12, 0.52, 0.50],
               [0.08, 0.08, 0.50, 0.50], [0.50, 0.50, 0.90, 0.90], [0.52, 0.50, 0.90, 0.92],
               [0.60, 0.60, 0.95, 0.95], [0.05, 0.60, 0.30, 0.95]]
    return np.array([c + VARIANCES for c in corners])


def check_against_reference(y_true, y_pred, **kwargs) -> np.ndarray:
    """Asserts compute_loss == reference and Loss.__call__ == its mean; returns the reference."""
    expected = ref_multibox_loss(y_true, y_pred, NUM_CLASSES, **kwargs)
    loss = MultiboxLoss(NUM_CLASSES, **kwargs)
    per_image = loss.compute_loss(y_true, y_pred)
    assert per_image.shape == (len(y_true),) and per_image.dtype == tf.float32
    np.testing.assert_allclose(per_image.numpy(), expected, rtol=2e-5)
    np.testing.assert_allclose(float(loss(y_true, y_pred)), expected.mean(), rtol=2e-5)
    return expected


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------

def test_hand_computed_tiny_case():
    # 3 priors, 3 classes (background, A, B), neg_pos_ratio 1.
    # Image 1: prior 0 is positive (class A), priors 1 and 2 background.
    #   P = 1, num_neg = min(1 * 1, 3 - 1) = 1.
    # Image 2: no positives: num_neg = min(0, 3) = 0, not positive, so the batch takes N = 1.
    y_true = np.zeros((2, 3, 3 + 12), np.float32)
    y_true[0, 0, :4] = [0.5, -1.0, 0.0, 0.0]
    y_true[0, 0, 4:7] = [0, 1, 0]
    y_true[0, 0, -8] = 1.0
    y_true[0, 1:, 4] = 1.0
    y_true[1, :, 4] = 1.0
    y_pred = np.zeros((2, 3, 3 + 12), np.float32)
    y_pred[0, :, :4] = [[0.0, 0.5, 0.0, 0.0], [1, 1, 1, 1], [3, 3, 3, 3]]
    y_pred[0, :, 4:7] = [[0.1, 0.6, 0.3], [0.7, 0.1, 0.2], [0.4, 0.5, 0.1]]
    y_pred[1, :, 4:7] = [[0.9, 0.05, 0.05], [0.5, 0.25, 0.25], [0.8, 0.1, 0.1]]
    # Image 1. Positive conf: -ln 0.6 = 0.510826. Best non-background scores of the
    # non-positives: prior 1 -> 0.2, prior 2 -> 0.5 (prior 0 would have 0.6 but is positive),
    # so prior 2 is the hard negative: -ln 0.4 = 0.916291. Conf term (0.510826 + 0.916291) / 2
    # = 0.713558. Loc of prior 0: d = (0.5, -1.5, 0, 0): 0.5 * 0.25 + (1.5 - 0.5) = 1.125
    # (the wild offsets of the negatives do not count). Total 0.713558 + 1.125 = 1.838558.
    # Image 2. Scores 0.05, 0.25, 0.1: prior 1 is the negative: -ln 0.5 = 0.693147, over
    # P + N = 0 + 1; no loc term (divided by 1, not 0). Total 0.693147.
    expected = np.array([-math.log(0.6) / 2 - math.log(0.4) / 2 + 1.125, math.log(2.0)])
    np.testing.assert_allclose(expected, [1.838558, 0.693147], atol=1e-6)
    loss = MultiboxLoss(3, neg_pos_ratio=1.0)
    np.testing.assert_allclose(loss.compute_loss(y_true, y_pred).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(float(loss(y_true, y_pred)), expected.mean(), rtol=1e-6)
    # alpha only scales the loc term
    np.testing.assert_allclose(
        MultiboxLoss(3, alpha=2.0, neg_pos_ratio=1.0).compute_loss(y_true, y_pred).numpy(),
        expected + [1.125, 0.0], rtol=1e-6)
    np.testing.assert_allclose(ref_multibox_loss(y_true, y_pred, 3, neg_pos_ratio=1.0), expected,
                               rtol=1e-6)


def test_images_with_different_numbers_of_positives(real_priors):
    rng = np.random.default_rng(1)
    bbox_util = BBoxUtility(NUM_CLASSES, real_priors)
    y_true = targets(bbox_util, [random_boxes(rng, n) for n in (1, 3, 6)]
                     + [np.zeros((0, 4 + NUM_CLASSES - 1))])  # the last image has no positives
    num_pos = y_true[..., -8].sum(axis=1)
    assert len(set(num_pos[:3])) == 3 and (num_pos[:3] > 0).all() and num_pos[3] == 0
    y_pred = random_predictions(rng, y_true, real_priors)
    check_against_reference(y_true, y_pred)
    check_against_reference(y_true, y_pred, alpha=0.5, neg_pos_ratio=2.0)


def test_fractional_neg_pos_ratio_truncates_the_negative_count(real_priors):
    rng = np.random.default_rng(2)
    bbox_util = BBoxUtility(NUM_CLASSES, real_priors)
    y_true = targets(bbox_util, [random_boxes(rng, 1), random_boxes(rng, 2)])
    y_pred = random_predictions(rng, y_true, real_priors)
    check_against_reference(y_true, y_pred, neg_pos_ratio=2.5)


def test_batch_without_positives_takes_negatives_for_hard(real_priors):
    rng = np.random.default_rng(3)
    y_true = targets(BBoxUtility(NUM_CLASSES, real_priors), [np.zeros((0, 8))] * 3)
    y_pred = random_predictions(rng, y_true, real_priors)
    default = check_against_reference(y_true, y_pred)
    fewer = check_against_reference(y_true, y_pred, negatives_for_hard=7.0)
    # without positives the loss is the mean conf loss of the hard negatives: the 7 hardest
    # are harder on average than the 100 hardest
    assert (fewer > default).all()


def test_few_non_positive_priors_limit_the_negatives():
    rng = np.random.default_rng(4)
    priors = tiny_priors()
    bbox_util = BBoxUtility(NUM_CLASSES, priors)
    onehot = np.eye(NUM_CLASSES - 1)
    top_left = np.r_[[0.10, 0.10, 0.50, 0.50], onehot[0]]
    bottom_right = np.r_[[0.50, 0.50, 0.90, 0.90], onehot[1]]
    every_prior = [top_left, bottom_right, np.r_[[0.60, 0.60, 0.95, 0.95], onehot[2]],
                   np.r_[[0.05, 0.60, 0.30, 0.95], onehot[3]]]
    y_true = targets(bbox_util, [np.array([top_left]), np.array([bottom_right]),
                                 np.array(every_prior)])
    num_pos = y_true[..., -8].sum(axis=1)
    # 3 * P > num_priors - P for the first image, which sets the batch's N = min(12, 4) = 4;
    # the third image has only positives, so its N slots must not be filled with them
    np.testing.assert_array_equal(num_pos, [4, 2, 8])
    y_pred = random_predictions(rng, y_true, priors)
    expected = check_against_reference(y_true, y_pred)
    # the third image, written out: its 8 positives over P + N = 8 + 4, and nothing else
    true_class = y_true[2, :, 4:4 + NUM_CLASSES].argmax(axis=1)
    pos_conf = -np.log(y_pred[2, np.arange(8), 4 + true_class].astype(np.float64)).sum()
    d = np.abs(y_true[2, :, :4].astype(np.float64) - y_pred[2, :, :4])
    pos_loc = np.where(d < 1.0, 0.5 * d ** 2, d - 0.5).sum()
    assert expected[2] == pytest.approx(pos_conf / 12 + pos_loc / 8, rel=1e-9)
    # no positives anywhere and negatives_for_hard > num_priors: every prior is a negative
    no_positives = targets(bbox_util, [np.zeros((0, 8))] * 2)
    check_against_reference(no_positives, random_predictions(rng, no_positives, priors))


def test_gradient_is_finite_and_touches_only_loc_and_conf(real_priors):
    rng = np.random.default_rng(5)
    y_true = targets(BBoxUtility(NUM_CLASSES, real_priors), [random_boxes(rng, 2)] * 2)
    y_pred = tf.constant(random_predictions(rng, y_true, real_priors))
    with tf.GradientTape() as tape:
        tape.watch(y_pred)
        value = MultiboxLoss(NUM_CLASSES)(y_true, y_pred)
    grad = tape.gradient(value, y_pred).numpy()
    assert np.isfinite(grad).all()
    assert not grad[..., -8:].any()
    negative = y_true[..., -8] == 0
    assert not grad[..., :4][negative].any()  # no loc loss on negatives
    assert grad[..., :4][~negative].any()
    touched = grad[..., 4:4 + NUM_CLASSES].any(axis=-1)
    # every positive plus exactly N = 3 * min(P) negatives per image get conf gradient
    num_neg = int(3 * y_true[..., -8].sum(axis=1).min())
    np.testing.assert_array_equal((touched & negative).sum(axis=1), [num_neg, num_neg])


def test_mixed_precision_inputs_are_computed_in_float32(real_priors):
    rng = np.random.default_rng(6)
    y_true = targets(BBoxUtility(NUM_CLASSES, real_priors), [random_boxes(rng, 2), random_boxes(rng, 1)])
    y_pred = random_predictions(rng, y_true, real_priors)
    loss = MultiboxLoss(NUM_CLASSES)
    half = loss.compute_loss(tf.constant(y_true, tf.float16), tf.constant(y_pred, tf.float16))
    assert half.dtype == tf.float32
    np.testing.assert_allclose(half.numpy(), loss.compute_loss(y_true, y_pred).numpy(), rtol=1e-2)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        under_policy = MultiboxLoss(NUM_CLASSES)(y_true, tf.constant(y_pred, tf.float16))
    finally:
        keras.config.set_dtype_policy(previous)
    assert under_policy.dtype == tf.float32
    assert float(under_policy) == pytest.approx(float(loss(y_true, y_pred)), rel=1e-2)


def test_tf_function_and_xla_with_unknown_batch_match_eager(real_priors):
    rng = np.random.default_rng(7)
    bbox_util = BBoxUtility(NUM_CLASSES, real_priors)
    loss = MultiboxLoss(NUM_CLASSES)
    spec = tf.TensorSpec([None, None, 4 + NUM_CLASSES + 8], tf.float32)

    @tf.function(input_signature=[spec, spec])
    def per_image(y_true, y_pred):
        return loss.compute_loss(y_true, y_pred)

    # XLA (what Keras' fit uses by default on a GPU) with the data-dependent negative count
    xla = tf.function(loss.compute_loss, input_signature=[spec, spec], jit_compile=True)

    @tf.function(input_signature=[spec, spec])
    def reduced(y_true, y_pred):
        return loss(y_true, y_pred)

    for boxes in ([random_boxes(rng, 2), random_boxes(rng, 5), np.zeros((0, 8))],
                  [random_boxes(rng, 1)], [np.zeros((0, 8))] * 2):
        y_true = targets(bbox_util, boxes)
        y_pred = random_predictions(rng, y_true, real_priors)
        eager = loss.compute_loss(y_true, y_pred).numpy()
        np.testing.assert_allclose(per_image(y_true, y_pred).numpy(), eager, rtol=1e-6)
        np.testing.assert_allclose(xla(y_true, y_pred).numpy(), eager, rtol=1e-5)
        np.testing.assert_allclose(float(reduced(y_true, y_pred)), eager.mean(), rtol=1e-6)
    assert per_image.experimental_get_tracing_count() == 1
    assert reduced.experimental_get_tracing_count() == 1
    assert xla.experimental_get_tracing_count() == 1


# --------------------------------------------------------------------------------------------
# Arguments and serialization
# --------------------------------------------------------------------------------------------

def test_only_background_label_zero_is_supported():
    with pytest.raises(ValueError, match="background_label_id=0.*got background_label_id=1"):
        MultiboxLoss(NUM_CLASSES, background_label_id=1)
    with pytest.raises(ValueError, match="num_classes"):
        MultiboxLoss(1)


def test_wrong_number_of_columns_is_a_clear_error():
    y = np.zeros((1, 3, 4 + 3 + 8), np.float32)
    with pytest.raises(ValueError, match="num_classes=5 needs 4 \\+ 5 \\+ 8 = 17"):
        MultiboxLoss(NUM_CLASSES).compute_loss(y, y)


def test_get_config_round_trip():
    loss = MultiboxLoss(7, alpha=0.5, neg_pos_ratio=2.0, negatives_for_hard=50.0, name="mb",
                        reduction="sum")
    config = loss.get_config()
    assert config == {"name": "mb", "reduction": "sum", "num_classes": 7, "alpha": 0.5,
                      "neg_pos_ratio": 2.0, "background_label_id": 0, "negatives_for_hard": 50.0}
    assert MultiboxLoss.from_config(config).get_config() == config


def test_keras_serialization_round_trip():
    loss = MultiboxLoss(6, alpha=2.0, neg_pos_ratio=1.5)
    assert keras.saving.get_registered_name(MultiboxLoss) == "ssd_keras>MultiboxLoss"
    serialized = keras.saving.serialize_keras_object(loss)
    json.dumps(serialized)  # plain JSON
    for restored in (keras.losses.deserialize(serialized), keras.losses.get(serialized)):
        assert isinstance(restored, MultiboxLoss) and restored is not loss
        assert restored.get_config() == loss.get_config()


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def synthetic_scenes() -> tuple[np.ndarray, list[np.ndarray]]:
    """Two noisy 300x300 RGB images with two filled shapes each, and their boxes
    ``(2, 4 + 3)`` (normalised corners, one-hot over the 3 object classes)."""
    rng = np.random.default_rng(8)
    shapes = [  # (kind, class, colour, geometry in pixels)
        [("rect", 0, (220, 30, 30), (40, 50, 150, 200)), ("circle", 1, (30, 200, 30), (220, 100, 50))],
        [("rect", 2, (30, 30, 220), (100, 120, 260, 280)), ("circle", 0, (220, 30, 30), (70, 70, 40))],
    ]
    images, boxes = [], []
    for scene in shapes:
        image = rng.integers(0, 80, (300, 300, 3)).astype(np.uint8)
        rows = []
        for kind, label, colour, geometry in scene:
            if kind == "rect":
                x1, y1, x2, y2 = geometry
                cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness=-1)
            else:
                cx, cy, r = geometry
                cv2.circle(image, (cx, cy), r, colour, thickness=-1)
                x1, y1, x2, y2 = cx - r, cy - r, cx + r, cy + r
            rows.append(np.r_[np.array([x1, y1, x2, y2]) / 300.0, np.eye(3)[label]])
        images.append(image)
        boxes.append(np.array(rows))
    return np.stack(images), boxes


def test_training_overfits_two_images_with_both_ways_of_passing_the_loss(tmp_path):
    images, boxes = synthetic_scenes()
    x = preprocess_input(images)
    keras.utils.set_random_seed(0)
    models = [SSD300(num_classes=4, width_multiplier=THIN_WIDTH) for _ in range(2)]
    models[1].set_weights(models[0].get_weights())
    y = targets(BBoxUtility(4, prior_boxes(models[0])), boxes)
    initial = ref_multibox_loss(y, models[0].predict(x, verbose=0), 4).mean()
    histories = []
    for model, loss in zip(models, (MultiboxLoss(4).compute_loss, MultiboxLoss(4))):
        model.compile(keras.optimizers.Adam(1e-3), loss=loss)
        histories.append(model.fit(x, y, batch_size=2, epochs=15, verbose=0).history["loss"])
    for history in histories:
        # the first epoch's loss is that of the initial weights, averaged over the 2 images
        assert history[0] == pytest.approx(initial, rel=1e-4)
        assert np.isfinite(history).all()
        assert history[-1] < 0.7 * history[0], history
    # the Loss object travels with the model: saved and loaded without custom_objects
    path = tmp_path / "ssd.keras"
    models[1].save(path)
    loaded = keras.models.load_model(path)
    restored = loaded.loss
    assert isinstance(restored, MultiboxLoss) and restored.get_config() == MultiboxLoss(4).get_config()


MIRRORED_SCRIPT = textwrap.dedent("""
    import json
    from ssd_keras.models import import_tensorflow_quietly
    import_tensorflow_quietly()
    import tensorflow as tf
    # before the runtime starts: no GPU, the CPU split into two logical devices
    tf.config.set_visible_devices([], "GPU")
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from ssd_keras.ssd import SSD300, prior_boxes
    from ssd_keras.ssd_training import MultiboxLoss
    from ssd_keras.ssd_utils import BBoxUtility

    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = SSD300(num_classes=3, width_multiplier=0.125)
        model.compile(keras.optimizers.Adam(1e-3), loss=MultiboxLoss(3))
    bbox_util = BBoxUtility(3, prior_boxes(model))
    boxes = [[[0.1, 0.1, 0.5, 0.6, 1, 0]], [[0.2, 0.3, 0.9, 0.8, 0, 1], [0.0, 0.0, 0.3, 0.3, 1, 0]],
             np.zeros((0, 6)), [[0.4, 0.4, 0.6, 0.6, 0, 1]]]
    y = np.stack([bbox_util.assign_boxes(np.array(b)) for b in boxes])
    x = np.random.default_rng(0).normal(0.0, 50.0, (4, 300, 300, 3)).astype("float32")
    predictions = model(x).numpy()  # eager: no predict function to trace
    loss = MultiboxLoss(3)
    halves = [float(np.mean(loss.compute_loss(y[i:i + 2], predictions[i:i + 2]))) for i in (0, 2)]
    history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "loss": history.history["loss"],
                      "per_replica": float(np.mean(halves))}))
""")


def test_mirrored_strategy_in_a_subprocess():
    run = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True, text=True,
                         timeout=180, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert np.isfinite(result["loss"]).all()
    # each replica computes its own batch-wide negative count over its half of the batch,
    # Keras averages the two per-replica mean losses
    assert result["loss"][0] == pytest.approx(result["per_replica"], rel=1e-4)
