#!/usr/bin/env python3
"""Pose-graph optimisation benchmark: mp_slam_ros (every precision preset, pcg-ic and cholesky) vs GTSAM LM.

For every graph the script runs

* ``optimize_pose_graph(graph, preset, SolverOptions(linear_solver="pcg-ic"))`` for the presets
  fp64, fp32, mixed and fp16, and ``linear_solver="cholesky"`` once (fp64 preset: the direct
  solve is fp64 whatever the preset says);
* GTSAM's ``LevenbergMarquardtOptimizer`` with default parameters on the same factors and the same
  initial guess (BetweenFactorPose2/Pose3 with ``noiseModel.Gaussian.Information`` of our parsed
  information matrices plus a prior on pose 0), timing ``optimize()`` only;

and writes ``benchmarks/results/pgo.json`` (raw numbers and machine info), ``pgo.md`` (tables for the
README, also printed to stdout) and ``pgo_time.png``. See ``benchmarks/README.md``.

Run from the repository root::

    python benchmarks/bench_pgo.py                 # default graphs, ~10-15 min on 2 cores
    python benchmarks/bench_pgo.py --quick         # small subset, ~2 min
    python benchmarks/bench_pgo.py --graphs intel,sphere2500 --repeat 5
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# common.py puts the repository root on sys.path (the kernel cache is the shared per-user one).
from common import (
    DEFAULT_DATA,
    RESULTS_DIR,
    SHARED_DATA_ENV,
    RepeatPolicy,
    add_output_args,
    add_repeat_args,
    cpu_load_note,
    data_origin,
    fmt_cost,
    fmt_ratio,
    fmt_rel,
    fmt_time,
    gtsam_available,
    gtsam_lm_params_record,
    gtsam_short_term,
    gtsam_termination,
    log,
    log_bars,
    log_start,
    machine_info,
    machine_line,
    median_cpu,
    median_index,
    portable_path,
    progress,
    ratio,
    rel_diff,
    resolve_data_dir,
    run_gtsam_lm,
    run_repeated,
    save_figure,
    scrub,
    short_term,
    summary_record,
    timed,
    write_outputs,
)

# name -> file relative to <shared data>/pgo
GRAPH_FILES: dict[str, str] = {
    "intel": "se-sync/intel.g2o",
    "manhattan": "se-sync/manhattan.g2o",
    "kitti_00": "se-sync/kitti_00.g2o",
    "sphere2500": "se-sync/sphere2500.g2o",
    "city10000": "se-sync/city10000.g2o",
    "torus3D": "se-sync/torus3D.g2o",
    "smallGrid3D": "se-sync/smallGrid3D.g2o",
    "CSAIL": "se-sync/CSAIL.g2o",
    "MIT": "se-sync/MIT.g2o",
    # extras (cheap): Carlone's INTEL (a different graph from intel.g2o, with its own initial guess), and
    # GTSAM's EDGE3 copy of sphere2500, which has no vertices: a 3D graph started from chained odometry.
    "INTEL_dpgo": "dpgo/input_INTEL_g2o.g2o",
    "sphere2500_odom": "gtsam/sphere2500.txt",
    # available with --graphs: the M3500 variants with extra rotation noise (harder), kitti_02.
    "M3500a": "slambook/M3500a.g2o",
    "M3500b": "slambook/M3500b.g2o",
    "kitti_02": "se-sync/kitti_02.g2o",
}
DEFAULT_GRAPHS = [
    "intel",
    "manhattan",
    "kitti_00",
    "sphere2500",
    "city10000",
    "torus3D",
    "smallGrid3D",
    "CSAIL",
    "MIT",
    "INTEL_dpgo",
    "sphere2500_odom",
]
QUICK_GRAPHS = ["intel", "CSAIL", "MIT", "smallGrid3D", "sphere2500"]
# Small graphs used to compile / load the numba kernels of every precision before timing.
WARMUP_FILES = {2: "gtsam/pose2example.txt", 3: "se-sync/tinyGrid3D.g2o"}

PRESETS = ("fp64", "fp32", "mixed", "fp16")
PCG = "pcg-ic"
CHOLESKY = "cholesky"
CHOLESKY_PRESET = "fp64"
# optimize_pose_graph(..., initialization=...): "chordal" (its default) re-initialises from the measurements,
# "given" keeps the file's poses. "default" stands for an optimize_pose_graph without that argument.
INITS = ("chordal", "given")
DEFAULT_INIT = "default"

# GTSAM 4.3 LM numbers measured earlier on this kind of machine ("with a prior on pose 0"):
# seconds, iterations, final graph.error.
GTSAM_REFERENCE: dict[str, tuple[float, int, float, str]] = {
    "intel": (0.039, 4, 22.50, ""),
    "manhattan": (0.110, 5, 1774.5, ""),
    "kitti_00": (0.097, 4, 49.16, ""),
    "sphere2500": (0.41, 7, 675.70, ""),
    "city10000": (0.62, 7, 255.99, ""),
    "torus3D": (16.6, 100, 29950.0, "not converged"),
}

MIXED_VS_FP64_COST_TARGET = 1e-4  # |mixed - fp64| / fp64 on pcg-ic
MIXED_OVER_FP32_TIME_TARGET = 0.74  # mixed time / fp32 time on pcg-ic, 3D graphs
COST_MATCH_TOL = 1e-3  # a final cost this far (relative) above the best any run reached is flagged

# GTSAM's own g2o examples (Pose2SLAMExample_g2o.py / Pose3SLAMExample_g2o.py) anchor pose 0 with these
# prior variances (tangent order x, y, theta in 2D; wx, wy, wz, x, y, z in 3D).
GTSAM_PRIOR_VARIANCES = {2: (1e-6, 1e-6, 1e-8), 3: (1e-6, 1e-6, 1e-6, 1e-4, 1e-4, 1e-4)}


# ----------------------------------------------------------------------------------------------
# data


def resolve_pgo_dir(arg: str | None) -> tuple[Path, str]:
    """The ``pgo`` directory of the shared data and where its location came from.

    ``--data`` and ``MP_SLAM_SHARED_DATA`` may name either the shared data root (holding ``pgo/``) or the
    ``pgo`` directory itself.
    """
    return resolve_data_dir(
        arg, "pgo", lambda c: (c / "se-sync").is_dir() or any(c.glob("*/*.g2o")), "se-sync/intel.g2o"
    )


def resolve_graphs(names: list[str], pgo_dir: Path) -> list[tuple[str, Path]]:
    out, missing = [], []
    for name in names:
        if name in GRAPH_FILES:
            path = pgo_dir / GRAPH_FILES[name]
        else:
            cand = [pgo_dir / name, Path(name)]
            path = next((c for c in cand if c.is_file()), cand[0])
            name = Path(name).stem
        if not path.is_file():
            missing.append(f"{name}: {path}")
        out.append((name, path))
    if missing:
        known = ", ".join(GRAPH_FILES)
        raise SystemExit(
            "error: pose-graph file(s) not found:\n  " + "\n  ".join(missing) + f"\n(known names: {known}; "
            "other entries are taken as paths relative to the pgo data directory)"
        )
    return out


# ----------------------------------------------------------------------------------------------
# ours


def supported_initializations() -> list[str]:
    """Values of optimize_pose_graph's `initialization` argument ([] when it has none)."""
    from mp_slam_ros.pgo import problem as pgo_problem

    params = inspect.signature(pgo_problem.optimize_pose_graph).parameters
    if "initialization" not in params:
        return []
    return list(getattr(pgo_problem, "INITIALIZATIONS", INITS))


