"""SSD300 forward-pass speed against a matmul baseline measured in the same process.

What is measured (foundation issue), all on float32 and the CPU that runs the script:

1. Baseline: ``tf.linalg.matmul`` of two 2048x2048 matrices, reported as GFLOP/s
   (``2 * 2048**3`` FLOPs per product), best of the timed runs; timed before and after the
   SSD300 cases, and the faster of the two is the baseline (a short matmul suffers most from
   a neighbour's load, and an understated baseline would flatter the ratio).
2. The full-width ``SSD300()`` (300x300x3 input, 21 classes) on random preprocessed-like
   input at batch 1 and batch 8 through ``model.predict_on_batch``, and for comparison a
   ``tf.function`` that calls ``model(x, training=False)``: median and best ms per batch and
   per image, and the achieved GFLOP/s from :data:`SSD300_GFLOP_PER_IMAGE`.
3. The target: SSD300 batch-8 rate (best run) / matmul rate >= 0.90, i.e. the network runs
   at least at 90% of what this TensorFlow build achieves on a large dense matmul.

Why a ratio: the machines are shared and noisy, so absolute times move from run to run and
machine to machine; a ratio against a baseline timed side by side in the same process is what
we compare across runs. Every timing warms up first (graph tracing, oneDNN primitive caches)
for at least a second (the first calls in a process are slow) and forces completion before
the clock stops.

Run ``python bench/bench_forward.py [--runs N] [--json PATH]`` (``make bench`` does).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ssd_keras.models import import_tensorflow_quietly

import_tensorflow_quietly()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ssd_keras.ssd import SSD300  # noqa: E402

# SSD300 (VGG16 backbone, 300x300 input, 21 classes) forward cost per image, counting a
# multiply-add as 2 FLOPs.
SSD300_GFLOP_PER_IMAGE = 62.4
MATMUL_SIZE = 2048
TARGET_RATIO = 0.90
TARGET_BATCH = 8  # the target compares the rate at this batch size
STEADY = 0.8  # the two baselines within this factor of each other: the machine held steady
BATCH_SIZES = (1, TARGET_BATCH)
WARMUP_SECONDS = 1.0  # the first calls in a process are slow (thread pools, primitive caches)


@dataclass
class Row:
    """One timed case: times in ms per batch, ``gflops`` from the best run."""

    case: str
    batch: int
    median_ms: float
    best_ms: float
    gflops: float

    def markdown(self) -> str:
        per_image = f"{self.median_ms / self.batch:.1f} / {self.best_ms / self.batch:.1f}"
        return (f"| {self.case} | {self.batch} | {self.median_ms:.1f} | {self.best_ms:.1f} "
                f"| {per_image} | {self.gflops:.1f} |")


def measure(fn: Callable[[], object], runs: int) -> list[float]:
    """Calls ``fn`` for ``WARMUP_SECONDS`` (at least once), then returns the seconds of
    ``runs`` timed calls. ``fn`` must return only once its work is complete."""
    warmup_end = time.perf_counter() + WARMUP_SECONDS
    fn()
    while time.perf_counter() < warmup_end:
        fn()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def time_case(case: str, fn: Callable[[], object], batch: int, gflop: float, runs: int) -> Row:
    """Times ``fn`` (see :func:`measure`); ``gflop`` is the work of one call."""
    seconds = measure(fn, runs)
    best = min(seconds)
    return Row(case, batch, 1e3 * statistics.median(seconds), 1e3 * best, gflop / best)


def machine() -> dict[str, str]:
    """CPU model, core count, library versions and date of this run."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    date = datetime.datetime.now().isoformat(timespec="seconds")
    return {"cpu": cpu, "cores": str(os.cpu_count()), "tensorflow": tf.__version__,
            "keras": keras.__version__, "date": date}


def run(runs: int) -> dict:
    """Times the baseline and the SSD300 cases; returns the machine, rows, ratio and verdict."""
    rng = np.random.default_rng(0)
    a, b = (tf.constant(rng.standard_normal((MATMUL_SIZE,) * 2, dtype=np.float32)) for _ in "ab")

    def baseline(when: str) -> Row:
        return time_case(f"matmul {MATMUL_SIZE}x{MATMUL_SIZE}, {when}",
                         lambda: tf.linalg.matmul(a, b).numpy(), 1, 2 * MATMUL_SIZE**3 / 1e9, runs)

    rows = [baseline("before")]
    model = SSD300()
    call = tf.function(lambda x: model(x, training=False))
    predict: dict[int, Row] = {}
    for batch in BATCH_SIZES:
        x = tf.constant(rng.uniform(-128, 128, (batch, 300, 300, 3)).astype(np.float32))
        gflop = SSD300_GFLOP_PER_IMAGE * batch
        predict[batch] = time_case("SSD300 predict_on_batch", lambda x=x: model.predict_on_batch(x),
                                   batch, gflop, runs)
        rows += [predict[batch],
                 time_case("SSD300 tf.function", lambda x=x: call(x).numpy(), batch, gflop, runs)]
    rows.append(baseline("after"))
    slower, baseline_gflops = sorted((rows[0].gflops, rows[-1].gflops))
    ratio = predict[TARGET_BATCH].gflops / baseline_gflops
    return {"machine": machine(), "runs": runs, "rows": [asdict(r) for r in rows],
            "baseline_gflops": baseline_gflops, "steady": slower >= STEADY * baseline_gflops,
            "ratio": ratio, "target": TARGET_RATIO, "passed": ratio >= TARGET_RATIO}


def report(result: dict) -> str:
    """The Markdown table, the machine and the PASS/FAIL line."""
    m = result["machine"]
    machine_line = (f"Machine: {m['cpu']}, {m['cores']} cores; TensorFlow {m['tensorflow']}, "
                    f"Keras {m['keras']}; {m['date']}; {result['runs']} timed runs per case.")
    lines = [machine_line, "",
             "| case | batch | median ms | best ms | ms/image (median / best) | GFLOP/s (best) |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [Row(**r).markdown() for r in result["rows"]]
    verdict = "PASS" if result["passed"] else "FAIL"
    lines += ["", (f"SSD300 batch-{TARGET_BATCH} rate / matmul rate "
                   f"({result['baseline_gflops']:.1f} GFLOP/s) = {result['ratio']:.2f} "
                   f"(target >= {result['target']:.2f}): {verdict}")]
    if not result["steady"]:
        lines.append(f"WARNING: the baseline moved by more than {1 - STEADY:.0%} between before "
                     "and after: the machine was busy, so this ratio is unreliable; run again.")
    return "\n".join(lines)


def bench_main(description: str, run: Callable[[int], dict], report: Callable[[dict], str],
               argv: list[str] | None = None) -> None:
    """The command line of every benchmark here: ``--runs N`` and ``--json PATH``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per case (default 5)")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    result = run(args.runs)
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


def main(argv: list[str] | None = None) -> None:
    bench_main(__doc__.splitlines()[0], run, report, argv)


if __name__ == "__main__":
    main()
