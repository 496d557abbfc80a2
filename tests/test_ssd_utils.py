"""Tests for ssd_keras.ssd_utils: IoU, encoding, assignment, decoding, NMS, detection_out.

Expectations are independent of the module: hand-computed values, a slow per-box / per-prior
reference written in plain Python loops below, round trips, hypothesis properties, and
``tf.image.non_max_suppression`` for the NMS.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd_keras.ssd_utils import BBoxUtility, iou_matrix, nms

VARIANCES = (0.1, 0.1, 0.2, 0.2)
NUM_CLASSES = 4  # 3 classes + background


# --------------------------------------------------------------------------------------------
# Slow plain-Python reference
# --------------------------------------------------------------------------------------------

def ref_iou(a, b) -> float:
    """IoU of two corner boxes, scalar arithmetic."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ref_encode(box, prior) -> list[float]:
    """Offsets of ``box`` against one 8-column ``prior`` (the SSD box coder)."""
    pw, ph = prior[2] - prior[0], prior[3] - prior[1]
    pcx, pcy = (prior[0] + prior[2]) / 2, (prior[1] + prior[3]) / 2
    bw, bh = box[2] - box[0], box[3] - box[1]
    bcx, bcy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return [(bcx - pcx) / pw / prior[4], (bcy - pcy) / ph / prior[5],
            math.log(bw / pw) / prior[6], math.log(bh / ph) / prior[7]]


def ref_decode(loc, prior, var) -> list[float]:
    """One prior's offsets to clipped corners; the y-centre uses the prior's HEIGHT."""
    pw, ph = prior[2] - prior[0], prior[3] - prior[1]
    pcx, pcy = (prior[0] + prior[2]) / 2, (prior[1] + prior[3]) / 2
    cx = loc[0] * pw * var[0] + pcx
    cy = loc[1] * ph * var[1] + pcy
    w = math.exp(loc[2] * var[2]) * pw
    h = math.exp(loc[3] * var[3]) * ph
    corners = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    return [min(1.0, max(0.0, v)) for v in corners]


def ref_nms(boxes, scores, threshold, max_output) -> list[int]:
    """Greedy NMS: by decreasing score, keep a box unless IoU > threshold with a kept one."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        if len(keep) >= max_output:
            break
        if all(ref_iou(boxes[i], boxes[j]) <= threshold for j in keep):
            keep.append(i)
    return keep


def ref_detection_out(predictions, num_classes, background_label_id, nms_thresh, top_k,
                      keep_top_k, confidence_threshold):
    """Per image a list of rows [label, conf, xmin, ymin, xmax, ymax, prior_index]."""
    results = []
    for image in np.asarray(predictions, dtype=np.float64).tolist():
        boxes = [ref_decode(row[:4], row[-8:-4], row[-4:]) for row in image]
        rows = []
        for c in range(num_classes):
            if c == background_label_id:
                continue
            cand = [p for p, row in enumerate(image) if row[4 + c] > confidence_threshold]
            kept = ref_nms([boxes[p] for p in cand], [image[p][4 + c] for p in cand],
                           nms_thresh, top_k)
            rows += [[c, image[cand[k]][4 + c], *boxes[cand[k]], cand[k]] for k in kept]
        rows.sort(key=lambda r: -r[1])
        results.append(rows[:keep_top_k])
    return results


# --------------------------------------------------------------------------------------------
# Random data
# --------------------------------------------------------------------------------------------

def random_priors(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 8)`` random priors clipped to [0, 1] (non-square), float32."""
    centre = rng.uniform(0.0, 1.0, (n, 2))
    wh = rng.uniform(0.05, 0.5, (n, 2))
    corners = np.clip(np.concatenate([centre - wh / 2, centre + wh / 2], axis=1), 0.0, 1.0)
    return np.concatenate([corners, np.tile(VARIANCES, (n, 1))], axis=1).astype(np.float32)


def random_predictions(rng: np.random.Generator, batch: int, num_priors: int,
                       num_classes: int = NUM_CLASSES) -> np.ndarray:
    """``(batch, num_priors, 4 + num_classes + 8)`` float32, no tied confidences per image."""
    frames = []
    while len(frames) < batch:
        loc = rng.normal(0.0, 1.0, (num_priors, 4))
        logits = rng.normal(0.0, 2.0, (num_priors, num_classes))
        conf = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        frame = np.concatenate([loc, conf, random_priors(rng, num_priors)],
                               axis=1).astype(np.float32)
        scores = frame[:, 4:4 + num_classes]
        if len(np.unique(scores)) == scores.size:  # ties would make the order ill-defined
            frames.append(frame)
    return np.stack(frames)


