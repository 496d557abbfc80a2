"""YOLO label files <-> the annotation CSV.

YOLO keeps one text file per image, beside a mirror of the image tree: the image
``IMAGES_DIR/sub/name.jpg`` has the labels ``LABELS_DIR/sub/name.txt``, one line per object::

    class cx cy w h

``class`` is a 0-based index into the class list; the box centre and size are normalised to the
image's width and height (in [0, 1]). An image without a label file, or with an empty one, has no
objects. The class names come from a class list (one name per line, as ``classes.txt``), from an
Ultralytics ``data.yaml`` (its ``names``: a list, or a ``0: name`` mapping), or from
``LABELS_DIR/classes.txt``, which is never a label file. YOLO has no ``difficult`` flag:
:func:`csv_to_yolo` leaves difficult boxes out (as the usual VOC-to-YOLO conversion does) and
counts them. This module imports no TensorFlow.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..boxes import clip_boxes, to_normalized, to_pixels
from ..image import probe_images
from .annotations import ANNOTATION_COLUMNS, DIFFICULT_COLUMN, _csv_relative_path, _format_coordinate, \
    _write_rows_atomically, read_annotations
from .classes import AnnotationError, read_class_list, write_class_list
from .csv_tools import CLASSES_FILENAME, _require_dir, list_images, annotation_class_list_path, \
    exported_class_list

__all__ = ["YoloExport", "csv_to_yolo", "read_yolo_names", "yolo_to_csv"]

logger = logging.getLogger(__name__)

YAML_SUFFIXES = (".yaml", ".yml")
_FIELDS = ("cx", "cy", "w", "h")
_DECIMALS = 6  # of the normalised numbers csv_to_yolo writes


# --------------------------------------------------------------------------------------------
# data.yaml


def _strip_comment(text: str) -> str:
    """``text`` up to a ``#`` that starts a YAML comment (outside quotes, after a space)."""
    quote = None
    for index, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or text[index - 1].isspace()):
            return text[:index]
    return text


def _scalar(text: str) -> str:
    """A YAML scalar's text: stripped, quotes removed (``''`` inside single quotes is ``'``)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('\\"', '"')
    return text


def _split_flow(text: str) -> list[str]:
    """The items of a YAML flow collection's inside (``a, 'b, c'``), split at commas outside quotes."""
    items, start, quote = [], 0, None
    for index, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ",":
            items.append(text[start:index])
            start = index + 1
    items.append(text[start:])
    return [item for item in items if item.strip()]


def _entry(text: str, keys: dict[int, str], items: list[str], where: str) -> None:
    """One ``- name`` or ``index: name`` entry of ``names``, into ``items`` or ``keys``."""
    if text.startswith("- ") or text == "-":
        items.append(_scalar(text[1:]))
        return
    match = re.fullmatch(r"""(['"]?)(\d+)\1\s*:\s*(.*)""", text)
    if not match:
        raise ValueError(f"{where}: expected '- name' or 'index: name' under names, got {text!r}")
    keys[int(match.group(2))] = _scalar(match.group(3))


def read_yolo_names(path: str | os.PathLike[str]) -> list[str]:
    """The class names of an Ultralytics ``data.yaml``: its top-level ``names``.

    A small reader of the two common forms, not a YAML parser (none is a dependency): a list,
    ``names: [a, b]`` or a block of ``- a`` lines, and a mapping, ``names: {0: a, 1: b}`` or a
    block of ``0: a`` lines, whose indices must be ``0 .. n - 1``. Names may be quoted; comments
    are ignored. The rest of the file is not read.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: No top-level ``names``, another form, indices missing or repeated, or an
            invalid class list (see ``read_class_list``); the message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"YOLO data file not found: {path}")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    start = next((number for number, line in enumerate(lines) if re.match(r"names\s*:", line)), None)
    if start is None:
        raise ValueError(f"{path}: no top-level 'names:' entry (the class names)")
    where = f"{path} line {start + 1}"
    value = _strip_comment(lines[start].split(":", 1)[1]).strip()
    keys: dict[int, str] = {}
    items: list[str] = []
    if value.startswith("[") and value.endswith("]"):
        items = [_scalar(item) for item in _split_flow(value[1:-1])]
    elif value.startswith("{") and value.endswith("}"):
        for item in _split_flow(value[1:-1]):
            _entry(item.strip(), keys, items, where)
    elif value:
        raise ValueError(f"{where}: expected names as [a, b], {{0: a}} or a block of '- a' / '0: a' lines, "
                         f"got {value!r}")
    else:
        for number in range(start + 1, len(lines)):
            text = _strip_comment(lines[number])
            if not text.strip():
                continue
            if not text[0].isspace() and not text.startswith("-"):
                break  # the next top-level key
            _entry(text.strip(), keys, items, f"{path} line {number + 1}")
    if keys and items:
        raise ValueError(f"{where}: names mixes '- name' and 'index: name' entries")
    if keys:
        if sorted(keys) != list(range(len(keys))):
            raise ValueError(f"{where}: the indices of names must be 0 .. {len(keys) - 1}, got {sorted(keys)}")
        items = [keys[index] for index in range(len(keys))]
    try:
        return read_class_list(items)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _class_names(classes: Sequence[str] | str | os.PathLike[str] | None, labels_dir: Path) -> list[str]:
    """The class list of :func:`yolo_to_csv`'s ``classes`` argument."""
    if classes is None:
        default = labels_dir / CLASSES_FILENAME
        if not default.is_file():
            raise FileNotFoundError(f"no class list: give a class list file (one name per line) or a "
                                    f"data.yaml with 'names', or put {CLASSES_FILENAME} in {labels_dir}")
        return read_class_list(default)
    if isinstance(classes, (str, os.PathLike)) and Path(classes).suffix.lower() in YAML_SUFFIXES:
        return read_yolo_names(classes)
    return read_class_list(classes)


