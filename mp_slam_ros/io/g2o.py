"""Pose-graph readers/writers: g2o (SE2, SE3:QUAT), TORO 2D (VERTEX2/EDGE2) and TORO/GTSAM 3D
(VERTEX3/EDGE3).

Parsing is bulk: lines are grouped by tag and every group is converted with one numpy call. Only
when a bulk step fails does a line-by-line pass run, to name the file, line and field at fault.

Conventions of the returned :class:`PoseGraph`: information matrices are stored in our tangent
order, 2D ``(x, y, theta)`` and 3D ``(wx, wy, wz, x, y, z)``. The files store:

* ``EDGE_SE2``: upper triangle ``I11 I12 I13 I22 I23 I33`` in ``(x, y, theta)``, i.e. ours.
* ``EDGE2`` (TORO): ``I_xx I_xy I_yy I_tt I_xt I_yt`` (GTSAM ``createNoiseModel``, TORO format).
* ``EDGE_SE3:QUAT``: 21-value upper triangle in ``(x, y, z, rx, ry, rz)``; the translation and
  rotation blocks are swapped, the same permutation GTSAM's ``readG2o`` applies. The values are
  used as given: g2o's own rotation error is the quaternion vector part (about half the angle),
  and like GTSAM and SE-Sync we do not rescale for that.
* ``EDGE3``: 21-value upper triangle in ``(x, y, z, roll, pitch, yaw)``, permuted the same way
  (at small angles roll/pitch/yaw match the rotation-vector components). Rotations are
  ``Rz(yaw) Ry(pitch) Rx(roll)`` (GTSAM ``Rot3::Ypr``). ``EDGE3`` lines carrying no information
  values at all (GTSAM's ``sphere_smallnoise.graph``) get the identity, as in GTSAM's ``load3D``,
  and a warning is logged.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np

from mp_slam_ros.io.errors import InputFormatError, convert_token
from mp_slam_ros.io.files import atomic_write_text
from mp_slam_ros.pgo.graph import PoseGraph, odometry_chain_initialization

__all__ = ["read_pose_graph", "write_g2o"]

_log = logging.getLogger(__name__)

# Quaternions further than this from unit norm are corrupt rather than merely rounded.
QUATERNION_NORM_TOLERANCE = 1e-3


def _upper_names(k: int) -> tuple[str, ...]:
    return tuple(f"I{r + 1}{c + 1}" for r in range(k) for c in range(r, k))


@dataclass(frozen=True)
class _TagSpec:
    dim: int
    kind: str  # "vertex" | "edge"
    fields: tuple[str, ...]  # field names after the tag, integers first
    n_int: int
    info_order: str | None = None  # how to map the information values to ours
    rotation: str = "angle"  # "angle" | "quat" | "rpy"
    optional_info: bool = False  # line may stop right before the information values


_UPPER6 = _upper_names(6)
_SPECS: dict[str, _TagSpec] = {
    "VERTEX_SE2": _TagSpec(2, "vertex", ("id", "x", "y", "th"), 1),
    "VERTEX2": _TagSpec(2, "vertex", ("id", "x", "y", "th"), 1),
    "EDGE_SE2": _TagSpec(
        2, "edge", ("i", "j", "x", "y", "th", "I11", "I12", "I13", "I22", "I23", "I33"), 2, "g2o2d"
    ),
    "EDGE2": _TagSpec(
        2, "edge", ("i", "j", "dx", "dy", "dth", "I_xx", "I_xy", "I_yy", "I_tt", "I_xt", "I_yt"), 2, "toro2d"
    ),
    "VERTEX_SE3:QUAT": _TagSpec(
        3, "vertex", ("id", "x", "y", "z", "qx", "qy", "qz", "qw"), 1, rotation="quat"
    ),
    "VERTEX3": _TagSpec(3, "vertex", ("id", "x", "y", "z", "roll", "pitch", "yaw"), 1, rotation="rpy"),
    "EDGE_SE3:QUAT": _TagSpec(
        3, "edge", ("i", "j", "x", "y", "z", "qx", "qy", "qz", "qw", *_UPPER6), 2, "g2o3d", "quat"
    ),
    "EDGE3": _TagSpec(
        3, "edge", ("i", "j", "x", "y", "z", "roll", "pitch", "yaw", *_UPPER6), 2, "g2o3d", "rpy", True
    ),
}
_IGNORED_TAGS = {"EQUIV"}  # TORO equivalence constraints: GTSAM skips them too
_FIX_TAG = "FIX"

# g2o 3D order (x y z rx ry rz) -> ours (wx wy wz x y z); the permutation is its own inverse.
_PERM_3D = np.array([3, 4, 5, 0, 1, 2])
_TRIU3 = np.triu_indices(3)
_TRIU6 = np.triu_indices(6)


# ----------------------------------------------------------------------------------------------
# rotation helpers (private on purpose: the solver's Lie-group module is owned elsewhere)


def _angle_to_matrix(theta: np.ndarray) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    out = np.empty((*theta.shape, 2, 2))
    out[..., 0, 0], out[..., 0, 1] = c, -s
    out[..., 1, 0], out[..., 1, 1] = s, c
    return out


def _matrix_to_angle(r: np.ndarray) -> np.ndarray:
    """Angle whose rotation matrix reproduces ``r`` bit for bit when one exists nearby.

    ``atan2`` alone is not an exact inverse of ``(cos, sin)`` in floating point (about 2% of
    angles come back one ulp off, most of those outside [-pi, pi]), so a few ulps around it and
    around its 2*pi-shifted twins are tried; that makes write-then-read exact for every matrix
    the reader built.
    """
    theta = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    bad = ~_angle_reproduces(theta, r)
    if not np.any(bad):
        return theta
    idx = np.nonzero(bad)[0]
    base = theta[idx]
    steps = np.arange(-4, 5, dtype=np.float64)
    for shift in (0.0, 2.0 * math.pi, -2.0 * math.pi):
        if idx.size == 0:
            break
        centre = base + shift
        cand = centre[:, None] + steps[None, :] * np.spacing(np.abs(centre))[:, None]
        ok = _angle_reproduces(cand, r[idx][:, None])
        hit = ok.any(axis=1)
        first = np.argmax(ok, axis=1)
        theta[idx[hit]] = cand[hit, first[hit]]
        idx, base = idx[~hit], base[~hit]
    return theta


def _angle_reproduces(theta: np.ndarray, r: np.ndarray) -> np.ndarray:
    return (np.cos(theta) == r[..., 0, 0]) & (np.sin(theta) == r[..., 1, 0])


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) unit quaternions in (x, y, z, w) order to rotation matrices."""
    x, y, z, w = np.moveaxis(q, -1, 0)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    out = np.empty((*q.shape[:-1], 3, 3))
    out[..., 0, 0] = 1.0 - 2.0 * (yy + zz)
    out[..., 0, 1] = 2.0 * (xy - wz)
    out[..., 0, 2] = 2.0 * (xz + wy)
    out[..., 1, 0] = 2.0 * (xy + wz)
    out[..., 1, 1] = 1.0 - 2.0 * (xx + zz)
    out[..., 1, 2] = 2.0 * (yz - wx)
    out[..., 2, 0] = 2.0 * (xz - wy)
    out[..., 2, 1] = 2.0 * (yz + wx)
    out[..., 2, 2] = 1.0 - 2.0 * (xx + yy)
    return out


