"""What the ROS 2 end-to-end tests share: synthetic bags, a recording node, service and parameter calls.

Imported only by tests that already skipped without rclpy.  Every test that uses it runs real
processes over real DDS, kept on this host (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) and in a
private domain (``make test-ros`` sets ``ROS_DOMAIN_ID``; :func:`private_ros_env` picks one otherwise).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import unittest
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from nav_msgs.msg import Path as PathMsg
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

REPO_ROOT = Path(__file__).resolve().parents[1]
VO, LC = "vo_node", "loop_closure_node"
CONFIG = REPO_ROOT / "config"
LAUNCH = REPO_ROOT / "launch"


def private_ros_env() -> dict[str, str]:
    """The environment of a ROS 2 subprocess: this host only, a test-private domain."""
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", "77")
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    return env


os.environ.update({k: v for k, v in private_ros_env().items() if k.startswith(("ROS_", "RCUTILS_"))})


def synth_bag(out_dir: Path, mode: str, duration: float | None = None) -> Path:
    """A synthetic two-lap room (320x240, 10 Hz) as an mcap rosbag2, as `mp-slam synth` writes it."""
    cmd = [sys.executable, "-m", "mp_slam_ros.cli", "synth", "--trajectory", "two_lap_room", "--mode", mode,
           "--formats", "mcap", "--width", "320", "--height", "240", "--rate", "10", "--out", str(out_dir),
           "--no-progress"]
    if duration is not None:
        cmd += ["--duration", str(duration)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=private_ros_env())
    bags = sorted(p for p in out_dir.iterdir() if p.is_dir() and p.name.endswith("_mcap"))
    assert len(bags) == 1, f"expected one mcap bag in {out_dir}, got {bags}"
    return bags[0]


def write_params(path: Path, profile: str = "desktop", **vo_overrides: Any) -> Path:
    """A params file: the profile's sections plus ``vo_overrides`` for vo_node (replay reads it too)."""
    import yaml

    data = yaml.safe_load((CONFIG / f"profile_{profile}.yaml").read_text())
    data["/**/vo_node"]["ros__parameters"].update(vo_overrides)
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class Recording:
    """Everything the recorder saw, by topic (thread-safe appends from the executor thread)."""

    odom: list[tuple[int, np.ndarray, float]] = field(default_factory=list)  # stamp, position, arrival [s]
    keyframes: list[int] = field(default_factory=list)
    tf: list[tuple[str, str, int]] = field(default_factory=list)  # parent, child, stamp
    tf_static: list[tuple[str, str]] = field(default_factory=list)
    diagnostics: dict[str, list[tuple[int, str, dict[str, str]]]] = field(default_factory=dict)
    path: Any = None


