"""Tests for mp_slam_ros.solver.lie.

Jacobians are checked against central finite differences taken on the manifold (perturbations
enter through Exp and leave through Log), so a wrong sign, ordering or transpose shows up as an
O(1) error. With step FD_STEP = 1e-5 the truncation error is ~1e-11 and the rounding error ~1e-11,
so FD_TOL = 1e-8 leaves two orders of margin while still being far below any real mistake.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mp_slam_ros.solver import lie

FD_STEP = 1e-5
FD_TOL = 1e-8
ROUND_TRIP_TOL = 1e-12
GTSAM_TOL = 1e-10

# Rotation angles that exercise every branch: exactly 0, the short and long Taylor series, both
# sides of each series cut-off (theta^2 = 0.01, 1, 2.25), the closed forms, and the pi region.
EDGE_ANGLES = (
    0.0,
    1e-12,
    1e-9,
    1e-6,
    1e-3,
    0.1 - 1e-9,
    0.1 + 1e-9,
    0.3,
    1.0 - 1e-9,
    1.0 + 1e-9,
    1.5 - 1e-9,
    1.5 + 1e-9,
    2.5,
    math.pi - 1e-3,
    math.pi - 1e-6,
)
# Finite differences need a neighbourhood where Log is smooth, so stay a step clear of pi.
JAC_ANGLES = tuple(a for a in EDGE_ANGLES if a < math.pi - 1e-4)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    u = rng.normal(size=(n, 3))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def tangents(
    rng: np.random.Generator, dim: int, angles, reps: int = 3, trans_scale: float = 1.0
) -> np.ndarray:
    """Tangent vectors whose rotation part has exactly the given angles (random axis/sign)."""
    rows = []
    for angle in angles:
        for _ in range(reps):
            if dim == 2:
                sign = rng.choice([-1.0, 1.0])
                rows.append(np.r_[trans_scale * rng.normal(size=2), sign * angle])
            else:
                rows.append(np.r_[angle * unit_vectors(rng, 1)[0], trans_scale * rng.normal(size=3)])
    return np.array(rows)


def group(dim: int):
    if dim == 2:
        return lie.se2_exp, lie.se2_log, 3
    return lie.se3_exp, lie.se3_log, 6


def random_poses(rng: np.random.Generator, dim: int, n: int):
    exp, _, k = group(dim)
    xi = rng.normal(size=(n, k))
    if dim == 2:
        xi[:, 2] = rng.uniform(-3.0, 3.0, size=n)
    else:
        xi[:, :3] = unit_vectors(rng, n) * rng.uniform(0.0, 3.0, size=(n, 1))
    return exp(xi)


def homogeneous(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    n, d, _ = R.shape
    T = np.zeros((n, d + 1, d + 1))
    T[:, :d, :d] = R
    T[:, :d, d] = t
    T[:, d, d] = 1.0
    return T


def fd_jacobian(f, x: np.ndarray, h: float = FD_STEP) -> np.ndarray:
    """Batched central differences: J[:, :, c] = (f(x + h e_c) - f(x - h e_c)) / 2h."""
    k = x.shape[1]
    cols = []
    for c in range(k):
        dx = np.zeros_like(x)
        dx[:, c] = h
        cols.append((f(x + dx) - f(x - dx)) / (2.0 * h))
    return np.stack(cols, axis=2)


# ---------------------------------------------------------------------------------------------
# Exp / Log
# ---------------------------------------------------------------------------------------------
def test_so3_round_trip_edge_angles(rng):
    w = np.concatenate([unit_vectors(rng, 4) * a for a in EDGE_ANGLES])
    R = lie.so3_exp(w)
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-15)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-15)
    back = lie.so3_log(R)
    # Relative to the angle near 0 (tiny rotations must keep their significant digits) ...
    theta = np.linalg.norm(w, axis=1)
    err = np.linalg.norm(back - w, axis=1)
    assert np.all(err <= 1e-15 * theta + 1e-300)
    # ... and absolute overall (near pi the axis comes from a different branch).
    np.testing.assert_allclose(back, w, rtol=0, atol=ROUND_TRIP_TOL)


def test_so3_exactly_zero_and_identity():
    np.testing.assert_array_equal(lie.so3_exp(np.zeros((2, 3))), np.broadcast_to(np.eye(3), (2, 3, 3)))
    np.testing.assert_array_equal(lie.so3_log(np.broadcast_to(np.eye(3), (2, 3, 3))), np.zeros((2, 3)))


def test_so3_log_at_exactly_pi(rng):
    u = unit_vectors(rng, 20)
    R = 2.0 * np.einsum("ni,nj->nij", u, u) - np.eye(3)  # rotation by exactly pi about u
    w = lie.so3_log(R)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), math.pi, atol=1e-14)
    # The axis is only defined up to sign at pi, so compare through Exp.
    np.testing.assert_allclose(lie.so3_exp(w), R, atol=1e-14)


def test_so3_log_known_value():
    c, s = math.cos(0.7), math.sin(0.7)
    Rx = np.array([[[1.0, 0, 0], [0, c, -s], [0, s, c]]])
    np.testing.assert_allclose(lie.so3_log(Rx), [[0.7, 0, 0]], atol=1e-16)


@pytest.mark.parametrize("dim", [2, 3])
def test_se_round_trip_edge_angles(rng, dim):
    exp, log, _ = group(dim)
    xi = tangents(rng, dim, EDGE_ANGLES, reps=4)
    R, t = exp(xi)
    back = log(R, t)
    np.testing.assert_allclose(back, xi, rtol=0, atol=ROUND_TRIP_TOL)
    # Tiny rotations keep their relative precision.
    rot = slice(2, 3) if dim == 2 else slice(0, 3)
    small = np.linalg.norm(xi[:, rot], axis=1) < 1e-3
    rel = np.linalg.norm(back[small, rot] - xi[small, rot], axis=1) / np.maximum(
        np.linalg.norm(xi[small, rot], axis=1), 1e-300
    )
    assert np.all(rel[np.linalg.norm(xi[small, rot], axis=1) > 0] < 1e-14)


@pytest.mark.parametrize("dim", [2, 3])
def test_se_exp_of_log_random_poses(rng, dim):
    exp, log, _ = group(dim)
    R, t = random_poses(rng, dim, 200)
    R2, t2 = exp(log(R, t))
    np.testing.assert_allclose(R2, R, atol=1e-14)
    np.testing.assert_allclose(t2, t, atol=1e-13)


def test_se2_exp_matches_homogeneous_matrix_exponential(rng):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    xi = tangents(rng, 2, (0.0, 1e-6, 0.4, 2.0, 3.0), reps=2)
    R, t = lie.se2_exp(xi)
    for k in range(len(xi)):
        vx, vy, th = xi[k]
        M = scipy_linalg.expm(np.array([[0.0, -th, vx], [th, 0.0, vy], [0.0, 0.0, 0.0]]))
        np.testing.assert_allclose(homogeneous(R[k : k + 1], t[k : k + 1])[0], M, atol=1e-13)


def test_se3_exp_matches_homogeneous_matrix_exponential(rng):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    xi = tangents(rng, 3, (0.0, 1e-6, 0.4, 2.0, 3.0), reps=2)
    R, t = lie.se3_exp(xi)
    for k in range(len(xi)):
        W = np.zeros((4, 4))
        wx, wy, wz = xi[k, :3]
        W[:3, :3] = [[0, -wz, wy], [wz, 0, -wx], [-wy, wx, 0]]
        W[:3, 3] = xi[k, 3:]
        T = homogeneous(R[k : k + 1], t[k : k + 1])[0]
        np.testing.assert_allclose(T, scipy_linalg.expm(W), atol=1e-13)


def test_se2_log_at_exactly_pi():
    R = np.array([[[-1.0, 0.0], [0.0, -1.0]]])
    xi = lie.se2_log(R, np.array([[1.0, 2.0]]))
    assert abs(abs(xi[0, 2]) - math.pi) < 1e-15
    R2, t2 = lie.se2_exp(xi)
    np.testing.assert_allclose(R2, R, atol=1e-15)
    np.testing.assert_allclose(t2, [[1.0, 2.0]], atol=1e-14)


def test_series_coefficients_match_high_precision():
    """Every scalar coefficient, on both sides of each series cut-off, to a few ulps."""
    mp = pytest.importorskip("mpmath")
    # The closed forms cancel to order theta^4, so tiny angles need ~40 guard digits on top.
    mp.mp.dps = 100
    thetas = np.r_[np.geomspace(1e-9, 3.1, 120), 0.1 - 1e-12, 0.1 + 1e-12, 1 - 1e-12, 1 + 1e-12, 1.5 - 1e-12]
    for theta in thetas:
        x = mp.mpf(float(theta))
        s, c = mp.sin(x), mp.cos(x)
        ref = {
            "A": s / x,
            "B": (1 - c) / x**2,
            "C": (x - s) / x**3,
            "D": (1 - (x / 2) * mp.cot(x / 2)) / x**2,
            "QB": (x**2 + 2 * c - 2) / (2 * x**4),
            "QC": (2 * x - 3 * s + x * c) / (2 * x**5),
        }
        th2 = float(theta) ** 2
        got = dict(zip(("A", "B", "C"), lie._coef_abc(th2), strict=True))
        got["D"] = lie._coef_d(th2)
        got["QB"], got["QC"] = lie._coef_q(th2)
        for name, value in got.items():
            assert abs(value - float(ref[name])) <= 1e-14 * abs(float(ref[name])), (name, theta)


# ---------------------------------------------------------------------------------------------
# Group operations
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [2, 3])
def test_compose_inverse_between_match_homogeneous_matrices(rng, dim):
    Ra, ta = random_poses(rng, dim, 50)
    Rb, tb = random_poses(rng, dim, 50)
    Ta, Tb = homogeneous(Ra, ta), homogeneous(Rb, tb)
    np.testing.assert_allclose(homogeneous(*lie.compose(Ra, ta, Rb, tb)), Ta @ Tb, atol=1e-13)
    np.testing.assert_allclose(homogeneous(*lie.inverse(Ra, ta)), np.linalg.inv(Ta), atol=1e-13)
    np.testing.assert_allclose(homogeneous(*lie.between(Ra, ta, Rb, tb)), np.linalg.inv(Ta) @ Tb, atol=1e-13)


@pytest.mark.parametrize("dim", [2, 3])
def test_retract_is_right_multiplication_by_exp(rng, dim):
    exp, _, _ = group(dim)
    R, t = random_poses(rng, dim, 30)
    xi = tangents(rng, dim, (0.0, 1e-7, 0.5, 2.0), reps=30 // 4 + 1)[:30]
    Rr, tr = lie.retract(R, t, xi)
    np.testing.assert_allclose(homogeneous(Rr, tr), homogeneous(R, t) @ homogeneous(*exp(xi)), atol=1e-13)


@pytest.mark.parametrize("dim", [2, 3])
def test_empty_batches(dim):
    exp, log, k = group(dim)
    R0, t0 = np.zeros((0, dim, dim)), np.zeros((0, dim))
    xi0 = np.zeros((0, k))
    assert exp(xi0)[0].shape == (0, dim, dim) and exp(xi0)[1].shape == (0, dim)
    assert log(R0, t0).shape == (0, k)
    assert lie.compose(R0, t0, R0, t0)[0].shape == (0, dim, dim)
    assert lie.inverse(R0, t0)[1].shape == (0, dim)
    assert lie.between(R0, t0, R0, t0)[0].shape == (0, dim, dim)
    assert lie.retract(R0, t0, xi0)[0].shape == (0, dim, dim)
    e, Ji, Jj = lie.between_error(R0, t0, R0, t0, R0, t0)
    assert e.shape == (0, k) and Ji.shape == (0, k, k) and Jj.shape == (0, k, k)
    adjoint = lie.se2_adjoint if dim == 2 else lie.se3_adjoint
    jr = lie.se2_right_jacobian if dim == 2 else lie.se3_right_jacobian
    jr_inv = lie.se2_right_jacobian_inv if dim == 2 else lie.se3_right_jacobian_inv
    assert adjoint(R0, t0).shape == (0, k, k)
    assert jr(xi0).shape == (0, k, k) and jr_inv(xi0).shape == (0, k, k)
    assert lie.project_to_rotation(R0).shape == (0, dim, dim)


def test_empty_batches_so3_and_conversions():
    assert lie.so3_exp(np.zeros((0, 3))).shape == (0, 3, 3)
    assert lie.so3_log(np.zeros((0, 3, 3))).shape == (0, 3)
    assert lie.quaternion_to_rotation(np.zeros((0, 4))).shape == (0, 3, 3)
    assert lie.rotation_to_quaternion(np.zeros((0, 3, 3))).shape == (0, 4)
    assert lie.rpy_to_rotation(np.zeros(0), np.zeros(0), np.zeros(0)).shape == (0, 3, 3)
    assert all(a.shape == (0,) for a in lie.rotation_to_rpy(np.zeros((0, 3, 3))))


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        lie.so3_exp(np.zeros(3))
    with pytest.raises(ValueError):
        lie.se3_exp(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        lie.compose(np.zeros((2, 3, 3)), np.zeros((2, 3)), np.zeros((3, 3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError):
        lie.between_error(*(np.zeros((1, 3, 3)), np.zeros((1, 3))) * 2, np.zeros((1, 2, 2)), np.zeros((1, 2)))


# ---------------------------------------------------------------------------------------------
# Jacobians against finite differences on the manifold
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [2, 3])
def test_right_jacobian_finite_differences(rng, dim):
    exp, log, _ = group(dim)
    jr = lie.se2_right_jacobian if dim == 2 else lie.se3_right_jacobian
    xi = tangents(rng, dim, JAC_ANGLES, reps=2)
    R, t = exp(xi)

    # Exp(xi + d) = Exp(xi) Exp(Jr d)  =>  Jr d = Log(Exp(xi)^-1 Exp(xi + d))
    def f(x):
        return log(*lie.between(R, t, *exp(x)))

    np.testing.assert_allclose(jr(xi), fd_jacobian(f, xi), rtol=0, atol=FD_TOL)


@pytest.mark.parametrize("dim", [2, 3])
def test_right_jacobian_inverse_finite_differences(rng, dim):
    exp, log, k = group(dim)
    jr = lie.se2_right_jacobian if dim == 2 else lie.se3_right_jacobian
    jr_inv = lie.se2_right_jacobian_inv if dim == 2 else lie.se3_right_jacobian_inv
    xi = tangents(rng, dim, JAC_ANGLES, reps=2)
    R, t = exp(xi)

    # Log(Exp(xi) Exp(d)) = xi + Jr^-1 d
    def f(d):
        return log(*lie.compose(R, t, *exp(d)))

    J_inv = jr_inv(xi)
    np.testing.assert_allclose(J_inv, fd_jacobian(f, np.zeros_like(xi)), rtol=0, atol=FD_TOL)
    np.testing.assert_allclose(J_inv @ jr(xi), np.broadcast_to(np.eye(k), J_inv.shape), rtol=0, atol=1e-13)


@pytest.mark.parametrize("dim", [2, 3])
def test_adjoint(rng, dim):
    exp, log, _ = group(dim)
    adjoint = lie.se2_adjoint if dim == 2 else lie.se3_adjoint
    R, t = random_poses(rng, dim, 40)
    Ri, ti = lie.inverse(R, t)
    A = adjoint(R, t)

    def conj(x):
        return log(*lie.compose(*lie.compose(R, t, *exp(x)), Ri, ti))

    # Differential identity at the origin ...
    np.testing.assert_allclose(A, fd_jacobian(conj, np.zeros((40, A.shape[1]))), rtol=0, atol=FD_TOL)
    # ... and the exact one T Exp(xi) T^-1 = Exp(Ad xi) for finite xi.
    xi = tangents(rng, dim, (0.0, 1e-8, 0.3, 1.2), reps=10)
    lhs = homogeneous(*lie.compose(*lie.compose(R, t, *exp(xi)), Ri, ti))
    rhs = homogeneous(*exp(np.einsum("nij,nj->ni", A, xi)))
    np.testing.assert_allclose(lhs, rhs, atol=1e-12)


def test_adjoint_known_values():
    R = np.array([[[0.0, -1.0], [1.0, 0.0]]])
    np.testing.assert_array_equal(
        lie.se2_adjoint(R, np.array([[2.0, 3.0]]))[0], [[0, -1, 3], [1, 0, -2], [0, 0, 1]]
    )
    A = lie.se3_adjoint(np.eye(3)[None], np.array([[1.0, 2.0, 3.0]]))[0]
    np.testing.assert_array_equal(A[:3, 3:], np.zeros((3, 3)))
    np.testing.assert_array_equal(A[3:, :3], [[0, -3, 2], [3, 0, -1], [-2, 1, 0]])


def _between_error_setup(rng, dim, angles):
    """Ti, Tj, Z with Z^-1 Ti^-1 Tj = Exp(xi_e) for residuals xi_e of the given rotation angles."""
    exp, _, _ = group(dim)
    xi_e = tangents(rng, dim, angles, reps=3, trans_scale=0.5)
    n = len(xi_e)
    Ri, ti = random_poses(rng, dim, n)
    Rz, tz = random_poses(rng, dim, n)
    Rj, tj = lie.compose(*lie.compose(Ri, ti, Rz, tz), *exp(xi_e))
    return xi_e, (Ri, ti), (Rj, tj), (Rz, tz)


@pytest.mark.parametrize("dim", [2, 3])
def test_between_error_value(rng, dim):
    _, log, _ = group(dim)
    xi_e, Ti, Tj, Z = _between_error_setup(rng, dim, EDGE_ANGLES[:-2])
    e, _, _ = lie.between_error(*Ti, *Tj, *Z)
    np.testing.assert_allclose(e, xi_e, rtol=0, atol=1e-12)
    np.testing.assert_allclose(e, log(*lie.between(*Z, *lie.between(*Ti, *Tj))), rtol=0, atol=1e-13)


@pytest.mark.parametrize("dim", [2, 3])
def test_between_error_jacobians_finite_differences(rng, dim):
    _, _, k = group(dim)
    _, Ti, Tj, Z = _between_error_setup(rng, dim, JAC_ANGLES)
    n = Ti[0].shape[0]
    _, Ji, Jj = lie.between_error(*Ti, *Tj, *Z)

    def e_of_i(d):
        return lie.between_error(*lie.retract(*Ti, d), *Tj, *Z)[0]

    def e_of_j(d):
        return lie.between_error(*Ti, *lie.retract(*Tj, d), *Z)[0]

    zero = np.zeros((n, k))
    np.testing.assert_allclose(Ji, fd_jacobian(e_of_i, zero), rtol=0, atol=FD_TOL)
    np.testing.assert_allclose(Jj, fd_jacobian(e_of_j, zero), rtol=0, atol=FD_TOL)


@pytest.mark.parametrize("dim", [2, 3])
def test_between_error_jacobians_match_their_definition(rng, dim):
    adjoint = lie.se2_adjoint if dim == 2 else lie.se3_adjoint
    jr_inv = lie.se2_right_jacobian_inv if dim == 2 else lie.se3_right_jacobian_inv
    _, Ti, Tj, Z = _between_error_setup(rng, dim, (0.0, 1e-6, 0.05, 0.7, 2.0))
    e, Ji, Jj = lie.between_error(*Ti, *Tj, *Z)
    np.testing.assert_allclose(Jj, jr_inv(e), atol=1e-14)
    np.testing.assert_allclose(Ji, -jr_inv(e) @ adjoint(*lie.between(*Tj, *Ti)), atol=1e-13)


@pytest.mark.parametrize("dim", [2, 3])
def test_between_error_out_buffers(rng, dim):
    _, Ti, Tj, Z = _between_error_setup(rng, dim, (0.01, 1.0))
    fresh = lie.between_error(*Ti, *Tj, *Z)
    out = tuple(np.full_like(a, np.nan) for a in fresh)
    got = lie.between_error(*Ti, *Tj, *Z, out=out)
    assert all(g is o for g, o in zip(got, out, strict=True))
    for g, f in zip(got, fresh, strict=True):
        np.testing.assert_array_equal(g, f)
    with pytest.raises(ValueError):
        lie.between_error(*Ti, *Tj, *Z, out=(out[0], out[1], out[2][:-1]))


# ---------------------------------------------------------------------------------------------
# Rotation parameterisations
# ---------------------------------------------------------------------------------------------
def test_quaternion_known_value():
    h = math.sqrt(0.5)
    R = lie.quaternion_to_rotation(np.array([[0.0, 0.0, h, h]]))  # 90 degrees about z
    np.testing.assert_allclose(R[0], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)
    np.testing.assert_allclose(lie.rotation_to_quaternion(R), [[0.0, 0.0, h, h]], atol=1e-15)
    np.testing.assert_array_equal(lie.quaternion_to_rotation(np.array([[0.0, 0, 0, 1]]))[0], np.eye(3))


def test_quaternion_round_trip_and_sign(rng):
    q = rng.normal(size=(500, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    R = lie.quaternion_to_rotation(q)
    q2 = lie.rotation_to_quaternion(R)
    assert np.all(q2[:, 3] >= 0.0)
    np.testing.assert_allclose(q2, q * np.sign(q[:, 3:4]), atol=1e-14)
    np.testing.assert_allclose(lie.quaternion_to_rotation(-q), R, atol=1e-15)
    # Unnormalised input is normalised first.
    np.testing.assert_allclose(lie.quaternion_to_rotation(3.0 * q), R, atol=1e-15)
    # Every branch of Shepperd's method: rotations by ~pi about each axis and about diagonals.
    for w in ([math.pi, 0, 0], [0, math.pi - 1e-9, 0], [0, 0, math.pi], [2.0, 2.0, 0.5], [0, 0, 0]):
        R1 = lie.so3_exp(np.array([w], dtype=float))
        np.testing.assert_allclose(lie.quaternion_to_rotation(lie.rotation_to_quaternion(R1)), R1, atol=1e-15)


def test_quaternion_matches_scipy(rng):
    spatial = pytest.importorskip("scipy.spatial.transform")
    R = lie.so3_exp(unit_vectors(rng, 50) * rng.uniform(0, math.pi, size=(50, 1)))
    q_ref = spatial.Rotation.from_matrix(R).as_quat()  # scalar-last, like ours
    q_ref *= np.sign(q_ref[:, 3:4])
    np.testing.assert_allclose(lie.rotation_to_quaternion(R), q_ref, atol=1e-14)


def test_rpy_known_values():
    half_pi = math.pi / 2
    Rz90 = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    Rx90 = [[1, 0, 0], [0, 0, -1], [0, 1, 0]]
    Ry90 = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]
    np.testing.assert_allclose(lie.rpy_to_rotation(0.0, 0.0, half_pi)[0], Rz90, atol=1e-15)
    np.testing.assert_allclose(lie.rpy_to_rotation(half_pi, 0.0, 0.0)[0], Rx90, atol=1e-15)
    np.testing.assert_allclose(lie.rpy_to_rotation(0.0, half_pi, 0.0)[0], Ry90, atol=1e-15)
    # Order: R = Rz(yaw) Ry(pitch) Rx(roll)
    r, p, y = 0.1, -0.4, 2.0
    Rx = lie.rpy_to_rotation(r, 0.0, 0.0)
    Ry = lie.rpy_to_rotation(0.0, p, 0.0)
    Rz = lie.rpy_to_rotation(0.0, 0.0, y)
    np.testing.assert_allclose(lie.rpy_to_rotation(r, p, y), Rz @ Ry @ Rx, atol=1e-15)


def test_rpy_round_trip(rng):
    n = 500
    roll = rng.uniform(-math.pi, math.pi, n)
    pitch = rng.uniform(-math.pi / 2 + 1e-6, math.pi / 2 - 1e-6, n)
    yaw = rng.uniform(-math.pi, math.pi, n)
    R = lie.rpy_to_rotation(roll, pitch, yaw)
    r2, p2, y2 = lie.rotation_to_rpy(R)
    np.testing.assert_allclose(p2, pitch, atol=1e-9)
    np.testing.assert_allclose(np.angle(np.exp(1j * (r2 - roll))), 0.0, atol=1e-9)
    np.testing.assert_allclose(np.angle(np.exp(1j * (y2 - yaw))), 0.0, atol=1e-9)
    np.testing.assert_allclose(lie.rpy_to_rotation(r2, p2, y2), R, atol=1e-14)


def test_rpy_gimbal_lock():
    for pitch in (math.pi / 2, -math.pi / 2):
        R = lie.rpy_to_rotation([0.3], [pitch], [1.1])
        r, p, y = lie.rotation_to_rpy(R)
        assert abs(p[0] - pitch) < 1e-7
        np.testing.assert_allclose(lie.rpy_to_rotation(r, p, y), R, atol=1e-14)


def test_rpy_matches_scipy(rng):
    spatial = pytest.importorskip("scipy.spatial.transform")
    ypr = rng.uniform(-1.5, 1.5, size=(50, 3))
    ref = spatial.Rotation.from_euler("ZYX", ypr).as_matrix()  # intrinsic z-y'-x'' = Rz Ry Rx
    np.testing.assert_allclose(lie.rpy_to_rotation(ypr[:, 2], ypr[:, 1], ypr[:, 0]), ref, atol=1e-15)


@pytest.mark.parametrize("dim", [2, 3])
def test_project_to_rotation(rng, dim):
    R, _ = random_poses(rng, dim, 100)
    np.testing.assert_allclose(lie.project_to_rotation(R), R, atol=1e-14)
    noisy = R + 1e-3 * rng.normal(size=R.shape)
    P = lie.project_to_rotation(noisy)
    np.testing.assert_allclose(P @ np.swapaxes(P, 1, 2), np.broadcast_to(np.eye(dim), P.shape), atol=1e-14)
    np.testing.assert_allclose(np.linalg.det(P), 1.0, atol=1e-14)
    assert np.max(np.abs(P - R)) < 1e-2
    # The projection is the closest rotation: no random rotation nearby does better.
    dist = np.linalg.norm(P - noisy, axis=(1, 2))
    exp, _, k = group(dim)
    zero = np.zeros((100, dim))
    for _ in range(5):
        Rp = lie.compose(P, zero, exp(1e-3 * rng.normal(size=(100, k)))[0], zero)[0]
        assert np.all(np.linalg.norm(Rp - noisy, axis=(1, 2)) >= dist - 1e-15)
    # A reflection is mapped to a proper rotation.
    Fm = np.eye(dim)[None].copy()
    Fm[0, 0, 0] = -1.0
    np.testing.assert_allclose(np.linalg.det(lie.project_to_rotation(Fm)), 1.0)


# ---------------------------------------------------------------------------------------------
# GTSAM, the benchmark peer
# ---------------------------------------------------------------------------------------------
def test_matches_gtsam_pose3(rng):
    gtsam = pytest.importorskip("gtsam")
    xi = tangents(rng, 3, (1e-4, 0.3, 1.0, 2.0, 3.0), reps=4)
    R, t = lie.se3_exp(xi)
    ours_log = lie.se3_log(R, t)
    ours_jr = lie.se3_right_jacobian(xi)
    ours_jr_inv = lie.se3_right_jacobian_inv(xi)
    ours_adj = lie.se3_adjoint(R, t)
    for k in range(len(xi)):
        P = gtsam.Pose3.Expmap(xi[k])
        np.testing.assert_allclose(P.rotation().matrix(), R[k], atol=GTSAM_TOL)
        np.testing.assert_allclose(P.translation(), t[k], atol=GTSAM_TOL)
        pose = gtsam.Pose3(gtsam.Rot3(R[k]), t[k])
        np.testing.assert_allclose(gtsam.Pose3.Logmap(pose), ours_log[k], atol=GTSAM_TOL)
        np.testing.assert_allclose(gtsam.Pose3.ExpmapDerivative(xi[k]), ours_jr[k], atol=GTSAM_TOL)
        np.testing.assert_allclose(gtsam.Pose3.LogmapDerivative(pose), ours_jr_inv[k], atol=GTSAM_TOL)
        np.testing.assert_allclose(pose.AdjointMap(), ours_adj[k], atol=GTSAM_TOL)


def test_matches_gtsam_pose2(rng):
    gtsam = pytest.importorskip("gtsam")
    # GTSAM's Pose2 derivatives lose digits below theta ~ 1e-2 (ours do not), so stay above it.
    xi = tangents(rng, 2, (0.05, 0.3, 1.0, 2.0, 3.0), reps=4)
    R, t = lie.se2_exp(xi)
    ours_log = lie.se2_log(R, t)
    ours_jr = lie.se2_right_jacobian(xi)
    ours_jr_inv = lie.se2_right_jacobian_inv(xi)
    ours_adj = lie.se2_adjoint(R, t)
    for k in range(len(xi)):
        P = gtsam.Pose2.Expmap(xi[k])
        np.testing.assert_allclose(P.rotation().matrix(), R[k], atol=GTSAM_TOL)
        np.testing.assert_allclose(P.translation(), t[k], atol=GTSAM_TOL)
        pose = gtsam.Pose2(gtsam.Rot2.fromCosSin(R[k, 0, 0], R[k, 1, 0]), t[k])
        np.testing.assert_allclose(gtsam.Pose2.Logmap(pose), ours_log[k], atol=GTSAM_TOL)
        np.testing.assert_allclose(gtsam.Pose2.ExpmapDerivative(xi[k]), ours_jr[k], atol=GTSAM_TOL)
        np.testing.assert_allclose(gtsam.Pose2.LogmapDerivative(pose), ours_jr_inv[k], atol=GTSAM_TOL)
        np.testing.assert_allclose(pose.AdjointMap(), ours_adj[k], atol=GTSAM_TOL)


@pytest.mark.parametrize("dim", [2, 3])
def test_matches_gtsam_between_factor(rng, dim):
    gtsam = pytest.importorskip("gtsam")
    k = 3 if dim == 2 else 6
    Ti = random_poses(rng, dim, 10)
    Tj = random_poses(rng, dim, 10)
    Z = random_poses(rng, dim, 10)
    e, Ji, Jj = lie.between_error(*Ti, *Tj, *Z)

    def to_gtsam(T, m):
        R, t = T[0][m], T[1][m]
        if dim == 2:
            return gtsam.Pose2(gtsam.Rot2.fromCosSin(R[0, 0], R[1, 0]), t)
        return gtsam.Pose3(gtsam.Rot3(R), t)

    factor_type = gtsam.BetweenFactorPose2 if dim == 2 else gtsam.BetweenFactorPose3
    for m in range(10):
        factor = factor_type(1, 2, to_gtsam(Z, m), gtsam.noiseModel.Unit.Create(k))
        values = gtsam.Values()
        values.insert(1, to_gtsam(Ti, m))
        values.insert(2, to_gtsam(Tj, m))
        np.testing.assert_allclose(factor.unwhitenedError(values), e[m], atol=GTSAM_TOL)
        # A unit-noise linearisation is [J_i J_j] with b = -e.
        A, b = factor.linearize(values).jacobian()
        np.testing.assert_allclose(A[:, :k], Ji[m], atol=GTSAM_TOL)
        np.testing.assert_allclose(A[:, k:], Jj[m], atol=GTSAM_TOL)
        np.testing.assert_allclose(b, -e[m], atol=GTSAM_TOL)
