"""What the commands share: argument types, the model options of ``detect``, ``evaluate`` and
``gradcam``, and saying which model runs.

Argument types raise argparse's usage error (exit 2, naming the option) while the command line is
parsed, before TensorFlow is imported. This module imports no TensorFlow itself.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .. import checks
from ..backends import import_backend_quietly
from ..models import WEIGHTS_HELP, ResolvedModel, read_class_names

__all__ = ["checked", "positive_int", "non_negative_int", "positive_float", "probability", "nonzero_fraction",
           "iou_threshold", "dropout_rate", "add_command", "add_model_options", "class_list", "load_model",
           "untrained_model", "say_model", "exported_path", "add_exported_model_option", "add_nms_option",
           "OptionConflict", "check_exported_options", "nms_thresh", "load_exported_model",
           "DEFAULT_NMS_THRESH"]

DEFAULT_NMS_THRESH = 0.45
"""``--nms-thresh`` of a Keras model when not given (an exported file's is its own)."""
KERAS_MODEL_OPTIONS = ("weights", "classes", "allow_untrained", "width_multiplier")
"""Options that choose or build a Keras model: not with ``--model`` (the file brings all that)."""

T = TypeVar("T")


def checked(convert: Callable[[str], Any], check: Callable[[Any, str], T], requirement: str) -> Callable[[str], T]:
    """An argparse ``type``: the text converted by ``convert``, then passed through ``check``, one
    of :mod:`ssd_keras.checks` (the library's own argument checks).

    Anything else is argparse's usage error, e.g. ``argument --iou: expected a number in (0, 1],
    got '0'``.
    """
    def parse(text: str) -> T:
        try:
            return check(convert(text), "value")
        except (TypeError, ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {requirement}, got {text!r}") from None

    parse.__name__ = requirement  # argparse names the type by it in some messages
    return parse


def _below_one(value: float, name: str) -> float:
    if checks.fraction(value, name) == 1.0:
        raise ValueError(f"{name} must be below 1, got {value}")
    return value


positive_int = checked(int, checks.positive_int, "a positive integer")
non_negative_int = checked(int, checks.non_negative_int, "an integer >= 0")
positive_float = checked(float, checks.positive_number, "a positive number")
probability = checked(float, checks.fraction, "a number in [0, 1]")
nonzero_fraction = checked(float, lambda value, name: checks.fraction(value, name, zero_allowed=False),
                           "a number in (0, 1]")
iou_threshold = nonzero_fraction
dropout_rate = checked(float, _below_one, "a number in [0, 1)")


def _text_width() -> int:
    """The width argparse wraps help to (the terminal's, less 2)."""
    return max(40, shutil.get_terminal_size().columns - 2)


def add_command(commands: Any, name: str, help: str, description: str,
                examples: Sequence[str] = ()) -> argparse.ArgumentParser:
    """A command's parser: ``description`` wrapped, ``examples`` (``%(prog)s`` for the command's
    own name, e.g. ``ssd-keras detect``) listed after the options as they are written."""
    epilog = "examples:\n" + "\n".join(f"  {example}" for example in examples) if examples else None
    return commands.add_parser(name, help=help, description=textwrap.fill(description, _text_width()),
                               epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_model_options(parser: argparse.ArgumentParser, fallback: str) -> None:
    """``--weights``, ``--classes`` and ``--allow-untrained``, the same for every command that
    runs SSD300 (the rule is :func:`ssd_keras.models.resolve_model`'s). ``fallback`` says what
    runs when neither weights nor VOC weights are found."""
    parser.add_argument(
        "--weights", metavar="PATH",
        help="weights file (.h5/.hdf5 legacy, .weights.h5, .keras); a training run's weights bring "
             "their classes, width and input size (the run's config.json, or NAME.json beside "
             "NAME.weights.h5). Default: the VOC weights (./weights/weights_SSD300.hdf5 or "
             f"$SSD_KERAS_WEIGHTS), else {fallback}")
    parser.add_argument(
        "--classes", metavar="voc|FILE",
        help="class names without background: 'voc' or a file with one name per line (default: "
             "the weights' own, from their run; VOC's for weights without one)")
    parser.add_argument(
        "--allow-untrained", action="store_true",
        help="when no trained weights are found for the classes asked for, run an untrained (seeded) "
             "SSD300 instead of failing; its output is meaningless (for trying the pipeline)")


def class_list(spec: str | None) -> list[str] | None:
    """The class names of a ``--classes`` value (``voc`` or a file), or None when not given."""
    return None if spec is None else read_class_names(spec)


def say_model(resolved: ResolvedModel) -> ResolvedModel:
    """Prints which model runs (one line, stdout); returns it."""
    print(f"model: {resolved.description}")
    return resolved


def _warn_untrained(resolved: ResolvedModel) -> ResolvedModel:
    if not resolved.trained:
        print(f"WARNING: no trained weights found for the classes {', '.join(resolved.class_names)} "
              f"({WEIGHTS_HELP}).\nWARNING: running an UNTRAINED network (--allow-untrained): its output "
              "is random and meaningless.", file=sys.stderr)
    return say_model(resolved)


def untrained_model(classes: Sequence[str], width_multiplier: float | None = None) -> ResolvedModel:
    """An untrained, seeded SSD300 for ``classes``, with a WARNING on stderr."""
    import_backend_quietly()
    from ..models import resolve_model

    return _warn_untrained(resolve_model(None, list(classes), width_multiplier, allow_untrained=True))


def load_model(args: argparse.Namespace, width_multiplier: float | None = None) -> ResolvedModel:
    """The model of ``--weights``, ``--classes`` and ``--allow-untrained``, said on stdout (an
    untrained one with a WARNING on stderr).

    Raises:
        FileNotFoundError: no weights fit and ``--allow-untrained`` is not given (the message
            says what to pass), or ``--weights`` is not a file.
        ValueError: the weights' run contradicts ``--classes``, or the weights do not fit.
    """
    import_backend_quietly()
    from ..models import resolve_model

    return _warn_untrained(resolve_model(args.weights, class_list(args.classes), width_multiplier,
                                         allow_untrained=args.allow_untrained))


# --------------------------------------------------------------------------- #
# Exported models (--model FILE)
# --------------------------------------------------------------------------- #
class OptionConflict(ValueError):
    """Options that contradict each other or the exported file (the commands exit 2 on it)."""


def exported_path(text: str):
    """An argparse ``type``: an exported model that exists (``.tflite``, ``.onnx`` or a SavedModel
    folder), checked while the command line is parsed (no runtime is loaded yet)."""
    from pathlib import Path

    from ..exported import format_of

    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"exported model not found: {text}")
    try:
        format_of(path)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return path


def add_exported_model_option(parser: argparse.ArgumentParser) -> None:
    """``--model FILE``: run an exported model instead of Keras weights."""
    parser.add_argument(
        "--model", metavar="FILE", type=exported_path,
        help="run this exported model (a .tflite or .onnx file or a SavedModel folder, written by "
             "the export command or ssd_keras.export_model) instead of Keras weights: the very file you "
             "deploy. Its class names, input size and NMS threshold come from the file; not with the "
             "options that choose a Keras model (--weights, --classes, --allow-untrained)")


def add_nms_option(parser: argparse.ArgumentParser) -> None:
    """``--nms-thresh``, None when not given (:func:`nms_thresh` resolves it)."""
    parser.add_argument("--nms-thresh", type=probability, default=None,
                        help="IoU threshold of non-maximum suppression, in [0, 1] (default: "
                             f"{DEFAULT_NMS_THRESH}; with --model, the file's, fixed at export: another "
                             "value is an error)")


def nms_thresh(args: argparse.Namespace) -> float:
    """The NMS threshold of a Keras model: ``--nms-thresh``, or :data:`DEFAULT_NMS_THRESH`."""
    return DEFAULT_NMS_THRESH if args.nms_thresh is None else args.nms_thresh


def check_exported_options(args: argparse.Namespace) -> None:
    """Raises :class:`OptionConflict` when ``--model`` comes with an option that chooses a Keras
    model (``--weights``, ``--classes``, ``--allow-untrained``, ``--width-multiplier``)."""
    if getattr(args, "model", None) is None:
        return
    given = [f"--{name.replace('_', '-')}" for name in KERAS_MODEL_OPTIONS
             if getattr(args, name, None) not in (None, False)]
    if given:
        raise OptionConflict(f"--model {args.model} runs an exported file, which brings its own weights, classes "
                             f"and input size: not with {', '.join(given)}")


def load_exported_model(args: argparse.Namespace, conf_thresh: float | None = None) -> ResolvedModel:
    """The exported model of ``--model``, said on stdout as ``ResolvedModel(model, class_names,
    description)``.

    ``--nms-thresh`` other than the file's is an :class:`OptionConflict` (the file's NMS was
    fixed at export). A ``conf_thresh`` below the file's recorded confidence threshold gets a
    WARNING on stderr (the file has no detections below it; the results are those at the file's
    threshold) and runs.

    Raises:
        FileNotFoundError, ValueError: not an exported SSD300 (see :func:`ssd_keras.load_exported`).
        OptionConflict: ``--nms-thresh`` contradicts the file.
        ssd_keras.exported.MissingRuntimeError: the file's runtime is not installed.
    """
    from ..exported import load_exported

    model = load_exported(args.model)
    fixed = float(model.settings["nms_thresh"])
    asked = getattr(args, "nms_thresh", None)
    if asked is not None and not math.isclose(asked, fixed, rel_tol=0.0, abs_tol=1e-9):
        raise OptionConflict(f"--nms-thresh {asked:g}: the NMS of {args.model} was fixed at export "
                             f"(IoU {fixed:g}); leave --nms-thresh out, or export the model again with "
                             f"--nms-thresh {asked:g}")
    floor = float(model.settings.get("confidence_threshold", 0.0))
    if conf_thresh is not None and conf_thresh < floor:
        print(f"WARNING: --conf-thresh {conf_thresh:g} is below {floor:g}, the confidence threshold "
              f"{args.model} was exported with: it has no detections under {floor:g}, so this runs at "
              f"{floor:g} (export again with a lower --conf-thresh for more)", file=sys.stderr)
    return say_model(ResolvedModel(model, list(model.class_names), model.description))
