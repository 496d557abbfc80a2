"""Video pipeline speed: end-to-end frames/s of ``ssd_keras.video.VideoTest`` against the model alone.

What is measured (notebooks and video issue), on the CPU that runs the script:

1. A generated video file (``mp4v``, 640x480, synthetic shape scenes from
   ``ssd_keras.data.make_scene`` resized to 640x480) is written to a temporary folder.
2. Model only: the frames, already resized and ``preprocess_input``-ed in memory, through the
   same forward pass ``VideoTest`` uses (its ``tf.function``, batches of 4): frames/s.
3. End to end: ``VideoTest.run(video, display=False)`` over the whole file (reading and
   decoding the video, resizing, preprocessing, the model, ``detection_out`` at 0.6, drawing,
   the FPS counter), and the same with ``output=`` (writing the annotated ``mp4v`` video).
4. Target: end-to-end frames/s >= 0.85x the model-only frames/s (best runs compared; medians
   reported too), for each model:

   - ``SSD300`` full width, 21 classes (the VOC configuration; the VOC weights when present at
     ``weights/weights_SSD300.hdf5``, else an untrained network, which is as fast);
   - the demo configuration: width 0.25, the 4 shape classes (the embedded demo model when its
     files are present, else an untrained one of the same shape whose background logits are
     raised by ``BACKGROUND_BIAS``: untrained, about 200 priors a frame score above 0.6 for
     some shape, and drawing 200 boxes a frame is not what a trained model costs; with the
     bias a few do, as with a trained model).

5. For the demo configuration also the deployed path (export issue): the model exported with
   ``export_model`` to LiteRT float32 and int8 (int8 calibrated on 32 scenes of another seed),
   ``ExportedModel.detect`` on the same frames (resize, preprocess, the exported network with
   its decoding and NMS, rows above 0.6), beside ``ssd_keras.detect`` of the Keras model on the
   same frames (the same work in Keras float32 + ``detection_out``): frames/s and the ratio to
   Keras ``detect``. LiteRT runs on ``os.cpu_count()`` threads, as TensorFlow does.

The cases alternate (model only, end to end, with output, and the detect cases) for ``--runs``
rounds so that a busy moment of this shared machine hits all of them alike; each is warmed up
first.

Run ``python bench/bench_video.py [--runs N] [--json PATH]`` (``make bench`` does).
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from bench_forward import bench_main, machine, measure

from ssd_keras.models import find_default_weights, import_tensorflow_quietly

import_tensorflow_quietly()

import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from ssd_keras import layout  # noqa: E402
from ssd_keras.data.synthetic import SHAPE_CLASSES, make_scene  # noqa: E402
from ssd_keras.export import export_model  # noqa: E402
from ssd_keras.exported import ExportedModel, load_exported  # noqa: E402
from ssd_keras.image import model_batches, preprocess_input, resize_image  # noqa: E402
from ssd_keras.models import DEMO_WEIGHTS, load_demo_model  # noqa: E402
from ssd_keras.ssd import SSD300, VOC_CLASSES, detect  # noqa: E402
from ssd_keras.video import VideoTest  # noqa: E402
from ssd_keras.weights import load_weights  # noqa: E402

FRAME_SIZE = (640, 480)  # width, height
FRAMES = {"SSD300 (VOC configuration)": 24, "demo configuration (width 0.25)": 96}
BATCH = 4
CONF_THRESH = 0.6
TARGET_RATIO = 0.85
BACKGROUND_BIAS = 7.0  # ~6 detections >= 0.6 per frame for the untrained demo configuration
EXPORTS = ("float32", "int8")  # LiteRT precisions timed for the demo configuration
CALIBRATION = 32  # int8 calibration scenes, of CALIBRATION_SEED (the video's frames are of seed 7)
CALIBRATION_SEED = 8
KERAS_DETECT = "Keras detect()"
DEMO_CASE = list(FRAMES)[1]  # the case whose exported files are timed too


def write_video(path: Path, count: int) -> list[np.ndarray]:
    """Writes ``count`` 640x480 scenes as an mp4v video; returns the frames as read back (RGB)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, FRAME_SIZE)
    for i in range(count):
        scene = make_scene(np.random.default_rng([7, i]), size=480)[0]
        writer.write(cv2.cvtColor(cv2.resize(scene, FRAME_SIZE), cv2.COLOR_RGB2BGR))
    writer.release()
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    if len(frames) != count:
        raise RuntimeError(f"wrote {count} frames to {path} but read back {len(frames)}")
    return frames


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def raise_background(model: keras.Model, bias: float) -> None:
    """Adds ``bias`` to the background logit of every prior (the confidence heads' biases)."""
    num_classes = layout.num_classes_of(model)
    for layer in model.layers:
        if "_mbox_conf" in layer.name and layer.weights:
            kernel, biases = layer.get_weights()
            biases.reshape(-1, num_classes)[:, 0] += bias
            layer.set_weights([kernel, biases])


def models() -> dict[str, tuple[keras.Model, list[str], str]]:
    keras.utils.set_random_seed(0)
    voc = SSD300((300, 300, 3), num_classes=len(VOC_CLASSES) + 1)
    weights = find_default_weights()
    if weights is not None:
        load_weights(voc, weights)
    voc_name = f"weights {weights.name}" if weights else "untrained"
    if DEMO_WEIGHTS.is_file():
        demo, demo_classes = load_demo_model()
        demo_name = f"weights {DEMO_WEIGHTS.name}"
    else:
        demo_classes = list(SHAPE_CLASSES)
        keras.utils.set_random_seed(0)  # BACKGROUND_BIAS was chosen for this initialisation
        demo = SSD300((300, 300, 3), num_classes=len(demo_classes) + 1, width_multiplier=0.25)
        raise_background(demo, BACKGROUND_BIAS)
        demo_name = f"untrained, background logits +{BACKGROUND_BIAS:g}"
    names = list(FRAMES)
    return {names[0]: (voc, list(VOC_CLASSES), voc_name), names[1]: (demo, demo_classes, demo_name)}


