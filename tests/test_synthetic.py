"""Tests for ssd_keras.data.synthetic: seeded shape scenes and the dataset writer."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd_keras.data import synthetic
from ssd_keras.data.annotations import read_annotations, read_class_list
from ssd_keras.data.synthetic import SHAPE_CLASSES, draw_shape, make_scene, make_shapes_dataset

HEADER = ["image_path", "xmin", "ymin", "xmax", "ymax", "class_name"]
EDGE_TOLERANCE_PX = 2.0  # anti-aliasing blends about one pixel beyond the geometric edge
VISIBLE = 16  # a channel value above this on black is visible ink (faint anti-aliasing is not)
# Least area of each shape (any rotation) as a fraction of its bounding box's area.
MIN_FILL = {"circle": math.pi / 4, "square": 0.5, "triangle": 0.4, "star": 0.3}


def scenes(seed: int, count: int, **kwargs):
    """``count`` scenes drawn with generators seeded ``[seed, i]``."""
    return [make_scene(np.random.default_rng([seed, i]), **kwargs) for i in range(count)]


def pixel_box(mask: np.ndarray) -> np.ndarray:
    """The tight box of the true pixels of a mask, continuous pixel coordinates."""
    rows, cols = np.nonzero(mask)
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=np.float64)


@pytest.fixture
def plain_scenes(monkeypatch):
    """``make_scene`` on a black background without noise, recording each shape's colour."""
    monkeypatch.setattr(synthetic, "_background", lambda rng, size: np.zeros((size, size, 3), np.uint8))
    monkeypatch.setattr(synthetic, "_MAX_NOISE", 0)
    colors: list[tuple[int, int, int]] = []
    pick = synthetic._contrasting_color

    def recording(rng, local_mean):
        colors.append(pick(rng, local_mean))
        return colors[-1]

    monkeypatch.setattr(synthetic, "_contrasting_color", recording)

    def draw(seed: int, **kwargs):
        colors.clear()
        image, boxes, labels = make_scene(np.random.default_rng(seed), **kwargs)
        return image, boxes, labels, list(colors)

    return draw


# --------------------------------------------------------------------------------------------
# make_scene


def test_same_seed_same_scene_and_different_seeds_differ():
    first = make_scene(np.random.default_rng(123))
    again = make_scene(np.random.default_rng(123))
    other = make_scene(np.random.default_rng(124))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_scene_shapes_dtypes_and_value_ranges():
    for image, boxes, labels in scenes(0, 60, max_objects=6):
        assert image.shape == (300, 300, 3) and image.dtype == np.uint8
        assert boxes.dtype == np.float64 and boxes.ndim == 2 and boxes.shape[1] == 4
        assert labels.dtype == np.int64 and labels.shape == (len(boxes),)
        assert 1 <= len(labels) <= 6
        assert np.all((boxes >= 0) & (boxes <= 1))
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
        assert np.all((labels >= 1) & (labels <= len(SHAPE_CLASSES)))


def test_object_counts_classes_and_sizes_span_the_ranges():
    all_scenes = scenes(1, 100)
    counts = {len(labels) for _, _, labels in all_scenes}
    assert 1 in counts and 6 in counts and counts <= set(range(1, 7))
    assert set(np.concatenate([labels for _, _, labels in scenes(1, 50)]).tolist()) == {1, 2, 3, 4}
    sides = np.concatenate([(boxes[:, 2:] - boxes[:, :2]).max(axis=1) * 300 for _, boxes, _ in all_scenes])
    assert sides.min() < 30 and sides.max() > 200 and sides.max() <= 250 + 1e-9


def test_max_objects_and_size_are_honoured():
    for image, boxes, labels in scenes(2, 20, size=150, max_objects=2):
        assert image.shape == (150, 150, 3)
        assert 1 <= len(labels) <= 2
        assert (boxes[:, 2:] - boxes[:, :2]).max() * 150 <= 125 + 1e-9  # 250 px scaled by 150/300
    image, boxes, labels = make_scene(np.random.default_rng(0), max_objects=0)
    assert image.shape == (300, 300, 3) and boxes.shape == (0, 4) and labels.shape == (0,)


