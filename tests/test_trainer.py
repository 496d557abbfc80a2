"""Training runs: the run folder, NaN stop, resume after a kill, tf.distribute strategies."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from ssd_keras import cli
from ssd_keras.ssd import SSD300
from ssd_keras.trainer import TrainConfig, TrainingStopped, train
from ssd_keras.weights import load_weights
from tests.conftest import REPO_ROOT
from tests.legacy_h5 import random_legacy_weights, write_legacy_h5
from tests.rectangles import write_rectangles

WIDTH = "0.125"


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory):
    """16 images of 160x160: a red or a blue rectangle on a dark background."""
    return write_rectangles(tmp_path_factory.mktemp("train"), 16, size=(160, 160),
                            boxes_per_image=(1,), suffix=".jpg")


def history_rows(folder):
    with open(folder / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_run_writes_its_folder(train_csv, tmp_path):
    out = tmp_path / "run"
    config = TrainConfig(csv=str(train_csv), val_csv=str(train_csv), out=str(out), epochs=2,
                         batch_size=8, width_multiplier=0.125, seed=0, lr=1e-3, lr_decay=0.5)
    history = train(config, verbose=0)
    assert len(history.history["loss"]) == 2
    rows = history_rows(out)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert all(np.isfinite(float(r["loss"])) and np.isfinite(float(r["val_loss"])) for r in rows)
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows], [1e-3, 5e-4], rtol=1e-5)
    saved = json.loads((out / "config.json").read_text())
    assert saved["classes"] == ["blue", "red"] and saved["num_classes"] == 3
    assert saved["width_multiplier"] == 0.125 and saved["input_shape"] == [300, 300, 3]
    assert saved["replicas"] == 1 and os.path.isabs(saved["csv"])
    assert (out / "loss.png").stat().st_size > 1000
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "epoch_001.weights.h5", "epoch_002.weights.h5"]
    model = SSD300(num_classes=3, width_multiplier=0.125)
    assert len(load_weights(model, out / "final.weights.h5").loaded) == 34


def test_nan_loss_stops_with_a_clear_message(train_csv, tmp_path):
    model = SSD300(num_classes=3, width_multiplier=0.125)
    weights = random_legacy_weights(model)
    weights["conv4_3_norm_mbox_loc"][1][:] = np.nan  # NaN offsets: a NaN location loss
    path = tmp_path / "nan.h5"
    write_legacy_h5(path, model, weights)
    config = TrainConfig(csv=str(train_csv), out=str(tmp_path / "run"), epochs=2, batch_size=8,
                         width_multiplier=0.125, weights=str(path))
    with pytest.raises(TrainingStopped, match=r"epoch 1, batch 1: the loss became nan"):
        train(config, verbose=0)
    assert not (tmp_path / "run" / "final.weights.h5").exists()


def test_freeze_takes_layer_names_and_rejects_unknown_ones(train_csv, tmp_path):
    config = TrainConfig(csv=str(train_csv), out=str(tmp_path / "run"), epochs=1, batch_size=8,
                         width_multiplier=0.125, freeze=["conv1_1", "no_such_layer"])
    with pytest.raises(ValueError, match="no_such_layer"):
        train(config, verbose=0)
    with pytest.raises(ValueError, match="strategy"):
        TrainConfig(csv="a.csv", out="o", strategy="tpu")


def run_cli(args, env=None, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "ssd_keras", "train", *args],
                            cwd=REPO_ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.mark.slow
def test_a_killed_run_resumes_without_losing_epochs(train_csv, tmp_path):
    out = tmp_path / "run"
    args = ["--csv", str(train_csv), "--out", str(out), "--epochs", "4", "--batch-size", "2",
            "--width-multiplier", WIDTH, "--seed", "1"]
    first = run_cli(args)
    deadline = time.time() + 240
    while time.time() < deadline and first.poll() is None:
        if (out / "history.csv").exists() and len(history_rows(out)) >= 1:
            break
        time.sleep(0.05)
    assert first.poll() is None, f"the first run ended before the kill:\n{first.stdout.read()}"
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (out / "final.weights.h5").exists()
    done = len(history_rows(out))
    assert 1 <= done < 4
    second = run_cli(args)
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output
    assert [r["epoch"] for r in history_rows(out)] == ["0", "1", "2", "3"]
    assert "Epoch 1/4" not in output and f"Epoch {done + 1}/4" in output  # resumed
    assert (out / "final.weights.h5").exists() and not (out / "backup").exists()


@pytest.mark.slow
def test_mirrored_strategy_over_two_cpu_devices(train_csv, tmp_path):
    out = tmp_path / "run"
    run = run_cli(["--csv", str(train_csv), "--out", str(out), "--epochs", "1", "--batch-size",
                   "8", "--width-multiplier", WIDTH, "--strategy", "mirrored", "--quiet"],
                  env={cli.CPU_DEVICES_ENV: "2"})
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 0, output
    assert json.loads((out / "config.json").read_text())["replicas"] == 2
    assert np.isfinite(float(history_rows(out)[0]["loss"]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_strategy_with_two_processes(train_csv, tmp_path):
    out = tmp_path / "run"
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    args = ["--csv", str(train_csv), "--out", str(out), "--epochs", "1", "--batch-size", "4",
            "--width-multiplier", WIDTH, "--strategy", "multiworker", "--seed", "2", "--quiet"]
    runs = [run_cli(args, env={"TF_CONFIG": json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})})
        for i in range(2)]
    outputs = [r.communicate(timeout=300)[0] for r in runs]
    for r, output in zip(runs, outputs):
        assert r.returncode == 0, output
    chief, other = history_rows(out), history_rows(out / "worker1")
    assert len(chief) == 1 and np.isfinite(float(chief[0]["loss"]))
    assert chief[0]["loss"] == other[0]["loss"]  # one synchronised model
    assert json.loads((out / "config.json").read_text())["replicas"] == 2
