"""Training-run folders, shared by both trainers (SSD300's and MarkNet's).

A run folder holds::

    config.json                  everything it takes to rebuild the model (classes, input shape, ...)
    history.csv                  one row per finished epoch
    checkpoints/epoch_NNN.weights.h5
    final.weights.h5

Weights are rebuilt into a model from the configuration found beside them
(:func:`find_run_config`): ``config.json`` in the weights' folder (or in the run folder above
``checkpoints/``), or ``<name>.json`` beside ``<name>.weights.h5`` (how the embedded demo model
ships). This module imports no TensorFlow.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .files import atomic_open

__all__ = ["CONFIG_FILENAME", "HISTORY_FILENAME", "CHECKPOINTS_DIR", "FINAL_WEIGHTS", "RunFolder",
           "find_run_config", "read_run_config", "write_json_atomically"]

CONFIG_FILENAME = "config.json"
HISTORY_FILENAME = "history.csv"
CHECKPOINTS_DIR = "checkpoints"
FINAL_WEIGHTS = "final.weights.h5"
CHECKPOINT_PATTERN = "epoch_{epoch:03d}.weights.h5"  # Keras ModelCheckpoint's formatting, 1-based
_WEIGHT_SUFFIXES = (".weights.h5", ".hdf5", ".h5", ".keras")


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
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def final_weights(self) -> Path:
        return self.path / FINAL_WEIGHTS

    @property
    def checkpoint_template(self) -> str:
        """The checkpoint path with ``{epoch:03d}`` left to fill (for ``ModelCheckpoint``)."""
        return str(self.checkpoints / CHECKPOINT_PATTERN)

    def create(self) -> RunFolder:
        """Creates the folder and its ``checkpoints/``; returns self."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return self

    def write_config(self, record: dict[str, Any]) -> Path:
        """Writes ``config.json`` (atomically: a kill leaves the old file or the new one)."""
        return write_json_atomically(self.config, record)


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