class Recorder(Node):
    """Subscribes to what the SLAM nodes publish and keeps it in a :class:`Recording`."""

    def __init__(self) -> None:
        super().__init__("mp_slam_test_recorder")
        self.rec = Recording()
        self.lock = threading.Lock()
        reliable = QoSProfile(depth=2000, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(Odometry, "/odom", self._on_odom, reliable)
        self.create_subscription(PoseStamped, "/keyframe/pose", self._on_keyframe, reliable)
        self.create_subscription(TFMessage, "/tf", self._on_tf, reliable)
        self.create_subscription(TFMessage, "/tf_static", self._on_tf_static, latched)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, reliable)
        self.create_subscription(PathMsg, "/path", self._on_path, latched)

    @staticmethod
    def _ns(stamp: Any) -> int:
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)

    def _on_odom(self, msg: Odometry) -> None:
        p = msg.pose.pose.position
        with self.lock:
            self.rec.odom.append((self._ns(msg.header.stamp), np.array([p.x, p.y, p.z]), time.monotonic()))

    def _on_keyframe(self, msg: PoseStamped) -> None:
        with self.lock:
            self.rec.keyframes.append(self._ns(msg.header.stamp))

    def _on_tf(self, msg: TFMessage) -> None:
        with self.lock:
            self.rec.tf.extend((t.header.frame_id, t.child_frame_id, self._ns(t.header.stamp)) for t in msg.transforms)

    def _on_tf_static(self, msg: TFMessage) -> None:
        with self.lock:
            self.rec.tf_static.extend((t.header.frame_id, t.child_frame_id) for t in msg.transforms)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self.lock:
            for s in msg.status:
                level = s.level[0] if isinstance(s.level, bytes) else int(s.level)
                self.rec.diagnostics.setdefault(s.name, []).append(
                    (level, s.message, {kv.key: kv.value for kv in s.values}))

    def _on_path(self, msg: PathMsg) -> None:
        with self.lock:
            self.rec.path = msg

    def last_diagnostics(self, node: str) -> tuple[int, str, dict[str, str]] | None:
        with self.lock:
            for name, entries in self.rec.diagnostics.items():
                if name.startswith(f"/{node}:") and entries:
                    return entries[-1]
        return None

    def spin_until(self, condition, timeout: float, what: str) -> None:
        """Spin until ``condition()`` holds; fails with ``what`` after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.1)
            if condition():
                return
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.05)

    def call(self, service_type: Any, name: str, request: Any, timeout: float = 20.0) -> Any:
        """Call a service and wait for its answer (the node must stay alive to give one)."""
        client = self.create_client(service_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
            future = client.call_async(request)
            self.spin_until(future.done, timeout, f"the answer of {name}")
            return future.result()
        finally:
            self.destroy_client(client)

    def trigger(self, name: str) -> Any:
        return self.call(Trigger, name, Trigger.Request())

    def set_parameter(self, node: str, name: str, value: Any) -> Any:
        """``ros2 param set``: the node's SetParametersResult."""
        v = ParameterValue()
        if isinstance(value, bool):
            v.type, v.bool_value = ParameterType.PARAMETER_BOOL, value
        elif isinstance(value, int):
            v.type, v.integer_value = ParameterType.PARAMETER_INTEGER, value
        elif isinstance(value, float):
            v.type, v.double_value = ParameterType.PARAMETER_DOUBLE, value
        else:
            v.type, v.string_value = ParameterType.PARAMETER_STRING, str(value)
        request = SetParameters.Request(parameters=[ParameterMsg(name=name, value=v)])
        return self.call(SetParameters, f"/{node}/set_parameters", request).results[0]


