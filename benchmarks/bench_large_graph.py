#!/usr/bin/env python3
"""Large generated pose graphs: does CG stay off its iteration cap, and does the time budget hold?

Runs ``optimize_pose_graph(graph, precision, SolverOptions(...))`` (default linear solver pcg-ic, default
chordal initialisation, as in ``test/test_large_graph.py``) on keyframe graphs from
``mp_slam_ros.pgo.synthetic.make_keyframe_pose_graph(n, laps=2.0, seed=0)`` of 10,000 and 50,000 keyframes
(``--sizes``; ``--full`` adds 200,000) at the ``mixed`` and ``fp64`` presets, then once more at the largest
size with ``max_solver_time_in_seconds`` = 60 s (``--budget-run``) to show the budget is honoured.

Per run it records the wall time of the whole call, the JIT compile time (``SolverSummary.compile_time``;
the solver's own stage times exclude it), the solver time (``stage_times`` total minus initialisation),
LM iterations, total CG iterations, the most CG iterations of one step and how many steps hit the CG cap
(``cg_max_iterations``), preconditioner factorisations and why (``preconditioner_events``), precision
widenings / fp16 fallbacks (``SolverSummary.fallbacks``), the final cost (re-evaluated in fp64) and its
relative difference to the fp64 run of the same graph, the ATE against the generator's ground truth, and how
many cores other processes kept busy meanwhile (from /proc/stat: a timing on a shared machine says so).

Writes ``benchmarks/results/large_graph.json`` (every number, machine info and each run's solver summary),
``large_graph.md`` (tables, also printed to stdout) and ``large_graph.png`` (CG iterations per LM step).
Run from the repository root::

    python benchmarks/bench_large_graph.py         # 10k and 50k, mixed and fp64, + 60 s budget run at 50k: ~2 min
    python benchmarks/bench_large_graph.py --full  # adds 200k, mixed and fp64: ~20 min on 2 cores
    # benchmarks/results/large_graph.* (200k mixed only, each main solve capped at 600 s): ~12 min on 2 cores
    python benchmarks/bench_large_graph.py --sizes 10000,50000,200000 --fp64-max-size 50000 --budget 600
    python benchmarks/bench_large_graph.py --from-json benchmarks/results/large_graph.json   # re-render only
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

# common.py puts the repository root on sys.path (the kernel cache is the shared per-user one).
import common

PRECISIONS = ("fp64", "fp32", "mixed", "fp16")
DEFAULT_PRECISIONS = ("mixed", "fp64")
REFERENCE = "fp64"
DEFAULT_SIZES = (10_000, 50_000)
FULL_SIZES = (10_000, 50_000, 200_000)
INITIALIZATIONS = ("chordal", "given")
LAPS = 2.0
BUDGET_RUN_SECONDS = 60.0
WARMUP_KEYFRAMES = 1000
PRIOR_NOTE = (
    "Context, not measured by this script: before commit a66f262 (a slow step on a fresh fp16 factor now widens the "
    "fp16 storage instead of refactoring; long CG solves run in chunks that check the time budget) the 10,000-keyframe "
    "mixed solve needed 1,234 CG iterations and 8 factorisations (8.7 s), and a 200,000-vertex graph took 493 s "
    "with CG at its 500-iteration cap on most steps."
)


# ----------------------------------------------------------------------------------------------
# running


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all processes of the machine have been busy (Linux /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:9]]
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / ticks


def _options(budget: float | None, log_iterations: bool, progress_interval: float | None = None) -> Any:
    from mp_slam_ros.solver.lm import SolverOptions

    kwargs: dict[str, Any] = {}
    if budget is not None:
        kwargs["max_solver_time_in_seconds"] = budget
    if progress_interval is not None:
        kwargs["progress_interval_seconds"] = progress_interval
    if log_iterations:

        def callback(it: Any) -> None:
            common.log(
                f"    LM {it.iteration:>2}: cost {it.cost:.6e}, CG {it.cg_iterations:>3} ({it.linear_status}), "
                f"{'accepted' if it.step_accepted else 'rejected'}, {it.total_time:.1f} s"
            )

        kwargs["callback"] = callback
    return SolverOptions(**kwargs)


def _run_record(summary: Any, wall: float, cpu: float, cost64: float, options: Any, ate: float) -> dict[str, Any]:
    """:func:`common.summary_record` plus the numbers this benchmark is about."""
    rec = common.summary_record(summary, wall, cpu, cost64)
    its = summary.iterations
    cg = [int(it.cg_iterations) for it in its]
    st = summary.stage_times
    rec.update(
        {
            "compile_time": float(summary.compile_time),
            "initialization_time": float(st.get("initialization", 0.0)),
            # What max_solver_time_in_seconds bounds: the nonlinear solve, JIT compilation excluded.
            "solver_time": float(st["total"] - st.get("initialization", 0.0)),
            "max_cg_per_step": max(cg, default=0),
            "cg_cap": int(options.cg_max_iterations),
            "steps_at_cg_cap": sum(it.linear_status == "max_iterations" for it in its),
            "steps_cut_by_time_limit": sum(it.linear_status == "time_limit" for it in its),
            "accepted_steps": sum(bool(it.step_accepted) for it in its),
            "preconditioner_factorizations": int(summary.preconditioner_factorizations),
            "preconditioner_events": list(summary.preconditioner_events),
            "fallbacks": [
                {
                    "iteration": ev.iteration,
                    "stage": ev.stage,
                    "from": ev.from_precision,
                    "to": ev.to_precision,
                    "reason": ev.reason,
                }
                for ev in summary.fallbacks
            ],
            "ate_final": ate,
        }
    )
    return rec


def run_config(
    synthetic: Any, problem: Any, precision: str, budget: float | None, args: argparse.Namespace
) -> dict[str, Any]:
    """One (graph, precision, budget) configuration, timed as ``--repeat`` / ``--single-run-above`` say."""
    from mp_slam_ros.eval.pgo_study import trajectory_ate
    from mp_slam_ros.pgo.problem import PoseState, optimize_pose_graph

    options = _options(budget, not args.quiet, args.progress_interval)

    def run_once() -> dict[str, Any]:
        busy0 = _busy_cpu_seconds()
        (out, summary), wall, cpu = common.timed(
            lambda: optimize_pose_graph(synthetic.graph, precision, options, initialization=args.initialization)
        )
        busy1 = _busy_cpu_seconds()
        cost64 = float(problem.cost(PoseState(out.rotations, out.translations)))
        ate = trajectory_ate(out.translations, synthetic.true_translations)
        rec = _run_record(summary, wall, cpu, cost64, options, ate)
        # Cores other processes kept busy during the call (the machine's busy CPU time minus ours).
        rec["other_load"] = (
            None if busy0 is None or busy1 is None or wall <= 0 else max(busy1 - busy0 - cpu, 0.0) / wall
        )
        return rec

    result = common.run_repeated(run_once, common.RepeatPolicy(args.repeat, args.single_run_above))
    result.update(
        {
            "keyframes": synthetic.graph.num_poses,
            "edges": synthetic.graph.num_edges,
            "precision": precision,
            "budget": budget,
        }
    )
    return result


def warm_up(precisions: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """One untimed small solve per precision, so kernel loading / compilation lands here, not in the runs."""
    from mp_slam_ros.pgo.problem import optimize_pose_graph
    from mp_slam_ros.pgo.synthetic import make_keyframe_pose_graph

    graph = make_keyframe_pose_graph(WARMUP_KEYFRAMES, laps=LAPS, seed=args.seed).graph
    out: dict[str, Any] = {"keyframes": WARMUP_KEYFRAMES, "runs": {}}
    for p in precisions:
        (_, summary), wall, _ = common.timed(
            lambda p=p: optimize_pose_graph(
                graph, p, _options(None, False, args.progress_interval), initialization=args.initialization
            )
        )
        out["runs"][p] = {"wall_time": wall, "compile_time": float(summary.compile_time)}
        common.log(f"warm-up {p} ({WARMUP_KEYFRAMES} keyframes): {wall:.1f} s, JIT {summary.compile_time:.1f} s")
    return out


def _run_line(r: dict) -> str:
    if "error" in r:
        return f"ERROR {r['error']}"
    return (
        f"{common.fmt_time(r['time'])} s wall (solver {common.fmt_time(r['solver_time'])} s, "
        f"JIT {r['compile_time']:.1f} s), {r['num_iterations']} LM / {r['total_cg_iterations']} CG "
        f"(max {r['max_cg_per_step']}, {r['steps_at_cg_cap']} at cap), "
        f"{r['preconditioner_factorizations']} factorisation(s), {len(r['fallbacks'])} fallback(s), "
        f"{common.short_term(r)}"
    )


def run_benchmark(args: argparse.Namespace, sizes: list[int], precisions: list[str]) -> dict[str, Any]:
    from mp_slam_ros.eval.pgo_study import trajectory_ate
    from mp_slam_ros.pgo.problem import PoseGraphProblem
    from mp_slam_ros.pgo.synthetic import make_keyframe_pose_graph

    def wanted(size: int) -> list[str]:
        return [p for p in precisions if not (p == REFERENCE and args.fp64_max_size and size > args.fp64_max_size)]

    budget_size = max(sizes) if args.budget_run > 0 else None
    total = sum(len(wanted(n)) for n in sizes) + (budget_size is not None)
    runs: list[dict] = []
    graphs: list[dict] = []
    budget_run = None
    warm = None if args.no_warmup else warm_up(sorted(set(precisions) | {args.budget_precision}), args)
    done = 0
    try:
        for n in sizes:
            t0 = time.perf_counter()
            synthetic = make_keyframe_pose_graph(n, laps=LAPS, seed=args.seed)
            problem = PoseGraphProblem(synthetic.graph)
            g = synthetic.graph
            info = {
                "keyframes": n,
                "edges": g.num_edges,
                "loop_edges": g.num_edges - (g.num_poses - 1),
                "generation_time": time.perf_counter() - t0,
                "ate_initial": trajectory_ate(g.translations, synthetic.true_translations),
            }
            graphs.append(info)
            common.log(
                f"graph {n:,} keyframes: {info['edges']:,} edges ({info['loop_edges']:,} loops), "
                f"generated in {info['generation_time']:.1f} s"
            )
            configs = [(p, args.budget, False) for p in wanted(n)]
            if n == budget_size:
                configs.append((args.budget_precision, args.budget_run, True))
            for precision, budget, is_budget_run in configs:
                label = f"{n:,} kf {precision}" + (f", budget {budget:g} s" if budget is not None else "")
                common.log(f"[{done + 1}/{total}] {label} ...")
                r = run_config(synthetic, problem, precision, budget, args)
                r["ate_initial"] = info["ate_initial"]
                common.log(f"{label}: {_run_line(r)}")
                if is_budget_run:
                    budget_run = r
                else:
                    runs.append(r)
                done += 1
            del synthetic, problem, g
            gc.collect()
    finally:
        common.log(f"{done}/{total} configurations done")
    return {"warmup": warm, "graphs": graphs, "runs": runs, "budget_run": budget_run}


# ----------------------------------------------------------------------------------------------
# derived numbers


def derive(results: dict) -> None:
    """Relative difference of each run's final fp64 cost to the fp64 run of the same graph (in place)."""
    ref = {r["keyframes"]: r for r in results["runs"] if r.get("precision") == REFERENCE and "error" not in r}
    for r in [*results["runs"], results.get("budget_run")]:
        if not r or "error" in r:
            continue
        base = ref.get(r["keyframes"])
        r["final_cost_rel_to_fp64"] = (
            None if base is None else common.rel_diff(r["final_cost_fp64"], base["final_cost_fp64"])
        )
    b = results.get("budget_run")
    if b and "error" not in b:
        same = next(
            (
                r
                for r in results["runs"]
                if r.get("keyframes") == b["keyframes"] and r.get("precision") == b["precision"] and "error" not in r
            ),
            None,
        )
        b["final_cost_rel_to_unbudgeted"] = (
            None if same is None else common.rel_diff(b["final_cost_fp64"], same["final_cost_fp64"])
        )
        b["unbudgeted_solver_time"] = None if same is None else same["solver_time"]
        b["overrun"] = b["solver_time"] - b["budget"]
        b["stopped_by_budget"] = "time limit" in b.get("message", "")