# --------------------------------------------------------------------------------------------
# YOLO -> CSV


def _parse_line(fields: list[str], count: int) -> tuple[int, list[float]] | str:
    """``(class index, [cx, cy, w, h])`` of a label line, or what is wrong with it."""
    if len(fields) != 5:
        return f"expected 5 fields (class cx cy w h), got {len(fields)}"
    try:
        index = float(fields[0])
    except ValueError:
        return f"class index {fields[0]!r} is not a number"
    if not (index.is_integer() and 0 <= index < count):
        return f"class index {fields[0]} is out of range (0 .. {count - 1} for {count} classes)"
    values, problems = [], []
    for name, text in zip(_FIELDS, fields[1:]):
        try:
            value = float(text)
        except ValueError:
            problems.append(f"{name} {text!r} is not a number")
            continue
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            problems.append(f"{name} {text} is outside [0, 1]")
        elif name in ("w", "h") and value == 0.0:
            problems.append(f"{name} is 0 (an empty box)")
        values.append(value)
    return "; ".join(problems) if problems else (int(index), values)


def _read_labels(path: Path, shown: str, count: int, errors: list[str]) -> list[tuple[int, list[float]]]:
    """The objects of one label file (none when it does not exist), the errors appended."""
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        errors.append(f"{shown}: not a UTF-8 text file ({exc})")
        return []
    objects = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if fields:
            parsed = _parse_line(fields, count)
            if isinstance(parsed, str):
                errors.append(f"{shown} line {number}: {parsed}")
            else:
                objects.append(parsed)
    return objects


def _label_files(labels_dir: Path) -> list[Path]:
    """The ``.txt`` files under ``labels_dir`` (hidden ones skipped), but its ``classes.txt``."""
    found = []
    for directory, subdirs, files in os.walk(labels_dir):
        subdirs[:] = [name for name in subdirs if not name.startswith(".")]
        found += [Path(directory, name) for name in files if name.lower().endswith(".txt") and not name.startswith(".")]
    return sorted(path for path in found if path != labels_dir / CLASSES_FILENAME)


def yolo_to_csv(
    labels_dir: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    classes: Sequence[str] | str | os.PathLike[str] | None = None,
) -> list[str]:
    """Converts YOLO label files to the annotation CSV.

    Every image under ``images_dir`` (recursively, sorted; hidden files skipped) is listed; its
    label file is the same relative path under ``labels_dir`` with the suffix ``.txt``. Each line
    ``class cx cy w h`` becomes the pixel corners of the box (corners past the image edge, from
    rounding, are clipped to it) on the image's upright size (:func:`ssd_keras.image.probe_image`).

    Args:
        labels_dir: The folder of label files (``labels/``).
        images_dir: The folder of the images (``images/``).
        out_csv: The CSV to write; the class list is written beside it as
            ``<csv stem>_classes.txt``.
        classes: The class names (a list, a class list file, or a ``.yaml``/``.yml`` data file
            read by :func:`read_yolo_names`); default ``labels_dir/classes.txt``.

    Returns:
        The class names (without background), label ``i + 1`` being class index ``i``.

    Raises:
        FileNotFoundError: A folder or the class list does not exist. Nothing is written then.
        AnnotationError: (a ``ValueError``) listing every problem, each naming the label file and
            line: a wrong field count, a class index out of range, a number that is not one or
            lies outside [0, 1], a zero width or height, a label file without an image, two images
            sharing a label file (``a.jpg`` and ``a.png``), an unreadable image that has labels.
            Nothing is written then.
        ValueError: No image in ``images_dir``, or an invalid class list.
    """
    labels_dir = _require_dir(labels_dir, "YOLO labels folder")
    images_dir = _require_dir(images_dir, "YOLO images folder")
    class_names = _class_names(classes, labels_dir)
    images = list_images(images_dir)
    if not images:
        raise ValueError(f"no image in {images_dir}")
    errors: list[str] = []
    owner: dict[Path, Path] = {}  # label file (relative) -> its image
    for image in images:
        label = image.relative_to(images_dir).with_suffix(".txt")
        if label in owner:
            errors.append(f"{label.as_posix()}: the label file of both {owner[label].name} and {image.name}")
        owner.setdefault(label, image)
    errors += [f"{path.relative_to(labels_dir).as_posix()}: no image for this label file (looked for "
               f"{(images_dir / path.relative_to(labels_dir)).with_suffix('.*')})"
               for path in _label_files(labels_dir) if path.relative_to(labels_dir) not in owner]
    objects = {label: _read_labels(labels_dir / label, label.as_posix(), len(class_names), errors)
               for label in owner}
    labelled = [label for label in owner if objects[label]]
    sizes = dict(zip(labelled, probe_images([str(owner[label]) for label in labelled])))
    errors += [f"{owner[label]}: unreadable image ({size})" for label, size in sizes.items() if isinstance(size, str)]
    if errors:
        raise AnnotationError(labels_dir, errors, "YOLO labels")

    csv_dir = os.path.dirname(os.path.abspath(out_csv))
    rows = []
    for label, image in owner.items():
        shown = _csv_relative_path(image, csv_dir)
        if not objects[label]:
            rows.append([shown, "", "", "", "", "", ""])
            continue
        indices = [index for index, _ in objects[label]]
        cx, cy, w, h = np.array([values for _, values in objects[label]], np.float64).T
        corners = clip_boxes(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1))
        pixels = np.round(to_pixels(corners, *sizes[label]), 3)  # 6 decimals of a fraction: under 0.003 px at 6000 px
        rows += [[shown, *map(_format_coordinate, box), class_names[index], 0] for box, index in zip(pixels, indices)]
    _write_rows_atomically(out_csv, (*ANNOTATION_COLUMNS, DIFFICULT_COLUMN), rows)
    write_class_list(class_names, annotation_class_list_path(out_csv))
    logger.info("wrote %d rows of %d images to %s", len(rows), len(owner), out_csv)
    return class_names


