"""``python -m ssd_keras detect``: in-process runs, plus one real subprocess for the quiet start."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path
import sys

import cv2
import numpy as np
import pytest

from ssd_keras import cli
from ssd_keras.image import load_image
from ssd_keras.ssd import SSD300, VOC_CLASSES, prior_boxes
from ssd_keras.visualization import save_image
from tests.conftest import REPO_ROOT
from tests.legacy_h5 import write_legacy_h5

CAT = VOC_CLASSES.index("cat") + 1
CAT_BIAS = 5.0
CAT_SCORE = np.exp(CAT_BIAS) / (np.exp(CAT_BIAS) + 20)  # softmax with all other logits 0


@pytest.fixture(scope="module")
def cat_everywhere(tmp_path_factory):
    """Full-size SSD300 weights (legacy layout) with zero kernels and a 'cat' bias in the conf
    heads: every prior says cat with CAT_SCORE and zero offsets (boxes = priors)."""
    model = SSD300()
    weights = {}
    for layer in model.layers:
        arrays = [np.zeros(tuple(w.shape), "float32") for w in layer.weights]
        if "mbox_conf" in layer.name and arrays:
            arrays[1].reshape(-1, 21)[:, CAT] = CAT_BIAS
        if arrays:
            weights[layer.name] = arrays
    path = tmp_path_factory.mktemp("weights") / "cat.hdf5"
    write_legacy_h5(path, model, weights, compression="gzip")
    return path, prior_boxes(model)


@pytest.fixture()
def image_file(tmp_path, sample_image):
    path = tmp_path / "in" / "hopper.jpg"
    save_image(path, sample_image)
    return path


@pytest.fixture()
def no_default_weights(monkeypatch, tmp_path):
    """Neither VOC weights nor the embedded demo model are found."""
    import ssd_keras.demo

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "PACKAGE_ROOT", tmp_path)
    monkeypatch.setattr(ssd_keras.demo, "DEMO_WEIGHTS", tmp_path / "missing.weights.h5")


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_detect_writes_annotated_png_and_csv(cat_everywhere, image_file, tmp_path, capsys):
    weights, priors = cat_everywhere
    out = tmp_path / "out"
    assert cli.main(["detect", str(image_file), "--weights", str(weights), "--out", str(out)]) == 0
    rows = read_rows(out / "detections.csv")
    assert rows[0] == ["image_path", "class_name", "score", "xmin", "ymin", "xmax", "ymax"]
    assert len(rows) == 1 + 200  # keep_top_k of detection_out
    assert {r[1] for r in rows[1:]} == {"cat"}
    np.testing.assert_allclose([float(r[2]) for r in rows[1:]], CAT_SCORE, atol=1e-4)
    image = load_image(image_file)
    height, width = image.shape[:2]
    # equal scores keep prior order: the first detection is prior 0, in pixels of the original
    np.testing.assert_allclose([float(v) for v in rows[1][3:]],
                               priors[0, :4] * [width, height, width, height], atol=0.06)
    drawn = cv2.cvtColor(cv2.imread(str(out / "hopper.png")), cv2.COLOR_BGR2RGB)
    assert drawn.shape == image.shape and (drawn != image).any()
    assert "200 detections" in capsys.readouterr().out


def test_detect_without_weights_says_so_and_still_runs(no_default_weights, image_file, tmp_path,
                                                       capsys):
    out = tmp_path / "out"
    assert cli.main(["detect", str(image_file), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "no trained weights found" in err and "UNTRAINED" in err
    assert (out / "hopper.png").is_file()
    assert read_rows(out / "detections.csv")[0][0] == "image_path"


def test_detect_reports_a_bad_image_and_keeps_the_others(no_default_weights, image_file,
                                                         tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    status = cli.main(["detect", str(broken), str(image_file), "--out", str(out)])
    assert status == 1
    assert "broken.jpg" in capsys.readouterr().err
    assert (out / "hopper.png").is_file() and not (out / "broken.png").exists()


def test_detect_with_missing_weights_file_fails_clearly(image_file, tmp_path, capsys):
    status = cli.main(["detect", str(image_file), "--weights", str(tmp_path / "no.hdf5")])
    assert status == 1
    err = capsys.readouterr().err
    assert "no.hdf5" in err and "weights/README.md" in err


def test_class_list_files(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("background\n# comment\ncup\n\nplate\n")
    assert cli.read_class_names(str(path)) == ["cup", "plate"]
    assert cli.read_class_names("voc") == list(VOC_CLASSES)
    path.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        cli.read_class_names(str(path))
    path.write_text("a\na\n")
    with pytest.raises(ValueError, match="duplicate"):
        cli.read_class_names(str(path))
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        cli.read_class_names(str(tmp_path / "nope.txt"))


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["detect"])
    assert exit_info.value.code == 2


def test_module_entry_point_runs_quietly(image_file, tmp_path):
    """A real ``python -m ssd_keras``: help works, and TensorFlow's start-up noise is gone."""
    help_run = subprocess.run([sys.executable, "-m", "ssd_keras", "detect", "--help"],
                              capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert help_run.returncode == 0 and "--conf-thresh" in help_run.stdout
    run = subprocess.run([sys.executable, "-m", "ssd_keras", "detect", str(image_file), "--out",
                          str(tmp_path / "o")], capture_output=True, text=True, cwd=tmp_path,
                         timeout=180)
    assert run.returncode == 0, run.stderr
    assert "hopper.jpg: " in run.stdout
    for noise in ("oneDNN", "cuda", "absl::InitializeLog", "I0000", "E0000"):
        assert noise not in run.stderr, run.stderr


def test_csv_commands_write_dataset_csvs(tmp_path, capsys):
    (tmp_path / "ann").mkdir()
    (tmp_path / "img").mkdir()
    save_image(tmp_path / "img" / "a.jpg", np.zeros((20, 30, 3), np.uint8))
    (tmp_path / "ann" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><size><width>30</width><height>20</height>"
        "<depth>3</depth></size><object><name>cat</name><difficult>0</difficult><bndbox>"
        "<xmin>2</xmin><ymin>3</ymin><xmax>12</xmax><ymax>15</ymax></bndbox></object>"
        "</annotation>")
    out = tmp_path / "voc.csv"
    assert cli.main(["csv", "voc", str(tmp_path / "ann"), str(tmp_path / "img"), str(out)]) == 0
    rows = read_rows(out)
    assert rows[0][:6] == ["image_path", "xmin", "ymin", "xmax", "ymax", "class_name"]
    assert rows[1][1:6] == ["2", "3", "12", "15", "cat"]
    assert cli.main(["csv", "images", str(tmp_path / "img"), str(tmp_path / "list.csv")]) == 0
    assert len(read_rows(tmp_path / "list.csv")) == 2
    assert "1 classes (cat)" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["gradcam", "guided"])
