"""Exported SSD300 (LiteRT, ONNX, SavedModel) against Keras float32: size, batch-1 latency, mAP, agreement.

What is measured (export issue, issue 12), on the CPU that runs the script, TensorFlow, LiteRT and
ONNX Runtime all on :data:`THREADS` threads:

1. Accuracy, the embedded demo model (``load_demo_model``: width 0.25, 4 shape classes): the 100
   held-out scenes of ``ssd_keras.demo.shapes_map`` (scene ``i`` of ``DEMO_SEED``). The Keras
   reference is ``BBoxUtility.detection_out(model.predict(x))`` (threshold 0.01, 200 rows).
   Each format x precision (LiteRT and ONNX at float32, float16, dynamic and int8, and the
   float32 SavedModel) is exported to a temporary folder (int8 calibrated on 100 *other*
   scenes, of :data:`CALIBRATION_SEED`), loaded with ``load_exported`` and run on the same
   images: file size, export time, ms per image, VOC mAP@0.5 (``evaluate_detections``) and the
   agreement with Keras: each Keras row is matched to the exported row of the same label with
   the highest IoU (greedily, by decreasing Keras confidence; a match needs IoU >= 0.5), and the
   table gives the largest confidence and box-corner differences over matched rows, the share
   of Keras rows matched, and the share of images with as many detections above 0.5.
2. Speed, the full-width ``SSD300(num_classes=21)`` with its initial random weights (int8
   calibrated on :data:`SPEED_CALIBRATION` synthetic scenes): each export at batch 1,
   ``load_exported(path, threads=2)``; 2 warm-up calls, then ``--runs`` rounds in which the
   export, the Keras float32 ``predict_on_batch`` of ``with_detection_output(model)`` (the same
   output) and that of the raw model run one after the other, so a busy moment of this shared
   machine hits all three alike; medians; ratio = Keras ms / export ms.

Targets: float32 and float16 mAP within 0.005 of Keras float32 and float32 detections equal to
``detection_out`` to 1e-4 on the kept rows; int8 mAP at most 0.01 below Keras float32 and the int8
file at most 0.35x the float32 file; the fastest int8 export of the full-width SSD300 at batch 1
at least 1.5x Keras float32 (with its decoder). int8 speed depends on the instruction set
(AVX2, AVX-512, VNNI), which the machine line records.

Run ``python bench/bench_export.py [--runs N] [--json PATH] [--part accuracy|speed]
[--no-results]`` (``make bench`` does; about 10 minutes). Both parts together rewrite the
section "Export (issue 12)" of ``bench/RESULTS.md`` (the rest of the file is kept).
"""
from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_forward import machine

from ssd_keras.models import import_tensorflow_quietly

import_tensorflow_quietly()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

THREADS = 2
tf.config.threading.set_intra_op_parallelism_threads(THREADS)  # before anything runs

from ssd_keras import layout  # noqa: E402
from ssd_keras.boxes import iou_matrix  # noqa: E402
from ssd_keras.data.synthetic import make_scene  # noqa: E402
from ssd_keras.demo import DEMO_SEED  # noqa: E402
from ssd_keras.evaluation import evaluate_detections  # noqa: E402
from ssd_keras.export import export_model  # noqa: E402
from ssd_keras.exported import FORMATS, PRECISIONS, load_exported  # noqa: E402
from ssd_keras.image import model_batches  # noqa: E402
from ssd_keras.models import DEMO_WEIGHTS, load_demo_model  # noqa: E402
from ssd_keras.ssd import SSD300, with_detection_output  # noqa: E402
from ssd_keras.ssd_utils import BBoxUtility  # noqa: E402

