"""Pieces of the BAL camera model shared by the residual kernel and the point refinement.

The model (see :mod:`mp_slam_ros.ba.problem`): P = R(w) X + t, p = -P[:2] / P[2],
d = 1 + k1 |p|^2 + k2 |p|^4, pixel = f d p.
"""

from __future__ import annotations

from ..solver.jit import jit


@jit(nogil=True, inline="always")
def pixel_by_camera_point(f, d, k1, k2, xp, yp, r2, iz):
    """B = d pixel / d P (2 x 3, row-major) at p = (xp, yp), r2 = |p|^2, iz = -1 / P[2].

    d pixel / d p = f (d I + g p p^T) with g = 2 (k1 + 2 k2 r2), and d p / d P = iz [[1, 0, xp],
    [0, 1, yp]]. B is also d pixel / d t; d pixel / d X = B R.
    """
    g = 2.0 * (k1 + 2.0 * k2 * r2)
    a00 = f * (d + g * xp * xp)
    a01 = f * g * xp * yp
    a11 = f * (d + g * yp * yp)
    return (
        iz * a00,
        iz * a01,
        iz * (a00 * xp + a01 * yp),
        iz * a01,
        iz * a11,
        iz * (a01 * xp + a11 * yp),
    )
