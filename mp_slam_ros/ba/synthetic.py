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

from ..io.bal import BalProblem
from ..solver import lie
from .problem import ReprojectionProblem, WindowState

__all__ = [
    "DEFAULT_FIXED_POSES",
    "DEFAULT_INTRINSICS",
    "DrivingBal",
    "SyntheticWindow",
    "bal_depths",
    "bal_residuals",
    "make_driving_bal",
    "make_window",
    "perturb_bal",
    "rms_reprojection_error",
]

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


# =============================================================================================
# Far-initialised BAL problems: a stereo-VO driving sequence turned into BAL form, and perturbed
# real BAL problems. They reproduce what users bring to `mp-slam ba`: a start hundreds of pixels
# (RMS) from the optimum, with no camera held fixed (the 7-DoF gauge is free).
# =============================================================================================

# KITTI odometry, sequence 00 (P0 / P1 of calib.txt): 1241 x 376 rectified greyscale images.
KITTI_IMAGE_SIZE = (1241, 376)
KITTI_FOCAL = 718.856
KITTI_PRINCIPAL_POINT = (607.1928, 185.2157)
KITTI_BASELINE_M = 0.54
KITTI_CAMERA_HEIGHT_M = 1.65

# BAL cameras look down -z with y up: P_bal = FLIP P_cv for a camera frame P_cv with x right,
# y down, z forward (the flip GTSAM's readBal undoes).
_FLIP = np.diag([1.0, -1.0, -1.0])

# Street scene: (fraction of the points, lateral offset range [m], height above ground range [m],
# arc-length window [m] relative to (first camera - 5 m, last camera + ahead)). Lateral offsets
# are taken on a random side of the road. Far points are what stereo triangulates worst.
_STREET_LAYOUT = (
    ("facade", 0.45, (5.5, 12.0), (0.3, 9.0), 60.0),
    ("ground", 0.20, (0.0, 7.0), (0.0, 0.0), 30.0),
    ("object", 0.20, (2.5, 5.5), (0.2, 2.5), 40.0),
    ("far", 0.15, (0.0, 50.0), (0.0, 25.0), 200.0),
)
_FAR_MIN_AHEAD_M = 40.0  # far points start this far ahead of the first camera
_MIN_DEPTH_M, _MAX_DEPTH_M = 2.0, 300.0  # depth range of a tracked feature
_IMAGE_MARGIN_PX = 2.0


@dataclass
class DrivingBal:
    """A far-initialised driving BAL problem (:func:`make_driving_bal`) with its ground truth.

    ``bal`` holds the observations and the initial guess (VO poses, stereo-triangulated points);
    ``truth`` the same observations at the ground-truth cameras and points. ``stats`` holds the
    scalars the benchmark reports (``initial_rms_px`` etc., see :func:`make_driving_bal`).
    """

    bal: BalProblem
    true_cameras: np.ndarray  # (num_cameras, 9) BAL parameters
    true_points: np.ndarray  # (num_points, 3)
    first_camera: np.ndarray  # (num_points,) camera of each point's first (stereo) observation
    pixel_sigma: float
    disparity_sigma: float
    stats: dict[str, float]

    @property
    def truth(self) -> BalProblem:
        return self.bal.with_parameters(self.true_cameras.copy(), self.true_points.copy())

    @property
    def initial_rms_px(self) -> float:
        return float(self.stats["initial_rms_px"])


