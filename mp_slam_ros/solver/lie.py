"""Batched Lie-group operations on SO(3), SE(2) and SE(3), in float64.

Conventions are GTSAM's, because GTSAM is the reference we benchmark against and every Jacobian
has to agree with it term by term:

* SE(2) tangent ``xi = (vx, vy, theta)``; SE(3) tangent ``xi = (wx, wy, wz, vx, vy, vz)``
  (rotation first).
* A batch of poses is a pair ``(R, t)`` of C-contiguous float64 arrays, ``R`` of shape
  ``(n, d, d)`` and ``t`` of shape ``(n, d)`` with ``d`` = 2 or 3. Every function takes a leading
  batch dimension and ``n`` may be 0.
* ``Exp``/``Log`` are the true group exponential and logarithm (``t = V(w) v``), i.e.
  ``Pose2::Expmap``/``Logmap`` and ``Pose3::Expmap``/``Logmap``.
* Retraction is right-multiplicative, ``T (+) xi = T Exp(xi)``; the right Jacobian satisfies
  ``Exp(xi + d) ~ Exp(xi) Exp(Jr(xi) d)``; the adjoint satisfies ``T Exp(xi) T^-1 = Exp(Ad(T) xi)``.

The scalar coefficient functions of the closed forms (``sin(x)/x``, ``(x - sin x)/x^3``, ...)
cancel catastrophically near ``x = 0``, so below ``_SERIES_THETA2`` they are evaluated from
their Taylor series, truncated where the next term is below float64 resolution.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .jit import jit

__all__ = [
    "between",
    "between_error",
    "compose",
    "inverse",
    "inverse_transform",
    "project_to_rotation",
    "quaternion_to_rotation",
    "retract",
    "rotation_to_quaternion",
    "rotation_to_rpy",
    "rpy_to_rotation",
    "se2_adjoint",
    "se2_exp",
    "se2_log",
    "se2_right_jacobian",
    "se2_right_jacobian_inv",
    "se3_adjoint",
    "se3_exp",
    "se3_log",
    "se3_right_jacobian",
    "se3_right_jacobian_inv",
    "so3_exp",
    "so3_log",
]

F64 = NDArray[np.float64]

# ---------------------------------------------------------------------------------------------
# Coefficient functions of the closed forms
# ---------------------------------------------------------------------------------------------
# Below the cut-offs the coefficients come from their Taylor series in theta^2. With 12 terms the
# first omitted term is below 1e-18 relative at the cut-off (the cot series converges only like
# (theta / 2 pi)^2 and sets the count), and above it the closed forms lose less than 2e-15
# relative to cancellation. The Q coefficient cancels to fifth order, hence its later cut-off.
_SERIES_THETA2 = 1.0
_SERIES_THETA2_QC = 2.25
_N_TERMS = 12


def _series(term) -> tuple[float, ...]:
    return tuple(float(term(k)) for k in range(_N_TERMS))


def _fact(k: int) -> Fraction:
    return Fraction(math.factorial(k))


def _bernoulli_even(count: int) -> list[Fraction]:
    """B_2, B_4, ..., B_2count exactly (Akiyama-Tanigawa)."""
    a: list[Fraction] = []
    b: list[Fraction] = []
    for m in range(2 * count + 1):
        a.append(Fraction(1, m + 1))
        for j in range(m, 0, -1):
            a[j - 1] = j * (a[j - 1] - a[j])
        b.append(a[0])
    return b[2::2]


# sin(x)/x, (1 - cos x)/x^2, (x - sin x)/x^3
_SER_A = _series(lambda k: (-1) ** k / _fact(2 * k + 1))
_SER_B = _series(lambda k: (-1) ** k / _fact(2 * k + 2))
_SER_C = _series(lambda k: (-1) ** k / _fact(2 * k + 3))
# (x^2 + 2 cos x - 2)/(2 x^4) and (2x - 3 sin x + x cos x)/(2 x^5): the SE(3) Q-block coefficients
_SER_QB = _series(lambda k: (-1) ** k / _fact(2 * k + 4))
_SER_QC = _series(lambda k: (-1) ** k * Fraction(k + 1) / _fact(2 * k + 5))
# (1 - (x/2) cot(x/2))/x^2 = sum_{n>=1} (-1)^(n+1) B_2n x^(2n-2) / (2n)!
_BERNOULLI_2N = _bernoulli_even(_N_TERMS)
_SER_D = _series(lambda k: (-1) ** k * _BERNOULLI_2N[k] / _fact(2 * k + 2))

# Solver residuals are almost always below theta = 0.1, where 5 terms already reach 1e-18; the
# short series keep the common case off the 12-term dependency chains.
_SHORT_THETA2 = 0.01
_N_SHORT = 5
_SHORT_A, _SHORT_B, _SHORT_C, _SHORT_QB, _SHORT_QC, _SHORT_D = (
    c[:_N_SHORT] for c in (_SER_A, _SER_B, _SER_C, _SER_QB, _SER_QC, _SER_D)
)


@jit(nogil=True, inline="always")
def _poly(c, x):
    acc = c[len(c) - 1]
    for k in range(len(c) - 2, -1, -1):
        acc = acc * x + c[k]
    return acc


@jit(nogil=True)
def _coef_abc(theta2):
    """sin(x)/x, (1 - cos x)/x^2, (x - sin x)/x^3 at x^2 = theta2."""
    if theta2 < _SHORT_THETA2:
        return _poly(_SHORT_A, theta2), _poly(_SHORT_B, theta2), _poly(_SHORT_C, theta2)
    if theta2 < _SERIES_THETA2:
        return _poly(_SER_A, theta2), _poly(_SER_B, theta2), _poly(_SER_C, theta2)
    theta = math.sqrt(theta2)
    s = math.sin(theta)
    # 2 sin^2(x/2) rather than 1 - cos x: no cancellation for x just above the series cut-off.
    h = math.sin(0.5 * theta)
    return s / theta, 2.0 * h * h / theta2, (theta - s) / (theta2 * theta)


# Public name for other numba kernels (the BAL camera model's Rodrigues rotation uses it).
so3_coefficients = _coef_abc


@jit(nogil=True)
def _coef_d(theta2):
    """(1 - (x/2) cot(x/2))/x^2 at x^2 = theta2: the w^2 coefficient of the inverse SO(3) Jacobians."""
    if theta2 < _SHORT_THETA2:
        return _poly(_SHORT_D, theta2)
    if theta2 < _SERIES_THETA2:
        return _poly(_SER_D, theta2)
    theta = math.sqrt(theta2)
    half = 0.5 * theta
    # cot written as cos/sin of the half angle stays finite at theta = pi, unlike (1 + cos)/sin.
    return (1.0 - half * math.cos(half) / math.sin(half)) / theta2


@jit(nogil=True)
def _coef_q(theta2):
    """(x^2 + 2 cos x - 2)/(2 x^4) and (2x - 3 sin x + x cos x)/(2 x^5)."""
    if theta2 < _SHORT_THETA2:
        return _poly(_SHORT_QB, theta2), _poly(_SHORT_QC, theta2)
    if theta2 < _SERIES_THETA2:
        return _poly(_SER_QB, theta2), _poly(_SER_QC, theta2)
    theta = math.sqrt(theta2)
    h = math.sin(0.5 * theta)
    t4 = theta2 * theta2
    qb = (theta2 - 4.0 * h * h) / (2.0 * t4)
    if theta2 < _SERIES_THETA2_QC:
        return qb, _poly(_SER_QC, theta2)
    qc = (2.0 * theta - 3.0 * math.sin(theta) + theta * math.cos(theta)) / (2.0 * t4 * theta)
    return qb, qc


# ---------------------------------------------------------------------------------------------
# Per-element building blocks
# ---------------------------------------------------------------------------------------------
# These take whole arrays plus an index instead of per-element views (R[i], xi[:3]), the ones
# taking arrays are inlined at the IR level, and 3x3 intermediates are row-major 9-tuples rather
# than scratch arrays: in numba every view, and every array crossing a call, increfs/decrefs the
# parent's meminfo atomically, which made the kernels 3-5x slower; tuples stay in registers.
@jit(nogil=True, inline="always")
def _load3(R, i):
    """R[i] of a (n, 3, 3) array as a row-major 9-tuple."""
    return (
        R[i, 0, 0], R[i, 0, 1], R[i, 0, 2],
        R[i, 1, 0], R[i, 1, 1], R[i, 1, 2],
        R[i, 2, 0], R[i, 2, 1], R[i, 2, 2],
    )  # fmt: skip


@jit(nogil=True)
def _tr3_s(a):
    return (a[0], a[3], a[6], a[1], a[4], a[7], a[2], a[5], a[8])


@jit(nogil=True)
def _mv3_s(a, x, y, z):
    return a[0] * x + a[1] * y + a[2] * z, a[3] * x + a[4] * y + a[5] * z, a[6] * x + a[7] * y + a[8] * z


@jit(nogil=True)
def _so3_log_s(R):
    """Rotation vector of the row-major 9-tuple R."""
    # sin(theta) u from the antisymmetric part, cos(theta) from the trace; atan2 of the two keeps
    # theta accurate to an ulp everywhere, including near 0 and pi where acos/asin alone fail.
    wx = 0.5 * (R[7] - R[5])
    wy = 0.5 * (R[2] - R[6])
    wz = 0.5 * (R[3] - R[1])
    s = math.sqrt(wx * wx + wy * wy + wz * wz)
    c = 0.5 * (R[0] + R[4] + R[8] - 1.0)
    c = min(1.0, max(-1.0, c))
    theta = math.atan2(s, c)
    if c >= 0.0:
        # theta/s -> 1 as s -> 0 without cancellation; s == 0 only at the identity.
        f = theta / s if s > 0.0 else 1.0
        return f * wx, f * wy, f * wz
    # Near pi the antisymmetric part vanishes and its direction is noise, so the axis comes from
    # the symmetric part (R + R^T)/2 - cos I = (1 - cos) u u^T, using its largest row.
    if R[0] >= R[4] and R[0] >= R[8]:
        u0 = R[0] - c
        u1 = 0.5 * (R[1] + R[3])
        u2 = 0.5 * (R[2] + R[6])
    elif R[4] >= R[8]:
        u0 = 0.5 * (R[1] + R[3])
        u1 = R[4] - c
        u2 = 0.5 * (R[5] + R[7])
    else:
        u0 = 0.5 * (R[2] + R[6])
        u1 = 0.5 * (R[5] + R[7])
        u2 = R[8] - c
    nrm = math.sqrt(u0 * u0 + u1 * u1 + u2 * u2)
    # The symmetric part fixes the axis only up to sign; the antisymmetric part picks it.
    if u0 * wx + u1 * wy + u2 * wz < 0.0:
        nrm = -nrm
    f = theta / nrm
    return f * u0, f * u1, f * u2


@jit(nogil=True, inline="always")
def _se3_exp_at(xi, i, R, t):
    wx = xi[i, 0]
    wy = xi[i, 1]
    wz = xi[i, 2]
    vx = xi[i, 3]
    vy = xi[i, 4]
    vz = xi[i, 5]
    a, b, c = _coef_abc(wx * wx + wy * wy + wz * wz)
    _put3(R, i, 0, 0, _so3_poly_s(wx, wy, wz, 1.0, a, b), 1.0)
    # t = V v with V = I + b w^ + c w^2
    cx = wy * vz - wz * vy
    cy = wz * vx - wx * vz
    cz = wx * vy - wy * vx
    t[i, 0] = vx + b * cx + c * (wy * cz - wz * cy)
    t[i, 1] = vy + b * cy + c * (wz * cx - wx * cz)
    t[i, 2] = vz + b * cz + c * (wx * cy - wy * cx)


@jit(nogil=True)
def _se3_log_s(R, tx, ty, tz):
    """Log of the pose (row-major 9-tuple R, t) as a 6-tuple."""
    wx, wy, wz = _so3_log_s(R)
    d = _coef_d(wx * wx + wy * wy + wz * wz)
    # v = V^-1 t with V^-1 = I - w^/2 + d w^2
    cx = wy * tz - wz * ty
    cy = wz * tx - wx * tz
    cz = wx * ty - wy * tx
    vx = tx - 0.5 * cx + d * (wy * cz - wz * cy)
    vy = ty - 0.5 * cy + d * (wz * cx - wx * cz)
    vz = tz - 0.5 * cz + d * (wx * cy - wy * cx)
    return wx, wy, wz, vx, vy, vz


@jit(nogil=True)
def _se3_q_s(wx, wy, wz, vx, vy, vz):
    """Lower-left block Q of the SE(3) right Jacobian [[Jr_so3, 0], [Q, Jr_so3]], row-major 9-tuple.

    This is Barfoot's left-Jacobian Q evaluated at -xi. Its products of skew matrices collapse
    (W V W = -(w.v) W, W W V + V W W = (w x v) w^T - w (w x v)^T - 2 (w.v) W, ... with W = w^,
    V = v^), which turns nine 3x3 matrix products into a few outer products.
    """
    th2 = wx * wx + wy * wy + wz * wz
    _, _, a = _coef_abc(th2)
    b, c = _coef_q(th2)
    p = wx * vx + wy * vy + wz * vz
    ux = wy * vz - wz * vy
    uy = wz * vx - wx * vz
    uz = wx * vy - wy * vx
    # Q = -V/2 + a (v w^T + w v^T - 2p I + p W) - b (u w^T - w u^T + p W) - 2 c p W^2,
    # with u = w x v and W^2 = w w^T - th2 I: a symmetric part, a diagonal and a skew part.
    h = 2.0 * c * p
    diag = -2.0 * a * p + h * th2
    g = (a - b) * p
    sx = 0.5 * vx - g * wx
    sy = 0.5 * vy - g * wy
    sz = 0.5 * vz - g * wz

    def outer(wr, vr, ur, wk, vk, uk):
        return a * (vr * wk + wr * vk) - b * (ur * wk - wr * uk) - h * wr * wk

    return (
        outer(wx, vx, ux, wx, vx, ux) + diag,
        outer(wx, vx, ux, wy, vy, uy) + sz,
        outer(wx, vx, ux, wz, vz, uz) - sy,
        outer(wy, vy, uy, wx, vx, ux) - sz,
        outer(wy, vy, uy, wy, vy, uy) + diag,
        outer(wy, vy, uy, wz, vz, uz) + sx,
        outer(wz, vz, uz, wx, vx, ux) + sy,
        outer(wz, vz, uz, wy, vy, uy) - sx,
        outer(wz, vz, uz, wz, vz, uz) + diag,
    )


@jit(nogil=True)
def _so3_poly_s(wx, wy, wz, c0, c1, c2):
    """c0 I + c1 w^ + c2 w^ w^ as a row-major 9-tuple: the shape of every SO(3) closed form."""
    return (
        c0 - c2 * (wy * wy + wz * wz),
        -c1 * wz + c2 * wx * wy,
        c1 * wy + c2 * wx * wz,
        c1 * wz + c2 * wx * wy,
        c0 - c2 * (wx * wx + wz * wz),
        -c1 * wx + c2 * wy * wz,
        -c1 * wy + c2 * wx * wz,
        c1 * wx + c2 * wy * wz,
        c0 - c2 * (wx * wx + wy * wy),
    )


@jit(nogil=True)
def _mm3_s(a, b):
    """Product of two row-major 3x3 9-tuples."""
    return (
        a[0] * b[0] + a[1] * b[3] + a[2] * b[6],
        a[0] * b[1] + a[1] * b[4] + a[2] * b[7],
        a[0] * b[2] + a[1] * b[5] + a[2] * b[8],
        a[3] * b[0] + a[4] * b[3] + a[5] * b[6],
        a[3] * b[1] + a[4] * b[4] + a[5] * b[7],
        a[3] * b[2] + a[4] * b[5] + a[5] * b[8],
        a[6] * b[0] + a[7] * b[3] + a[8] * b[6],
        a[6] * b[1] + a[7] * b[4] + a[8] * b[7],
        a[6] * b[2] + a[7] * b[5] + a[8] * b[8],
    )


@jit(nogil=True, inline="always")
def _put3(out, i, ro, co, m, scale):
    for r in range(3):
        for k in range(3):
            out[i, ro + r, co + k] = scale * m[3 * r + k]


@jit(nogil=True, inline="always")
def _zero3(out, i, ro, co):
    for r in range(3):
        for k in range(3):
            out[i, ro + r, co + k] = 0.0


@jit(nogil=True, inline="always")
def _se3_jr_at(xi, i, J):
    wx = xi[i, 0]
    wy = xi[i, 1]
    wz = xi[i, 2]
    _, b, c = _coef_abc(wx * wx + wy * wy + wz * wz)
    A = _so3_poly_s(wx, wy, wz, 1.0, -b, c)
    _put3(J, i, 0, 0, A, 1.0)
    _put3(J, i, 3, 3, A, 1.0)
    _zero3(J, i, 0, 3)
    _put3(J, i, 3, 0, _se3_q_s(wx, wy, wz, xi[i, 3], xi[i, 4], xi[i, 5]), 1.0)


@jit(nogil=True, inline="always")
def _se3_jr_inv_at(wx, wy, wz, vx, vy, vz, J, i):
    """Jr^-1 of (w, v) into J[i]."""
    d = _coef_d(wx * wx + wy * wy + wz * wz)
    A = _so3_poly_s(wx, wy, wz, 1.0, 0.5, d)
    _put3(J, i, 0, 0, A, 1.0)
    _put3(J, i, 3, 3, A, 1.0)
    _zero3(J, i, 0, 3)
    # The inverse of [[A^-1, 0], [Q, A^-1]] is [[A, 0], [-A Q A, A]].
    _put3(J, i, 3, 0, _mm3_s(_mm3_s(A, _se3_q_s(wx, wy, wz, vx, vy, vz)), A), -1.0)


@jit(nogil=True, inline="always")
def _se2_exp_at(xi, i, R, t):
    th = xi[i, 2]
    a, b, _ = _coef_abc(th * th)
    c = math.cos(th)
    s = math.sin(th)
    R[i, 0, 0] = c
    R[i, 0, 1] = -s
    R[i, 1, 0] = s
    R[i, 1, 1] = c
    # V = [[sin/th, -(1 - cos)/th], [(1 - cos)/th, sin/th]]
    q = th * b
    t[i, 0] = a * xi[i, 0] - q * xi[i, 1]
    t[i, 1] = q * xi[i, 0] + a * xi[i, 1]


@jit(nogil=True)
def _se2_log_s(c, s, tx, ty):
    """Log of the SE(2) pose with rotation (cos, sin) = (c, s) and translation (tx, ty)."""
    th = math.atan2(s, c)
    # V^-1 = [[h, th/2], [-th/2, h]] with h = (th/2) cot(th/2) = 1 - th^2 d
    h = 1.0 - th * th * _coef_d(th * th)
    half = 0.5 * th
    return h * tx + half * ty, -half * tx + h * ty, th


@jit(nogil=True)
def _se2_jr_s(vx, vy, th):
    """Jr = [[a, q, px], [-q, a, py], [0, 0, 1]] as (a, q, px, py)."""
    a, b, c = _coef_abc(th * th)
    # rotation block is V(-th); translation column is (I - V(-th)) v / th
    return a, th * b, th * c * vx - b * vy, b * vx + th * c * vy


@jit(nogil=True)
def _se2_jr_inv_s(vx, vy, th):
    """Jr^-1 = [[h, -th/2, px], [th/2, h, py], [0, 0, 1]] as (h, th/2, px, py)."""
    _, b, c = _coef_abc(th * th)
    h = 1.0 - th * th * _coef_d(th * th)
    half = 0.5 * th
    # [[A, p], [0, 1]]^-1 = [[A^-1, -A^-1 p], [0, 1]], and A^-1 = [[h, -th/2], [th/2, h]]
    px = th * c * vx - b * vy
    py = b * vx + th * c * vy
    return h, half, -(h * px - half * py), -(half * px + h * py)


# ---------------------------------------------------------------------------------------------
# Batch kernels
# ---------------------------------------------------------------------------------------------
@jit(nogil=True)
def _so3_exp_kernel(w, R):
    for i in range(w.shape[0]):
        wx = w[i, 0]
        wy = w[i, 1]
        wz = w[i, 2]
        a, b, _ = _coef_abc(wx * wx + wy * wy + wz * wz)
        _put3(R, i, 0, 0, _so3_poly_s(wx, wy, wz, 1.0, a, b), 1.0)


@jit(nogil=True)
def _so3_log_kernel(R, w):
    for i in range(R.shape[0]):
        w[i, 0], w[i, 1], w[i, 2] = _so3_log_s(_load3(R, i))


@jit(nogil=True)
def _se3_exp_kernel(xi, R, t):
    for i in range(xi.shape[0]):
        _se3_exp_at(xi, i, R, t)


@jit(nogil=True)
def _se3_log_kernel(R, t, xi):
    for i in range(R.shape[0]):
        w0, w1, w2, v0, v1, v2 = _se3_log_s(_load3(R, i), t[i, 0], t[i, 1], t[i, 2])
        xi[i, 0] = w0
        xi[i, 1] = w1
        xi[i, 2] = w2
        xi[i, 3] = v0
        xi[i, 4] = v1
        xi[i, 5] = v2


@jit(nogil=True)
def _se2_exp_kernel(xi, R, t):
    for i in range(xi.shape[0]):
        _se2_exp_at(xi, i, R, t)


@jit(nogil=True)
def _se2_log_kernel(R, t, xi):
    for i in range(R.shape[0]):
        xi[i, 0], xi[i, 1], xi[i, 2] = _se2_log_s(R[i, 0, 0], R[i, 1, 0], t[i, 0], t[i, 1])


@jit(nogil=True)
def _se3_jr_kernel(xi, J):
    for i in range(xi.shape[0]):
        _se3_jr_at(xi, i, J)


@jit(nogil=True)
def _se3_jr_inv_kernel(xi, J):
    for i in range(xi.shape[0]):
        _se3_jr_inv_at(xi[i, 0], xi[i, 1], xi[i, 2], xi[i, 3], xi[i, 4], xi[i, 5], J, i)


@jit(nogil=True, inline="always")
def _se2_fill(J, i, a00, a01, a02, a10, a11, a12, a22):
    J[i, 0, 0] = a00
    J[i, 0, 1] = a01
    J[i, 0, 2] = a02
    J[i, 1, 0] = a10
    J[i, 1, 1] = a11
    J[i, 1, 2] = a12
    J[i, 2, 0] = 0.0
    J[i, 2, 1] = 0.0
    J[i, 2, 2] = a22


@jit(nogil=True)
def _se2_jr_kernel(xi, J):
    for i in range(xi.shape[0]):
        a, q, px, py = _se2_jr_s(xi[i, 0], xi[i, 1], xi[i, 2])
        _se2_fill(J, i, a, q, px, -q, a, py, 1.0)


@jit(nogil=True)
def _se2_jr_inv_kernel(xi, J):
    for i in range(xi.shape[0]):
        h, half, px, py = _se2_jr_inv_s(xi[i, 0], xi[i, 1], xi[i, 2])
        _se2_fill(J, i, h, -half, px, half, h, py, 1.0)


@jit(nogil=True)
def _se2_adjoint_kernel(R, t, A):
    for i in range(R.shape[0]):
        _se2_fill(A, i, R[i, 0, 0], R[i, 0, 1], t[i, 1], R[i, 1, 0], R[i, 1, 1], -t[i, 0], 1.0)


@jit(nogil=True)
def _se3_adjoint_kernel(R, t, A):
    for i in range(R.shape[0]):
        for r in range(3):
            for k in range(3):
                A[i, r, k] = R[i, r, k]
                A[i, 3 + r, 3 + k] = R[i, r, k]
                A[i, r, 3 + k] = 0.0
        for k in range(3):
            # column k of t^ R is t x R[:, k]
            A[i, 3, k] = t[i, 1] * R[i, 2, k] - t[i, 2] * R[i, 1, k]
            A[i, 4, k] = t[i, 2] * R[i, 0, k] - t[i, 0] * R[i, 2, k]
            A[i, 5, k] = t[i, 0] * R[i, 1, k] - t[i, 1] * R[i, 0, k]


@jit(nogil=True)
def _compose_kernel(Ra, ta, Rb, tb, R, t):
    d = Ra.shape[1]
    for i in range(Ra.shape[0]):
        for r in range(d):
            acc = ta[i, r]
            for k in range(d):
                acc += Ra[i, r, k] * tb[i, k]
            t[i, r] = acc
            for c in range(d):
                acc = 0.0
                for k in range(d):
                    acc += Ra[i, r, k] * Rb[i, k, c]
                R[i, r, c] = acc


@jit(nogil=True)
def _between_kernel(Ra, ta, Rb, tb, R, t):
    d = Ra.shape[1]
    for i in range(Ra.shape[0]):
        for r in range(d):
            acc = 0.0
            for k in range(d):
                acc += Ra[i, k, r] * (tb[i, k] - ta[i, k])
            t[i, r] = acc
            for c in range(d):
                acc = 0.0
                for k in range(d):
                    acc += Ra[i, k, r] * Rb[i, k, c]
                R[i, r, c] = acc


@jit(nogil=True)
def _inverse_kernel(Rin, tin, R, t):
    d = Rin.shape[1]
    for i in range(Rin.shape[0]):
        for r in range(d):
            acc = 0.0
            for k in range(d):
                acc -= Rin[i, k, r] * tin[i, k]
                R[i, r, k] = Rin[i, k, r]
            t[i, r] = acc


# A plain loop rather than prange: on a 2-core machine a parallel version ran 2x faster only while
# no other process wanted a core (and slower than serial when one did), and numba's GNU OpenMP
# layer aborts any forked child (multiprocessing's default on Linux) that calls the kernel again.
# nogil lets a caller run disjoint edge slices on threads instead.
@jit(nogil=True)
def _se3_between_error_kernel(Ri, ti, Rj, tj, Rz, tz, e, Ji, Jj):
    for i in range(Ri.shape[0]):
        # Tij = Ti^-1 Tj, then E = Z^-1 Tij
        RiT = _tr3_s(_load3(Ri, i))
        RzT = _tr3_s(_load3(Rz, i))
        Rij = _mm3_s(RiT, _load3(Rj, i))
        tx, ty, tz_ = _mv3_s(RiT, tj[i, 0] - ti[i, 0], tj[i, 1] - ti[i, 1], tj[i, 2] - ti[i, 2])
        ex, ey, ez = _mv3_s(RzT, tx - tz[i, 0], ty - tz[i, 1], tz_ - tz[i, 2])
        e0, e1, e2, e3, e4, e5 = _se3_log_s(_mm3_s(RzT, Rij), ex, ey, ez)
        e[i, 0] = e0
        e[i, 1] = e1
        e[i, 2] = e2
        e[i, 3] = e3
        e[i, 4] = e4
        e[i, 5] = e5
        # Jj = Jr^-1(e) = [[A, 0], [-L, A]] with L = A Q A
        A = _so3_poly_s(e0, e1, e2, 1.0, 0.5, _coef_d(e0 * e0 + e1 * e1 + e2 * e2))
        L = _mm3_s(_mm3_s(A, _se3_q_s(e0, e1, e2, e3, e4, e5)), A)
        _put3(Jj, i, 0, 0, A, 1.0)
        _put3(Jj, i, 3, 3, A, 1.0)
        _zero3(Jj, i, 0, 3)
        _put3(Jj, i, 3, 0, L, -1.0)
        # Ad(Tj^-1 Ti) = [[Rji, 0], [P, Rji]] with Rji = Rij^T and P = tji^ Rji = -Rij^T tij^,
        # whose row r is (tij x Rij[:, r])^T. Both factors are block lower-triangular, so
        # J_i = -Jj Ad = -[[A Rji, 0], [A P - L Rji, A Rji]].
        Rji = _tr3_s(Rij)
        P = (
            ty * Rij[6] - tz_ * Rij[3], tz_ * Rij[0] - tx * Rij[6], tx * Rij[3] - ty * Rij[0],
            ty * Rij[7] - tz_ * Rij[4], tz_ * Rij[1] - tx * Rij[7], tx * Rij[4] - ty * Rij[1],
            ty * Rij[8] - tz_ * Rij[5], tz_ * Rij[2] - tx * Rij[8], tx * Rij[5] - ty * Rij[2],
        )  # fmt: skip
        ARji = _mm3_s(A, Rji)
        LRji = _mm3_s(L, Rji)
        AP = _mm3_s(A, P)
        _put3(Ji, i, 0, 0, ARji, -1.0)
        _put3(Ji, i, 3, 3, ARji, -1.0)
        _zero3(Ji, i, 0, 3)
        for r in range(3):
            for k in range(3):
                Ji[i, 3 + r, k] = LRji[3 * r + k] - AP[3 * r + k]


@jit(nogil=True)
def _se2_between_error_kernel(Ri, ti, Rj, tj, Rz, tz, e, Ji, Jj):
    for i in range(Ri.shape[0]):
        # Tij = Ti^-1 Tj, with rotations as (cos, sin) pairs
        ci = Ri[i, 0, 0]
        si = Ri[i, 1, 0]
        cj = Rj[i, 0, 0]
        sj = Rj[i, 1, 0]
        cz = Rz[i, 0, 0]
        sz = Rz[i, 1, 0]
        cij = ci * cj + si * sj
        sij = ci * sj - si * cj
        d0 = tj[i, 0] - ti[i, 0]
        d1 = tj[i, 1] - ti[i, 1]
        tij0 = ci * d0 + si * d1
        tij1 = -si * d0 + ci * d1
        # E = Z^-1 Tij
        ce = cz * cij + sz * sij
        se = cz * sij - sz * cij
        d0 = tij0 - tz[i, 0]
        d1 = tij1 - tz[i, 1]
        te0 = cz * d0 + sz * d1
        te1 = -sz * d0 + cz * d1
        th = math.atan2(se, ce)
        h = 1.0 - th * th * _coef_d(th * th)
        half = 0.5 * th
        e0 = h * te0 + half * te1
        e1 = -half * te0 + h * te1
        e[i, 0] = e0
        e[i, 1] = e1
        e[i, 2] = th
        # Jr^-1(e) = [[h, -half, p0], [half, h, p1], [0, 0, 1]]
        _, b, c = _coef_abc(th * th)
        px = th * c * e0 - b * e1
        py = b * e0 + th * c * e1
        p0 = -(h * px - half * py)
        p1 = -(half * px + h * py)
        Jj[i, 0, 0] = h
        Jj[i, 0, 1] = -half
        Jj[i, 0, 2] = p0
        Jj[i, 1, 0] = half
        Jj[i, 1, 1] = h
        Jj[i, 1, 2] = p1
        Jj[i, 2, 0] = 0.0
        Jj[i, 2, 1] = 0.0
        Jj[i, 2, 2] = 1.0
        # Ad(Tj^-1 Ti) = [[Rji, (tji_y, -tji_x)], [0, 1]] with Rji = Rij^T, tji = -Rij^T tij
        tji0 = -(cij * tij0 + sij * tij1)
        tji1 = -(-sij * tij0 + cij * tij1)
        # J_i = -Jj Ad, with Rji = [[cij, sij], [-sij, cij]]
        Ji[i, 0, 0] = -(h * cij + half * sij)
        Ji[i, 0, 1] = -(h * sij - half * cij)
        Ji[i, 1, 0] = -(half * cij - h * sij)
        Ji[i, 1, 1] = -(half * sij + h * cij)
        Ji[i, 0, 2] = -(h * tji1 + half * tji0 + p0)
        Ji[i, 1, 2] = -(half * tji1 - h * tji0 + p1)
        Ji[i, 2, 0] = 0.0
        Ji[i, 2, 1] = 0.0
        Ji[i, 2, 2] = -1.0


@jit(nogil=True)
def _quat_to_rot_kernel(q, R):
    for i in range(q.shape[0]):
        x = q[i, 0]
        y = q[i, 1]
        z = q[i, 2]
        w = q[i, 3]
        # Normalising here means file inputs with 6-digit quaternions still give rotations.
        n2 = x * x + y * y + z * z + w * w
        s = 2.0 / n2
        R[i, 0, 0] = 1.0 - s * (y * y + z * z)
        R[i, 0, 1] = s * (x * y - z * w)
        R[i, 0, 2] = s * (x * z + y * w)
        R[i, 1, 0] = s * (x * y + z * w)
        R[i, 1, 1] = 1.0 - s * (x * x + z * z)
        R[i, 1, 2] = s * (y * z - x * w)
        R[i, 2, 0] = s * (x * z - y * w)
        R[i, 2, 1] = s * (y * z + x * w)
        R[i, 2, 2] = 1.0 - s * (x * x + y * y)


@jit(nogil=True)
def _rot_to_quat_kernel(R, q):
    for i in range(R.shape[0]):
        m = R[i]
        tr = m[0, 0] + m[1, 1] + m[2, 2]
        # Shepperd: divide by the largest of the four 4*q_k^2 so the square root never underflows.
        if tr >= m[0, 0] and tr >= m[1, 1] and tr >= m[2, 2]:
            r = math.sqrt(1.0 + tr)
            f = 0.5 / r
            w = 0.5 * r
            x = (m[2, 1] - m[1, 2]) * f
            y = (m[0, 2] - m[2, 0]) * f
            z = (m[1, 0] - m[0, 1]) * f
        elif m[0, 0] >= m[1, 1] and m[0, 0] >= m[2, 2]:
            r = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
            f = 0.5 / r
            x = 0.5 * r
            y = (m[0, 1] + m[1, 0]) * f
            z = (m[0, 2] + m[2, 0]) * f
            w = (m[2, 1] - m[1, 2]) * f
        elif m[1, 1] >= m[2, 2]:
            r = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
            f = 0.5 / r
            y = 0.5 * r
            x = (m[0, 1] + m[1, 0]) * f
            z = (m[1, 2] + m[2, 1]) * f
            w = (m[0, 2] - m[2, 0]) * f
        else:
            r = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
            f = 0.5 / r
            z = 0.5 * r
            x = (m[0, 2] + m[2, 0]) * f
            y = (m[1, 2] + m[2, 1]) * f
            w = (m[1, 0] - m[0, 1]) * f
        if w < 0.0:
            x, y, z, w = -x, -y, -z, -w
        q[i, 0] = x
        q[i, 1] = y
        q[i, 2] = z
        q[i, 3] = w


@jit(nogil=True)
def _rpy_to_rot_kernel(roll, pitch, yaw, R):
    for i in range(roll.shape[0]):
        cr = math.cos(roll[i])
        sr = math.sin(roll[i])
        cp = math.cos(pitch[i])
        sp = math.sin(pitch[i])
        cy = math.cos(yaw[i])
        sy = math.sin(yaw[i])
        R[i, 0, 0] = cy * cp
        R[i, 0, 1] = cy * sp * sr - sy * cr
        R[i, 0, 2] = cy * sp * cr + sy * sr
        R[i, 1, 0] = sy * cp
        R[i, 1, 1] = sy * sp * sr + cy * cr
        R[i, 1, 2] = sy * sp * cr - cy * sr
        R[i, 2, 0] = -sp
        R[i, 2, 1] = cp * sr
        R[i, 2, 2] = cp * cr


@jit(nogil=True)
def _rot_to_rpy_kernel(R, out):
    for i in range(R.shape[0]):
        m = R[i]
        cp = math.hypot(m[2, 1], m[2, 2])
        out[i, 1] = math.atan2(-m[2, 0], cp)
        if cp > 1e-12:
            out[i, 0] = math.atan2(m[2, 1], m[2, 2])
            out[i, 2] = math.atan2(m[1, 0], m[0, 0])
        else:
            # Gimbal lock: only roll -/+ yaw is observable, so put it all in yaw.
            out[i, 0] = 0.0
            out[i, 2] = math.atan2(-m[0, 1], m[1, 1])


# ---------------------------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------------------------
def _f64(a: ArrayLike) -> F64:
    return np.ascontiguousarray(a, dtype=np.float64)


def _batch(a: ArrayLike, tail: tuple[int, ...], name: str) -> F64:
    arr = _f64(a)
    if arr.ndim != len(tail) + 1 or arr.shape[1:] != tail:
        raise ValueError(f"{name} must have shape (n, {', '.join(map(str, tail))}), got {arr.shape}")
    return arr


def _pose(R: ArrayLike, t: ArrayLike, name: str = "pose") -> tuple[F64, F64, int]:
    R = _f64(R)
    if R.ndim != 3 or R.shape[1] != R.shape[2] or R.shape[1] not in (2, 3):
        raise ValueError(f"{name} rotation must have shape (n, 2, 2) or (n, 3, 3), got {R.shape}")
    d = R.shape[1]
    t = _batch(t, (d,), f"{name} translation")
    if t.shape[0] != R.shape[0]:
        raise ValueError(f"{name}: {R.shape[0]} rotations but {t.shape[0]} translations")
    return R, t, d


def _same_batch(*arrays: F64) -> None:
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise ValueError(f"batch sizes differ: {[a.shape[0] for a in arrays]}")
    d = arrays[0].shape[-1]
    if any(a.shape[-1] != d for a in arrays):
        raise ValueError("poses of different dimension")


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def so3_exp(omega: ArrayLike) -> F64:
    """Rotation matrices (n, 3, 3) from rotation vectors (n, 3)."""
    w = _batch(omega, (3,), "omega")
    R = np.empty((w.shape[0], 3, 3))
    _so3_exp_kernel(w, R)
    return R


def so3_log(R: ArrayLike) -> F64:
    """Rotation vectors (n, 3) with angle in [0, pi] from rotation matrices (n, 3, 3)."""
    R = _batch(R, (3, 3), "R")
    w = np.empty((R.shape[0], 3))
    _so3_log_kernel(R, w)
    return w


def se2_exp(xi: ArrayLike) -> tuple[F64, F64]:
    """SE(2) exponential of ``(vx, vy, theta)`` (n, 3); returns ``(R (n,2,2), t (n,2))``."""
    xi = _batch(xi, (3,), "xi")
    n = xi.shape[0]
    R = np.empty((n, 2, 2))
    t = np.empty((n, 2))
    _se2_exp_kernel(xi, R, t)
    return R, t


def se2_log(R: ArrayLike, t: ArrayLike) -> F64:
    """SE(2) logarithm, ``(vx, vy, theta)`` (n, 3) with theta in (-pi, pi]."""
    R, t, d = _pose(R, t)
    if d != 2:
        raise ValueError("se2_log needs 2D poses")
    xi = np.empty((R.shape[0], 3))
    _se2_log_kernel(R, t, xi)
    return xi


def se3_exp(xi: ArrayLike) -> tuple[F64, F64]:
    """SE(3) exponential of ``(w, v)`` (n, 6), rotation first; returns ``(R (n,3,3), t (n,3))``."""
    xi = _batch(xi, (6,), "xi")
    n = xi.shape[0]
    R = np.empty((n, 3, 3))
    t = np.empty((n, 3))
    _se3_exp_kernel(xi, R, t)
    return R, t


def se3_log(R: ArrayLike, t: ArrayLike) -> F64:
    """SE(3) logarithm ``(w, v)`` (n, 6), rotation first, rotation angle in [0, pi]."""
    R, t, d = _pose(R, t)
    if d != 3:
        raise ValueError("se3_log needs 3D poses")
    xi = np.empty((R.shape[0], 6))
    _se3_log_kernel(R, t, xi)
    return xi


def compose(Ra: ArrayLike, ta: ArrayLike, Rb: ArrayLike, tb: ArrayLike) -> tuple[F64, F64]:
    """Ta * Tb for batches of 2D or 3D poses."""
    Ra, ta, _ = _pose(Ra, ta, "Ta")
    Rb, tb, _ = _pose(Rb, tb, "Tb")
    _same_batch(Ra, Rb)
    R = np.empty_like(Ra)
    t = np.empty_like(ta)
    _compose_kernel(Ra, ta, Rb, tb, R, t)
    return R, t


def inverse(R: ArrayLike, t: ArrayLike) -> tuple[F64, F64]:
    """T^-1 = (R^T, -R^T t) for batches of 2D or 3D poses."""
    R, t, _ = _pose(R, t)
    Ro = np.empty_like(R)
    to = np.empty_like(t)
    _inverse_kernel(R, t, Ro, to)
    return Ro, to


def inverse_transform(T: ArrayLike) -> F64:
    """Inverse of homogeneous rigid transforms (..., 4, 4) as (R^T, -R^T t), the form evo uses."""
    T = np.asarray(T, dtype=np.float64)
    out = np.zeros_like(T)
    Rt = np.swapaxes(T[..., :3, :3], -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, T[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def between(Ra: ArrayLike, ta: ArrayLike, Rb: ArrayLike, tb: ArrayLike) -> tuple[F64, F64]:
    """Ta^-1 * Tb for batches of 2D or 3D poses."""
    Ra, ta, _ = _pose(Ra, ta, "Ta")
    Rb, tb, _ = _pose(Rb, tb, "Tb")
    _same_batch(Ra, Rb)
    R = np.empty_like(Ra)
    t = np.empty_like(ta)
    _between_kernel(Ra, ta, Rb, tb, R, t)
    return R, t


def se2_adjoint(R: ArrayLike, t: ArrayLike) -> F64:
    """SE(2) adjoint (n, 3, 3): ``[[R, (ty, -tx)], [0, 1]]``."""
    R, t, d = _pose(R, t)
    if d != 2:
        raise ValueError("se2_adjoint needs 2D poses")
    A = np.empty((R.shape[0], 3, 3))
    _se2_adjoint_kernel(R, t, A)
    return A


def se3_adjoint(R: ArrayLike, t: ArrayLike) -> F64:
    """SE(3) adjoint (n, 6, 6) in rotation-first order: ``[[R, 0], [t^ R, R]]``."""
    R, t, d = _pose(R, t)
    if d != 3:
        raise ValueError("se3_adjoint needs 3D poses")
    A = np.empty((R.shape[0], 6, 6))
    _se3_adjoint_kernel(R, t, A)
    return A


def se2_right_jacobian(xi: ArrayLike) -> F64:
    """SE(2) right Jacobian Jr(xi) (n, 3, 3), as GTSAM's ``Pose2::ExpmapDerivative``."""
    xi = _batch(xi, (3,), "xi")
    J = np.empty((xi.shape[0], 3, 3))
    _se2_jr_kernel(xi, J)
    return J


