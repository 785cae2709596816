"""solve_schur (point elimination) against the dense / sparse direct solution of the damped normal equations."""

import time

import numpy as np
import pytest
import scipy.sparse as sp

from mp_slam_ros.ba.problem import BalBundleAdjustmentProblem, BalState
from mp_slam_ros.io.bal import BalProblem, read_bal, write_bal
from mp_slam_ros.solver.jacobian import BlockJacobian
from mp_slam_ros.solver.linear import solve_direct
from mp_slam_ros.solver.schur import solve_schur


def _dense_system(jac, damping_diag):
    dense = jac.to_csr().toarray()
    return dense.T @ dense + np.diag(damping_diag)


def _random_ba(rng, num_cameras=5, cam_width=6, num_points=40, fixed_cameras=(0,), dtype=np.float64):
    """A BA-like block Jacobian with interleaved camera/point columns, fixed cameras, a fixed
    point slot, a duplicated observation, an all-fixed block and an untouched column."""
    free_cams = [c for c in range(num_cameras) if c not in fixed_cameras]
    # Variables (camera c or point p) laid out in x in a random order, plus one spare column.
    variables = [("c", c) for c in free_cams] + [("p", p) for p in range(num_points)] + [("spare", 0)]
    order = rng.permutation(len(variables))
    start, col = {}, 0
    for k in order:
        kind, idx = variables[k]
        start[(kind, idx)] = col
        col += {"c": cam_width, "p": 3, "spare": 1}[kind]
    num_columns = col

    cam_idx, pt_idx = [], []
    for p in range(num_points):
        seen = rng.choice(num_cameras, size=rng.integers(2, num_cameras + 1), replace=False)
        cam_idx += list(seen)
        pt_idx += [p] * len(seen)
    cam_idx += [cam_idx[0], free_cams[0]]  # a repeated observation, and one of a fixed point
    pt_idx += [pt_idx[0], -1]
    n_obs = len(cam_idx)
    col_start = np.array(
        [[start.get(("c", c), -1), start[("p", p)] if p >= 0 else -1] for c, p in zip(cam_idx, pt_idx, strict=True)]
        + [[-1, -1]],  # cost-completion-like block: both slots fixed, values must be ignored
        dtype=np.int64,
    )
    values = rng.standard_normal((n_obs + 1, 2, cam_width + 3))
    values[-1] = 1e3
    jac = BlockJacobian(values.astype(dtype), col_start, (cam_width, 3), num_columns)
    gradient = rng.standard_normal(num_columns)
    damping = 1e-3 * np.clip(jac.column_norms() ** 2, 1e-6, 1e32)
    return jac, gradient, damping


@pytest.mark.parametrize("cam_width", [6, 9])
@pytest.mark.parametrize("fixed_cameras", [(), (0,), (1, 3)])
def test_matches_dense_solution(cam_width, fixed_cameras):
    rng = np.random.default_rng(cam_width + len(fixed_cameras))
    jac, gradient, damping = _random_ba(rng, cam_width=cam_width, fixed_cameras=fixed_cameras)
    res = solve_schur(jac, gradient, damping)
    assert res.status == "direct" and not res.failed
    H = _dense_system(jac, damping)
    expected = np.linalg.solve(H, -gradient)
    assert np.linalg.norm(res.x - expected) <= 1e-10 * np.linalg.norm(expected)
    direct = solve_direct(sp.csr_matrix(H), -gradient)
    assert np.linalg.norm(res.x - direct.x) <= 1e-10 * np.linalg.norm(direct.x)


def test_fp32_values_and_swapped_slots():
    rng = np.random.default_rng(7)
    jac, gradient, damping = _random_ba(rng, dtype=np.float32)
    expected = np.linalg.solve(_dense_system(jac, damping), -gradient)
    res = solve_schur(jac, gradient, damping)
    assert res.status == "direct"
    assert np.linalg.norm(res.x - expected) <= 1e-10 * np.linalg.norm(expected)
    # The same Jacobian with the slots stored the other way round.
    swapped = BlockJacobian(
        np.concatenate([jac.values[:, :, 6:], jac.values[:, :, :6]], axis=2),
        jac.col_start[:, ::-1].copy(),
        (3, 6),
        jac.num_columns,
    )
    res2 = solve_schur(swapped, gradient, damping, camera_slot=1, point_slot=0)
    assert np.linalg.norm(res2.x - expected) <= 1e-10 * np.linalg.norm(expected)


