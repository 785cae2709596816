"""What ``vo_node`` does between receiving messages and publishing them, without rclpy.

The node shell (:mod:`.vo_node`) only subscribes, queues, and publishes; the logic lives here so
it runs and is tested where ROS 2 is not installed, on ``rosbags`` or ``SimpleNamespace``
messages:

* :class:`FrameBacklog`: the bounded queue between the subscription callback and the processing
  thread, with the two drop policies (every frame for bag replay, newest only for live input);
* :class:`VORunner`: builds the :class:`~mp_slam_ros.vision.odometry.VisualOdometry` lazily from
  the first synchronised set's camera_info, converts messages to a
  :class:`~mp_slam_ros.vision.types.Frame`, handles stamps that repeat or go back (a looping
  bag), rebuilds on a calibration change, and computes the odometry twist;
* :class:`DiagnosticsAccumulator`: the numbers and level of the periodic diagnostics status;
* :func:`plan_base_camera` / :meth:`VORunner.resolve_base_camera`: where ``T_base_camera``
  comes from (the parameter, else a tf2 lookup ``base_frame -> image frame_id``, else identity
  with one loud warning), decided before the odometry is built.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np

from ..io.frames import EXTRINSIC_ASSUMED, missing_extrinsic_warning
from ..io.ros_messages import (
    baseline_problem,
    camera_info_baseline,
    camera_info_to_camera,
    image_to_depth_m,
    image_to_grey,
    stamp_to_ns,
)
from ..solver.precision import load_precision
from ..vision.odometry import FrameResult, VisualOdometry, VOConfig, VOStatistics
from ..vision.types import Frame, PinholeCamera
from .parameters import VO_NODE_PARAMETERS

__all__ = [
    "DIAGNOSTIC_LEVELS",
    "BaseCameraPlan",
    "DiagnosticReport",
    "DiagnosticsAccumulator",
    "FrameBacklog",
    "StepOutput",
    "VORunner",
    "base_camera_is_explicit",
    "body_twist",
    "input_names",
    "plan_base_camera",
    "stereo_extrinsic",
]

#: vo_node's ``sync_slop`` default [s], the stamp tolerance within a set when none is given.
DEFAULT_SYNC_SLOP: float = next(s.default for s in VO_NODE_PARAMETERS if s.name == "sync_slop")

#: diagnostic_msgs/DiagnosticStatus levels by value.
DIAGNOSTIC_LEVELS = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}


def input_names(mode: str) -> tuple[str, ...]:
    """Topic parameters of one synchronised set, in the order the runner takes the messages."""
    if mode == "stereo":
        return ("left_image_topic", "right_image_topic", "left_info_topic", "right_info_topic")
    if mode == "rgbd":
        return ("rgb_image_topic", "depth_image_topic", "rgb_info_topic")
    raise ValueError(f"mode must be 'stereo' or 'rgbd', got {mode!r}")


class FrameBacklog:
    """Bounded FIFO of synchronised message sets, filled by callbacks and drained by one worker.

    ``keep_all`` (bag replay) holds up to ``capacity`` sets and processes them in order; without
    it (live input) only the newest set is held, so the odometry always works on the latest
    image instead of falling further behind.  Either way the oldest set goes when the queue is
    full, and ``dropped`` counts it.
    """

    def __init__(self, capacity: int, keep_all: bool) -> None:
        if capacity < 1:
            raise ValueError(f"backlog capacity must be at least 1, got {capacity}")
        self.capacity = int(capacity)
        self.keep_all = bool(keep_all)
        self.received = 0
        self.dropped = 0
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self._closed = False

    @property
    def limit(self) -> int:
        return self.capacity if self.keep_all else 1

    def put(self, item: Any) -> int:
        """Queue ``item``; returns how many older items were dropped to make room."""
        with self._cond:
            self.received += 1
            dropped = 0
            while len(self._items) >= self.limit:
                self._items.popleft()
                dropped += 1
            self._items.append(item)
            self.dropped += dropped
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None) -> Any | None:
        """The oldest item; None after ``timeout`` seconds without one or once closed."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._closed or not self._items:
                return None
            return self._items.popleft()

    def close(self) -> None:
        """Wake the worker and make every later ``get`` return None."""
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


