"""The Keras side of run folders (:mod:`ssd_keras.runs`), shared by both trainers: checkpoints
that resume a run exactly, the callback that writes them, and ``fit`` as a resumable run.

A checkpoint (``checkpoints/epoch_NNN.weights.h5``, and ``final.weights.h5`` after the last epoch)
is a Keras ``.weights.h5`` file, so it loads like any weights (:func:`ssd_keras.load_weights`),
holding the model's weights and the optimizer's variables (its step counter and moments), plus a
dataset ``ssd_keras_run_state``: JSON with the number of finished epochs, the history rows so far,
the model's random-generator states (dropout's) and a CRC-32 of all those values. With the data
order and augmentation drawn from ``(seed, epoch, index)`` (:class:`ssd_keras.data.CSVGenerator`),
that is all a run needs to go on as if it had never stopped.

Resuming (:func:`restore_state`) loads the newest checkpoint that reads back whole and matches its
CRC; unreadable ones (truncated, damaged, of an older version) are named and passed over.
Checkpoints of older versions (weights and optimizer, without the state dataset) still resume: the
epoch comes from the file name and the rows from ``history.csv``.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np

from .files import atomic_path
from .plots import plot_history
from .runs import RunFolder, RunInterrupted

__all__ = ["RunState", "save_state", "read_state", "restore_state", "begin_run", "RunCheckpoints", "fit_run",
           "STATE_DATASET"]

STATE_DATASET = "ssd_keras_run_state"
STATE_FORMAT = 1
Say = Callable[[str], Any]


@dataclass
class RunState:
    """Where a run stands: ``epoch`` finished epochs (0: none), their ``history`` rows, the file
    they came from, and whether ``final.weights.h5`` holds them (the run finished there)."""

    epoch: int = 0
    history: list[dict[str, str]] = field(default_factory=list)
    path: Path | None = None
    finished: bool = False


def _extra_variables(model: keras.Model) -> list[Any]:
    """The model's variables that are not weights: the random-generator states of dropout layers."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _state_variables(model: keras.Model) -> list[Any]:
    optimizer = list(model.optimizer.variables) if model.optimizer is not None else []
    return list(model.weights) + optimizer + _extra_variables(model)


def _digest(model: keras.Model) -> int:
    """CRC-32 of the state's values; integers count as int64, whatever the backend's width (the
    optimizer's step is int64 on TensorFlow, int32 on JAX and PyTorch), so a state written on one
    backend checks on another."""
    crc = 0
    for variable in _state_variables(model):
        value = np.asarray(keras.ops.convert_to_numpy(variable))
        if value.dtype.kind in "iu":
            value = value.astype(np.int64)
        crc = zlib.crc32(np.ascontiguousarray(value).tobytes(), crc)
    return crc


def save_state(model: keras.Model, path: str | Path, epoch: int, history: Sequence[dict[str, str]]) -> Path:
    """Writes a checkpoint (module docstring) after ``epoch`` finished epochs, atomically.

    Raises:
        OSError: the write failed (the message names ``path``; the old file, if any, is intact).
    """
    state = {"format": STATE_FORMAT, "epoch": int(epoch), "history": list(history),
             "rng": [keras.ops.convert_to_numpy(v).tolist() for v in _extra_variables(model)],
             "crc32": _digest(model)}
    with atomic_path(path) as tmp:
        model.save_weights(str(tmp))
        with h5py.File(tmp, "r+") as f:
            f.create_dataset(STATE_DATASET, data=json.dumps(state))
    return Path(path)


def read_state(path: str | Path, run: RunFolder | None = None) -> dict[str, Any]:
    """The run state of a checkpoint (without loading its weights): ``epoch``, ``history``, ``rng``,
    ``crc32``. A file of an older version (no state) takes its epoch from its name
    (``epoch_NNN``) or, for ``final.weights.h5``, from the rows of ``run``'s ``history.csv``.

    Raises:
        OSError, ValueError: unreadable, or not a checkpoint.
    """
    path = Path(path)
    with h5py.File(path, "r") as f:
        if STATE_DATASET in f:
            state = json.loads(f[STATE_DATASET][()])
            found = state.get("format") if isinstance(state, dict) else None
            if found != STATE_FORMAT:
                raise ValueError(f"a run state of another format ({found!r}), not {STATE_FORMAT}")
            return state
        if "layers" not in f:
            raise ValueError("not a Keras 3 weights file")
    rows = run.read_history() if run is not None else []
    number = path.name.split(".")[0].removeprefix("epoch_")
    epoch = int(number) if path.name.startswith("epoch_") and number.isdigit() else len(rows)
    if epoch == 0 or epoch > len(rows):
        raise ValueError(f"written by an older version, and {run.history if run else 'history.csv'} does not "
                         f"have its {epoch or 'first'} epoch(s)")
    return {"epoch": epoch, "history": rows[:epoch], "rng": None, "crc32": None}


def _relative(path: Path, run: RunFolder) -> str:
    try:
        return str(path.relative_to(run.path))
    except ValueError:
        return str(path)


def _load(model: keras.Model, path: Path, state: dict[str, Any]) -> None:
    model.load_weights(str(path))
    extra = _extra_variables(model)
    if state.get("rng") is not None and len(state["rng"]) == len(extra):
        for variable, value in zip(extra, state["rng"]):
            variable.assign(np.asarray(value, dtype=variable.dtype))
    if state.get("crc32") is not None and _digest(model) != state["crc32"]:
        raise ValueError("its values do not match the CRC-32 written with them (damaged file?)")


