"""End to end in ROS 2: ``slam.launch.py`` (stereo, mixed, sim time) fed by ``ros2 bag play --clock``.

A robot user's replay of a recording: the synthetic two-lap room as an mcap bag (with the camera
extrinsic in /tf_static), both nodes from the installed launch file, real DDS on this host.  Checks
the odometry rate, live against offline (`mp-slam replay` of the same bag), keyframes and loops, the
TF tree in bag time, the diagnostics, the services in any order and the parameters; after shutdown,
both nodes exit 0.  Runs under launch_testing's pytest plugin (``make test-ros``); skipped without ROS.
"""

import shutil
import tempfile
import unittest
from pathlib import Path

import pytest

pytest.importorskip("launch_testing", reason="needs ROS 2 (launch_testing; run `make test-ros`)")
pytest.importorskip("rclpy", reason="needs ROS 2 (rclpy; run `make test-ros`)")

import launch_testing
import launch_testing.actions
import launch_testing.asserts
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from ros_harness import LAUNCH, LC, VO, CleanShutdownChecks, RecorderTestCase, check_bag_replay, synth_bag, write_params

from launch import LaunchDescription

FRAME_RATE_HZ = 10.0
WORK = Path(tempfile.mkdtemp(prefix="mp_slam_launch_stereo_"))


@pytest.mark.launch_test
def generate_test_description():
    bag = synth_bag(WORK / "seq", "stereo")
    params = write_params(WORK / "params.yaml", process_every_frame=True)
    slam = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH / "slam.launch.py")),
        launch_arguments={"use_sim_time": "true", "precision": "mixed", "params_file": str(params)}.items(),
    )
    return LaunchDescription([slam, launch_testing.actions.ReadyToTest()]), {"bag": bag, "params": params}


class TestSlamBagReplay(RecorderTestCase):
    def test_1_replay_matches_offline_and_loses_nothing(self, bag, params):
        check_bag_replay(self, self.rec, bag, params, WORK, "/cam0/image_raw", expect_loops=True)

    def test_2_services_in_any_order_never_end_the_node(self):
        r = self.rec
        saved = WORK / "map_saved"
        self.assertTrue(r.set_parameter(LC, "map_file", "").successful)
        self.assertFalse(r.trigger(f"/{LC}/save_map").success)  # empty map_file
        self.assertTrue(r.set_parameter(LC, "map_file", str(saved)).successful)
        self.assertTrue(r.trigger(f"/{LC}/save_map").success)
        self.assertTrue(r.set_parameter(LC, "map_file", "").successful)
        self.assertFalse(r.trigger(f"/{LC}/load_map").success)  # a failure after a success (rclpy's logger)
        self.assertTrue(r.set_parameter(LC, "map_file", str(saved)).successful)
        self.assertTrue(r.trigger(f"/{LC}/load_map").success)
        held = self._keyframes_held()
        self.assertGreater(held, 20)
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
        answer = r.trigger(f"/{LC}/load_map")
        self.assertFalse(answer.success)
        self.assertIn(graph.name, answer.message)
        self.assertEqual(self._keyframes_held(), held)
        self.assertTrue(r.trigger(f"/{LC}/reset").success)
        self.assertEqual(self._keyframes_held(), 0)
        self.assertTrue(r.set_parameter(LC, "map_file", str(saved)).successful)
        self.assertTrue(r.trigger(f"/{LC}/load_map").success)
        self.assertEqual(self._keyframes_held(), held)

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
class TestCleanShutdown(CleanShutdownChecks, unittest.TestCase):
    """Both nodes exit 0 without a traceback when launch stops them."""
