"""``loop_closure_node``: the rclpy shell of the loop closure.

Inputs: the keyframes ``vo_node`` publishes, ``keyframe_pose_topic`` (PoseStamped),
``keyframe_cloud_topic`` (PointCloud2) and ``keyframe_info_topic`` (CameraInfo), all three with
the keyframe's stamp.  They are subscribed with depth ``queue_size`` and reliability
``input_reliability`` (reliable by default, like vo_node's keyframe publishers) and joined by exact
stamp (:class:`~mp_slam_ros.ros.loop_closure_core.KeyframeAssembler`).

Outputs: ``path_topic`` (nav_msgs/Path of the loop-corrected keyframe poses in ``map_frame``,
after every keyframe), ``map_topic`` (sensor_msgs/PointCloud2, x y z float32 in ``map_frame``,
every ``map_publish_period`` when it changed); both transient-local so a late RViz gets the
latest.  ``map_frame -> odom_frame`` on /tf at ``tf_rate`` when ``publish_tf``, stamped with the
newest keyframe's stamp (or the clock, when later) plus ``tf_future_tolerance``; vo_node owns
``odom -> base_link``.  ``/diagnostics`` every ``diagnostics_period``.

Services (std_srvs/Trigger): ``~/reset`` forgets the map; ``~/save_map`` and ``~/load_map`` write
and read the directory in the ``map_file`` parameter (``load_map_on_start`` loads it at start-up).
A failed load answers ``success: false`` with the file and field named and keeps the running map.

Processing model: the subscription callbacks only join and queue complete keyframes (every one,
in order, up to ``backlog_size``); one worker thread runs the pipeline, so a pose-graph
optimisation never blocks the TF timer or the services' executor.

Parameters: every entry of :data:`mp_slam_ros.ros.parameters.LC_NODE_PARAMETERS`, declared with
type, description, unit, constraints and ``read_only`` for those fixed at start-up.
``use_sim_time`` is rclpy's standard parameter: with it the node's clock (TF and diagnostics
stamps) follows /clock; path and map carry keyframe stamps.
"""

from __future__ import annotations

import threading
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, PointCloud2
from std_srvs.srv import Trigger
from tf2_ros import TransformBroadcaster

from ..io.ros_messages import importlib_factory
from .base_node import descriptor, plain, run_node, steady_timer, warm_up_kernels
from .loop_closure_core import (
    KEYFRAME_PARTS,
    KeyframeAssembler,
    KeyframeOutput,
    LoopClosureDiagnostics,
    LoopClosureRunner,
    input_names,
)
from .parameters import LC_NODE_NAME, LC_NODE_PARAMETERS
from .vo_core import FrameBacklog

__all__ = ["LoopClosureNode", "main"]

_MESSAGE_TYPES = {"pose": PoseStamped, "cloud": PointCloud2, "info": CameraInfo}


