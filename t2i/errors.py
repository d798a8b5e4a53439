"""User-facing errors.

Every error a user can cause (a wrong path, a bad caption, a checkpoint of the wrong model, a NaN in
training) is raised as a :class:`T2IError` subclass whose message is one line saying what is wrong and
what to do. The tools catch ``T2IError`` and print only that line (exit code 2).
"""


class T2IError(Exception):
    """Base class of errors meant to be shown to the user as one line."""


class DataError(T2IError, ValueError):
    """Missing, corrupt or malformed data on disk."""


class CaptionError(T2IError, ValueError):
    """A caption that cannot be used (empty, only unknown words)."""


class CheckpointError(T2IError, ValueError):
    """A missing checkpoint, or one of another model, kind or vocabulary."""


class WeightsError(T2IError, FileNotFoundError):
    """Pretrained weights that must be supplied from a local path are missing or wrong."""


class ConfigError(T2IError, ValueError):
    """A configuration that cannot be built (stage lists vs resolutions, unknown choices)."""


class TrainingError(T2IError, RuntimeError):
    """Training stopped (non-finite loss, ...); the last good checkpoint is kept."""


class DiskFullError(T2IError, OSError):
    """A write ran out of disk space; what was there before is kept and no partial file is left."""
