"""Compile every numba kernel the solvers use, ahead of time, into the shared on-disk cache.

A kernel compiles the first time it meets new argument types, and the storage types follow the
precision preset, so a cold process spends 30-75 s compiling inside its first solve. `mp-slam
warmup` (and the nodes, before they subscribe) runs tiny problems down every path instead: PGO
(SE(3) and SE(2), pcg-ic / cgnr / cholesky, the loop closer's robust incremental solve), BAL
bundle adjustment (cgnr / schur / cholesky, robust loss), the VO window BA (cgnr / schur), the
loop-closure vocabulary and the renderer of the synthetic sequences. With the cache of
:mod:`mp_slam_ros.numba_cache` on disk, later processes load the kernels instead of compiling
them, and running the warm-up again is quick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .solver.precision import PRESET_NAMES, PrecisionConfig, load_precision

__all__ = ["PER_PRECISION_STAGES", "SHARED_STAGES", "STAGES", "Progress", "warm_up"]

log = logging.getLogger(__name__)

#: progress(label, seconds): called with seconds=None when a stage starts and with its duration when it ends.
Progress = Callable[[str, float | None], None]

# Few iterations: compiling needs every path to run once, not a converged answer.
_ITERATIONS = 3


def _pgo(precision: PrecisionConfig) -> None:
    from .pgo.problem import PoseGraphProblem, optimize_pose_graph
    from .pgo.synthetic import make_loop_pose_graph
    from .solver.lm import PreconditionerCache, SolverOptions, solve

    for dim in (3, 2):  # g2o files hold either; the Lie kernels differ
        graph = make_loop_pose_graph(num_poses=60, laps=2.0, loop_radius=1.5, dim=dim, seed=0).graph
        for solver in ("pcg-ic", "cgnr", "cholesky"):
            options = SolverOptions(linear_solver=solver, max_iterations=_ITERATIONS)
            optimize_pose_graph(graph, precision, options, initialization="chordal")
        # The loop closer's solve: robust loss on the loop edges only, a static factor kept across
        # solves, then the loss weights that decide which loops are dropped.
        is_loop = np.abs(graph.edge_j - graph.edge_i) > 1
        problem = PoseGraphProblem(graph, loss="cauchy", loss_scale=3.0, robust_edges=is_loop)
        cache = PreconditionerCache()
        options = SolverOptions(max_iterations=_ITERATIONS)
        state, _ = solve(problem, problem.initial_state(), options, precision, cache)
        solve(problem, state, options, precision, cache)
        problem.edge_weights(state)


def _tiny_bal(num_cameras: int = 5, num_points: int = 40, seed: int = 0):
    """A consistent BAL problem (cameras looking down -z at a cloud), its estimate perturbed."""
    from .io.bal import BalProblem

    rng = np.random.default_rng(seed)
    points = rng.uniform(-1.0, 1.0, (num_points, 3))
    cameras = np.zeros((num_cameras, 9))
    cameras[:, 3] = np.linspace(-1.0, 1.0, num_cameras)  # tx; rotation 0 so R = I
    cameras[:, 5] = -10.0  # tz: the cloud is 10 m in front (BAL cameras look down -z)
    cameras[:, 6] = 500.0  # focal length [px]; k1 = k2 = 0
    cam_idx = np.repeat(np.arange(num_cameras), num_points)
    pt_idx = np.tile(np.arange(num_points), num_cameras)
    p = points[pt_idx] + cameras[cam_idx, 3:6]
    obs = cameras[cam_idx, 6:7] * (-p[:, :2] / p[:, 2:3])
    noisy_cameras = cameras + rng.normal(0.0, 1e-3, cameras.shape) * np.array([1, 1, 1, 1, 1, 1, 0, 0, 0])
    noisy_points = points + rng.normal(0.0, 1e-2, points.shape)
    return BalProblem(cam_idx, pt_idx, obs, noisy_cameras, noisy_points, source="warmup")


def _ba(precision: PrecisionConfig) -> None:
    from .ba.problem import optimize_bal
    from .solver.lm import SolverOptions

    bal = _tiny_bal()
    for solver in ("cgnr", "schur", "cholesky"):
        optimize_bal(bal, precision, SolverOptions(linear_solver=solver, max_iterations=_ITERATIONS))
    optimize_bal(bal, precision, SolverOptions(linear_solver="cgnr", max_iterations=_ITERATIONS), loss="huber")


def _vo_window(precision: PrecisionConfig) -> None:
    from .ba.synthetic import make_window
    from .solver.lm import SolverOptions, solve

    window = make_window(num_keyframes=8, seed=0)
    for solver in ("cgnr", "schur"):  # the VO node's two choices (vo.yaml linear_solver)
        for loss in ("huber", "trivial"):
            problem, state = window.problem(loss=loss, loss_scale=2.45)
            solve(problem, state, SolverOptions(linear_solver=solver, max_iterations=_ITERATIONS), precision)


def _loop(_: PrecisionConfig | None = None) -> None:
    from .loop.vocabulary import BinaryVocabulary, bow_score, default_vocabulary

    rng = np.random.default_rng(0)
    descriptors = rng.integers(0, 256, (200, 32), dtype=np.uint8)
    vocabulary = default_vocabulary()
    bow_score(vocabulary.transform(descriptors[:100]), vocabulary.transform(descriptors[100:]))
    # `mp-slam vocabulary train`: the clustering kernels.
    BinaryVocabulary.train([descriptors[:100], descriptors[100:]], branching=2, depth=2, seed=0)


def _render(_: PrecisionConfig | None = None) -> None:
    try:
        from .sim.render import quantize_image, render_frame
    except RuntimeError as err:  # cache=True kernels and no writable cache: nothing to keep anyway
        log.warning("render kernels skipped: %s", err)
        return
    from .sim.scene import make_scene
    from .sim.sequence import default_camera

    # A coarse texture: the scene build is numpy work that the kernels' types do not depend on.
    scene = make_scene(seed=0, texel_m=0.05)
    T = np.eye(4)
    T[:3, :3] = [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]  # optical axis along +x
    T[:3, 3] = [0.0, 0.0, 1.3]
    image, _ = render_frame(scene, default_camera(64, 48), T)
    quantize_image(image)


#: Stages run once per precision preset, in this order.
PER_PRECISION_STAGES: dict[str, Callable[[PrecisionConfig], None]] = {
    "pgo": _pgo,
    "ba": _ba,
    "vo-window": _vo_window,
}
#: Stages whose kernels do not depend on the precision: run once.
SHARED_STAGES: dict[str, Callable[[PrecisionConfig | None], None]] = {
    "loop": _loop,
    "render": _render,
}
STAGES: tuple[str, ...] = (*PER_PRECISION_STAGES, *SHARED_STAGES)


def _log_progress(label: str, seconds: float | None) -> None:
    if seconds is not None:
        log.info("compiling kernels: %s ... %.1f s", label, seconds)


def warm_up(
    precisions: Sequence[str | Path] = PRESET_NAMES,
    progress: Progress | None = None,
    *,
    stages: Sequence[str] | None = None,
) -> float:
    """Compile (or load from the on-disk cache) every kernel the given precisions use.

    Args:
        precisions: preset names (fp64, fp32, mixed, fp16) or precision YAML files; default all presets.
        progress: ``progress(label, seconds)``, e.g. ``("pgo mixed", None)`` when a stage starts and
            ``("pgo mixed", 3.1)`` when it has finished; None logs each finished stage at INFO.
        stages: a subset of :data:`PER_PRECISION_STAGES` and :data:`SHARED_STAGES` (default: all).

    Returns:
        Wall seconds the warm-up took. Idempotent: with a warm cache it only loads the kernels.

    Without a writable cache directory (see :mod:`mp_slam_ros.numba_cache`) the kernels are
    compiled into this process only, which still moves the compile ahead of the first message.
    """
    report = progress or _log_progress
    configs = [load_precision(p) for p in precisions]  # fail on a bad name before compiling anything
    known = set(PER_PRECISION_STAGES) | set(SHARED_STAGES)
    wanted = list(known if stages is None else stages)
    unknown = set(wanted) - known
    if unknown:
        names = ", ".join(sorted(known))
        raise ValueError(f"unknown warm-up stage(s) {', '.join(sorted(unknown))}; choose from {names}")
    start = time.perf_counter()

    def run(label: str, fn: Callable[[], None]) -> None:
        report(label, None)
        t0 = time.perf_counter()
        fn()
        report(label, time.perf_counter() - t0)

    for name, config in zip(precisions, configs, strict=True):
        label = config.name if config.name != "custom" else str(name)
        for stage, fn in PER_PRECISION_STAGES.items():
            if stage in wanted:
                run(f"{stage} {label}", lambda fn=fn, config=config: fn(config))
    for stage, fn in SHARED_STAGES.items():
        if stage in wanted:
            run(stage, lambda fn=fn: fn(None))
    return time.perf_counter() - start
