"""The dataset check: what an annotation CSV holds, what is wrong with it, and how well the model's
priors fit its boxes (``python -m ssd_keras csv check``).

:func:`check_dataset` reads the CSV row by row like :func:`ssd_keras.data.read_annotations` but,
instead of stopping at the first bad file, counts each kind of problem:

- ``degenerate``: boxes with ``xmin >= xmax`` or ``ymin >= ymax`` as written;
- ``outside``: boxes with nothing left inside their image once clipped to it;
- ``clipped``: boxes reaching outside their image (``read_annotations`` clips them, with an
  ``AnnotationWarning``);
- ``tiny``: boxes under :data:`TINY_PIXELS` wide or high once the image is resized to the network
  input (what the model sees);
- ``duplicate``: boxes of the same class in the same image with IoU >= :data:`DUPLICATE_IOU` with an
  earlier box;
- ``invalid_rows``: every other row ``read_annotations`` rejects (bad numbers, unknown class, ...),
  and ``unreadable_images``: missing or undecodable images (their boxes are left out).

The statistics (sizes, aspect ratios, prior coverage) are of the usable boxes: clipped, not
degenerate, of readable images, ``difficult`` ones included. Sizes are ``sqrt(w * h)`` and aspect
ratios ``w / h`` at the network input, as the priors see the boxes. *Prior coverage* is the share
of boxes whose best IoU with the model's priors reaches the matching threshold (0.5), overall and
per size bucket. This module imports no TensorFlow.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..boxes import clip_boxes, iou_matrix, to_normalized
from ..image import probe_images
from ..priors import COVERAGE_IOU, DEFAULT_PRIORS, PriorConfig, as_prior_config, best_ious, box_extents, box_sizes
from .annotations import _read_rows
from .classes import read_class_list

__all__ = ["DatasetCheck", "check_dataset", "suggest", "format_check", "plot_check", "TINY_PIXELS", "DUPLICATE_IOU",
           "SIZE_BUCKETS", "PROBLEMS"]

TINY_PIXELS = 4.0
"""Boxes narrower or lower than this at the network input count as tiny."""
DUPLICATE_IOU = 0.95
"""Boxes of one class in one image overlapping an earlier one at least this much are duplicates."""
SIZE_BUCKETS = (0.0, 16.0, 32.0, 64.0, 128.0, float("inf"))
"""Edges of the size buckets (``sqrt(w * h)`` at the network input, pixels)."""
PROBLEMS = ("degenerate", "outside", "clipped", "tiny", "duplicate", "invalid_rows", "unreadable_images")
"""The kinds of problem counted, in the order they are reported."""
_QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
_LISTED = 10  # problem lines kept per kind
_DEGENERATE_MESSAGE = "degenerate box"  # how annotations.py words that row error


@dataclass
class DatasetCheck:
    """The result of :func:`check_dataset`.

    Attributes:
        summary: the report as JSON-ready data (what ``--json`` writes; keys in the module
            docstring and :func:`check_dataset`).
        boxes: ``(n, 4)`` normalised corners of the usable boxes.
        labels: ``(n,)`` class names of those boxes.
        best_iou: ``(n,)`` each box's best IoU with the priors.
        priors: the prior configuration the coverage is of.
        input_shape: the network input the sizes and priors are at.
    """

    summary: dict[str, Any]
    boxes: np.ndarray
    labels: np.ndarray
    best_iou: np.ndarray
    priors: PriorConfig
    input_shape: tuple[int, int, int]
    suggestion: Any = None
    suggested_iou: np.ndarray | None = field(default=None, repr=False)


def _quantiles(values: np.ndarray) -> dict[str, float] | None:
    if not len(values):
        return None
    names = ("min", "p5", "p25", "median", "p75", "p95", "max")
    return {name: round(float(v), 4) for name, v in zip(names, np.quantile(values, _QUANTILES))}


def _bucket_name(low: float, high: float) -> str:
    return f">= {low:g} px" if high == float("inf") else f"{low:g}-{high:g} px"


def _coverage_rows(sizes: np.ndarray, best: np.ndarray) -> list[dict[str, Any]]:
    rows = []
    for low, high in zip(SIZE_BUCKETS[:-1], SIZE_BUCKETS[1:]):
        inside = (sizes >= low) & (sizes < high)
        count = int(np.count_nonzero(inside))
        rows.append({"bucket": _bucket_name(low, high), "boxes": count,
                     "prior_coverage": float(np.mean(best[inside] >= COVERAGE_IOU)) if count else None,
                     "mean_best_iou": float(np.mean(best[inside])) if count else None})
    return rows


def _duplicates(boxes: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Which boxes repeat an earlier box of the same class (IoU >= DUPLICATE_IOU), ``(n,)`` bool."""
    repeated = np.zeros(len(boxes), dtype=bool)
    names = np.asarray(names, dtype=object)
    for name in set(names.tolist()):
        index = np.flatnonzero(names == name)
        if len(index) < 2:
            continue
        overlaps = np.triu(iou_matrix(boxes[index], boxes[index]) >= DUPLICATE_IOU, k=1)
        repeated[index[overlaps.any(axis=0)]] = True
    return repeated


