"""vo_node: its parameters, launch file and processing logic without ROS; the rclpy shell with ROS.

The ``ros``-marked tests at the end spin the real node and skip (with the reason) where rclpy is
not importable; everything else runs anywhere.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import os
import subprocess
import sys
import threading
import time
from array import array
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from mp_slam_ros.io.ros_messages import (
    camera_to_camera_info,
    keyframe_to_messages,
    make_odometry,
    numpy_to_image,
    rosbags_factory,
)
from mp_slam_ros.io.rosbag import BagTopics
from mp_slam_ros.ros import parameters as P
from mp_slam_ros.ros.vo_core import (
    DiagnosticsAccumulator,
    FrameBacklog,
    StepOutput,
    VORunner,
    body_twist,
    input_names,
    stereo_extrinsic,
)
from mp_slam_ros.solver.precision import PRESET_NAMES
from mp_slam_ros.vision.odometry import FrameResult, VOConfig, VOStatistics
from mp_slam_ros.vision.types import MODES

LAUNCH_FILE = Path("launch") / "vo.launch.py"

NODE_PARAMETERS = {
    "left_image_topic", "right_image_topic", "left_info_topic", "right_info_topic", "rgb_image_topic",
    "depth_image_topic", "rgb_info_topic", "odom_frame", "base_frame", "camera_frame", "publish_tf",
    "process_every_frame", "backlog_size", "input_reliability", "sync_slop", "queue_size", "rectified",
    "diagnostics_period",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# parameters.py
# ---------------------------------------------------------------------------------------------


def test_every_voconfig_field_has_a_spec_with_its_default_and_a_description():
    specs = {s.name: s for s in P.VO_NODE_PARAMETERS}
    for f in dataclasses.fields(VOConfig):
        s = specs[f.name]
        assert s.group == "vo" and s.read_only
        default = getattr(VOConfig(), f.name)
        if isinstance(default, tuple):
            assert s.default == list(default)
        else:
            assert s.default == default and type(s.default) is type(default), f.name
        assert len(s.description) > 10, f"{f.name} has no description in the VOConfig / FeatureOptions docstrings"
    assert [s.name for s in P.VO_CONFIG_PARAMETERS] == [f.name for f in dataclasses.fields(VOConfig)]


def test_descriptions_come_from_the_docstrings():
    assert P.spec("pnp_reprojection_error").description == "PnP-RANSAC inlier threshold."
    # The feature fields are documented on FeatureOptions; a shared entry serves both names.
    assert "detection grid" in P.spec("grid_cols").description
    assert P.spec("grid_cols").description == P.spec("grid_rows").description
    assert "ORB-SLAM2" in P.spec("rgbd_virtual_baseline").description  # continuation line joined
    assert "``" not in P.spec("grid_cols").description


def test_types_match_defaults_and_ros_conventions():
    py_type = {"bool": bool, "int": int, "double": float, "string": str}
    names = [s.name for s in P.VO_NODE_PARAMETERS]
    assert len(names) == len(set(names))
    assert "use_sim_time" not in names  # rclpy declares it
    for s in P.VO_NODE_PARAMETERS:
        assert s.type in P.PARAMETER_TYPES
        assert s.type_problem(s.default) is None, s.name
        if s.type in py_type:
            assert type(s.default) is py_type[s.type], s.name
        assert s.name.isidentifier() and not s.name.startswith("_")
        assert s.description.strip()
    T = P.spec("T_base_camera")
    assert T.type == "double_array" and T.length == 16 and T.default == np.eye(4).reshape(-1).tolist()
    assert set(P._VO_UNITS) <= {f.name for f in dataclasses.fields(VOConfig)}
    assert P.spec("keyframe_max_interval").unit == "s" and P.spec("min_depth").unit == "m"
    assert P.spec("mode").choices == tuple(MODES)


def test_node_parameters_and_their_defaults():
    node = {s.name: s for s in P.VO_NODE_PARAMETERS if s.group == "node"}
    assert set(node) == NODE_PARAMETERS
    topics = BagTopics()
    assert node["left_image_topic"].default == topics.left_image == "/cam0/image_raw"
    assert node["right_image_topic"].default == topics.right_image == "/cam1/image_raw"
    for name in ("left_info", "right_info", "rgb_image", "depth_image", "rgb_info"):
        assert node[f"{name}_topic"].default == getattr(topics, name)
    expected = {"odom_frame": "odom", "base_frame": "base_link", "camera_frame": "camera", "publish_tf": True,
                "process_every_frame": False, "input_reliability": "best_effort", "sync_slop": 0.005,
                "rectified": False, "diagnostics_period": 1.0}
    for name, value in expected.items():
        assert node[name].default == value, name
    assert node["input_reliability"].choices == ("best_effort", "reliable")
    assert node["sync_slop"].unit == "s" and node["diagnostics_period"].unit == "s"
    # Topics and QoS are fixed once subscribed; frames and the processing model are not.
    assert node["left_image_topic"].read_only and node["queue_size"].read_only
    assert not node["publish_tf"].read_only and not node["process_every_frame"].read_only
    assert "one of: best_effort, reliable" in node["input_reliability"].constraints


def test_vo_config_from_parameters_round_trips():
    assert P.vo_config_from_parameters(P.default_values()) == VOConfig()
    T = np.eye(4)
    T[:3, 3] = [0.1, -0.02, 0.3]
    values = P.default_values()
    values.update(mode="rgbd", precision="fp32", max_features=500, keyframe_parallax=8.5,
                  T_base_camera=array("d", T.reshape(-1)))  # rclpy hands double arrays back as array.array
    config = P.vo_config_from_parameters(values)
    assert (config.mode, config.precision, config.max_features, config.keyframe_parallax) == ("rgbd", "fp32", 500, 8.5)
    np.testing.assert_array_equal(config.T_base_camera_matrix, T)
    again = {f.name: getattr(config, f.name) for f in dataclasses.fields(VOConfig)}
    again["T_base_camera"] = list(again["T_base_camera"])
    assert P.vo_config_from_parameters(again) == config


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"max_features": "many"}, r"'max_features' must be int, got str"),
        ({"quality_level": 1}, r"'quality_level' must be double.*write 1\.0"),
        ({"publish_tf": True, "window_size": True}, r"'window_size' must be int, got bool"),
        ({"mode": "mono"}, r"'mode' must be one of \['stereo', 'rgbd'\]"),
        ({"linear_solver": "qr"}, r"linear_solver"),
        ({"T_base_camera": [1.0] * 15}, r"exactly 16 values"),
        ({"T_base_camera": [2.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]}, r"T_base_camera"),
        ({"pnp_min_inliers": 3}, r"pnp_min_inliers must be at least 4"),
        ({"klt_window": 20}, r"klt_window must be odd"),
    ],
)
def test_vo_config_from_parameters_rejects_bad_values(values, match):
    with pytest.raises(ValueError, match=match):
        P.vo_config_from_parameters(values)


def _params_file(params, key="/**"):
    return {key: {"ros__parameters": params}}


def test_check_parameter_file_flags_unknown_keys_and_wrong_types():
    problems = P.check_parameter_file(_params_file({"max_feature": 200, "sync_slop": "fast", "publish_tf": 1}))
    text = "\n".join(problems)
    assert len(problems) == 3, text
    assert "unknown parameter 'max_feature' (did you mean 'max_features'?)" in text
    assert "'sync_slop' must be double, got str" in text
    assert "'publish_tf' must be bool, got int" in text
    # An integer for a double is refused by ROS 2 at declaration time; say how to write it.
    assert "write 1.0" in P.check_parameter_file(_params_file({"sync_slop": 1}))[0]
    assert "one of" in P.check_parameter_file(_params_file({"input_reliability": "sometimes"}))[0]
    assert "in [0.01, 3600.0]" in P.check_parameter_file(_params_file({"diagnostics_period": 0.0}))[0]
    # Values valid one by one but rejected by VOConfig are reported too.
    assert "min_depth" in P.check_parameter_file(_params_file({"min_depth": 30.0}))[0]


def test_check_parameter_file_layouts():
    good = {"mode": "rgbd", "sync_slop": 0.01, "use_sim_time": True, "T_base_camera": np.eye(4).ravel().tolist()}
    for key in ("/**", "vo_node", "/vo_node", "/robot1/vo_node", "/**/vo_node", "vo_*"):
        assert P.check_parameter_file(_params_file(good, key)) == [], key
    # Sections of other nodes are ignored, but something must apply to vo_node.
    mixed = {"loop_closure_node": {"ros__parameters": {"whatever": 1}}, **_params_file(good, "vo_node")}
    assert P.check_parameter_file(mixed) == []
    assert "no section applies to node 'vo_node'" in P.check_parameter_file(
        {"loop_closure_node": {"ros__parameters": {}}})[0]
    assert "ros__parameters" in P.check_parameter_file({"vo_node": {"mode": "rgbd"}})[0]
    assert "mapping" in P.check_parameter_file(["mode"])[0]
    # Nested mappings are dotted parameter names in ROS 2.
    assert "unknown parameter 'topics.left'" in P.check_parameter_file(_params_file({"topics": {"left": "/a"}}))[0]
    assert P.check_parameter_file(_params_file(None)) == []


def test_config_vo_yaml_is_a_valid_complete_params_file(repo_root):
    text = (repo_root / "config" / "vo.yaml").read_text()
    doc = yaml.safe_load(text)
    assert P.check_parameter_file(doc) == []
    params = doc["/**"]["ros__parameters"]
    # Complete, so it serves as the template of a params_file; the values are a snapshot of the
    # defaults (regenerate with `python -m mp_slam_ros.ros.parameters --yaml > config/vo.yaml`).
    assert list(params) == [s.name for s in P.VO_NODE_PARAMETERS]


def test_precision_preset_file_is_not_mistaken_for_vo_parameters(repo_root):
    doc = yaml.safe_load((repo_root / "config" / "precision_mixed.yaml").read_text())
    problems = P.check_parameter_file(doc)
    assert len(problems) == 1 and "precision preset file" in problems[0]


def test_markdown_table_has_a_row_per_parameter():
    table = P.markdown_table()
    lines = table.strip().splitlines()
    assert lines[0].startswith("| Parameter | Type | Default | Unit | Description |")
    assert len(lines) == 2 + len(P.VO_NODE_PARAMETERS)
    assert "| `sync_slop` | double | `0.005` | s |" in table
    assert "| `T_base_camera` | double_array | identity |" in table
    assert all(line.count("|") - line.count("\\|") == 6 for line in lines)


def test_ros_free_modules_do_not_import_rclpy(repo_root):
    code = ("import sys\nimport mp_slam_ros.ros, mp_slam_ros.ros.parameters, mp_slam_ros.ros.vo_core\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('rclpy', 'message_filters', 'tf2_ros', 'launch_ros', 'sensor_msgs_py'))\n"
            "assert not bad, bad\n")
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo_root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------------------
# launch/vo.launch.py
# ---------------------------------------------------------------------------------------------


def _launch_tree(repo_root):
    return ast.parse((repo_root / LAUNCH_FILE).read_text(), filename=str(LAUNCH_FILE))


def _call_names(tree, func_name):
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            called = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if called == func_name and node.args and isinstance(node.args[0], ast.Constant):
                names.append(node.args[0].value)
    return names


def _module_constants(tree):
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            with contextlib.suppress(ValueError):
                out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def test_launch_arguments_are_declared(repo_root):
    tree = _launch_tree(repo_root)
    declared = set(_call_names(tree, "DeclareLaunchArgument"))
    used = set(_call_names(tree, "LaunchConfiguration"))
    topics = {f"{name}_topic" for name in ("left_image", "right_image", "left_info", "right_info", "rgb_image")}
    topics |= {"depth_image_topic", "rgb_info_topic"}
    topics |= {"keyframe_pose_topic", "keyframe_cloud_topic", "keyframe_info_topic"}
    common = {"precision", "profile", "mode", "use_sim_time", "namespace", "publish_tf", "params_file"}
    assert declared == common | topics
    assert used <= declared, f"undeclared launch configurations: {used - declared}"
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    constants = _module_constants(tree)
    assert constants["PRECISIONS"] == PRESET_NAMES
    assert constants["MODES"] == tuple(MODES)
    assert constants["PACKAGE"] == "mp_slam_ros" and constants["EXECUTABLE"] == "vo_node"
    assert constants["NODE_NAME"] == P.NODE_NAME


def test_launch_overrides_are_node_parameters(repo_root):
    tree = _launch_tree(repo_root)
    overrides = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                     and any(isinstance(t, ast.Name) and t.id == "overrides" for t in n.targets))
    keys = {k.value for k in overrides.keys}
    assert keys == {"precision", "mode", "publish_tf", "use_sim_time"}
    assert keys - {"use_sim_time"} <= {s.name for s in P.VO_NODE_PARAMETERS}


def test_launch_config_files_exist(repo_root):
    tree = _launch_tree(repo_root)
    constants = _module_constants(tree)
    for precision in constants["PRECISIONS"]:
        path = repo_root / "config" / constants["PRECISION_FILE"].format(precision)
        assert path.is_file(), path
    literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    for name in literals:
        if name.endswith(".yaml") and "{" not in name and "/" not in name:
            assert (repo_root / "config" / name).is_file(), name


# ---------------------------------------------------------------------------------------------
# vo_core.py: the node's logic without rclpy
# ---------------------------------------------------------------------------------------------


def test_backlog_live_keeps_only_the_newest():
    q = FrameBacklog(capacity=50, keep_all=False)
    assert [q.put(i) for i in range(4)] == [0, 1, 1, 1]
    assert (len(q), q.dropped, q.received) == (1, 3, 4)
    assert q.get(timeout=0) == 3
    assert q.get(timeout=0.01) is None


def test_backlog_replay_keeps_order_up_to_capacity():
    q = FrameBacklog(capacity=3, keep_all=True)
    for i in range(5):
        q.put(i)
    assert q.dropped == 2
    assert [q.get(0), q.get(0), q.get(0)] == [2, 3, 4]
    q.keep_all = False  # switched at run time: back to newest-only
    q.put(5)
    q.put(6)
    assert q.get(0) == 6


def test_backlog_close_wakes_the_worker():
    q = FrameBacklog(capacity=2, keep_all=True)
    got = []
    worker = threading.Thread(target=lambda: got.append(q.get(timeout=10.0)))
    worker.start()
    time.sleep(0.05)
    q.close()
    worker.join(timeout=2.0)
    assert not worker.is_alive() and got == [None] and q.closed
    with pytest.raises(ValueError):
        FrameBacklog(0, True)


def _info(P_row0_3=0.0, R=None):
    Pm = np.array([400.0, 0, 320, P_row0_3, 0, 400, 240, 0, 0, 0, 1, 0])
    return SimpleNamespace(p=Pm, r=np.eye(3).ravel() if R is None else np.asarray(R).ravel())


def _rot(axis, angle):
    import cv2

    return cv2.Rodrigues(np.asarray(axis, dtype=float) * angle)[0]


def test_stereo_extrinsic_from_camera_info():
    B = 0.11
    T = stereo_extrinsic(_info(), _info(-400.0 * B), rectified=True)
    expected = np.eye(4)
    expected[0, 3] = B
    np.testing.assert_allclose(T, expected)
    # Raw images: R of each camera rotates it into the common rectified frame.
    R_l, R_r = _rot([0, 1, 0], 0.02), _rot([0, 1, 0], -0.03)
    T = stereo_extrinsic(_info(R=R_l), _info(-400.0 * B, R=R_r), rectified=False)
    np.testing.assert_allclose(T[:3, :3], R_l.T @ R_r, atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], R_l.T @ [B, 0, 0], atol=1e-12)
    # The rectified frames of both cameras coincide up to the baseline.
    T_rect = np.eye(4)
    T_rect[:3, :3] = R_l
    T_rect_r = np.eye(4)
    T_rect_r[:3, :3] = R_r
    np.testing.assert_allclose(T_rect @ T @ np.linalg.inv(T_rect_r), expected, atol=1e-12)
    # An unset R (all zero) means identity.
    np.testing.assert_allclose(stereo_extrinsic(_info(R=np.zeros(9)), _info(-40.0, R=np.zeros(9)), False)[0, 3], 0.1)


def test_body_twist_is_in_the_body_frame():
    T0 = np.eye(4)
    T0[:3, :3] = _rot([0, 0, 1], np.pi / 2)
    step = np.eye(4)
    step[:3, :3] = _rot([0, 0, 1], 0.1)
    step[:3, 3] = [0.5, 0.0, 0.0]
    np.testing.assert_allclose(body_twist(T0, T0 @ step, 0.5), [1.0, 0, 0, 0, 0, 0.2], atol=1e-12)
    assert not body_twist(T0, T0, 0.0).any()


@pytest.fixture(scope="module")
def stereo_sequence():
    from mp_slam_ros.sim.sequence import make_sequence

    return make_sequence("straight", "stereo", width=320, height=240, duration_s=0.5)


def _stereo_messages(factory, seq, frame, camera=None):
    camera = camera or seq.camera
    B = float(seq.T_left_right[0, 3])
    return (numpy_to_image(factory, frame.image, "mono8", frame.stamp_ns, "cam0"),
            numpy_to_image(factory, frame.right, "mono8", frame.stamp_ns, "cam1"),
            camera_to_camera_info(factory, camera, frame.stamp_ns, "cam0"),
            camera_to_camera_info(factory, camera, frame.stamp_ns, "cam1", baseline_m=B))


def test_runner_tracks_a_synthetic_stereo_sequence(stereo_sequence):
    seq = stereo_sequence
    factory = rosbags_factory()
    runner = VORunner(VOConfig(mode="stereo", T_base_camera=tuple(seq.T_base_camera.ravel())), rectified=True)
    frames = list(seq)
    outputs = [runner.step(_stereo_messages(factory, seq, f)) for f in frames]
    assert all(o is not None and o.result.status == "tracking" for o in outputs)
    assert outputs[0].result.keyframe is not None
    gt = seq.ground_truth.poses
    truth = np.linalg.inv(gt[0]) @ gt[-1]
    estimate = outputs[-1].result.T_odom_base
    assert np.linalg.norm(estimate[:3, 3] - truth[:3, 3]) < 0.02
    assert np.linalg.norm(truth[:3, 3]) > 0.2
    # The twist is what Odometry carries; its speed matches the path's.
    dt = (frames[-1].stamp_ns - frames[-2].stamp_ns) * 1e-9
    step = np.linalg.inv(gt[-2]) @ gt[-1]
    np.testing.assert_allclose(outputs[-1].twist[:3], step[:3, 3] / dt, atol=0.1)
    # What the node publishes, built with the same helpers (rosbags classes instead of rclpy).
    odom = make_odometry(factory, outputs[-1].stamp_ns, estimate, "odom", "base_link", twist=outputs[-1].twist)
    assert odom.header.stamp.sec * 10**9 + odom.header.stamp.nanosec == frames[-1].stamp_ns
    assert odom.child_frame_id == "base_link"
    pose, cloud, info = keyframe_to_messages(factory, outputs[0].result.keyframe, "odom", "camera")
    assert pose.header.stamp == cloud.header.stamp == info.header.stamp
    assert cloud.width == outputs[0].result.keyframe.num_features > 0
    assert runner.stats.frames == len(frames) and runner.stats.keyframes >= 1

    # A repeated set is skipped; a stamp that goes back (looping bag) restarts the odometry.
    assert runner.step(_stereo_messages(factory, seq, frames[-1])) is None
    out = runner.step(_stereo_messages(factory, seq, frames[0]))
    assert out is not None and runner.restarts == 1 and "restarting" in out.warnings[0]
    np.testing.assert_allclose(out.result.T_odom_base, np.eye(4), atol=1e-12)
    assert runner.stats.frames == len(frames) + 1  # counters survive the restart
    # New calibration: restart with it rather than track with the old one.
    other = dataclasses.replace(seq.camera, fx=seq.camera.fx * 1.01)
    out = runner.step(_stereo_messages(factory, seq, frames[1], camera=other))
    assert runner.restarts == 2 and "camera_info changed" in out.warnings[0]


def test_runner_rejects_inconsistent_messages(stereo_sequence):
    seq = stereo_sequence
    factory = rosbags_factory()
    runner = VORunner(VOConfig(mode="stereo"), rectified=True)
    frame = next(iter(seq))
    msgs = list(_stereo_messages(factory, seq, frame))
    small = dataclasses.replace(seq.camera, width=160, height=120)
    msgs[2] = camera_to_camera_info(factory, small, frame.stamp_ns, "cam0")
    with pytest.raises(ValueError, match="camera_info says 160x120"):
        runner.step(msgs)
    with pytest.raises(ValueError, match="needs 4 messages"):
        runner.step(msgs[:3])
    assert runner.vo is None
    with pytest.raises(ValueError, match="neither a preset"):
        VORunner(VOConfig(precision="fp12"))
    assert input_names("rgbd") == ("rgb_image_topic", "depth_image_topic", "rgb_info_topic")


def test_runner_rgbd_and_lost_warning():
    from mp_slam_ros.sim.sequence import make_sequence

    seq = make_sequence("straight", "rgbd", width=320, height=240, duration_s=0.15)
    factory = rosbags_factory()
    runner = VORunner(VOConfig(mode="rgbd"), rectified=False)
    frames = list(seq)
    for f in frames:
        depth_mm = np.round(f.depth * 1000).astype(np.uint16)
        msgs = (numpy_to_image(factory, f.image, "mono8", f.stamp_ns, "rgb"),
                numpy_to_image(factory, depth_mm, "16UC1", f.stamp_ns, "rgb"),
                camera_to_camera_info(factory, seq.camera, f.stamp_ns, "rgb"))
        out = runner.step(msgs)
        assert out.result.status == "tracking" and not out.warnings
    # A blank frame loses tracking: one warning on the transition.
    blank = np.zeros_like(frames[0].image)
    warnings = []
    for k in range(2):
        stamp = frames[-1].stamp_ns + (k + 1) * 50_000_000
        msgs = (numpy_to_image(factory, blank, "mono8", stamp, "rgb"),
                numpy_to_image(factory, np.zeros(blank.shape, np.uint16), "16UC1", stamp, "rgb"),
                camera_to_camera_info(factory, seq.camera, stamp, "rgb"))
        out = runner.step(msgs)
        assert out.result.status == "lost"
        warnings += out.warnings
    assert len(warnings) == 1 and "tracking lost" in warnings[0]


def _result(status="tracking", keyframe=False, fallbacks=0):
    summary = SimpleNamespace(fallbacks=[object()] * fallbacks) if keyframe else None
    return FrameResult(0, np.eye(4), status, 0, num_tracked=120, num_inliers=100,
                       keyframe=object() if keyframe else None,  # type: ignore[arg-type]
                       timings={"total": 0.02, "ba": 0.01} if keyframe else {"total": 0.01}, ba_summary=summary)


def test_diagnostics_levels_and_values():
    d = DiagnosticsAccumulator(now=0.0)
    stats = VOStatistics()
    report = d.report(stats, dropped=0, keep_all=False, now=1.0)
    assert report.level_name == "WARN" and "no synchronised input yet" in report.message

    for k in range(10):
        d.record_received()
        d.record(StepOutput(k, _result(keyframe=k == 0), np.zeros(6)))
    stats = VOStatistics(frames=10, keyframes=1, tracking_losses=0, fp16_fallbacks=0)
    report = d.report(stats, dropped=3, keep_all=False, now=2.0)
    values = dict(report.values)
    assert report.level_name == "OK" and report.message == "tracking"
    assert values["frame rate [Hz]"] == "10.00" and values["tracked features"] == "120"
    assert values["inliers"] == "100" and values["BA time [ms]"] == "10.0" and values["keyframes"] == "1"
    assert values["dropped frames"] == "3"  # live mode drops are by design: no warning
    for key in ("tracking losses", "reinitializations", "fp16 fallbacks"):
        assert key in values

    d.record_received()
    d.record(StepOutput(11, _result(keyframe=True, fallbacks=2), np.zeros(6)))
    report = d.report(VOStatistics(fp16_fallbacks=2), dropped=3, keep_all=False, now=3.0)
    assert report.level_name == "WARN" and "2 fp16 fallback(s)" in report.message

    d.record_received()
    d.record(StepOutput(12, _result(status="lost"), np.zeros(6)))
    d.record_error("MessageFormatError: bad encoding")
    report = d.report(VOStatistics(tracking_losses=1), dropped=5, keep_all=True, now=4.0)
    assert report.level_name == "ERROR"
    assert "tracking lost" in report.message and "2 frame(s) dropped" in report.message

    report = d.report(VOStatistics(), dropped=5, keep_all=True, now=5.0)
    assert report.level_name == "WARN" and "no input in the last period" in report.message


# ---------------------------------------------------------------------------------------------
# The rclpy node (needs ROS 2)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def rclpy_context():
    import rclpy

    rclpy.init()
    yield rclpy
    rclpy.shutdown()


def _refused(node, parameter) -> bool:
    # rclpy versions differ in whether a refused set returns a result or raises.
    try:
        return not node.set_parameters([parameter])[0].successful
    except Exception:
        return True


@pytest.mark.ros
def test_node_declares_every_parameter(rclpy_context):
    from rcl_interfaces.msg import ParameterType
    from rclpy.parameter import Parameter

    from mp_slam_ros.ros.vo_node import VisualOdometryNode

    node = VisualOdometryNode()
    try:
        assert node.get_name() == "vo_node"
        for s in P.VO_NODE_PARAMETERS:
            d = node.describe_parameter(s.name)
            assert d.read_only == s.read_only and d.description.startswith(s.description[:20])
            assert d.type != ParameterType.PARAMETER_NOT_SET
        assert node.has_parameter("use_sim_time")
        assert node.set_parameters([Parameter("publish_tf", value=False)])[0].successful
        assert _refused(node, Parameter("max_features", value=10))  # read-only
        assert _refused(node, Parameter("odom_frame", value=3))  # wrong type
    finally:
        node.destroy_node()
    with pytest.raises(ValueError, match="input_reliability"):
        VisualOdometryNode(parameter_overrides=[Parameter("input_reliability", value="sometimes")])


@pytest.mark.ros
def test_node_publishes_odometry_for_synthetic_stereo(rclpy_context, stereo_sequence):
    from nav_msgs.msg import Odometry
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from mp_slam_ros.io.ros_messages import importlib_factory
    from mp_slam_ros.ros.vo_node import VisualOdometryNode

    seq = stereo_sequence
    node = VisualOdometryNode(parameter_overrides=[
        Parameter("process_every_frame", value=True),
        Parameter("rectified", value=True),
        Parameter("T_base_camera", value=seq.T_base_camera.ravel().tolist()),
    ])
    helper = rclpy_context.create_node("vo_node_test_helper")
    names = input_names("stereo")
    pubs = [helper.create_publisher(CameraInfo if n.endswith("_info_topic") else Image,
                                    node.get_parameter(n).value, qos_profile_sensor_data) for n in names]
    received = []
    helper.create_subscription(Odometry, "/odom", received.append, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(helper)
    factory = importlib_factory()
    try:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and helper.count_subscribers(pubs[0].topic_name) == 0:
            executor.spin_once(timeout_sec=0.05)
        frames = list(seq)[:5]
        for frame in frames:
            for pub, msg in zip(pubs, _stereo_messages(factory, seq, frame), strict=True):
                pub.publish(msg)
            executor.spin_once(timeout_sec=0.05)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and len(received) < len(frames):
            executor.spin_once(timeout_sec=0.1)
        assert received, "no Odometry published"
        stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in received]
        assert set(stamps) <= {f.stamp_ns for f in frames}
        assert received[0].header.frame_id == "odom" and received[0].child_frame_id == "base_link"
    finally:
        executor.shutdown()
        node.destroy_node()
        helper.destroy_node()


def test_readme_parameter_table_is_generated_from_the_parameters(repo_root):
    from mp_slam_ros.ros.parameters import markdown_table

    text = (repo_root / "README.md").read_text()
    start = text.index("<!-- vo-parameters:start -->\n") + len("<!-- vo-parameters:start -->\n")
    end = text.index("<!-- vo-parameters:end -->")
    assert text[start:end] == markdown_table(), "regenerate with `python -m mp_slam_ros.ros.parameters --markdown`"
