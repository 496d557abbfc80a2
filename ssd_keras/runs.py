"""Training-run folders, shared by both trainers (SSD300's and MarkNet's).

A run folder holds one run::

    run.lock                     who runs it now (host and PID), while a process does
    config.json                  the run's settings: everything it takes to rebuild the model and data
    history.csv                  one row per finished epoch
    loss.png                     the loss curves
    checkpoints/epoch_NNN.weights.h5   weights, optimizer state, epoch and history after an epoch
    final.weights.h5             the same after the last epoch

What a run folder guarantees (:func:`open_run`; the Keras side is :mod:`ssd_keras.checkpoints`):

- one process at a time: ``run.lock`` is held with an OS file lock (``flock``) for the whole run,
  so a second process is refused (:class:`RunFolderBusy`) and the lock of a dead process is
  released by the system and taken over;
- one run: a command whose settings (:func:`differing_settings`) differ from ``config.json`` is
  refused (:class:`SettingsDiffer`) unless asked to overwrite, which empties the folder first;
- every file is written whole or not at all (:mod:`ssd_keras.files`), so a kill at any instant
  leaves a run that the same command resumes.

Weights are rebuilt into a model from the configuration found beside them
(:func:`find_run_config`): ``config.json`` in the weights' folder (or in the run folder above
``checkpoints/``), or ``<name>.json`` beside ``<name>.weights.h5`` (how the embedded demo model
ships). This module imports no TensorFlow.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import json
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import atomic_open, atomic_path, is_temporary

__all__ = ["CONFIG_FILENAME", "HISTORY_FILENAME", "CHECKPOINTS_DIR", "FINAL_WEIGHTS", "LOCK_FILENAME",
           "LOSS_PLOT", "RunFolder", "RunLock", "RunFolderBusy", "RunFolderError", "SettingsDiffer",
           "RunInterrupted", "open_run", "differing_settings", "find_run_config", "read_run_config",
           "write_json_atomically"]

CONFIG_FILENAME = "config.json"
HISTORY_FILENAME = "history.csv"
CHECKPOINTS_DIR = "checkpoints"
FINAL_WEIGHTS = "final.weights.h5"
LOCK_FILENAME = "run.lock"
LOSS_PLOT = "loss.png"
CHECKPOINT_PATTERN = "epoch_{epoch:03d}.weights.h5"  # 1-based: the number of finished epochs
_CHECKPOINT_NAME = re.compile(r"^epoch_(\d+)\.weights\.h5$")
_OLD_BACKUP_DIR = "backup"  # Keras BackupAndRestore's folder, written by older versions
_WORKER_DIR = re.compile(r"^(chief|worker|evaluator|ps)\d*$")  # a multi-worker run's other folders
_WEIGHT_SUFFIXES = (".weights.h5", ".hdf5", ".h5", ".keras")


class RunFolderBusy(RuntimeError):
    """Another process runs in this run folder (it holds ``run.lock``)."""


class RunFolderError(OSError):
    """The run folder cannot be created or written (read-only, full disk, not a folder), or is not
    a run folder."""


class SettingsDiffer(ValueError):
    """The command's settings differ from those of the run in the folder.

    Attributes:
        differences: ``[(setting, value in the folder, value now)]``.
    """

    def __init__(self, folder: Path, differences: Sequence[tuple[str, Any, Any]]):
        self.differences = list(differences)
        lines = [f"run folder {folder} holds a run with other settings:"]
        lines += [f"  {key}: {json.dumps(old)} in the folder, {json.dumps(new)} now" for key, old, new in differences]
        lines.append("  resume or continue it with its own settings, choose another run folder, or pass "
                     "--overwrite (overwrite=True) to replace it")
        super().__init__("\n".join(lines))


class RunInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C); ``epoch`` epochs are finished and saved."""

    def __init__(self, epoch: int):
        self.epoch = epoch
        super().__init__(f"interrupted after epoch {epoch}; run the same command to resume")

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder (nothing is created until asked)."""

    path: Path

    def __init__(self, path: str | os.PathLike[str]):
        object.__setattr__(self, "path", Path(path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILENAME

    @property
    def history(self) -> Path:
        return self.path / HISTORY_FILENAME

    @property
    def loss_plot(self) -> Path:
        return self.path / LOSS_PLOT

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def final_weights(self) -> Path:
        return self.path / FINAL_WEIGHTS

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILENAME

    @property
    def checkpoint_template(self) -> str:
        """The checkpoint path with ``{epoch:03d}`` left to fill (Keras ``ModelCheckpoint``'s form)."""
        return str(self.checkpoints / CHECKPOINT_PATTERN)

    def checkpoint(self, epoch: int) -> Path:
        """The checkpoint after ``epoch`` finished epochs (1-based)."""
        return self.checkpoints / CHECKPOINT_PATTERN.format(epoch=epoch)

    def checkpoint_files(self) -> list[tuple[int, Path]]:
        """``[(epoch, path)]`` of the checkpoints on disk, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        found = []
        for path in self.checkpoints.iterdir():
            match = _CHECKPOINT_NAME.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def create(self) -> RunFolder:
        """Creates the folder and its ``checkpoints/``; returns self."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return self

    def read_config(self) -> dict[str, Any] | None:
        """``config.json``, or None when there is none."""
        return read_run_config(self.config) if self.config.is_file() else None

    def write_config(self, record: dict[str, Any]) -> Path:
        """Writes ``config.json`` (atomically: a kill leaves the old file or the new one)."""
        return write_json_atomically(self.config, record)

    def read_history(self) -> list[dict[str, str]]:
        """The rows of ``history.csv`` (none when it is missing)."""
        if not self.history.is_file():
            return []
        with open(self.history, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def write_history(self, rows: Sequence[dict[str, str]]) -> Path:
        """Writes ``history.csv`` whole: an ``epoch`` column, then every other key, sorted."""
        columns = ["epoch"] + sorted({key for row in rows for key in row} - {"epoch"})
        with atomic_open(self.history, newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
        return self.history

    def write_plot(self, figure: Any) -> Path:
        """Writes a matplotlib figure as ``loss.png`` (atomically)."""
        with atomic_path(self.loss_plot) as tmp:
            figure.savefig(tmp, dpi=100, format="png")
        return self.loss_plot

    def prune_checkpoints(self, keep: int, newest: int) -> list[Path]:
        """Removes the checkpoints older than the ``keep`` newest up to epoch ``newest`` (the one just
        written); later ones (left by a run resumed from an earlier epoch) are rewritten in turn, so
        kept. Returns the removed paths."""
        up_to = [path for epoch, path in self.checkpoint_files() if epoch <= newest]
        removed = up_to[:-keep] if keep > 0 else []
        for path in removed:
            path.unlink(missing_ok=True)
        return removed

    def remove_temporaries(self) -> list[Path]:
        """Removes the temporary files that killed writes left (the folder's lock must be held)."""
        removed = []
        for folder in (self.path, self.checkpoints):
            if folder.is_dir():
                for path in folder.iterdir():
                    if is_temporary(path.name) and path.is_file():
                        path.unlink(missing_ok=True)
                        removed.append(path)
        return removed

    def contents(self) -> list[Path]:
        """What the folder holds, apart from its lock file."""
        if not self.path.is_dir():
            return []
        return sorted(path for path in self.path.iterdir() if path.name != LOCK_FILENAME)

    def check_writable(self) -> None:
        """Writes, flushes and removes a small file.

        Raises:
            RunFolderError: the folder is read-only or its disk is full (the message names it).
        """
        probe = self.path / f".write-test-{os.getpid()}"
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            raise RunFolderError(err.errno, f"cannot write to the run folder {self.path}: "
                                            f"{err.strerror or err}") from err
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()


def _host_and_pid(text: str) -> tuple[str, int] | None:
    try:
        holder = json.loads(text)
        return str(holder["host"]), int(holder["pid"])
    except (ValueError, KeyError, TypeError):
        return None


class RunLock:
    """The lock of a run folder: ``run.lock``, held with ``fcntl.flock`` by an open file.

    The lock belongs to the open file, so the system releases it when its process dies, however it
    dies; the file's content (host and PID of the holder) then says whose lock was taken over. A
    clean release removes the file.
    """

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILENAME
        self._handle: int | None = None

    def acquire(self) -> str | None:
        """Takes the lock; returns a message when it takes over a dead process's lock.

        Raises:
            RunFolderBusy: another process holds it (the message names its PID and host).
            RunFolderError: the lock file cannot be written.
        """
        for _ in range(100):
            try:
                handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise RunFolderError(err.errno, f"cannot write to the run folder {self.folder}: "
                                                f"{err.strerror or err}") from err
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _host_and_pid(os.pread(handle, 4096, 0).decode("utf-8", "replace"))
                os.close(handle)
                who = f"PID {holder[1]} on {holder[0]}" if holder else "another process"
                raise RunFolderBusy(f"run folder {self.folder} is in use by {who}") from None
            # the holder before us may have removed the file between our open and our lock
            try:
                same = os.path.samestat(os.fstat(handle), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(handle)
                continue
            try:
                previous = os.pread(handle, 4096, 0).decode("utf-8", "replace")
                me = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}) + "\n"
                os.ftruncate(handle, 0)
                os.pwrite(handle, me.encode(), 0)
                os.fsync(handle)
            except OSError as err:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
                os.close(handle)
                raise RunFolderError(err.errno, f"cannot write to the run folder {self.folder}: "
                                                f"{err.strerror or err}") from err
            self._handle = handle
            if not previous.strip():
                return None
            holder = _host_and_pid(previous)
            who = f"PID {holder[1]} on {holder[0]}" if holder else "a process"
            return f"taking over the run folder {self.folder} from {who}, which is no longer running"
        raise RunFolderError(errno.EAGAIN, f"cannot lock the run folder {self.folder}: its lock file keeps changing")

    def release(self) -> None:
        """Removes the lock file and releases the lock (nothing when not held)."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(handle), os.stat(self.path)):
                    os.unlink(self.path)
        finally:
            os.close(handle)  # releases the flock

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def differing_settings(old: dict[str, Any], new: dict[str, Any], settings: Iterable[str]) -> list[tuple[str, Any, Any]]:
    """``[(setting, old value, new value)]`` for the ``settings`` keys whose values differ (compared as
    JSON, so tuples equal lists); a key that ``old`` lacks (an older version's folder) is not compared."""
    normal = json.loads(json.dumps({key: new.get(key) for key in settings}))
    return [(key, old[key], normal[key]) for key in settings if key in old and old[key] != normal[key]]


def _describe(paths: Iterable[Path]) -> str:
    return ", ".join(f"{path.name}/" if path.is_dir() else path.name for path in paths) or "nothing"


def _clear(run: RunFolder) -> str:
    """Removes the folder's contents (not its lock); says what they were."""
    removed = run.contents()
    described = _describe(removed)
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return described


def _foreign(run: RunFolder) -> list[Path]:
    """What the folder holds that no run of ours writes (it is someone's folder, not a run folder)."""
    ours = {CONFIG_FILENAME, HISTORY_FILENAME, LOSS_PLOT, FINAL_WEIGHTS, _OLD_BACKUP_DIR}
    return [path for path in run.contents() if not (
        path.name in ours or is_temporary(path.name) or path.name.startswith(".write-test-")
        or (path.name == CHECKPOINTS_DIR and path.is_dir() and not run.checkpoint_files())
        or (path.is_dir() and _WORKER_DIR.match(path.name)))]


@contextlib.contextmanager
def open_run(folder: str | os.PathLike[str], record: dict[str, Any], settings: Sequence[str],
             overwrite: bool = False, say: Callable[[str], Any] = print) -> Iterator[RunFolder]:
    """Opens a run folder for one process's run; the lock is held until the block ends.

    In this order: creates the folder; takes its lock (:class:`RunLock`); checks that a small file
    can be written; compares the ``settings`` keys of ``record`` (the command's ``config.json``) with
    the folder's ``config.json`` (:func:`differing_settings`); removes temporary files of killed
    writes (and an older version's ``backup/``). With ``overwrite``, the folder's contents are
    removed first (and ``say`` lists them). ``config.json`` itself is left to the caller to write.

    Raises:
        RunFolderBusy: another process runs in the folder.
        SettingsDiffer: the settings differ and ``overwrite`` is false.
        RunFolderError: the folder cannot be created or written, or it holds files but no run.
    """
    run = RunFolder(folder)
    try:
        run.path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunFolderError(err.errno, f"cannot create the run folder {run.path}: {err.strerror or err}") from err
    lock = RunLock(run.path)
    taken_over = lock.acquire()
    try:
        if taken_over:
            say(taken_over)
        run.check_writable()
        try:
            old = run.read_config()
        except ValueError as err:
            if not overwrite:
                raise ValueError(f"{err} (--overwrite replaces the run in {run.path})") from None
            old = {}  # a damaged run is still a run
        if overwrite and run.contents():
            if old is None and _foreign(run):
                raise RunFolderError(errno.EEXIST, f"{run.path} holds files but no {CONFIG_FILENAME}: it is not a "
                                                   f"training run folder, and --overwrite removes only runs")
            say(f"--overwrite: removing the earlier run in {run.path}: {_clear(run)}")
        elif old is not None:
            differences = differing_settings(old, record, settings)
            if differences:
                raise SettingsDiffer(run.path, differences)
        elif _foreign(run):
            raise RunFolderError(errno.EEXIST, f"{run.path} holds files but no {CONFIG_FILENAME} "
                                               f"({_describe(_foreign(run)[:5])}): it is not a "
                                               f"training run folder; choose a new or empty folder")
        run.remove_temporaries()
        backup = run.path / _OLD_BACKUP_DIR
        if backup.is_dir():
            shutil.rmtree(backup)
            say(f"removed {backup} (an older version's resume state; checkpoints hold it now)")
        run.create()
        yield run
    finally:
        lock.release()


def write_json_atomically(path: str | os.PathLike[str], value: Any) -> Path:
    """Writes ``value`` as indented JSON, whole or not at all (:func:`ssd_keras.files.atomic_open`)."""
    with atomic_open(path) as f:
        f.write(json.dumps(value, indent=2) + "\n")
    return Path(path)


def _stem(weights: Path) -> str:
    name = weights.name
    for suffix in _WEIGHT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return weights.stem


def _candidates(weights: Path) -> Iterable[Path]:
    yield weights.with_name(_stem(weights) + ".json")
    yield weights.parent / CONFIG_FILENAME
    if weights.parent.name == CHECKPOINTS_DIR:
        yield weights.parent.parent / CONFIG_FILENAME


def read_run_config(path: str | os.PathLike[str], required: Iterable[str] = ()) -> dict[str, Any]:
    """A run's configuration, checked to hold the ``required`` keys.

    Raises:
        ValueError: not JSON, not an object, or a required key is missing (the message names it).
    """
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a run configuration (JSON): {err}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a run configuration: expected a JSON object")
    missing = [key for key in required if key not in config]
    if missing:
        raise ValueError(f"{path} is not a run configuration of this model: missing {', '.join(missing)}")
    return config


def find_run_config(weights: str | os.PathLike[str],
                    required: Iterable[str] = ("classes",)) -> tuple[dict[str, Any], Path] | None:
    """The configuration of the run that wrote ``weights``, if there is one.

    Looks, in this order, for ``<name>.json`` beside ``<name>.weights.h5``, ``config.json`` beside
    the weights, and ``config.json`` of the run folder when the weights are in ``checkpoints/``.
    A JSON file that lacks the ``required`` keys is not the weights' configuration (it may be
    another tool's file) and is passed over.

    Returns:
        ``(config, path)``, or None when no candidate fits.

    Raises:
        ValueError: a candidate is not valid JSON.
    """
    required = tuple(required)
    for candidate in _candidates(Path(weights)):
        if candidate.is_file():
            config = read_run_config(candidate)
            if all(key in config for key in required):
                return config, candidate
    return None