def run_ours(
    graph, problem, init: str, preset: str, solver: str, policy: RepeatPolicy, time_limit: float | None, bar
) -> dict:
    from mp_slam_ros.pgo.problem import PoseState, optimize_pose_graph
    from mp_slam_ros.solver.lm import SolverOptions

    kwargs: dict[str, Any] = {"linear_solver": solver}
    if time_limit is not None:
        kwargs["max_solver_time_in_seconds"] = time_limit
    extra = {} if init == DEFAULT_INIT else {"initialization": init}

    def run_once() -> dict:
        (out, summary), wall, cpu = timed(lambda: optimize_pose_graph(graph, preset, SolverOptions(**kwargs), **extra))
        return summary_record(summary, wall, cpu, problem.cost(PoseState(out.rotations, out.translations)))

    return run_repeated(run_once, policy, bar)


def chordal_start(graph):
    """The chordal initial guess optimize_pose_graph starts from (None if the module is unavailable)."""
    try:
        from mp_slam_ros.pgo.initialization import chordal_initialization
    except ImportError:
        return None
    return chordal_initialization(graph)


# ----------------------------------------------------------------------------------------------
# GTSAM


def _angle(r: np.ndarray) -> np.ndarray:
    return np.arctan2(r[..., 1, 0], r[..., 0, 0])


def build_gtsam(pgraph, rotations: np.ndarray, translations: np.ndarray, with_prior: bool = True):
    """NonlinearFactorGraph of our PoseGraph and initial Values from the given poses (keys = pose indices).

    ``pgraph`` should be ``PoseGraphProblem(graph).graph``: the information matrices our solver uses
    (projected onto the PSD cone when a file holds indefinite ones), already in GTSAM's tangent order.
    """
    import gtsam

    n, m, d = pgraph.num_poses, pgraph.num_edges, pgraph.dim
    fg = gtsam.NonlinearFactorGraph()
    init = gtsam.Values()
    ei, ej = pgraph.edge_i.tolist(), pgraph.edge_j.tolist()
    info = pgraph.information
    if d == 2:
        th, mth = _angle(rotations), _angle(pgraph.meas_rotations)
        t, mt = translations, pgraph.meas_translations
        for k in range(n):
            init.insert(k, gtsam.Pose2(float(t[k, 0]), float(t[k, 1]), float(th[k])))
        for e in range(m):
            z = gtsam.Pose2(float(mt[e, 0]), float(mt[e, 1]), float(mth[e]))
            fg.add(gtsam.BetweenFactorPose2(ei[e], ej[e], z, gtsam.noiseModel.Gaussian.Information(info[e])))
    else:
        for k in range(n):
            init.insert(k, gtsam.Pose3(gtsam.Rot3(rotations[k]), translations[k]))
        for e in range(m):
            z = gtsam.Pose3(gtsam.Rot3(pgraph.meas_rotations[e]), pgraph.meas_translations[e])
            fg.add(gtsam.BetweenFactorPose3(ei[e], ej[e], z, gtsam.noiseModel.Gaussian.Information(info[e])))
    if with_prior:
        anchors = np.nonzero(pgraph.fixed)[0].tolist() or [0]
        model = gtsam.noiseModel.Diagonal.Variances(np.array(GTSAM_PRIOR_VARIANCES[d]))
        for k in anchors:
            if d == 2:
                fg.add(gtsam.PriorFactorPose2(k, init.atPose2(k), model))
            else:
                fg.add(gtsam.PriorFactorPose3(k, init.atPose3(k), model))
    return fg, init


def gtsam_values_to_state(values, n: int, d: int):
    from mp_slam_ros.pgo.problem import PoseState

    rot = np.empty((n, d, d))
    trans = np.empty((n, d))
    for k in range(n):
        p = values.atPose2(k) if d == 2 else values.atPose3(k)
        rot[k] = p.rotation().matrix()
        trans[k] = np.asarray(p.translation()).reshape(d)
    return PoseState(rot, trans)


