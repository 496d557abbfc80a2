"""Priors that fit a dataset: a greedy search for the prior configuration that covers its boxes.

A box is *covered* when some prior reaches IoU 0.5 with it (the matching threshold of
:class:`ssd_keras.BBoxUtility`): an uncovered box is matched only to its best prior, a poor
target, and small boxes on a coarse grid are the usual victims (a 12 px box at conv4_3's stride of
8 px can be 4 px off-centre from every prior in each axis, which keeps its IoU under 0.5 whatever
the prior's size; the stride-4 ``conv3_3`` grid removes that cap).

:func:`suggest_priors` searches the configurations of :mod:`ssd_keras.priors` (per source layer at
most one head: a square ``min_size``, optionally a second square through ``max_size``, and ratio
pairs ``r, 1/r``). Candidates come from the data: prior sizes from quantiles of the boxes' sizes
(``sqrt(w * h)`` at the network input), ratios from quantiles of their aspect ratios. Starting
from nothing, it repeatedly takes the step that covers the most new boxes per prior added,
among: open a head on a source with a candidate ``min_size``, give a head a second square of a
candidate size (``max_size``), or give a head a candidate ratio pair; a step must stay within the
prior budget and cover at least ``min_gain`` of the boxes. Then parts that later steps made
redundant (covering alone fewer than ``min_gain`` of the boxes) are removed, and the search goes
on with the budget they freed, until nothing changes. The search runs twice, from nothing and from
the default configuration (when it fits the budget), and the better result is kept (more coverage,
then fewer priors). Each step's gain is measured exactly:
every box's best IoU with a candidate prior shape on a source's grid (clipped like the real
priors) is computed over the grid cells it overlaps. This module imports NumPy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .checks import fraction, positive_int
from .boxes import to_normalized
from .priors import (COVERAGE_IOU, DEFAULT_PRIORS, SOURCES, HeadSpec, PriorConfig, best_ious, box_sizes,
                     feature_map_sizes)

__all__ = ["Suggestion", "suggest_priors", "grid_best_ious", "box_sizes", "SIZE_QUANTILES", "RATIO_QUANTILES",
           "MAX_SIZE_PER_STRIDE", "MIN_SIZE_PER_STRIDE"]

SIZE_QUANTILES = (0.005,) + tuple(np.round(np.linspace(0.02, 0.98, 13), 3)) + (0.995,)
"""Quantiles of the boxes' sizes that give the candidate prior sizes."""
RATIO_QUANTILES = (0.3, 0.5, 0.7, 0.9, 0.98)
"""Quantiles of the boxes' aspect ratios (folded to >= 1) that give the candidate ratios."""
MAX_SIZE_PER_STRIDE = 16.0
"""Prior sizes above this many strides of a source are left to coarser sources (fewer priors)."""
MIN_SIZE_PER_STRIDE = 1.5
"""Prior sizes under this many strides of a source (with more than one cell) are left to finer
sources: such a prior reaches IoU 0.5 only with the boxes near its cells' centres."""
_DISTINCT = 0.04  # candidates closer than 4 % (relative) are one candidate
_MIN_RATIO = 1.1  # folded ratios under this count as squares
_CHUNK_ELEMENTS = 2_000_000  # boxes x cells per IoU block
_ROUNDS = 4  # grow-and-prune rounds at most


@dataclass(frozen=True)
class Suggestion:
    """What :func:`suggest_priors` found.

    Attributes:
        config: the suggested prior configuration.
        coverage: share of the boxes whose best IoU with its priors reaches the threshold (exact,
            with the priors the model will have).
        num_priors: its prior count at the input size.
        steps: the search's steps in order, ``(description, priors after, coverage after)``.
    """

    config: PriorConfig
    coverage: float
    num_priors: int
    steps: tuple[tuple[str, int, float], ...]


