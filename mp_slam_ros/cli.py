"""`mp-slam`: the command-line entry point (no ROS needed)."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from .solver.precision import PRESET_NAMES
from .warmup import STAGES


def _positive_int(text: str) -> int:
    """argparse type of counts that must be at least 1 (a bad value fails at parsing, before any file
    is read; a negative --max-frames is a typo, not "all")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got '{text}'") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds > 0, got '{text}'")
    return value


def _add_solver_args(p: argparse.ArgumentParser, solvers: tuple[str, ...], default: str) -> None:
    p.add_argument(
        "--precision",
        default="mixed",
        help=f"a preset ({', '.join(PRESET_NAMES)}) or a precision YAML file (default: mixed)",
    )
    p.add_argument("--solver", choices=solvers, default=default, help=f"linear solver (default: {default})")
    p.add_argument("--max-iterations", type=_positive_int, default=50, help="LM iterations (default: 50)")
    p.add_argument(
        "--max-time",
        type=_positive_seconds,
        metavar="SECONDS",
        help="stop the solve after this many seconds, keeping the best state so far (default: no limit)",
    )
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
        max_solver_time_in_seconds=math.inf if args.max_time is None else args.max_time,
        verbose=not (args.quiet or args.json),
        inner_iterations=getattr(args, "inner_iterations", True),
    )
    if not args.json:
        print(header, flush=True)
    result, summary = run(precision, options)
    # A FAILURE's state is neither the input nor a solution: writing it would replace a good file
    # with garbage. The writers replace atomically, so an error while writing leaves the old file.
    usable = summary.termination != "FAILURE" and math.isfinite(summary.final_cost)
    if args.out and usable:
        write(result, args.out)
    if args.json:
        print(summary.to_json(indent=2))
    else:
        print(summary.report())
        if args.out:
            print(f"wrote {args.out}" if usable else f"not writing {args.out}: the solve failed")
    return 0 if usable else 1


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
    from .demo import run_pgo_demo, run_slam_demo

    if args.pgo:
        run_pgo_demo(Path(args.out), num_poses=args.poses, seed=args.seed)
    elif args.quick:
        run_slam_demo(
            Path(args.out), width=320, height=240, rate_hz=10.0, num_pgo_problems=20,
            pgo_sizes=(100, 300), progress=not args.no_progress,
        )  # fmt: skip
    else:
        run_slam_demo(Path(args.out), num_pgo_problems=args.problems, progress=not args.no_progress)
    return 0


def _replay(args: argparse.Namespace) -> int:
    import dataclasses

    from .replay import config_sets_base_camera, load_slam_config, open_sequence, replay

    config, lc_config, topics = load_slam_config(args.config, mode=args.mode)
    for item in args.topic or []:
        key, sep, value = item.partition("=")
        if not sep or not hasattr(topics, key):
            raise ValueError(f"--topic {item!r}: expected NAME=TOPIC with NAME one of {sorted(vars(topics))}")
        topics = dataclasses.replace(topics, **{key: value})
    sequence = open_sequence(args.input, mode=config.mode, topics=topics)
    explicit = config_sets_base_camera(args.config)
    if not explicit:
        # The camera extrinsic comes with the sequence (EuRoC T_BS, a bag's /tf_static) unless the
        # config sets T_base_camera: a profile that does not mention it must not reset it to identity.
        config = dataclasses.replace(config, T_base_camera=tuple(sequence.T_base_camera.reshape(-1)))
    report = replay(
        sequence,
        args.out,
        config=config,
        precision=args.precision,
        progress=not args.no_progress,
        write_bag=not args.no_bag,
        storage=args.storage,
        max_frames=args.max_frames,
        loop_closure=None if args.no_loop_closure else lc_config,
        base_camera_source="config" if explicit else sequence.T_base_camera_source,
        allow_no_init=args.allow_no_init,
    )
    print(report.text())
    print(f"wrote {args.out}/ ({', '.join(report.outputs.values())}, report.json)")
    return 130 if report.interrupted else 0


