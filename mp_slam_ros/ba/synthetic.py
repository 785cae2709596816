"""Synthetic visual-odometry windows with ground truth, for :class:`~mp_slam_ros.ba.problem.ReprojectionProblem`.

A camera (z forward, x right, y down) moves forward at 1 m/s, sampled as keyframes at 10 Hz
(0.1 m apart), with gentle yaw turns, a little pitch and roll, and vertical bobbing. Every
point is a feature track: it is created at a pixel and depth (2-20 m, log-uniform) of the
middle keyframe of its track and observed by a run of consecutive keyframes, and only kept if
it projects inside the image, with positive depth, in every keyframe of the run. Track lengths
are ``observations_per_point`` +- 25 % (at least 2, at most the window); tracks lie wholly in
the window, with their first keyframes spread so that the end keyframes see about as many
points as the middle ones. Observations get
Gaussian pixel noise; the initial guess perturbs poses (right retraction T Exp(w, v), as
:func:`mp_slam_ros.solver.lie.retract`) and points, except the poses that hold the gauge, which
stay at the ground truth.

With the defaults the feature budget is ~55 observations per keyframe, so a 50-keyframe window
has 230 points, ~12 observations each, ~2,760 observations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..solver import lie
from .problem import ReprojectionProblem, WindowState

__all__ = ["DEFAULT_FIXED_POSES", "DEFAULT_INTRINSICS", "SyntheticWindow", "make_window"]

DEFAULT_INTRINSICS = (458.0, 457.0, 320.0, 240.0)  # fx, fy, cx, cy (EuRoC-like)
DEFAULT_FIXED_POSES = (0, 1)  # two poses fix the 7-DoF gauge of a monocular window, scale included
OBSERVATIONS_PER_KEYFRAME = 55  # feature budget that sets the default number of points
KEYFRAME_RATE_HZ = 10.0
SPEED_M_S = 1.0
MIN_DEPTH_M, MAX_DEPTH_M = 2.0, 20.0
MIN_TRACK_DEPTH_M = 0.5  # a point must stay at least this far in front of every camera of its track


@dataclass
class SyntheticWindow:
    """A VO window: ground truth, the noisy initial guess, and the pixel observations.

    Observation k is pixel ``observations[k]`` (u, v) of point ``point_index[k]`` in keyframe
    ``pose_index[k]``, sorted by keyframe then point. Poses are world_T_camera (R, t).
    """

    true_rotations: np.ndarray  # (n, 3, 3)
    true_translations: np.ndarray  # (n, 3)
    true_points: np.ndarray  # (m, 3)
    initial: WindowState  # noisy guess; poses DEFAULT_FIXED_POSES at the truth
    pose_index: np.ndarray  # (k,) int64
    point_index: np.ndarray  # (k,) int64
    observations: np.ndarray  # (k, 2) noisy pixels
    intrinsics: tuple[float, float, float, float]
    image_size: tuple[int, int]  # (width, height)
    pixel_sigma: float

    @property
    def num_keyframes(self) -> int:
        return int(self.true_rotations.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.true_points.shape[0])

    @property
    def num_observations(self) -> int:
        return int(self.pose_index.shape[0])

    @property
    def truth(self) -> WindowState:
        return WindowState(self.true_rotations.copy(), self.true_translations.copy(), self.true_points.copy())

    def project(self, state: WindowState | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Noise-free pixels (k, 2) and camera-frame depths (k,) of every observation at `state`
        (the ground truth by default)."""
        s = self.truth if state is None else state
        pc = np.einsum(
            "kji,kj->ki", s.rotations[self.pose_index], s.points[self.point_index] - s.translations[self.pose_index]
        )
        return _pixels(pc, self.intrinsics), pc[:, 2]

    def problem(
        self,
        loss: str = "trivial",
        fixed_poses: Sequence[int] = DEFAULT_FIXED_POSES,
        loss_scale: float = 1.0,
    ) -> tuple[ReprojectionProblem, WindowState]:
        """The window as a :class:`ReprojectionProblem` and its initial state (a copy of
        ``initial`` with the poses in `fixed_poses` set to the ground truth).

        With the default gauge (keyframes 0 and 1) the scale rests on their 0.1 m baseline, so
        the translations are only determined to about pose_sigma_m by the pixel noise (Cramer-Rao
        bound ~0.05 m mean at 20 keyframes, ~0.08 m at 50, with the default noise); holding the
        first and last keyframes, ``fixed_poses=(0, num_keyframes - 1)``, brings it to ~0.005-0.01 m.
        """
        fixed = tuple(int(k) for k in fixed_poses)
        problem = ReprojectionProblem(
            self.pose_index,
            self.point_index,
            self.observations,
            self.intrinsics,
            self.num_keyframes,
            self.num_points,
            fixed_poses=fixed,
            loss=loss,
            loss_scale=loss_scale,
        )
        rot = self.initial.rotations.copy()
        trans = self.initial.translations.copy()
        rot[list(fixed)] = self.true_rotations[list(fixed)]
        trans[list(fixed)] = self.true_translations[list(fixed)]
        return problem, WindowState(rot, trans, self.initial.points.copy())

    def pose_errors(self, state: WindowState) -> tuple[np.ndarray, np.ndarray]:
        """Per keyframe: rotation error |Log(R_true^T R)| (rad) and translation error |t - t_true| (m).

        No alignment: the gauge poses are held at the ground truth.
        """
        rel = np.einsum("kji,kjl->kil", self.true_rotations, np.asarray(state.rotations, dtype=np.float64))
        rot_err = np.linalg.norm(lie.so3_log(np.ascontiguousarray(rel)), axis=1)
        trans_err = np.linalg.norm(np.asarray(state.translations, dtype=np.float64) - self.true_translations, axis=1)
        return rot_err, trans_err

    def point_errors(self, state: WindowState) -> np.ndarray:
        """Per point: |X - X_true| (m)."""
        return np.linalg.norm(np.asarray(state.points, dtype=np.float64) - self.true_points, axis=1)