def grid_priors() -> np.ndarray:
    """A small SSD-like prior set: 4x4 centres, 2 scales, aspect ratios 1, 2, 1/2; clipped."""
    rows = []
    for i in range(4):
        for j in range(4):
            cx, cy = (j + 0.5) / 4, (i + 0.5) / 4
            for scale in (0.3, 0.6):
                for ar in (1.0, 2.0, 0.5):
                    w, h = scale * math.sqrt(ar), scale / math.sqrt(ar)
                    rows.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    corners = np.clip(np.asarray(rows), 0.0, 1.0)
    return np.concatenate([corners, np.tile(VARIANCES, (len(corners), 1))], axis=1)


GRID_PRIORS = grid_priors()


# --------------------------------------------------------------------------------------------
# iou_matrix / BBoxUtility.iou
# --------------------------------------------------------------------------------------------

def test_iou_matrix_hand_computed_values():
    a = np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 1.0]])
    b = np.array([[2.0, 2.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 3.0, 1.0]])
    expected = np.array([[0.0, 1.0, 0.0],          # disjoint, identical, touching edge
                         [0.0, 0.5, 1.0 / 3.0]])   # contains half, half overlap -> 1/3
    np.testing.assert_allclose(iou_matrix(a, b), expected, atol=1e-12)
    assert iou_matrix(a, b).shape == (2, 3)


def test_iou_matrix_ignores_extra_columns_and_empty_union_is_zero():
    a = np.array([[0.0, 0.0, 2.0, 1.0, 9.0, 9.0]])
    b = np.array([[1.0, 0.0, 3.0, 1.0, 0.1, 0.1, 0.2, 0.2]])
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0 / 3.0]])
    point = np.array([[0.5, 0.5, 0.5, 0.5]])
    assert iou_matrix(point, point)[0, 0] == 0.0


boxes_strategy = st.lists(
    st.tuples(st.floats(0.0, 0.9), st.floats(0.0, 0.9), st.floats(0.01, 1.0),
              st.floats(0.01, 1.0)).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]]),
    min_size=1, max_size=6)


@settings(deadline=None, max_examples=60)
@given(boxes_strategy, boxes_strategy)
def test_iou_matrix_symmetric_in_unit_interval_and_matches_reference(a, b):
    m = iou_matrix(np.array(a), np.array(b))
    assert m.shape == (len(a), len(b))
    assert np.all((m >= 0.0) & (m <= 1.0 + 1e-12))
    np.testing.assert_allclose(m, iou_matrix(np.array(b), np.array(a)).T, atol=1e-12)
    expected = [[ref_iou(x, y) for y in b] for x in a]
    np.testing.assert_allclose(m, expected, atol=1e-12)
    np.testing.assert_allclose(np.diag(iou_matrix(np.array(a), np.array(a))), 1.0)


def test_bboxutility_iou_with_every_prior():
    util = BBoxUtility(NUM_CLASSES, GRID_PRIORS)
    box = [0.1, 0.2, 0.55, 0.7]
    expected = [ref_iou(box, p) for p in GRID_PRIORS.tolist()]
    np.testing.assert_allclose(util.iou(np.array(box)), expected, atol=1e-12)
    with pytest.raises(ValueError, match="no priors"):
        BBoxUtility(NUM_CLASSES).iou(np.array(box))


# --------------------------------------------------------------------------------------------
# decode_boxes
# --------------------------------------------------------------------------------------------

def test_decode_boxes_hand_computed_non_square_prior():
    # prior 0.2 wide, 0.4 high, centred at (0.3, 0.3)
    prior = np.array([[0.2, 0.1, 0.4, 0.5]])
    var = np.array([VARIANCES])
    loc = np.array([[1.0, 1.0, 0.0, 0.0]])
    # cx = 0.3 + 1 * 0.2 * 0.1 = 0.32 ; cy = 0.3 + 1 * 0.4 * 0.1 = 0.34 (HEIGHT, not width)
    np.testing.assert_allclose(BBoxUtility.decode_boxes(loc, prior, var),
                               [[0.22, 0.14, 0.42, 0.54]], atol=1e-12,
                               err_msg="y-centre must be offset by the prior's height")
    loc = np.array([[0.0, 0.0, math.log(2.0) / 0.2, math.log(0.5) / 0.2]])
    # width doubled to 0.4, height halved to 0.2, same centre
    np.testing.assert_allclose(BBoxUtility.decode_boxes(loc, prior, var),
                               [[0.1, 0.2, 0.5, 0.4]], atol=1e-12)


