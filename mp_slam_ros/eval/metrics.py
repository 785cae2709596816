"""Trajectory error metrics: absolute trajectory error (ATE) and relative pose error (RPE).

The definitions follow evo (M. Grupp, https://github.com/MichaelGrupp/evo) and the TUM RGB-D
benchmark tools, so numbers are comparable with published ones:

* **ATE** (evo's APE w.r.t. the translation part): the estimate is associated with the
  reference by stamp (:func:`mp_slam_ros.io.trajectory.associate`), aligned with Umeyama's method
  (SE(3), Sim(3) or not at all) and the error of each pair is ``|s R p_est + t - p_ref|``.
* **RPE** (evo's RPE): for pose pairs ``(i, j)`` of the associated trajectories,
  ``E = (Q_i^-1 Q_j)^-1 (P_i^-1 P_j)`` with ``Q`` the reference and ``P`` the estimate; the
  translational error is ``|t(E)|`` (m) and the rotational error the angle of ``R(E)`` (deg).
  Pairs are chosen on the *estimate*, as evo's ``RPE.process_data`` does (``pairs_on="reference"``
  uses the reference instead): ``delta_unit="frames"`` takes every ``delta``-th pose;
  ``delta_unit="m"`` accumulates the path and takes a pose each time
  the path since the last one reaches ``delta`` (resetting to 0). Consecutive chosen poses form
  the pairs; with ``all_pairs=True`` every pose starts a pair instead (for metres, the partner is
  the pose whose path distance is nearest ``delta``, within ``rel_delta_tol * delta``).
  ``drift_percent`` is the mean over pairs of translational error / reference path length of the
  pair x 100 (KITTI style, with the actual segment length rather than a nominal one).

Stats use population standard deviation (``np.std``), as evo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mp_slam_ros.io.trajectory import Trajectory, associate
from mp_slam_ros.solver.lie import inverse_transform

__all__ = [
    "DEFAULT_MAX_DT_NS",
    "AteResult",
    "RpeResult",
    "absolute_trajectory_error",
    "relative_pose_error",
    "umeyama_alignment",
]

#: Default association tolerance: 20 ms, as TUM's ``evaluate_ate.py``.
DEFAULT_MAX_DT_NS = 20_000_000

_ALIGN = ("se3", "sim3", "none")


def umeyama_alignment(
    src: np.ndarray, dst: np.ndarray, with_scale: bool = False
) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares ``(R, t, s)`` with ``dst ≈ s R src + t`` (Umeyama, IEEE PAMI 13(4), 1991).

    ``src`` and ``dst`` are (N, 3) corresponding points; ``s`` is 1 unless ``with_scale``.
    Raises ValueError for fewer than 3 points or a degenerate (collinear / coincident) ``src``.
    """
    x = np.asarray(src, dtype=np.float64)
    y = np.asarray(dst, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or x.shape != y.shape:
        raise ValueError(f"umeyama_alignment: src and dst must both be (N, 3), got {x.shape} and {y.shape}")
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"umeyama_alignment: need at least 3 point pairs, got {n}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("umeyama_alignment: non-finite coordinates")
    mean_x = x.mean(axis=0)
    mean_y = y.mean(axis=0)
    xc = x - mean_x
    yc = y - mean_y
    sigma_x = float(np.einsum("ij,ij->", xc, xc)) / n
    cov = yc.T @ xc / n
    U, d, Vt = np.linalg.svd(cov)
    # rank < 2 (points on a line or a single point) leaves the rotation undetermined.
    if sigma_x == 0.0 or d[1] <= 1e-12 * max(d[0], np.finfo(float).tiny):
        raise ValueError("umeyama_alignment: degenerate point set (all points coincident or collinear)")
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0.0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    s = float(np.trace(np.diag(d) @ S) / sigma_x) if with_scale else 1.0
    t = mean_y - s * R @ mean_x
    return R, t, s


@dataclass
class _Stats:
    rmse: float
    mean: float
    median: float
    std: float
    max: float
    min: float


def _stats(e: np.ndarray) -> dict[str, float]:
    return {
        "rmse": float(np.sqrt(np.mean(e * e))),
        "mean": float(np.mean(e)),
        "median": float(np.median(e)),
        "std": float(np.std(e)),
        "max": float(np.max(e)),
        "min": float(np.min(e)),
    }


@dataclass
class AteResult(_Stats):
    """Absolute trajectory error (m) over the associated pose pairs.

    ``errors`` per pair, ``stamps_ns`` the estimate's stamps of the pairs, ``T_align`` the 4x4
    ``[sR t; 0 1]`` applied to the estimate (``scale`` = s), ``num_pairs`` the pair count.
    """

    errors: np.ndarray = field(default_factory=lambda: np.zeros(0))
    stamps_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    T_align: np.ndarray = field(default_factory=lambda: np.eye(4))
    scale: float = 1.0
    num_pairs: int = 0
    align: str = "se3"

    @property
    def stamps_s(self) -> np.ndarray:
        return self.stamps_ns.astype(np.float64) / 1e9

    def summary(self) -> dict[str, float | int | str]:
        return {
            "rmse": self.rmse,
            "mean": self.mean,
            "median": self.median,
            "std": self.std,
            "max": self.max,
            "min": self.min,
            "num_pairs": self.num_pairs,
            "scale": self.scale,
            "align": self.align,
        }


@dataclass
class RpeResult(_Stats):
    """Relative pose error: translational stats in metres (``rmse`` ... ``min``), rotation in degrees.

    Per pair: ``errors`` (m), ``rot_errors_deg``, ``segment_lengths`` (reference path, m),
    ``drifts_percent`` and ``pairs`` (indices into the associated pose lists) with
    ``stamps_ns`` (estimate stamp of each pair's first pose).
    """

    rot_rmse_deg: float = 0.0
    rot_mean_deg: float = 0.0
    rot_median_deg: float = 0.0
    rot_max_deg: float = 0.0
    drift_percent: float = 0.0
    errors: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rot_errors_deg: np.ndarray = field(default_factory=lambda: np.zeros(0))
    segment_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0))
    drifts_percent: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    stamps_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    num_pairs: int = 0
    delta: float = 1.0
    delta_unit: str = "frames"

    def summary(self) -> dict[str, float | int | str]:
        return {
            "rmse": self.rmse,
            "mean": self.mean,
            "median": self.median,
            "std": self.std,
            "max": self.max,
            "min": self.min,
            "rot_rmse_deg": self.rot_rmse_deg,
            "rot_mean_deg": self.rot_mean_deg,
            "drift_percent": self.drift_percent,
            "num_pairs": self.num_pairs,
            "delta": self.delta,
            "delta_unit": self.delta_unit,
        }