def _rectification_rotation(info: Any) -> np.ndarray:
    """camera_info ``R`` (rectified <- raw camera); identity when unset (all zero)."""
    value = getattr(info, "r", None)
    if value is None:
        value = getattr(info, "R", None)
    R = np.asarray(value if value is not None else np.eye(3), dtype=np.float64).reshape(-1)
    if R.size != 9 or not np.any(R):
        return np.eye(3)
    R = R.reshape(3, 3)
    if np.abs(R.T @ R - np.eye(3)).max() > 1e-6:
        raise ValueError("camera_info R is not a rotation matrix")
    return R


def stereo_extrinsic(left_info: Any, right_info: Any, rectified: bool) -> np.ndarray:
    """``T_left_right``, the right camera's pose in the left camera's frame, from the two camera_info.

    The baseline B comes from the right ``P`` (``P[0,3] = -fx' B``) and lies along x of the
    rectified frames.  Rectified images: the cameras are those rectified frames, so the
    extrinsic is a pure +B x translation.  Raw images: each camera's ``R`` rotates it into its
    rectified frame, so ``T_left_right = [R_l^T R_r | R_l^T (B, 0, 0)]``.
    """
    baseline = camera_info_baseline(right_info)
    T = np.eye(4)
    T[0, 3] = baseline
    if rectified:
        return T
    R_l, R_r = _rectification_rotation(left_info), _rectification_rotation(right_info)
    T[:3, :3] = R_l.T @ R_r
    T[:3, 3] = R_l.T @ np.array([baseline, 0.0, 0.0])
    return T


def body_twist(T_prev: np.ndarray, T_cur: np.ndarray, dt: float) -> np.ndarray:
    """``(vx, vy, vz, wx, wy, wz)`` of the body between two poses, in the body frame (nav_msgs/Odometry)."""
    if dt <= 0.0:
        return np.zeros(6)
    delta = np.linalg.inv(T_prev) @ T_cur
    rotvec, _ = cv2.Rodrigues(np.ascontiguousarray(delta[:3, :3]))
    return np.concatenate([delta[:3, 3], rotvec.reshape(3)]) / dt


def base_camera_is_explicit(value: Sequence[float]) -> bool:
    """Whether a ``T_base_camera`` parameter value was given rather than left at its default.

    The default is identity, so any other value is explicit.  An explicit identity cannot be
    told from the default; it then means "the camera frame is the base frame", which a tf2
    lookup confirms (or corrects) anyway.
    """
    return not np.array_equal(np.asarray(value, dtype=np.float64).reshape(-1), np.eye(4).reshape(-1))


@dataclass(frozen=True)
class BaseCameraPlan:
    """What to do about ``T_base_camera`` before the odometry is built (:func:`plan_base_camera`).

    ``lookup``: ask tf2 for ``lookup_transform(base_frame, camera_frame)`` (target = base, source
    = camera: the camera's pose in base).  ``warning``: with ``lookup``, what to log (once) if the
    lookup fails; without, what to log (once) now; None when there is nothing to say.
    ``source`` describes the extrinsic used when no lookup is made.
    """

    lookup: bool
    base_frame: str
    camera_frame: str
    source: str
    warning: str | None