def _matrix_to_quat(r: np.ndarray) -> np.ndarray:
    """Rotation matrices to (x, y, z, w) quaternions with w >= 0 (Shepperd's method).

    Each row uses the branch with the largest pivot, which keeps the division well conditioned.
    """
    r00, r11, r22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    trace = r00 + r11 + r22
    pivots = np.stack([r00, r11, r22, trace], axis=-1)
    branch = np.argmax(pivots, axis=-1)
    q = np.empty((*r.shape[:-2], 4))
    d21, d02, d10 = r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]
    s01, s02, s12 = r[..., 0, 1] + r[..., 1, 0], r[..., 0, 2] + r[..., 2, 0], r[..., 1, 2] + r[..., 2, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        m = branch == 3
        s = 2.0 * np.sqrt(np.maximum(1.0 + trace[m], 0.0))
        q[m] = np.stack([d21[m] / s, d02[m] / s, d10[m] / s, 0.25 * s], axis=-1)
        m = branch == 0
        s = 2.0 * np.sqrt(np.maximum(1.0 + r00[m] - r11[m] - r22[m], 0.0))
        q[m] = np.stack([0.25 * s, s01[m] / s, s02[m] / s, d21[m] / s], axis=-1)
        m = branch == 1
        s = 2.0 * np.sqrt(np.maximum(1.0 - r00[m] + r11[m] - r22[m], 0.0))
        q[m] = np.stack([s01[m] / s, 0.25 * s, s12[m] / s, d02[m] / s], axis=-1)
        m = branch == 2
        s = 2.0 * np.sqrt(np.maximum(1.0 - r00[m] - r11[m] + r22[m], 0.0))
        q[m] = np.stack([s02[m] / s, s12[m] / s, 0.25 * s, d10[m] / s], axis=-1)
    q *= np.where(q[..., 3:4] < 0.0, -1.0, 1.0)
    return q


def _rpy_to_matrix(roll: np.ndarray, pitch: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """R = Rz(yaw) Ry(pitch) Rx(roll), as GTSAM's Rot3::Ypr."""
    cr, sr = np.cos(roll), np.sin(roll)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    out = np.empty((*np.shape(roll), 3, 3))
    out[..., 0, 0] = cy * cp
    out[..., 0, 1] = cy * sp * sr - sy * cr
    out[..., 0, 2] = cy * sp * cr + sy * sr
    out[..., 1, 0] = sy * cp
    out[..., 1, 1] = sy * sp * sr + cy * cr
    out[..., 1, 2] = sy * sp * cr - cy * sr
    out[..., 2, 0] = -sp
    out[..., 2, 1] = cp * sr
    out[..., 2, 2] = cp * cr
    return out


# ----------------------------------------------------------------------------------------------
# reading


@dataclass
class _Group:
    """All lines of one tag, kept in file order."""

    tag: str
    lines: list[int]
    rows: list[list[str]]


@dataclass
class _Parsed:
    lines: np.ndarray  # (r,) 1-based line numbers
    ints: np.ndarray  # (r, n_int) int64
    values: np.ndarray  # (r, n_float) float64


def _split_by_tag(path: str, text: str) -> tuple[dict[str, _Group], list[str]]:
    groups: dict[str, _Group] = {}
    order: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens or tokens[0][0] == "#":
            continue
        tag = tokens[0]
        group = groups.get(tag)
        if group is None:
            if tag not in _SPECS and tag not in _IGNORED_TAGS and tag != _FIX_TAG:
                raise InputFormatError(path, lineno, "tag", f"unknown tag '{tag}'")
            group = groups[tag] = _Group(tag, [], [])
            order.append(tag)
        group.lines.append(lineno)
        group.rows.append(tokens)
    return groups, order




def _locate_bad_token(path: str, group: _Group, fields: tuple[str, ...], n_int: int) -> InputFormatError:
    """Slow pass used only after a bulk conversion failed: find the first offending token."""
    for lineno, row in zip(group.lines, group.rows, strict=True):
        for col, token in enumerate(row[1:]):
            try:
                convert_token(path, lineno, fields[col], token, col < n_int)
            except InputFormatError as err:
                return err
    return InputFormatError(path, group.lines[0], None, f"could not convert '{group.tag}' lines")


def _check_lengths(path: str, group: _Group, fields: tuple[str, ...], allowed: tuple[int, ...]) -> None:
    lengths = np.fromiter(map(len, group.rows), dtype=np.int64, count=len(group.rows)) - 1
    bad = ~np.isin(lengths, allowed)
    if not np.any(bad):
        return
    k = int(np.argmax(bad))
    n, lineno = int(lengths[k]), group.lines[k]
    if n < max(allowed):
        shorter = [a for a in allowed if a > n]
        missing = fields[n] if n < len(fields) else None
        raise InputFormatError(
            path, lineno, missing, f"truncated '{group.tag}' line: {n} of {min(shorter)} values present"
        )
    raise InputFormatError(
        path,
        lineno,
        None,
        f"'{group.tag}' line has {n - max(allowed)} unexpected extra value(s) after '{fields[-1]}'",
    )


def _parse_rows(path: str, group: _Group, spec: _TagSpec, n_fields: int) -> _Parsed:
    """Bulk-convert rows that all hold ``n_fields`` values after the tag."""
    rows, lines = group.rows, group.lines
    r, n_int = len(rows), spec.n_int
    n_float = n_fields - n_int
    try:
        ints = np.fromiter(
            map(int, [tok for row in rows for tok in row[1 : 1 + n_int]]), dtype=np.int64, count=r * n_int
        ).reshape(r, n_int)
        values = np.fromiter(
            map(float, [tok for row in rows for tok in row[1 + n_int : 1 + n_fields]]),
            dtype=np.float64,
            count=r * n_float,
        ).reshape(r, n_float)
    except (ValueError, OverflowError):
        raise _locate_bad_token(path, group, spec.fields, n_int) from None
    nonfinite = ~np.isfinite(values)
    if np.any(nonfinite):
        row, col = np.unravel_index(int(np.argmax(nonfinite)), values.shape)
        token = rows[row][1 + n_int + col]
        raise InputFormatError(path, lines[row], spec.fields[n_int + col], f"non-finite value '{token}'")
    return _Parsed(np.asarray(lines, dtype=np.int64), ints, values)


def _parse_group(path: str, group: _Group, spec: _TagSpec) -> tuple[_Parsed, _Parsed | None]:
    """Returns (rows with every field, rows without information values) for the tag."""
    full = len(spec.fields)
    short = full - len(_UPPER6) if spec.optional_info else None
    _check_lengths(path, group, spec.fields, (full,) if short is None else (short, full))
    if short is None:
        return _parse_rows(path, group, spec, full), None
    parts: dict[bool, _Group] = {True: _Group(group.tag, [], []), False: _Group(group.tag, [], [])}
    for lineno, row in zip(group.lines, group.rows, strict=True):
        part = parts[len(row) - 1 == full]
        part.lines.append(lineno)
        part.rows.append(row)
    return _parse_rows(path, parts[True], spec, full), _parse_rows(path, parts[False], spec, short)


def _rotations_from(path: str, spec: _TagSpec, parsed: _Parsed, col: int) -> np.ndarray:
    """Rotation matrices from the value columns starting at ``col``."""
    vals = parsed.values
    if spec.rotation == "angle":
        return _angle_to_matrix(vals[:, col])
    if spec.rotation == "rpy":
        return _rpy_to_matrix(vals[:, col], vals[:, col + 1], vals[:, col + 2])
    q = vals[:, col : col + 4]
    norm = np.sqrt(np.einsum("ij,ij->i", q, q))
    bad = np.abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE
    if np.any(bad):
        k = int(np.argmax(bad))
        raise InputFormatError(
            path,
            int(parsed.lines[k]),
            "qw",
            f"quaternion (qx, qy, qz, qw) has norm {float(norm[k]):.6g}, "
            f"more than {QUATERNION_NORM_TOLERANCE:g} from 1",
        )
    return _quat_to_matrix(q / norm[:, None])


def _information_from(spec: _TagSpec, info_values: np.ndarray) -> np.ndarray:
    m = info_values.shape[0]
    if spec.info_order == "g2o2d":
        full = np.zeros((m, 3, 3))
        full[:, _TRIU3[0], _TRIU3[1]] = info_values
        full[:, _TRIU3[1], _TRIU3[0]] = info_values
        return full
    if spec.info_order == "toro2d":
        xx, xy, yy, tt, xt, yt = info_values.T
        return np.stack(
            [np.stack([xx, xy, xt], -1), np.stack([xy, yy, yt], -1), np.stack([xt, yt, tt], -1)], axis=1
        )
    full = np.zeros((m, 6, 6))
    full[:, _TRIU6[0], _TRIU6[1]] = info_values
    full[:, _TRIU6[1], _TRIU6[0]] = info_values
    return full[:, _PERM_3D][:, :, _PERM_3D]


def _first_line_error(mask: np.ndarray, lines: np.ndarray) -> int | None:
    """Position (in ``lines``) of the earliest flagged line, or None."""
    if not np.any(mask):
        return None
    cand = np.nonzero(mask)[0]
    return int(cand[np.argmin(lines[cand])])


def read_pose_graph(path: str | os.PathLike[str]) -> PoseGraph:
    """Read a 2D or 3D pose graph in g2o, TORO or GTSAM EDGE3 format (detected from the tags).

    Raises :class:`InputFormatError` naming file, line and field for malformed content. Files
    without vertex lines get an odometry-chained initial guess and ``has_initial_guess=False``.
    """
    path_str = os.fspath(path)
    try:
        with open(path_str, encoding="utf-8-sig") as fh:
            text = fh.read()
    except UnicodeDecodeError as err:
        raise InputFormatError(path_str, None, None, f"not a UTF-8 text file ({err.reason})") from None
    groups, order = _split_by_tag(path_str, text)

    # Dimension: every pose tag must agree with the first one in the file.
    dims = {tag: _SPECS[tag].dim for tag in order if tag in _SPECS}
    if not dims:
        raise InputFormatError(path_str, None, None, "no vertex or edge lines found")
    first_tag = min(dims, key=lambda t: groups[t].lines[0])
    dim = dims[first_tag]
    other = [t for t, d in dims.items() if d != dim]
    if other:
        tag = min(other, key=lambda t: groups[t].lines[0])
        raise InputFormatError(
            path_str,
            groups[tag].lines[0],
            "tag",
            f"{dims[tag]}D tag '{tag}' in a file whose first pose tag '{first_tag}' "
            f"(line {groups[first_tag].lines[0]}) is {dim}D",
        )

    v_lines, v_ids, v_rot, v_trans = [], [], [], []
    e_lines, e_ij, e_rot, e_trans, e_info = [], [], [], [], []
    n_no_info = 0
    for tag in order:
        spec = _SPECS.get(tag)
        if spec is None:
            continue
        group = groups[tag]
        parsed, parsed_short = _parse_group(path_str, group, spec)
        rot_col = dim  # rotation values follow the translation
        if spec.kind == "vertex":
            v_lines.append(parsed.lines)
            v_ids.append(parsed.ints[:, 0])
            v_trans.append(parsed.values[:, :dim])
            v_rot.append(_rotations_from(path_str, spec, parsed, rot_col))
            continue
        n_pose_vals = len(spec.fields) - spec.n_int - (len(_UPPER6) if dim == 3 else 6)
        for part, has_info in ((parsed, True), (parsed_short, False)):
            if part is None or part.lines.size == 0:
                continue
            e_lines.append(part.lines)
            e_ij.append(part.ints)
            e_trans.append(part.values[:, :dim])
            e_rot.append(_rotations_from(path_str, spec, part, rot_col))
            if has_info:
                e_info.append(_information_from(spec, part.values[:, n_pose_vals:]))
            else:
                n_no_info += part.lines.size
                e_info.append(np.tile(np.eye(6), (part.lines.size, 1, 1)))

    for tag in _IGNORED_TAGS & groups.keys():
        _log.warning("%s: ignored %d '%s' line(s)", path_str, len(groups[tag].lines), tag)
    if n_no_info:
        _log.warning(
            "%s: %d edge line(s) carry no information matrix; using the identity (as GTSAM load3D does)",
            path_str,
            n_no_info,
        )

    k = 3 if dim == 2 else 6
    if e_lines:
        lines_e = np.concatenate(e_lines)
        order_e = np.argsort(lines_e, kind="stable")
        lines_e = lines_e[order_e]
        ij = np.concatenate(e_ij)[order_e]
        meas_rot = np.concatenate(e_rot)[order_e]
        meas_trans = np.concatenate(e_trans)[order_e]
        info = np.concatenate(e_info)[order_e]
    else:
        lines_e = np.zeros(0, np.int64)
        ij = np.zeros((0, 2), np.int64)
        meas_rot = np.zeros((0, dim, dim))
        meas_trans = np.zeros((0, dim))
        info = np.zeros((0, k, k))

    pos = _first_line_error(ij[:, 0] == ij[:, 1], lines_e)
    if pos is not None:
        raise InputFormatError(
            path_str, int(lines_e[pos]), "j", f"self-loop edge: i == j == {int(ij[pos, 0])}"
        )

    has_vertices = bool(v_lines)
    if has_vertices:
        lines_v = np.concatenate(v_lines)
        order_v = np.argsort(lines_v, kind="stable")
        lines_v = lines_v[order_v]
        raw_ids = np.concatenate(v_ids)[order_v]
        rot = np.concatenate(v_rot)[order_v]
        trans = np.concatenate(v_trans)[order_v]
        by_id = np.argsort(raw_ids, kind="stable")  # stable: earlier line first within an id
        sorted_ids = raw_ids[by_id]
        dup = np.nonzero(sorted_ids[1:] == sorted_ids[:-1])[0]
        if dup.size:
            # The stable sort puts the earlier definition first; report the earliest redefinition.
            pick = dup[np.argmin(lines_v[by_id[dup + 1]])]
            earlier, later = by_id[pick], by_id[pick + 1]
            raise InputFormatError(
                path_str,
                int(lines_v[later]),
                "id",
                f"duplicate vertex id {int(raw_ids[later])} (first defined on line {int(lines_v[earlier])})",
            )
        ids = sorted_ids
        rot, trans = rot[by_id], trans[by_id]
        for col, name in ((0, "i"), (1, "j")):
            where = np.searchsorted(ids, ij[:, col])
            known = (where < ids.size) & (ids[np.minimum(where, ids.size - 1)] == ij[:, col])
            pos = _first_line_error(~known, lines_e)
            if pos is not None:
                raise InputFormatError(
                    path_str,
                    int(lines_e[pos]),
                    name,
                    f"edge references unknown vertex id {int(ij[pos, col])}",
                )
    else:
        ids = np.unique(ij)
        rot = np.tile(np.eye(dim), (ids.size, 1, 1))
        trans = np.zeros((ids.size, dim))
    edge_idx = np.searchsorted(ids, ij) if ij.size else np.zeros((0, 2), np.int64)

    fixed = np.zeros(ids.size, dtype=bool)
    if _FIX_TAG in groups:
        fixed[_parse_fix(path_str, groups[_FIX_TAG], ids)] = True

    graph = PoseGraph(
        dim=dim,
        ids=ids,
        rotations=rot,
        translations=trans,
        fixed=fixed,
        edge_i=edge_idx[:, 0],
        edge_j=edge_idx[:, 1],
        meas_rotations=meas_rot,
        meas_translations=meas_trans,
        information=info,
        has_initial_guess=has_vertices,
        source=path_str,
    )
    _check_information_scale(path_str, info, lines_e)
    if not has_vertices:
        graph = odometry_chain_initialization(graph)
    _warn_indefinite(path_str, info)
    return graph


# An information matrix whose largest eigenvalue is below this weighs nothing any solver precision
# can carry: its square root underflows fp32 (~1e-38 normal range squared) once whitened residuals
# and Jacobians are formed, and the normal equations go singular far from the file (the incomplete
# Cholesky then breaks down at any diagonal shift). Such a file is an error, not a warning.
MIN_INFORMATION_EIGENVALUE = 1e-30


def _check_information_scale(path: str, info: np.ndarray, lines: np.ndarray) -> None:
    if info.shape[0] == 0:
        return
    sym = 0.5 * (info + np.swapaxes(info, 1, 2))
    largest = np.linalg.eigvalsh(sym)[:, -1]
    pos = _first_line_error(~(largest >= MIN_INFORMATION_EIGENVALUE), lines)
    if pos is not None:
        raise InputFormatError(
            path,
            int(lines[pos]),
            "information",
            f"degenerate information matrix of edge {pos}: largest eigenvalue {float(largest[pos]):.3g} "
            f"< {MIN_INFORMATION_EIGENVALUE:g} (the edge would carry no weight)",
        )


def _parse_fix(path: str, group: _Group, ids: np.ndarray) -> np.ndarray:
    """Indices of the poses named on FIX lines (g2o allows several ids per line)."""
    out = []
    for lineno, row in zip(group.lines, group.rows, strict=True):
        if len(row) < 2:
            raise InputFormatError(path, lineno, "id", "truncated 'FIX' line: no vertex id")
        for token in row[1:]:
            vid = int(convert_token(path, lineno, "id", token, integer=True))
            where = int(np.searchsorted(ids, vid))
            if where >= ids.size or ids[where] != vid:
                raise InputFormatError(path, lineno, "id", f"FIX references unknown vertex id {vid}")
            out.append(where)
    return np.asarray(out, dtype=np.int64)


def _warn_indefinite(path: str, info: np.ndarray) -> None:
    if info.shape[0] == 0:
        return
    eig = np.linalg.eigvalsh(info)
    not_pd = eig[:, 0] <= 0.0
    if np.any(not_pd):
        _log.warning(
            "%s: %d of %d information matrices are not positive definite (smallest eigenvalue %.3g); "
            "see mp_slam_ros.pgo.project_information_psd",
            path,
            int(np.count_nonzero(not_pd)),
            info.shape[0],
            float(eig[:, 0].min()),
        )


# ----------------------------------------------------------------------------------------------
# writing


def _fmt(rows: np.ndarray) -> list[str]:
    # repr() is the shortest string that parses back to the same double.
    return [" ".join(map(repr, row)) for row in rows.tolist()]


def write_g2o(graph: PoseGraph, path: str | os.PathLike[str], *, write_vertices: bool = True) -> None:
    """Write ``graph`` as g2o (VERTEX_SE2/EDGE_SE2 or VERTEX_SE3:QUAT/EDGE_SE3:QUAT + FIX lines).

    Floats are written with full precision, information is converted back to g2o order, and the
    file is replaced atomically. Reading the result gives back the same ids, edges, translations,
    information and fixed flags bit for bit; 2D rotations too, while 3D rotations can differ by a
    few ulps (matrix -> quaternion -> matrix is not exactly invertible in floating point).
    ``write_vertices=False`` omits the VERTEX lines (the reader then rebuilds the guess from odometry).
    """
    for name in ("rotations", "translations", "meas_rotations", "meas_translations", "information"):
        arr = getattr(graph, name)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"cannot write PoseGraph.{name}: it holds non-finite values")
    d = graph.dim
    ids = graph.ids.tolist()
    ei = graph.ids[graph.edge_i].tolist()
    ej = graph.ids[graph.edge_j].tolist()
    sym = 0.5 * (graph.information + np.swapaxes(graph.information, 1, 2))
    if d == 2:
        vtag, etag = "VERTEX_SE2", "EDGE_SE2"
        vvals = np.column_stack([graph.translations, _matrix_to_angle(graph.rotations)])
        evals = np.column_stack(
            [graph.meas_translations, _matrix_to_angle(graph.meas_rotations), sym[:, _TRIU3[0], _TRIU3[1]]]
        )
    else:
        vtag, etag = "VERTEX_SE3:QUAT", "EDGE_SE3:QUAT"
        g2o_info = sym[:, _PERM_3D][:, :, _PERM_3D]
        vvals = np.column_stack([graph.translations, _matrix_to_quat(graph.rotations)])
        evals = np.column_stack(
            [
                graph.meas_translations,
                _matrix_to_quat(graph.meas_rotations),
                g2o_info[:, _TRIU6[0], _TRIU6[1]],
            ]
        )
    out: list[str] = []
    if write_vertices:
        out.extend(f"{vtag} {i} {v}" for i, v in zip(ids, _fmt(vvals), strict=True))
    out.extend(f"FIX {ids[k]}" for k in np.nonzero(graph.fixed)[0].tolist())
    out.extend(f"{etag} {a} {b} {v}" for a, b, v in zip(ei, ej, _fmt(evals), strict=True))
    atomic_write_text(os.fspath(path), "\n".join(out) + "\n")


