"""The command line (``ssd_keras.cli``): in-process runs, plus real subprocesses for the quiet
start, the program name and what each command imports.

Models are thin (``THIN_WIDTH``) training runs with a ``config.json``, or the embedded shapes
model, except in ``test_detect_writes_annotated_png_and_csv``: the one full-width SSD300, with
legacy weights.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ssd_keras import cli, layout
from ssd_keras.image import load_image
from ssd_keras.ssd import SSD300, VOC_CLASSES, prior_boxes
from ssd_keras.visualization import save_image
from tests.conftest import REPO_ROOT, THIN_WIDTH
from tests.legacy_h5 import write_legacy_h5

CAT = VOC_CLASSES.index("cat") + 1
CAT_BIAS = 5.0
CAT_SCORE = np.exp(CAT_BIAS) / (np.exp(CAT_BIAS) + 20)  # softmax with all other logits 0
THIN_CLASSES = ["blue", "red"]
THIN_SCORE = np.exp(CAT_BIAS) / (np.exp(CAT_BIAS) + 2)
DEMO_SAYS = "embedded shapes model"


def constant_weights(model, label: int) -> dict[str, list[np.ndarray]]:
    """Zero kernels and a ``CAT_BIAS`` bias for ``label`` in the confidence heads: every prior
    says ``label`` with the same score and zero offsets (boxes = priors)."""
    weights = {}
    for layer in model.layers:
        arrays = [np.zeros(tuple(w.shape), "float32") for w in layer.weights]
        if "mbox_conf" in layer.name and arrays:
            arrays[1].reshape(-1, layout.num_classes_of(model))[:, label] = CAT_BIAS
        if arrays:
            weights[layer.name] = arrays
    return weights


@pytest.fixture(scope="module")
def cat_everywhere(tmp_path_factory):
    """Full-size SSD300 weights (legacy layout, no run configuration) that say 'cat' everywhere."""
    model = SSD300()
    path = tmp_path_factory.mktemp("weights") / "cat.hdf5"
    write_legacy_h5(path, model, constant_weights(model, CAT), compression="gzip")
    return path, prior_boxes(model)


@pytest.fixture(scope="module")
def thin_run(tmp_path_factory):
    """A thin training run (``config.json`` beside ``final.weights.h5``) whose model says 'red'
    (label 2) everywhere."""
    run = tmp_path_factory.mktemp("thin_run")
    model = SSD300(num_classes=3, width_multiplier=THIN_WIDTH)
    for name, arrays in constant_weights(model, 2).items():
        model.get_layer(name).set_weights(arrays)
    model.save_weights(run / "final.weights.h5")
    (run / "config.json").write_text(json.dumps(
        {"classes": THIN_CLASSES, "width_multiplier": THIN_WIDTH, "input_shape": [300, 300, 3]}))
    return run / "final.weights.h5"


@pytest.fixture()
def image_file(tmp_path, sample_image):
    path = tmp_path / "in" / "hopper.jpg"
    save_image(path, sample_image)
    return path


@pytest.fixture()
def no_voc_weights(monkeypatch, tmp_path):
    """No VOC weights are found (here, in the checkout or in $SSD_KERAS_WEIGHTS): the embedded
    shapes model is the default."""
    import ssd_keras.models

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ssd_keras.models.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(ssd_keras.models, "_CHECKOUT_WEIGHTS", tmp_path / "no_checkout_weights")


@pytest.fixture()
def thin_untrained(monkeypatch):
    """Untrained networks are built thin (the CLI has no width option for them): the tests
    check what is said, not full-width predictions."""
    import ssd_keras.ssd

    def thin_ssd300(input_shape=(300, 300, 3), num_classes=21, width_multiplier=1.0, **kwargs):
        return SSD300(input_shape, num_classes=num_classes, width_multiplier=THIN_WIDTH, **kwargs)

    monkeypatch.setattr(ssd_keras.ssd, "SSD300", thin_ssd300)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


# ``python -m ssd_keras ARGS`` (runpy, as -m does), then the TensorFlow / Keras modules it loaded
# on the last line of stdout (the import-time log would miss the ones imported quietly).
TRACK_IMPORTS = """
import json, runpy, sys
code = 0
try:
    runpy.run_module("ssd_keras", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))))