def bal_residuals(bal: BalProblem, cameras: np.ndarray | None = None, points: np.ndarray | None = None) -> np.ndarray:
    """Reprojection residuals (n, 2) of every observation under the BAL model, in plain numpy.

    P = R(w) X + t, p = -P[:2] / P[2], r = f (1 + k1 |p|^2 + k2 |p|^4) p - observed, with the
    parameters of ``bal`` unless ``cameras`` / ``points`` are given. Points behind their camera
    are evaluated like the others (as the solver's BAL kernel does); a point at depth exactly 0
    gives inf / nan.
    """
    cams = bal.cameras if cameras is None else np.asarray(cameras, dtype=np.float64)
    pts = bal.points if points is None else np.asarray(points, dtype=np.float64)
    ci, pi = bal.camera_index, bal.point_index
    if ci.size == 0:
        return np.zeros((0, 2))
    R = lie.so3_exp(cams[:, :3])
    P = np.einsum("nij,nj->ni", R[ci], pts[pi]) + cams[ci, 3:6]
    with np.errstate(divide="ignore", invalid="ignore"):
        p = -P[:, :2] / P[:, 2:3]
    r2 = np.einsum("ni,ni->n", p, p)
    c = cams[ci]
    d = 1.0 + r2 * (c[:, 7] + c[:, 8] * r2)
    return (c[:, 6] * d)[:, None] * p - bal.observations


def bal_depths(bal: BalProblem, cameras: np.ndarray | None = None, points: np.ndarray | None = None) -> np.ndarray:
    """Per observation, the depth of its point in front of its camera, -P_z (BAL cameras look down
    -z): negative or zero means behind the camera."""
    cams = bal.cameras if cameras is None else np.asarray(cameras, dtype=np.float64)
    pts = bal.points if points is None else np.asarray(points, dtype=np.float64)
    ci, pi = bal.camera_index, bal.point_index
    if ci.size == 0:
        return np.zeros(0)
    R = lie.so3_exp(cams[:, :3])
    return -(np.einsum("nj,nj->n", R[ci][:, 2, :], pts[pi]) + cams[ci, 5])


def rms_reprojection_error(
    bal: BalProblem, cameras: np.ndarray | None = None, points: np.ndarray | None = None
) -> float:
    """sqrt(mean |r|^2) over every observation, in pixels (|r| the 2-D error, as OpenCV reports it).

    The BAL cost is 0.5 num_observations rms^2.
    """
    r = bal_residuals(bal, cameras, points)
    return float(math.sqrt(np.mean(np.einsum("ni,ni->n", r, r)))) if r.size else 0.0


def _bal_cameras(r_wc: np.ndarray, centres: np.ndarray, focal: float) -> np.ndarray:
    """BAL parameters (w, t, f, 0, 0) of cameras with camera-to-world rotations ``r_wc`` (x right,
    y down, z forward) and centres ``centres``."""
    r_bal = np.einsum("ij,nkj->nik", _FLIP, r_wc)  # FLIP R_wc^T
    cams = np.zeros((r_wc.shape[0], 9))
    cams[:, :3] = lie.so3_log(np.ascontiguousarray(r_bal))
    cams[:, 3:6] = -np.einsum("nij,nj->ni", r_bal, centres)
    cams[:, 6] = focal
    return cams