def test_background_is_textured_not_flat():
    image, _, _ = make_scene(np.random.default_rng(5), max_objects=0)
    assert image.reshape(-1, 3).std(axis=0).max() > 5
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 1000


@pytest.mark.parametrize("bad", [{"size": 8}, {"size": 300.0}, {"max_objects": -1}, {"max_objects": True}])
def test_make_scene_rejects_bad_arguments(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        make_scene(np.random.default_rng(0), **bad)


def test_single_shape_box_is_tight_on_plain_background(plain_scenes):
    for seed in range(40):
        image, boxes, labels, colors = plain_scenes(seed, max_objects=1)
        assert len(labels) == 1
        drawn = pixel_box(image.max(axis=2) > VISIBLE)
        np.testing.assert_allclose(drawn, boxes[0] * 300, atol=EDGE_TOLERANCE_PX, err_msg=f"seed {seed}")


def test_every_drawn_pixel_is_annotated_and_every_shape_stays_visible(plain_scenes):
    for seed in range(40):
        image, boxes, labels, colors = plain_scenes(seed)
        pixels = boxes * 300
        annotated = np.zeros((300, 300), bool)
        for xmin, ymin, xmax, ymax in pixels:
            x0, y0 = max(0, math.floor(xmin - EDGE_TOLERANCE_PX)), max(0, math.floor(ymin - EDGE_TOLERANCE_PX))
            annotated[y0:math.ceil(ymax + EDGE_TOLERANCE_PX), x0:math.ceil(xmax + EDGE_TOLERANCE_PX)] = True
        assert not np.any((image.max(axis=2) > VISIBLE) & ~annotated), f"seed {seed}: unannotated pixels"
        assert len(colors) == len(labels)
        for box, label, color in zip(pixels, labels, colors):
            if np.any(box == 0) or np.any(box == 300):
                continue  # clipped: its full area is unknown from the box
            exact = np.count_nonzero(np.all(image == color, axis=2))
            box_area = (box[2] - box[0]) * (box[3] - box[1])
            # at least 40 % of the shape's area visible; interior pixels only (edges blend)
            least = 0.4 * MIN_FILL[SHAPE_CLASSES[label - 1]] * box_area
            perimeter = 2 * (box[2] - box[0] + box[3] - box[1])
            assert exact >= least - 2 * perimeter, f"seed {seed}: {SHAPE_CLASSES[label - 1]} hidden"


# --------------------------------------------------------------------------------------------
# draw_shape


@settings(max_examples=80, deadline=None)
@given(
    kind=st.sampled_from(SHAPE_CLASSES),
    cx=st.floats(0, 200),
    cy=st.floats(0, 160),
    size=st.floats(12, 220),
    angle=st.floats(0, 360),
)
def test_draw_shape_box_matches_drawn_pixels(kind, cx, cy, size, angle):
    image = np.zeros((160, 200, 3), np.uint8)  # not square: x and y normalise differently
    scale = np.array([200, 160, 200, 160])
    box = draw_shape(image, kind, (cx, cy), size, angle, (255, 255, 255))
    assert box.shape == (4,) and box.dtype == np.float64 and np.all((box >= 0) & (box <= 1))
    box = box * scale
    drawn = pixel_box(image[..., 0] > VISIBLE)
    # no visible ink outside the box
    assert np.all(drawn[:2] >= box[:2] - EDGE_TOLERANCE_PX) and np.all(drawn[2:] <= box[2:] + EDGE_TOLERANCE_PX)
    radius = size / 2
    if radius <= cx <= 200 - radius and radius <= cy <= 160 - radius:
        # inside the image the box is tight too (clipping can leave sub-pixel slivers, too thin to draw)
        np.testing.assert_allclose(box, drawn, atol=EDGE_TOLERANCE_PX)


def test_draw_shape_hand_computed_boxes():
    image = np.zeros((300, 300, 3), np.uint8)
    half_diagonal = 50 * math.sqrt(2)
    np.testing.assert_allclose(draw_shape(image, "square", (150, 150), 2 * half_diagonal, 0, (9, 9, 9)) * 300,
                               [100, 100, 200, 200], atol=1 / 16)
    np.testing.assert_allclose(draw_shape(image, "square", (150, 150), 2 * half_diagonal, 45, (9, 9, 9)) * 300,
                               [150 - half_diagonal, 150 - half_diagonal, 150 + half_diagonal, 150 + half_diagonal],
                               atol=1 / 16)
    # an upright equilateral triangle of circumradius 80: apex at the top, base at cy + R/2
    np.testing.assert_allclose(draw_shape(image, "triangle", (150, 150), 160, 0, (9, 9, 9)) * 300,
                               [150 - 80 * math.sqrt(3) / 2, 70, 150 + 80 * math.sqrt(3) / 2, 190], atol=1 / 16)
    # the star's top point and its lowest points (at 126 degrees from the top)
    np.testing.assert_allclose(draw_shape(image, "star", (150, 150), 160, 0, (9, 9, 9)) * 300,
                               [150 - 80 * math.cos(math.radians(18)), 70, 150 + 80 * math.cos(math.radians(18)),
                                150 + 80 * math.cos(math.radians(36))], atol=1 / 16)
    # a circle leaving the image is clipped; with its centre outside, the chord at the border counts
    np.testing.assert_allclose(draw_shape(image, "circle", (10, 290), 60, 0, (9, 9, 9)) * 300, [0, 260, 40, 300])
    np.testing.assert_allclose(draw_shape(image, "circle", (-10, 50), 40, 0, (9, 9, 9)) * 300,
                               [0, 50 - math.sqrt(300), 10, 50 + math.sqrt(300)])
    # a triangle pointing down with its base above the image: the box is that of the visible part,
    # whose top corners are where the edges cross y = 0 (a quarter of the way down to the apex)
    np.testing.assert_allclose(draw_shape(image, "triangle", (150, 10), 160, 180, (9, 9, 9)) * 300,
                               [150 - 0.75 * 80 * math.sqrt(3) / 2, 0, 150 + 0.75 * 80 * math.sqrt(3) / 2, 90],
                               atol=0.1)
    assert not np.any(draw_shape(image, "star", (-100, -100), 40, 0, (9, 9, 9)))  # entirely outside
    # colours are drawn as given (RGB order untouched)
    image = np.zeros((50, 50, 3), np.uint8)
    draw_shape(image, "circle", (25, 25), 30, 0, (200, 100, 50))
    assert tuple(image[25, 25]) == (200, 100, 50)


def test_draw_shape_rejects_bad_arguments():
    with pytest.raises(ValueError, match="hexagon"):
        draw_shape(np.zeros((10, 10, 3), np.uint8), "hexagon", (5, 5), 4, 0, (1, 1, 1))
    with pytest.raises(ValueError, match="size"):
        draw_shape(np.zeros((10, 10, 3), np.uint8), "circle", (5, 5), 0, 0, (1, 1, 1))
    with pytest.raises(ValueError, match="uint8"):
        draw_shape(np.zeros((10, 10), np.uint8), "circle", (5, 5), 4, 0, (1, 1, 1))


# --------------------------------------------------------------------------------------------
# make_shapes_dataset


def read_rows(csv_path: Path) -> list[list[str]]:
    with open(csv_path, newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


def test_dataset_layout_rows_and_pixels(tmp_path):
    csv_path = make_shapes_dataset(tmp_path / "ds", n_images=5, seed=7, image_format="png")
    assert csv_path == tmp_path / "ds" / "annotations.csv"
    rows = read_rows(csv_path)
    assert rows[0] == HEADER
    assert (tmp_path / "ds" / "classes.txt").read_text(encoding="utf-8") == "circle\nsquare\ntriangle\nstar\n"
    assert sorted(p.name for p in (tmp_path / "ds" / "images").iterdir()) == [f"{i:06d}.png" for i in range(5)]
    for index in range(5):
        image, boxes, labels = make_scene(np.random.default_rng([7, index]))
        name = f"images/{index:06d}.png"
        mine = [row for row in rows[1:] if row[0] == name]
        assert len(mine) == len(labels) >= 1
        np.testing.assert_allclose(np.array([row[1:5] for row in mine], dtype=np.float64), boxes * 300, rtol=0,
                                   atol=1e-9)
        assert [row[5] for row in mine] == [SHAPE_CLASSES[label - 1] for label in labels]
        written = cv2.imread(str(csv_path.parent / name), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(written[..., ::-1], image)  # PNG is lossless; file is BGR


def test_dataset_reads_back_with_the_annotation_reader(tmp_path):
    csv_path = make_shapes_dataset(tmp_path, n_images=4, seed=3, size=200)
    assert read_class_list(tmp_path / "classes.txt") == list(SHAPE_CLASSES)
    records, names = read_annotations(csv_path, classes=tmp_path / "classes.txt")
    assert names == list(SHAPE_CLASSES) and len(records) == 4
    for index, record in enumerate(records):
        image, boxes, labels = make_scene(np.random.default_rng([3, index]), size=200)
        assert Path(record["image_path"]) == tmp_path / "images" / f"{index:06d}.jpg"
        assert (record["width"], record["height"]) == (200, 200)
        np.testing.assert_array_equal(record["boxes"], (boxes * 200).astype(np.float32))
        np.testing.assert_array_equal(record["labels"], labels)
        jpeg = cv2.imread(record["image_path"], cv2.IMREAD_COLOR)[..., ::-1]
        assert np.abs(jpeg.astype(int) - image).mean() < 6  # quality 95


def test_dataset_is_deterministic_and_prefix_stable(tmp_path):
    small = make_shapes_dataset(tmp_path / "a", n_images=3, seed=11)
    again = make_shapes_dataset(tmp_path / "b", n_images=3, seed=11)
    longer = make_shapes_dataset(tmp_path / "c", n_images=5, seed=11)
    other = make_shapes_dataset(tmp_path / "d", n_images=3, seed=12)
    assert small.read_bytes() == again.read_bytes()
    assert longer.read_text().startswith(small.read_text())
    assert small.read_text() != other.read_text()
    for index in range(3):
        name = f"images/{index:06d}.jpg"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "d" / name).read_bytes()


def test_dataset_writes_empty_rows_for_scenes_without_objects(tmp_path):
    csv_path = make_shapes_dataset(tmp_path, n_images=2, seed=0, max_objects=0, image_format="png")
    assert read_rows(csv_path) == [HEADER, ["images/000000.png", "", "", "", "", ""],
                                   ["images/000001.png", "", "", "", "", ""]]
    records, _ = read_annotations(csv_path, classes=list(SHAPE_CLASSES))
    assert [len(record["boxes"]) for record in records] == [0, 0]


def test_dataset_refuses_to_overwrite_unless_asked(tmp_path):
    make_shapes_dataset(tmp_path, n_images=2, seed=0)
    with pytest.raises(ValueError, match=str(tmp_path / "images")):
        make_shapes_dataset(tmp_path, n_images=2, seed=1)
    assert read_rows(tmp_path / "annotations.csv") == read_rows(
        make_shapes_dataset(tmp_path / "fresh", n_images=2, seed=0))  # nothing was lost
    make_shapes_dataset(tmp_path, n_images=2, seed=1, overwrite=True)
    assert read_rows(tmp_path / "annotations.csv") == read_rows(
        make_shapes_dataset(tmp_path / "fresh1", n_images=2, seed=1))
    # an existing but empty images folder is fine
    (tmp_path / "empty" / "images").mkdir(parents=True)
    assert make_shapes_dataset(tmp_path / "empty", n_images=1, seed=0).is_file()


@pytest.mark.parametrize("bad", [{"image_format": "bmp"}, {"n_images": -1}, {"seed": -3}, {"size": 4},
                                 {"max_objects": -2}])
def test_dataset_rejects_bad_arguments(tmp_path, bad):
    kwargs = {"n_images": 1, "seed": 0, **bad}
    with pytest.raises(ValueError, match=next(iter(bad))):
        make_shapes_dataset(tmp_path, **kwargs)
    assert not (tmp_path / "annotations.csv").exists()
