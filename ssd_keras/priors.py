"""Prior (default box) configurations of SSD300, and their boxes, in NumPy.

A :class:`PriorConfig` lists SSD300's prediction heads: per head the backbone feature layer it
reads (:data:`SOURCES`), its prior sizes and aspect ratios (:class:`HeadSpec`, the original
``PriorBox`` arguments). :data:`DEFAULT_PRIORS` is the original network's six heads (7308 priors
at 300x300). ``SSD300(priors=config)`` builds the heads of a config, and
:meth:`PriorConfig.priors` gives the same boxes as ``prior_boxes(SSD300(..., priors=config))``
without building a model: the feature-map size of every source layer at an input size is
computed here by the same shape arithmetic as the network (:func:`feature_map_sizes`).

As JSON (``PriorConfig.save`` / ``load``; sizes in pixels of the network input)::

    {"heads": [{"source": "conv4_3", "min_size": 30.0, "max_size": null, "aspect_ratios": [2.0]},
               {"source": "fc7", "min_size": 60.0, "max_size": 114.0, "aspect_ratios": [2.0, 3.0]},
               ...]}

Heads on ``conv3_3`` and ``conv4_3`` read the layer L2-normalised (``Normalize``, scale 20, layers
``conv3_3_norm`` / ``conv4_3_norm``), as the original does for ``conv4_3``: these early layers have
much larger activations than the later ones, and the normalisation keeps every head's input on a
similar scale. This module imports NumPy only.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .boxes import iou_with_columns, to_pixels
from .checks import positive_number

__all__ = ["SOURCES", "NORMALIZED_SOURCES", "VARIANCES", "HeadSpec", "PriorConfig", "DEFAULT_PRIORS",
           "feature_map_sizes", "prior_box_grid", "expand_aspect_ratios", "as_prior_config", "best_ious",
           "COVERAGE_IOU", "box_extents", "box_sizes"]

SOURCES: tuple[str, ...] = ("conv3_3", "conv4_3", "fc7", "conv6_2", "conv7_2", "conv8_2", "pool6")
"""The backbone feature layers a head may read, finest first (strides 4, 8, 16, 30, 60, 100, 300
at 300x300)."""
NORMALIZED_SOURCES: tuple[str, ...] = ("conv3_3", "conv4_3")
"""Sources read through an L2 ``Normalize`` layer named ``<source>_norm``."""
VARIANCES = (0.1, 0.1, 0.2, 0.2)
COVERAGE_IOU = 0.5
"""The matching threshold: a box is covered when some prior reaches this IoU with it."""


def feature_map_sizes(input_shape: Sequence[int] = (300, 300, 3)) -> dict[str, tuple[int, int]]:
    """``(height, width)`` of every source layer's output for an input ``(height, width, channels)``.

    The network's shape arithmetic: 2x2/2 "same" pools after blocks 1-4 (``ceil(n / 2)``), pool5,
    fc6 and fc7 keep the size, conv6_2 and conv8_2 are 3x3/2 "same" (``ceil(n / 2)``), conv7_2 a
    3x3/2 "valid" convolution after one pixel of zero padding (``(n - 1) // 2 + 1``), pool6 is a
    global pool (1x1).
    """
    sizes = {}
    dims = [int(input_shape[0]), int(input_shape[1])]
    if len(input_shape) != 3 or min(dims) < 1:
        raise ValueError(f"input_shape must be (height, width, channels) with positive sizes, got {input_shape}")

    def halve(values: list[int]) -> list[int]:
        return [math.ceil(v / 2) for v in values]

    dims = halve(halve(dims))  # pool1, pool2
    sizes["conv3_3"] = tuple(dims)
    dims = halve(dims)  # pool3
    sizes["conv4_3"] = tuple(dims)
    dims = halve(dims)  # pool4; pool5 (3x3/1), fc6, fc7 keep it
    sizes["fc7"] = tuple(dims)
    dims = halve(dims)
    sizes["conv6_2"] = tuple(dims)
    dims = [(v - 1) // 2 + 1 for v in dims]
    sizes["conv7_2"] = tuple(dims)
    dims = halve(dims)
    sizes["conv8_2"] = tuple(dims)
    sizes["pool6"] = (1, 1)
    return sizes


def expand_aspect_ratios(max_size: float | None, aspect_ratios: Sequence[float] | None,
                         flip: bool = True) -> list[float]:
    """The original port's ratio list: ``[1]``, a second ``1`` with ``max_size``, then each new
    ratio and (with ``flip``) its inverse."""
    ratios = [1.0]
    if max_size:
        ratios.append(1.0)
    for ratio in aspect_ratios or ():
        if ratio in ratios:
            continue
        ratios.append(float(ratio))
        if flip:
            ratios.append(1.0 / ratio)
    return ratios


def _prior_shapes(min_size: float, max_size: float | None, aspect_ratios: Sequence[float] | None,
                  flip: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Widths and heights (pixels) of the priors of one cell, in the original's order."""
    widths, heights = [], []
    for ratio in expand_aspect_ratios(max_size, aspect_ratios, flip):
        if ratio == 1 and not widths:
            widths.append(min_size)
            heights.append(min_size)
        elif ratio == 1:
            side = np.sqrt(min_size * max_size)
            widths.append(side)
            heights.append(side)
        else:
            widths.append(min_size * np.sqrt(ratio))
            heights.append(min_size / np.sqrt(ratio))
    return np.asarray(widths, dtype=np.float64), np.asarray(heights, dtype=np.float64)


def prior_box_grid(img_size: Sequence[float], feature_size: Sequence[int], min_size: float,
                   max_size: float | None = None, aspect_ratios: Sequence[float] | None = None,
                   flip: bool = True, variances: Sequence[float] = (0.1,),
                   clip: bool = True) -> np.ndarray:
    """Default boxes of one SSD head, computed in NumPy (float64) exactly as the original port.

    Args:
        img_size: ``(width, height)`` of the network input in pixels.
        feature_size: ``(width, height)`` of the feature map the head reads.
        min_size, max_size, aspect_ratios, flip, variances, clip: see
            :class:`ssd_keras.ssd_layers.PriorBox`.

    Returns:
        ``(feature_h * feature_w * num_ratios, 8)`` rows ``[xmin, ymin, xmax, ymax, v0, v1, v2,
        v3]``: corners normalised by the image size, grid row-major (y outer, x inner), the
        priors of one cell consecutive.
    """
    img_width, img_height = img_size
    layer_width, layer_height = feature_size
    widths, heights = _prior_shapes(min_size, max_size, aspect_ratios, flip)
    half_w = 0.5 * widths
    half_h = 0.5 * heights

    step_x = img_width / layer_width
    step_y = img_height / layer_height
    lin_x = np.linspace(0.5 * step_x, img_width - 0.5 * step_x, layer_width)
    lin_y = np.linspace(0.5 * step_y, img_height - 0.5 * step_y, layer_height)
    centers_x, centers_y = np.meshgrid(lin_x, lin_y)  # (h, w), y outer
    cx = centers_x.reshape(-1, 1)
    cy = centers_y.reshape(-1, 1)

    boxes = np.stack([(cx - half_w) / img_width, (cy - half_h) / img_height,
                      (cx + half_w) / img_width, (cy + half_h) / img_height], axis=-1)
    boxes = boxes.reshape(-1, 4)  # (cells * ratios, 4), priors of one cell consecutive
    if clip:
        boxes = np.clip(boxes, 0.0, 1.0)
    variances = np.broadcast_to(np.asarray(variances, dtype=np.float64), (len(boxes), 4))
    return np.concatenate([boxes, variances], axis=1)


@dataclass(frozen=True)
class HeadSpec:
    """One prediction head: the backbone layer it reads and its default boxes.

    Attributes:
        source: one of :data:`SOURCES` (``conv4_3_norm`` / ``conv3_3_norm`` are accepted for
            ``conv4_3`` / ``conv3_3``).
        min_size: side of the first square prior, pixels of the network input.
        max_size: with it, a second square of side ``sqrt(min_size * max_size)``.
        aspect_ratios: extra ratios ``r`` (``w / h``), each with its inverse: boxes
            ``min_size * sqrt(r)`` wide and ``min_size / sqrt(r)`` high.
    """

    source: str
    min_size: float
    max_size: float | None = None
    aspect_ratios: tuple[float, ...] = ()

    def __post_init__(self):
        source = str(self.source)
        if source.endswith("_norm") and source[:-len("_norm")] in NORMALIZED_SOURCES:
            source = source[:-len("_norm")]
        if source not in SOURCES:
            raise ValueError(f"head source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        min_size = positive_number(self.min_size, "min_size")
        max_size = None if self.max_size is None else positive_number(self.max_size, "max_size")
        if max_size is not None and max_size < min_size:
            raise ValueError(f"head {source}: max_size ({max_size:g}) must not be smaller than min_size "
                             f"({min_size:g})")
        ratios = tuple(positive_number(r, "aspect ratio") for r in (self.aspect_ratios or ()))
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "min_size", min_size)
        object.__setattr__(self, "max_size", max_size)
        object.__setattr__(self, "aspect_ratios", ratios)

    @property
    def layer(self) -> str:
        """The layer the head reads, which also prefixes its layers' names (``conv4_3_norm``)."""
        return f"{self.source}_norm" if self.source in NORMALIZED_SOURCES else self.source

    @property
    def num_priors(self) -> int:
        """Priors per feature-map cell."""
        return len(expand_aspect_ratios(self.max_size, self.aspect_ratios))

    def shapes(self) -> tuple[np.ndarray, np.ndarray]:
        """Widths and heights (pixels) of the priors of one cell."""
        return _prior_shapes(self.min_size, self.max_size, self.aspect_ratios)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "min_size": self.min_size, "max_size": self.max_size,
                "aspect_ratios": list(self.aspect_ratios)}