def restore_state(model: keras.Model, run: RunFolder, say: Say = print) -> RunState:
    """Loads the newest readable state of ``run`` into ``model`` (compiled: its optimizer is built
    first, so that its variables load too); says which files were unreadable and which state was
    taken instead. Returns :class:`RunState` (epoch 0 and the model untouched when there is none)."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    files = [path for _, path in run.checkpoint_files()]
    files += [run.final_weights] if run.final_weights.is_file() else []
    found, problems = [], []
    for path in files:
        try:
            found.append((read_state(path, run), path))
        except Exception as err:  # any damage: the file is passed over, saying why
            problems.append(f"{_relative(path, run)} is unreadable ({err})")
    if not found and not problems:
        return RunState()
    final_epoch = next((s["epoch"] for s, p in found if p == run.final_weights), None)
    found.sort(key=lambda item: (item[0]["epoch"], item[1] != run.final_weights), reverse=True)
    snapshot = [keras.ops.convert_to_numpy(v) for v in _state_variables(model)]
    for state, path in found:
        try:
            _load(model, path, state)
        except Exception as err:  # a partial load is undone below
            problems.append(f"{_relative(path, run)} is unreadable ({err})")
            for variable, value in zip(_state_variables(model), snapshot):
                variable.assign(value)
            continue
        for problem in problems:
            say(problem)
        if problems:
            say(f"resuming from {_relative(path, run)}, the newest readable state (epoch {state['epoch']})")
        return RunState(state["epoch"], list(state["history"]), path, final_epoch == state["epoch"])
    for problem in problems:
        say(problem)
    say(f"no readable checkpoint in {run.path}: the run starts from its first epoch")
    return RunState()


def begin_run(model: keras.Model, run: RunFolder, epochs: int, say: Say = print) -> RunState | None:
    """Restores the run's state (:func:`restore_state`) and says what happens next: ``resuming from
    epoch N (of M)`` (a run that stopped), ``continuing from epoch N to M`` (a finished run given more
    epochs), or ``already finished at epoch N`` (then ``final.weights.h5`` is made sure of and None
    returned: nothing to train). ``history.csv`` is rewritten from the state."""
    state = restore_state(model, run, say)
    if run.history.is_file() or state.history:
        run.write_history(state.history)
    if state.epoch >= epochs:
        fewer = f" (--epochs {epochs} asks for fewer)" if state.epoch > epochs else ""
        say(f"already finished at epoch {state.epoch}{fewer}")
        if not state.finished:
            save_state(model, run.final_weights, state.epoch, state.history)
        return None
    if state.finished:
        say(f"continuing from epoch {state.epoch} to {epochs}")
    elif state.epoch:
        say(f"resuming from epoch {state.epoch} (of {epochs})")
    return state


class RunCheckpoints(keras.callbacks.Callback):
    """After every finished epoch: the checkpoint (:func:`save_state`), then ``history.csv`` and
    ``loss.png``, then the checkpoints older than the ``keep`` newest are removed. An epoch whose
    loss is not finite (training stopped on a NaN) is not saved."""

    def __init__(self, run: RunFolder, state: RunState, keep: int = 3, ylabel: str = "loss"):
        super().__init__()
        self.run, self.keep, self.ylabel = run, int(keep), ylabel
        self.epoch = state.epoch
        self.history = list(state.history)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is None or not math.isfinite(float(loss)):
            return
        row = {"epoch": str(epoch), **{key: repr(float(value)) for key, value in logs.items()}}
        history = self.history[:epoch] + [row]
        path = self.run.checkpoint(epoch + 1)
        try:
            save_state(self.model, path, epoch + 1, history)
        except OSError as err:
            last = (f"the last good checkpoint, {self.run.checkpoint(self.epoch)}, is intact" if self.epoch
                    else "no epoch was saved")
            raise OSError(err.errno, f"{err.strerror or err} ({last}; run the same command to resume once "
                                     f"there is room)") from err
        self.epoch, self.history = epoch + 1, history
        self.run.write_history(history)
        self.run.write_plot(plot_history(history, None, ylabel=self.ylabel))
        self.run.prune_checkpoints(self.keep, self.epoch)


def fit_run(model: keras.Model, run: RunFolder, state: RunState, data: Any, *, epochs: int, keep: int = 3,
            verbose: int = 1, callbacks: Sequence[keras.callbacks.Callback] = (), validation_data: Any = None,
            ylabel: str = "loss") -> tuple[keras.callbacks.History, RunCheckpoints]:
    """``model.fit`` from ``state.epoch`` to ``epochs`` with :class:`RunCheckpoints` last among the
    ``callbacks``; writes ``final.weights.h5`` when the last epoch is saved. The data must shuffle
    themselves (Keras' shuffle is off) and start at ``state.epoch`` already (a
    :class:`ssd_keras.data.generator.SeededBatches`' ``epoch``).

    Raises:
        RunInterrupted: Ctrl-C (``KeyboardInterrupt``); its message says the last saved epoch.
    """
    checkpoints = RunCheckpoints(run, state, keep, ylabel)
    try:
        # shuffle=False: the data shuffle themselves, by (seed, epoch); Keras' own shuffle of the batches
        # draws from Python's global random state, which a resumed process does not have
        history = model.fit(data, validation_data=validation_data, epochs=epochs, initial_epoch=state.epoch,
                            shuffle=False, callbacks=[*callbacks, checkpoints], verbose=verbose)
        if checkpoints.epoch == epochs:
            save_state(model, run.final_weights, checkpoints.epoch, checkpoints.history)
    except KeyboardInterrupt:
        raise RunInterrupted(checkpoints.epoch) from None
    return history, checkpoints
