"""Exported files where a Keras model runs: ``detect --model``, ``evaluate --model``,
``videotest.py --model``, ``evaluation.detect_records`` / ``evaluate_records`` and ``VideoTest``
with an :class:`ssd_keras.exported.ExportedModel`; the same detections and mAP as the Keras demo
model, and the options that cannot go with a file.

One LiteRT float32 export of the embedded demo model, made once for the module.
"""

from __future__ import annotations

import csv
import importlib
import json
import subprocess
import sys
from collections import defaultdict

import cv2
import numpy as np
import pytest

from ssd_keras import cli
from ssd_keras.data.synthetic import SHAPE_CLASSES, make_scene
from ssd_keras.image import preprocess_input
from ssd_keras.models import DEMO_WEIGHTS
from ssd_keras.visualization import save_image
from tests.conftest import REPO_ROOT

pytest.importorskip("ai_edge_litert")

SCENES = 3
VIDEO_FRAMES = 6
CONF = 0.1  # detect's threshold here: many rows to compare
CSV_SCORE_STEP, CSV_PIXEL_STEP = 1e-4, 0.1  # detections.csv's rounding (4 decimals, 0.1 px)


@pytest.fixture(scope="module")
def demo(demo_model):
    return demo_model


@pytest.fixture(scope="module")
def tflite(demo_exports):
    return demo_exports["litert", "float32"]


@pytest.fixture(scope="module")
def exported(tflite):
    from ssd_keras.exported import load_exported

    return load_exported(tflite)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """3 synthetic scenes as PNGs and their annotation CSV (pixel boxes)."""
    folder = tmp_path_factory.mktemp("scenes")
    lines = ["image_path,xmin,ymin,xmax,ymax,class_name"]
    for k in range(SCENES):
        image, boxes, labels = make_scene(np.random.default_rng(k))
        save_image(folder / f"scene{k}.png", image)
        height, width = image.shape[:2]
        for box, label in zip(boxes * [width, height, width, height], labels):
            lines.append(f"scene{k}.png,{','.join(f'{v:.3f}' for v in box)},{SHAPE_CLASSES[label - 1]}")
    (folder / "truth.csv").write_text("\n".join(lines) + "\n")
    return folder


