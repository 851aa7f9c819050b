"""User-facing errors: one line that names the file, key or value at fault.

Entry points (``tools/*.py``) catch :class:`SegtrainError` and print ``str(err)``
on one line with no traceback (unless ``--debug``). Library code raises these
for anything a user can fix: bad config keys, unknown registry names, broken
annotation files, incompatible components.
"""

__all__ = ["SegtrainError", "ConfigError", "UnknownNameError", "DatasetError", "NonFiniteLossError", "CheckpointError"]


class SegtrainError(Exception):
    """Base class of errors caused by user input; the message is one line."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class ConfigError(SegtrainError, ValueError):
    """A config key, value or combination of components is invalid."""


class UnknownNameError(SegtrainError, KeyError):
    """A name was looked up in a registry or catalog that does not hold it."""


class DatasetError(SegtrainError, ValueError):
    """An annotation file, image or dataset entry is malformed or missing."""


class NonFiniteLossError(SegtrainError, FloatingPointError):
    """A loss component became NaN or Inf during training."""


class CheckpointError(SegtrainError, RuntimeError):
    """A checkpoint or weights file is missing, truncated or unreadable."""