# --------------------------------------------------------------------------------------------
# CSV -> YOLO


class YoloExport(NamedTuple):
    """What :func:`csv_to_yolo` wrote."""

    class_names: list[str]
    """The class list (``classes.txt``): class index ``i`` is ``class_names[i]``."""
    images_dir: Path
    """The folder whose tree the label files mirror (the ``IMAGES_DIR`` to read them back with)."""
    label_files: int
    """Label files written, one per image (empty for an image without objects)."""
    boxes: int
    """Boxes written."""
    difficult_left_out: int
    """Difficult boxes not written (YOLO has no such flag)."""


def csv_to_yolo(
    csv_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    classes: Sequence[str] | str | os.PathLike[str] | None = None,
    images_dir: str | os.PathLike[str] | None = None,
) -> YoloExport:
    """Converts an annotation CSV to YOLO label files and ``classes.txt``.

    The CSV is read (and validated, images decoded for their sizes) by ``read_annotations``. Each
    image gets ``out_dir/<its path relative to images_dir>.txt``, with one line
    ``class cx cy w h`` per box (6 decimals); difficult boxes are left out and counted. Other
    files in ``out_dir`` are left as they are.

    Args:
        csv_path: The annotation CSV.
        out_dir: The labels folder to write (created when missing).
        classes: The class list numbering the classes (names or a file); default: the class list
            an importer wrote beside the CSV (``<csv stem>_classes.txt``) when there is one, else
            the CSV's sorted class names.
        images_dir: The folder the label tree mirrors; default: the deepest folder holding all
            the CSV's images.

    Returns:
        A :class:`YoloExport`.

    Raises:
        FileNotFoundError, AnnotationError, ValueError: as ``read_annotations``; ValueError also
            when an image lies outside ``images_dir`` or two images would share a label file.
            Nothing is written then.
    """
    records, class_names = read_annotations(csv_path, exported_class_list(csv_path, classes))
    if not records:
        raise ValueError(f"{csv_path} lists no image")
    paths = [Path(record["image_path"]) for record in records]
    root = Path(os.path.abspath(images_dir)) if images_dir is not None else \
        Path(os.path.commonpath([path.parent for path in paths]))
    problems, owner = [], {}
    for path in paths:
        if os.path.commonpath([path, root]) != str(root):
            problems.append(f"{path} is not under the images folder {root}")
            continue
        label = path.relative_to(root).with_suffix(".txt")
        if label in owner:
            problems.append(f"{owner[label]} and {path} would share the label file {label.as_posix()}")
        owner.setdefault(label, path)
    if problems:
        raise ValueError(f"cannot write YOLO labels of {csv_path}: " + "; ".join(problems))

    out_dir = Path(out_dir)
    written = left_out = 0
    for label, record in zip(owner, records):
        difficult = np.asarray(record["difficult"], bool)
        boxes = to_normalized(np.asarray(record["boxes"])[~difficult], record["width"], record["height"])
        lines = [f"{index - 1} " + " ".join(f"{v:.{_DECIMALS}f}" for v in
                                            ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1))
                 for index, (x1, y1, x2, y2) in zip(np.asarray(record["labels"])[~difficult].tolist(), boxes)]
        path = out_dir / label
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        written += len(lines)
        left_out += int(difficult.sum())
    write_class_list(class_names, out_dir / CLASSES_FILENAME)
    return YoloExport(list(class_names), root, len(owner), written, left_out)
