"""Frames: bags carry the camera extrinsic on /tf_static, replay uses it (or warns once without it),
an explicit configuration wins, ground truth is base_link (REP-103), and vo_core's tf plan."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from mp_slam_ros.cli import main
from mp_slam_ros.io.frames import EXTRINSIC_ASSUMED, chain_transforms, is_optical_frame, missing_extrinsic_warning
from mp_slam_ros.io.rosbag import FRAME_IDS, BagTopics, read_bag_sequence, write_sequence_bag
from mp_slam_ros.replay import replay
from mp_slam_ros.sim.sequence import make_sequence
from mp_slam_ros.sim.trajectories import T_BASE_CAMERA
from mp_slam_ros.solver import lie

W, H = 320, 240

# The camera 0.10 m forward of and 0.05 m above base_link, optical axes (z along base x): a lever
# arm, so a replay that ignored the extrinsic would be wrong in position as well as in rotation.
T_LEVER = T_BASE_CAMERA.copy()
T_LEVER[:3, 3] = (0.10, 0.0, 0.05)


def _rot_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """3 s of the two-lap room (a quarter turn of yaw) with the lever-arm rig, as an mcap bag."""
    seq = make_sequence("two_lap_room", "stereo", width=W, height=H, rate_hz=10.0, duration_s=3.0,
                        T_base_camera=T_LEVER)
    bag = write_sequence_bag(tmp_path_factory.mktemp("frames") / "room", seq, storage="mcap")
    return seq, bag


def test_synthetic_bag_carries_latched_tf_static_and_optical_frames(room) -> None:
    from rosbags.highlevel import AnyReader

    _, bag = room
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    topics = {t["topic_metadata"]["name"]: t for t in meta["topics_with_message_count"]}
    assert topics["/tf_static"]["message_count"] == 1
    qos = yaml.safe_load(topics["/tf_static"]["topic_metadata"]["offered_qos_profiles"])
    assert qos[0]["durability"] == 1 and qos[0]["reliability"] == 1  # transient local, reliable
    with AnyReader([bag]) as reader:
        first_topic = None
        frame_ids: dict[str, set[str]] = {}
        static = []
        for conn, _, raw in reader.messages():
            first_topic = first_topic or conn.topic
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == "/tf_static":
                static += [(t.header.frame_id, t.child_frame_id) for t in msg.transforms]
            elif hasattr(msg, "header"):
                frame_ids.setdefault(conn.topic, set()).add(msg.header.frame_id)
    assert first_topic == "/tf_static"  # latched: before any image
    assert static == [("base_link", FRAME_IDS["left"]), (FRAME_IDS["left"], FRAME_IDS["right"])]
    assert frame_ids["/cam0/image_raw"] == frame_ids["/cam0/camera_info"] == {"camera_left_optical_frame"}
    assert frame_ids["/cam1/image_raw"] == frame_ids["/cam1/camera_info"] == {"camera_right_optical_frame"}
    assert frame_ids["/ground_truth/pose"] == {"world"}


def test_replay_of_the_bag_gives_base_link_odometry(room, tmp_path: Path) -> None:
    seq, bag = room
    back = read_bag_sequence(bag)
    np.testing.assert_allclose(back.T_base_camera, T_LEVER, atol=1e-9)
    assert back.camera_frame == "camera_left_optical_frame" and back.base_frame == "base_link"
    assert back.T_base_camera_source.startswith("/tf_static")
    report = replay(back, tmp_path, progress=False, write_bag=False, plots=False)
    assert report.warnings == [] and report.extrinsic["source"].startswith("/tf_static")
    from mp_slam_ros.io.trajectory import read_tum

    odo = read_tum(tmp_path / "odometry.tum")
    gt = seq.ground_truth.poses[: len(odo)]
    truth = lie.inverse_transform(gt[0]) @ gt  # odom starts at the first base_link pose
    position_error = np.linalg.norm(odo.poses[:, :3, 3] - truth[:, :3, 3], axis=1)
    rotation_error = [_rot_deg(a[:3, :3].T @ b[:3, :3]) for a, b in zip(odo.poses, truth, strict=True)]
    assert _rot_deg(truth[-1, :3, :3]) > 30.0  # the rig turned: a wrong extrinsic would show
    assert position_error.max() < 0.05 and max(rotation_error) < 1.5
    assert report.accuracy["rpe_rotation_rmse_deg"] < 1.5


def test_bag_without_tf_static_warns_once_and_says_so_in_the_report(tmp_path: Path, caplog) -> None:
    seq = make_sequence("straight", "stereo", width=W, height=H, duration_s=0.4)
    bag = write_sequence_bag(tmp_path / "no_tf", seq, storage="sqlite3", topics=BagTopics(tf_static=None))
    back = read_bag_sequence(bag)
    assert back.T_base_camera_source == EXTRINSIC_ASSUMED and back.camera_frame == "camera_left_optical_frame"
    np.testing.assert_array_equal(back.T_base_camera, np.eye(4))
    with caplog.at_level(logging.WARNING, logger="mp_slam_ros"):
        report = replay(back, tmp_path / "out", progress=False, write_bag=False, plots=False)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "ASSUMING" in r.getMessage()]
    assert len(warned) == 1 and report.frames == len(seq) > 3
    assert "camera_left_optical_frame" in warned[0].getMessage() and "optical frame" in warned[0].getMessage()
    assert len(report.warnings) == 1 and f"WARNING: {report.warnings[0]}" in report.text()
    assert json.loads((tmp_path / "out" / "report.json").read_text())["warnings"] == report.warnings
    # Re-exporting that sequence must not turn the guess into a /tf_static claim.
    again = write_sequence_bag(tmp_path / "again", back, storage="sqlite3")
    assert read_bag_sequence(again).T_base_camera_source == EXTRINSIC_ASSUMED


def test_explicit_extrinsic_wins_over_tf_static(room, tmp_path: Path) -> None:
    _, bag = room
    T = lie.inverse_transform(T_LEVER)  # anything rigid that is not the bag's
    np.testing.assert_array_equal(read_bag_sequence(bag, T_base_camera=T).T_base_camera, T)
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text(yaml.safe_dump({"vo_node": {"ros__parameters": {"T_base_camera": T.ravel().tolist()}}}))
    silent = tmp_path / "silent.yaml"  # a profile that does not mention the extrinsic
    silent.write_text("max_features: 400\n")
    args = ["--max-frames", "3", "--no-bag", "--no-loop-closure", "--no-progress"]
    for config, want, source in ((explicit, T, "config"), (silent, T_LEVER, "/tf_static")):
        out = tmp_path / config.stem
        assert main(["replay", str(bag), "--out", str(out), "--config", str(config), *args]) == 0
        ext = json.loads((out / "report.json").read_text())["extrinsic"]
        np.testing.assert_allclose(ext["T_base_camera"], want, atol=1e-9)
        assert ext["source"].startswith(source)


def test_ground_truth_is_base_link_in_rep103() -> None:
    seq = make_sequence("two_lap_room", "stereo", width=W, height=H)  # frames are rendered lazily: none here
    poses = seq.ground_truth.poses
    z = poses[:, 2, 3]
    assert abs(z.mean() - 1.3) < 0.05 and z.max() - z.min() < 0.1  # drives in the horizontal plane
    assert np.min(poses[:, 2, 2]) > 0.99  # base z is up
    assert np.max(np.abs(poses[:, 2, 0])) < 0.1  # base x (forward) is horizontal
    R = seq.T_base_camera[:3, :3]
    np.testing.assert_allclose(R @ [0, 0, 1], [1, 0, 0], atol=1e-12)  # optical z (forward) = base x
    np.testing.assert_allclose(R @ [0, 1, 0], [0, 0, -1], atol=1e-12)  # optical y (down) = -base z
    assert seq.base_frame == "base_link" and seq.camera_frame == FRAME_IDS["left"]


def test_chain_transforms_walks_the_tree_both_ways() -> None:
    T_base_link = np.eye(4)
    T_base_link[:3, 3] = (0.2, 0.0, 0.3)
    tree = [("base_link", "camera_link", T_base_link), ("camera_link", "camera_optical_frame", T_BASE_CAMERA),
            ("map", "odom", np.eye(4))]
    np.testing.assert_allclose(chain_transforms(tree, "base_link", "camera_optical_frame"),
                               T_base_link @ T_BASE_CAMERA, atol=1e-12)
    np.testing.assert_allclose(chain_transforms(tree, "/camera_optical_frame", "base_link"),
                               lie.inverse_transform(T_base_link @ T_BASE_CAMERA), atol=1e-12)
    assert chain_transforms(tree, "base_link", "odom") is None
    assert is_optical_frame("camera_left_optical_frame") and not is_optical_frame("base_link")
    assert missing_extrinsic_warning("base_link", "base_link", "x") is None
    assert "ASSUMING" in missing_extrinsic_warning("base_link", "", "x")


def test_vo_core_plans_the_tf_lookup_and_takes_the_extrinsic_late() -> None:
    from mp_slam_ros.io.ros_messages import camera_to_camera_info, numpy_to_image, rosbags_factory
    from mp_slam_ros.ros.vo_core import VORunner, base_camera_is_explicit, plan_base_camera
    from mp_slam_ros.vision.odometry import VOConfig

    plan = plan_base_camera(False, "base_link", "camera_left_optical_frame")
    assert plan.lookup and "ASSUMING" in plan.warning and "optical frame" in plan.warning
    assert not plan_base_camera(True, "base_link", "camera_left_optical_frame").lookup
    same = plan_base_camera(False, "base_link", "base_link")
    assert not same.lookup and same.warning is None
    nothing = plan_base_camera(False, "base_link", "")
    assert not nothing.lookup and nothing.warning and nothing.source == EXTRINSIC_ASSUMED
    assert base_camera_is_explicit(T_LEVER.ravel()) and not base_camera_is_explicit(np.eye(4).ravel())

    seq = make_sequence("straight", "stereo", width=W, height=H, duration_s=0.2)
    factory = rosbags_factory()
    B = float(seq.T_left_right[0, 3])

    def messages(frame):
        return (numpy_to_image(factory, frame.image, "mono8", frame.stamp_ns, FRAME_IDS["left"]),
                numpy_to_image(factory, frame.right, "mono8", frame.stamp_ns, FRAME_IDS["right"]),
                camera_to_camera_info(factory, seq.camera, frame.stamp_ns, FRAME_IDS["left"]),
                camera_to_camera_info(factory, seq.camera, frame.stamp_ns, FRAME_IDS["right"], baseline_m=B))

    frames = list(seq)
    runner = VORunner(VOConfig(mode="stereo"), rectified=True)
    lookups = []
    missing = runner.resolve_base_camera(FRAME_IDS["left"], "base_link", False,
                                         lambda target, source: lookups.append((target, source)))
    assert lookups == [("base_link", FRAME_IDS["left"])] and "ASSUMING" in missing
    assert runner.base_camera_source == EXTRINSIC_ASSUMED
    runner = VORunner(VOConfig(mode="stereo"), rectified=True)
    assert runner.resolve_base_camera(FRAME_IDS["left"], "base_link", False, lambda t, s: T_LEVER) is None
    out = runner.step(messages(frames[0]))
    np.testing.assert_allclose(runner.vo.config.T_base_camera_matrix, T_LEVER, atol=1e-12)
    assert out.warnings == [] and runner.restarts == 0
    runner.set_base_camera(T_BASE_CAMERA, "tf")  # late: the odometry restarts with it
    out = runner.step(messages(frames[1]))
    assert runner.restarts == 1 and any("T_base_camera changed" in w for w in out.warnings)
    np.testing.assert_allclose(runner.vo.config.T_base_camera_matrix, T_BASE_CAMERA, atol=1e-12)
    with pytest.raises(ValueError):
        runner.set_base_camera(2.0 * np.eye(4), "bad")
