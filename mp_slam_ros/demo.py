"""`make demo`: full SLAM on the synthetic two-lap room in mixed and fp64, and the PGO studies.

:func:`run_slam_demo` is ``mp-slam demo``; :func:`run_pgo_demo` (``mp-slam demo --pgo``) is the
smaller pose-graph-only demo of the solver.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .io.trajectory import Trajectory
from .pgo.initialization import chordal_initialization
from .pgo.problem import optimize_pose_graph
from .pgo.synthetic import make_loop_pose_graph
from .solver.lm import SolverOptions
from .solver.precision import load_precision


def run_slam_demo(
    out_dir: Path,
    precisions: tuple[str, ...] = ("mixed", "fp64"),
    width: int = 640,
    height: int = 480,
    rate_hz: float = 20.0,
    num_pgo_problems: int = 800,
    pgo_sizes: tuple[int, ...] = (100, 250, 500, 1000, 2000, 5000),
    progress: bool = True,
) -> dict[str, Any]:
    """Render the two-lap room, run VO + loop closure per precision, print ATE with and without
    loop closure, and write the plots: top view, cumulative ATE over many PGO problems (fp32 vs
    mixed) and PGO time against the number of keyframes. Returns what it printed, as a dict."""
    from .eval.pgo_study import pgo_accuracy_study, pgo_scaling_study, plot_cumulative_ate, plot_pgo_time
    from .eval.plots import plot_trajectory
    from .loop.config import LoopClosureConfig
    from .replay import replay
    from .sim.sequence import make_sequence

    out_dir.mkdir(parents=True, exist_ok=True)
    sequence = make_sequence("two_lap_room", "stereo", width=width, height=height, rate_hz=rate_hz)
    # Rendered once and replayed from memory by every precision (the renderer is deterministic).
    frames = list(_progress(sequence.frames(), sequence.num_frames, "render two-lap room", progress))
    sequence = dataclasses.replace(sequence, frames=lambda: iter(frames))
    print(
        f"synthetic two-lap room: {len(frames)} stereo frames {width}x{height} at {rate_hz:g} Hz, "
        f"{sequence.ground_truth.path_length:.1f} m"
    )
    runs: dict[str, Any] = {}
    tops: dict[str, Trajectory] = {}
    for name in precisions:
        report = replay(
            sequence, out_dir / f"slam_{name}", precision=name, progress=progress, write_bag=False,
            loop_closure=LoopClosureConfig(precision=name),
        )  # fmt: skip
        lc = report.loop_closure
        acc = lc["accuracy"]
        st = lc["statistics"]
        runs[name] = {
            "ate_odometry_m": acc["odometry"]["ate_rmse_m"],
            "ate_slam_m": acc["slam"]["ate_rmse_m"],
            "ate_keyframes_slam_m": acc["keyframes_slam"]["ate_rmse_m"],
            "ate_ratio": lc["ate_ratio"],
            "loops": st["loops_accepted"],
            "loops_removed_by_graph": st["loops_removed_by_graph"],
            "pgo_runs": st["pgo_runs"],
            "pgo_mean_ms": 1e3 * st["total_pgo_time_s"] / max(st["pgo_runs"], 1),
            "pgo_max_ms": 1e3 * st["max_pgo_time_s"],
            "fp16_fallbacks": st["fp16_fallbacks"] + report.fp16_fallbacks,
            "fps": report.fps,
        }
        from .io.trajectory import read_tum

        if not tops:
            tops["VO only (mixed)" if name == "mixed" else f"VO only ({name})"] = read_tum(
                out_dir / f"slam_{name}" / "odometry.tum"
            )
        tops[f"VO + loop closure ({name})"] = read_tum(out_dir / f"slam_{name}" / "slam.tum")
    print(
        f"\n{'precision':<10} {'ATE VO [m]':>11} {'ATE SLAM [m]':>13} {'ratio':>7} {'loops':>6} "
        f"{'PGO mean/max [ms]':>18} {'fp16 fallbacks':>15} {'frames/s':>9}"
    )
    for name, r in runs.items():
        print(
            f"{name:<10} {r['ate_odometry_m']:>11.5f} {r['ate_slam_m']:>13.5f} {r['ate_ratio']:>7.3f} "
            f"{r['loops']:>6} {r['pgo_mean_ms']:>9.1f}/{r['pgo_max_ms']:<8.1f} {r['fp16_fallbacks']:>15} "
            f"{r['fps']:>9.1f}"
        )
    if "mixed" in runs and "fp64" in runs:
        diff = runs["mixed"]["ate_slam_m"] / runs["fp64"]["ate_slam_m"] - 1.0
        print(f"mixed vs fp64 ATE with loop closure: {100 * diff:+.2f} %")
        runs["mixed_vs_fp64_percent"] = 100 * diff
    top = out_dir / "slam_top_view.png"
    from .eval.metrics import absolute_trajectory_error as ate

    aligned = {k: t.transformed(T_left=ate(t, sequence.ground_truth).T_align) for k, t in tops.items()}
    plot_trajectory(top, aligned, sequence.ground_truth, title="Two-lap room: VO vs VO + loop closure (top view)")

    print(f"\nPGO accuracy over {num_pgo_problems} synthetic keyframe graphs (fp32 vs mixed) ...")
    accuracy = pgo_accuracy_study(num_problems=num_pgo_problems, progress=progress)
    plot_cumulative_ate(accuracy, out_dir / "pgo_cumulative_ate.png")
    stats = accuracy["summary"]
    print(
        "  median ATE: odometry {:.4f} m, fp32 {:.2e} m, mixed {:.2e} m".format(
            stats["odometry"]["median"], stats["fp32"]["median"], stats["mixed"]["median"]
        )
    )
    print("PGO solve time against the number of keyframes ...")
    scaling = pgo_scaling_study(pgo_sizes, precisions=("fp64", "fp32", "mixed"), repeats=1, progress=progress)
    scaling += pgo_scaling_study(pgo_sizes, precisions=("mixed",), repeats=1, initialization="chordal")
    plot_pgo_time(scaling, out_dir / "pgo_time_vs_keyframes.png")
    for row in scaling:
        if row["precision"] == "mixed":
            print(f"  {row['series']:<24} {row['keyframes']:>6} keyframes: {1e3 * row['time']:8.1f} ms")
    for png in ("slam_top_view.png", "pgo_cumulative_ate.png", "pgo_time_vs_keyframes.png"):
        print(f"wrote {out_dir / png}")
    summary = {"slam": runs, "pgo_accuracy": stats, "pgo_scaling": scaling}
    (out_dir / "demo.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary


def _progress(items: Any, total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit="frame", disable=not enabled, dynamic_ncols=True)


def absolute_trajectory_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """RMSE of positions; both trajectories share pose 0's frame, so no alignment is needed."""
    return float(np.sqrt(np.mean(np.sum((estimate - truth) ** 2, axis=1))))


