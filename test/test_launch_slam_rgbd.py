"""End to end in ROS 2, RGB-D: ``slam.launch.py mode:=rgbd`` fed by ``ros2 bag play --clock``.

The shorter sibling of ``test_launch_slam_stereo.py``: 15 s of the synthetic room as an RGB-D mcap
bag (with /tf_static), both nodes from the installed launch file.  Checks the odometry rate, live
against offline, keyframes reaching loop closure with none dropped, the TF tree in bag time and the
diagnostics; after shutdown, both nodes exit 0.  Skipped without ROS (run ``make test-ros``).
"""

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
from ros_harness import LAUNCH, CleanShutdownChecks, RecorderTestCase, check_bag_replay, synth_bag, write_params

from launch import LaunchDescription

WORK = Path(tempfile.mkdtemp(prefix="mp_slam_launch_rgbd_"))


@pytest.mark.launch_test
def generate_test_description():
    bag = synth_bag(WORK / "seq", "rgbd", duration=15.0)
    params = write_params(WORK / "params.yaml", process_every_frame=True, mode="rgbd")
    slam = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH / "slam.launch.py")),
        launch_arguments={"use_sim_time": "true", "precision": "mixed", "mode": "rgbd",
                          "params_file": str(params)}.items(),
    )
    return LaunchDescription([slam, launch_testing.actions.ReadyToTest()]), {"bag": bag, "params": params}


class TestRgbdBagReplay(RecorderTestCase):
    def test_replay_matches_offline_and_loses_nothing(self, bag, params):
        check_bag_replay(self, self.rec, bag, params, WORK, "/camera/color/image_raw", expect_loops=False)


@launch_testing.post_shutdown_test()
class TestCleanShutdown(CleanShutdownChecks, unittest.TestCase):
    """Both nodes exit 0 without a traceback when launch stops them."""
