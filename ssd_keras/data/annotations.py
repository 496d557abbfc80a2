"""The detection annotation CSV: read and validate it, write it, turn records into SSD targets.

The format (header required; one row per box, in pixel coordinates)::

    image_path,xmin,ymin,xmax,ymax,class_name[,difficult]
    images/000001.jpg,48,240,195,371,dog,0
    images/000001.jpg,8,12,352,498,person,1
    images/000002.jpg,,,,,

``image_path`` is relative to the CSV file's own folder unless absolute; a row whose box fields
(the four coordinates and ``class_name``) are all empty lists an image without objects; the
optional ``difficult`` column holds ``0``/``1``/``true``/``false`` (any case; empty means false).
Other columns are ignored.

``read_annotations`` validates the whole file in one pass and raises one ``AnnotationError`` (a
``ValueError``) that lists every offending line, so a dataset is fixed in one round trip. Images
are checked by a full decode (see ``read_annotations``). This module does not import TensorFlow.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ImageFile

from ..boxes import clip_boxes, to_normalized
from ..files import atomic_open
from ..image import probe_images as _probe_images  # noqa: F401
from .classes import (MAX_REPORTED_ERRORS, AnnotationError, AnnotationWarning, read_class_list,  # noqa: F401
                      write_class_list)  # the old private name; marknet's reader uses it

__all__ = [
    "ANNOTATION_COLUMNS",
    "AnnotationError",
    "AnnotationWarning",
    "read_annotations",
    "read_class_list",
    "to_normalized_targets",
    "write_annotations",
    "write_class_list",
]

logger = logging.getLogger(__name__)

ANNOTATION_COLUMNS: tuple[str, ...] = ("image_path", "xmin", "ymin", "xmax", "ymax", "class_name")
"""The required columns of the annotation CSV, in the order ``write_annotations`` writes them."""

DIFFICULT_COLUMN = "difficult"
_COORD_COLUMNS = ANNOTATION_COLUMNS[1:5]
_BOOL_VALUES = {"0": False, "false": False, "1": True, "true": True}


# --------------------------------------------------------------------------------------------
# reading


class _Image:
    """The rows of one distinct image while a CSV is being read."""

    __slots__ = ("shown", "first_line", "boxes")

    def __init__(self, shown: str, first_line: int) -> None:
        self.shown = shown
        self.first_line = first_line
        # (line, [xmin, ymin, xmax, ymax], class_name, difficult) per box row
        self.boxes: list[tuple[int, list[float], str, bool]] = []


def _parse_coordinate(column: str, text: str) -> tuple[float | None, str | None]:
    """A pixel coordinate as a float32-representable float, or an error."""
    try:
        value = float(text)
    except ValueError:
        return None, f"non-numeric {column} {text!r}"
    if not np.isfinite(value):
        return None, f"non-finite {column} {text!r}"
    return float(np.float32(value)), None


def _parse_box(
    cells: Mapping[str, str], line: int, class_index: Mapping[str, int] | None, errors: list[tuple[int, str]]
) -> tuple[list[float], str] | None:
    """The corners and class name of a box row, or ``None`` after appending its errors."""
    coords: list[float] = []
    ok = True
    empty = [column for column in _COORD_COLUMNS if not cells[column]]
    if empty:
        errors.append((line, f"partly empty box: {', '.join(empty)} empty"))
        ok = False
    else:
        for column in _COORD_COLUMNS:
            value, error = _parse_coordinate(column, cells[column])
            if error:
                errors.append((line, error))
                ok = False
            else:
                coords.append(value)
    name = cells["class_name"]
    if not name:
        errors.append((line, "empty class_name on a box row"))
        ok = False
    elif class_index is not None and name not in class_index:
        errors.append((line, f"unknown class {name!r} (not in the class list)"))
        ok = False
    if ok:
        xmin, ymin, xmax, ymax = coords
        if xmin >= xmax or ymin >= ymax:
            errors.append((line, f"degenerate box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}): "
                                 "expected xmin < xmax and ymin < ymax"))
            ok = False
    return (coords, name) if ok else None


def _read_rows(
    csv_path: str, class_index: Mapping[str, int] | None
) -> tuple[dict[str, _Image], list[tuple[int, str]]]:
    """Parses the CSV: the images by absolute path (first-appearance order) and the row errors."""
    name = os.path.basename(csv_path)
    base_dir = os.path.dirname(os.path.abspath(csv_path))
    images: dict[str, _Image] = {}
    errors: list[tuple[int, str]] = []
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file)
            header = [column.strip() for column in next(reader, [])]
            expected = f"expected {','.join(ANNOTATION_COLUMNS)}[,{DIFFICULT_COLUMN}]"
            if not any(header):
                raise AnnotationError(csv_path, [f"{name} line 1: no header ({expected})"])
            missing = [column for column in ANNOTATION_COLUMNS if column not in header]
            if missing:
                raise AnnotationError(csv_path, [
                    f"{name} line 1: missing required column{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(missing)} (the header is {','.join(header)!r}, {expected})"
                ])
            duplicated = sorted({column for column in header if column and header.count(column) > 1})
            if duplicated:
                raise AnnotationError(csv_path, [f"{name} line 1: duplicate column(s) {', '.join(duplicated)}"])
            has_difficult = DIFFICULT_COLUMN in header
            previous_end = reader.line_num
            for row in reader:
                line, previous_end = previous_end + 1, reader.line_num
                if not row:  # a blank line
                    continue
                if len(row) != len(header):
                    errors.append((line, f"expected {len(header)} fields, got {len(row)}"))
                    continue
                cells = {column: cell.strip() for column, cell in zip(header, row)}
                shown = cells["image_path"]
                if not shown:
                    errors.append((line, "empty image_path"))
                    continue
                difficult = False
                if has_difficult and cells[DIFFICULT_COLUMN]:
                    difficult = _BOOL_VALUES.get(cells[DIFFICULT_COLUMN].lower())
                    if difficult is None:
                        errors.append((line, f"difficult must be 0, 1, true or false, got "
                                             f"{cells[DIFFICULT_COLUMN]!r}"))
                key = os.path.normpath(os.path.join(base_dir, shown))
                image = images.get(key)
                if image is None:
                    image = images[key] = _Image(shown, line)
                if not any(cells[column] for column in ANNOTATION_COLUMNS[1:]):
                    continue  # an image without objects
                box = _parse_box(cells, line, class_index, errors)
                if box is not None and difficult is not None:
                    image.boxes.append((line, box[0], box[1], difficult))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{csv_path} is not a UTF-8 text file: {exc}") from None
    except csv.Error as exc:
        raise AnnotationError(csv_path, [f"{name} line {reader.line_num}: malformed CSV ({exc})"]) from None
    return images, errors


def read_annotations(
    csv_path: str | os.PathLike[str],
    classes: Sequence[str] | str | os.PathLike[str] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Reads and validates an annotation CSV.

    Every image is opened and fully decoded once (however many rows list it), in threads:
    Pillow's ``verify()`` does not look at JPEG data, so only a decode finds a truncated JPEG.
    JPEGs are decoded at reduced scale, which still reads all their data. Image sizes are those of
    the upright image (EXIF orientations 5-8 swap width and height), as ``load_image`` returns it.

    Boxes reaching outside their image are clipped to ``[0, width] x [0, height]``, with one
    ``AnnotationWarning`` per file that counts them.

    Args:
        csv_path: The annotation CSV (format in the module docstring).
        classes: The class list (see ``read_class_list``: names or a file), or ``None`` for the
            sorted distinct class names of the file.

    Returns:
        ``(records, class_names)``. One record per distinct image, in order of first appearance::

            {"image_path": str,         # absolute
             "width": int, "height": int,
             "boxes": (n, 4) float32,   # pixel corners [xmin, ymin, xmax, ymax], clipped
             "labels": (n,) int64,      # 1-based: label i + 1 is class_names[i]
             "difficult": (n,) bool}

        ``n`` may be 0. ``class_names`` excludes background.

    Raises:
        FileNotFoundError: ``csv_path`` (or the class list file) does not exist.
        AnnotationError: (a ``ValueError``) naming the file and listing every offending line
            (file line numbers, the header being line 1; the first ``MAX_REPORTED_ERRORS`` and a
            count of the rest): wrong field count, empty ``image_path``, missing or unreadable
            image, partly empty / non-numeric / non-finite coordinates, degenerate box (before or
            after clipping), empty or unknown class name, non-boolean ``difficult``.
            The header's problems (no header, missing required columns: one message listing
            them) and malformed CSV quoting are reported alone, since no row can be read.
        ValueError: The file is not UTF-8, or the class list is invalid.
        RuntimeError: ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is set (truncated images could not
            be found, and ``load_image`` refuses to run with it).
    """
    csv_path = os.fspath(csv_path)
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"annotation CSV not found: {csv_path}")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True: truncated images cannot be detected "
            "(and load_image refuses to run); set it back to False"
        )
    class_names = None if classes is None else read_class_list(classes)
    class_index = None if class_names is None else {name: i + 1 for i, name in enumerate(class_names)}
    images, errors = _read_rows(csv_path, class_index)

    keys = list(images)
    sizes = dict(zip(keys, _probe_images(keys)))
    records, clipped = _build_records(images, sizes, errors)  # labels are set below

    if errors:
        name = os.path.basename(csv_path)
        errors.sort(key=lambda error: error[0])
        raise AnnotationError(csv_path, [f"{name} line {line}: {message}" for line, message in errors])
    if class_names is None:
        class_names = sorted({name for record in records for name in record["labels"]})
        class_index = {name: i + 1 for i, name in enumerate(class_names)}
    for record in records:
        record["labels"] = np.array([class_index[name] for name in record["labels"]], dtype=np.int64)
    if clipped:
        warnings.warn(
            f"{csv_path}: {clipped} box{'es' if clipped != 1 else ''} reaching outside the image "
            "clipped to [0, width] x [0, height]",
            AnnotationWarning,
            stacklevel=2,
        )
    logger.debug("read %d images and %d boxes from %s", len(records),
                 sum(len(record["boxes"]) for record in records), csv_path)
    return records, class_names


