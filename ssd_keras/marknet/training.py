"""Training MarkNet on a classification CSV, and rebuilding a trained one from its run folder.

Training runs (:func:`train_marknet`, ``python -m ssd_keras marknet train``) write a run folder
(:mod:`ssd_keras.runs`, with the same guarantees as SSD300's: one process at a time, one run, resumed
after a kill, continued with more epochs, every file written whole)::

    config.json                       classes, input shape, backbone, filters: what rebuilds the model
    history.csv                       loss and accuracy (and val_*) per epoch
    loss.png                          the loss curves
    checkpoints/epoch_NNN.weights.h5  weights, optimizer state and epoch after each epoch
    final.weights.h5                  the same after the last epoch

and :func:`load_marknet` rebuilds the model from weights and the ``config.json`` beside them
(:func:`find_config`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras

from .._keras_compat import set_random_seed
from ..checkpoints import begin_run, fit_run
from ..checks import positive_int, positive_number
from ..runs import CONFIG_FILENAME, find_run_config, open_run
from ..weights import load_weights
from .data import ClassificationGenerator
from .model import DEFAULT_FILTERS, MarkNet

__all__ = ["CONFIG_FILENAME", "MarkNetConfig", "SETTINGS", "find_config", "load_marknet", "train_marknet"]

logger = logging.getLogger(__name__)

_REQUIRED_KEYS = ("classes", "input_shape")
"""What a ``config.json`` must hold to rebuild MarkNet (others' JSON files are passed over)."""
SETTINGS = ("csv", "val_csv", "classes", "batch_size", "lr", "image_size", "backbone", "weights", "filters",
            "dropout", "seed")
"""What defines a MarkNet run: a command that changes one of them is refused; ``epochs``, ``workers``
and ``keep_checkpoints`` may change."""


@dataclass
class MarkNetConfig:
    """A MarkNet training run; ``config.json`` in the run folder is this, as JSON (plus
    ``classes`` and ``input_shape``).

    Attributes:
        csv, val_csv: classification CSVs (``image,label``, ``classes.txt`` beside them).
        out: the run folder (created; a run of the same settings there is resumed or continued).
        classes: class names; default ``classes.txt`` beside ``csv``.
        epochs, batch_size: as for ``model.fit``.
        lr: Adam's initial learning rate, decayed to 0 along a cosine over ``epochs`` (a finished
            run continued to more epochs goes on along the cosine of the new ``epochs``, from
            where that one stands at the epoch reached).
        image_size: the input's side (square images).
        backbone, weights, filters, dropout: as for :func:`ssd_keras.marknet.MarkNet`.
        seed: seeds weights, order and augmentation (``None``: not reproducible).
        workers: data loading threads.
        keep_checkpoints: how many of the newest checkpoints are kept.
    """

    csv: str
    out: str
    val_csv: str | None = None
    classes: list[str] | None = None
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    image_size: int = 224
    backbone: str | None = None
    weights: str | None = None
    filters: tuple[int, ...] = DEFAULT_FILTERS
    dropout: float = 0.2
    seed: int | None = None
    workers: int = 1
    keep_checkpoints: int = 3

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "image_size", "workers", "keep_checkpoints"):
            setattr(self, name, positive_int(getattr(self, name), name))
        self.lr = positive_number(self.lr, "lr")
        self.filters = tuple(int(f) for f in self.filters)