def test_decode_boxes_clips_to_unit_square():
    priors = np.array([[0.8, 0.8, 1.0, 1.0], [0.0, 0.0, 0.2, 0.2]])
    var = np.tile(VARIANCES, (2, 1))
    loc = np.array([[0.0, 0.0, 5.0, 5.0], [-10.0, -5.0, 0.0, 0.0]])
    half = 0.5 * 0.2 * math.e  # prior 0 grows by e around centre 0.9
    # prior 1: cx = 0.1 - 10*0.2*0.1 = -0.1, cy = 0.1 - 5*0.2*0.1 = 0.0, size 0.2
    expected = [[0.9 - half, 0.9 - half, 1.0, 1.0], [0.0, 0.0, 0.0, 0.1]]
    out = BBoxUtility.decode_boxes(loc, priors, var)
    np.testing.assert_allclose(out, expected, atol=1e-12)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_decode_boxes_batched_matches_reference():
    rng = np.random.default_rng(1)
    preds = random_predictions(rng, 2, 50).astype(np.float64)
    out = BBoxUtility.decode_boxes(preds[..., :4], preds[..., -8:-4], preds[..., -4:])
    assert out.shape == (2, 50, 4)
    expected = [[ref_decode(r[:4], r[-8:-4], r[-4:]) for r in image] for image in preds.tolist()]
    np.testing.assert_allclose(out, expected, atol=1e-12)


unit_box = st.tuples(st.floats(0.0, 0.95), st.floats(0.0, 0.95), st.floats(0.0, 1.0),
                     st.floats(0.0, 1.0)).map(
    lambda t: [t[0], t[1], t[0] + 0.02 + t[2] * (0.98 - t[0]), t[1] + 0.02 + t[3] * (0.98 - t[1])])


@settings(deadline=None, max_examples=100)
@given(unit_box, st.sampled_from([0.3, 0.5, 0.7]))
def test_decode_inverts_encode_at_every_assigned_prior(box, threshold):
    util = BBoxUtility(NUM_CLASSES, GRID_PRIORS, overlap_threshold=threshold)
    encoded = util.encode_box(np.array(box))
    ious = [ref_iou(box, p) for p in GRID_PRIORS.tolist()]
    above = [i for i, v in enumerate(ious) if v > threshold]
    expected_assigned = above or [int(np.argmax(ious))]
    assigned = np.flatnonzero(encoded[:, 4] > 0)
    assert assigned.tolist() == expected_assigned
    np.testing.assert_allclose(encoded[assigned, 4], [ious[i] for i in assigned], atol=1e-12)
    decoded = BBoxUtility.decode_boxes(encoded[assigned, :4], GRID_PRIORS[assigned, :4],
                                       GRID_PRIORS[assigned, 4:])
    np.testing.assert_allclose(decoded, np.tile(box, (len(assigned), 1)), atol=1e-9)


# --------------------------------------------------------------------------------------------
# encode_box / assign_boxes
# --------------------------------------------------------------------------------------------

THREE_PRIORS = np.array([[0.0, 0.0, 0.5, 0.5, *VARIANCES],
                         [0.25, 0.0, 0.75, 0.5, *VARIANCES],
                         [0.5, 0.0, 1.0, 0.5, *VARIANCES]])
BOX_A = [0.0, 0.0, 0.5, 0.5]    # IoU with priors: 1, 1/3, 0
BOX_B = [0.45, 0.0, 1.0, 0.5]   # IoU with priors: 0.05, 0.4, 10/11