def test_gradcam_command_writes_one_picture_per_detection_and_a_grid(
        no_default_weights, image_file, tmp_path, capsys, method):
    out = tmp_path / "gc"
    assert cli.main(["gradcam", str(image_file), "--top", "2", "--method", method,
                     "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"hopper_0_{method}.png", f"hopper_1_{method}.png",
                            f"hopper_{method}_grid.png"])
    picture = cv2.imread(str(out / f"hopper_0_{method}.png"))
    assert picture.shape[:2] == load_image(image_file).shape[:2]
    assert "prior" in capsys.readouterr().out


def test_detect_takes_folders_and_globs_and_writes_json(cat_everywhere, sample_image, tmp_path):
    weights, _ = cat_everywhere
    folder = tmp_path / "photos"
    for name in ("a.jpg", "b.png"):
        save_image(folder / name, sample_image[::4, ::4])
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    status = cli.main(["detect", str(folder), str(folder / "*.png"), "--weights", str(weights),
                       "--out", str(out)])
    assert status == 0
    records = json.loads((out / "detections.json").read_text())
    assert [Path(r["image_path"]).name for r in records] == ["a.jpg", "b.png", "b.png"]
    assert records[0]["detections"][0]["class_name"] == "cat"
    assert len(records[0]["detections"]) == 200
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png", "b_2.png"]
    with pytest.raises(FileNotFoundError, match="nothing"):
        cli.expand_image_arguments([str(tmp_path / "nothing*.jpg")])


def test_detect_rebuilds_a_training_run_model_from_its_config(sample_image, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    SSD300(num_classes=3, width_multiplier=0.125).save_weights(run / "final.weights.h5")
    (run / "config.json").write_text(json.dumps(
        {"classes": ["blue", "red"], "width_multiplier": 0.125, "input_shape": [300, 300, 3]}))
    image = tmp_path / "x.png"
    save_image(image, sample_image)
    assert cli.main(["detect", str(image), "--weights", str(run / "final.weights.h5"),
                     "--out", str(tmp_path / "out"), "--conf-thresh", "0.0"]) == 0
    assert "model from" in capsys.readouterr().out
    names = {r[1] for r in read_rows(tmp_path / "out" / "detections.csv")[1:]}
    assert names <= {"blue", "red"} and names
