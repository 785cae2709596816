"""The ROS-free visual-odometry pipeline: frames in, poses and keyframes out.

:class:`VisualOdometry` is what both shells run, the rclpy node (:mod:`mp_slam_ros.ros.vo_node`)
and the offline replay (``mp-slam replay``). Per frame:

1. **rectify** the stereo pair (or undistort the colour + depth images) to an ideal pinhole
   camera (:mod:`.rectify`);
2. **track** the features of the previous frame with pyramidal KLT and a forward-backward check;
3. **PnP-RANSAC** on the tracked features that have a 3D landmark, started from a
   constant-velocity prediction, gives the frame's pose; RANSAC outliers stop being tracked;
4. decide whether the frame is a **keyframe**: too few of the last keyframe's features still
   tracked, enough parallax (median feature displacement since the last keyframe), or too long
   since the last one;
5. at a keyframe: **detect** new corners in the emptier grid cells, **stereo match** (or look up
   depth for) every feature, **triangulate** the new ones, add the keyframe to the
   :class:`~mp_slam_ros.ba.window.SlidingWindowBundleAdjuster` (left and right observations; an
   RGB-D depth becomes a virtual right observation, as in ORB-SLAM2) and **optimise** the window
   with the deployment's :class:`~mp_slam_ros.solver.precision.PrecisionConfig`; features whose
   landmark reprojects badly after BA are dropped; ORB descriptors are computed at the keyframe's
   features and a :class:`~mp_slam_ros.vision.types.Keyframe` is emitted.

Frames: poses are expressed in the rectified left camera frame internally and reported as
``base_link`` in ``odom`` through the camera extrinsic (``T_base_camera``, identity by default);
``odom`` is where ``base_link`` was at the first tracked frame.

**Tracking loss.** When too few features survive tracking, or PnP finds too few inliers (a blank
or blurred frame, a covered lens), the frame is reported ``lost`` with a constant-velocity pose
(the bridge; after ``max_bridge_time`` the pose is held) and a warning is logged once per loss.
Every following frame tries to re-initialise from a single stereo pair / depth image; when it
succeeds, a new window is started at the bridged pose and the result says ``reinitialized`` with a
new ``segment`` number, so the trajectory keeps going and consumers (loop closure) can tell
where the odometry chain was broken. Nothing from before the loss is corrupted: the old window is
dropped, not optimised with the new features.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ..ba.window import SlidingWindowBundleAdjuster, WindowOptions
from ..solver import lie
from ..solver.jit import clock, thread_compile_seconds
from ..solver.lm import SolverOptions, SolverSummary
from ..solver.precision import PrecisionConfig, load_precision
from .features import (
    FeatureOptions,
    depth_lookup,
    detect_features,
    orb_descriptors,
    stereo_match,
    track_features,
)
from .rectify import Rectifier
from .types import MODES, Frame, Keyframe, PinholeCamera

__all__ = ["STATUSES", "FrameResult", "VOConfig", "VOStatistics", "VisualOdometry"]

log = logging.getLogger(__name__)

#: Per-frame tracking states reported in :class:`FrameResult`.
STATUSES = ("initializing", "tracking", "lost", "reinitialized")


@dataclass(frozen=True)
class VOConfig:
    """Every parameter of the visual odometry, flat, so it maps one to one onto ROS parameters.

    Units are pixels, metres and seconds unless the name says otherwise. The feature options are
    documented in :class:`~mp_slam_ros.vision.features.FeatureOptions`, the window options in
    :class:`~mp_slam_ros.ba.window.WindowOptions`.

    Attributes:
        mode: "stereo" or "rgbd".
        precision: a precision preset name (fp64, fp32, mixed, fp16) or a precision YAML path.
        linear_solver: the window BA's linear solver: "cgnr" (the recipe) or "schur".
        window_size: keyframes in the sliding window.
        window_fixed_keyframes: oldest keyframes held fixed (the gauge).
        ba_max_iterations: LM iterations per keyframe.
        ba_loss_scale: Huber scale of the reprojection error.
        ba_outlier_threshold: after BA, features of the new keyframe whose landmark reprojects
            farther than this are dropped.
        pnp_reprojection_error: PnP-RANSAC inlier threshold.
        pnp_iterations: PnP-RANSAC iterations.
        pnp_min_inliers: fewer inliers than this is a tracking failure.
        min_tracked_features: fewer tracked features than this is a tracking failure.
        min_init_features: features with depth needed to (re-)initialise.
        keyframe_min_tracked_ratio: a frame that still tracks fewer than this fraction of the
            last keyframe's features becomes a keyframe.
        keyframe_parallax: median feature displacement since the last keyframe that makes a keyframe.
        keyframe_max_interval: seconds after which a frame becomes a keyframe anyway.
        keyframe_min_interval: seconds before which no frame becomes a keyframe (a rate cap).
        max_bridge_time: seconds the constant-velocity bridge extrapolates during a loss.
        rgbd_virtual_baseline: RGB-D: the baseline of the virtual right camera that carries a
            depth measurement into BA (ORB-SLAM2's bf / fx).
        T_base_camera: pose of the (left / colour) camera in base_link, row-major 4x4.
    """

    mode: str = "stereo"
    precision: str = "mixed"
    linear_solver: str = "cgnr"
    max_features: int = 200
    grid_cols: int = 8
    grid_rows: int = 6
    min_distance: int = 12
    quality_level: float = 0.01
    klt_window: int = 21
    klt_levels: int = 3
    fb_threshold: float = 1.0
    stereo_max_row_error: float = 1.5
    min_disparity: float = 1.0
    min_depth: float = 0.1
    max_depth: float = 20.0
    window_size: int = 50
    window_fixed_keyframes: int = 2
    ba_max_iterations: int = 10
    ba_loss_scale: float = 2.45
    ba_outlier_threshold: float = 4.0
    pnp_reprojection_error: float = 2.0
    pnp_iterations: int = 100
    pnp_min_inliers: int = 15
    min_tracked_features: int = 20
    min_init_features: int = 40
    keyframe_min_tracked_ratio: float = 0.7
    keyframe_parallax: float = 12.0
    keyframe_max_interval: float = 0.5
    keyframe_min_interval: float = 0.1
    max_bridge_time: float = 1.0
    rgbd_virtual_baseline: float = 0.08
    T_base_camera: tuple[float, ...] = tuple(np.eye(4).reshape(-1).tolist())

    def __post_init__(self) -> None:
        self._check_types_and_ranges()
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.linear_solver not in ("cgnr", "schur"):
            raise ValueError(f"linear_solver must be 'cgnr' or 'schur', got {self.linear_solver!r}")
        T = np.asarray(self.T_base_camera, dtype=np.float64)
        if T.size != 16:
            raise ValueError(f"T_base_camera must have 16 values (row-major 4x4), got {T.size}")
        T = T.reshape(4, 4)
        if (
            np.abs(T[3] - [0, 0, 0, 1]).max() > 1e-9
            or np.abs(T[:3, :3].T @ T[:3, :3] - np.eye(3)).max() > 1e-6
        ):
            raise ValueError(
                "T_base_camera is not a rigid transform (orthonormal rotation, last row 0 0 0 1)"
            )
        object.__setattr__(self, "T_base_camera", tuple(T.reshape(-1).tolist()))
        for name in ("pnp_min_inliers", "min_tracked_features", "min_init_features"):
            if getattr(self, name) < 4:
                raise ValueError(f"{name} must be at least 4 (PnP needs 4 points), got {getattr(self, name)}")
        if not 0.0 < self.keyframe_min_tracked_ratio <= 1.0:
            raise ValueError(
                f"keyframe_min_tracked_ratio must be in (0, 1], got {self.keyframe_min_tracked_ratio}"
            )
        self.feature_options()  # validates the feature fields
        self.window_options()

    def _check_types_and_ranges(self) -> None:
        """Each field's type (that of its default) and range, named by the field.

        Done first, so a wrong value is reported under its own name rather than as a comparison
        of str and int, or under the name of the option object it is passed on to (WindowOptions'
        ``max_keyframes`` for ``window_size``).  Every numeric parameter is a count, a threshold,
        a distance or a time: finite and non-negative; some must be at least 1.
        """
        for f in dataclasses.fields(self):
            value, default = getattr(self, f.name), f.default
            if isinstance(default, str):
                if not isinstance(value, str):
                    raise ValueError(f"{f.name}: expected a string, got {type(value).__name__} {value!r}")
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                    raise ValueError(f"{f.name}: expected an integer, got {type(value).__name__} {value!r}")
                if value < 0:
                    raise ValueError(f"{f.name}: must not be negative, got {value}")
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    raise ValueError(f"{f.name}: expected a number, got {type(value).__name__} {value!r}")
                if not (math.isfinite(value) and value >= 0):
                    raise ValueError(f"{f.name}: must be finite and not negative, got {value}")
        for name in ("window_size", "window_fixed_keyframes", "ba_max_iterations", "pnp_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.window_size <= self.window_fixed_keyframes:
            raise ValueError(f"window_size: must exceed window_fixed_keyframes ({self.window_fixed_keyframes}), "
                             f"got {self.window_size}")
        if not self.ba_loss_scale > 0:
            raise ValueError(f"ba_loss_scale: must be positive, got {self.ba_loss_scale}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "config") -> VOConfig:
        """A config from a flat mapping (a YAML section, ROS parameters); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown VO parameter(s) {unknown}; known: {sorted(known)}")
        kwargs = dict(values)
        try:
            if "T_base_camera" in kwargs:
                try:
                    T = np.asarray(kwargs["T_base_camera"], dtype=np.float64).reshape(-1)
                except (TypeError, ValueError):
                    raise ValueError(f"T_base_camera: expected 16 numbers, got {kwargs['T_base_camera']!r}") from None
                if not np.all(np.isfinite(T)):
                    raise ValueError("T_base_camera: every value must be finite")
                kwargs["T_base_camera"] = tuple(T)
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            # Name the file: the message names the key.
            raise ValueError(f"{source}: {exc}") from None

    def feature_options(self) -> FeatureOptions:
        return FeatureOptions(
            max_features=self.max_features, grid_cols=self.grid_cols, grid_rows=self.grid_rows,
            min_distance=self.min_distance, quality_level=self.quality_level, klt_window=self.klt_window,
            klt_levels=self.klt_levels, fb_threshold=self.fb_threshold,
            stereo_max_row_error=self.stereo_max_row_error, min_disparity=self.min_disparity,
            min_depth=self.min_depth, max_depth=self.max_depth,
        )  # fmt: skip

    def window_options(self) -> WindowOptions:
        return WindowOptions(
            max_keyframes=self.window_size,
            num_fixed_keyframes=self.window_fixed_keyframes,
            max_iterations=self.ba_max_iterations,
            loss_scale=self.ba_loss_scale,
        )

    @property
    def T_base_camera_matrix(self) -> np.ndarray:
        return np.asarray(self.T_base_camera, dtype=np.float64).reshape(4, 4)


@dataclass
class FrameResult:
    """The outcome of one frame.

    ``T_odom_base`` is the pose to publish (for a lost frame, the bridged guess). ``timings``
    holds seconds per stage (rectify, track, pnp, keyframe and its parts detect, depth, ba, orb,
    total). ``ba_summary`` is the window solve's summary at a keyframe.
    """

    stamp_ns: int
    T_odom_base: np.ndarray
    status: str
    segment: int
    num_tracked: int = 0
    num_inliers: int = 0
    keyframe: Keyframe | None = None
    timings: dict[str, float] = field(default_factory=dict)
    ba_summary: SolverSummary | None = None

    @property
    def is_keyframe(self) -> bool:
        return self.keyframe is not None


@dataclass
class VOStatistics:
    """Running counters for diagnostics."""

    frames: int = 0
    keyframes: int = 0
    tracking_losses: int = 0
    reinitializations: int = 0
    fp16_fallbacks: int = 0
    ba_time: float = 0.0
    total_time: float = 0.0  # excludes JIT compile (timings use jit.clock)
    compile_time: float = 0.0  # seconds numba spent compiling inside process()


def _pose_matrix(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


class VisualOdometry:
    """Stereo / RGB-D visual odometry on a sliding-window bundle adjuster (module doc).

    Args:
        camera: the left (stereo) or colour (RGB-D) camera, as calibrated (distortion allowed).
        config: :class:`VOConfig`.
        right_camera, T_left_right: stereo only: the right camera and its pose in the left
            camera's frame. A pair that is already rectified (identity rotation, x translation,
            no distortion) is used as it is.
        precision: overrides ``config.precision`` (a :class:`PrecisionConfig` or a preset name).
    """

    def __init__(
        self,
        camera: PinholeCamera,
        config: VOConfig | None = None,
        right_camera: PinholeCamera | None = None,
        T_left_right: np.ndarray | None = None,
        precision: PrecisionConfig | str | None = None,
    ) -> None:
        self.config = config or VOConfig()
        if self.config.mode == "stereo" and (right_camera is None or T_left_right is None):
            raise ValueError("stereo mode needs right_camera and T_left_right")
        chosen = self.config.precision if precision is None else precision
        self.precision = load_precision(chosen) if isinstance(chosen, str) else chosen
        self.rectifier = Rectifier(
            camera, right_camera if self.config.mode == "stereo" else None, T_left_right
        )
        rect = self.rectifier.rectified
        self.camera = rect.camera  # the ideal pinhole camera the pipeline works in
        self.baseline = rect.baseline if self.config.mode == "stereo" else self.config.rgbd_virtual_baseline
        # base_link -> rectified camera; the pipeline tracks the rectified camera
        self.T_base_camera = self.config.T_base_camera_matrix @ rect.T_camera_rect
        self._T_camera_base = lie.inverse_transform(self.T_base_camera)
        self.features = self.config.feature_options()
        self.stats = VOStatistics()
        self._K = self.camera.K
        self._next_landmark = 0
        self._next_keyframe = 0
        self.segment = 0
        self._reset_tracking()
        # Camera poses (world_T_camera, world = odom) of the last two processed frames, for the
        # constant-velocity prediction, and their stamps.
        self._T_wc: np.ndarray | None = None
        self._T_wc_prev: np.ndarray | None = None
        self._stamp_prev: int | None = None
        self._stamp: int | None = None
        self._lost_since: int | None = None

    # -- state ------------------------------------------------------------------------------
    def _reset_tracking(self) -> None:
        self.window = SlidingWindowBundleAdjuster(
            self.camera.intrinsics,
            precision=self.precision,
            solver_options=SolverOptions(linear_solver=self.config.linear_solver),
            window_options=self.config.window_options(),
            baseline=self.baseline,
        )
        self._prev_image: np.ndarray | None = None  # the previous frame's rectified left image
        self._pts = np.zeros((0, 2), dtype=np.float32)  # tracked features, current pixels
        self._ids = np.zeros(0, dtype=np.int64)  # their landmark ids (-1: no 3D point yet)
        self._pos = np.zeros((0, 3))  # landmark positions in odom (NaN without)
        self._kf_pts = np.zeros((0, 2), dtype=np.float32)  # pixels at the last keyframe
        self._kf_count = 0  # features tracked at the last keyframe
        self._kf_stamp: int | None = None
        self._initialized = False

    def _keep(self, mask: np.ndarray) -> None:
        self._pts, self._ids, self._pos, self._kf_pts = (
            self._pts[mask],
            self._ids[mask],
            self._pos[mask],
            self._kf_pts[mask],
        )

    @property
    def T_odom_base(self) -> np.ndarray:
        """The latest pose of base_link in odom (identity before the first frame)."""
        if self._T_wc is None:
            return np.eye(4)
        return self._T_wc @ self._T_camera_base

    # -- prediction -------------------------------------------------------------------------
    def _predict(self, stamp_ns: int) -> np.ndarray | None:
        """Constant-velocity prediction of the camera pose at ``stamp_ns`` (None before any pose)."""
        if self._T_wc is None:
            return None
        if (
            self._T_wc_prev is None
            or self._stamp_prev is None
            or self._stamp is None
            or self._stamp == self._stamp_prev
        ):
            return self._T_wc.copy()
        horizon = stamp_ns - self._stamp
        if self._lost_since is not None and stamp_ns - self._lost_since > self.config.max_bridge_time * 1e9:
            return self._T_wc.copy()  # bridged long enough: hold still rather than fly off
        delta = lie.inverse_transform(self._T_wc_prev) @ self._T_wc
        xi = lie.se3_log(delta[None, :3, :3], delta[None, :3, 3])[0] * (
            horizon / (self._stamp - self._stamp_prev)
        )
        R, t = lie.se3_exp(xi[None])
        return self._T_wc @ _pose_matrix(R[0], t[0])

    # -- per frame --------------------------------------------------------------------------
    def process(self, frame: Frame) -> FrameResult:
        """Run one frame through the pipeline (module doc) and return its result."""
        t_start = clock()  # stage timings exclude numba compile time, counted in stats.compile_time
        compile_start = thread_compile_seconds()
        timings: dict[str, float] = {}
        stamp = int(frame.stamp_ns)
        if self._stamp is not None and stamp <= self._stamp:
            raise ValueError(f"frame stamps must increase: {stamp} after {self._stamp}")
        image, right, depth = self._rectify(frame, timings)
        predicted = self._predict(stamp)

        if not self._initialized:
            result = self._initialize(stamp, image, right, depth, predicted, timings)
        else:
            result = self._track(stamp, image, right, depth, predicted, timings)
        self._prev_image = image
        timings["total"] = clock() - t_start
        result.timings = timings
        self.stats.frames += 1
        self.stats.total_time += timings["total"]
        self.stats.compile_time += thread_compile_seconds() - compile_start
        return result

    def _rectify(self, frame: Frame, timings: dict[str, float]):
        t0 = clock()
        image = frame.image
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if image.shape[:2] != (self.camera.height, self.camera.width):
            raise ValueError(
                f"frame {frame.stamp_ns}: image is {image.shape[1]}x{image.shape[0]}, the camera is "
                f"{self.camera.width}x{self.camera.height}"
            )
        image = self.rectifier.left(np.ascontiguousarray(image, dtype=np.uint8))
        right = depth = None
        if self.config.mode == "stereo":
            if frame.right is None:
                raise ValueError(f"frame {frame.stamp_ns}: stereo mode needs a right image")
            r = frame.right if frame.right.ndim == 2 else cv2.cvtColor(frame.right, cv2.COLOR_BGR2GRAY)
            right = self.rectifier.right(np.ascontiguousarray(r, dtype=np.uint8))
        else:
            if frame.depth is None:
                raise ValueError(f"frame {frame.stamp_ns}: rgbd mode needs a depth image")
            depth = self.rectifier.depth(np.ascontiguousarray(frame.depth, dtype=np.float32))
        timings["rectify"] = clock() - t0
        return image, right, depth

    def _depths(self, image: np.ndarray, right: np.ndarray | None, depth: np.ndarray | None, pts: np.ndarray,
                disparity_guess: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """Right-image column per feature (stereo), or the virtual one from depth (RGB-D); NaN if none."""
        fx = self.camera.fx
        if self.config.mode == "stereo":
            return stereo_match(image, right, pts, self.features, fx, self.baseline, disparity_guess)
        z = depth_lookup(depth, pts, self.features)
        return pts[:, 0] - fx * self.baseline / z

    def _backproject(self, pts: np.ndarray, right_u: np.ndarray, T_wc: np.ndarray) -> np.ndarray:
        """World positions of features from their stereo (or virtual stereo) column."""
        cam = self.camera
        z = cam.fx * self.baseline / (pts[:, 0] - right_u)
        Xc = np.stack([(pts[:, 0] - cam.cx) * z / cam.fx, (pts[:, 1] - cam.cy) * z / cam.fy, z], axis=1)
        return Xc @ T_wc[:3, :3].T + T_wc[:3, 3]

    def _initialize(self, stamp, image, right, depth, predicted, timings) -> FrameResult:
        t0 = clock()
        pts = detect_features(image, np.zeros((0, 2), np.float32), self.features)
        timings["detect"] = clock() - t0
        t0 = clock()
        right_u = self._depths(image, right, depth, pts) if len(pts) else np.zeros(0)
        timings["depth"] = clock() - t0
        ok = np.isfinite(right_u)
        first = self._T_wc is None
        if np.count_nonzero(ok) < self.config.min_init_features:
            # Not enough structure to start (or restart) a map: keep bridging.
            status = "initializing" if first else "lost"
            if not first:
                self._advance(stamp, predicted)
            return FrameResult(
                stamp, self.T_odom_base, status, self.segment, num_tracked=int(np.count_nonzero(ok))
            )
        T_wc = self.T_base_camera.copy() if first else predicted
        pts, right_u = pts[ok], right_u[ok]
        self._pts = pts
        self._ids = np.arange(self._next_landmark, self._next_landmark + len(pts), dtype=np.int64)
        self._next_landmark += len(pts)
        self._pos = self._backproject(pts, right_u, T_wc)
        self._kf_pts = pts.copy()
        self._initialized = True
        status = "tracking"
        if not first:
            self.segment += 1
            self.stats.reinitializations += 1
            status = "reinitialized"
            log.warning(
                "visual odometry re-initialised at t=%.3f s after %.2f s lost: segment %d starts at the bridged pose",
                stamp * 1e-9, (stamp - (self._lost_since or stamp)) * 1e-9, self.segment,
            )  # fmt: skip
        self._lost_since = None
        self._advance(stamp, T_wc)
        keyframe, summary = self._make_keyframe(
            stamp, image, right_u, timings, new_ids=self._ids.copy()
        )
        return FrameResult(
            stamp, self.T_odom_base, status, self.segment, num_tracked=len(self._pts),
            num_inliers=len(self._pts), keyframe=keyframe, ba_summary=summary,
        )  # fmt: skip

    def _advance(self, stamp: int, T_wc: np.ndarray | None) -> None:
        if T_wc is None:
            return
        self._T_wc_prev, self._stamp_prev = self._T_wc, self._stamp
        self._T_wc, self._stamp = T_wc, stamp

    def _lose(self, stamp: int, predicted: np.ndarray | None, why: str, tracked: int) -> FrameResult:
        if self._lost_since is None:
            self._lost_since = stamp
            self.stats.tracking_losses += 1
            log.warning(
                "visual odometry lost tracking at t=%.3f s: %s; bridging at constant velocity",
                stamp * 1e-9,
                why,
            )
        self._reset_tracking()
        self._advance(stamp, predicted)
        return FrameResult(stamp, self.T_odom_base, "lost", self.segment, num_tracked=tracked)

    def _track(self, stamp, image, right, depth, predicted, timings) -> FrameResult:
        cfg = self.config
        t0 = clock()
        # Start KLT where the prediction puts each landmark: robust to fast rotation.
        guess = None
        if predicted is not None and len(self._pts):
            guess = self._project(predicted, self._pos, fallback=self._pts)
        pts, good = track_features(self._prev_image, image, self._pts, self.features, guess)
        self._pts = pts
        self._keep(good)
        timings["track"] = clock() - t0
        tracked = len(self._pts)
        if tracked < cfg.min_tracked_features:
            return self._lose(stamp, predicted, f"only {tracked} features tracked", tracked)

        t0 = clock()
        has3d = np.isfinite(self._pos[:, 0])
        T_wc, inliers = self._pnp(self._pos[has3d], self._pts[has3d], predicted)
        timings["pnp"] = clock() - t0
        if T_wc is None or inliers.size < cfg.pnp_min_inliers:
            return self._lose(
                stamp, predicted, f"PnP found {0 if T_wc is None else inliers.size} inliers", tracked
            )
        outlier = np.zeros(len(self._pts), dtype=bool)
        idx3d = np.flatnonzero(has3d)
        outlier[idx3d] = True
        outlier[idx3d[inliers]] = False
        self._keep(~outlier)
        self._advance(stamp, T_wc)

        if not self._want_keyframe(stamp):
            return FrameResult(
                stamp, self.T_odom_base, "tracking", self.segment, len(self._pts), int(inliers.size)
            )

        t0 = clock()
        new = detect_features(image, self._pts, self.features)
        timings["detect"] = clock() - t0
        self._pts = np.concatenate([self._pts, new])
        self._ids = np.concatenate([self._ids, np.full(len(new), -1, dtype=np.int64)])
        self._pos = np.concatenate([self._pos, np.full((len(new), 3), np.nan)])
        self._kf_pts = np.concatenate([self._kf_pts, new])
        t0 = clock()
        disparity_guess = None
        if self.config.mode == "stereo":
            zc = self._camera_depth(T_wc, self._pos)
            with np.errstate(divide="ignore", invalid="ignore"):
                disparity_guess = self.camera.fx * self.baseline / zc
        right_u = self._depths(image, right, depth, self._pts, disparity_guess)
        timings["depth"] = clock() - t0
        # A feature without a landmark and without depth now is of no use: drop it.
        lonely = (self._ids < 0) & ~np.isfinite(right_u)
        self._keep(~lonely)
        right_u = right_u[~lonely]
        need = self._ids < 0
        new_ids = np.arange(self._next_landmark, self._next_landmark + np.count_nonzero(need), dtype=np.int64)
        self._next_landmark += new_ids.size
        self._ids[need] = new_ids
        self._pos[need] = self._backproject(self._pts[need], right_u[need], T_wc)
        keyframe, summary = self._make_keyframe(stamp, image, right_u, timings, new_ids=new_ids)
        return FrameResult(
            stamp, self.T_odom_base, "tracking", self.segment, num_tracked=tracked,
            num_inliers=int(inliers.size), keyframe=keyframe, ba_summary=summary,
        )  # fmt: skip

    def _want_keyframe(self, stamp: int) -> bool:
        cfg = self.config
        since = (stamp - self._kf_stamp) * 1e-9 if self._kf_stamp is not None else np.inf
        if since < cfg.keyframe_min_interval:
            return False
        if since >= cfg.keyframe_max_interval:
            return True
        if len(self._pts) < cfg.keyframe_min_tracked_ratio * self._kf_count:
            return True
        if len(self._pts) < 2 * cfg.min_tracked_features:
            return True
        parallax = np.median(np.linalg.norm(self._pts - self._kf_pts, axis=1)) if len(self._pts) else 0.0
        return bool(parallax >= cfg.keyframe_parallax)

    # -- geometry helpers -------------------------------------------------------------------
    def _camera_depth(self, T_wc: np.ndarray, X: np.ndarray) -> np.ndarray:
        R, t = T_wc[:3, :3], T_wc[:3, 3]
        return (X - t) @ R[:, 2]

    def _project(self, T_wc: np.ndarray, X: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """Pixels of world points in a camera (the fallback where a point is unknown or behind)."""
        R, t = T_wc[:3, :3], T_wc[:3, 3]
        Xc = (X - t) @ R
        cam = self.camera
        with np.errstate(invalid="ignore", divide="ignore"):
            u = cam.fx * Xc[:, 0] / Xc[:, 2] + cam.cx
            v = cam.fy * Xc[:, 1] / Xc[:, 2] + cam.cy
        out = np.stack([u, v], axis=1).astype(np.float32)
        bad = ~(np.isfinite(out).all(axis=1) & (Xc[:, 2] > self.features.min_depth))
        out[bad] = fallback[bad]
        return out

    def _pnp(self, X: np.ndarray, pts: np.ndarray, predicted: np.ndarray | None):
        """PnP-RANSAC + LM refinement on the inliers: (world_T_camera, inlier indices) or (None, [])."""
        cfg = self.config
        if len(X) < 4:
            return None, np.zeros(0, dtype=np.int64)
        use_guess = predicted is not None
        rvec = tvec = None
        if use_guess:
            T_cw = lie.inverse_transform(predicted)
            rvec = cv2.Rodrigues(T_cw[:3, :3])[0]
            tvec = T_cw[:3, 3].reshape(3, 1).copy()
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(
            X.astype(np.float64), pts.astype(np.float64), self._K, None, rvec, tvec,
            useExtrinsicGuess=use_guess, iterationsCount=cfg.pnp_iterations,
            reprojectionError=cfg.pnp_reprojection_error, confidence=0.999, flags=cv2.SOLVEPNP_ITERATIVE,
        )  # fmt: skip
        if not ok or inliers is None or len(inliers) < 4:
            return None, np.zeros(0, dtype=np.int64)
        inliers = inliers.reshape(-1)
        rvec, tvec = cv2.solvePnPRefineLM(
            X[inliers], pts[inliers].astype(np.float64), self._K, None, rvec, tvec
        )
        T_cw = np.eye(4)
        T_cw[:3, :3] = cv2.Rodrigues(rvec)[0]
        T_cw[:3, 3] = tvec.reshape(3)
        return lie.inverse_transform(T_cw), inliers

    # -- keyframes --------------------------------------------------------------------------
    def _make_keyframe(
        self, stamp, image, right_u, timings, new_ids
    ) -> tuple[Keyframe, SolverSummary]:
        """Add the current frame to the window as a keyframe, optimise, and build its Keyframe."""
        kf_id = self._next_keyframe
        self._next_keyframe += 1
        T_wc = self._T_wc
        # What slides out is not tracked any more, so there is nothing to hand back to the tracker.
        self.window.add_keyframe(kf_id, T_wc[:3, :3], T_wc[:3, 3], self._ids, self._pts, right_u=right_u)
        fresh = np.isin(self._ids, new_ids)
        if fresh.any():
            self.window.add_landmarks(self._ids[fresh], self._pos[fresh])
        t0 = clock()
        summary = self.window.optimize()
        ba_time = clock() - t0
        timings["ba"] = ba_time
        self.stats.ba_time += ba_time
        self.stats.fp16_fallbacks += len(summary.fallbacks)
        self.stats.keyframes += 1

        # Write the window's estimates back into the tracker.
        R, t = self.window.pose(kf_id)
        T_wc = _pose_matrix(R, t)
        self._T_wc = T_wc
        lm_ids = self.window.landmark_ids
        state = self.window.state
        if lm_ids.size:
            where = np.minimum(np.searchsorted(lm_ids, self._ids), lm_ids.size - 1)
            found = lm_ids[where] == self._ids
            self._pos[found] = state.points[where[found]]
        # Drop features whose landmark does not reproject onto them any more (bad tracks, BA
        # outliers); they would poison the next PnP.
        proj = self._project(T_wc, self._pos, fallback=np.full_like(self._pts, np.inf))
        err = np.linalg.norm(proj - self._pts, axis=1)
        keep = err <= self.config.ba_outlier_threshold
        self._keep(keep)
        self._kf_pts = self._pts.copy()
        self._kf_count = len(self._pts)
        self._kf_stamp = stamp

        t0 = clock()
        desc, idx = orb_descriptors(image, self._pts)
        timings["orb"] = clock() - t0
        R, t = T_wc[:3, :3], T_wc[:3, 3]
        points_cam = (self._pos[idx] - t) @ R
        keyframe = Keyframe(
            keyframe_id=kf_id,
            stamp_ns=stamp,
            T_odom_base=T_wc @ self._T_camera_base,
            T_base_camera=self.T_base_camera,
            points=points_cam,
            pixels=self._pts[idx],
            descriptors=desc,
            landmark_ids=self._ids[idx],
            camera=self.camera,
        )
        return keyframe, summary
