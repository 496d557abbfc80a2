"""Training runs: the run folder, NaN stop, resume after a kill, continuing, settings, the lock,
Ctrl-C, a full disk, tf.distribute strategies. (The run-folder machinery alone: test_runs.py.)"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest

from ssd_keras import cli, files
from ssd_keras.checkpoints import read_state
from ssd_keras.runs import RunLock, SettingsDiffer
from ssd_keras.ssd import SSD300
from ssd_keras.trainer import TrainConfig, TrainingStopped, train
from ssd_keras.weights import load_weights
from tests.conftest import REPO_ROOT
from tests.legacy_h5 import random_legacy_weights, write_legacy_h5
from tests.rectangles import write_rectangles

WIDTH = "0.125"
REFERENCE = dict(epochs=2, batch_size=8, width_multiplier=0.125, seed=0, lr=1e-3, lr_decay=0.5)
"""The reference run: 2 epochs of 2 batches (16 images), validated on the same images."""
WEIGHTS_ATOL = 1e-5
"""Two runs of the same settings on one machine, one of them stopped and resumed, do the same float
operations on the same batches from the same state (weights, Adam's moments and step, the epoch, the
data order and augmentation drawn from (seed, epoch, index)): their weights agree to the last bit
here. The tolerance only leaves room for a kernel that picks another reduction order in another
process (~1e-7 per step); a resume that lost any of that state differs by more than 1e-3."""


def cli_args(csv_path, out, *extra, val=True, **settings):
    """``train`` arguments of the reference run (``settings`` override, as TrainConfig names)."""
    values = {**REFERENCE, **settings}
    args = ["--csv", str(csv_path), "--out", str(out)] + (["--val-csv", str(csv_path)] if val else [])
    for key, value in values.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return [*args, *extra]


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory):
    """16 images of 160x160: a red or a blue rectangle on a dark background."""
    return write_rectangles(tmp_path_factory.mktemp("train"), 16, size=(160, 160),
                            boxes_per_image=(1,), suffix=".jpg")


@pytest.fixture(scope="module")
def reference_run(train_csv, tmp_path_factory):
    """A run of REFERENCE, never stopped (read-only for the tests)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    history = train(TrainConfig(csv=str(train_csv), val_csv=str(train_csv), out=str(out), **REFERENCE), verbose=0)
    return out, history


def history_rows(folder):
    with open(folder / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def final_weights(folder, name="final.weights.h5"):
    model = SSD300(num_classes=3, width_multiplier=0.125)
    assert len(load_weights(model, folder / name).loaded) == 34
    return model.get_weights()


def assert_same_run(folder, reference):
    """The same history (one row per epoch) and final weights as the reference run."""
    rows, expected = history_rows(folder), history_rows(reference)
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in expected]
    for row, other in zip(rows, expected):
        np.testing.assert_allclose([float(row[k]) for k in sorted(other)], [float(other[k]) for k in sorted(other)],
                                   rtol=1e-4)
    for got, want in zip(final_weights(folder), final_weights(reference)):
        np.testing.assert_allclose(got, want, rtol=0, atol=WEIGHTS_ATOL)


def test_a_run_writes_its_folder(reference_run):
    out, history = reference_run
    assert len(history.history["loss"]) == 2
    rows = history_rows(out)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert all(np.isfinite(float(r["loss"])) and np.isfinite(float(r["val_loss"])) for r in rows)
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows], [1e-3, 5e-4], rtol=1e-5)
    saved = json.loads((out / "config.json").read_text())
    assert saved["classes"] == ["blue", "red"] and saved["num_classes"] == 3
    assert saved["width_multiplier"] == 0.125 and saved["input_shape"] == [300, 300, 3]
    assert saved["replicas"] == 1 and os.path.isabs(saved["csv"]) and saved["keep_checkpoints"] == 3
    assert (out / "loss.png").stat().st_size > 1000
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json", "final.weights.h5",
                                                     "history.csv", "loss.png"]  # no lock, no temporary file
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "epoch_001.weights.h5", "epoch_002.weights.h5"]
    state = read_state(out / "checkpoints" / "epoch_001.weights.h5")
    assert state["epoch"] == 1 and state["history"] == rows[:1]
    assert read_state(out / "final.weights.h5")["epoch"] == 2
    final_weights(out)


