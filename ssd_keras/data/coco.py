"""COCO ``instances`` JSON <-> the annotation CSV, and detections as COCO results.

The numbering rule, shared by :func:`csv_to_coco`, :func:`coco_dataset` (the ground truth of the
COCO metrics) and ``detect --coco-json`` (:func:`coco_results`):

- image ids are ``1, 2, ...`` in the order the images first appear (the CSV's row order; for
  ``detect``, the order of the images on its command line, folders listed sorted);
- category ids are the 1-based positions in the class list (``category_id`` = the label):
  category ``i + 1`` is ``class_names[i]``;
- annotation ids are ``1, 2, ...`` in row order.

So ``detect --coco-json`` results carry the ids of ``csv to-coco`` of a CSV that lists the same
images in the same order with the same class list. Boxes are COCO's ``[x, y, width, height]`` in
pixels; the CSV's ``difficult`` flag is COCO's ``iscrowd``. This module imports no TensorFlow.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_open
from .annotations import ANNOTATION_COLUMNS, DIFFICULT_COLUMN, _csv_relative_path, _format_coordinate, \
    _write_rows_atomically, read_annotations
from .classes import AnnotationError, write_class_list
from .csv_tools import _class_name_problem, _require_dir, annotation_class_list_path, exported_class_list

__all__ = ["coco_to_csv", "csv_to_coco", "coco_dataset", "coco_results"]

logger = logging.getLogger(__name__)

_WHAT = "COCO annotations"
_DECIMALS = 6  # of the widths and heights csv_to_coco writes (a millionth of a pixel)


# --------------------------------------------------------------------------------------------
# COCO -> CSV


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _load(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8-sig") as file:
            data = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(path, [f"{path.name}: not a JSON file ({exc})"], _WHAT) from None
    if not isinstance(data, dict):
        raise AnnotationError(path, [f"{path.name}: expected a JSON object with images, annotations and "
                                     f"categories, got {type(data).__name__}"], _WHAT)
    problems = [f"{path.name}: '{key}' is missing or not a list" for key in ("images", "categories", "annotations")
                if not isinstance(data.get(key, []), list) or (key != "annotations" and key not in data)]
    if problems:
        raise AnnotationError(path, problems, _WHAT)
    return data


def _categories(entries: list[Any], errors: list[str]) -> dict[int, str]:
    """Category id -> name, the errors appended."""
    names: dict[int, str] = {}
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        where = f"categories[{index}]"
        if not isinstance(entry, dict) or not _is_int(entry.get("id")):
            errors.append(f"{where}: expected an object with an integer 'id' and a 'name', got {entry!r}")
            continue
        where = f"category id {entry['id']}"
        name = entry.get("name")
        name = name.strip() if isinstance(name, str) else name
        problem = _class_name_problem(name)
        if problem:
            errors.append(f"{where}: {problem}")
        elif entry["id"] in names:
            errors.append(f"{where}: duplicate category id")
        elif name in seen:
            errors.append(f"{where}: duplicate category name {name!r} (also category id {seen[name]})")
        else:
            names[entry["id"]] = name
            seen[name] = entry["id"]
    return names


def _images(entries: list[Any], errors: list[str]) -> dict[Any, str]:
    """Image id -> file name (in the file's order), the errors appended."""
    files: dict[Any, str] = {}
    seen: dict[str, Any] = {}
    for index, entry in enumerate(entries):
        image_id = entry.get("id") if isinstance(entry, dict) else None
        if not (_is_int(image_id) or isinstance(image_id, str)):
            errors.append(f"images[{index}]: expected an object with an integer or string 'id' and a "
                          f"'file_name', got {entry!r}")
            continue
        where = f"image id {image_id!r}"
        name = entry.get("file_name")
        key = os.path.normpath(name) if isinstance(name, str) and name.strip() else None
        if key is None:
            errors.append(f"{where}: missing or empty 'file_name'")
        elif image_id in files:
            errors.append(f"{where}: duplicate image id")
        elif key in seen:
            errors.append(f"{where}: file_name {name!r} is also image id {seen[key]!r}")
        else:
            files[image_id] = name
            seen[key] = image_id
    return files


def _box(bbox: Any) -> tuple[list[float] | None, str | None]:
    """COCO's ``[x, y, width, height]`` as corners, or the error."""
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(
            isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) for v in bbox):
        return None, f"bbox must be 4 finite numbers [x, y, width, height], got {bbox!r}"
    x, y, width, height = map(float, bbox)
    if width <= 0 or height <= 0:
        return None, f"bbox {bbox!r} has no area (width and height must be positive)"
    return [x, y, x + width, y + height], None