# ----------------------------------------------------------------------------------------------
# markdown


def _term(r: dict) -> str:
    t = common.short_term(r)
    if t == "time limit" and "inside the linear solve" in r.get("message", ""):
        t += " (in CG)"
    return t


def _load(r: dict) -> str:
    x = r.get("other_load")
    return "-" if x is None else f"{x:.2f}"


def _fallback_text(r: dict) -> str:
    return "; ".join(f"it {f['iteration']} {f['stage']} {f['from']}→{f['to']}" for f in r["fallbacks"]) or "0"


def make_markdown(results: dict) -> str:
    cfg = results["config"]
    L: list[str] = ["## Large generated pose graphs", "", common.machine_line(results["machine"], with_gtsam=False), ""]
    budget = "no time budget" if cfg["budget"] is None else f"`max_solver_time_in_seconds={cfg['budget']:g}`"
    L.append(
        f'`optimize_pose_graph(graph, precision, SolverOptions(), initialization="{cfg["initialization"]}")`, '
        f"linear solver pcg-ic, {budget}, on `make_keyframe_pose_graph(n, laps={cfg['laps']:g}, seed={cfg['seed']})` "
        f"(a keyframe every 7.5 cm, odometry plus loop edges). {cfg['repeat']} timed run(s) per configuration "
        f"(slower than {cfg['single_run_above']:g} s: one), after an untimed {WARMUP_KEYFRAMES}-keyframe warm-up "
        "solve per precision"
        + (" (skipped in this run)" if cfg.get("no_warmup") else "")
        + ". *Wall* is the whole call (set-up, initialisation and JIT compilation included); *solver* is the "
        "nonlinear solve that the time budget bounds (initialisation and compilation excluded); *JIT* is "
        "`SolverSummary.compile_time`. *CG max* is the most CG iterations of one LM step, *at cap* the steps that "
        "ended at the CG cap. *Final cost* is the fp64 cost of the returned poses; *vs fp64* its relative "
        "difference to the fp64 run of the same graph. *Other load*: cores kept busy by other processes during the "
        "call (machine busy CPU time from /proc/stat minus ours, per wall second); well above 0 on this 2-core "
        "machine means the timing shared it."
    )
    L.append("")
    head = (
        "| keyframes | edges | precision | wall [s] | solver [s] | init [s] | JIT [s] | LM iters | CG iters "
        "| CG max | at cap | factorisations (time [s]) | fallbacks | final cost | vs fp64 | ATE before → after [m] "
        "| other load | termination |"
    )
    L.append(head)
    L.append("|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|---|")
    for r in results["runs"]:
        if "error" in r:
            cells = [f"{r['keyframes']:,}", f"{r['edges']:,}", r["precision"], *[""] * 14, r["error"]]
            L.append("| " + " | ".join(cells) + " |")
            continue
        L.append(
            f"| {r['keyframes']:,} | {r['edges']:,} | {r['precision']} | {common.fmt_time(r['time'])} | "
            f"{common.fmt_time(r['solver_time'])} | {common.fmt_time(r['initialization_time'])} | "
            f"{r['compile_time']:.1f} | {r['num_iterations']} | {r['total_cg_iterations']:,} | "
            f"{r['max_cg_per_step']} | {r['steps_at_cg_cap']} | {r['preconditioner_factorizations']} "
            f"({common.fmt_time(r['stage_times'].get('preconditioner'))}) | "
            f"{_fallback_text(r)} | {common.fmt_cost(r['final_cost_fp64'])} | "
            f"{'ref' if r['precision'] == REFERENCE else common.fmt_rel(r.get('final_cost_rel_to_fp64'))} | "
            f"{r['ate_initial']:.3g} → {r['ate_final']:.3g} | "
            f"{_load(r)} | {_term(r)} |"
        )
    L.append("")
    cap = next((r["cg_cap"] for r in results["runs"] if "cg_cap" in r), None)
    if cap is not None:
        L.append(f"CG cap (`cg_max_iterations`): {cap}. Termination: conv = CONVERGENCE.")
        L.append("")

    b = results.get("budget_run")
    if b:
        L.append(f"### Time budget at {b['keyframes']:,} keyframes ({b['precision']})")
        L.append("")
        if "error" in b:
            L.append(f"The budget run failed: {b['error']}")
        else:
            L.append(
                "| budget [s] | solver [s] | overrun [s] | wall [s] | LM iters | CG iters | at cap | final cost "
                "| vs unbudgeted | other load | termination |"
            )
            L.append("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
            L.append(
                f"| {b['budget']:g} | {common.fmt_time(b['solver_time'])} | {b['overrun']:+.2f} | "
                f"{common.fmt_time(b['time'])} | {b['num_iterations']} | {b['total_cg_iterations']:,} | "
                f"{b['steps_at_cg_cap']} | {common.fmt_cost(b['final_cost_fp64'])} | "
                f"{common.fmt_rel(b.get('final_cost_rel_to_unbudgeted'))} | {_load(b)} | {_term(b)} |"
            )
            L.append("")
            if b["stopped_by_budget"]:
                L.append(f"Solver message: {b['message']}")
                its = (b.get("median_run_summary") or {}).get("iterations") or {}
                if its.get("total_time"):
                    last_end, last_len = its["total_time"][-1], its["iteration_time"][-1]
                    L.append("")
                    L.append(
                        f"The last LM iteration started {common.fmt_time(last_end - last_len)} s into the solve and "
                        f"took {common.fmt_time(last_len)} s. The budget is checked between LM iterations and between "
                        "CG chunks; a preconditioner factorisation or a linearisation inside the iteration is not "
                        f"interrupted ({b['preconditioner_factorizations']} factorisations took "
                        f"{common.fmt_time(b['stage_times'].get('preconditioner'))} s in this run). Initialisation "
                        f"({common.fmt_time(b['initialization_time'])} s) and problem set-up are outside the budget: "
                        f"the whole call took {common.fmt_time(b['time'])} s."
                    )
            else:
                L.append(
                    f"The solve finished within the budget ({common.fmt_time(b['solver_time'])} s < "
                    f"{b['budget']:g} s), "
                    "so this run does not exercise the time limit; run a larger size (e.g. `--full`) for that."
                )
        L.append("")

    ev_lines = []
    for r in [*results["runs"], *([b] if b else [])]:
        if "error" in r:
            continue
        tag = f"{r['keyframes']:,} kf {r['precision']}" + (f", budget {r['budget']:g} s" if r["budget"] else "")
        events = "; ".join(r["preconditioner_events"]) or "none"
        line = f"* {tag}: factorisations: {events}"
        for f in r["fallbacks"]:
            line += f"; fallback in iteration {f['iteration']}: {f['stage']} {f['from']} → {f['to']} ({f['reason']})"
        ev_lines.append(line)
    if ev_lines:
        L += ["### Preconditioner events and precision fallbacks", "", *ev_lines, ""]

    notes = results.get("notes") or []
    if notes:
        L += ["### Notes", "", *[f"* {n}" for n in notes], ""]
    return "\n".join(L)


# ----------------------------------------------------------------------------------------------
# plot


def plot_cg(results: dict, path: Path) -> None:
    """CG iterations of each LM step, one panel per graph size, one line per run; the cap dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    runs = [r for r in [*results["runs"], results.get("budget_run")] if r and "error" not in r]
    if not runs:
        raise ValueError("no successful runs")
    sizes = sorted({r["keyframes"] for r in runs})
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.6), squeeze=False)
    for ax, n in zip(axes[0], sizes, strict=True):
        for r in runs:
            if r["keyframes"] != n:
                continue
            cg = r["median_run_summary"]["iterations"].get("cg_iterations", []) if r["median_run_summary"] else []
            label = r["precision"] + (f", budget {r['budget']:g} s" if r["budget"] else "")
            ax.plot(range(1, len(cg) + 1), cg, marker="o", ms=3, label=label)
        cap = runs[0]["cg_cap"]
        ax.axhline(cap, color="gray", ls="--", lw=1, label=f"CG cap {cap}")
        ax.set_yscale("log")
        ax.set_title(f"{n:,} keyframes", fontsize=9)
        ax.set_xlabel("LM iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("CG iterations of the step")
    fig.tight_layout()
    common.save_figure(fig, path)


def write(results: dict, out_dir: Path, stem: str, plot: bool) -> None:
    derive(results)
    plots = [("", plot_cg)] if plot else []
    common.write_outputs(results, out_dir, stem, make_markdown(results), plots)


# ----------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default=None, help=f"keyframe counts (default {','.join(map(str, DEFAULT_SIZES))})")
    ap.add_argument("--full", action="store_true", help=f"sizes {','.join(map(str, FULL_SIZES))} (unless --sizes)")
    ap.add_argument("--precisions", default=",".join(DEFAULT_PRECISIONS), help="precision presets (default mixed,fp64)")
    ap.add_argument(
        "--fp64-max-size",
        type=int,
        default=0,
        metavar="N",
        help="run the fp64 reference only on graphs of at most N keyframes (default: all sizes)",
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="SEC",
        help="max_solver_time_in_seconds of the main runs, a cap on a long run (default none)",
    )
    ap.add_argument(
        "--budget-run",
        type=float,
        default=BUDGET_RUN_SECONDS,
        metavar="SEC",
        help=f"budget of the extra run at the largest size (default {BUDGET_RUN_SECONDS:g}; 0 = no such run)",
    )
    ap.add_argument(
        "--budget-precision", default="mixed", choices=PRECISIONS, help="precision of the budget run (mixed)"
    )
    ap.add_argument(
        "--initialization",
        default="chordal",
        choices=INITIALIZATIONS,
        help="optimize_pose_graph initialization (default chordal, its default; given = odometry chain)",
    )
    common.add_repeat_args(
        ap,
        1,
        "timed runs per configuration (default 1)",
        30.0,
        "with --repeat > 1: time a configuration once only when its first run took longer",
    )
    ap.add_argument(
        "--progress-interval",
        type=float,
        default=None,
        metavar="SEC",
        help="SolverOptions.progress_interval_seconds: seconds per CG chunk (default: the SolverOptions default). "
        "Each chunk restarts CG from a residual recomputed in fp64, so this changes the iteration counts",
    )
    ap.add_argument("--seed", type=int, default=0, help="graph seed (default 0)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the small warm-up solves")
    ap.add_argument("--quiet", action="store_true", help="no per-LM-iteration progress lines on stderr")
    common.add_output_args(ap, "large_graph")
    return ap.parse_args(argv)


def rerender(args: argparse.Namespace) -> int:
    results, out_dir, stem = common.rerender_source(args)
    write(results, out_dir, stem, not args.no_plot)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return rerender(args)
    sizes = common.parse_sizes(args.sizes, FULL_SIZES if args.full else DEFAULT_SIZES)
    precisions = common.parse_choices(args.precisions, PRECISIONS, "precision")
    if args.repeat < 1:
        raise SystemExit("error: --repeat must be >= 1")
    if args.progress_interval is not None and not (0 < args.progress_interval < math.inf):
        raise SystemExit("error: --progress-interval must be a positive number of seconds")
    if args.budget is not None and not (0 < args.budget < math.inf):
        raise SystemExit("error: --budget must be a positive number of seconds")
    if not (0 <= args.budget_run < math.inf):
        raise SystemExit("error: --budget-run must be a number of seconds >= 0")
    out_dir = Path(args.out_dir) if args.out_dir else common.RESULTS_DIR
    stem = args.name or "large_graph"

    machine = common.machine_info()
    common.log_start(None, "synthetic keyframe graphs", machine)
    results: dict[str, Any] = {
        "schema": 1,
        "machine": machine,
        "config": {
            "sizes": sizes,
            "precisions": precisions,
            "reference": REFERENCE,
            "fp64_max_size": args.fp64_max_size or None,
            "budget": args.budget,
            "budget_run": args.budget_run or None,
            "budget_precision": args.budget_precision,
            "initialization": args.initialization,
            "laps": LAPS,
            "seed": args.seed,
            "repeat": args.repeat,
            "single_run_above": args.single_run_above,
            "no_warmup": args.no_warmup,
            "solver_options": common.solver_options_dict(_options(args.budget, False, args.progress_interval)),
        },
        "notes": [],
    }
    start = time.perf_counter()
    results.update(run_benchmark(args, sizes, precisions))
    results["total_benchmark_time"] = time.perf_counter() - start
    timed_runs = [r for r in [*results["runs"], results["budget_run"]] if r and "error" not in r]
    note = common.cpu_load_note(machine, timed_runs)
    if note:
        results["notes"].append(note)
    results["notes"].append(PRIOR_NOTE)
    results["notes"].append(f"The whole benchmark took {results['total_benchmark_time']:.0f} s.")
    write(results, out_dir, stem, not args.no_plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
