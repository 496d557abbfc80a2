"""``train``: SSD300 on an annotation CSV, into a resumable run folder.

Exit status: 0 done (or already finished), 1 failed, 2 the run folder is in use by another process
or holds a run of other settings, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

from ..backends import BACKENDS
from ._common import add_command, class_list, nonzero_fraction, positive_float, positive_int

__all__ = ["add_parser", "run", "CPU_DEVICES_ENV", "add_run_folder_options", "run_training", "interruptible",
           "RUN_FOLDER_HELP"]

CPU_DEVICES_ENV = "SSD_KERAS_CPU_DEVICES"
"""Set to N to split the CPU into N logical devices, so that ``--strategy mirrored`` runs (and is
tested) on a machine without GPUs: TensorFlow's logical devices, or JAX's host platform devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``)."""
EXAMPLES = (
    "%(prog)s --csv train.csv --val-csv val.csv --out runs/mine --epochs 30 --seed 0",
    "%(prog)s --csv train.csv --out runs/ft --weights weights/weights_SSD300.hdf5 --freeze original "
    "--lr-decay 0.9",
    "%(prog)s --csv train.csv --val-csv val.csv --out runs/mine --epochs 50 --seed 0   # 30 done: 20 more",
)
RUN_FOLDER_HELP = (
    "One run folder holds one run, run by one process at a time (a second one exits with status 2). Run "
    "the same command again to resume a run that was killed or interrupted; give a finished run a larger "
    "--epochs to continue it. Other settings than the folder's (everything but --epochs, --workers, "
    "--keep-checkpoints, --strategy, --backend and --quiet) are refused (status 2) unless --overwrite. Every file "
    "is written whole or not at all.")


def add_parser(commands) -> argparse.ArgumentParser:
    parser = add_command(
        commands, "train", help="train SSD300 on an annotation CSV",
        description="Train SSD300 with MultiboxLoss on an annotation CSV. Writes config.json, history.csv, "
                    "loss.png, checkpoints/epoch_NNN.weights.h5 and final.weights.h5 to --out. "
                    + RUN_FOLDER_HELP,
        examples=EXAMPLES)
    parser.add_argument("--csv", required=True, help="training annotation CSV")
    parser.add_argument("--val-csv", help="validation annotation CSV")
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder (runs/NAME)")
    parser.add_argument("--weights", metavar="PATH",
                        help="initial weights (e.g. weights/weights_SSD300.hdf5 to fine-tune)")
    parser.add_argument("--classes", metavar="voc|FILE",
                        help="class list file or 'voc' (default: the CSV's sorted class names)")
    parser.add_argument("--epochs", type=positive_int, default=10,
                        help="epochs in all; a finished run given more continues (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="default: %(default)s")
    parser.add_argument("--lr", type=positive_float, default=3e-4, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--lr-decay", type=nonzero_fraction, default=1.0,
                        help="multiply the learning rate by this every epoch (default: %(default)s; the "
                             "original notebook used 0.9)")
    parser.add_argument("--width-multiplier", type=positive_float, default=1.0,
                        help="channel width of SSD300 (default: %(default)s, the original)")
    parser.add_argument("--input-size", type=positive_int, default=300, help="default: %(default)s")
    parser.add_argument("--freeze", metavar="LAYER,...",
                        help="comma-separated layers to freeze; 'original' stands for the original "
                             "notebook's conv1_1 .. pool3 (for fine-tuning from VOC weights). Default: "
                             "nothing is frozen")
    parser.add_argument("--strategy", choices=["mirrored", "multiworker"],
                        help="tf.distribute strategy: all local GPUs, or the workers of TF_CONFIG; on JAX, "
                             "mirrored is keras.distribution.DataParallel over the local devices")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="Keras backend (default: $KERAS_BACKEND, else Keras' own setting, else tensorflow); "
                             "a run may resume on another backend")
    parser.add_argument("--priors", metavar="PATH",
                        help="prior configuration JSON (csv check --suggest-priors writes one; default: "
                             "SSD300's 7308 priors); kept in the run's config.json")
    parser.add_argument("--seed", type=int, help="seed for weights, order and augmentation")
    parser.add_argument("--workers", type=positive_int, default=1, help="data loading threads (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_run_folder_options(parser)
    parser.set_defaults(run=run)
    return parser


def add_run_folder_options(parser: argparse.ArgumentParser) -> None:
    """``--keep-checkpoints`` and ``--overwrite``, the same for both trainers."""
    parser.add_argument("--keep-checkpoints", type=positive_int, default=3, metavar="N",
                        help="keep the N newest checkpoints; older ones are removed once a newer one is "
                             "safely written (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start the run in --out afresh (for other settings): the folder's contents are "
                             "removed first")


def run_training(work) -> int:
    """Runs ``work()`` (a trainer call) with the run folders' exit status: 2 for a folder in use or a
    run of other settings, 130 for Ctrl-C (one line, no traceback)."""
    from ..runs import RunFolderBusy, RunInterrupted, SettingsDiffer

    try:
        work()
    except (RunFolderBusy, SettingsDiffer) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunInterrupted as err:
        print(err, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; run the same command to resume", file=sys.stderr)
        return 130
    return 0


def _split_cpu(count: int) -> None:
    """Splits the CPU into ``count`` logical devices (before TensorFlow's runtime starts)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


def interruptible(command):
    """A command's run function whose Ctrl-C before training (while TensorFlow starts) exits 130
    with one line, like one during training (:func:`run_training`)."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return run


@interruptible
def run(args: argparse.Namespace) -> int:
    from ..backends import chosen_backend, import_backend_quietly, use_backend

    if args.backend:
        use_backend(args.backend)
    devices = os.environ.get(CPU_DEVICES_ENV)
    if devices and chosen_backend() == "jax" and "jax" not in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={int(devices)}".strip()
    import_backend_quietly()
    if devices and chosen_backend() == "tensorflow":
        _split_cpu(int(devices))
    classes = class_list(args.classes)
    from ..trainer import ORIGINAL_FREEZE, TrainConfig, TrainingStopped, train

    freeze = []
    for name in filter(None, (part.strip() for part in (args.freeze or "").split(","))):
        freeze += list(ORIGINAL_FREEZE) if name == "original" else [name]
    size = args.input_size
    config = TrainConfig(csv=args.csv, out=args.out, val_csv=args.val_csv, weights=args.weights, classes=classes,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_decay=args.lr_decay,
                         width_multiplier=args.width_multiplier, input_shape=(size, size, 3), freeze=freeze,
                         strategy=args.strategy, seed=args.seed, workers=args.workers,
                         keep_checkpoints=args.keep_checkpoints, priors=args.priors)
    try:
        status = run_training(lambda: train(config, verbose=0 if args.quiet else 1, overwrite=args.overwrite,
                                            say=lambda message: print(message, flush=True)))
    except TrainingStopped as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if status == 0:
        print(f"done: {args.out}/final.weights.h5, history in {args.out}/history.csv")
    return status