EXPORTS = [(fmt, precision) for fmt in ("litert", "onnx") for precision in PRECISIONS] + [("saved_model", "float32")]
EVAL_SCENES = 100  # shapes_map's held-out scenes: scene i of DEMO_SEED
CALIBRATION_SEED = DEMO_SEED + 2  # DEMO_SEED + 1 gives the demo's pictures; this one is used nowhere else
CALIBRATION_SCENES = 100
SPEED_CALIBRATION = 16
WARMUP = 2
CONFIDENT = 0.5  # "images with as many detections above this"
MATCH_IOU = 0.5
RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Export (issue 12)"
# the issue's targets
MAP_FLOAT = 0.005
EQUAL_TOL = 1e-4
MAP_INT8 = 0.01
SIZE_INT8 = 0.35
SPEED_INT8 = 1.5


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def machine_info() -> dict:
    """``bench_forward.machine`` plus the instruction-set flags and the runtimes' versions."""
    info = machine()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        pass
    info["isa"] = {"AVX2": "avx2" in flags, "AVX-512": "avx512f" in flags,
                   "VNNI": bool(flags & {"avx512_vnni", "avx_vnni"}), "AMX": "amx_int8" in flags}
    info["isa_flags"] = sorted(f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f)
    for package in ("ai-edge-litert", "onnxruntime", "onnx", "tf2onnx"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "not installed"
    return info


def scenes(seed: int, count: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return [make_scene(np.random.default_rng([seed, i])) for i in range(count)]


def preprocessed(images: list[np.ndarray], size: tuple[int, int] = (300, 300)) -> np.ndarray:
    return np.concatenate(list(model_batches(images, size, 25)))


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (a SavedModel)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def export_timed(model: keras.Model, folder: Path, fmt: str, precision: str, calibration: np.ndarray,
                 class_names: list[str] | None = None) -> tuple[Path, float]:
    path = folder / f"{model.name}_{precision}{FORMATS[fmt]}"
    start = time.perf_counter()
    export_model(model, path, fmt, precision, calibration=calibration if precision == "int8" else None,
                 class_names=class_names)
    return path, time.perf_counter() - start


def agreement(reference: list[np.ndarray], detections: list[np.ndarray]) -> dict:
    """How closely ``detections`` follow ``reference`` (both per image, rows of ``detection_out``):
    each reference row, by decreasing confidence, takes the unmatched row of the same label with
    the highest IoU (>= :data:`MATCH_IOU`). Largest differences over all matched rows and over
    those whose reference confidence is above :data:`CONFIDENT`."""
    diff = {"conf": 0.0, "box": 0.0, "conf_confident": 0.0, "box_confident": 0.0}
    matched = total = extra = same_count = 0
    for ref, rows in zip(reference, detections, strict=True):
        confident = ref[:, layout.CONFIDENCE] > CONFIDENT
        same_count += int(confident.sum() == (rows[:, layout.CONFIDENCE] > CONFIDENT).sum())
        total += len(ref)
        if not len(ref) or not len(rows):
            extra += len(rows)
            continue
        iou = iou_matrix(ref[:, layout.BOX], rows[:, layout.BOX])
        iou[ref[:, layout.LABEL, None] != rows[None, :, layout.LABEL]] = -1.0
        used = np.zeros(len(rows), bool)
        for i in np.argsort(-ref[:, layout.CONFIDENCE], kind="stable"):
            candidates = np.where(used, -1.0, iou[i])
            j = int(np.argmax(candidates))
            if candidates[j] < MATCH_IOU:
                continue
            used[j] = True
            matched += 1
            conf = abs(ref[i, layout.CONFIDENCE] - rows[j, layout.CONFIDENCE])
            box = float(np.abs(ref[i, layout.BOX] - rows[j, layout.BOX]).max())
            diff["conf"], diff["box"] = max(diff["conf"], conf), max(diff["box"], box)
            if confident[i]:
                diff["conf_confident"] = max(diff["conf_confident"], conf)
                diff["box_confident"] = max(diff["box_confident"], box)
        extra += int((~used).sum())
    return {**{f"max_{key}_diff": value for key, value in diff.items()}, "rows": total, "matched": matched,
            "unmatched_export_rows": extra, "same_count_share": same_count / len(reference)}


def interleaved(cases: dict[str, Callable[[], object]], runs: int) -> dict[str, list[float]]:
    """Seconds of ``runs`` rounds of the cases called one after another (after :data:`WARMUP`
    rounds): a busy moment of the machine hits them all alike."""
    for _ in range(WARMUP):
        for fn in cases.values():
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return seconds


# --------------------------------------------------------------------------- #
# The two parts
# --------------------------------------------------------------------------- #
def accuracy(folder: Path) -> dict:
    """Part 1: the embedded demo model, every export against Keras float32 on 100 held-out scenes."""
    model, class_names = load_demo_model()
    num_classes = len(class_names) + 1
    held_out = scenes(DEMO_SEED, EVAL_SCENES)
    annotations = [{"boxes": boxes, "labels": labels} for _, boxes, labels in held_out]
    x = preprocessed([image for image, _, _ in held_out], tuple(model.input_shape[1:3]))
    calibration = preprocessed([s[0] for s in scenes(CALIBRATION_SEED, CALIBRATION_SCENES)],
                               tuple(model.input_shape[1:3]))
    bbox_util = BBoxUtility(num_classes)
    model.predict(x[:8], verbose=0)  # warm-up
    start = time.perf_counter()
    reference = bbox_util.detection_out(model.predict(x, verbose=0))
    keras_seconds = time.perf_counter() - start
    keras_map = float(evaluate_detections(reference, annotations, num_classes)["mAP"])
    rows = [{"format": "keras", "precision": "float32", "bytes": DEMO_WEIGHTS.stat().st_size,
             "export_s": None, "ms_per_image": 1e3 * keras_seconds / len(x), "mAP": keras_map,
             **agreement(reference, reference)}]
    for fmt, precision in EXPORTS:
        path, export_s = export_timed(model, folder, fmt, precision, calibration, class_names)
        exported = load_exported(path, threads=THREADS)
        exported.predict_rows(x[:1])  # warm-up
        start = time.perf_counter()
        detections = exported.predict(x)
        seconds = time.perf_counter() - start
        mean_ap = float(evaluate_detections(detections, annotations, num_classes)["mAP"])
        rows.append({"format": fmt, "precision": precision, "bytes": size_of(path), "export_s": export_s,
                     "ms_per_image": 1e3 * seconds / len(x), "mAP": mean_ap, **agreement(reference, detections)})
        print(f"  accuracy {fmt} {precision}: mAP {mean_ap:.4f} (Keras {keras_map:.4f})", flush=True)
        del exported
        gc.collect()
    return {"model": f"embedded demo model ({DEMO_WEIGHTS.name}, width 0.25, {num_classes - 1} classes)",
            "scenes": len(x), "calibration": len(calibration), "keras_mAP": keras_map, "rows": rows}


def speed(folder: Path, runs: int) -> dict:
    """Part 2: the full-width SSD300, batch-1 latency of every export beside Keras float32."""
    keras.utils.set_random_seed(0)
    model = SSD300(num_classes=21)
    detector = with_detection_output(model)
    calibration = preprocessed([s[0] for s in scenes(CALIBRATION_SEED, SPEED_CALIBRATION)])
    image = preprocessed([scenes(DEMO_SEED, 1)[0][0]])
    scores = np.asarray(model.predict_on_batch(image))[0, :, 4:-8]
    candidates = int((scores[:, 1:] > 0.01).sum())  # what NMS sees: random weights score everything ~1/21
    keras_cases = {"keras": lambda: detector.predict_on_batch(image),
                   "keras_raw": lambda: model.predict_on_batch(image)}
    rows = []
    for fmt, precision in EXPORTS:
        path, export_s = export_timed(model, folder, fmt, precision, calibration)
        exported = load_exported(path, threads=THREADS)
        seconds = interleaved({"export": lambda e=exported: e.predict_rows(image), **keras_cases}, runs)
        ms = {name: 1e3 * statistics.median(s) for name, s in seconds.items()}
        rows.append({"format": fmt, "precision": precision, "bytes": size_of(path), "export_s": export_s,
                     "export_ms": ms["export"], "keras_ms": ms["keras"], "keras_raw_ms": ms["keras_raw"],
                     "ratio": ms["keras"] / ms["export"], "ratio_raw": ms["keras_raw"] / ms["export"],
                     "runs_ms": {name: [round(1e3 * v, 1) for v in s] for name, s in seconds.items()}})
        print(f"  speed {fmt} {precision}: {ms['export']:.0f} ms, Keras {ms['keras']:.0f} ms "
              f"({rows[-1]['ratio']:.2f}x), export {export_s:.0f} s", flush=True)
        del exported
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        gc.collect()
    return {"model": "SSD300(num_classes=21), full width, initial random weights", "calibration": SPEED_CALIBRATION,
            "runs": runs, "nms_candidates": candidates, "rows": rows}


def run(runs: int, parts: tuple[str, ...]) -> dict:
    result = {"machine": machine_info(), "threads": THREADS, "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        if "accuracy" in parts:
            result["accuracy"] = accuracy(Path(tmp))
        if "speed" in parts:
            result["speed"] = speed(Path(tmp), runs)
    return result


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #
NAMES = {"keras": "Keras", "litert": "LiteRT", "onnx": "ONNX", "saved_model": "SavedModel"}


def _float32_bytes(rows: list[dict]) -> dict[str, int]:
    return {r["format"]: r["bytes"] for r in rows if r["precision"] == "float32"}


def machine_line(r: dict) -> str:
    m = r["machine"]
    isa = ", ".join(f"{name} {'yes' if present else 'no'}" for name, present in m["isa"].items())
    return (f"**Machine**: {m['cpu']}, {m['cores']} cores ({isa}; flags: {' '.join(m['isa_flags'])}); "
            f"TensorFlow {m['tensorflow']}, Keras {m['keras']}, ai-edge-litert {m['ai-edge-litert']}, "
            f"onnxruntime {m['onnxruntime']}, onnx {m['onnx']}, tf2onnx {m['tf2onnx']}; {THREADS} threads "
            f"everywhere; {m['date']}; load average at start: {', '.join(f'{v:.2f}' for v in r['load_average'])}.")


def accuracy_table(a: dict) -> list[str]:
    base = _float32_bytes(a["rows"])
    lines = [f"Accuracy: {a['model']}, {a['scenes']} held-out scenes (shapes_map's), int8 calibrated on "
             f"{a['calibration']} other scenes; agreement with Keras float32 + `detection_out` over all kept "
             f"rows (confidence > 0.01, at most 200 per image).", "",
             "| format | precision | size MB | / float32 | export s | ms/image (one pass) | mAP | mAP - Keras "
             "| max abs d conf (all / > 0.5) | max abs d box (all / > 0.5) | Keras rows matched "
             "| images, same count > 0.5 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in a["rows"]:
        export_s = "" if row["export_s"] is None else f"{row['export_s']:.1f}"
        lines.append(f"| {NAMES[row['format']]} | {row['precision']} | {row['bytes'] / 1e6:.2f} | "
                     f"{row['bytes'] / base[row['format']]:.2f} | {export_s} | {row['ms_per_image']:.1f} | "
                     f"{row['mAP']:.4f} | {row['mAP'] - a['keras_mAP']:+.4f} | {row['max_conf_diff']:.1e} / "
                     f"{row['max_conf_confident_diff']:.1e} | {row['max_box_diff']:.1e} / "
                     f"{row['max_box_confident_diff']:.1e} | {row['matched']}/{row['rows']} | "
                     f"{row['same_count_share']:.0%} |")
    return lines


def speed_table(s: dict) -> list[str]:
    base = _float32_bytes(s["rows"])
    lines = [f"Speed: {s['model']}, batch 1, median of {s['runs']} interleaved runs after {WARMUP} warm-ups; "
             f"int8 calibrated on {s['calibration']} synthetic scenes. Keras = `predict_on_batch` of "
             f"`with_detection_output(model)` (same output as the export), Keras raw = the model alone. "
             f"The random weights put {s['nms_candidates']:,} (prior, class) scores above 0.01 into NMS, "
             f"a worst case for the decoder (a trained model has far fewer).", "",
             "| format | precision | size MB | / float32 | export s | export ms | Keras ms | Keras / export "
             "| Keras raw ms | Keras raw / export |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in s["rows"]:
        lines.append(f"| {NAMES[row['format']]} | {row['precision']} | {row['bytes'] / 1e6:.1f} | "
                     f"{row['bytes'] / base[row['format']]:.2f} | {row['export_s']:.1f} | {row['export_ms']:.0f} | "
                     f"{row['keras_ms']:.0f} | **{row['ratio']:.2f}x** | {row['keras_raw_ms']:.0f} | "
                     f"{row['ratio_raw']:.2f}x |")
    return lines


def verdicts(r: dict) -> list[str]:
    """One line per target: PASS/FAIL with the figures."""
    def verdict(ok: bool) -> str:
        return "**PASS**" if ok else "**FAIL**"

    lines = []
    if "accuracy" in r:
        a = r["accuracy"]
        keras_map = a["keras_mAP"]
        exports = [row for row in a["rows"] if row["format"] != "keras"]
        floats = [row for row in exports if row["precision"] in ("float32", "float16")]
        worst = max(abs(row["mAP"] - keras_map) for row in floats)
        lines.append(f"- float32 / float16 mAP within {MAP_FLOAT} of Keras ({keras_map:.4f}): "
                     + ", ".join(f"{NAMES[x['format']]} {x['precision']} {x['mAP'] - keras_map:+.4f}" for x in floats)
                     + f": {verdict(worst <= MAP_FLOAT)}")
        equal = [row for row in exports if row["precision"] == "float32"]
        ok = all(x["matched"] == x["rows"] and x["unmatched_export_rows"] == 0 and x["max_conf_diff"] <= EQUAL_TOL
                 and x["max_box_diff"] <= EQUAL_TOL for x in equal)
        lines.append(f"- float32 detections equal to `detection_out` to {EQUAL_TOL:g} on the kept rows: "
                     + ", ".join(f"{NAMES[x['format']]} {x['matched']}/{x['rows']} rows matched "
                                 f"(+{x['unmatched_export_rows']} extra), conf {x['max_conf_diff']:.1e}, "
                                 f"box {x['max_box_diff']:.1e}" for x in equal)
                     + f": {verdict(ok)}")
        int8 = [row for row in exports if row["precision"] == "int8"]
        drop = max(keras_map - x["mAP"] for x in int8)
        lines.append(f"- int8 mAP at most {MAP_INT8} below Keras: "
                     + ", ".join(f"{NAMES[x['format']]} {x['mAP'] - keras_map:+.4f}" for x in int8)
                     + f": {verdict(drop <= MAP_INT8)} (dynamic, for information: "
                     + ", ".join(f"{NAMES[x['format']]} {x['mAP'] - keras_map:+.4f}" for x in exports
                                 if x["precision"] == "dynamic") + ")")
    for part in ("accuracy", "speed"):
        if part not in r:
            continue
        rows = r[part]["rows"]
        base = _float32_bytes(rows)
        int8 = [row for row in rows if row["precision"] == "int8"]
        ratios = [row["bytes"] / base[row["format"]] for row in int8]
        which = "demo model" if part == "accuracy" else "full width"
        lines.append(f"- int8 file at most {SIZE_INT8}x the float32 file ({which}): "
                     + ", ".join(f"{NAMES[x['format']]} {ratio:.3f}x ({x['bytes'] / 1e6:.2f} / "
                                 f"{base[x['format']] / 1e6:.2f} MB)" for x, ratio in zip(int8, ratios))
                     + f": {verdict(max(ratios) <= SIZE_INT8)}")
    if "speed" in r:
        int8 = [row for row in r["speed"]["rows"] if row["precision"] == "int8"]
        best = max(int8, key=lambda x: x["ratio"])
        lines.append(f"- fastest int8 export of the full-width SSD300 at batch 1 >= {SPEED_INT8}x Keras float32: "
                     f"{NAMES[best['format']]} int8 {best['export_ms']:.0f} ms vs Keras {best['keras_ms']:.0f} ms = "
                     f"{best['ratio']:.2f}x ({best['ratio_raw']:.2f}x the raw model without decoding; "
                     + ", ".join(f"{NAMES[x['format']]} int8 {x['ratio']:.2f}x" for x in int8)
                     + f"): {verdict(best['ratio'] >= SPEED_INT8)}")
    return lines


def notes(r: dict) -> list[str]:
    """Observations that the tables imply, for the reader."""
    lines = []
    if "speed" in r:
        rows = {(row["format"], row["precision"]): row for row in r["speed"]["rows"]}
        dynamic, float32 = rows.get(("onnx", "dynamic")), rows.get(("onnx", "float32"))
        if dynamic and float32 and dynamic["export_ms"] > 1.5 * float32["export_ms"]:
            lines.append(f"- ONNX dynamic runs at {dynamic['export_ms'] / float32['export_ms']:.1f}x the time of "
                         f"ONNX float32 ({dynamic['export_ms']:.0f} vs {float32['export_ms']:.0f} ms): ONNX "
                         f"Runtime's dynamic quantization turns every convolution into `ConvInteger` with "
                         f"per-call activation quantization, which this ONNX Runtime runs far slower than its "
                         f"float `Conv` on this CPU. The file is small, not fast.")
    if "accuracy" in r:
        rows = r["accuracy"]["rows"]
        keras_ms = rows[0]["ms_per_image"]
        lines.append(f"- ms/image in the accuracy table is one pass over the 100 scenes (Keras: `predict` at "
                     f"batch 32 + `detection_out`, {keras_ms:.1f} ms/image; exports: batch 1), not interleaved: "
                     f"for information only; the speed table is the comparison.")
    return lines


def report(r: dict) -> str:
    lines = [machine_line(r), ""]
    if "accuracy" in r:
        lines += accuracy_table(r["accuracy"]) + [""]
    if "speed" in r:
        lines += speed_table(r["speed"]) + [""]
    lines += ["Targets:", ""] + verdicts(r)
    observed = notes(r)
    return "\n".join(lines + (["", "Notes:", ""] + observed if observed else []))


PREAMBLE = """\
**Measures** (`bench/bench_export.py`): every format x precision of `export_model` (LiteRT and
ONNX at float32, float16, dynamic and int8, and the float32 SavedModel), run through
`load_exported(path, threads=2)`, against Keras float32 in the same process (TensorFlow on 2
intra-op threads). Part 1, accuracy: the embedded demo model on the 100 held-out scenes of
`shapes_map` (int8 calibrated on 100 other scenes); mAP@0.5 and the agreement with
`BBoxUtility.detection_out` (each Keras row matched to the exported row of its label with the
highest IoU >= 0.5; largest confidence / corner difference over matched rows; images with as
many detections above 0.5). Part 2, speed: the full-width `SSD300(num_classes=21)` (initial
random weights; int8 calibrated on 16 synthetic scenes), batch 1, the export, Keras
`predict_on_batch` of `with_detection_output(model)` and of the raw model interleaved, 2 warm-ups
then 5 rounds, medians.

**Targets**: float32 and float16 mAP within 0.005 of Keras float32, float32 detections equal to
`detection_out` to 1e-4 on the kept rows; int8 mAP at most 0.01 below Keras float32, int8 file
at most 0.35x the float32 file; the fastest int8 export of the full-width SSD300 at batch 1 at
least 1.5x Keras float32.

**Run**: `make bench` or `.venv/bin/python bench/bench_export.py [--runs N] [--json PATH]`
(about 10 minutes; a run of both parts rewrites this section, `--no-results` leaves it).
"""


def write_section(text: str, path: Path = RESULTS) -> None:
    """Replaces the section :data:`SECTION` of ``path`` (up to the next ``## `` heading) with
    ``text``, or appends it; the rest of the file is kept byte for byte."""
    content = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    section = f"{SECTION}\n\n{text.rstrip()}\n"
    match = re.search(rf"^{re.escape(SECTION)}[ \t]*\n.*?(?=^## |\Z)", content, flags=re.M | re.S)
    if match:
        following = content[match.end():]
        content = content[:match.start()] + section + ("\n" if following else "") + following
    else:
        content = content.rstrip("\n") + "\n\n" + section
    path.write_text(content, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per case (default 5)")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON here")
    parser.add_argument("--part", choices=("accuracy", "speed"), help="run one part only (RESULTS.md is left alone)")
    parser.add_argument("--no-results", action="store_true", help=f"do not rewrite the section in {RESULTS.name}")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    parts = (args.part,) if args.part else ("accuracy", "speed")
    result = run(args.runs, parts)
    text = report(result)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if not args.no_results and not args.part:
        write_section(PREAMBLE + "\n" + text)


if __name__ == "__main__":
    main()
