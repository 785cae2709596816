#!/usr/bin/env python3
"""Loop-closure pose-graph study: PGO time against keyframes, and ATE over many PGO problems (fp32 vs mixed).

Both parts run ``optimize_pose_graph(graph, preset, SolverOptions(), initialization="given")`` on synthetic
keyframe graphs (``mp_slam_ros.pgo.synthetic.make_keyframe_pose_graph``: two laps of a loop, a keyframe every
7.5 cm, odometry edges plus loop edges from the second lap to the nearest keyframe of the first) starting from
the odometry chain, which is what the loop-closure node optimises when its first loop closes:

* **scaling**: one graph per size (default 100 ... 10,000 keyframes) solved by the pcg-ic presets fp64, fp32
  and mixed, plus fp64 ``cholesky`` and mixed from the chordal start as references; median of ``--repeat``
  timed runs after an untimed warm-up (``mp_slam_ros.eval.pgo_study.pgo_scaling_study``);
* **accuracy**: ``--problems`` random graphs (default 800 of 300 keyframes, odometry noise scaled to the
  recipe's ~0.1 m odometry ATE), ATE before and after PGO with fp32 and mixed, and each one's distance to the
  fp64 solution (``mp_slam_ros.eval.pgo_study.pgo_accuracy_study``).

Writes ``benchmarks/results/loop_pgo.json`` (every number and machine info), ``loop_pgo.md`` (tables, also
printed to stdout), ``loop_pgo_time.png`` and ``loop_pgo_ate.png``. Run from the repository root::

    python benchmarks/bench_loop_pgo.py              # full study, ~3 min on 2 cores (10,000 keyframes included)
    python benchmarks/bench_loop_pgo.py --quick      # smoke run, ~10 s, writes loop_pgo_quick.*
    python benchmarks/bench_loop_pgo.py --sizes 1000,5000 --no-accuracy
    python benchmarks/bench_loop_pgo.py --from-json benchmarks/results/loop_pgo.json   # re-render only
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

# common.py puts the repository root on sys.path (the kernel cache is the shared per-user one).
from common import (
    RESULTS_DIR,
    add_output_args,
    add_repeat_args,
    cpu_load_note,
    fmt_time,
    log,
    log_start,
    machine_info,
    machine_line,
    parse_choices,
    parse_sizes,
    rerender_source,
    solver_options_dict,
    write_outputs,
)

PRESETS = ("fp64", "fp32", "mixed", "fp16")
DEFAULT_PRESETS = ("fp64", "fp32", "mixed")
DEFAULT_SIZES = (100, 250, 500, 1000, 2000, 5000, 10000)
QUICK_SIZES = (100, 500, 1000)
DEFAULT_PROBLEMS, QUICK_PROBLEMS = 800, 40
DEFAULT_KEYFRAMES = 300  # accuracy-study graph size: 800 x 3 solves in ~1.5 min on one core
ACCURACY_PRECISIONS = ("fp32", "mixed")
REFERENCE = "fp64"

# Extra scaling series: (label, precision, linear solver, initialisation).
CHOLESKY_SERIES = ("cholesky (fp64)", "fp64", "cholesky", "given")
CHORDAL_SERIES = ("mixed, chordal start", "mixed", "pcg-ic", "chordal")


# ----------------------------------------------------------------------------------------------
# running


def run_scaling(args: argparse.Namespace, presets: list[str], sizes: list[int]) -> list[dict]:
    from mp_slam_ros.eval.pgo_study import pgo_scaling_study

    common = {"repeats": args.repeat, "seed": args.seed, "progress": True, "single_run_above": args.single_run_above}
    records = pgo_scaling_study(sizes, presets, **common)
    extras = []
    if not args.no_cholesky:
        extras.append(CHOLESKY_SERIES)
    if not args.no_chordal:
        extras.append(CHORDAL_SERIES)
    for label, precision, solver, init in extras:
        log(f"scaling: {label} ...")
        records += pgo_scaling_study(
            sizes, (precision,), linear_solver=solver, initialization=init, label=label, **common
        )
    return records


def run_accuracy(args: argparse.Namespace) -> dict:
    from mp_slam_ros.eval.pgo_study import pgo_accuracy_study

    return pgo_accuracy_study(
        args.problems, args.keyframes, ACCURACY_PRECISIONS, seed=args.seed, progress=True, reference=REFERENCE
    )


# ----------------------------------------------------------------------------------------------
# derived numbers and markdown


def targets(records: list[dict]) -> list[dict]:
    """The recipe's time targets against the mixed (pcg-ic, odometry start) series."""
    from mp_slam_ros.eval.pgo_study import TIME_TARGETS

    out = []
    for keyframes, limit in TIME_TARGETS:
        r = next((r for r in records if r["series"] == "mixed" and r["keyframes"] == keyframes), None)
        t = None if r is None else float(r["time"])
        out.append(
            {
                "keyframes": keyframes,
                "limit": limit,
                "time": t,
                "iterations": None if r is None else r["iterations"],
                "met": None if t is None else t < limit,
            }
        )
    return out