def _axis(lo: np.ndarray, hi: np.ndarray, cells: int, extent: float, half: float):
    """Along one axis: each box's overlaps with the clipped priors of the cells it can touch
    ``(n, k)``, those priors' clipped lengths ``(n, k)``. Coordinates normalised; ``extent`` is the
    input size in pixels, ``half`` the prior's half size in pixels."""
    step = extent / cells
    centres = np.linspace(0.5 * step, extent - 0.5 * step, cells)  # as prior_box_grid
    start = np.clip((centres - half) / extent, 0.0, 1.0)
    stop = np.clip((centres + half) / extent, 0.0, 1.0)
    first = np.clip(np.floor((lo - half / extent) * cells - 0.5).astype(np.int64), 0, cells - 1)
    last = np.clip(np.ceil((hi + half / extent) * cells - 0.5).astype(np.int64), 0, cells - 1)
    width = int((last - first).max()) + 1 if len(lo) else 1
    index = first[:, None] + np.arange(width)
    inside = index <= last[:, None]
    index = np.minimum(index, cells - 1)
    overlap = np.minimum(hi[:, None], stop[index]) - np.maximum(lo[:, None], start[index])
    overlap = np.where(inside, np.maximum(overlap, 0.0), 0.0)
    return overlap, (stop - start)[index]


def grid_best_ious(boxes: np.ndarray, grid: tuple[int, int], input_shape: Sequence[int], width: float,
                   height: float) -> np.ndarray:
    """Each box's best IoU with priors of one shape (``width`` x ``height`` pixels) on every cell of a
    ``grid`` ``(rows, cols)``, clipped to the image as the real priors are: ``(n,)`` float64.

    Only the cells whose prior can overlap a box are compared, so a fine grid costs no more than the
    few cells around each box.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    rows, cols = grid
    best = np.zeros(len(boxes))
    if not len(boxes):
        return best
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    prior_w, prior_h = to_normalized([0.0, 0.0, width, height], input_shape[1], input_shape[0])[2:]
    span_x = (prior_w + (boxes[:, 2] - boxes[:, 0]).max()) * cols + 3  # cells a box and a prior can share
    span_y = (prior_h + (boxes[:, 3] - boxes[:, 1]).max()) * rows + 3
    chunk = max(1, int(_CHUNK_ELEMENTS // max(1.0, min(span_x, cols) * min(span_y, rows))))
    for begin in range(0, len(boxes), chunk):
        part = boxes[begin:begin + chunk]
        ix, pw = _axis(part[:, 0], part[:, 2], cols, float(input_shape[1]), 0.5 * width)
        iy, ph = _axis(part[:, 1], part[:, 3], rows, float(input_shape[0]), 0.5 * height)
        inter = ix[:, :, None] * iy[:, None, :]
        union = area[begin:begin + chunk, None, None] + pw[:, :, None] * ph[:, None, :] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        best[begin:begin + chunk] = iou.reshape(len(part), -1).max(axis=1)
    return best


def _distinct(values: np.ndarray) -> list[float]:
    """Sorted values, those within ``_DISTINCT`` (relative) of the previous kept one dropped."""
    kept: list[float] = []
    for value in np.sort(values):
        if value > 0 and (not kept or value > kept[-1] * (1 + _DISTINCT)):
            kept.append(float(value))
    return kept


@dataclass
class _Head:
    source: str
    min_size: float
    max_size: float | None = None
    ratios: tuple[float, ...] = ()

    def spec(self) -> HeadSpec:
        return HeadSpec(self.source, self.min_size, self.max_size, self.ratios)


class _Search:
    """The greedy search's state: the boxes, the grids, the cached best IoUs per prior shape."""

    def __init__(self, boxes: np.ndarray, input_shape: Sequence[int], threshold: float, sources: Sequence[str]):
        self.boxes = boxes
        self.input_shape = tuple(input_shape)
        self.threshold = threshold
        grids = feature_map_sizes(input_shape)
        self.grids = {s: grids[s] for s in sources}
        self.cells = {s: grids[s][0] * grids[s][1] for s in sources}
        self.strides = {s: max(input_shape[0] / grids[s][0], input_shape[1] / grids[s][1]) for s in sources}
        self._cache: dict[tuple[str, float, float], np.ndarray] = {}

    def reaches(self, source: str, width: float, height: float) -> np.ndarray:
        """Which boxes a prior of this shape on this source covers, ``(n,)`` bool (cached)."""
        key = (source, round(width, 9), round(height, 9))
        if key not in self._cache:
            ious = grid_best_ious(self.boxes, self.grids[source], self.input_shape, width, height)
            self._cache[key] = ious >= self.threshold
        return self._cache[key]


