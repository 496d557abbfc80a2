"""SSD300 on Keras' three backends: forward pass and training step, as ratios to TensorFlow.

What is measured (backends issue, issue 13), on the CPU that runs the script: the full-width
``SSD300(num_classes=21)`` (7308 priors, seeded initial weights), batch 8 of 300x300 inputs:

* forward: ``model.predict_on_batch(x)`` (Keras' compiled predict step: a ``tf.function`` on
  TensorFlow, ``jax.jit`` on JAX, eager on PyTorch);
* training step: ``model.train_on_batch(x, y)`` with ``Adam`` and ``MultiboxLoss(21)``, ``y`` the
  ``assign_boxes`` targets of 1-3 random boxes per image.

Each configuration runs in its own process (``KERAS_BACKEND`` is fixed at import): TensorFlow as
Keras compiles it by default on a CPU (``jit_compile="auto"``: no XLA), TensorFlow with XLA
(``jit_compile=True``), JAX (always XLA), and PyTorch (eager; ``jit_compile="auto"``). Each
process warms up (tracing, compilation: reported apart), then times ``--runs`` calls of each and
reports medians; the processes take turns for ``--rounds`` rounds so that a busy moment of this
shared machine hits all of them alike, and the table gives the median over all runs of a
configuration. Every process also times the same NumPy matmul (the machine's baseline, which
should stay put). Ratio = TensorFlow default ms / configuration ms (> 1: faster than TensorFlow).

Target: the fastest backend's training step at least 1.2x TensorFlow's on this CPU.

Run ``python bench/bench_backends.py [--runs N] [--rounds R] [--json PATH] [--no-results]``
(``make bench`` does; about 18 minutes on 2 cores). It rewrites the section "Backends (issue 13)"
of ``bench/RESULTS.md`` (the rest of the file is kept).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Backends (issue 13)"
BATCH = 8
CONFIGS = {  # name: (KERAS_BACKEND, jit_compile)
    "tensorflow": ("tensorflow", "auto"),
    "tensorflow + XLA": ("tensorflow", True),
    "jax": ("jax", "auto"),
    "torch": ("torch", "auto"),
}
BASELINE = "tensorflow"
TRIED = ("Tried on 2026-12-02 to make JAX or PyTorch faster here (one process per setting, 2-3 calls, same "
         "model and batch): XLA CPU flags (`--xla_cpu_experimental_onednn_custom_call`, `..._onednn_fusion_type`, "
         "`..._xnn_fusion_type` with greedy graph fusion, `..._ynn_fusion_type=individual_convolution`, "
         "`--xla_cpu_enable_fast_math`, `--xla_cpu_multi_thread_eigen`) moved JAX's training step by no more "
         "than its run-to-run noise (21-25 s; the YNN convolutions took its forward pass from ~4.2 to ~3.7 s); "
         "PyTorch `jit_compile=True` (torch.compile) kept the step at ~12.5-14 s after ~140 s of compilation "
         "(dynamo hit its recompile limit), and thread settings only made it slower. On this CPU TensorFlow's "
         "oneDNN convolutions are the fastest; a GPU was not measured.")


def _median_ms(call, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def worker(jit_compile: str, runs: int) -> dict:
    """Runs in a process with ``KERAS_BACKEND`` set; returns its timings (ms) as a dict."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        from ssd_keras.models import import_tensorflow_quietly

        import_tensorflow_quietly()
    import keras
    import numpy as np

    from ssd_keras import SSD300, MultiboxLoss
    from ssd_keras._keras_compat import set_random_seed
    from ssd_keras.ssd import prior_boxes
    from ssd_keras.ssd_utils import BBoxUtility

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 1024, 1024), dtype=np.float32)
    matmul = _median_ms(lambda: a @ b, 20)

    set_random_seed(0)
    model = SSD300(num_classes=21)
    util = BBoxUtility(21, prior_boxes(model))
    x = rng.normal(0, 50, (BATCH, 300, 300, 3)).astype(np.float32)
    targets = []
    for _ in range(BATCH):
        count = int(rng.integers(1, 4))
        corner = rng.uniform(0, 0.6, (count, 2))
        boxes = np.hstack([corner, corner + rng.uniform(0.1, 0.4, (count, 2))])
        targets.append(util.assign_boxes(np.hstack([boxes, np.eye(20)[rng.integers(0, 20, count)]])))
    y = np.stack(targets).astype(np.float32)
    model.compile(keras.optimizers.Adam(1e-4), loss=MultiboxLoss(21),
                  jit_compile=jit_compile if jit_compile == "auto" else True)

    start = time.perf_counter()
    model.predict_on_batch(x)
    forward_warmup = (time.perf_counter() - start) * 1e3
    model.predict_on_batch(x)
    forward = _median_ms(lambda: np.asarray(model.predict_on_batch(x)), runs)
    start = time.perf_counter()
    model.train_on_batch(x, y)
    train_warmup = (time.perf_counter() - start) * 1e3
    model.train_on_batch(x, y)
    train = _median_ms(lambda: float(model.train_on_batch(x, y)), runs)
    loss = float(model.train_on_batch(x, y))
    return {"backend": keras.backend.backend(), "jit_compile": str(model.jit_compile), "forward": forward,
            "train": train, "forward_warmup": forward_warmup, "train_warmup": train_warmup,
            "matmul": matmul, "loss": loss, "version": _backend_version(keras.backend.backend())}