def _objects(entries: list[Any], images: Mapping[Any, str], categories: Mapping[int, str],
             errors: list[str]) -> dict[Any, list[tuple[list[float], str, bool]]]:
    """Image id -> its ``(corners, class name, crowd)`` in the file's order, the errors appended."""
    objects: dict[Any, list[tuple[list[float], str, bool]]] = {image_id: [] for image_id in images}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            errors.append(f"annotations[{index}]: expected an object, got {entry!r}")
            continue
        where = f"annotation id {entry['id']!r}" if "id" in entry else f"annotations[{index}]"
        ok = True
        image_id, category_id = entry.get("image_id"), entry.get("category_id")
        if not (_is_int(image_id) or isinstance(image_id, str)) or image_id not in objects:
            errors.append(f"{where}: unknown image_id {image_id!r} (no such image)")
            ok = False
        if not _is_int(category_id) or category_id not in categories:
            errors.append(f"{where}: unknown category_id {category_id!r} (no such category)")
            ok = False
        corners, problem = _box(entry.get("bbox"))
        if problem:
            errors.append(f"{where}: {problem}")
            ok = False
        crowd = entry.get("iscrowd", 0)
        if crowd not in (0, 1):  # True and False are 1 and 0
            errors.append(f"{where}: iscrowd must be 0 or 1, got {crowd!r}")
            ok = False
        if ok:
            objects[image_id].append((corners, categories[category_id], bool(crowd)))
    return objects


def coco_to_csv(
    instances_json: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
) -> list[str]:
    """Converts a COCO ``instances`` file to the annotation CSV.

    The classes are the category names in the order of their ids (which may be any integers, not
    necessarily contiguous). Each annotation's ``bbox`` ``[x, y, width, height]`` (pixels) becomes
    the corners ``x, y, x + width, y + height``; ``iscrowd: 1`` annotations are kept as
    ``difficult`` boxes (evaluation ignores detections on them; they are not ordinary boxes).
    Images come in the file's order, each annotation under its image in the file's order; an
    image without annotations gets one empty-box row. Segmentations are ignored. Images are not
    opened here: ``read_annotations`` validates them when the CSV is read.

    Args:
        instances_json: The COCO file (``images``, ``categories`` and optionally ``annotations``).
        images_dir: The folder the images' ``file_name`` are relative to.
        out_csv: The CSV to write; the class list is written beside it as
            ``<csv stem>_classes.txt`` (:func:`~ssd_keras.data.csv_tools.annotation_class_list_path`).

    Returns:
        The class names (without background), in category id order.

    Raises:
        FileNotFoundError: The JSON file or the images folder does not exist.
        AnnotationError: (a ``ValueError``) listing every problem, each naming the annotation,
            image or category id: an annotation of an unknown image or category id, a malformed
            ``bbox`` or one without area, a bad ``iscrowd``, images or categories without ids,
            duplicate ids, file names or category names. Nothing is written then.
    """
    path = Path(instances_json)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    images_dir = _require_dir(images_dir, "COCO images folder")
    data = _load(path)
    errors: list[str] = []
    categories = _categories(data["categories"], errors)
    images = _images(data["images"], errors)
    objects = _objects(data.get("annotations", []), images, categories, errors)
    if not categories and not errors:
        errors.append(f"{path.name}: no category")
    if errors:
        raise AnnotationError(path, errors, _WHAT)

    csv_dir = os.path.dirname(os.path.abspath(out_csv))
    rows = []
    for image_id, file_name in images.items():
        shown = _csv_relative_path(images_dir / file_name, csv_dir)
        rows += [[shown, *map(_format_coordinate, corners), name, int(crowd)]
                 for corners, name, crowd in objects[image_id]]
        if not objects[image_id]:
            rows.append([shown, "", "", "", "", "", ""])
    class_names = [categories[key] for key in sorted(categories)]
    _write_rows_atomically(out_csv, (*ANNOTATION_COLUMNS, DIFFICULT_COLUMN), rows)
    write_class_list(class_names, annotation_class_list_path(out_csv))
    logger.info("wrote %d rows of %d COCO images to %s", len(rows), len(images), out_csv)
    return class_names


# --------------------------------------------------------------------------------------------
# CSV -> COCO


def _xywh(box: Sequence[float], decimals: int | None) -> list[float]:
    """Pixel corners as COCO's ``[x, y, width, height]``; ``decimals`` rounds the sizes (the
    corners are written as the shortest text of their float32 value, as the CSV has them)."""
    if decimals is None:
        xmin, ymin, xmax, ymax = map(float, box)
        return [xmin, ymin, xmax - xmin, ymax - ymin]
    xmin, ymin, xmax, ymax = (float(_format_coordinate(v)) for v in box)
    return [xmin, ymin, round(xmax - xmin, decimals), round(ymax - ymin, decimals)]