def _build_records(
    images: Mapping[str, _Image], sizes: Mapping[str, tuple[int, int] | str], errors: list[tuple[int, str]]
) -> tuple[list[dict[str, Any]], int]:
    """Records (class names in place of labels), image errors appended to ``errors``, clipped-box count."""
    records = []
    clipped = 0
    for key, image in images.items():
        size = sizes[key]
        if isinstance(size, str):
            reason = "image not found" if not os.path.exists(key) else f"unreadable image ({size})"
            errors.append((image.first_line, f"{reason}: {image.shown}"))
            continue
        width, height = size
        boxes = np.array([box[1] for box in image.boxes], dtype=np.float32).reshape(-1, 4)
        inside = clip_boxes(boxes, width, height)
        clipped += int(np.count_nonzero(np.any(inside != boxes, axis=1)))
        for row in np.flatnonzero((inside[:, 0] >= inside[:, 2]) | (inside[:, 1] >= inside[:, 3])):
            xmin, ymin, xmax, ymax = boxes[row]
            errors.append((image.boxes[row][0], f"box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) is empty "
                                                f"after clipping to the {width}x{height} image {image.shown}"))
        records.append({
            "image_path": key,
            "width": int(width),
            "height": int(height),
            "boxes": inside,
            "labels": [box[2] for box in image.boxes],  # class names until the class list is known
            "difficult": np.array([box[3] for box in image.boxes], dtype=bool),
        })
    return records, clipped


