"""Bundle-adjustment problems for the shared LM driver (:func:`mp_slam_ros.solver.lm.solve`).

Two problems, one block per observation (2 residual rows, slots (camera, point)):

* :class:`BalBundleAdjustmentProblem` — the BAL camera model exactly as Ceres'
  ``simple_bundle_adjuster`` (``SnavelyReprojectionError``) and GTSAM's
  ``GeneralSFMFactorCal3Bundler`` on a file read by ``readBal``::

      P = R(w) X + t,   p = -P[:2] / P[2],   d = 1 + k1 |p|^2 + k2 |p|^4,   r = f d p - observed

  All 9 camera parameters (w, t, f, k1, k2) and the 3 point coordinates are optimised. The
  retraction adds the step to every parameter, the Rodrigues vector included (as Ceres does
  without a manifold), so the rotation block of the Jacobian is the derivative with respect to
  the Rodrigues vector itself: d(R(w) X)/dw = -R(w) [X]x Jr(w), Jr the SO(3) right Jacobian.
  The gauge (7 DoF) is left free, as in Ceres and GTSAM; LM damping handles it.

* :class:`ReprojectionProblem` — a visual-odometry window: SE(3) poses world_T_camera (R, t),
  calibrated pinhole intrinsics (fx, fy, cx, cy), 3D points, pixel observations. Residual
  r = (fx x/z + cx, fy y/z + cy) - observed with (x, y, z) = R^T (X - t). Poses move by the
  right retraction T Exp(w, v) of :mod:`mp_slam_ros.solver.lie`; the poses in ``fixed_poses``
  hold the gauge. Points seen fewer than twice are left out (counted in ``num_excluded_points``).

Residuals and Jacobians of all observations come from one numba kernel per problem (no Python
per observation); they are evaluated in fp64 and rounded to the requested dtype. The Jacobian
values are laid out (n_obs, 2, cdim) C-contiguous with cdim = 9 + 3 or 6 + 3, so each
observation's block is contiguous, which is what the driver's block kernels read.

**Robust losses** (``loss`` = "trivial" | "huber" | "cauchy", ``loss_scale`` = a, b = a^2,
Ceres' definitions), on s = |r|^2: Huber rho(s) = s for s <= b and 2 a sqrt(s) - b beyond;
Cauchy rho(s) = b log(1 + s/b). They are applied as Ceres' ``Corrector`` does: for both losses
rho'' <= 0 everywhere, where Ceres skips the Triggs rank-1 term (alpha = 0) and scales residual
and Jacobian by sqrt(rho'): r~ = sqrt(rho') r, J~ = sqrt(rho') J. So the gradient J~^T r~ =
rho' J^T r is exact and the Gauss-Newton matrix is Ceres' rho' J^T J. Ceres evaluates the cost
from rho separately; the driver takes the cost as 0.5 |residuals|^2, so a robust problem
appends one **cost-completion block**: residual (c, 0) with c^2 = sum (rho - rho' s) >= 0
(rho is concave with rho(0) = 0) and an all-zero Jacobian whose slots are fixed (col_start -1).
It adds nothing to the gradient, to J^T J or to the model decrease, and makes
0.5 |residuals|^2 = 0.5 sum rho(|r|^2) exactly. With the trivial loss there is no such block.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ..io.bal import BalProblem
from ..solver import lie
from ..solver.jacobian import BlockJacobian
from ..solver.jit import jit
from ..solver.kernels import dot64
from ..solver.lm import SolverOptions, SolverSummary, solve
from ..solver.loss import LOSSES, loss_parameters
from ..solver.precision import PrecisionConfig
from .bal_model import pixel_by_camera_point
from .points import refine_bal_points

__all__ = [
    "LOSSES",
    "BalBundleAdjustmentProblem",
    "BalState",
    "ReprojectionProblem",
    "WindowState",
    "optimize_bal",
]

log = logging.getLogger(__name__)

CAMERA_DIM = 9  # rx ry rz tx ty tz f k1 k2
POSE_DIM = 6  # (w, v) as mp_slam_ros.solver.lie
POINT_DIM = 3


class BalState(NamedTuple):
    cameras: np.ndarray  # (num_cameras, 9) fp64
    points: np.ndarray  # (num_points, 3) fp64


class WindowState(NamedTuple):
    rotations: np.ndarray  # (num_poses, 3, 3) fp64, world_T_camera
    translations: np.ndarray  # (num_poses, 3) fp64
    points: np.ndarray  # (num_points, 3) fp64


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------
# sin(t)/t, (1 - cos t)/t^2, (t - sin t)/t^3 at t^2, with series near zero: shared with the Lie-group module.
_rodrigues_coefs = lie.so3_coefficients

# Cheirality: a point at its camera's centre has no projection (a division by its depth, zero
# there), and one at a depth below MIN_DEPTH_RATIO * max(1, |x|, |y|) (scene units) has a useless
# one (a ray 1e8 times wider than deep, overflowing Jacobians). The pinhole (VO window) kernel also
# rejects points behind the camera; the BAL kernel evaluates them, as Ceres does. Such an
# observation is invalid, as in GTSAM's GenericProjectionFactor without throwCheirality: a constant residual of
# twice the focal length per coordinate and a zero Jacobian. The constant keeps the cost from
# rewarding a step that pushes a point behind a camera (a zero residual would); the kernels
# return how many they saw (SolverSummary.invalid_observations).
MIN_DEPTH_RATIO = 1e-8


@jit(nogil=True, inline="always")
def _robustify(res, jac, deficit, i, cdim, kind, b, want_jac):
    """Ceres' corrector for a loss with rho'' <= 0: r, J *= sqrt(rho'); deficit[i] = rho - rho' s."""
    r0 = res[i, 0]
    r1 = res[i, 1]
    s = r0 * r0 + r1 * r1
    deficit[i] = 0.0
    if kind == 0:
        return
    if kind == 1:
        if s <= b:
            return
        a = math.sqrt(b)
        sr = math.sqrt(s)
        rho = 2.0 * a * sr - b
        rho1 = a / sr
    else:
        rho = b * math.log1p(s / b)
        rho1 = 1.0 / (1.0 + s / b)
    scale = math.sqrt(rho1)
    res[i, 0] = r0 * scale
    res[i, 1] = r1 * scale
    deficit[i] = max(0.0, rho - rho1 * s)
    if want_jac:
        for j in range(cdim):
            jac[i, 0, j] *= scale
            jac[i, 1, j] *= scale


