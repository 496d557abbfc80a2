"""The embedded demo model and ``python -m ssd_keras demo``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ssd_keras.data.synthetic import SHAPE_CLASSES
from ssd_keras.demo import DEMO_CONFIG, DEMO_WEIGHTS, load_demo_model, shapes_map

UNSEEN_SEED = 7  # training used seed 1, validation seed 2, the demo draws DEMO_SEED (+1)


@pytest.fixture(scope="module")
def demo_model():
    return load_demo_model()


def test_demo_model_files_are_small_and_describe_the_model(demo_model):
    model, class_names = demo_model
    assert DEMO_WEIGHTS.stat().st_size <= 10 * 2**20 and DEMO_CONFIG.is_file()
    assert class_names == list(SHAPE_CLASSES)
    assert model.output_shape == (None, 7308, 4 + len(SHAPE_CLASSES) + 1 + 8)


def test_demo_model_reaches_map_090_on_unseen_scenes(demo_model):
    model, _ = demo_model
    result = shapes_map(model, count=100, seed=UNSEEN_SEED)
    assert result["mAP"] >= 0.90, result["mAP"]


def test_missing_demo_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.weights.h5"):
        load_demo_model(tmp_path / "nothere.weights.h5")


@pytest.fixture()
def no_voc_weights(monkeypatch, tmp_path):
    """No VOC weights are found (here, in the checkout or in $SSD_KERAS_WEIGHTS)."""
    import ssd_keras.models

    monkeypatch.delenv(ssd_keras.models.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(ssd_keras.models, "_CHECKOUT_WEIGHTS", tmp_path / "no_checkout_weights")


def _png_shape(path):
    import cv2

    picture = cv2.imread(str(path))
    assert picture is not None, f"{path} is not an image"
    return picture.shape


def test_demo_command_end_to_end(tmp_path, monkeypatch):
    from ssd_keras.demo import VOC_HINT
    from ssd_keras.models import WEIGHTS_ENV, find_default_weights

    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    if find_default_weights() is not None:
        pytest.skip("VOC weights are in the checkout: the demo uses them instead of the shapes model")
    out = tmp_path / "demo"
    run = subprocess.run([sys.executable, "-m", "ssd_keras", "demo", "--out", str(out),
                          "--eval-scenes", "16"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    names = sorted(p.name for p in out.iterdir())
    expected = [f"scene_{i}{suffix}.png" for i in range(4) for suffix in ("", "_gradcam", "_truth")]
    assert names == sorted(expected + ["summary.png"])  # no photograph for the shapes model
    height, width, _ = _png_shape(out / "summary.png")
    assert 400 <= width <= 1600 and 300 <= height <= 1600, (height, width)
    assert "embedded shapes model" in run.stdout and "grace_hopper" not in run.stdout
    assert f"wrote {out / 'summary.png'}" in run.stdout
    lines = run.stdout.splitlines()
    assert lines[-1] == VOC_HINT and "weights_SSD300.hdf5" in VOC_HINT
    (map_line,) = [line for line in lines if line.startswith("mAP@0.5 on 16 held-out scenes: ")]
    mean_ap = float(map_line.rsplit(":", 1)[1])
    assert 0.0 <= mean_ap <= 1.0 and np.isfinite(mean_ap)


def test_run_demo_shows_the_shapes_model_scenes_beside_their_truth(no_voc_weights, tmp_path):
    from ssd_keras import layout
    from ssd_keras.data.synthetic import make_scene
    from ssd_keras.demo import DEMO_SEED, run_demo

    result = run_demo(tmp_path, num_scenes=2, eval_scenes=0)
    assert "embedded shapes model" in result["model"] and result["class_names"] == list(SHAPE_CLASSES)
    assert result["mAP"] is None
    assert [entry["name"] for entry in result["images"]] == ["scene_0", "scene_1"]
    for i, entry in enumerate(result["images"]):
        image, boxes, labels = make_scene(np.random.default_rng([DEMO_SEED + 1, i]))
        truth = entry["truth"]
        assert truth[:, layout.LABEL].tolist() == labels.tolist() and np.allclose(truth[:, layout.CONFIDENCE], 1.0)
        assert np.allclose(truth[:, layout.BOX], boxes)
        for key in ("picture", "truth_picture", "gradcam"):
            assert _png_shape(entry[key]) == image.shape
    height, width, _ = _png_shape(result["summary"])
    assert result["summary"] == str(tmp_path / "summary.png") and 256 < height < 400 and 1000 < width <= 1600


def test_run_demo_with_voc_weights_shows_photographs_only(thin_ssd, tmp_path, monkeypatch):
    """The VOC model (a thin, untrained stand-in) sees the photograph, never a shapes scene, and
    has no mAP (no ground truth)."""
    import ssd_keras.data.synthetic
    import ssd_keras.demo
    import ssd_keras.models
    from ssd_keras.data.classes import VOC_CLASSES

    fake = tmp_path / "weights_SSD300.hdf5"
    chosen = []

    def resolve_model(weights=None, **kwargs):
        chosen.append(weights)
        return ssd_keras.models.ResolvedModel(thin_ssd, list(VOC_CLASSES), f"VOC weights {weights}")

    def no_scenes(*args, **kwargs):
        raise AssertionError("the VOC model was shown a shapes scene")

    monkeypatch.setattr(ssd_keras.models, "resolve_model", resolve_model)
    monkeypatch.setattr(ssd_keras.data.synthetic, "make_scene", no_scenes)
    monkeypatch.setattr(ssd_keras.demo, "shapes_map", no_scenes)
    result = ssd_keras.demo.run_demo(tmp_path / "out", fake, num_scenes=4, eval_scenes=100)
    assert chosen == [fake]
    assert result["model"] == f"VOC weights {fake}" and result["class_names"] == list(VOC_CLASSES)
    assert [entry["name"] for entry in result["images"]] == ["grace_hopper"]
    (entry,) = result["images"]
    assert entry["truth"] is None and entry["truth_picture"] is None and result["mAP"] is None
    photo = ssd_keras.demo.sample_photos()[0][1]
    assert _png_shape(entry["picture"]) == photo.shape
    assert not list((tmp_path / "out").glob("scene_*"))
    assert (tmp_path / "out" / "summary.png").is_file()
    assert not ssd_keras.demo.runs_on_scenes(result["class_names"])


def test_demo_command_lists_every_drawn_detection(tmp_path, monkeypatch, capsys):
    """The table has a row for each box drawn on the pictures (score >= DRAW_THRESHOLD), however many."""
    import ssd_keras.demo
    from ssd_keras import cli

    rng = np.random.default_rng(0)
    scores = np.concatenate([np.linspace(0.99, ssd_keras.demo.DRAW_THRESHOLD, 18), [0.49, 0.1]])
    rows = np.column_stack([rng.integers(1, 5, 20), scores, rng.uniform(0, 1, (20, 4)), np.arange(20)])
    result = {"model": "a stub", "class_names": list(SHAPE_CLASSES), "mAP": None,
              "images": [{"name": "busy", "detections": rows[::-1], "picture": "busy.png", "gradcam": None},
                         {"name": "empty", "detections": rows[-2:], "picture": "empty.png", "gradcam": None}]}
    monkeypatch.setattr(ssd_keras.demo, "run_demo", lambda *args, **kwargs: result)
    assert cli.main(["demo", "--out", str(tmp_path), "--eval-scenes", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    busy = [line for line in lines if line.startswith("busy ")]
    assert len(busy) == 18
    assert [float(line.split()[2]) for line in busy] == sorted((round(s, 3) for s in scores[:18]), reverse=True)
    assert any(line.startswith("empty") and "nothing above" in line for line in lines)
    assert "model: a stub" in lines
