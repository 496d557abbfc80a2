"""The classification CSV of MarkNet: read and validate it, and batches for ``model.fit``.

The format (header required; other columns are ignored)::

    image,label
    cups/0001.jpg,2
    plates/0002.png,0

``image`` is relative to the CSV file's own folder unless absolute; ``label`` is a 0-based
index into the class list, by default ``classes.txt`` beside the CSV (one name per line, no
background), as :func:`ssd_keras.data.csv_tools.folders_to_csv` writes them.

:func:`read_classification_csv` validates the whole file in one pass, every image by a full
decode, and raises one :class:`~ssd_keras.data.classes.AnnotationError` (a ``ValueError``)
naming the CSV and listing every offending line. :class:`ClassificationGenerator` then yields
``(x, y)`` batches: images loaded strictly (:func:`ssd_keras.image.load_image`), resized,
augmented when training (small shifts, rotations and zooms with ``cv2.warpAffine``, colour jitter,
flips) with a random generator seeded by ``(seed, epoch, index)``, and scaled by
:func:`ssd_keras.marknet.marknet_preprocess`.

:mod:`ssd_keras.data.classification` re-exports these names under their old home.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..data.augment import color_jitter
from ..data.classes import AnnotationError, read_class_list
from ..data.csv_tools import CLASSES_FILENAME, CLASSIFICATION_COLUMNS
from ..data.generator import SeededBatches
from ..image import load_image, probe_images, resize_image
from .model import marknet_preprocess

__all__ = [
    "ClassificationAugmentation",
    "ClassificationGenerator",
    "augment_classification",
    "read_classification_csv",
]

_INTEGER = re.compile(r"[+-]?\d+")
_WHAT = "classification CSV"  # how AnnotationError names the file


# --------------------------------------------------------------------------------------------
# reading


def _class_names_for(csv_path: str, classes: Sequence[str] | str | os.PathLike[str] | None) -> list[str]:
    """The class list of a classification CSV: ``classes``, else ``classes.txt`` beside the CSV.

    When both exist they must agree, since the CSV's labels index ``classes.txt``.
    """
    beside = os.path.join(os.path.dirname(os.path.abspath(csv_path)), CLASSES_FILENAME)
    if classes is None:
        if not os.path.isfile(beside):
            raise FileNotFoundError(f"no {CLASSES_FILENAME} beside the classification CSV {csv_path} "
                                    f"(its labels index that class list): write one, or pass the classes")
        return read_class_list(beside)
    names = read_class_list(classes)
    if os.path.isfile(beside):
        own = read_class_list(beside)
        if own != names:
            raise ValueError(f"the labels of {csv_path} index its {beside} ({', '.join(own)}), but the "
                             f"classes given are {', '.join(names)}: the labels would change meaning")
    return names


def _check_header(csv_path: str, header: list[str]) -> tuple[int, int]:
    """The indices of the ``image`` and ``label`` columns; one AnnotationError for a bad header."""
    expected = f"expected {','.join(CLASSIFICATION_COLUMNS)}"
    missing = [column for column in CLASSIFICATION_COLUMNS if column not in header]
    duplicated = sorted({column for column in header if column and header.count(column) > 1})
    if not any(header):
        problem = f"no header ({expected})"
    elif missing:
        problem = (f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                   f"(the header is {','.join(header)!r}, {expected})")
    elif duplicated:
        problem = f"duplicate column(s) {', '.join(duplicated)}"
    else:
        image_column, label_column = (header.index(column) for column in CLASSIFICATION_COLUMNS)
        return image_column, label_column
    raise AnnotationError(csv_path, [f"{os.path.basename(csv_path)} line 1: {problem}"], _WHAT)


def _numbered_rows(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """``(line, row)`` for each non-blank row left in a ``csv.reader``; ``line`` is where the row starts
    (a quoted field may span lines)."""
    previous_end = reader.line_num
    for row in reader:
        line, previous_end = previous_end + 1, reader.line_num
        if row:
            yield line, row


def _row_errors(image: str, label: str, num_classes: int) -> list[str]:
    """What is wrong with one row's (stripped) ``image`` and ``label`` cells."""
    errors = []
    if not image:
        errors.append("empty image")
    if not _INTEGER.fullmatch(label):
        errors.append(f"label must be an integer class index, got {label!r}")
    elif not 0 <= int(label) < num_classes:
        errors.append(f"label {int(label)} out of range: {num_classes} classes (valid 0..{num_classes - 1})")
    return errors


