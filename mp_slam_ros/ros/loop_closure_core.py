"""What ``loop_closure_node`` does between receiving keyframes and publishing, without rclpy.

The node shell (:mod:`.loop_closure_node`) only subscribes, queues, runs timers and services and
publishes; the logic lives here so it runs and is tested where ROS 2 is not installed, on
``rosbags`` messages:

* :class:`KeyframeAssembler`: the exact-stamp join of the keyframe triplet ``vo_node`` publishes
  (PoseStamped, PointCloud2, CameraInfo with one ``header.stamp``), bounded so a lost message
  cannot grow it forever;
* :class:`LoopClosureRunner`: builds the :class:`~mp_slam_ros.loop.pipeline.LoopClosure` from the
  parameters, turns each triplet into a :class:`~mp_slam_ros.vision.types.Keyframe`, runs it, and
  builds every output message with a message factory: the corrected path, the landmark map, the
  ``map -> odom`` transform and the diagnostics; it also answers the reset / save_map / load_map
  services and run-time parameter changes;
* :class:`LoopClosureDiagnostics`: the numbers and level of the periodic diagnostics status.

Locking: one lock guards the pipeline (the worker thread adds keyframes, services save, load and
reset); a second, short one guards the snapshot (``map -> odom``, latest stamp, statistics) the
TF and diagnostics timers read, so they never wait for a pose-graph optimisation.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io.ros_messages import (
    MessageFactory,
    MessageFormatError,
    PointField,
    camera_info_to_camera,
    keyframe_from_messages,
    make_header,
    make_path,
    make_transform_stamped,
    stamp_to_ns,
)
from ..loop.pipeline import LoopClosure, LoopClosureResult, MapFileError
from ..solver.precision import load_precision
from .parameters import (
    LC_NODE_NAME,
    LC_NODE_PARAMETERS,
    default_values,
    lc_config_from_parameters,
    rigid_transform_problem,
    spec,
)
from .vo_core import DiagnosticReport

__all__ = [
    "KEYFRAME_PARTS",
    "RUNTIME_PARAMETERS",
    "KeyframeAssembler",
    "KeyframeOutput",
    "LoopClosureDiagnostics",
    "LoopClosureRunner",
    "NodeSettings",
    "ParameterChange",
    "input_names",
    "make_diagnostic_array",
    "make_xyz_cloud",
]

#: The messages of one keyframe, in the order :meth:`LoopClosureRunner.process` takes them.
KEYFRAME_PARTS = ("pose", "cloud", "info")

#: Parameters that may change while the node runs (everything else is fixed at start-up).
RUNTIME_PARAMETERS = tuple(s.name for s in LC_NODE_PARAMETERS if not s.read_only)

_NS = 1_000_000_000


def input_names() -> tuple[str, ...]:
    """Topic parameters of the keyframe triplet, in :data:`KEYFRAME_PARTS` order."""
    return ("keyframe_pose_topic", "keyframe_cloud_topic", "keyframe_info_topic")


# ---------------------------------------------------------------------------------------------
# Input: the exact-stamp join
# ---------------------------------------------------------------------------------------------


class KeyframeAssembler:
    """Joins the three keyframe messages by their identical ``header.stamp`` (thread-safe).

    ``vo_node`` stamps all three with the keyframe's stamp, so an exact join needs no slop and
    cannot pair parts of different keyframes.  At most ``capacity`` incomplete stamps wait; beyond
    that the oldest is dropped and counted in ``incomplete``, since its missing part will not come.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"keyframe assembler capacity must be at least 1, got {capacity}")
        self.capacity = int(capacity)
        self.completed = 0
        self.incomplete = 0
        self._pending: OrderedDict[int, list[Any]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, part: str, msg: Any) -> tuple[Any, Any, Any] | None:
        """Add one message (``part`` in :data:`KEYFRAME_PARTS`); the complete triplet once all three arrived."""
        try:
            slot = KEYFRAME_PARTS.index(part)
        except ValueError:
            raise ValueError(f"keyframe part must be one of {KEYFRAME_PARTS}, got {part!r}") from None
        stamp = stamp_to_ns(msg.header.stamp)
        with self._lock:
            parts = self._pending.get(stamp)
            if parts is None:
                while len(self._pending) >= self.capacity:
                    self._pending.popitem(last=False)
                    self.incomplete += 1
                parts = self._pending[stamp] = [None, None, None]
            parts[slot] = msg  # a repeated part (republished keyframe) replaces the earlier one
            if any(p is None for p in parts):
                return None
            del self._pending[stamp]
            self.completed += 1
            return parts[0], parts[1], parts[2]

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


