"""Errors a user can fix: each message names the setting or file at fault and what to do.

The command line (``gal.cli.run``, Hydra's task function) prints a :class:`SetupError` as one line,
``error: ...``, and exits with status 1 (a setting: before any training; a file or disk: when met);
``HYDRA_FULL_ERROR=1`` shows the traceback.
Called as a library (tests, notebooks), they are ordinary exceptions, and each is also the builtin type a
caller may already catch (ValueError, RuntimeError, FileExistsError, OSError).
"""


class SetupError(Exception):
    """A run that cannot start as configured."""


class ConfigError(SetupError, ValueError):
    """A setting whose value cannot work (unknown name, out of range, not dividing, not matching the data)."""


class DatasetUnavailableError(SetupError, RuntimeError):
    """A data set cannot be loaded here; the message says how to get it."""


class WeightsUnavailableError(SetupError, RuntimeError):
    """Pretrained weights cannot be had here; the message says where to put them."""


class RunExistsError(SetupError, FileExistsError):
    """The run directory holds a finished run, which is never overwritten."""


class RunLockedError(SetupError, RuntimeError):
    """Another live process holds the run directory (gal.lifecycle.RunLock)."""


class CheckpointError(SetupError, ValueError):
    """A checkpoint that cannot be resumed from (empty, not PyTorch's, truncated, another program's)."""


class RunLogError(SetupError, ValueError):
    """A run's log.jsonl that cannot be read back on resume (a damaged line before its last)."""


class StorageError(SetupError, OSError):
    """A run file that cannot be written (full disk, read-only or foreign directory); the message names it."""
