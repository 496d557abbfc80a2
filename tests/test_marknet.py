"""MarkNet: the model, the classification CSV and its generator, synthetic marks, training, Grad-CAM, CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from ssd_keras import cli
from ssd_keras.data.annotations import read_annotations
from ssd_keras.data.csv_tools import CLASSES_FILENAME
from ssd_keras.gradcam import GradCAM
from ssd_keras.image import load_image, preprocess_input
from ssd_keras.marknet.data import ClassificationAugmentation, ClassificationGenerator, read_classification_csv
from ssd_keras.marknet.marks import BOXES_CSV, MARK_CLASSES, MARK_SIZE_RANGE, make_mark_image, make_marks_dataset
from ssd_keras.marknet.metrics import classification_metrics, format_classification_report, plot_confusion_matrix
from ssd_keras.marknet.model import MarkNet, marknet_preprocess
from ssd_keras.marknet.training import find_config, load_marknet

SMALL_FILTERS = (8, 16)


def write_csv(path, rows, header=("image", "label")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def tiny_marks(tmp_path_factory):
    """24 synthetic marks at 32x32 (6 per class)."""
    return make_marks_dataset(tmp_path_factory.mktemp("tiny_marks"), 24, seed=3, size=32)


# --------------------------------------------------------------------------------------------
# the package


def test_package_is_lazy_and_exports_its_modules_names():
    code = ("import sys, ssd_keras.marknet; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported eagerly'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    import ssd_keras.marknet as package
    from ssd_keras.marknet import data, explain, marks, metrics, model, training

    for name in package.__all__:
        assert getattr(package, name) is not None, name
    for module in (data, explain, marks, metrics, model, training):
        for name in module.__all__:
            if name in package.__all__:
                assert getattr(package, name) is getattr(module, name), name
    assert package.MarkNet is MarkNet and package.explain_marks is explain.explain_marks
    assert package.CONFIG_FILENAME == "config.json"


def test_old_homes_re_export_the_same_objects():
    import ssd_keras.data as data_package
    from ssd_keras.data import classification as old_classification
    from ssd_keras.data import marks as old_marks
    from ssd_keras.marknet import data, marks

    for old, new in ((old_classification, data), (old_marks, marks)):
        assert set(new.__all__) <= set(old.__all__)
        for name in old.__all__:
            assert getattr(old, name) is getattr(new, name), name
    assert old_marks.MARK_SIZE_RANGE is MARK_SIZE_RANGE and old_marks.make_marks_dataset is make_marks_dataset
    assert old_classification.ClassificationGenerator is ClassificationGenerator
    assert data_package.ClassificationGenerator is ClassificationGenerator
    assert data_package.make_marks_dataset is make_marks_dataset


# --------------------------------------------------------------------------------------------
# model


def test_marknet_shapes_softmax_and_layer_names():
    model = MarkNet(3, (32, 48, 3), filters=SMALL_FILTERS)
    assert model.input_shape == (None, 32, 48, 3) and model.output_shape == (None, 3)
    names = [layer.name for layer in model.layers]
    assert names[-4:] == ["avg_pool", "dropout", "logits", "predictions"]
    assert {"stem_conv", "stem_bn", "stem_relu", "block1_1_conv", "block2_pool", "block2_2_relu"} <= set(names)
    assert isinstance(model.get_layer("predictions"), keras.layers.Activation)
    # the default Grad-CAM layer is the last feature map: stride 2 ** len(filters)
    assert model.get_layer("block2_2_relu").output.shape[1:] == (8, 12, 16)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 48, 3)).astype("float32")
    probabilities = model.predict(x, verbose=0)
    logits = keras.Model(model.input, model.get_layer("logits").output).predict(x, verbose=0)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    assert GradCAM(model).feature_layers == ("block2_2_relu",)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_classes=1), "num_classes"),
    (dict(num_classes=3, backbone="resnet"), "backbone"),
    (dict(num_classes=3, weights="imagenet"), "needs a backbone"),
    (dict(num_classes=3, input_shape=(32, 32, 1)), "input_shape"),
])
def test_marknet_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MarkNet(**kwargs)


def test_backbones_keep_the_head_and_the_input_transform():
    x = np.random.default_rng(1).uniform(-1, 1, (1, 32, 32, 3)).astype("float32")
    vgg = MarkNet(5, (32, 32, 3), backbone="vgg16")
    assert vgg.output_shape == (None, 5) and vgg.layers[-1].name == "predictions"
    assert GradCAM(vgg).feature_layers == ("block5_pool",)
    # to_caffe turns [-1, 1] RGB into the Caffe input of VGG16's ImageNet weights
    caffe = keras.Model(vgg.input, vgg.get_layer("to_caffe").output).predict(x, verbose=0)
    np.testing.assert_allclose(caffe, preprocess_input((x + 1.0) * 127.5), atol=1e-3)
    mobile = MarkNet(5, (32, 32, 3), backbone="mobilenetv2")
    assert mobile.output_shape == (None, 5) and mobile.layers[-2].name == "logits"


def test_marknet_preprocess():
    x = np.array([[[0, 127.5, 255]]], dtype=np.float64)
    np.testing.assert_array_equal(marknet_preprocess(x), [[[-1.0, 0.0, 1.0]]])
    assert marknet_preprocess(np.zeros((2, 4, 4, 3), np.uint8)).dtype == np.float32
    with pytest.raises(ValueError, match="3 channels"):
        marknet_preprocess(np.zeros((4, 4)))


# --------------------------------------------------------------------------------------------
# classification CSV


@pytest.fixture()
def small_tree(tmp_path):
    """Two good images, a corrupt one, classes.txt (a, b, c)."""
    from ssd_keras.visualization import save_image

    for name in ("one", "two"):
        save_image(tmp_path / f"{name}.png", np.full((10, 12, 3), 100, np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / CLASSES_FILENAME).write_text("a\nb\nc\n")
    return tmp_path


def test_read_classification_csv(small_tree):
    path = write_csv(small_tree / "ok.csv", [["one.png", 2], ["two.png", " 0"], ["one.png", 1]])
    records, names = read_classification_csv(path)
    assert names == ["a", "b", "c"]
    assert [(r["image_path"], r["label"], r["width"], r["height"]) for r in records] == [
        (str(small_tree / "one.png"), 2, 12, 10), (str(small_tree / "two.png"), 0, 12, 10),
        (str(small_tree / "one.png"), 1, 12, 10)]


def test_classification_csv_errors_in_one_message(small_tree):
    rows = [["one.png", "0"],            # line 2: fine
            ["missing.png", "1"],        # 3
            ["broken.png", "1"],         # 4
            ["two.png", "b"],            # 5
            ["two.png", "1.0"],          # 6
            ["two.png", "3"],            # 7
            ["two.png", "-1"],           # 8
            ["", "0"],                   # 9
            ["two.png"]]                 # 10
    path = write_csv(small_tree / "bad.csv", rows)
    with pytest.raises(ValueError) as info:
        read_classification_csv(path)
    message = str(info.value)
    assert str(path) in message and "8 errors" in message
    for line, text in [(3, "image not found: missing.png"), (4, "unreadable image"), (5, "'b'"), (6, "'1.0'"),
                       (7, "label 3 out of range"), (8, "label -1 out of range"), (9, "empty image"),
                       (10, "expected 2 fields")]:
        assert f"bad.csv line {line}: " in message and text in message
    assert "line 2:" not in message


def test_classification_csv_header_count_and_class_lists(small_tree):
    with pytest.raises(ValueError, match="missing required column image"):
        read_classification_csv(write_csv(small_tree / "h.csv", [["one.png", 0]], header=("path", "label")))
    many = write_csv(small_tree / "many.csv", [["one.png", "x"]] * 25)
    with pytest.raises(ValueError, match=r"25 errors(.|\n)*many.csv line 21:(.|\n)*and 5 more$"):
        read_classification_csv(many)
    ok = write_csv(small_tree / "ok.csv", [["one.png", 0]])
    with pytest.raises(ValueError, match="labels would change meaning"):
        read_classification_csv(ok, classes=["c", "b", "a"])
    (small_tree / CLASSES_FILENAME).unlink()
    with pytest.raises(FileNotFoundError, match=CLASSES_FILENAME):
        read_classification_csv(ok)
    assert read_classification_csv(ok, classes=["x", "y"])[1] == ["x", "y"]


# --------------------------------------------------------------------------------------------
# generator


def test_generator_shapes_order_and_reproducibility(tiny_marks):
    records, _ = read_classification_csv(tiny_marks)
    labels = np.array([r["label"] for r in records])
    evaluation = ClassificationGenerator(tiny_marks, 10, (32, 32), train=False)
    assert len(evaluation) == 3
    x, y = evaluation[2]
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(y, labels[20:])
    np.testing.assert_array_equal(x[0], marknet_preprocess(load_image(records[20]["image_path"])))

    train = ClassificationGenerator(tiny_marks, 10, (32, 32), seed=7)
    again = ClassificationGenerator(tiny_marks, 10, (32, 32), seed=7)
    x1, y1 = train.load_batch(0, epoch=0)
    x2, y2 = again.load_batch(0, epoch=0)
    np.testing.assert_array_equal(x1, x2)
    # augmentation keeps each image's label: the batch's labels are those of the epoch's order
    np.testing.assert_array_equal(y1, labels[train.order(0)[:10]])
    assert -1.0 <= x1.min() and x1.max() <= 1.0
    x3, y3 = train.load_batch(0, epoch=1)
    np.testing.assert_array_equal(y3, labels[train.order(1)[:10]])
    assert not np.array_equal(train.order(0), train.order(1))
    # an augmented image differs from the plain one, and from itself in another epoch
    index = int(train.order(0)[0])
    plain = marknet_preprocess(load_image(records[index]["image_path"]))
    assert np.abs(x1[0] - plain).mean() > 0.01
    assert np.abs(train.load_example(index, 0)[0] - train.load_example(index, 1)[0]).mean() > 1.0


# --------------------------------------------------------------------------------------------
# synthetic marks


def test_make_mark_image():
    image, label, box = make_mark_image(np.random.default_rng(5), 80, label=2)
    again = make_mark_image(np.random.default_rng(5), 80, label=2)
    np.testing.assert_array_equal(image, again[0])
    assert image.shape == (80, 80, 3) and image.dtype == np.uint8 and label == 2
    assert 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1
    assert box[2] - box[0] <= MARK_SIZE_RANGE[1] + 2 / 80 and box[3] - box[1] >= MARK_SIZE_RANGE[0] / 2
    with pytest.raises(ValueError, match="label"):
        make_mark_image(np.random.default_rng(0), 64, label=4)


def test_make_marks_dataset(tiny_marks):
    folder = tiny_marks.parent
    records, names = read_classification_csv(tiny_marks)
    assert names == list(MARK_CLASSES) == sorted(MARK_CLASSES)
    assert np.bincount([r["label"] for r in records]).tolist() == [6, 6, 6, 6]
    for r in records:  # each image in its class's folder
        assert r["image_path"].startswith(str(folder / names[r["label"]]))
    boxes, box_names = read_annotations(folder / BOXES_CSV)
    assert box_names == names and len(boxes) == 24
    by_path = {b["image_path"]: b for b in boxes}
    for r in records:
        assert by_path[r["image_path"]]["labels"].tolist() == [r["label"] + 1]


# --------------------------------------------------------------------------------------------
# metrics


def test_classification_metrics_and_report(tmp_path):
    result = classification_metrics([0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 0, 1], ["a", "b", "c"])
    np.testing.assert_array_equal(result["confusion"], [[1, 1, 0], [1, 2, 0], [0, 1, 0]])
    assert result["accuracy"] == pytest.approx(3 / 6)
    np.testing.assert_allclose(result["precision"], [1 / 2, 2 / 4, np.nan])
    np.testing.assert_allclose(result["recall"], [1 / 2, 2 / 3, 0.0])
    report = format_classification_report(result)
    assert report.splitlines()[3].split() == ["c", "-", "0.0000", "1"]
    assert report.endswith("accuracy: 0.5000 (3/6)")
    figure = plot_confusion_matrix(result, tmp_path / "cm.png")
    assert figure.axes and (tmp_path / "cm.png").stat().st_size > 0
    with pytest.raises(ValueError, match="labels must be integers"):
        classification_metrics([3], [0], ["a", "b", "c"])


# --------------------------------------------------------------------------------------------
# training and Grad-CAM

TRAIN_SIZE = 64
TRAIN_IMAGES = 1600
HELD_OUT = 100
CAM_MARGIN = 4  # pixels: half the stride (8) of the explained 8x8 feature map


def test_training_reaches_accuracy_and_gradcam_finds_the_mark(tmp_path):
    train_csv = make_marks_dataset(tmp_path / "train", TRAIN_IMAGES, seed=1, size=TRAIN_SIZE)
    keras.utils.set_random_seed(0)
    light = ClassificationAugmentation(max_rotation=0.0, max_shift=0.05, scale_range=(1.0, 1.0),
                                       saturation_var=0.1, brightness_var=0.1, contrast_var=0.1)
    data = ClassificationGenerator(train_csv, 32, (TRAIN_SIZE, TRAIN_SIZE), seed=0, augment=light)
    model = MarkNet(len(MARK_CLASSES), (TRAIN_SIZE, TRAIN_SIZE, 3), filters=(16, 32, 64), dropout=0.0)
    epochs = 6
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, epochs * len(data))
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data, epochs=epochs, verbose=0)

    held_out = [make_mark_image(np.random.default_rng([99, i]), TRAIN_SIZE) for i in range(HELD_OUT)]
    x = marknet_preprocess(np.stack([image for image, _, _ in held_out]))
    labels = np.array([label for _, label, _ in held_out])
    predicted = model.predict(x, verbose=0).argmax(axis=1)
    accuracy = float(np.mean(predicted == labels))
    assert accuracy >= 0.9, accuracy

    maps = GradCAM(model)(x, predicted)
    hits = 0
    for heat, (_, _, box) in zip(maps, held_out):
        row, column = np.unravel_index(np.argmax(heat), heat.shape)
        xmin, ymin, xmax, ymax = box * TRAIN_SIZE
        hits += (xmin - CAM_MARGIN <= column + 0.5 <= xmax + CAM_MARGIN
                 and ymin - CAM_MARGIN <= row + 0.5 <= ymax + CAM_MARGIN)
    assert hits / HELD_OUT >= 0.8, (hits, accuracy)


# --------------------------------------------------------------------------------------------
# run folders


def test_find_config_and_load_marknet_need_weights_and_their_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        find_config(tmp_path / "missing.weights.h5")
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_marknet(tmp_path / "missing.weights.h5")
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    weights = checkpoints / "epoch_001.weights.h5"
    weights.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no config.json beside"):
        find_config(weights)
    (tmp_path / "config.json").write_text('{"tool": "another"}')  # not a MarkNet run: passed over
    with pytest.raises(FileNotFoundError, match="no config.json beside"):
        load_marknet(weights)
    (tmp_path / "config.json").write_text('{"classes": ["a", "b"], "input_shape": [32, 32, 3]}')
    assert find_config(weights) == tmp_path / "config.json"  # the run folder above checkpoints/
    (checkpoints / "config.json").write_text('{"classes": ["a", "b", "c"], "input_shape": [32, 32, 3]}')
    assert find_config(weights) == checkpoints / "config.json"  # the weights' own folder first


# --------------------------------------------------------------------------------------------
# command line


def test_cli_train_evaluate_explain(tiny_marks, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["marknet", "train", "--csv", str(tiny_marks), "--val-csv", str(tiny_marks), "--out", str(run),
                     "--epochs", "1", "--batch-size", "8", "--image-size", "32", "--filters", "8,16",
                     "--seed", "0", "--quiet"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == list(MARK_CLASSES) and config["input_shape"] == [32, 32, 3]
    assert config["backbone"] is None and config["filters"] == [8, 16]
    with open(run / "history.csv", newline="") as f:
        history = list(csv.DictReader(f))
    assert len(history) == 1 and {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history[0])
    assert (run / "final.weights.h5").is_file() and (run / "checkpoints" / "epoch_001.weights.h5").is_file()
    model, _ = load_marknet(run / "checkpoints" / "epoch_001.weights.h5")  # config.json one folder up
    assert find_config(run / "checkpoints" / "epoch_001.weights.h5") == run / "config.json"
    assert model.output_shape == (None, 4)
    # a run of other settings into the same folder is refused, naming them
    assert cli.main(["marknet", "train", "--csv", str(tiny_marks), "--out", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"run folder {run} holds a run with other settings" in err
    assert "batch_size: 8 in the folder, 32 now" in err
    assert "filters: [8, 16] in the folder, [32, 64, 128, 256] now" in err

    weights = str(run / "final.weights.h5")
    assert cli.main(["marknet", "evaluate", "--csv", str(tiny_marks), "--weights", weights, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "accuracy: " in out and all(name in out for name in MARK_CLASSES)
    assert (run / "confusion_matrix.png").stat().st_size > 0

    records, _ = read_classification_csv(tiny_marks)
    image = records[0]["image_path"]
    explained = tmp_path / "explained"
    assert cli.main(["marknet", "explain", image, "--weights", weights, "--out", str(explained),
                     "--class", "ring", "--class", "wave"]) == 0
    files = sorted(p.name for p in explained.iterdir())
    assert sum(name.endswith("_gradcam.png") and "guided" not in name for name in files) >= 2
    assert "_ring_guided_gradcam.png" in " ".join(files) and any(name.endswith("_explained.png") for name in files)
    assert load_image(explained / next(n for n in files if n.endswith("_wave_gradcam.png"))).shape == (32, 32, 3)
    assert cli.main(["marknet", "explain", image, "--weights", weights, "--class", "teapot"]) == 1
    assert "unknown class(es) teapot" in capsys.readouterr().err


def test_cli_train_resumes_exactly_continues_and_stops_on_ctrl_c(tiny_marks, tmp_path, capsys, monkeypatch):
    """The run-folder guarantees of SSD300's trainer (test_trainer.py, test_runs.py) hold for MarkNet's:
    interrupted after epoch 1 and resumed, a run ends as an uninterrupted one (dropout's random state
    included); a finished run continues with more epochs."""
    def train(out, *extra):
        return cli.main(["marknet", "train", "--csv", str(tiny_marks), "--out", str(out), "--batch-size", "8",
                         "--image-size", "32", "--filters", "8,16", "--seed", "0", "--quiet", *extra])

    assert train(tmp_path / "reference", "--epochs", "2") == 0

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    run = tmp_path / "run"
    monkeypatch.setattr("ssd_keras.checkpoints.plot_history", ctrl_c)  # once epoch 1 is saved
    assert train(run, "--epochs", "2") == 130
    assert capsys.readouterr().err.strip() == "interrupted after epoch 1; run the same command to resume"
    monkeypatch.undo()
    assert train(run, "--epochs", "2") == 0
    assert "resuming from epoch 1 (of 2)" in capsys.readouterr().out
    # equal up to float noise: the same operations on the same batches from the same state (see
    # WEIGHTS_ATOL in test_trainer.py); a lost dropout or optimizer state shows as far more
    resumed, reference = (load_marknet(folder / "final.weights.h5")[0] for folder in (run, tmp_path / "reference"))
    for got, want in zip(resumed.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)

    assert train(run, "--epochs", "2") == 0
    assert "already finished at epoch 2" in capsys.readouterr().out
    assert train(run, "--epochs", "3", "--keep-checkpoints", "1") == 0
    assert "continuing from epoch 2 to 3" in capsys.readouterr().out
    with open(run / "history.csv", newline="") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1", "2"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_003.weights.h5"]
    assert (run / "loss.png").is_file() and not (run / "run.lock").exists()