# ---------------------------------------------------------------------------------------------
# Output messages
# ---------------------------------------------------------------------------------------------


def _uint8_field(cls: Any, raw: bytes) -> Any:
    # rosbags dataclasses want a numpy uint8 array; rclpy's setter is fastest with array('B').
    if dataclasses.is_dataclass(cls) and hasattr(cls, "__msgtype__"):
        return np.frombuffer(raw, dtype=np.uint8)
    import array

    return array.array("B", raw)


def make_xyz_cloud(factory: MessageFactory, stamp_ns: int, frame_id: str, points: np.ndarray) -> Any:
    """``sensor_msgs/PointCloud2`` of (N, 3) points: fields x y z FLOAT32, little-endian, point_step 12."""
    pts = np.ascontiguousarray(np.asarray(points, dtype="<f4").reshape(-1, 3))
    n = len(pts)
    pf = factory("sensor_msgs/msg/PointField")
    cls = factory("sensor_msgs/msg/PointCloud2")
    fields = [pf(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, name in enumerate("xyz")]
    return cls(header=make_header(factory, stamp_ns, frame_id), height=1, width=n, fields=fields,
               is_bigendian=False, point_step=12, row_step=12 * n, data=_uint8_field(cls, pts.tobytes()),
               is_dense=bool(np.all(np.isfinite(pts))))


_LEVEL_NAMES = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}


def make_diagnostic_array(factory: MessageFactory, stamp_ns: int, report: DiagnosticReport, name: str,
                          hardware_id: str = "") -> Any:
    """``diagnostic_msgs/DiagnosticArray`` with one status from ``report``.

    The level is taken from the status class's own constants: rclpy's are ``bytes``, the rosbags
    ones ``int``.
    """
    status_cls = factory("diagnostic_msgs/msg/DiagnosticStatus")
    kv = factory("diagnostic_msgs/msg/KeyValue")
    status = status_cls(level=getattr(status_cls, _LEVEL_NAMES[report.level]), name=name, message=report.message,
                        hardware_id=hardware_id, values=[kv(key=k, value=v) for k, v in report.values])
    return factory("diagnostic_msgs/msg/DiagnosticArray")(header=make_header(factory, stamp_ns, ""), status=[status])


# ---------------------------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------------------------


@dataclass
class KeyframeOutput:
    """What one keyframe set produced.

    ``result`` is None when the keyframe was not added (older than the map's newest keyframe, or
    ``rejected``: its messages hold values the map cannot use, such as a NaN position, point or
    intrinsic; ``rejected`` says why); ``path`` is the corrected path to publish then;
    ``warnings`` and ``info`` are for the node's logger (``info``: loops closed).
    """

    stamp_ns: int
    result: LoopClosureResult | None
    path: Any = None
    warnings: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    rejected: str = ""


