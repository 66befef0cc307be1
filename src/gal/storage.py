"""Writing a run's files: whole or not at all, and one clear error when the disk refuses.

A full disk (ENOSPC, EDQUOT) or a read-only or foreign directory (EROFS, EACCES, EPERM) stops the run
with a :class:`gal.errors.StorageError` that names the file and the OS error, and leaves the file's
previous version whole and no temp file behind.
"""

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from gal.errors import StorageError

FULL = (errno.ENOSPC, errno.EDQUOT)
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def storage_error(path: Path, error: OSError, replaced: bool = False) -> StorageError:
    """One line: the file, the OS error, what is kept (``replaced``: a new version was being written) and
    what to do."""
    reason = f"{error.strerror or error} [{errno.errorcode.get(error.errno, error.errno)}]"
    kept = f"; the previous {path.name} is kept" if replaced and path.exists() else ""
    if error.errno in FULL:
        fix = "free space on that disk (or choose another results_dir=)"
    elif error.errno == errno.EFBIG:
        fix = "raise the file-size limit, ulimit -f (or choose another results_dir=)"
    elif error.errno in READ_ONLY:
        fix = f"make {path.parent} writable (or choose another results_dir=)"
    else:
        fix = "check that disk (or choose another results_dir=)"
    return StorageError(f"cannot write {path}: {reason}{kept}. To go on, {fix} and resume (trainer.if_exists=resume)")


@contextmanager
def storage_errors(path: Path, replaced: bool = False) -> Iterator[None]:
    """Turn an OSError raised while writing ``path`` into a :class:`StorageError` naming it."""
    try:
        yield
    except StorageError:
        raise
    except OSError as error:
        raise storage_error(path, error, replaced) from error


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(file)`` into ``path.tmp``, then rename it over ``path``: a crash, a full
    disk or a read-only directory leaves the previous ``path`` whole, and no temp file behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with storage_errors(path, replaced=True):
            with tmp.open("wb") as file:
                write(file)
                file.flush()
                os.fsync(file.fileno())  # a full network disk may only say so here; a power cut keeps the data
            os.replace(tmp, path)
    finally:
        with suppress(OSError):  # gone after the rename; never created in a read-only directory
            tmp.unlink(missing_ok=True)
