"""Files written whole or not at all: a kill or an error at any instant leaves the old file or
the new one, never half of one.

Both writers put the new content in a temporary file of the same folder (named ``.tmp-*``, see
:func:`is_temporary`), flush it to disk, rename it over the target and flush the folder. A kill
leaves at most a stray temporary file, which the next run of the folder removes.

Test hook: ``$SSD_KERAS_TEST_WRITE_FAULT`` set to ``die@N`` makes the N-th weights file (``.h5``)
this process writes through :func:`atomic_path` stop half-way: the temporary file is cut to half
its size and the process kills itself (SIGKILL), as a kill in the middle of the write would;
``enospc@N`` makes that write fail as a full disk does.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_open", "atomic_path", "is_temporary", "fsync_folder", "WRITE_FAULT_ENV", "TEMPORARY_PREFIX"]

TEMPORARY_PREFIX = ".tmp-"
WRITE_FAULT_ENV = "SSD_KERAS_TEST_WRITE_FAULT"
_weights_writes = 0


def is_temporary(name: str) -> bool:
    """Whether a file name is one of the temporary files of these writers (or of older versions:
    ``.NAME.XXXX.tmp``, ``NAME.tmp``)."""
    return name.startswith(TEMPORARY_PREFIX) or name.endswith(".tmp")


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Flushes a folder's entries (a rename in it) to disk, where the system allows it."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems cannot sync a folder
    finally:
        os.close(handle)


def _fsync_file(path: Path) -> None:
    handle = os.open(path, os.O_RDWR)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _inject_fault(tmp: Path) -> None:
    """The test hook of the module docstring."""
    global _weights_writes
    fault = os.environ.get(WRITE_FAULT_ENV, "")
    if not fault or not tmp.name.endswith(".h5"):
        return
    _weights_writes += 1
    kind, _, count = fault.partition("@")
    if not count.isdigit() or int(count) != _weights_writes:
        return
    if kind == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if kind == "die":
        with open(tmp, "r+b") as f:
            f.truncate(os.path.getsize(tmp) // 2)
        os.kill(os.getpid(), signal.SIGKILL)


def _temporary_name(path: Path) -> Path:
    return path.with_name(f"{TEMPORARY_PREFIX}{secrets.token_hex(6)}-{path.name}")


def _raise_naming(err: BaseException, path: Path) -> None:
    """Raises ``err`` again; an ``OSError`` as one whose message names ``path``."""
    if isinstance(err, OSError) and str(path) not in str(err):
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
    raise err


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write ``path`` through, for writers that take a path (Keras'
    ``save_weights``, matplotlib's ``savefig``): in the same folder (created when missing) and
    ending in the same name, so that name-based writers keep working; when the block ends the
    file is flushed to disk and renamed over ``path``. When the block raises, the temporary file
    is removed and ``path`` is untouched.

    Raises:
        OSError: the write failed (a full disk, a read-only folder): the message names ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        yield tmp
        _inject_fault(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        _raise_naming(err, path)
    fsync_folder(path.parent)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], newline: str | None = None) -> Iterator[IO[str]]:
    """A UTF-8 text file to write ``path`` through: a temporary file in the same folder (created
    when missing), flushed to disk and renamed over ``path`` when the block ends; removed, and
    ``path`` untouched, when the block raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as to any file
        with os.fdopen(handle, "w", encoding="utf-8", newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        _raise_naming(err, path)
    fsync_folder(path.parent)