def run_pgo_demo(out_dir: Path, num_poses: int = 2000, seed: int = 0) -> dict[str, dict[str, float]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    synthetic = make_loop_pose_graph(num_poses=num_poses, seed=seed)
    graph = synthetic.graph
    print(
        f"synthetic 3D pose graph: {graph.num_poses} poses, {graph.num_edges} edges "
        f"({graph.num_edges - graph.num_poses + 1} loop closures), seed {seed}"
    )
    ate0 = absolute_trajectory_error(graph.translations, synthetic.true_translations)
    ate_chordal = absolute_trajectory_error(chordal_initialization(graph).translations, synthetic.true_translations)
    results: dict[str, dict[str, float]] = {}
    solved = {}
    # Compile the kernels once outside the timed runs: the first call JIT-compiles (cached after).
    optimize_pose_graph(
        make_loop_pose_graph(num_poses=50, seed=1).graph, "mixed", SolverOptions(max_iterations=2)
    )
    for name in ("fp64", "mixed"):
        t = time.perf_counter()
        result, summary = optimize_pose_graph(graph, load_precision(name), SolverOptions())
        wall = time.perf_counter() - t
        solved[name] = result
        results[name] = {
            "initial_cost": summary.initial_cost,
            "final_cost": summary.final_cost,
            "iterations": summary.num_iterations,
            "cg_iterations": summary.total_cg_iterations,
            "solve_time_s": wall,
            "fp16_fallbacks": summary.num_fallbacks,
            "ate_m": absolute_trajectory_error(result.translations, synthetic.true_translations),
        }
    print(f"\nATE of the odometry-chain guess: {ate0:.4f} m; after chordal initialisation: {ate_chordal:.4f} m")
    print("(the solves below start from the chordal initialisation; its time is included)\n")
    print(
        f"{'precision':<10} {'initial cost':>14} {'final cost':>14} {'iters':>5} {'CG its':>6} "
        f"{'time [s]':>9} {'fallbacks':>9} {'ATE [m]':>10}"
    )
    for name, r in results.items():
        print(
            f"{name:<10} {r['initial_cost']:>14.6e} {r['final_cost']:>14.6e} {r['iterations']:>5} "
            f"{r['cg_iterations']:>6} {r['solve_time_s']:>9.3f} {r['fp16_fallbacks']:>9} {r['ate_m']:>10.5f}"
        )
    rel = abs(results["mixed"]["final_cost"] - results["fp64"]["final_cost"]) / results["fp64"]["final_cost"]
    print(f"\nmixed vs fp64: relative final-cost difference {rel:.2e}")
    plot = out_dir / "pgo_demo_trajectory.png"
    _plot(plot, synthetic.true_translations, graph.translations, solved)
    print(f"wrote {plot}")
    return results


def _plot(path: Path, truth: np.ndarray, initial: np.ndarray, solved: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 7))
    ax.plot(truth[:, 0], truth[:, 1], "k-", lw=2.5, label="ground truth")
    ax.plot(initial[:, 0], initial[:, 1], "-", color="tab:red", lw=1, label="initial (odometry chain)")
    ax.plot(
        solved["fp64"].translations[:, 0],
        solved["fp64"].translations[:, 1],
        "-",
        color="tab:blue",
        lw=1.5,
        label="PGO fp64",
    )
    ax.plot(
        solved["mixed"].translations[:, 0],
        solved["mixed"].translations[:, 1],
        "--",
        color="tab:orange",
        lw=1.5,
        label="PGO mixed (fp16/fp32/fp64)",
    )
    ax.set_aspect("equal")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.set_title("Synthetic pose graph: before and after optimisation (top view)")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