def _pixels(pc: np.ndarray, intrinsics: Sequence[float]) -> np.ndarray:
    fx, fy, cx, cy = intrinsics
    return np.stack([fx * pc[:, 0] / pc[:, 2] + cx, fy * pc[:, 1] / pc[:, 2] + cy], axis=1)


def _rot_x(a: np.ndarray) -> np.ndarray:
    return lie.so3_exp(np.stack([a, np.zeros_like(a), np.zeros_like(a)], axis=1))


def _rot_y(a: np.ndarray) -> np.ndarray:
    return lie.so3_exp(np.stack([np.zeros_like(a), a, np.zeros_like(a)], axis=1))


def _rot_z(a: np.ndarray) -> np.ndarray:
    return lie.so3_exp(np.stack([np.zeros_like(a), np.zeros_like(a), a], axis=1))


def _trajectory(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """world_T_camera of n keyframes; the first camera is the world frame (x right, y down, z forward)."""
    dt = 1.0 / KEYFRAME_RATE_HZ
    phase = rng.uniform(0.0, 2.0 * np.pi, 5)
    # integrate the heading on a fine grid so the positions follow the yaw smoothly
    sub = 10
    tf = np.arange(n * sub) * (dt / sub)
    yaw_f = 0.25 * np.sin(0.4 * tf + phase[0]) + 0.1 * np.sin(1.1 * tf + phase[1])
    yaw_f -= yaw_f[0]
    step = SPEED_M_S * (dt / sub) * np.stack([np.sin(yaw_f), np.zeros_like(yaw_f), np.cos(yaw_f)], axis=1)
    pos_f = np.concatenate([np.zeros((1, 3)), np.cumsum(step[:-1], axis=0)])
    t = tf[::sub]
    yaw = yaw_f[::sub]
    trans = pos_f[::sub].copy()
    bob = 0.03 * (np.sin(2.0 * np.pi * 0.8 * t + phase[2]) - np.sin(phase[2]))
    trans[:, 1] += bob
    pitch = 0.03 * (np.sin(0.7 * t + phase[3]) - np.sin(phase[3]))
    roll = 0.02 * (np.sin(0.9 * t + phase[4]) - np.sin(phase[4]))
    rot = np.einsum("kij,kjl,klm->kim", _rot_y(yaw), _rot_x(pitch), _rot_z(roll))
    return np.ascontiguousarray(rot), np.ascontiguousarray(trans)


def make_window(
    num_keyframes: int = 50,
    num_points: int | None = None,
    observations_per_point: int = 12,
    pixel_sigma: float = 0.5,
    pose_sigma_rad: float = 0.01,
    pose_sigma_m: float = 0.05,
    point_sigma_m: float = 0.05,
    image_size: tuple[int, int] = (640, 480),
    intrinsics: Sequence[float] = DEFAULT_INTRINSICS,
    seed: int = 0,
) -> SyntheticWindow:
    """A synthetic VO window (module doc), deterministic for a seed.

    Args:
        num_keyframes: poses in the window (>= 2; 10-100 is the intended range).
        num_points: feature tracks; default ceil(55 * num_keyframes / observations_per_point).
        observations_per_point: mean track length (consecutive keyframes).
        pixel_sigma: std of the Gaussian pixel noise on u and v (px).
        pose_sigma_rad, pose_sigma_m: std per axis of the initial-guess perturbation (w, v) of
            the poses other than DEFAULT_FIXED_POSES.
        point_sigma_m: std per axis of the initial-guess perturbation of the points.
        image_size: (width, height); observations are of points projecting inside it.
        intrinsics: (fx, fy, cx, cy).
    """
    n = int(num_keyframes)
    if n < 2:
        raise ValueError(f"num_keyframes must be at least 2, got {num_keyframes}")
    obs_per_point = int(observations_per_point)
    if obs_per_point < 2:
        raise ValueError(f"observations_per_point must be at least 2, got {observations_per_point}")
    m = math.ceil(OBSERVATIONS_PER_KEYFRAME * n / obs_per_point) if num_points is None else int(num_points)
    if m < 1:
        raise ValueError(f"num_points must be positive, got {num_points}")
    intr = tuple(float(v) for v in intrinsics)
    if len(intr) != 4:
        raise ValueError(f"intrinsics must be (fx, fy, cx, cy), got {intrinsics}")
    fx, fy, cx, cy = intr
    width, height = (int(v) for v in image_size)

    rng = np.random.default_rng(seed)
    rot, trans = _trajectory(n, rng)

    # Feature tracks by rejection: draw (length, first keyframe, pixel, depth) in bulk, keep the
    # candidates visible in every keyframe of their run, until m are kept.
    lengths, starts, pts = [], [], []
    kept = 0
    for _ in range(100):
        c = 4 * (m - kept) + 16
        length = np.clip(np.rint(obs_per_point * rng.uniform(0.75, 1.25, c)), 2, n).astype(np.int64)
        # first keyframe uniform over a range that overhangs the window by half a track at each
        # end, then moved inside: the end keyframes see as many tracks as the middle ones (within
        # +-50 %) instead of a ramp down to one, and every track keeps its whole length
        half = length // 2
        start = np.floor(rng.uniform(0.0, 1.0, c) * (n - length + 1 + 2 * half)).astype(np.int64) - half
        start = np.clip(start, 0, n - length)
        anchor = start + length // 2
        u = rng.uniform(0.0, width, c)
        v = rng.uniform(0.0, height, c)
        depth = np.exp(rng.uniform(math.log(MIN_DEPTH_M), math.log(MAX_DEPTH_M), c))
        pc = np.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], axis=1)
        X = np.einsum("kij,kj->ki", rot[anchor], pc) + trans[anchor]
        ok = np.ones(c, dtype=bool)
        for j in range(int(length.max())):
            active = j < length
            k = np.minimum(start + j, n - 1)
            q = np.einsum("kji,kj->ki", rot[k], X - trans[k])
            with np.errstate(divide="ignore", invalid="ignore"):
                uv = _pixels(q, intr)
            inside = (
                (q[:, 2] > MIN_TRACK_DEPTH_M)
                & (uv[:, 0] >= 0.0)
                & (uv[:, 0] < width)
                & (uv[:, 1] >= 0.0)
                & (uv[:, 1] < height)
            )
            ok &= inside | ~active
        take = np.nonzero(ok)[0][: m - kept]
        lengths.append(length[take])
        starts.append(start[take])
        pts.append(X[take])
        kept += take.size
        if kept == m:
            break
    else:
        raise RuntimeError(f"could not place {m} visible tracks")
    length = np.concatenate(lengths)
    start = np.concatenate(starts)
    points = np.concatenate(pts)

    point_index = np.repeat(np.arange(m, dtype=np.int64), length)
    offset = np.arange(point_index.size) - np.repeat(np.cumsum(length) - length, length)
    pose_index = (start[point_index] + offset).astype(np.int64)
    order = np.lexsort((point_index, pose_index))
    pose_index, point_index = pose_index[order], point_index[order]
    q = np.einsum("kji,kj->ki", rot[pose_index], points[point_index] - trans[pose_index])
    observations = _pixels(q, intr) + rng.normal(0.0, pixel_sigma, (pose_index.size, 2))

    noise = np.concatenate([rng.normal(0.0, pose_sigma_rad, (n, 3)), rng.normal(0.0, pose_sigma_m, (n, 3))], axis=1)
    noise[[k for k in DEFAULT_FIXED_POSES if k < n]] = 0.0
    r0, t0 = lie.retract(rot, trans, noise)
    p0 = points + rng.normal(0.0, point_sigma_m, points.shape)

    return SyntheticWindow(
        true_rotations=rot,
        true_translations=trans,
        true_points=points,
        initial=WindowState(r0, t0, p0),
        pose_index=pose_index,
        point_index=point_index,
        observations=np.ascontiguousarray(observations),
        intrinsics=intr,  # type: ignore[arg-type]
        image_size=(width, height),
        pixel_sigma=float(pixel_sigma),
    )