def run_gtsam(problem, start, policy: RepeatPolicy, bar) -> dict:
    """GTSAM LM from the poses of ``start`` (a PoseGraph) on the factors of ``problem.graph``."""
    import gtsam

    pgraph = problem.graph
    t0 = time.perf_counter()
    fg, init = build_gtsam(pgraph, start.rotations, start.translations, with_prior=True)
    fg_noprior, _ = build_gtsam(pgraph, start.rotations, start.translations, with_prior=False)
    build_time = time.perf_counter() - t0
    params = gtsam.LevenbergMarquardtParams()
    max_it = int(params.getMaxIterations())
    runs = run_gtsam_lm(fg, init, params, policy, bar)
    times, cpu_times, iters, errors = runs["times"], runs["cpu_times"], runs["iterations"], runs["errors"]
    result = runs["values"]
    k = runs["median"]
    state = gtsam_values_to_state(result, pgraph.num_poses, pgraph.dim)
    error = errors[k]
    error_noprior = float(fg_noprior.error(result))
    init_error = float(fg.error(init))
    termination = gtsam_termination(iters[k], max_it, error, init_error)
    return {
        "time": statistics.median(times),
        "times": times,
        "cpu_times": cpu_times,
        "n_runs": len(times),
        "num_iterations": iters[k],
        "max_iterations": max_it,
        "converged": termination == "CONVERGENCE",
        "termination": termination,
        "final_error": error,  # graph.error, prior included
        "final_error_without_prior": error_noprior,
        "prior_error": error - error_noprior,
        "final_cost_ours_fp64": float(problem.cost(state)),  # our cost function on GTSAM's result
        "initial_error": init_error,
        "initial_error_without_prior": float(fg_noprior.error(init)),
        "deterministic": runs["deterministic"],
        "errors_runs": errors,
        "iterations_runs": iters,
        "graph_build_time": build_time,
        "params": gtsam_lm_params_record(params, max_it, prior_variances=list(GTSAM_PRIOR_VARIANCES[pgraph.dim])),
    }


def compare_with_gtsam_reader(path: Path, g) -> float | None:
    """Max abs difference between our initial poses and those of ``gtsam.readG2o`` (None if unreadable)."""
    if path.suffix != ".g2o":
        return None
    try:
        import gtsam

        _, values = gtsam.readG2o(str(path), g.dim == 3)
        if values.size() != g.num_poses:
            return math.inf
        diff = 0.0
        for k, vid in enumerate(g.ids.tolist()):
            p = values.atPose2(vid) if g.dim == 2 else values.atPose3(vid)
            diff = max(diff, float(np.abs(p.rotation().matrix() - g.rotations[k]).max()))
            diff = max(diff, float(np.abs(np.asarray(p.translation()).reshape(-1) - g.translations[k]).max()))
        return diff
    except Exception:
        return None


# ----------------------------------------------------------------------------------------------
# warm-up


def warmup(pgo_dir: Path, dims: set[int], inits: list[str], cols: list[tuple[str, str, str]]) -> dict:
    """One untimed solve per (dimension, initialisation, precision, solver) on a small graph, so JIT
    compilation (or loading numba's on-disk cache) is not timed. Uses a synthetic graph if the file is missing."""
    from mp_slam_ros.io.g2o import read_pose_graph
    from mp_slam_ros.pgo.problem import optimize_pose_graph
    from mp_slam_ros.solver.lm import SolverOptions

    report: dict[str, Any] = {}
    for d in sorted(dims):
        path = pgo_dir / WARMUP_FILES[d]
        if path.is_file():
            g, src = read_pose_graph(path), WARMUP_FILES[d]
        else:
            from mp_slam_ros.pgo.synthetic import make_loop_pose_graph

            g, src = make_loop_pose_graph(num_poses=60, laps=2.0, dim=d).graph, "synthetic"
        for init in inits:
            extra = {} if init == DEFAULT_INIT else {"initialization": init}
            for solver, preset, _ in cols:
                t0 = time.perf_counter()
                try:
                    optimize_pose_graph(g, preset, SolverOptions(linear_solver=solver), **extra)
                    status = "ok"
                except Exception as err:
                    status = scrub(f"{type(err).__name__}: {err}")
                report[f"{d}D/{init}/{solver}/{preset}"] = {
                    "graph": src,
                    "time": time.perf_counter() - t0,
                    "status": status,
                }
    return report


# ----------------------------------------------------------------------------------------------
# derived numbers


def gtsam_start_for(init: str) -> str:
    return "chordal" if init == "chordal" else "given"


def best_cost(entry: dict) -> tuple[float | None, str | None]:
    """The lowest final cost any run (ours or GTSAM, any start) reached on this graph, and which run."""
    cands: list[tuple[float, str]] = []
    for st, gt in (entry.get("gtsam") or {}).items():
        cands.append((gt["final_cost_ours_fp64"], f"GTSAM ({st} start)"))
    for init, by_s in entry["ours"].items():
        for solver, by_p in by_s.items():
            for preset, r in by_p.items():
                if "error" not in r:
                    cands.append((r["final_cost_fp64"], f"{solver}/{preset} ({init} start)"))
    cands = [c for c in cands if math.isfinite(c[0])]
    if not cands:
        return None, None
    return min(cands)


