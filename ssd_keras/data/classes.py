"""Class lists (one name per line, no background; VOC's), and the errors of data files.

:class:`AnnotationError` lists every offending line of a file in one message, so that a dataset
is fixed in one round trip. This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["VOC_CLASSES", "AnnotationError", "AnnotationWarning", "BACKGROUND_NAME", "MAX_REPORTED_ERRORS",
           "read_class_list", "write_class_list"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
"""The 20 Pascal VOC classes of the published weights, without background (label i+1 is name i)."""

BACKGROUND_NAME = "background"
MAX_REPORTED_ERRORS = 20
"""How many offending lines an error message lists before it only counts the rest."""


class AnnotationWarning(UserWarning):
    """Annotations were read but changed on the way (for example boxes clipped to the image)."""


class AnnotationError(ValueError):
    """An annotation file (or class list) is invalid.

    Attributes:
        path: The offending file.
        errors: Every problem found, one string each (``"train.csv line 7: image not found:
            img/7.jpg"``); the message lists the first ``MAX_REPORTED_ERRORS`` of them.
    """

    def __init__(self, path: str | os.PathLike[str], errors: Sequence[str], what: str = "annotations") -> None:
        self.path = os.fspath(path)
        self.errors = list(errors)
        self.what = what
        super().__init__(_error_summary(f"invalid {what} in {self.path}", self.errors))

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.errors, self.what)


def _error_summary(title: str, errors: Sequence[str]) -> str:
    """``title``, the error count and the first ``MAX_REPORTED_ERRORS`` errors, one per line.

    Args:
        title: What is invalid, naming the file.
        errors: One string per problem.

    Returns:
        A multi-line message ending with ``... and N more`` when errors were left out.
    """
    count = len(errors)
    lines = [f"{title}: {count} error{'s' if count != 1 else ''}"]
    lines += [f"  {error}" for error in errors[:MAX_REPORTED_ERRORS]]
    if count > MAX_REPORTED_ERRORS:
        lines.append(f"  ... and {count - MAX_REPORTED_ERRORS} more")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# class lists


def read_class_list(spec: Sequence[str] | str | os.PathLike[str]) -> list[str]:
    """The class names of a dataset, without background.

    Args:
        spec: A list or tuple of names, or a path to a UTF-8 text file with one name per line.
            In a file, blank lines and lines starting with ``#`` are ignored and names are
            stripped of surrounding whitespace. A first name ``background`` (any case; the
            original port's convention) is dropped, in files and lists alike.

    Returns:
        The names in their given order; name ``i`` is detection label ``i + 1``.

    Raises:
        FileNotFoundError: ``spec`` is a path that does not exist.
        ValueError: The list is empty (after dropping background), holds duplicates, empty
            names, or ``background`` in another place than the first; the message names the
            file (or says it is the given list).
        TypeError: ``spec`` is neither a path nor a list/tuple of strings.
    """
    if isinstance(spec, (str, os.PathLike)):
        path = os.fspath(spec)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"class list file not found: {path}")
        with open(path, encoding="utf-8-sig") as file:
            entries = [
                (f"line {number}", line.strip())
                for number, line in enumerate(file, start=1)
                if line.strip() and not line.strip().startswith("#")
            ]
        source = f"class list {path}"
    elif isinstance(spec, (list, tuple)):
        for name in spec:
            if not isinstance(name, str):
                raise TypeError(f"class names must be strings, got {name!r} ({type(name).__name__})")
        entries = [(f"item {index}", name.strip()) for index, name in enumerate(spec)]
        source = "the given class list"
    else:
        raise TypeError(
            f"classes must be a list/tuple of names or a path to a class list file, got {type(spec).__name__}"
        )

    if entries and entries[0][1].lower() == BACKGROUND_NAME:
        entries = entries[1:]
    if not entries:
        raise ValueError(f"{source} is empty: expected at least one class name (background excluded)")
    problems = []
    first_seen: dict[str, str] = {}
    for where, name in entries:
        if not name:
            problems.append(f"{where}: empty class name")
        elif name.lower() == BACKGROUND_NAME:
            problems.append(f"{where}: {name!r} is reserved for label 0 and may only be the first name")
        elif name in first_seen:
            problems.append(f"{where}: duplicate class name {name!r} (first at {first_seen[name]})")
        else:
            first_seen[name] = where
    if problems:
        raise ValueError(f"invalid {source}: " + "; ".join(problems))
    return [name for _, name in entries]


def write_class_list(class_names: Sequence[str], path: str | os.PathLike[str]) -> Path:
    """Writes one class name per line (no background), as ``read_class_list`` reads them back."""
    for name in class_names:
        if name != name.strip() or not name or name.startswith("#") or "\n" in name or "\r" in name:
            raise ValueError(f"class name {name!r} cannot be written to a class list file "
                             "(empty, surrounding whitespace, a line break or a leading '#')")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name}\n" for name in class_names), encoding="utf-8")
    return path