def litert_exports(model: keras.Model, class_names: list[str], folder: Path) -> dict[str, ExportedModel]:
    """The model exported to LiteRT at each of :data:`EXPORTS`, loaded on ``os.cpu_count()`` threads."""
    scenes = [make_scene(np.random.default_rng([CALIBRATION_SEED, i]))[0] for i in range(CALIBRATION)]
    calibration = np.concatenate(list(model_batches(scenes, tuple(model.input_shape[1:3]), CALIBRATION)))
    exported = {}
    for precision in EXPORTS:
        path = export_model(model, folder / f"demo_{precision}.tflite", "litert", precision,
                            calibration=calibration if precision == "int8" else None, class_names=class_names)
        exported[f"LiteRT {precision} detect()"] = load_exported(path, threads=os.cpu_count())
    return exported


def time_case(model: keras.Model, class_names: list[str], count: int, folder: Path, runs: int,
              exported: dict[str, ExportedModel] | None = None) -> dict:
    """Model-only and end-to-end frames/s of one model on a video of ``count`` frames; with
    ``exported``, also ``detect`` of the Keras model and of each exported file on the frames."""
    video = folder / f"video_{count}.mp4"
    frames = write_video(video, count)
    vt = VideoTest(class_names, model, batch_size=BATCH)
    inputs = preprocess_input(np.stack([resize_image(f, vt.input_shape) for f in frames]))
    summaries = []

    def model_only():
        for start in range(0, count, BATCH):
            vt.predict(inputs[start:start + BATCH])

    def end_to_end(output=None):
        summary = vt.run(video, conf_thresh=CONF_THRESH, display=False, output=output)
        assert summary.frames == count, summary
        summaries.append(summary)

    cases = {"model only": model_only, "end to end": end_to_end,
             "end to end, writing the video": lambda: end_to_end(folder / "out.mp4")}
    detections = {}
    if exported:
        def keras_detect():
            detections[KERAS_DETECT] = detect(model, frames, confidence_threshold=CONF_THRESH, batch_size=BATCH)

        cases[KERAS_DETECT] = keras_detect
        for name, file in exported.items():
            def exported_detect(name=name, file=file):
                detections[name] = file.detect(frames, confidence_threshold=CONF_THRESH, batch_size=BATCH)

            cases[name] = exported_detect
    seconds = {name: measure(fn, 1) for name, fn in cases.items()}  # each warmed up first
    for _ in range(runs - 1):
        for name, fn in cases.items():
            seconds[name].append(timed(fn))
    return {"frames": count,
            "fps": {name: {"best": count / min(s), "median": count / statistics.median(s)}
                    for name, s in seconds.items()},
            "in-pipeline model fps (median)": statistics.median(s.model_fps for s in summaries),
            "detections per frame": summaries[0].detections / count,
            "detect() detections per frame": {name: sum(map(len, rows)) / count for name, rows in detections.items()}}


def run(runs: int) -> dict:
    results = {"machine": machine(), "runs": runs, "load_average": os.getloadavg(), "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for case, (model, class_names, weights) in models().items():
            exported = litert_exports(model, class_names, Path(tmp)) if case == DEMO_CASE else None
            results["cases"][case] = {"weights": weights,
                                      **time_case(model, class_names, FRAMES[case], Path(tmp), runs, exported)}
    return results


def report(r: dict) -> str:
    m = r["machine"]
    load = ", ".join(f"{v:.2f}" for v in r["load_average"])
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores; TensorFlow {m['tensorflow']}; {m['date']}; "
             f"{r['runs']} timed runs per case (alternating); load average at start: {load}.", "",
             "| model | frames | case | FPS best | FPS median | / model only (best, median) |",
             "|---|---:|---|---:|---:|---:|"]
    verdicts = []
    for case, c in r["cases"].items():
        base = c["fps"]["model only"]
        for name, fps in c["fps"].items():
            lines.append(f"| {case}, {c['weights']} | {c['frames']} | {name} | {fps['best']:.2f} | "
                         f"{fps['median']:.2f} | {fps['best'] / base['best']:.2f}, "
                         f"{fps['median'] / base['median']:.2f} |")
        ratio = c["fps"]["end to end"]["best"] / base["best"]
        verdicts.append(f"{case}: end to end / model only = {ratio:.2f} (target >= {TARGET_RATIO}): "
                        f"{'PASS' if ratio >= TARGET_RATIO else 'FAIL'}; the model inside the "
                        f"pipeline ran at {c['in-pipeline model fps (median)']:.2f} FPS (median); "
                        f"{c['detections per frame']:.1f} detections drawn per frame")
        if KERAS_DETECT in c["fps"]:
            keras_fps = c["fps"][KERAS_DETECT]
            per_frame = c["detect() detections per frame"]
            verdicts.append(f"{case}, deployed: " + "; ".join(
                f"{name} {fps['best']:.1f} FPS = {fps['best'] / keras_fps['best']:.2f}x (median "
                f"{fps['median'] / keras_fps['median']:.2f}x) {KERAS_DETECT} ({keras_fps['best']:.1f} FPS), "
                f"{per_frame[name]:.1f} detections per frame (Keras {per_frame[KERAS_DETECT]:.1f})"
                for name, fps in c["fps"].items() if name.startswith("LiteRT")))
    return "\n".join(lines + [""] + verdicts)


def main(argv: list[str] | None = None) -> None:
    bench_main(__doc__.splitlines()[0], run, report, argv)


if __name__ == "__main__":
    main()
