"""Run folders (``ssd_keras.runs``, ``ssd_keras.files``): the lock, the settings check, atomic
writes, pruning; and the checkpoints that resume a run (``ssd_keras.checkpoints``), on a tiny Keras
model. The trainers' use of them is in test_trainer.py and test_marknet.py."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from ssd_keras import files
from ssd_keras.runs import (RunFolder, RunFolderBusy, RunFolderError, RunInterrupted, RunLock, SettingsDiffer,
                            differing_settings, open_run)
from tests.conftest import REPO_ROOT

SETTINGS = ("csv", "lr", "input_shape")
RECORD = {"csv": "/data/train.csv", "lr": 0.001, "input_shape": (32, 32, 3), "epochs": 2}
HOST = socket.gethostname()


def opened(folder, record=RECORD, overwrite=False):
    """``open_run`` entered and left at once; returns what it said."""
    said = []
    with open_run(folder, record, SETTINGS, overwrite=overwrite, say=said.append) as run:
        run.write_config(json.loads(json.dumps(record)))
    return said


# --------------------------------------------------------------------------------------------
# the lock


def test_a_second_holder_is_refused_and_a_release_frees_the_folder(tmp_path):
    first = RunLock(tmp_path)
    assert first.acquire() is None
    assert json.loads((tmp_path / "run.lock").read_text()) == {"host": HOST, "pid": os.getpid()}
    # flock belongs to the open file, so a second open in this very process is refused too
    with pytest.raises(RunFolderBusy, match=f"^run folder {tmp_path} is in use by PID {os.getpid()} on {HOST}$"):
        RunLock(tmp_path).acquire()
    with pytest.raises(RunFolderBusy):
        opened(tmp_path)
    first.release()
    assert not (tmp_path / "run.lock").exists()
    with RunLock(tmp_path) as again:  # free again; nothing to take over
        assert again.path.exists()


def test_another_process_holding_the_lock_is_named(tmp_path):
    code = ("import sys, time; from ssd_keras.runs import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusy, match=f"is in use by PID {holder.pid} on {HOST}"):
            opened(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    # killed: the system released its lock; its lock file says whose it was
    assert opened(tmp_path)[0] == (f"taking over the run folder {tmp_path} from PID {holder.pid} on {HOST}, "
                                   f"which is no longer running")
    assert not (tmp_path / "run.lock").exists()


def test_a_stale_lock_file_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run.lock").write_text(json.dumps({"host": "gpu-box", "pid": dead.pid}))
    lock = RunLock(tmp_path)
    assert lock.acquire() == (f"taking over the run folder {tmp_path} from PID {dead.pid} on gpu-box, "
                              f"which is no longer running")
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    lock.release()


# --------------------------------------------------------------------------------------------
# settings


def test_differing_settings_compares_as_json_and_skips_what_old_folders_lack():
    old = {"csv": "/a.csv", "lr": 0.001, "input_shape": [32, 32, 3], "epochs": 1}
    assert differing_settings(old, RECORD, SETTINGS) == [("csv", "/a.csv", "/data/train.csv")]
    assert differing_settings({"lr": 0.001}, RECORD, SETTINGS) == []


def test_other_settings_are_refused_naming_each_and_overwrite_replaces_the_run(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert opened(run.path) == []
    run.checkpoint(1).write_bytes(b"weights")
    assert opened(run.path, {**RECORD, "epochs": 5}) == []  # epochs may change
    changed = {**RECORD, "lr": 0.01, "input_shape": (64, 64, 3)}
    with pytest.raises(SettingsDiffer) as refused:
        opened(run.path, changed)
    assert refused.value.differences == [("lr", 0.001, 0.01), ("input_shape", [32, 32, 3], [64, 64, 3])]
    message = str(refused.value)
    assert f"run folder {run.path} holds a run with other settings" in message
    assert "lr: 0.001 in the folder, 0.01 now" in message and "input_shape: [32, 32, 3] in the folder" in message
    assert "--overwrite" in message and run.checkpoint(1).exists() and not run.lock_file.exists()

    said = opened(run.path, changed, overwrite=True)
    assert said == [f"--overwrite: removing the earlier run in {run.path}: checkpoints/, config.json"]
    assert json.loads(run.config.read_text())["lr"] == 0.01 and run.checkpoint_files() == []


def test_a_damaged_config_is_named_and_overwrite_replaces_it(tmp_path):
    (tmp_path / "config.json").write_text('{"csv": "/data/tr')
    with pytest.raises(ValueError, match="config.json is not a run configuration.*--overwrite replaces"):
        opened(tmp_path)
    assert opened(tmp_path, overwrite=True) == [f"--overwrite: removing the earlier run in {tmp_path}: config.json"]


def test_a_folder_of_other_files_is_not_a_run_folder(tmp_path):
    (tmp_path / "holiday.jpg").write_bytes(b"jpeg")
    for overwrite in (False, True):
        with pytest.raises(RunFolderError, match="holds files but no config.json"):
            opened(tmp_path, overwrite=overwrite)
    assert (tmp_path / "holiday.jpg").exists()


# --------------------------------------------------------------------------------------------
# writing: atomic files, unwritable folders, temporary files, pruning


def test_unwritable_run_folders_are_named_before_anything_runs(tmp_path, monkeypatch):
    # Tests run as root, for whom chmod does not stop writes: a folder under a file stands for one
    # that cannot be created, a failing fsync for a full disk.
    (tmp_path / "file").write_text("")
    with pytest.raises(RunFolderError, match=f"cannot create the run folder {tmp_path / 'file' / 'run'}"):
        opened(tmp_path / "file" / "run")

    def full(handle):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RunFolderError, match=f"cannot write to the run folder {tmp_path / 'run'}: No space left"):
        opened(tmp_path / "run")
    monkeypatch.undo()
    assert opened(tmp_path / "run") == [] and not list((tmp_path / "run").glob(".write-test-*"))


def test_atomic_path_leaves_the_old_file_or_the_new_one(tmp_path):
    target = tmp_path / "sub" / "final.weights.h5"
    with files.atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith("-final.weights.h5")
        assert files.is_temporary(tmp.name)
        tmp.write_bytes(b"old")
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and os.listdir(target.parent) == ["final.weights.h5"]


def test_the_write_fault_hook_fails_the_nth_weights_write_like_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setenv(files.WRITE_FAULT_ENV, "enospc@2")
    monkeypatch.setattr(files, "_weights_writes", 0)
    with files.atomic_path(tmp_path / "config.json") as tmp:  # not weights: not counted
        tmp.write_text("{}")
    with files.atomic_path(tmp_path / "a.weights.h5") as tmp:
        tmp.write_bytes(b"1")
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'b.weights.h5'}: No space left") as failed:
        with files.atomic_path(tmp_path / "b.weights.h5") as tmp:
            tmp.write_bytes(b"2")
    assert failed.value.errno == errno.ENOSPC
    assert sorted(os.listdir(tmp_path)) == ["a.weights.h5", "config.json"]


def test_the_write_fault_hook_can_die_inside_a_write(tmp_path):
    code = ("import sys; from ssd_keras.files import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp: tmp.write_bytes(b'x' * 1000)\n")
    died = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.weights.h5")], cwd=REPO_ROOT,
                          env={**os.environ, files.WRITE_FAULT_ENV: "die@1"})
    assert died.returncode == -signal.SIGKILL
    (left,) = tmp_path.iterdir()
    assert files.is_temporary(left.name) and left.stat().st_size == 500


def test_stray_temporary_files_are_removed_when_a_run_opens(tmp_path):
    run = RunFolder(tmp_path).create()
    strays = [run.checkpoints / ".tmp-1a2b-epoch_002.weights.h5", run.path / ".tmp-3c4d-history.csv",
              run.path / "history.csv.tmp"]
    for path in strays:
        path.write_bytes(b"half")
    opened(tmp_path)
    assert not any(path.exists() for path in strays)


def test_prune_keeps_the_newest_and_later_checkpoints(tmp_path):
    run = RunFolder(tmp_path).create()
    for epoch in range(1, 6):
        run.checkpoint(epoch).write_bytes(b"w")
    # epoch 3 just written by a run resumed from 2: 4 and 5 are rewritten next, so kept meanwhile
    assert [p.name for p in run.prune_checkpoints(2, newest=3)] == ["epoch_001.weights.h5"]
    assert [e for e, _ in run.checkpoint_files()] == [2, 3, 4, 5]
    run.prune_checkpoints(1, newest=5)
    assert [e for e, _ in run.checkpoint_files()] == [5]


def test_interrupted_says_how_to_resume():
    err = RunInterrupted(3)
    assert isinstance(err, KeyboardInterrupt) and err.epoch == 3
    assert str(err) == "interrupted after epoch 3; run the same command to resume"


# --------------------------------------------------------------------------------------------
# checkpoints (a tiny Keras model with dropout)


def tiny_model(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dropout(0.5)(keras.layers.Dense(8, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model


def fit(model, epochs, initial_epoch=0):
    import numpy as np

    x = np.linspace(-1, 1, 64, dtype="float32").reshape(16, 4)
    model.fit(x, x[:, :2] ** 2, batch_size=8, epochs=epochs, initial_epoch=initial_epoch, shuffle=False, verbose=0)


def state_of(model):
    import keras

    from ssd_keras.checkpoints import _state_variables

    return [keras.ops.convert_to_numpy(v) for v in _state_variables(model)]


def test_a_checkpoint_restores_weights_optimizer_and_dropout_state_exactly(tmp_path):
    from ssd_keras.checkpoints import restore_state, save_state

    run = RunFolder(tmp_path).create()
    model = tiny_model()
    fit(model, 1)
    rows = [{"epoch": "0", "loss": "0.5"}]
    save_state(model, run.checkpoint(1), 1, rows)
    saved = state_of(model)
    fit(model, 2, initial_epoch=1)

    resumed = tiny_model()
    said = []
    state = restore_state(resumed, run, said.append)
    assert (state.epoch, state.history, state.path, state.finished, said) == (1, rows, run.checkpoint(1), False, [])
    assert all((a == b).all() for a, b in zip(state_of(resumed), saved))
    assert int(resumed.optimizer.iterations.numpy()) == 2
    fit(resumed, 2, initial_epoch=1)  # the same step, the same dropout masks: the same result
    assert all((a == b).all() for a, b in zip(state_of(resumed), state_of(model)))


def test_unreadable_newest_states_are_named_and_passed_over(tmp_path):
    import h5py

    from ssd_keras.checkpoints import restore_state, save_state

    run = RunFolder(tmp_path).create()
    model = tiny_model()
    for epoch in (1, 2, 3):
        fit(model, epoch, initial_epoch=epoch - 1)
        save_state(model, run.checkpoint(epoch), epoch, [{"epoch": str(e)} for e in range(epoch)])
        if epoch == 1:
            first = state_of(model)
    save_state(model, run.final_weights, 3, [{"epoch": str(e)} for e in range(3)])
    with open(run.final_weights, "r+b") as f:  # a kill in the middle of an older version's write
        f.truncate(os.path.getsize(run.final_weights) // 2)
    with open(run.checkpoint(3), "r+b") as f:
        f.truncate(1000)
    with h5py.File(run.checkpoint(2), "r+") as f:  # damage the file's data, not its structure
        f["layers/dense/vars/0"][0, 0] += 1.0

    resumed = tiny_model(seed=1)
    said = []
    state = restore_state(resumed, run, said.append)
    assert state.epoch == 1 and state.path == run.checkpoint(1) and not state.finished
    assert all((a == b).all() for a, b in zip(state_of(resumed), first))
    assert said[0].startswith("checkpoints/epoch_003.weights.h5 is unreadable")
    assert said[1].startswith("final.weights.h5 is unreadable")
    assert said[2].startswith("checkpoints/epoch_002.weights.h5 is unreadable") and "CRC-32" in said[2]
    assert said[3] == "resuming from checkpoints/epoch_001.weights.h5, the newest readable state (epoch 1)"


def test_an_older_versions_checkpoint_resumes_with_its_epoch_from_its_name(tmp_path):
    from ssd_keras.checkpoints import begin_run, restore_state

    run = RunFolder(tmp_path).create()
    model = tiny_model()
    fit(model, 2)
    model.save_weights(run.checkpoint(2))  # what ModelCheckpoint(save_weights_only=True) wrote
    run.write_history([{"epoch": "0", "loss": "2.0"}, {"epoch": "1", "loss": "1.0"}, {"epoch": "2", "loss": "9"}])
    state = restore_state(tiny_model(seed=1), run, print)
    assert state.epoch == 2 and [row["loss"] for row in state.history] == ["2.0", "1.0"]
    said = []
    assert begin_run(tiny_model(seed=1), run, 4, said.append).epoch == 2
    assert said == ["resuming from epoch 2 (of 4)"]
    assert len(run.read_history()) == 2  # the row of the epoch that was not saved is gone
