"""SSD300 on a video file or a camera: boxes, class names, scores and an FPS counter.

The command line over :mod:`ssd_keras.video` (where ``VideoTest`` and the pipeline live)::

    python testing_utils/videotest.py --camera 0
    python testing_utils/videotest.py --video clip.mp4 --output clip_ssd.mp4 --no-display
    python testing_utils/videotest.py --camera 0 --model ssd300_int8.tflite

The model is chosen by :func:`ssd_keras.models.resolve_model`, the rule every entry point uses:
``--weights`` when given (a training run's weights bring their classes); else the VOC weights
at ``weights/weights_SSD300.hdf5`` (or ``$SSD_KERAS_WEIGHTS``) when present, else, without
``--classes``, the embedded shapes demo model. Other classes without weights need
``--allow-untrained``. ``--model FILE`` runs an exported model instead (a ``.tflite`` or ``.onnx``
file or a SavedModel folder from :func:`ssd_keras.export_model`: the file you deploy, with its
own classes, decoding and NMS; a LiteRT or ONNX file needs no TensorFlow). The model's
description is printed.

Exit status: 0 done, 1 no usable model (weights, classes, exported file), 2 a source, display or
output that cannot be used, or a usage error (``--model`` with ``--weights``, ``--classes`` or
``--allow-untrained``).

As in the original, the script also works as a module when ``testing_utils/`` is on
``sys.path``: ``from videotest import VideoTest`` (re-exported from :mod:`ssd_keras.video`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ssd_keras.exported import MissingRuntimeError
from ssd_keras.video import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONF_THRESH,
    VideoSourceError,
    VideoSummary,
    VideoTest,
    describe_source,
    draw_fps,
    has_display,
    open_video,
)

__all__ = ["VideoTest", "VideoSourceError", "VideoSummary", "open_video", "draw_fps", "build_parser", "main"]

EXIT_MODEL_ERROR = 1
EXIT_SOURCE_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videotest.py",
        description="Run SSD300 on a camera or a video file, showing (or writing) the detections. "
                    "q or Esc quits the window.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--camera", type=int, metavar="INDEX", help="camera index (default: 0)")
    source.add_argument("--video", metavar="PATH", help="a video file (or stream URL)")
    parser.add_argument("--weights", metavar="PATH",
                        help="SSD300 weights (.hdf5, .weights.h5, .keras); default: "
                             "weights/weights_SSD300.hdf5 when present, else the embedded demo model")
    parser.add_argument("--classes", metavar="voc|FILE",
                        help="class names: 'voc' or a file with one name per line (default: the "
                             "weights' own classes)")
    parser.add_argument("--allow-untrained", action="store_true",
                        help="with no weights for the classes, run an untrained network (its "
                             "detections are meaningless) instead of stopping")
    parser.add_argument("--model", metavar="FILE",
                        help="run this exported model (.tflite, .onnx or a SavedModel folder, from "
                             "ssd_keras.export_model) instead of Keras weights; its classes come from the "
                             "file; not with --weights, --classes or --allow-untrained")
    parser.add_argument("--conf-thresh", type=float, default=DEFAULT_CONF_THRESH,
                        help=f"draw detections at or above this confidence (default {DEFAULT_CONF_THRESH})")
    parser.add_argument("--start-frame", type=int, default=0, help="frames skipped at the start")
    parser.add_argument("--output", metavar="OUT.mp4", help="also write the annotated video here (mp4v)")
    parser.add_argument("--no-display", action="store_true", help="headless: open no window")
    parser.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"most frames per forward pass (default {DEFAULT_BATCH_SIZE})")
    return parser


def _model(args: argparse.Namespace) -> tuple:
    """``(model, class names, description)``: the exported file of ``--model``, or the Keras model
    of :func:`ssd_keras.models.resolve_model` (TensorFlow imported only now, once the source is
    known to work)."""
    if args.model is not None:
        from ssd_keras.exported import load_exported

        exported = load_exported(args.model)
        return exported, exported.class_names, exported.description
    from ssd_keras.models import import_tensorflow_quietly, read_class_names, resolve_model

    import_tensorflow_quietly()
    classes = read_class_names(args.classes) if args.classes is not None else None
    return resolve_model(args.weights, classes, allow_untrained=args.allow_untrained)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (1: no usable model; 2: the source, display or
    output cannot be used)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.start_frame < 0:
        parser.error("--start-frame must be >= 0")
    if args.max_frames is not None and args.max_frames < 1:
        parser.error("--max-frames must be >= 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    keras_options = [option for option, given in (("--weights", args.weights is not None),
                                                  ("--classes", args.classes is not None),
                                                  ("--allow-untrained", args.allow_untrained)) if given]
    if args.model is not None and keras_options:
        parser.error(f"--model runs an exported file, which brings its own weights and classes: not with "
                     f"{', '.join(keras_options)}")
    display = not args.no_display
    if display and not has_display():
        print("error: no display found (DISPLAY is not set): use --no-display, with --output "
              "OUT.mp4 to keep the annotated video", file=sys.stderr)
        return EXIT_SOURCE_ERROR
    source: int | str = args.video if args.video is not None else (args.camera or 0)
    try:
        capture = open_video(source, args.start_frame)
    except VideoSourceError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_SOURCE_ERROR

    try:
        model, class_names, description = _model(args)
        video_test = VideoTest(class_names, model, batch_size=args.batch_size)
    except (OSError, ValueError, MissingRuntimeError) as err:
        capture.release()
        print(f"error: {err}", file=sys.stderr)
        return EXIT_MODEL_ERROR
    print(f"model: {description}")
    try:
        summary = video_test.run(capture, args.start_frame, args.conf_thresh, output=args.output,
                                 display=display, max_frames=args.max_frames)
    except (VideoSourceError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_SOURCE_ERROR
    print(f"{describe_source(source)}: {summary}")
    if args.output:
        print(f"annotated video: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
