"""Point refinement between LM steps ("inner iterations") for BAL problems.

With the cameras held fixed, the points of a bundle-adjustment problem are independent: each
point's cost is the sum over its own observations. So a point can be moved on its own, and any
move that lowers its cost lowers the total by exactly as much. Ceres calls such block-wise
minimisation between LM steps *inner iterations* (``Solver::Options::use_inner_iterations``).

Far from the solution this matters most. A point triangulated from one stereo pair with a wrong
disparity can sit a few metres from a later camera and reproject thousands of pixels off. The
joint LM step cannot fix it: the projection is so non-linear there that the step's model fails,
and the damping grows for the whole problem. Given the current cameras, the point's best
position is a small problem of its own. It is a linear triangulation from all its observations
(undistorted through the camera's k1, k2), polished by a few damped Gauss-Newton steps. A linear
triangulation needs no starting point, so it also frees points stuck behind a camera or beyond
the singular plane of one.

For every point, :func:`refine_bal_points` keeps the best of three: the point as it is, the point
after Gauss-Newton polishing, and the polished linear triangulation. The triangulation is only a
candidate when it lies in front of every camera that sees it. The costs are the problem's own:
the robust loss and the constant residual of an invalid observation, as in
:mod:`mp_slam_ros.ba.problem`. Everything runs in fp64, like the 6-DoF update.
"""

from __future__ import annotations

import math

import numpy as np

from ..solver import lie
from ..solver.jit import jit
from .bal_model import pixel_by_camera_point

__all__ = ["refine_bal_points"]

_rodrigues_coefs = lie.so3_coefficients

# Damped Gauss-Newton steps per candidate (each point is a 3-parameter problem): a triangulation
# needs a few to reach its reprojection minimum; the current point only a nudge, since the next
# joint LM step moves it too (more steps cost time on every pass and changed no result measured).
TRIANGULATED_GN_ITERATIONS = 4
CURRENT_GN_ITERATIONS = 2
UNDISTORT_ITERATIONS = 10  # fixed-point iterations p = q / d(|p|^2), enough for BAL's small k1, k2
MIN_RELATIVE_GAIN = 1e-12  # a candidate must beat the current point by more than this (relative)


@jit(nogil=True)
def _rotations(cameras):
    """R(w) of every camera (n, 3, 3), as the BAL kernel builds it."""
    n = cameras.shape[0]
    out = np.empty((n, 3, 3))
    for c in range(n):
        wx = cameras[c, 0]
        wy = cameras[c, 1]
        wz = cameras[c, 2]
        th2 = wx * wx + wy * wy + wz * wz
        a, b, _ = _rodrigues_coefs(th2)
        out[c, 0, 0] = 1.0 + b * (wx * wx - th2)
        out[c, 0, 1] = -a * wz + b * wx * wy
        out[c, 0, 2] = a * wy + b * wx * wz
        out[c, 1, 0] = a * wz + b * wx * wy
        out[c, 1, 1] = 1.0 + b * (wy * wy - th2)
        out[c, 1, 2] = -a * wx + b * wy * wz
        out[c, 2, 0] = -a * wy + b * wx * wz
        out[c, 2, 1] = a * wx + b * wy * wz
        out[c, 2, 2] = 1.0 + b * (wz * wz - th2)
    return out


@jit(nogil=True, inline="always")
def _rho(s, kind, b):
    """rho(s) and rho'(s) of the problem's loss (0 trivial, 1 Huber, 2 Cauchy; b = scale^2)."""
    if kind == 0:
        return s, 1.0
    if kind == 1:
        if s <= b:
            return s, 1.0
        a = math.sqrt(b)
        sr = math.sqrt(s)
        return 2.0 * a * sr - b, a / sr
    return b * math.log1p(s / b), 1.0 / (1.0 + s / b)


