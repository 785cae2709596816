"""Stamped pose trajectories and their file formats (TUM, EuRoC ground truth, KITTI).

A :class:`Trajectory` holds integer-nanosecond stamps and 4x4 float64 poses ``T_world_body``
(the pose of the tracked frame in the trajectory's world frame, see
:mod:`mp_slam_ros.vision.types`).

File formats
------------
* **TUM** (``t x y z qx qy qz qw``): stamps in seconds, quaternion in (x, y, z, w) order, ``#``
  comments. Stamps are parsed as exact decimals, so ``1311868164.363181`` becomes exactly
  ``1311868164363181000`` ns; :func:`write_tum` writes nine decimals, so nanosecond stamps
  survive a round trip.
* **EuRoC state csv** (``ns, px, py, pz, qw, qx, qy, qz[, v, bw, ba]``): stamps in ns, quaternion
  in (w, x, y, z) order, header lines starting with ``#``.
* **KITTI** (12 numbers a line: the top 3x4 of each pose, row-major) with an optional times file
  (one stamp in seconds a line).

Real files contain repeated stamps (TUM fr2/desk ground truth, evo's V102 estimate). The readers
sort the rows by stamp (stable) and keep the *last* row of each stamp, as TUM's
``associate.py`` does with its dict; ``duplicates="first"`` keeps the first, ``"error"`` refuses
repeated or out-of-order stamps.
"""

from __future__ import annotations

import decimal
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mp_slam_ros.io.errors import InputFormatError, convert_token
from mp_slam_ros.io.files import atomic_write_text
from mp_slam_ros.solver.lie import quaternion_to_rotation, rotation_to_quaternion

__all__ = [
    "RIGID_TOL",
    "Trajectory",
    "associate",
    "ns_to_seconds_text",
    "read_euroc_groundtruth",
    "read_kitti",
    "read_trajectory",
    "read_tum",
    "seconds_to_ns",
    "tum_line",
    "write_euroc_groundtruth",
    "write_kitti",
    "write_tum",
]

#: Largest accepted ``max|R^T R - I|`` and ``|det R - 1|`` of a pose's rotation block. Files hold
#: rotations to 6-9 significant digits (KITTI ground truth, ORB-SLAM's float32 output), so exact
#: orthonormality cannot be asked for.
RIGID_TOL = 1e-4