def derive(entry: dict, inits: list[str]) -> dict:
    """Per initialisation: ours vs GTSAM from the same start, vs the best cost, and the mixed-precision targets."""
    best, best_by = best_cost(entry)
    out: dict[str, Any] = {"best_cost": best, "best_cost_by": best_by, "gtsam_rel_to_best": {}}
    for st, gt in (entry.get("gtsam") or {}).items():
        out["gtsam_rel_to_best"][st] = rel_diff(gt["final_cost_ours_fp64"], best)
    for init in inits:
        gt = (entry.get("gtsam") or {}).get(gtsam_start_for(init)) or {}
        gt_time, gt_cost = gt.get("time"), gt.get("final_cost_ours_fp64")
        ours = entry["ours"].get(init, {})
        vs: dict[str, Any] = {}
        for solver, by_preset in ours.items():
            for preset, r in by_preset.items():
                if "error" not in r:
                    vs[f"{solver}/{preset}"] = {
                        "time_ratio": ratio(r["time"], gt_time),
                        "rel_cost_diff": rel_diff(r["final_cost_fp64"], gt_cost),
                        "rel_to_best": rel_diff(r["final_cost_fp64"], best),
                    }
        pcg = ours.get(PCG, {})

        def ok(p: str, pcg=pcg) -> dict | None:
            r = pcg.get(p)
            return r if r is not None and "error" not in r else None

        m, f64, f32 = ok("mixed"), ok("fp64"), ok("fp32")
        d = rel_diff(m["final_cost_fp64"], f64["final_cost_fp64"]) if m and f64 else None
        t = ratio(m["time"], f32["time"]) if m and f32 else None
        c = ratio(median_cpu(m), median_cpu(f32)) if m and f32 else None
        out[init] = {
            "gtsam_start": gtsam_start_for(init),
            "vs_gtsam": vs,
            "mixed_vs_fp64_rel_cost": d,
            "mixed_vs_fp64_ok": None if d is None else abs(d) <= MIXED_VS_FP64_COST_TARGET,
            "mixed_over_fp32_time": t,
            "mixed_over_fp32_cpu_time": c,  # the same from process CPU time: less sensitive to other load
            "mixed_over_fp32_ok": None if t is None or entry["dim"] != 3 else t <= MIXED_OVER_FP32_TIME_TARGET,
        }
    return out


# ----------------------------------------------------------------------------------------------
# markdown


def configs(presets: list[str], do_pcg: bool, do_chol: bool) -> list[tuple[str, str, str]]:
    """(solver, preset, column label)."""
    cols = [(PCG, p, p) for p in presets] if do_pcg else []
    if do_chol:
        cols.append((CHOLESKY, CHOLESKY_PRESET, CHOLESKY))
    return cols


INIT_TITLES = {
    "chordal": "default pipeline: `optimize_pose_graph` chordal-initialises, GTSAM starts from that same chordal guess",
    "given": '`initialization="given"`: both start from the file\'s poses (VERTEX lines, else the odometry chain)',
    "default": "`optimize_pose_graph` defaults; both start from the file's poses",
}


def _cell_ours(e: dict, init: str, s: str, p: str, what: str) -> str:
    r = e["ours"].get(init, {}).get(s, {}).get(p)
    if r is None:
        return "-"
    if "error" in r:
        return "CRASH"
    vs = e["derived"][init]["vs_gtsam"].get(f"{s}/{p}", {})
    if what == "time":
        tr = vs.get("time_ratio")
        return fmt_time(r["time"]) + (f" (x{fmt_ratio(tr)})" if tr is not None else "")
    d = vs.get("rel_cost_diff")
    cell = fmt_cost(r["final_cost_fp64"]) + (f" ({fmt_rel(d)})" if d is not None else "")
    b = vs.get("rel_to_best")
    if b is not None and b > COST_MATCH_TOL:
        cell = f"**{cell}**"
    if r["termination"] != "CONVERGENCE":
        cell += " †"
    return cell


def _cell_gtsam(e: dict, st: str) -> str:
    gt = (e.get("gtsam") or {}).get(st)
    if not gt:
        return "-"
    cell = fmt_cost(gt["final_cost_ours_fp64"])
    b = e["derived"]["gtsam_rel_to_best"].get(st)
    if b is not None and b > COST_MATCH_TOL:
        cell = f"**{cell}**"
    return cell + ("" if gt["converged"] else " †")


