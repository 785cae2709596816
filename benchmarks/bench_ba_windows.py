#!/usr/bin/env python3
"""Visual-odometry window benchmark: solve time and accuracy of bundle adjustment on synthetic windows.

Windows come from ``mp_slam_ros.ba.synthetic.make_window(num_keyframes, seed=s)``; each is solved as
``solve(problem, start, SolverOptions(linear_solver=solver), load_precision(preset))`` with the first and
last keyframes held at the ground truth (``window.problem(fixed_poses=(0, n - 1))``: a well-determined scale).

a. **Timing**: windows of 10, 25, 50 and 100 keyframes, seeds 0..K-1 (K = 20), every preset (fp64, fp32,
   mixed, fp16) with the cgnr and schur solvers: the median wall time of a window solve, and the time per LM
   iteration split into Jacobian, linear solve, update and other.
b. **Accuracy**: 500 random 50-keyframe windows (seed = index) solved with every preset (cgnr) and with
   schur/fp64 as the reference: the RMS pose error against the ground truth per window, its quantiles and
   cumulative distribution.

Writes ``benchmarks/results/ba_windows.json`` (raw per-window numbers, machine info), ``ba_windows.md``
(tables, also printed to stdout), ``ba_windows_time.png`` and ``ba_windows_accuracy.png``. Everything runs
sequentially in one process so that no two timed solves share the cores. See ``benchmarks/README.md``.

Run from the repository root::

    python benchmarks/bench_ba_windows.py            # ~3 min on 2 cores
    python benchmarks/bench_ba_windows.py --quick    # 5 timing seeds, 40 accuracy windows, ~30 s
    python benchmarks/bench_ba_windows.py --no-timing --windows 1000
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Dense BLAS (the schur solver's reduced camera system) on one thread unless the environment says otherwise:
# systems of a few hundred unknowns gain nothing from a second thread, and on the shared 2-core machine
# OpenBLAS's spinning worker threads made schur solves 5-10x slower (50-keyframe window: 230 ms vs 20 ms).
# Must be set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

# common.py puts the repository root on sys.path (the kernel cache is the shared per-user one).
from common import (
    RESULTS_DIR,
    add_output_args,
    cpu_load_note,
    fmt_rel,
    log,
    log_start,
    machine_info,
    machine_line,
    parse_choices,
    progress,
    ratio,
    rel_diff,
    save_figure,
    scrub,
    solver_options_dict,
    timed,
    write_outputs,
)

if TYPE_CHECKING:
    from mp_slam_ros.ba.synthetic import SyntheticWindow
    from mp_slam_ros.solver.precision import PrecisionConfig

PRESETS = ("fp64", "fp32", "mixed", "fp16")
SOLVERS = ("cgnr", "schur")
TIMING_SIZES = (10, 25, 50, 100)
TIMING_WINDOWS, QUICK_TIMING_WINDOWS = 20, 5
ACCURACY_KEYFRAMES = 50
ACCURACY_WINDOWS, QUICK_ACCURACY_WINDOWS = 500, 40
ACCURACY_SOLVER = "cgnr"
REFERENCE_CONFIG = ("schur", "fp64")  # the direct reduced-camera solve: the accuracy reference line
WARMUP_KEYFRAMES, WARMUP_SEED = 10, 1_000_000  # a seed no timed or accuracy window uses

HEADLINE_KEYFRAMES = 50
TARGET_WINDOW_MS = 20.0  # median 50-keyframe mixed cgnr window solve
TARGET_LINEAR_RATIO = 0.59  # mixed / fp32 cgnr linear-solve time, 50 keyframes
TARGET_ACCURACY_REL = 0.01  # |mixed - fp64| / fp64 of the pose-error quantiles p50 and p99

# Stage times of SolverSummary grouped for the per-iteration split. Any other stage (and the driver's own
# bookkeeping: costs, predicted decrease) lands in "other" = total - the three groups.
STAGE_GROUPS = {
    "jacobian": ("residual_jacobian",),
    "linear": ("gradient_and_scaling", "preconditioner", "linear_solve"),
    "update": ("update",),
}
QUANTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("max", 1.0))
ERRORS = (("trans", "translation [m]"), ("rot", "rotation [rad]"))


def key(solver: str, preset: str) -> str:
    return f"{solver}/{preset}"


def floats(values: list) -> np.ndarray:
    """A JSON list of numbers (non-finite ones stored as strings by json_safe) as a float array."""
    return np.array([float(v) for v in values], dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# runs


def rms_errors(window: SyntheticWindow, state: Any) -> tuple[float, float]:
    """RMS translation [m] and rotation [rad] error over the free keyframes. The first and last keyframes are held
    at the ground truth (zero error by construction), so they are left out rather than diluting the RMS."""
    rot, trans = window.pose_errors(state)
    free = slice(1, window.num_keyframes - 1)
    return float(np.sqrt(np.mean(trans[free] ** 2))), float(np.sqrt(np.mean(rot[free] ** 2)))


def solve_window(window: SyntheticWindow, solver: str, precision: PrecisionConfig) -> dict[str, Any]:
    """Build the problem (timed separately) and solve it once; the numbers both parts of the benchmark keep."""
    from mp_slam_ros.solver.lm import SolverOptions, solve

    n = window.num_keyframes
    (problem, start), build, _ = timed(lambda: window.problem(fixed_poses=(0, n - 1)))
    options = SolverOptions(linear_solver=solver)
    (state, summary), wall, cpu = timed(lambda: solve(problem, start, options, precision))
    trans_rms, rot_rms = rms_errors(window, state)
    return {
        "wall": wall,
        "cpu": cpu,
        "build": build,
        "iterations": int(summary.num_iterations),
        "cg_iterations": int(summary.total_cg_iterations),
        "fallbacks": int(summary.num_fallbacks),
        "termination": str(summary.termination),
        "stage_times": {k: float(v) for k, v in summary.stage_times.items()},
        "final_cost": float(problem.cost(state)),
        "trans_rms": trans_rms,
        "rot_rms": rot_rms,
    }


def new_record() -> dict[str, Any]:
    """Column-wise per-window results of one configuration (a crash leaves NaN and an entry in `errors`)."""
    return {
        "seeds": [],
        "wall": [],
        "cpu": [],
        "build": [],
        "iterations": [],
        "cg_iterations": [],
        "fallbacks": [],
        "termination": [],
        "final_cost": [],
        "trans_rms": [],
        "rot_rms": [],
        "stage_times": {},
        "errors": {},
    }


def append(rec: dict[str, Any], seed: int, out: dict[str, Any] | None, error: str | None = None) -> None:
    rec["seeds"].append(seed)
    if out is None:
        rec["errors"][str(seed)] = error
        out = {k: math.nan for k in rec if k not in ("seeds", "stage_times", "errors")}
        out.update(iterations=0, cg_iterations=0, fallbacks=0, termination="CRASH", stage_times={})
    for k, v in out.items():
        if k == "stage_times":
            for stage in set(v) | set(rec["stage_times"]):
                col = rec["stage_times"].setdefault(stage, [0.0] * (len(rec["seeds"]) - 1))
                col.append(v.get(stage, 0.0))
        else:
            rec[k].append(v)


def run_one(rec: dict[str, Any], window: SyntheticWindow, seed: int, solver: str, precision: PrecisionConfig) -> None:
    try:
        out = solve_window(window, solver, precision)
    except Exception as err:  # keep benchmarking the other windows and configurations
        append(rec, seed, None, scrub(f"{type(err).__name__}: {err}"))
        return
    append(rec, seed, out)


def warmup(configs: list[tuple[str, str]], precisions: dict[str, PrecisionConfig]) -> dict[str, Any]:
    """One untimed solve per configuration on a small window: JIT compilation / cache loading is not timed."""
    from mp_slam_ros.ba.synthetic import make_window

    window = make_window(WARMUP_KEYFRAMES, seed=WARMUP_SEED)
    report = {}
    for solver, preset in configs:
        t0 = time.perf_counter()
        try:
            solve_window(window, solver, precisions[preset])
            status = "ok"
        except Exception as err:
            status = scrub(f"{type(err).__name__}: {err}")
        report[key(solver, preset)] = {"time": time.perf_counter() - t0, "status": status}
    return report


def run_timing(
    sizes: list[int], seeds: list[int], configs: list[tuple[str, str]], precisions: dict[str, PrecisionConfig]
) -> dict:
    from mp_slam_ros.ba.synthetic import make_window

    out: dict[str, Any] = {}
    bar = progress(len(sizes) * len(seeds), "window")
    for n in sizes:
        entry: dict[str, Any] = {"keyframes": n, "points": [], "observations": [], "configs": {}}
        out[str(n)] = entry
        for seed in seeds:
            bar.set_description(f"timing {n} keyframes")
            window = make_window(n, seed=seed)  # not timed
            entry["points"].append(window.num_points)
            entry["observations"].append(window.num_observations)
            # Configurations interleaved per window, so a change of load on the machine hits them all alike.
            for solver, preset in configs:
                gc.collect()  # no collection of an earlier solve's garbage inside the timed call
                rec = entry["configs"].setdefault(key(solver, preset), new_record())
                run_one(rec, window, seed, solver, precisions[preset])
            bar.update(1)
    bar.close()
    return out


def run_accuracy(num_windows: int, configs: list[tuple[str, str]], precisions: dict[str, PrecisionConfig]) -> dict:
    from mp_slam_ros.ba.synthetic import make_window

    out: dict[str, Any] = {
        "keyframes": ACCURACY_KEYFRAMES,
        "initial": {"trans_rms": [], "rot_rms": []},
        "configs": {key(s, p): new_record() for s, p in configs},
    }
    bar = progress(num_windows, "window")
    bar.set_description(f"accuracy {ACCURACY_KEYFRAMES} keyframes")
    n = ACCURACY_KEYFRAMES
    for seed in range(num_windows):
        window = make_window(n, seed=seed)
        _, start = window.problem(fixed_poses=(0, n - 1))
        trans_rms, rot_rms = rms_errors(window, start)
        out["initial"]["trans_rms"].append(trans_rms)
        out["initial"]["rot_rms"].append(rot_rms)
        for solver, preset in configs:
            run_one(out["configs"][key(solver, preset)], window, seed, solver, precisions[preset])
        bar.update(1)
    bar.close()
    return out


# ----------------------------------------------------------------------------------------------
# derived numbers


def timing_stats(rec: dict[str, Any]) -> dict[str, Any]:
    """Medians per window and the per-iteration split (stage sums over all windows / iterations over all windows:
    the parts add up to the total, which medians of the parts would not)."""
    wall = floats(rec["wall"])
    ok = np.isfinite(wall)
    its = floats(rec["iterations"])[ok]
    stages = {k: floats(v)[ok] for k, v in rec["stage_times"].items()}
    total = stages.get("total", wall[ok])
    n_it = float(its.sum())
    zero = np.zeros(int(ok.sum()))
    group = {g: sum((stages[s] for s in names if s in stages), zero) for g, names in STAGE_GROUPS.items()}
    group["other"] = total - sum(group.values())
    term = [t for t, good in zip(rec["termination"], ok, strict=True) if good]
    return {
        "windows": int(ok.sum()),
        "crashes": int((~ok).sum()),
        "median_ms": float(np.median(wall[ok]) * 1e3) if ok.any() else None,
        "p90_ms": float(np.quantile(wall[ok], 0.9) * 1e3) if ok.any() else None,
        "min_ms": float(wall[ok].min() * 1e3) if ok.any() else None,
        "median_cpu_ms": float(np.median(floats(rec["cpu"])[ok]) * 1e3) if ok.any() else None,
        "median_build_ms": float(np.median(floats(rec["build"])[ok]) * 1e3) if ok.any() else None,
        "median_iterations": float(np.median(its)) if ok.any() else None,
        "median_cg_iterations": float(np.median(floats(rec["cg_iterations"])[ok])) if ok.any() else None,
        "per_iteration_ms": {g: float(v.sum() / n_it * 1e3) if n_it else None for g, v in group.items()}
        | {"total": float(total.sum() / n_it * 1e3) if n_it else None},
        "linear_total_s": float(group["linear"].sum()),
        "linear_solve_total_s": float(stages["linear_solve"].sum()) if "linear_solve" in stages else None,
        "cg_iterations_total": float(floats(rec["cg_iterations"])[ok].sum()),
        "not_converged": sum(t != "CONVERGENCE" for t in term),
        "windows_with_fallback": int((floats(rec["fallbacks"])[ok] > 0).sum()),
        "fallbacks": int(floats(rec["fallbacks"])[ok].sum()),
    }


def quantiles(values: np.ndarray) -> dict[str, float | None]:
    v = values[np.isfinite(values)]
    return {name: (float(np.quantile(v, q)) if v.size else None) for name, q in QUANTILES}


def _median(values: list) -> float | None:
    return float(np.median(floats(values))) if values else None


def accuracy_stats(acc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"initial": {e: quantiles(floats(acc["initial"][f"{e}_rms"])) for e, _ in ERRORS}}
    for k, rec in acc["configs"].items():
        term = rec["termination"]
        out[k] = {e: quantiles(floats(rec[f"{e}_rms"])) for e, _ in ERRORS} | {
            "windows": len(term),
            "crashes": sum(t == "CRASH" for t in term),
            "not_converged": sum(t not in ("CONVERGENCE", "CRASH") for t in term),
            "windows_with_fallback": int((floats(rec["fallbacks"]) > 0).sum()),
            "fallbacks": int(np.nansum(floats(rec["fallbacks"]))),
            "median_iterations": _median([i for i, t in zip(rec["iterations"], term, strict=True) if t != "CRASH"]),
        }
    fp64 = acc["configs"].get(key(ACCURACY_SOLVER, "fp64"))
    for k, rec in acc["configs"].items():
        if fp64 is None or k == key(ACCURACY_SOLVER, "fp64"):
            continue
        vs: dict[str, Any] = {}
        for e, _ in ERRORS:
            for q in ("p50", "p99"):
                vs[f"{e}_{q}"] = rel_diff(out[k][e][q], out[key(ACCURACY_SOLVER, "fp64")][e][q])
            # the same window solved both ways: how far apart are the two errors
            a, b = floats(rec[f"{e}_rms"]), floats(fp64[f"{e}_rms"])
            ok = np.isfinite(a) & np.isfinite(b) & (b > 0)
            paired = np.abs(a[ok] - b[ok]) / b[ok]
            vs[f"{e}_paired_p99"] = float(np.quantile(paired, 0.99)) if paired.size else None
        checks = [vs[f"{e}_{q}"] for e, _ in ERRORS for q in ("p50", "p99")]
        vs["ok"] = None if any(c is None for c in checks) else all(abs(c) <= TARGET_ACCURACY_REL for c in checks)
        out[k]["vs_fp64"] = vs
    return out


def derive(results: dict) -> dict:
    out: dict[str, Any] = {"timing": {}, "accuracy": None, "headline": {}}
    for n, entry in (results.get("timing") or {}).items():
        out["timing"][n] = {k: timing_stats(rec) for k, rec in entry["configs"].items()}
    h = out["headline"]
    t50 = out["timing"].get(str(HEADLINE_KEYFRAMES), {})
    mixed, fp32 = t50.get(key("cgnr", "mixed")), t50.get(key("cgnr", "fp32"))
    if mixed:
        h["window_ms"] = mixed["median_ms"]
        h["window_ok"] = None if mixed["median_ms"] is None else mixed["median_ms"] <= TARGET_WINDOW_MS
    if mixed and fp32:
        h["linear_ratio"] = ratio(mixed["linear_total_s"], fp32["linear_total_s"])
        h["linear_ratio_ok"] = None if h["linear_ratio"] is None else h["linear_ratio"] <= TARGET_LINEAR_RATIO
        h["linear_per_iteration_ratio"] = ratio(mixed["per_iteration_ms"]["linear"], fp32["per_iteration_ms"]["linear"])
        # the kernels' speed alone: CG iteration counts of the two presets can differ
        h["linear_solve_per_cg_iteration_ratio"] = ratio(
            ratio(mixed["linear_solve_total_s"], mixed["cg_iterations_total"]),
            ratio(fp32["linear_solve_total_s"], fp32["cg_iterations_total"]),
        )
        h["window_ratio"] = ratio(mixed["median_ms"], fp32["median_ms"])
    if results.get("accuracy"):
        out["accuracy"] = accuracy_stats(results["accuracy"])
        vs = out["accuracy"].get(key(ACCURACY_SOLVER, "mixed"), {}).get("vs_fp64")
        if vs:
            h["accuracy_vs_fp64"] = vs
    return out


# ----------------------------------------------------------------------------------------------
# markdown

YES_NO = {True: "yes", False: "**no**", None: "-"}


def fmt_ms(t: float | None) -> str:
    if t is None:
        return "-"
    return f"{t:.0f}" if t >= 100 else f"{t:.1f}" if t >= 10 else f"{t:.2f}"


def fmt_err(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def timing_sections(results: dict, d: dict) -> list[str]:
    cfg = results["config"]
    configs = [key(s, p) for s, p in cfg["timing_configs"]]
    h = d["headline"]
    L: list[str] = []
    if "window_ms" in h:
        L += [
            f"### VO window timing: {HEADLINE_KEYFRAMES} keyframes, mixed cgnr "
            f"(targets: median ≤ {TARGET_WINDOW_MS:g} ms, mixed / fp32 linear-solve time ≤ {TARGET_LINEAR_RATIO:g})",
            "",
            f"Median over {cfg['timing_windows']} windows (seeds 0..{cfg['timing_windows'] - 1}) of the wall time of "
            "one `solve` call, after an untimed warm-up solve per configuration. Linear-solve time = "
            "gradient_and_scaling + preconditioner + linear_solve stage times, summed over the same windows.",
            "",
            "| quantity | value | target | ok |",
            "|---|--:|--:|:-:|",
            f"| median window solve, mixed cgnr [ms] | {fmt_ms(h['window_ms'])} | ≤ {TARGET_WINDOW_MS:g} | "
            f"{YES_NO[h['window_ok']]} |",
        ]
        if "linear_ratio" in h:
            r = h["linear_ratio"]
            L += [
                f"| linear-solve time, mixed / fp32 (cgnr) | {'-' if r is None else f'{r:.2f}'} | "
                f"≤ {TARGET_LINEAR_RATIO:g} | {YES_NO[h['linear_ratio_ok']]} |",
                f"| ... per LM iteration | {_fmt_ratio(h['linear_per_iteration_ratio'])} | | |",
                f"| ... linear_solve stage per CG iteration | {_fmt_ratio(h['linear_solve_per_cg_iteration_ratio'])} "
                "| | |",
                f"| median window solve, mixed / fp32 (cgnr) | {_fmt_ratio(h['window_ratio'])} | | |",
            ]
        L.append("")

    sizes = list(d["timing"])
    L += [
        "### VO window solve time [ms] (median over windows; + problem build)",
        "",
        "| keyframes | points | observations | " + " | ".join(configs) + " |",
        "|--:|--:|--:|" + "--:|" * len(configs),
    ]
    for n in sizes:
        e = results["timing"][n]
        row = [n, f"{np.median(e['points']):.0f}", f"{np.median(e['observations']):.0f}"]
        for k in configs:
            s = d["timing"][n].get(k)
            row.append("-" if s is None else f"{fmt_ms(s['median_ms'])} (+{fmt_ms(s['median_build_ms'])})")
        L.append("| " + " | ".join(str(c) for c in row) + " |")
    L.append("")

    L += [
        "### Time per LM iteration [ms]: Jacobian / linear solve / update / other",
        "",
        "Stage times summed over all windows of a size, divided by all their LM iterations (accepted or not). "
        "`other` = solver total - the three (costs, the model decrease, bookkeeping).",
        "",
        "| keyframes | solver | precision | median window [ms] | p90 [ms] | iters | CG iters | per iteration "
        "| Jacobian | linear | update | other | not conv. | fallbacks | crashes |",
        "|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for n in sizes:
        for k in configs:
            s = d["timing"][n].get(k)
            if s is None:
                continue
            it = s["per_iteration_ms"]
            solver, preset = k.split("/")
            L.append(
                f"| {n} | {solver} | {preset} | {fmt_ms(s['median_ms'])} | {fmt_ms(s['p90_ms'])} | "
                f"{_fmt_num(s['median_iterations'])} | {_fmt_num(s['median_cg_iterations'])} | {fmt_ms(it['total'])} | "
                f"{fmt_ms(it['jacobian'])} | {fmt_ms(it['linear'])} | {fmt_ms(it['update'])} | {fmt_ms(it['other'])} "
                f"| {s['not_converged']} | {s['fallbacks']} | {s['crashes']} |"
            )
    L.append("")
    return L


def accuracy_sections(results: dict, d: dict) -> list[str]:
    cfg = results["config"]
    acc = d["accuracy"]
    configs = [key(s, p) for s, p in cfg["accuracy_configs"]]
    nwin = cfg["accuracy_windows"]
    L: list[str] = []
    vs = d["headline"].get("accuracy_vs_fp64")
    if vs:
        f64, mix = acc[key(ACCURACY_SOLVER, "fp64")], acc[key(ACCURACY_SOLVER, "mixed")]
        L += [
            f"### VO window accuracy: mixed vs fp64 ({ACCURACY_SOLVER}, {nwin} windows of {ACCURACY_KEYFRAMES} "
            f"keyframes; target |Δ| ≤ {TARGET_ACCURACY_REL:.0%} at p50 and p99)",
            "",
            "Per window: the RMS over the free keyframes of the pose error against the ground truth (the first and "
            "last keyframes are held at the truth). Δ = (mixed - fp64) / fp64 of the quantile over windows; "
            "`paired p99` = the 99th percentile over windows of |mixed - fp64| / fp64 of the same window.",
            "",
            "| error | quantile | fp64 | mixed | Δ | ok |",
            "|---|---|--:|--:|--:|:-:|",
        ]
        for e, label in ERRORS:
            for q in ("p50", "p99"):
                dv = vs[f"{e}_{q}"]
                ok = None if dv is None else abs(dv) <= TARGET_ACCURACY_REL
                L.append(
                    f"| {label} | {q} | {fmt_err(f64[e][q])} | {fmt_err(mix[e][q])} | {fmt_rel(dv)} | {YES_NO[ok]} |"
                )
            L.append(f"| {label} | paired p99 | | | {_fmt_pct(vs[f'{e}_paired_p99'])} | |")
        L.append("")

    L += [
        f"### VO window accuracy: pose-error quantiles over {nwin} windows of {ACCURACY_KEYFRAMES} keyframes",
        "",
        "RMS over the free keyframes per window, then quantiles over windows. `initial` is the perturbed start. "
        "Δ p50 / Δ p99: relative to cgnr/fp64. `not conv.`: windows whose solve did not report CONVERGENCE; "
        "`fallbacks`: windows with a precision fallback (total fallbacks).",
        "",
        "| solver | precision | trans p50 [m] | p90 | p99 | max | rot p50 [rad] | p90 | p99 | max | Δ trans p50 / p99 "
        "| Δ rot p50 / p99 | iters | not conv. | fallbacks | crashes |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    ini = acc["initial"]
    L.append(
        "| initial | - | "
        + " | ".join(fmt_err(ini[e][q]) for e, _ in ERRORS for q, _ in QUANTILES)
        + " | - | - | - | - | - | - |"
    )
    for k in configs:
        s = acc.get(k)
        if s is None:
            continue
        solver, preset = k.split("/")
        v = s.get("vs_fp64") or {}
        dt = f"{fmt_rel(v.get('trans_p50'))} / {fmt_rel(v.get('trans_p99'))}" if v else "-"
        dr = f"{fmt_rel(v.get('rot_p50'))} / {fmt_rel(v.get('rot_p99'))}" if v else "-"
        L.append(
            f"| {solver} | {preset} | "
            + " | ".join(fmt_err(s[e][q]) for e, _ in ERRORS for q, _ in QUANTILES)
            + f" | {dt} | {dr} | {_fmt_num(s['median_iterations'])} | {s['not_converged']} | "
            f"{s['windows_with_fallback']} ({s['fallbacks']}) | {s['crashes']} |"
        )
    L.append("")
    return L


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _fmt_num(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def _fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def make_markdown(results: dict) -> str:
    d = results["derived"]
    L = ["## VO window bundle adjustment (synthetic windows)", "", machine_line(results["machine"], False), ""]
    L.append(
        "Windows from `make_window(num_keyframes, seed=s)` (~55 observations per keyframe, 0.5 px noise), solved "
        "by `solve(problem, start, SolverOptions(linear_solver=solver), load_precision(preset))` with the first "
        "and last keyframes held at the ground truth; default options otherwise (LM, at most 50 iterations). "
        "Every solve runs sequentially in one process."
    )
    L.append("")
    if d["timing"]:
        L += timing_sections(results, d)
    if d["accuracy"]:
        L += accuracy_sections(results, d)
    notes = results.get("notes") or []
    if notes:
        L += ["### Notes", "", *[f"* {n}" for n in notes], ""]
    return "\n".join(L)


# ----------------------------------------------------------------------------------------------
# plots


def plot_time(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = results["derived"]["timing"]
    configs = [key(s, p) for s, p in results["config"]["timing_configs"]]
    sizes = [int(n) for n in d]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, k in enumerate(configs):
        ys = [d[str(n)].get(k, {}).get("median_ms") for n in sizes]
        style = "-" if k.startswith("cgnr") else "--"
        ax1.plot(sizes, [np.nan if y is None else y for y in ys], style, marker="o", color=colors[i % 4], label=k)
    ax1.axhline(TARGET_WINDOW_MS, color="red", lw=0.8, ls=":", label=f"{TARGET_WINDOW_MS:g} ms target")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xticks(sizes, [str(n) for n in sizes])
    ax1.set_xlabel("keyframes in the window")
    ax1.set_ylabel("median solve time per window [ms]")
    ax1.grid(which="both", alpha=0.3)
    ax1.legend(fontsize=7, ncol=2)
    ax1.set_title("window solve time (solid: cgnr, dashed: schur)", fontsize=9)

    n = str(HEADLINE_KEYFRAMES) if str(HEADLINE_KEYFRAMES) in d else str(sizes[-1])
    parts = ("jacobian", "linear", "update", "other")
    bottom = np.zeros(len(configs))
    for j, part in enumerate(parts):
        vals = np.array([(d[n].get(k, {}).get("per_iteration_ms") or {}).get(part) or 0.0 for k in configs])
        ax2.bar(range(len(configs)), vals, bottom=bottom, label=part, color=colors[(j + 4) % len(colors)])
        bottom += vals
    ax2.set_xticks(range(len(configs)), configs, rotation=30, ha="right", fontsize=8)
    ax2.set_ylabel("time per LM iteration [ms]")
    ax2.set_title(f"per-iteration split, {n} keyframes", fontsize=9)
    ax2.grid(axis="y", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle("VO window bundle adjustment: solve time", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def plot_accuracy(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = results["accuracy"]
    configs = [key(s, p) for s, p in results["config"]["accuracy_configs"]]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, (e, label) in zip(axes, ERRORS, strict=True):
        lines = [(k, floats(acc["configs"][k][f"{e}_rms"])) for k in configs]
        lines.append(("initial guess", floats(acc["initial"][f"{e}_rms"])))
        for i, (k, v) in enumerate(lines):
            v = np.sort(v[np.isfinite(v) & (v > 0)])
            if not v.size:
                continue
            frac = np.arange(1, v.size + 1) / v.size
            if k == "initial guess":
                style = {"color": "gray", "ls": ":"}
            elif k == key(*REFERENCE_CONFIG):
                style = {"color": "black", "ls": "--", "lw": 1.0}
            else:  # decreasing widths, so lines lying on top of each other all stay visible
                style = {"color": colors[i % len(colors)], "lw": max(3.2 - 0.7 * i, 0.8)}
            ax.step(v, frac, where="post", label=k, **style)
        ax.set_xscale("log")
        ax.set_xlabel(f"RMS {label} error per window (free keyframes)")
        ax.set_ylabel("fraction of windows with error ≤ x")
        ax.set_ylim(0, 1.01)
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"VO window accuracy: {results['config']['accuracy_windows']} windows of {ACCURACY_KEYFRAMES} keyframes, "
        "cumulative distribution of the pose error vs ground truth",
        fontsize=10,
    )
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_TIMING_WINDOWS} timing windows per size and {QUICK_ACCURACY_WINDOWS} accuracy windows; "
        "writes ba_windows_quick.* unless --name is given",
    )
    ap.add_argument(
        "--sizes", default=",".join(map(str, TIMING_SIZES)), help="timing: keyframes per window (default 10,25,50,100)"
    )
    ap.add_argument(
        "--timing-windows",
        type=int,
        default=None,
        metavar="K",
        help=f"timing: windows (seeds 0..K-1) per size (default {TIMING_WINDOWS})",
    )
    ap.add_argument(
        "--windows",
        type=int,
        default=None,
        metavar="N",
        help=f"accuracy: {ACCURACY_KEYFRAMES}-keyframe windows, seeds 0..N-1 (default {ACCURACY_WINDOWS})",
    )
    ap.add_argument("--presets", default=",".join(PRESETS), help="precision presets (default all)")
    ap.add_argument("--solvers", default=",".join(SOLVERS), help="timing: linear solvers (default cgnr,schur)")
    ap.add_argument("--no-timing", action="store_true", help="skip part a (timing)")
    ap.add_argument("--no-accuracy", action="store_true", help="skip part b (accuracy)")
    add_output_args(ap, "ba_windows", "ba_windows_quick")
    return ap.parse_args(argv)


def write_windows_outputs(results: dict, out_dir: Path, stem: str, plot: bool) -> None:
    results["derived"] = derive(results)
    plots = []
    if plot and results.get("timing"):
        plots.append(("_time", plot_time))
    if plot and results.get("accuracy"):
        plots.append(("_accuracy", plot_accuracy))
    write_outputs(results, out_dir, stem, make_markdown(results), plots)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        src = Path(args.from_json)
        results = json.loads(src.read_text())
        out_dir = Path(args.out_dir) if args.out_dir else src.parent
        write_windows_outputs(results, out_dir, args.name or src.stem, not args.no_plot)
        return 0
    try:
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"error: --sizes must be comma-separated integers, got {args.sizes!r}") from None
    if not sizes or min(sizes) < 2:
        raise SystemExit("error: --sizes needs window sizes of at least 2 keyframes")
    timing_windows = args.timing_windows or (QUICK_TIMING_WINDOWS if args.quick else TIMING_WINDOWS)
    acc_windows = args.windows or (QUICK_ACCURACY_WINDOWS if args.quick else ACCURACY_WINDOWS)
    presets = parse_choices(args.presets, PRESETS, "preset")
    solvers = parse_choices(args.solvers, SOLVERS, "solver")
    out_dir = Path(args.out_dir) if args.out_dir else RESULTS_DIR
    stem = args.name or ("ba_windows_quick" if args.quick else "ba_windows")
    timing_configs = [] if args.no_timing else [(s, p) for s in solvers for p in presets]
    acc_configs = [] if args.no_accuracy else [(ACCURACY_SOLVER, p) for p in presets]
    if acc_configs and REFERENCE_CONFIG not in acc_configs:
        acc_configs.append(REFERENCE_CONFIG)

    from mp_slam_ros.solver.lm import SolverOptions
    from mp_slam_ros.solver.precision import load_precision

    precisions = {p: load_precision(p) for p in set(presets) | {REFERENCE_CONFIG[1]}}
    machine = machine_info()
    log_start(None, "synthetic windows", machine)
    all_configs = list(dict.fromkeys(timing_configs + acc_configs))
    t0 = time.perf_counter()
    log("warm-up (JIT compile / load numba cache) ...")
    warm = warmup(all_configs, precisions)
    log(f"warm-up done in {time.perf_counter() - t0:.1f} s")
    for k, w in warm.items():
        if w["status"] != "ok":
            log(f"warning: warm-up {k} failed: {w['status']}")

    results: dict[str, Any] = {
        "schema": 1,
        "machine": machine,
        "config": {
            "timing_sizes": sizes if timing_configs else [],
            "timing_windows": timing_windows,
            "timing_configs": timing_configs,
            "accuracy_keyframes": ACCURACY_KEYFRAMES,
            "accuracy_windows": acc_windows if acc_configs else 0,
            "accuracy_configs": acc_configs,
            "fixed_poses": "first and last keyframe",
            "precisions": {p: precisions[p].as_dict() for p in precisions},
            "solver_options": {s: solver_options_dict(SolverOptions(linear_solver=s)) for s in SOLVERS},
            "targets": {
                "window_ms": TARGET_WINDOW_MS,
                "linear_ratio": TARGET_LINEAR_RATIO,
                "accuracy_rel": TARGET_ACCURACY_REL,
            },
            "quick": args.quick,
            "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        },
        "warmup": warm,
        "timing": None,
        "accuracy": None,
        "notes": [],
    }
    start = time.perf_counter()
    if timing_configs:
        log(f"timing: {len(sizes)} sizes x {timing_windows} windows x {len(timing_configs)} configurations")
        results["timing"] = run_timing(sizes, list(range(timing_windows)), timing_configs, precisions)
        results["timing_time"] = time.perf_counter() - start
        log(f"timing done in {results['timing_time']:.0f} s")
    if acc_configs:
        t1 = time.perf_counter()
        log(f"accuracy: {acc_windows} windows x {len(acc_configs)} configurations")
        results["accuracy"] = run_accuracy(acc_windows, acc_configs, precisions)
        results["accuracy_time"] = time.perf_counter() - t1
        log(f"accuracy done in {results['accuracy_time']:.0f} s")
    results["total_benchmark_time"] = time.perf_counter() - start

    notes: list[str] = results["notes"]
    blocks = [(f"{n}-keyframe timing", e["configs"]) for n, e in (results["timing"] or {}).items()]
    if results["accuracy"]:
        blocks.append((f"{ACCURACY_KEYFRAMES}-keyframe accuracy", results["accuracy"]["configs"]))
    for where, configs in blocks:
        for k, rec in configs.items():
            notes.extend(
                f"{k} crashed on the {where} window of seed {seed}: {msg}" for seed, msg in rec["errors"].items()
            )
    timed_runs = []
    for e in (results["timing"] or {}).values():
        for rec in e["configs"].values():
            wall, cpu = floats(rec["wall"]), floats(rec["cpu"])
            ok = np.isfinite(wall)  # a crashed solve has no time
            timed_runs.append({"times": wall[ok].tolist(), "cpu_times": cpu[ok].tolist()})
    note = cpu_load_note(results["machine"], timed_runs)
    if note:
        notes.append(note)
    write_windows_outputs(results, out_dir, stem, not args.no_plot)
    log(f"benchmark time {results['total_benchmark_time']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
