"""Tests for ssd_keras.evaluation: VOC AP, the devkit's matching rule, evaluate_model, the CLI.

Expectations are independent of the module: hand-computed curves and APs, a plain-Python loop
reference of the devkit's ``VOCevaldet.m`` / ``VOCap`` (keeping the rows of detections on
difficult boxes, as the devkit does), properties over random scenes, and a stub detector that
finds coloured rectangles in the images (so ``evaluate_model``'s normalisation is checked).
"""

from __future__ import annotations

import json
import math
import types

import numpy as np
import pytest
from matplotlib.figure import Figure

from ssd_keras import cli, evaluation
from ssd_keras.evaluation import (
    average_precision,
    evaluate_detections,
    evaluate_model,
    format_results,
    plot_pr_curves,
    save_results_json,
)
from ssd_keras.ssd import SSD300, VOC_CLASSES
from ssd_keras.visualization import save_image
from tests.conftest import THIN_WIDTH
from tests.test_ssd_utils import ref_iou  # scalar-arithmetic IoU

METHODS = ("area", "voc07")


def ann(boxes, labels, difficult=None) -> dict:
    out = {"boxes": np.asarray(boxes, dtype=float).reshape(-1, 4), "labels": np.asarray(labels, dtype=int)}
    if difficult is not None:
        out["difficult"] = np.asarray(difficult, dtype=bool)
    return out


def dets(*rows) -> np.ndarray:
    """Rows (label, confidence, box)."""
    return np.array([[label, conf, *box] for label, conf, box in rows], dtype=float).reshape(-1, 6)


# --------------------------------------------------------------------------------------------
# Plain-Python reference of the devkit
# --------------------------------------------------------------------------------------------

