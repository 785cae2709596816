#!/usr/bin/env python3
"""Why (or whether) fp16 storage speeds up the PGO inner loop on this CPU, and which
preconditioner fill level to use.

1. For each pose graph: the three kernels of one CG iteration (J x, J^T y, the preconditioner's
   two triangular solves) at fp64, fp32 and fp16 storage, with the bytes each one streams, and
   the effective bandwidth. The static preconditioner is the solver's default (complete fill,
   minimum-degree ordering), built at the chordal initial guess as the solver builds it.
2. A sweep of the preconditioner's fill level (IC(0), IC(k), complete) with minimum-degree
   ordering: factor size and time, and the whole `mixed` solve (CG iterations, time, final cost).

Writes benchmarks/results/kernels.md and kernels.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mp_slam_ros.io.g2o import read_pose_graph  # noqa: E402
from mp_slam_ros.pgo.initialization import chordal_initialization  # noqa: E402
from mp_slam_ros.pgo.problem import PoseGraphProblem, optimize_pose_graph  # noqa: E402
from mp_slam_ros.solver import kernels  # noqa: E402
from mp_slam_ros.solver.half import FP16_BACKEND  # noqa: E402
from mp_slam_ros.solver.linear import (  # noqa: E402
    FULL_FILL,
    BlockIncompleteCholesky,
    BlockSparseMatrix,
    StoredJacobian,
)
from mp_slam_ros.solver.lm import SolverOptions  # noqa: E402
from mp_slam_ros.solver.precision import Precision  # noqa: E402

GRAPHS = ("sphere2500", "torus3D", "city10000", "manhattan")


def _time(fn, repeat: int) -> float:
    fn()
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return float(np.median(samples))


def measure(path: Path, repeat: int) -> list[dict]:
    graph = chordal_initialization(read_pose_graph(path))
    problem = PoseGraphProblem(graph)
    _, jac = problem.linearize(problem.initial_state(), np.dtype(np.float32))
    csr = jac.to_csr()
    norms = jac.column_norms()
    inv = sp.diags(1.0 / np.where(norms > 0, norms, 1.0))
    hess = BlockSparseMatrix.from_scipy((inv @ (csr.T @ csr) @ inv).tocsr(), problem.k)
    factor = BlockIncompleteCholesky.factor(hess, FULL_FILL, "mmd")
    rows = []
    for prec in (Precision.FP64, Precision.FP32, Precision.FP16):
        stored = StoredJacobian.store(jac, prec, column_norms=norms)
        factor.precision = None
        factor.stored(prec)
        vec = prec.compute_dtype
        x = np.ones(stored.num_columns, vec)
        y = np.ones(stored.num_rows, vec)
        out_m = np.empty(stored.num_rows, vec)
        out_n = np.empty(stored.num_columns, vec)
        args = (stored.values, stored.col_start, stored.slot_offsets, stored.slot_widths, stored.rdim, stored.cdim)
        t_jx = _time(lambda: kernels.block_matvec(*args, x, out_m), repeat)  # noqa: B023
        t_jty = _time(lambda: kernels.block_rmatvec(*args, y, out_n), repeat)  # noqa: B023
        pre = (factor.lindptr, factor.lindices, factor.lvalues, factor.dinv, factor.perm)
        shape = kernels.block_shape(factor.block_size)
        t_pre = _time(lambda: kernels.apply_block_preconditioner(*pre, x, out_n, shape), repeat)  # noqa: B023
        item = stored.values.itemsize
        vec_bytes = np.dtype(vec).itemsize
        j_bytes = stored.values.size * item + stored.col_start.nbytes
        l_bytes = (factor.lvalues.size + factor.dinv.size) * item + factor.lindices.nbytes + factor.lindptr.nbytes
        rows.append(
            {
                "graph": path.stem,
                "storage": prec.value,
                "jx_ms": t_jx * 1e3,
                "jty_ms": t_jty * 1e3,
                "precond_ms": t_pre * 1e3,
                "cg_iteration_ms": (t_jx + t_jty + t_pre) * 1e3,
                "jacobian_MB": j_bytes / 1e6,
                "factor_MB": l_bytes / 1e6,
                # J is read twice per iteration and L twice (forward and backward), plus vectors.
                "bytes_per_iteration_MB": (2 * j_bytes + 2 * l_bytes + 8 * stored.num_columns * vec_bytes) / 1e6,
            }
        )
    base = next(r for r in rows if r["storage"] == "fp32")
    for r in rows:
        r["vs_fp32"] = r["cg_iteration_ms"] / base["cg_iteration_ms"]
        r["GB_per_s"] = r["bytes_per_iteration_MB"] / r["cg_iteration_ms"]
    return rows


FILL_LEVELS = (0, 1, 2, 4, 8, FULL_FILL)


def fill_sweep(path: Path) -> list[dict]:
    graph = read_pose_graph(path)
    start = chordal_initialization(graph)
    problem = PoseGraphProblem(start)
    _, jac = problem.linearize(problem.initial_state(), np.dtype(np.float64))
    csr = jac.to_csr()
    norms = jac.column_norms()
    inv = sp.diags(1.0 / np.where(norms > 0, norms, 1.0))
    hess = BlockSparseMatrix.from_scipy((inv @ (csr.T @ csr) @ inv).tocsr(), problem.k)
    rows = []
    for level in FILL_LEVELS:
        BlockIncompleteCholesky.factor(hess, level, "mmd")  # compile / warm
        t = time.perf_counter()
        factor = BlockIncompleteCholesky.factor(hess, level, "mmd")
        t_factor = time.perf_counter() - t
        options = SolverOptions(ic_fill_level=level)
        optimize_pose_graph(graph, "mixed", options)
        t = time.perf_counter()
        _, summary = optimize_pose_graph(graph, "mixed", options)
        rows.append(
            {
                "graph": path.stem,
                "fill_level": "complete" if level == FULL_FILL else str(level),
                "factor_blocks": factor.num_blocks,
                "factor_ms": t_factor * 1e3,
                "shift": factor.shift,
                "iterations": summary.num_iterations,
                "cg_iterations": summary.total_cg_iterations,
                "factorizations": summary.preconditioner_factorizations,
                "solve_s": time.perf_counter() - t,
                "final_cost": summary.final_cost,
                "termination": summary.termination,
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("MP_SLAM_SHARED_DATA", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--graphs", nargs="*", default=list(GRAPHS))
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    pgo_dir = Path(args.data) / "pgo" / "se-sync"
    if not pgo_dir.is_dir():
        print(f"error: pose graphs not found at {pgo_dir}; pass --data or set MP_SLAM_SHARED_DATA", file=sys.stderr)
        return 2
    rows = []
    sweep = []
    for name in args.graphs:
        print(f"measuring {name} ...", file=sys.stderr)
        rows += measure(pgo_dir / f"{name}.g2o", args.repeat)
        sweep += fill_sweep(pgo_dir / f"{name}.g2o")
    cpu = "?"
    if Path("/proc/cpuinfo").is_file():
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")
    head = (
        f"CPU: {cpu}, {os.cpu_count()} cores, fp16 widening backend: {FP16_BACKEND}; "
        f"Python {platform.python_version()}; median of {args.repeat} runs, single thread.\n\n"
        "| graph | storage | J x [ms] | Jᵀ y [ms] | triangular solves [ms] | CG iteration [ms] | vs fp32 "
        "| J [MB] | L [MB] | streamed per iteration [MB] | GB/s |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    body = "".join(
        f"| {r['graph']} | {r['storage']} | {r['jx_ms']:.3f} | {r['jty_ms']:.3f} | {r['precond_ms']:.3f} | "
        f"{r['cg_iteration_ms']:.3f} | {r['vs_fp32']:.2f} | {r['jacobian_MB']:.2f} | {r['factor_MB']:.2f} | "
        f"{r['bytes_per_iteration_MB']:.2f} | {r['GB_per_s']:.1f} |\n"
        for r in rows
    )
    fill = (
        "\n## Preconditioner fill level (minimum-degree ordering), whole `mixed` solve from the chordal start\n\n"
        "| graph | fill level | factor blocks | factor [ms] | shift | LM iterations | CG iterations | factorisations "
        "| solve [s] | final cost | termination |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|\n"
    )
    fill += "".join(
        f"| {r['graph']} | {r['fill_level']} | {r['factor_blocks']} | {r['factor_ms']:.1f} | {r['shift']:g} | "
        f"{r['iterations']} | {r['cg_iterations']} | {r['factorizations']} | {r['solve_s']:.3f} | "
        f"{r['final_cost']:.6f} | {r['termination']} |\n"
        for r in sweep
    )
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    text = "## CG-iteration kernels by storage precision\n\n" + head + body + fill
    (results / "kernels.md").write_text(text)
    payload = {"cpu": cpu, "backend": FP16_BACKEND, "rows": rows, "fill_sweep": sweep}
    (results / "kernels.json").write_text(json.dumps(payload, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