def plan_base_camera(explicit: bool, base_frame: str, camera_frame: str) -> BaseCameraPlan:
    """Decide where the extrinsic comes from: an explicit ``T_base_camera`` parameter wins; images
    already in ``base_frame`` need none (identity is exact); otherwise tf2 must give
    ``base_frame -> camera_frame`` (the image ``header.frame_id``), and failing that the camera
    frame is used as the base frame, with the warning of
    :func:`~mp_slam_ros.io.frames.missing_extrinsic_warning`.
    """
    camera_frame = str(camera_frame or "")
    if explicit:
        return BaseCameraPlan(False, base_frame, camera_frame, "parameter T_base_camera", None)
    if camera_frame and camera_frame.strip("/") == base_frame.strip("/"):
        return BaseCameraPlan(False, base_frame, camera_frame, f"identity (the images are in {base_frame})", None)
    warning = missing_extrinsic_warning(base_frame, camera_frame, "tf (/tf_static)")
    if not camera_frame:  # nothing to look up
        return BaseCameraPlan(False, base_frame, camera_frame, EXTRINSIC_ASSUMED, warning)
    return BaseCameraPlan(True, base_frame, camera_frame, f"tf ({base_frame} -> {camera_frame})", warning)


@dataclass
class StepOutput:
    """What to publish for one processed frame, and what to log.

    ``twist`` is in the base frame; ``warnings`` are for the node's logger (tracking lost /
    re-initialised, odometry restarted).
    """

    stamp_ns: int
    result: FrameResult
    twist: np.ndarray
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Calibration:
    camera: PinholeCamera
    right_camera: PinholeCamera | None
    T_left_right: tuple[float, ...] | None


