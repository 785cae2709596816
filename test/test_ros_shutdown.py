"""Ctrl-C and SIGTERM on ``ros2 launch mp_slam_ros slam.launch.py``: both nodes exit 0, no traceback.

A terminal's Ctrl-C sends SIGINT to the whole process group (launch and both nodes, and launch then
forwards another SIGINT to each node); a service manager sends SIGTERM to the control group.  Both
must end each node with exit code 0 and nothing but log lines.  Needs a sourced ROS 2 with this
package installed (``make test-ros``).
"""

import os
import shutil
import signal
import subprocess
import time

import pytest

pytestmark = pytest.mark.ros


def _ros2_launch_available() -> bool:
    if shutil.which("ros2") is None:
        return False
    try:
        from ament_index_python.packages import get_package_share_directory

        get_package_share_directory("mp_slam_ros")
    except Exception:
        return False
    return True


def test_ctrl_c_on_ros2_launch_ends_both_nodes_cleanly(tmp_path):
    if not _ros2_launch_available():
        pytest.skip("needs `ros2` and mp_slam_ros installed in a sourced ROS 2 (make test-ros)")
    from ros_harness import private_ros_env

    log = tmp_path / "launch.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["ros2", "launch", "mp_slam_ros", "slam.launch.py"], stdout=out,
                                stderr=subprocess.STDOUT, env=private_ros_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 120.0
        while time.monotonic() < deadline:  # both nodes up (kernels compiled, subscriptions made)
            text = log.read_text()
            if "[vo_node]: " in text and "[loop_closure_node]: loop closure" in text:
                break
            assert proc.poll() is None, text
            time.sleep(0.5)
        else:
            pytest.fail("the nodes did not come up:\n" + log.read_text())
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C does
        proc.wait(timeout=60.0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text, text
    for node in ("vo_node", "loop_closure_node"):
        assert f"[{node}-" in text and "process has finished cleanly" in text, text
    assert text.count("process has finished cleanly") == 2, text
    assert "process has died" not in text, text


@pytest.mark.parametrize("node", ["vo_node", "loop_closure_node"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("second_after", [0.05, 0.4], ids=["during-teardown", "during-exit"])
def test_a_signal_ends_a_node_with_exit_0(node, signum, second_after, tmp_path):
    """As a service manager stops it (SIGTERM), or a second signal lands during teardown or while the
    interpreter exits (where Python has already dropped its handlers)."""
    pytest.importorskip("rclpy", reason="needs ROS 2 (make test-ros)")
    import sys

    from ros_harness import private_ros_env

    log = tmp_path / f"{node}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", f"mp_slam_ros.ros.{node}"], stdout=out,
                                stderr=subprocess.STDOUT, env=private_ros_env())
    try:
        deadline = time.monotonic() + 120.0
        while "waiting for" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        proc.send_signal(signum)
        time.sleep(second_after)
        if proc.poll() is None:
            proc.send_signal(signum)  # the second one, as launch forwards after the terminal's
        assert proc.wait(timeout=30.0) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text()