@jit(nogil=True, inline="always")
def _invalid_observation(res, jac, deficit, i, cdim, rx, ry, kind, b, want_jac):
    """An observation at (or, for pinhole cameras, behind) the camera centre: a constant residual
    (``rx``, ``ry``: twice the focal length, a reprojection off the image) and no Jacobian, so it
    neither moves the solution nor divides by a zero depth; the kernels count it."""
    res[i, 0] = rx
    res[i, 1] = ry
    if want_jac:
        for j in range(cdim):
            jac[i, 0, j] = 0.0
            jac[i, 1, j] = 0.0
    _robustify(res, jac, deficit, i, cdim, kind, b, want_jac)


@jit(nogil=True)
def _bal_kernel(cameras, points, cam_idx, pt_idx, obs, loss_kind, loss_b, want_jac, res, jac, deficit, min_ratio):
    """Residuals (n, 2) and, if want_jac, Jacobian blocks (n, 2, 12): [d/dcamera (9) | d/dpoint (3)].

    Only the first n = len(cam_idx) rows of `res`/`jac` are written; deficit (n,) gets rho - rho' s.
    Returns the number of invalid observations (point at or behind the camera, see MIN_DEPTH_RATIO).
    """
    invalid = 0
    for i in range(cam_idx.shape[0]):
        c = cam_idx[i]
        p = pt_idx[i]
        wx = cameras[c, 0]
        wy = cameras[c, 1]
        wz = cameras[c, 2]
        f = cameras[c, 6]
        k1 = cameras[c, 7]
        k2 = cameras[c, 8]
        X0 = points[p, 0]
        X1 = points[p, 1]
        X2 = points[p, 2]
        th2 = wx * wx + wy * wy + wz * wz
        a, b, cc = _rodrigues_coefs(th2)
        # R = I + a W + b W^2, W = [w]x, W^2 = w w^T - th2 I
        R00 = 1.0 + b * (wx * wx - th2)
        R01 = -a * wz + b * wx * wy
        R02 = a * wy + b * wx * wz
        R10 = a * wz + b * wx * wy
        R11 = 1.0 + b * (wy * wy - th2)
        R12 = -a * wx + b * wy * wz
        R20 = -a * wy + b * wx * wz
        R21 = a * wx + b * wy * wz
        R22 = 1.0 + b * (wz * wz - th2)
        P0 = R00 * X0 + R01 * X1 + R02 * X2 + cameras[c, 3]
        P1 = R10 * X0 + R11 * X1 + R12 * X2 + cameras[c, 4]
        P2 = R20 * X0 + R21 * X1 + R22 * X2 + cameras[c, 5]
        # Only |P2| ~ 0 is invalid here: real BAL files (e.g. Ladybug) hold points behind their
        # cameras (P2 > 0, the cameras look down -z), which Ceres evaluates like any other, and
        # their published initial costs include them. `not >` also catches a NaN depth.
        if not (abs(P2) > min_ratio * max(1.0, abs(P0), abs(P1))):
            invalid += 1
            _invalid_observation(res, jac, deficit, i, 12, 2.0 * abs(f), 2.0 * abs(f), loss_kind, loss_b, want_jac)
            continue
        iz = -1.0 / P2
        xp = P0 * iz
        yp = P1 * iz
        r2 = xp * xp + yp * yp
        d = 1.0 + r2 * (k1 + k2 * r2)
        fd = f * d
        res[i, 0] = fd * xp - obs[i, 0]
        res[i, 1] = fd * yp - obs[i, 1]
        if want_jac:
            # B = d pred / d P (2 x 3): also d pred / d t
            B00, B01, B02, B10, B11, B12 = pixel_by_camera_point(f, d, k1, k2, xp, yp, r2, iz)
            # d pred / d X = B R
            D00 = B00 * R00 + B01 * R10 + B02 * R20
            D01 = B00 * R01 + B01 * R11 + B02 * R21
            D02 = B00 * R02 + B01 * R12 + B02 * R22
            D10 = B10 * R00 + B11 * R10 + B12 * R20
            D11 = B10 * R01 + B11 * R11 + B12 * R21
            D12 = B10 * R02 + B11 * R12 + B12 * R22
            # Jr(w) = I - b W + cc W^2
            J00 = 1.0 + cc * (wx * wx - th2)
            J01 = b * wz + cc * wx * wy
            J02 = -b * wy + cc * wx * wz
            J10 = -b * wz + cc * wx * wy
            J11 = 1.0 + cc * (wy * wy - th2)
            J12 = b * wx + cc * wy * wz
            J20 = b * wy + cc * wx * wz
            J21 = -b * wx + cc * wy * wz
            J22 = 1.0 + cc * (wz * wz - th2)
            # d pred / d w = -(B R) [X]x Jr; row r of -(B R)[X]x is X x (row r of B R)
            v0 = X1 * D02 - X2 * D01
            v1 = X2 * D00 - X0 * D02
            v2 = X0 * D01 - X1 * D00
            jac[i, 0, 0] = v0 * J00 + v1 * J10 + v2 * J20
            jac[i, 0, 1] = v0 * J01 + v1 * J11 + v2 * J21
            jac[i, 0, 2] = v0 * J02 + v1 * J12 + v2 * J22
            v0 = X1 * D12 - X2 * D11
            v1 = X2 * D10 - X0 * D12
            v2 = X0 * D11 - X1 * D10
            jac[i, 1, 0] = v0 * J00 + v1 * J10 + v2 * J20
            jac[i, 1, 1] = v0 * J01 + v1 * J11 + v2 * J21
            jac[i, 1, 2] = v0 * J02 + v1 * J12 + v2 * J22
            jac[i, 0, 3] = B00
            jac[i, 0, 4] = B01
            jac[i, 0, 5] = B02
            jac[i, 1, 3] = B10
            jac[i, 1, 4] = B11
            jac[i, 1, 5] = B12
            jac[i, 0, 6] = d * xp
            jac[i, 1, 6] = d * yp
            jac[i, 0, 7] = f * r2 * xp
            jac[i, 1, 7] = f * r2 * yp
            jac[i, 0, 8] = f * r2 * r2 * xp
            jac[i, 1, 8] = f * r2 * r2 * yp
            jac[i, 0, 9] = D00
            jac[i, 0, 10] = D01
            jac[i, 0, 11] = D02
            jac[i, 1, 9] = D10
            jac[i, 1, 10] = D11
            jac[i, 1, 11] = D12
        _robustify(res, jac, deficit, i, 12, loss_kind, loss_b, want_jac)
    return invalid


