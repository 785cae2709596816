"""The sliding-window bundle adjuster (mp_slam_ros.ba.window) fed keyframe by keyframe.

A synthetic trajectory (mp_slam_ros.ba.synthetic.make_window) is streamed through the adjuster
the way the VO node will: one keyframe at a time with a tracked-pose guess, landmarks added once
they are triangulable, one optimize() per keyframe. Measured numbers quoted below are from the
reference machine at the time of writing; run with ``-s`` to see them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import pytest
import scipy.sparse as sp

import mp_slam_ros.ba.window as window_module
from mp_slam_ros.ba import SlideOut, SlidingWindowBundleAdjuster, WindowOptions
from mp_slam_ros.ba.problem import ReprojectionProblem, WindowState
from mp_slam_ros.ba.synthetic import SyntheticWindow, make_window
from mp_slam_ros.solver import lie
from mp_slam_ros.solver.lm import SolverOptions, solve
from mp_slam_ros.solver.precision import PrecisionConfig

F64 = np.dtype(np.float64)
KF_BASE = 1000  # front-end keyframe ids are not window indices
MAX_KEYFRAMES = 20
GUESS_SIGMA_RAD, GUESS_SIGMA_M = 0.002, 0.01  # tracked-pose guess of a new keyframe, per axis
LANDMARK_SIGMA_M = 0.05  # triangulation error of a new landmark, per axis
PARALLAX_DEG = 1.0  # the simulated front end triangulates at this parallax (ORB-SLAM's ~1 deg check)


# ---------------------------------------------------------------------------------------------
# A simulated front end
# ---------------------------------------------------------------------------------------------
class Step(NamedTuple):
    k: int  # keyframe index in the synthetic window
    slide: SlideOut | None
    guess: tuple[np.ndarray, np.ndarray]  # the pose guess given to add_keyframe
    new_points: np.ndarray  # synthetic point indices added as landmarks at this keyframe
    landmarks_before: dict[int, np.ndarray]  # landmark id -> position just before add_keyframe


def landmark_ids_for(w: SyntheticWindow, seed: int) -> np.ndarray:
    """Front-end landmark id of every synthetic point: shuffled and sparse, unlike point indices."""
    return 7 * np.random.default_rng(seed).permutation(w.num_points).astype(np.int64) + 3


def front_end(w: SyntheticWindow, adj: SlidingWindowBundleAdjuster, lm_ids: np.ndarray, seed: int) -> Iterator[Step]:
    """Feed `w` keyframe by keyframe, yielding after add_keyframe/add_landmarks (before optimize).

    Keyframes 0 and 1 come at the truth (the front end's initialisation sets frame and scale).
    Keyframe k >= 2 is guessed as the previous keyframe's estimate moved by the true relative
    motion and perturbed by Exp(N(0, GUESS_SIGMA)) (a tracked pose). A point becomes a landmark
    once the rays from the first keyframe that saw it and the current one meet at >= PARALLAX_DEG,
    at its true position carried into the previous keyframe's estimated frame plus
    N(0, LANDMARK_SIGMA_M); its earlier observations were pending until then.
    """
    rng = np.random.default_rng(seed)
    Rt, tt = w.true_rotations, w.true_translations
    bounds = np.searchsorted(w.pose_index, np.arange(w.num_keyframes + 1))
    first_seen = np.full(w.num_points, -1)
    added = np.zeros(w.num_points, dtype=bool)
    for k in range(w.num_keyframes):
        if k < 2:
            R, t = Rt[k], tt[k]
        else:
            Rp, tp = adj.pose(KF_BASE + k - 1)
            dR, dt = lie.between(Rt[k - 1 : k], tt[k - 1 : k], Rt[k : k + 1], tt[k : k + 1])
            R, t = lie.compose(Rp[None], tp[None], dR, dt)
            noise = np.concatenate([rng.normal(0.0, GUESS_SIGMA_RAD, 3), rng.normal(0.0, GUESS_SIGMA_M, 3)])
            R, t = (a[0] for a in lie.retract(R, t, noise[None]))
        before = {i: adj.landmark(i) for i in adj.landmark_ids.tolist()}
        pts = w.point_index[bounds[k] : bounds[k + 1]]
        slide = adj.add_keyframe(KF_BASE + k, R, t, lm_ids[pts], w.observations[bounds[k] : bounds[k + 1]])

        first_seen[pts[first_seen[pts] < 0]] = k
        cand = pts[(first_seen[pts] < k) & ~added[pts]]
        a = w.true_points[cand] - tt[first_seen[cand]]
        b = w.true_points[cand] - tt[k]
        cos = np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        new = cand[cos <= math.cos(math.radians(PARALLAX_DEG))]
        added[new] = True
        if new.size:
            Rp, tp = adj.pose(KF_BASE + k - 1)
            in_prev = (w.true_points[new] - tt[k - 1]) @ Rt[k - 1]
            adj.add_landmarks(lm_ids[new], in_prev @ Rp.T + tp + rng.normal(0.0, LANDMARK_SIGMA_M, (new.size, 3)))
        yield Step(k, slide, (R, t), new, before)


# ---------------------------------------------------------------------------------------------
# Error measures
# ---------------------------------------------------------------------------------------------
def aligned_errors(state: WindowState, Rt: np.ndarray, tt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per keyframe rotation (rad) and translation (m) error after the similarity that best maps
    the estimate onto the truth: rotation = chordal mean of R_true R_est^T, then scale and offset
    by least squares on the camera centres. This removes the 7-DoF gauge (which the window
    inherits, with its drift, from the keyframes that slid out) and leaves the window's shape."""
    R = lie.project_to_rotation(np.einsum("kij,klj->il", Rt, state.rotations)[None])[0]
    e = (state.translations - state.translations.mean(axis=0)) @ R.T
    d = tt - tt.mean(axis=0)
    s = float(np.sum(e * d) / np.sum(e * e))
    rel = np.einsum("kji,jl,klm->kim", Rt, R, state.rotations)
    rot_err = np.linalg.norm(lie.so3_log(np.ascontiguousarray(rel)), axis=1)
    return rot_err, np.linalg.norm(s * e - d, axis=1)


def pose_crb(problem: ReprojectionProblem, truth: WindowState, sigma: float) -> tuple[float, float]:
    """Mean over the free poses of the Cramer-Rao bound sqrt(trace) of rotation and translation
    of the window's own observations (as `problem` uses them), with the first and last poses
    held: the smallest shape error any estimator of these observations can have. Poses by the
    Schur complement (points are independent given the poses), so nothing dense is large."""
    n = problem.num_poses
    gauge = ReprojectionProblem(
        problem.pose_index, problem.point_index, problem.observations, problem.intrinsics, n, problem.num_points,
        fixed_poses=(0, n - 1),
    )  # fmt: skip
    _, jac = gauge.linearize(truth, F64)
    J = jac.to_csr() / sigma
    H = (J.T @ J).tocsr()
    npose = 6 * gauge.free_poses.size
    m = (H.shape[0] - npose) // 3
    Hll = H[npose:, npose:].toarray().reshape(m, 3, m, 3)
    diag = np.arange(m)
    blocks = np.linalg.inv(Hll[diag, :, diag, :])
    Hll_inv = sp.bsr_matrix((blocks, diag, np.arange(m + 1)), shape=(3 * m, 3 * m))
    Hpl = H[:npose, npose:]
    schur = H[:npose, :npose].toarray() - (Hpl @ Hll_inv @ Hpl.T).toarray()
    var = np.diag(np.linalg.inv(schur)).reshape(-1, 6)
    return float(np.sqrt(var[:, :3].sum(axis=1)).mean()), float(np.sqrt(var[:, 3:].sum(axis=1)).mean())


# ---------------------------------------------------------------------------------------------
# The stream
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp64", "mixed"])
def test_stream_stays_within_noise_and_warm_starts_pay(precision: str, caplog) -> None:
    """60 keyframes through a 20-keyframe window.

    Error bound. The window's estimate is the ML estimate of its own observations given its two
    held poses, so after removing the gauge (aligned_errors) its pose errors are draws whose
    size the Cramer-Rao bound of those observations sets (pose_crb; ~4-5 mm / ~0.7-0.9 mrad mean
    here). On top comes the relative error of the two held poses, inherited from earlier windows
    with the same accuracy. Bound: the mean error over the window below 2x the mean CRB, and
    every keyframe below 4x it (the 1 - 1e-4 quantile of |N(0, I_3)| is ~4.6 per axis = 2.7x
    sqrt(3), for ~1,000 pose draws per run, plus margin for the per-pose spread of the CRB).
    Measured over seeds 0-3: worst mean ratio 0.96 (translation) / 1.16 (rotation), worst single
    keyframe 2.4 / 2.7, both presets. For scale: the guesses are ~16 mm / 3.2 mrad off.

    Warm start. At every keyframe the same problem is also solved (a) cold, from the guesses the
    front end gave (new keyframe, every window keyframe's original guess, every landmark's
    triangulation) with the default damping, and (b) from the warm state but with the default
    damping, to measure the damping carry-over separately. Measured (seed 0, fp64): 4.3
    iterations warm, 6.3 cold, 5.7 with the warm state but cold damping.
    """
    seed = 0
    w = make_window(60, seed=seed)
    lm_ids = landmark_ids_for(w, seed)
    point_of = dict(zip(lm_ids.tolist(), range(w.num_points), strict=True))
    # 30 iterations, not the default 10: the bootstrap windows of 3-5 keyframes, with a handful of
    # barely triangulable points, converge linearly and need up to ~15 (fp64 and exact Schur alike);
    # the steady-state ones stay within the default, which is asserted below.
    options = WindowOptions(max_keyframes=MAX_KEYFRAMES, max_iterations=30)
    adj = SlidingWindowBundleAdjuster(w.intrinsics, PrecisionConfig.preset(precision), window_options=options)
    cold_options = dataclasses.replace(adj.solver_options, max_iterations=50)
    guesses: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    triangulated: dict[int, np.ndarray] = {}
    all_added: set[int] = set()
    all_dropped: list[int] = []
    iters = {"warm": [], "cold": [], "warm_state_cold_damping": []}
    ratios = []
    caplog.set_level(logging.WARNING, logger="mp_slam_ros")
    for step in front_end(w, adj, lm_ids, seed=seed + 100):
        k = step.k
        guesses[KF_BASE + k] = step.guess
        for i in lm_ids[step.new_points].tolist():
            triangulated[i] = adj.landmark(i)
            all_added.add(i)

        # keyframes slide out oldest first; what they leave unobserved is reported with its position
        oldest = max(0, k - MAX_KEYFRAMES + 1)
        np.testing.assert_array_equal(adj.keyframe_ids, KF_BASE + np.arange(oldest, k + 1))
        if k < MAX_KEYFRAMES:
            assert step.slide is None
        else:
            assert step.slide is not None and step.slide.keyframe_id == KF_BASE + k - MAX_KEYFRAMES
            in_window = (w.pose_index >= oldest) & (w.pose_index <= k)
            still_seen = set(lm_ids[w.point_index[in_window]].tolist())
            expected = sorted(set(step.landmarks_before) - still_seen)
            assert step.slide.landmark_ids.tolist() == expected
            for i, X in zip(expected, step.slide.landmark_positions, strict=True):
                np.testing.assert_array_equal(X, step.landmarks_before[i])
                assert not adj.has_landmark(i)
            all_dropped += expected

        problem, warm = adj.problem()
        if adj.num_keyframes >= 6:
            kfs = adj.keyframe_ids.tolist()
            cold = WindowState(
                np.array([guesses[i][0] for i in kfs]),
                np.array([guesses[i][1] for i in kfs]),
                np.array([triangulated[i] for i in adj.landmark_ids.tolist()]),
            )
            held = adj.window_options.num_fixed_keyframes  # the problem's gauge: the same held poses for both
            cold.rotations[:held], cold.translations[:held] = warm.rotations[:held], warm.translations[:held]
            _, cold_summary = solve(problem, cold, cold_options, adj.precision)
            _, damping_summary = solve(problem, warm, cold_options, adj.precision)

        summary = adj.optimize()
        assert summary.termination == "CONVERGENCE", (k, summary.message)
        assert summary.num_fallbacks == 0
        # the solution was written back: poses and landmarks
        assert adj.last_problem.cost(adj.state) == pytest.approx(summary.final_cost, rel=1e-5)
        if adj.num_keyframes < 6:
            continue
        assert cold_summary.termination == "CONVERGENCE"
        assert summary.num_iterations <= WindowOptions().max_iterations
        iters["warm"].append(summary.num_iterations)
        iters["cold"].append(cold_summary.num_iterations)
        iters["warm_state_cold_damping"].append(damping_summary.num_iterations)

        kfs = adj.keyframe_ids - KF_BASE
        truth = WindowState(
            w.true_rotations[kfs], w.true_translations[kfs], w.true_points[[point_of[i] for i in adj.landmark_ids]]
        )
        crb_rot, crb_trans = pose_crb(adj.last_problem, truth, w.pixel_sigma)
        rot_err, trans_err = aligned_errors(adj.state, w.true_rotations[kfs], w.true_translations[kfs])
        ratio = (
            trans_err.mean() / crb_trans,
            trans_err.max() / crb_trans,
            rot_err.mean() / crb_rot,
            rot_err.max() / crb_rot,
        )
        ratios.append(ratio)
        assert ratio[0] < 2.0 and ratio[2] < 2.0, (k, ratio)
        assert ratio[1] < 4.0 and ratio[3] < 4.0, (k, ratio)

    worst = np.max(ratios, axis=0)
    mean_iters = {name: statistics.fmean(v) for name, v in iters.items()}
    print(
        f"\n{precision}: error / CRB worst: translation mean {worst[0]:.2f} max {worst[1]:.2f}, rotation mean "
        f"{worst[2]:.2f} max {worst[3]:.2f}; iterations warm {mean_iters['warm']:.2f}, cold "
        f"{mean_iters['cold']:.2f}, warm state with cold damping {mean_iters['warm_state_cold_damping']:.2f}; "
        f"{len(all_dropped)} landmarks dropped, {adj.num_landmarks} in the window, "
        f"{adj.num_pending_observations} pending observations"
    )
    # warm starts converge in fewer iterations than cold starts from the same guesses ...
    assert mean_iters["warm"] < 0.85 * mean_iters["cold"]
    assert sum(a <= b for a, b in zip(iters["warm"], iters["cold"], strict=True)) >= 0.9 * len(iters["warm"])
    # ... and carrying the damping over is part of why (it is kept because of this)
    assert mean_iters["warm"] < 0.9 * mean_iters["warm_state_cold_damping"]
    # every landmark is either still in the window or was handed back exactly once
    assert len(all_dropped) == len(set(all_dropped))
    assert set(all_dropped) | set(adj.landmark_ids.tolist()) == all_added
    assert not set(all_dropped) & set(adj.landmark_ids.tolist())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_held_poses_stay_fixed() -> None:
    """The oldest two poses are bit-for-bit what they were before each solve, and after a slide
    the new oldest two are held at the estimates the previous solve left them at."""
    seed = 1
    w = make_window(14, seed=seed)
    lm_ids = landmark_ids_for(w, seed)
    adj = SlidingWindowBundleAdjuster(w.intrinsics, "fp64", window_options=WindowOptions(max_keyframes=6))
    for step in front_end(w, adj, lm_ids, seed=seed):
        held = adj.fixed_keyframe_ids.tolist()
        assert held == adj.keyframe_ids[:2].tolist()
        before = {i: adj.pose(i) for i in adj.keyframe_ids.tolist()}
        summary = adj.optimize()
        assert summary.termination != "FAILURE"  # bootstrap windows may stop at the iteration cap
        for i in held:
            R, t = adj.pose(i)
            np.testing.assert_array_equal(R, before[i][0])
            np.testing.assert_array_equal(t, before[i][1])
        if step.k >= 2:
            assert adj.last_problem.fixed_poses.tolist() == [True, True] + [False] * (adj.num_keyframes - 2)
            # the free poses did move (the newest from its noisy guess)
            assert not np.array_equal(adj.pose(KF_BASE + step.k)[1], before[KF_BASE + step.k][1])
    assert adj.keyframe_ids.tolist() == list(range(KF_BASE + 8, KF_BASE + 14))


# ---------------------------------------------------------------------------------------------
# A hand-made scene: a camera moving sideways in front of a wall of points
# ---------------------------------------------------------------------------------------------
INTRINSICS = (400.0, 400.0, 320.0, 240.0)


def scene(num_points: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points 4-8 m in front of the origin and keyframe centres 0.1 m apart along x (identity
    rotations): every point has a few degrees of parallax between neighbouring keyframes."""
    rng = np.random.default_rng(seed)
    points = np.stack(
        [rng.uniform(-3, 3, num_points), rng.uniform(-2, 2, num_points), rng.uniform(4, 8, num_points)], 1
    )
    centres = np.stack([0.1 * np.arange(10), np.zeros(10), np.zeros(10)], axis=1)
    return points, centres


def project(points: np.ndarray, centre: np.ndarray, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    fx, fy, cx, cy = INTRINSICS
    pc = points - centre
    uv = np.stack([fx * pc[:, 0] / pc[:, 2] + cx, fy * pc[:, 1] / pc[:, 2] + cy], axis=1)
    return uv + np.random.default_rng(seed).normal(0.0, noise, uv.shape)


def test_landmark_seen_once_is_excluded_but_kept() -> None:
    points, centres = scene()
    ids = np.arange(points.shape[0]) + 500
    # parallax check off: this is about the seen-twice rule (the scene's depths give 0.7-1.4 deg)
    options = WindowOptions(max_keyframes=8, min_parallax_deg=0.0)
    adj = SlidingWindowBundleAdjuster(INTRINSICS, "fp64", window_options=options)
    # a single keyframe: nothing to move
    adj.add_keyframe(0, np.eye(3), centres[0], ids[:30], project(points[:30], centres[0], 0.5, 0))
    adj.add_landmarks(ids[:30], points[:30] + 0.02)
    summary = adj.optimize()
    assert summary.termination == "CONVERGENCE" and summary.num_iterations == 0
    assert "nothing to optimise" in summary.message
    for k in (1, 2):
        adj.add_keyframe(k, np.eye(3), centres[k] + 0.01 * (k - 1), ids[:30], project(points[:30], centres[k], 0.5, k))
    # point 30 is seen by keyframe 3 only: excluded from the problem, kept at its position
    adj.add_keyframe(3, np.eye(3), centres[3], ids[:31], project(points[:31], centres[3], 0.5, 3))
    adj.add_landmark(ids[30], points[30] + 0.1)
    adj.optimize()
    problem = adj.last_problem
    j = int(np.searchsorted(adj.landmark_ids, ids[30]))
    assert adj.landmark_ids[j] == ids[30]
    assert not problem.point_included[j] and problem.num_excluded_points == 1
    np.testing.assert_array_equal(adj.landmark(ids[30]), points[30] + 0.1)
    assert adj.num_observations == 4 * 30 + 1 and adj.num_pending_observations == 0
    # a second observation brings it in
    adj.add_keyframe(4, np.eye(3), centres[4], ids[:31], project(points[:31], centres[4], 0.5, 4))
    adj.optimize()
    assert adj.last_problem.point_included[j] and adj.last_problem.num_excluded_points == 0
    # it moved, to where it explains both its pixels (its depth, from 0.1 m of baseline, is loose)
    assert not np.array_equal(adj.landmark(ids[30]), points[30] + 0.1)
    residuals, _ = adj.last_problem.evaluate(adj.state, jacobian=False)
    assert np.all(np.abs(residuals[adj.last_problem.point_index == j]) < 2.0)


def test_pending_observations_join_when_the_landmark_is_added() -> None:
    points, centres = scene()
    ids = np.arange(points.shape[0]) + 500
    adj = SlidingWindowBundleAdjuster(INTRINSICS, "mixed", window_options=WindowOptions(max_keyframes=3))
    for k in range(3):
        adj.add_keyframe(k, np.eye(3), centres[k], ids[:35], project(points[:35], centres[k], 0.5, k))
    assert adj.num_observations == 0 and adj.num_pending_observations == 3 * 35
    adj.add_landmarks(ids[:30], points[:30])  # points 30-34 stay untriangulated
    assert adj.num_observations == 3 * 30 and adj.num_pending_observations == 3 * 5
    adj.optimize()
    assert adj.last_problem.num_observations == 3 * 30
    assert adj.num_landmarks == 30 and not adj.has_landmark(ids[30])
    # a landmark added later picks up the observations made before it
    adj.add_landmark(ids[30], points[30])
    assert adj.num_pending_observations == 3 * 4
    # pending observations leave with their keyframe; keyframe 3 sees only points 0-29
    slide = adj.add_keyframe(3, np.eye(3), centres[3], ids[:30], project(points[:30], centres[3], 0.5, 3))
    assert slide is not None and slide.keyframe_id == 0 and slide.landmark_ids.size == 0
    assert adj.num_pending_observations == 2 * 4
    # once no keyframe sees point 30, it is handed back with its position
    adj.add_keyframe(4, np.eye(3), centres[4], ids[:30], project(points[:30], centres[4], 0.5, 4))
    slide = adj.add_keyframe(5, np.eye(3), centres[5], ids[:30], project(points[:30], centres[5], 0.5, 5))
    assert slide is not None and slide.keyframe_id == 2
    assert slide.landmark_ids.tolist() == [ids[30]]
    np.testing.assert_array_equal(slide.landmark_positions, points[30:31])
    assert adj.num_pending_observations == 0 and adj.num_landmarks == 30


def test_low_parallax_landmark_is_held_out_until_seen_from_far_enough() -> None:
    """A landmark 200 m away seen from keyframes 0.2 m apart (0.06 deg) stays out of the problem
    at its position; a keyframe 4 m to the side (1.1 deg) brings it in. With the gate off it is
    in from the start."""
    points, centres = scene()
    far = np.array([[0.0, 0.0, 200.0]])
    allp = np.concatenate([points, far])
    ids = np.arange(allp.shape[0]) + 500
    for gate, included_before in ((1.0, False), (0.0, True)):
        adj = SlidingWindowBundleAdjuster(
            INTRINSICS, "fp64", window_options=WindowOptions(max_keyframes=8, min_parallax_deg=gate)
        )
        for k in range(3):
            adj.add_keyframe(k, np.eye(3), centres[k], ids, project(allp, centres[k], 0.5, k))
        adj.add_landmarks(ids, allp + 0.01)
        adj.optimize()
        j = allp.shape[0] - 1
        assert bool(adj.last_problem.point_included[j]) == included_before
        if not included_before:
            np.testing.assert_array_equal(adj.landmark(ids[j]), far[0] + 0.01)
            adj.add_keyframe(3, np.eye(3), [4.0, 0.0, 0.0], ids, project(allp, np.array([4.0, 0.0, 0.0]), 0.5, 3))
            adj.optimize()
            assert adj.last_problem.point_included[j]


def test_damping_is_carried_over_clamped(monkeypatch) -> None:
    points, centres = scene()
    ids = np.arange(points.shape[0]) + 500
    used: list[float] = []
    real_solve = window_module.solve

    def spy(problem, state, options, precision):
        used.append(options.initial_damping)
        return real_solve(problem, state, options, precision)

    monkeypatch.setattr(window_module, "solve", spy)
    for warm in (True, False):
        used.clear()
        options = WindowOptions(
            max_keyframes=8,
            warm_start_damping=warm,
            damping_range=(1e-5, 1e-3),
            max_iterations=20,
            min_parallax_deg=0.0,
        )
        adj = SlidingWindowBundleAdjuster(INTRINSICS, "fp64", SolverOptions(linear_solver="cgnr"), options)
        finals = []
        for k in range(5):
            adj.add_keyframe(
                k, np.eye(3), centres[k] + [0.0, 0.02 * (k > 1), 0.0], ids, project(points, centres[k], 0.5)
            )
            if k == 1:
                adj.add_landmarks(ids, points + 0.05)
            if k >= 1:
                summary = adj.optimize()
                finals.append(summary.iterations[-1].damping)
                expected = min(max(finals[-1], 1e-5), 1e-3) if warm else 1e-4
                assert adj.next_initial_damping == expected
        assert used[0] == 1e-4  # the first solve starts from SolverOptions.initial_damping
        if warm:
            assert used[1:] == [min(max(d, 1e-5), 1e-3) for d in finals[:-1]]
            assert min(finals) < 1e-5  # the clamp was exercised: converged solves end below it
        else:
            assert used == [1e-4] * len(used)


def test_input_validation_is_clear_and_atomic() -> None:
    points, centres = scene()
    ids = np.arange(points.shape[0]) + 500
    with pytest.raises(ValueError, match="intrinsics"):
        SlidingWindowBundleAdjuster((400.0, 0.0, 320.0, 240.0))
    with pytest.raises(ValueError, match="max_keyframes"):
        WindowOptions(max_keyframes=2, num_fixed_keyframes=2)
    with pytest.raises(ValueError, match="num_fixed_keyframes"):
        WindowOptions(num_fixed_keyframes=0)
    with pytest.raises(ValueError, match="loss must be"):
        WindowOptions(loss="l1")
    with pytest.raises(ValueError, match="loss_scale"):
        WindowOptions(loss_scale=0.0)
    with pytest.raises(ValueError, match="damping_range"):
        WindowOptions(damping_range=(1e-2, 1e-6))
    with pytest.raises(ValueError, match="min_parallax_deg"):
        WindowOptions(min_parallax_deg=-1.0)

    adj = SlidingWindowBundleAdjuster(INTRINSICS, "fp64")
    with pytest.raises(RuntimeError, match="no keyframes"):
        adj.optimize()
    uv = project(points, centres[0])
    adj.add_keyframe(7, np.eye(3), centres[0], ids, uv)
    adj.add_landmarks(ids[:10], points[:10])

    def contents():
        return adj.keyframe_ids.tolist(), adj.landmark_ids.tolist(), adj.num_observations, adj.num_pending_observations

    snapshot = contents()
    rot = lie.so3_exp(np.array([[0.1, 0.2, 0.3]]))[0]

    def add8(rotation=rot, translation=centres[1], landmark_ids=ids, pixels=uv, keyframe_id=8):
        return lambda: adj.add_keyframe(keyframe_id, rotation, translation, landmark_ids, pixels)

    bad_calls = [
        (ValueError, "already in the window", add8(keyframe_id=7)),
        (TypeError, "keyframe_id must be an integer", add8(keyframe_id=8.0)),
        (TypeError, "keyframe_id must be an integer", add8(keyframe_id=True)),
        (ValueError, r"rotation must have shape \(3, 3\)", add8(rotation=np.eye(4))),
        (ValueError, "not a rotation matrix", add8(rotation=1.01 * rot)),
        (ValueError, "not a rotation matrix", add8(rotation=-np.eye(3))),
        (ValueError, "rotation must be finite", add8(rotation=np.full((3, 3), np.nan))),
        (ValueError, r"translation must have shape \(3,\)", add8(translation=centres[1][:2])),
        (ValueError, "translation must be finite", add8(translation=[0.0, np.inf, 0.0])),
        (ValueError, "pixels must have shape", add8(pixels=uv[:-1])),
        (ValueError, "pixels must have shape", add8(pixels=uv[:, :1])),
        (ValueError, "pixels must be finite", add8(pixels=np.where(uv > 300, np.nan, uv))),
        (ValueError, "not unique", add8(landmark_ids=np.r_[ids[:5], ids[0]], pixels=uv[:6])),
        (ValueError, "1-D array of integers", add8(landmark_ids=ids.astype(float))),
        (ValueError, "1-D array of integers", add8(landmark_ids=ids.reshape(-1, 1))),
        (ValueError, "already in the window", lambda: adj.add_landmark(ids[0], points[0])),
        (ValueError, "already in the window", lambda: adj.add_landmarks(ids[8:12], points[8:12])),
        (ValueError, "not unique", lambda: adj.add_landmarks(np.r_[ids[20], ids[20]], points[:2])),
        (ValueError, r"positions must have shape \(2, 3\)", lambda: adj.add_landmarks(ids[20:22], points[:3])),
        (ValueError, "position must be finite", lambda: adj.add_landmark(ids[20], [0.0, np.nan, 1.0])),
        (ValueError, r"position must have shape \(3,\)", lambda: adj.add_landmark(ids[20], [0.0, 1.0])),
        (KeyError, "not in the window", lambda: adj.update_landmark(ids[20], points[20])),
        (ValueError, "position must be finite", lambda: adj.update_landmark(ids[0], [np.inf, 0.0, 1.0])),
        (KeyError, "keyframe 8 is not in the window", lambda: adj.pose(8)),
        (KeyError, "not in the window", lambda: adj.landmark(ids[20])),
    ]
    for error, match, call in bad_calls:
        with pytest.raises(error, match=match):
            call()
        assert contents() == snapshot, match
    np.testing.assert_array_equal(adj.landmark(ids[0]), points[0])
    adj.update_landmark(ids[0], points[0] + 1.0)
    np.testing.assert_array_equal(adj.landmark(ids[0]), points[0] + 1.0)
    # numpy integers are ids too; a keyframe without observations is accepted
    adj.add_keyframe(np.int32(8), rot, centres[1], np.zeros(0, dtype=np.int64), np.zeros((0, 2)))
    assert adj.keyframe_ids.tolist() == [7, 8] and adj.has_keyframe(np.int64(8))


def test_bookkeeping_is_small_next_to_the_solve() -> None:
    """The per-keyframe work outside the solver on a full 50-keyframe window (~230 landmarks,
    ~2,500 observations): add_keyframe (with the slide), add_landmarks, and building the problem
    (what optimize() does before solve). Measured medians: ~75 + ~10 + ~150 us (of which ~60 us
    is ReprojectionProblem's own setup); optimize()'s write-back adds ~20 us. Timing belongs to the
    benchmarks (bench_ba_windows.py); this only guards the complexity: a per-keyframe rebuild of the
    whole window would cost tens of milliseconds, far above the 5 ms bound, which leaves a loaded
    machine 20x room (1.1 ms measured with two test suites running)."""
    w = make_window(120, seed=0)
    lm_ids = landmark_ids_for(w, 0)
    adj = SlidingWindowBundleAdjuster(w.intrinsics, "mixed", window_options=WindowOptions(max_keyframes=50))
    bounds = np.searchsorted(w.pose_index, np.arange(w.num_keyframes + 1))
    seen = np.zeros(w.num_points, dtype=int)
    times = []
    for k in range(w.num_keyframes):
        pts = w.point_index[bounds[k] : bounds[k + 1]]
        seen[pts] += 1
        new = pts[seen[pts] == 2]
        t0 = time.perf_counter()
        adj.add_keyframe(
            k, w.true_rotations[k], w.true_translations[k], lm_ids[pts], w.observations[bounds[k] : bounds[k + 1]]
        )
        adj.add_landmarks(lm_ids[new], w.true_points[new])
        adj.problem()
        if k >= 60:
            times.append(time.perf_counter() - t0)
    assert adj.num_keyframes == 50 and adj.num_observations > 2000
    median = statistics.median(times)
    print(
        f"\nbookkeeping per keyframe, 50-keyframe window: median {median * 1e6:.0f} us, max {max(times) * 1e6:.0f} us"
    )
    assert median < 5e-3


def test_landmark_storage_grows_and_reuses_rows() -> None:
    """Landmarks added one at a time past the initial buffer, dropped, and added again keep their
    positions; ids are looked up, not assumed dense or sorted."""
    rng = np.random.default_rng(3)
    adj = SlidingWindowBundleAdjuster(INTRINSICS, "fp64", window_options=WindowOptions(max_keyframes=3))
    positions = {}
    for k in range(6):
        ids = rng.choice(10**9, size=150, replace=False)
        X = rng.normal(0.0, 1.0, (150, 3)) + np.array([0.0, 0.0, 10.0])
        adj.add_keyframe(k, np.eye(3), [0.1 * k, 0.0, 0.0], ids, rng.uniform(0, 640, (150, 2)))
        for i, x in zip(ids.tolist(), X, strict=True):
            adj.add_landmark(i, x)
            positions[i] = x
        window = set(adj.landmark_ids.tolist())
        assert len(window) == adj.num_landmarks == 150 * min(k + 1, 3)
        for i in window:
            np.testing.assert_array_equal(adj.landmark(i), positions[i])
    adj.add_landmarks([], np.zeros((0, 3)))  # nothing to add is fine