def _moves(search: _Search, heads: dict[str, _Head], sizes: list[float], ratios: list[float]):
    """The possible steps: ``(description, new head, prior shapes added, priors added)``."""
    for source in search.grids:
        cells = search.cells[source]
        head = heads.get(source)
        low = MIN_SIZE_PER_STRIDE * search.strides[source] if cells > 1 else 0.0
        fitting = [size for size in sizes if low <= size <= MAX_SIZE_PER_STRIDE * search.strides[source]]
        if head is None:
            for size in fitting:
                yield (f"{source}: head, min_size {size:.3g}", _Head(source, size), [(size, size)], cells)
            continue
        if head.max_size is None:
            for size in fitting:
                if size > head.min_size * (1 + _DISTINCT):
                    new = _Head(source, head.min_size, size * size / head.min_size, head.ratios)
                    yield f"{source}: second square {size:.3g}", new, [(size, size)], cells
        for ratio in ratios:
            if ratio not in head.ratios:
                new = _Head(source, head.min_size, head.max_size, tuple(sorted(head.ratios + (ratio,))))
                w, h = head.min_size * math.sqrt(ratio), head.min_size / math.sqrt(ratio)
                yield f"{source}: ratios {ratio:.3g} and 1/{ratio:.3g}", new, [(w, h), (h, w)], 2 * cells


def _shapes(head: _Head) -> dict[str, list[tuple[float, float]]]:
    """A head's parts: its first square, its second square, each ratio pair, as prior shapes."""
    parts = {"min": [(head.min_size, head.min_size)]}
    if head.max_size is not None:
        side = math.sqrt(head.min_size * head.max_size)
        parts["max"] = [(side, side)]
    for ratio in head.ratios:
        w, h = head.min_size * math.sqrt(ratio), head.min_size / math.sqrt(ratio)
        parts[ratio] = [(w, h), (h, w)]
    return parts


def _reach(search: _Search, source: str, shapes: list[tuple[float, float]]) -> np.ndarray:
    reach = np.zeros(len(search.boxes), dtype=bool)
    for w, h in shapes:
        reach |= search.reaches(source, w, h)
    return reach


def _covered(search: _Search, heads: dict[str, _Head]) -> np.ndarray:
    covered = np.zeros(len(search.boxes), dtype=bool)
    for head in heads.values():
        for shapes in _shapes(head).values():
            covered |= _reach(search, head.source, shapes)
    return covered


def _cost(search: _Search, heads: dict[str, _Head]) -> int:
    return sum(head.spec().num_priors * search.cells[head.source] for head in heads.values())


def _grow(search: _Search, heads: dict[str, _Head], sizes: list[float], ratios: list[float], max_priors: int,
          needed: int, steps: list) -> None:
    """Adds the step that covers the most new boxes per prior, while one covers ``needed`` boxes."""
    covered = _covered(search, heads)
    total = _cost(search, heads)
    while True:
        best = None
        for description, head, shapes, cost in _moves(search, heads, sizes, ratios):
            if total + cost > max_priors:
                continue
            reach = _reach(search, head.source, shapes)
            gain = int(np.count_nonzero(reach & ~covered))
            if gain < needed:
                continue
            score = (gain / cost, gain)
            if best is None or score > best[0]:
                best = (score, description, head, reach, cost)
        if best is None:
            return
        _, description, head, reach, cost = best
        heads[head.source] = head
        covered |= reach
        total += cost
        steps.append((description, total, float(covered.mean())))