def _backend_version(backend: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(backend)


def run_config(name: str, runs: int) -> dict:
    backend, jit_compile = CONFIGS[name]
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    env["KERAS_BACKEND"] = backend
    done = subprocess.run([sys.executable, __file__, "--worker", str(jit_compile), "--runs", str(runs)],
                          capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(results: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for name, reports in results.items():
        rows.append({"config": name, "version": reports[0]["version"], "jit_compile": reports[0]["jit_compile"],
                     **{key: statistics.median([t for r in reports for t in r[key]])
                        for key in ("forward", "train", "matmul")},
                     "forward_warmup": statistics.median(r["forward_warmup"] for r in reports),
                     "train_warmup": statistics.median(r["train_warmup"] for r in reports)})
    base = next(row for row in rows if row["config"] == BASELINE)
    for row in rows:
        row["forward_ratio"] = base["forward"] / row["forward"]
        row["train_ratio"] = base["train"] / row["train"]
    return rows


def table(rows: list[dict], about: dict[str, str], runs: int, rounds: int) -> str:
    best = max(rows, key=lambda row: row["train_ratio"])
    other = max((row for row in rows if not row["config"].startswith(BASELINE)), key=lambda row: row["train_ratio"],
                default=None)
    verdict = "met" if best["train_ratio"] >= 1.2 else "not met"
    lines = [SECTION, "",
             f"`python bench/bench_backends.py --runs {runs} --rounds {rounds}`; {about['cpu']}, {about['cores']} "
             f"cores; {about['date']}. Full-width `SSD300(num_classes=21)`, batch {BATCH} of 300x300; medians of "
             f"{runs * rounds} calls per configuration, each in its own process, the processes taking turns. "
             "Ratio = TensorFlow (default) ms / ms: above 1 is faster than TensorFlow.", "",
             "| configuration | version | jit_compile | forward ms | ratio | training step ms | ratio "
             "| warm-up (forward / step) s | NumPy matmul ms |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['config']} | {row['version']} | {row['jit_compile']} | {row['forward']:.0f} | "
                     f"{row['forward_ratio']:.2f}x | {row['train']:.0f} | {row['train_ratio']:.2f}x | "
                     f"{row['forward_warmup'] / 1e3:.1f} / {row['train_warmup'] / 1e3:.1f} | {row['matmul']:.1f} |")
    lines += ["", f"Target: the fastest training step at least 1.2x TensorFlow's: **{verdict}**. Fastest "
                  f"configuration: {best['config']} ({best['train_ratio']:.2f}x); fastest other backend: "
                  + (f"{other['config']} ({other['train_ratio']:.2f}x)." if other else "none measured."),
              "", TRIED, ""]
    return "\n".join(lines)


def write_section(text: str, path: Path = RESULTS) -> None:
    """Replaces the section :data:`SECTION` of ``path`` (up to the next ``## `` heading) with
    ``text``, or appends it."""
    content = path.read_text() if path.exists() else "# Benchmarks\n\n"
    match = re.search(rf"^{re.escape(SECTION)}[ \t]*\n.*?(?=^## |\Z)", content, flags=re.M | re.S)
    if match:
        content = content[:match.start()] + text + ("\n" if match.end() < len(content) else "") + \
            content[match.end():]
    else:
        content = content.rstrip("\n") + "\n\n" + text
    path.write_text(content)


def measure(names: list[str], runs: int, rounds: int) -> dict[str, list[dict]]:
    """Runs every configuration ``rounds`` times, taking turns; the reports of each, by name."""
    configs = [BASELINE] + [name for name in names if name != BASELINE]
    results: dict[str, list[dict]] = {name: [] for name in configs}
    for round_ in range(rounds):
        for name in configs:
            report = run_config(name, runs)
            results[name].append(report)
            print(f"round {round_ + 1}: {name}: forward {statistics.median(report['forward']):.0f} ms, "
                  f"training step {statistics.median(report['train']):.0f} ms, loss {report['loss']:.3f}",
                  flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed calls per process and case (default: 3)")
    parser.add_argument("--rounds", type=int, default=2, help="processes per configuration (default: 2)")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--json", help="also write the raw timings here")
    parser.add_argument("--no-results", action="store_true", help=f"do not rewrite the section in {RESULTS.name}")
    parser.add_argument("--from-json", metavar="PATH", help="render the table of an earlier run's --json file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.runs)))
        return
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        about, results = saved["machine"], saved["results"]
        args.runs, args.rounds = saved.get("runs", args.runs), saved.get("rounds", args.rounds)
    else:
        from bench_forward import machine  # CPU, cores, versions, date (imports TensorFlow: this process only)

        about, results = machine(), measure(args.configs, args.runs, args.rounds)
    text = table(summarize(results), about, args.runs, args.rounds)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": about, "results": results, "runs": args.runs,
                                               "rounds": args.rounds}, indent=1))
    if not args.no_results:
        write_section(text)


if __name__ == "__main__":
    main()
