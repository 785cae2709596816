"""`mp-slam`: the command-line entry point (no ROS needed)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .solver.precision import PRESET_NAMES


def _add_solver_args(p: argparse.ArgumentParser, solvers: tuple[str, ...], default: str) -> None:
    p.add_argument(
        "--precision",
        default="mixed",
        help=f"a preset ({', '.join(PRESET_NAMES)}) or a precision YAML file (default: mixed)",
    )
    p.add_argument("--solver", choices=solvers, default=default, help=f"linear solver (default: {default})")
    p.add_argument("--max-iterations", type=int, default=50)
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of text")
    p.add_argument("--quiet", action="store_true", help="no per-iteration table")


def _solve_and_report(args: argparse.Namespace, header: str, run, write) -> int:
    """The shared tail of `pgo` and `ba`: options from the flags, a solve, output and exit code.

    `run(precision, options)` returns (result, summary); `write(result, path)` saves the result.
    """
    from .solver.lm import SolverOptions
    from .solver.precision import load_precision

    precision = load_precision(args.precision)
    options = SolverOptions(
        linear_solver=args.solver,
        max_iterations=args.max_iterations,
        verbose=not (args.quiet or args.json),
    )
    if not args.json:
        print(header)
    result, summary = run(precision, options)
    if args.out:
        write(result, args.out)
    if args.json:
        print(summary.to_json(indent=2))
    else:
        print(summary.report())
        if args.out:
            print(f"wrote {args.out}")
    return 0 if summary.termination != "FAILURE" else 1


def _pgo(args: argparse.Namespace) -> int:
    from .io.g2o import read_pose_graph, write_g2o
    from .pgo.problem import optimize_pose_graph

    graph = read_pose_graph(args.file)
    header = (
        f"{args.file}: {graph.num_poses} poses, {graph.num_edges} edges, SE({graph.dim}), "
        f"initial guess {'from file' if graph.has_initial_guess else 'from the odometry chain'}"
    )
    return _solve_and_report(
        args,
        header,
        lambda precision, options: optimize_pose_graph(graph, precision, options, initialization=args.init),
        write_g2o,
    )


def _ba(args: argparse.Namespace) -> int:
    from .ba.problem import optimize_bal
    from .io.bal import read_bal, write_bal

    bal = read_bal(args.file)
    header = (
        f"{args.file}: {bal.num_cameras} cameras, {bal.num_points} points, "
        f"{bal.num_observations} observations (BAL camera model, all 9 camera parameters free)"
    )
    return _solve_and_report(
        args,
        header,
        lambda precision, options: optimize_bal(bal, precision, options, loss=args.loss, loss_scale=args.loss_scale),
        write_bal,
    )


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_pgo_demo

    run_pgo_demo(Path(args.out), num_poses=args.poses, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mp-slam", description="Mixed-precision SLAM tools (no ROS needed)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pgo", help="optimise a pose graph (g2o, TORO)")
    p.add_argument("file", help="g2o or TORO pose-graph file")
    p.add_argument("--out", help="write the optimised graph as g2o")
    p.add_argument(
        "--init",
        choices=("chordal", "given"),
        default="chordal",
        help="start from a chordal initialisation (default) or from the file's poses as given",
    )
    _add_solver_args(p, ("pcg-ic", "cgnr", "cholesky"), "pcg-ic")
    p.set_defaults(func=_pgo)

    b = sub.add_parser("ba", help="bundle-adjust a BAL problem (problem-*-pre.txt)")
    b.add_argument("file", help="BAL problem file")
    b.add_argument("--out", help="write the adjusted problem in BAL format")
    b.add_argument("--loss", choices=("trivial", "huber", "cauchy"), default="trivial", help="robust loss")
    b.add_argument("--loss-scale", type=float, default=1.0, help="robust loss scale [pixels]")
    _add_solver_args(b, ("cgnr", "schur", "cholesky"), "cgnr")
    b.set_defaults(func=_ba)

    d = sub.add_parser("demo", help="synthetic pose graph with loops, solved in fp64 and mixed, with a plot")
    d.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    d.add_argument("--poses", type=int, default=2000)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:
        # Input errors (bad file, line, field) are the user's to fix: say it plainly, no traceback.
        print(f"mp-slam: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