def _street_path(
    n: int, step_m: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The ground-truth drive: camera-to-world rotations (n, 3, 3) and centres (n, 3) of the left
    camera (world = first camera; x right, y down, z forward), the cameras' arc lengths (n,), and
    the road centre line as (arc length, position (k, 3), heading (k,)) on a fine grid that runs
    from 30 m behind the first camera to the far-point range beyond the last.

    Steps are ``step_m`` +- 10 %, the heading turns gently (two random sinusoids in arc length,
    periods 150 m and 35 m, amplitudes 0.25 and 0.06 rad), with a little pitch, roll and vertical motion from the
    suspension.
    """
    steps = step_m * np.clip(1.0 + 0.1 * rng.standard_normal(max(n - 1, 0)), 0.7, 1.3)
    s_cam = np.concatenate([[0.0], np.cumsum(steps)])
    phase = rng.uniform(0.0, 2.0 * np.pi, 5)
    amp1 = 0.25 * rng.choice([-1.0, 1.0])

    def heading(s: np.ndarray) -> np.ndarray:
        h = amp1 * np.sin(2 * np.pi * s / 150.0 + phase[0]) + 0.06 * np.sin(2 * np.pi * s / 35.0 + phase[1])
        h0 = amp1 * np.sin(phase[0]) + 0.06 * np.sin(phase[1])
        return h - h0

    ds = 0.1
    s_grid = np.arange(-30.0, s_cam[-1] + _STREET_LAYOUT[-1][4] + 20.0, ds)
    yaw_grid = heading(s_grid)
    fwd = np.stack([np.sin(yaw_grid), np.zeros_like(yaw_grid), np.cos(yaw_grid)], axis=1)
    pos = np.cumsum(fwd * ds, axis=0)
    pos -= np.array([np.interp(0.0, s_grid, pos[:, j]) for j in range(3)])  # first camera at the origin
    centres = np.stack([np.interp(s_cam, s_grid, pos[:, j]) for j in range(3)], axis=1)
    yaw = heading(s_cam)
    pitch = 0.01 * (np.sin(0.3 * s_cam + phase[2]) - np.sin(phase[2]))
    roll = 0.005 * (np.sin(0.5 * s_cam + phase[3]) - np.sin(phase[3]))
    centres[:, 1] += 0.02 * (np.sin(1.3 * s_cam + phase[4]) - np.sin(phase[4]))
    r_wc = np.einsum("kij,kjl,klm->kim", _rot_y(yaw), _rot_x(pitch), _rot_z(roll))
    return np.ascontiguousarray(r_wc), centres, s_cam, (s_grid, pos, yaw_grid)


def _street_points(
    count: int, s_cam: np.ndarray, grid: tuple[np.ndarray, np.ndarray, np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """``count`` candidate landmarks (world frame) along the street (_STREET_LAYOUT)."""
    s_grid, pos, yaw_grid = grid
    fractions = np.array([f for _, f, *_ in _STREET_LAYOUT])
    kind = rng.choice(len(_STREET_LAYOUT), size=count, p=fractions / fractions.sum())
    s = np.empty(count)
    lateral = np.empty(count)
    height = np.empty(count)
    for k, (name, _, (lat_lo, lat_hi), (h_lo, h_hi), ahead) in enumerate(_STREET_LAYOUT):
        sel = kind == k
        m = int(sel.sum())
        lo = s_cam[0] + (_FAR_MIN_AHEAD_M if name == "far" else -5.0)
        s[sel] = rng.uniform(lo, s_cam[-1] + ahead, m)
        mag = rng.uniform(lat_lo, lat_hi, m)
        # the ground and far ranges are symmetric about the road; the others are on one side
        lateral[sel] = rng.uniform(-lat_hi, lat_hi, m) if name in ("ground", "far") else mag * rng.choice([-1, 1], m)
        height[sel] = rng.uniform(h_lo, h_hi, m)
    centre = np.stack([np.interp(s, s_grid, pos[:, j]) for j in range(3)], axis=1)
    yaw = np.interp(s, s_grid, yaw_grid)
    right = np.stack([np.cos(yaw), np.zeros_like(yaw), -np.sin(yaw)], axis=1)
    X = centre + lateral[:, None] * right
    X[:, 1] += KITTI_CAMERA_HEIGHT_M - height  # y down: the ground is camera height below the cameras
    return X


def make_driving_bal(
    num_cameras: int = 40,
    num_points: int = 3000,
    seed: int = 0,
    *,
    step_m: float = 1.0,
    pixel_sigma: float = 0.25,
    disparity_sigma: float = 1.0,
    disparity_outlier_fraction: float = 0.15,
    disparity_outlier_px: tuple[float, float] = (5.0, 60.0),
    min_disparity_px: float = 1.0,
    vo_rotation_sigma_rad: float = 0.003,
    vo_translation_sigma_m: float = 0.03,
    mean_track_length: float = 5.0,
    max_track_length: int = 15,
    slow_track_depth_m: float | None = 20.0,
    max_initial_error_px: float | None = None,
    focal: float = KITTI_FOCAL,
    baseline_m: float = KITTI_BASELINE_M,
    image_size: tuple[int, int] = KITTI_IMAGE_SIZE,
    principal_point: tuple[float, float] = KITTI_PRINCIPAL_POINT,
    min_initial_rms_px: float | None = 100.0,
) -> DrivingBal:
    """A stereo visual-odometry problem from a (synthetic, KITTI-like) drive, in BAL form.

    What a VO front end exports, left camera only: a car drives ``num_cameras`` frames about
    ``step_m`` apart, mostly forward with gentle turns, past facades, parked objects, the road
    surface and far structure (``_STREET_LAYOUT``). Every landmark is a feature track over
    consecutive frames (length 1 + Geometric, mean ``mean_track_length`` for points nearer than
    ``slow_track_depth_m`` and longer in proportion to depth beyond, at most ``max_track_length``,
    cut where the point leaves the image), its observations the true projections plus Gaussian
    noise ``pixel_sigma`` [px]. The initial guess is what the VO knew:

    * cameras: the VO's own poses, chained from per-frame relative motions each perturbed by
      ``vo_rotation_sigma_rad`` / ``vo_translation_sigma_m`` per axis, so they drift (camera 0
      exact); f from the calibration, k1 = k2 = 0 (also the truth);
    * points: triangulated from their FIRST stereo observation (left pixel = that observation,
      disparity = truth + N(0, ``disparity_sigma``); a ``disparity_outlier_fraction`` of
      mismatches off by ``disparity_outlier_px`` either way; features whose disparity comes out
      below ``min_disparity_px`` are not triangulated, as a VO front end drops them) and placed
      with the VO pose of that frame. Far points come out badly off in depth, and
      points put too near end up behind later cameras.

    Observations behind their camera at the initial guess are removed (a point keeps at least
    its first observation); with ``max_initial_error_px``, so are those whose initial error
    exceeds it (a VO's outlier gate; off by default: the wild errors of points put just in front
    of a later camera are what makes these starts hard). BAL conventions as
    :mod:`mp_slam_ros.io.bal`: principal point at 0, x right, y up (``(u - cx, cy - v)``),
    cameras looking down -z.

    ``stats``: initial_rms_px (sqrt of the mean squared 2-D error over every observation),
    initial median / p90 / max error, truth_rms_px, observations, removed_behind,
    removed_gated, single_view_points, mean_track_length, depth_off_25pct_points (initial depth off by more
    than 25 %), disparity_outliers,
    drift_m / drift_deg (last camera's VO error), initial_cost (0.5 sum |r|^2). Raises
    RuntimeError if ``min_initial_rms_px`` is given and not reached (the problem would not be
    "far-initialised"); deterministic for a seed.
    """
    n, m = int(num_cameras), int(num_points)
    if n < 2 or m < 1:
        raise ValueError(f"need at least 2 cameras and 1 point, got {num_cameras} and {num_points}")
    if mean_track_length <= 1.0 or max_track_length < 2:
        raise ValueError("mean_track_length must exceed 1 and max_track_length be at least 2")
    width, height = (int(v) for v in image_size)
    cx, cy = (float(v) for v in principal_point)
    fb = focal * baseline_m
    rng = np.random.default_rng(seed)

    r_wc, centres, s_cam, grid = _street_path(n, step_m, rng)

    # --- feature tracks by rejection: candidates visible in >= 2 consecutive frames, the first of
    # them also in the right image (stereo triangulation needs it)
    p_geom = 1.0 / (mean_track_length - 1.0)
    chosen_X, chosen_start, chosen_len, chosen_disp, chosen_mismatch = [], [], [], [], []
    kept = 0
    for _ in range(100):
        c = 3 * (m - kept) + 64
        X = _street_points(c, s_cam, grid, rng)
        pc = np.einsum("kji,ckj->cki", r_wc, X[:, None, :] - centres[None, :, :])  # (c, n, 3) camera frame
        z = pc[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = focal * pc[..., 0] / z + cx
            v = focal * pc[..., 1] / z + cy
        vis = (
            (z > _MIN_DEPTH_M)
            & (z < _MAX_DEPTH_M)
            & (u >= _IMAGE_MARGIN_PX)
            & (u < width - _IMAGE_MARGIN_PX)
            & (v >= _IMAGE_MARGIN_PX)
            & (v < height - _IMAGE_MARGIN_PX)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            stereo = vis & (u - fb / z >= _IMAGE_MARGIN_PX)
        can_start = np.zeros_like(vis)
        can_start[:, :-1] = stereo[:, :-1] & vis[:, 1:]
        ok = can_start.any(axis=1)
        # first frame uniform among the frames that can start a track
        keys = np.where(can_start, rng.random(can_start.shape), -1.0)
        start = np.argmax(keys, axis=1)
        z0 = z[np.arange(c), start]
        # a feature is lost with probability p_geom per frame, less often beyond slow_track_depth_m
        # (in proportion to depth): far features move slowly in the image and keep their look
        with np.errstate(divide="ignore", invalid="ignore"):
            p_lost = p_geom * np.clip(slow_track_depth_m / z0, 0.0, 1.0) if slow_track_depth_m else np.full(c, p_geom)
        want = np.minimum(1 + rng.geometric(np.where(ok, p_lost, 0.5)), max_track_length)
        length = np.ones(c, dtype=np.int64)
        alive = ok.copy()
        for j in range(1, max_track_length):
            k = np.minimum(start + j, n - 1)
            alive &= (start + j < n) & vis[np.arange(c), k] & (j < want)
            length += alive
        # the stereo matcher's disparity at the first frame: Gaussian noise plus some mismatches; a
        # VO front end does not triangulate a feature whose disparity is below its minimum
        with np.errstate(divide="ignore", invalid="ignore"):
            disp = fb / z0 + rng.normal(0.0, disparity_sigma, c)
        mismatch = rng.random(c) < disparity_outlier_fraction
        lo, hi = disparity_outlier_px
        disp += np.where(mismatch, rng.uniform(lo, hi, c) * rng.choice([-1.0, 1.0], c), 0.0)
        ok &= disp >= min_disparity_px
        take = np.nonzero(ok)[0][: m - kept]
        chosen_X.append(X[take])
        chosen_start.append(start[take])
        chosen_len.append(length[take])
        chosen_disp.append(disp[take])
        chosen_mismatch.append(mismatch[take])
        kept += take.size
        if kept == m:
            break
    else:
        raise RuntimeError(f"could not place {m} visible tracks")
    points = np.concatenate(chosen_X)
    first = np.concatenate(chosen_start).astype(np.int64)
    length = np.concatenate(chosen_len)
    disparity = np.concatenate(chosen_disp)
    outlier = np.concatenate(chosen_mismatch)

    point_index = np.repeat(np.arange(m, dtype=np.int64), length)
    offset = np.arange(point_index.size) - np.repeat(np.cumsum(length) - length, length)
    camera_index = first[point_index] + offset
    # BAL files list observations by camera, then point (as the real ones do)
    order = np.lexsort((point_index, camera_index))
    camera_index, point_index = camera_index[order], point_index[order]
    # every consecutive frame pair must share points, or the problem falls apart into pieces with
    # separate gauges (a VO exporter would have lost tracking there)
    spans = np.zeros(n - 1, dtype=np.int64)
    np.add.at(spans, np.repeat(first, length - 1) + np.concatenate([np.arange(k - 1) for k in length]), 1)
    if spans.min() < 5:
        raise RuntimeError(f"frames {int(np.argmin(spans))}-{int(np.argmin(spans)) + 1} share fewer than 5 tracks")

    true_cameras = _bal_cameras(r_wc, centres, focal)
    truth = BalProblem(camera_index, point_index, np.zeros((camera_index.size, 2)), true_cameras, points)
    observations = bal_residuals(truth) + rng.normal(0.0, pixel_sigma, (camera_index.size, 2))

    # --- the VO's drifting poses: true relative motions, each perturbed, chained from camera 0
    r_rel = np.einsum("kji,kjl->kil", r_wc[:-1], r_wc[1:])
    t_rel = np.einsum("kji,kj->ki", r_wc[:-1], centres[1:] - centres[:-1])
    r_rel = np.einsum("kij,kjl->kil", r_rel, lie.so3_exp(rng.normal(0.0, vo_rotation_sigma_rad, (n - 1, 3))))
    t_rel = t_rel + rng.normal(0.0, vo_translation_sigma_m, (n - 1, 3))
    r_est = np.empty_like(r_wc)
    c_est = np.empty_like(centres)
    r_est[0], c_est[0] = r_wc[0], centres[0]
    for k in range(1, n):
        c_est[k] = c_est[k - 1] + r_est[k - 1] @ t_rel[k - 1]
        r_est[k] = r_est[k - 1] @ r_rel[k - 1]
    init_cameras = _bal_cameras(r_est, c_est, focal)

    # --- stereo triangulation of the first observation with the VO pose of that frame
    first_obs = np.zeros((m, 2))
    is_first = camera_index == first[point_index]
    first_obs[point_index[is_first]] = observations[is_first]
    z_true = np.einsum("ki,ki->k", r_wc[first][:, :, 2], points - centres[first])  # R_wc^T (X - c), z row
    depth = fb / disparity
    # BAL pixel (x right, y up, principal point 0) back to the camera frame (y down)
    pc0 = np.stack([first_obs[:, 0] / focal * depth, -first_obs[:, 1] / focal * depth, depth], axis=1)
    init_points = np.einsum("kij,kj->ki", r_est[first], pc0) + c_est[first]

    bal = BalProblem(camera_index, point_index, observations, init_cameras, init_points)
    in_front = bal_depths(bal) > 0.0
    removed = int(np.count_nonzero(~in_front))
    keep = in_front
    gated = 0
    if max_initial_error_px is not None:
        with np.errstate(invalid="ignore"):
            wild = ~(np.linalg.norm(bal_residuals(bal), axis=1) <= max_initial_error_px) & in_front
        wild &= ~is_first  # the stereo observation itself is always kept
        gated = int(np.count_nonzero(wild))
        keep = in_front & ~wild
    bal = BalProblem(camera_index[keep], point_index[keep], observations[keep], init_cameras, init_points)

    err = np.linalg.norm(bal_residuals(bal), axis=1)
    truth_err = bal_residuals(bal, true_cameras, points)
    views = np.bincount(bal.point_index, minlength=m)
    drift = r_wc[-1].T @ r_est[-1]
    stats = {
        "initial_rms_px": float(math.sqrt(np.mean(err**2))),
        "initial_median_px": float(np.median(err)),
        "initial_p90_px": float(np.percentile(err, 90)),
        "initial_max_px": float(err.max()),
        "initial_cost": float(0.5 * np.sum(err**2)),
        "truth_rms_px": float(math.sqrt(np.mean(np.einsum("ni,ni->n", truth_err, truth_err)))),
        "truth_cost": float(0.5 * np.sum(truth_err**2)),
        "observations": int(bal.num_observations),
        "removed_behind": removed,
        "removed_gated": gated,
        "single_view_points": int(np.count_nonzero(views == 1)),
        "mean_track_length": float(views.mean()),
        "depth_off_25pct_points": int(np.count_nonzero(np.abs(depth / z_true - 1.0) > 0.25)),
        "disparity_outliers": int(outlier.sum()),
        "drift_m": float(np.linalg.norm(c_est[-1] - centres[-1])),
        "drift_deg": float(np.degrees(np.linalg.norm(lie.so3_log(drift[None])))),
    }
    if min_initial_rms_px is not None and stats["initial_rms_px"] <= min_initial_rms_px:
        raise RuntimeError(
            f"initial RMS {stats['initial_rms_px']:.1f} px is not above {min_initial_rms_px:g} px: "
            "raise the disparity / VO noise (or pass min_initial_rms_px=None)"
        )
    return DrivingBal(
        bal=bal,
        true_cameras=true_cameras,
        true_points=points,
        first_camera=first,
        pixel_sigma=float(pixel_sigma),
        disparity_sigma=float(disparity_sigma),
        stats=stats,
    )


def perturb_bal(
    bal: BalProblem,
    target_rms_px: float,
    seed: int,
    *,
    rotation_sigma_rad: float = 0.01,
    centre_sigma: float = 0.01,
    depth_sigma: float = 0.05,
    lateral_sigma: float = 0.005,
) -> BalProblem:
    """``bal`` with its cameras and points moved until the RMS reprojection error (as
    :func:`rms_reprojection_error`) exceeds ``target_rms_px``; observations, f, k1, k2 unchanged.

    One random direction per seed, scaled by a factor s found by doubling then bisection (to
    0.1 % in s), so the result lands just above the target (further above only where the RMS
    jumps with s, a point crossing a camera's plane): rotations R <- Exp(s dw) R with dw ~
    N(0, ``rotation_sigma_rad``^2) per axis; camera centres moved by s N(0, ``centre_sigma``^2)
    per axis times the scene scale (the median depth of the observations); every point scaled
    along the ray from the centre of its first observing camera by exp(s N(0, ``depth_sigma``^2))
    (depth errors, what triangulation gets most wrong) and moved sideways by s N(0,
    ``lateral_sigma``^2) times the scene scale. A depth factor is positive, so no point crosses
    that first camera; other cameras may end up seeing a point from behind (count them with
    :func:`bal_depths`). A problem already above the target is returned unchanged (a copy).
    Raises ValueError if no scale up to 2^40 reaches the target.
    """
    target = float(target_rms_px)
    if not target > 0.0:
        raise ValueError(f"target_rms_px must be positive, got {target_rms_px}")
    if bal.num_observations == 0:
        raise ValueError("the problem has no observations")
    cams0 = bal.cameras.copy()
    pts0 = bal.points.copy()
    if rms_reprojection_error(bal) > target:
        return bal.with_parameters(cams0, pts0)

    R0 = lie.so3_exp(cams0[:, :3])
    centre0 = -np.einsum("nji,nj->ni", R0, cams0[:, 3:6])  # C = -R^T t
    scale = float(np.median(np.abs(bal_depths(bal))))
    if not (math.isfinite(scale) and scale > 0.0):
        scale = 1.0
    rng = np.random.default_rng(seed)
    dw = rng.normal(0.0, rotation_sigma_rad, (bal.num_cameras, 3))
    dc = rng.normal(0.0, centre_sigma * scale, (bal.num_cameras, 3))
    log_depth = rng.normal(0.0, depth_sigma, bal.num_points)
    dlat = rng.normal(0.0, lateral_sigma * scale, (bal.num_points, 3))
    # first observing camera of every point (a point nobody observes keeps a zero ray)
    first_cam = np.full(bal.num_points, -1, dtype=np.int64)
    order = np.argsort(bal.point_index, kind="stable")
    pts_sorted = bal.point_index[order]
    is_first = np.ones(pts_sorted.size, dtype=bool)
    is_first[1:] = pts_sorted[1:] != pts_sorted[:-1]
    first_cam[pts_sorted[is_first]] = bal.camera_index[order[is_first]]
    ray_origin = np.where((first_cam >= 0)[:, None], centre0[np.maximum(first_cam, 0)], pts0)

    def at(s: float) -> tuple[np.ndarray, np.ndarray]:
        R = np.einsum("nij,njk->nik", lie.so3_exp(s * dw), R0)
        cams = cams0.copy()
        cams[:, :3] = lie.so3_log(R)
        cams[:, 3:6] = -np.einsum("nij,nj->ni", R, centre0 + s * dc)
        pts = ray_origin + (pts0 - ray_origin) * np.exp(s * log_depth)[:, None] + s * dlat
        return cams, pts

    def rms(s: float) -> float:
        value = rms_reprojection_error(bal, *at(s))
        return value if math.isfinite(value) else math.inf

    lo, hi = 0.0, 1.0
    while rms(hi) <= target:
        lo, hi = hi, 2.0 * hi
        if hi > 2.0**40:
            raise ValueError(f"no perturbation reached an RMS of {target:g} px")
    # The RMS is not monotonic in s in general; bisection keeps `hi` above the target throughout.
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if rms(mid) > target:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-3 * hi:
            break
    cams, pts = at(hi)
    return BalProblem(bal.camera_index, bal.point_index, bal.observations, cams, pts, bal.source)
