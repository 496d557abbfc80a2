"""Keras backends other than TensorFlow (issue 13): the keras.ops NMS equals detection_out on
TensorFlow; on JAX and on PyTorch (a subprocess with KERAS_BACKEND set) the embedded model predicts
what TensorFlow predicts, MultiboxLoss gives TensorFlow's per-image loss, with_detection_output
equals detection_out, a thin model learns two images in model.fit, its .weights.h5 and .keras files
load on TensorFlow with the same predictions, a legacy (Keras 1.2) HDF5 file loads as on
TensorFlow, ``detect`` runs without importing TensorFlow, and Grad-CAM says it needs TensorFlow.
(Training runs on the backends: test_backends_training.py.)"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from ssd_keras import SSD300, layout
from ssd_keras.boxes import decode
from ssd_keras.data.synthetic import make_scene
from ssd_keras.image import model_batches
from ssd_keras.nms import detection_rows
from ssd_keras.ssd import detect, prior_boxes
from ssd_keras.ssd_training import MultiboxLoss
from ssd_keras.ssd_utils import BBoxUtility
from ssd_keras.visualization import save_image
from ssd_keras.weights import load_weights
from tests.conftest import REPO_ROOT, assert_same_detections
from tests.legacy_h5 import random_legacy_weights, write_legacy_h5

SCENES = 3


def scenes():
    return [make_scene(np.random.default_rng([17, i])) for i in range(SCENES)]


def targets(util: BBoxUtility, chosen) -> np.ndarray:
    return np.stack([util.assign_boxes(np.concatenate([boxes, np.eye(4)[labels - 1]], axis=1))
                     for _, boxes, labels in chosen]).astype(np.float32)


@pytest.mark.parametrize("case", ["trained", "random scores"])
def test_keras_ops_nms_equals_detection_out(case, demo_model):
    model, _ = demo_model
    x = next(model_batches([scene[0] for scene in scenes()], (300, 300), SCENES))
    predictions = np.asarray(model.predict(x, verbose=0))
    num_classes = layout.num_classes_of(model)
    top_k, keep_top_k = 400, 200
    if case == "random scores":  # thousands of candidates per class, many suppressed
        logits = np.random.default_rng(5).normal(0, 1, (SCENES, predictions.shape[1], num_classes))
        predictions[:, :, layout.CONF] = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        top_k, keep_top_k = 40, 60
    expected = BBoxUtility(num_classes, top_k=top_k).detection_out(predictions, keep_top_k=keep_top_k)
    loc, conf, priors, variances = layout.split_predictions(predictions)
    rows = np.asarray(detection_rows(decode(loc, priors, variances), conf[:, :, 1:], list(range(1, num_classes)),
                                     0.01, 0.45, top_k, keep_top_k))
    assert rows.shape == (SCENES, keep_top_k, 6)
    for got, want in zip(rows, expected):
        assert_same_detections(got[got[:, layout.CONFIDENCE] > 0], want, atol=1e-5)


BACKEND_SCRIPT = r"""
import json, sys
import numpy as np
import keras
from ssd_keras import SSD300, layout, with_detection_output
from ssd_keras._keras_compat import set_random_seed
from ssd_keras.models import load_demo_model
from ssd_keras.ssd import prior_boxes
from ssd_keras.ssd_training import MultiboxLoss
from ssd_keras.ssd_utils import BBoxUtility
from ssd_keras.weights import load_weights

data = np.load(sys.argv[1])
model, _ = load_demo_model()
predictions = np.asarray(model.predict(data["x"], verbose=0))
detections = keras.ops.convert_to_numpy(with_detection_output(model)(data["x"]))
loss = keras.ops.convert_to_numpy(MultiboxLoss(5).compute_loss(data["y"], predictions))

set_random_seed(3)  # keras.utils.set_random_seed, without importing TensorFlow
thin = SSD300(num_classes=5, width_multiplier=0.125)
util = BBoxUtility(5, prior_boxes(thin))
thin.compile(keras.optimizers.Adam(1e-3), loss=MultiboxLoss(5))
history = thin.fit(data["x"][:2], data["y"][:2], epochs=25, batch_size=2, verbose=0).history["loss"]
thin.save_weights(sys.argv[2] + ".weights.h5")
from ssd_keras.cli import main

