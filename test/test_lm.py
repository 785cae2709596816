"""Tests for the Levenberg-Marquardt / Gauss-Newton driver (mp_slam_ros.solver.lm).

Most tests run the driver on a small synthetic pose graph (200 poses on a helix with loop
closures, mp_slam_ros.pgo.synthetic). They check what the summary records, that the precision
fallback is loud (summary entry and a logging WARNING, never silent), and that failures end
cleanly.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import time

import numpy as np
import pytest
from scipy.optimize import least_squares

from mp_slam_ros.pgo.problem import PoseGraphProblem
from mp_slam_ros.pgo.synthetic import make_loop_pose_graph
from mp_slam_ros.solver.jacobian import BlockJacobian
from mp_slam_ros.solver.lm import IterationReport, SolverOptions, SolverSummary, solve
from mp_slam_ros.solver.precision import Precision, PrecisionConfig

LOGGER = "mp_slam_ros.solver.lm"
STAGE_TIME_KEYS = {"residual_jacobian", "gradient_and_scaling", "preconditioner", "linear_solve", "update", "total"}
FALLBACK_STAGES = {"matrix_storage", "preconditioner", "cg_vectors"}
INFO_SCALE = 1e6  # whitened Jacobian entries reach ~1e5 > 65504 = fp16 max


@pytest.fixture(scope="module")
def graph():
    return make_loop_pose_graph(num_poses=200, seed=0).graph


@pytest.fixture(scope="module")
def scaled_graph(graph):
    return dataclasses.replace(graph, information=graph.information * INFO_SCALE)


def run(graph, preset: str = "fp64", **options):
    problem = PoseGraphProblem(graph)
    state, summary = solve(problem, problem.initial_state(), SolverOptions(**options), PrecisionConfig.preset(preset))
    return problem, state, summary


@pytest.fixture(scope="module")
def fp64_run(graph):
    return run(graph, "fp64")


@pytest.fixture(scope="module")
def mixed_run(graph):
    return run(graph, "mixed")


@pytest.fixture(scope="module")
def scaled_fp64_run(scaled_graph):
    return run(scaled_graph, "fp64")


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def fallback_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


# ---------------------------------------------------------------------------------------------
# The summary
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["fp64_run", "mixed_run"])
def test_summary_iterations_and_costs(request, which):
    problem, state, summary = request.getfixturevalue(which)
    assert isinstance(summary, SolverSummary)
    assert summary.termination == "CONVERGENCE", summary.message
    assert summary.message
    assert summary.num_iterations >= 2
    assert [it.iteration for it in summary.iterations] == list(range(1, summary.num_iterations + 1))
    assert all(isinstance(it, IterationReport) for it in summary.iterations)
    # Accepted steps strictly lower the cost; rejected ones leave it where it was.
    previous = summary.initial_cost
    for it in summary.iterations:
        if it.step_accepted:
            assert it.cost < previous
            assert it.cost_change == pytest.approx(previous - it.cost, rel=1e-12)
        else:
            assert it.cost == previous and it.cost_change == 0.0
        previous = it.cost
        assert it.cg_iterations >= 1 and it.linear_status in ("converged", "max_iterations", "stagnated")
        assert it.step_norm > 0 and it.gradient_max_norm > 0 and it.damping >= 0
        assert 0 <= it.iteration_time <= it.total_time
    assert summary.final_cost == summary.iterations[-1].cost
    assert summary.final_cost < 1e-2 * summary.initial_cost
    assert summary.total_cg_iterations >= sum(it.cg_iterations for it in summary.iterations)
    assert summary.num_parameters == problem.num_parameters == 199 * 6
    assert summary.num_residuals == 6 * problem.graph.num_edges
    # The returned state has the reported cost (fp64 evaluation; the mixed run's residuals were fp32).
    assert rel(problem.cost(state), summary.final_cost) < (1e-12 if which == "fp64_run" else 1e-5)
    assert summary.num_fallbacks == 0 and summary.fallbacks == []
    assert summary.preconditioner_factorizations == 1


def test_mixed_final_cost_matches_fp64(fp64_run, mixed_run):
    assert rel(mixed_run[2].final_cost, fp64_run[2].final_cost) < 1e-5


def test_stage_times(fp64_run):
    times = fp64_run[2].stage_times
    assert set(times) >= STAGE_TIME_KEYS  # the pose-graph front end may add its own stages
    assert all(isinstance(v, float) and v >= 0 for v in times.values())
    for key in ("residual_jacobian", "preconditioner", "linear_solve", "update", "total"):
        assert times[key] > 0, key
    # Stages are timed inside the total.
    assert sum(v for k, v in times.items() if k != "total") <= times["total"] * 1.001 + 1e-4


def test_report_and_iteration_table_contain_the_numbers(fp64_run):
    summary = fp64_run[2]
    report = summary.report()
    assert f"{summary.initial_cost:.10e}" in report
    assert f"{summary.final_cost:.10e}" in report
    assert f"{summary.num_iterations} (" in report
    assert f"{summary.total_cg_iterations} CG iterations" in report
    assert "CONVERGENCE" in report and summary.message in report
    assert "fp16 fallbacks : 0" in report
    assert "linear solver pcg-ic" in report and "levenberg_marquardt" in report
    table = summary.iteration_table().splitlines()
    assert len(table) == summary.num_iterations + 1
    assert table[0].split()[:2] == ["iter", "cost"]
    for line, it in zip(table[1:], summary.iterations, strict=True):
        fields = line.split()
        assert int(fields[0]) == it.iteration
        assert fields[1] == f"{it.cost:.6e}"
        assert float(fields[1]) == pytest.approx(it.cost, rel=1e-6)
        assert int(fields[6]) == it.cg_iterations
        assert fields[8] == ("yes" if it.step_accepted else "no")


def test_to_json_round_trips(fp64_run):
    summary = fp64_run[2]
    data = json.loads(summary.to_json())
    assert data["final_cost"] == summary.final_cost  # floats survive json exactly
    assert data["initial_cost"] == summary.initial_cost
    assert data["termination"] == summary.termination
    assert data["num_iterations"] == summary.num_iterations == len(data["iterations"])
    assert data["num_fallbacks"] == 0 and data["fallbacks"] == []
    assert data["stage_times"] == summary.stage_times and set(data["stage_times"]) >= STAGE_TIME_KEYS
    assert data["precision"] == PrecisionConfig.preset("fp64").as_dict()
    for d, it in zip(data["iterations"], summary.iterations, strict=True):
        assert d == dataclasses.asdict(it)
    assert json.loads(summary.to_json(indent=2)) == data


def test_callback_and_verbose_output(graph, capsys):
    seen: list[IterationReport] = []
    _, _, summary = run(graph, "fp64", callback=seen.append, verbose=True, max_iterations=3)
    assert [r.iteration for r in seen] == [1, 2, 3]
    assert seen == summary.iterations
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["iter", "cost"]
    assert len(out) == 4


def test_iteration_limit_is_no_convergence(graph):
    _, _, summary = run(graph, "fp64", max_iterations=2)
    assert summary.num_iterations == 2
    assert summary.termination == "NO_CONVERGENCE"
    assert "iteration limit" in summary.message


@pytest.mark.parametrize(("option", "value"), [("linear_solver", "qr"), ("algorithm", "dogleg")])
def test_invalid_options_are_rejected(option, value):
    with pytest.raises(ValueError, match=value):
        SolverOptions(**{option: value})


# ---------------------------------------------------------------------------------------------
# Algorithms and linear solvers
# ---------------------------------------------------------------------------------------------
def test_gauss_newton(graph, fp64_run):
    _, _, summary = run(graph, "fp64", algorithm="gauss_newton")
    assert summary.algorithm == "gauss_newton"
    assert summary.termination == "CONVERGENCE", summary.message
    assert all(it.damping == 0.0 and it.step_accepted for it in summary.iterations)
    costs = [summary.initial_cost] + [it.cost for it in summary.iterations]
    assert all(b < a for a, b in itertools.pairwise(costs))
    assert rel(summary.final_cost, fp64_run[2].final_cost) < 1e-6
    assert "gauss_newton" in summary.report()


def test_cholesky_matches_pcg(graph, fp64_run):
    _, _, summary = run(graph, "fp64", linear_solver="cholesky")
    assert summary.termination == "CONVERGENCE"
    assert all(it.linear_status == "direct" for it in summary.iterations)
    assert summary.preconditioner_factorizations == 0
    assert rel(summary.final_cost, fp64_run[2].final_cost) < 1e-6


def test_cgnr_without_preconditioner(graph, fp64_run):
    _, _, summary = run(graph, "fp64", linear_solver="cgnr", cgnr_preconditioner="none")
    assert summary.termination == "CONVERGENCE"
    assert summary.preconditioner_factorizations == 0
    assert rel(summary.final_cost, fp64_run[2].final_cost) < 1e-6


def test_cgnr_block_jacobi_rebuilt_every_iteration(graph, fp64_run):
    _, _, plain = run(graph, "fp64", linear_solver="cgnr", cgnr_preconditioner="none")
    _, _, summary = run(graph, "fp64", linear_solver="cgnr")
    assert summary.termination == "CONVERGENCE"
    # The damping changes every iteration, so the block-Jacobi is refactored every iteration.
    assert summary.preconditioner_factorizations == summary.num_iterations
    assert rel(summary.final_cost, fp64_run[2].final_cost) < 1e-6
    assert summary.total_cg_iterations < plain.total_cg_iterations


def test_cgnr_preconditioner_option_is_checked():
    with pytest.raises(ValueError, match="cgnr_preconditioner"):
        SolverOptions(cgnr_preconditioner="ilu")


class ExponentialFit:
    """y = a exp(b t) + c: a non-pose problem with an ndarray state, to show the driver is generic."""

    block_size = 1
    num_parameters = 3

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.t = np.linspace(0.0, 2.0, 40)
        self.y = 2.5 * np.exp(-1.3 * self.t) + 0.4 + 0.01 * rng.standard_normal(self.t.size)

    def residuals(self, p, dtype):
        return (p[0] * np.exp(p[1] * self.t) + p[2] - self.y).astype(dtype)

    def linearize(self, p, dtype):
        e = np.exp(p[1] * self.t)
        jac = np.stack([e, p[0] * self.t * e, np.ones_like(e)], axis=1)
        return self.residuals(p, dtype), BlockJacobian.dense(jac.astype(dtype))

    def retract(self, p, delta):
        return p + delta


@pytest.mark.parametrize("preset", ["fp64", "mixed"])
def test_generic_problem_matches_scipy(preset):
    problem = ExponentialFit()
    p0 = np.array([1.0, -0.5, 0.0])
    p, summary = solve(problem, p0.copy(), SolverOptions(function_tolerance=1e-12), PrecisionConfig.preset(preset))
    ref = least_squares(lambda q: problem.residuals(q, np.float64), p0, xtol=1e-15, ftol=1e-15, gtol=1e-15)
    assert summary.termination in ("CONVERGENCE", "NO_CONVERGENCE")
    np.testing.assert_array_equal(p0, [1.0, -0.5, 0.0])  # the initial state is not modified
    assert rel(summary.final_cost, ref.cost) < (1e-9 if preset == "fp64" else 1e-4)
    np.testing.assert_allclose(p, ref.x, rtol=1e-5 if preset == "fp64" else 1e-2)


# ---------------------------------------------------------------------------------------------
# Precision fallback is loud, never silent
# ---------------------------------------------------------------------------------------------
def test_fp16_without_scaling_falls_back_loudly(scaled_graph, scaled_fp64_run, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    _, _, summary = run(scaled_graph, "fp16")
    # Recorded in the summary ...
    assert summary.num_fallbacks >= 1
    for ev in summary.fallbacks:
        assert ev.stage in FALLBACK_STAGES
        assert Precision(ev.to_precision) is Precision(ev.from_precision).higher()
        assert ev.to_precision != ev.from_precision
        assert ev.reason and ev.iteration >= 1
    first = summary.fallbacks[0]
    assert (first.stage, first.from_precision, first.to_precision) == ("matrix_storage", "fp16", "fp32")
    assert "65504" in first.reason
    # ... and logged as a WARNING, one per fallback, naming stage and precisions.
    warnings = fallback_warnings(caplog)
    assert len(warnings) == summary.num_fallbacks
    for record, ev in zip(warnings, summary.fallbacks, strict=True):
        message = record.getMessage()
        assert ev.stage in message and f"{ev.from_precision} -> {ev.to_precision}" in message
    # ... and in the report and the JSON.
    report = summary.report()
    assert f"fp16 fallbacks : {summary.num_fallbacks}" in report
    assert f"{first.stage} {first.from_precision} -> {first.to_precision}" in report
    data = json.loads(summary.to_json())
    assert data["num_fallbacks"] == summary.num_fallbacks
    assert data["fallbacks"][0]["stage"] == "matrix_storage"
    # The answer is still right.
    assert summary.termination == "CONVERGENCE", summary.message
    assert rel(summary.final_cost, scaled_fp64_run[2].final_cost) < 1e-6


def test_fp64_on_scaled_graph_is_the_same_problem(scaled_fp64_run, fp64_run):
    # Scaling every information matrix by s scales the cost by s and leaves the optimum alone.
    assert rel(scaled_fp64_run[2].final_cost, INFO_SCALE * fp64_run[2].final_cost) < 1e-6
    assert scaled_fp64_run[2].num_fallbacks == 0


def test_mixed_has_no_fallbacks_on_the_unscaled_graph(graph, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    _, _, summary = run(graph, "mixed")
    assert summary.num_fallbacks == 0
    assert fallback_warnings(caplog) == []


def test_mixed_scaling_prevents_fallbacks_on_large_information(scaled_graph, scaled_fp64_run, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    _, _, summary = run(scaled_graph, "mixed")
    if not rel(summary.final_cost, scaled_fp64_run[2].final_cost) < 1e-6:
        pytest.fail("mixed does not reach the fp64 cost")
    assert [(ev.stage, ev.from_precision, ev.to_precision, ev.reason) for ev in summary.fallbacks] == []
    assert fallback_warnings(caplog) == []


# ---------------------------------------------------------------------------------------------
# Failures end cleanly
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["fp64", "mixed"])
@pytest.mark.parametrize("where", ["translation", "rotation", "anchor"])
def test_nan_in_initial_state_fails_cleanly(graph, preset, where):
    # The driver's loops are bounded (max_iterations, cg_max_iterations, and a fallback ladder
    # that ends at fp64), so a bug here shows up as a wrong result, not a hang; the time check
    # only guards against the bounds being huge.
    rotations, translations = graph.rotations.copy(), graph.translations.copy()
    pose = 0 if where == "anchor" else 17
    if where == "rotation":
        rotations[pose, 0, 1] = np.nan
    else:
        translations[pose, 0] = np.nan
    bad = graph.with_poses(rotations, translations)
    problem = PoseGraphProblem(bad)
    start = time.perf_counter()
    options, precision = SolverOptions(max_iterations=10), PrecisionConfig.preset(preset)
    state, summary = solve(problem, problem.initial_state(), options, precision)
    assert time.perf_counter() - start < 30
    assert summary.termination == "FAILURE"
    assert "not finite" in summary.message
    assert math.isnan(summary.initial_cost) and math.isnan(summary.final_cost)
    assert summary.num_iterations == 0 and summary.num_fallbacks == 0
    # The state handed back is the one given, unchanged.
    np.testing.assert_array_equal(state.translations, translations)
    assert json.loads(summary.to_json())["termination"] == "FAILURE"
    assert "FAILURE" in summary.report()