def make_markdown(results: dict) -> str:
    machine = results["machine"]
    cfg = results["config"]
    presets, do_pcg, do_chol, inits = cfg["presets"], cfg["pcg_ic"], cfg["cholesky"], cfg["initializations"]
    cols = configs(presets, do_pcg, do_chol)
    graphs = results["graphs"]
    have_gtsam = cfg["gtsam"]
    L: list[str] = []
    L.append("## Pose-graph optimisation benchmark")
    L.append("")
    L.append(machine_line(machine))
    L.append("")
    L.append(
        f"Times are wall-clock medians of {cfg['repeat']} run(s) per configuration (one run only when the first "
        f"took more than {cfg['single_run_above']:g} s; `n` in the detail table), after an untimed warm-up solve "
        "per configuration. Ours: the whole `optimize_pose_graph` call (chordal initialisation included), default "
        "`SolverOptions` but the linear solver. GTSAM: `LevenbergMarquardtOptimizer.optimize()` only, default "
        "parameters, prior on pose 0. (xN) = our time / GTSAM's time from the same start. Costs are 0.5·Σ eᵀΩe "
        "of the final poses evaluated in fp64 by `PoseGraphProblem.cost`, GTSAM's result included; "
        "(Δ) = (ours - GTSAM)/GTSAM from the same start; `best` = the lowest final cost any run reached on the "
        "graph; **bold**: more than 0.1 % above `best`; †: the solver did not report CONVERGENCE (GTSAM: hit its "
        "iteration limit or accepted no step)."
    )
    L.append("")

    for init in inits:
        start = gtsam_start_for(init)
        L.append(f"### Solve time [s], {INIT_TITLES[init]}")
        L.append("")
        head = ["graph", "dim", "poses", "edges"]
        if have_gtsam:
            head.append(f"GTSAM ({start} start)")
            if start != "given":
                head.append("GTSAM (given start)")
        head += [lab + (" (pcg-ic)" if s == PCG else "") for s, _, lab in cols]
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|")
        for name, e in graphs.items():
            row = [name, f"{e['dim']}D", str(e["poses"]), str(e["edges"])]
            gts = e.get("gtsam") or {}
            if have_gtsam:
                for st in [start] + (["given"] if start != "given" else []):
                    gt = gts.get(st)
                    row.append(fmt_time(gt["time"]) + ("" if gt["converged"] else " †") if gt else "-")
            row += [_cell_ours(e, init, s, p, "time") for s, p, _ in cols]
            L.append("| " + " | ".join(row) + " |")
        L.append("")
        L.append(f"### Final cost (Δ vs GTSAM from the same start), {INIT_TITLES[init]}")
        L.append("")
        head = ["graph", "initial (given)"]
        if start != "given":
            head.append(f"initial ({start})")
        head.append("best")
        if have_gtsam:
            head.append(f"GTSAM ({start} start)")
            if start != "given":
                head.append("GTSAM (given start)")
        head += [lab for _, _, lab in cols]
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|")
        for name, e in graphs.items():
            row = [name, fmt_cost(e["initial_cost"])]
            if start != "given":
                row.append(fmt_cost(e.get("initial_cost_chordal")))
            row.append(fmt_cost(e["derived"]["best_cost"]))
            gts = e.get("gtsam") or {}
            if have_gtsam:
                for st in [start] + (["given"] if start != "given" else []):
                    row.append(_cell_gtsam(e, st))
            row += [_cell_ours(e, init, s, p, "cost") for s, p, _ in cols]
            L.append("| " + " | ".join(row) + " |")
        L.append("")

    # --- targets
    if do_pcg and "mixed" in presets:
        L.append(
            f"### Mixed-precision targets (pcg-ic): |mixed - fp64|/fp64 ≤ {MIXED_VS_FP64_COST_TARGET:g}; "
            f"mixed time / fp32 time ≤ {MIXED_OVER_FP32_TIME_TARGET:g} on 3D graphs"
        )
        L.append("")
        L.append(
            "`ok` judges the wall-clock ratio; `CPU` is the same ratio from process CPU time, which other load on "
            "the machine disturbs less."
        )
        L.append("")
        head = ["graph", "dim"]
        for init in inits:
            head += [f"mixed vs fp64 cost ({init})", "ok", f"mixed / fp32 time ({init})", "ok"]
        L.append("| " + " | ".join(head) + " |")
        L.append("|---|--:|" + "--:|:-:|--:|:-:|" * len(inits))
        yes_no = {True: "yes", False: "**no**", None: "-"}
        for name, e in graphs.items():
            row = [name, f"{e['dim']}D"]
            for init in inits:
                dv = e["derived"][init]
                t, c = dv["mixed_over_fp32_time"], dv.get("mixed_over_fp32_cpu_time")
                ok2 = yes_no[dv["mixed_over_fp32_ok"]] if e["dim"] == 3 else "(2D)"
                row += [
                    fmt_rel(dv["mixed_vs_fp64_rel_cost"]),
                    yes_no[dv["mixed_vs_fp64_ok"]],
                    ("-" if t is None else f"{t:.2f}") + ("" if c is None else f" (CPU {c:.2f})"),
                    ok2,
                ]
            L.append("| " + " | ".join(row) + " |")
        L.append("")

    # --- detail
    L.append("### Detail per run")
    L.append("")
    L.append(
        "| graph | start | solver | precision | initial cost | final cost | Δ vs GTSAM | Δ vs best | iters | CG iters "
        "| time [s] | CPU [s] | n | x GTSAM | fallbacks | termination |"
    )
    L.append("|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    for name, e in graphs.items():
        for init in inits:
            gt = (e.get("gtsam") or {}).get(gtsam_start_for(init))
            if gt:
                L.append(
                    f"| {name} | {gtsam_start_for(init)} | GTSAM LM | fp64 | {fmt_cost(gt['initial_error'])} | "
                    f"{fmt_cost(gt['final_cost_ours_fp64'])} | - | "
                    f"{fmt_rel(e['derived']['gtsam_rel_to_best'].get(gtsam_start_for(init)))} | {gt['num_iterations']} "
                    f"| - | {fmt_time(gt['time'])} | {fmt_time(gt['cpu_times'][median_index(gt['times'])])} "
                    f"| {gt['n_runs']} | 1 | - | {gtsam_short_term(gt)} |"
                )
            for s, p, _ in cols:
                r = e["ours"].get(init, {}).get(s, {}).get(p)
                if r is None:
                    continue
                if "error" in r:
                    L.append(
                        f"| {name} | {init} | {s} | {p} | - | - | - | - | - | - | - | - | - | - | - | "
                        f"CRASH: {r['error'][:80]} |"
                    )
                    continue
                vs = e["derived"][init]["vs_gtsam"].get(f"{s}/{p}", {})
                cg = str(r["total_cg_iterations"]) if s != CHOLESKY else "-"
                L.append(
                    f"| {name} | {init} | {s} | {p} | {fmt_cost(r['initial_cost'])} | {fmt_cost(r['final_cost_fp64'])} "
                    f"| {fmt_rel(vs.get('rel_cost_diff'))} | {fmt_rel(vs.get('rel_to_best'))} | {r['num_iterations']} "
                    f"| {cg} | {fmt_time(r['time'])} | {fmt_time(r['cpu_times'][median_index(r['times'])])} | "
                    f"{r['n_runs']} | {fmt_ratio(vs.get('time_ratio'))} | {r['num_fallbacks']} | {short_term(r)} |"
                )
    L.append("")

    # --- stage times
    keys: list[str] = []
    for e in graphs.values():
        for by_s in e["ours"].values():
            for by_p in by_s.values():
                for r in by_p.values():
                    for k in r.get("stage_times", {}):
                        if k not in keys and k != "total":
                            keys.append(k)
    if keys:
        L.append("### Stage times of the median run [s]")
        L.append("")
        L.append("`setup` = wall time - solver total (building `PoseGraphProblem`: PSD projection, information roots).")
        L.append("")
        head = ["graph", "start", "solver", "precision", *keys, "total", "setup"]
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "|".join(["---"] * 4 + ["--:"] * (len(head) - 4)) + "|")
        for name, e in graphs.items():
            for init in inits:
                for s, p, _ in cols:
                    r = e["ours"].get(init, {}).get(s, {}).get(p)
                    if r is None or "error" in r:
                        continue
                    st = r["stage_times"]
                    wall = r["times"][median_index(r["times"])]
                    total = st.get("total")
                    row = [name, init, s, p, *[fmt_time(st.get(k)) for k in keys], fmt_time(total)]
                    row.append(fmt_time(wall - total) if total is not None else "-")
                    L.append("| " + " | ".join(row) + " |")
        L.append("")

    # --- GTSAM reproduction
    if have_gtsam:
        L.append("### GTSAM LM from the given start (GTSAM's standard setup) vs the reference numbers")
        L.append("")
        L.append(
            "`error` is GTSAM's `graph.error` (prior included); `w/o prior` drops the prior factor; `our cost` is "
            "`PoseGraphProblem.cost` of GTSAM's result; `from chordal` is GTSAM's result from our chordal guess."
        )
        L.append("")
        L.append(
            "| graph | time [s] | iters | error | w/o prior | our cost | initial error | ref time | ref iters "
            "| ref error | from chordal: time / iters / cost |"
        )
        L.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        for name, e in graphs.items():
            gts = e.get("gtsam") or {}
            gt = gts.get("given")
            if not gt:
                continue
            ref = GTSAM_REFERENCE.get(name)
            it = f"{gt['num_iterations']}" + ("" if gt["converged"] else f" ({gtsam_short_term(gt)})")
            refcols = (
                [f"{ref[0]:g}", f"{ref[1]}" + (f" ({ref[3]})" if ref[3] else ""), f"{ref[2]:g}"]
                if ref
                else ["-", "-", "-"]
            )
            gc_ = gts.get("chordal")
            chordal = (
                f"{fmt_time(gc_['time'])} / {gc_['num_iterations']} / {fmt_cost(gc_['final_cost_ours_fp64'])}"
                if gc_
                else "-"
            )
            L.append(
                f"| {name} | {fmt_time(gt['time'])} | {it} | {fmt_cost(gt['final_error'])} | "
                f"{fmt_cost(gt['final_error_without_prior'])} | {fmt_cost(gt['final_cost_ours_fp64'])} | "
                f"{fmt_cost(gt['initial_error'])} | " + " | ".join(refcols) + f" | {chordal} |"
            )
        L.append("")
    notes = results.get("notes") or []
    if notes:
        L.append("### Notes")
        L.append("")
        L.extend(f"* {n}" for n in notes)
        L.append("")
    return "\n".join(L)


