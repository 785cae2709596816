"""``vo_node``: the rclpy shell of the visual odometry.

Inputs (``mode`` stereo): ``left_image_topic``, ``right_image_topic``, ``left_info_topic``,
``right_info_topic``; (``mode`` rgbd): ``rgb_image_topic``, ``depth_image_topic``,
``rgb_info_topic``.  They are subscribed through ``message_filters`` with the sensor-data QoS
profile (depth ``queue_size``, reliability ``input_reliability``) and paired by an
``ApproximateTimeSynchronizer`` (``sync_slop``).  The odometry is built at the first synchronised
set, from its camera_info (see :class:`~mp_slam_ros.ros.vo_core.VORunner`).

Outputs: ``odom`` (nav_msgs/Odometry in ``odom_frame``, child ``base_frame``, stamped with the
image stamp; twist in ``base_frame``), the ``odom_frame -> base_frame`` transform on /tf when
``publish_tf``, each keyframe as ``keyframe/pose`` (PoseStamped), ``keyframe/cloud``
(PointCloud2) and ``keyframe/camera_info`` (CameraInfo) with one stamp (layout in
:mod:`mp_slam_ros.io.ros_messages`), and ``/diagnostics`` every ``diagnostics_period``.  The
``base_frame -> camera_frame`` transform is not published: it belongs to the robot description
(robot_state_publisher, a static_transform_publisher, or a bag's /tf_static).

Extrinsic: an explicit ``T_base_camera`` parameter wins; otherwise the node looks up
``base_frame -> <image header.frame_id>`` with tf2 at the first frame.  When neither gives it and
the images are not in ``base_frame``, the camera frame is used as the base frame and the node warns
once (the odometry then is the camera's pose under ``base_frame``'s name).

Processing model: the synchroniser callback only queues the message set; one worker thread
converts and processes.  ``process_every_frame`` true (bag replay) processes every set in order,
false (live) only the newest, dropping older sets when processing falls behind; drops are counted
in the diagnostics.

Parameters: every entry of :data:`mp_slam_ros.ros.parameters.VO_NODE_PARAMETERS`, declared with
type, description, unit, constraints and ``read_only`` for those fixed at start-up.
``use_sim_time`` is rclpy's standard parameter (not redeclared here): with it, the node's clock
follows /clock, which stamps the diagnostics; odometry and keyframes always carry the image stamp.
"""

from __future__ import annotations

import threading
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from message_filters import ApproximateTimeSynchronizer, Subscriber
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from tf2_ros import Buffer, TransformBroadcaster, TransformException, TransformListener

from ..io.ros_messages import (
    importlib_factory,
    keyframe_to_messages,
    make_odometry,
    make_transform_stamped,
    transform_to_matrix,
)
from .base_node import descriptor, plain, run_node, steady_timer, warm_up_kernels
from .parameters import NODE_NAME, VO_NODE_PARAMETERS, spec, vo_config_from_parameters
from .vo_core import (
    DiagnosticsAccumulator,
    FrameBacklog,
    StepOutput,
    VORunner,
    base_camera_is_explicit,
    input_names,
)

__all__ = ["VisualOdometryNode", "main"]

_DIAGNOSTIC_LEVELS = {0: DiagnosticStatus.OK, 1: DiagnosticStatus.WARN, 2: DiagnosticStatus.ERROR}

# Keyframes feed loop closure: keep a deep reliable queue so a slow subscriber loses none.
_KEYFRAME_QOS_DEPTH = 100