class VORunner:
    """Runs the visual odometry on synchronised message sets (stereo: left image, right image,
    left info, right info; RGB-D: colour image, depth image, colour info; see :func:`input_names`).

    The odometry is built at the first set, from its camera_info.  A set whose stamp repeats the
    previous one is skipped; a stamp that goes back (a bag restarted or looped, sim time reset)
    or a change of calibration restarts the odometry from scratch, with a warning, rather than
    fail every following frame.
    """

    def __init__(self, config: VOConfig, rectified: bool = False, sync_slop: float = DEFAULT_SYNC_SLOP) -> None:
        if not (math.isfinite(sync_slop) and sync_slop > 0):
            raise ValueError(f"sync_slop must be positive and finite, got {sync_slop}")
        self.config = config
        # Largest stamp difference within one set (the node's synchroniser parameter): a set
        # that exceeds it is not one instant and is rejected, counted in ``rejected``.
        self.sync_slop = float(sync_slop)
        self.rejected = 0
        # Loaded now so a bad preset name or YAML path fails at start-up, not at the first frame.
        self.precision = load_precision(config.precision)
        self.rectified = bool(rectified)
        self.vo: VisualOdometry | None = None
        self.restarts = 0
        self.skipped = 0
        self._calibration: _Calibration | None = None
        self._last_stamp: int | None = None
        self._last_pose: np.ndarray | None = None
        self._last_status: str | None = None
        # Counters of odometry instances dropped by restarts, so the totals survive them.
        self._retired = VOStatistics()
        # Where config.T_base_camera came from; None until set_base_camera / resolve_base_camera.
        self.base_camera_source: str | None = None
        self._pending_warnings: list[str] = []

    @property
    def base_camera_resolved(self) -> bool:
        """Whether :meth:`set_base_camera` or :meth:`resolve_base_camera` has run."""
        return self.base_camera_source is not None

    def set_base_camera(self, T_base_camera: Any, source: str) -> None:
        """Use ``T_base_camera`` (4x4 or 16 row-major values: the camera's pose in base) from now on.

        Before the first synchronised set (the odometry is built there) this only sets the
        extrinsic.  Once the odometry runs, a different extrinsic restarts it at the identity
        (its poses are of the base frame, so they cannot continue under another extrinsic); the
        next :meth:`step` says so in its warnings.  Raises ValueError for a non-rigid transform.
        """
        T = np.asarray(T_base_camera, dtype=np.float64).reshape(-1)
        new = replace(self.config, T_base_camera=tuple(T.tolist()))  # validates: rigid, 16 values
        changed = not np.allclose(new.T_base_camera_matrix, self.config.T_base_camera_matrix, rtol=0.0, atol=1e-12)
        self.config = new
        self.base_camera_source = str(source)
        if changed and self.vo is not None:
            self._pending_warnings.append(f"T_base_camera changed (from {source}): restarting the odometry")
            self._retire()
            self.restarts += 1

    def resolve_base_camera(self, camera_frame: str, base_frame: str, explicit: bool,
                            lookup: Callable[[str, str], Any]) -> str | None:
        """Settle the extrinsic by :func:`plan_base_camera`; returns a warning to log (once) or None.

        ``lookup(target_frame, source_frame)`` returns the 4x4 ``T_target_source`` or None (e.g.
        tf2's ``lookup_transform`` through :func:`~mp_slam_ros.io.ros_messages.transform_to_matrix`,
        None on a tf2 exception); it is called only when a lookup is needed.  Call it before
        :meth:`step` on the first set (``camera_frame`` = the image ``header.frame_id``).
        """
        plan = plan_base_camera(explicit, base_frame, camera_frame)
        if plan.lookup:
            T = lookup(plan.base_frame, plan.camera_frame)
            if T is not None:
                self.set_base_camera(T, plan.source)
                return None
            self.set_base_camera(np.eye(4), EXTRINSIC_ASSUMED)
            return plan.warning
        if explicit:
            self.base_camera_source = plan.source  # the config already holds it
        else:
            self.set_base_camera(np.eye(4), plan.source)
        return plan.warning

    @property
    def stats(self) -> VOStatistics:
        """Counters over every odometry instance this runner built."""
        out = VOStatistics(**vars(self._retired))
        if self.vo is not None:
            for name, value in vars(self.vo.stats).items():
                setattr(out, name, getattr(out, name) + value)
        return out

    def _checked_stamp(self, msgs: Sequence[Any]) -> int:
        """The set's stamp (the first image's), after checking every message is there and stamped
        within ``sync_slop`` of it; a set that fails is rejected (counted in ``rejected``)."""
        names = input_names(self.config.mode)
        stamps = []
        for name, msg in zip(names, msgs, strict=True):
            try:
                if msg is None:
                    raise ValueError("no message (None)")
                stamps.append(stamp_to_ns(msg.header.stamp))
            except (AttributeError, TypeError, ValueError) as err:
                self.rejected += 1
                raise ValueError(f"{name}: message rejected: {err}") from None
        slop_ns = round(self.sync_slop * 1e9)
        for name, s in zip(names[1:], stamps[1:], strict=True):
            if abs(s - stamps[0]) > slop_ns:
                self.rejected += 1
                raise ValueError(f"{name}: stamp {s} ns is {(s - stamps[0]) * 1e-9:+.4f} s from the {names[0]} "
                                 f"stamp {stamps[0]} ns, beyond sync_slop {self.sync_slop:g} s: set rejected")
        return stamps[0]

    def _calibration_of(self, msgs: Sequence[Any]) -> _Calibration:
        names = input_names(self.config.mode)

        def camera(k: int) -> PinholeCamera:
            try:
                return camera_info_to_camera(msgs[k], rectified=self.rectified)
            except ValueError as err:
                raise ValueError(f"{names[k]}: {err}") from None

        # The cameras first: a non-finite or non-positive entry is reported as such, before the
        # extrinsic turns it into a misleading baseline.
        if self.config.mode == "stereo":
            left, right = camera(2), camera(3)
            try:
                T = stereo_extrinsic(msgs[2], msgs[3], self.rectified)
            except ValueError as err:
                raise ValueError(f"{names[3]}: {err}") from None
            problem = baseline_problem(float(np.linalg.norm(T[:3, 3])))
            if problem is not None:
                raise ValueError(f"{names[3]}: field 'p': {problem}")
            return _Calibration(left, right, tuple(T.reshape(-1).tolist()))
        return _Calibration(camera(2), None, None)

    def _frame_of(self, stamp: int, msgs: Sequence[Any], camera: PinholeCamera) -> Frame:
        names = input_names(self.config.mode)

        def convert(k: int, how: Callable[[Any], np.ndarray]) -> np.ndarray:
            try:
                return how(msgs[k])
            except ValueError as err:
                raise ValueError(f"{names[k]}: {err}") from None

        image = convert(0, image_to_grey)
        if self.config.mode == "stereo":
            frame = Frame(stamp, image, right=convert(1, image_to_grey))
            second = frame.right
        else:
            frame = Frame(stamp, image, depth=convert(1, image_to_depth_m))
            second = frame.depth
        for what, arr in (("image", image), ("right image" if self.config.mode == "stereo" else "depth", second)):
            if arr.shape != (camera.height, camera.width):
                raise ValueError(f"{what} is {arr.shape[1]}x{arr.shape[0]} but camera_info says "
                                 f"{camera.width}x{camera.height}")
        return frame

    def _retire(self) -> None:
        if self.vo is not None:
            for name, value in vars(self.vo.stats).items():
                setattr(self._retired, name, getattr(self._retired, name) + value)
        self.vo = None
        self._last_pose = None
        self._last_status = None

    def step(self, msgs: Sequence[Any]) -> StepOutput | None:
        """Process one synchronised set; None when it is skipped (repeated stamp).

        Raises ``MessageFormatError`` / ``ValueError`` for messages that cannot be used; the
        odometry state is unchanged then.
        """
        expected = len(input_names(self.config.mode))
        if len(msgs) != expected:
            raise ValueError(f"{self.config.mode} needs {expected} messages per set, got {len(msgs)}")
        stamp = self._checked_stamp(msgs)
        warnings, self._pending_warnings = self._pending_warnings, []
        if self._last_stamp is not None and stamp == self._last_stamp:
            self.skipped += 1
            return None
        try:
            calibration = self._calibration_of(msgs)
            frame = self._frame_of(stamp, msgs, calibration.camera)
        except ValueError:
            self.rejected += 1
            raise
        if self.vo is not None and self._last_stamp is not None and stamp < self._last_stamp:
            warnings.append(f"stamps went back {(self._last_stamp - stamp) * 1e-9:.3f} s (bag restarted or "
                            "looped?): restarting the odometry at the identity")
            self._retire()
            self.restarts += 1
        elif self.vo is not None and calibration != self._calibration:
            warnings.append("camera_info changed: restarting the odometry with the new calibration")
            self._retire()
            self.restarts += 1
        if self.vo is None:
            T_lr = None if calibration.T_left_right is None else np.array(calibration.T_left_right).reshape(4, 4)
            self.vo = VisualOdometry(calibration.camera, self.config, calibration.right_camera, T_lr,
                                     precision=self.precision)
            self._calibration = calibration
        result = self.vo.process(frame)
        twist = np.zeros(6)
        if self._last_pose is not None and self._last_stamp is not None:
            twist = body_twist(self._last_pose, result.T_odom_base, (stamp - self._last_stamp) * 1e-9)
        if result.status == "lost" and self._last_status != "lost":
            warnings.append(f"tracking lost at {stamp * 1e-9:.3f} s ({result.num_tracked} features tracked, "
                            f"{result.num_inliers} inliers): bridging with constant velocity")
        elif result.status == "reinitialized":
            warnings.append(f"odometry re-initialised at {stamp * 1e-9:.3f} s: segment {result.segment} starts")
        self._last_stamp = stamp
        self._last_pose = result.T_odom_base.copy()
        self._last_status = result.status
        return StepOutput(stamp, result, twist, warnings)