class LoopClosureDiagnostics:
    """Collects per-keyframe results between two diagnostics reports (thread-safe).

    The level is ERROR when a keyframe set could not be processed in the period; WARN when the
    PGO fell back from fp16 during the period, when keyframes were dropped (backlog full, a part
    never arrived, older than the map, or rejected as invalid), when an interrupted map save was
    cleaned up, and while no keyframe has arrived at all.
    """

    def __init__(self, now: float | None = None) -> None:
        self._lock = threading.Lock()
        self._last_report = time.monotonic() if now is None else now
        self._received = 0
        self._processed = 0
        self._loops = 0
        self._stale = 0
        self._rejected = 0  # in the period
        self._rejected_total = 0
        self._last_rejection = ""
        self._proc_times: list[float] = []
        self._errors: list[str] = []
        self._ever_received = False
        self._fallbacks_at_report = 0
        self._drops_at_report = 0
        self._incomplete_at_report = 0
        self._stale_copies_at_report = 0

    def record_received(self) -> None:
        with self._lock:
            self._received += 1
            self._ever_received = True

    def record(self, output: KeyframeOutput) -> None:
        with self._lock:
            if output.rejected:
                self._rejected += 1
                self._rejected_total += 1
                self._last_rejection = output.rejected
                return
            if output.result is None:
                self._stale += 1
                return
            self._processed += 1
            self._loops += len(output.result.accepted)
            self._proc_times.append(output.result.timings.get("total", 0.0))

    def record_error(self, message: str) -> None:
        with self._lock:
            self._errors.append(message)

    def report(self, stats: Mapping[str, Any], backlog: int = 0, dropped: int = 0, incomplete: int = 0,
               now: float | None = None) -> DiagnosticReport:
        """The status for the period since the previous report (``stats``: ``LoopClosureStatistics.as_dict()``)."""
        now = time.monotonic() if now is None else now
        rejected = dict(stats.get("loops_rejected", {}))
        with self._lock:
            period = max(now - self._last_report, 1e-9)
            fallbacks = int(stats.get("fp16_fallbacks", 0))
            if fallbacks < self._fallbacks_at_report:  # the pipeline was reset or a map loaded
                self._fallbacks_at_report = 0
            new_fallbacks = fallbacks - self._fallbacks_at_report
            new_drops = dropped - self._drops_at_report
            new_incomplete = incomplete - self._incomplete_at_report
            stale_copies = int(stats.get("stale_map_copies", 0))
            if stale_copies < self._stale_copies_at_report:  # the pipeline was reset
                self._stale_copies_at_report = 0
            new_stale_copies = stale_copies - self._stale_copies_at_report
            values = [
                ("keyframes", str(stats.get("keyframes", 0))),
                ("keyframe rate [Hz]", f"{self._processed / period:.2f}"),
                ("keyframes in period", str(self._processed)),
                ("loop candidates", str(stats.get("candidates", 0))),
                ("loops accepted", str(stats.get("loops_accepted", 0))),
                ("loops accepted in period", str(self._loops)),
                ("loops rejected", str(sum(rejected.values()))),
                *((f"loops rejected: {reason}", str(count)) for reason, count in sorted(rejected.items())),
                ("loops removed by graph", str(stats.get("loops_removed_by_graph", 0))),
                ("PGO runs", str(stats.get("pgo_runs", 0))),
                ("last PGO time [ms]", f"{1e3 * float(stats.get('last_pgo_time_s', 0.0)):.1f}"),
                ("total PGO time [s]", f"{float(stats.get('total_pgo_time_s', 0.0)):.3f}"),
                ("last PGO CG iterations", str(stats.get("last_pgo_cg_iterations", 0))),
                ("fp16 fallbacks", str(fallbacks)),
                ("fp16 fallbacks in period", str(new_fallbacks)),
                ("preconditioner factorisations", str(stats.get("preconditioner_factorizations", 0))),
                ("last refactor reason", str(stats.get("last_refactor_reason", "")) or "-"),
                ("processing time [ms]",
                 f"{1e3 * float(np.mean(self._proc_times)):.1f}" if self._proc_times else "-"),
                ("backlog", str(backlog)),
                ("dropped keyframes", str(dropped)),
                ("incomplete keyframe sets", str(incomplete)),
                ("keyframes older than the map in period", str(self._stale)),
                ("keyframes rejected (invalid)", str(self._rejected_total)),
                ("keyframes rejected in period", str(self._rejected)),
                ("stale map copies recovered", str(stale_copies)),
                ("errors in period", str(len(self._errors))),
            ]  # fmt: skip
            problems: list[str] = []
            level = 0
            if self._errors:
                level = 2
                problems.append(f"{len(self._errors)} keyframe(s) failed: {self._errors[-1]}")
            if new_fallbacks > 0:
                level = max(level, 1)
                problems.append(f"{new_fallbacks} fp16 fallback(s) in PGO")
            if new_drops > 0:
                level = max(level, 1)
                problems.append(f"{new_drops} keyframe(s) dropped (backlog full)")
            if new_incomplete > 0:
                level = max(level, 1)
                problems.append(f"{new_incomplete} keyframe set(s) incomplete (a part never arrived)")
            if self._stale:
                level = max(level, 1)
                problems.append(f"{self._stale} keyframe(s) older than the map's newest dropped "
                                "(bag restarted? call ~/reset)")
            if self._rejected:
                level = max(level, 1)
                problems.append(f"{self._rejected} keyframe(s) rejected as invalid: {self._last_rejection}")
            if new_stale_copies > 0:
                level = max(level, 1)
                problems.append(f"{new_stale_copies} stale map copy(ies) of an interrupted save recovered")
            if not self._ever_received:
                level = max(level, 1)
                problems.append("no keyframe yet (check the keyframe topics and input_reliability)")
            if problems:
                message = "; ".join(problems)
            else:
                message = (f"{stats.get('keyframes', 0)} keyframes, {stats.get('loops_accepted', 0)} loops"
                           + (f"; {self._loops} closed in period" if self._loops else ""))
            self._last_report = now
            self._received = self._processed = self._loops = self._stale = self._rejected = 0
            self._stale_copies_at_report = stale_copies
            self._proc_times, self._errors = [], []
            self._fallbacks_at_report = fallbacks
            self._drops_at_report = dropped
            self._incomplete_at_report = incomplete
        return DiagnosticReport(level, message, values)


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------


