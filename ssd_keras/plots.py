"""matplotlib figures: detections on a picture, precision/recall curves, confusion matrices,
loss curves.

matplotlib is imported inside each function, so that importing this module costs nothing; no
pyplot state, backend or rcParams is touched except where a function creates axes for the caller
(:func:`plot_detections` without ``ax``). Pictures as arrays (OpenCV) are in
:mod:`ssd_keras.visualization`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import layout
from .visualization import (_check_image, _color_for, _pixel_boxes, _text_color, _visible_detections, class_colors,
                            label_text)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes

__all__ = ["plot_detections", "plot_pr_curves", "plot_confusion_matrix", "plot_history"]

#: Opacity of the filled label background in :func:`plot_detections`.
PLOT_LABEL_ALPHA = 0.7
#: Box line width (points) in :func:`plot_detections`.
PLOT_LINEWIDTH = 2.0


def _save(figure, path: str | os.PathLike[str] | None):
    """Writes ``figure`` as a PNG at ``path`` (folders created) when given; returns it."""
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        figure.savefig(path, dpi=100, format="png")
    return figure


def plot_detections(
    image: np.ndarray,
    detections: np.ndarray,
    class_names: Sequence[str],
    confidence_threshold: float = 0.0,
    ax: Axes | None = None,
    colors: Sequence[Sequence[int]] | None = None,
) -> Axes:
    """Show an image with its detections on matplotlib axes (notebook view).

    As in the original forward-pass notebook: ``imshow`` of the image, one
    unfilled ``Rectangle`` patch per detection in its class colour, and an
    ``ax.text`` caption ``"name score"`` at the box's top-left corner on a
    filled background of the class colour. Axes are turned off. matplotlib is
    imported here, lazily; its backend and rcParams are left alone.

    Args:
        image: RGB uint8 ``(H, W, 3)``.
        detections: ``(n, 6)`` or ``(n, 7)`` rows ``[label, confidence, xmin,
            ymin, xmax, ymax(, prior_index)]`` with normalised corners.
        class_names: Class names without background.
        confidence_threshold: Minimum confidence drawn.
        ax: Axes to draw into; a new figure and axes are created when None.
        colors: RGB uint8 colours indexed by ``label - 1`` (wrapping around);
            defaults to ``class_colors(len(class_names))``.

    Returns:
        The axes drawn into.

    Raises:
        ValueError: As :func:`draw_detections`.
    """
    from matplotlib.patches import Rectangle

    image = _check_image(image, "plot_detections")
    rows = _visible_detections(detections, confidence_threshold, "plot_detections")
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    if colors is None:
        colors = class_colors(max(1, len(class_names)))
    height, width = image.shape[:2]
    ax.imshow(image)
    for row, box in zip(rows, _pixel_boxes(rows, width, height)):
        label = int(row[layout.LABEL])
        color = _color_for(label, colors)
        mpl_color = tuple(c / 255.0 for c in color)
        xmin, ymin, xmax, ymax = (float(v) for v in box)
        ax.add_patch(
            Rectangle(
                (xmin, ymin), xmax - xmin, ymax - ymin, fill=False, edgecolor=mpl_color, linewidth=PLOT_LINEWIDTH
            )
        )
        ax.text(
            xmin,
            ymin,
            label_text(label, row[layout.CONFIDENCE], class_names),
            color=tuple(c / 255.0 for c in _text_color(color)),
            bbox={"facecolor": mpl_color, "edgecolor": mpl_color, "alpha": PLOT_LABEL_ALPHA},
        )
    ax.axis("off")
    return ax


def class_name(label: int, class_names: Sequence[str] | None) -> str:
    """The name of 1-based ``label``, or the label as text when there is no name for it."""
    return class_names[label - 1] if class_names and label <= len(class_names) else str(label)


def plot_pr_curves(result: Mapping[str, Any], class_names: Sequence[str] | None = None,
                   path: str | os.PathLike[str] | None = None):
    """Precision/recall curves of the classes with ground truth, one line each.

    Args:
        result: the dict of :func:`evaluate_detections` or :func:`evaluate_model`.
        class_names: names without background; default ``result["class_names"]``, else labels.
        path: write the figure there as a PNG (folders created) when given.

    Returns:
        A ``matplotlib.figure.Figure`` (no pyplot state is touched) with one axes: a line per
        class with ground truth, labelled ``"name (AP 0.xxx)"``, titled with the mAP.
    """
    from matplotlib.figure import Figure

    if class_names is None:
        class_names = result.get("class_names")
    evaluated = [(label, c) for label, c in result["classes"].items() if c["num_gt"]]
    figure = Figure(figsize=(7, 5))
    axes = figure.subplots()
    for label, c in evaluated:
        axes.plot(c["recall"], c["precision"], label=f"{class_name(label, class_names)} (AP {c['ap']:.3f})")
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.05)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title(f"mAP {result['mAP']:.4f} ({result.get('method', '?')}, "
                   f"IoU >= {result.get('iou_threshold', float('nan')):g})")
    axes.grid(alpha=0.3)
    if evaluated:
        axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    figure.tight_layout()
    return _save(figure, path)


def plot_confusion_matrix(result: dict[str, Any], path: str | os.PathLike[str] | None = None):
    """The confusion matrix as a picture: counts in the cells, shaded by the fraction of the row.

    Args:
        result: the dict of :func:`classification_metrics` or :func:`evaluate_marknet`.
        path: write the figure there as a PNG (folders created) when given.

    Returns:
        A ``matplotlib.figure.Figure`` (no pyplot state is touched).
    """
    from matplotlib.figure import Figure

    confusion = np.asarray(result["confusion"])
    names = result["class_names"]
    rows = confusion.sum(axis=1, keepdims=True)
    fractions = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    side = 2.5 + 0.6 * len(names)
    figure = Figure(figsize=(side + 1.0, side))
    axes = figure.subplots()
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    for (row, column), count in np.ndenumerate(confusion):
        axes.text(column, row, str(count), ha="center", va="center",
                  color="white" if fractions[row, column] > 0.5 else "black")
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"accuracy {result['accuracy']:.4f} ({result['num_images']} images)")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the true class")
    figure.tight_layout()
    return _save(figure, path)


def plot_history(rows: Sequence[Mapping[str, str]], path: str | os.PathLike[str] | None = None,
                 ylabel: str = "MultiboxLoss"):
    """Loss curves of a training run, from its ``history.csv`` rows (``epoch`` 0-based, ``loss``,
    ``val_loss``): a line for each key that every row has.

    Returns:
        A ``matplotlib.figure.Figure`` (no pyplot state is touched).
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    epochs = [int(r["epoch"]) + 1 for r in rows]
    for key in ("loss", "val_loss"):
        values = [float(r[key]) for r in rows if r.get(key)]
        if len(values) == len(rows):
            axes.plot(epochs, values, marker="o", label=key)
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return _save(figure, path)