@jit(nogil=True)
def _point_cost(X, rows, cameras, rots, cam_idx, obs, kind, b, min_ratio, H, g):
    """0.5 sum rho over the point's observations at X; H, g get the IRLS normal equations
    (sum rho' D^T D, sum rho' D^T r with D = d pixel / d X). Invalid observations (at the camera
    centre) cost (2|f|)^2 per coordinate and have no gradient, as in the BAL kernel."""
    for i in range(3):
        g[i] = 0.0
        for j in range(3):
            H[i, j] = 0.0
    cost = 0.0
    for k in rows:
        c = cam_idx[k]
        R = rots[c]
        f = cameras[c, 6]
        k1 = cameras[c, 7]
        k2 = cameras[c, 8]
        P0 = R[0, 0] * X[0] + R[0, 1] * X[1] + R[0, 2] * X[2] + cameras[c, 3]
        P1 = R[1, 0] * X[0] + R[1, 1] * X[1] + R[1, 2] * X[2] + cameras[c, 4]
        P2 = R[2, 0] * X[0] + R[2, 1] * X[1] + R[2, 2] * X[2] + cameras[c, 5]
        if not (abs(P2) > min_ratio * max(1.0, abs(P0), abs(P1))):
            r = 2.0 * abs(f)
            cost += 0.5 * _rho(2.0 * r * r, kind, b)[0]
            continue
        iz = -1.0 / P2
        xp = P0 * iz
        yp = P1 * iz
        r2 = xp * xp + yp * yp
        d = 1.0 + r2 * (k1 + k2 * r2)
        r0 = f * d * xp - obs[k, 0]
        r1 = f * d * yp - obs[k, 1]
        s = r0 * r0 + r1 * r1
        rho, w = _rho(s, kind, b)
        cost += 0.5 * rho
        B00, B01, B02, B10, B11, B12 = pixel_by_camera_point(f, d, k1, k2, xp, yp, r2, iz)
        for i in range(3):
            Di0 = B00 * R[0, i] + B01 * R[1, i] + B02 * R[2, i]
            Di1 = B10 * R[0, i] + B11 * R[1, i] + B12 * R[2, i]
            g[i] += w * (Di0 * r0 + Di1 * r1)
            for j in range(i, 3):
                Dj0 = B00 * R[0, j] + B01 * R[1, j] + B02 * R[2, j]
                Dj1 = B10 * R[0, j] + B11 * R[1, j] + B12 * R[2, j]
                H[i, j] += w * (Di0 * Dj0 + Di1 * Dj1)
    for i in range(3):
        for j in range(i):
            H[i, j] = H[j, i]
    return cost


@jit(nogil=True, inline="always")
def _solve3(M, v, out):
    """out = M^-1 v for a symmetric 3x3 M by Cholesky; False if M is not safely positive definite."""
    scale = max(M[0, 0], M[1, 1], M[2, 2])
    if not (scale > 0.0) or not math.isfinite(scale):
        return False
    tiny = 1e-14 * scale
    l00 = M[0, 0]
    if not l00 > tiny:
        return False
    l00 = math.sqrt(l00)
    l10 = M[1, 0] / l00
    l20 = M[2, 0] / l00
    l11 = M[1, 1] - l10 * l10
    if not l11 > tiny:
        return False
    l11 = math.sqrt(l11)
    l21 = (M[2, 1] - l20 * l10) / l11
    l22 = M[2, 2] - l20 * l20 - l21 * l21
    if not l22 > tiny:
        return False
    l22 = math.sqrt(l22)
    y0 = v[0] / l00
    y1 = (v[1] - l10 * y0) / l11
    y2 = (v[2] - l20 * y0 - l21 * y1) / l22
    out[2] = y2 / l22
    out[1] = (y1 - l21 * out[2]) / l11
    out[0] = (y0 - l10 * out[1] - l20 * out[2]) / l00
    return True


@jit(nogil=True)
def _polish(X, rows, cameras, rots, cam_idx, obs, kind, b, min_ratio, work, iterations):
    """A few damped Gauss-Newton steps on one point from X (updated in place); returns its cost."""
    H, g, M, Ht = work[0], work[1, 0], work[2], work[3]
    step, trial, gt = work[1, 1], work[1, 2], work[4, 0]
    lam = 1e-6
    cost = _point_cost(X, rows, cameras, rots, cam_idx, obs, kind, b, min_ratio, H, g)
    for _ in range(iterations):
        for i in range(3):
            for j in range(3):
                M[i, j] = H[i, j]
            M[i, i] = H[i, i] * (1.0 + lam)
            g[i] = -g[i]
        if not _solve3(M, g, step):
            break
        for i in range(3):
            trial[i] = X[i] + step[i]
        new = _point_cost(trial, rows, cameras, rots, cam_idx, obs, kind, b, min_ratio, Ht, gt)
        if new < cost:
            done = cost - new <= 1e-12 * cost
            for i in range(3):
                X[i] = trial[i]
                g[i] = gt[i]
                for j in range(3):
                    H[i, j] = Ht[i, j]
            cost = new
            lam = max(lam / 10.0, 1e-12)
            if done:
                break
        else:
            for i in range(3):
                g[i] = -g[i]
            lam *= 10.0
            if lam > 1e8:
                break
    return cost


