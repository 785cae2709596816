"""Pose-graph studies behind loop closure: solve time against graph size, and accuracy over many problems.

Both run :func:`mp_slam_ros.pgo.problem.optimize_pose_graph` with ``initialization="given"`` on
keyframe graphs from :func:`mp_slam_ros.pgo.synthetic.make_keyframe_pose_graph`, starting from
the odometry chain: the state the loop-closure node holds when its first loop closes, and the
worst start it ever optimises from (later loops start from an already corrected graph).

ATE here is the RMSE of keyframe positions against the ground truth *without* alignment: the
solver holds keyframe 0 fixed at the identity, which is also where the generator puts the truth,
so the gauge is shared and an alignment would only hide drift. It equals
``absolute_trajectory_error(..., align="none").rmse``; :func:`trajectory_ate` can also give the
SE(3)-aligned value for comparison with evo-style numbers.

The results are plain lists / dicts (JSON-ready) so a benchmark can store them and re-plot later.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from mp_slam_ros.eval.metrics import umeyama_alignment
from mp_slam_ros.eval.plots import _save
from mp_slam_ros.pgo.problem import PoseGraphProblem, PoseState, optimize_pose_graph
from mp_slam_ros.pgo.synthetic import SyntheticPoseGraph, make_keyframe_pose_graph
from mp_slam_ros.solver.lm import SolverOptions

__all__ = [
    "DRIFT_REFERENCE_KEYFRAMES",
    "TIME_TARGETS",
    "drift_matched_graph_options",
    "pgo_accuracy_study",
    "pgo_scaling_study",
    "plot_cumulative_ate",
    "plot_pgo_time",
    "trajectory_ate",
]

#: (keyframes, seconds): the recipe's targets for a mixed-precision PGO from the odometry start.
TIME_TARGETS: tuple[tuple[int, float], ...] = ((1000, 0.1), (5000, 1.0))

#: Graph size at which the generator's default odometry noise gives an odometry-only ATE of ~0.1 m.
DRIFT_REFERENCE_KEYFRAMES = 500

_DEFAULT_ODOMETRY_SIGMAS = {
    "odometry_rotation_sigma": float(np.radians(0.05)),
    "odometry_translation_sigma": 0.001,
}


def trajectory_ate(translations: np.ndarray, true_translations: np.ndarray, align: bool = False) -> float:
    """RMSE (m) of positions against the truth; ``align`` first applies the best SE(3) (Umeyama)."""
    p = np.asarray(translations, dtype=np.float64)
    q = np.asarray(true_translations, dtype=np.float64)
    if align:
        R, t, _ = umeyama_alignment(p, q)
        p = p @ R.T + t
    return float(np.sqrt(np.mean(np.sum((p - q) ** 2, axis=1))))


def drift_matched_graph_options(
    num_keyframes: int, reference_keyframes: int = DRIFT_REFERENCE_KEYFRAMES
) -> dict[str, float]:
    """Odometry sigmas that give a ``num_keyframes`` graph the odometry drift of a ``reference_keyframes`` one.

    The default noise drifts like ``num_keyframes ** 1.5`` (heading random walk integrated along
    the path), so scaling both odometry sigmas by ``(reference / num_keyframes) ** 1.5`` keeps the
    odometry-only ATE near the ~0.1 m of the reference size. Used to study the solver on graphs of
    recipe-like error at sizes where the default noise would drift metres (or small enough for 800
    solves); pass the result as ``graph_options``.
    """
    factor = (reference_keyframes / max(int(num_keyframes), 1)) ** 1.5
    return {k: v * factor for k, v in _DEFAULT_ODOMETRY_SIGMAS.items()}


def _bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="solve", dynamic_ncols=True, leave=False)


def _options(options: SolverOptions | None, linear_solver: str | None) -> SolverOptions:
    base = options if options is not None else SolverOptions()
    if linear_solver is None or linear_solver == base.linear_solver:
        return base
    return replace(base, linear_solver=linear_solver)


def _make_graph(
    num_keyframes: int, laps: float, seed: int, match_drift: bool, graph_options: Mapping[str, Any] | None
) -> tuple[SyntheticPoseGraph, dict[str, Any]]:
    kwargs: dict[str, Any] = drift_matched_graph_options(num_keyframes) if match_drift else {}
    kwargs.update(graph_options or {})
    return make_keyframe_pose_graph(num_keyframes, laps=laps, seed=seed, **kwargs), kwargs


def _timed_solve(graph, precision: str, options: SolverOptions, initialization: str):
    gc.collect()  # no collection of the previous solve's garbage inside the timed call
    c0, t0 = time.process_time(), time.perf_counter()
    out, summary = optimize_pose_graph(graph, precision, options, initialization=initialization)
    return out, summary, time.perf_counter() - t0, time.process_time() - c0


def _series_label(precision: str, linear_solver: str, initialization: str, match_drift: bool) -> str:
    label = precision if linear_solver == "pcg-ic" else f"{linear_solver} ({precision})"
    if initialization != "given":
        label += f", {initialization} start"
    if match_drift:
        label += ", drift-matched"
    return label


def pgo_scaling_study(
    sizes: Iterable[int],
    precisions: Sequence[str] = ("fp64", "fp32", "mixed"),
    repeats: int = 3,
    seed: int = 0,
    progress: bool = False,
    *,
    laps: float = 2.0,
    linear_solver: str | None = None,
    options: SolverOptions | None = None,
    initialization: str = "given",
    match_drift: bool = False,
    graph_options: Mapping[str, Any] | None = None,
    single_run_above: float = 5.0,
    label: str | None = None,
) -> list[dict[str, Any]]:
    """PGO solve time against the number of keyframes, one record per (size, precision).

    For each size one keyframe graph (``make_keyframe_pose_graph(size, laps, seed)``, default
    noise unless ``match_drift`` / ``graph_options``) is solved from its odometry-chain start with
    ``optimize_pose_graph(graph, precision, options, initialization)``; ``linear_solver``
    overrides the one in ``options`` (default ``SolverOptions()``: pcg-ic). Each configuration gets
    one untimed warm-up solve (JIT compilation, allocator) and then ``repeats`` timed ones; the
    median is reported. A configuration whose warm-up took longer than ``single_run_above``
    seconds is timed once only, to bound the study's run time.

    Each record holds: ``series`` (plot label), ``keyframes``, ``poses``, ``edges``,
    ``loop_edges``, ``precision``, ``linear_solver``, ``initialization``, ``match_drift``,
    ``graph_options``, ``time`` (median wall s), ``times``, ``cpu_times``, ``warmup_time``,
    ``n_runs``, ``iterations``, ``cg_iterations``, ``fallbacks``, ``preconditioner_factorizations``,
    ``termination``, ``message``, ``initial_cost``, ``final_cost`` (solver's, in its residual
    precision), ``final_cost_fp64``, ``ate_initial``, ``ate_final`` (m), ``stage_times`` and
    ``deterministic`` (all timed runs reached the same cost and iteration count). The numbers
    besides the times are from the median run.
    """
    sizes = [int(s) for s in sizes]
    precisions = list(precisions)
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats!r}")
    opts = _options(options, linear_solver)
    bar = _bar(len(sizes) * len(precisions), "PGO scaling", progress)
    records: list[dict[str, Any]] = []
    try:
        for size in sizes:
            synthetic, used = _make_graph(size, laps, seed, match_drift, graph_options)
            graph = synthetic.graph
            problem = PoseGraphProblem(graph)
            ate0 = trajectory_ate(graph.translations, synthetic.true_translations)
            for precision in precisions:
                if bar is not None:
                    bar.set_description(f"PGO {size} kf {precision}")
                _, _, warm, _ = _timed_solve(graph, precision, opts, initialization)
                runs = []
                for _ in range(repeats if warm <= single_run_above else 1):
                    runs.append(_timed_solve(graph, precision, opts, initialization))
                walls = [r[2] for r in runs]
                order = sorted(range(len(runs)), key=walls.__getitem__)
                out, summary, _, _ = runs[order[(len(order) - 1) // 2]]
                finals = {float(problem.cost(PoseState(r[0].rotations, r[0].translations))) for r in runs}
                records.append(
                    {
                        "series": label or _series_label(precision, opts.linear_solver, initialization, match_drift),
                        "keyframes": size,
                        "poses": graph.num_poses,
                        "edges": graph.num_edges,
                        "loop_edges": graph.num_edges - (graph.num_poses - 1),
                        "precision": precision,
                        "linear_solver": opts.linear_solver,
                        "initialization": initialization,
                        "match_drift": match_drift,
                        "graph_options": dict(used),
                        "time": statistics.median(walls),
                        "times": walls,
                        "cpu_times": [r[3] for r in runs],
                        "warmup_time": warm,
                        "n_runs": len(runs),
                        "iterations": summary.num_iterations,
                        "cg_iterations": summary.total_cg_iterations,
                        "fallbacks": summary.num_fallbacks,
                        "preconditioner_factorizations": summary.preconditioner_factorizations,
                        "termination": summary.termination,
                        "message": summary.message,
                        "initial_cost": float(summary.initial_cost),
                        "final_cost": float(summary.final_cost),
                        "final_cost_fp64": float(problem.cost(PoseState(out.rotations, out.translations))),
                        "ate_initial": ate0,
                        "ate_final": trajectory_ate(out.translations, synthetic.true_translations),
                        "stage_times": {k: float(v) for k, v in summary.stage_times.items()},
                        "deterministic": len(finals) == 1 and len({r[1].num_iterations for r in runs}) == 1,
                    }
                )
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return records


def _distribution(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return {k: math.nan for k in ("median", "mean", "p10", "p90", "min", "max")}
    return {
        "median": float(np.median(v)),
        "mean": float(np.mean(v)),
        "p10": float(np.percentile(v, 10)),
        "p90": float(np.percentile(v, 90)),
        "min": float(np.min(v)),
        "max": float(np.max(v)),
    }


def pgo_accuracy_study(
    num_problems: int = 800,
    num_keyframes: int = 300,
    precisions: Sequence[str] = ("fp32", "mixed"),
    seed: int = 0,
    progress: bool = False,
    *,
    laps: float = 2.0,
    reference: str | None = "fp64",
    options: SolverOptions | None = None,
    match_drift: bool = True,
    graph_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """ATE before and after PGO over ``num_problems`` random keyframe graphs (seeds ``seed``, ``seed + 1``, ...).

    Every problem is a ``make_keyframe_pose_graph(num_keyframes, laps, seed=k)`` graph solved from
    its odometry chain by each precision (``initialization="given"``, ``options`` default
    ``SolverOptions()``). With ``match_drift`` (default) the odometry noise is scaled by
    :func:`drift_matched_graph_options` so the odometry-only ATE is the ~0.1 m of the recipe on
    graphs small enough for hundreds of solves (300 keyframes: 0.11 deg and 2.2 mm per keyframe);
    ``graph_options`` override any generator argument. ``reference`` (default fp64, None to skip)
    is solved too, and each precision's RMS keyframe-position difference to it is recorded: the
    part of the error that is the precision's own rather than the measurement noise's.

    Returns a dict with ``num_problems``, ``num_keyframes``, ``laps``, ``seed``, ``precisions``,
    ``reference``, ``match_drift``, ``graph_options`` (generator arguments used), ``poses``,
    ``edges`` (of the first problem), per-problem lists ``ate_odometry``, ``ate_odometry_se3``,
    and per precision (reference included) ``ate``, ``ate_se3``, ``iterations``, ``fallbacks``,
    ``converged`` (bool), ``solve_time``; ``difference_to_reference`` per precision;
    ``summary`` (median/mean/p10/p90/min/max of ``odometry`` and of each precision's ATE, and of
    each ``<precision> vs <reference>`` difference); ``improvement`` (median odometry ATE over
    median ATE per precision); and ``run_time`` (s, the whole study).
    """
    if num_problems < 1:
        raise ValueError(f"num_problems must be at least 1, got {num_problems!r}")
    precisions = list(precisions)
    solved = precisions + ([reference] if reference and reference not in precisions else [])
    opts = options if options is not None else SolverOptions()
    start = time.perf_counter()
    # Compile / load every precision's kernels outside the per-problem times.
    warm, _ = _make_graph(min(num_keyframes, 60), laps, seed, match_drift, graph_options)
    for p in solved:
        optimize_pose_graph(warm.graph, p, opts, initialization="given")

    per: dict[str, dict[str, list]] = {
        p: {"ate": [], "ate_se3": [], "iterations": [], "fallbacks": [], "converged": [], "solve_time": []}
        for p in solved
    }
    differences: dict[str, list[float]] = {p: [] for p in precisions if reference and p != reference}
    ate_odo: list[float] = []
    ate_odo_se3: list[float] = []
    used: dict[str, Any] = {}
    poses = edges = 0
    bar = _bar(num_problems * len(solved), "PGO accuracy", progress)
    try:
        for k in range(num_problems):
            synthetic, used = _make_graph(num_keyframes, laps, seed + k, match_drift, graph_options)
            graph, truth = synthetic.graph, synthetic.true_translations
            if k == 0:
                poses, edges = graph.num_poses, graph.num_edges
            ate_odo.append(trajectory_ate(graph.translations, truth))
            ate_odo_se3.append(trajectory_ate(graph.translations, truth, align=True))
            solutions = {}
            for p in solved:
                t0 = time.perf_counter()
                out, summary = optimize_pose_graph(graph, p, opts, initialization="given")
                rec = per[p]
                rec["solve_time"].append(time.perf_counter() - t0)
                rec["ate"].append(trajectory_ate(out.translations, truth))
                rec["ate_se3"].append(trajectory_ate(out.translations, truth, align=True))
                rec["iterations"].append(summary.num_iterations)
                rec["fallbacks"].append(summary.num_fallbacks)
                rec["converged"].append(summary.termination == "CONVERGENCE")
                solutions[p] = out.translations
                if bar is not None:
                    bar.update(1)
            for p in differences:
                differences[p].append(trajectory_ate(solutions[p], solutions[reference]))
    finally:
        if bar is not None:
            bar.close()

    summary_stats = {"odometry": _distribution(ate_odo)}
    for p in solved:
        summary_stats[p] = _distribution(per[p]["ate"])
    for p, d in differences.items():
        summary_stats[f"{p} vs {reference}"] = _distribution(d)
    improvement = {
        p: (summary_stats["odometry"]["median"] / summary_stats[p]["median"])
        if summary_stats[p]["median"] > 0
        else None
        for p in solved
    }
    return {
        "num_problems": num_problems,
        "num_keyframes": num_keyframes,
        "laps": laps,
        "seed": seed,
        "precisions": precisions,
        "reference": reference,
        "match_drift": match_drift,
        "graph_options": dict(used),
        "solver_options": {k: v for k, v in asdict(opts).items() if k != "callback"},
        "poses": poses,
        "edges": edges,
        "ate_odometry": ate_odo,
        "ate_odometry_se3": ate_odo_se3,
        "results": per,
        "difference_to_reference": differences,
        "summary": summary_stats,
        "improvement": improvement,
        "run_time": time.perf_counter() - start,
    }


# ----------------------------------------------------------------------------------------------
# plots


def _floats(values: Iterable[Any]) -> np.ndarray:
    # JSON round trips store non-finite floats as strings ("nan", "inf").
    return np.array([float(v) if v is not None else math.nan for v in values], dtype=np.float64)


def plot_pgo_time(results: Sequence[Mapping[str, Any]], path: str | os.PathLike, dpi: int = 120) -> None:
    """Solve time against keyframes (log-log), one line per series, with the 1k / 5k targets marked.

    ``results`` are :func:`pgo_scaling_study` records (or several studies' records concatenated);
    the mixed-precision points are annotated with their LM iteration counts.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5))
    ax = fig.add_subplot(1, 1, 1)
    series: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        series.setdefault(str(r.get("series") or r["precision"]), []).append(r)
    styles = {"fp64": "C0", "fp32": "C1", "mixed": "C2"}
    for k, (name, recs) in enumerate(series.items()):
        recs = sorted(recs, key=lambda r: int(r["keyframes"]))
        x = _floats(r["keyframes"] for r in recs)
        y = _floats(r["time"] for r in recs)
        color = styles.get(name, f"C{3 + k}")
        dashed = "," in name or "(" in name
        ax.plot(x, y, "--" if dashed else "-", marker="o", ms=4, color=color, label=name, lw=1.3)
        bad = [i for i, r in enumerate(recs) if r.get("termination") != "CONVERGENCE"]
        if bad:
            ax.plot(x[bad], y[bad], "x", color="k", ms=8, mew=1.5)
        if name == "mixed":
            for xi, yi, r in zip(x, y, recs, strict=True):
                ax.annotate(f"{r['iterations']} it", (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=7)
    for i, (kf, limit) in enumerate(TIME_TARGETS):
        ax.plot([kf], [limit], marker="*", ms=14, color="red", ls="none", label="target (mixed)" if i == 0 else None)
        ax.annotate(f"< {limit * 1e3:g} ms @ {kf:,} kf" if limit < 1 else f"< {limit:g} s @ {kf:,} kf",
                    (kf, limit), textcoords="offset points", xytext=(-30, 8), fontsize=8, color="red")  # fmt: skip
    if any(r.get("termination") != "CONVERGENCE" for r in results):
        ax.plot([], [], "x", color="k", ms=8, mew=1.5, label="not converged")
    ax.set_xscale("log")
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi * 2.0)  # room for the target labels
    ax.set_xlabel("keyframes")
    ax.set_ylabel("PGO solve time [s] (median, from the odometry chain)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    ax.set_title("Loop-closure PGO: time against graph size", fontsize=10)
    fig.tight_layout()
    _save(fig, path, dpi)


def _cdf(ax: Any, values: np.ndarray, label: str, color: str, style: str = "-") -> None:
    v = np.sort(values[np.isfinite(values) & (values > 0)])
    if not v.size:
        return
    frac = np.arange(1, v.size + 1) / v.size
    ax.step(v, frac, where="post", color=color, ls=style, lw=1.4, label=f"{label} (median {np.median(v):.2g} m)")


def plot_cumulative_ate(results: Mapping[str, Any], path: str | os.PathLike, dpi: int = 120) -> None:
    """Cumulative histogram of ATE over the :func:`pgo_accuracy_study` problems (log x).

    One curve per precision and one for the odometry-only start; with a reference precision, a
    second panel shows each precision's distance to the reference solution.
    """
    from matplotlib.figure import Figure

    diffs = results.get("difference_to_reference") or {}
    panels = 2 if diffs else 1
    fig = Figure(figsize=(8, 4.8 * panels))
    ax = fig.add_subplot(panels, 1, 1)
    _cdf(ax, _floats(results["ate_odometry"]), "odometry only", "0.4", "--")
    colors = {"fp64": "C0", "fp32": "C1", "mixed": "C2", "fp16": "C3"}
    per = results["results"]
    for k, (p, rec) in enumerate(per.items()):
        style = ":" if p == results.get("reference") and p not in results["precisions"] else "-"
        _cdf(ax, _floats(rec["ate"]), f"after PGO, {p}", colors.get(p, f"C{4 + k}"), style)
    ax.set_xscale("log")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("ATE [m] (position RMSE, keyframe 0 anchored)")
    ax.set_ylabel("fraction of problems")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    ax.set_title(
        f"{results['num_problems']} PGO problems of {results['num_keyframes']} keyframes: cumulative ATE", fontsize=10
    )
    if diffs:
        ax2 = fig.add_subplot(panels, 1, 2)
        for k, (p, d) in enumerate(diffs.items()):
            v = _floats(d)
            v = np.sort(v[np.isfinite(v)])
            if v.size:
                floor = np.finfo(np.float64).tiny  # identical solutions would vanish from a log axis
                frac = np.arange(1, v.size + 1) / v.size
                ax2.step(np.maximum(v, floor), frac, where="post", color=colors.get(p, f"C{4 + k}"),
                         label=f"{p} (median {np.median(v):.2g} m)")  # fmt: skip
        ax2.set_xscale("log")
        ax2.set_ylim(0.0, 1.0)
        ax2.set_xlabel(f"RMS position difference to the {results['reference']} solution [m]")
        ax2.set_ylabel("fraction of problems")
        ax2.set_title("How far each precision's solution lies from the reference one", fontsize=10)
        ax2.grid(True, which="both", alpha=0.3)
        ax2.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    _save(fig, path, dpi)