def test_other_settings_a_held_lock_and_unwritable_folders_are_refused(train_csv, reference_run, tmp_path,
                                                                       capsys):
    reference, _ = reference_run
    before = (reference / "final.weights.h5").stat().st_mtime_ns
    assert cli.main(["train", *cli_args(train_csv, reference, width_multiplier=0.25, lr=3e-4)]) == 2
    err = capsys.readouterr().err
    assert f"run folder {reference} holds a run with other settings" in err
    assert "lr: 0.001 in the folder, 0.0003 now" in err and "width_multiplier: 0.125 in the folder, 0.25 now" in err
    with RunLock(reference):
        assert cli.main(["train", *cli_args(train_csv, reference)]) == 2
        assert f"error: run folder {reference} is in use by PID {os.getpid()} on {socket.gethostname()}" in \
            capsys.readouterr().err
    assert cli.main(["train", *cli_args(train_csv, reference)]) == 0  # the same command: nothing to do
    assert "already finished at epoch 2" in capsys.readouterr().out
    assert (reference / "final.weights.h5").stat().st_mtime_ns == before
    # a folder under a file cannot be created (tests run as root: chmod would not stop a write)
    (tmp_path / "file").write_text("")
    assert cli.main(["train", *cli_args(train_csv, tmp_path / "file" / "run")]) == 1
    assert f"cannot create the run folder {tmp_path / 'file' / 'run'}" in capsys.readouterr().err


def test_ctrl_c_a_full_disk_resuming_and_continuing(train_csv, reference_run, tmp_path, capsys, monkeypatch):
    """One run through the CLI: interrupted after epoch 1, declared finished there, continued to 2 epochs
    but stopped by a full disk, continued again: it ends as the reference run, never stopped, does."""
    out = tmp_path / "run"

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("ssd_keras.checkpoints.plot_history", ctrl_c)  # once epoch 1 is saved
    assert cli.main(["train", *cli_args(train_csv, out, "--quiet")]) == 130
    captured = capsys.readouterr()
    assert captured.err.strip() == "interrupted after epoch 1; run the same command to resume"
    assert not (out / "final.weights.h5").exists() and not (out / "run.lock").exists()
    monkeypatch.undo()
    one_epoch = final_weights(out / "checkpoints", "epoch_001.weights.h5")

    assert cli.main(["train", *cli_args(train_csv, out, "--quiet", epochs=1)]) == 0
    assert "already finished at epoch 1" in capsys.readouterr().out
    assert [r["epoch"] for r in history_rows(out)] == ["0"] and read_state(out / "final.weights.h5")["epoch"] == 1

    monkeypatch.setenv(files.WRITE_FAULT_ENV, "enospc@1")  # the next weights file: epoch 2's checkpoint
    monkeypatch.setattr(files, "_weights_writes", 0)
    assert cli.main(["train", *cli_args(train_csv, out, "--quiet", "--keep-checkpoints", "1")]) == 1
    captured = capsys.readouterr()
    assert "continuing from epoch 1 to 2" in captured.out
    assert f"cannot write {out / 'checkpoints' / 'epoch_002.weights.h5'}: No space left on device" in captured.err
    assert f"the last good checkpoint, {out / 'checkpoints' / 'epoch_001.weights.h5'}, is intact" in captured.err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_001.weights.h5"]
    monkeypatch.undo()

    assert cli.main(["train", *cli_args(train_csv, out, "--quiet", "--keep-checkpoints", "1")]) == 0
    assert "continuing from epoch 1 to 2" in capsys.readouterr().out  # final.weights.h5 still holds epoch 1
    # the new epoch started from the trained state: the run is the uninterrupted 2-epoch run
    assert_same_run(out, reference_run[0])
    assert not all(np.array_equal(a, b) for a, b in zip(one_epoch, final_weights(out)))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_002.weights.h5"]  # kept 1
    assert json.loads((out / "config.json").read_text())["epochs"] == 2


