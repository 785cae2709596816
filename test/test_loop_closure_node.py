"""loop_closure_node: its parameters and processing logic without ROS; the rclpy shell with ROS.

The core runs the real :class:`~mp_slam_ros.loop.pipeline.LoopClosure` on hand-built keyframes:
landmarks on a cylinder around a camera that turns on the spot for one lap and a bit, with a
small odometry drift, so the second lap closes loops.  Messages are the ``rosbags`` Humble
classes.  The ``ros``-marked tests at the end skip (with the reason) where rclpy is not
importable.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
from array import array
from pathlib import Path

import numpy as np
import pytest
from ring_keyframes import Ring, ring_keyframes

from mp_slam_ros.io.ros_messages import (
    cloud_to_structured,
    keyframe_to_messages,
    make_pose_stamped,
    pose_to_matrix,
    rosbags_factory,
    stamp_to_ns,
    transform_to_matrix,
)
from mp_slam_ros.loop.config import LoopClosureConfig
from mp_slam_ros.loop.pipeline import LoopClosure, LoopClosureResult, LoopClosureStatistics
from mp_slam_ros.ros import parameters as P
from mp_slam_ros.ros.loop_closure_core import (
    KEYFRAME_PARTS,
    RUNTIME_PARAMETERS,
    KeyframeAssembler,
    KeyframeOutput,
    LoopClosureDiagnostics,
    LoopClosureRunner,
    NodeSettings,
    input_names,
    make_diagnostic_array,
)
from mp_slam_ros.vision.types import Keyframe

NS = 1_000_000_000
LC_NODE_PARAMETERS = {
    "keyframe_pose_topic", "keyframe_cloud_topic", "keyframe_info_topic", "T_base_camera", "map_frame",
    "odom_frame", "publish_tf", "tf_rate", "tf_future_tolerance", "path_topic", "map_topic",
    "map_publish_period", "diagnostics_period", "map_file", "load_map_on_start", "backlog_size",
    "input_reliability", "queue_size",
}  # fmt: skip
# Loop detection within the short test sequence: few keyframes are "recent".
TEST_PARAMETERS = {"exclude_recent_keyframes": 5, "exclude_recent_seconds": 0.5, "precision": "fp64"}


# ---------------------------------------------------------------------------------------------
# A synthetic loop: hand-built keyframes
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene() -> Ring:
    return ring_keyframes(landmarks=600, per_lap=16, count=22)


@pytest.fixture
def factory():
    return rosbags_factory()


def _runner(scene: Ring, factory, **values) -> LoopClosureRunner:
    values = {**TEST_PARAMETERS, **values}
    config = P.lc_config_from_parameters(values)
    return LoopClosureRunner(values, factory, loop_closure=LoopClosure(config, vocabulary=scene.vocabulary))


def _messages(factory, kf: Keyframe, odom: str = "odom"):
    return keyframe_to_messages(factory, kf, odom, "camera")


def _feed(runner: LoopClosureRunner, factory, keyframes) -> list[KeyframeOutput]:
    return [runner.process(_messages(factory, kf)) for kf in keyframes]


@pytest.fixture(scope="module")
def closed(scene):
    """A runner that has seen the whole sequence, and its outputs."""
    factory = rosbags_factory()
    runner = _runner(scene, factory)
    return runner, _feed(runner, factory, scene.keyframes)


# ---------------------------------------------------------------------------------------------
# parameters.py: the loop-closure table
# ---------------------------------------------------------------------------------------------


def test_every_loop_closure_config_field_has_a_spec():
    specs = {s.name: s for s in P.LC_NODE_PARAMETERS}
    for f in dataclasses.fields(LoopClosureConfig):
        s = specs[f.name]
        default = getattr(LoopClosureConfig(), f.name)
        assert s.group == "loop_closure" and s.read_only
        assert s.default == default and type(s.default) is type(default), f.name
        assert len(s.description) > 10, f"{f.name} has no description in the LoopClosureConfig docstring"
    assert [s.name for s in P.LC_CONFIG_PARAMETERS] == [f.name for f in dataclasses.fields(LoopClosureConfig)]
    assert P.spec("robust_loss", P.LC_NODE_NAME).choices == ("trivial", "huber", "cauchy")
    assert P.spec("max_consistency_rotation_deg", P.LC_NODE_NAME).unit == "deg"
    assert "``" not in P.spec("vocabulary_file", P.LC_NODE_NAME).description


def test_node_parameters_and_defaults():
    node = {s.name: s for s in P.LC_NODE_PARAMETERS if s.group == "node"}
    assert set(node) == LC_NODE_PARAMETERS
    names = [s.name for s in P.LC_NODE_PARAMETERS]
    assert len(names) == len(set(names)) and "use_sim_time" not in names
    expected = {"map_frame": "map", "odom_frame": "odom", "publish_tf": True, "tf_rate": 20.0,
                "tf_future_tolerance": 0.1, "map_file": "", "load_map_on_start": False,
                "input_reliability": "reliable", "T_base_camera": np.eye(4).ravel().tolist()}
    for name, value in expected.items():
        assert node[name].default == value, name
    assert node["tf_rate"].unit == "Hz" and node["tf_future_tolerance"].unit == "s"
    assert (node["keyframe_pose_topic"].default, node["keyframe_cloud_topic"].default,
            node["keyframe_info_topic"].default) == P.KEYFRAME_TOPICS
    # Run-time changeable: frames, TF, timers, the map file; topics and QoS are fixed.
    assert set(RUNTIME_PARAMETERS) == {"map_frame", "odom_frame", "publish_tf", "tf_rate", "tf_future_tolerance",
                                       "map_publish_period", "diagnostics_period", "map_file"}
    assert set(RUNTIME_PARAMETERS) == {f.name for f in dataclasses.fields(NodeSettings)}
    # Shared names mean one '/**' section configures both nodes alike.
    for name in ("odom_frame", "publish_tf", "T_base_camera", "diagnostics_period", "queue_size"):
        assert P.spec(name).type == P.spec(name, P.LC_NODE_NAME).type, name


def test_keyframe_topic_defaults_are_what_vo_node_publishes(repo_root):
    tree = ast.parse((repo_root / "mp_slam_ros" / "ros" / "vo_node.py").read_text())
    published = {
        call.args[1].value for call in ast.walk(tree)
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "create_publisher"
        and isinstance(call.args[1], ast.Constant) and str(call.args[1].value).startswith("keyframe/")
    }  # fmt: skip
    assert published == set(P.KEYFRAME_TOPICS)
    assert [P.spec(n, P.LC_NODE_NAME).default for n in input_names()] == list(P.KEYFRAME_TOPICS)


def test_lc_config_from_parameters():
    assert P.lc_config_from_parameters(P.default_values(P.LC_NODE_PARAMETERS)) == LoopClosureConfig()
    config = P.lc_config_from_parameters({"num_candidates": 5, "robust_loss": "huber", "map_frame": "world"})
    assert (config.num_candidates, config.robust_loss) == (5, "huber")
    with pytest.raises(ValueError, match=r"'min_inliers' must be int, got float"):
        P.lc_config_from_parameters({"min_inliers": 40.0})
    with pytest.raises(ValueError, match=r"'robust_loss' must be one of"):
        P.lc_config_from_parameters({"robust_loss": "tukey"})
    with pytest.raises(ValueError, match=r"min_bow_score must be in \[0, 1\]"):
        P.lc_config_from_parameters({"min_bow_score": 1.5})


def test_check_parameter_file_for_the_loop_closure_node():
    def doc(params, key="/**/loop_closure_node"):
        return {key: {"ros__parameters": params}}

    assert P.check_parameter_file(doc({"tf_rate": 10.0, "use_sim_time": True}), node_name="loop_closure_node") == []
    problems = P.check_parameter_file(doc({"tf_rat": 10.0, "map_frame": 1, "tf_future_tolerance": 1}),
                                      node_name="loop_closure_node")
    text = "\n".join(problems)
    assert "unknown parameter 'tf_rat' (did you mean 'tf_rate'?)" in text
    assert "'map_frame' must be string" in text and "write 1.0" in text
    assert "outlier_weight must be in [0, 1]" in P.check_parameter_file(
        doc({"outlier_weight": 2.0}), node_name="loop_closure_node")[0]
    skew = np.eye(4)
    skew[0, 1] = 0.5
    assert "not a rigid transform" in P.check_parameter_file(
        doc({"T_base_camera": skew.ravel().tolist()}), node_name="loop_closure_node")[0]
    # A section for the other node does not apply; the VO default is unchanged.
    assert "no section applies to node 'loop_closure_node'" in P.check_parameter_file(
        doc({"max_features": 10}, key="vo_node"), node_name="loop_closure_node")[0]
    assert P.check_parameter_file(doc({"max_features": 10}, key="/**/vo_node")) == []
    assert "precision preset file" in P.check_parameter_file(
        {"/**": {"ros__parameters": {"precision": {"preset": "fp16"}}}}, node_name="loop_closure_node")[0]
    with pytest.raises(ValueError, match="no parameter table for node 'mapper'"):
        P.check_parameter_file(doc({}), node_name="mapper")


def test_readme_loop_closure_parameter_table_is_generated(repo_root):
    text = (repo_root / "README.md").read_text()
    start = text.index("<!-- loop-closure-parameters:start -->\n") + len("<!-- loop-closure-parameters:start -->\n")
    end = text.index("<!-- loop-closure-parameters:end -->")
    assert text[start:end] == P.markdown_table(P.LC_NODE_PARAMETERS), (
        "regenerate with `python -m mp_slam_ros.ros.parameters --node loop_closure_node --markdown`")
    # The section sits right after the VO node's.
    assert text.index("<!-- vo-parameters:end -->") < text.index("## Loop closure node, launch files and profiles")
    assert text.index("## Loop closure node, launch files and profiles") < text.index("## Layout")


def test_ros_free_modules_do_not_import_rclpy(repo_root):
    code = ("import sys\nimport mp_slam_ros.ros.loop_closure_core, mp_slam_ros.ros.parameters\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('rclpy', 'message_filters', 'tf2_ros', 'launch_ros', 'std_srvs', 'sensor_msgs_py'))\n"
            "assert not bad, bad\n")
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo_root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------------------
# The exact-stamp join
# ---------------------------------------------------------------------------------------------


def test_assembler_joins_by_exact_stamp(scene, factory):
    a = KeyframeAssembler(capacity=2)
    m0, m1, m2 = (_messages(factory, kf) for kf in scene.keyframes[:3])
    assert a.put("cloud", m0[1]) is None and a.put("info", m1[2]) is None
    assert a.put("info", m0[2]) is None
    assert a.put("pose", m0[0]) == m0 and a.completed == 1 and len(a) == 1
    # m1 is still waiting; m2 fills the capacity and m3 evicts the oldest incomplete stamp, m1.
    assert a.put("pose", m2[0]) is None and len(a) == 2
    m3 = _messages(factory, scene.keyframes[3])
    assert a.put("pose", m3[0]) is None
    assert a.incomplete == 1 and len(a) == 2
    assert a.put("cloud", m1[1]) is None and a.put("pose", m1[0]) is None  # m1 starts over: no info yet
    assert a.incomplete == 2 and a.completed == 1
    with pytest.raises(ValueError, match="keyframe part must be one of"):
        a.put("odom", m0[0])
    a.clear()
    assert len(a) == 0 and KEYFRAME_PARTS == ("pose", "cloud", "info")


# ---------------------------------------------------------------------------------------------
# The runner: processing and messages
# ---------------------------------------------------------------------------------------------


def test_loops_close_and_correct_the_path(scene, closed):
    runner, outputs = closed
    accepted = [e for o in outputs for e in o.result.accepted]
    assert accepted, "the second lap closed no loop"
    assert all(e.query_id >= scene.per_lap - 2 for e in accepted)
    assert any(o.info and "loop closed" in o.info[0] for o in outputs)
    stats = runner.stats
    assert stats["keyframes"] == len(scene.keyframes) and stats["loops_accepted"] == len(accepted)
    assert stats["pgo_runs"] >= 1
    # The map frame is the first keyframe's odom frame (the first keyframe anchors the graph), so the
    # corrected last pose must be nearer the truth than the drifted odometry.
    _ids, _stamps, T_map_base = runner.lc.corrected_poses()
    last_truth, last_odom = scene.truth[-1], scene.keyframes[-1].T_odom_base
    assert np.linalg.norm(T_map_base[-1][:3, 3] - last_truth[:3, 3]) < np.linalg.norm(
        last_odom[:3, 3] - last_truth[:3, 3])
    assert not np.allclose(runner.T_map_odom, np.eye(4))


def test_path_message(scene, closed):
    runner, outputs = closed
    path = outputs[-1].path
    assert path.header.frame_id == "map"
    assert stamp_to_ns(path.header.stamp) == scene.keyframes[-1].stamp_ns
    assert len(path.poses) == len(scene.keyframes)
    _ids, stamps, T_map_base = runner.lc.corrected_poses()
    for pose, stamp, T in zip(path.poses, stamps, T_map_base, strict=True):
        assert pose.header.frame_id == "map" and stamp_to_ns(pose.header.stamp) == stamp
        np.testing.assert_allclose(pose_to_matrix(pose.pose), T, atol=1e-9)
    again = runner.path_message()
    assert len(again.poses) == len(path.poses)


def test_map_message(scene, closed):
    runner, _ = closed
    msg = runner.map_message(force=True, blocking=True)
    assert msg.header.frame_id == "map" and stamp_to_ns(msg.header.stamp) == scene.keyframes[-1].stamp_ns
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)]
    assert (msg.height, msg.point_step, msg.row_step, msg.is_bigendian) == (1, 12, 12 * msg.width, False)
    rec = cloud_to_structured(msg)
    points = np.stack([rec[c] for c in "xyz"], axis=1)
    np.testing.assert_array_equal(points, runner.lc.landmark_map())
    assert len(points) > 100
    # Landmarks lie on the 3.5-4.5 m cylinder: the map is in metres around the first keyframe.
    radius = np.hypot(points[:, 0], points[:, 2])
    assert np.median(radius) == pytest.approx(4.0, abs=0.2)
    assert runner.map_message() is None, "an unchanged map is not published again"


def test_tf_message_is_stamped_ahead_of_the_latest_keyframe(scene, closed):
    runner, _ = closed
    latest = scene.keyframes[-1].stamp_ns
    runner._last_tf_stamp = None  # this module-scoped runner may have published before
    tf = runner.tf_message()
    assert tf.header.frame_id == "map" and tf.child_frame_id == "odom"
    assert stamp_to_ns(tf.header.stamp) == latest + round(0.1 * NS)
    np.testing.assert_allclose(transform_to_matrix(tf), runner.T_map_odom, atol=1e-9)
    # tf2 drops a repeated stamp: nothing new to say until the stamp can advance.
    assert runner.tf_message() is None
    assert runner.tf_message(now_ns=latest - NS) is None  # a clock behind the data does not pull it back
    later = latest + 3 * NS
    assert stamp_to_ns(runner.tf_message(now_ns=later).header.stamp) == later + round(0.1 * NS)
    runner.settings.publish_tf = False
    try:
        assert runner.tf_message(now_ns=later + NS) is None
    finally:
        runner.settings.publish_tf = True


def test_tf_before_the_first_keyframe(scene, factory):
    runner = _runner(scene, factory, tf_future_tolerance=0.25)
    assert runner.tf_message() is None  # nothing to stamp it with
    tf = runner.tf_message(now_ns=5 * NS)
    assert stamp_to_ns(tf.header.stamp) == 5 * NS + NS // 4
    np.testing.assert_allclose(transform_to_matrix(tf), np.eye(4))
    assert runner.map_message() is None and runner.path_message().poses == []


def test_repeated_older_and_foreign_frame_keyframes(scene, factory):
    runner = _runner(scene, factory)
    kfs = scene.keyframes
    _feed(runner, factory, kfs[:3])
    assert runner.process(_messages(factory, kfs[2])) is None and runner.skipped == 1
    out = runner.process(_messages(factory, kfs[1]))
    assert out.result is None and out.path is None and "older than the map's newest" in out.warnings[0]
    assert runner.lc.num_keyframes == 3
    out = runner.process(_messages(factory, kfs[3], odom="world"))
    assert out.result is not None and "in 'world' but odom_frame is 'odom'" in out.warnings[0]
    ids, _, _ = runner.lc.corrected_poses()
    assert ids.tolist() == [0, 1, 2, 3]  # the runner numbers keyframes in arrival order
    with pytest.raises(ValueError, match="3 messages"):
        runner.process(_messages(factory, kfs[4])[:2])
    # A triplet whose stamps disagree is rejected (counted, with a warning) and leaves the map as it was.
    pose, cloud, info = _messages(factory, kfs[4])
    pose = make_pose_stamped(factory, kfs[4].stamp_ns + 1, kfs[4].T_odom_base, "odom")
    out = runner.process((pose, cloud, info))
    assert out.result is None and "stamp" in out.rejected and runner.rejected == 1
    assert runner.lc.num_keyframes == 4


def test_keyframe_camera_is_the_rectified_one(scene, factory):
    # k/d carry a distorted raw calibration, p the intrinsics the pixels refer to.
    runner = _runner(scene, factory)
    pose, cloud, info = _messages(factory, scene.keyframes[0])
    info.k = np.array([390.0, 0, 300, 0, 390.0, 250, 0, 0, 1])
    info.d = np.array([0.1, -0.05, 0.0, 0.0, 0.0])
    runner.process((pose, cloud, info))
    camera = runner.lc.keyframes[0].camera
    assert (camera.fx, camera.cx, camera.distortion) == (400.0, 320.0, ())


def test_runner_rejects_bad_parameters(scene, factory):
    with pytest.raises(ValueError, match="parameter 'precision'"):
        LoopClosureRunner({"precision": "fp12"}, factory)
    skew = np.eye(4)
    skew[0, 1] = 0.5
    with pytest.raises(ValueError, match="'T_base_camera' is not a rigid transform"):
        _runner(scene, factory, T_base_camera=skew.ravel().tolist())
    with pytest.raises(ValueError, match="'tf_rate' must be in"):
        _runner(scene, factory, tf_rate=0.0)
    # rclpy hands arrays back as array.array.
    runner = _runner(scene, factory, T_base_camera=array("d", np.eye(4).ravel()))
    np.testing.assert_array_equal(runner.T_base_camera, np.eye(4))


# ---------------------------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------------------------


def _result(accepted=0, fallbacks=0) -> LoopClosureResult:
    return LoopClosureResult(keyframe_id=0, stamp_ns=0, candidates=[], accepted=[object()] * accepted,
                             rejected={}, optimized=False, pgo=None, T_map_odom=np.eye(4),
                             timings={"total": 0.004})  # type: ignore[list-item]


def test_diagnostics_levels_and_keys(factory):
    d = LoopClosureDiagnostics(now=0.0)
    report = d.report(LoopClosureStatistics().as_dict(), now=1.0)
    assert report.level_name == "WARN" and "no keyframe yet" in report.message

    stats = LoopClosureStatistics(keyframes=10, candidates=4, loops_accepted=1, pgo_runs=1, last_pgo_time_s=0.0123,
                                  last_pgo_cg_iterations=17, preconditioner_factorizations=1,
                                  last_refactor_reason="first factorisation")
    stats.loops_rejected["few_inliers"] = 3
    for k in range(4):
        d.record_received()
        d.record(KeyframeOutput(k, _result(accepted=int(k == 3))))
    report = d.report(stats.as_dict(), backlog=2, dropped=0, now=3.0)
    values = dict(report.values)
    assert report.level_name == "OK" and report.message == "10 keyframes, 1 loops; 1 closed in period"
    assert values["loops accepted"] == "1" and values["loops rejected"] == "3"
    assert values["loops rejected: few_inliers"] == "3" and values["loops rejected: inconsistent"] == "0"
    assert values["last PGO time [ms]"] == "12.3" and values["last PGO CG iterations"] == "17"
    assert values["keyframe rate [Hz]"] == "2.00" and values["backlog"] == "2"
    for key in ("fp16 fallbacks", "fp16 fallbacks in period", "preconditioner factorisations", "PGO runs",
                "last refactor reason", "total PGO time [s]", "dropped keyframes", "incomplete keyframe sets"):
        assert key in values, key

    # An fp16 fallback in the period (the statistics grew) is a warning, once.
    d.record_received()
    stats.fp16_fallbacks = 2
    report = d.report(stats.as_dict(), now=4.0)
    assert report.level_name == "WARN" and "2 fp16 fallback(s) in PGO" in report.message
    assert dict(report.values)["fp16 fallbacks"] == "2"
    assert d.report(stats.as_dict(), now=5.0).level_name == "OK"

    d.record_error("MessageFormatError: keyframe cloud lacks field(s) ['descriptor']")
    d.record(KeyframeOutput(9, None, warnings=["older"]))
    report = d.report(stats.as_dict(), dropped=1, incomplete=2, now=6.0)
    assert report.level_name == "ERROR"
    for text in ("1 keyframe(s) failed", "1 keyframe(s) dropped", "2 keyframe set(s) incomplete", "older than"):
        assert text in report.message, text
    # A reset lowers the totals; that is no fallback.
    assert d.report(LoopClosureStatistics().as_dict(), dropped=1, incomplete=2, now=7.0).level_name == "OK"

    msg = make_diagnostic_array(factory, 7 * NS, report, "/loop_closure_node: loop closure", "map")
    status = msg.status[0]
    assert status.level == factory("diagnostic_msgs/msg/DiagnosticStatus").ERROR == 2
    assert status.name == "/loop_closure_node: loop closure" and status.hardware_id == "map"
    assert {kv.key: kv.value for kv in status.values} == dict(report.values)
    assert stamp_to_ns(msg.header.stamp) == 7 * NS


def test_runner_diagnostics_message(scene, closed):
    runner, _ = closed
    d = LoopClosureDiagnostics(now=0.0)
    d.record_received()
    msg = runner.diagnostics_message(d, 3 * NS, "lc", backlog=0, now=1.0)
    values = {kv.key: kv.value for kv in msg.status[0].values}
    assert values["keyframes"] == str(len(scene.keyframes))
    assert int(values["loops accepted"]) >= 1 and int(values["PGO runs"]) >= 1


# ---------------------------------------------------------------------------------------------
# Services and parameter changes
# ---------------------------------------------------------------------------------------------


def test_save_load_round_trip_and_corrupt_map(scene, factory, tmp_path):
    runner = _runner(scene, factory, map_file=str(tmp_path / "maps" / "room"))
    ok, message = runner.save_map()
    assert not ok and "empty" in message, message
    _feed(runner, factory, scene.keyframes)
    ok, message = runner.save_map()
    assert ok and str(tmp_path / "maps" / "room") in message and f"{len(scene.keyframes)} keyframe(s)" in message

    other = _runner(scene, factory, map_file=str(tmp_path / "maps" / "room"))
    ok, message = other.load_map()
    assert ok and "loaded" in message, message
    a, b = runner.lc.corrected_poses(), other.lc.corrected_poses()
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[2], b[2], atol=1e-9)
    np.testing.assert_allclose(other.T_map_odom, runner.T_map_odom, atol=1e-12)
    assert other.latest_stamp_ns == scene.keyframes[-1].stamp_ns
    assert other.map_message() is not None  # a loaded map is published
    # The next keyframe continues the ids above the map's.
    nxt = dataclasses.replace(scene.keyframes[0], stamp_ns=scene.keyframes[-1].stamp_ns + NS)
    assert other.process(_messages(factory, nxt)).result.keyframe_id == len(scene.keyframes)

    # A corrupt map: refused, the file named, the running map untouched.
    corrupt = tmp_path / "corrupt"
    assert runner.save_map(str(corrupt))[0]
    data = (corrupt / "keyframes.npz").read_bytes()
    (corrupt / "keyframes.npz").write_bytes(data[: len(data) // 2])
    before = other.lc.corrected_poses()
    ok, message = other.load_map(str(corrupt))
    assert not ok and "keyframes.npz" in message and "unchanged" in message, message
    after = other.lc.corrected_poses()
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[2], after[2])
    ok, message = other.load_map(str(tmp_path / "nowhere"))
    assert not ok and "pose_graph.g2o" in message
    other.settings.map_file = " "
    ok, message = other.load_map()
    assert not ok and "'map_file' is empty" in message
    ok, message = other.save_map()
    assert not ok and "'map_file' is empty" in message


def test_reset_empties_the_map(scene, factory):
    runner = _runner(scene, factory)
    _feed(runner, factory, scene.keyframes)
    assert runner.map_message() is not None
    ok, message = runner.reset()
    assert ok and f"{len(scene.keyframes)} keyframe(s) dropped" in message
    assert runner.lc.num_keyframes == 0 and runner.latest_stamp_ns is None
    np.testing.assert_array_equal(runner.T_map_odom, np.eye(4))
    assert runner.path_message().poses == []
    cleared = runner.map_message()
    assert cleared is not None and cleared.width == 0, "an empty map is published once so viewers clear it"
    assert runner.stats["keyframes"] == 0
    # After a reset the sequence can start again from its first keyframe, ids from 0.
    out = runner.process(_messages(factory, scene.keyframes[0]))
    assert out.result.keyframe_id == 0


def test_parameter_changes(scene, factory):
    runner = _runner(scene, factory)
    _feed(runner, factory, scene.keyframes[:2])
    runner.map_message()
    change = runner.set_parameters({"map_frame": "world", "tf_rate": 5.0, "use_sim_time": True})
    assert change.successful and set(change.changed) == {"map_frame", "tf_rate"}
    assert runner.path_message().header.frame_id == "world"
    assert runner.map_message().header.frame_id == "world"  # republished in the new frame
    assert runner.tf_message().header.frame_id == "world"
    # All or nothing; read-only, unknown and badly typed values are refused with the reason.
    change = runner.set_parameters({"odom_frame": "odom2", "num_candidates": 9})
    assert not change.successful and "read-only" in change.reason and runner.settings.odom_frame == "odom"
    assert "no parameter 'tf_rat'" in runner.set_parameters({"tf_rat": 1.0}).reason
    assert "must be double" in runner.set_parameters({"tf_future_tolerance": 1}).reason
    assert "must be in" in runner.set_parameters({"map_publish_period": 0.0}).reason
    assert runner.set_parameters({"map_frame": "world"}).changed == ()


# ---------------------------------------------------------------------------------------------
# The rclpy node (needs ROS 2)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def rclpy_context():
    import rclpy

    rclpy.init()
    yield rclpy
    rclpy.shutdown()


@pytest.mark.ros
def test_node_declares_parameters_and_services(rclpy_context, tmp_path):
    from rclpy.parameter import Parameter

    from mp_slam_ros.ros.loop_closure_node import LoopClosureNode

    node = LoopClosureNode(parameter_overrides=[Parameter("map_file", value=str(tmp_path / "map"))])
    try:
        assert node.get_name() == "loop_closure_node"
        for s in P.LC_NODE_PARAMETERS:
            d = node.describe_parameter(s.name)
            assert d.read_only == s.read_only and d.description.startswith(s.description[:20])
        services = {name for name, _types in node.get_service_names_and_types_by_node(
            node.get_name(), node.get_namespace())}
        assert {"/loop_closure_node/reset", "/loop_closure_node/save_map", "/loop_closure_node/load_map"} <= services
        assert node.set_parameters([Parameter("tf_rate", value=5.0)])[0].successful
        from std_srvs.srv import Trigger

        response = node._on_load_map(Trigger.Request(), Trigger.Response())
        assert not response.success and "pose_graph.g2o" in response.message
    finally:
        node.destroy_node()
    with pytest.raises(ValueError, match="load_map_on_start"):
        LoopClosureNode(parameter_overrides=[Parameter("load_map_on_start", value=True)])


def test_only_the_node_shells_import_rclpy(repo_root):
    ros_dir = Path(repo_root) / "mp_slam_ros"
    importers = sorted(
        str(p.relative_to(repo_root)) for p in ros_dir.rglob("*.py")
        if any(line.startswith(("import rclpy", "from rclpy")) for line in p.read_text().splitlines())
    )  # fmt: skip
    assert importers == ["mp_slam_ros/ros/base_node.py", "mp_slam_ros/ros/loop_closure_node.py",
                         "mp_slam_ros/ros/vo_node.py"]