class LoopClosureNode(Node):
    """The loop-closure node (module doc); ``loop_closure_node`` by default."""

    def __init__(self, node_name: str = LC_NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for s in LC_NODE_PARAMETERS:
            self.declare_parameter(s.name, s.default, descriptor(s))
        values = {s.name: plain(self.get_parameter(s.name).value) for s in LC_NODE_PARAMETERS}
        self._factory = importlib_factory()
        self.runner = LoopClosureRunner(values, self._factory)
        if values["load_map_on_start"]:
            ok, message = self.runner.load_map()
            if not ok:
                raise ValueError(f"{node_name}: load_map_on_start: {message}")
            self.get_logger().info(message)
        self.warmup_seconds = warm_up_kernels(self, str(self.runner.config.precision), ("pgo", "loop"))
        self.assembler = KeyframeAssembler(values["queue_size"])
        self.backlog = FrameBacklog(values["backlog_size"], keep_all=True)
        self.diagnostics = LoopClosureDiagnostics()

        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.path_pub = self.create_publisher(Path, values["path_topic"], latched)
        self.map_pub = self.create_publisher(PointCloud2, values["map_topic"], latched)
        if values["load_map_on_start"]:
            self.path_pub.publish(self.runner.path_message())  # the map itself goes out with the map timer
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.tf_broadcaster = TransformBroadcaster(self)

        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=values["queue_size"],
            reliability=(ReliabilityPolicy.RELIABLE if values["input_reliability"] == "reliable"
                         else ReliabilityPolicy.BEST_EFFORT),
        )
        self._keyframe_subscriptions = [
            self.create_subscription(_MESSAGE_TYPES[part], values[name], self._receiver(part), qos)
            for part, name in zip(KEYFRAME_PARTS, input_names(), strict=True)
        ]
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(Trigger, "~/save_map", self._on_save_map)
        self.create_service(Trigger, "~/load_map", self._on_load_map)

        self._tf_timer = self._map_timer = self._diag_timer = None
        self._make_timers(("tf_rate", "map_publish_period", "diagnostics_period"))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._worker = threading.Thread(target=self._work, name="loop_closure_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"loop closure, precision {self.runner.config.precision}; waiting for keyframes on "
            + ", ".join(self.resolve_topic_name(values[n]) for n in input_names())
        )

    # -- timers -----------------------------------------------------------------------------
    def _make_timers(self, changed: tuple[str, ...]) -> None:
        s = self.runner.settings
        if "tf_rate" in changed:
            if self._tf_timer is not None:
                self.destroy_timer(self._tf_timer)
            self._tf_timer = self.create_timer(1.0 / s.tf_rate, self._publish_tf)
        if "map_publish_period" in changed:
            if self._map_timer is not None:
                self.destroy_timer(self._map_timer)
            self._map_timer = steady_timer(self, s.map_publish_period, self._publish_map)
        if "diagnostics_period" in changed:
            if self._diag_timer is not None:
                self.destroy_timer(self._diag_timer)
            self._diag_timer = steady_timer(self, s.diagnostics_period, self._publish_diagnostics)

    def _publish_tf(self) -> None:
        msg = self.runner.tf_message(self.get_clock().now().nanoseconds)
        if msg is not None:
            self.tf_broadcaster.sendTransform(msg)

    def _publish_map(self, force: bool = False) -> None:
        msg = self.runner.map_message(force=force, blocking=force)
        if msg is not None:
            self.map_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        msg = self.runner.diagnostics_message(
            self.diagnostics, self.get_clock().now().nanoseconds, f"{self.get_fully_qualified_name()}: loop closure",
            backlog=len(self.backlog), dropped=self.backlog.dropped, incomplete=self.assembler.incomplete,
        )
        self.diag_pub.publish(msg)

    # -- input ------------------------------------------------------------------------------
    def _receiver(self, part: str):
        def receive(msg: Any) -> None:
            complete = self.assembler.put(part, msg)
            if complete is not None:
                self.diagnostics.record_received()
                if self.backlog.put(complete):
                    self.get_logger().warning(
                        f"keyframe backlog full ({self.backlog.capacity}): dropped the oldest keyframe, "
                        f"{self.backlog.dropped} so far; raise backlog_size", throttle_duration_sec=5.0)

        return receive

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changes = {p.name: plain(p.value) for p in params}
        outcome = self.runner.set_parameters(changes)
        if outcome.successful:
            self._make_timers(outcome.changed)
        return SetParametersResult(successful=outcome.successful, reason=outcome.reason)

    # -- services ---------------------------------------------------------------------------
    def _answer(self, response: Trigger.Response, ok: bool, message: str) -> Trigger.Response:
        response.success, response.message = ok, message
        # Two call sites: rclpy fixes a call site's severity at its first call.
        if ok:
            self.get_logger().info(message)
        else:
            self.get_logger().error(message)
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        # Keyframes queued before the reset belong to the map being dropped.
        while self.backlog.get(timeout=0) is not None:
            pass
        self.assembler.clear()
        ok, message = self.runner.reset()
        self.path_pub.publish(self.runner.path_message())
        self._publish_map(force=True)
        return self._answer(response, ok, message)

    def _on_save_map(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        return self._answer(response, *self.runner.save_map())

    def _on_load_map(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        ok, message = self.runner.load_map()
        if ok:
            self.path_pub.publish(self.runner.path_message())
            self._publish_map(force=True)
        return self._answer(response, ok, message)

    # -- processing -------------------------------------------------------------------------
    def _work(self) -> None:
        while not self.backlog.closed:
            msgs = self.backlog.get(timeout=0.5)
            if msgs is None:
                continue
            try:
                out = self.runner.process(msgs)
                if out is None:
                    continue
                self._report(out)
                if out.path is not None and not self.backlog.closed:
                    self.path_pub.publish(out.path)
            except Exception as err:  # a bad keyframe must not stop the node
                if self.backlog.closed:
                    break  # shutting down: the publishers may be gone already
                self.diagnostics.record_error(f"{type(err).__name__}: {err}")
                self.get_logger().error(f"cannot process keyframe: {type(err).__name__}: {err}",
                                        throttle_duration_sec=5.0)

    def _report(self, out: KeyframeOutput) -> None:
        self.diagnostics.record(out)
        for line in out.info:
            self.get_logger().info(line)
        for warning in out.warnings:
            self.get_logger().warning(warning)

    def destroy_node(self) -> None:
        """Stop the worker before the publishers it uses go away."""
        self.backlog.close()
        if self._worker.is_alive():
            self._worker.join(timeout=10.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """``ros2 run mp_slam_ros loop_closure_node``: spin until Ctrl-C, SIGTERM or shutdown; 0 on a clean stop."""
    return run_node(LoopClosureNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