@dataclass(frozen=True)
class PriorConfig:
    """The heads of an SSD300 model, in output order (at least one, one per source layer)."""

    heads: tuple[HeadSpec, ...]

    def __post_init__(self):
        heads = tuple(h if isinstance(h, HeadSpec) else HeadSpec(**h) for h in self.heads)
        if not heads:
            raise ValueError("a prior configuration needs at least one head")
        sources = [h.source for h in heads]
        repeated = sorted({s for s in sources if sources.count(s) > 1})
        if repeated:
            raise ValueError(f"one head per source layer: {', '.join(repeated)} has several")
        object.__setattr__(self, "heads", heads)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PriorConfig:
        """From its JSON object (``{"heads": [{"source", "min_size", "max_size", "aspect_ratios"}]}``)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("heads"), list):
            raise ValueError('a prior configuration is a JSON object {"heads": [...]}')
        heads = []
        for index, head in enumerate(data["heads"]):
            if not isinstance(head, Mapping):
                raise ValueError(f"prior configuration: head {index} is not an object")
            unknown = sorted(set(head) - {"source", "min_size", "max_size", "aspect_ratios"})
            if unknown or "source" not in head or "min_size" not in head:
                raise ValueError(f"prior configuration: head {index} needs source and min_size (and may have "
                                 f"max_size, aspect_ratios); unknown keys: {', '.join(unknown) or 'none'}")
            heads.append(HeadSpec(head["source"], head["min_size"], head.get("max_size"),
                                  tuple(head.get("aspect_ratios") or ())))
        return cls(tuple(heads))

    def to_dict(self) -> dict[str, Any]:
        return {"heads": [head.to_dict() for head in self.heads]}

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PriorConfig:
        """Reads a JSON prior configuration file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"prior configuration not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is not a prior configuration (JSON): {err}") from None
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Writes the configuration as JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def head_priors(self, input_shape: Sequence[int] = (300, 300, 3)) -> list[np.ndarray]:
        """Each head's priors ``(cells * num_priors, 8)`` float64, as its PriorBox layer makes them."""
        sizes = feature_map_sizes(input_shape)
        img_size = (input_shape[1], input_shape[0])
        return [prior_box_grid(img_size, sizes[h.source][::-1], h.min_size, h.max_size, h.aspect_ratios,
                               variances=VARIANCES) for h in self.heads]

    def priors(self, input_shape: Sequence[int] = (300, 300, 3)) -> np.ndarray:
        """``(num_priors, 8)`` float32: what ``prior_boxes(SSD300(input_shape, priors=self))`` returns."""
        return np.concatenate(self.head_priors(input_shape), axis=0).astype(np.float32)

    def num_priors(self, input_shape: Sequence[int] = (300, 300, 3)) -> int:
        sizes = feature_map_sizes(input_shape)
        return sum(h.num_priors * sizes[h.source][0] * sizes[h.source][1] for h in self.heads)

    def describe(self, input_shape: Sequence[int] = (300, 300, 3)) -> str:
        """One line per head: source, grid, sizes, ratios, prior count."""
        sizes = feature_map_sizes(input_shape)
        lines = []
        for h in self.heads:
            rows, cols = sizes[h.source]
            extra = f", max {h.max_size:g}" if h.max_size else ""
            ratios = ", ".join(f"{r:.3g}" for r in h.aspect_ratios) or "none"
            lines.append(f"{h.source:8s} {rows}x{cols} cells, min {h.min_size:.3g}{extra}, ratios {ratios}: "
                         f"{h.num_priors * rows * cols} priors")
        return "\n".join(lines)