def _read_rows(csv_path: str, num_classes: int) -> tuple[list[tuple[int, str, str, int]], list[tuple[int, str]]]:
    """Parses the CSV: ``(line, shown path, absolute path, label)`` per good row, and the row errors."""
    base_dir = os.path.dirname(os.path.abspath(csv_path))
    rows: list[tuple[int, str, str, int]] = []
    errors: list[tuple[int, str]] = []
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file)
            header = [column.strip() for column in next(reader, [])]
            image_column, label_column = _check_header(csv_path, header)
            for line, row in _numbered_rows(reader):
                if len(row) != len(header):
                    errors.append((line, f"expected {len(header)} fields, got {len(row)}"))
                    continue
                shown, text = row[image_column].strip(), row[label_column].strip()
                problems = _row_errors(shown, text, num_classes)
                errors.extend((line, problem) for problem in problems)
                if not problems:
                    rows.append((line, shown, os.path.normpath(os.path.join(base_dir, shown)), int(text)))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{csv_path} is not a UTF-8 text file: {exc}") from None
    except csv.Error as exc:
        raise AnnotationError(csv_path, [f"{os.path.basename(csv_path)} line {reader.line_num}: malformed CSV "
                                         f"({exc})"], _WHAT) from None
    return rows, errors


def read_classification_csv(
    csv_path: str | os.PathLike[str],
    classes: Sequence[str] | str | os.PathLike[str] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Reads and validates a classification CSV (``image,label``).

    Every distinct image is opened and fully decoded once, in threads, as
    :func:`ssd_keras.data.read_annotations` does, so truncated files are found here rather than
    in the middle of training.

    Args:
        csv_path: The CSV (format in the module docstring).
        classes: The class names (a list, or a class list file, see
            :func:`ssd_keras.data.read_class_list`); default ``classes.txt`` beside the CSV. When
            both are there they must be the same list.

    Returns:
        ``(records, class_names)``: one record per row, in file order,
        ``{"image_path": str (absolute), "label": int (0-based), "width": int, "height": int}``;
        the class names (label ``i`` is ``class_names[i]``).

    Raises:
        FileNotFoundError: ``csv_path`` or the class list does not exist.
        AnnotationError: (a ``ValueError``) naming the CSV and listing every offending line (the
            header being line 1; the first 20 and a count of the rest): wrong field count, empty
            image, missing or unreadable image, non-integer or out-of-range label. A bad header
            (none, missing columns, duplicates) or malformed quoting is reported alone.
        ValueError: The CSV lists no image, is not UTF-8, or the class lists disagree.
    """
    csv_path = os.fspath(csv_path)
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"classification CSV not found: {csv_path}")
    class_names = _class_names_for(csv_path, classes)
    rows, errors = _read_rows(csv_path, len(class_names))
    keys = list(dict.fromkeys(key for _, _, key, _ in rows))
    sizes = dict(zip(keys, probe_images(keys)))
    reported: set[str] = set()
    records = []
    for line, shown, key, label in rows:
        size = sizes[key]
        if isinstance(size, str):
            if key not in reported:  # once per image, at its first line
                reported.add(key)
                reason = "image not found" if not os.path.exists(key) else f"unreadable image ({size})"
                errors.append((line, f"{reason}: {shown}"))
            continue
        records.append({"image_path": key, "label": label, "width": int(size[0]), "height": int(size[1])})
    if errors:
        name = os.path.basename(csv_path)
        errors.sort(key=lambda error: error[0])
        raise AnnotationError(csv_path, [f"{name} line {line}: {message}" for line, message in errors], _WHAT)
    if not records:
        raise ValueError(f"{csv_path}: the classification CSV lists no images")
    return records, class_names


# --------------------------------------------------------------------------------------------
# augmentation


@dataclass(frozen=True)
class ClassificationAugmentation:
    """The training augmentations of :class:`ClassificationGenerator` and how strong they are.

    A value of 0 switches that step off. Geometric steps are one ``cv2.warpAffine`` (borders
    reflected): a rotation by up to ``max_rotation`` degrees either way and a zoom from
    ``scale_range`` about the centre, then a shift by up to ``max_shift`` of the width and height.
    Colour jitter is :func:`ssd_keras.data.augment.color_jitter` (factors ``1 +- var``).

    Attributes:
        hflip_prob, vflip_prob: flip probabilities (mirrored logos with text are another
            picture: set ``hflip_prob=0`` for them).
        max_shift: largest shift, as a fraction of the image side.
        max_rotation: largest rotation, degrees.
        scale_range: zoom factors (1 keeps the size).
        saturation_var, brightness_var, contrast_var: colour jitter ranges.
    """

    hflip_prob: float = 0.5
    vflip_prob: float = 0.0
    max_shift: float = 0.1
    max_rotation: float = 15.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    saturation_var: float = 0.3
    brightness_var: float = 0.3
    contrast_var: float = 0.3

    def __post_init__(self) -> None:
        for name in ("hflip_prob", "vflip_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")
        for name in ("saturation_var", "brightness_var", "contrast_var"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.max_shift < 1.0 or not 0.0 <= self.max_rotation <= 180.0:
            raise ValueError(f"max_shift must be in [0, 1) and max_rotation in [0, 180], got "
                             f"{self.max_shift} and {self.max_rotation}")
        low, high = self.scale_range
        if not 0.0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")


_DEFAULT_AUGMENTATION = ClassificationAugmentation()


def augment_classification(
    image: np.ndarray, rng: np.random.Generator, size: tuple[int, int],
    config: ClassificationAugmentation | None = _DEFAULT_AUGMENTATION,
) -> np.ndarray:
    """One training image through the augmentations (or, with ``config=None``, resize only).

    Args:
        image: ``(H, W, 3)`` uint8 RGB; not modified.
        rng: random generator (seed it per example for reproducible runs).
        size: ``(height, width)`` of the output.
        config: the augmentations; ``None`` for validation and inference.

    Returns:
        ``(height, width, 3)`` float32 RGB in [0, 255].
    """
    height, width = size
    image = resize_image(image, (height, width))
    if config is None:
        return image.astype(np.float32)
    angle = rng.uniform(-config.max_rotation, config.max_rotation)
    scale = rng.uniform(*config.scale_range)
    shift = rng.uniform(-config.max_shift, config.max_shift, 2) * (width, height)
    if angle or scale != 1.0 or shift.any():
        matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), angle, scale)
        matrix[:, 2] += shift
        image = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)
    image = color_jitter(image.astype(np.float32), rng, config.saturation_var, config.brightness_var,
                         config.contrast_var)
    if config.hflip_prob and rng.random() < config.hflip_prob:
        image = image[:, ::-1]
    if config.vflip_prob and rng.random() < config.vflip_prob:
        image = image[::-1]
    return image


# --------------------------------------------------------------------------------------------
# batches


class ClassificationGenerator(SeededBatches):
    """Batches ``(x, y)`` for ``model.fit`` from a classification CSV.

    Args:
        csv_path: the classification CSV (``image,label``); validated once, up front (see
            :func:`read_classification_csv`).
        batch_size: examples per batch (the last batch of an epoch may be smaller).
        image_size: ``(height, width)`` of the network input.
        classes: class names (list or class list file); default ``classes.txt`` beside the CSV.
        train: augment (and shuffle); ``False`` gives plain resizing and the CSV's order.
        shuffle: reshuffle every epoch (training only).
        seed: makes augmentation and order reproducible; default: a fresh random seed.
        augment: a :class:`ClassificationAugmentation` (default: its defaults); training only.
        **pydataset_kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size`` of
            ``keras.utils.PyDataset``.

    Each batch: ``x`` ``(B, height, width, 3)`` float32 scaled by
    :func:`ssd_keras.marknet.marknet_preprocess` (RGB in [-1, 1]), ``y`` ``(B,)`` int32 labels
    (for ``sparse_categorical_crossentropy``). Example ``i`` of epoch ``e`` is augmented with
    ``numpy.random.default_rng([seed, e, i])``, so a seeded run gives the same batches whatever
    the number of workers.
    """

    def __init__(self, csv_path: str | os.PathLike[str], batch_size: int = 32,
                 image_size: tuple[int, int] = (224, 224),
                 classes: Sequence[str] | str | os.PathLike[str] | None = None, train: bool = True,
                 shuffle: bool = True, seed: int | None = None,
                 augment: ClassificationAugmentation | None = None, **pydataset_kwargs: Any) -> None:
        super().__init__(**pydataset_kwargs)
        records, self.class_names = read_classification_csv(csv_path, classes)
        self._setup(records, batch_size, train, shuffle, seed)
        self.labels = np.array([record["label"] for record in self.records], dtype=np.int32)
        self.csv_path = os.fspath(csv_path)
        self.image_size = tuple(int(v) for v in image_size)
        self.augmentation = (augment or ClassificationAugmentation()) if self.train else None

    def load_example(self, index: int, epoch: int = 0) -> tuple[np.ndarray, int]:
        """Example ``index`` of epoch ``epoch``: its image ``(height, width, 3)`` float32 RGB in
        [0, 255] (augmented when training, not yet preprocessed) and its label."""
        image = load_image(self.records[index]["image_path"])
        rng = np.random.default_rng([self.seed, epoch, index])
        return augment_classification(image, rng, self.image_size, self.augmentation), int(self.labels[index])

    def load_batch(self, batch: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``batch`` of epoch ``epoch``: ``(x, y)`` as described in the class."""
        indices = self.batch_indices(batch, epoch)
        images = np.stack([self.load_example(int(i), epoch)[0] for i in indices])
        return marknet_preprocess(images), self.labels[indices]
