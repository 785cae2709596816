"""Tests for mp_slam_ros.solver.linear: CGNR at every storage precision, damping, the block
incomplete-Cholesky preconditioner, and how failures are reported.

Only public behaviour is tested (results of solve_cgnr / solve_direct, applying the
preconditioner, its recorded shift), so the tests survive changes to the preconditioner's
fill, ordering and storage layout.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import scipy.sparse as sp

from mp_slam_ros.solver import linear
from mp_slam_ros.solver.jacobian import BlockJacobian
from mp_slam_ros.solver.linear import (
    BlockSparseMatrix,
    PrecisionOverflow,
    StoredJacobian,
    solve_cgnr,
    solve_direct,
)
from mp_slam_ros.solver.precision import Precision

P16, P32, P64 = Precision.FP16, Precision.FP32, Precision.FP64
BS = 3
U16 = 2.0**-11

# The preconditioner class was renamed while the lead reworks fill and ordering.
Preconditioner = getattr(linear, "BlockIncompleteCholesky", None) or linear.BlockIC0


def factor(matrix: BlockSparseMatrix, natural_order: bool = False):
    """Factor with default options; `natural_order` asks for no reordering when supported."""
    kwargs = {}
    if natural_order and "ordering" in inspect.signature(Preconditioner.factor).parameters:
        kwargs["ordering"] = "natural"
    return Preconditioner.factor(matrix, **kwargs)


def cgnr(jac: BlockJacobian, stored: StoredJacobian, b, damping, pre, vectors: Precision, tol, max_iterations):
    """solve_cgnr for min |J x - b|^2 + sum_k damping_k x_k^2, i.e. (J^T J + diag(damping)) x = J^T b.

    solve_cgnr takes either the residual-side vector (the older `rhs`, from which it forms J^T b
    with the stored J) or the fp64 gradient (`gradient` = J^T r with r = -b); both describe this
    problem, so the tests run against either signature."""
    if takes_gradient():
        with np.errstate(invalid="ignore", over="ignore"):
            vector = -jac.rmatvec(b)
    else:
        vector = b
    return solve_cgnr(stored, vector, damping, pre, vectors, tol, max_iterations)


def takes_gradient() -> bool:
    return list(inspect.signature(solve_cgnr).parameters)[1] == "gradient"


def apply_preconditioner(pre, r: np.ndarray) -> np.ndarray:
    if not hasattr(pre, "apply"):
        pytest.skip("this preconditioner version has no apply(); exactness is covered by the 1-iteration test")
    return pre.apply(np.ascontiguousarray(r, dtype=np.float64))


# ---------------------------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------------------------
def block_problem(seed: int = 0, nvars: int = 40, extra_edges: int = 30, chain_only: bool = False):
    """A block Jacobian shaped like a pose graph: a prior block per variable (second slot fixed),
    a chain of binary blocks, and `extra_edges` random loop blocks. Columns get scales spread
    over e^-2..e^2 so that the column scaling matters. Well conditioned: cond(J) ~ 15."""
    rng = np.random.default_rng(seed)
    blocks, cols = [], []
    for i in range(nvars):
        prior = 2.0 * np.eye(BS) + 0.3 * rng.standard_normal((BS, BS))
        blocks.append(np.concatenate([prior, np.zeros((BS, BS))], axis=1))
        cols.append((i * BS, -1))
    pairs = [(i, i + 1) for i in range(nvars - 1)]
    while not chain_only and len(pairs) < nvars - 1 + extra_edges:
        i, j = rng.choice(nvars, 2, replace=False)
        pairs.append((int(i), int(j)))
    for i, j in pairs:
        blocks.append(rng.standard_normal((BS, 2 * BS)))
        cols.append((i * BS, j * BS))
    values = np.array(blocks) * np.exp(rng.uniform(-2.0, 2.0, size=(1, 1, 2 * BS)))
    jac = BlockJacobian(values, np.array(cols, dtype=np.int64), (BS, BS), nvars * BS)
    b = rng.standard_normal(jac.shape[0])
    return jac, b


def dense(jac: BlockJacobian) -> np.ndarray:
    return jac.to_csr().toarray()


def scaled_normal_matrix(jac: BlockJacobian, stored: StoredJacobian) -> BlockSparseMatrix:
    """J_s^T J_s with J_s = J S^-1, the matrix the CGNR preconditioner approximates."""
    js = jac.to_csr() @ sp.diags(1.0 / stored.column_scale)
    return BlockSparseMatrix.from_scipy((js.T @ js).tocsr(), BS)


def preconditioner_for(jac: BlockJacobian, stored: StoredJacobian, precision: Precision, **kw):
    return factor(scaled_normal_matrix(jac, stored), **kw).stored(precision)


def rel_err(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def problem():
    jac, b = block_problem()
    J = dense(jac)
    x_ls = np.linalg.lstsq(J, b, rcond=None)[0]
    return jac, b, J, x_ls


def test_problem_is_well_conditioned(problem):
    _, _, J, _ = problem
    assert J.shape == (327, 120)
    assert np.linalg.cond(J) < 50
    js = J / np.linalg.norm(J, axis=0)
    assert np.linalg.cond(js) < 10


# ---------------------------------------------------------------------------------------------
# fp64: CGNR matches the direct solution
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_preconditioner", [False, True], ids=["plain", "ic"])
def test_cgnr_fp64_matches_lstsq(problem, use_preconditioner):
    jac, b, _, x_ls = problem
    stored = StoredJacobian.store(jac, P64)
    pre = preconditioner_for(jac, stored, P64) if use_preconditioner else None
    res = cgnr(jac, stored, b, 0.0, pre, P64, tol=1e-12, max_iterations=1000)
    assert res.status == "converged" and not res.failed
    assert res.relative_residual <= 1e-12
    assert res.x.dtype == np.float64
    assert rel_err(res.x, x_ls) <= 1e-8


def test_preconditioner_reduces_iterations(problem):
    jac, b, _, _ = problem
    stored = StoredJacobian.store(jac, P64)
    plain = cgnr(jac, stored, b, 0.0, None, P64, tol=1e-10, max_iterations=1000)
    pre = cgnr(jac, stored, b, 0.0, preconditioner_for(jac, stored, P64), P64, tol=1e-10, max_iterations=1000)
    assert pre.status == plain.status == "converged"
    assert pre.iterations < plain.iterations


def test_solve_direct_matches_lstsq(problem):
    _, b, J, x_ls = problem
    res = solve_direct(sp.csr_matrix(J.T @ J), J.T @ b)
    assert res.status == "direct" and not res.failed
    assert rel_err(res.x, x_ls) <= 1e-10


def test_solve_direct_reports_non_finite():
    with np.errstate(invalid="ignore"):
        res = solve_direct(sp.identity(4, format="csr"), np.array([1.0, np.nan, 0.0, 2.0]))
    assert res.status == "non_finite" and res.failed


# ---------------------------------------------------------------------------------------------
# Reduced storage precision
# ---------------------------------------------------------------------------------------------
# Tolerances (this problem: cond(J_s) ~ 4.4, so cond(J_s^T J_s) ~ 20):
# * fp32 storage and fp32 vectors, CG tolerance 1e-6: the stopping test leaves a relative error up
#   to cond(J_s^T J_s) * 1e-6 ~ 2e-5 in the scaled variables; fp32 storage adds ~cond(J_s) * 2^-24.
#   Stated tolerance 5e-5 (measured ~2e-6).
# * fp16 storage: J_s is perturbed entrywise by at most 2^-11; the perturbation bound is computed
#   below from the data (_fp16_perturbation_bound). Stated tolerance
#   2e-3 (measured ~4e-4); it must also be above 1e-5, or fp16 rounding did not happen.
FP32_TOL = 5e-5
FP16_TOL = 2e-3


@pytest.mark.parametrize("use_preconditioner", [False, True], ids=["plain", "ic"])
def test_cgnr_fp32_storage(problem, use_preconditioner):
    jac, b, _, x_ls = problem
    stored = StoredJacobian.store(jac, P32)
    assert stored.values.dtype == np.float32
    pre = preconditioner_for(jac, stored, P32) if use_preconditioner else None
    res = cgnr(jac, stored, b, 0.0, pre, P32, tol=1e-6, max_iterations=1000)
    assert res.status == "converged"
    assert res.x.dtype == np.float64
    assert rel_err(res.x, x_ls) <= FP32_TOL


def _fp16_perturbation_bound(J: np.ndarray, b: np.ndarray, scale: np.ndarray, eps_entry: float) -> float:
    """Relative error bound on y = S x when J_s = J S^-1 is stored with |dJ_s| <= eps_entry |J_s|.

    Two forms, depending on what solve_cgnr is handed (see `cgnr`):
    * the residual side b, so the perturbed least-squares problem min |J~_s y - b| is solved:
      Higham, Accuracy and Stability, Thm 20.1,
          |dy|/|y| <= k e / (1 - k e) (2 + (k + 1) |r| / (|J_s| |y|)),  k = cond(J_s);
    * the exact gradient J_s^T b, so (J~_s^T J~_s) y = J_s^T b: with A = J_s^T J_s,
      |dA| <= (2 e + e^2) |A| and |dy|/|y| <= K h / (1 - K h), K = cond(A), h = 2 e + e^2.
    Here e = eps_entry |(|J_s|)|_2 / |J_s|_2 bounds the norm-wise relative perturbation."""
    js = J / scale
    y = np.linalg.lstsq(js, b, rcond=None)[0]
    r = b - js @ y
    norm = np.linalg.norm(js, 2)
    kappa = np.linalg.cond(js)
    eps = eps_entry * np.linalg.norm(np.abs(js), 2) / norm
    if takes_gradient():
        h = 2 * eps + eps**2
        assert kappa**2 * h < 1
        return kappa**2 * h / (1 - kappa**2 * h)
    assert kappa * eps < 1
    return kappa * eps / (1 - kappa * eps) * (2 + (kappa + 1) * np.linalg.norm(r) / (norm * np.linalg.norm(y)))


@pytest.mark.parametrize("use_preconditioner", [False, True], ids=["plain", "ic"])
@pytest.mark.parametrize("vectors", [P32, P64])
def test_cgnr_fp16_storage(problem, use_preconditioner, vectors):
    jac, b, J, x_ls = problem
    stored = StoredJacobian.store(jac, P16)
    assert stored.values.dtype == np.uint16
    pre = preconditioner_for(jac, stored, P16) if use_preconditioner else None
    tol = 1e-6 if vectors is P32 else 1e-12
    res = cgnr(jac, stored, b, 0.0, pre, vectors, tol=tol, max_iterations=1000)
    assert res.status == "converged"
    err = rel_err(res.x, x_ls)
    assert 1e-5 < err <= FP16_TOL
    # In the scaled variables the error also obeys the perturbation bound plus the CG stopping error.
    s = stored.column_scale
    y_err = rel_err(res.x * s, x_ls * s)
    cond2 = np.linalg.cond(J / s) ** 2
    assert y_err <= _fp16_perturbation_bound(J, b, s, U16) + cond2 * (tol + 1e-6)


def test_fp16_scaling_prevents_overflow_of_large_columns():
    # Values up to ~1e7 cannot be stored in fp16 as they are; scaled to unit columns they can.
    jac, b = block_problem(seed=3)
    jac.values[:] *= 1e7
    with pytest.raises(PrecisionOverflow):
        StoredJacobian.store(jac, P16, scale=False)
    stored = StoredJacobian.store(jac, P16, scale=True)
    res = cgnr(jac, stored, b, 0.0, None, P32, tol=1e-6, max_iterations=1000)
    x_ls = np.linalg.lstsq(dense(jac), b, rcond=None)[0]
    assert res.status == "converged" and rel_err(res.x, x_ls) <= FP16_TOL


def test_fp16_scaling_ignores_values_of_fixed_slots(problem):
    jac, b, _, x_ls = problem
    values = jac.values.copy()
    fixed = jac.col_start[:, 1] < 0
    values[fixed, :, BS:] = 1e6  # never read: those slots belong to fixed variables
    big = BlockJacobian(values, jac.col_start, jac.slot_widths, jac.num_columns)
    np.testing.assert_array_equal(big.matvec(np.ones(jac.num_columns)), jac.matvec(np.ones(jac.num_columns)))
    stored = StoredJacobian.store(big, P16, scale=True)
    res = cgnr(jac, stored, b, 0.0, None, P32, tol=1e-6, max_iterations=1000)
    assert rel_err(res.x, x_ls) <= FP16_TOL


# ---------------------------------------------------------------------------------------------
# Damping
# ---------------------------------------------------------------------------------------------
# solve_cgnr(damping=d) solves min |J x - b|^2 + sum_k d_k x_k^2 in the caller's variables, d a
# scalar or one value per column. Marquardt's damping lam |S x|^2 (S = column norms of J) is
# therefore d = lam S^2, with closed form (J^T J + lam S^2) x = J^T b.
@pytest.mark.parametrize("use_preconditioner", [False, True], ids=["plain", "ic"])
@pytest.mark.parametrize("lam", [1e-3, 0.5])
def test_marquardt_damping_matches_closed_form(problem, lam, use_preconditioner):
    jac, b, J, x_ls = problem
    stored = StoredJacobian.store(jac, P64)
    s = np.linalg.norm(J, axis=0)
    np.testing.assert_allclose(stored.column_scale, s, rtol=1e-12)
    normal = J.T @ J + lam * np.diag(s**2)
    x_closed = np.linalg.solve(normal, J.T @ b)
    pre = preconditioner_for(jac, stored, P64) if use_preconditioner else None
    res = cgnr(jac, stored, b, lam * s**2, pre, P64, tol=1e-12, max_iterations=1000)
    assert res.status == "converged"
    assert rel_err(res.x, x_closed) <= 1e-8
    # Not vacuous: damping changes the answer by far more than the tolerance.
    assert rel_err(x_closed, x_ls) > 1e-5
    # The direct solver gives the same with the damped normal matrix.
    direct = solve_direct(sp.csr_matrix(normal), J.T @ b)
    assert rel_err(direct.x, x_closed) <= 1e-10


@pytest.mark.parametrize("lam", [1e-2, 3.0])
def test_scalar_damping_matches_closed_form(problem, lam):
    """A scalar d damps every unscaled variable alike: (J^T J + d I) x = J^T b."""
    jac, b, J, x_ls = problem
    stored = StoredJacobian.store(jac, P64)
    x_closed = np.linalg.solve(J.T @ J + lam * np.eye(J.shape[1]), J.T @ b)
    res = cgnr(jac, stored, b, lam, preconditioner_for(jac, stored, P64), P64, tol=1e-12, max_iterations=1000)
    assert res.status == "converged"
    assert rel_err(res.x, x_closed) <= 1e-8
    assert rel_err(x_closed, x_ls) > 1e-5


def test_damped_fp16_storage(problem):
    # Damping in fp16 storage + fp32 vectors: within the fp16 tolerance of the fp64 closed form.
    jac, b, J, _ = problem
    s = np.linalg.norm(J, axis=0)
    x_closed = np.linalg.solve(J.T @ J + 0.5 * np.diag(s**2), J.T @ b)
    stored = StoredJacobian.store(jac, P16)
    res = cgnr(jac, stored, b, 0.5 * s**2, preconditioner_for(jac, stored, P16), P32, tol=1e-6, max_iterations=1000)
    assert res.status == "converged"
    assert 1e-6 < rel_err(res.x, x_closed) <= FP16_TOL


# ---------------------------------------------------------------------------------------------
# The block incomplete-Cholesky preconditioner
# ---------------------------------------------------------------------------------------------
def block_tridiagonal(nb: int, off: float, seed: int = 0, spd_margin: bool = True) -> BlockSparseMatrix:
    """Symmetric block-tridiagonal matrix: random symmetric diagonal blocks near I, coupling
    blocks `off` * (I + small noise). With off < 0.5 it is SPD; with off = 0.8 it is indefinite
    (a path graph's adjacency has eigenvalues near +-2)."""
    rng = np.random.default_rng(seed)
    n = nb * BS
    a = np.zeros((n, n))
    for i in range(nb):
        d = rng.standard_normal((BS, BS)) * 0.05
        a[i * BS : (i + 1) * BS, i * BS : (i + 1) * BS] = np.eye(BS) + d + d.T
        if i + 1 < nb:
            c = off * (np.eye(BS) + 0.05 * rng.standard_normal((BS, BS)))
            a[i * BS : (i + 1) * BS, (i + 1) * BS : (i + 2) * BS] = c
            a[(i + 1) * BS : (i + 2) * BS, i * BS : (i + 1) * BS] = c.T
    if spd_margin:
        assert np.linalg.eigvalsh(a)[0] > 0.05
    return BlockSparseMatrix.from_scipy(sp.csr_matrix(a), BS)


def test_factor_is_exact_on_block_tridiagonal():
    """IC(0) drops no fill on a block-tridiagonal matrix, so M = L L^T equals A: M^-1 A v = v."""
    a_mat = block_tridiagonal(25, off=0.3)
    a = a_mat.to_scipy().toarray()
    pre = factor(a_mat, natural_order=True)
    assert pre.shift == 0.0, "an SPD block-tridiagonal matrix must factor without a shift"
    pre.stored(P64)
    rng = np.random.default_rng(1)
    for _ in range(3):
        v = rng.standard_normal(a.shape[0])
        np.testing.assert_allclose(apply_preconditioner(pre, a @ v), v, rtol=0, atol=1e-12 * np.abs(v).max())
    # Not vacuous: A is not block diagonal, so a block-Jacobi M would not pass.
    assert np.abs(a - np.diag(np.diag(a))).max() > 0.2


def test_exact_preconditioner_converges_in_one_iteration():
    """A chain-shaped J has a block-tridiagonal J_s^T J_s; with its exact factor, PCG needs one step."""
    jac, b = block_problem(seed=5, nvars=30, chain_only=True)
    stored = StoredJacobian.store(jac, P64)
    normal = scaled_normal_matrix(jac, stored)
    bandwidth = np.max(np.abs(np.repeat(np.arange(len(normal.indptr) - 1), np.diff(normal.indptr)) - normal.indices))
    assert bandwidth == 1, "J_s^T J_s should be block tridiagonal"
    pre = factor(normal, natural_order=True).stored(P64)
    res = cgnr(jac, stored, b, 0.0, pre, P64, tol=1e-10, max_iterations=100)
    assert res.status == "converged"
    assert res.iterations == 1
    x_ls = np.linalg.lstsq(dense(jac), b, rcond=None)[0]
    assert rel_err(res.x, x_ls) <= 1e-9
    # Without the preconditioner, CG needs many iterations on the same system.
    plain = cgnr(jac, stored, b, 0.0, None, P64, tol=1e-10, max_iterations=1000)
    assert plain.iterations > 5


def test_breakdown_is_cured_by_a_positive_shift():
    """An indefinite matrix (unit diagonal, strong coupling) breaks IC(0) down; the factor then
    retries with A + shift diag(A), and the shift it needed is recorded."""
    a_mat = block_tridiagonal(25, off=0.8, spd_margin=False)
    a = a_mat.to_scipy().toarray()
    assert np.linalg.eigvalsh(a)[0] < 0, "the test matrix must be indefinite"
    pre = factor(a_mat, natural_order=True)
    assert pre.shift > 0.0
    # The shift is the smallest of the tenfold ladder that works, so it is not absurdly large:
    # A + shift diag(A) needs shift > ~0.6 here.
    assert 0.1 < pre.shift <= 10.0
    pre.stored(P64)
    z = apply_preconditioner(pre, np.ones(a.shape[0]))
    assert np.all(np.isfinite(z))
    # The factor is of the shifted matrix: M^-1 (A + shift diag(A)) v = v.
    shifted = a + pre.shift * np.diag(np.diag(a))
    v = np.random.default_rng(2).standard_normal(a.shape[0])
    np.testing.assert_allclose(apply_preconditioner(pre, shifted @ v), v, atol=1e-10)


def test_preconditioner_storage_precisions():
    a_mat = block_tridiagonal(10, off=0.3)
    pre = factor(a_mat)
    v = np.random.default_rng(4).standard_normal(a_mat.n)
    z64 = apply_preconditioner(pre.stored(P64), v)
    z16 = apply_preconditioner(pre.stored(P16), v)
    # fp16 storage of the factor: a small, but visible, relative change of M^-1 v.
    assert 0 < rel_err(z16, z64) < 50 * U16
    z64_again = apply_preconditioner(pre.stored(P64), v)
    np.testing.assert_array_equal(z64_again, z64)  # re-stored from the kept fp64 factor


# ---------------------------------------------------------------------------------------------
# Failures are reported, not hidden
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_preconditioner", [False, True], ids=["plain", "ic"])
@pytest.mark.parametrize(("bad", "where"), [(np.nan, "rhs"), (np.inf, "rhs"), (-np.inf, "rhs"), (np.nan, "damping")])
def test_non_finite_input_gives_status_non_finite(problem, bad, where, use_preconditioner):
    jac, b, _, _ = problem
    stored = StoredJacobian.store(jac, P64)
    pre = preconditioner_for(jac, stored, P64) if use_preconditioner else None
    rhs, damping = b.copy(), 0.0
    if where == "rhs":
        rhs[7] = bad
    else:
        damping = bad
    with np.errstate(invalid="ignore", over="ignore"):
        res = cgnr(jac, stored, rhs, damping, pre, P64, tol=1e-10, max_iterations=200)
    assert res.status == "non_finite"
    assert res.failed


def test_rhs_overflowing_fp32_vectors_gives_non_finite(problem):
    jac, b, _, _ = problem
    stored = StoredJacobian.store(jac, P16)
    rhs = b.copy()
    rhs[0] = 1e39  # finite in fp64, inf in the fp32 CG vectors
    with np.errstate(over="ignore", invalid="ignore"):
        res = cgnr(jac, stored, rhs, 0.0, None, P32, tol=1e-6, max_iterations=200)
    assert res.status == "non_finite" and res.failed


def _tiny_step_under_large_residual(J: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """b = J x_true + r_perp with |x_true| ~ 1e-8 and r_perp orthogonal to range(J), |r_perp| ~ 1:
    the situation of an LM step near the optimum (|J^T b| << |J| |b|)."""
    rng = np.random.default_rng(seed)
    m, n = J.shape
    x_true = 1e-8 * rng.standard_normal(n)
    q, _ = np.linalg.qr(J, mode="complete")
    return x_true, J @ x_true + q[:, n:] @ rng.standard_normal(m - n)


def test_unattainable_tolerance_does_not_diverge():
    """Regression: CGLS run past its attainable accuracy diverged (|x| ~ 1e54 after 500
    iterations, status max_iterations) before pcgls kept the best iterate."""
    # Several instances, with and without the preconditioner; in fp64 the attainable relative
    # normal-equation residual here is ~1e-10, so tol=1e-15 can never be met and CG runs to the cap.
    cases = []
    for m, n, seed in [(15, 9, 0), (40, 12, 0), (200, 60, 0)]:
        J = np.random.default_rng(seed).standard_normal((m, n))
        cases.append((BlockJacobian.dense(J), J, seed, False))
    for seed in range(3):
        jac, _ = block_problem(seed=seed, nvars=20, extra_edges=10)
        cases.append((jac, dense(jac), seed, True))
    failures = []
    for jac, J, seed, use_pre in cases:
        x_true, b = _tiny_step_under_large_residual(J, seed)
        stored = StoredJacobian.store(jac, P64)
        pre = None
        if use_pre:
            pre = preconditioner_for(jac, stored, P64)
        with np.errstate(over="ignore", invalid="ignore"):
            res = cgnr(jac, stored, b, 0.0, pre, P64, tol=1e-15, max_iterations=500)
        # Whatever the status, the step returned must not be worse than the zero step CG started
        # from, and should be as accurate as the data allow (~1e-8 relative here).
        err = rel_err(res.x, x_true) if np.all(np.isfinite(res.x)) else np.inf
        if res.failed or not (res.relative_residual <= 1.0 and err <= 1e-3):
            failures.append(
                f"{J.shape} seed {seed} pre={use_pre}: {res.status}, rel {res.relative_residual:.2g}, err {err:.2g}"
            )
    assert not failures, "; ".join(failures)


# ---------------------------------------------------------------------------------------------
# Block-Jacobi preconditioner of CGNR (variable blocks of mixed sizes: 6x6 poses, 3x3 points)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def window_jacobian():
    from mp_slam_ros.ba.synthetic import make_window

    w = make_window(10, seed=3)
    prob, state = w.problem(fixed_poses=(0, 9))
    res, jac = prob.linearize(state, np.dtype(np.float64))
    return jac, res


def variable_blocks(jac: BlockJacobian) -> list[tuple[int, int]]:
    """(first column, width) of every variable, read independently of the kernel from the slots."""
    width = {}
    for s, w in enumerate(jac.slot_widths):
        for c0 in jac.col_start[:, s]:
            if c0 >= 0:
                width[int(c0)] = w
    return sorted(width.items())


def block_diagonal_inverse(jac: BlockJacobian, scale: np.ndarray, damping: np.ndarray) -> np.ndarray:
    js = dense(jac) / scale
    h = js.T @ js + np.diag(damping)
    out = np.zeros_like(h)
    for c0, w in variable_blocks(jac):
        out[c0 : c0 + w, c0 : c0 + w] = np.linalg.inv(h[c0 : c0 + w, c0 : c0 + w])
    return out


def test_block_jacobi_partition_follows_the_slots(window_jacobian):
    jac, _ = window_jacobian
    pre = linear.BlockJacobiPreconditioner.build(jac, np.ones(jac.num_columns), np.zeros(jac.num_columns))
    expected = variable_blocks(jac)
    assert [(int(a), int(b - a)) for a, b in zip(pre.ptr[:-1], pre.ptr[1:], strict=True)] == expected
    assert {w for _, w in expected} == {6, 3}


@pytest.mark.parametrize("lam", [0.0, 1e-3])
def test_block_jacobi_applies_the_inverse_of_the_block_diagonal(window_jacobian, lam):
    jac, _ = window_jacobian
    scale = jac.column_norms()
    damping = np.full(jac.num_columns, lam)
    pre = linear.BlockJacobiPreconditioner.build(jac, scale, damping).stored(P64)
    assert pre.shifted_blocks == 0
    ref = block_diagonal_inverse(jac, scale, damping)
    r = np.random.default_rng(0).standard_normal(jac.num_columns)
    assert rel_err(pre.apply(r), ref @ r) < 1e-9


def test_block_jacobi_fp16_stays_positive_definite(window_jacobian):
    jac, _ = window_jacobian
    scale = jac.column_norms()
    damping = np.full(jac.num_columns, 1e-6)  # weak damping: ill-conditioned point blocks
    pre = linear.BlockJacobiPreconditioner.build(jac, scale, damping)
    exact = pre.stored(P64).apply(np.eye(jac.num_columns)[0])
    operator = np.stack([pre.stored(P16).apply(np.ascontiguousarray(e)) for e in np.eye(jac.num_columns)], axis=1)
    # Product form G^T G: symmetric and positive definite whatever the rounding of G.
    assert np.allclose(operator, operator.T, rtol=0, atol=1e-6 * np.abs(operator).max())
    assert np.linalg.eigvalsh(0.5 * (operator + operator.T)).min() > 0
    assert rel_err(operator[:, 0], exact) < 5e-2


def test_block_jacobi_shifts_a_variable_nothing_constrains():
    # Variable 1 (columns 3..5) appears only in a block whose values are all zero, no damping.
    values = np.zeros((2, 2, 6))
    values[0, :, :3] = np.arange(6.0).reshape(2, 3) + np.eye(2, 3)
    values[0, :, 3:] = 0.0
    values[1, :, :3] = np.eye(2, 3)
    jac = BlockJacobian(values, np.array([[0, 3], [0, -1]]), (3, 3), 9)  # columns 6..8 in no slot
    pre = linear.BlockJacobiPreconditioner.build(jac, np.ones(9), np.zeros(9)).stored(P64)
    assert pre.num_variables == 5  # (0..2), (3..5), then 1x1 blocks for the uncovered 6, 7, 8
    assert pre.shifted_blocks >= 4
    assert np.all(np.isfinite(pre.apply(np.ones(9))))


@pytest.mark.parametrize("storage", [P64, P32, P16])
def test_cgnr_block_jacobi_matches_direct_solve(window_jacobian, storage):
    jac, res = window_jacobian
    damping = 1e-4 * jac.column_norms() ** 2
    gradient = jac.rmatvec(res)
    h = dense(jac).T @ dense(jac) + np.diag(damping)
    x_ref = np.linalg.solve(h, -gradient)
    stored = StoredJacobian.store(jac, storage)
    pre = linear.BlockJacobiPreconditioner.build(jac, stored.column_scale, damping / stored.column_scale**2)
    vectors = P64 if storage is P64 else P32
    tol = 1e-12 if storage is P64 else 1e-6
    with_pre = solve_cgnr(stored, gradient, damping, pre.stored(vectors), vectors, tol, 3000)
    without = solve_cgnr(stored, gradient, damping, None, vectors, tol, 3000)
    assert with_pre.status == "converged"
    assert with_pre.iterations < 0.5 * without.iterations
    # The true normal-equation residual: CG's own tolerance for fp64/fp32 (plus fp32 rounding of
    # the operator), and for fp16 storage the operator's perturbation |dH x| / |g|, with
    # |dH| <~ 2 * 2^-11 |H| in the scaled variables (measured 7e-7 at fp32, 9e-5 at fp16).
    true_rel = np.linalg.norm(h @ with_pre.x + gradient) / np.linalg.norm(gradient)
    assert true_rel < {P64: 1e-10, P32: 1e-5, P16: 1e-3}[storage]
    if storage is P64:
        assert rel_err(with_pre.x, x_ref) < 1e-8


def test_store_packs_bundle_adjustment_but_not_pose_graphs(window_jacobian, problem):
    jac, _ = window_jacobian
    assert linear.grouped_padding(jac) <= linear.GROUPED_MAX_PADDING
    assert StoredJacobian.store(jac, P32).packed is not None
    assert StoredJacobian.store(jac, P32, layout="rows").packed is None
    graph_jac = problem[0]  # one or two poses per block: grouping by the first would pad ~16x
    assert linear.grouped_padding(graph_jac) > 1.0
    assert StoredJacobian.store(graph_jac, P32).packed is None
    with pytest.raises(ValueError, match="layout"):
        StoredJacobian.store(jac, P32, layout="soa")


@pytest.mark.parametrize("storage", [P64, P32, P16])
def test_cgnr_grouped_layout_matches_block_rows(window_jacobian, storage):
    """The packed CG operator is the same J: both layouts give the same CG path (fp64/fp32 sums in
    another order, fp16 the same bits)."""
    jac, res = window_jacobian
    damping = 1e-4 * jac.column_norms() ** 2
    gradient = jac.rmatvec(res)
    vectors = P64 if storage is P64 else P32
    results = []
    for layout in ("rows", "grouped"):
        stored = StoredJacobian.store(jac, storage, layout=layout)
        pre = linear.BlockJacobiPreconditioner.build(jac, stored.column_scale, damping / stored.column_scale**2)
        results.append(solve_cgnr(stored, gradient, damping, pre.stored(vectors), vectors, 1e-8, 3000))
    rows, grouped = results
    assert rows.status == grouped.status == "converged"
    assert abs(rows.iterations - grouped.iterations) <= 1
    # fp32 CG vectors: both iterates are within cond(H_s) * 2^-24 ~ 1e-4 of the solution (measured
    # 1.1e-4 apart); fp64 agrees to its own round-off.
    assert rel_err(grouped.x, rows.x) < (1e-10 if storage is P64 else 1e-3)


def test_store_reuses_the_previous_grouping_for_the_same_structure(window_jacobian):
    jac, _ = window_jacobian
    first = StoredJacobian.store(jac, P16)
    again = StoredJacobian.store(jac, P32, previous=first)
    fresh = StoredJacobian.store(jac, P32)
    assert again.packed.cols is first.packed.cols  # structure reused, not recomputed
    np.testing.assert_array_equal(again.packed.values, fresh.packed.values)
    np.testing.assert_array_equal(again.packed.cols, fresh.packed.cols)
    other = BlockJacobian(jac.values, jac.col_start[::-1].copy(), jac.slot_widths, jac.num_columns)
    assert StoredJacobian.store(other, P32, previous=first).packed.cols is not first.packed.cols