DEFAULT_PRIORS = PriorConfig((
    HeadSpec("conv4_3", 30.0, None, (2.0,)),
    HeadSpec("fc7", 60.0, 114.0, (2.0, 3.0)),
    HeadSpec("conv6_2", 114.0, 168.0, (2.0, 3.0)),
    HeadSpec("conv7_2", 168.0, 222.0, (2.0, 3.0)),
    HeadSpec("conv8_2", 222.0, 276.0, (2.0, 3.0)),
    HeadSpec("pool6", 276.0, 330.0, (2.0, 3.0)),
))
"""The original SSD300's six heads (7308 priors at 300x300)."""


def as_prior_config(spec: PriorConfig | Mapping[str, Any] | str | os.PathLike[str] | None) -> PriorConfig:
    """A :class:`PriorConfig` from a config, its JSON object, a JSON file path, or None (the default)."""
    if spec is None:
        return DEFAULT_PRIORS
    if isinstance(spec, PriorConfig):
        return spec
    if isinstance(spec, Mapping):
        return PriorConfig.from_dict(spec)
    if isinstance(spec, (str, os.PathLike)):
        return PriorConfig.load(spec)
    raise ValueError(f"priors must be a PriorConfig, its JSON object or a JSON file path, got "
                     f"{type(spec).__name__}")


