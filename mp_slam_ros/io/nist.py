"""Reader for the NIST StRD nonlinear-regression files (``Misra1a.dat``, ``MGH09.dat``, ...).

The files are the oracles of the solver's accuracy tests: each carries two starting points,
certified parameter values to 11 digits and the certified residual sum of squares. Their layout
is fixed by NIST but is described inside each file, so the reader trusts the header rather than
fixed line numbers::

    File Format:   ASCII
                   Starting Values   (lines 41 to 43)
                   Certified Values  (lines 41 to 48)
                   Data              (lines 61 to 214)

The starting-value lines read ``b1 = start1 start2 certified std_dev``; the certified block also
holds ``Residual Sum of Squares:`` and ``Number of Observations:``; data lines hold the response
followed by the predictors, in the order the ``Data:`` column header names them.

The model is kept as text only (the formula lines of the ``Model:`` section): turning it into
code is the caller's business. Note that for ``Nelson`` the model is for ``log[y]`` while the
data column is ``y``; the certified RSS is then in the log domain.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mp_slam_ros.io.errors import InputFormatError

__all__ = ["NistProblem", "read_nist"]

_PARAM_COLUMNS = ("Start 1", "Start 2", "Certified Value", "Standard Deviation")
_RANGE = r"\(\s*lines\s+(\d+)\s+to\s+(\d+)\s*\)"
_RE_STARTING = re.compile(r"Starting\s+Values\s*" + _RANGE, re.IGNORECASE)
_RE_CERTIFIED = re.compile(r"Certified\s+Values\s*" + _RANGE, re.IGNORECASE)
_RE_DATA_RANGE = re.compile(r"^\s*Data\s*" + _RANGE, re.IGNORECASE)
_RE_NAME = re.compile(r"Dataset\s+Name:\s*(\S+)", re.IGNORECASE)
_RE_N_PARAMS = re.compile(r"(\d+)\s+Parameters?\b", re.IGNORECASE)
_RE_N_PREDICTORS = re.compile(r"(\d+)\s+Predictors?\b", re.IGNORECASE)
_RE_DIFFICULTY = re.compile(r"(Lower|Average|Higher)\s+Level\s+of\s+Difficulty", re.IGNORECASE)
_RE_PARAM = re.compile(r"^\s*b(\d+)\s*=(.*)$")
_RE_RSS = re.compile(r"^\s*Residual\s+Sum\s+of\s+Squares:(.*)$", re.IGNORECASE)
_RE_N_OBS = re.compile(r"^\s*Number\s+of\s+Observations:(.*)$", re.IGNORECASE)
_RE_DATA_HEADER = re.compile(r"^\s*Data:\s*(.*)$")


@dataclass(frozen=True)
class NistProblem:
    """One NIST StRD nonlinear-regression problem as stored in its ``.dat`` file.

    Attributes:
        name: dataset name from the header (``"Misra1a"``).
        model: the model formula lines of the ``Model:`` section, e.g.
            ``"y = b1*(1-exp[-b2*x])  +  e"`` (Roszman1's also defines ``pi``).
        y: response values, shape (n_obs,).
        x: predictor values, shape (n_obs, n_predictors).
        start1, start2: the two NIST starting points, shape (n_params,).
        certified_params: certified parameter values, shape (n_params,).
        certified_rss: certified residual sum of squares.
        certified_std_dev: certified standard deviation of each parameter.
        difficulty: NIST's level of difficulty ("Lower", "Average", "Higher"), "" if not stated.
        path: the file the problem was read from.
    """

    name: str
    model: str
    y: np.ndarray
    x: np.ndarray
    start1: np.ndarray
    start2: np.ndarray
    certified_params: np.ndarray
    certified_rss: float
    certified_std_dev: np.ndarray = field(default_factory=lambda: np.zeros(0))
    difficulty: str = ""
    path: str = ""

    @property
    def num_parameters(self) -> int:
        return int(self.certified_params.shape[0])

    @property
    def num_observations(self) -> int:
        return int(self.y.shape[0])

    def start(self, which: int) -> np.ndarray:
        """Starting point 1 or 2 (a copy, so a solver may not modify the problem)."""
        if which not in (1, 2):
            raise ValueError(f"NIST problems have starting points 1 and 2, not {which}")
        return (self.start1 if which == 1 else self.start2).copy()


def _number(path: str, lineno: int, field_name: str, token: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise InputFormatError(path, lineno, field_name, f"expected a number, got '{token}'") from None
    if not math.isfinite(value):
        raise InputFormatError(path, lineno, field_name, f"non-finite value '{token}'")
    return value


def _integer(path: str, lineno: int, field_name: str, token: str) -> int:
    value = _number(path, lineno, field_name, token)
    if value != int(value) or value < 0:
        raise InputFormatError(path, lineno, field_name, f"expected a count, got '{token}'")
    return int(value)


def _header_range(path: str, lines: list[str], pattern: re.Pattern[str], what: str) -> tuple[int, int]:
    """The (first, last) 1-based line numbers the header's 'File Format' gives for a block."""
    for lineno, text in enumerate(lines, start=1):
        match = pattern.search(text)
        if match:
            first, last = int(match.group(1)), int(match.group(2))
            if not 1 <= first <= last:
                raise InputFormatError(path, lineno, what, f"empty or reversed line range {first} to {last}")
            return first, last
    raise InputFormatError(path, None, what, "no '(lines N to M)' range in the 'File Format' header")


def _first_match(lines: list[str], pattern: re.Pattern[str], stop: int) -> tuple[int, re.Match[str]] | None:
    for lineno, text in enumerate(lines[:stop], start=1):
        match = pattern.search(text)
        if match:
            return lineno, match
    return None


def _model_text(lines: list[str], stop: int) -> str:
    """Formula lines of the 'Model:' section: after the 'N Parameters' line, before the table."""
    start = next((i for i, t in enumerate(lines[:stop]) if t.lstrip().startswith("Model:")), None)
    if start is None:
        return ""
    formula: list[str] = []
    seen_count = False
    for text in lines[start + 1 : stop]:
        if re.search(r"Starting\s+values", text, re.IGNORECASE):
            break
        if not seen_count:
            seen_count = bool(_RE_N_PARAMS.search(text))
            continue
        if text.strip():
            formula.append(text.strip())
    return "\n".join(formula)


def read_nist(path: str | os.PathLike[str]) -> NistProblem:
    """Read one NIST StRD nonlinear-regression ``.dat`` file.

    Raises:
        InputFormatError: with the file, 1-based line and field at fault, when the header's
            line ranges are missing, a value is not a number, the parameter table is incomplete,
            or the data block is shorter or longer than the header declares.
    """
    path_str = os.fspath(path)
    try:
        # Universal newlines: the ceres copies have CRLF line ends.
        text = Path(path_str).read_text(encoding="ascii")
    except UnicodeDecodeError as err:
        raise InputFormatError(path_str, None, None, f"not an ASCII text file ({err.reason})") from None
    lines = text.splitlines()

    start_first, start_last = _header_range(path_str, lines, _RE_STARTING, "Starting Values")
    cert_first, cert_last = _header_range(path_str, lines, _RE_CERTIFIED, "Certified Values")
    data_first, data_last = _header_range(path_str, lines, _RE_DATA_RANGE, "Data")
    header_end = min(start_first, cert_first, data_first) - 1

    found = _first_match(lines, _RE_NAME, header_end)
    name = found[1].group(1) if found else Path(path_str).stem
    found = _first_match(lines, _RE_N_PREDICTORS, header_end)
    n_predictors = int(found[1].group(1)) if found else 1
    found = _first_match(lines, _RE_DIFFICULTY, header_end)
    difficulty = found[1].group(1).capitalize() if found else ""
    found = _first_match(lines, _RE_N_PARAMS, header_end)
    if found is None:
        raise InputFormatError(path_str, None, "Model", "no 'N Parameters' line in the model description")
    n_params = int(found[1].group(1))

    if max(start_last, cert_last) > len(lines):
        raise InputFormatError(
            path_str,
            len(lines),
            "Certified Values",
            f"file ends before line {max(start_last, cert_last)}, the end of the parameter block",
        )
    # Parameter table: every starting-value line is 'bK = start1 start2 certified std_dev', in order.
    table: list[list[float]] = []
    for lineno in range(start_first, start_last + 1):
        param = _RE_PARAM.match(lines[lineno - 1])
        expected = f"b{len(table) + 1}"
        if param is None:
            raise InputFormatError(path_str, lineno, expected, f"expected a '{expected} = ...' parameter line")
        if int(param.group(1)) != len(table) + 1:
            raise InputFormatError(path_str, lineno, expected, f"found b{param.group(1)} where {expected} belongs")
        tokens = param.group(2).split()
        if len(tokens) != len(_PARAM_COLUMNS):
            missing = _PARAM_COLUMNS[min(len(tokens), len(_PARAM_COLUMNS) - 1)]
            raise InputFormatError(
                path_str,
                lineno,
                f"{expected} {missing}",
                f"expected {len(_PARAM_COLUMNS)} values ({', '.join(_PARAM_COLUMNS)}), got {len(tokens)}",
            )
        table.append(
            [
                _number(path_str, lineno, f"{expected} {col}", tok)
                for col, tok in zip(_PARAM_COLUMNS, tokens, strict=True)
            ]
        )
    if len(table) != n_params:
        raise InputFormatError(
            path_str,
            start_first,
            "Starting Values",
            f"the model has {n_params} parameters but lines {start_first} to {start_last} define {len(table)}",
        )
    rss: float | None = None
    n_obs: int | None = None
    n_obs_line = cert_first
    for lineno in range(cert_first, cert_last + 1):
        line = lines[lineno - 1]
        match = _RE_RSS.match(line)
        if match:
            tokens = match.group(1).split()
            if len(tokens) != 1:
                raise InputFormatError(path_str, lineno, "Residual Sum of Squares", "expected one value")
            rss = _number(path_str, lineno, "Residual Sum of Squares", tokens[0])
            continue
        match = _RE_N_OBS.match(line)
        if match:
            tokens = match.group(1).split()
            if len(tokens) != 1:
                raise InputFormatError(path_str, lineno, "Number of Observations", "expected one value")
            n_obs = _integer(path_str, lineno, "Number of Observations", tokens[0])
            n_obs_line = lineno
    if rss is None:
        raise InputFormatError(path_str, cert_last, "Residual Sum of Squares", "missing from the certified values")
    params = np.array(table, dtype=np.float64).reshape(n_params, len(_PARAM_COLUMNS))

    # Column names come from the 'Data:  y  x1  x2' line just above the data, for error messages.
    columns = ["y", *(["x"] if n_predictors == 1 else [f"x{k + 1}" for k in range(n_predictors)])]
    if data_first >= 2:
        match = _RE_DATA_HEADER.match(lines[data_first - 2])
        if match and len(match.group(1).split()) == 1 + n_predictors:
            columns = match.group(1).split()

    declared = data_last - data_first + 1
    if n_obs is not None and n_obs != declared:
        raise InputFormatError(
            path_str,
            n_obs_line,
            "Number of Observations",
            f"the certified values give {n_obs} observations but the header declares data lines "
            f"{data_first} to {data_last} ({declared})",
        )
    values = np.empty((declared, 1 + n_predictors))
    for row, lineno in enumerate(range(data_first, data_last + 1)):
        if lineno > len(lines):
            raise InputFormatError(
                path_str,
                lineno,
                columns[0],
                f"truncated data: the file ends at line {len(lines)}, the header declares data up to line "
                f"{data_last} ({row} of {declared} observations read)",
            )
        tokens = lines[lineno - 1].split()
        if len(tokens) != len(columns):
            missing = columns[min(len(tokens), len(columns) - 1)]
            raise InputFormatError(
                path_str, lineno, missing, f"expected {len(columns)} values ({' '.join(columns)}), got {len(tokens)}"
            )
        for col, (column, token) in enumerate(zip(columns, tokens, strict=True)):
            values[row, col] = _number(path_str, lineno, column, token)
    for lineno in range(data_last + 1, len(lines) + 1):
        if lines[lineno - 1].strip():
            raise InputFormatError(
                path_str, lineno, columns[0], f"data after line {data_last}, the last line the header declares"
            )

    return NistProblem(
        name=name,
        model=_model_text(lines, header_end + 1),
        y=values[:, 0].copy(),
        x=values[:, 1:].copy(),
        start1=params[:, 0].copy(),
        start2=params[:, 1].copy(),
        certified_params=params[:, 2].copy(),
        certified_rss=rss,
        certified_std_dev=params[:, 3].copy(),
        difficulty=difficulty,
        path=path_str,
    )
