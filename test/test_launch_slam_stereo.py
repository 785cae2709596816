"""End to end in ROS 2: ``slam.launch.py`` (stereo, mixed, sim time) fed by ``ros2 bag play --clock``.

A robot user's replay of a recording: the synthetic two-lap room as an mcap bag (with the camera
extrinsic in /tf_static), both nodes from the installed launch file, real DDS on this host.  Checks
the odometry rate, live against offline (`mp-slam replay` of the same bag), keyframes and loops, the
TF tree in bag time, the diagnostics, the services in any order and the parameters; after shutdown,
both nodes exit 0.  Runs under launch_testing's pytest plugin (``make test-ros``); skipped without ROS.
"""

import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import pytest

pytest.importorskip("launch_testing", reason="needs ROS 2 (launch_testing; run `make test-ros`)")
pytest.importorskip("rclpy", reason="needs ROS 2 (rclpy; run `make test-ros`)")

import launch_testing
import launch_testing.actions
import launch_testing.asserts
import numpy as np
import rclpy
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from ros_harness import LAUNCH, Recorder, play_bag, private_ros_env, synth_bag, write_params

from launch import LaunchDescription

FRAME_RATE_HZ = 10.0
WORK = Path(tempfile.mkdtemp(prefix="mp_slam_launch_stereo_"))
VO, LC = "vo_node", "loop_closure_node"


@pytest.mark.launch_test
def generate_test_description():
    bag = synth_bag(WORK / "seq", "stereo")
    params = write_params(WORK / "params.yaml", process_every_frame=True)
    slam = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH / "slam.launch.py")),
        launch_arguments={"use_sim_time": "true", "precision": "mixed", "params_file": str(params)}.items(),
    )
    return LaunchDescription([slam, launch_testing.actions.ReadyToTest()]), {"bag": bag, "params": params}