def check_dataset(csv_path: str | os.PathLike[str], classes: Sequence[str] | str | os.PathLike[str] | None = None,
                  priors: PriorConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
                  input_shape: Sequence[int] = (300, 300, 3)) -> DatasetCheck:
    """Checks an annotation CSV (module docstring).

    Args:
        csv_path: the annotation CSV.
        classes: the class list (names or a file); default: the CSV's class names (a box of a
            class outside a given list is an invalid row).
        priors: the prior configuration to measure (a :class:`~ssd_keras.priors.PriorConfig`, its
            JSON object or file); default: SSD300's 7308 priors.
        input_shape: the network input ``(height, width, channels)``.

    Returns:
        A :class:`DatasetCheck`. Its ``summary`` holds ``csv``, ``images``, ``boxes``,
        ``boxes_per_class``, ``images_without_boxes``, ``problems`` (a count per kind of
        :data:`PROBLEMS`), ``problem_lines`` (up to 10 examples per kind), ``box_size`` /
        ``box_width`` / ``box_height`` / ``aspect_ratio`` (quantiles at the network input),
        ``priors`` (the configuration, its prior count), ``prior_coverage`` (a share) with
        ``mean_best_iou``, and ``size_buckets`` (per bucket: boxes, prior_coverage, mean_best_iou).

    Raises:
        FileNotFoundError: no such CSV.
        AnnotationError: the header is unusable (nothing can be read).
    """
    csv_path = os.fspath(csv_path)
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"annotation CSV not found: {csv_path}")
    config = as_prior_config(priors)
    input_shape = tuple(int(v) for v in input_shape)
    class_names = None if classes is None else read_class_list(classes)
    class_index = None if class_names is None else {name: i + 1 for i, name in enumerate(class_names)}
    images, errors = _read_rows(csv_path, class_index)
    name = os.path.basename(csv_path)
    counts = Counter({kind: 0 for kind in PROBLEMS})
    lines: dict[str, list[str]] = {kind: [] for kind in PROBLEMS}

    def note(kind: str, line: int, message: str) -> None:
        counts[kind] += 1
        if len(lines[kind]) < _LISTED:
            lines[kind].append(f"{name} line {line}: {message}")

    for line, message in sorted(errors):
        note("degenerate" if message.startswith(_DEGENERATE_MESSAGE) else "invalid_rows", line, message)
    keys = list(images)
    all_boxes, all_names, usable_images, empty_images = [], [], 0, 0
    for key, size in zip(keys, probe_images(keys)):
        image = images[key]
        if isinstance(size, str):
            reason = "image not found" if not os.path.exists(key) else f"unreadable image ({size})"
            note("unreadable_images", image.first_line, f"{reason}: {image.shown}")
            continue
        usable_images += 1
        width, height = size
        raw = np.array([box[1] for box in image.boxes], dtype=np.float32).reshape(-1, 4)
        inside = clip_boxes(raw, width, height)
        keep = (inside[:, 0] < inside[:, 2]) & (inside[:, 1] < inside[:, 3])
        moved = np.any(inside != raw, axis=1)
        for row in range(len(raw)):
            line = image.boxes[row][0]
            shown = ", ".join(f"{v:g}" for v in raw[row])
            if not keep[row]:
                note("outside", line, f"box ({shown}) has nothing inside the {width}x{height} image {image.shown}")
            elif moved[row]:
                note("clipped", line, f"box ({shown}) reaches outside the {width}x{height} image {image.shown}")
        normalized = to_normalized(inside[keep], width, height)
        labels = [box[2] for box, kept in zip(image.boxes, keep) if kept]
        box_lines = [box[0] for box, kept in zip(image.boxes, keep) if kept]
        box_w, box_h = box_extents(normalized, input_shape)
        for row in np.flatnonzero((box_w < TINY_PIXELS) | (box_h < TINY_PIXELS)):
            note("tiny", box_lines[row], f"box {box_w[row]:.3g}x{box_h[row]:.3g} px at the "
                                         f"{input_shape[1]}x{input_shape[0]} input in {image.shown}")
        for row in np.flatnonzero(_duplicates(normalized, labels)):
            note("duplicate", box_lines[row], f"box of {labels[row]} repeats an earlier one in {image.shown}")
        if not len(labels):
            empty_images += 1
        all_boxes.append(normalized)
        all_names += labels

    boxes = np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4))
    labels = np.asarray(all_names, dtype=object)
    prior_array = config.priors(input_shape)
    best = best_ious(boxes, prior_array)
    width, height = box_extents(boxes, input_shape)
    sizes, ratios = box_sizes(boxes, input_shape)
    per_class = Counter(all_names)
    order = class_names if class_names is not None else sorted(per_class)
    summary = {
        "csv": os.path.abspath(csv_path),
        "input_shape": list(input_shape),
        "images": len(keys),
        "boxes": int(len(boxes)),
        "boxes_per_class": {c: int(per_class.get(c, 0)) for c in order},
        "images_without_boxes": empty_images,
        "problems": {kind: int(counts[kind]) for kind in PROBLEMS},
        "problem_lines": {kind: lines[kind] for kind in PROBLEMS if lines[kind]},
        "box_size": _quantiles(sizes),
        "box_width": _quantiles(width),
        "box_height": _quantiles(height),
        "aspect_ratio": _quantiles(ratios),
        "priors": {"config": config.to_dict(), "num_priors": int(len(prior_array)),
                   "default": config == DEFAULT_PRIORS},
        "coverage_iou": COVERAGE_IOU,
        "prior_coverage": float(np.mean(best >= COVERAGE_IOU)) if len(boxes) else None,
        "mean_best_iou": float(np.mean(best)) if len(boxes) else None,
        "size_buckets": _coverage_rows(sizes, best),
    }
    return DatasetCheck(summary, boxes, labels, best, config, input_shape)