def detections_by_image(path):
    """detections.csv as {image name: [(class, score, (xmin, ymin, xmax, ymax)), ...]}."""
    found = defaultdict(list)
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            box = tuple(float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            found[row["image_path"].rsplit("/", 1)[-1]].append((row["class_name"], float(row["score"]), box))
    return dict(found)


def assert_same_csv_rows(got, expected):
    """The same rows whatever the order of ties; one rounding step of the CSV allowed."""
    assert got.keys() == expected.keys()
    for image, rows in expected.items():
        others = list(got[image])
        assert len(others) == len(rows), image
        for name, score, box in rows:
            match = [i for i, (n, s, b) in enumerate(others) if n == name
                     and abs(s - score) <= CSV_SCORE_STEP + 1e-9
                     and np.max(np.abs(np.subtract(b, box))) <= CSV_PIXEL_STEP + 1e-6]
            assert match, f"{image}: no row like {name} {score} {box}"
            others.pop(match[0])


# ---------------------------------------------------------------------------------- detect
def test_detect_with_the_file_writes_the_keras_detections(tflite, scenes, tmp_path, capsys):
    images = [str(scenes / f"scene{k}.png") for k in range(2)]
    assert cli.main(["detect", *images, "--weights", str(DEMO_WEIGHTS), "--conf-thresh", str(CONF),
                     "--out", str(tmp_path / "keras")]) == 0
    capsys.readouterr()
    assert cli.main(["detect", *images, "--model", str(tflite), "--conf-thresh", str(CONF),
                     "--nms-thresh", "0.45", "--out", str(tmp_path / "file")]) == 0  # the file's own NMS: fine
    printed = capsys.readouterr().out
    assert f"model: exported litert float32 file {tflite} (classes circle, square, triangle, star;" in printed
    expected = detections_by_image(tmp_path / "keras" / "detections.csv")
    got = detections_by_image(tmp_path / "file" / "detections.csv")
    assert sum(map(len, expected.values())) > 5
    assert_same_csv_rows(got, expected)
    assert (tmp_path / "file" / "scene0.png").is_file() and (tmp_path / "file" / "detections.json").is_file()


def test_detect_with_a_litert_file_imports_no_tensorflow(tflite, scenes, tmp_path):
    code = ("import json, runpy, sys\n"
            "sys.argv = ['ssd_keras', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('ssd_keras', run_name='__main__', alter_sys=True)\n"
            "except SystemExit as exit:\n    assert exit.code in (0, None), exit.code\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))))\n")
    run = subprocess.run([sys.executable, "-c", code, "detect", str(scenes / "scene0.png"), "--model", str(tflite),
                          "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == []


def test_conf_thresh_below_the_files_warns_and_runs(tflite, scenes, tmp_path, capsys):
    assert cli.main(["detect", str(scenes / "scene0.png"), "--model", str(tflite), "--conf-thresh", "0.001",
                     "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "WARNING: --conf-thresh 0.001 is below 0.01, the confidence threshold" in err


# -------------------------------------------------------------------------------- evaluate
def test_evaluate_with_the_file_gives_the_keras_map(tflite, scenes, tmp_path, capsys):
    truth = str(scenes / "truth.csv")
    assert cli.main(["evaluate", "--csv", truth, "--weights", str(DEMO_WEIGHTS), "--quiet",
                     "--json", str(tmp_path / "keras.json")]) == 0
    assert cli.main(["evaluate", "--csv", truth, "--model", str(tflite), "--quiet",
                     "--json", str(tmp_path / "file.json")]) == 0
    assert "model: exported litert float32 file" in capsys.readouterr().out
    keras_map = json.loads((tmp_path / "keras.json").read_text())["mAP"]
    file_map = json.loads((tmp_path / "file.json").read_text())["mAP"]
    assert keras_map > 0.5 and file_map == pytest.approx(keras_map, abs=1e-3)


def test_evaluate_records_takes_an_exported_model(exported, demo, scenes):
    from ssd_keras.data.annotations import read_annotations
    from ssd_keras.evaluation import detect_records, evaluate_records
    from ssd_keras.ssd_utils import BBoxUtility

    records, class_names = read_annotations(scenes / "truth.csv", list(SHAPE_CLASSES))
    model, _ = demo
    keras_result = evaluate_records(model, records, class_names, verbose=0)
    result = evaluate_records(exported, records, class_names, verbose=0)
    assert result["mAP"] == pytest.approx(keras_result["mAP"], abs=1e-3)
    agreeing = detect_records(exported, records[:1], BBoxUtility(5, nms_thresh=0.45), verbose=0)
    assert len(agreeing) == 1 and len(agreeing[0])
    with pytest.raises(ValueError, match="fixed at export"):
        detect_records(exported, records, BBoxUtility(5, nms_thresh=0.3), verbose=0)
    with pytest.raises(ValueError, match="predicts 5 classes"):
        evaluate_records(exported, records, class_names[:2], verbose=0)


# --------------------------------------------------------------------------------- options
@pytest.mark.parametrize("command", ["detect", "evaluate"])
@pytest.mark.parametrize("extra, message", [
    (["--weights", "w.weights.h5"], "not with --weights"),
    (["--classes", "voc", "--allow-untrained"], "not with --classes, --allow-untrained"),
    (["--nms-thresh", "0.3"], "--nms-thresh 0.3: the NMS of {file} was fixed at export (IoU 0.45)"),
])
def test_options_that_contradict_the_file_exit_2(command, extra, message, tflite, scenes, tmp_path, capsys):
    where = [str(scenes / "scene0.png"), "--out", str(tmp_path)] if command == "detect" else \
        ["--csv", str(scenes / "truth.csv")]
    assert cli.main([command, *where, "--model", str(tflite), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message.format(file=tflite) in err and "Traceback" not in err


@pytest.mark.parametrize("name, message", [("missing.tflite", "exported model not found"),
                                           ("notes.txt", "not an exported model")])
def test_a_model_path_that_is_no_exported_model_is_a_usage_error(name, message, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a model\n")
    for argv in (["detect", "x.png"], ["evaluate", "--csv", "t.csv"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([*argv, "--model", str(tmp_path / name)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "argument --model: " in err and message in err


def test_evaluate_detections_with_model_is_refused(tflite, scenes, tmp_path, capsys):
    saved = tmp_path / "d.csv"
    saved.write_text("image_path,class_name,score,xmin,ymin,xmax,ymax\n")
    assert cli.main(["evaluate", "--csv", str(scenes / "truth.csv"), "--detections", str(saved),
                     "--model", str(tflite)]) == 1
    assert "--detections scores saved detections and --model runs a model" in capsys.readouterr().err


def test_the_keras_nms_default_is_unchanged():
    from ssd_keras.cli._common import DEFAULT_NMS_THRESH, nms_thresh

    args = cli.build_parser().parse_args(["detect", "x.png"])
    assert args.nms_thresh is None and nms_thresh(args) == DEFAULT_NMS_THRESH == 0.45
    assert nms_thresh(cli.build_parser().parse_args(["evaluate", "--csv", "t.csv", "--nms-thresh", "0.3"])) == 0.3


# ----------------------------------------------------------------------------------- video
@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """6 frames 300x300 (mp4v), one synthetic scene each."""
    path = tmp_path_factory.mktemp("video") / "scenes.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (300, 300))
    assert writer.isOpened()
    for k in range(VIDEO_FRAMES):
        writer.write(cv2.cvtColor(make_scene(np.random.default_rng([7, k]))[0], cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_video_test_runs_an_exported_model(exported, video, tmp_path):
    from ssd_keras.video import VideoTest

    capture, expected = cv2.VideoCapture(str(video)), 0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        small = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (300, 300), interpolation=cv2.INTER_LINEAR)
        rows = exported.predict(preprocess_input(small)[np.newaxis])[0]
        expected += int(np.count_nonzero(rows[:, 1] >= 0.5))
    capture.release()
    summary = VideoTest(exported.class_names, exported, batch_size=4).run(
        video, conf_thresh=0.5, output=tmp_path / "out.mp4", display=False)
    assert summary.frames == VIDEO_FRAMES and summary.detections == expected > 0
    assert cv2.VideoCapture(str(tmp_path / "out.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == VIDEO_FRAMES
    with pytest.raises(ValueError, match="bbox_util"):
        VideoTest(exported.class_names, exported, bbox_util=object())
    with pytest.raises(ValueError, match="one name per class"):
        VideoTest(["circle"], exported)


@pytest.fixture
def videotest(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "testing_utils"))
    sys.modules.pop("videotest", None)
    yield importlib.import_module("videotest")
    sys.modules.pop("videotest", None)


def test_videotest_script_with_model(videotest, tflite, video, tmp_path, capsys):
    out = tmp_path / "annotated.mp4"
    assert videotest.main(["--video", str(video), "--model", str(tflite), "--no-display", "--output", str(out),
                           "--max-frames", "4"]) == 0
    printed = capsys.readouterr().out
    assert f"model: exported litert float32 file {tflite}" in printed and "4 frames" in printed
    assert cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT) == 4


def test_videotest_script_refuses_model_with_weights_and_a_missing_file(videotest, tflite, video, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        videotest.main(["--video", str(video), "--model", str(tflite), "--weights", "w.h5", "--no-display"])
    assert exit_info.value.code == 2 and "not with --weights" in capsys.readouterr().err
    missing = tmp_path / "gone.tflite"
    assert videotest.main(["--video", str(video), "--model", str(missing), "--no-display"]) == 1
    err = capsys.readouterr().err
    assert f"error: exported model not found: {missing}" in err and "Traceback" not in err