def ref_ap(rec, prec, method) -> float:
    if method == "voc07":
        total = 0.0
        for i in range(11):
            total += max([p for r, p in zip(rec, prec) if r >= i / 10], default=0.0) / 11
        return total
    mrec, mpre = [0.0, *rec, 1.0], [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def ref_class(detections, annotations, label, thr, method):
    """VOCevaldet.m for one class: returns (ap, tp flags, fp flags) with the devkit's rows."""
    found = [(row[1], img, row[2:6]) for img, d in enumerate(detections) for row in np.asarray(d).tolist()
             if int(row[0]) == label]
    found = sorted(found, key=lambda f: -f[0])  # stable
    taken, tp, fp = set(), [], []
    npos = sum(1 for a in annotations for lab, dif in zip(a["labels"], a["difficult"]) if lab == label and not dif)
    for _, img, box in found:
        a = annotations[img]
        difficult = a["difficult"]
        ovmax, jmax = -math.inf, None
        for j, (gt, lab) in enumerate(zip(a["boxes"].tolist(), a["labels"])):
            if lab == label and ref_iou(box, gt) > ovmax:
                ovmax, jmax = ref_iou(box, gt), j
        if ovmax >= thr:
            if difficult[jmax]:
                tp.append(0), fp.append(0)
            elif (img, jmax) not in taken:
                taken.add((img, jmax))
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        else:
            tp.append(0), fp.append(1)
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    if npos == 0:
        return math.nan, tp, fp
    rec = (ctp / npos).tolist()
    prec = (ctp / np.maximum(ctp + cfp, np.finfo(float).eps)).tolist()
    return ref_ap(rec, prec, method), tp, fp


def random_scene(rng, num_images=5, num_classes=4, grid=True, tie_scores=True):
    """Boxes on a 0.5 grid in [0, 12] (exact IoUs, ties and IoUs equal to the threshold), some
    difficult; detections near ground truth, duplicates and random boxes."""
    detections, annotations = [], []
    for _ in range(num_images):
        n = int(rng.integers(0, 5))
        xy = rng.integers(0, 16, (n, 2)) / 2
        wh = rng.integers(1, 12, (n, 2)) / 2
        boxes = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.integers(1, num_classes, n)
        annotations.append(ann(boxes, labels, rng.random(n) < 0.2))
        rows = []
        for box, label in zip(boxes, labels):
            for _ in range(int(rng.integers(0, 3))):
                jitter = rng.integers(-2, 3, 4) / 2 if grid else rng.normal(0, 0.5, 4)
                moved = box + jitter
                moved[2:] = np.maximum(moved[2:], moved[:2] + 0.5)
                rows.append([label if rng.random() < 0.9 else rng.integers(1, num_classes), 0, *moved])
        for _ in range(int(rng.integers(0, 3))):
            xy = rng.integers(0, 16, 2) / 2
            rows.append([rng.integers(1, num_classes), 0, *xy, *(xy + rng.integers(1, 12, 2) / 2)])
        rows = np.array(rows, dtype=float).reshape(-1, 6)
        rows[:, 1] = rng.integers(1, 6, len(rows)) / 5 if tie_scores else rng.random(len(rows))
        detections.append(rows)
    return detections, annotations


# --------------------------------------------------------------------------------------------
# average_precision
# --------------------------------------------------------------------------------------------

def test_ap_methods_differ_on_hand_computed_curve():
    # TP, FP, TP with 2 ground truths.
    precision, recall = np.array([1.0, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])
    # Envelope 1 on (0, .5], 2/3 on (.5, 1].
    assert average_precision(recall, precision, "area") == pytest.approx(0.5 + 0.5 * 2 / 3)
    # t = 0 .. 0.5: 1 (6 points); t = 0.6 .. 1: 2/3 (5 points).
    assert average_precision(recall, precision, "voc07") == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_ap_recall_not_reaching_one():
    precision, recall = np.array([1.0, 0.5]), np.array([0.5, 0.5])
    assert average_precision(recall, precision, "area") == pytest.approx(0.5)
    assert average_precision(recall, precision, "voc07") == pytest.approx(6 / 11)


def test_ap_voc07_recall_levels_are_exact_tenths():
    # 3 of 10 found: recall 3/10 must reach the level 0.3 (0.1 * 3 = 0.30000000000000004 would not).
    recall = np.arange(1, 4) / 10
    assert average_precision(recall, np.ones(3), "voc07") == pytest.approx(4 / 11)
    assert average_precision(recall, np.ones(3), "area") == pytest.approx(0.3)


def test_ap_empty_curve_and_bad_arguments():
    for method in METHODS:
        assert average_precision(np.zeros(0), np.zeros(0), method) == 0.0
    with pytest.raises(ValueError, match="method"):
        average_precision([0.5], [1.0], "coco")
    with pytest.raises(ValueError, match="same length"):
        average_precision([0.5, 1.0], [1.0], "area")


# --------------------------------------------------------------------------------------------
# evaluate_detections: hand-computed cases
# --------------------------------------------------------------------------------------------

A, B = [0, 0, 10, 10], [20, 20, 30, 30]


def test_true_positives_duplicates_and_misses():
    detections = [dets((1, 0.9, A), (1, 0.8, [0, 0, 10, 10.5]), (1, 0.7, [50, 50, 60, 60]), (1, 0.6, B))]
    annotations = [ann([A, B], [1, 1])]
    result = evaluate_detections(detections, annotations, num_classes=2)
    c = result["classes"][1]
    np.testing.assert_allclose(c["precision"], [1, 1 / 2, 1 / 3, 2 / 4])
    np.testing.assert_allclose(c["recall"], [0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(c["confidence"], [0.9, 0.8, 0.7, 0.6])
    assert (c["num_gt"], c["num_detections"], c["num_tp"], c["num_fp"]) == (2, 4, 2, 2)
    assert c["ap"] == pytest.approx(0.5 * 1 + 0.5 * 0.5)
    assert result["mAP"] == c["ap"]
    voc07 = evaluate_detections(detections, annotations, 2, method="voc07")
    assert voc07["classes"][1]["ap"] == pytest.approx((6 + 5 * 0.5) / 11)
    assert (voc07["method"], voc07["iou_threshold"], voc07["num_images"]) == ("voc07", 0.5, 1)


def test_duplicate_is_the_lower_confidence_one_even_with_higher_iou():
    detections = [dets((1, 0.8, [0, 0, 10, 10]), (1, 0.9, [0, 0, 10, 16]))]  # IoU 1.0 and 0.625
    c = evaluate_detections(detections, [ann([A], [1])], 2)["classes"][1]
    np.testing.assert_allclose(c["precision"], [1.0, 0.5])
    np.testing.assert_allclose(c["confidence"], [0.9, 0.8])


def test_detection_takes_its_best_box_even_when_taken():
    # A and A2 overlap (IoU 100/120). The second detection's best box is A (IoU 0.952), already
    # taken: a duplicate, although A2 (IoU 0.875) is free. The devkit's rule.
    a2 = [0, 0, 10, 12]
    detections = [dets((1, 0.9, A), (1, 0.8, [0, 0, 10, 10.5]))]
    c = evaluate_detections(detections, [ann([A, a2], [1, 1])], 2)["classes"][1]
    np.testing.assert_allclose(c["precision"], [1.0, 0.5])
    np.testing.assert_allclose(c["recall"], [0.5, 0.5])
    assert c["ap"] == pytest.approx(0.5)


def test_confidence_ties_keep_image_order():
    # Both detections score 0.5: image 0's (a miss) comes first.
    detections = [dets((1, 0.5, B)), dets((1, 0.5, A))]
    annotations = [ann([A], [1]), ann([A], [1])]
    c = evaluate_detections(detections, annotations, 2)["classes"][1]
    np.testing.assert_allclose(c["precision"], [0.0, 0.5])
    np.testing.assert_allclose(c["recall"], [0.0, 0.5])
    assert c["ap"] == pytest.approx(0.25)  # envelope 0.5 on (0, 0.5]
    swapped = evaluate_detections(detections[::-1], annotations[::-1], 2)["classes"][1]
    np.testing.assert_allclose(swapped["precision"], [1.0, 0.5])
    assert swapped["ap"] == pytest.approx(0.5)


def test_iou_threshold_is_inclusive_and_without_plus_one():
    # [0, 0, 1, 1] in [0, 0, 2, 1]: IoU 1/2 exactly (2/3 with the devkit's +1 pixel widths).
    detections = [dets((1, 0.9, [0, 0, 1, 1]))]
    annotations = [ann([[0, 0, 2, 1]], [1])]
    assert evaluate_detections(detections, annotations, 2, iou_threshold=0.5)["mAP"] == 1.0
    assert evaluate_detections(detections, annotations, 2, iou_threshold=0.6)["mAP"] == 0.0


def test_difficult_boxes_count_as_neither():
    difficult, normal = [0, 0, 10, 10], [20, 0, 30, 10]
    detections = [dets((1, 0.95, [0, 0, 10, 2]),  # IoU 0.2 with the difficult box: false positive
                       (1, 0.9, difficult),        # on the difficult box: ignored
                       (1, 0.8, normal))]          # true positive
    c = evaluate_detections(detections, [ann([difficult, normal], [1, 1], [True, False])], 2)["classes"][1]
    assert (c["num_gt"], c["num_detections"], c["num_tp"], c["num_fp"]) == (1, 3, 1, 1)
    np.testing.assert_allclose(c["precision"], [0.0, 0.5])
    np.testing.assert_allclose(c["recall"], [0.0, 1.0])
    np.testing.assert_allclose(c["confidence"], [0.95, 0.8])
    assert c["ap"] == pytest.approx(0.5)  # counted as a FP: 1/3; as a TP: recall 1 at precision 2/3


def test_best_box_difficult_ignores_detection_and_leaves_other_box_free():
    detections = [dets((1, 0.9, A))]
    annotations = [ann([A, [0, 0, 10, 12]], [1, 1], [True, False])]
    c = evaluate_detections(detections, annotations, 2)["classes"][1]
    assert (c["num_gt"], c["num_detections"], c["num_tp"], c["num_fp"]) == (1, 1, 0, 0)
    assert len(c["precision"]) == 0 and c["ap"] == 0.0


def test_classes_without_ground_truth_are_left_out_of_map():
    detections = [dets((1, 0.9, A), (2, 0.8, B)), dets((3, 0.7, A))]
    annotations = [ann([A], [1]), ann([A], [3], [True])]  # class 3: only a difficult box
    result = evaluate_detections(detections, annotations, num_classes=5)
    assert set(result["classes"]) == {1, 2, 3, 4}
    assert result["mAP"] == 1.0
    two, three, four = (result["classes"][k] for k in (2, 3, 4))
    assert math.isnan(two["ap"]) and two["num_gt"] == 0 and two["num_fp"] == 1
    np.testing.assert_allclose(two["precision"], [0.0])
    assert math.isnan(three["ap"]) and three["num_gt"] == 0 and three["num_detections"] == 1
    assert math.isnan(four["ap"]) and four["num_detections"] == 0 and len(four["precision"]) == 0


@pytest.mark.parametrize("empty", [np.zeros((0, 6)), np.zeros((0, 7)), np.zeros(0), []])
def test_images_without_detections(empty):
    detections = [dets((1, 0.9, A)), empty]
    c = evaluate_detections(detections, [ann([A], [1]), ann([B], [1])], 2)["classes"][1]
    np.testing.assert_allclose(c["recall"], [0.5])
    assert c["ap"] == pytest.approx(0.5)


def test_empty_inputs():
    result = evaluate_detections([], [], num_classes=3)
    assert math.isnan(result["mAP"]) and result["num_images"] == 0
    assert all(math.isnan(c["ap"]) and len(c["recall"]) == 0 for c in result["classes"].values())
    # Ground truth but no detection anywhere: AP 0; no ground truth but detections: no mAP.
    result = evaluate_detections([np.zeros((0, 6))] * 2, [ann([A], [1]), ann(np.zeros((0, 4)), [])], 3)
    assert result["mAP"] == 0.0 and result["classes"][1]["num_gt"] == 1
    assert math.isnan(evaluate_detections([dets((1, 0.5, A))], [ann([], [])], 2)["mAP"])


def test_extra_columns_are_ignored():
    detections, annotations = random_scene(np.random.default_rng(1))
    with_index = [np.column_stack([d, np.arange(len(d))]) for d in detections]
    assert_same(evaluate_detections(with_index, annotations, 4), evaluate_detections(detections, annotations, 4))


def test_bad_input_is_named():
    good = [ann([A], [1])]
    with pytest.raises(ValueError, match="1 images but annotations for 2"):
        evaluate_detections([dets()], good * 2, 2)
    with pytest.raises(ValueError, match=r"image 0, row 1: label 2 .*\[1, 1\]"):
        evaluate_detections([dets((1, 0.5, A), (2, 0.5, A))], good, 2)
    with pytest.raises(ValueError, match="image 0, row 0: label 0"):
        evaluate_detections([dets((0, 0.5, A))], good, 2)
    with pytest.raises(ValueError, match="image 0.*non-finite"):
        evaluate_detections([dets((1, np.nan, A))], good, 2)
    with pytest.raises(ValueError, match="detections of image 0 must be"):
        evaluate_detections([np.zeros((2, 5))], good, 2)
    with pytest.raises(ValueError, match="annotation of image 1: boxes must be"):
        evaluate_detections([dets()] * 2, [good[0], {"boxes": np.zeros((2, 3)), "labels": [1, 1]}], 2)
    with pytest.raises(ValueError, match="annotation of image 0: labels"):
        evaluate_detections([dets()], [ann([A], [2])], 2)
    with pytest.raises(ValueError, match="'difficult' has 2 values for 1 boxes"):
        evaluate_detections([dets()], [ann([A], [1], [True, False])], 2)
    with pytest.raises(ValueError, match="must be a dict"):
        evaluate_detections([dets()], [np.zeros((1, 4))], 2)
    with pytest.raises(ValueError, match="iou_threshold"):
        evaluate_detections([dets()], good, 2, iou_threshold=0.0)
    with pytest.raises(ValueError, match="method"):
        evaluate_detections([dets()], good, 2, method="11point")
    with pytest.raises(ValueError, match="num_classes"):
        evaluate_detections([dets()], good, 1)


# --------------------------------------------------------------------------------------------
# evaluate_detections: the loop reference and properties
# --------------------------------------------------------------------------------------------

def assert_same(a, b):
    assert a["classes"].keys() == b["classes"].keys()
    for label in a["classes"]:
        ca, cb = a["classes"][label], b["classes"][label]
        for key in ("precision", "recall", "confidence"):
            np.testing.assert_array_equal(ca[key], cb[key])
        for key in ("ap", "num_gt", "num_detections", "num_tp", "num_fp"):
            assert ca[key] == cb[key] or (math.isnan(ca[key]) and math.isnan(cb[key])), (label, key)
    assert a["mAP"] == b["mAP"] or (math.isnan(a["mAP"]) and math.isnan(b["mAP"]))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("iou_threshold", [0.5, 0.3])
def test_matches_devkit_loop_reference(method, iou_threshold):
    rng = np.random.default_rng(7)
    checked_tp = checked_ignored = 0
    for _ in range(60):
        detections, annotations = random_scene(rng)
        result = evaluate_detections(detections, annotations, 4, iou_threshold, method)
        aps = []
        for label in (1, 2, 3):
            ap, tp, fp = ref_class(detections, annotations, label, iou_threshold, method)
            c = result["classes"][label]
            assert (c["num_tp"], c["num_fp"], c["num_detections"]) == (sum(tp), sum(fp), len(tp))
            if math.isnan(ap):
                assert math.isnan(c["ap"])
            else:
                assert c["ap"] == pytest.approx(ap, abs=1e-12)
                aps.append(ap)
            checked_tp += sum(tp)
            checked_ignored += len(tp) - sum(tp) - sum(fp)
        assert result["mAP"] == pytest.approx(np.mean(aps) if aps else math.nan, nan_ok=True)
    assert checked_tp > 50 and checked_ignored > 5  # the scenes exercise the rule


@pytest.mark.parametrize("method", METHODS)
def test_perfect_detections_score_one(method):
    rng = np.random.default_rng(3)
    for _ in range(20):
        _, annotations = random_scene(rng, tie_scores=False)
        for a in annotations:
            a["difficult"][:] = False
        detections = []
        for a in annotations:
            rows = np.column_stack([a["labels"], 0.5 + 0.5 * rng.random(len(a["labels"])), a["boxes"]])
            misses = [[1, 0.4 * rng.random(), 100, 100, 101, 101] for _ in range(int(rng.integers(0, 3)))]
            detections.append(np.concatenate([rows, np.reshape(misses, (-1, 6))]))
        result = evaluate_detections(detections, annotations, 4, method=method)
        for c in result["classes"].values():
            assert c["ap"] == pytest.approx(1.0) or c["num_gt"] == 0
        assert result["mAP"] == pytest.approx(1.0) or math.isnan(result["mAP"])


def test_image_order_does_not_matter():
    rng = np.random.default_rng(5)
    for _ in range(30):
        detections, annotations = random_scene(rng, num_images=6, grid=False, tie_scores=False)
        order = rng.permutation(len(detections))
        for method in METHODS:
            assert_same(evaluate_detections(detections, annotations, 4, method=method),
                        evaluate_detections([detections[i] for i in order], [annotations[i] for i in order],
                                            4, method=method))


# --------------------------------------------------------------------------------------------
# evaluate_model
# --------------------------------------------------------------------------------------------

COLORS = {1: (255, 0, 0), 2: (0, 0, 255)}  # label -> RGB of its rectangles
NAMES = {1: "cat", 2: "chair"}  # sorted, so the CSV's own labels are these


@pytest.fixture()
def rect_csv(tmp_path):
    """3 PNGs (two not square) with a red 'cat' rectangle in the left half and a blue 'chair'
    one in the right half, on black; the last image has no objects. The boxes are the
    rectangles' pixels in continuous coordinates."""
    rng = np.random.default_rng(0)
    lines = ["image_path,xmin,ymin,xmax,ymax,class_name,difficult"]
    for i, (height, width) in enumerate([(90, 160), (150, 80), (100, 100)]):
        image = np.zeros((height, width, 3), np.uint8)
        name = f"img{i}.png"
        for label in (1, 2) if i < 2 else ():
            x0 = (label - 1) * (width // 2) + int(rng.integers(0, width // 4))
            x1 = x0 + int(rng.integers(4, width // 4))
            y0 = int(rng.integers(0, height // 2))
            y1 = y0 + int(rng.integers(8, height // 2))
            image[y0:y1, x0:x1] = COLORS[label]
            lines.append(f"{name},{x0},{y0},{x1},{y1},{NAMES[label]},0")
        if i == 2:
            lines.append(f"{name},,,,,,")
        save_image(tmp_path / name, image)
    (tmp_path / "test.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "test.csv"


def test_evaluate_model_normalises_boxes_per_image(rect_csv, monkeypatch):
    """A stub detector that reports each colour's pixels as a normalised box scores AP 1."""
    seen = []

    def find_rectangles(model, images, bbox_util=None, confidence_threshold=0.01, batch_size=8, **kwargs):
        out = []
        for image in images:
            seen.append(image.shape)
            rows = []
            for label, color in COLORS.items():
                ys, xs = np.nonzero((image == color).all(axis=-1))
                if len(xs):
                    h, w = image.shape[:2]
                    rows.append([label, 0.9, xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h])
            out.append(np.reshape(rows, (-1, 6)))
        return out

    monkeypatch.setattr(evaluation, "detect", find_rectangles)
    fake = types.SimpleNamespace(name="stub", output_shape=(None, 7308, 4 + 3 + 8))
    result = evaluate_model(fake, rect_csv, batch_size=2, verbose=0)
    assert seen == [(90, 160, 3), (150, 80, 3), (100, 100, 3)]
    assert result["class_names"] == ["cat", "chair"]
    assert result["mAP"] == 1.0
    assert [result["classes"][k]["num_gt"] for k in (1, 2)] == [2, 2]
    with pytest.raises(ValueError, match="predicts 3 classes .* 20 class names"):
        evaluate_model(fake, rect_csv, classes=list(VOC_CLASSES), verbose=0)


def test_evaluate_model_untrained_thin_ssd(thin_ssd, rect_csv, capsys):
    result = evaluate_model(thin_ssd, rect_csv, classes=list(VOC_CLASSES), verbose=1, method="voc07")
    assert "3/3" in capsys.readouterr().out  # the progress bar
    assert {"mAP", "classes", "class_names", "method", "iou_threshold", "num_images"} <= result.keys()
    assert result["class_names"] == list(VOC_CLASSES) and result["num_images"] == 3
    assert len(result["classes"]) == 20
    with_gt = [c for c in result["classes"].values() if c["num_gt"]]
    assert len(with_gt) == 2
    for c in with_gt:
        assert {"ap", "precision", "recall", "num_gt", "num_detections"} <= c.keys()
        assert np.isfinite(c["ap"]) and np.isfinite(c["precision"]).all() and np.isfinite(c["recall"]).all()
    assert sum(c["num_detections"] for c in result["classes"].values()) > 0
    assert 0.0 <= result["mAP"] < 0.5  # random weights


# --------------------------------------------------------------------------------------------
# Reporting and the CLI
# --------------------------------------------------------------------------------------------

def strict_json(path):
    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=reject)


def test_plot_table_and_json(tmp_path):
    detections = [dets((1, 0.9, A), (2, 0.7, A))]
    result = evaluate_detections(detections, [ann([A, B, [40, 40, 50, 50]], [1, 1, 3])], 4)
    names = ["cat", "dog", "cow"]
    figure = plot_pr_curves(result, names, path=tmp_path / "sub" / "pr.png")
    assert isinstance(figure, Figure)
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels == ["cat (AP 0.500)", "cow (AP 0.000)"]  # classes with ground truth only
    assert (tmp_path / "sub" / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = format_results(result, names).splitlines()
    assert table[1].split() == ["cat", "0.5000", "2", "1"]
    assert table[3].split() == ["cow", "0.0000", "1", "0"]
    assert table[2].split() == ["dog", "-", "0", "1"]
    assert table[-1].startswith("mAP (area, IoU >= 0.5): 0.2500 over 2 classes")

    save_results_json(result, tmp_path / "r.json", names)
    data = strict_json(tmp_path / "r.json")
    assert data["mAP"] == 0.25 and data["classes"]["2"]["ap"] is None
    assert data["classes"]["1"]["name"] == "cat" and data["classes"]["1"]["precision"] == [1.0]


def thin_run(folder, classes) -> str:
    """A thin training run (``config.json`` beside ``final.weights.h5``) for ``classes``."""
    folder.mkdir(parents=True)
    SSD300(num_classes=len(classes) + 1, width_multiplier=THIN_WIDTH).save_weights(folder / "final.weights.h5")
    (folder / "config.json").write_text(json.dumps(
        {"classes": list(classes), "width_multiplier": THIN_WIDTH, "input_shape": [300, 300, 3]}))
    return str(folder / "final.weights.h5")


@pytest.fixture()
def no_voc_weights(monkeypatch, tmp_path):
    """No VOC weights are found: the embedded shapes model is the default."""
    import ssd_keras.models

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ssd_keras.models.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(ssd_keras.models, "_CHECKOUT_WEIGHTS", tmp_path / "no_checkout_weights")


def test_cli_evaluate_writes_table_json_and_plot(rect_csv, tmp_path, capsys):
    weights = thin_run(tmp_path / "run", ["cat", "chair"])  # the run's width: no --width-multiplier
    out = tmp_path / "out"
    code = cli.main(["evaluate", "--csv", str(rect_csv), "--weights", weights, "--method", "voc07", "--iou", "0.4",
                     "--json", str(out / "r.json"), "--plot", str(out / "pr.png"), "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert f"model: {weights}" in stdout and "model from" in stdout and "3 images, 2 classes" in stdout
    assert "mAP (voc07, IoU >= 0.4)" in stdout
    rows = {line.split()[0]: line.split() for line in stdout.splitlines() if line.split()[:1] in (["cat"], ["chair"])}
    assert rows.keys() == {"cat", "chair"} and rows["cat"][2] == "2"
    data = strict_json(out / "r.json")
    assert data["method"] == "voc07" and data["iou_threshold"] == 0.4 and data["class_names"] == ["cat", "chair"]
    assert data["classes"]["1"]["name"] == "cat" and isinstance(data["classes"]["1"]["precision"], list)
    assert 0.0 <= data["mAP"] <= 1.0
    assert (out / "pr.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_evaluate_maps_a_subset_of_the_model_classes_onto_its_order(rect_csv, tmp_path, capsys):
    weights = thin_run(tmp_path / "run", ["dog", "chair", "cat"])
    code = cli.main(["evaluate", "--csv", str(rect_csv), "--weights", weights, "--json", str(tmp_path / "r.json"),
                     "--quiet"])
    assert code == 0
    assert "3 images, 2 classes of the model's 3 (the others have no ground truth" in capsys.readouterr().out
    data = strict_json(tmp_path / "r.json")
    assert data["class_names"] == ["dog", "chair", "cat"]
    assert [data["classes"][k]["num_gt"] for k in ("1", "2", "3")] == [0, 2, 2]  # the CSV's labels, remapped
    assert data["classes"]["3"]["name"] == "cat"


def test_cli_evaluate_names_csv_classes_the_model_does_not_know(rect_csv, tmp_path, capsys):
    weights = thin_run(tmp_path / "run", ["cat", "dog"])
    assert cli.main(["evaluate", "--csv", str(rect_csv), "--weights", weights, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "classes the model does not know: chair" in err and "the model's classes: cat, dog" in err


def test_cli_evaluate_width_contradicting_the_run_is_an_error(rect_csv, tmp_path, capsys):
    weights = thin_run(tmp_path / "run", ["cat", "chair"])
    assert cli.main(["evaluate", "--csv", str(rect_csv), "--weights", weights, "--width-multiplier", "0.5"]) == 1
    assert "width multiplier 0.5" in capsys.readouterr().err


def test_cli_evaluate_without_weights_needs_a_model_for_the_csv_classes(no_voc_weights, rect_csv, capsys):
    assert cli.main(["evaluate", "--csv", str(rect_csv), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "does not know: cat, chair" in err and "circle, square, triangle, star" in err


def test_cli_evaluate_allow_untrained_without_weights(no_voc_weights, rect_csv, capsys):
    code = cli.main(["evaluate", "--csv", str(rect_csv), "--width-multiplier", str(THIN_WIDTH), "--allow-untrained",
                     "--quiet"])
    captured = capsys.readouterr()
    assert code == 0 and "UNTRAINED" in captured.err and "WARNING" in captured.err
    assert "mAP (area" in captured.out and "3 images, 2 classes" in captured.out