_NS_PER_S = 1_000_000_000
_DUPLICATES = ("last", "first", "error")


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Stamped poses: ``stamps_ns`` int64 (N,), strictly increasing; ``poses`` float64 (N, 4, 4) rigid."""

    stamps_ns: np.ndarray
    poses: np.ndarray

    def __post_init__(self) -> None:
        stamps = np.asarray(self.stamps_ns)
        if stamps.ndim != 1:
            raise ValueError(f"Trajectory: stamps_ns must have shape (N,), got {stamps.shape}")
        if (
            stamps.size
            and not np.issubdtype(stamps.dtype, np.integer)
            and (not np.all(np.isfinite(stamps)) or np.any(stamps != np.round(stamps)))
        ):
            raise ValueError("Trajectory: stamps_ns must be integer nanoseconds")
        stamps = np.ascontiguousarray(stamps, dtype=np.int64)
        poses = np.ascontiguousarray(self.poses, dtype=np.float64)
        if poses.ndim != 3 or poses.shape[1:] != (4, 4) or poses.shape[0] != stamps.shape[0]:
            raise ValueError(
                f"Trajectory: poses must have shape ({stamps.shape[0]}, 4, 4) to match the stamps, got {poses.shape}"
            )
        if stamps.size > 1 and np.any(np.diff(stamps) <= 0):
            k = int(np.argmax(np.diff(stamps) <= 0))
            raise ValueError(
                f"Trajectory: stamps must be strictly increasing; stamp {k + 1} ({stamps[k + 1]} ns) "
                f"follows {stamps[k]} ns"
            )
        bad = _non_rigid(poses)
        if bad.size:
            raise ValueError(f"Trajectory: pose {int(bad[0])} is not a rigid transform (tolerance {RIGID_TOL})")
        stamps.setflags(write=False)
        poses.setflags(write=False)
        object.__setattr__(self, "stamps_ns", stamps)
        object.__setattr__(self, "poses", poses)

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return int(self.stamps_ns.shape[0])

    @property
    def positions(self) -> np.ndarray:
        """Translations (N, 3)."""
        return self.poses[:, :3, 3].copy()

    @property
    def rotations(self) -> np.ndarray:
        """Rotation blocks (N, 3, 3)."""
        return self.poses[:, :3, :3].copy()

    @property
    def quaternions_xyzw(self) -> np.ndarray:
        """Unit quaternions (N, 4) in (x, y, z, w) order with w >= 0."""
        if len(self) == 0:
            return np.empty((0, 4))
        return rotation_to_quaternion(self.poses[:, :3, :3])

    @property
    def stamps_s(self) -> np.ndarray:
        """Stamps in seconds as float64 (about 0.2 us resolution for Unix times; use ``stamps_ns`` to compare)."""
        return self.stamps_ns.astype(np.float64) / _NS_PER_S

    @property
    def distances(self) -> np.ndarray:
        """Path length travelled from the first pose up to each pose (N,), starting at 0."""
        if len(self) == 0:
            return np.zeros(0)
        steps = np.linalg.norm(np.diff(self.poses[:, :3, 3], axis=0), axis=1)
        return np.concatenate(([0.0], np.cumsum(steps)))

    @property
    def path_length(self) -> float:
        """Total path length in metres (sum of the distances between consecutive positions)."""
        d = self.distances
        return float(d[-1]) if d.size else 0.0

    @property
    def duration_s(self) -> float:
        return float(self.stamps_ns[-1] - self.stamps_ns[0]) / _NS_PER_S if len(self) else 0.0

    # ------------------------------------------------------------- new trajectories
    def transformed(self, T_left: np.ndarray | None = None, T_right: np.ndarray | None = None) -> Trajectory:
        """``T_left @ pose @ T_right`` for every pose.

        ``T_left`` changes the world frame (``T_new_world``), ``T_right`` the tracked frame, e.g.
        ``gt.transformed(T_right=seq.T_base_camera)`` turns body ground truth into camera poses.
        """
        poses = self.poses
        if T_left is not None:
            poses = _as_pose(T_left, "T_left") @ poses
        if T_right is not None:
            poses = poses @ _as_pose(T_right, "T_right")
        return Trajectory(self.stamps_ns.copy(), poses)

    def slice(self, start: int | None = None, stop: int | None = None, step: int | None = None) -> Trajectory:
        """The poses ``[start:stop:step]`` (index based, Python slice semantics, step > 0)."""
        if step is not None and step <= 0:
            raise ValueError("Trajectory.slice: step must be positive")
        s = slice(start, stop, step)
        return Trajectory(self.stamps_ns[s].copy(), self.poses[s].copy())

    def select(self, indices: np.ndarray) -> Trajectory:
        """The poses at the given (increasing) indices, e.g. the output of :func:`associate`."""
        idx = np.asarray(indices, dtype=np.int64)
        return Trajectory(self.stamps_ns[idx], self.poses[idx])

    def between(self, start_ns: int | None = None, stop_ns: int | None = None) -> Trajectory:
        """The poses with ``start_ns <= stamp <= stop_ns`` (either bound optional)."""
        lo = 0 if start_ns is None else int(np.searchsorted(self.stamps_ns, start_ns, "left"))
        hi = len(self) if stop_ns is None else int(np.searchsorted(self.stamps_ns, stop_ns, "right"))
        return self.slice(lo, hi)

    @classmethod
    def from_positions_quaternions(cls, stamps_ns: np.ndarray, xyz: np.ndarray, q_xyzw: np.ndarray) -> Trajectory:
        """Build from positions (N, 3) and quaternions (N, 4) in (x, y, z, w) order (normalised here)."""
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        q = np.asarray(q_xyzw, dtype=np.float64).reshape(-1, 4)
        if xyz.shape[0] != q.shape[0]:
            raise ValueError(f"Trajectory: {xyz.shape[0]} positions but {q.shape[0]} quaternions")
        norms = np.linalg.norm(q, axis=1)
        if np.any(~np.isfinite(norms) | (norms < 1e-12)):
            raise ValueError(f"Trajectory: quaternion {int(np.argmax(~(norms >= 1e-12)))} has zero or non-finite norm")
        poses = np.tile(np.eye(4), (xyz.shape[0], 1, 1))
        if xyz.shape[0]:
            poses[:, :3, :3] = quaternion_to_rotation(q)
        poses[:, :3, 3] = xyz
        return cls(np.asarray(stamps_ns), poses)

    @classmethod
    def empty(cls) -> Trajectory:
        return cls(np.zeros(0, dtype=np.int64), np.zeros((0, 4, 4)))


def _as_pose(T: np.ndarray, name: str) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"{name} must be a 4x4 matrix, got shape {T.shape}")
    return T


def _non_rigid(poses: np.ndarray) -> np.ndarray:
    """Indices of poses that are not rigid transforms within RIGID_TOL."""
    if poses.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    R = poses[:, :3, :3]
    ortho = np.abs(np.swapaxes(R, 1, 2) @ R - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(R)
    bottom = np.abs(poses[:, 3, :] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=1)
    finite = np.isfinite(poses).all(axis=(1, 2))
    ok = finite & (ortho <= RIGID_TOL) & (np.abs(det - 1.0) <= RIGID_TOL) & (bottom == 0.0)
    return np.flatnonzero(~ok)


# ---------------------------------------------------------------------- parsing helpers
def seconds_to_ns(token: str) -> int:
    """Exact decimal seconds (``"1311868164.363181"``, ``"1.403715529112143517e+09"``) to integer ns.

    Raises ValueError for anything that is not a finite decimal number.
    """
    try:
        value = decimal.Decimal(token.strip())
    except decimal.InvalidOperation:
        raise ValueError(f"not a number: '{token}'") from None
    if not value.is_finite():
        raise ValueError(f"non-finite stamp '{token}'")
    return int(value.scaleb(9).to_integral_value(rounding=decimal.ROUND_HALF_EVEN))


def ns_to_seconds_text(stamp_ns: int) -> str:
    """Integer ns as decimal seconds with nine decimals (exact)."""
    stamp_ns = int(stamp_ns)
    sign = "-" if stamp_ns < 0 else ""
    whole, frac = divmod(abs(stamp_ns), _NS_PER_S)
    return f"{sign}{whole}.{frac:09d}"


def _stamp_s(path: str, lineno: int, field: str, token: str) -> int:
    try:
        return seconds_to_ns(token)
    except ValueError as err:
        raise InputFormatError(path, lineno, field, f"expected a time in seconds, {err}") from None


def _stamp_ns(path: str, lineno: int, field: str, token: str) -> int:
    token = token.strip()
    try:
        return int(token)
    except ValueError:
        pass
    # Some tools write ns stamps as floats ("1.403715273262143e+18"); accept exact decimals.
    try:
        value = decimal.Decimal(token)
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
    except decimal.InvalidOperation:
        pass
    raise InputFormatError(path, lineno, field, f"expected integer nanoseconds, got '{token}'")


def _numbers(path: str, lineno: int, fields: tuple[str, ...], tokens: list[str]) -> list[float]:
    return [convert_token(path, lineno, f, tok, False) for f, tok in zip(fields, tokens, strict=True)]


def _data_lines(path: str):
    """(line number, stripped text) of the non-blank, non-comment lines of a text file."""
    try:
        fh = open(path, encoding="utf-8")  # noqa: SIM115 - closed below, errors need the path
    except FileNotFoundError:
        raise FileNotFoundError(2, "trajectory file not found", path) from None
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            text = raw.strip()
            if text and not text.startswith("#") and not text.startswith("%"):
                yield lineno, text


def _finish(path: str, stamps: list[int], poses: np.ndarray, lines: list[int], duplicates: str) -> Trajectory:
    if duplicates not in _DUPLICATES:
        raise ValueError(f"duplicates must be one of {_DUPLICATES}, got {duplicates!r}")
    st = np.asarray(stamps, dtype=np.int64)
    if st.size > 1 and np.any(np.diff(st) <= 0):
        if duplicates == "error":
            k = int(np.argmax(np.diff(st) <= 0)) + 1
            what = "repeats" if st[k] == st[k - 1] else "is earlier than"
            raise InputFormatError(path, lines[k], "timestamp", f"stamp {what} the one on line {lines[k - 1]}")
        order = np.argsort(st, kind="stable")
        st = st[order]
        poses = poses[order]
        lines = [lines[i] for i in order]
        same_as_next = np.concatenate((st[1:] == st[:-1], [False]))
        same_as_prev = np.concatenate(([False], st[1:] == st[:-1]))
        keep = ~same_as_next if duplicates == "last" else ~same_as_prev
        st, poses = st[keep], poses[keep]
        lines = [ln for ln, k in zip(lines, keep, strict=True) if k]
    bad = _non_rigid(poses)
    if bad.size:
        raise InputFormatError(path, lines[int(bad[0])], "rotation", f"not a rotation (tolerance {RIGID_TOL})")
    return Trajectory(st, poses)


def _quat_poses(path: str, xyz: np.ndarray, q_xyzw: np.ndarray, lines: list[int], qfields: tuple[str, ...]):
    norms = np.linalg.norm(q_xyzw, axis=1)
    bad = np.flatnonzero(norms < 1e-6)
    if bad.size:
        raise InputFormatError(path, lines[int(bad[0])], qfields[0], "quaternion has (near) zero norm")
    poses = np.tile(np.eye(4), (xyz.shape[0], 1, 1))
    if xyz.shape[0]:
        poses[:, :3, :3] = quaternion_to_rotation(q_xyzw)
    poses[:, :3, 3] = xyz
    return poses


# ---------------------------------------------------------------------- TUM
_TUM_FIELDS = ("timestamp", "tx", "ty", "tz", "qx", "qy", "qz", "qw")


def read_tum(path: str | os.PathLike, duplicates: str = "last") -> Trajectory:
    """Read a TUM trajectory (``t x y z qx qy qz qw``, seconds); see the module doc for ``duplicates``."""
    path = os.fspath(path)
    stamps: list[int] = []
    values: list[list[float]] = []
    lines: list[int] = []
    for lineno, text in _data_lines(path):
        tokens = text.replace(",", " ").split()
        if len(tokens) != 8:
            field = _TUM_FIELDS[len(tokens)] if len(tokens) < 8 else None
            raise InputFormatError(path, lineno, field, f"expected 8 values (t x y z qx qy qz qw), got {len(tokens)}")
        stamps.append(_stamp_s(path, lineno, "timestamp", tokens[0]))
        values.append(_numbers(path, lineno, _TUM_FIELDS[1:], tokens[1:]))
        lines.append(lineno)
    v = np.asarray(values, dtype=np.float64).reshape(-1, 7)
    poses = _quat_poses(path, v[:, :3], v[:, 3:], lines, ("qx",))
    return _finish(path, stamps, poses, lines, duplicates)


def _num(x: float) -> str:
    return repr(float(x))


def tum_line(stamp_ns: int, position: np.ndarray, q_xyzw: np.ndarray) -> str:
    """One TUM row: nine-decimal seconds, round-trip-exact position and quaternion (x, y, z, w)."""
    return f"{ns_to_seconds_text(stamp_ns)} {' '.join(_num(v) for v in (*position, *q_xyzw))}\n"


def write_tum(path: str | os.PathLike, traj: Trajectory, header: str | None = None) -> None:
    """Write a TUM trajectory atomically: nine-decimal seconds, round-trip-exact positions and quaternions."""
    q = traj.quaternions_xyzw
    p = traj.poses[:, :3, 3]
    out = [f"# {line}\n" for line in header.splitlines()] if header else []
    out.append("# timestamp tx ty tz qx qy qz qw\n")
    out.extend(tum_line(int(traj.stamps_ns[i]), p[i], q[i]) for i in range(len(traj)))
    atomic_write_text(path, "".join(out))


# ---------------------------------------------------------------------- EuRoC state csv
_EUROC_FIELDS = ("timestamp", "p_x", "p_y", "p_z", "q_w", "q_x", "q_y", "q_z")
_EUROC_HEADER = "#timestamp [ns],p_RS_R_x [m],p_RS_R_y [m],p_RS_R_z [m],q_RS_w [],q_RS_x [],q_RS_y [],q_RS_z []\n"


def read_euroc_groundtruth(path: str | os.PathLike, duplicates: str = "last") -> Trajectory:
    """Read an EuRoC state csv (``ns, px, py, pz, qw, qx, qy, qz, ...``): body poses in the world frame.

    Columns after the quaternion (velocity, biases) are ignored.
    """
    path = os.fspath(path)
    stamps: list[int] = []
    values: list[list[float]] = []
    lines: list[int] = []
    for lineno, text in _data_lines(path):
        tokens = [t.strip() for t in text.split(",")]
        if len(tokens) < 8:
            raise InputFormatError(
                path, lineno, _EUROC_FIELDS[len(tokens)], f"expected at least 8 columns, got {len(tokens)}"
            )
        stamps.append(_stamp_ns(path, lineno, "timestamp", tokens[0]))
        values.append(_numbers(path, lineno, _EUROC_FIELDS[1:], tokens[1:8]))
        lines.append(lineno)
    v = np.asarray(values, dtype=np.float64).reshape(-1, 7)
    q_xyzw = v[:, [4, 5, 6, 3]]
    poses = _quat_poses(path, v[:, :3], q_xyzw, lines, ("q_w",))
    return _finish(path, stamps, poses, lines, duplicates)


def write_euroc_groundtruth(path: str | os.PathLike, traj: Trajectory) -> None:
    """Write an EuRoC state csv with the pose columns only (ns, p xyz, q wxyz), atomically."""
    q = traj.quaternions_xyzw
    p = traj.poses[:, :3, 3]
    out = [_EUROC_HEADER]
    for i in range(len(traj)):
        nums = ",".join(_num(v) for v in (*p[i], q[i, 3], q[i, 0], q[i, 1], q[i, 2]))
        out.append(f"{int(traj.stamps_ns[i])},{nums}\n")
    atomic_write_text(path, "".join(out))


# ---------------------------------------------------------------------- KITTI
_KITTI_FIELDS = tuple(f"T{r}{c}" for r in range(3) for c in range(4))


def read_kitti(
    path: str | os.PathLike, times_path: str | os.PathLike | None = None, duplicates: str = "error"
) -> Trajectory:
    """Read KITTI poses (12 numbers a line, row-major 3x4) with stamps from ``times_path`` (seconds a line).

    Without a times file the stamps are the frame indices in seconds (0 s, 1 s, ...).
    """
    path = os.fspath(path)
    rows: list[list[float]] = []
    lines: list[int] = []
    for lineno, text in _data_lines(path):
        tokens = text.split()
        if len(tokens) != 12:
            field = _KITTI_FIELDS[len(tokens)] if len(tokens) < 12 else None
            raise InputFormatError(path, lineno, field, f"expected 12 values (3x4 pose), got {len(tokens)}")
        rows.append(_numbers(path, lineno, _KITTI_FIELDS, tokens))
        lines.append(lineno)
    n = len(rows)
    poses = np.tile(np.eye(4), (n, 1, 1))
    if n:
        poses[:, :3, :] = np.asarray(rows, dtype=np.float64).reshape(n, 3, 4)
    if times_path is None:
        stamps = [i * _NS_PER_S for i in range(n)]
        stamp_lines = lines
    else:
        times_path = os.fspath(times_path)
        stamps, stamp_lines = [], []
        for lineno, text in _data_lines(times_path):
            tokens = text.split()
            if len(tokens) != 1:
                raise InputFormatError(times_path, lineno, "timestamp", f"expected 1 value, got {len(tokens)}")
            stamps.append(_stamp_s(times_path, lineno, "timestamp", tokens[0]))
            stamp_lines.append(lineno)
        if len(stamps) != n:
            raise InputFormatError(times_path, None, "timestamp", f"{len(stamps)} stamps for {n} poses in {path}")
    if duplicates == "error" and n > 1:
        st = np.asarray(stamps, dtype=np.int64)
        if np.any(np.diff(st) <= 0):
            k = int(np.argmax(np.diff(st) <= 0)) + 1
            src = times_path if times_path is not None else path
            raise InputFormatError(src, stamp_lines[k], "timestamp", "stamps must be strictly increasing")
    return _finish(path, stamps, poses, lines, "last" if duplicates == "error" else duplicates)


def write_kitti(path: str | os.PathLike, traj: Trajectory, times_path: str | os.PathLike | None = None) -> None:
    """Write KITTI poses (and optionally the stamps in seconds), atomically."""
    out = [" ".join(_num(v) for v in pose[:3, :].ravel()) + "\n" for pose in traj.poses]
    atomic_write_text(path, "".join(out))
    if times_path is not None:
        atomic_write_text(times_path, "".join(ns_to_seconds_text(s) + "\n" for s in traj.stamps_ns))


def read_trajectory(path: str | os.PathLike, fmt: str = "auto") -> Trajectory:
    """Read a trajectory in ``fmt`` ``"tum"``, ``"euroc"`` or ``"kitti"``; ``"auto"`` guesses from the content."""
    path = os.fspath(path)
    if fmt == "auto":
        fmt = "tum"
        for _, text in _data_lines(path):
            if "," in text:
                fmt = "euroc"
            elif len(text.split()) == 12:
                fmt = "kitti"
            break
        else:
            if Path(path).suffix.lower() == ".csv":
                fmt = "euroc"
    readers = {"tum": read_tum, "euroc": read_euroc_groundtruth, "kitti": read_kitti}
    if fmt not in readers:
        raise ValueError(f"unknown trajectory format {fmt!r}; expected one of {sorted(readers)} or 'auto'")
    return readers[fmt](path)


# ---------------------------------------------------------------------- association
def associate(a, b, max_dt_ns: int, offset_ns: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one nearest-stamp matching of two stamp sequences (Trajectory or int ns arrays).

    As TUM's ``associate.py``: every pair with ``|a_i - (b_j + offset_ns)| <= max_dt_ns`` is a
    candidate; candidates are taken greedily by increasing time difference (ties by ``a`` then
    ``b``), each stamp used at most once. Returns int64 index arrays ``(idx_a, idx_b)`` ordered by
    increasing ``idx_a``; ``idx_b`` is increasing too unless ``max_dt_ns`` exceeds the stamp
    spacing so much that greedy matches cross. (TUM's script uses a strict ``<``; stamps exactly
    ``max_dt_ns`` apart match here.)
    """
    sa = np.asarray(a.stamps_ns if isinstance(a, Trajectory) else a, dtype=np.int64)
    sb = np.asarray(b.stamps_ns if isinstance(b, Trajectory) else b, dtype=np.int64) + int(offset_ns)
    max_dt_ns = int(max_dt_ns)
    if max_dt_ns < 0:
        raise ValueError("associate: max_dt_ns must be >= 0")
    if sa.size == 0 or sb.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order_b = np.argsort(sb, kind="stable")
    sb_sorted = sb[order_b]
    lo = np.searchsorted(sb_sorted, sa - max_dt_ns, "left")
    hi = np.searchsorted(sb_sorted, sa + max_dt_ns, "right")
    counts = hi - lo
    ia = np.repeat(np.arange(sa.size, dtype=np.int64), counts)
    starts = np.repeat(lo - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    jb_sorted = np.arange(ia.size, dtype=np.int64) + starts
    jb = order_b[jb_sorted]
    diff = np.abs(sa[ia] - sb[jb])
    order = np.lexsort((sb[jb], sa[ia], diff))
    used_a = np.zeros(sa.size, dtype=bool)
    used_b = np.zeros(sb.size, dtype=bool)
    out_a: list[int] = []
    out_b: list[int] = []
    for k in order.tolist():
        i, j = int(ia[k]), int(jb[k])
        if not used_a[i] and not used_b[j]:
            used_a[i] = used_b[j] = True
            out_a.append(i)
            out_b.append(j)
    idx_a = np.asarray(out_a, dtype=np.int64)
    idx_b = np.asarray(out_b, dtype=np.int64)
    o = np.argsort(idx_a, kind="stable")
    return idx_a[o], idx_b[o]