status = main(["detect", sys.argv[2] + ".png", "--out", sys.argv[2] + ".detect", "--conf-thresh", "0.5"])
# nothing so far imported TensorFlow (Keras' .keras saving does, when it is installed; GradCAM too)
tensorflow = "tensorflow" in sys.modules
thin.save(sys.argv[2] + ".keras")
legacy = SSD300(num_classes=5, width_multiplier=0.125)
report = load_weights(legacy, sys.argv[2] + ".legacy.h5")
np.savez(sys.argv[2], predictions=predictions, detections=detections, loss=loss,
         thin=np.asarray(thin.predict(data["x"][:2], verbose=0)),
         legacy=np.asarray(legacy.predict(data["x"][:2], verbose=0)))

from ssd_keras.backends import BackendError
from ssd_keras.gradcam import GradCAM

try:
    GradCAM(model)
    gradcam = "no error"
except BackendError as err:
    gradcam = str(err)
print(json.dumps({"backend": keras.backend.backend(), "history": [float(v) for v in history],
                  "legacy_loaded": len(report.loaded), "detect": status, "tensorflow": tensorflow,
                  "gradcam": gradcam}))
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_backend_predicts_detects_computes_the_loss_and_trains_as_tensorflow(backend, demo_model, tmp_path):
    model, _ = demo_model
    chosen = scenes()
    x = next(model_batches([scene[0] for scene in chosen], (300, 300), SCENES))
    util = BBoxUtility(5)
    y = targets(BBoxUtility(5, prior_boxes(model)), chosen)
    np.savez(tmp_path / "in.npz", x=x, y=y)
    thin = SSD300(num_classes=5, width_multiplier=0.125)
    write_legacy_h5(tmp_path / "out.npz.legacy.h5", thin, random_legacy_weights(thin, seed=4))
    save_image(tmp_path / "out.npz.png", chosen[0][0])
    run = subprocess.run([sys.executable, "-c", BACKEND_SCRIPT, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                         capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
                         env={**os.environ, "KERAS_BACKEND": backend})
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    out = np.load(tmp_path / "out.npz")

    predictions = np.asarray(model.predict(x, verbose=0))
    np.testing.assert_allclose(out["predictions"], predictions, atol=1e-4)
    loss = np.asarray(MultiboxLoss(5).compute_loss(y, predictions))
    np.testing.assert_allclose(out["loss"], loss, rtol=1e-5, atol=1e-5)
    for got, want in zip(out["detections"], util.detection_out(out["predictions"])):
        assert_same_detections(got[got[:, layout.CONFIDENCE] > 0], want, atol=1e-5)
    history = report["history"]
    assert np.isfinite(history).all() and history[-1] < 0.5 * history[0], history

    # a legacy HDF5 file loads as on TensorFlow
    assert report["legacy_loaded"] == 34
    load_weights(thin, tmp_path / "out.npz.legacy.h5")
    np.testing.assert_allclose(out["legacy"], thin.predict(x[:2], verbose=0), atol=1e-4)
    # detect writes its files without TensorFlow; Grad-CAM names the backend it needs
    assert report["detect"] == 0 and not report["tensorflow"]
    with open(tmp_path / "out.npz.detect" / "detections.csv", newline="") as f:
        rows = sorted((row["class_name"], float(row["score"])) for row in csv.DictReader(f))
    names = ["circle", "square", "triangle", "star"]
    expected = sorted((names[int(row[layout.LABEL]) - 1], float(row[layout.CONFIDENCE]))
                      for row in detect(model, [chosen[0][0]], confidence_threshold=0.5)[0])
    assert [name for name, _ in rows] == [name for name, _ in expected] and rows
    np.testing.assert_allclose([score for _, score in rows], [score for _, score in expected], atol=1e-3)
    assert f"needs the TensorFlow backend; Keras runs on {backend}" in report["gradcam"]

    # what the backend trained and saved loads on TensorFlow with the same predictions
    thin.load_weights(tmp_path / "out.npz.weights.h5")
    np.testing.assert_allclose(thin.predict(x[:2], verbose=0), out["thin"], atol=1e-4)
    loaded = keras.saving.load_model(tmp_path / "out.npz.keras", compile=False)
    np.testing.assert_allclose(loaded.predict(x[:2], verbose=0), out["thin"], atol=1e-4)