def se2_right_jacobian_inv(xi: ArrayLike) -> F64:
    """Inverse of the SE(2) right Jacobian (n, 3, 3), as GTSAM's ``Pose2::LogmapDerivative``."""
    xi = _batch(xi, (3,), "xi")
    J = np.empty((xi.shape[0], 3, 3))
    _se2_jr_inv_kernel(xi, J)
    return J


def se3_right_jacobian(xi: ArrayLike) -> F64:
    """SE(3) right Jacobian Jr(xi) (n, 6, 6), as GTSAM's ``Pose3::ExpmapDerivative``."""
    xi = _batch(xi, (6,), "xi")
    J = np.empty((xi.shape[0], 6, 6))
    _se3_jr_kernel(xi, J)
    return J


def se3_right_jacobian_inv(xi: ArrayLike) -> F64:
    """Inverse of the SE(3) right Jacobian (n, 6, 6), i.e. d Log(Exp(xi) Exp(d)) / d d at d = 0."""
    xi = _batch(xi, (6,), "xi")
    J = np.empty((xi.shape[0], 6, 6))
    _se3_jr_inv_kernel(xi, J)
    return J


def retract(R: ArrayLike, t: ArrayLike, xi: ArrayLike) -> tuple[F64, F64]:
    """Right retraction T * Exp(xi); xi is (n, 3) for 2D poses and (n, 6) for 3D poses."""
    R, t, d = _pose(R, t)
    dR, dt = se2_exp(xi) if d == 2 else se3_exp(xi)
    return compose(R, t, dR, dt)