def _associated(estimate: Trajectory, reference: Trajectory, max_dt_ns: int):
    if not isinstance(estimate, Trajectory) or not isinstance(reference, Trajectory):
        raise TypeError("estimate and reference must be Trajectory objects")
    idx_e, idx_r = associate(estimate, reference, max_dt_ns)
    return idx_e, idx_r


def absolute_trajectory_error(
    estimate: Trajectory,
    reference: Trajectory,
    align: str = "se3",
    max_dt_ns: int = DEFAULT_MAX_DT_NS,
    min_pairs: int = 3,
) -> AteResult:
    """ATE of ``estimate`` against ``reference`` after ``align`` (``"se3"``, ``"sim3"`` or ``"none"``)."""
    if align not in _ALIGN:
        raise ValueError(f"align must be one of {_ALIGN}, got {align!r}")
    idx_e, idx_r = _associated(estimate, reference, max_dt_ns)
    n = idx_e.size
    if n < max(min_pairs, 1):
        raise ValueError(
            f"ATE: only {n} stamp pairs within {max_dt_ns} ns (need {max(min_pairs, 1)}); "
            "are the stamps in the same clock / unit?"
        )
    p = estimate.poses[idx_e, :3, 3]
    q = reference.poses[idx_r, :3, 3]
    if align == "none":
        R, t, s = np.eye(3), np.zeros(3), 1.0
    else:
        R, t, s = umeyama_alignment(p, q, with_scale=align == "sim3")
    errors = np.linalg.norm(s * p @ R.T + t - q, axis=1)
    T = np.eye(4)
    T[:3, :3] = s * R
    T[:3, 3] = t
    return AteResult(
        **_stats(errors),
        errors=errors,
        stamps_ns=estimate.stamps_ns[idx_e].copy(),
        T_align=T,
        scale=float(s),
        num_pairs=int(n),
        align=align,
    )


def _pairs_by_frames(n: int, delta: int, all_pairs: bool) -> np.ndarray:
    if all_pairs:
        i = np.arange(0, n - delta)
        return np.stack((i, i + delta), axis=1)
    ids = np.arange(0, n, delta)
    return np.stack((ids[:-1], ids[1:]), axis=1)


