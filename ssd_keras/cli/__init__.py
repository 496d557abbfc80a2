"""``ssd-keras <command>`` / ``python -m ssd_keras <command>``: the command line, a thin shell.

Each command is one module of this package pairing its parser (``add_parser``) with its run
function: it parses, prints and chooses the exit status; the work is the library's. Commands:

    detect    run SSD300 on images, write annotated PNGs, ``detections.csv`` and ``.json``.
    train     train SSD300 on an annotation CSV (resumable, distributable).
    evaluate  Pascal VOC AP / mAP of a model on an annotation CSV, PR curves.
    demo      detect and explain objects in sample images with the embedded model.
    gradcam   explain the top detections of an image (Grad-CAM, guided backpropagation).
    export    write a model for deployment: LiteRT, ONNX or SavedModel, decoding and NMS inside.
    csv       write dataset CSVs from Pascal VOC XML, class folders or an image folder.
    marknet   train, evaluate and explain MarkNet, the mark classifier.

Exit status: 0 done, 1 failed (a one-line ``error: ...`` on stderr), 2 usage error (argparse's,
raised before any work, TensorFlow not yet imported; also a training run folder that is busy or
holds a run with other settings), 130 interrupted (Ctrl-C during training; run it again to
resume). ``detect``, ``evaluate``, ``gradcam`` and ``export`` choose their model by
:func:`ssd_keras.models.resolve_model`'s rule and say which on stdout.
Importing this package imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..models import find_default_weights, import_tensorflow_quietly, read_class_names  # noqa: F401  (old home)
from ..checks import MissingDependencyError
from . import csv, demo, detect, evaluate, export, gradcam, marknet, train
from ._common import OptionConflict
from .detect import expand_image_arguments
from .train import CPU_DEVICES_ENV

__all__ = ["main", "build_parser", "expand_image_arguments", "CPU_DEVICES_ENV", "import_tensorflow_quietly",
           "find_default_weights", "read_class_names", "COMMANDS", "ENTRY_POINT", "MODULE_PROG"]

COMMANDS = (detect, train, evaluate, demo, gradcam, export, csv, marknet)
"""The command modules, in the order ``--help`` lists them."""
ENTRY_POINT = "ssd-keras"
"""The console script (``setup.cfg``)."""
MODULE_PROG = "python -m ssd_keras"


def program_name(argv0: str | None = None) -> str:
    """``ssd-keras`` when run by the console script, else ``python -m ssd_keras``."""
    name = os.path.basename(sys.argv[0] if argv0 is None else argv0)
    return ENTRY_POINT if name.split(".")[0] in (ENTRY_POINT, f"{ENTRY_POINT}-script") else MODULE_PROG


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; ``prog`` defaults to :func:`program_name`."""
    parser = argparse.ArgumentParser(prog=prog or program_name(),
                                     description="SSD300 object detection in Keras 3.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0 ok, 1 failure, 2 usage error: argparse
    raises ``SystemExit(2)``)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except OptionConflict as err:  # options that contradict each other: a usage error
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError, MissingDependencyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