def _prune(search: _Search, heads: dict[str, _Head], needed: int, steps: list) -> None:
    """Removes, one at a time, the part (a head's extra square or ratio pair, or a head with nothing
    else) that alone covers the fewest boxes, while that is under ``needed``: cheap steps taken
    early (a tiny prior on a coarse grid covering the few boxes at its cell centres) are made
    redundant by later, finer ones."""
    while heads:
        weakest = None
        for source, head in heads.items():
            parts = _shapes(head)
            others = _covered(search, {s: h for s, h in heads.items() if s != source})
            for part, shapes in parts.items():
                if part == "min" and len(parts) > 1:
                    continue  # a head keeps its first square while it has other parts
                rest = others.copy()
                for other, other_shapes in parts.items():
                    if other != part:
                        rest |= _reach(search, source, other_shapes)
                alone = int(np.count_nonzero(_reach(search, source, shapes) & ~rest))
                if weakest is None or alone < weakest[0]:
                    weakest = (alone, source, part)
        if weakest is None or weakest[0] >= needed:
            return
        _, source, part = weakest
        head = heads[source]
        if part == "min":
            del heads[source]
            what = f"{source}: head removed"
        elif part == "max":
            heads[source] = _Head(source, head.min_size, None, head.ratios)
            what = f"{source}: second square removed"
        else:
            heads[source] = _Head(source, head.min_size, head.max_size,
                                  tuple(r for r in head.ratios if r != part))
            what = f"{source}: ratios {part:.3g} and 1/{part:.3g} removed"
        steps.append((what, _cost(search, heads), float(_covered(search, heads).mean())))


def suggest_priors(boxes: np.ndarray, input_shape: Sequence[int] = (300, 300, 3), max_priors: int = 20_000,
                   threshold: float = COVERAGE_IOU, min_gain: float = 0.001,
                   sources: Sequence[str] = SOURCES) -> Suggestion:
    """The prior configuration that covers the most boxes within a prior budget (module docstring).

    Args:
        boxes: ``(n, 4)`` normalised corners of the dataset's boxes (each divided by its image's
            width and height: the network sees every image resized to ``input_shape``).
        input_shape: the network input ``(height, width, channels)``.
        max_priors: the budget: most priors of the configuration at ``input_shape``.
        threshold: IoU at which a box counts as covered (the matching threshold).
        min_gain: a step must cover at least this share of the boxes (and at least one box).
        sources: the source layers to consider (a subset of :data:`ssd_keras.priors.SOURCES`).

    Returns:
        A :class:`Suggestion`; its coverage is measured exactly on the configuration's priors.

    Raises:
        ValueError: no boxes, a bad argument, or no configuration within the budget covers any box.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not len(boxes):
        raise ValueError("no boxes to fit priors to")
    max_priors = positive_int(max_priors, "max_priors")
    threshold = fraction(threshold, "threshold", zero_allowed=False)
    min_gain = fraction(min_gain, "min_gain")
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown or not sources:
        raise ValueError(f"sources must be among {', '.join(SOURCES)}, got {list(sources)}")
    search = _Search(boxes, input_shape, threshold, [s for s in SOURCES if s in sources])
    size, aspect = box_sizes(boxes, input_shape)
    sizes = _distinct(np.quantile(size, SIZE_QUANTILES))
    folded = np.maximum(aspect, 1.0 / aspect)
    ratios = [r for r in _distinct(np.quantile(folded, RATIO_QUANTILES)) if r >= _MIN_RATIO]

    needed = max(1, math.ceil(min_gain * len(boxes)))
    starts: list[tuple[str, dict[str, _Head]]] = [("nothing", {})]
    default = {h.source: _Head(h.source, h.min_size, h.max_size, h.aspect_ratios) for h in DEFAULT_PRIORS.heads}
    if set(default) <= set(search.grids) and _cost(search, default) <= max_priors:
        starts.append(("the default configuration", default))
    results = []
    for name, heads in starts:
        steps: list[tuple[str, int, float]] = [(f"start from {name}", _cost(search, heads),
                                                float(_covered(search, heads).mean()))]
        for _ in range(_ROUNDS):
            before = {source: head.spec() for source, head in heads.items()}
            _grow(search, heads, sizes, ratios, max_priors, needed, steps)
            _prune(search, heads, needed, steps)
            if {source: head.spec() for source, head in heads.items()} == before:
                break
        if heads:
            config = PriorConfig(tuple(heads[s].spec() for s in SOURCES if s in heads))
            priors = config.priors(input_shape)
            coverage = float(np.mean(best_ious(boxes, priors) >= threshold))
            results.append(Suggestion(config, coverage, len(priors), tuple(steps)))
    if not results:
        raise ValueError(f"no prior configuration within {max_priors} priors covers any of the {len(boxes)} "
                         f"boxes at IoU {threshold:g}")
    return max(results, key=lambda result: (result.coverage, -result.num_priors))