def coco_dataset(records: Sequence[Mapping[str, Any]], class_names: Sequence[str],
                 base_dir: str | os.PathLike[str] | None = None, decimals: int | None = _DECIMALS
                 ) -> dict[str, Any]:
    """Records (as ``read_annotations`` returns them) as a COCO ``instances`` dataset.

    Ids follow the module's numbering rule. Each box becomes an annotation with ``bbox``,
    ``area`` (width x height), ``iscrowd`` (its ``difficult`` flag) and the box as its
    ``segmentation`` polygon.

    Args:
        records: Records with ``image_path``, ``width``, ``height``, pixel ``boxes``, 1-based
            ``labels`` and optionally ``difficult``.
        class_names: The class names without background: category ``i + 1`` is ``class_names[i]``.
        base_dir: ``file_name`` is the image path relative to this folder when the image lies
            under it (absolute otherwise); ``None``: the path as the record has it.
        decimals: Widths and heights rounded to this many decimals (``None``: not rounded).

    Returns:
        ``{"info", "licenses", "images", "categories", "annotations"}``.
    """
    images, annotations = [], []
    for image_id, record in enumerate(records, start=1):
        path = record["image_path"]
        images.append({"id": image_id, "file_name": str(path) if base_dir is None else
                       _csv_relative_path(path, base_dir), "width": int(record["width"]),
                       "height": int(record["height"])})
        boxes = np.asarray(record["boxes"], np.float64).reshape(-1, 4)
        labels = np.asarray(record["labels"]).reshape(-1)
        difficult = np.asarray(record.get("difficult", np.zeros(len(labels), bool)), bool).reshape(-1)
        for box, label, crowd in zip(boxes, labels.tolist(), difficult.tolist()):
            x, y, width, height = _xywh(box, decimals)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                "bbox": [x, y, width, height], "area": width * height, "iscrowd": int(crowd),
                "segmentation": [[x, y, x + width, y, x + width, y + height, x, y + height]]})
    categories = [{"id": index, "name": name, "supercategory": ""}
                  for index, name in enumerate(class_names, start=1)]
    return {"info": {"description": "written by ssd_keras"}, "licenses": [], "images": images,
            "categories": categories, "annotations": annotations}


def csv_to_coco(
    csv_path: str | os.PathLike[str],
    out_json: str | os.PathLike[str],
    classes: Sequence[str] | str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Converts an annotation CSV to a COCO ``instances`` file.

    The CSV is read (and validated, images decoded for their sizes) by ``read_annotations``; ids
    follow the module's numbering rule; ``file_name`` is the image path relative to the CSV's
    folder as the CSV lists it (absolute for images outside it), so ``coco_to_csv(out_json,
    <the CSV's folder>, ...)`` reads it back.

    Args:
        csv_path: The annotation CSV.
        out_json: The JSON file to write (written whole or not at all).
        classes: The class list numbering the categories (names or a file); default: the class
            list an importer wrote beside the CSV (``<csv stem>_classes.txt``) when there is one,
            else the CSV's sorted class names (see
            :func:`~ssd_keras.data.csv_tools.exported_class_list`).

    Returns:
        The dataset written (see :func:`coco_dataset`).

    Raises:
        FileNotFoundError, AnnotationError, ValueError: as ``read_annotations``. Nothing is
            written then.
    """
    records, class_names = read_annotations(csv_path, exported_class_list(csv_path, classes))
    dataset = coco_dataset(records, class_names, base_dir=os.path.dirname(os.path.abspath(csv_path)))
    with atomic_open(out_json) as file:
        json.dump(dataset, file)
        file.write("\n")
    return dataset


def coco_results(image_id: int, labels: Sequence[int], scores: Sequence[float], pixel_boxes: Any,
                 decimals: int | None = None) -> list[dict[str, Any]]:
    """One image's detections in COCO's results format.

    Args:
        image_id: The image's id (see the module's numbering rule).
        labels: 1-based labels (the category ids).
        scores: Confidences.
        pixel_boxes: ``(n, 4)`` pixel corners ``[xmin, ymin, xmax, ymax]``.
        decimals: Boxes rounded to this many decimals (scores to ``decimals + 3``); ``None``:
            not rounded.

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, width, height], "score"}, ...]``.
    """
    results = []
    for label, score, box in zip(labels, scores, np.asarray(pixel_boxes, np.float64).reshape(-1, 4)):
        xmin, ymin, xmax, ymax = map(float, box)
        bbox = [xmin, ymin, xmax - xmin, ymax - ymin]
        score = float(score)
        if decimals is not None:
            bbox, score = [round(v, decimals) for v in bbox], round(score, decimals + 3)
        results.append({"image_id": int(image_id), "category_id": int(label), "bbox": bbox, "score": score})
    return results