def suggest(check: DatasetCheck, max_priors: int = 20_000) -> DatasetCheck:
    """Adds a prior suggestion (:func:`ssd_keras.prior_search.suggest_priors`) to a check: its
    summary gets ``suggested_priors`` (config, num_priors, prior_coverage, size_buckets, steps)."""
    from ..prior_search import suggest_priors

    result = suggest_priors(check.boxes, check.input_shape, max_priors=max_priors)
    check.suggestion = result
    check.suggested_iou = best_ious(check.boxes, result.config.priors(check.input_shape))
    sizes, _ = box_sizes(check.boxes, check.input_shape)
    check.summary["suggested_priors"] = {
        "config": result.config.to_dict(), "num_priors": result.num_priors, "max_priors": int(max_priors),
        "prior_coverage": result.coverage, "mean_best_iou": float(np.mean(check.suggested_iou)),
        "size_buckets": _coverage_rows(sizes, check.suggested_iou),
        "steps": [{"step": step, "num_priors": total, "coverage": cover} for step, total, cover in result.steps]}
    return check


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_check(check: DatasetCheck) -> str:
    """The check as text (what ``csv check`` prints)."""
    s = check.summary
    h, w = s["input_shape"][:2]
    out = [f"{s['csv']}: {s['images']} images ({s['images_without_boxes']} without boxes), {s['boxes']} usable "
           f"boxes, {len(s['boxes_per_class'])} classes",
           "boxes per class: " + ", ".join(f"{c} {n}" for c, n in s["boxes_per_class"].items())]
    problems = s["problems"]
    out.append("problems: " + ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in problems.items()))
    for kind, examples in s["problem_lines"].items():
        more = problems[kind] - len(examples)
        out += [f"  {example}" for example in examples] + ([f"  ... and {more} more {kind}"] if more > 0 else [])
    for key, what in (("box_size", "box size sqrt(w*h)"), ("box_width", "box width"), ("box_height", "box height"),
                      ("aspect_ratio", "aspect ratio w/h")):
        q = s[key]
        if q is not None:
            unit = "" if key == "aspect_ratio" else " px"
            out.append(f"{what} at {w}x{h}: min {q['min']:.3g}, 5% {q['p5']:.3g}, median {q['median']:.3g}, "
                       f"95% {q['p95']:.3g}, max {q['max']:.3g}{unit}")
    which = "the default configuration" if s["priors"]["default"] else "the given configuration"
    out.append(f"prior coverage (best IoU >= {s['coverage_iou']:g} with the {s['priors']['num_priors']} priors of "
               f"{which}): {_percent(s['prior_coverage'])}")
    suggested = s.get("suggested_priors")
    for index, row in enumerate(s["size_buckets"]):
        after = f" -> {_percent(suggested['size_buckets'][index]['prior_coverage'])}" if suggested else ""
        out.append(f"  {row['bucket']:>12s}: {row['boxes']:6d} boxes, {_percent(row['prior_coverage'])}{after}")
    if suggested:
        out.append(f"suggested priors: {suggested['num_priors']} priors (budget {suggested['max_priors']}), coverage "
                   f"{_percent(s['prior_coverage'])} -> {_percent(suggested['prior_coverage'])}")
        out += [f"  {line}" for line in check.suggestion.config.describe(check.input_shape).splitlines()]
    return "\n".join(out)


