"""Robust loop edges and the cross-solve preconditioner cache of the pose-graph optimisation."""

import dataclasses

import numpy as np
import pytest

from mp_slam_ros.pgo.problem import PoseGraphProblem, optimize_pose_graph
from mp_slam_ros.pgo.synthetic import make_loop_pose_graph
from mp_slam_ros.solver.linear import BlockIncompleteCholesky, BlockSparseMatrix
from mp_slam_ros.solver.lm import PreconditionerCache, SolverOptions
from mp_slam_ros.solver.loss import robust_weights
from mp_slam_ros.solver.precision import Precision


@pytest.fixture(scope='module')
def synthetic():
    return make_loop_pose_graph(num_poses=300, seed=3)


def _is_loop(graph):
    return np.abs(graph.edge_i - graph.edge_j) != 1


def _with_false_loop(graph, i, j):
    """Pose j claims to be exactly at pose i: what a repeated texture suggests."""
    info = graph.information[_is_loop(graph)][:1]
    return dataclasses.replace(
        graph,
        edge_i=np.append(graph.edge_i, i),
        edge_j=np.append(graph.edge_j, j),
        meas_rotations=np.concatenate([graph.meas_rotations, np.eye(3)[None]]),
        meas_translations=np.concatenate([graph.meas_translations, np.zeros((1, 3))]),
        information=np.concatenate([graph.information, info]),
    )


def _ate(graph, truth):
    return float(np.sqrt(np.mean(np.sum((graph.translations - truth) ** 2, axis=1))))


@pytest.mark.parametrize('loss', ['huber', 'cauchy'])
def test_robust_cost_is_half_sum_of_rho(synthetic, loss):
    graph = synthetic.graph
    mask = _is_loop(graph)
    plain = PoseGraphProblem(graph)
    robust = PoseGraphProblem(graph, loss=loss, loss_scale=2.0, robust_edges=mask)
    state = plain.initial_state()
    r = plain.residuals(state, np.dtype(np.float64)).reshape(-1, 6)
    s = np.einsum('ea,ea->e', r, r)
    b = 4.0
    rho = b * np.log1p(s / b) if loss == 'cauchy' else np.where(s <= b, s, 2 * 2.0 * np.sqrt(s) - b)
    expected = 0.5 * (s[~mask].sum() + rho[mask].sum())
    assert robust.cost(state) == pytest.approx(expected, rel=1e-12)
    # The linearisation's residuals give the same cost (the completion block closes the gap).
    r_lin, _ = robust.linearize(state, np.dtype(np.float64))
    assert 0.5 * r_lin @ r_lin == pytest.approx(expected, rel=1e-12)


def test_robust_gradient_matches_finite_differences(synthetic):
    graph = synthetic.graph
    problem = PoseGraphProblem(graph, loss='cauchy', loss_scale=1.0, robust_edges=_is_loop(graph))
    state = problem.initial_state()
    r, jac = problem.linearize(state, np.dtype(np.float64))
    gradient = jac.rmatvec(r)
    rng = np.random.default_rng(0)
    for k in rng.choice(problem.num_parameters, size=6, replace=False):
        h = 1e-6
        step = np.zeros(problem.num_parameters)
        step[k] = h
        numeric = (problem.cost(problem.retract(state, step)) - problem.cost(problem.retract(state, -step))) / (2 * h)
        assert numeric == pytest.approx(gradient[k], rel=1e-4, abs=1e-6 * max(1.0, abs(gradient).max()))


def test_robust_weights_match_the_loss_derivative():
    s = np.array([0.0, 0.5, 1.0, 4.0, 100.0])
    b = 1.0

    def huber(x):
        return np.where(x <= b, x, 2 * np.sqrt(b * x) - b)

    def cauchy(x):
        return b * np.log1p(x / b)

    for kind, rho in ((1, huber), (2, cauchy)):
        rho1, deficit = robust_weights(s, kind, b)
        h = 1e-6
        numeric = (rho(s + h) - rho(np.maximum(s - h, 0))) / (s + h - np.maximum(s - h, 0))
        np.testing.assert_allclose(rho1[1:], numeric[1:], rtol=1e-5)
        np.testing.assert_allclose(deficit, rho(s) - rho1 * s, atol=1e-12)
        assert np.all(deficit >= 0)


