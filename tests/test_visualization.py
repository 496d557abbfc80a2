"""Tests for ssd_keras.visualization: palette, coordinates, OpenCV/matplotlib drawing, heatmaps, files."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ssd_keras import plots
from ssd_keras import visualization as vis

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")  # headless; test module only

RED = (255, 0, 0)
NAMES = ["dog", "cat"]
SIZE = 300
# One box [0.2, 0.3, 0.6, 0.7] on a 300x300 image -> pixels x 60..180, y 90..210.
BOX = [0.2, 0.3, 0.6, 0.7]
X0, Y0, X1, Y1 = 60, 90, 180, 210


def black(height: int = SIZE, width: int = SIZE) -> np.ndarray:
    return np.zeros((height, width, 3), dtype=np.uint8)


def one_detection(label: float = 1, conf: float = 0.87, box=BOX, columns: int = 6) -> np.ndarray:
    row = [label, conf, *box] + ([42] if columns == 7 else [])
    return np.array([row], dtype=np.float32)


def is_color(image: np.ndarray, color) -> np.ndarray:
    return (image == np.array(color, dtype=np.uint8)).all(axis=-1)


def colormap_rgb(level: int, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    bgr = cv2.applyColorMap(np.array([[level]], dtype=np.uint8), colormap)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[0, 0]


# --------------------------------------------------------------------------- palette
class TestClassColors:
    @pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 21, 81, 1530])
    def test_distinct_uint8_and_first_is_red(self, n):
        colors = vis.class_colors(n)
        assert len(colors) == n
        assert len(set(colors)) == n
        assert all(len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colors)
        assert colors[0] == RED

    def test_deterministic(self):
        assert vis.class_colors(21) == vis.class_colors(21)

    def test_evenly_spaced_saturated_hues(self):
        n = 12
        for i, color in enumerate(vis.class_colors(n)):
            h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in color))
            assert h == pytest.approx(i / n, abs=2e-3)
            assert s == pytest.approx(1.0) and v == pytest.approx(1.0)

    def test_hand_values(self):
        # hues 0, 1/3, 2/3 are pure red, green, blue
        assert vis.class_colors(3) == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]

    @pytest.mark.parametrize("n", [0, -1, 2.5, True])
    def test_invalid(self, n):
        with pytest.raises(ValueError, match="num_classes"):
            vis.class_colors(n)


# --------------------------------------------------------------------------- text
@pytest.mark.parametrize(
    "label, conf, expected",
    [
        (1, 0.87, "dog 0.87"),
        (2.0, 0.5, "cat 0.50"),
        (np.float32(1), np.float32(0.999), "dog 1.00"),
        (7, 0.87, "class 7 0.87"),
        (0, 0.12, "class 0 0.12"),
        (-3, 0.12, "class -3 0.12"),
    ],
)
def test_label_text(label, conf, expected):
    assert vis.label_text(label, conf, NAMES) == expected


# --------------------------------------------------------------------------- coordinates
def test_to_pixels_hand_computed():
    boxes = np.array([[0.2, 0.3, 0.6, 0.7], [0.0, 0.0, 1.0, 1.0]])
    expected = np.array([[128.0, 144.0, 384.0, 336.0], [0.0, 0.0, 640.0, 480.0]])
    np.testing.assert_allclose(vis.to_pixels(boxes, 640, 480), expected)
    np.testing.assert_allclose(vis.to_normalized(expected, 640, 480), boxes)
    assert vis.to_pixels(np.zeros((0, 4)), 10, 10).shape == (0, 4)


@pytest.mark.parametrize("func", [vis.to_pixels, vis.to_normalized])
def test_coordinates_invalid(func):
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        func(np.zeros((2, 5)), 10, 10)
    with pytest.raises(ValueError, match="width"):
        func(np.zeros((2, 4)), 0, 10)


@settings(max_examples=50, deadline=None)
@given(
    boxes=hnp.arrays(
        np.float64,
        st.tuples(st.integers(0, 8), st.just(4)),
        elements=st.floats(0.0, 1.0, allow_nan=False),
    ),
    width=st.integers(1, 4000),
    height=st.integers(1, 4000),
)
def test_pixels_round_trip(boxes, width, height):
    pixels = vis.to_pixels(boxes, width, height)
    assert pixels.shape == boxes.shape
    assert (pixels[:, [0, 2]] <= width).all() and (pixels[:, [1, 3]] <= height).all()
    np.testing.assert_allclose(vis.to_normalized(pixels, width, height), boxes, atol=1e-12)


# --------------------------------------------------------------------------- OpenCV drawing
class TestDrawDetections:
    def test_box_edges_in_class_color_inside_outside_black(self):
        image = black()
        out = vis.draw_detections(image, one_detection(), NAMES)
        assert out.dtype == np.uint8 and out.shape == image.shape
        ys = np.arange(Y0, Y1 + 1)
        xs = np.arange(X0, X1 + 1)
        assert is_color(out[ys, X0], RED).all()  # left edge
        assert is_color(out[ys, X1], RED).all()  # right edge
        assert is_color(out[Y1, xs], RED).all()  # bottom edge
        assert is_color(out[Y0, xs], RED).all()  # top edge (under the label too)
        # well inside and well outside stay black
        for y, x in [(150, 120), (100, 100), (200, 170), (10, 10), (250, 250), (150, 20), (150, 250)]:
            assert (out[y, x] == 0).all(), (y, x)
        assert (out[Y0 + 10 : Y1 - 10, X0 + 10 : X1 - 10] == 0).all()
        assert (out[Y1 + 10 :] == 0).all()

    def test_input_unchanged_and_new_array(self):
        image = np.full((SIZE, SIZE, 3), 7, dtype=np.uint8)
        before = image.copy()
        out = vis.draw_detections(image, one_detection(), NAMES)
        np.testing.assert_array_equal(image, before)
        assert not np.shares_memory(out, image)
        assert (out != image).any()

    def test_label_background_above_box(self):
        out = vis.draw_detections(black(), one_detection(), NAMES)
        label_band = out[Y0 - 10 : Y0, X0 : X0 + 40]
        # mostly class colour, with (white) text on it
        assert is_color(label_band, RED).mean() > 0.5
        assert (label_band.min(axis=-1) > 200).any()  # white-ish text pixels
        assert is_color(out[Y0 - 10 : Y0, X0], RED).all()  # left padding column
        # nothing far above the label
        assert (out[: Y0 - 40] == 0).all()
        # the label does not extend further left than the box
        assert (out[:, : X0 - 2] == 0).all()

    def test_label_inside_when_box_touches_top(self):
        out = vis.draw_detections(black(), one_detection(box=[0.2, 0.0, 0.6, 0.5]), NAMES)
        label_band = out[1:14, X0 + 1 : X0 + 40]
        # red background with white (anti-aliased) text: red channel saturated everywhere
        assert (label_band[..., 0] == 255).all() and (label_band[..., 1] > 200).any()
        assert is_color(label_band, RED).mean() > 0.3
        assert (out[40:140, X0 + 10 : X1 - 10] == 0).all()  # below the label, inside the box

    def test_label_stays_inside_image_at_right_edge(self):
        out = vis.draw_detections(black(), one_detection(box=[0.95, 0.5, 1.0, 0.9]), NAMES)
        # label is wider than the 15 px box, so it is shifted left onto the image
        band = out[int(0.5 * SIZE) - 10 : int(0.5 * SIZE)]
        assert is_color(band, RED).any(axis=0)[: int(0.95 * SIZE) - 5].any()

    def test_contrasting_text_color(self):
        yellow = (255, 255, 0)
        out = vis.draw_detections(black(), one_detection(), NAMES, colors=[yellow, (0, 0, 255)])
        band = out[Y0 - 16 : Y0, X0 : X0 + 45]
        assert is_color(out[Y0 + 30, X0], yellow)
        assert (band.max(axis=-1) < 60).any()  # dark text on the bright background
        assert not (band.min(axis=-1) > 200).all(axis=-1).all()
        assert not is_color(band, (255, 255, 255)).any()

    def test_below_threshold_not_drawn(self):
        detections = one_detection(conf=0.3)
        out = vis.draw_detections(black(), detections, NAMES, confidence_threshold=0.5)
        assert (out == 0).all()
        # confidence equal to the threshold is drawn
        out = vis.draw_detections(black(), detections, NAMES, confidence_threshold=np.float32(0.3))
        assert is_color(out[Y0 + 30, X0], RED)

    def test_colour_per_class_and_seven_columns(self):
        detections = np.concatenate(
            [one_detection(1, columns=7), one_detection(2, box=[0.7, 0.1, 0.9, 0.2], columns=7)]
        )
        out = vis.draw_detections(black(), detections, NAMES)
        colors = vis.class_colors(len(NAMES))
        assert is_color(out[Y0 + 30, X0], colors[0])
        assert is_color(out[45, 210], colors[1])  # left edge of the second box (x=210, y 30..60)

    def test_unknown_label_does_not_crash(self):
        out = vis.draw_detections(black(), one_detection(label=7), NAMES)
        assert (out != 0).any()

    @pytest.mark.parametrize("empty", [np.zeros((0, 6)), np.zeros((0, 7)), []])
    def test_empty_detections_identical_copy(self, empty):
        image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
        out = vis.draw_detections(image, empty, NAMES)
        np.testing.assert_array_equal(out, image)
        assert not np.shares_memory(out, image)

    def test_default_thickness_scales_with_image(self):
        small = vis.draw_detections(black(), one_detection(), NAMES)
        large = vis.draw_detections(black(1080, 1920), one_detection(), NAMES)
        small_width = is_color(small[150], RED)[: SIZE // 2].sum()
        large_width = is_color(large[540], RED)[: 1920 // 2].sum()  # left edge at x=384
        assert large_width > small_width >= 1
        thin = vis.draw_detections(black(), one_detection(), NAMES, thickness=1, font_scale=0.3)
        assert is_color(thin[150], RED)[: SIZE // 2].sum() == 1

    @pytest.mark.parametrize(
        "image",
        [np.zeros((SIZE, SIZE), np.uint8), np.zeros((SIZE, SIZE, 4), np.uint8), np.zeros((SIZE, SIZE, 3), np.float32)],
    )
    def test_bad_image_raises(self, image):
        with pytest.raises(ValueError, match="image"):
            vis.draw_detections(image, one_detection(), NAMES)

    @pytest.mark.parametrize("detections", [np.zeros((1, 5)), np.zeros((1, 8)), np.zeros(6), np.zeros((1, 1, 6))])
    def test_bad_detections_raise(self, detections):
        with pytest.raises(ValueError, match=r"\(n, 6\) or \(n, 7\)"):
            vis.draw_detections(black(), detections, NAMES)

    def test_non_finite_box_raises(self):
        with pytest.raises(ValueError, match="non-finite"):
            vis.draw_detections(black(), one_detection(box=[0.1, np.nan, 0.5, 0.5]), NAMES)


# --------------------------------------------------------------------------- matplotlib
class TestPlotDetections:
    def test_patches_texts_and_axes_off(self):
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle

        ax = Figure().subplots()
        detections = np.concatenate(
            [one_detection(1, 0.87), one_detection(2, 0.6, box=[0.1, 0.1, 0.3, 0.2]), one_detection(2, 0.1)]
        )
        out = plots.plot_detections(black(), detections, NAMES, confidence_threshold=0.5, ax=ax)
        assert out is ax
        rects = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert len(rects) == 2
        by_corner = {tuple(np.round(r.get_xy(), 6)): r for r in rects}
        dog = by_corner[(float(X0), float(Y0))]
        assert dog.get_width() == pytest.approx(X1 - X0) and dog.get_height() == pytest.approx(Y1 - Y0)
        assert dog.get_edgecolor()[:3] == pytest.approx((1.0, 0.0, 0.0))
        assert not dog.get_fill()
        texts = sorted(t.get_text() for t in ax.texts)
        assert texts == ["cat 0.60", "dog 0.87"]
        assert all(t.get_bbox_patch() is not None for t in ax.texts)
        assert len(ax.images) == 1 and not ax.axison

    def test_creates_figure_when_no_axes(self):
        import matplotlib.pyplot as plt

        ax = plots.plot_detections(black(), np.zeros((0, 6)), NAMES)
        try:
            assert len(ax.patches) == 0 and len(ax.texts) == 0 and len(ax.images) == 1
        finally:
            plt.close(ax.figure)

    def test_bad_detections_raise(self):
        from matplotlib.figure import Figure

        with pytest.raises(ValueError, match="detections"):
            plots.plot_detections(black(), np.zeros((1, 4)), NAMES, ax=Figure().subplots())


# --------------------------------------------------------------------------- heatmaps
class TestOverlayHeatmap:
    def test_alpha_zero_is_image(self):
        image = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
        heatmap = np.random.default_rng(2).random((20, 30))
        out = vis.overlay_heatmap(image, heatmap, alpha=0.0)
        np.testing.assert_array_equal(out, image)
        assert not np.shares_memory(out, image)

    def test_alpha_one_is_pure_colormap_rgb(self):
        image = np.full((4, 6, 3), 99, np.uint8)
        heatmap = np.zeros((4, 6))
        heatmap[:, 3:] = 1.0
        for colormap in (cv2.COLORMAP_JET, cv2.COLORMAP_VIRIDIS):
            out = vis.overlay_heatmap(image, heatmap, alpha=1.0, colormap=colormap)
            assert (out[:, :3] == colormap_rgb(0, colormap)).all()
            assert (out[:, 3:] == colormap_rgb(255, colormap)).all()
        # JET: 0 is dark blue, 1 is dark red (in RGB order)
        np.testing.assert_array_equal(colormap_rgb(0), [0, 0, 128])
        np.testing.assert_array_equal(colormap_rgb(255), [128, 0, 0])

    def test_half_blend_hand_computed(self):
        image = np.full((2, 2, 3), 100, np.uint8)
        out = vis.overlay_heatmap(image, np.ones((2, 2)), alpha=0.5)
        expected = np.rint((100 + colormap_rgb(255).astype(float)) / 2)
        assert (out == expected).all()

    def test_size_mismatch_resized(self):
        image = np.zeros((40, 60, 3), np.uint8)
        heatmap = np.array([[0.0, 1.0], [0.0, 1.0]])
        out = vis.overlay_heatmap(image, heatmap, alpha=1.0)
        assert out.shape == (40, 60, 3) and out.dtype == np.uint8
        assert (out[:, 0] == colormap_rgb(0)).all()
        assert (out[:, -1] == colormap_rgb(255)).all()
        assert len(np.unique(out.reshape(-1, 3), axis=0)) > 2  # interpolated in between

    @pytest.mark.parametrize(
        "heatmap, match",
        [
            (np.full((4, 4), np.nan), "NaN"),
            (np.full((4, 4), 1.5), r"\[0, 1\]"),
            (np.full((4, 4), -0.1), r"\[0, 1\]"),
            (np.zeros((4, 4, 1)), r"\(h, w\)"),
            (np.zeros((0, 4)), r"\(h, w\)"),
        ],
    )
    def test_invalid_heatmap(self, heatmap, match):
        with pytest.raises(ValueError, match=match):
            vis.overlay_heatmap(np.zeros((4, 4, 3), np.uint8), heatmap)

    def test_invalid_alpha_and_image(self):
        with pytest.raises(ValueError, match="alpha"):
            vis.overlay_heatmap(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4)), alpha=1.5)
        with pytest.raises(ValueError, match="image"):
            vis.overlay_heatmap(np.zeros((4, 4), np.uint8), np.zeros((4, 4)))


# --------------------------------------------------------------------------- files
class TestSaveImage:
    def test_png_round_trip_creates_parents(self, tmp_path):
        image = np.random.default_rng(3).integers(0, 256, (17, 23, 3), dtype=np.uint8)
        image[0, 0] = RED
        path = tmp_path / "a" / "b" / "out.png"
        assert vis.save_image(path, image) is None
        back = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(back, image)

    def test_jpeg_round_trip(self, tmp_path):
        image = np.zeros((32, 32, 3), np.uint8)
        image[:] = RED
        path = tmp_path / "out.jpg"
        vis.save_image(str(path), image)
        back = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert np.abs(back.astype(int) - image).max() < 10  # red stays red (not BGR-swapped blue)

    def test_unwritable_paths_raise_oserror_naming_path(self, tmp_path):
        directory = tmp_path / "taken.png"
        directory.mkdir()  # a folder where the file should go: cv2.imwrite returns False
        with pytest.raises(OSError, match="taken.png"):
            vis.save_image(directory, black(8, 8))
        blocker = tmp_path / "file"
        blocker.write_text("x")  # parent "folder" is a file
        with pytest.raises(OSError, match="out.png"):
            vis.save_image(blocker / "out.png", black(8, 8))
        with pytest.raises(OSError, match="out.unknownext"):
            vis.save_image(tmp_path / "out.unknownext", black(8, 8))

    def test_bad_image_raises(self, tmp_path):
        with pytest.raises(ValueError, match="image"):
            vis.save_image(tmp_path / "x.png", np.zeros((8, 8, 3), np.float64))


def test_draw_box_draws_one_captioned_box():
    from ssd_keras.visualization import draw_box

    image = np.zeros((300, 300, 3), np.uint8)
    out = draw_box(image, [0.2, 0.3, 0.6, 0.7], "cat 0.9", color=(0, 255, 0))
    assert (image == 0).all()
    assert tuple(out[150, 60]) == (0, 255, 0) and tuple(out[150, 150]) == (0, 0, 0)
    assert (out[80:89, 62:90] != 0).any()  # the caption above the box
    with pytest.raises(ValueError, match="finite"):
        draw_box(image, [0.1, np.nan, 0.2, 0.3])
