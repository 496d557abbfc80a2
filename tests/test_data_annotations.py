"""Tests for ssd_keras.data.annotations: reading/validating, writing and encoding annotation CSVs.

Every dataset is built in ``tmp_path`` from tiny images written with Pillow; expected values are
written by hand in the tests.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from ssd_keras import image as image_module
from ssd_keras.data.annotations import (
    MAX_REPORTED_ERRORS,
    AnnotationError,
    AnnotationWarning,
    read_annotations,
    read_class_list,
    to_normalized_targets,
    write_annotations,
)

HEADER = "image_path,xmin,ymin,xmax,ymax,class_name"
ORIENTATION_TAG = 0x0112


def make_image(path: Path, width: int, height: int, orientation: int | None = None) -> Path:
    """Writes a small image (format from the suffix), optionally with an EXIF orientation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.arange(width * height * 3) % 251).astype(np.uint8).reshape(height, width, 3)
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = orientation
        kwargs["exif"] = exif.tobytes()
    Image.fromarray(pixels).save(path, **kwargs)
    return path


def write_csv(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """``tmp_path`` with img/a.jpg (40x30), img/b.png (20x10); returns the folder."""
    make_image(tmp_path / "img" / "a.jpg", 40, 30)
    make_image(tmp_path / "img" / "b.png", 20, 10)
    return tmp_path


def read_errors(csv_path: Path, **kwargs) -> AnnotationError:
    with pytest.raises(AnnotationError) as info:
        read_annotations(csv_path, **kwargs)
    assert isinstance(info.value, ValueError)
    assert str(csv_path) in str(info.value)
    return info.value


# --------------------------------------------------------------------------------------------
# happy path


def test_read_relative_absolute_and_empty_rows(dataset: Path, tmp_path_factory) -> None:
    elsewhere = make_image(tmp_path_factory.mktemp("elsewhere") / "c.png", 16, 12)
    csv_path = write_csv(
        dataset / "train.csv",
        "img/a.jpg,1,2,11,12,dog",
        "img/b.png,,,,,",
        f"{elsewhere},0,0,16,12,cat",
        "img/a.jpg,5.5,6,30,29.25,cat",
    )
    records, class_names = read_annotations(csv_path)

    assert class_names == ["cat", "dog"]
    assert [r["image_path"] for r in records] == [
        str(dataset / "img" / "a.jpg"), str(dataset / "img" / "b.png"), str(elsewhere)
    ]
    assert [(r["width"], r["height"]) for r in records] == [(40, 30), (20, 10), (16, 12)]
    a, b, c = records
    np.testing.assert_array_equal(a["boxes"], [[1, 2, 11, 12], [5.5, 6, 30, 29.25]])
    assert a["boxes"].dtype == np.float32 and a["labels"].dtype == np.int64 and a["difficult"].dtype == bool
    np.testing.assert_array_equal(a["labels"], [2, 1])
    np.testing.assert_array_equal(a["difficult"], [False, False])
    assert b["boxes"].shape == (0, 4) and b["labels"].shape == (0,) and b["difficult"].shape == (0,)
    np.testing.assert_array_equal(c["labels"], [1])


def test_difficult_column_values(dataset: Path) -> None:
    csv_path = write_csv(
        dataset / "d.csv",
        "img/a.jpg,1,1,5,5,dog,1",
        "img/a.jpg,1,1,5,5,dog,0",
        "img/a.jpg,1,1,5,5,dog,TRUE",
        "img/a.jpg,1,1,5,5,dog, false ",
        "img/a.jpg,1,1,5,5,dog,",
        "img/b.png,,,,,,",
        header=HEADER + ",difficult",
    )
    records, _ = read_annotations(csv_path)
    np.testing.assert_array_equal(records[0]["difficult"], [True, False, True, False, False])
    assert records[1]["difficult"].shape == (0,)


def test_given_class_list_sets_label_order(dataset: Path) -> None:
    csv_path = write_csv(dataset / "c.csv", "img/a.jpg,1,1,5,5,ant", "img/a.jpg,1,1,5,5,zebra")
    assert read_annotations(csv_path)[0][0]["labels"].tolist() == [1, 2]  # sorted: ant, zebra
    records, names = read_annotations(csv_path, classes=["zebra", "yak", "ant"])
    assert names == ["zebra", "yak", "ant"]
    assert records[0]["labels"].tolist() == [3, 1]
    class_file = dataset / "classes.txt"
    class_file.write_text("background\nzebra\nant\n")
    assert read_annotations(csv_path, classes=class_file)[0][0]["labels"].tolist() == [2, 1]


def test_image_listed_several_times_is_read_once(dataset: Path, monkeypatch) -> None:
    probed = []
    original = image_module.probe_image
    monkeypatch.setattr(image_module, "probe_image", lambda path: probed.append(path) or original(path))
    csv_path = write_csv(
        dataset / "t.csv",
        "img/a.jpg,1,1,5,5,dog",
        "img/b.png,1,1,5,5,dog",
        "./img/a.jpg,2,2,6,6,dog",
        f"{dataset / 'img' / 'a.jpg'},3,3,7,7,dog",
    )
    records, _ = read_annotations(csv_path)
    assert sorted(probed) == sorted({str(dataset / "img" / "a.jpg"), str(dataset / "img" / "b.png")})
    assert len(records) == 2
    np.testing.assert_array_equal(records[0]["boxes"][:, 0], [1, 2, 3])


def test_blank_lines_bom_whitespace_and_extra_columns(dataset: Path) -> None:
    csv_path = dataset / "w.csv"
    csv_path.write_text(
        "\ufeffnote, image_path ,xmin,ymin,xmax,ymax,class_name\n\nhi, img/a.jpg , 1,2 ,3,4, dog \n\n",
        encoding="utf-8",
    )
    records, names = read_annotations(csv_path)
    assert names == ["dog"] and records[0]["boxes"].tolist() == [[1, 2, 3, 4]]


def test_header_only_csv_gives_no_records(tmp_path: Path) -> None:
    assert read_annotations(write_csv(tmp_path / "h.csv")) == ([], [])


@pytest.mark.parametrize(("orientation", "expected"), [(1, (40, 20)), (3, (40, 20)), (6, (20, 40)), (8, (20, 40))])
def test_exif_orientation_gives_upright_size(tmp_path: Path, orientation: int, expected) -> None:
    from ssd_keras.image import load_image

    path = make_image(tmp_path / "r.jpg", 40, 20, orientation=orientation)
    assert Image.open(path).size == (40, 20)  # the stored (not upright) size
    records, _ = read_annotations(write_csv(tmp_path / "r.csv", "r.jpg,1,1,15,15,x"))
    assert (records[0]["width"], records[0]["height"]) == expected
    assert load_image(path).shape[1::-1] == expected


# --------------------------------------------------------------------------------------------
# bad CSVs


def truncated_jpeg(path: Path) -> Path:
    make_image(path.with_suffix(".full.jpg"), 64, 48)
    data = path.with_suffix(".full.jpg").read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


BAD_ROWS = {
    "missing image": ("img/nope.jpg,1,1,5,5,dog,0", "image not found: img/nope.jpg"),
    "not an image": ("img/text.jpg,1,1,5,5,dog,0", "unreadable image (not an image file"),
    "empty image file": ("img/empty.jpg,1,1,5,5,dog,0", "unreadable image (the file is empty): img/empty.jpg"),
    "truncated jpeg": ("img/cut.jpg,1,1,5,5,dog,0", "unreadable image (the file is truncated"),
    "directory": ("img,1,1,5,5,dog,0", "unreadable image (is a directory"),
    "xmin >= xmax": ("img/a.jpg,5,1,5,6,dog,0", "degenerate box (5, 1, 5, 6)"),
    "ymin >= ymax": ("img/a.jpg,1,7,5,6,dog,0", "degenerate box (1, 7, 5, 6)"),
    "non-numeric": ("img/a.jpg,1,one,5,6,dog,0", "non-numeric ymin 'one'"),
    "non-finite": ("img/a.jpg,1,1,inf,6,dog,0", "non-finite xmax 'inf'"),
    "partly empty": ("img/a.jpg,1,,5,,dog,0", "partly empty box: ymin, ymax empty"),
    "empty class": ("img/a.jpg,1,1,5,6,,0", "empty class_name on a box row"),
    "bad difficult": ("img/a.jpg,1,1,5,6,dog,maybe", "difficult must be 0, 1, true or false, got 'maybe'"),
    "field count": ("img/a.jpg,1,1,5,6,dog", "expected 7 fields, got 6"),
    "empty image_path": (",1,1,5,6,dog,0", "empty image_path"),
    "outside after clipping": ("img/a.jpg,41,1,50,6,dog,0", "box (41, 1, 50, 6) is empty after clipping to the 40x30"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_each_error_is_reported_on_its_line(dataset: Path, case: str) -> None:
    (dataset / "img" / "text.jpg").write_text("not a jpeg")
    (dataset / "img" / "empty.jpg").write_bytes(b"")
    truncated_jpeg(dataset / "img" / "cut.jpg")
    row, expected = BAD_ROWS[case]
    csv_path = write_csv(dataset / "bad.csv", "img/a.jpg,1,1,5,5,dog,0", row, "img/b.png,,,,,,0",
                         header=HEADER + ",difficult")
    error = read_errors(csv_path)
    assert len(error.errors) == 1, error.errors
    assert error.errors[0].startswith("bad.csv line 3: ")
    assert expected in error.errors[0]


def test_unknown_class_with_class_list(dataset: Path) -> None:
    csv_path = write_csv(dataset / "u.csv", "img/a.jpg,1,1,5,5,dog", "img/a.jpg,1,1,5,5,cat")
    error = read_errors(csv_path, classes=["dog"])
    assert error.errors == ["u.csv line 3: unknown class 'cat' (not in the class list)"]


def test_truncated_jpeg_passes_verify_but_is_reported(dataset: Path) -> None:
    path = truncated_jpeg(dataset / "img" / "cut.jpg")
    with Image.open(path) as image:
        image.verify()  # a header/verify check alone would accept this file
    error = read_errors(write_csv(dataset / "t.csv", "img/cut.jpg,,,,,"))
    assert re.fullmatch(r"t\.csv line 2: unreadable image \(the file is truncated or corrupt .*\): img/cut\.jpg",
                        error.errors[0])


def test_missing_image_listed_on_several_rows_is_reported_once(dataset: Path) -> None:
    csv_path = write_csv(dataset / "m.csv", "img/a.jpg,1,1,5,5,dog", "gone.jpg,1,1,5,5,dog", "gone.jpg,2,2,5,5,dog")
    assert read_errors(csv_path).errors == ["m.csv line 3: image not found: gone.jpg"]


def test_several_errors_in_one_value_error_sorted_by_line(dataset: Path) -> None:
    csv_path = write_csv(
        dataset / "many.csv",
        "missing.jpg,1,1,5,5,dog",   # line 2
        "img/a.jpg,1,1,5,5,dog",     # line 3: fine
        "img/a.jpg,x,1,5,5,",        # line 4: two errors
        "img/b.png,3,3,1,1,dog",     # line 5
    )
    error = read_errors(csv_path)
    assert error.errors == [
        "many.csv line 2: image not found: missing.jpg",
        "many.csv line 4: non-numeric xmin 'x'",
        "many.csv line 4: empty class_name on a box row",
        "many.csv line 5: degenerate box (3, 3, 1, 1): expected xmin < xmax and ymin < ymax",
    ]
    message = str(error)
    assert message.splitlines()[0] == f"invalid annotations in {csv_path}: 4 errors"
    assert all(line in message for line in error.errors)
    assert pickle.loads(pickle.dumps(error)).errors == error.errors


def test_more_than_twenty_errors_are_capped_with_a_count(dataset: Path) -> None:
    rows = [f"img/a.jpg,{i},1,{i},5,dog" for i in range(MAX_REPORTED_ERRORS + 7)]
    error = read_errors(write_csv(dataset / "cap.csv", *rows))
    lines = str(error).splitlines()
    assert len(error.errors) == MAX_REPORTED_ERRORS + 7
    assert len(lines) == 1 + MAX_REPORTED_ERRORS + 1
    assert "cap.csv line 2: degenerate box (0, 1, 0, 5)" in lines[1]
    assert f"cap.csv line {MAX_REPORTED_ERRORS + 1}:" in lines[MAX_REPORTED_ERRORS]
    assert lines[-1].strip() == "... and 7 more"


def test_missing_required_columns_in_one_message(tmp_path: Path) -> None:
    error = read_errors(write_csv(tmp_path / "cols.csv", "a.jpg,1,1,2,2", header="image_path,x0,ymin,xmax,ymax"))
    assert len(error.errors) == 1
    assert error.errors[0].startswith("cols.csv line 1: missing required columns xmin, class_name")


@pytest.mark.parametrize("text", ["", "\n"])
def test_empty_csv(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(text)
    assert "no header" in read_errors(path).errors[0]


def test_missing_csv_and_truncation_flag(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        read_annotations(tmp_path / "nothere.csv")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        read_annotations(write_csv(tmp_path / "ok.csv"))


# --------------------------------------------------------------------------------------------
# clipping


def test_clipping_warns_once_per_file_with_the_count(dataset: Path) -> None:
    csv_path = write_csv(
        dataset / "clip.csv",
        "img/a.jpg,-3,1,10,10,dog",   # 40x30: clipped
        "img/a.jpg,1,1,10,10,dog",    # inside
        "img/a.jpg,30,20,45,31,dog",  # clipped (two sides)
        "img/b.png,2,2,25,8,dog",     # 20x10: clipped
        "img/b.png,0,0,20,10,dog",    # on the border: not clipped
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records, _ = read_annotations(csv_path)
    assert [w.category for w in caught] == [AnnotationWarning]
    assert "3 boxes" in str(caught[0].message) and str(csv_path) in str(caught[0].message)
    np.testing.assert_array_equal(records[0]["boxes"], [[0, 1, 10, 10], [1, 1, 10, 10], [30, 20, 40, 30]])
    np.testing.assert_array_equal(records[1]["boxes"], [[2, 2, 20, 8], [0, 0, 20, 10]])


def test_no_warning_when_nothing_is_clipped(dataset: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_annotations(write_csv(dataset / "in.csv", "img/a.jpg,0,0,40,30,dog"))


# --------------------------------------------------------------------------------------------
# writing


@pytest.fixture(scope="module")
def roundtrip_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("roundtrip")
    make_image(folder / "img" / "a.png", 64, 48)
    make_image(folder / "img" / "b.jpg", 33, 17)
    return folder


unit = st.floats(0, 1)
# (x start, y start, x extent, y extent) as fractions, label, difficult: never degenerate (see below)
box_strategy = st.tuples(unit, unit, st.floats(0.01, 1), st.floats(0.01, 1), st.integers(1, 3), st.booleans())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(box_strategy, max_size=6), st.lists(box_strategy, max_size=3))
def test_write_read_round_trip(roundtrip_dir: Path, boxes_a, boxes_b) -> None:
    def record(name: str, width: int, height: int, boxes) -> dict:
        corners = []
        for x, y, w, h, _, _ in boxes:
            # xmin <= width - 1, so xmax - xmin >= 0.01 px: inside the image and never empty
            xmin, ymin = x * (width - 1), y * (height - 1)
            corners.append([xmin, ymin, xmin + w * (width - xmin), ymin + h * (height - ymin)])
        return {
            "image_path": str(roundtrip_dir / "img" / name), "width": width, "height": height,
            "boxes": np.array(corners, np.float32).reshape(-1, 4),
            "labels": np.array([b[4] for b in boxes], np.int64),
            "difficult": np.array([b[5] for b in boxes], bool),
        }

    records = [record("a.png", 64, 48, boxes_a), record("b.jpg", 33, 17, boxes_b)]
    class_names = ["zebra", "ant", "yak"]
    path = write_annotations(records, class_names, roundtrip_dir / "out.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may need clipping
        back, names = read_annotations(path, classes=class_names)
    assert names == class_names
    assert len(back) == 2
    for got, want in zip(back, records):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
            assert np.asarray(got[key]).dtype == np.asarray(want[key]).dtype or key == "image_path"


def test_written_csv_text(roundtrip_dir: Path, tmp_path: Path) -> None:
    outside = make_image(tmp_path / "o.png", 10, 10)
    records = [
        {"image_path": str(roundtrip_dir / "img" / "a.png"), "boxes": [[1, 2.5, 3, 4]], "labels": [2],
         "difficult": [True]},
        {"image_path": str(outside), "boxes": np.zeros((0, 4)), "labels": []},
    ]
    path = write_annotations(records, ["cat", "dog"], roundtrip_dir / "text.csv")
    assert path.read_text().splitlines() == [
        "image_path,xmin,ymin,xmax,ymax,class_name,difficult",
        "img/a.png,1,2.5,3,4,dog,1",
        f"{outside},,,,,,",
    ]


@pytest.mark.parametrize(("record", "match"), [
    ({"image_path": "a.png", "boxes": [[1, 1, 2, 2]], "labels": [3]}, r"labels must be integers in \[1, 2\]"),
    ({"image_path": "a.png", "boxes": [[1, 1, 2, 2]], "labels": [0]}, "0 is background"),
    ({"image_path": "a.png", "boxes": [[1, 1, 2]], "labels": [1]}, r"boxes must be \(n, 4\)"),
    ({"image_path": "a.png", "boxes": [[1, 1, 2, 2]], "labels": [1, 1]}, "1 boxes but labels"),
    ({"image_path": "a.png", "boxes": [[1, np.nan, 2, 2]], "labels": [1]}, "non-finite"),
    ({"boxes": [[1, 1, 2, 2]], "labels": [1]}, "record 0 has no 'image_path'"),
])
def test_write_rejects_bad_records_and_keeps_the_old_file(tmp_path: Path, record, match) -> None:
    path = tmp_path / "keep.csv"
    path.write_text("old\n")
    with pytest.raises(ValueError, match=match):
        write_annotations([record], ["cat", "dog"], path)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.csv"]


# --------------------------------------------------------------------------------------------
# class lists


def test_read_class_list_from_sequences() -> None:
    assert read_class_list(["cat", "dog"]) == ["cat", "dog"]
    assert read_class_list(("background", "dog", "cat")) == ["dog", "cat"]


def test_read_class_list_from_file(tmp_path: Path) -> None:
    path = tmp_path / "names.txt"
    path.write_text("# my classes\nBackground\n\n  zebra  \n# a comment\nant\n")
    assert read_class_list(path) == ["zebra", "ant"]
    assert read_class_list(str(path)) == ["zebra", "ant"]


@pytest.mark.parametrize(("text", "match"), [
    ("", "is empty"),
    ("# only a comment\n\nbackground\n", "is empty"),
    ("cat\ndog\ncat\n", "line 3: duplicate class name 'cat' \\(first at line 1\\)"),
    ("cat\nbackground\n", "line 2: 'background' is reserved"),
])
def test_read_class_list_file_errors_name_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad_names.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        read_class_list(path)
    assert str(path) in str(info.value)


def test_read_class_list_other_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no_such_classes.txt"):
        read_class_list(tmp_path / "no_such_classes.txt")
    with pytest.raises(ValueError, match="empty"):
        read_class_list([])
    with pytest.raises(ValueError, match="duplicate class name 'a'"):
        read_class_list(["a", "b", "a"])
    with pytest.raises(ValueError, match="empty class name"):
        read_class_list(["a", " "])
    with pytest.raises(TypeError):
        read_class_list(3)
    with pytest.raises(TypeError):
        read_class_list(["a", 1])


# --------------------------------------------------------------------------------------------
# targets


def test_to_normalized_targets_hand_computed() -> None:
    record = {"width": 200, "height": 100, "boxes": np.array([[20, 10, 100, 50], [0, 0, 200, 100]], np.float32),
              "labels": np.array([2, 1])}
    expected = np.array([
        [0.1, 0.1, 0.5, 0.5, 0, 1, 0],
        [0.0, 0.0, 1.0, 1.0, 1, 0, 0],
    ], np.float32)
    targets = to_normalized_targets(record, num_classes=4)
    assert targets.dtype == np.float32
    np.testing.assert_allclose(targets, expected, rtol=0, atol=1e-7)


def test_to_normalized_targets_empty_and_errors() -> None:
    empty = {"width": 5, "height": 5, "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}
    assert to_normalized_targets(empty, 21).shape == (0, 24)
    record = {"width": 5, "height": 5, "boxes": [[0, 0, 1, 1]], "labels": [3]}
    with pytest.raises(ValueError, match=r"labels must be in \[1, 2\]"):
        to_normalized_targets(record, 3)
    with pytest.raises(ValueError, match="num_classes"):
        to_normalized_targets(record, 1)


def test_read_then_targets(dataset: Path) -> None:
    records, names = read_annotations(write_csv(dataset / "r.csv", "img/a.jpg,4,3,20,15,b", "img/a.jpg,0,0,40,30,a"))
    np.testing.assert_allclose(
        to_normalized_targets(records[0], len(names) + 1),
        [[0.1, 0.1, 0.5, 0.5, 0, 1], [0, 0, 1, 1, 1, 0]], atol=1e-7,
    )


def test_module_does_not_print(dataset: Path, capsys) -> None:
    with pytest.warns(AnnotationWarning):
        read_annotations(write_csv(dataset / "p.csv", "img/a.jpg,-1,0,5,5,dog"))  # warns, never prints
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
