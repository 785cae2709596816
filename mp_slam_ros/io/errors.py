"""Errors shared by every input reader (pose graphs, BAL problems, bags, ...)."""

from __future__ import annotations

import math
import os


class InputFormatError(ValueError):
    """Malformed input data, located as precisely as the reader could.

    ``str(err)`` reads ``"{path}:{line}: field '{field}': {reason}"``; parts that are
    ``None`` are left out so the message stays readable for whole-file problems.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        line: int | None = None,
        field: str | None = None,
        reason: str = "invalid input",
    ) -> None:
        self.path: str | None = None if path is None else os.fspath(path)
        self.line: int | None = line
        self.field: str | None = field
        self.reason: str = reason
        super().__init__(self._format())

    def _format(self) -> str:
        location = self.path or ""
        if self.line is not None:
            location = f"{location}:{self.line}" if location else f"line {self.line}"
        parts = []
        if location:
            parts.append(location)
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        parts.append(self.reason)
        return ": ".join(parts)

    def __reduce__(self):  # keeps the attributes across pickling (multiprocessing workers)
        return (type(self), (self.path, self.line, self.field, self.reason))


def convert_token(
    path: str, lineno: int, field: str, token: str, integer: bool, owner: str | None = None
) -> float | int:
    """Parse one numeric token, or raise InputFormatError naming the file, line and field.

    `owner` (e.g. "observation 12") prefixes the reason when the field name alone is ambiguous.
    """
    prefix = f"{owner}: " if owner else ""
    try:
        value = int(token) if integer else float(token)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise InputFormatError(path, lineno, field, f"{prefix}expected {kind}, got '{token}'") from None
    if integer and not -(2**63) <= value < 2**63:
        raise InputFormatError(path, lineno, field, f"{prefix}integer '{token}' does not fit in int64")
    if not integer and not math.isfinite(value):
        raise InputFormatError(path, lineno, field, f"{prefix}non-finite value '{token}'")
    return value