@dataclass
class DiagnosticReport:
    """One diagnostics status: ``level`` as in diagnostic_msgs/DiagnosticStatus (0 OK, 1 WARN, 2 ERROR)."""

    level: int
    message: str
    values: list[tuple[str, str]]

    @property
    def level_name(self) -> str:
        return DIAGNOSTIC_LEVELS[self.level]


class DiagnosticsAccumulator:
    """Collects per-frame results between two diagnostics reports (thread-safe).

    The rates use the steady clock: they describe how fast this process keeps up, whatever
    ``use_sim_time`` says.  The level is WARN while tracking is lost, after an fp16 fallback or
    a dropped frame in bag-replay mode during the period, and when no input arrives; ERROR when
    a frame could not be processed at all.
    """

    def __init__(self, now: float | None = None) -> None:
        self._lock = threading.Lock()
        self._start = time.monotonic() if now is None else now
        self._last_report = self._start
        self._received = 0
        self._processed = 0
        self._keyframes = 0
        self._ba_times: list[float] = []
        self._proc_times: list[float] = []
        self._fallbacks = 0
        self._errors: list[str] = []
        self._ever_received = False
        self._last: FrameResult | None = None
        self._drops_at_report = 0

    def record_received(self) -> None:
        with self._lock:
            self._received += 1
            self._ever_received = True

    def record(self, output: StepOutput) -> None:
        result = output.result
        with self._lock:
            self._processed += 1
            self._last = result
            self._proc_times.append(result.timings.get("total", 0.0))
            if result.keyframe is not None:
                self._keyframes += 1
                self._ba_times.append(result.timings.get("ba", 0.0))
            if result.ba_summary is not None:
                self._fallbacks += len(result.ba_summary.fallbacks)

    def record_error(self, message: str) -> None:
        with self._lock:
            self._errors.append(message)

    def report(self, stats: VOStatistics, dropped: int, keep_all: bool, backlog: int = 0,
               restarts: int = 0, now: float | None = None) -> DiagnosticReport:
        """The status for the period since the previous report, and reset the period."""
        now = time.monotonic() if now is None else now
        with self._lock:
            period = max(now - self._last_report, 1e-9)
            last = self._last
            new_drops = dropped - self._drops_at_report
            values = [
                ("status", last.status if last is not None else "waiting for input"),
                ("segment", str(last.segment) if last is not None else "-"),
                ("input rate [Hz]", f"{self._received / period:.2f}"),
                ("frame rate [Hz]", f"{self._processed / period:.2f}"),
                ("tracked features", str(last.num_tracked) if last is not None else "0"),
                ("inliers", str(last.num_inliers) if last is not None else "0"),
                ("processing time [ms]", f"{1e3 * float(np.mean(self._proc_times)):.1f}" if self._proc_times else "-"),
                ("BA time [ms]", f"{1e3 * float(np.mean(self._ba_times)):.1f}" if self._ba_times else "-"),
                ("keyframes in period", str(self._keyframes)),
                ("keyframes", str(stats.keyframes)),
                ("frames", str(stats.frames)),
                ("tracking losses", str(stats.tracking_losses)),
                ("reinitializations", str(stats.reinitializations)),
                ("fp16 fallbacks", str(stats.fp16_fallbacks)),
                ("fp16 fallbacks in period", str(self._fallbacks)),
                ("dropped frames", str(dropped)),
                ("backlog", str(backlog)),
                ("odometry restarts", str(restarts)),
                ("errors in period", str(len(self._errors))),
            ]
            problems: list[str] = []
            level = 0
            if self._errors:
                level = 2
                problems.append(f"{len(self._errors)} frame(s) failed: {self._errors[-1]}")
            if last is not None and last.status == "lost":
                level = max(level, 1)
                problems.append("tracking lost")
            if self._fallbacks:
                level = max(level, 1)
                problems.append(f"{self._fallbacks} fp16 fallback(s) in BA")
            if keep_all and new_drops > 0:
                level = max(level, 1)
                problems.append(f"{new_drops} frame(s) dropped (backlog full)")
            if not self._ever_received:
                level = max(level, 1)
                problems.append("no synchronised input yet (check topics, input_reliability, sync_slop)")
            elif self._received == 0:
                level = max(level, 1)
                problems.append("no input in the last period")
            idle = last.status if last is not None else "waiting for input"
            message = "; ".join(problems) if problems else idle
            self._last_report = now
            self._received = self._processed = self._keyframes = self._fallbacks = 0
            self._ba_times, self._proc_times, self._errors = [], [], []
            self._drops_at_report = dropped
        return DiagnosticReport(level, message, values)