def box_extents(boxes: np.ndarray, input_shape: Sequence[int] = (300, 300, 3)) -> tuple[np.ndarray, np.ndarray]:
    """Widths and heights in pixels of normalised boxes ``(n, 4)`` at the network input (every
    image is resized to ``input_shape``, ``(height, width, channels)``)."""
    pixels = to_pixels(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), input_shape[1], input_shape[0])
    return pixels[:, 2] - pixels[:, 0], pixels[:, 3] - pixels[:, 1]


def box_sizes(boxes: np.ndarray, input_shape: Sequence[int] = (300, 300, 3)) -> tuple[np.ndarray, np.ndarray]:
    """Sizes ``sqrt(w * h)`` (pixels) and aspect ratios ``w / h`` of normalised boxes at the network
    input (:func:`box_extents`)."""
    width, height = box_extents(boxes, input_shape)
    return np.sqrt(width * height), np.divide(width, height, out=np.ones_like(width), where=height > 0)


def best_ious(boxes: np.ndarray, priors: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Each box's best IoU with any prior (``(n,)`` float64), in chunks of boxes.

    Args:
        boxes: ``(n, 4)`` normalised corners.
        priors: ``(m, >=4)`` normalised corners (e.g. :meth:`PriorConfig.priors`).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    priors = np.asarray(priors, dtype=np.float64)
    best = np.zeros(len(boxes))
    if not len(priors):
        return best
    columns = np.ascontiguousarray(priors[:, :4].T)
    for start in range(0, len(boxes), chunk):
        best[start:start + chunk] = iou_with_columns(boxes[start:start + chunk], columns).max(axis=1)
    return best
