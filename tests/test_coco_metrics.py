"""COCO metrics (ssd_keras.coco_metrics), saved-detection evaluation (``evaluate --detections``) and
``detect --coco-json``.

The metrics must be pycocotools' own: each is compared with pycocotools called here directly on
the same data (built independently of ``coco_dataset``), and a few small cases are checked by hand.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssd_keras import cli, layout
from ssd_keras.boxes import to_normalized, to_pixels
from ssd_keras.coco_metrics import (METRIC_KEYS, MissingDependencyError, coco_evaluate, format_coco_results,
                                    save_coco_json)
from ssd_keras.data import make_scene, write_annotations
from ssd_keras.detections_csv import write_detections_csv
from ssd_keras.visualization import save_image
from tests.test_cli import run_tracking_imports

NAMES = ["cat", "dog", "cow"]


def record(boxes, labels, difficult=None, width=200, height=100, path="x.png"):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return {"image_path": path, "width": width, "height": height, "boxes": boxes,
            "labels": np.asarray(labels, np.int64).reshape(-1),
            "difficult": np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool)}


def rows(pixel_rows, width=200, height=100):
    """Detection rows with normalised corners from ``[label, score, x1, y1, x2, y2]`` in pixels."""
    out = np.asarray(pixel_rows, np.float64).reshape(-1, layout.DETECTION_COLUMNS).copy()
    out[:, layout.BOX] = to_normalized(out[:, layout.BOX], width, height)
    return out


# --------------------------------------------------------------------------------------------
# hand-checkable cases


def test_perfect_detections_score_one():
    truth = [record([[10, 10, 60, 50], [100, 20, 190, 90]], [1, 2]), record([[0, 0, 20, 20]], [1])]
    found = [rows([[1, 0.9, 10, 10, 60, 50], [2, 0.8, 100, 20, 190, 90]]), rows([[1, 0.7, 0, 0, 20, 20]])]
    result = coco_evaluate(truth, found, NAMES)
    assert result["AP"] == pytest.approx(1.0) and result["AP50"] == pytest.approx(1.0)
    assert result["AR100"] == pytest.approx(1.0) and result["AR1"] == pytest.approx(1.0)
    assert result["per_class"]["cat"]["AP"] == pytest.approx(1.0)
    assert math.isnan(result["per_class"]["cow"]["AP"])  # no ground truth
    assert math.isnan(result["APl"])  # no box over 96² pixels
    assert result["per_class"]["cat"]["num_gt"] == 2 and result["per_class"]["cat"]["num_detections"] == 2


def test_a_detection_of_iou_062_counts_at_ap50_not_at_ap75():
    truth = [record([[0, 0, 100, 100]], [1], width=300, height=300)]
    found = [rows([[1, 0.9, 0, 0, 100, 62]], width=300, height=300)]  # IoU 0.62
    result = coco_evaluate(truth, found, NAMES)
    assert result["AP50"] == pytest.approx(1.0) and result["AP75"] == 0.0
    assert result["AP"] == pytest.approx(0.3)  # matched at IoU 0.50, 0.55, 0.60 of the ten


def test_a_detection_on_a_difficult_box_counts_neither_way():
    truth = [record([[10, 10, 60, 50], [100, 20, 190, 90]], [1, 1], difficult=[False, True])]
    found = [rows([[1, 0.9, 100, 20, 190, 90], [1, 0.8, 10, 10, 60, 50]])]  # the crowd one scores higher
    result = coco_evaluate(truth, found, NAMES)
    assert result["AP"] == pytest.approx(1.0)
    assert result["per_class"]["cat"]["num_gt"] == 1 and result["per_class"]["cat"]["num_crowd"] == 1


def test_no_detections_score_zero():
    result = coco_evaluate([record([[10, 10, 60, 50]], [2])], [np.zeros((0, 6))], NAMES)
    assert result["AP"] == 0.0 and result["AR100"] == 0.0


# --------------------------------------------------------------------------------------------
# equal to pycocotools called directly


def random_case(seed: int):
    """Ground truth and noisy detections (pixels) on 6 images of various sizes."""
    rng = np.random.default_rng(seed)
    truth, found = [], []
    for _ in range(6):
        width, height = rng.integers(100, 640, 2)
        count = rng.integers(0, 6)
        xy = rng.uniform(0, 0.7, (count, 2)) * [width, height]
        wh = rng.uniform(0.05, 0.3, (count, 2)) * [width, height]
        boxes = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.integers(1, 4, count)
        truth.append(record(boxes, labels, rng.uniform(size=count) < 0.15, width, height))
        noisy = boxes + rng.normal(0, 0.08, boxes.shape) * np.tile(wh, 2)
        extra = rng.uniform(0, 1, (3, 4)) * [width, height, width, height]
        extra = np.concatenate([np.minimum(extra[:, :2], extra[:, 2:]), np.maximum(extra[:, :2], extra[:, 2:])], 1)
        pixel = np.concatenate([noisy, extra])
        det_labels = np.concatenate([labels, rng.integers(1, 4, 3)])
        scores = rng.uniform(0.05, 1, len(pixel))
        found.append(np.column_stack([det_labels, scores, pixel]))
    return truth, found


def pycocotools_directly(truth, found, cat_ids=None):
    gt = {"images": [{"id": i} for i in range(1, len(truth) + 1)],
          "categories": [{"id": c} for c in range(1, 4)], "annotations": []}
    for image_id, r in enumerate(truth, 1):
        for box, label, crowd in zip(r["boxes"], r["labels"], r["difficult"]):
            w, h = box[2] - box[0], box[3] - box[1]
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id,
                                      "category_id": int(label), "bbox": [box[0], box[1], w, h], "area": w * h,
                                      "iscrowd": int(crowd)})
    dt = [{"image_id": image_id, "category_id": int(row[0]), "score": row[1],
           "bbox": [row[2], row[3], row[4] - row[2], row[5] - row[3]]}
          for image_id, pixel in enumerate(found, 1) for row in pixel]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(dt), "bbox")
        if cat_ids:
            evaluator.params.catIds = cat_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_equal_pycocotools_called_directly(seed, capsys):
    truth, found = random_case(seed)
    normalised = [rows(pixel, r["width"], r["height"]) for pixel, r in zip(found, truth)]
    result = coco_evaluate(truth, normalised, NAMES)
    assert capsys.readouterr().out == ""  # pycocotools' prints silenced
    expected = pycocotools_directly(truth, found)
    got = [result[key] for key in METRIC_KEYS]
    np.testing.assert_allclose(np.nan_to_num(got, nan=-1.0), expected, atol=1e-12)
    assert 0.1 < result["AP"] < 0.9  # a case that discriminates
    for label, name in enumerate(NAMES, 1):
        expected = pycocotools_directly(truth, found, [label])
        got = [result["per_class"][name][key] for key in METRIC_KEYS]
        np.testing.assert_allclose(np.nan_to_num(got, nan=-1.0), expected, atol=1e-12)


def test_table_and_json(tmp_path):
    truth, found = random_case(0)
    result = coco_evaluate(truth, [rows(p, r["width"], r["height"]) for p, r in zip(found, truth)], NAMES)
    table = format_coco_results(result).splitlines()
    assert table[0].split() == ["class", "AP", "AP50", "AP75", "#gt", "#det"]
    assert table[1].split()[0] == "cat" and table[1].split()[1] == f"{result['per_class']['cat']['AP']:.4f}"
    assert any(line.split()[:2] == ["AP", f"{result['AP']:.4f}"] for line in table)
    save_coco_json(result, tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert set(METRIC_KEYS) <= data.keys() and set(data["per_class"]) == set(NAMES)
    assert data["AP"] == result["AP"]


def test_a_missing_pycocotools_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(MissingDependencyError, match="pip install 'pycocotools"):
        coco_evaluate([record([[0, 0, 1, 1]], [1])], [np.zeros((0, 6))], NAMES)


# --------------------------------------------------------------------------------------------
# evaluate --detections


@pytest.fixture()
def saved(tmp_path):
    """A ground-truth CSV of two images and a detections CSV, perfect but for one false positive."""
    data = tmp_path / "data"
    for name in ("a.png", "b.png"):
        save_image(data / name, np.zeros((100, 200, 3), np.uint8))
    truth = [record([[10, 10, 60, 50], [100, 20, 190, 90]], [1, 2], [False, True], path=data / "a.png"),
             record([[0, 0, 40, 40]], [1], path=data / "b.png")]
    write_annotations(truth, ["cat", "dog"], data / "gt.csv")
    write_detections_csv(tmp_path / "out" / "detections.csv", [
        (data / "a.png", "cat", 0.9, [10, 10, 60, 50]),
        (data / "b.png", "cat", 0.8, [0, 0, 40, 40]),
        (data / "b.png", "dog", 0.7, [100, 50, 150, 90]),  # no dog in b: a false positive (the dog of a is difficult)
    ])
    return data / "gt.csv", tmp_path / "out" / "detections.csv"


def test_evaluate_saved_detections_voc(saved, tmp_path, capsys):
    gt, detections = saved
    assert cli.main(["evaluate", "--csv", str(gt), "--detections", str(detections), "--json",
                     str(tmp_path / "voc.json")]) == 0
    stdout = capsys.readouterr().out
    assert "3 detections (score >= 0.01) on 2 images" in stdout and "mAP (area, IoU >= 0.5): 1.0000" in stdout
    data = json.loads((tmp_path / "voc.json").read_text())
    assert data["mAP"] == 1.0 and data["classes"]["2"]["num_gt"] == 0 and data["classes"]["2"]["num_fp"] == 1
    assert cli.main(["evaluate", "--csv", str(gt), "--detections", str(detections), "--method", "voc07",
                     "--iou", "0.9"]) == 0
    assert "mAP (voc07, IoU >= 0.9)" in capsys.readouterr().out


def test_evaluate_saved_detections_coco(saved, tmp_path, capsys):
    gt, detections = saved
    assert cli.main(["evaluate", "--csv", str(gt), "--detections", str(detections), "--metric", "coco",
                     "--json", str(tmp_path / "coco.json")]) == 0
    stdout = capsys.readouterr().out
    assert "COCO metrics over 2 images" in stdout and "loading" not in stdout.lower()
    data = json.loads((tmp_path / "coco.json").read_text())
    assert data["AP"] == pytest.approx(1.0) and data["per_class"]["dog"]["AP"] is None
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "per_class"} <= data.keys()


def test_evaluate_saved_detections_imports_no_tensorflow(saved):
    gt, detections = saved
    run, loaded = run_tracking_imports("evaluate", "--csv", gt, "--detections", detections, "--metric", "coco")
    assert run.returncode == 0, run.stderr
    assert loaded == []


def test_saved_detections_of_unknown_images_and_classes_are_named(saved, tmp_path, capsys):
    gt, detections = saved
    text = detections.read_text()
    detections.write_text(text + "../data/nowhere.png,cat,0.5,1,1,5,5\n../data/a.png,horse,0.5,1,1,5,5\n"
                          "../data/a.png,cat,high,1,1,5,5\n")
    assert cli.main(["evaluate", "--csv", str(gt), "--detections", str(detections)]) == 1
    err = capsys.readouterr().err
    assert "3 errors" in err and "detections.csv line 5: image '../data/nowhere.png' is not an image of" in err
    assert "line 6: class 'horse' is not a class of" in err and "its classes: cat, dog" in err
    assert "line 7: non-numeric score 'high'" in err


def test_evaluate_refuses_options_that_cannot_work(saved, tmp_path, capsys):
    gt, detections = saved
    assert cli.main(["evaluate", "--csv", str(gt), "--detections", str(detections), "--weights", "w.h5"]) == 1
    assert "give one of them" in capsys.readouterr().err
    assert cli.main(["evaluate", "--csv", str(gt), "--detections", str(detections), "--metric", "coco",
                     "--plot", str(tmp_path / "p.png")]) == 1
    assert "--plot" in capsys.readouterr().err
    assert cli.main(["evaluate", "--csv", str(gt), "--detections", str(detections), "--metric", "coco",
                     "--iou", "0.7"]) == 1
    assert "--iou is the VOC metrics' threshold" in capsys.readouterr().err


def test_evaluate_coco_without_pycocotools_fails_clearly(saved, monkeypatch, capsys):
    gt, detections = saved
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    assert cli.main(["evaluate", "--csv", str(gt), "--detections", str(detections), "--metric", "coco"]) == 1
    assert "pip install 'pycocotools" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# detect --coco-json


@pytest.fixture()
def no_voc_weights(monkeypatch, tmp_path):
    """No VOC weights are found: ``detect`` runs the embedded shapes model."""
    import ssd_keras.models

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ssd_keras.models.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(ssd_keras.models, "_CHECKOUT_WEIGHTS", tmp_path / "no_checkout_weights")


@pytest.fixture()
def scenes(no_voc_weights, tmp_path):
    """Three synthetic scenes in ``tmp_path/scenes`` and their ground truth ``tmp_path/gt.csv`` (its class
    list, the demo model's, beside it: a scene need not show every class)."""
    from ssd_keras.data import SHAPE_CLASSES

    folder = tmp_path / "scenes"
    truth = []
    for i in range(3):
        image, boxes, labels = make_scene(np.random.default_rng([14, i]))
        save_image(folder / f"s{i}.png", image)
        truth.append({"image_path": folder / f"s{i}.png", "boxes": to_pixels(boxes, 300, 300), "labels": labels})
    write_annotations(truth, list(SHAPE_CLASSES), tmp_path / "gt.csv")
    (tmp_path / "gt_classes.txt").write_text("".join(f"{name}\n" for name in SHAPE_CLASSES))
    return folder


def test_evaluate_a_model_with_coco_metrics(scenes, tmp_path, capsys):
    assert cli.main(["evaluate", "--csv", str(tmp_path / "gt.csv"), "--metric", "coco", "--quiet",
                     "--json", str(tmp_path / "m.json")]) == 0
    assert "embedded shapes model" in capsys.readouterr().out
    assert json.loads((tmp_path / "m.json").read_text())["AP50"] > 0.5


def test_detect_coco_json_has_the_ids_of_csv_to_coco_and_scores_like_the_csv(scenes, tmp_path, capsys):
    from ssd_keras.data import SHAPE_CLASSES

    assert cli.main(["detect", str(scenes), "--out", str(tmp_path / "out"), "--conf-thresh", "0.05",
                     "--coco-json", str(tmp_path / "results.json")]) == 0
    assert cli.main(["csv", "to-coco", str(tmp_path / "gt.csv"), str(tmp_path / "gt.json")]) == 0
    capsys.readouterr()
    results = json.loads((tmp_path / "results.json").read_text())
    ground = json.loads((tmp_path / "gt.json").read_text())
    assert [(i["id"], i["file_name"]) for i in ground["images"]] == [(1, "scenes/s0.png"), (2, "scenes/s1.png"),
                                                                     (3, "scenes/s2.png")]
    assert [c["name"] for c in ground["categories"]] == list(SHAPE_CLASSES)
    assert {r["image_id"] for r in results} <= {1, 2, 3} and results
    assert {r["category_id"] for r in results} <= {1, 2, 3, 4}
    assert all(len(r["bbox"]) == 4 and r["bbox"][2] > 0 and 0 < r["score"] <= 1 for r in results)
    # the same detections, scored from detections.csv and from the COCO files by pycocotools itself
    assert cli.main(["evaluate", "--csv", str(tmp_path / "gt.csv"), "--detections",
                     str(tmp_path / "out" / "detections.csv"), "--metric", "coco", "--json",
                     str(tmp_path / "m.json")]) == 0
    ours = json.loads((tmp_path / "m.json").read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "gt.json"))
        evaluator = COCOeval(coco, coco.loadRes(str(tmp_path / "results.json")), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert ours["AP50"] > 0.5  # the demo model finds its shapes
    assert ours["AP"] == pytest.approx(evaluator.stats[0], abs=0.01)  # the files round boxes and scores
    assert ours["AP50"] == pytest.approx(evaluator.stats[1], abs=0.01)
    # detections.csv lists the images by absolute path (they are outside --out) and reads back
    first = (tmp_path / "out" / "detections.csv").read_text().splitlines()[1].split(",")[0]
    assert Path(first).is_absolute() and Path(first).parent == scenes