def between_error(
    Ri: ArrayLike,
    ti: ArrayLike,
    Rj: ArrayLike,
    tj: ArrayLike,
    Rz: ArrayLike,
    tz: ArrayLike,
    *,
    out: tuple[F64, F64, F64] | None = None,
) -> tuple[F64, F64, F64]:
    """Between-factor residual ``e = Log(Z^-1 Ti^-1 Tj)`` and its Jacobians.

    Returns ``(e (n,k), J_i (n,k,k), J_j (n,k,k))`` with k = 3 for 2D and 6 for 3D poses, for
    right perturbations ``Ti Exp(di)``, ``Tj Exp(dj)``: ``J_j = Jr^-1(e)`` and
    ``J_i = -Jr^-1(e) Ad(Tj^-1 Ti)``.

    The result arrays are fresh unless ``out`` gives three C-contiguous float64 arrays of those
    shapes to overwrite. Reusing them across solver iterations matters: for 20k SE(3) edges the
    12 MB of fresh output costs about as much in page faults as the kernel itself.
    """
    Ri, ti, d = _pose(Ri, ti, "Ti")
    Rj, tj, _ = _pose(Rj, tj, "Tj")
    Rz, tz, _ = _pose(Rz, tz, "Z")
    _same_batch(Ri, Rj, Rz)
    n = Ri.shape[0]
    k = 3 if d == 2 else 6
    if out is None:
        e = np.empty((n, k))
        Ji = np.empty((n, k, k))
        Jj = np.empty((n, k, k))
    else:
        e, Ji, Jj = out
        for name, arr, shape in (("e", e, (n, k)), ("J_i", Ji, (n, k, k)), ("J_j", Jj, (n, k, k))):
            if (
                not isinstance(arr, np.ndarray)
                or arr.shape != shape
                or arr.dtype != np.float64
                or not arr.flags.c_contiguous
                or not arr.flags.writeable
            ):
                raise ValueError(f"out {name} must be writeable, C-contiguous, float64, shape {shape}")
    kernel = _se2_between_error_kernel if d == 2 else _se3_between_error_kernel
    kernel(Ri, ti, Rj, tj, Rz, tz, e, Ji, Jj)
    return e, Ji, Jj


