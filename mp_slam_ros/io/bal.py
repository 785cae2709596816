"""Bundle Adjustment in the Large (BAL) problem files: reader and writer.

Format (grail.cs.washington.edu/projects/bal), whitespace separated, blank lines ignored::

    num_cameras num_points num_observations
    camera_index point_index x y            <- num_observations lines, one observation each
    rx ry rz tx ty tz f k1 k2               <- 9 values per camera (usually one value per line)
    X Y Z                                   <- 3 values per point (usually one value per line)

Cameras are (Rodrigues rotation, translation, focal length, two radial distortion coefficients);
the camera model itself lives in :mod:`mp_slam_ros.ba.problem`.

Parsing is bulk (one numpy conversion per section), so the 1.8 MB problem-49-7776 reads in a few
tens of milliseconds. Only when a bulk step fails does a slower pass run to name the line and
field at fault in an :class:`~mp_slam_ros.io.errors.InputFormatError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from mp_slam_ros.io.errors import InputFormatError, convert_token
from mp_slam_ros.io.files import atomic_write_text

__all__ = [
    "CAMERA_FIELDS",
    "HEADER_FIELDS",
    "OBSERVATION_FIELDS",
    "POINT_FIELDS",
    "BalProblem",
    "read_bal",
    "write_bal",
]

HEADER_FIELDS = ("num_cameras", "num_points", "num_observations")
OBSERVATION_FIELDS = ("camera_index", "point_index", "x", "y")
CAMERA_FIELDS = ("rx", "ry", "rz", "tx", "ty", "tz", "f", "k1", "k2")
POINT_FIELDS = ("X", "Y", "Z")


@dataclass
class BalProblem:
    """A BAL problem: observations (pixels, principal point at 0) and the cameras/points estimate.

    ``cameras[c] = (rx, ry, rz, tx, ty, tz, f, k1, k2)``; ``observations[k]`` is the pixel of point
    ``point_index[k]`` seen by camera ``camera_index[k]``.
    """

    camera_index: np.ndarray  # (n,) int64
    point_index: np.ndarray  # (n,) int64
    observations: np.ndarray  # (n, 2) float64
    cameras: np.ndarray  # (num_cameras, 9) float64
    points: np.ndarray  # (num_points, 3) float64
    source: str | None = None

    def __post_init__(self) -> None:
        self.camera_index = np.ascontiguousarray(self.camera_index, dtype=np.int64).reshape(-1)
        self.point_index = np.ascontiguousarray(self.point_index, dtype=np.int64).reshape(-1)
        self.observations = np.ascontiguousarray(self.observations, dtype=np.float64)
        self.cameras = np.ascontiguousarray(self.cameras, dtype=np.float64)
        self.points = np.ascontiguousarray(self.points, dtype=np.float64)
        n = self.camera_index.shape[0]
        if self.point_index.shape[0] != n or self.observations.shape != (n, 2):
            raise ValueError(
                f"camera_index {self.camera_index.shape}, point_index {self.point_index.shape} and "
                f"observations {self.observations.shape} must describe the same (n,) / (n, 2) observations"
            )
        if self.cameras.ndim != 2 or self.cameras.shape[1] != 9:
            raise ValueError(f"cameras must have shape (num_cameras, 9), got {self.cameras.shape}")
        if self.points.ndim != 2 or self.points.shape[1] != 3:
            raise ValueError(f"points must have shape (num_points, 3), got {self.points.shape}")
        for name, idx, size in (
            ("camera_index", self.camera_index, self.num_cameras),
            ("point_index", self.point_index, self.num_points),
        ):
            if n and (idx.min() < 0 or idx.max() >= size):
                raise ValueError(f"{name} must lie in [0, {size}), got values in [{idx.min()}, {idx.max()}]")

    @property
    def num_cameras(self) -> int:
        return int(self.cameras.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_observations(self) -> int:
        return int(self.camera_index.shape[0])

    def with_parameters(self, cameras: np.ndarray, points: np.ndarray) -> BalProblem:
        """The same observations with another cameras/points estimate."""
        return BalProblem(self.camera_index, self.point_index, self.observations, cameras, points, self.source)


# ----------------------------------------------------------------------------------------------
# reading


def _parameter_name(k: int, num_cameras: int) -> tuple[str, str]:
    """(field, owner) of the k-th value of the camera/point section."""
    if k < 9 * num_cameras:
        return CAMERA_FIELDS[k % 9], f"camera {k // 9}"
    j = k - 9 * num_cameras
    return POINT_FIELDS[j % 3], f"point {j // 3}"




def read_bal(path: str | os.PathLike[str]) -> BalProblem:
    """Read a BAL problem file.

    Raises :class:`InputFormatError` (file, 1-based line, field, reason) for a wrong header, a
    truncated file or observation line, extra values, a token that is not a number (or not an
    integer where an index is expected), a non-finite value, or a camera/point index that is
    negative or out of range.
    """
    path_str = os.fspath(path)
    try:
        with open(path_str, encoding="utf-8-sig") as fh:
            text = fh.read()
    except UnicodeDecodeError as err:
        raise InputFormatError(path_str, None, None, f"not a UTF-8 text file ({err.reason})") from None

    all_rows = [line.split() for line in text.split("\n")]
    lines = [i for i, row in enumerate(all_rows) if row]  # 0-based numbers of non-blank lines
    rows = [all_rows[i] for i in lines]
    end_line = (lines[-1] + 2) if lines else 1  # 1-based line just after the last data line

    # --- header
    if not rows:
        raise InputFormatError(
            path_str, 1, HEADER_FIELDS[0], "empty file: expected the header 'num_cameras num_points num_observations'"
        )
    header, header_line = rows[0], lines[0] + 1
    if len(header) != 3:
        field = HEADER_FIELDS[len(header)] if len(header) < 3 else None
        raise InputFormatError(
            path_str,
            header_line,
            field,
            "wrong header: expected 3 integers 'num_cameras num_points num_observations', "
            f"found {len(header)} value(s)",
        )
    counts = []
    for name, token in zip(HEADER_FIELDS, header, strict=True):
        try:
            value = int(token)
        except ValueError:
            raise InputFormatError(
                path_str, header_line, name, f"wrong header: expected a non-negative integer, got '{token}'"
            ) from None
        if value < 0:
            raise InputFormatError(path_str, header_line, name, f"wrong header: negative count {value}")
        counts.append(value)
    num_cameras, num_points, num_obs = counts

    # --- observations: exactly one per line, four values each
    obs_rows = rows[1 : 1 + num_obs]
    obs_lines = np.asarray(lines[1 : 1 + num_obs], dtype=np.int64) + 1
    if len(obs_rows) < num_obs:
        raise InputFormatError(
            path_str,
            end_line,
            OBSERVATION_FIELDS[0],
            f"truncated file: {len(obs_rows)} of {num_obs} observation lines present",
        )
    lengths = np.fromiter(map(len, obs_rows), dtype=np.int64, count=num_obs)
    bad = np.nonzero(lengths != 4)[0]
    if bad.size:
        k = int(bad[0])
        n = int(lengths[k])
        if n < 4:
            raise InputFormatError(
                path_str,
                int(obs_lines[k]),
                OBSERVATION_FIELDS[n],
                f"truncated observation {k}: {n} of 4 values 'camera_index point_index x y' present",
            )
        raise InputFormatError(
            path_str, int(obs_lines[k]), None, f"observation {k}: {n - 4} unexpected extra value(s) after 'y'"
        )
    flat = [tok for row in obs_rows for tok in row]
    try:
        indices = np.fromiter(map(int, flat[0::4] + flat[1::4]), dtype=np.int64, count=2 * num_obs)
        pixels = np.fromiter(map(float, flat[2::4] + flat[3::4]), dtype=np.float64, count=2 * num_obs)
    except (ValueError, OverflowError):
        for k, row in enumerate(obs_rows):
            for col, token in enumerate(row):
                convert_token(path_str, int(obs_lines[k]), OBSERVATION_FIELDS[col], token, col < 2, f"observation {k}")
        raise AssertionError("unreachable: bulk conversion failed but no token is invalid") from None
    camera_index, point_index = indices[:num_obs], indices[num_obs:]
    observations = np.ascontiguousarray(pixels.reshape(2, num_obs).T)

    def first_bad(mask: np.ndarray) -> int | None:
        hit = np.nonzero(mask)[0]
        return int(hit[0]) if hit.size else None

    for name, idx, size in (("camera_index", camera_index, num_cameras), ("point_index", point_index, num_points)):
        k = first_bad((idx < 0) | (idx >= size))
        if k is not None:
            what = "negative" if idx[k] < 0 else "out of range"
            raise InputFormatError(
                path_str,
                int(obs_lines[k]),
                name,
                f"observation {k}: {what} index {int(idx[k])} (the header declares {size}, valid 0..{size - 1})",
            )
    k = first_bad(~np.isfinite(observations).all(axis=1))
    if k is not None:
        col = 2 if not np.isfinite(observations[k, 0]) else 3
        raise InputFormatError(
            path_str,
            int(obs_lines[k]),
            OBSERVATION_FIELDS[col],
            f"observation {k}: non-finite value '{obs_rows[k][col]}'",
        )

    # --- cameras and points: a stream of values in any line layout
    param_rows = rows[1 + num_obs :]
    param_lines = np.asarray(lines[1 + num_obs :], dtype=np.int64) + 1
    expected = 9 * num_cameras + 3 * num_points
    row_lengths = np.fromiter(map(len, param_rows), dtype=np.int64, count=len(param_rows))
    row_end = np.cumsum(row_lengths)
    available = int(row_end[-1]) if row_end.size else 0

    def line_of(k: int) -> int:
        return int(param_lines[int(np.searchsorted(row_end, k, side="right"))])

    if available < expected:
        field, owner = _parameter_name(available, num_cameras)
        raise InputFormatError(
            path_str,
            end_line,
            field,
            f"truncated file: {available} of {expected} camera and point values present ({owner} '{field}' is the "
            "first missing one)",
        )
    if available > expected:
        raise InputFormatError(
            path_str,
            line_of(expected),
            None,
            f"{available - expected} unexpected extra value(s) after the last point "
            f"({num_cameras} cameras and {num_points} points declared)",
        )
    params_flat = [tok for row in param_rows for tok in row]
    try:
        params = np.fromiter(map(float, params_flat), dtype=np.float64, count=expected)
    except (ValueError, OverflowError):
        for k, token in enumerate(params_flat):
            field, owner = _parameter_name(k, num_cameras)
            convert_token(path_str, line_of(k), field, token, False, owner)
        raise AssertionError("unreachable: bulk conversion failed but no token is invalid") from None
    k = first_bad(~np.isfinite(params))
    if k is not None:
        field, owner = _parameter_name(k, num_cameras)
        raise InputFormatError(path_str, line_of(k), field, f"{owner}: non-finite value '{params_flat[k]}'")
    # f = 0 projects every point to the principal point: no residual depends on the points, and
    # the solver would only find a singular system far from here.
    focal = params[6 : 9 * num_cameras : 9]
    k = first_bad(focal == 0.0)
    if k is not None:
        field, owner = _parameter_name(9 * k + 6, num_cameras)
        raise InputFormatError(path_str, line_of(9 * k + 6), field, f"{owner}: focal length is 0")

    return BalProblem(
        camera_index,
        point_index,
        observations,
        params[: 9 * num_cameras].reshape(num_cameras, 9),
        params[9 * num_cameras :].reshape(num_points, 3),
        source=path_str,
    )


# ----------------------------------------------------------------------------------------------
# writing


def write_bal(bal: BalProblem, path: str | os.PathLike[str]) -> None:
    """Write ``bal`` in the BAL layout (one observation per line, then one value per line).

    Floats are written with ``repr`` (shortest round-trip form), so reading the file back gives
    the same arrays bit for bit. The file is replaced atomically.
    """
    for name in ("observations", "cameras", "points"):
        if not np.all(np.isfinite(getattr(bal, name))):
            raise ValueError(f"cannot write BalProblem.{name}: it holds non-finite values")
    out = [f"{bal.num_cameras} {bal.num_points} {bal.num_observations}"]
    out.extend(
        f"{c} {p} {x!r} {y!r}"
        for c, p, (x, y) in zip(
            bal.camera_index.tolist(), bal.point_index.tolist(), bal.observations.tolist(), strict=True
        )
    )
    out.extend(map(repr, bal.cameras.reshape(-1).tolist()))
    out.extend(map(repr, bal.points.reshape(-1).tolist()))
    atomic_write_text(os.fspath(path), "\n".join(out) + "\n")