def train_marknet(config: MarkNetConfig, verbose: int = 1, overwrite: bool = False,
                  say: Callable[[str], Any] = print) -> tuple[keras.Model, keras.callbacks.History]:
    """Trains MarkNet on a classification CSV into a run folder (module docstring): a new run, or
    the run already in ``config.out`` resumed (after a kill) or continued (to more ``epochs``).

    Args:
        config: the run.
        verbose: Keras ``fit`` verbosity.
        overwrite: replace a run of other settings in ``config.out`` (its contents are removed).
        say: where the run's messages go (resuming, continuing, taking over a lock, ...).

    Returns:
        ``(model, history)``: the trained model and this call's ``fit`` ``History`` (empty when
        the run had already finished).

    Raises:
        ssd_keras.runs.RunFolderBusy: another process runs in the folder.
        ssd_keras.runs.SettingsDiffer: the folder holds a run of other settings (each named).
        ssd_keras.runs.RunInterrupted: Ctrl-C; the message says the last saved epoch.
        OSError: the folder cannot be written, or a write failed (the message names the file).
        ValueError, FileNotFoundError: bad CSVs, class lists or arguments (named in the message).
    """
    size = (config.image_size, config.image_size)
    train_data = ClassificationGenerator(config.csv, config.batch_size, size, config.classes, train=True,
                                         seed=config.seed, workers=config.workers)
    class_names = train_data.class_names
    val_data = (ClassificationGenerator(config.val_csv, config.batch_size, size, class_names, train=False,
                                        workers=config.workers) if config.val_csv else None)
    record = {**asdict(config), "classes": class_names, "input_shape": [*size, 3],
              "filters": list(config.filters)}
    for key in ("csv", "val_csv"):
        record[key] = os.path.abspath(record[key]) if record[key] else None

    with open_run(config.out, record, SETTINGS, overwrite, say) as run:
        if config.seed is not None:
            set_random_seed(config.seed)
        model = MarkNet(len(class_names), (*size, 3), config.backbone, config.weights, config.filters,
                        config.dropout)
        schedule = keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=config.epochs * len(train_data))
        model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        state = begin_run(model, run, config.epochs, say)
        if state is None:
            return model, keras.callbacks.History()
        run.write_config(record)
        train_data.epoch = state.epoch  # the data of epoch N whatever the epoch this process starts at
        history, _ = fit_run(model, run, state, train_data, epochs=config.epochs, keep=config.keep_checkpoints,
                             verbose=verbose, validation_data=val_data)
    logger.info("MarkNet run written to %s", run.path)
    return model, history


def _find_run(weights: str | os.PathLike[str]) -> tuple[dict[str, Any], Path]:
    """``(config, path)`` of the run that wrote ``weights`` (see :func:`find_config`)."""
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"weights file not found: {weights}")
    found = find_run_config(weights, required=_REQUIRED_KEYS)
    if found is None:
        raise FileNotFoundError(f"no {CONFIG_FILENAME} beside {weights}: MarkNet weights are rebuilt from the "
                                f"{CONFIG_FILENAME} that `marknet train` writes in the same run folder")
    return found


def find_config(weights: str | os.PathLike[str]) -> Path:
    """The ``config.json`` of a weights file: in its folder, or the run folder above ``checkpoints/``.

    Found by :func:`ssd_keras.runs.find_run_config` (which also accepts ``<name>.json`` beside
    ``<name>.weights.h5``); a JSON file without ``classes`` and ``input_shape`` is passed over.

    Raises:
        FileNotFoundError: the weights file or its ``config.json`` does not exist.
        ValueError: a candidate ``config.json`` is not valid JSON.
    """
    return _find_run(weights)[1]


def load_marknet(weights: str | os.PathLike[str]) -> tuple[keras.Model, dict[str, Any]]:
    """Rebuilds a trained MarkNet from its weights and the run's ``config.json`` (:func:`find_config`).

    Args:
        weights: ``final.weights.h5`` or a checkpoint of a run folder.

    Returns:
        ``(model, config)``: the model with the weights loaded, and the run's configuration
        (``config["classes"]`` are the class names).

    Raises:
        FileNotFoundError: the weights or ``config.json`` are missing.
        ValueError: ``config.json`` is invalid, or the weights do not fit the model it describes.
    """
    config, path = _find_run(weights)
    try:
        classes = list(config["classes"])
        model = MarkNet(len(classes), tuple(config["input_shape"]), config.get("backbone"), None,
                        config.get("filters", DEFAULT_FILTERS), config.get("dropout", 0.2))
    except TypeError as exc:
        raise ValueError(f"{path} is not a MarkNet run configuration: {exc!r}") from None
    load_weights(model, weights)
    return model, config