class TestSlamBagReplay(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.rec = Recorder()

    @classmethod
    def tearDownClass(cls):
        cls.rec.destroy_node()
        rclpy.shutdown()

    def _wait_for_nodes(self):
        # The nodes compile their kernels before they subscribe: play only once both listen.
        r = self.rec
        r.spin_until(lambda: r.count_publishers("/odom") > 0 and r.count_subscribers("/cam0/image_raw") > 0
                     and r.count_subscribers("/keyframe/pose") > 1, 120.0, "vo_node and loop_closure_node")

    def test_1_replay_matches_offline_and_loses_nothing(self, bag, params):
        r = self.rec
        self._wait_for_nodes()
        played = play_bag(bag, timeout=300.0)
        self.assertEqual(played.returncode, 0, played.stderr)
        frames = _frame_count(bag)
        # Whatever is still queued gets two seconds: a node that keeps up has (almost) nothing left.
        r.spin_for(2.0)
        rec = r.rec
        with r.lock:
            odom = list(rec.odom)
            keyframes = list(rec.keyframes)
        self.assertGreaterEqual(len(odom), 0.9 * frames, f"{len(odom)} odometry messages for {frames} frames")

        # Live equals offline: `mp-slam replay` of the same bag with the same parameters.
        out = WORK / "offline"
        subprocess.run([sys.executable, "-m", "mp_slam_ros.cli", "replay", str(bag), "--out", str(out),
                        "--config", str(params), "--precision", "mixed", "--no-bag", "--no-loop-closure",
                        "--no-progress"], check=True, env=private_ros_env(), stdout=subprocess.DEVNULL)
        offline = _read_tum(out / "odometry.tum")
        live = {round(stamp * 1e-6): p for stamp, p, _ in odom}  # by millisecond: TUM stamps are decimal
        common = sorted(set(live) & set(offline))
        self.assertGreaterEqual(len(common), 0.9 * frames)
        diff = np.array([np.linalg.norm(live[s] - offline[s]) for s in common])
        self.assertLessEqual(float(np.sqrt(np.mean(diff**2))), 1e-3, f"live vs offline RMS {diff.mean()}")
        self.assertLessEqual(float(diff.max()), 1e-3)

        # Keyframes reach loop closure, loops close, nothing dropped; the diagnostics are OK.
        r.spin_until(lambda: (d := r.last_diagnostics(LC)) is not None
                     and int(d[2].get("keyframes", -1)) == len(keyframes), 60.0,
                     f"loop closure to hold all {len(keyframes)} keyframes")
        level, message, values = r.last_diagnostics(LC)
        self.assertGreater(len(keyframes), 20)
        self.assertEqual(int(values["dropped keyframes"]), 0)
        self.assertGreater(int(values["loops accepted"]), 0, message)
        r.spin_for(1.5)  # one more period: a period with drops or errors would be WARN / ERROR
        level, message, values = r.last_diagnostics(LC)
        self.assertEqual(level, 0, message)
        vo_level, vo_message, vo_values = r.last_diagnostics(VO)
        self.assertEqual(vo_level, 0, vo_message)
        self.assertEqual(int(vo_values.get("dropped frames", "0")), 0, vo_values)

        # TF: map -> odom -> base_link, stamped in bag time; the extrinsic comes from the bag.
        with r.lock:
            tf = list(rec.tf)
            static = list(rec.tf_static)
        first, last = min(s for s, _, _ in odom), max(s for s, _, _ in odom)
        pairs = {(p, c) for p, c, _ in tf}
        self.assertIn(("odom", "base_link"), pairs)
        self.assertIn(("map", "odom"), pairs)
        for parent, child, stamp in tf:
            self.assertTrue(first - 1e9 <= stamp <= last + 1e9, f"{parent}->{child} at {stamp} ns: not bag time")
        self.assertTrue(any(p == "base_link" for p, _ in static), static)

    def test_2_services_in_any_order_never_end_the_node(self):
        r = self.rec
        saved = WORK / "map_saved"
        self.assertTrue(r.set_parameter(LC, "map_file", "").successful)
        self.assertFalse(r.trigger(f"/{LC}/save_map").success)  # empty map_file
        self.assertTrue(r.trigger(f"/{LC}/reset").success)
        self.assertFalse(r.trigger(f"/{LC}/save_map").success)  # after a success, a failure again
        self.assertTrue(r.set_parameter(LC, "map_file", str(saved)).successful)
        self.assertTrue(r.trigger(f"/{LC}/save_map").success)
        self.assertTrue(r.trigger(f"/{LC}/load_map").success)
        held = self._keyframes_held()
        # A missing and a corrupt map fail and leave the running map as it was.
        self.assertTrue(r.set_parameter(LC, "map_file", str(WORK / "no_such_map")).successful)
        answer = r.trigger(f"/{LC}/load_map")
        self.assertFalse(answer.success)
        self.assertIn("no_such_map", answer.message)
        corrupt = WORK / "map_corrupt"
        shutil.copytree(saved, corrupt)
        graph = next(corrupt.glob("*.g2o"))
        graph.write_text(graph.read_text() + "EDGE_SE3:QUAT 0 not-a-number\n")
        self.assertTrue(r.set_parameter(LC, "map_file", str(corrupt)).successful)
        self.assertFalse(r.trigger(f"/{LC}/load_map").success)
        self.assertEqual(self._keyframes_held(), held)
        self.assertTrue(r.trigger(f"/{LC}/reset").success)
        self.assertEqual(self._keyframes_held(), 0)

    def _keyframes_held(self) -> int:
        r = self.rec
        with r.lock:
            seen = sum(len(v) for v in r.rec.diagnostics.values())
        # A fresh report (after the call) tells the map's size.
        r.spin_until(lambda: sum(len(v) for v in r.rec.diagnostics.values()) > seen + 2, 10.0, "diagnostics")
        return int(r.last_diagnostics(LC)[2]["keyframes"])

    def test_3_parameters(self):
        r = self.rec
        # A runtime parameter takes effect: diagnostics come faster.
        self.assertTrue(r.set_parameter(LC, "diagnostics_period", 0.2).successful)
        count = lambda: len(r.rec.diagnostics.get(f"/{LC}: loop closure", []))  # noqa: E731
        before = count()
        r.spin_for(2.0)
        self.assertGreaterEqual(count() - before, 6)
        # Read-only ones are refused, and so is an invalid value, with its reason.
        result = r.set_parameter(VO, "mode", "rgbd")
        self.assertFalse(result.successful)
        result = r.set_parameter(LC, "tf_rate", -5.0)
        self.assertFalse(result.successful)
        self.assertTrue(result.reason)
        result = r.set_parameter(VO, "input_reliability", "sometimes")
        self.assertFalse(result.successful)
        self.assertIn("input_reliability", result.reason)


@launch_testing.post_shutdown_test()
class TestCleanShutdown(unittest.TestCase):
    def test_both_nodes_exit_0(self, proc_info, proc_output):
        launch_testing.asserts.assertExitCodes(proc_info)
        text = "".join(o.text.decode(errors="replace") for o in proc_output)
        self.assertNotIn("Traceback", text)


def _frame_count(bag: Path) -> int:
    import yaml

    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    counts = {t["topic_metadata"]["name"]: t["message_count"] for t in meta["topics_with_message_count"]}
    return int(counts["/cam0/image_raw"])


def _read_tum(path: Path) -> dict[int, np.ndarray]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        t, x, y, z = (float(v) for v in line.split()[:4])
        out[round(t * 1e3)] = np.array([x, y, z])
    return out