# --------------------------------------------------------------------------------------------
# writing


def _format_coordinate(value: float) -> str:
    """The shortest text that reads back (as float32) to ``value`` rounded to float32: ``48``, ``48.5``."""
    return np.format_float_positional(np.float32(value), trim="-")


def _csv_relative_path(image_path: str | os.PathLike[str], csv_dir: str | os.PathLike[str]) -> str:
    """``image_path`` relative to ``csv_dir`` (``/`` separated) when it lies under it, else absolute."""
    image_path = os.path.abspath(image_path)
    csv_dir = os.path.abspath(csv_dir)
    try:
        if os.path.commonpath([image_path, csv_dir]) == csv_dir:
            return Path(os.path.relpath(image_path, csv_dir)).as_posix()
    except ValueError:  # different drives (Windows)
        pass
    return image_path


def _write_rows_atomically(path: str | os.PathLike[str], header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Writes a CSV through a temporary file and a rename, so a failure never leaves half a file."""
    with atomic_open(path, newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return Path(path)


def _record_rows(record: Mapping[str, Any], index: int, class_names: Sequence[str], csv_dir: str) -> list[list[str]]:
    """The CSV rows of one record (a single empty-box row when it has no boxes)."""
    try:
        image_path = record["image_path"]
        boxes = np.asarray(record["boxes"], dtype=np.float64)
        labels = np.asarray(record["labels"])
    except KeyError as exc:
        raise ValueError(f"record {index} has no {exc.args[0]!r}") from None
    difficult = np.asarray(record.get("difficult", np.zeros(len(labels), bool)))
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"record {index} ({image_path}): boxes must be (n, 4), got shape {boxes.shape}")
    if labels.shape != (len(boxes),) or difficult.shape != (len(boxes),):
        raise ValueError(f"record {index} ({image_path}): {len(boxes)} boxes but labels of shape "
                         f"{labels.shape} and difficult of shape {difficult.shape}")
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"record {index} ({image_path}): non-finite box coordinates")
    if len(labels) and (labels.dtype.kind not in "iu" or labels.min() < 1 or labels.max() > len(class_names)):
        raise ValueError(f"record {index} ({image_path}): labels must be integers in [1, {len(class_names)}] "
                         f"(0 is background), got {labels.tolist()}")
    shown = _csv_relative_path(image_path, csv_dir)
    if not len(boxes):
        return [[shown, "", "", "", "", "", ""]]
    return [
        [shown, *map(_format_coordinate, box), class_names[label - 1], "1" if flag else "0"]
        for box, label, flag in zip(boxes, labels.tolist(), difficult.tolist())
    ]


def write_annotations(
    records: Iterable[Mapping[str, Any]],
    class_names: Sequence[str] | str | os.PathLike[str],
    csv_path: str | os.PathLike[str],
) -> Path:
    """Writes records as an annotation CSV (with the ``difficult`` column): ``read_annotations``'s inverse.

    Image paths under the CSV's folder are written relative to it, others absolute. Coordinates
    are written as the shortest decimal text of their float32 value, so reading the file back
    gives the same boxes. The file is written through a temporary file and replaced at the end.
    Records are all checked before anything is written.

    Args:
        records: Records as ``read_annotations`` returns them (``width``/``height`` are not
            written: they come from the image files); ``difficult`` may be absent (all false).
        class_names: The class names without background (or a class list file), label ``i + 1``
            being ``class_names[i]``. Read the file back with ``classes=class_names`` to keep
            the same labels when the names are not sorted or some are unused.
        csv_path: The CSV to write (its folder is created when missing).

    Returns:
        ``csv_path`` as a ``Path``.

    Raises:
        ValueError: A record misses a key, has mis-shaped arrays, non-finite boxes or labels
            outside ``[1, len(class_names)]``; or the class list is invalid.
    """
    names = read_class_list(class_names)
    csv_dir = os.path.dirname(os.path.abspath(csv_path))
    rows = [row for index, record in enumerate(records) for row in _record_rows(record, index, names, csv_dir)]
    return _write_rows_atomically(csv_path, (*ANNOTATION_COLUMNS, DIFFICULT_COLUMN), rows)


# --------------------------------------------------------------------------------------------
# targets


def to_normalized_targets(record: Mapping[str, Any], num_classes: int) -> np.ndarray:
    """The ground truth of one record as ``BBoxUtility.assign_boxes`` takes it.

    Args:
        record: A record of ``read_annotations`` (``boxes``, ``labels``, ``width``, ``height``).
        num_classes: Number of classes *including* background.

    Returns:
        ``(n, 4 + num_classes - 1)`` float32: corners ``[xmin, ymin, xmax, ymax]`` divided by the
        image width/height, then the one-hot class without the background column (label ``l``
        sets column ``4 + l - 1``).

    Raises:
        ValueError: ``num_classes < 2``, mis-shaped boxes, a non-positive image size or a label
            outside ``[1, num_classes - 1]``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2 (background included), got {num_classes!r}")
    boxes = np.asarray(record["boxes"], dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(record["labels"], dtype=np.int64).reshape(-1)
    width, height = record["width"], record["height"]
    if width <= 0 or height <= 0:
        raise ValueError(f"{record.get('image_path', 'record')}: image size must be positive, got {width}x{height}")
    if len(labels) != len(boxes):
        raise ValueError(f"{record.get('image_path', 'record')}: {len(boxes)} boxes but {len(labels)} labels")
    if len(labels) and (labels.min() < 1 or labels.max() >= num_classes):
        raise ValueError(f"{record.get('image_path', 'record')}: labels must be in [1, {num_classes - 1}] "
                         f"for num_classes={num_classes} (0 is background), got {labels.tolist()}")
    targets = np.zeros((len(boxes), 4 + num_classes - 1), dtype=np.float32)
    targets[:, :4] = to_normalized(boxes, width, height, np.float32)
    targets[np.arange(len(labels)), 3 + labels] = 1.0
    return targets