def _synth(args: argparse.Namespace) -> int:
    from .sim.export import export_sequence
    from .sim.sequence import make_sequence

    sequence = make_sequence(
        trajectory=args.trajectory,
        mode=args.mode,
        width=args.width,
        height=args.height,
        rate_hz=args.rate,
        duration_s=args.duration,
        seed=args.seed,
        texture=args.texture,
    )
    written = export_sequence(sequence, args.out, formats=args.formats.split(","), progress=not args.no_progress)
    for fmt, path in written.items():
        print(f"{fmt:>8}: {path}")
    return 0


def _check_vocabulary_args(args: argparse.Namespace) -> None:
    """Every problem ``vocabulary train`` can see in its arguments, before it reads an image."""
    import os

    if args.every < 1 or (args.max_images is not None and args.max_images < 1):
        raise ValueError("--every and --max-images must be at least 1")
    if args.branching < 2:
        raise ValueError(f"--branching must be at least 2, got {args.branching}")
    if args.depth < 1:
        raise ValueError(f"--depth must be at least 1, got {args.depth}")
    if args.max_features < 1:
        raise ValueError(f"--max-features must be at least 1, got {args.max_features}")
    missing = [item for item in args.input if item != "synthetic" and not Path(item).exists()]
    if missing:
        raise ValueError(f"input(s) not found: {', '.join(missing)}")
    out = Path(args.out)
    if out.suffix != ".npz":  # loop closure's vocabulary_file reads .npz archives
        raise ValueError(f"--out {args.out}: the vocabulary is written as .npz; name the file *.npz")
    if out.is_dir():
        raise ValueError(f"--out {args.out} is a directory; give a file name ending in .npz")
    out_dir = out.resolve().parent
    if not out_dir.is_dir():
        raise ValueError(f"--out {args.out}: directory {out_dir} does not exist")
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ValueError(f"--out {args.out}: directory {out_dir} is not writable")
    if out.exists() and not os.access(out, os.W_OK):
        raise ValueError(f"--out {args.out}: the file exists and is not writable")


def _vocabulary(args: argparse.Namespace) -> int:
    import time

    from .loop.vocabulary import BinaryVocabulary, synthetic_training_sequences, training_descriptors
    from .replay import open_sequence

    _check_vocabulary_args(args)  # fail now rather than after minutes of training
    t0 = time.perf_counter()
    descriptor_sets = []
    for item in args.input:
        # 'synthetic' is the scene_seed=1 room, never the scene_seed=0 one the demo and tests use.
        sequences = synthetic_training_sequences() if item == "synthetic" else [open_sequence(item, mode=args.mode)]
        for sequence in sequences:
            descriptor_sets += training_descriptors(
                sequence, every=args.every, max_images=args.max_images, max_features=args.max_features,
                progress=not args.no_progress,
            )  # fmt: skip
    num_descriptors = sum(len(d) for d in descriptor_sets)
    print(f"{len(descriptor_sets)} images, {num_descriptors} descriptors")
    if num_descriptors == 0:
        raise ValueError(
            f"no ORB descriptors in the {len(descriptor_sets)} training image(s) of {', '.join(args.input)} "
            "(no images, or images without texture: check the inputs, --mode, --every and --max-images)"
        )
    vocabulary = BinaryVocabulary.train(
        descriptor_sets, branching=args.branching, depth=args.depth, seed=args.seed, progress=not args.no_progress
    )
    vocabulary.save(args.out)
    print(
        f"{vocabulary.num_words} words (branching {vocabulary.branching}, depth {vocabulary.depth}) "
        f"in {time.perf_counter() - t0:.1f} s; wrote {args.out}"
    )
    return 0