@jit(nogil=True)
def _pinhole_kernel(
    R, t, points, pose_idx, pt_idx, obs, offsets, fx, fy, cx, cy, loss_kind, loss_b, want_jac, res, jac, deficit,
    min_ratio,
):
    """Residuals (n, 2) and, if want_jac, Jacobian blocks (n, 2, 9): [d/d(w, v) (6) | d/dpoint (3)].

    ``offsets[i]`` shifts observation i's camera along the pose's x axis (a rectified stereo right
    camera: +baseline); the pose perturbation still acts on the pose's own frame, so only the
    projection uses the shifted x. Only the first n = len(pose_idx) rows of `res`/`jac` are
    written; deficit (n,) gets rho - rho' s. Returns the number of invalid observations (point at
    or behind the camera, see MIN_DEPTH_RATIO).
    """
    invalid = 0
    for i in range(pose_idx.shape[0]):
        k = pose_idx[i]
        p = pt_idx[i]
        d0 = points[p, 0] - t[k, 0]
        d1 = points[p, 1] - t[k, 1]
        d2 = points[p, 2] - t[k, 2]
        # camera-frame point R^T (X - t)
        x = R[k, 0, 0] * d0 + R[k, 1, 0] * d1 + R[k, 2, 0] * d2
        y = R[k, 0, 1] * d0 + R[k, 1, 1] * d1 + R[k, 2, 1] * d2
        z = R[k, 0, 2] * d0 + R[k, 1, 2] * d1 + R[k, 2, 2] * d2
        xs = x - offsets[i]
        if not (z > min_ratio * max(1.0, abs(xs), abs(y))):
            invalid += 1
            _invalid_observation(res, jac, deficit, i, 9, 2.0 * fx, 2.0 * fy, loss_kind, loss_b, want_jac)
            continue
        iz = 1.0 / z
        res[i, 0] = fx * xs * iz + cx - obs[i, 0]
        res[i, 1] = fy * y * iz + cy - obs[i, 1]
        if want_jac:
            B00 = fx * iz
            B02 = -fx * xs * iz * iz
            B11 = fy * iz
            B12 = -fy * y * iz * iz
            # right perturbation T Exp(w, v): d(x, y, z) = [Pc]x dw - dv; row r of B [Pc]x is B_r x Pc
            jac[i, 0, 0] = -B02 * y
            jac[i, 0, 1] = B02 * x - B00 * z
            jac[i, 0, 2] = B00 * y
            jac[i, 1, 0] = B11 * z - B12 * y
            jac[i, 1, 1] = B12 * x
            jac[i, 1, 2] = -B11 * x
            jac[i, 0, 3] = -B00
            jac[i, 0, 4] = 0.0
            jac[i, 0, 5] = -B02
            jac[i, 1, 3] = 0.0
            jac[i, 1, 4] = -B11
            jac[i, 1, 5] = -B12
            # d / dX = B R^T
            for j in range(3):
                jac[i, 0, 6 + j] = B00 * R[k, j, 0] + B02 * R[k, j, 2]
                jac[i, 1, 6 + j] = B11 * R[k, j, 1] + B12 * R[k, j, 2]
        _robustify(res, jac, deficit, i, 9, loss_kind, loss_b, want_jac)
    return invalid