def _limit_text(limit: float) -> str:
    return f"{limit * 1e3:g} ms" if limit < 1 else f"{limit:g} s"


def _series_order(records: list[dict]) -> list[str]:
    names: list[str] = []
    for r in records:
        if r["series"] not in names:
            names.append(r["series"])
    return names


def scaling_markdown(records: list[dict], cfg: dict) -> list[str]:
    L: list[str] = []
    series = _series_order(records)
    sizes = sorted({r["keyframes"] for r in records})
    by = {(r["series"], r["keyframes"]): r for r in records}
    L.append("### PGO solve time against keyframes (from the odometry chain)")
    L.append("")
    L.append(
        f"One graph per size (seed {cfg['seed']}, 2 laps, a keyframe every 7.5 cm, default noise: odometry "
        "0.05 deg / 1 mm per keyframe, loops 0.01 deg / 1 mm), started from its odometry chain "
        '(`initialization="given"`) unless the column says chordal. Cells: median wall time of the timed runs '
        "after one untimed warm-up, then (LM iterations / total CG iterations); † = did not report CONVERGENCE, "
        "f = fp16 fell back to fp32. The whole `optimize_pose_graph` call is timed, problem set-up included."
    )
    L.append("")
    head = ["keyframes", "edges", "odometry ATE [m]", *[f"{s} [s]" for s in series], "ATE after (mixed) [m]"]
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "|".join(["--:"] * len(head)) + "|")
    for n in sizes:
        any_r = next(r for r in records if r["keyframes"] == n)
        row = [f"{n:,}", f"{any_r['edges']:,}", f"{any_r['ate_initial']:.3g}"]
        for s in series:
            r = by.get((s, n))
            if r is None:
                row.append("-")
                continue
            cg = "" if r["linear_solver"] == "cholesky" else f" / {r['cg_iterations']}"
            cell = f"{fmt_time(r['time'])} ({r['iterations']}{cg})"
            if r["termination"] != "CONVERGENCE":
                cell += " †"
            if r["fallbacks"]:
                cell += " f"
            row.append(cell)
        m = by.get(("mixed", n))
        row.append("-" if m is None else f"{m['ate_final']:.3g}")
        L.append("| " + " | ".join(row) + " |")
    L.append("")

    tg = targets(records)
    L.append("### Targets: mixed-precision PGO from the odometry chain")
    L.append("")
    for t in tg:
        if t["time"] is None:
            verdict = "not measured (size not in this run)"
        else:
            verdict = (
                f"{'**met**' if t['met'] else '**not met**'}: {fmt_time(t['time'])} s in {t['iterations']} iterations"
            )
        L.append(f"* {t['keyframes']:,} keyframes < {_limit_text(t['limit'])}: {verdict}")
    L.append("")

    L.append("### Detail per run")
    L.append("")
    L.append(
        "| series | keyframes | time [s] | CPU [s] | runs | warm-up [s] | iters | CG iters | IC factorisations "
        "| fallbacks | initial cost | final cost (fp64) | ATE before [m] | ATE after [m] | termination |"
    )
    L.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    for s in series:
        for n in sizes:
            r = by.get((s, n))
            if r is None:
                continue
            cpu = sorted(r["cpu_times"])[(len(r["cpu_times"]) - 1) // 2] if r["cpu_times"] else None
            L.append(
                f"| {s} | {n:,} | {fmt_time(r['time'])} | {fmt_time(cpu)} | {r['n_runs']} | "
                f"{fmt_time(r['warmup_time'])} | {r['iterations']} | {r['cg_iterations']} | "
                f"{r['preconditioner_factorizations']} | {r['fallbacks']} | {float(r['initial_cost']):.4g} | "
                f"{float(r['final_cost_fp64']):.7g} | {r['ate_initial']:.3g} | {r['ate_final']:.3g} | "
                f"{r['termination']} |"
            )
    L.append("")
    return L


def _fmt_m(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    return "-" if not math.isfinite(v) else f"{v:.3g}"


def accuracy_markdown(acc: dict) -> list[str]:
    L: list[str] = []
    ref = acc.get("reference")
    g = acc["graph_options"]
    L.append(f"### ATE over {acc['num_problems']} PGO problems: odometry only vs fp32 vs mixed")
    L.append("")
    L.append(
        f"{acc['num_problems']} keyframe graphs of {acc['num_keyframes']} keyframes ({acc['edges']} edges; seeds "
        f"{acc['seed']} ... {acc['seed'] + acc['num_problems'] - 1}), odometry noise "
        f"{math.degrees(g.get('odometry_rotation_sigma', math.nan)):.3g} deg / "
        f"{1e3 * g.get('odometry_translation_sigma', math.nan):.3g} mm per keyframe (scaled so the odometry-only "
        "ATE is ~0.1 m), each solved from its odometry chain with default `SolverOptions`. ATE = RMSE of keyframe "
        "positions against the truth with keyframe 0 anchored (no alignment); `SE(3)-aligned` applies Umeyama "
        f"first. The study took {acc['run_time']:.0f} s on one core."
    )
    L.append("")
    L.append("| ATE [m] | median | mean | p10 | p90 | max | median SE(3)-aligned | median improvement |")
    L.append("|---|--:|--:|--:|--:|--:|--:|--:|")
    import statistics

    rows = [("odometry only", "odometry", acc["ate_odometry_se3"], None)]
    for p, rec in acc["results"].items():
        label = f"after PGO, {p}" + (" (reference)" if p == ref and p not in acc["precisions"] else "")
        rows.append((label, p, rec["ate_se3"], acc["improvement"].get(p)))
    for label, key, se3, imp in rows:
        s = acc["summary"][key]
        se3_med = statistics.median(float(v) for v in se3) if se3 else math.nan
        L.append(
            f"| {label} | {_fmt_m(s['median'])} | {_fmt_m(s['mean'])} | {_fmt_m(s['p10'])} | {_fmt_m(s['p90'])} | "
            f"{_fmt_m(s['max'])} | {_fmt_m(se3_med)} | {'-' if imp is None else f'{float(imp):.1f}x'} |"
        )
    L.append("")
    if acc.get("difference_to_reference"):
        L.append(
            f"Distance of each precision's solution to the {ref} one (RMS keyframe-position difference): the part of "
            "the error that is the precision's own, not the measurement noise's."
        )
        L.append("")
        L.append("| precision | median [m] | p90 [m] | max [m] |")
        L.append("|---|--:|--:|--:|")
        for p in acc["difference_to_reference"]:
            s = acc["summary"][f"{p} vs {ref}"]
            L.append(f"| {p} | {_fmt_m(s['median'])} | {_fmt_m(s['p90'])} | {_fmt_m(s['max'])} |")
        L.append("")
    L.append(
        "| precision | mean iterations | max iterations | converged | problems with fp16 fallback | median solve [ms] |"
    )
    L.append("|---|--:|--:|--:|--:|--:|")
    for p, rec in acc["results"].items():
        its = [int(v) for v in rec["iterations"]]
        times = sorted(float(v) for v in rec["solve_time"])
        L.append(
            f"| {p} | {sum(its) / len(its):.1f} | {max(its)} | {sum(bool(c) for c in rec['converged'])}/{len(its)} | "
            f"{sum(int(f) > 0 for f in rec['fallbacks'])} | {1e3 * times[(len(times) - 1) // 2]:.1f} |"
        )
    L.append("")
    return L


def make_markdown(results: dict) -> str:
    L: list[str] = ["## Loop-closure pose-graph study", "", machine_line(results["machine"], with_gtsam=False), ""]
    if results.get("scaling"):
        L += scaling_markdown(results["scaling"], results["config"])
    if results.get("accuracy"):
        L += accuracy_markdown(results["accuracy"])
    notes = results.get("notes") or []
    if notes:
        L += ["### Notes", "", *[f"* {n}" for n in notes], ""]
    return "\n".join(L)


# ----------------------------------------------------------------------------------------------
# plots


def plot_time(results: dict, path: Path) -> None:
    from mp_slam_ros.eval.pgo_study import plot_pgo_time

    if not results.get("scaling"):
        raise ValueError("no scaling results in this run")
    plot_pgo_time(results["scaling"], path)


def plot_ate(results: dict, path: Path) -> None:
    from mp_slam_ros.eval.pgo_study import plot_cumulative_ate

    if not results.get("accuracy"):
        raise ValueError("no accuracy results in this run")
    plot_cumulative_ate(results["accuracy"], path)


def write_study_outputs(results: dict, out_dir: Path, stem: str, plot: bool) -> None:
    plots = []
    if plot and results.get("scaling"):
        plots.append(("_time", plot_time))
    if plot and results.get("accuracy"):
        plots.append(("_ate", plot_ate))
    write_outputs(results, out_dir, stem, make_markdown(results), plots)


# ----------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--sizes",
        default=None,
        help=f"keyframe counts of the scaling study (default {','.join(map(str, DEFAULT_SIZES))})",
    )
    ap.add_argument("--presets", default=",".join(DEFAULT_PRESETS), help="pcg-ic presets of the scaling study")
    add_repeat_args(
        ap,
        None,
        "timed runs per configuration (default 3; 1 with --quick)",
        3.0,
        "time a configuration once only when its warm-up took longer than SEC",
    )
    ap.add_argument("--no-cholesky", action="store_true", help="skip the fp64 cholesky reference series")
    ap.add_argument("--no-chordal", action="store_true", help="skip the mixed-from-chordal-start series")
    ap.add_argument("--problems", type=int, default=None, help=f"accuracy-study problems (default {DEFAULT_PROBLEMS})")
    ap.add_argument(
        "--keyframes", type=int, default=DEFAULT_KEYFRAMES, help=f"keyframes per accuracy problem ({DEFAULT_KEYFRAMES})"
    )
    ap.add_argument("--no-scaling", action="store_true", help="skip the scaling study")
    ap.add_argument("--no-accuracy", action="store_true", help="skip the accuracy study")
    ap.add_argument("--seed", type=int, default=0, help="graph seed (accuracy: first of consecutive seeds)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: sizes {','.join(map(str, QUICK_SIZES))}, 1 timed run, {QUICK_PROBLEMS} accuracy problems; "
        "writes loop_pgo_quick.* unless --name is given",
    )
    add_output_args(ap, "loop_pgo", "loop_pgo_quick")
    return ap.parse_args(argv)


def rerender(args: argparse.Namespace) -> int:
    results, out_dir, stem = rerender_source(args)
    write_study_outputs(results, out_dir, stem, not args.no_plot)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return rerender(args)
    sizes = parse_sizes(args.sizes, QUICK_SIZES if args.quick else DEFAULT_SIZES)
    presets = parse_choices(args.presets, PRESETS, "preset")
    args.repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if args.repeat < 1:
        raise SystemExit("error: --repeat must be >= 1")
    args.problems = args.problems if args.problems is not None else (QUICK_PROBLEMS if args.quick else DEFAULT_PROBLEMS)
    if args.problems < 1 or args.keyframes < 2:
        raise SystemExit("error: --problems must be >= 1 and --keyframes >= 2")
    out_dir = Path(args.out_dir) if args.out_dir else RESULTS_DIR
    stem = args.name or ("loop_pgo_quick" if args.quick else "loop_pgo")

    from mp_slam_ros.solver.lm import SolverOptions

    machine = machine_info()
    log_start(None, "synthetic keyframe graphs", machine)
    results: dict[str, Any] = {
        "schema": 1,
        "machine": machine,
        "config": {
            "sizes": sizes,
            "presets": presets,
            "repeat": args.repeat,
            "single_run_above": args.single_run_above,
            "cholesky": not args.no_cholesky,
            "chordal": not args.no_chordal,
            "problems": args.problems,
            "keyframes": args.keyframes,
            "accuracy_precisions": list(ACCURACY_PRECISIONS),
            "reference": REFERENCE,
            "seed": args.seed,
            "quick": args.quick,
            "solver_options": solver_options_dict(SolverOptions()),
        },
        "scaling": [],
        "accuracy": None,
        "notes": [],
    }
    start = time.perf_counter()
    if not args.no_scaling:
        t0 = time.perf_counter()
        results["scaling"] = run_scaling(args, presets, sizes)
        results["scaling_time"] = time.perf_counter() - t0
        log(f"scaling study done in {results['scaling_time']:.0f} s")
    if not args.no_accuracy:
        results["accuracy"] = run_accuracy(args)
        log(f"accuracy study done in {results['accuracy']['run_time']:.0f} s")
    results["total_benchmark_time"] = time.perf_counter() - start
    note = cpu_load_note(machine, results["scaling"])
    if note:
        results["notes"].append(note)
    write_study_outputs(results, out_dir, stem, not args.no_plot)
    log(f"benchmark time {results['total_benchmark_time']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