def test_encode_box_hand_made():
    util = BBoxUtility(NUM_CLASSES, THREE_PRIORS, overlap_threshold=0.3)
    out = util.encode_box(np.array(BOX_B))
    assert out.shape == (3, 5)
    np.testing.assert_allclose(out[:, 4], [0.0, 0.4, 0.25 / 0.275], atol=1e-12)
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_allclose(out[1, :4], ref_encode(BOX_B, THREE_PRIORS[1]), atol=1e-12)
    np.testing.assert_allclose(out[2, :4], ref_encode(BOX_B, THREE_PRIORS[2]), atol=1e-12)
    # prior 2 (centre 0.75, width 0.5) vs box centre 0.725, width 0.55:
    np.testing.assert_allclose(out[2, :4], [-0.025 / 0.5 / 0.1, 0.0,
                                            math.log(1.1) / 0.2, 0.0], atol=1e-12)
    no_iou = util.encode_box(np.array(BOX_B), return_iou=False)
    assert no_iou.shape == (3, 4)
    np.testing.assert_allclose(no_iou, out[:, :4])


def test_encode_box_falls_back_to_best_prior():
    util = BBoxUtility(NUM_CLASSES, THREE_PRIORS, overlap_threshold=0.5)
    box = [0.4, 0.1, 0.6, 0.2]  # IoU 0.01/0.26, 0.02/0.25, 0.01/0.26: all below 0.5
    out = util.encode_box(np.array(box))
    np.testing.assert_allclose(out[:, 4], [0.0, 0.08, 0.0], atol=1e-12)
    np.testing.assert_allclose(out[1, :4], ref_encode(box, THREE_PRIORS[1]), atol=1e-12)
    np.testing.assert_array_equal(out[[0, 2]], 0.0)

    assignment = util.assign_boxes(np.array([box + [0.0, 0.0, 1.0]]))
    np.testing.assert_array_equal(assignment[:, 4], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(assignment[1, :4], ref_encode(box, THREE_PRIORS[1]), atol=1e-12)
    np.testing.assert_array_equal(assignment[1, 5:8], [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(assignment[:, -8], [0.0, 1.0, 0.0])


def test_assign_boxes_shared_prior_takes_higher_iou_box():
    util = BBoxUtility(NUM_CLASSES, THREE_PRIORS, overlap_threshold=0.3)
    boxes = np.array([BOX_A + [1.0, 0.0, 0.0],    # class 1
                      BOX_B + [0.0, 1.0, 0.0]])   # class 2
    out = util.assign_boxes(boxes)
    assert out.shape == (3, 4 + NUM_CLASSES + 8)
    # prior 0 <- A (IoU 1); prior 1 matched by A (1/3) and B (0.4) -> B; prior 2 <- B
    owners = [BOX_A, BOX_B, BOX_B]
    for p, owner in enumerate(owners):
        np.testing.assert_allclose(out[p, :4], ref_encode(owner, THREE_PRIORS[p]), atol=1e-12)
    np.testing.assert_array_equal(out[:, 4:8], [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]])
    np.testing.assert_array_equal(out[:, -8], 1.0)
    np.testing.assert_array_equal(out[:, -7:], 0.0)
    # the order of the boxes does not matter
    np.testing.assert_allclose(util.assign_boxes(boxes[::-1]), out)


def test_assign_boxes_unmatched_priors_are_background():
    util = BBoxUtility(NUM_CLASSES, THREE_PRIORS, overlap_threshold=0.5)
    out = util.assign_boxes(np.array([BOX_A + [0.0, 1.0, 0.0]]))
    np.testing.assert_array_equal(out[:, 4], [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(out[1:, :4], 0.0)
    np.testing.assert_array_equal(out[1:, 5:], 0.0)
    np.testing.assert_allclose(out[0, :4], 0.0, atol=1e-12)  # identical to prior 0


@pytest.mark.parametrize("empty", [np.zeros((0, 4 + NUM_CLASSES - 1)), np.zeros((0,)), []])
def test_assign_boxes_without_boxes_is_all_background(empty):
    util = BBoxUtility(NUM_CLASSES, GRID_PRIORS)
    out = util.assign_boxes(np.asarray(empty))
    assert out.shape == (len(GRID_PRIORS), 4 + NUM_CLASSES + 8)
    np.testing.assert_array_equal(out[:, 4], 1.0)
    np.testing.assert_array_equal(np.delete(out, 4, axis=1), 0.0)


def test_degenerate_boxes_raise_naming_the_box():
    util = BBoxUtility(NUM_CLASSES, THREE_PRIORS)
    with pytest.raises(ValueError, match=r"box 0 .*degenerate.*0\.5, 0\.5, 0\.4, 0\.6"):
        util.encode_box(np.array([0.5, 0.5, 0.4, 0.6]))
    boxes = np.array([BOX_A + [1.0, 0.0, 0.0],
                      [0.2, 0.3, 0.4, 0.3, 0.0, 1.0, 0.0]])  # zero height
    with pytest.raises(ValueError, match=r"ground-truth box 1 .*degenerate.*0\.2, 0\.3, 0\.4"):
        util.assign_boxes(boxes)
    with pytest.raises(ValueError, match="not finite"):
        util.encode_box(np.array([0.1, 0.1, np.nan, 0.5]))


def test_wrong_column_counts_raise():
    util = BBoxUtility(NUM_CLASSES, THREE_PRIORS)
    with pytest.raises(ValueError, match=r"4 \+ num_classes - 1"):
        util.assign_boxes(np.array([BOX_A + [1.0, 0.0, 0.0, 0.0]]))  # background column too
    with pytest.raises(ValueError, match=r"4 \+ num_classes - 1"):
        util.assign_boxes(np.array([BOX_A]))
    with pytest.raises(ValueError, match="4 corners"):
        util.encode_box(np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match=r"\(num_priors, 8\)"):
        BBoxUtility(NUM_CLASSES, THREE_PRIORS[:, :4])


# --------------------------------------------------------------------------------------------
# nms
# --------------------------------------------------------------------------------------------

def test_nms_matches_tf_image_non_max_suppression():
    import tensorflow as tf

    rng = np.random.default_rng(7)
    for trial in range(30):
        n = int(rng.integers(1, 120))
        centre = rng.uniform(0, 1, (n, 2))
        wh = rng.uniform(0.02, 0.4, (n, 2))
        boxes = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1).astype(np.float32)
        scores = rng.permutation(n).astype(np.float32) / n + 0.001  # distinct
        threshold = float(rng.choice([0.0, 0.2, 0.45, 0.7, 1.0]))
        max_output = int(rng.integers(1, n + 5))
        # TF takes [y1, x1, y2, x2]; IoU does not care which axis comes first.
        expected = tf.image.non_max_suppression(boxes[:, [1, 0, 3, 2]], scores, max_output,
                                                iou_threshold=threshold).numpy()
        got = nms(boxes, scores, threshold, max_output)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, expected, err_msg=f"trial {trial}")
        np.testing.assert_array_equal(got, ref_nms(boxes.tolist(), scores.tolist(),
                                                   threshold, max_output))


def test_nms_hand_made():
    boxes = np.array([[0, 0, 1, 1], [0, 0, 1, 0.9], [0, 0, 2, 1], [5, 5, 6, 6]], dtype=float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # IoU(0,1) = 0.9 suppressed; IoU(0,2) = 0.5 not above 0.5 -> kept
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, 10), [0, 2, 3])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, 2), [0, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.4, 10), [0, 3])
    assert nms(boxes[:0], scores[:0], 0.5, 10).shape == (0,)


