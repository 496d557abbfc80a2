"""Importers that write the project's CSV files (the seed's ``create_dataset_csv``).

- ``voc_to_csv``: Pascal VOC XML annotations -> the detection annotation CSV
  (``image_path,xmin,ymin,xmax,ymax,class_name,difficult``, see ``ssd_keras.data.annotations``).
- ``folders_to_csv``: a folder-per-class image tree -> the classification CSV ``image,label``.
- ``images_to_csv``: a folder of unannotated images -> the annotation CSV with one empty-box row
  per image (for inference or later labelling).

Each writes its CSV through a temporary file and a rename, and the class importers write the class
list (one name per line, no background) beside it: ``folders_to_csv`` as ``classes.txt``, the file
the classification CSV's labels index (``ssd_keras.data.classification`` reads it from there; an
existing ``classes.txt`` with other classes is not overwritten while another CSV lies beside it),
``voc_to_csv`` as ``<csv stem>_classes.txt`` (``train.csv`` -> ``train_classes.txt``), so that
converting a validation split beside a training split keeps both lists. Image paths are written
relative to the CSV's folder when the image lies under it, absolute otherwise. Folders are checked
before anything is written. This module does not import TensorFlow.

COCO and YOLO, in and out, are :mod:`ssd_keras.data.coco` and :mod:`ssd_keras.data.yolo`; they share
the helpers here (the class list paths, :func:`exported_class_list`, the class name check).
"""

from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from ssd_keras.data.annotations import (
    ANNOTATION_COLUMNS,
    DIFFICULT_COLUMN,
    _csv_relative_path,
    _format_coordinate,
    _write_rows_atomically,
)
from ssd_keras.data.classes import BACKGROUND_NAME, _error_summary, read_class_list, write_class_list