# ----------------------------------------------------------------------------------------------
# plot


def make_plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results["config"]
    cols = configs(cfg["presets"], cfg["pcg_ic"], cfg["cholesky"])
    inits = cfg["initializations"]
    graphs = results["graphs"]
    names = list(graphs)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(len(inits), 1, figsize=(max(9.0, 1.25 * len(names) + 2), 4.2 * len(inits)), squeeze=False)
    for ax, init in zip(axes[:, 0], inits, strict=True):
        series: list[tuple[str, list[float | None], list[bool], str]] = []
        for i, (s, p, lab) in enumerate(cols):
            vals, bad = [], []
            for n in names:
                r = graphs[n]["ours"].get(init, {}).get(s, {}).get(p)
                ok = r is not None and "error" not in r
                vals.append(r["time"] if ok else None)
                d = graphs[n]["derived"][init]["vs_gtsam"].get(f"{s}/{p}", {}).get("rel_to_best")
                bad.append(ok and (r["termination"] != "CONVERGENCE" or (d is not None and d > COST_MATCH_TOL)))
            series.append((lab + (" (pcg-ic)" if s == PCG else ""), vals, bad, colors[i % len(colors)]))
        if cfg["gtsam"]:
            starts = [gtsam_start_for(init)] + (["given"] if gtsam_start_for(init) != "given" else [])
            for st, color in zip(starts, ["black", "dimgray"], strict=False):
                gv, gb = [], []
                for n in names:
                    gt = (graphs[n].get("gtsam") or {}).get(st)
                    gv.append(gt["time"] if gt else None)
                    b = graphs[n]["derived"]["gtsam_rel_to_best"].get(st)
                    gb.append(bool(gt) and (not gt["converged"] or (b is not None and b > COST_MATCH_TOL)))
                series.append((f"GTSAM LM ({st} start)", gv, gb, color))
        log_bars(ax, [f"{n}\n{graphs[n]['dim']}D" for n in names], series)
        ax.set_ylabel("solve time [s] (median, log)")
        ax.set_title(
            f"start: {init}  -  hatched: not converged, or final cost > 0.1 % above the best any run reached",
            fontsize=9,
        )
    fig.suptitle("Pose-graph optimisation: mp_slam_ros presets vs GTSAM LM", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--data",
        metavar="DIR",
        help=f"shared data directory (holding pgo/), or its pgo/ directory; "
        f"default ${SHARED_DATA_ENV} or {DEFAULT_DATA} relative to the repository root",
    )
    ap.add_argument(
        "--graphs",
        help="comma-separated graph names (or paths relative to pgo/); "
        f"default: {','.join(DEFAULT_GRAPHS)}\nknown: {','.join(GRAPH_FILES)}",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"small subset ({','.join(QUICK_GRAPHS)}), 1 run each unless --repeat is given; "
        "writes pgo_quick.* unless --name is given",
    )
    add_repeat_args(ap, None, "runs per configuration, median reported (default 3)", 10.0)
    ap.add_argument("--presets", default=",".join(PRESETS), help="pcg-ic precision presets (default all)")
    ap.add_argument(
        "--init",
        default=None,
        help="optimize_pose_graph initialisations to run, comma-separated (default: every one the API offers, "
        f"{','.join(INITS)}); GTSAM is run from the same starts",
    )
    ap.add_argument("--no-pcg", action="store_true", help="skip the pcg-ic runs")
    ap.add_argument("--no-cholesky", action="store_true", help="skip the cholesky runs")
    ap.add_argument("--no-gtsam", action="store_true", help="skip GTSAM")
    ap.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="SEC",
        help="SolverOptions.max_solver_time_in_seconds for our solver (default: none; changes results)",
    )
    add_output_args(ap, "pgo", "pgo_quick")
    return ap.parse_args(argv)