# --------------------------------------------------------------------------------------------
# detection_out
# --------------------------------------------------------------------------------------------

def assert_matches_reference(got, expected, return_indices, context=""):
    assert len(got) == len(expected)
    for image, (g, e) in enumerate(zip(got, expected)):
        columns = 7 if return_indices else 6
        assert g.shape == (len(e), columns), f"{context} image {image}"
        assert g.dtype == np.float64
        if not e:
            continue
        e = np.asarray(e, dtype=np.float64)
        np.testing.assert_array_equal(g[:, 0], e[:, 0], err_msg=f"{context} image {image}")
        np.testing.assert_allclose(g[:, 1:6], e[:, 1:6], atol=1e-5,
                                   err_msg=f"{context} image {image}")
        if return_indices:
            np.testing.assert_array_equal(g[:, 6], e[:, 6], err_msg=f"{context} image {image}")
        assert np.all(np.diff(g[:, 1]) < 0), "detections must be by decreasing confidence"


DETECTION_CONFIGS = [
    # (seed, nms_thresh, top_k, keep_top_k, confidence_threshold, background, return_indices)
    (0, 0.45, 400, 200, 0.01, 0, False),
    (1, 0.45, 400, 200, 0.01, 0, True),
    (2, 0.3, 400, 200, 0.3, 0, True),
    (3, 0.6, 5, 200, 0.01, 0, True),     # top_k cut per class
    (4, 0.45, 400, 7, 0.01, 0, True),    # keep_top_k cut
    (5, 0.45, 400, 200, 0.05, 2, True),  # another class is background
    (6, 0.7, 8, 12, 0.2, 0, False),
    (7, 1.0, 400, 1000, 0.5, 0, True),   # no suppression at all
]