def _prior_points(config: PriorConfig) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Per head: its name and its priors' sizes and aspect ratios (one point per prior shape)."""
    points = []
    for head in config.heads:
        widths, heights = head.shapes()
        points.append((head.source, np.sqrt(widths * heights), widths / heights))
    return points


_SOURCE_COLORS = {"conv3_3": "tab:cyan", "conv4_3": "tab:green", "fc7": "tab:orange", "conv6_2": "tab:purple",
                  "conv7_2": "tab:brown", "conv8_2": "tab:pink", "pool6": "tab:olive"}


def _plain_ticks(axes, sizes: np.ndarray, ratios: np.ndarray) -> None:
    """Log axes with plain tick labels: sizes in powers of two, ratios as 1/3 .. 3."""
    from matplotlib.ticker import NullFormatter

    low, high = axes.get_xlim()
    ticks = [f * 2.0 ** k for k in range(0, 12) for f in (1.0, 1.5) if low <= f * 2.0 ** k <= high]
    axes.set_xticks(ticks, [f"{t:g}" for t in ticks])
    low, high = axes.get_ylim()
    marks = [(1 / 8, "1/8"), (1 / 5, "1/5"), (1 / 3, "1/3"), (1 / 2, "1/2"), (1, "1"), (2, "2"), (3, "3"), (5, "5"),
             (8, "8")]
    shown = [(value, text) for value, text in marks if low <= value <= high]
    axes.set_yticks([value for value, _ in shown], [text for _, text in shown])
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_minor_formatter(NullFormatter())