sys.exit(code)
"""


def run_tracking_imports(*args, cwd=REPO_ROOT, timeout=120):
    """``(run, names of the TensorFlow and Keras modules imported)``."""
    run = subprocess.run([sys.executable, "-c", TRACK_IMPORTS, *map(str, args)], capture_output=True, text=True,
                         cwd=cwd, timeout=timeout)
    return run, json.loads(run.stdout.splitlines()[-1])


# --------------------------------------------------------------------------------------------
# detect


def test_detect_writes_annotated_png_and_csv(cat_everywhere, image_file, tmp_path, capsys):
    weights, priors = cat_everywhere
    out = tmp_path / "out"
    assert cli.main(["detect", str(image_file), "--weights", str(weights), "--out", str(out)]) == 0
    rows = read_rows(out / "detections.csv")
    assert rows[0] == ["image_path", "class_name", "score", "xmin", "ymin", "xmax", "ymax"]
    assert len(rows) == 1 + 200  # keep_top_k of detection_out
    assert {r[1] for r in rows[1:]} == {"cat"}
    np.testing.assert_allclose([float(r[2]) for r in rows[1:]], CAT_SCORE, atol=1e-4)
    # Which 200 of the equal scores survive depends on float rounding (it differs across CPUs);
    # but every box is a prior (zero offsets), clipped to the image, in pixels of the original.
    image = load_image(image_file)
    height, width = image.shape[:2]
    scale = np.array([width, height, width, height])
    prior_pixels = np.clip(priors[:, :4], 0.0, 1.0) * scale
    boxes = np.array([[float(v) for v in r[3:]] for r in rows[1:]])
    distance = np.abs(boxes[:, None, :] - prior_pixels[None]).max(axis=-1).min(axis=1)
    assert distance.max() <= 0.06, distance.max()  # the CSV rounds to 0.1 pixel
    drawn = cv2.cvtColor(cv2.imread(str(out / "hopper.png")), cv2.COLOR_BGR2RGB)
    assert drawn.shape == image.shape and (drawn != image).any()
    stdout = capsys.readouterr().out
    assert "200 detections" in stdout and f"model: {weights}" in stdout


def test_detect_without_weights_falls_back_to_the_demo_model_and_says_so(no_voc_weights, image_file, tmp_path,
                                                                        capsys):
    out = tmp_path / "out"
    assert cli.main(["detect", str(image_file), "--out", str(out), "--conf-thresh", "0"]) == 0
    stdout = capsys.readouterr().out
    assert DEMO_SAYS in stdout and "no VOC weights found" in stdout
    assert (out / "hopper.png").is_file()
    rows = read_rows(out / "detections.csv")
    assert rows[0][0] == "image_path" and {r[1] for r in rows[1:]} <= {"circle", "square", "triangle", "star"}


def test_detect_with_named_classes_and_no_weights_needs_allow_untrained(no_voc_weights, image_file, tmp_path,
                                                                       capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("cup\nplate\n")
    out = tmp_path / "out"
    assert cli.main(["detect", str(image_file), "--classes", str(classes), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "cup, plate" in err and "--allow-untrained" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # nothing done


def test_detect_allow_untrained_runs_an_untrained_network_with_a_warning(no_voc_weights, thin_untrained,
                                                                          image_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["detect", str(image_file), "--classes", "voc", "--allow-untrained", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "WARNING" in captured.err and "no trained weights found" in captured.err
    assert "UNTRAINED" in captured.err and "UNTRAINED" in captured.out
    assert (out / "hopper.png").is_file()
    assert read_rows(out / "detections.csv")[0][0] == "image_path"


def test_detect_reports_a_bad_image_and_keeps_the_others(no_voc_weights, image_file, tmp_path, capsys):
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


def test_detect_rebuilds_a_training_run_model_from_its_config(thin_run, sample_image, tmp_path, capsys):
    image = tmp_path / "x.png"
    save_image(image, sample_image)
    assert cli.main(["detect", str(image), "--weights", str(thin_run), "--out", str(tmp_path / "out"),
                     "--conf-thresh", "0.0"]) == 0
    assert f"model from {thin_run.parent / 'config.json'}" in capsys.readouterr().out
    rows = read_rows(tmp_path / "out" / "detections.csv")[1:]
    assert {r[1] for r in rows} == {"red"} and len(rows) == 200
    np.testing.assert_allclose([float(r[2]) for r in rows], THIN_SCORE, atol=1e-4)


def test_detect_reads_the_json_beside_name_weights_h5(image_file, tmp_path, capsys):
    from ssd_keras.models import DEMO_CONFIG, DEMO_WEIGHTS

    assert cli.main(["detect", str(image_file), "--weights", str(DEMO_WEIGHTS), "--out", str(tmp_path / "o")]) == 0
    assert f"model from {DEMO_CONFIG}" in capsys.readouterr().out


def test_detect_classes_that_contradict_the_run_are_an_error(thin_run, image_file, tmp_path, capsys):
    assert cli.main(["detect", str(image_file), "--weights", str(thin_run), "--classes", "voc",
                     "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "blue, red" in err and str(thin_run.parent / "config.json") in err


def test_detect_takes_folders_and_globs_and_writes_json(thin_run, sample_image, tmp_path):
    folder = tmp_path / "photos"
    for name in ("a.jpg", "b.png"):
        save_image(folder / name, sample_image[::4, ::4])
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    status = cli.main(["detect", str(folder), str(folder / "*.png"), "--weights", str(thin_run),
                       "--out", str(out)])
    assert status == 0
    records = json.loads((out / "detections.json").read_text())
    assert [Path(r["image_path"]).name for r in records] == ["a.jpg", "b.png", "b.png"]
    assert records[0]["detections"][0]["class_name"] == "red"
    assert len(records[0]["detections"]) == 200
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png", "b_2.png"]
    with pytest.raises(FileNotFoundError, match="nothing"):
        cli.expand_image_arguments([str(tmp_path / "nothing*.jpg")])


# --------------------------------------------------------------------------------------------
# arguments, names, program


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


def test_old_names_stay_importable():
    import ssd_keras.gradcam
    import ssd_keras.models

    assert cli.find_default_weights is ssd_keras.models.find_default_weights
    assert cli.import_tensorflow_quietly is ssd_keras.models.import_tensorflow_quietly
    assert cli.read_class_names is ssd_keras.models.read_class_names
    assert callable(cli.main) and callable(cli.build_parser) and callable(cli.expand_image_arguments)
    assert cli.CPU_DEVICES_ENV == "SSD_KERAS_CPU_DEVICES"
    assert cli.gradcam.METHODS == ssd_keras.gradcam.METHODS


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["detect"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("argv", [
    ["detect", "x.png", "--conf-thresh", "1.5"],
    ["detect", "x.png", "--conf-thresh", "-0.1"],
    ["detect", "x.png", "--conf-thresh", "nan"],
    ["detect", "x.png", "--nms-thresh", "2"],
    ["evaluate", "--csv", "t.csv", "--iou", "0"],
    ["evaluate", "--csv", "t.csv", "--iou", "1.01"],
    ["evaluate", "--csv", "t.csv", "--conf-thresh", "x"],
    ["evaluate", "--csv", "t.csv", "--batch-size", "0"],
    ["evaluate", "--csv", "t.csv", "--width-multiplier", "0"],
    ["train", "--csv", "t.csv", "--out", "o", "--epochs", "0"],
    ["train", "--csv", "t.csv", "--out", "o", "--batch-size", "-2"],
    ["train", "--csv", "t.csv", "--out", "o", "--lr", "0"],
    ["train", "--csv", "t.csv", "--out", "o", "--width-multiplier", "-1"],
    ["train", "--csv", "t.csv", "--out", "o", "--epochs", "1.5"],
    ["demo", "--scenes", "0"],
    ["demo", "--eval-scenes", "-1"],
    ["gradcam", "x.png", "--top", "0"],
    ["marknet", "train", "--csv", "t.csv", "--out", "o", "--filters", "8,0"],
    ["marknet", "train", "--csv", "t.csv", "--out", "o", "--dropout", "1"],
])
def test_bad_values_are_usage_errors_naming_the_option(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    option = next(a for a in reversed(argv) if a.startswith("--"))
    assert f"argument {option}: expected" in capsys.readouterr().err


def test_eval_scenes_may_be_zero():
    args = cli.build_parser().parse_args(["demo", "--eval-scenes", "0", "--scenes", "1"])
    assert args.eval_scenes == 0 and args.scenes == 1


def run_module(*args, cwd=REPO_ROOT, timeout=120):
    return subprocess.run([sys.executable, "-m", "ssd_keras", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def test_usage_errors_come_before_tensorflow_is_imported():
    run, loaded = run_tracking_imports("train", "--csv", "t.csv", "--out", "o", "--epochs", "0")
    assert run.returncode == 2 and "argument --epochs" in run.stderr
    assert loaded == []
    run, loaded = run_tracking_imports("gradcam", "x.png", "--conf-thresh", "2")
    assert run.returncode == 2 and "argument --conf-thresh" in run.stderr and loaded == []


def test_import_tracking_sees_a_quiet_tensorflow_import(tmp_path):
    run, loaded = run_tracking_imports("detect", "x.png", "--weights", tmp_path / "missing.weights.h5")
    assert run.returncode == 1 and "missing.weights.h5" in run.stderr
    assert "tensorflow" in loaded


def test_program_name_follows_how_it_was_started():
    assert cli.program_name("/usr/local/bin/ssd-keras") == "ssd-keras"
    assert cli.program_name("ssd-keras.exe") == "ssd-keras"
    assert cli.program_name("/x/ssd_keras/__main__.py") == "python -m ssd_keras"
    module = run_module("--help")
    assert module.returncode == 0 and module.stdout.startswith("usage: python -m ssd_keras ")
    script = Path(sys.executable).parent / "ssd-keras"
    if script.is_file():  # installed in development mode
        run = subprocess.run([str(script), "detect", "--help"], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0 and run.stdout.startswith("usage: ssd-keras detect ")
        assert "  ssd-keras detect photo.jpg" in run.stdout  # the examples too


@pytest.mark.parametrize("command", ["detect", "train", "evaluate", "demo", "gradcam", "csv", "marknet"])
def test_every_command_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m ssd_keras {command}")
    assert "examples:" in out and f"{command} " in out.split("examples:")[1]


def test_module_entry_point_runs_quietly(image_file, tmp_path):
    """A real ``python -m ssd_keras``: help works, and TensorFlow's start-up noise is gone."""
    help_run = run_module("detect", "--help")
    assert help_run.returncode == 0 and "--conf-thresh" in help_run.stdout
    run = run_module("detect", image_file, "--out", tmp_path / "o", cwd=tmp_path, timeout=180)
    assert run.returncode == 0, run.stderr
    assert "hopper.jpg: " in run.stdout and "model: " in run.stdout
    for noise in ("oneDNN", "cuda", "absl::InitializeLog", "I0000", "E0000"):
        assert noise not in run.stderr, run.stderr


