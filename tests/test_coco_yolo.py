"""COCO and YOLO in and out (ssd_keras.data.coco, ssd_keras.data.yolo, ``csv coco|yolo|to-coco|to-yolo``).

Input files are written by the tests; expected CSV text is spelled out. Round trips are checked on
random boxes to 0.5 pixel (they are far closer).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssd_keras import cli
from ssd_keras.data import (AnnotationError, coco_to_csv, csv_to_coco, csv_to_yolo, read_annotations,
                            read_yolo_names, write_annotations, yolo_to_csv)
from tests.test_cli import run_tracking_imports

SIZES = {"a.jpg": (64, 48), "sub/b.png": (80, 60), "c.png": (30, 30)}


def make_images(folder: Path) -> Path:
    for name, size in SIZES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (90, 120, 200)).save(folder / name)
    return folder


def rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as file:
        return list(csv.reader(file))


# --------------------------------------------------------------------------------------------
# COCO -> CSV

COCO = {
    "info": {"year": 2017},
    "images": [{"id": 10, "file_name": "a.jpg", "width": 64, "height": 48},
               {"id": "b", "file_name": "sub/b.png", "width": 80, "height": 60},
               {"id": 3, "file_name": "c.png", "width": 30, "height": 30}],
    "categories": [{"id": 90, "name": "zebra", "supercategory": "animal"}, {"id": 2, "name": "cat"},
                   {"id": 17, "name": "unused"}],
    "annotations": [
        {"id": 1, "image_id": 10, "category_id": 90, "bbox": [1.5, 2, 10, 20.25], "segmentation": [[1, 2, 3, 4]],
         "iscrowd": 0},
        {"id": 2, "image_id": "b", "category_id": 2, "bbox": [5, 5, 30, 30], "iscrowd": 1,
         "segmentation": {"counts": "abc", "size": [60, 80]}},
        {"id": 3, "image_id": 10, "category_id": 2, "bbox": [40, 0, 20, 10]},
    ],
}


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_coco_to_csv_names_classes_in_id_order_and_keeps_crowds_as_difficult(tmp_path):
    images = make_images(tmp_path / "img")
    out = tmp_path / "out" / "val.csv"
    names = coco_to_csv(write_json(tmp_path / "instances.json", COCO), images, out)
    assert names == ["cat", "unused", "zebra"]  # ids 2, 17, 90
    assert (tmp_path / "out" / "val_classes.txt").read_text() == "cat\nunused\nzebra\n"
    assert rows(out) == [
        ["image_path", "xmin", "ymin", "xmax", "ymax", "class_name", "difficult"],
        [str(images / "a.jpg"), "1.5", "2", "11.5", "22.25", "zebra", "0"],
        [str(images / "a.jpg"), "40", "0", "60", "10", "cat", "0"],
        [str(images / "sub/b.png"), "5", "5", "35", "35", "cat", "1"],
        [str(images / "c.png"), "", "", "", "", "", ""],
    ]
    records, classes = read_annotations(out, names)
    assert [len(r["boxes"]) for r in records] == [2, 1, 0]
    assert records[1]["difficult"].tolist() == [True]


def test_coco_to_csv_writes_paths_relative_to_the_csv_when_the_images_are_under_it(tmp_path):
    make_images(tmp_path / "img")
    coco_to_csv(write_json(tmp_path / "i.json", COCO), tmp_path / "img", tmp_path / "val.csv")
    assert [r[0] for r in rows(tmp_path / "val.csv")[1:]] == ["img/a.jpg", "img/a.jpg", "img/sub/b.png", "img/c.png"]


def test_coco_errors_are_listed_together_and_nothing_is_written(tmp_path):
    bad = json.loads(json.dumps(COCO))
    bad["categories"].append({"id": 2, "name": "dog"})  # a repeated id
    bad["images"].append({"id": 4})  # no file_name
    bad["annotations"] += [
        {"id": 7, "image_id": 99, "category_id": 2, "bbox": [0, 0, 5, 5]},  # unknown image
        {"id": 8, "image_id": 10, "category_id": 5, "bbox": [0, 0, 5, 5]},  # a category id without a category
        {"id": 9, "image_id": 10, "category_id": 2, "bbox": [0, 0, 0, 5]},  # no area
        {"id": 11, "image_id": 10, "category_id": 2, "bbox": [0, 0, 5]},  # not 4 numbers
        {"id": 12, "image_id": 10, "category_id": 2, "bbox": [0, 0, 5, 5], "iscrowd": 2},
    ]
    make_images(tmp_path / "img")
    out = tmp_path / "out" / "val.csv"
    with pytest.raises(AnnotationError) as info:
        coco_to_csv(write_json(tmp_path / "bad.json", bad), tmp_path / "img", out)
    assert info.value.errors == [
        "category id 2: duplicate category id",
        "image id 4: missing or empty 'file_name'",
        "annotation id 7: unknown image_id 99 (no such image)",
        "annotation id 8: unknown category_id 5 (no such category)",
        "annotation id 9: bbox [0, 0, 0, 5] has no area (width and height must be positive)",
        "annotation id 11: bbox must be 4 finite numbers [x, y, width, height], got [0, 0, 5]",
        "annotation id 12: iscrowd must be 0 or 1, got 2",
    ]
    assert "bad.json" in str(info.value) and "7 errors" in str(info.value)
    assert not out.parent.exists()


def test_coco_file_problems_are_clear(tmp_path):
    make_images(tmp_path / "img")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(AnnotationError, match="not a JSON file"):
        coco_to_csv(tmp_path / "x.json", tmp_path / "img", tmp_path / "o.csv")
    with pytest.raises(AnnotationError, match="'categories' is missing"):
        coco_to_csv(write_json(tmp_path / "y.json", {"images": []}), tmp_path / "img", tmp_path / "o.csv")
    with pytest.raises(FileNotFoundError, match="COCO images folder"):
        coco_to_csv(tmp_path / "x.json", tmp_path / "nowhere", tmp_path / "o.csv")
    assert not (tmp_path / "o.csv").exists()


# --------------------------------------------------------------------------------------------
# YOLO -> CSV


def yolo_tree(tmp_path: Path) -> tuple[Path, Path]:
    images = make_images(tmp_path / "images")
    labels = tmp_path / "labels"
    (labels / "sub").mkdir(parents=True)
    (labels / "a.txt").write_text("1 0.5 0.5 0.25 0.5\n\n0 0.125 0.25 0.25 0.5\n")
    (labels / "sub" / "b.txt").write_text("")  # an empty file: no objects; c.png has none at all
    return labels, images


def test_yolo_to_csv_converts_normalised_centres_to_pixel_corners(tmp_path):
    labels, images = yolo_tree(tmp_path)
    (labels / "classes.txt").write_text("cat\ndog\n")  # the default class list, not a label file
    out = tmp_path / "train.csv"
    assert yolo_to_csv(labels, images, out) == ["cat", "dog"]
    assert rows(out)[1:] == [
        ["images/a.jpg", "24", "12", "40", "36", "dog", "0"],  # 64x48: centre (32, 24), size 16x24
        ["images/a.jpg", "0", "0", "16", "24", "cat", "0"],
        ["images/c.png", "", "", "", "", "", ""],
        ["images/sub/b.png", "", "", "", "", "", ""],
    ]
    assert (tmp_path / "train_classes.txt").read_text() == "cat\ndog\n"


def test_yolo_to_csv_clips_corners_past_the_edge_from_rounding(tmp_path):
    labels, images = yolo_tree(tmp_path)
    (labels / "a.txt").write_text("0 0.9 0.5 0.25 0.5\n")
    yolo_to_csv(labels, images, tmp_path / "t.csv", ["cat"])
    assert rows(tmp_path / "t.csv")[1][1:5] == ["49.6", "12", "64", "36"]


@pytest.mark.parametrize("text", [
    "names: [cat, 'dog # 1']  # two\n",
    "path: ../data\nnames:\n  - cat\n  - \"dog # 1\"   # comment\nnc: 2\n",
    "names:\n- cat\n- 'dog # 1'\ntrain: images/train\n",
    "names:\n  0: cat\n  1: dog # 1\n".replace("dog # 1", "'dog # 1'"),
    "names: {1: 'dog # 1', 0: cat}\n",
    "nc: 2\nnames:\n\n  # the classes\n  1: \"dog # 1\"\n  0: cat\ndownload: |\n  names: [x]\n",
])
def test_read_yolo_names_reads_the_common_forms(tmp_path, text):
    path = tmp_path / "data.yaml"
    path.write_text(text)
    assert read_yolo_names(path) == ["cat", "dog # 1"]


@pytest.mark.parametrize("text, message", [
    ("train: x\n", "no top-level 'names:'"),
    ("names:\n  0: cat\n  2: dog\n", "indices of names must be 0 .. 1"),
    ("names: cat\n", "expected names as"),
    ("names:\n  - cat\n  - cat\n", "duplicate class name"),
])
def test_read_yolo_names_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "data.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        read_yolo_names(path)
    assert str(path) in str(info.value)


def test_yolo_to_csv_with_a_data_yaml_from_the_command_line(tmp_path, capsys):
    labels, images = yolo_tree(tmp_path)
    (tmp_path / "data.yaml").write_text("names:\n  0: cat\n  1: dog\n")
    out = tmp_path / "train.csv"
    assert cli.main(["csv", "yolo", str(labels), str(images), str(out), "--data", str(tmp_path / "data.yaml")]) == 0
    assert "2 classes (cat, dog)" in capsys.readouterr().out
    assert rows(out)[1][5] == "dog"


def test_yolo_without_a_class_list_says_what_to_give(tmp_path):
    labels, images = yolo_tree(tmp_path)
    with pytest.raises(FileNotFoundError, match="data.yaml"):
        yolo_to_csv(labels, images, tmp_path / "t.csv")


def test_yolo_errors_are_listed_together_and_nothing_is_written(tmp_path):
    labels, images = yolo_tree(tmp_path)
    (labels / "a.txt").write_text("0 0.5 0.5 0.25\n"  # wrong field count
                                  "2 0.5 0.5 0.25 0.5\n"  # class index out of range
                                  "1 1.5 0.5 0.25 -0.1\n"  # coordinates outside [0, 1]
                                  "1 0.5 0.5 0 0.2\n"  # an empty box
                                  "0 0.5 0.5 0.25 0.5 0.9\n")  # one field too many
    (labels / "sub" / "b.txt").write_text("x 0.5 0.5 0.1 0.1\n")
    (labels / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # no image
    out = tmp_path / "out" / "t.csv"
    with pytest.raises(AnnotationError) as info:
        yolo_to_csv(labels, images, out, ["cat", "dog"])
    assert sorted(info.value.errors) == sorted([
        "a.txt line 1: expected 5 fields (class cx cy w h), got 4",
        "a.txt line 2: class index 2 is out of range (0 .. 1 for 2 classes)",
        "a.txt line 3: cx 1.5 is outside [0, 1]; h -0.1 is outside [0, 1]",
        "a.txt line 4: w is 0 (an empty box)",
        "a.txt line 5: expected 5 fields (class cx cy w h), got 6",
        "sub/b.txt line 1: class index 'x' is not a number",
        f"orphan.txt: no image for this label file (looked for {images / 'orphan.*'})",
    ])
    assert "YOLO labels" in str(info.value)
    assert not out.parent.exists()


def test_yolo_images_sharing_a_label_file_are_an_error(tmp_path):
    labels, images = yolo_tree(tmp_path)
    Image.new("RGB", (8, 8)).save(images / "a.png")
    with pytest.raises(AnnotationError, match="the label file of both a.jpg and a.png"):
        yolo_to_csv(labels, images, tmp_path / "t.csv", ["cat", "dog"])


# --------------------------------------------------------------------------------------------
# round trips and exporters


def random_csv(tmp_path: Path, difficult: bool) -> tuple[Path, list[str]]:
    """An annotation CSV of random boxes on the images of ``SIZES`` (``c.png`` without boxes)."""
    images = make_images(tmp_path / "data" / "images")
    rng = np.random.default_rng(14)
    names = ["zebra", "cat", "dog"]  # not sorted: the class list beside the CSV keeps the order
    records = []
    for name, (width, height) in SIZES.items():
        count = 0 if name == "c.png" else 5
        corners = np.sort(rng.uniform(0, 1, (count, 2, 2)), axis=1)  # (x1 < x2, y1 < y2)
        boxes = np.stack([corners[:, 0, 0] * width, corners[:, 0, 1] * height, corners[:, 1, 0] * width,
                          corners[:, 1, 1] * height], axis=1)
        records.append({"image_path": images / name, "boxes": boxes, "labels": rng.integers(1, 4, count),
                        "difficult": (rng.uniform(size=count) < 0.3) & difficult})
    path = write_annotations(records, names, tmp_path / "data" / "train.csv")
    (tmp_path / "data" / "train_classes.txt").write_text("".join(f"{n}\n" for n in names))
    return path, names


def assert_same_annotations(back: Path, original: Path, names, keep_difficult: bool = True):
    got, got_names = read_annotations(back, names)
    expected, _ = read_annotations(original, names)
    assert got_names == names
    assert sorted(r["image_path"] for r in got) == sorted(r["image_path"] for r in expected)
    by_path = {r["image_path"]: r for r in got}
    for e in expected:
        g = by_path[e["image_path"]]
        keep = np.ones(len(e["labels"]), bool) if keep_difficult else ~e["difficult"]
        assert g["labels"].tolist() == e["labels"][keep].tolist()
        assert g["difficult"].tolist() == e["difficult"][keep].tolist()
        np.testing.assert_allclose(g["boxes"], e["boxes"][keep], atol=0.5)  # the promise; in fact ~1e-5
        np.testing.assert_allclose(g["boxes"], e["boxes"][keep], atol=1e-3)


def test_csv_to_coco_to_csv_is_exact(tmp_path, capsys):
    original, names = random_csv(tmp_path, difficult=True)
    out_json = tmp_path / "data" / "train.json"
    assert cli.main(["csv", "to-coco", str(original), str(out_json)]) == 0
    assert "3 images, 10 annotations, 3 categories (ids 1..3: zebra, cat, dog)" in capsys.readouterr().out
    dataset = json.loads(out_json.read_text())
    assert [image["file_name"] for image in dataset["images"]] == ["images/a.jpg", "images/sub/b.png", "images/c.png"]
    assert [(image["id"], image["width"], image["height"]) for image in dataset["images"]] == [
        (1, 64, 48), (2, 80, 60), (3, 30, 30)]
    assert [a["id"] for a in dataset["annotations"]] == list(range(1, 11))
    assert any(a["iscrowd"] for a in dataset["annotations"])
    back = tmp_path / "back" / "back.csv"
    assert cli.main(["csv", "coco", str(out_json), str(tmp_path / "data"), str(back)]) == 0
    assert (tmp_path / "back" / "back_classes.txt").read_text().split() == names
    assert_same_annotations(back, original, names)


def test_csv_to_yolo_to_csv_is_exact_and_leaves_difficult_boxes_out(tmp_path, capsys):
    original, names = random_csv(tmp_path, difficult=True)
    labels = tmp_path / "labels"
    assert cli.main(["csv", "to-yolo", str(original), str(labels)]) == 0
    stdout = capsys.readouterr().out
    assert "3 label files" in stdout and "difficult boxes left out" in stdout
    assert (labels / "classes.txt").read_text().split() == names
    assert sorted(p.relative_to(labels).as_posix() for p in labels.rglob("*.txt")) == [
        "a.txt", "c.txt", "classes.txt", "sub/b.txt"]
    assert (labels / "c.txt").read_text() == ""
    back = tmp_path / "back.csv"
    assert cli.main(["csv", "yolo", str(labels), str(tmp_path / "data" / "images"), str(back)]) == 0
    got, _ = read_annotations(back, names)
    assert_same_annotations(back, original, names, keep_difficult=False)
    assert not any(r["difficult"].any() for r in got)


def test_the_exporters_take_a_class_list(tmp_path):
    original, _ = random_csv(tmp_path, difficult=False)
    dataset = csv_to_coco(original, tmp_path / "x.json", classes=["cat", "dog", "zebra", "horse"])
    assert [c["name"] for c in dataset["categories"]] == ["cat", "dog", "zebra", "horse"]
    done = csv_to_yolo(original, tmp_path / "labels", classes=["cat", "dog", "zebra"],
                       images_dir=tmp_path / "data")
    assert done.images_dir == tmp_path / "data" and (tmp_path / "labels" / "images" / "a.txt").is_file()
    with pytest.raises(ValueError, match="not under the images folder"):
        csv_to_yolo(original, tmp_path / "l2", images_dir=tmp_path / "data" / "images" / "sub")
    assert not (tmp_path / "l2").exists()


@pytest.mark.parametrize("argv", [
    ["csv", "coco", "{json}", "{img}", "{out}/c.csv"],
    ["csv", "to-yolo", "{csv}", "{out}/labels"],
])
def test_coco_and_yolo_commands_do_not_import_tensorflow(tmp_path, argv):
    original, _ = random_csv(tmp_path, difficult=False)
    paths = {"json": write_json(tmp_path / "i.json", COCO), "img": tmp_path / "data" / "images", "csv": original,
             "out": tmp_path / "out"}
    run, loaded = run_tracking_imports(*(a.format(**paths) for a in argv))
    assert run.returncode == 0, run.stderr
    assert loaded == []


def test_the_new_modules_import_no_tensorflow():
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    code = ("import sys\n"
            "for name in ('ssd_keras.data.coco', 'ssd_keras.data.yolo', 'ssd_keras.coco_metrics',\n"
            "             'ssd_keras.detections_csv', 'ssd_keras.evaluation'):\n"
            "    __import__(name)\n"
            "print(','.join(sorted(m for m in ('tensorflow', 'keras', 'pycocotools') if m in sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert result.stdout.strip() == ""