# ---------------------------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------------------------
def _f64(a: np.ndarray, shape_tail: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.ascontiguousarray(a, dtype=np.float64)
    if arr.ndim != len(shape_tail) + 1 or arr.shape[1:] != shape_tail:
        raise ValueError(f"{name} must have shape (n, {', '.join(map(str, shape_tail))}), got {arr.shape}")
    return arr


class _ObservationProblem:
    """Plumbing shared by both problems: one (2, cdim) block per observation, then, for a robust
    loss, the cost-completion block (module doc). Subclasses set `_slot_widths` and `_col_start`
    (observation rows only) and implement `_run_kernel`."""

    _slot_widths: tuple[int, int]
    _col_start: np.ndarray
    _loss_kind: int

    def _setup_loss(self, loss: str, loss_scale: float) -> None:
        self.loss = loss
        self.loss_scale = float(loss_scale)
        self._loss_kind, self._loss_b = loss_parameters(loss, loss_scale)

    @property
    def num_observations(self) -> int:
        raise NotImplementedError

    @property
    def has_completion_block(self) -> bool:
        """Whether residuals end with the cost-completion block (c, 0) (robust losses only)."""
        return self._loss_kind != 0

    def _run_kernel(self, state, jacobian: bool, res: np.ndarray, jac: np.ndarray, deficit: np.ndarray) -> int:
        """Fill res/jac/deficit; return the number of invalid observations (module doc)."""
        raise NotImplementedError

    def count_invalid_observations(self, state) -> int:
        """Observations whose point is at or behind its camera at `state` (recorded by the solver)."""
        n = self.num_observations
        cdim = sum(self._slot_widths)
        return int(self._run_kernel(state, False, np.empty((n, 2)), np.empty((0, 2, cdim)), np.empty(n)))

    def _evaluate_all(self, state, jacobian: bool) -> tuple[np.ndarray, np.ndarray]:
        n = self.num_observations
        extra = 1 if self.has_completion_block else 0
        cdim = sum(self._slot_widths)
        res = np.empty((n + extra, 2))
        jac = np.empty((n + extra, 2, cdim)) if jacobian else np.empty((0, 2, cdim))
        deficit = np.empty(n)
        self._run_kernel(state, jacobian, res, jac, deficit)
        if extra:
            res[n, 0] = math.sqrt(float(np.sum(deficit)))
            res[n, 1] = 0.0
            if jacobian:
                jac[n] = 0.0
        return res, jac

    def _all_col_start(self) -> np.ndarray:
        if not self.has_completion_block:
            return self._col_start
        return np.concatenate([self._col_start, np.full((1, 2), -1, dtype=np.int64)])

    # -- LeastSquaresProblem protocol (num_parameters, block_size, retract in the subclasses) ---
    @property
    def block_size(self) -> int:
        return POINT_DIM

    @property
    def num_parameters(self) -> int:
        raise NotImplementedError

    def evaluate(self, state, jacobian: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """fp64 residuals (n_obs, 2) and Jacobian blocks (n_obs, 2, cdim) of the observations, after
        the loss's sqrt(rho') scaling (None without `jacobian`); no cost-completion block."""
        res, jac = self._evaluate_all(state, jacobian)
        n = self.num_observations
        return res[:n], (jac[:n] if jacobian else None)

    def residuals(self, state, dtype: np.dtype) -> np.ndarray:
        res, _ = self._evaluate_all(state, False)
        return res.reshape(-1).astype(dtype, copy=False)

    def linearize(self, state, dtype: np.dtype) -> tuple[np.ndarray, BlockJacobian]:
        res, values = self._evaluate_all(state, True)
        jac = BlockJacobian(
            values.astype(dtype, copy=False), self._all_col_start(), self._slot_widths, self.num_parameters
        )
        return res.reshape(-1).astype(dtype, copy=False), jac

    def cost(self, state) -> float:
        """0.5 sum rho(|r|^2) in fp64 (0.5 sum |r|^2 for the trivial loss)."""
        r = self.residuals(state, np.dtype(np.float64))
        return 0.5 * dot64(r, r)


class BalBundleAdjustmentProblem(_ObservationProblem):
    """A :class:`~mp_slam_ros.io.bal.BalProblem` as a least-squares problem (module doc).

    Tangent vector: the 9 parameters of every camera (in file order), then the 3 coordinates of
    every point. ``block_size`` is 3 (both 9 and 3 are multiples of it).
    """

    _slot_widths = (CAMERA_DIM, POINT_DIM)

    def __init__(self, bal: BalProblem, loss: str = "trivial", loss_scale: float = 1.0) -> None:
        self.bal = bal
        self._setup_loss(loss, loss_scale)
        nc = bal.num_cameras
        self._col_start = np.stack(
            [bal.camera_index * CAMERA_DIM, CAMERA_DIM * nc + bal.point_index * POINT_DIM], axis=1
        ).astype(np.int64)

    @property
    def num_observations(self) -> int:
        return self.bal.num_observations

    @property
    def num_parameters(self) -> int:
        return CAMERA_DIM * self.bal.num_cameras + POINT_DIM * self.bal.num_points

    def initial_state(self) -> BalState:
        return BalState(self.bal.cameras.copy(), self.bal.points.copy())

    def _run_kernel(self, state: BalState, jacobian: bool, res, jac, deficit) -> int:
        cameras = _f64(state.cameras, (CAMERA_DIM,), "cameras")
        points = _f64(state.points, (POINT_DIM,), "points")
        if cameras.shape[0] != self.bal.num_cameras or points.shape[0] != self.bal.num_points:
            raise ValueError(
                f"state has {cameras.shape[0]} cameras and {points.shape[0]} points, the problem "
                f"{self.bal.num_cameras} and {self.bal.num_points}"
            )
        return _bal_kernel(
            cameras, points, self.bal.camera_index, self.bal.point_index, self.bal.observations,
            self._loss_kind, self._loss_b, jacobian, res, jac, deficit, MIN_DEPTH_RATIO,
        )  # fmt: skip

    def retract(self, state: BalState, delta: np.ndarray) -> BalState:
        """Plain addition on every parameter (the Rodrigues vector included, as Ceres without a manifold)."""
        delta = np.asarray(delta, dtype=np.float64)
        split = CAMERA_DIM * self.bal.num_cameras
        return BalState(
            state.cameras + delta[:split].reshape(-1, CAMERA_DIM),
            state.points + delta[split:].reshape(-1, POINT_DIM),
        )

    def to_bal(self, state: BalState) -> BalProblem:
        return self.bal.with_parameters(state.cameras, state.points)

    def inner_iteration(self, state: BalState) -> tuple[BalState, int]:
        """Every point moved to its best position for the current cameras (see :mod:`.points`);
        returns the new state and how many points moved. The cost never rises."""
        points, moved = refine_bal_points(
            state.cameras, state.points, self.bal.camera_index, self.bal.point_index, self.bal.observations,
            self._loss_kind, self._loss_b, MIN_DEPTH_RATIO,
        )  # fmt: skip
        return BalState(state.cameras, points), moved


class ReprojectionProblem(_ObservationProblem):
    """Pinhole reprojection errors of a VO window (module doc).

    Args:
        pose_index, point_index, observations: observation k is pixel ``observations[k]`` (u, v)
            of point ``point_index[k]`` in camera ``pose_index[k]``.
        intrinsics: (fx, fy, cx, cy) of the (undistorted) pinhole camera.
        num_poses, num_points: sizes of the state the problem is solved on.
        fixed_poses: pose indices held constant (the gauge); default ``(0,)``, the oldest pose.
            A monocular window also has a free scale: fix two poses (or add another constraint)
            when the scale must be determined.
        loss, loss_scale: robust loss on the squared pixel error (module doc).
        camera_offsets: optional (n,) shift of observation k's camera along its pose's x axis, in
            metres: a rectified stereo pair's right-image observation has ``+baseline`` (the pose
            is the left camera's), a left-image one 0. Default: all 0 (monocular).

    Tangent vector: (w, v) of every free pose in index order, then the 3 coordinates of every
    included point. Points observed fewer than twice are excluded: neither their observations
    nor their coordinates enter the problem (``num_excluded_points``,
    ``num_excluded_observations``), and ``retract`` leaves them unchanged.
    """

    _slot_widths = (POSE_DIM, POINT_DIM)

    def __init__(
        self,
        pose_index: np.ndarray,
        point_index: np.ndarray,
        observations: np.ndarray,
        intrinsics: Sequence[float],
        num_poses: int,
        num_points: int,
        fixed_poses: Sequence[int] | None = None,
        loss: str = "trivial",
        loss_scale: float = 1.0,
        camera_offsets: np.ndarray | None = None,
    ) -> None:
        pose_index = np.ascontiguousarray(pose_index, dtype=np.int64).reshape(-1)
        point_index = np.ascontiguousarray(point_index, dtype=np.int64).reshape(-1)
        observations = _f64(observations, (2,), "observations")
        n = pose_index.shape[0]
        if point_index.shape[0] != n or observations.shape[0] != n:
            raise ValueError("pose_index, point_index and observations must have the same length")
        if camera_offsets is None:
            offsets = np.zeros(n)
        else:
            offsets = np.ascontiguousarray(camera_offsets, dtype=np.float64).reshape(-1)
            if offsets.shape[0] != n or not np.all(np.isfinite(offsets)):
                raise ValueError(f"camera_offsets must be {n} finite values, one per observation")
        for name, idx, size in (("pose_index", pose_index, num_poses), ("point_index", point_index, num_points)):
            if n and (idx.min() < 0 or idx.max() >= size):
                raise ValueError(f"{name} must lie in [0, {size})")
        intr = tuple(float(v) for v in intrinsics)
        if len(intr) != 4 or not all(map(math.isfinite, intr)) or intr[0] <= 0 or intr[1] <= 0:
            raise ValueError(f"intrinsics must be finite (fx, fy, cx, cy) with fx, fy > 0, got {intrinsics}")
        self.intrinsics = intr
        self.num_poses = int(num_poses)
        self.num_points = int(num_points)
        self._setup_loss(loss, loss_scale)

        fixed = np.zeros(self.num_poses, dtype=bool)
        chosen = (0,) if fixed_poses is None else tuple(int(k) for k in fixed_poses)
        for k in chosen:
            if not 0 <= k < self.num_poses:
                raise ValueError(f"fixed pose {k} is not in [0, {self.num_poses})")
        if self.num_poses:
            fixed[list(chosen)] = True
        self.fixed_poses = fixed
        self.free_poses = np.nonzero(~fixed)[0]

        seen = np.bincount(point_index, minlength=self.num_points)
        self.point_included = seen >= 2
        self.num_excluded_points = int(np.count_nonzero(~self.point_included))
        keep = self.point_included[point_index]
        self.num_excluded_observations = int(np.count_nonzero(~keep))
        if self.num_excluded_points:
            # DEBUG, not INFO: a live window excludes some points at every keyframe.
            log.debug(
                "%d point(s) observed fewer than twice excluded (%d observation(s))",
                self.num_excluded_points,
                self.num_excluded_observations,
            )
        self.pose_index = pose_index[keep]
        self.point_index = point_index[keep]
        self.observations = np.ascontiguousarray(observations[keep])
        self.camera_offsets = np.ascontiguousarray(offsets[keep])
        self.included_points = np.nonzero(self.point_included)[0]

        var_of_pose = np.full(self.num_poses, -1, dtype=np.int64)
        var_of_pose[self.free_poses] = np.arange(self.free_poses.size)
        var_of_point = np.full(self.num_points, -1, dtype=np.int64)
        var_of_point[self.included_points] = np.arange(self.included_points.size)
        vp = var_of_pose[self.pose_index]
        self._point_offset = POSE_DIM * self.free_poses.size
        self._col_start = np.stack(
            [np.where(vp >= 0, vp * POSE_DIM, -1), self._point_offset + var_of_point[self.point_index] * POINT_DIM],
            axis=1,
        ).astype(np.int64)

    @property
    def num_observations(self) -> int:
        """Observations in the problem (those of excluded points not counted)."""
        return int(self.pose_index.shape[0])

    @property
    def num_parameters(self) -> int:
        return self._point_offset + POINT_DIM * self.included_points.size

    def _run_kernel(self, state: WindowState, jacobian: bool, res, jac, deficit) -> int:
        R = np.ascontiguousarray(state.rotations, dtype=np.float64)
        t = _f64(state.translations, (3,), "translations")
        points = _f64(state.points, (POINT_DIM,), "points")
        if R.shape != (self.num_poses, 3, 3) or t.shape[0] != self.num_poses or points.shape[0] != self.num_points:
            raise ValueError(
                f"state must hold {self.num_poses} poses and {self.num_points} points, got rotations "
                f"{R.shape}, translations {t.shape}, points {points.shape}"
            )
        fx, fy, cx, cy = self.intrinsics
        return _pinhole_kernel(
            R, t, points, self.pose_index, self.point_index, self.observations, self.camera_offsets, fx, fy, cx, cy,
            self._loss_kind, self._loss_b, jacobian, res, jac, deficit, MIN_DEPTH_RATIO,
        )  # fmt: skip

    def retract(self, state: WindowState, delta: np.ndarray) -> WindowState:
        """Free poses T Exp(w, v) (right perturbation, lie.retract); included points X + dX."""
        delta = np.asarray(delta, dtype=np.float64)
        rot = np.array(state.rotations, dtype=np.float64, copy=True)
        trans = np.array(state.translations, dtype=np.float64, copy=True)
        points = np.array(state.points, dtype=np.float64, copy=True)
        if self.free_poses.size:
            r_new, t_new = lie.retract(
                rot[self.free_poses], trans[self.free_poses], delta[: self._point_offset].reshape(-1, POSE_DIM)
            )
            rot[self.free_poses] = r_new
            trans[self.free_poses] = t_new
        points[self.included_points] += delta[self._point_offset :].reshape(-1, POINT_DIM)
        return WindowState(rot, trans, points)


def optimize_bal(
    bal: BalProblem,
    precision: PrecisionConfig | str = "mixed",
    options: SolverOptions | None = None,
    *,
    loss: str = "trivial",
    loss_scale: float = 1.0,
) -> tuple[BalProblem, SolverSummary]:
    """Bundle-adjust a BAL problem. Returns the problem with optimised cameras/points and the summary.

    `precision` is a :class:`PrecisionConfig` or a preset name (fp64, fp32, mixed, fp16).
    Without `options` the solver is LM with ``linear_solver="cgnr"`` (CG on the normal
    equations with column scaling) and otherwise default :class:`SolverOptions`.
    """
    if isinstance(precision, str):
        from ..solver.precision import load_precision

        precision = load_precision(precision)
    problem = BalBundleAdjustmentProblem(bal, loss=loss, loss_scale=loss_scale)
    state, summary = solve(problem, problem.initial_state(), options or SolverOptions(linear_solver="cgnr"), precision)
    return problem.to_bal(state), summary