def _warmup(args: argparse.Namespace) -> int:
    from .numba_cache import CACHE_DIR
    from .solver.jit import compile_count, compile_seconds
    from .warmup import warm_up

    if CACHE_DIR is None:
        print("no writable kernel cache (see the warning above): compiling into this process only")
    else:
        print(f"kernel cache: {CACHE_DIR}")

    def progress(label: str, seconds: float | None) -> None:
        # One line per stage: the label when it starts (a cold stage takes seconds), the time when it ends.
        if seconds is None:
            print(f"compiling kernels: {label} ...", end="", flush=True)
        else:
            print(f" {seconds:.1f} s", flush=True)

    total = warm_up(args.precision or PRESET_NAMES, progress, stages=args.stage)
    print(
        f"warm-up done in {total:.1f} s: {compile_count()} kernel compilations ({compile_seconds():.1f} s), "
        "the rest loaded from the cache"
    )
    if args.install_seed:
        if CACHE_DIR is None:
            raise OSError("--install-seed: no kernel cache on disk to copy")
        import shutil

        from .numba_cache import seed_dirs

        target = seed_dirs({})[-1]  # <prefix>/share/mp_slam_ros/kernel_cache of this interpreter
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(CACHE_DIR, target, ignore=shutil.ignore_patterns(".seeded-from"))
        print(f"kernel cache copied to {target}: every user of this install starts from it")
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
    b.add_argument(
        "--no-inner-iterations",
        dest="inner_iterations",
        action="store_false",
        help="no point re-solve between LM steps (on by default: it makes far starts converge)",
    )
    _add_solver_args(b, ("cgnr", "schur", "cholesky"), "cgnr")
    b.set_defaults(func=_ba)

    d = sub.add_parser(
        "demo",
        help="full SLAM on the synthetic two-lap room in mixed and fp64, PGO accuracy and time studies, plots",
    )
    d.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    d.add_argument("--problems", type=int, default=800, help="PGO problems of the cumulative-ATE study")
    d.add_argument("--quick", action="store_true", help="small images, 20 PGO problems: a smoke run")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.add_argument("--pgo", action="store_true", help="only the pose-graph demo: a synthetic 3D graph, fp64 vs mixed")
    d.add_argument("--poses", type=int, default=2000, help="--pgo: poses of the synthetic graph")
    d.add_argument("--seed", type=int, default=0, help="--pgo: seed of the synthetic graph")
    d.set_defaults(func=_demo)

    r = sub.add_parser(
        "replay",
        help="run visual odometry and loop closure over a rosbag2 or an EuRoC folder (no ROS needed)",
        description="Runs the VO pipeline frame by frame and loop closure on every keyframe, as "
        "slam.launch.py does live, and writes odometry (TUM and a rosbag2 with /odom, /tf, /path), the "
        "loop-corrected trajectories (slam.tum, slam_live.tum, keyframes_slam.tum), report.json, and with "
        "ground truth ATE of each trajectory, RPE and plots.",
    )
    r.add_argument("input", help="rosbag2 (folder, .db3 or .mcap) or EuRoC-style folder (with mav0/)")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument(
        "--config",
        help="parameters: YAML, flat or in ROS params-file layout (/**, vo_node and loop_closure_node "
        "sections with ros__parameters:), e.g. config/profile_embedded.yaml",
    )
    r.add_argument("--precision", help="override the config's precision (fp64, fp32, mixed, fp16 or a YAML file)")
    r.add_argument("--mode", choices=("stereo", "rgbd"), help="override the config's mode (default: stereo)")
    r.add_argument(
        "--topic",
        action="append",
        metavar="NAME=TOPIC",
        help="bag topic, e.g. left_image=/cam0/image_raw (repeatable; names as in the README's topic table)",
    )
    r.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3", help="output bag storage")
    r.add_argument("--no-bag", action="store_true", help="do not write the output rosbag2")
    r.add_argument("--no-loop-closure", action="store_true", help="visual odometry only")
    r.add_argument("--max-frames", type=_positive_int, help="stop after this many frames (at least 1)")
    r.add_argument(
        "--allow-no-init",
        action="store_true",
        help="a sequence the odometry never initialises on is not an error: write the outputs without "
        "poses (report.json says initialized: false) and exit 0",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=_replay)

    g = sub.add_parser("synth", help="render a synthetic textured-room sequence with exact ground truth")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--trajectory", default="two_lap_room", help="two_lap_room (default), figure_eight or straight")
    g.add_argument("--mode", choices=("stereo", "rgbd"), default="stereo")
    g.add_argument("--width", type=int, default=640)
    g.add_argument("--height", type=int, default=480)
    g.add_argument("--rate", type=float, default=20.0, help="frame rate [Hz]")
    g.add_argument("--duration", type=float, help="seconds (default: the whole trajectory)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--texture", choices=("unique", "repeated"), default="unique")
    g.add_argument(
        "--formats", default="euroc,sqlite3,mcap,tum", help="comma-separated: euroc, sqlite3, mcap, tum (default: all)"
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(func=_synth)

    v = sub.add_parser("vocabulary", help="binary ORB bag-of-words vocabulary for loop closure")
    vsub = v.add_subparsers(dest="action", required=True)
    vt = vsub.add_parser(
        "train",
        help="train a vocabulary from sequences",
        description="Clusters ORB descriptors of the input images into a vocabulary tree (DBoW2 style) "
        "and writes it as .npz (the loop-closure parameter vocabulary_file).",
    )
    vt.add_argument(
        "input",
        nargs="+",
        help="rosbag2 (folder, .db3 or .mcap), EuRoC-style folder, or 'synthetic' (the scene_seed=1 room)",
    )
    vt.add_argument("--out", required=True, help="output .npz file")
    vt.add_argument("--branching", type=int, default=10, help="children per node, k (default: 10)")
    vt.add_argument("--depth", type=int, default=4, help="levels, L; at most k^L words (default: 4)")
    vt.add_argument("--every", type=int, default=4, help="use every N-th frame (default: 4)")
    vt.add_argument("--max-images", type=int, help="at most this many images per sequence")
    vt.add_argument("--max-features", type=int, default=1000, help="features per image (default: 1000)")
    vt.add_argument("--mode", choices=("stereo", "rgbd"), default="stereo", help="how to open bags (default: stereo)")
    vt.add_argument("--seed", type=int, default=0, help="clustering seed (default: 0)")
    vt.add_argument("--no-progress", action="store_true", help="no progress bars")
    vt.set_defaults(func=_vocabulary)

    w = sub.add_parser(
        "warmup",
        help="compile every kernel the precision presets use into the on-disk cache (run once after install)",
        description="Runs tiny PGO, bundle-adjustment, VO-window, vocabulary and render problems at each "
        "precision preset so that numba compiles their kernels into the shared cache "
        "($NUMBA_CACHE_DIR, else $XDG_CACHE_HOME/mp_slam_ros, else ~/.cache/mp_slam_ros). "
        "Later runs load them instead of compiling for tens of seconds; running it again is quick.",
    )
    w.add_argument(
        "--precision",
        action="append",
        help=f"only this preset or precision YAML (repeatable; default: all of {', '.join(PRESET_NAMES)})",
    )
    w.add_argument(
        "--stage",
        action="append",
        choices=STAGES,
        help="only this stage (repeatable; default: all)",
    )
    w.add_argument(
        "--install-seed",
        action="store_true",
        help="then copy the cache to <prefix>/share/mp_slam_ros/kernel_cache, which seeds every other "
        "user's empty cache (run it as the user who installed)",
    )
    w.set_defaults(func=_warmup)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from yaml import YAMLError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        # Ctrl-C ends every command with one line and the shell's 128 + SIGINT; nothing half-done is
        # written (outputs are written after the work, atomically).
        print(f"mp-slam {args.command}: interrupted", file=sys.stderr, flush=True)
        return 130
    except (ValueError, OSError, YAMLError) as err:
        # Input errors (bad file, line, field) are the user's to fix: say it plainly, no traceback.
        # YAMLError is not a ValueError: a config reader that does not convert it must not leak one.
        print(f"mp-slam: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