class VisualOdometryNode(Node):
    """The visual-odometry node (module doc); ``vo_node`` by default."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for s in VO_NODE_PARAMETERS:
            self.declare_parameter(s.name, s.default, descriptor(s))
        values = {s.name: plain(self.get_parameter(s.name).value) for s in VO_NODE_PARAMETERS}
        for s in VO_NODE_PARAMETERS:
            problem = s.problem(values[s.name])
            if problem:
                raise ValueError(f"{node_name}: parameter '{s.name}' {problem}")
        self.config = vo_config_from_parameters(values)
        self._frames = {k: values[k] for k in ("odom_frame", "base_frame", "camera_frame")}
        self._publish_tf = bool(values["publish_tf"])

        try:
            self.runner = VORunner(self.config, rectified=bool(values["rectified"]), sync_slop=values["sync_slop"])
        except ValueError as err:
            raise ValueError(f"{node_name}: parameter 'precision': {err}") from None
        self._base_camera_explicit = base_camera_is_explicit(values["T_base_camera"])
        # base_frame -> image frame from tf (/tf_static) when T_base_camera is not given.
        self.tf_buffer = Buffer()
        self.tf_listener = TransformListener(self.tf_buffer, self, spin_thread=False)
        self.backlog = FrameBacklog(values["backlog_size"], keep_all=bool(values["process_every_frame"]))
        self.diagnostics = DiagnosticsAccumulator()
        self._factory = importlib_factory()
        self.warmup_seconds = warm_up_kernels(self, self.config.precision, ("vo-window",))

        self.odom_pub = self.create_publisher(Odometry, "odom", 10)
        self.kf_pose_pub = self.create_publisher(PoseStamped, "keyframe/pose", _KEYFRAME_QOS_DEPTH)
        self.kf_cloud_pub = self.create_publisher(PointCloud2, "keyframe/cloud", _KEYFRAME_QOS_DEPTH)
        self.kf_info_pub = self.create_publisher(CameraInfo, "keyframe/camera_info", _KEYFRAME_QOS_DEPTH)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.tf_broadcaster = TransformBroadcaster(self)

        qos = QoSProfile(
            history=qos_profile_sensor_data.history,
            depth=values["queue_size"],
            reliability=(ReliabilityPolicy.RELIABLE if values["input_reliability"] == "reliable"
                         else ReliabilityPolicy.BEST_EFFORT),
            durability=qos_profile_sensor_data.durability,
        )
        names = input_names(self.config.mode)
        self._subscribers = [
            Subscriber(self, CameraInfo if name.endswith("_info_topic") else Image, values[name], qos_profile=qos)
            for name in names
        ]
        self._sync = ApproximateTimeSynchronizer(self._subscribers, values["queue_size"], values["sync_slop"])
        self._sync.registerCallback(self._on_synchronised)

        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._diag_timer = steady_timer(self, values["diagnostics_period"], self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name="vo_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"{self.config.mode} visual odometry, precision {self.config.precision}; waiting for "
            + ", ".join(values[n] for n in names)
            + (" (every frame)" if self.backlog.keep_all else " (newest frame only)")
        )

    # -- input ------------------------------------------------------------------------------
    def _on_synchronised(self, *msgs: Any) -> None:
        self.diagnostics.record_received()
        if self.backlog.put(msgs) and self.backlog.keep_all:
            # Live mode (newest frame only) drops by design and only counts; every-frame mode must not.
            self.get_logger().warning(
                f"frame backlog full ({self.backlog.capacity}): dropped the oldest frame, {self.backlog.dropped} "
                "so far; raise backlog_size", throttle_duration_sec=5.0)

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            if p.name == "use_sim_time":
                continue
            try:
                s = spec(p.name)
            except KeyError as err:
                return SetParametersResult(successful=False, reason=str(err.args[0]))
            if s.read_only:
                continue  # rclpy refuses the change itself, with the descriptor's read_only
            problem = s.problem(plain(p.value))
            if problem:
                return SetParametersResult(successful=False, reason=f"'{p.name}' {problem}")
        for p in params:
            if p.name in self._frames:
                self._frames[p.name] = p.value
            elif p.name == "publish_tf":
                self._publish_tf = bool(p.value)
            elif p.name == "process_every_frame":
                self.backlog.keep_all = bool(p.value)
        return SetParametersResult(successful=True)

    # -- processing -------------------------------------------------------------------------
    def _work(self) -> None:
        while not self.backlog.closed:
            msgs = self.backlog.get(timeout=0.5)
            if msgs is None:
                continue
            try:
                if not self.runner.base_camera_resolved:
                    self._resolve_base_camera(msgs)
                out = self.runner.step(msgs)
                if out is None:
                    continue
                for warning in out.warnings:
                    self.get_logger().warning(warning)
                self.diagnostics.record(out)
                if not self.backlog.closed:
                    self._publish(out)
            except Exception as err:  # a bad message must not stop the node
                if self.backlog.closed:
                    break  # shutting down: the publishers may be gone already
                self.diagnostics.record_error(f"{type(err).__name__}: {err}")
                self.get_logger().error(f"cannot process frame: {type(err).__name__}: {err}",
                                        throttle_duration_sec=5.0)

    def _lookup(self, target: str, source: str) -> Any:
        try:
            # Time() = the latest: the extrinsic is static.  The worker may wait; the executor fills tf.
            t = self.tf_buffer.lookup_transform(target, source, Time(), timeout=Duration(seconds=1.0))
        except TransformException:
            return None
        return transform_to_matrix(t.transform)

    def _resolve_base_camera(self, msgs: tuple[Any, ...]) -> None:
        warning = self.runner.resolve_base_camera(msgs[0].header.frame_id, self._frames["base_frame"],
                                                  self._base_camera_explicit, self._lookup)
        if warning:
            self.get_logger().warning(warning)
        else:
            self.get_logger().info(f"T_base_camera from {self.runner.base_camera_source}")

    def _publish(self, out: StepOutput) -> None:
        f = self._factory
        odom, base = self._frames["odom_frame"], self._frames["base_frame"]
        T = out.result.T_odom_base
        self.odom_pub.publish(make_odometry(f, out.stamp_ns, T, odom, base, twist=out.twist))
        if self._publish_tf:
            self.tf_broadcaster.sendTransform(make_transform_stamped(f, out.stamp_ns, T, odom, base))
        kf = out.result.keyframe
        if kf is not None:
            pose, cloud, info = keyframe_to_messages(f, kf, odom, self._frames["camera_frame"])
            self.kf_pose_pub.publish(pose)
            self.kf_cloud_pub.publish(cloud)
            self.kf_info_pub.publish(info)

    def _publish_diagnostics(self) -> None:
        report = self.diagnostics.report(
            self.runner.stats, self.backlog.dropped, self.backlog.keep_all, backlog=len(self.backlog),
            restarts=self.runner.restarts,
        )
        status = DiagnosticStatus(
            level=_DIAGNOSTIC_LEVELS[report.level],
            name=f"{self.get_fully_qualified_name()}: visual odometry",
            message=report.message,
            hardware_id=self._frames["camera_frame"],
            values=[KeyValue(key=k, value=v) for k, v in report.values],
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def destroy_node(self) -> None:
        """Stop the worker before the publishers it uses go away."""
        self.backlog.close()
        if self._worker.is_alive():
            self._worker.join(timeout=5.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """``ros2 run mp_slam_ros vo_node``: spin until Ctrl-C, SIGTERM or shutdown; 0 on a clean stop."""
    return run_node(VisualOdometryNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
