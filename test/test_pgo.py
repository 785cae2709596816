"""Pose-graph optimisation end to end: reference data, mixed vs fp64, gauge, and the CLI.

Tests that need the shared benchmark data use the `shared_data` fixture and are skipped (with
the reason printed) when it is absent; the rest build synthetic graphs in tmp_path.
Measured numbers quoted below are from the reference machine at the time of writing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mp_slam_ros import cli
from mp_slam_ros.io.g2o import read_pose_graph, write_g2o
from mp_slam_ros.pgo.problem import PoseGraphProblem, optimize_pose_graph
from mp_slam_ros.pgo.synthetic import make_loop_pose_graph
from mp_slam_ros.solver.lm import SolverOptions, solve
from mp_slam_ros.solver.precision import PrecisionConfig

TIGHT = {"function_tolerance": 1e-15, "gradient_tolerance": 1e-13, "parameter_tolerance": 1e-15, "max_iterations": 100}


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def angles(rotations: np.ndarray) -> np.ndarray:
    return np.arctan2(rotations[:, 1, 0], rotations[:, 0, 0])


def se2_max_difference(a, b) -> float:
    """Largest |dx|, |dy| or wrapped |dtheta| between two 2D pose sets."""
    dt = np.abs(a.translations - b.translations).max()
    dth = np.abs(np.angle(np.exp(1j * (angles(a.rotations) - angles(b.rotations))))).max()
    return float(max(dt, dth))


def gradient_max_norm(graph) -> float:
    problem = PoseGraphProblem(graph)
    r, jac = problem.linearize(problem.initial_state(), np.dtype(np.float64))
    return float(np.abs(jac.rmatvec(r)).max())


def cost_of(graph) -> float:
    problem = PoseGraphProblem(graph)
    return problem.cost(problem.initial_state())


# ---------------------------------------------------------------------------------------------
# gtsam's noisyToyGraph -> optimizedNoisyToyGraph (testLago)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy(shared_data):
    base = shared_data / "pgo" / "gtsam"
    noisy = read_pose_graph(base / "noisyToyGraph.txt")
    expected = read_pose_graph(base / "optimizedNoisyToyGraph.txt")
    optimum, summary = optimize_pose_graph(noisy, "fp64", SolverOptions(linear_solver="cholesky", **TIGHT))
    return noisy, expected, optimum, summary


def test_toy_graph_true_optimum_vs_gtsam_reference(toy):
    """testLago compares with optimizedNoisyToyGraph at 1e-2. That file (6 decimals, from MATLAB)
    is close to, but not at, the optimum of this cost: the true optimum (cholesky LM, gradient
    ~2e-10) differs from it by 2.44e-3 at most (measured: translations 2.44e-3, angles 1.10e-3),
    and its cost 0.0683428 is below the file's 0.0683570. So the answer to "to what tolerance"
    is 2.5e-3: 1e-2 holds with a factor 4 to spare, 1e-3 would fail."""
    noisy, expected, optimum, summary = toy
    assert noisy.num_poses == 4 and noisy.num_edges == 5
    assert summary.termination == "CONVERGENCE", summary.message
    assert gradient_max_norm(optimum) < 1e-8, "LM must have reached a stationary point"  # measured 1.8e-10
    diff = se2_max_difference(optimum, expected)
    assert diff <= 1e-2  # gtsam testLago's tolerance
    assert diff <= 2.5e-3  # what the true optimum actually achieves (measured 2.44e-3)
    # The reference is not the optimum of this cost, ours is lower.
    assert summary.final_cost == pytest.approx(0.06834282419871, rel=1e-10)
    assert summary.final_cost < cost_of(expected)
    assert np.all(optimum.translations[0] == 0.0) and np.all(optimum.rotations[0] == np.eye(2))


@pytest.mark.parametrize(("preset", "solver", "tol"), [("fp64", "pcg-ic", 1e-5), ("mixed", "pcg-ic", 1e-3)])
def test_toy_graph_default_options_reach_the_optimum(toy, preset, solver, tol):
    # Measured with default options: pcg-ic fp64 5e-7 from the optimum, mixed 5e-7 (earlier builds 8e-5).
    noisy, expected, optimum, _ = toy
    result, summary = optimize_pose_graph(noisy, preset, SolverOptions(linear_solver=solver))
    assert summary.termination == "CONVERGENCE"
    assert se2_max_difference(result, optimum) <= tol
    assert se2_max_difference(result, expected) <= 1e-2


@pytest.mark.parametrize(
    ("preset", "options", "tol"),
    [
        ("fp64", {"cg_tolerance": 1e-8, "cg_q_tolerance": 0.0, "function_tolerance": 1e-14}, 1e-6),
        ("mixed", {"cg_tolerance": 1e-8, "cg_q_tolerance": 0.0}, 1e-3),
    ],
)
def test_toy_graph_tight_krylov_tolerance_ends_cleanly(toy, preset, options, tol):
    """Regression: a CG tolerance below the attainable accuracy near the optimum made CGLS
    diverge; fp64 then raised FloatingPointError ("cg_vectors failed at fp64") and mixed fell
    back fp16 -> fp32 -> fp64 on every stage. Measured now: fp64 8e-16 from the optimum, mixed 5e-7."""
    noisy, _, optimum, _ = toy
    result, summary = optimize_pose_graph(noisy, preset, SolverOptions(**options))
    assert summary.termination != "FAILURE", summary.message
    assert summary.num_fallbacks == 0, "a 4-pose unit-information graph cannot overflow fp16"
    assert se2_max_difference(result, optimum) <= tol
    if preset == "fp64":
        assert summary.termination == "CONVERGENCE", summary.message


# ---------------------------------------------------------------------------------------------
# Integration on SE-Sync benchmark graphs: mixed reaches fp64's cost
# ---------------------------------------------------------------------------------------------
# Measured (final cost; relative difference to fp64 pcg-ic), default options:
#   intel.g2o        fp64 22.5021167  mixed 4.5e-7  cholesky 1.4e-9
#   smallGrid3D.g2o  fp64 517.925357  mixed 5.4e-9  cholesky 4.8e-8
#   sphere2500.g2o   fp64 675.700988  mixed 3.6e-7  cholesky 3.7e-8
# (Earlier builds of the solver measured up to 3.0e-6 for mixed and 1.6e-6 for cholesky.)
# All runs stop on the 1e-6 function tolerance, so costs agree to ~1e-6, not to round-off:
# asserted 1e-4 for mixed (the requirement) and 1e-5 for cholesky vs pcg-ic.
BENCHMARKS = {
    "se-sync/intel.g2o": 22.5021,
    "se-sync/smallGrid3D.g2o": 517.925,
    "se-sync/sphere2500.g2o": 675.701,
}
_runs: dict[tuple[str, str, str], tuple] = {}


def benchmark_run(shared_data, name: str, preset: str, solver: str):
    key = (name, preset, solver)
    if key not in _runs:
        graph = read_pose_graph(shared_data / "pgo" / name)
        _runs[key] = (graph, *optimize_pose_graph(graph, preset, SolverOptions(linear_solver=solver)))
    return _runs[key]


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_mixed_reaches_fp64_cost(shared_data, name, record_property):
    graph, _, ref_summary = benchmark_run(shared_data, name, "fp64", "pcg-ic")
    _, mixed, summary = benchmark_run(shared_data, name, "mixed", "pcg-ic")
    measured = rel(summary.final_cost, ref_summary.final_cost)
    record_property("mixed_vs_fp64_relative_cost", measured)
    print(f"{name}: fp64 {ref_summary.final_cost:.9g}, mixed {summary.final_cost:.9g}, rel {measured:.2g}")
    assert ref_summary.termination == "CONVERGENCE", ref_summary.message
    assert summary.termination != "FAILURE", summary.message
    assert ref_summary.final_cost == pytest.approx(BENCHMARKS[name], rel=1e-5)
    assert ref_summary.final_cost <= ref_summary.initial_cost
    assert measured <= 1e-4
    # Scaling prevents overflow; the only fallback allowed is the recorded switch of J to fp32 once
    # the fp16 refinement stops contracting near the optimum, and fp16 must have done work first.
    assert all(ev.stage == "matrix_storage" and "ill-conditioned" in ev.reason for ev in summary.fallbacks)
    assert all(ev.iteration > 1 for ev in summary.fallbacks)
    # The mixed cost is reported from fp32 residuals; re-evaluated in fp64 it is the same.
    assert rel(cost_of(mixed), summary.final_cost) <= 1e-5
    assert mixed.num_poses == graph.num_poses


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_cholesky_agrees_with_pcg(shared_data, name, record_property):
    _, _, pcg = benchmark_run(shared_data, name, "fp64", "pcg-ic")
    _, _, chol = benchmark_run(shared_data, name, "fp64", "cholesky")
    measured = rel(chol.final_cost, pcg.final_cost)
    record_property("cholesky_vs_pcg_relative_cost", measured)
    assert chol.termination == "CONVERGENCE"
    assert measured <= 1e-5


# ---------------------------------------------------------------------------------------------
# Synthetic: distance to ground truth
# ---------------------------------------------------------------------------------------------
def trajectory_errors(graph, syn) -> tuple[float, float]:
    """RMS translation error [m] and RMS rotation angle error [rad] vs ground truth. Both the
    estimate and the truth have pose 0 at the identity, so no alignment is needed."""
    t = np.sqrt(np.mean(np.sum((graph.translations - syn.true_translations) ** 2, axis=1)))
    rel_rot = np.einsum("nji,njk->nik", syn.true_rotations, graph.rotations)
    if graph.dim == 2:
        ang = np.arctan2(rel_rot[:, 1, 0], rel_rot[:, 0, 0])
    else:
        ang = np.arccos(np.clip((np.trace(rel_rot, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0))
    return float(t), float(np.sqrt(np.mean(ang**2)))


# Measured (seed 1): 3D, 200 poses: translation RMSE 1.70 -> 0.126 m, rotation 0.157 -> 0.0226 rad;
# 2D, 300 poses: 2.43 -> 0.248 m, 0.220 -> 0.0223 rad. mixed and fp64 agree to ~1e-3 m.
@pytest.mark.parametrize(("dim", "num_poses"), [(3, 200), (2, 300)])
@pytest.mark.parametrize("preset", ["fp64", "mixed"])
def test_synthetic_error_far_below_initial_guess(dim, num_poses, preset, record_property):
    syn = make_loop_pose_graph(num_poses=num_poses, dim=dim, seed=1)
    t0, r0 = trajectory_errors(syn.graph, syn)
    result, summary = optimize_pose_graph(syn.graph, preset)
    assert summary.termination != "FAILURE", summary.message
    t1, r1 = trajectory_errors(result, syn)
    record_property("translation_rmse", (t0, t1))
    record_property("rotation_rmse", (r0, r1))
    print(f"SE({dim}) {num_poses} poses {preset}: translation {t0:.3f} -> {t1:.3f} m, rotation {r0:.4f} -> {r1:.4f}")
    assert t0 > 1.0, "the odometry-chained guess should have drifted"
    assert t1 < 0.2 * t0
    assert r1 < 0.3 * r0
    assert t1 < 0.5  # a few odometry sigmas (0.05 m), not metres


def test_restart_at_the_optimum_reports_convergence():
    """Re-optimising an optimised graph (e.g. the CLI on its own output) must say CONVERGENCE.

    Measured: fp64 restarted at the fp64 optimum ends NO_CONVERGENCE on the 3D seed-0 and 2D
    graphs below (the cost is unchanged); mixed converges on all three."""
    failures = []
    for dim, num_poses, seed in [(3, 200, 0), (2, 300, 0), (3, 200, 1)]:
        syn = make_loop_pose_graph(num_poses=num_poses, dim=dim, seed=seed)
        optimum, ref = optimize_pose_graph(syn.graph, "fp64", SolverOptions(function_tolerance=1e-12))
        for preset in ("fp64", "mixed"):
            problem = PoseGraphProblem(optimum)
            _, summary = solve(problem, problem.initial_state(), SolverOptions(), PrecisionConfig.preset(preset))
            if not rel(summary.final_cost, ref.final_cost) < 1e-6:  # nothing left to gain ...
                pytest.fail(f"restart moved the cost: {summary.final_cost} vs {ref.final_cost}")
            if summary.termination != "CONVERGENCE":  # ... and the solver should say so
                failures.append(f"SE({dim}) seed {seed} {preset}: {summary.termination}: {summary.message}")
    assert not failures, "; ".join(failures)


# ---------------------------------------------------------------------------------------------
# Gauge
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gauge_graph():
    return make_loop_pose_graph(num_poses=120, dim=2, laps=3.0, seed=2).graph


def test_pose_zero_is_fixed_without_fix_lines(gauge_graph, tmp_path):
    path = tmp_path / "nofix.g2o"
    write_g2o(gauge_graph, path)
    assert "FIX" not in path.read_text()
    graph = read_pose_graph(path)
    assert not graph.fixed.any()
    result, summary = optimize_pose_graph(graph, "fp64")
    assert summary.termination == "CONVERGENCE"
    np.testing.assert_array_equal(result.rotations[0], graph.rotations[0])
    np.testing.assert_array_equal(result.translations[0], graph.translations[0])
    assert np.abs(result.translations[1:] - graph.translations[1:]).max() > 0.1, "the other poses moved"


def test_fix_lines_are_honoured(gauge_graph, tmp_path):
    free, _ = optimize_pose_graph(gauge_graph, "fp64")
    free_cost = cost_of(free)
    # One FIX line: that pose stays put, pose 0 is free, and (gauge freedom) the optimum cost is unchanged.
    path = tmp_path / "fix.g2o"
    write_g2o(gauge_graph, path)
    path.write_text(path.read_text() + "FIX 40\n")
    graph = read_pose_graph(path)
    assert np.flatnonzero(graph.fixed).tolist() == [int(np.flatnonzero(graph.ids == 40)[0])]
    result, summary = optimize_pose_graph(graph, "fp64")
    k = int(np.flatnonzero(graph.ids == 40)[0])
    np.testing.assert_array_equal(result.translations[k], graph.translations[k])
    np.testing.assert_array_equal(result.rotations[k], graph.rotations[k])
    assert np.abs(result.translations[0] - graph.translations[0]).max() > 1e-3, "pose 0 is no longer the anchor"
    assert rel(summary.final_cost, free_cost) <= 1e-6
    # Several ids on one FIX line (g2o allows it): all held, and extra constraints cannot lower the cost.
    path2 = tmp_path / "fix2.g2o"
    write_g2o(gauge_graph, path2)
    path2.write_text(path2.read_text() + "FIX 5 60 100\n")
    graph2 = read_pose_graph(path2)
    held = [int(np.flatnonzero(graph2.ids == i)[0]) for i in (5, 60, 100)]
    assert sorted(np.flatnonzero(graph2.fixed).tolist()) == sorted(held)
    result2, summary2 = optimize_pose_graph(graph2, "mixed")
    for k in held:
        np.testing.assert_array_equal(result2.translations[k], graph2.translations[k])
        np.testing.assert_array_equal(result2.rotations[k], graph2.rotations[k])
    assert summary2.final_cost >= free_cost * (1 - 1e-6)
    assert np.abs(result2.translations[0] - graph2.translations[0]).max() > 1e-3


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def g2o_file(tmp_path):
    graph = make_loop_pose_graph(num_poses=80, dim=3, laps=2.0, seed=3).graph
    path = tmp_path / "graph.g2o"
    write_g2o(graph, path)
    return path, graph


def test_cli_pgo_json_and_output(g2o_file, tmp_path, capsys):
    path, graph = g2o_file
    out = tmp_path / "out.g2o"
    rc = cli.main(["pgo", str(path), "--precision", "mixed", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    data = json.loads(captured.out)
    assert data["termination"] == "CONVERGENCE"
    assert data["precision"]["name"] == "mixed" and data["precision"]["matrix_storage"] == "fp16"
    assert data["linear_solver"] == "pcg-ic"
    assert data["final_cost"] < data["initial_cost"]
    written = read_pose_graph(out)
    assert (written.num_poses, written.num_edges, written.dim) == (graph.num_poses, graph.num_edges, 3)
    np.testing.assert_array_equal(written.ids, graph.ids)
    # The file holds the optimised poses: its fp64 cost is the reported final cost.
    assert rel(cost_of(written), data["final_cost"]) <= 1e-5


def test_cli_text_report(g2o_file, capsys):
    path, graph = g2o_file
    rc = cli.main(["pgo", str(path), "--precision", "fp64", "--solver", "cholesky", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"{graph.num_poses} poses, {graph.num_edges} edges, SE(3)" in out
    assert "Solver summary" in out and "CONVERGENCE" in out and "linear solver cholesky" in out


def test_cli_precision_yaml_file(g2o_file, tmp_path, capsys):
    path, _ = g2o_file
    params = tmp_path / "precision.yaml"
    params.write_text("/**:\n  ros__parameters:\n    precision:\n      preset: mixed\n      preconditioner: fp32\n")
    rc = cli.main(["pgo", str(path), "--precision", str(params), "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["precision"]["preconditioner"] == "fp32" and data["precision"]["name"] == "custom"


def test_cli_malformed_file_exit_code_and_location(tmp_path, capsys):
    bad = tmp_path / "bad.g2o"
    bad.write_text("VERTEX_SE2 0 0 0 0\nVERTEX_SE2 1 1 0 0\nEDGE_SE2 0 1 1.0 abc 0.0 1 0 0 1 0 1\n")
    rc = cli.main(["pgo", str(bad), "--precision", "mixed"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{bad}:3: field 'y'" in err
    assert "abc" in err
    assert "Traceback" not in err


def test_cli_unknown_precision_is_an_error(g2o_file, capsys):
    path, _ = g2o_file
    rc = cli.main(["pgo", str(path), "--precision", "turbo"])
    captured = capsys.readouterr()
    assert rc == 2
    assert "turbo" in captured.err
    assert captured.out == "" or "Solver summary" not in captured.out


def test_cli_unknown_solver_is_an_argparse_error(g2o_file, capsys):
    path, _ = g2o_file
    with pytest.raises(SystemExit) as info:
        cli.main(["pgo", str(path), "--solver", "qr"])
    assert info.value.code == 2
    assert "qr" in capsys.readouterr().err


def test_cli_missing_file(tmp_path, capsys):
    rc = cli.main(["pgo", str(tmp_path / "missing.g2o")])
    assert rc == 2
    assert "missing.g2o" in capsys.readouterr().err


def test_optimize_does_not_modify_its_input(g2o_file):
    _, graph = g2o_file
    rotations, translations = graph.rotations.copy(), graph.translations.copy()
    result, _ = optimize_pose_graph(graph, "fp64")
    np.testing.assert_array_equal(graph.translations, translations)
    np.testing.assert_array_equal(graph.rotations, rotations)
    assert np.abs(result.translations - translations).max() > 1e-3