# --------------------------------------------------------------------------------------------
# csv


VOC_XML = ("<annotation><filename>a.jpg</filename><size><width>30</width><height>20</height>"
           "<depth>3</depth></size><object><name>cat</name><difficult>0</difficult><bndbox>"
           "<xmin>2</xmin><ymin>3</ymin><xmax>12</xmax><ymax>15</ymax></bndbox></object></annotation>")


@pytest.fixture()
def voc_folders(tmp_path):
    (tmp_path / "ann").mkdir()
    save_image(tmp_path / "img" / "a.jpg", np.zeros((20, 30, 3), np.uint8))
    (tmp_path / "ann" / "a.xml").write_text(VOC_XML)
    return tmp_path / "ann", tmp_path / "img"


def test_csv_commands_write_dataset_csvs(voc_folders, tmp_path, capsys):
    annotations, images = voc_folders
    out = tmp_path / "voc.csv"
    assert cli.main(["csv", "voc", str(annotations), str(images), str(out)]) == 0
    rows = read_rows(out)
    assert rows[0][:6] == ["image_path", "xmin", "ymin", "xmax", "ymax", "class_name"]
    assert rows[1][1:6] == ["2", "3", "12", "15", "cat"]
    assert (tmp_path / "voc_classes.txt").read_text() == "cat\n" and not (tmp_path / "classes.txt").exists()
    assert cli.main(["csv", "images", str(images), str(tmp_path / "list.csv")]) == 0
    assert len(read_rows(tmp_path / "list.csv")) == 2
    stdout = capsys.readouterr().out
    assert "1 classes (cat)" in stdout and "voc_classes.txt" in stdout and "list.csv: 1 images" in stdout
    (tmp_path / "tree" / "mug").mkdir(parents=True)
    save_image(tmp_path / "tree" / "mug" / "m.png", np.zeros((8, 8, 3), np.uint8))
    assert cli.main(["csv", "folders", str(tmp_path / "tree"), str(tmp_path / "cls" / "marks.csv")]) == 0
    assert (tmp_path / "cls" / "classes.txt").read_text() == "mug\n"


