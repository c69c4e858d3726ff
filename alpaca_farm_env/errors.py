"""The package's own exception types: the errors a user can cause or fix (bad input, a corrupt or missing file,
an unreachable service). The CLI maps every :class:`AlpacaFarmError` to one line on stderr and exit code 2; any
other exception is a bug and keeps its traceback (exit 1).

Each type also derives from the builtin a Python caller would expect (``ValueError``, ``FileNotFoundError``, ...), so
``except ValueError`` keeps working for library users. Messages name the file, row, field or key at fault.
"""
from __future__ import annotations

from typing import Any

__all__ = [
    "AlpacaFarmError", "ConfigError", "DataFormatError", "DataNotFoundError", "CorruptFileError",
    "EvaluationError", "AnnotatorError", "AgentError", "FileLockTimeout", "TrainingOnTestSetWarning",
]


class AlpacaFarmError(Exception):
    """Base of every error the user can act on; the CLI prints it as one line and exits with 2."""


class ConfigError(AlpacaFarmError, ValueError):
    """A bad setting: an unknown name, a value of the wrong type or range (in a preset, a CLI flag or ``gym.make``)."""


class DataFormatError(AlpacaFarmError, ValueError):
    """A data file is malformed; the message names the file, the row (0-based) and the field."""

    def __init__(self, path: Any, message: str, row: int | None = None, field: str | None = None):
        where = f"{path}"
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")
        self.path, self.row, self.field = path, row, field


class DataNotFoundError(AlpacaFarmError, FileNotFoundError):
    """A file, directory or dataset the command needs is not there (or the hub cannot be reached)."""


class CorruptFileError(AlpacaFarmError, ValueError):
    """A cache or artifact file cannot be read (truncated, not the expected format). Names the file."""

    def __init__(self, path: Any, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path


class EvaluationError(AlpacaFarmError, ValueError):
    """An evaluation that would give a wrong or empty number: nothing to evaluate, mixed models, mismatched inputs."""


class AnnotatorError(AlpacaFarmError, RuntimeError):
    """An annotator could not answer: the API refused the key, the model does not exist, the server is down."""


class AgentError(AlpacaFarmError, ValueError):
    """An agent broke its contract with the benchmark or the env (``respond`` must return one string per
    observation); the message names the agent and the row."""


class FileLockTimeout(AlpacaFarmError, TimeoutError):
    """Another process held a lock on a shared file for longer than the timeout."""


class TrainingOnTestSetWarning(UserWarning):
    """An env rewards responses on the eval split with the evaluator's kind of judge: learning from it trains on the
    test set. Filter it (``warnings.simplefilter("ignore", TrainingOnTestSetWarning)``) when that is intended."""
