"""The detections CSV that ``detect`` writes and ``evaluate --detections`` scores::

    image_path,class_name,score,xmin,ymin,xmax,ymax
    photos/a.jpg,cat,0.9312,48.0,240.5,195.0,371.0

One row per detection, pixel corners. ``image_path`` follows the annotation CSV's rule: relative
to the CSV's own folder, or absolute (:func:`write_detections_csv` writes images outside the
CSV's folder as absolute paths). Other columns are ignored. This module imports no TensorFlow.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from . import layout
from .boxes import to_normalized
from .data.annotations import _csv_relative_path, _write_rows_atomically
from .data.classes import AnnotationError

__all__ = ["DETECTION_CSV_COLUMNS", "read_detections_csv", "write_detections_csv"]

DETECTION_CSV_COLUMNS: tuple[str, ...] = ("image_path", "class_name", "score", "xmin", "ymin", "xmax", "ymax")
_NUMBERS = DETECTION_CSV_COLUMNS[2:]


def write_detections_csv(path: str | os.PathLike[str],
                         rows: Iterable[tuple[str | os.PathLike[str], str, float, Sequence[float]]]) -> None:
    """Writes detections (whole or not at all): ``rows`` of ``(image path, class name, score,
    pixel corners)``; scores with 4 decimals, corners with 1."""
    csv_dir = os.path.dirname(os.path.abspath(path))
    _write_rows_atomically(path, DETECTION_CSV_COLUMNS, (
        [_csv_relative_path(image, csv_dir), name, f"{score:.4f}", *(f"{v:.1f}" for v in box)]
        for image, name, score, box in rows))


def _image_key(shown: str, base_dir: str, known: Mapping[str, int]) -> str | None:
    """The record path a detection's ``image_path`` names: relative to the CSV's folder, else (for
    files of older versions, which wrote paths as given on ``detect``'s command line) to the
    current folder; ``None`` when neither is a known image."""
    key = os.path.normpath(os.path.join(base_dir, shown))
    if key in known:
        return key
    key = os.path.normpath(os.path.abspath(shown))
    return key if key in known else None


def _parse_numbers(cells: Mapping[str, str]) -> tuple[list[float], list[str]]:
    values, problems = [], []
    for column in _NUMBERS:
        try:
            value = float(cells[column])
        except ValueError:
            problems.append(f"non-numeric {column} {cells[column]!r}")
            continue
        if not math.isfinite(value):
            problems.append(f"non-finite {column} {cells[column]!r}")
        values.append(value)
    if not problems and (values[1] > values[3] or values[2] > values[4]):
        problems.append(f"box ({', '.join(cells[c] for c in _NUMBERS[1:])}) has xmin > xmax or ymin > ymax")
    return values, problems


def read_detections_csv(
    path: str | os.PathLike[str],
    records: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    confidence_threshold: float = 0.0,
    truth_name: str = "the ground truth",
) -> list[np.ndarray]:
    """Reads a detections CSV against the ground truth it is scored on.

    Each row's image is matched to a record by its absolute path, resolved as ``read_annotations``
    resolves the ground truth's (relative paths against the CSV's folder; for detections CSVs of
    older versions, a relative path that names no record so is tried against the current folder).

    Args:
        path: The detections CSV.
        records: The ground truth, as ``read_annotations`` returns it (absolute ``image_path``,
            ``width``, ``height``).
        class_names: The ground truth's classes (without background): label ``i + 1`` is
            ``class_names[i]``.
        confidence_threshold: Rows with a lower score are left out.
        truth_name: How error messages name the ground truth (its file).

    Returns:
        One array per record, in the records' order: ``(k, 6)`` detection rows ``[label,
        confidence, xmin, ymin, xmax, ymax]`` with corners normalised by the image's size.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        AnnotationError: (a ``ValueError``) listing every bad line: a missing column, a wrong
            field count, an image not in the ground truth, a class not among its classes, a
            non-numeric or non-finite number, xmin > xmax or ymin > ymax.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"detections CSV not found: {path}")
    name, base_dir = os.path.basename(path), os.path.dirname(os.path.abspath(path))
    known = {os.path.normpath(record["image_path"]): index for index, record in enumerate(records)}
    labels = {class_name: label for label, class_name in enumerate(class_names, start=1)}
    found: list[list[list[float]]] = [[] for _ in records]
    errors: list[str] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file)
            header = [column.strip() for column in next(reader, [])]
            missing = [column for column in DETECTION_CSV_COLUMNS if column not in header]
            if missing:
                raise AnnotationError(path, [f"{name} line 1: missing column(s) {', '.join(missing)} (expected "
                                             f"{','.join(DETECTION_CSV_COLUMNS)}, as detect writes)"], "detections")
            previous_end = reader.line_num
            for row in reader:
                line, previous_end = previous_end + 1, reader.line_num
                if not row:
                    continue
                where = f"{name} line {line}"
                if len(row) != len(header):
                    errors.append(f"{where}: expected {len(header)} fields, got {len(row)}")
                    continue
                cells = {column: cell.strip() for column, cell in zip(header, row)}
                key = _image_key(cells["image_path"], base_dir, known)
                problems = [] if key is not None else [
                    f"image {cells['image_path']!r} is not an image of {truth_name}"]
                if cells["class_name"] not in labels:
                    problems.append(f"class {cells['class_name']!r} is not a class of {truth_name} (its classes: "
                                    f"{', '.join(class_names)})")
                values, number_problems = _parse_numbers(cells)
                problems += number_problems
                if problems:
                    errors += [f"{where}: {problem}" for problem in problems]
                elif values[0] >= confidence_threshold:
                    found[known[key]].append([labels[cells["class_name"]], *values])
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a UTF-8 text file: {exc}") from None
    except csv.Error as exc:
        raise AnnotationError(path, [f"{name} line {reader.line_num}: malformed CSV ({exc})"], "detections") from None
    if errors:
        raise AnnotationError(path, errors, "detections")
    detections = []
    for record, rows in zip(records, found):  # rows are [label, score, xmin, ymin, xmax, ymax] in pixels
        array = np.array(rows, np.float64).reshape(-1, layout.DETECTION_COLUMNS)
        array[:, layout.BOX] = to_normalized(array[:, layout.BOX], record["width"], record["height"])
        detections.append(array)
    return detections