@pytest.mark.parametrize("config", DETECTION_CONFIGS, ids=lambda c: f"seed{c[0]}")
def test_detection_out_matches_loop_reference(config):
    seed, nms_thresh, top_k, keep_top_k, conf_thr, background, return_indices = config
    rng = np.random.default_rng(100 + seed)
    preds = random_predictions(rng, 4, 200)
    util = BBoxUtility(NUM_CLASSES, nms_thresh=nms_thresh, top_k=top_k)
    got = util.detection_out(preds, background_label_id=background, keep_top_k=keep_top_k,
                             confidence_threshold=conf_thr, return_indices=return_indices)
    expected = ref_detection_out(preds, NUM_CLASSES, background, nms_thresh, top_k,
                                 keep_top_k, conf_thr)
    assert_matches_reference(got, expected, return_indices, f"config {config}")
    # the data exercise what the config is about (checked before the keep_top_k cut)
    uncut = ref_detection_out(preds, NUM_CLASSES, background, nms_thresh, top_k, 10**9, conf_thr)
    for rows in uncut:
        labels = [r[0] for r in rows]
        assert background not in labels
        assert len(set(labels)) == NUM_CLASSES - 1
        if keep_top_k < 200:
            assert len(rows) > keep_top_k  # the keep_top_k cut binds
        if top_k < 400:
            assert max(labels.count(c) for c in set(labels)) == top_k  # so does top_k


def test_detection_out_images_without_detections():
    rng = np.random.default_rng(42)
    preds = random_predictions(rng, 3, 60)
    preds[1, :, 4] = 0.9991          # background takes almost everything
    preds[1, :, 5:4 + NUM_CLASSES] = rng.uniform(0.0001, 0.0009, (60, NUM_CLASSES - 1))
    util = BBoxUtility(NUM_CLASSES)
    for return_indices in (False, True):
        columns = 7 if return_indices else 6
        got = util.detection_out(preds, return_indices=return_indices)
        assert got[1].shape == (0, columns)
        assert got[0].shape[0] > 0 and got[2].shape[0] > 0
        expected = ref_detection_out(preds, NUM_CLASSES, 0, 0.45, 400, 200, 0.01)
        assert_matches_reference(got, expected, return_indices)
        # a threshold no confidence reaches: every image is empty
        nothing = util.detection_out(preds, confidence_threshold=1.0,
                                     return_indices=return_indices)
        assert [r.shape for r in nothing] == [(0, columns)] * 3
        assert util.detection_out(preds, keep_top_k=0)[0].shape == (0, 6)


def test_detection_out_confidence_threshold_is_strict():
    priors = [[0.1, 0.1, 0.3, 0.4, *VARIANCES], [0.6, 0.5, 0.9, 0.7, *VARIANCES]]
    conf = [[0.5, 0.25, 0.125, 0.125], [0.25, 0.5, 0.125, 0.125]]  # exact in float32
    preds = np.array([[[0.0] * 4 + c + p for c, p in zip(conf, priors)]], dtype=np.float32)
    util = BBoxUtility(NUM_CLASSES)
    got = util.detection_out(preds, confidence_threshold=0.25, return_indices=True)[0]
    # only prior 1 / class 1 (0.5) is strictly above 0.25; 0.25 itself is not a candidate
    np.testing.assert_allclose(got, [[1.0, 0.5, 0.6, 0.5, 0.9, 0.7, 1.0]], atol=1e-7)
    got = util.detection_out(preds, confidence_threshold=0.125)[0]
    np.testing.assert_allclose(got[:, :2], [[1.0, 0.5], [1.0, 0.25]])


def test_detection_out_rejects_bad_shapes():
    rng = np.random.default_rng(3)
    preds = random_predictions(rng, 1, 10, num_classes=NUM_CLASSES + 1)
    util = BBoxUtility(NUM_CLASSES)
    with pytest.raises(ValueError, match=rf"num_classes={NUM_CLASSES}"):
        util.detection_out(preds)
    with pytest.raises(ValueError, match="batch"):
        util.detection_out(random_predictions(rng, 1, 10)[0])