def _pairs_by_path(positions: np.ndarray, delta: float, tol: float, all_pairs: bool) -> np.ndarray:
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    if all_pairs:
        dist = np.concatenate(([0.0], np.cumsum(steps)))
        out = []
        for i in range(dist.size - 1):
            ahead = dist[i + 1 :] - dist[i]
            k = int(np.argmin(np.abs(ahead - delta)))
            if abs(ahead[k] - delta) <= tol:
                out.append((i, i + 1 + k))
        return np.asarray(out, dtype=np.int64).reshape(-1, 2)
    # evo's filter_pairs_by_path: accumulate, mark a pose when the path reaches delta, reset to 0.
    ids = []
    path = 0.0
    for i, step in enumerate(steps.tolist(), start=1):
        path += step
        if path >= delta:
            ids.append(i)
            path = 0.0
    ids_a = np.asarray(ids, dtype=np.int64)
    return np.stack((ids_a[:-1], ids_a[1:]), axis=1) if ids_a.size > 1 else np.zeros((0, 2), dtype=np.int64)


def relative_pose_error(
    estimate: Trajectory,
    reference: Trajectory,
    delta: float = 1.0,
    delta_unit: str = "frames",
    all_pairs: bool = False,
    max_dt_ns: int = DEFAULT_MAX_DT_NS,
    rel_delta_tol: float = 0.1,
    pairs_on: str = "estimate",
) -> RpeResult:
    """RPE over pose pairs ``delta`` frames or metres apart (see the module doc for the pair choice)."""
    if delta_unit not in ("frames", "m"):
        raise ValueError(f"delta_unit must be 'frames' or 'm', got {delta_unit!r}")
    if pairs_on not in ("estimate", "reference"):
        raise ValueError(f"pairs_on must be 'estimate' or 'reference', got {pairs_on!r}")
    if not delta > 0:
        raise ValueError(f"delta must be positive, got {delta}")
    idx_e, idx_r = _associated(estimate, reference, max_dt_ns)
    P = estimate.poses[idx_e]
    Q = reference.poses[idx_r]
    n = idx_e.size
    if delta_unit == "frames":
        if int(delta) != delta:
            raise ValueError(f"delta in frames must be an integer, got {delta}")
        pairs = _pairs_by_frames(n, int(delta), all_pairs) if n else np.zeros((0, 2), dtype=np.int64)
    else:
        chooser = P if pairs_on == "estimate" else Q
        pairs = _pairs_by_path(chooser[:, :3, 3], float(delta), rel_delta_tol * float(delta), all_pairs)
    if pairs.shape[0] == 0:
        raise ValueError(
            f"RPE: no pose pairs {delta} {delta_unit} apart among {n} associated poses "
            f"({pairs_on} path {(estimate if pairs_on == 'estimate' else reference).path_length:.3f} m)"
        )
    i, j = pairs[:, 0], pairs[:, 1]
    Q_rel = inverse_transform(Q[i]) @ Q[j]
    P_rel = inverse_transform(P[i]) @ P[j]
    E = inverse_transform(Q_rel) @ P_rel
    trans = np.linalg.norm(E[:, :3, 3], axis=1)
    cos = np.clip((np.trace(E[:, :3, :3], axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    rot = np.degrees(np.arccos(cos))
    steps = np.linalg.norm(np.diff(Q[:, :3, 3], axis=0), axis=1)
    dist = np.concatenate(([0.0], np.cumsum(steps)))
    seg = dist[j] - dist[i]
    with np.errstate(divide="ignore", invalid="ignore"):
        drifts = np.where(seg > 0.0, 100.0 * trans / seg, np.nan)
    valid = np.isfinite(drifts)
    rot_stats = _stats(rot)
    return RpeResult(
        **_stats(trans),
        rot_rmse_deg=rot_stats["rmse"],
        rot_mean_deg=rot_stats["mean"],
        rot_median_deg=rot_stats["median"],
        rot_max_deg=rot_stats["max"],
        drift_percent=float(np.mean(drifts[valid])) if valid.any() else float("nan"),
        errors=trans,
        rot_errors_deg=rot,
        segment_lengths=seg,
        drifts_percent=drifts,
        pairs=pairs.astype(np.int64),
        stamps_ns=estimate.stamps_ns[idx_e[i]].copy(),
        num_pairs=int(pairs.shape[0]),
        delta=float(delta),
        delta_unit=delta_unit,
    )