def play_bag(r: Recorder, bag: Path, timeout: float) -> tuple[int, str]:
    """``ros2 bag play --clock`` of ``bag`` to its end, the recorder spinning meanwhile; (exit code, stderr)."""
    with subprocess.Popen(["ros2", "bag", "play", "--clock", "100", str(bag)], env=private_ros_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as play:
        try:
            r.spin_until(lambda: play.poll() is not None, timeout, f"ros2 bag play {bag.name} to end")
        finally:
            if play.poll() is None:
                play.kill()
        return play.wait(), play.stderr.read()


def check_bag_replay(tc: Any, r: Recorder, bag: Path, params: Path, work: Path, image_topic: str,
                     expect_loops: bool) -> None:
    """Play ``bag`` into the running slam.launch.py and check it as a robot user would (module doc)."""
    # The nodes compile their kernels before they subscribe: play only once both listen.
    r.spin_until(lambda: r.count_publishers("/odom") > 0 and r.count_subscribers(image_topic) > 0
                 and r.count_subscribers("/keyframe/pose") > 1, 120.0, "vo_node and loop_closure_node")
    code, stderr = play_bag(r, bag, timeout=300.0)
    tc.assertEqual(code, 0, stderr)
    # vo_node's last report while the bag played (afterwards it rightly warns: no input).
    vo_during_play = r.last_diagnostics(VO)
    frames = frame_count(bag, image_topic)
    # Whatever is still queued gets two seconds: a node that keeps up has (almost) nothing left.
    r.spin_for(2.0)  # (vo_during_play above: diagnostics_period is 1 s, so a report came in while it played)
    rec = r.rec
    with r.lock:
        odom = list(rec.odom)
        keyframes = list(rec.keyframes)
    # Odometry at >= 90 % of the input frame rate: what is missing two seconds after the bag ended
    # was dropped or is still queued behind a node that does not keep up.
    tc.assertGreaterEqual(len(odom), 0.9 * frames, f"{len(odom)} odometry messages for {frames} frames")

    # Live equals offline: `mp-slam replay` of the same bag with the same parameters.
    out = work / "offline"
    subprocess.run([sys.executable, "-m", "mp_slam_ros.cli", "replay", str(bag), "--out", str(out),
                    "--config", str(params), "--precision", "mixed", "--no-bag", "--no-loop-closure",
                    "--no-progress"], check=True, env=private_ros_env(), stdout=subprocess.DEVNULL)
    offline = read_tum(out / "odometry.tum")
    live = {round(stamp * 1e-6): p for stamp, p, _ in odom}  # by millisecond: TUM stamps are decimal
    common = sorted(set(live) & set(offline))
    tc.assertGreaterEqual(len(common), 0.9 * frames)
    diff = np.array([np.linalg.norm(live[s] - offline[s]) for s in common])
    tc.assertLessEqual(float(np.sqrt(np.mean(diff**2))), 1e-3, f"live vs offline RMS {diff.mean()}")
    tc.assertLessEqual(float(diff.max()), 1e-3)

    # Keyframes reach loop closure, loops close, nothing dropped; the diagnostics are OK.
    r.spin_until(lambda: (d := r.last_diagnostics(LC)) is not None
                 and int(d[2].get("keyframes", -1)) == len(keyframes), 60.0,
                 f"loop closure to hold all {len(keyframes)} keyframes")
    level, message, values = r.last_diagnostics(LC)
    print(f"[e2e] {bag.name}: {len(odom)}/{frames} odometry messages, live vs offline RMS "
          f"{1e3 * float(np.sqrt(np.mean(diff**2))):.4f} mm (max {1e3 * float(diff.max()):.4f} mm), "
          f"{len(keyframes)} keyframes, {values['keyframes']} in loop closure, {values['loops accepted']} loops, "
          f"{values['dropped keyframes']} dropped")
    tc.assertGreater(len(keyframes), 20)
    tc.assertEqual(int(values["dropped keyframes"]), 0)
    tc.assertEqual(int(values["incomplete keyframe sets"]), 0)
    if expect_loops:
        tc.assertGreater(int(values["loops accepted"]), 0, message)
    r.spin_for(1.5)  # one more period: a period with drops or errors would be WARN / ERROR
    level, message, values = r.last_diagnostics(LC)
    tc.assertEqual(level, 0, message)
    tc.assertIsNotNone(vo_during_play, "no diagnostics from vo_node")
    vo_level, vo_message, vo_values = vo_during_play
    tc.assertEqual(vo_level, 0, vo_message)
    vo_level, vo_message, vo_values = r.last_diagnostics(VO)
    tc.assertEqual(int(vo_values.get("dropped frames", "0")), 0, vo_values)

    # TF: map -> odom -> base_link, stamped in bag time; the extrinsic comes from the bag.
    with r.lock:
        tf = list(rec.tf)
        static = list(rec.tf_static)
    # Bag time: the recording's own span (the nodes stamp TF from image stamps and /clock, which runs
    # to the bag's end even when the odometry still lags behind), not wall time.
    first, last = bag_time_range(bag)
    pairs = {(p, c) for p, c, _ in tf}
    tc.assertIn(("odom", "base_link"), pairs)
    tc.assertIn(("map", "odom"), pairs)
    for parent, child, stamp in tf:
        tc.assertTrue(first - 1e9 <= stamp <= last + 1e9, f"{parent}->{child} at {stamp} ns: not bag time")
    tc.assertTrue(any(p == "base_link" for p, _ in static), static)


def bag_time_range(bag: Path) -> tuple[int, int]:
    """First and last message stamps [ns] of a rosbag2, from its metadata."""
    import yaml

    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    start = int(meta["starting_time"]["nanoseconds_since_epoch"])
    return start, start + int(meta["duration"]["nanoseconds"])


def frame_count(bag: Path, topic: str) -> int:
    import yaml

    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    counts = {t["topic_metadata"]["name"]: t["message_count"] for t in meta["topics_with_message_count"]}
    return int(counts[topic])


def read_tum(path: Path) -> dict[int, np.ndarray]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        t, x, y, z = (float(v) for v in line.split()[:4])
        out[round(t * 1e3)] = np.array([x, y, z])
    return out


class RecorderTestCase(unittest.TestCase):
    """A launch test's active tests: one rclpy context and one :class:`Recorder` for the class."""

    rec: Recorder

    @classmethod
    def setUpClass(cls) -> None:
        rclpy.init()
        cls.rec = Recorder()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.rec.destroy_node()
        rclpy.shutdown()


class CleanShutdownChecks:
    """Post-shutdown checks (mix into a ``@launch_testing.post_shutdown_test()`` TestCase)."""

    def test_both_nodes_exit_0(self, proc_info: Any, proc_output: Any) -> None:
        import launch_testing.asserts

        launch_testing.asserts.assertExitCodes(proc_info)
        text = "".join(o.text.decode(errors="replace") for o in proc_output)
        self.assertNotIn("Traceback", text)  # type: ignore[attr-defined]