@pytest.mark.parametrize("missing", ["annotations", "images"])
def test_csv_voc_with_a_missing_folder_fails_and_writes_nothing(voc_folders, tmp_path, capsys, missing):
    annotations, images = voc_folders
    if missing == "annotations":
        annotations = tmp_path / "no_such_annotations"
    else:
        images = tmp_path / "no_such_images"
    out = tmp_path / "out" / "voc.csv"
    assert cli.main(["csv", "voc", str(annotations), str(images), str(out)]) == 1
    err = capsys.readouterr().err
    assert f"no_such_{missing}" in err and "not found" in err
    assert not out.parent.exists()


def test_csv_folders_refuses_to_change_a_class_list_other_csvs_use(tmp_path, capsys):
    for name in ("cup", "plate"):
        save_image(tmp_path / "a" / name / "x.png", np.zeros((8, 8, 3), np.uint8))
    save_image(tmp_path / "b" / "mug" / "y.png", np.zeros((8, 8, 3), np.uint8))
    assert cli.main(["csv", "folders", str(tmp_path / "a"), str(tmp_path / "train.csv")]) == 0
    assert cli.main(["csv", "folders", str(tmp_path / "b"), str(tmp_path / "val.csv")]) == 1
    err = capsys.readouterr().err
    assert "classes.txt" in err and "cup, plate" in err and "train.csv" in err
    assert (tmp_path / "classes.txt").read_text() == "cup\nplate\n" and not (tmp_path / "val.csv").exists()