@dataclass
class NodeSettings:
    """The parameters that may change at run time (:data:`RUNTIME_PARAMETERS`)."""

    map_frame: str
    odom_frame: str
    publish_tf: bool
    tf_rate: float
    tf_future_tolerance: float
    map_publish_period: float
    diagnostics_period: float
    map_file: str


@dataclass
class ParameterChange:
    """Outcome of :meth:`LoopClosureRunner.set_parameters`; ``changed`` names what was applied."""

    successful: bool
    reason: str = ""
    changed: tuple[str, ...] = ()


def _recovered_note(count: int) -> str:
    return f"; recovered {count} stale copy(ies) an interrupted save left" if count > 0 else ""


class LoopClosureRunner:
    """Runs the loop closure on keyframe triplets and builds the node's messages and service answers.

    ``values`` are the node's parameter values (missing ones take the defaults of
    :data:`~mp_slam_ros.ros.parameters.LC_NODE_PARAMETERS`); ``loop_closure`` replaces the pipeline
    built from them (tests inject one with a small vocabulary).  Keyframe ids are assigned here in
    arrival order: the messages do not carry vo_node's ids, and after a map is loaded they continue
    above the map's largest id.
    """

    def __init__(self, values: Mapping[str, Any], factory: MessageFactory,
                 loop_closure: LoopClosure | None = None) -> None:
        merged = default_values(LC_NODE_PARAMETERS)
        merged.update({k: list(v) if isinstance(v, (tuple, np.ndarray)) else v for k, v in values.items()})
        for s in LC_NODE_PARAMETERS:
            problem = s.problem(merged[s.name])
            if problem:
                raise ValueError(f"{LC_NODE_NAME}: parameter '{s.name}' {problem}")
        self.config = lc_config_from_parameters(merged)
        problem = rigid_transform_problem(merged["T_base_camera"])
        if problem:
            raise ValueError(f"{LC_NODE_NAME}: parameter 'T_base_camera' {problem}")
        self.T_base_camera = np.asarray(merged["T_base_camera"], dtype=np.float64).reshape(4, 4)
        if loop_closure is None:
            # Loaded now so a bad preset name or YAML path fails at start-up, not at the first keyframe.
            try:
                precision = load_precision(self.config.precision)
            except ValueError as err:
                raise ValueError(f"{LC_NODE_NAME}: parameter 'precision': {err}") from None
            loop_closure = LoopClosure(self.config, precision=precision)
        self.lc = loop_closure
        self.factory = factory
        self.settings = NodeSettings(**{name: merged[name] for name in RUNTIME_PARAMETERS})
        self.skipped = 0  # repeated keyframes (same stamp as the newest one)
        self.rejected = 0  # keyframes whose messages could not make a valid keyframe
        self._lock = threading.RLock()
        self._state_lock = threading.Lock()
        self._map_version = 0
        self._published_map_version = 0
        self._last_tf_stamp: int | None = None
        self._warned_frames: set[str] = set()
        self._next_id = 0
        self._snapshot()

    # -- state shared with the timers ------------------------------------------------------
    def _snapshot(self) -> None:
        """Copy what the TF and diagnostics timers read (call with ``_lock`` held or before threads)."""
        stats = self.lc.stats.as_dict()
        T = np.array(self.lc.T_map_odom, dtype=np.float64)
        latest = self.lc.latest_stamp_ns
        with self._state_lock:
            self._stats = stats
            self._T_map_odom = T
            self._latest_stamp = latest

    def _resync_ids(self) -> None:
        ids, _, _ = self.lc.corrected_poses()
        self._next_id = int(ids.max()) + 1 if len(ids) else 0

    @property
    def stats(self) -> dict[str, Any]:
        """The pipeline's statistics after the last keyframe or service call."""
        with self._state_lock:
            return dict(self._stats)

    @property
    def T_map_odom(self) -> np.ndarray:
        with self._state_lock:
            return self._T_map_odom.copy()

    @property
    def latest_stamp_ns(self) -> int | None:
        with self._state_lock:
            return self._latest_stamp

    # -- processing ------------------------------------------------------------------------
    def process(self, msgs: Sequence[Any]) -> KeyframeOutput | None:
        """Add one keyframe triplet (pose, cloud, camera_info); None when it repeats the newest keyframe.

        A triplet whose messages cannot make a keyframe (stamps that disagree, a malformed cloud, a
        non-finite pose, point or intrinsic: a ``MessageFormatError`` from the conversion) is
        rejected: ``result`` None, ``rejected`` and a warning say why, ``self.rejected`` counts it,
        and the map is unchanged.  A keyframe older than the map's newest is not added either (the
        pose graph chains keyframes in time order): the output says so with a warning.
        """
        if len(msgs) != len(KEYFRAME_PARTS):
            raise ValueError(f"a keyframe is {len(KEYFRAME_PARTS)} messages (pose, cloud, camera_info), "
                             f"got {len(msgs)}")
        pose, cloud, info = msgs
        stamp = stamp_to_ns(pose.header.stamp)
        warnings: list[str] = []
        frame = str(pose.header.frame_id)
        if frame and frame != self.settings.odom_frame and frame not in self._warned_frames:
            self._warned_frames.add(frame)
            warnings.append(f"keyframe poses are in '{frame}' but odom_frame is '{self.settings.odom_frame}': "
                            "map -> odom will name the wrong child frame")
        with self._lock:
            latest = self.lc.latest_stamp_ns
            if latest is not None and stamp == latest:
                self.skipped += 1
                return None
            if latest is not None and stamp < latest:
                warnings.append(f"keyframe at {stamp * 1e-9:.3f} s is older than the map's newest "
                                f"({latest * 1e-9:.3f} s): not added (bag restarted? call ~/reset)")
                return KeyframeOutput(stamp, None, warnings=warnings)
            try:
                keyframe = keyframe_from_messages(pose, cloud, info, self._next_id, self.T_base_camera)
                # The cloud's u v are undistorted pixels of the intrinsics in p; the pipeline's PnP and
                # the saved map need that pinhole camera, not the raw calibration in k/d.
                keyframe.camera = camera_info_to_camera(info, rectified=True)
            except MessageFormatError as err:
                # One bad keyframe must neither enter the map (a NaN there poisons PGO, the path and
                # every later save) nor stop the node: it is dropped, counted and reported.
                self.rejected += 1
                warnings.append(f"keyframe at {stamp * 1e-9:.3f} s rejected, not added to the map: {err}")
                return KeyframeOutput(stamp, None, warnings=warnings, rejected=str(err))
            result = self.lc.add_keyframe(keyframe)
            self._next_id += 1
            self._map_version += 1
            self._snapshot()
            path = self._path_message_locked()
        info_lines = [f"loop closed: keyframe {e.query_id} -> {e.match_id} ({e.inliers}/{e.matches} inliers)"
                      + (f", PGO {1e3 * result.timings.get('pgo', 0.0):.1f} ms" if result.optimized else "")
                      for e in result.accepted]
        if result.rejected.get("graph_outlier"):
            warnings.append("a verified loop was removed by the pose graph (its robust weight collapsed)")
        return KeyframeOutput(stamp, result, path, warnings, info_lines)

    # -- messages --------------------------------------------------------------------------
    def _path_message_locked(self) -> Any:
        _ids, stamps, T = self.lc.corrected_poses()
        latest = self.lc.latest_stamp_ns
        return make_path(self.factory, latest or 0, self.settings.map_frame,
                         zip(stamps.tolist(), T, strict=True))

    def path_message(self) -> Any:
        """``nav_msgs/Path`` of the corrected keyframe poses in ``map_frame``, stamped with the newest keyframe."""
        with self._lock:
            return self._path_message_locked()

    def map_message(self, force: bool = False, blocking: bool = False) -> Any | None:
        """The landmark map (x y z float32 in ``map_frame``), or None when unchanged since the last one.

        Not ``blocking``: None also while the pipeline is busy (an optimisation), so the timer
        never stalls the executor; the next period publishes it.
        """
        if not self._lock.acquire(blocking=blocking):
            return None
        try:
            if not force and self._map_version == self._published_map_version:
                return None
            points = self.lc.landmark_map()
            stamp = self.lc.latest_stamp_ns or 0
            self._published_map_version = self._map_version
            return make_xyz_cloud(self.factory, stamp, self.settings.map_frame, points)
        finally:
            self._lock.release()

    def tf_stamp_ns(self, now_ns: int | None = None) -> int | None:
        """Stamp of the next ``map -> odom``: the newest keyframe's (or ``now_ns``, when later) + tolerance.

        None before the first keyframe when no clock is given.  Stamping ahead by
        ``tf_future_tolerance`` lets tf2 look up the newest odometry through the map without
        extrapolating; following the clock between keyframes keeps the stamps increasing.
        """
        base = self.latest_stamp_ns
        if now_ns is not None and now_ns > 0 and (base is None or now_ns > base):
            base = int(now_ns)
        if base is None:
            return None
        return base + round(self.settings.tf_future_tolerance * _NS)

    def tf_message(self, now_ns: int | None = None) -> Any | None:
        """``map -> odom`` TransformStamped, or None (publish_tf off, nothing to stamp it with, or the
        stamp would not advance: tf2 drops a repeated stamp with a warning)."""
        if not self.settings.publish_tf:
            return None
        stamp = self.tf_stamp_ns(now_ns)
        with self._state_lock:
            if stamp is None or (self._last_tf_stamp is not None and stamp <= self._last_tf_stamp):
                return None
            self._last_tf_stamp = stamp
            T = self._T_map_odom.copy()
        return make_transform_stamped(self.factory, stamp, T, self.settings.map_frame, self.settings.odom_frame)

    def diagnostics_message(self, diagnostics: LoopClosureDiagnostics, stamp_ns: int, name: str,
                            backlog: int = 0, dropped: int = 0, incomplete: int = 0,
                            now: float | None = None) -> Any:
        """``diagnostic_msgs/DiagnosticArray`` for the period (see :class:`LoopClosureDiagnostics`)."""
        report = diagnostics.report(self.stats, backlog=backlog, dropped=dropped, incomplete=incomplete, now=now)
        return make_diagnostic_array(self.factory, stamp_ns, report, name, hardware_id=self.settings.map_frame)

    # -- services --------------------------------------------------------------------------
    def _map_path(self, path: str | None) -> tuple[str | None, str]:
        text = self.settings.map_file if path is None else path
        if not str(text).strip():
            return None, ("parameter 'map_file' is empty: set it first (ros2 param set <node> map_file "
                          "<directory>)")
        return os.path.abspath(os.path.expanduser(str(text))), ""

    def reset(self) -> tuple[bool, str]:
        """Forget every keyframe, loop and the map; ``map -> odom`` goes back to identity."""
        with self._lock:
            dropped = self.lc.num_keyframes
            self.lc.reset()
            self._resync_ids()
            self._map_version += 1
            self._snapshot()
        return True, f"loop closure reset: {dropped} keyframe(s) dropped, map -> odom is identity"

    def save_map(self, path: str | None = None) -> tuple[bool, str]:
        """Save the map to ``path`` (default: the ``map_file`` parameter); (success, message)."""
        target, problem = self._map_path(path)
        if target is None:
            return False, f"cannot save the map: {problem}"
        with self._lock:
            n, loops = self.lc.num_keyframes, int(self.lc.stats.loops_accepted)
            copies = self.lc.stats.stale_map_copies
            try:
                self.lc.save_map(target)
            except (OSError, ValueError) as err:
                return False, f"cannot save the map to {target}: {err}"
            except Exception as err:  # a service answers, it does not raise; the old map stays on disk
                return False, f"cannot save the map to {target}: {type(err).__name__}: {err}"
            finally:
                self._snapshot()  # the stale-copy count may have grown even when the save failed
            recovered = _recovered_note(self.lc.stats.stale_map_copies - copies)
        return True, f"saved {n} keyframe(s) and {loops} loop(s) to {target}{recovered}"

    def load_map(self, path: str | None = None) -> tuple[bool, str]:
        """Replace the running map with the one at ``path`` (default: ``map_file``); (success, message).

        A missing, truncated or corrupt map answers ``False`` with the file and field named, and
        the running map is left as it was.
        """
        target, problem = self._map_path(path)
        if target is None:
            return False, f"cannot load a map: {problem}"
        with self._lock:
            copies = self.lc.stats.stale_map_copies
            try:
                self.lc.load_map(target)
            except MapFileError as err:
                self._snapshot()
                return False, f"cannot load the map (the running map is unchanged): {err}"
            except Exception as err:  # any failure is an answer; the pipeline swaps only when all is valid
                self._snapshot()
                return False, (f"cannot load the map from {target} (the running map is unchanged): "
                               f"{type(err).__name__}: {err}")
            self._resync_ids()
            self._map_version += 1
            self._snapshot()
            n, loops = self.lc.num_keyframes, int(self.lc.stats.loops_accepted)
            recovered = _recovered_note(self.lc.stats.stale_map_copies - copies)
        return True, f"loaded {n} keyframe(s) and {loops} loop(s) from {target}{recovered}"

    # -- parameters ------------------------------------------------------------------------
    def set_parameters(self, changes: Mapping[str, Any]) -> ParameterChange:
        """Check and apply run-time parameter changes, all or none.

        Read-only parameters are refused (rclpy refuses them too, from the descriptor); the node
        re-creates the timers whose period changed (``changed``).
        """
        for name, value in changes.items():
            if name == "use_sim_time":
                continue
            try:
                s = spec(name, LC_NODE_NAME)
            except KeyError as err:
                return ParameterChange(False, str(err.args[0]))
            if s.read_only:
                return ParameterChange(False, f"'{name}' is read-only: it is fixed at start-up (restart the node)")
            problem = s.problem(value)
            if problem:
                return ParameterChange(False, f"'{name}' {problem}")
        changed = []
        for name, value in changes.items():
            if name in RUNTIME_PARAMETERS and getattr(self.settings, name) != value:
                setattr(self.settings, name, value)
                changed.append(name)
        if "map_frame" in changed:
            with self._lock:
                self._map_version += 1  # republish the map in the new frame
        return ParameterChange(True, "", tuple(changed))
