"""Training input pipeline speed against what a training step consumes, in one process.

What is measured (training issue), on the CPU that runs the script:

1. The pipeline: ``CSVGenerator`` over 256 synthetic 300x300 JPEG scenes
   (``ssd_keras.data.synthetic``), batch 16, full augmentation (crop, colour jitter, PCA
   lighting, flips), 7308-prior targets: images/s with one worker (the ``PyDataset`` in the
   calling thread) and through ``as_dataset()`` (``tf.data``, parallel batches).
2. The consumer: one full-width SSD300 training step (``MultiboxLoss``, Adam) at batch 8,
   ``train_on_batch``: images/s.

Targets: the pipeline supplies at least 2x what the training step consumes here, and at least
300 images/s (what one GPU trains SSD300 at) with full augmentation. Figures are medians of
``--runs`` runs (the machine is shared and noisy).

Run ``python bench/bench_data.py [--runs N] [--json PATH]`` (``make bench`` does).
"""
from __future__ import annotations

import statistics
import tempfile

from pathlib import Path

from bench_forward import bench_main, machine, measure

from ssd_keras.models import import_tensorflow_quietly

import_tensorflow_quietly()

import keras  # noqa: E402

from ssd_keras.data import CSVGenerator  # noqa: E402
from ssd_keras.data.synthetic import SHAPE_CLASSES, make_shapes_dataset  # noqa: E402
from ssd_keras.ssd import SSD300, prior_boxes  # noqa: E402
from ssd_keras.ssd_training import MultiboxLoss  # noqa: E402
from ssd_keras.ssd_utils import BBoxUtility  # noqa: E402

IMAGES, PIPELINE_BATCH, TRAIN_BATCH = 256, 16, 8
TARGET_IMAGES_PER_S, TARGET_MARGIN = 300.0, 2.0


def images_per_second(fn, images: int, runs: int) -> list[float]:
    """``fn`` handles ``images`` images per call; one rate per timed run."""
    return [images / s for s in measure(fn, runs)]


def run(runs: int) -> dict:
    num_classes = len(SHAPE_CLASSES) + 1
    model = SSD300(num_classes=num_classes)
    bbox_util = BBoxUtility(num_classes, prior_boxes(model))
    with tempfile.TemporaryDirectory() as folder:
        csv_path = make_shapes_dataset(Path(folder) / "shapes", IMAGES, seed=0)
        generator = CSVGenerator(csv_path, bbox_util, batch_size=PIPELINE_BATCH, seed=0)
        dataset = generator.as_dataset()

        def one_epoch():
            for batch in range(len(generator)):
                generator[batch]

        def one_dataset_epoch():
            for _ in dataset:
                pass

        rates = {"pipeline, one worker": images_per_second(one_epoch, IMAGES, runs),
                 "pipeline, tf.data": images_per_second(one_dataset_epoch, IMAGES, runs)}
        x, y = generator.load_batch(0, 0)

    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=MultiboxLoss(num_classes))
    x, y = x[:TRAIN_BATCH], y[:TRAIN_BATCH]
    rates["training step, SSD300 batch 8"] = images_per_second(
        lambda: model.train_on_batch(x, y), TRAIN_BATCH, runs)
    return {"machine": machine(), "runs": runs,
            "rates": {k: {"median": statistics.median(v), "all": v} for k, v in rates.items()}}


def report(result: dict) -> str:
    m, rates = result["machine"], result["rates"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores; TensorFlow {m['tensorflow']}; "
             f"{m['date']}; median of {result['runs']} runs.", "",
             "| case | images/s (median) | runs |", "|---|---:|---|"]
    for case, r in rates.items():
        lines.append(f"| {case} | {r['median']:.1f} | "
                     f"{', '.join(f'{v:.0f}' for v in r['all'])} |")
    best = max(rates["pipeline, one worker"]["median"], rates["pipeline, tf.data"]["median"])
    consumed = rates["training step, SSD300 batch 8"]["median"]
    ok = best >= TARGET_IMAGES_PER_S and best >= TARGET_MARGIN * consumed
    lines += ["", f"pipeline {best:.0f} images/s = {best / consumed:.0f}x what a training step "
                  f"consumes here ({consumed:.1f} images/s); targets >= {TARGET_MARGIN:.0f}x and "
                  f">= {TARGET_IMAGES_PER_S:.0f} images/s: {'PASS' if ok else 'FAIL'}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    bench_main(__doc__.splitlines()[0], run, report, argv)


if __name__ == "__main__":
    main()