def quaternion_to_rotation(q: ArrayLike) -> F64:
    """Rotation matrices (n, 3, 3) from quaternions (n, 4) in (x, y, z, w) order; q is normalised."""
    q = _batch(q, (4,), "q")
    R = np.empty((q.shape[0], 3, 3))
    _quat_to_rot_kernel(q, R)
    return R


def rotation_to_quaternion(R: ArrayLike) -> F64:
    """Unit quaternions (n, 4) in (x, y, z, w) order with w >= 0 from rotation matrices."""
    R = _batch(R, (3, 3), "R")
    q = np.empty((R.shape[0], 4))
    _rot_to_quat_kernel(R, q)
    return q


def rpy_to_rotation(roll: ArrayLike, pitch: ArrayLike, yaw: ArrayLike) -> F64:
    """``R = Rz(yaw) Ry(pitch) Rx(roll)`` (n, 3, 3), as GTSAM's ``Rot3::Ypr``; angles broadcast to (n,)."""
    r, p, y = (np.ascontiguousarray(a.ravel()) for a in np.broadcast_arrays(*map(_f64, (roll, pitch, yaw))))
    R = np.empty((r.shape[0], 3, 3))
    _rpy_to_rot_kernel(r, p, y, R)
    return R


def rotation_to_rpy(R: ArrayLike) -> tuple[F64, F64, F64]:
    """Inverse of :func:`rpy_to_rotation`: ``(roll, pitch, yaw)``, each (n,), pitch in [-pi/2, pi/2].

    At gimbal lock (|pitch| = pi/2) roll is set to 0 and the observable combination goes to yaw.
    """
    R = _batch(R, (3, 3), "R")
    out = np.empty((R.shape[0], 3))
    _rot_to_rpy_kernel(R, out)
    return out[:, 0].copy(), out[:, 1].copy(), out[:, 2].copy()


def project_to_rotation(M: ArrayLike) -> F64:
    """Nearest rotation (Frobenius norm) to each (n, d, d) matrix, via SVD with det fixed to +1."""
    M = _f64(M)
    if M.ndim != 3 or M.shape[1] != M.shape[2]:
        raise ValueError(f"M must have shape (n, d, d), got {M.shape}")
    if M.shape[0] == 0:
        return np.empty_like(M)
    U, _, Vt = np.linalg.svd(M)
    # Flipping the singular vector of the smallest singular value is the least costly way to
    # turn an orthogonal reflection into a rotation.
    sign = np.sign(np.linalg.det(U @ Vt))
    sign[sign == 0] = 1.0
    U[:, :, -1] *= sign[:, None]
    return np.ascontiguousarray(U @ Vt)