# --------------------------------------------------------------------------------------------
# The real SSD300 priors of the original port
# --------------------------------------------------------------------------------------------

def test_encode_decode_with_real_ssd300_priors(reference_dir):
    priors = np.load(reference_dir / "prior_boxes_ssd300.npy")
    assert priors.shape == (7308, 8)
    util = BBoxUtility(21, priors)
    box = [0.21, 0.33, 0.58, 0.87]  # a tall box
    encoded = util.encode_box(np.array(box))
    ious = [ref_iou(box, p) for p in priors.astype(np.float64).tolist()]
    expected_assigned = [i for i, v in enumerate(ious) if v > 0.5]
    assigned = np.flatnonzero(encoded[:, 4] > 0)
    assert len(expected_assigned) > 1
    assert assigned.tolist() == expected_assigned
    decoded = BBoxUtility.decode_boxes(encoded[assigned, :4], util.priors[assigned, :4],
                                       util.priors[assigned, 4:])
    np.testing.assert_allclose(decoded, np.tile(box, (len(assigned), 1)), atol=1e-9)
    # assign_boxes agrees for a single box, class 7 of 20
    one_hot = np.eye(20)[6]
    assignment = util.assign_boxes(np.array([box + one_hot.tolist()]))
    np.testing.assert_allclose(assignment[assigned, :4], encoded[assigned, :4])
    assert np.all(assignment[assigned, 11] == 1.0)
    assert np.flatnonzero(assignment[:, 4] == 0).tolist() == expected_assigned


# --------------------------------------------------------------------------------------------
# assign_boxes against a loop reference, on real annotations and edge cases
# --------------------------------------------------------------------------------------------

def ref_assign(boxes, priors, num_classes, threshold=0.5):
    """The original rule, one prior and one box at a time."""
    priors = np.asarray(priors, dtype=np.float64).tolist()
    out = np.zeros((len(priors), 4 + num_classes + 8))
    out[:, 4] = 1.0
    best = [(0.0, None)] * len(priors)  # (iou, box index) of the box that owns each prior
    for b, row in enumerate(np.asarray(boxes, dtype=np.float64).tolist()):
        box = [min(1.0, max(0.0, v)) for v in row[:4]]
        ious = [ref_iou(box, p) for p in priors]
        matched = [p for p, v in enumerate(ious) if v > threshold]
        if not matched:
            matched = [max(range(len(ious)), key=lambda p: (ious[p], -p))]
        for p in matched:
            if ious[p] > best[p][0]:
                best[p] = (ious[p], b)
    for p, (_, b) in enumerate(best):
        if b is None:
            continue
        row = np.asarray(boxes, dtype=np.float64)[b]
        box = np.clip(row[:4], 0.0, 1.0)
        out[p, :4] = ref_encode(box, priors[p])
        out[p, 4] = 0.0
        out[p, 5:-8] = row[4:]
        out[p, -8] = 1.0
    return out


def real_frames(reference_dir, count, seed=0):
    import json

    with open(reference_dir / "gt_pascal.json") as f:
        frames = [np.asarray(v) for v in json.load(f).values() if v]
    rng = np.random.default_rng(seed)
    return [frames[i] for i in rng.choice(len(frames), count, replace=False)]


def test_assign_boxes_on_real_annotations_matches_loop_reference(reference_dir):
    priors = np.load(reference_dir / "prior_boxes_ssd300.npy")
    util = BBoxUtility(4, priors)
    frames = real_frames(reference_dir, 12)
    assert max(len(f) for f in frames) > 1  # some frames with several boxes
    for frame in frames:
        np.testing.assert_allclose(util.assign_boxes(frame), ref_assign(frame, priors, 4),
                                   atol=2e-5, err_msg=str(frame))


