"""Grad-CAM of one SSD300 detection against the forward pass, measured in the same process.

What is measured (Grad-CAM issue), float32, on the CPU that runs the script, batch 1:

1. Baseline: the full-width ``SSD300()`` (300x300x3, 21 classes) forward pass through
   ``model.predict_on_batch`` on a random preprocessed-like input, timed before and after the
   explanation cases; the faster of the two is the baseline (a slower baseline would flatter
   the ratios).
2. ``GradCAM(model)(x, class, prior)`` for one prior of each kind of head (the feature layer
   and so the backward pass differ: conv4_3, fc7, conv8_2, and pool6 via conv8_2) and for a
   class summed over all priors; for comparison, :func:`guided_backprop` and
   :func:`guided_grad_cam` of one detection (their backward pass reaches the input).
   ``GradCAM`` is built once, outside the timing (its cost is reported on its own).
3. The target: Grad-CAM of one detection (every single-prior case) costs at most 3x the forward
   pass (median of the timed runs).

Run ``python bench/bench_gradcam.py [--runs N] [--json PATH]`` (``make bench`` may call it).
"""
from __future__ import annotations

import statistics
import time

from bench_forward import bench_main, machine, measure

import numpy as np  # noqa: E402  (bench_forward imports TensorFlow quietly first)

from ssd_keras.gradcam import GradCAM, guided_backprop, guided_grad_cam  # noqa: E402
from ssd_keras.ssd import SSD300  # noqa: E402

TARGET_RATIO = 3.0
CLASS_INDEX = 15  # "person" in the VOC order
# (case, prior index or None): one prior per kind of head, then the class over all priors
PRIORS = [("conv4_3_norm prior -> conv4_3", 2000), ("fc7 prior -> fc7", 5000),
          ("conv8_2 prior -> conv8_2", 7250), ("pool6 prior -> conv8_2", 7305),
          ("class over all priors -> conv4_3", None)]


def run(runs: int) -> dict:
    """Times the forward pass and the explanations; returns the machine, rows and verdict."""
    model = SSD300()
    x = np.random.default_rng(0).uniform(-128, 128, (1, 300, 300, 3)).astype(np.float32)
    start = time.perf_counter()
    cam = GradCAM(model)
    build_ms = 1e3 * (time.perf_counter() - start)

    def row(case: str, fn, single: bool = False) -> dict:
        seconds = measure(fn, runs)
        return {"case": case, "median_ms": 1e3 * statistics.median(seconds), "best_ms": 1e3 * min(seconds),
                "single_detection_gradcam": single}

    rows = [row("forward, predict_on_batch (before)", lambda: model.predict_on_batch(x))]
    rows += [row(f"GradCAM, {case}", lambda p=prior: cam(x, CLASS_INDEX, p), single=prior is not None)
             for case, prior in PRIORS]
    rows += [row("guided_backprop, conv4_3_norm prior", lambda: guided_backprop(model, x, CLASS_INDEX, 2000)),
             row("guided_grad_cam, conv4_3_norm prior", lambda: guided_grad_cam(model, x, CLASS_INDEX, 2000))]
    rows.append(row("forward, predict_on_batch (after)", lambda: model.predict_on_batch(x)))
    forward_ms = min(rows[0]["median_ms"], rows[-1]["median_ms"])
    for r in rows:
        r["ratio"] = r["median_ms"] / forward_ms
    worst = max(r["ratio"] for r in rows if r["single_detection_gradcam"])
    return {"machine": machine(), "runs": runs, "build_ms": build_ms, "forward_ms": forward_ms, "rows": rows,
            "worst_ratio": worst, "target": TARGET_RATIO, "passed": worst <= TARGET_RATIO}


def report(result: dict) -> str:
    """The Markdown table, the machine and the PASS/FAIL line."""
    m = result["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores; TensorFlow {m['tensorflow']}, Keras {m['keras']}; "
             f"{m['date']}; {result['runs']} timed runs per case, batch 1, full-width SSD300.", "",
             "| case | median ms | best ms | median / forward |", "|---|---:|---:|---:|"]
    lines += [f"| {r['case']} | {r['median_ms']:.1f} | {r['best_ms']:.1f} | {r['ratio']:.2f} |"
              for r in result["rows"]]
    verdict = "PASS" if result["passed"] else "FAIL"
    lines += ["", f"GradCAM(model) built once in {result['build_ms']:.1f} ms.",
              f"Grad-CAM of one detection, worst median / forward median ({result['forward_ms']:.1f} ms) = "
              f"{result['worst_ratio']:.2f} (target <= {result['target']:.1f}): {verdict}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    bench_main(__doc__.splitlines()[0], run, report, argv)


if __name__ == "__main__":
    main()