def test_nan_loss_stops_with_a_clear_message_and_overwrite_replaces_a_run(train_csv, reference_run, tmp_path):
    model = SSD300(num_classes=3, width_multiplier=0.125)
    weights = random_legacy_weights(model)
    weights["conv4_3_norm_mbox_loc"][1][:] = np.nan  # NaN offsets: a NaN location loss
    path = tmp_path / "nan.h5"
    write_legacy_h5(path, model, weights)
    out = tmp_path / "run"
    shutil.copytree(reference_run[0], out)
    config = TrainConfig(csv=str(train_csv), out=str(out), epochs=2, batch_size=8, width_multiplier=0.125,
                         weights=str(path))
    with pytest.raises(SettingsDiffer, match="weights: null in the folder"):
        train(config, verbose=0)
    said = []
    with pytest.raises(TrainingStopped, match=r"epoch 1, batch 1: the loss became nan.*no epoch was saved"):
        train(config, verbose=0, overwrite=True, say=said.append)
    assert said == [f"--overwrite: removing the earlier run in {out}: checkpoints/, config.json, "
                    f"final.weights.h5, history.csv, loss.png"]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json"]
    assert json.loads((out / "config.json").read_text())["weights"] == str(path)


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
def test_a_run_killed_at_random_moments_ends_as_if_never_stopped(train_csv, reference_run, tmp_path):
    """SIGKILL inside a checkpoint write (the test hook), then at two random moments; the same command
    then finishes the run: one history row per epoch, every file readable, the reference's weights."""
    out = tmp_path / "run"
    args = cli_args(train_csv, out, "--quiet")
    first = run_cli(args, env={files.WRITE_FAULT_ENV: "die@2"})  # dies writing epoch 2's checkpoint
    output = first.communicate(timeout=300)[0]
    assert first.returncode == -signal.SIGKILL, output
    assert [p.name for p in (out / "checkpoints").iterdir() if not files.is_temporary(p.name)] == [
        "epoch_001.weights.h5"]
    assert any(files.is_temporary(p.name) for p in (out / "checkpoints").iterdir())  # the half-written one
    assert not (out / "final.weights.h5").exists() and (out / "run.lock").exists()

    outputs, delays = [output], [random.uniform(4.0, 12.0) for _ in range(2)]
    for delay in delays:
        run = run_cli(args)
        try:
            run.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGKILL)
        outputs.append(run.communicate(timeout=60)[0])
        assert run.returncode in (0, -signal.SIGKILL), outputs[-1]
    last = run_cli(args)
    outputs.append(last.communicate(timeout=300)[0])
    assert last.returncode == 0, f"killed after {delays} s:\n" + "\n---\n".join(outputs)
    everything = "\n".join(outputs)
    assert f"taking over the run folder {out} from PID {first.pid} on {socket.gethostname()}" in everything
    assert "Traceback" not in everything

    assert_same_run(out, reference_run[0])
    for checkpoint in (out / "checkpoints").iterdir():
        final_weights(out / "checkpoints", checkpoint.name)
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    assert cv2.imread(str(out / "loss.png")) is not None
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json", "final.weights.h5",
                                                     "history.csv", "loss.png"]


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


def test_a_prior_configuration_is_a_setting_of_the_run(tmp_path):
    """`--priors FILE` is kept in config.json as the configuration itself (not the path), is one of
    the settings a later command may not change, and resolve_model rebuilds that model from it."""
    from ssd_keras.models import resolve_model
    from ssd_keras.priors import HeadSpec, PriorConfig
    from ssd_keras.runs import RunFolder
    from ssd_keras.ssd import prior_boxes
    from ssd_keras.trainer import SETTINGS

    config = PriorConfig((HeadSpec("conv4_3", 20.0), HeadSpec("fc7", 60.0, 114.0, (2.0,))))
    path = tmp_path / "priors.json"
    path.write_text(json.dumps(config.to_dict()))
    settings = TrainConfig(csv="a.csv", out=str(tmp_path / "run"), priors=str(path))
    assert settings.priors == config.to_dict() and "priors" in SETTINGS
    model = SSD300(num_classes=3, width_multiplier=0.125, priors=config)
    run = RunFolder(tmp_path / "run").create()
    run.write_config({"classes": ["a", "b"], "width_multiplier": 0.125, "input_shape": [300, 300, 3],
                      "priors": settings.priors})
    model.save_weights(str(run.final_weights))
    rebuilt, names, _ = resolve_model(run.final_weights)
    assert names == ["a", "b"]
    np.testing.assert_array_equal(prior_boxes(rebuilt), prior_boxes(model))
    assert len(prior_boxes(rebuilt)) == 38 * 38 + 19 * 19 * 4