def _tiny_bal(rng, num_cameras=4, num_points=25):
    points = rng.uniform(-1.0, 1.0, (num_points, 3))
    cameras = np.zeros((num_cameras, 9))
    cameras[:, :3] = rng.normal(0.0, 0.1, (num_cameras, 3))
    cameras[:, 3:5] = rng.normal(0.0, 0.3, (num_cameras, 2))
    cameras[:, 5] = -8.0  # BAL: points in front of the camera have P_z < 0
    cameras[:, 6] = 500.0
    cameras[:, 7] = 1e-2
    cameras[:, 8] = 1e-3
    cam_idx, pt_idx = [], []
    for p in range(num_points):
        seen = np.sort(rng.choice(num_cameras, size=rng.integers(2, num_cameras + 1), replace=False))
        cam_idx += list(seen)
        pt_idx += [p] * len(seen)
    cam_idx, pt_idx = np.array(cam_idx), np.array(pt_idx)
    # Pixels of a perturbed scene: a few px of error and some outliers, so Huber is active.
    truth = BalProblem(cam_idx, pt_idx, np.zeros((len(cam_idx), 2)), cameras, points)
    clean, _ = BalBundleAdjustmentProblem(truth).evaluate(BalState(cameras, points), False)
    noise = rng.normal(0.0, 2.0, clean.shape)
    noise[::7] += 40.0
    return BalProblem(cam_idx, pt_idx, clean + noise, cameras + rng.normal(0, 1e-3, cameras.shape), points)


def test_bal_problem_with_huber_loss(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "tiny-bal.txt"
    write_bal(_tiny_bal(rng), path)
    bal = read_bal(path)
    problem = BalBundleAdjustmentProblem(bal, loss="huber", loss_scale=1.0)
    residuals, jac = problem.linearize(problem.initial_state(), np.dtype(np.float64))
    # The robust problem appends the cost-completion block, both slots fixed.
    assert jac.values.shape[0] == bal.num_observations + 1
    assert np.all(jac.col_start[-1] == -1)
    gradient = jac.rmatvec(residuals)
    damping = 1e-4 * np.clip(jac.column_norms() ** 2, 1e-6, 1e32)
    res = solve_schur(jac, gradient, damping)
    assert res.status == "direct"
    H = _dense_system(jac, damping)
    expected = np.linalg.solve(H, -gradient)
    assert np.linalg.norm(res.x - expected) <= 1e-10 * np.linalg.norm(expected)
    direct = solve_direct(sp.csr_matrix(H), -gradient, problem.block_size)
    assert np.linalg.norm(res.x - direct.x) <= 1e-10 * np.linalg.norm(direct.x)


def test_not_positive_definite_is_breakdown():
    rng = np.random.default_rng(11)
    jac, gradient, damping = _random_ba(rng)
    # Indefinite damping on the cameras: the reduced camera matrix S is not positive definite.
    cam_cols = np.unique((jac.col_start[:, 0][jac.col_start[:, 0] >= 0, None] + np.arange(6)).ravel())
    bad = damping.copy()
    bad[cam_cols] = -1e6
    res = solve_schur(jac, gradient, bad)
    assert res.status == "breakdown" and res.failed
    # No damping and a point seen once: its 3x3 block V_p has rank 2.
    single = BlockJacobian(rng.standard_normal((1, 2, 9)), np.array([[0, 6]], dtype=np.int64), (6, 3), 9)
    res = solve_schur(single, rng.standard_normal(9), np.zeros(9))
    assert res.status == "breakdown"
    # An untouched column without damping is singular too.
    no_damp_spare = damping.copy()
    spare = np.flatnonzero(
        np.bincount(
            np.concatenate(
                [
                    (jac.col_start[:, s][jac.col_start[:, s] >= 0, None] + np.arange(w)).ravel()
                    for s, w in enumerate(jac.slot_widths)
                ]
            ),
            minlength=jac.num_columns,
        )
        == 0
    )
    assert spare.size == 1
    no_damp_spare[spare] = 0.0
    assert solve_schur(jac, gradient, no_damp_spare).status == "breakdown"


def test_non_finite():
    rng = np.random.default_rng(5)
    jac, gradient, damping = _random_ba(rng)
    g = gradient.copy()
    g[3] = np.nan
    assert solve_schur(jac, g, damping).status == "non_finite"
    jac.values[0, 0, 0] = np.inf
    assert solve_schur(jac, gradient, damping).status == "non_finite"


def test_bal_49_cameras(shared_data):
    path = shared_data / "ba" / "minisam" / "problem-49-7776-pre.txt"
    if not path.is_file():
        pytest.skip(f"{path.name} not in the shared data")
    problem = BalBundleAdjustmentProblem(read_bal(path))
    residuals, jac = problem.linearize(problem.initial_state(), np.dtype(np.float64))
    gradient = jac.rmatvec(residuals)
    damping = 1e-4 * jac.column_norms() ** 2
    solve_schur(jac, gradient, damping)  # compile / warm up
    t0 = time.perf_counter()
    res = solve_schur(jac, gradient, damping)
    elapsed = time.perf_counter() - t0
    print(f"solve_schur on problem-49-7776: {elapsed * 1e3:.1f} ms")
    assert res.status == "direct"
    x = res.x
    normal_residual = jac.rmatvec(jac.matvec(x)) + damping * x + gradient
    assert np.linalg.norm(normal_residual) <= 1e-10 * np.linalg.norm(gradient)
    csr = jac.to_csr()
    direct = solve_direct((csr.T @ csr + sp.diags(damping)).tocsr(), -gradient, problem.block_size)
    assert np.linalg.norm(x - direct.x) <= 1e-8 * np.linalg.norm(direct.x)
