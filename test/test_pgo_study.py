"""Keyframe pose-graph generator and the loop-closure PGO studies (time scaling, ATE over many problems).

Measured numbers quoted below are from the reference machine at the time of writing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mp_slam_ros.eval.metrics import absolute_trajectory_error
from mp_slam_ros.eval.pgo_study import (
    DRIFT_REFERENCE_KEYFRAMES,
    drift_matched_graph_options,
    pgo_accuracy_study,
    pgo_scaling_study,
    plot_cumulative_ate,
    plot_pgo_time,
    trajectory_ate,
)
from mp_slam_ros.io.trajectory import Trajectory
from mp_slam_ros.pgo.problem import PoseGraphProblem, optimize_pose_graph
from mp_slam_ros.pgo.synthetic import make_keyframe_pose_graph
from mp_slam_ros.solver.lm import SolverOptions

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def odometry_ate(synthetic) -> float:
    return trajectory_ate(synthetic.graph.translations, synthetic.true_translations)


# ---------------------------------------------------------------------------------------------
# generator
# ---------------------------------------------------------------------------------------------
def test_noise_free_graph_is_satisfied_by_its_ground_truth():
    s = make_keyframe_pose_graph(150, laps=2.5, seed=4, noise_scale=0.0)
    g = s.graph
    # Whitened residuals of the truth: weights up to 1/(0.01 deg) ~ 6e3, so round-off stays far below 1e-6.
    problem = PoseGraphProblem(g.with_poses(s.true_rotations, s.true_translations))
    r = problem.residuals(problem.initial_state(), np.dtype(np.float64))
    assert np.abs(r).max() < 1e-6
    # ... and chaining exact odometry reproduces the truth.
    assert odometry_ate(s) < 1e-9
    assert np.abs(g.rotations - s.true_rotations).max() < 1e-9


def test_graph_structure_spacing_and_information():
    n, laps = 200, 2
    s = make_keyframe_pose_graph(n, laps=laps, seed=1)
    g = s.graph
    assert g.dim == 3 and g.num_poses == n and not g.has_initial_guess
    np.testing.assert_array_equal(g.edge_i[: n - 1], np.arange(n - 1))
    np.testing.assert_array_equal(g.edge_j[: n - 1], np.arange(1, n))
    # Keyframes evenly spaced along the path, ~7.5 cm apart (the outward drift of lap 2 stretches a small loop).
    steps = np.linalg.norm(np.diff(s.true_translations, axis=0), axis=1)
    assert steps.max() < 1.001 * steps.min()
    assert 0.075 <= steps.mean() < 0.08
    # Keyframe 0 is the origin of the truth, where the odometry chain starts.
    np.testing.assert_allclose(s.true_rotations[0], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(s.true_translations[0], 0.0, atol=1e-12)
    # Loop edges: to a nearby keyframe at least half a lap earlier, about one per keyframe of lap 2 (plus a few
    # at the end of lap 1, which comes back to the start).
    li, lj = g.edge_i[n - 1 :], g.edge_j[n - 1 :]
    assert 0.45 * n < li.size < 0.6 * n
    assert np.count_nonzero(lj >= n // laps) >= 0.45 * n
    assert np.all(lj - li >= math.ceil(0.5 * n / laps))
    dist = np.linalg.norm(s.true_translations[li] - s.true_translations[lj], axis=1)
    assert dist.max() < 0.25 and np.median(dist) < 0.08
    # Information = inverse covariance, rotation block first (GTSAM's order).
    odo, loop = g.information[0], g.information[-1]
    np.testing.assert_allclose(np.diag(odo), [1 / math.radians(0.05) ** 2] * 3 + [1 / 0.001**2] * 3)
    np.testing.assert_allclose(np.diag(loop), [1 / math.radians(0.01) ** 2] * 3 + [1 / 0.001**2] * 3)
    assert np.count_nonzero(odo - np.diag(np.diag(odo))) == 0


def test_loop_every_thins_the_loop_edges():
    every1 = make_keyframe_pose_graph(200, seed=0).graph
    every3 = make_keyframe_pose_graph(200, seed=0, loop_every=3).graph
    loops1, loops3 = every1.num_edges - 199, every3.num_edges - 199
    assert loops3 == math.ceil(loops1 / 3)


def test_odometry_ate_grows_with_noise_and_length():
    ates = [odometry_ate(make_keyframe_pose_graph(200, seed=3, noise_scale=k)) for k in (0.25, 1.0, 4.0)]
    assert ates[0] < ates[1] < ates[2]
    # The noise draws are the same, so small noise scales the drift about linearly.
    assert 2.0 < ates[1] / ates[0] < 6.0
    # Default noise drifts like keyframes ** 1.5: ~0.1 m at the reference size (measured median 0.096 m).
    short = np.median([odometry_ate(make_keyframe_pose_graph(100, seed=k)) for k in range(5)])
    ref = np.median([odometry_ate(make_keyframe_pose_graph(DRIFT_REFERENCE_KEYFRAMES, seed=k)) for k in range(5)])
    assert 0.04 < ref < 0.25
    assert ref > 3.0 * short


def test_drift_matched_options_keep_the_odometry_error():
    assert drift_matched_graph_options(DRIFT_REFERENCE_KEYFRAMES) == pytest.approx(
        {"odometry_rotation_sigma": math.radians(0.05), "odometry_translation_sigma": 0.001}
    )
    ates = [odometry_ate(make_keyframe_pose_graph(300, seed=k, **drift_matched_graph_options(300))) for k in range(5)]
    assert 0.04 < np.median(ates) < 0.25


def test_generator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_keyframes"):
        make_keyframe_pose_graph(1)
    with pytest.raises(ValueError, match="laps"):
        make_keyframe_pose_graph(50, laps=0)
    with pytest.raises(ValueError, match="loop_rotation_sigma"):
        make_keyframe_pose_graph(50, loop_rotation_sigma=0.0)


# ---------------------------------------------------------------------------------------------
# PGO on keyframe graphs
# ---------------------------------------------------------------------------------------------
def test_pgo_removes_most_of_the_rotation_drift():
    # Rotation-dominated odometry and four laps: the loops pin the heading every lap. The floor PGO
    # leaves is the odometry noise between loops, so the gain grows with laps and with the rotation
    # share of the drift (two laps of the default noise gain ~5x, see the accuracy study).
    # Measured: mean odometry ATE 0.018 m, after PGO 0.0011 m (16x) over these seeds.
    before, after = [], []
    for seed in range(6):
        s = make_keyframe_pose_graph(
            160, laps=4, seed=seed, odometry_rotation_sigma=math.radians(0.1), odometry_translation_sigma=1e-4
        )
        out, summary = optimize_pose_graph(s.graph, "fp64", SolverOptions(), initialization="given")
        assert summary.termination == "CONVERGENCE"
        before.append(odometry_ate(s))
        after.append(trajectory_ate(out.translations, s.true_translations))
    assert np.mean(before) > 10.0 * np.mean(after)


def test_pgo_with_default_noise_improves_every_problem():
    for seed in range(3):
        s = make_keyframe_pose_graph(200, seed=seed)
        out, _ = optimize_pose_graph(s.graph, "mixed", SolverOptions(), initialization="given")
        assert trajectory_ate(out.translations, s.true_translations) < 0.7 * odometry_ate(s)


@pytest.mark.parametrize("precision", ["fp32", "mixed"])
def test_reduced_precision_matches_fp64_accuracy(precision):
    s = make_keyframe_pose_graph(150, seed=2)
    ref, _ = optimize_pose_graph(s.graph, "fp64", SolverOptions(), initialization="given")
    out, summary = optimize_pose_graph(s.graph, precision, SolverOptions(), initialization="given")
    assert summary.termination == "CONVERGENCE"
    a64 = trajectory_ate(ref.translations, s.true_translations)
    a = trajectory_ate(out.translations, s.true_translations)
    # Measured |a - a64| / a64 ~ 1e-4; the solutions differ by micrometres.
    assert abs(a - a64) <= 0.02 * a64
    assert trajectory_ate(out.translations, ref.translations) < 1e-3 * a64


def test_trajectory_ate_matches_the_evo_style_metric():
    s = make_keyframe_pose_graph(80, seed=5)

    def traj(rot, trans):
        poses = np.tile(np.eye(4), (rot.shape[0], 1, 1))
        poses[:, :3, :3], poses[:, :3, 3] = rot, trans
        return Trajectory(np.arange(rot.shape[0], dtype=np.int64) * 100_000_000, poses)

    est = traj(s.graph.rotations, s.graph.translations)
    ref = traj(s.true_rotations, s.true_translations)
    for align, name in ((False, "none"), (True, "se3")):
        expected = absolute_trajectory_error(est, ref, align=name).rmse
        assert trajectory_ate(s.graph.translations, s.true_translations, align=align) == pytest.approx(expected)
    assert trajectory_ate(s.graph.translations, s.true_translations, align=True) <= odometry_ate(s)


# ---------------------------------------------------------------------------------------------
# studies and plots
# ---------------------------------------------------------------------------------------------
SCALING_KEYS = {
    "series", "keyframes", "poses", "edges", "loop_edges", "precision", "linear_solver", "initialization",
    "match_drift", "graph_options", "time", "times", "cpu_times", "warmup_time", "n_runs", "iterations",
    "cg_iterations", "fallbacks", "preconditioner_factorizations", "termination", "message", "initial_cost",
    "final_cost", "final_cost_fp64", "ate_initial", "ate_final", "stage_times", "deterministic",
}  # fmt: skip


@pytest.fixture(scope="module")
def scaling_records():
    records = pgo_scaling_study([40, 80], precisions=("fp64", "mixed"), repeats=2)
    records += pgo_scaling_study([40], precisions=("fp64",), repeats=1, linear_solver="cholesky")
    return records


def test_scaling_study_records(scaling_records):
    assert len(scaling_records) == 5
    for r in scaling_records:
        assert set(r) == SCALING_KEYS
        assert r["poses"] == r["keyframes"] and r["edges"] == r["poses"] - 1 + r["loop_edges"]
        assert r["loop_edges"] > 0
        assert r["n_runs"] == len(r["times"]) == len(r["cpu_times"])
        assert r["time"] > 0 and r["iterations"] >= 1
        assert r["termination"] == "CONVERGENCE"
        assert r["ate_final"] < r["ate_initial"]
        assert r["final_cost_fp64"] < r["initial_cost"]
    first = scaling_records[0]
    assert (first["series"], first["keyframes"], first["precision"], first["n_runs"]) == ("fp64", 40, "fp64", 2)
    chol = scaling_records[-1]
    assert chol["series"] == "cholesky (fp64)" and chol["linear_solver"] == "cholesky"
    # Same graph, same optimum whatever the solver.
    assert chol["final_cost_fp64"] == pytest.approx(first["final_cost_fp64"], rel=1e-6)


def test_scaling_study_rejects_zero_repeats():
    with pytest.raises(ValueError, match="repeats"):
        pgo_scaling_study([40], repeats=0)


@pytest.fixture(scope="module")
def accuracy():
    return pgo_accuracy_study(num_problems=4, num_keyframes=60, precisions=("fp32", "mixed"), seed=7)


def test_accuracy_study_result(accuracy):
    acc = accuracy
    expected = {
        "num_problems", "num_keyframes", "laps", "seed", "precisions", "reference", "match_drift", "graph_options",
        "solver_options", "poses", "edges", "ate_odometry", "ate_odometry_se3", "results",
        "difference_to_reference", "summary", "improvement", "run_time",
    }  # fmt: skip
    assert set(acc) == expected
    assert (acc["num_problems"], acc["num_keyframes"], acc["poses"]) == (4, 60, 60)
    assert set(acc["results"]) == {"fp32", "mixed", "fp64"}
    assert set(acc["difference_to_reference"]) == {"fp32", "mixed"}
    assert set(acc["summary"]) == {"odometry", "fp32", "mixed", "fp64", "fp32 vs fp64", "mixed vs fp64"}
    assert len(acc["ate_odometry"]) == len(acc["ate_odometry_se3"]) == 4
    for rec in acc["results"].values():
        assert set(rec) == {"ate", "ate_se3", "iterations", "fallbacks", "converged", "solve_time"}
        assert all(len(v) == 4 for v in rec.values())
        assert all(rec["converged"])
        assert np.all(np.array(rec["ate"]) < np.array(acc["ate_odometry"]))
    for p in ("fp32", "mixed"):
        assert acc["summary"][p]["median"] == pytest.approx(acc["summary"]["fp64"]["median"], rel=0.02)
        assert acc["improvement"][p] > 1.0
    # Drift-matched noise: 60 keyframes get (500 / 60) ** 1.5 ~ 24x the default odometry sigmas.
    assert acc["graph_options"]["odometry_rotation_sigma"] == pytest.approx(
        math.radians(0.05) * (DRIFT_REFERENCE_KEYFRAMES / 60) ** 1.5
    )


def test_accuracy_study_without_reference():
    acc = pgo_accuracy_study(num_problems=2, num_keyframes=40, precisions=("mixed",), reference=None)
    assert set(acc["results"]) == {"mixed"} and acc["difference_to_reference"] == {}


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000


def test_plots_write_pngs(tmp_path, scaling_records, accuracy):
    plot_pgo_time(scaling_records, tmp_path / "time.png")
    _assert_png(tmp_path / "time.png")
    plot_cumulative_ate(accuracy, tmp_path / "ate.png")
    _assert_png(tmp_path / "ate.png")
    # After a JSON round trip (non-finite floats stored as strings by the benchmarks).
    no_ref = dict(accuracy, difference_to_reference={}, ate_odometry=[*accuracy["ate_odometry"][:-1], "nan"])
    plot_cumulative_ate(no_ref, tmp_path / "ate_no_ref.png")
    _assert_png(tmp_path / "ate_no_ref.png")
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
