"""Tests for ssd_keras.data.csv_tools: VOC XML, class folders and plain image folders to CSV.

VOC XML files are written by hand in the tests; expected CSV text is spelled out line by line.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssd_keras.data.annotations import read_annotations, read_class_list
from ssd_keras.data.csv_tools import (
    CLASSES_FILENAME,
    annotation_class_list_path,
    folders_to_csv,
    images_to_csv,
    voc_to_csv,
)


def make_image(path: Path, width: int = 50, height: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (90, 120, 200)).save(path)
    return path


def voc_object(name: str, box: tuple, difficult: str | None = "0") -> str:
    tag = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    coords = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return f"<object><name>{name}</name><pose>Left</pose>{tag}<bndbox>{coords}</bndbox></object>"


def voc_xml(filename: str, *objects: str) -> str:
    return (f"<annotation><folder>VOC2007</folder><filename>{filename}</filename>"
            f"<size><width>50</width><height>40</height><depth>3</depth></size>{''.join(objects)}</annotation>")


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    """A three-image VOC layout (Annotations/, JPEGImages/) in ``tmp_path``."""
    annotations, images = tmp_path / "Annotations", tmp_path / "JPEGImages"
    annotations.mkdir()
    for name in ("000001", "000002", "000003"):
        make_image(images / f"{name}.jpg")
    (annotations / "000001.xml").write_text(voc_xml(
        "000001.jpg", voc_object("dog", (8, 12, 35, 30)), voc_object(" person ", (1, 1, 50, 40), "1")))
    (annotations / "000002.xml").write_text(voc_xml("000002.jpg"))
    (annotations / "000003.xml").write_text(voc_xml("000003.jpg", voc_object("cat", (2.5, 3, 20, 21), None)))
    (annotations / "notes.txt").write_text("not an annotation")
    return tmp_path


def test_voc_to_csv_writes_annotation_csv_and_classes(voc: Path) -> None:
    out = voc / "voc.csv"
    names = voc_to_csv(voc / "Annotations", voc / "JPEGImages", out)

    assert names == ["cat", "dog", "person"]
    assert (voc / "voc_classes.txt").read_text().splitlines() == names
    assert not (voc / CLASSES_FILENAME).exists()
    assert out.read_text().splitlines() == [
        "image_path,xmin,ymin,xmax,ymax,class_name,difficult",
        "JPEGImages/000001.jpg,8,12,35,30,dog,0",
        "JPEGImages/000001.jpg,1,1,50,40,person,1",   # 1-based VOC coordinates kept as they are
        "JPEGImages/000002.jpg,,,,,,",
        "JPEGImages/000003.jpg,2.5,3,20,21,cat,0",
    ]
    records, read_names = read_annotations(out, classes=annotation_class_list_path(out))
    assert read_names == names
    assert [len(r["boxes"]) for r in records] == [2, 0, 1]
    np.testing.assert_array_equal(records[0]["boxes"], [[8, 12, 35, 30], [1, 1, 50, 40]])
    np.testing.assert_array_equal(records[0]["labels"], [2, 3])
    np.testing.assert_array_equal(records[0]["difficult"], [False, True])


def test_voc_to_csv_with_class_list(voc: Path, tmp_path_factory) -> None:
    out = tmp_path_factory.mktemp("elsewhere") / "sub" / "voc.csv"
    names = voc_to_csv(voc / "Annotations", voc / "JPEGImages", out, classes=["background", "person", "dog", "cat"])
    assert names == ["person", "dog", "cat"]
    assert read_class_list(out.parent / "voc_classes.txt") == names
    rows = list(csv.reader(out.open()))
    assert rows[1][0] == str(voc / "JPEGImages" / "000001.jpg")  # not under the CSV folder: absolute
    records, _ = read_annotations(out, classes=names)
    np.testing.assert_array_equal(records[0]["labels"], [2, 1])


def test_voc_unknown_class_names_the_file(voc: Path) -> None:
    with pytest.raises(ValueError, match=r"000003\.xml: unknown class 'cat'"):
        voc_to_csv(voc / "Annotations", voc / "JPEGImages", voc / "out.csv", classes=["dog", "person"])
    assert not (voc / "out.csv").exists() and not (voc / "out_classes.txt").exists()


@pytest.mark.parametrize(("text", "match"), [
    ("<annotation><filename>a.jpg</filename><object>", r"bad\.xml: malformed XML"),
    ("<html/>", r"bad\.xml: the root element is <html>"),
    (voc_xml("a.jpg", "<object><name>dog</name></object>"), r"bad\.xml object 1: missing <bndbox>"),
    (voc_xml("a.jpg", voc_object("dog", (1, "x", 3, 4))), r"bad\.xml object 1: non-numeric <ymin> 'x'"),
    (voc_xml("a.jpg", voc_object("dog", (1, 2, "", 4))), r"bad\.xml object 1: missing or empty <xmax>"),
    (voc_xml("a.jpg", voc_object("", (1, 2, 3, 4))), r"bad\.xml object 1: missing or empty <name>"),
    (voc_xml("a.jpg", voc_object("dog", (1, 2, 3, 4), "2")), r"bad\.xml object 1: <difficult> must be 0 or 1"),
    ("<annotation><object/></annotation>", r"bad\.xml: missing or empty <filename>"),
])
def test_voc_bad_files_name_the_file(voc: Path, text: str, match: str) -> None:
    (voc / "Annotations" / "bad.xml").write_text(text)
    with pytest.raises(ValueError, match=match):
        voc_to_csv(voc / "Annotations", voc / "JPEGImages", voc / "out.csv")
    assert not (voc / "out.csv").exists()


def test_voc_reports_all_bad_files_at_once(voc: Path) -> None:
    (voc / "Annotations" / "bad1.xml").write_text("<annotation>")
    (voc / "Annotations" / "bad2.xml").write_text(voc_xml("b.jpg", voc_object("dog", ("a", 2, 3, 4))))
    with pytest.raises(ValueError) as info:
        voc_to_csv(voc / "Annotations", voc / "JPEGImages", voc / "out.csv")
    message = str(info.value)
    assert str(voc / "Annotations") in message and "2 errors" in message
    assert "bad1.xml: malformed XML" in message and "bad2.xml object 1: non-numeric <xmin>" in message


def test_voc_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="annotations folder not found.*nowhere"):
        voc_to_csv(tmp_path / "nowhere", tmp_path, tmp_path / "o.csv")
    (tmp_path / "Annotations").mkdir()
    with pytest.raises(ValueError, match=r"no \.xml file"):
        voc_to_csv(tmp_path / "Annotations", tmp_path, tmp_path / "o.csv")
    assert not (tmp_path / "o.csv").exists()


def test_voc_missing_images_folder_writes_nothing(voc: Path) -> None:
    out = voc / "out" / "voc.csv"
    with pytest.raises(FileNotFoundError, match=r"images folder not found.*JPEGImagez"):
        voc_to_csv(voc / "Annotations", voc / "JPEGImagez", out)
    assert not out.parent.exists()


def test_voc_splits_beside_each_other_keep_their_class_lists(voc: Path) -> None:
    train = voc_to_csv(voc / "Annotations", voc / "JPEGImages", voc / "train.csv")
    (voc / "Annotations" / "000001.xml").unlink()
    val = voc_to_csv(voc / "Annotations", voc / "JPEGImages", voc / "val.csv")
    assert (train, val) == (["cat", "dog", "person"], ["cat"])
    assert annotation_class_list_path(voc / "train.csv") == voc / "train_classes.txt"
    assert read_class_list(voc / "train_classes.txt") == train
    assert read_class_list(voc / "val_classes.txt") == val


# --------------------------------------------------------------------------------------------
# class folders


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    make_image(root / "dog" / "c.jpeg")
    make_image(root / "cat" / "b.jpg")
    make_image(root / "cat" / "sub" / "a.PNG")
    make_image(root / "cat" / ".hidden.jpg")
    make_image(root / ".cache" / "x.jpg")
    make_image(root / "stray.jpg")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "empty_class").mkdir()
    return root


def test_folders_to_csv(tree: Path, caplog) -> None:
    out = tree.parent / "cls.csv"
    with caplog.at_level(logging.WARNING, logger="ssd_keras.data.csv_tools"):
        names = folders_to_csv(tree, out)
    assert names == ["cat", "dog", "empty_class"]
    assert (tree.parent / CLASSES_FILENAME).read_text().splitlines() == names
    assert out.read_text().splitlines() == [
        "image,label",
        "data/cat/b.jpg,0",
        "data/cat/sub/a.PNG,0",
        "data/dog/c.jpeg,1",
    ]
    assert "1 image(s) directly in" in caplog.text


def test_folders_to_csv_keeps_a_class_list_another_csv_uses(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "csvs"
    folders_to_csv(tree, out / "train.csv")
    folders_to_csv(tree, out / "val.csv")  # the same classes: fine
    other = tmp_path / "other"
    make_image(other / "mug" / "m.png")
    with pytest.raises(ValueError, match=r"classes\.txt holds the classes cat, dog, empty_class, not mug.*train\.csv"):
        folders_to_csv(other, out / "test.csv")
    assert not (out / "test.csv").exists()
    assert read_class_list(out / CLASSES_FILENAME) == ["cat", "dog", "empty_class"]
    (out / "train.csv").unlink()
    (out / "val.csv").unlink()
    assert folders_to_csv(other, out / "test.csv") == ["mug"]  # no other CSV uses it any more
    assert read_class_list(out / CLASSES_FILENAME) == ["mug"]
    assert folders_to_csv(tree, out / "test.csv") == ["cat", "dog", "empty_class"]  # its own list: rewritten
    assert read_class_list(out / CLASSES_FILENAME) == ["cat", "dog", "empty_class"]


def test_folders_to_csv_outside_root_gives_absolute_paths(tree: Path, tmp_path_factory) -> None:
    out = tmp_path_factory.mktemp("csvs") / "cls.csv"
    folders_to_csv(tree, out)
    rows = list(csv.DictReader(out.open()))
    assert rows[0] == {"image": str(tree / "cat" / "b.jpg"), "label": "0"}


def test_folders_to_csv_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing_root"):
        folders_to_csv(tmp_path / "missing_root", tmp_path / "o.csv")
    (tmp_path / "root").mkdir()
    make_image(tmp_path / "root" / "only_stray.jpg")
    with pytest.raises(ValueError, match="no class folder"):
        folders_to_csv(tmp_path / "root", tmp_path / "o.csv")
    (tmp_path / "root" / "a").mkdir()
    (tmp_path / "root" / "a" / "readme.md").write_text("x")
    with pytest.raises(ValueError, match="no image in the class folders"):
        folders_to_csv(tmp_path / "root", tmp_path / "o.csv")
    assert not (tmp_path / "o.csv").exists()


# --------------------------------------------------------------------------------------------
# plain image folders


def test_images_to_csv(tmp_path: Path) -> None:
    folder = tmp_path / "pics"
    for name in ("b.png", "a.jpg", "z/c.WEBP", "z/d.tif"):
        make_image(folder / name, 12, 8)
    (folder / "z" / "info.json").write_text("{}")
    out = tmp_path / "list.csv"

    assert images_to_csv(folder, out) == 4
    assert out.read_text().splitlines() == [
        "image_path,xmin,ymin,xmax,ymax,class_name",
        "pics/a.jpg,,,,,",
        "pics/b.png,,,,,",
        "pics/z/c.WEBP,,,,,",
        "pics/z/d.tif,,,,,",
    ]
    records, names = read_annotations(out)
    assert names == [] and [len(r["boxes"]) for r in records] == [0, 0, 0, 0]
    assert (records[0]["width"], records[0]["height"]) == (12, 8)


def test_images_to_csv_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        images_to_csv(tmp_path / "nope", tmp_path / "o.csv")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no image in"):
        images_to_csv(tmp_path / "empty", tmp_path / "o.csv")
