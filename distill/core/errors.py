"""Exception types and the one table that maps them to CLI exit codes.

Every command of the ``distilrank`` CLI ends through :func:`exit_code_for`, so a script can tell
"you called me wrong" from "your data is broken" from "the model failed its quality gate".
"""

from __future__ import annotations

__all__ = [
    "EXIT_CODES",
    "ConfigError",
    "DataError",
    "DistilrankError",
    "GateFailedError",
    "MissingExtraError",
    "MissingPrerequisiteError",
    "exit_code_for",
]


class DistilrankError(Exception):
    """Base class of the errors distilrank reports to users (no traceback in the CLI)."""


class ConfigError(DistilrankError, ValueError):
    """Bad arguments or configuration values (exit code 2)."""


class MissingPrerequisiteError(DistilrankError):
    """Something needed is absent: a package, a model directory, an earlier stage's artifact (3)."""


class MissingExtraError(MissingPrerequisiteError, ImportError):
    """A third-party module that an install extra provides is not installed (exit code 3, like any missing
    prerequisite, and an ``ImportError`` for library callers); ``.name`` is the module."""


class DataError(DistilrankError, ValueError):
    """Malformed input data; the message names file, line, what was wrong and the expected shape (4)."""

    def __init__(self, message: str, *, path: object = None, line: int | None = None, expected: str | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        full = f"{where}{message}"
        if expected:
            full += f" (expected {expected})"
        super().__init__(full)
        self.path = path
        self.line = line
        self.expected = expected


class GateFailedError(DistilrankError):
    """A quality or parity gate failed (exit code 5)."""


#: exception type -> process exit code. 1 is reserved for unexpected errors (a bug).
EXIT_CODES: dict[type[BaseException], int] = {
    ConfigError: 2,
    MissingPrerequisiteError: 3,
    DataError: 4,
    GateFailedError: 5,
}


def exit_code_for(exc: BaseException) -> int:
    for exc_type, code in EXIT_CODES.items():
        if isinstance(exc, exc_type):
            return code
    return 1