@pytest.mark.parametrize("argv", [
    ["csv", "images", "{img}", "{out}/list.csv"],
    ["csv", "voc", "{ann}", "{img}", "{out}/voc.csv"],
    ["csv", "folders", "{tree}", "{out}/cls.csv"],
])
def test_csv_commands_do_not_import_tensorflow(voc_folders, tmp_path, argv):
    annotations, images = voc_folders
    save_image(tmp_path / "tree" / "mug" / "m.png", np.zeros((8, 8, 3), np.uint8))
    paths = {"img": images, "ann": annotations, "tree": tmp_path / "tree", "out": tmp_path / "out"}
    run, loaded = run_tracking_imports(*(a.format(**paths) for a in argv))
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / Path(argv[-1]).name).is_file()
    assert loaded == []


def test_csv_voc_with_voc_classes_does_not_import_tensorflow(voc_folders, tmp_path):
    annotations, images = voc_folders
    run, loaded = run_tracking_imports("csv", "voc", annotations, images, tmp_path / "v.csv", "--classes", "voc")
    assert run.returncode == 0, run.stderr
    assert loaded == []


# --------------------------------------------------------------------------------------------
# gradcam


@pytest.mark.parametrize("method", ["gradcam", "guided"])
def test_gradcam_command_writes_one_picture_per_detection_and_a_grid(
        no_voc_weights, image_file, tmp_path, capsys, method):
    out = tmp_path / "gc"
    assert cli.main(["gradcam", str(image_file), "--top", "2", "--method", method, "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"hopper_0_{method}.png", f"hopper_1_{method}.png", f"hopper_{method}_grid.png"])
    picture = cv2.imread(str(out / f"hopper_0_{method}.png"))
    assert picture.shape[:2] == load_image(image_file).shape[:2]
    stdout = capsys.readouterr().out
    assert "prior" in stdout and DEMO_SAYS in stdout


def test_gradcam_command_at_another_layer(thin_run, image_file, tmp_path, capsys):
    out = tmp_path / "gc"
    assert cli.main(["gradcam", str(image_file), "--weights", str(thin_run), "--top", "1", "--layer", "conv4_3",
                     "--out", str(out)]) == 0
    assert (out / "hopper_0_gradcam.png").is_file() and "red 0." in capsys.readouterr().out
    assert cli.main(["gradcam", str(image_file), "--weights", str(thin_run), "--layer", "no_such_layer",
                     "--out", str(out)]) == 1
    assert "no_such_layer" in capsys.readouterr().err