@jit(nogil=True)
def _triangulate(rows, cameras, rots, cam_idx, obs, out):
    """Linear triangulation of one point from all its observations (undistorted through each
    camera's k1, k2), reweighted once by 1/depth^2 so the algebraic error approximates the image
    error. False without a well-conditioned solution in front of every camera that sees it."""
    M = np.zeros((3, 3))
    v = np.zeros(3)
    n = 0
    for sweep in range(2):
        for i in range(3):
            v[i] = 0.0
            for j in range(3):
                M[i, j] = 0.0
        n = 0
        for k in rows:
            c = cam_idx[k]
            R = rots[c]
            f = cameras[c, 6]
            if f == 0.0:
                continue
            k1 = cameras[c, 7]
            k2 = cameras[c, 8]
            qx = obs[k, 0] / f
            qy = obs[k, 1] / f
            px = qx
            py = qy
            for _ in range(UNDISTORT_ITERATIONS):
                r2 = px * px + py * py
                d = 1.0 + r2 * (k1 + k2 * r2)
                if not d > 0.0:
                    break
                px = qx / d
                py = qy / d
            w = 1.0
            if sweep == 1:
                depth = R[2, 0] * out[0] + R[2, 1] * out[1] + R[2, 2] * out[2] + cameras[c, 5]
                w = 1.0 / max(depth * depth, 1e-12)
            # p = -P[:2] / P[2]  =>  P0 + px P2 = 0 and P1 + py P2 = 0, linear in X.
            for row in range(2):
                p = px if row == 0 else py
                a0 = R[row, 0] + p * R[2, 0]
                a1 = R[row, 1] + p * R[2, 1]
                a2 = R[row, 2] + p * R[2, 2]
                rhs = -(cameras[c, 3 + row] + p * cameras[c, 5])
                M[0, 0] += w * a0 * a0
                M[0, 1] += w * a0 * a1
                M[0, 2] += w * a0 * a2
                M[1, 1] += w * a1 * a1
                M[1, 2] += w * a1 * a2
                M[2, 2] += w * a2 * a2
                v[0] += w * a0 * rhs
                v[1] += w * a1 * rhs
                v[2] += w * a2 * rhs
            n += 1
        if n < 2:
            return False
        M[1, 0] = M[0, 1]
        M[2, 0] = M[0, 2]
        M[2, 1] = M[1, 2]
        if not _solve3(M, v, out):
            return False
    for k in rows:
        c = cam_idx[k]
        R = rots[c]
        depth = R[2, 0] * out[0] + R[2, 1] * out[1] + R[2, 2] * out[2] + cameras[c, 5]
        if not depth < 0.0:  # BAL cameras look down -z
            return False
    return True


@jit(nogil=True)
def _refine(cameras, points, cam_idx, obs, ptr, order, kind, b, min_ratio, out):
    rots = _rotations(cameras)
    work = np.empty((5, 3, 3))  # scratch of _polish: H, (g, step, trial), M, H trial, (g trial, -, -)
    H = np.empty((3, 3))
    g = np.empty(3)
    polished = np.empty(3)
    tri = np.empty(3)
    improved = 0
    for p in range(points.shape[0]):
        rows = order[ptr[p] : ptr[p + 1]]
        for i in range(3):
            out[p, i] = points[p, i]
            polished[i] = points[p, i]
        if rows.shape[0] == 0:
            continue
        current = _point_cost(polished, rows, cameras, rots, cam_idx, obs, kind, b, min_ratio, H, g)
        best = current
        c1 = _polish(polished, rows, cameras, rots, cam_idx, obs, kind, b, min_ratio, work, CURRENT_GN_ITERATIONS)
        if c1 < best:
            best = c1
            for i in range(3):
                out[p, i] = polished[i]
        if _triangulate(rows, cameras, rots, cam_idx, obs, tri):
            c2 = _polish(tri, rows, cameras, rots, cam_idx, obs, kind, b, min_ratio, work, TRIANGULATED_GN_ITERATIONS)
            if c2 < best:
                best = c2
                for i in range(3):
                    out[p, i] = tri[i]
        if best < current * (1.0 - MIN_RELATIVE_GAIN):
            improved += 1
        else:
            for i in range(3):
                out[p, i] = points[p, i]
    return improved


def refine_bal_points(
    cameras: np.ndarray,
    points: np.ndarray,
    camera_index: np.ndarray,
    point_index: np.ndarray,
    observations: np.ndarray,
    loss_kind: int,
    loss_b: float,
    min_depth_ratio: float,
) -> tuple[np.ndarray, int]:
    """Each point moved to the best of (as is, polished, triangulated and polished), cameras fixed.

    Returns the new points (fp64, a new array) and how many points moved. A point moves only when
    its own cost drops, so the total cost never rises.
    """
    n_points = points.shape[0]
    order = np.argsort(point_index, kind="stable").astype(np.int64)
    ptr = np.zeros(n_points + 1, dtype=np.int64)
    np.cumsum(np.bincount(point_index, minlength=n_points), out=ptr[1:])
    out = np.empty((n_points, 3))
    improved = _refine(
        np.ascontiguousarray(cameras, dtype=np.float64),
        np.ascontiguousarray(points, dtype=np.float64),
        camera_index.astype(np.int64, copy=False),
        np.ascontiguousarray(observations, dtype=np.float64),
        ptr,
        order,
        int(loss_kind),
        float(loss_b),
        float(min_depth_ratio),
        out,
    )
    return out, int(improved)
