"""Training runs on JAX and PyTorch (issue 13): ``train --backend jax`` without and with
``--strategy mirrored`` (keras.distribution.DataParallel over 2 virtual CPU devices) gives the same
epoch, without importing TensorFlow; the run continues on PyTorch, then on TensorFlow, from the
checkpoints the other backends wrote. Plus the backend choice itself (ssd_keras.backends)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from ssd_keras import backends, cli, trainer
from ssd_keras.backends import BackendError
from ssd_keras.checks import MissingDependencyError
from ssd_keras.ssd import SSD300
from ssd_keras.trainer import TrainConfig, train
from ssd_keras.weights import load_weights
from tests.conftest import REPO_ROOT
from tests.rectangles import write_rectangles
from tests.test_trainer import history_rows

SETTINGS = ["--epochs", "1", "--batch-size", "4", "--width-multiplier", "0.125", "--seed", "0", "--lr", "1e-3",
            "--quiet"]

JAX_SCRIPT = r"""
import json, sys
from ssd_keras.cli import main

csv, single, mirrored = sys.argv[1:4]
settings = sys.argv[4:]
status = [main(["train", "--backend", "jax", "--csv", csv, "--out", single, *settings]),
          main(["train", "--backend", "jax", "--csv", csv, "--out", mirrored, "--strategy", "mirrored", *settings]),
          main(["train", "--backend", "jax", "--csv", csv, "--out", mirrored + "3", "--strategy", "mirrored", *settings,
                "--batch-size", "3"])]
import jax
print(json.dumps({"status": status, "devices": jax.device_count(), "tensorflow": "tensorflow" in sys.modules}))
"""


def cli_env() -> dict[str, str]:
    """The environment without a backend choice of its own."""
    return {key: value for key, value in os.environ.items() if key not in ("KERAS_BACKEND", "XLA_FLAGS")}


def final_weights(folder):
    model = SSD300(num_classes=3, width_multiplier=0.125)
    assert len(load_weights(model, folder / "final.weights.h5").loaded) == 34
    return model.get_weights()


def test_a_run_trains_on_jax_with_data_parallel_and_continues_on_torch_then_tensorflow(tmp_path):
    csv_path = write_rectangles(tmp_path / "data", 10, size=(160, 160), boxes_per_image=(1,), suffix=".jpg")
    single, mirrored = tmp_path / "single", tmp_path / "mirrored"
    run = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(csv_path), str(single), str(mirrored), *SETTINGS],
                         capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
                         env={**cli_env(), cli.CPU_DEVICES_ENV: "2"})
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report == {"status": [0, 0, 1], "devices": 2, "tensorflow": False}
    assert ("error: --batch-size 3 does not split evenly between the 2 devices of --strategy mirrored on JAX: "
            "use a multiple of 2") in run.stderr
    for folder, replicas in ((single, 1), (mirrored, 2)):
        config = json.loads((folder / "config.json").read_text())
        assert (config["backend"], config["replicas"]) == ("jax", replicas)
    # the batches split between two devices: the same epoch as on one (3 batches of 4, 4 and 2)
    loss = [float(history_rows(folder)[0]["loss"]) for folder in (single, mirrored)]
    assert np.isfinite(loss).all()
    np.testing.assert_allclose(loss[1], loss[0], rtol=1e-4)
    # and the same weights: Adam's steps (1e-3 each, whatever the gradient's size) turn rounding differences
    # of the split sums into a few 1e-4 where a gradient is near 0 (~0.05% of the weights; 8e-8 on average
    # here); a step that missed one device's half of the batch moves every weight
    difference = np.concatenate([np.abs(got - want).ravel()
                                 for got, want in zip(final_weights(mirrored), final_weights(single))])
    assert difference.max() < 2e-3 and difference.mean() < 1e-6, (difference.max(), difference.mean())

    # the JAX run goes on on PyTorch (no --strategy there), then on TensorFlow, from each other's checkpoints
    args = [arg if arg != "1" else "2" for arg in SETTINGS]
    run = subprocess.run([sys.executable, "-m", "ssd_keras", "train", "--backend", "torch", "--csv", str(csv_path),
                          "--out", str(mirrored), *args], capture_output=True, text=True, timeout=600,
                         cwd=REPO_ROOT, env=cli_env())
    assert run.returncode == 0, run.stderr[-3000:]
    assert "continuing from epoch 1 to 2" in run.stdout
    assert json.loads((mirrored / "config.json").read_text())["backend"] == "torch"
    said = []
    train(TrainConfig(csv=str(csv_path), out=str(mirrored), epochs=3, batch_size=4, width_multiplier=0.125, seed=0,
                      lr=1e-3), verbose=0, say=said.append)
    assert said == ["continuing from epoch 2 to 3"]
    rows = history_rows(mirrored)
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert np.isfinite([float(row["loss"]) for row in rows]).all()
    assert float(rows[2]["loss"]) < float(rows[0]["loss"])


def test_the_backend_is_read_as_keras_reads_it(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "keras")  # as before Keras is imported
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert backends.chosen_backend() == "tensorflow"
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "torch", "floatx": "float32"}))
    assert backends.chosen_backend() == "torch"
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert backends.chosen_backend() == "jax"
    backends.use_backend("torch")
    assert backends.chosen_backend() == "torch"
    with pytest.raises(BackendError, match="backend must be one of tensorflow, jax, torch, got 'theano'"):
        backends.use_backend("theano")


def test_a_backend_is_not_changed_once_keras_runs_and_must_be_installed(monkeypatch):
    assert backends.chosen_backend() == keras.backend.backend() == "tensorflow"
    backends.use_backend("tensorflow")  # the one running: nothing to do
    with pytest.raises(BackendError, match="Keras is already running on tensorflow.*KERAS_BACKEND=jax"):
        backends.use_backend("jax")
    monkeypatch.delitem(sys.modules, "keras")
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'ssd_keras\[jax\]'"):
        backends.use_backend("jax")


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_tensorflow_only_features_name_the_backend_they_need(backend, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(backends, "chosen_backend", lambda: backend)
    from ssd_keras.gradcam import GradCAM, guided_backprop

    model = SSD300(num_classes=3, width_multiplier=0.125)
    with pytest.raises(BackendError, match=f"Grad-CAM .* needs the TensorFlow backend; Keras runs on {backend}"):
        GradCAM(model)
    with pytest.raises(BackendError, match="guided backpropagation"):
        guided_backprop(model, np.zeros((1, 300, 300, 3), "float32"), 1, 0)
    for command in (["gradcam", "x.jpg"], ["demo", "--out", str(tmp_path)], ["export", "--out", "m.tflite"]):
        assert cli.main(command) == 1
        assert "needs the TensorFlow backend" in capsys.readouterr().err


def test_strategies_per_backend(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(BackendError, match="--strategy mirrored needs the TensorFlow or the JAX backend, not torch"):
        trainer._strategy("mirrored")
    assert trainer._strategy(None) is None
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(BackendError, match="--strategy multiworker needs the TensorFlow backend"):
        trainer._strategy("multiworker")
    assert trainer._strategy(None) is None