__all__ = [
    "CLASSES_FILENAME",
    "CLASS_LIST_SUFFIX",
    "CLASSIFICATION_COLUMNS",
    "IMAGE_EXTENSIONS",
    "annotation_class_list_path",
    "exported_class_list",
    "folders_to_csv",
    "images_to_csv",
    "list_images",
    "voc_to_csv",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
"""File extensions taken as images (compared in lower case)."""

CLASSES_FILENAME = "classes.txt"
"""The class list of the classification CSVs of a folder (one name per line, background excluded):
their 0-based labels index it. Written by ``folders_to_csv``."""

CLASS_LIST_SUFFIX = "_classes.txt"
"""``voc_to_csv`` writes the class list of ``NAME.csv`` as ``NAME_classes.txt`` beside it."""

CLASSIFICATION_COLUMNS: tuple[str, ...] = ("image", "label")
"""Header of the classification CSV; ``label`` is a 0-based index into the class list."""

_VOC_BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")


# --------------------------------------------------------------------------------------------
# helpers


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted by path; hidden files and folders skipped."""
    found = []
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = [name for name in subdirs if not name.startswith(".")]
        found += [Path(directory, name) for name in files if _is_image(Path(name))]
    return sorted(found)


def _require_dir(path: str | os.PathLike[str], what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found (or not a folder): {path}")
    return path


def annotation_class_list_path(csv_path: str | os.PathLike[str]) -> Path:
    """Where ``voc_to_csv`` writes the class list of the annotation CSV ``csv_path``:
    ``<folder>/<csv stem>_classes.txt`` (``train.csv`` -> ``train_classes.txt``)."""
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.stem + CLASS_LIST_SUFFIX)


def exported_class_list(
    csv_path: str | os.PathLike[str], classes: Sequence[str] | str | os.PathLike[str] | None = None
) -> list[str] | None:
    """The class list an exporter (``csv_to_coco``, ``csv_to_yolo``) numbers the classes of the
    annotation CSV ``csv_path`` by: ``classes`` when given (names or a file); else the class list an
    importer wrote beside the CSV (:func:`annotation_class_list_path`) when there is one, so that a
    dataset converted in and out keeps its class order; else ``None``, which ``read_annotations``
    takes as the sorted class names of the CSV."""
    if classes is not None:
        return read_class_list(classes)
    beside = annotation_class_list_path(csv_path)
    return read_class_list(beside) if beside.is_file() else None


def _class_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a class of an annotation CSV and its class list, or ``None``."""
    if not isinstance(name, str) or not name.strip():
        return f"class name must be a non-empty string, got {name!r}"
    if name != name.strip() or name.startswith("#") or "\n" in name or "\r" in name:
        return f"class name {name!r} cannot be written to a class list (surrounding whitespace, a line " \
               "break or a leading '#')"
    if name.lower() == BACKGROUND_NAME:
        return f"class name {name!r} is reserved for label 0 (background)"
    return None


def _check_shared_class_list(out_csv: str | os.PathLike[str], class_names: Sequence[str]) -> Path:
    """``classes.txt`` beside ``out_csv``, after checking that writing ``class_names`` there
    changes no class list that another CSV of the folder relies on.

    Raises:
        ValueError: ``classes.txt`` exists with other classes (or is unreadable) and another CSV
            lies in the folder.
    """
    out_csv = Path(out_csv).absolute()
    path = out_csv.parent / CLASSES_FILENAME
    if not path.is_file():
        return path
    try:
        existing = read_class_list(path)
    except ValueError:
        existing = None
    if existing == list(class_names):
        return path
    others = sorted(p.name for p in out_csv.parent.glob("*.csv") if p.name != out_csv.name)
    if others:
        listed = "an unreadable list" if existing is None else f"the classes {', '.join(existing)}"
        raise ValueError(
            f"{path} holds {listed}, not {', '.join(class_names)}, and the labels of other CSVs "
            f"beside it ({', '.join(others)}) may index it: write {out_csv.name} to its own folder, "
            f"or remove {path} first if no CSV there uses it")
    return path


# --------------------------------------------------------------------------------------------
# Pascal VOC


def _voc_text(element: ET.Element, tag: str, errors: list[str], where: str) -> str | None:
    """The stripped text of ``element``'s child ``tag``, or ``None`` after noting its absence."""
    child = element.find(tag)
    if child is None or not (child.text or "").strip():
        errors.append(f"{where}: missing or empty <{tag}>")
        return None
    return child.text.strip()


def _parse_voc_file(path: Path) -> tuple[str, list[tuple[list[str], str, bool]], list[str]]:
    """``(filename, [(coords as text, name, difficult)], errors)`` of one VOC XML file."""
    errors: list[str] = []
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return "", [], [f"{path.name}: malformed XML ({exc})"]
    if root.tag != "annotation":
        return "", [], [f"{path.name}: the root element is <{root.tag}>, expected <annotation>"]
    filename = _voc_text(root, "filename", errors, path.name) or ""
    objects = []
    for index, obj in enumerate(root.iter("object"), start=1):
        where = f"{path.name} object {index}"
        name = _voc_text(obj, "name", errors, where)
        difficult_text = (obj.findtext("difficult") or "0").strip()
        if difficult_text not in ("0", "1"):
            errors.append(f"{where}: <difficult> must be 0 or 1, got {difficult_text!r}")
        box = obj.find("bndbox")
        if box is None:
            errors.append(f"{where}: missing <bndbox>")
            continue
        coords = []
        for tag in _VOC_BOX_TAGS:
            text = _voc_text(box, tag, errors, where)
            try:
                value = None if text is None else float(text)
            except ValueError:
                value = None
            if text is not None and (value is None or not math.isfinite(value)):
                errors.append(f"{where}: non-numeric <{tag}> {text!r}")
            coords.append(_format_coordinate(value) if value is not None and math.isfinite(value) else None)
        if name is not None and None not in coords:
            objects.append((coords, name, difficult_text == "1"))
    return filename, objects, errors


def voc_to_csv(
    annotations_dir: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    classes: Sequence[str] | str | os.PathLike[str] | None = None,
) -> list[str]:
    """Converts Pascal VOC XML annotations to the annotation CSV.

    Reads every ``*.xml`` file of ``annotations_dir`` (not recursively), in sorted order: its
    ``<filename>`` (an image of ``images_dir``) and each ``<object>``'s ``<name>``,
    ``<difficult>`` (0 when absent) and ``<bndbox>`` corners. VOC's pixel coordinates are 1-based
    (the top-left pixel is ``(1, 1)``); they are written **as they are**, without subtracting 1,
    as the original port and most VOC tools do (the difference is under a pixel). An image with
    no object gets one empty-box row. Images are not opened here: ``read_annotations`` validates
    them when the CSV is read.

    Args:
        annotations_dir: Folder of VOC XML files (``Annotations/``).
        images_dir: Folder of the images (``JPEGImages/``).
        out_csv: The CSV to write; its class list is written beside it as
            ``<csv stem>_classes.txt`` (:func:`annotation_class_list_path`).
        classes: The class list (names or a file, see ``read_class_list``), or ``None`` for the
            sorted distinct object names.

    Returns:
        The class names (without background), as written to the class list.

    Raises:
        FileNotFoundError: A folder (annotations or images) or the class list file does not
            exist. Nothing is written then.
        ValueError: No XML file; or, in one message listing them all, XML files that are
            malformed, miss elements, hold non-numeric coordinates or names outside ``classes``.
            Nothing is written then.
    """
    annotations_dir = _require_dir(annotations_dir, "VOC annotations folder")
    images_dir = _require_dir(images_dir, "VOC images folder")
    given = None if classes is None else read_class_list(classes)
    xml_files = sorted(path for path in annotations_dir.iterdir() if path.suffix.lower() == ".xml")
    if not xml_files:
        raise ValueError(f"no .xml file in the VOC annotations folder {annotations_dir}")

    csv_dir = os.path.dirname(os.path.abspath(out_csv))
    parsed = []
    errors: list[str] = []
    for path in xml_files:
        filename, objects, file_errors = _parse_voc_file(path)
        if given is not None:
            file_errors += [f"{path.name}: unknown class {name!r} (not in the class list)"
                            for _, name, _ in objects if name not in given]
        errors += file_errors
        parsed.append((filename, objects))
    if errors:
        raise ValueError(_error_summary(f"invalid VOC annotations in {annotations_dir}", errors))

    class_names = given if given is not None else sorted({name for _, objects in parsed for _, name, _ in objects})
    rows = []
    for filename, objects in parsed:
        shown = _csv_relative_path(images_dir / filename, csv_dir)
        rows += [[shown, *coords, name, int(difficult)] for coords, name, difficult in objects]
        if not objects:
            rows.append([shown, "", "", "", "", "", ""])
    _write_rows_atomically(out_csv, (*ANNOTATION_COLUMNS, DIFFICULT_COLUMN), rows)
    write_class_list(class_names, annotation_class_list_path(out_csv))
    logger.info("wrote %d rows from %d VOC files to %s", len(rows), len(xml_files), out_csv)
    return class_names


# --------------------------------------------------------------------------------------------
# folders


def folders_to_csv(root: str | os.PathLike[str], out_csv: str | os.PathLike[str]) -> list[str]:
    """Converts a folder-per-class image tree (``root/<class>/<image>``) to the classification CSV.

    The classes are the sorted names of ``root``'s sub-folders (hidden ones, starting with
    ``.``, excluded), empty ones included, as ``keras.utils.image_dataset_from_directory`` does;
    each class folder is searched recursively for files with an extension of
    ``IMAGE_EXTENSIONS`` (any case). Images directly in ``root`` belong to no class: they are
    left out with a logged warning.

    Args:
        root: The tree's root folder.
        out_csv: The CSV to write (``image,label``, label a 0-based index into the class names);
            ``classes.txt`` is written beside it.

    Returns:
        The class names, sorted.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` has no class folder, or no image in any; or a ``classes.txt`` with
            other classes lies beside ``out_csv`` together with another CSV (its labels may index
            it). Nothing is written then.
    """
    root = _require_dir(root, "image folder tree")
    class_names = sorted(path.name for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
    if not class_names:
        raise ValueError(f"no class folder in {root}: expected {root}/<class name>/<image files>")
    stray = [path for path in root.iterdir() if path.is_file() and _is_image(path)]
    if stray:
        logger.warning("%d image(s) directly in %s are in no class folder and were left out", len(stray), root)
    csv_dir = os.path.dirname(os.path.abspath(out_csv))
    rows = [
        [_csv_relative_path(image, csv_dir), label]
        for label, name in enumerate(class_names)
        for image in list_images(root / name)
    ]
    if not rows:
        raise ValueError(f"no image in the class folders of {root} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    class_list = _check_shared_class_list(out_csv, class_names)
    _write_rows_atomically(out_csv, CLASSIFICATION_COLUMNS, rows)
    write_class_list(class_names, class_list)
    return class_names


def images_to_csv(folder: str | os.PathLike[str], out_csv: str | os.PathLike[str]) -> int:
    """Lists a folder's images (recursively, sorted) as an annotation CSV without boxes.

    Each image gets one row with empty box fields, so the CSV reads back with
    ``read_annotations`` as records with no boxes (for inference or later labelling).

    Args:
        folder: The folder to search (hidden files and folders skipped).
        out_csv: The CSV to write.

    Returns:
        The number of images listed.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: ``folder`` holds no image.
    """
    folder = _require_dir(folder, "image folder")
    images = list_images(folder)
    if not images:
        raise ValueError(f"no image in {folder} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    csv_dir = os.path.dirname(os.path.abspath(out_csv))
    empty = [""] * (len(ANNOTATION_COLUMNS) - 1)
    rows = [[_csv_relative_path(path, csv_dir), *empty] for path in images]
    _write_rows_atomically(out_csv, ANNOTATION_COLUMNS, rows)
    return len(images)