def plot_check(check: DatasetCheck, path: str | os.PathLike[str] | None = None):
    """The check as a picture: box size against aspect ratio (covered and uncovered boxes, and the
    priors' shapes per head, the suggested ones too when there are), and the best-IoU histogram.

    Returns:
        A ``matplotlib.figure.Figure`` (no pyplot state is touched), written as a PNG to ``path``
        (folders created) when given.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    s = check.summary
    h, w = check.input_shape[:2]
    sizes, ratios = box_sizes(check.boxes, check.input_shape)
    covered = check.best_iou >= COVERAGE_IOU
    figure = Figure(figsize=(14, 7), layout="constrained")
    scatter, histogram = figure.subplots(1, 2, width_ratios=[1.35, 1])
    dot = max(2.0, min(14.0, 4000.0 / max(1, len(sizes))))
    scatter.scatter(sizes[~covered], ratios[~covered], s=dot, color="tab:red", alpha=0.45, linewidths=0,
                    label=f"boxes not covered by the {'default' if s['priors']['default'] else 'given'} priors "
                          f"({np.count_nonzero(~covered)})")
    scatter.scatter(sizes[covered], ratios[covered], s=dot, color="tab:blue", alpha=0.45, linewidths=0,
                    label=f"boxes covered ({np.count_nonzero(covered)})")
    which = "default" if s["priors"]["default"] else "given"
    for index, (source, prior_sizes, prior_ratios) in enumerate(_prior_points(check.priors)):
        scatter.scatter(prior_sizes, prior_ratios, marker="x", s=130 - 12 * index, linewidths=2.2,
                        color=_SOURCE_COLORS[source], label=f"{which} priors: {source}")
    if check.suggestion is not None:
        for index, (source, prior_sizes, prior_ratios) in enumerate(_prior_points(check.suggestion.config)):
            # concentric when heads share a shape
            scatter.scatter(prior_sizes, prior_ratios, marker="o", s=260 - 70 * min(index, 3), facecolors="none",
                            linewidths=2.2, edgecolors=_SOURCE_COLORS[source], label=f"suggested priors: {source}")
    scatter.set_xscale("log")
    scatter.set_yscale("log")
    _plain_ticks(scatter, sizes, ratios)
    scatter.set_xlabel(f"size sqrt(w * h) at the {w}x{h} input (px)", fontsize=12)
    scatter.set_ylabel("aspect ratio w / h", fontsize=12)
    scatter.set_title(f"{s['boxes']} boxes of {s['images']} images, and the priors' shapes", fontsize=13)
    scatter.grid(alpha=0.3, which="both")

    bins = np.linspace(0.0, 1.0, 41)
    histogram.hist(check.best_iou, bins=bins, color="tab:blue", alpha=0.6,
                   label=f"{which} priors ({s['priors']['num_priors']}): {_percent(s['prior_coverage'])} covered")
    if check.suggestion is not None:
        suggested = s["suggested_priors"]
        histogram.hist(check.suggested_iou, bins=bins, histtype="step", linewidth=2.5, color="tab:orange",
                       label=f"suggested priors ({suggested['num_priors']}): "
                             f"{_percent(suggested['prior_coverage'])} covered")
    histogram.axvline(COVERAGE_IOU, color="black", linestyle="--", linewidth=1.5,
                      label=f"matching threshold {COVERAGE_IOU:g}")
    histogram.set_xlabel("best IoU of a box with any prior", fontsize=12)
    histogram.set_ylabel("boxes", fontsize=12)
    histogram.set_title("prior coverage", fontsize=13)
    histogram.yaxis.set_major_locator(MaxNLocator(integer=True))
    histogram.grid(alpha=0.3)
    histogram.legend(fontsize=10, loc="upper left")
    for axes in (scatter, histogram):
        axes.tick_params(labelsize=10)
    figure.legend(*scatter.get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=10,
                  frameon=False)
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        figure.savefig(path, dpi=100, format="png")
    return figure