@settings(deadline=None, max_examples=40)
@given(st.lists(unit_box, min_size=1, max_size=5), st.randoms(use_true_random=False))
def test_assign_boxes_is_invariant_to_box_order(boxes, random):
    rows = [list(b) + list(np.eye(NUM_CLASSES - 1)[i % (NUM_CLASSES - 1)])
            for i, b in enumerate(boxes)]
    shuffled = rows[:]
    random.shuffle(shuffled)
    util = BBoxUtility(NUM_CLASSES, GRID_PRIORS)
    a, b = util.assign_boxes(np.array(rows)), util.assign_boxes(np.array(shuffled))
    # priors whose two best matching boxes tie in IoU may pick either box: compare the others
    ious = iou_matrix(np.array(boxes), GRID_PRIORS)
    matched = ious > 0.5
    for lonely in np.flatnonzero(~matched.any(axis=1)):
        matched[lonely, ious[lonely].argmax()] = True
    top2 = np.sort(np.vstack([np.where(matched, ious, 0.0), np.zeros(len(GRID_PRIORS))]),
                   axis=0)[-2:]
    untied = np.abs(top2[1] - top2[0]) > 1e-12
    np.testing.assert_allclose(a[untied], b[untied], atol=1e-6)


@pytest.mark.parametrize("box", [
    [0.0, 0.0, 1.0, 1.0],            # the whole image
    [0.5, 0.5, 0.5001, 0.5002],      # tiny: falls back to the single best prior
    [-0.2, 0.3, 0.4, 1.3],           # outside [0, 1]: clipped first
])
def test_assign_boxes_edge_boxes(box):
    util = BBoxUtility(NUM_CLASSES, GRID_PRIORS)
    rows = np.array([box + [0.0, 1.0, 0.0]])
    got = util.assign_boxes(rows)
    np.testing.assert_allclose(got, ref_assign(rows, GRID_PRIORS, NUM_CLASSES), atol=2e-5)
    assert got[:, -8].sum() >= 1 and (got[got[:, -8] == 1, 6] == 1).all()
    if box[2] - box[0] < 0.01:
        assert got[:, -8].sum() == 1


def test_boxes_empty_inside_the_image_raise():
    util = BBoxUtility(NUM_CLASSES, GRID_PRIORS)
    with pytest.raises(ValueError, match=r"ground-truth box 1 .*inside \[0, 1\]"):
        util.assign_boxes(np.array([[0.1, 0.1, 0.5, 0.5, 1, 0, 0],
                                    [1.2, 0.1, 1.5, 0.5, 1, 0, 0]]))


# --------------------------------------------------------------------------------------------
# DetectionOutput, the in-graph decoder
# --------------------------------------------------------------------------------------------

def test_detection_output_layer_equals_detection_out():
    from ssd_keras.ssd_layers import DetectionOutput

    rng = np.random.default_rng(7)
    preds = random_predictions(rng, 3, 300)
    # an image without detections (but for background_label_id=1, where class 0 is an object
    # class: distinct scores, since tied scores may come out in another order)
    preds[2, :, 4] = 0.9991 - rng.uniform(0, 1e-4, 300)
    preds[2, :, 5:4 + NUM_CLASSES] = 0.0003
    for kwargs in [{}, {"keep_top_k": 20, "confidence_threshold": 0.2, "nms_thresh": 0.3},
                   {"top_k": 3, "background_label_id": 1}]:
        layer_kwargs = {k: v for k, v in kwargs.items() if k not in ("nms_thresh", "top_k")}
        util = BBoxUtility(NUM_CLASSES, nms_thresh=kwargs.get("nms_thresh", 0.45),
                           top_k=kwargs.get("top_k", 400))
        expected = util.detection_out(preds, **layer_kwargs)
        out = np.asarray(DetectionOutput(NUM_CLASSES, **kwargs)(preds))
        assert out.shape == (3, kwargs.get("keep_top_k", 200), 6) and out.dtype == np.float32
        for image, rows in enumerate(expected):
            np.testing.assert_allclose(out[image, :len(rows)], rows, atol=1e-5, err_msg=kwargs)
            assert (out[image, len(rows):] == 0).all()
        assert len(expected[2]) == (0 if kwargs.get("background_label_id", 0) == 0 else 3)


def test_detection_output_config_round_trip_and_validation():
    from ssd_keras.ssd_layers import DetectionOutput

    layer = DetectionOutput(5, keep_top_k=9, confidence_threshold=0.3, nms_thresh=0.5, top_k=7)
    clone = DetectionOutput.from_config(layer.get_config())
    assert (clone.keep_top_k, clone.top_k, clone.nms_thresh, clone.confidence_threshold) == \
        (9, 7, 0.5, 0.3)
    for bad in [{"nms_thresh": 1.5}, {"top_k": 0}, {"keep_top_k": 0}, {"background_label_id": 5}]:
        with pytest.raises(ValueError):
            DetectionOutput(5, **bad)