@pytest.mark.parametrize('precision', ['fp64', 'mixed'])
def test_cauchy_loop_edges_reject_a_false_loop(synthetic, precision):
    graph = synthetic.graph
    truth = synthetic.true_translations
    clean, _ = optimize_pose_graph(graph, precision, SolverOptions(), 'given')
    corrupted = _with_false_loop(graph, 20, 250)
    mask = _is_loop(corrupted)
    least_squares, _ = optimize_pose_graph(corrupted, precision, SolverOptions(), 'given')
    robust, summary = optimize_pose_graph(
        corrupted, precision, SolverOptions(), 'given', loss='cauchy', loss_scale=3.0, robust_edges=mask
    )
    assert summary.termination == 'CONVERGENCE'
    # Least squares bends the whole map towards the false loop; the robust loss ignores it.
    assert _ate(least_squares, truth) > 2 * _ate(clean, truth)
    assert _ate(robust, truth) == pytest.approx(_ate(clean, truth), rel=0.05)
    problem = PoseGraphProblem(robust, loss='cauchy', loss_scale=3.0, robust_edges=mask)
    weights = problem.edge_weights(problem.initial_state())
    assert weights[-1] < 1e-3  # the false loop is switched off
    assert weights[mask][:-1].min() > 0.1  # the true ones are not
    assert np.all(weights[~mask] == 1.0)


def test_extended_factor_keeps_old_blocks_and_adds_identity():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((12, 12))
    spd = a @ a.T + 12 * np.eye(12)
    import scipy.sparse as sp

    factor = BlockIncompleteCholesky.factor(BlockSparseMatrix.from_scipy(sp.csr_matrix(spd), 3), fill_level=99)
    grown = factor.extended(6).stored(Precision.FP64)
    factor.stored(Precision.FP64)
    r = rng.standard_normal(18)
    out = grown.apply(r)
    np.testing.assert_allclose(out[:12], factor.apply(r[:12]), rtol=1e-12)
    np.testing.assert_allclose(out[12:], r[12:], rtol=1e-12)
    with pytest.raises(ValueError):
        factor.extended(2)


def _prefix(graph, n):
    keep = (graph.edge_i < n) & (graph.edge_j < n)
    return dataclasses.replace(
        graph, ids=graph.ids[:n], rotations=graph.rotations[:n], translations=graph.translations[:n],
        fixed=graph.fixed[:n], edge_i=graph.edge_i[keep], edge_j=graph.edge_j[keep],
        meas_rotations=graph.meas_rotations[keep], meas_translations=graph.meas_translations[keep],
        information=graph.information[keep],
    )  # fmt: skip


def test_preconditioner_cache_reuses_until_the_growth_threshold(synthetic):
    graph = synthetic.graph
    # Solved once, so later solves start near the optimum as in incremental loop closure.
    solved, _ = optimize_pose_graph(graph, 'fp64', SolverOptions(), 'given')
    options = SolverOptions(ic_refactor_cg_iterations=0)  # isolate the growth rule
    cache = PreconditionerCache(growth_threshold=0.15)
    first = optimize_pose_graph(_prefix(solved, 200), 'mixed', options, 'given', preconditioner_cache=cache)[1]
    assert first.preconditioner_events == ['first factorisation'] and not first.preconditioner_reused
    small = optimize_pose_graph(_prefix(solved, 215), 'mixed', options, 'given', preconditioner_cache=cache)[1]
    assert small.preconditioner_reused and small.preconditioner_factorizations == 0
    big = optimize_pose_graph(_prefix(solved, 300), 'mixed', options, 'given', preconditioner_cache=cache)[1]
    assert not big.preconditioner_reused and big.preconditioner_factorizations == 1
    assert 'grew' in big.preconditioner_events[0]
    assert cache.factorizations == 2 and cache.reuses == 1
    # Reuse changes the path, not the answer.
    reference = optimize_pose_graph(_prefix(solved, 215), 'mixed', options, 'given')[1]
    assert small.final_cost == pytest.approx(reference.final_cost, rel=1e-6)
    cache.clear()
    again = optimize_pose_graph(_prefix(solved, 215), 'mixed', options, 'given', preconditioner_cache=cache)[1]
    assert again.preconditioner_events == ['first factorisation']