def write_pgo_outputs(results: dict, out_dir: Path, stem: str, plot: bool) -> None:
    write_outputs(results, out_dir, stem, make_markdown(results), [("_time", make_plot)] if plot else [])


def rerender(args: argparse.Namespace) -> int:
    src = Path(args.from_json)
    results = json.loads(src.read_text())
    inits = results["config"]["initializations"]
    for entry in results["graphs"].values():
        entry["derived"] = derive(entry, inits)
    out_dir = Path(args.out_dir) if args.out_dir else src.parent
    stem = args.name or src.stem
    write_pgo_outputs(results, out_dir, stem, not args.no_plot)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return rerender(args)
    pgo_dir, origin = resolve_pgo_dir(args.data)
    names = [n.strip() for n in args.graphs.split(",") if n.strip()] if args.graphs else None
    if names is None:
        names = QUICK_GRAPHS if args.quick else DEFAULT_GRAPHS
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if repeat < 1:
        raise SystemExit("error: --repeat must be >= 1")
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    bad = [p for p in presets if p not in PRESETS]
    if bad:
        raise SystemExit(f"error: unknown preset(s) {', '.join(bad)}; choose from {', '.join(PRESETS)}")
    do_pcg, do_chol = not args.no_pcg, not args.no_cholesky
    out_dir = Path(args.out_dir) if args.out_dir else RESULTS_DIR
    stem = args.name or ("pgo_quick" if args.quick else "pgo")
    graphs = resolve_graphs(names, pgo_dir)

    available = supported_initializations()
    if args.init:
        inits = [i.strip() for i in args.init.split(",") if i.strip()]
        bad = [i for i in inits if i not in available]
        if bad:
            offered = ", ".join(available) if available else "none (this optimize_pose_graph has no such argument)"
            raise SystemExit(f"error: unknown initialisation(s) {', '.join(bad)}; offered: {offered}")
    else:
        inits = [i for i in INITS if i in available] + [i for i in available if i not in INITS]
        inits = inits or [DEFAULT_INIT]

    gtsam_error = None if args.no_gtsam else gtsam_available()
    do_gtsam = not args.no_gtsam and gtsam_error is None
    if gtsam_error:
        log(
            f"warning: gtsam is not importable ({gtsam_error}); running without GTSAM columns. "
            "Install it with `pip install gtsam` (the repo's `.[bench]` extra)."
        )

    from mp_slam_ros.io.g2o import read_pose_graph
    from mp_slam_ros.pgo.problem import PoseGraphProblem

    policy = RepeatPolicy(repeat, args.single_run_above)
    machine = machine_info()
    log_start(pgo_dir, origin, machine, f"; initialisations {','.join(inits)}")

    # Load every graph first (parsing is not benchmarked) so the warm-up knows which dimensions occur.
    loaded = []
    for name, path in graphs:
        t0 = time.perf_counter()
        g = read_pose_graph(path)
        loaded.append((name, path, g, time.perf_counter() - t0))
    dims = {g.dim for _, _, g, _ in loaded}

    cols = configs(presets, do_pcg, do_chol)
    t0 = time.perf_counter()
    log("warm-up (JIT compile / load numba cache) ...")
    warm = warmup(pgo_dir, dims, inits, cols)
    log(f"warm-up done in {time.perf_counter() - t0:.1f} s")
    for key, w in warm.items():
        if w["status"] != "ok":
            log(f"warning: warm-up {key} failed: {w['status']}")

    gtsam_starts = sorted({gtsam_start_for(i) for i in inits} | {"given"}, key=["given", "chordal"].index)
    total_tasks = len(loaded) * (len(cols) * len(inits) + (len(gtsam_starts) if do_gtsam else 0))
    results: dict[str, Any] = {
        "schema": 2,
        "machine": machine,
        "config": {
            "data_dir": portable_path(pgo_dir),
            "data_origin": data_origin(origin),
            "graphs": [n for n, _ in graphs],
            "repeat": repeat,
            "single_run_above": args.single_run_above,
            "presets": presets,
            "initializations": inits,
            "pcg_ic": do_pcg,
            "cholesky": do_chol,
            "cholesky_preset": CHOLESKY_PRESET,
            "gtsam": do_gtsam,
            "gtsam_starts": gtsam_starts if do_gtsam else [],
            "time_limit": args.time_limit,
            "quick": args.quick,
            "targets": {
                "mixed_vs_fp64_rel_cost": MIXED_VS_FP64_COST_TARGET,
                "mixed_over_fp32_time_3d": MIXED_OVER_FP32_TIME_TARGET,
            },
        },
        "warmup": warm,
        "gtsam_reference": {
            k: {"time": v[0], "iterations": v[1], "error": v[2], "note": v[3]} for k, v in GTSAM_REFERENCE.items()
        },
        "graphs": {},
        "notes": [],
    }
    notes: list[str] = results["notes"]
    if gtsam_error:
        notes.append(f"GTSAM not run: {gtsam_error}")

    start = time.perf_counter()
    bar = progress(total_tasks, "cfg")
    for name, path, g, parse_time in loaded:
        problem = PoseGraphProblem(g)
        init_cost = problem.cost(problem.initial_state())
        chordal = chordal_start(g) if "chordal" in inits else None
        init_cost_chordal = None
        if chordal is not None:
            from mp_slam_ros.pgo.problem import PoseState

            init_cost_chordal = problem.cost(PoseState(chordal.rotations, chordal.translations))
        file_rel = path.relative_to(pgo_dir).as_posix() if path.is_relative_to(pgo_dir) else portable_path(path)
        entry: dict[str, Any] = {
            "file": file_rel,
            "dim": g.dim,
            "poses": g.num_poses,
            "edges": g.num_edges,
            "has_initial_guess": g.has_initial_guess,
            "fixed_poses": int(np.count_nonzero(g.fixed)),
            "psd_projected_edges": int(problem.num_projected_edges),
            "parse_time": parse_time,
            "initial_cost": init_cost,  # the file's poses (or the odometry chain)
            "initial_cost_chordal": init_cost_chordal,
            "ours": {},
            "gtsam": {},
        }
        results["graphs"][name] = entry
        if do_gtsam:
            for st in gtsam_starts:
                start_graph = g if st == "given" else chordal
                bar.set_description(f"{name} GTSAM ({st})")
                if start_graph is None:
                    bar.update(1)
                    continue
                try:
                    gt = run_gtsam(problem, start_graph, policy, bar)
                    entry["gtsam"][st] = gt
                    bar.write(
                        f"  {name:>15} GTSAM LM ({st:>7}) {gt['time']:8.3f} s  it {gt['num_iterations']:3d}  "
                        f"error {gt['final_error']:.7g} (our cost {gt['final_cost_ours_fp64']:.7g})  "
                        f"{gt['termination']}",
                        file=sys.stderr,
                    )
                    ref = init_cost if st == "given" else init_cost_chordal
                    d0 = rel_diff(gt["initial_error_without_prior"], ref)
                    if d0 is not None and abs(d0) > 1e-9:
                        notes.append(
                            f"{name}: GTSAM's initial error ({st} start) {gt['initial_error_without_prior']:.10g} "
                            f"differs from our cost of the same poses {ref:.10g}: the factor graphs disagree"
                        )
                except Exception as err:
                    entry.setdefault("gtsam_errors", {})[st] = scrub(f"{type(err).__name__}: {err}")
                    bar.write(f"  {name:>15} GTSAM ({st}) failed: {type(err).__name__}: {err}", file=sys.stderr)
                bar.update(1)
        for init in inits:
            for solver, preset, _ in cols:
                bar.set_description(f"{name} {init} {preset} {solver}")
                r = run_ours(g, problem, init, preset, solver, policy, args.time_limit, bar)
                entry["ours"].setdefault(init, {}).setdefault(solver, {})[preset] = r
                if "error" in r:
                    bar.write(f"  {name:>15} {init:>7} {preset:>5} {solver:<8}  CRASH {r['error']}", file=sys.stderr)
                else:
                    bar.write(
                        f"  {name:>15} {init:>7} {preset:>5} {solver:<8} {r['time']:8.3f} s  "
                        f"it {r['num_iterations']:3d}  cg {r['total_cg_iterations']:5d}  "
                        f"cost {r['final_cost_fp64']:.7g}  fb {r['num_fallbacks']}  {r['termination']}",
                        file=sys.stderr,
                    )
                bar.update(1)
        entry["derived"] = derive(entry, inits)
    bar.close()
    results["total_benchmark_time"] = time.perf_counter() - start

    # --- notes: did both solvers start from the same poses?
    for name, path, g, _ in loaded:
        e = results["graphs"][name]
        for init in inits:
            expected = e["initial_cost_chordal"] if init == "chordal" else e["initial_cost"]
            off = []
            for solver, by_p in e["ours"].get(init, {}).items():
                for preset, r in by_p.items():
                    d0 = rel_diff(r.get("initial_cost"), expected)
                    if d0 is not None and abs(d0) > 1e-5:
                        off.append(f"{solver}/{preset} {r['initial_cost']:.7g}")
            if off:
                notes.append(
                    f"{name} ({init}): our solver started from a different cost than GTSAM's {init} start "
                    f"({fmt_cost(expected)}): " + ", ".join(off)
                )
        if not g.has_initial_guess:
            diff = compare_with_gtsam_reader(path, g) if do_gtsam else None
            e["gtsam_reader_initial_max_abs_diff"] = diff
            if diff is None:
                how = "GTSAM's readG2o was not compared (it does not read this format)" if do_gtsam else ""
            elif diff <= 1e-6:
                how = f"it equals the guess GTSAM's readG2o chains from the edges (max |diff| {diff:.1e})"
            else:
                how = f"**it differs from the guess GTSAM's readG2o builds (max |diff| {diff:.3g})**"
            notes.append(
                f"{name}: no VERTEX lines; the given start is our odometry chain" + (f"; {how}" if how else "")
            )
        for st, msg in (e.get("gtsam_errors") or {}).items():
            notes.append(f"{name}: GTSAM ({st} start) raised {msg}")
        for st, gt in (e.get("gtsam") or {}).items():
            if gt["termination"].startswith("FAILURE"):
                notes.append(
                    f"{name}: GTSAM LM ({st} start) accepted no step ({gt['num_iterations']} iterations, error stays "
                    f"{gt['final_error']:.7g}); GTSAM gives up when no lambda up to "
                    f"{gt['params']['lambdaUpperBound']:g} decreases the error"
                )

    ours = (
        r
        for e in results["graphs"].values()
        for by_s in e["ours"].values()
        for by_p in by_s.values()
        for r in by_p.values()
    )
    note = cpu_load_note(results["machine"], ours)
    if note:
        notes.append(note)

    write_pgo_outputs(results, out_dir, stem, not args.no_plot)
    log(f"benchmark time {results['total_benchmark_time']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
