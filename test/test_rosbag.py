"""rosbag2 reading and writing through rosbags: round trips, approximate sync, error reporting, replay output."""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest

from mp_slam_ros.io import ros_messages as rm
from mp_slam_ros.io.rosbag import (
    BagError,
    BagTopics,
    OutputBagWriter,
    read_bag_sequence,
    write_sequence_bag,
)
from mp_slam_ros.vision.types import Frame, Keyframe, PinholeCamera, Sequence

STORAGES = ["sqlite3", "mcap"]
INFO = "sensor_msgs/msg/CameraInfo"
IMAGE = "sensor_msgs/msg/Image"
EXT = {"sqlite3": ".db3", "mcap": ".mcap"}
CAM_L = PinholeCamera(64, 48, 50.0, 51.0, 31.5, 23.5, (0.01, -0.002, 0.0, 0.0, 0.0))
CAM_R = PinholeCamera(64, 48, 50.5, 50.75, 32.0, 24.0, (0.02, -0.001, 0.0, 0.0, 0.0))
BASELINE = 0.110078
T0 = 1_403_636_579_763_555_584


def anyreader(path):
    from rosbags.highlevel import AnyReader

    return AnyReader([path])


def rot_z(angle, t=(0.0, 0.0, 0.0)):
    T = np.eye(4)
    c, s = math.cos(angle), math.sin(angle)
    T[:2, :2] = [[c, -s], [s, c]]
    T[:3, 3] = t
    return T


def stereo_sequence(n=3, seed=0, with_gt=False):
    rng = np.random.default_rng(seed)
    frames = [Frame(T0 + i * 50_000_000, rng.integers(0, 256, (48, 64), dtype=np.uint8),
                    rng.integers(0, 256, (48, 64), dtype=np.uint8)) for i in range(n)]
    T_lr = np.eye(4)
    T_lr[0, 3] = BASELINE
    gt = None
    if with_gt:
        from mp_slam_ros.io.trajectory import Trajectory

        stamps = T0 - 5_000_000 + np.arange(2 * n + 2, dtype=np.int64) * 25_000_000
        gt = Trajectory(stamps, np.stack([rot_z(0.1 * k, (k, -k, 0.5)) for k in range(len(stamps))]))
    return Sequence("stereo", CAM_L, lambda: iter(frames), n, right_camera=CAM_R, T_left_right=T_lr,
                    ground_truth=gt, name="synthetic"), frames


def rgbd_sequence(n=3, seed=1):
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        mm = rng.integers(300, 9000, (48, 64))
        depth = (mm / 1000.0).astype(np.float32)  # exactly representable in 16UC1 millimetres
        depth[0, :5] = 0.0
        depth[1, :3] = np.nan
        frames.append(Frame(T0 + i * 33_333_333, rng.integers(0, 256, (48, 64), dtype=np.uint8), depth=depth))
    return Sequence("rgbd", CAM_L, lambda: iter(frames), n), frames


def expected_depth(depth):
    return np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# write_sequence_bag -> read_bag_sequence
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", STORAGES)
def test_stereo_round_trip(tmp_path, storage):
    pytest.importorskip("mp_slam_ros.io.trajectory")
    seq, frames = stereo_sequence(with_gt=True)
    bag = write_sequence_bag(tmp_path / "stereo_bag", seq, storage=storage)
    assert bag == tmp_path / "stereo_bag"
    assert sorted(os.listdir(tmp_path)) == ["stereo_bag"]  # no temporary directory left behind
    assert sorted(os.listdir(bag)) == sorted(["metadata.yaml", f"stereo_bag{EXT[storage]}"])

    T_bc = rot_z(0.5, (0.1, 0.2, 0.3))
    got = read_bag_sequence(bag, "stereo", T_base_camera=T_bc)
    assert (got.mode, got.num_frames, got.name) == ("stereo", 3, "stereo_bag")
    assert got.camera == CAM_L and got.right_camera == CAM_R
    assert np.array_equal(got.T_base_camera, T_bc)
    expected_lr = np.eye(4)
    expected_lr[0, 3] = BASELINE
    assert np.allclose(got.T_left_right, expected_lr, rtol=1e-15, atol=0)
    for _ in range(2):  # frames() re-opens the bag each time
        out = list(got.frames())
        assert [f.stamp_ns for f in out] == [f.stamp_ns for f in frames]
        for a, b in zip(frames, out, strict=True):
            assert b.image.dtype == np.uint8 and np.array_equal(a.image, b.image)
            assert np.array_equal(a.right, b.right) and b.depth is None
    gt = got.ground_truth
    assert gt.stamps_ns.tolist() == seq.ground_truth.stamps_ns.tolist()
    assert np.allclose(gt.poses, seq.ground_truth.poses, atol=1e-14, rtol=0)
    rect = read_bag_sequence(bag, rectified=True)
    assert rect.camera == PinholeCamera(64, 48, 50.0, 51.0, 31.5, 23.5)
    assert rect.right_camera == PinholeCamera(64, 48, 50.5, 50.75, 32.0, 24.0)


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("depth_encoding", ["16UC1", "32FC1"])
def test_rgbd_round_trip(tmp_path, storage, depth_encoding):
    seq, frames = rgbd_sequence()
    bag = write_sequence_bag(tmp_path / "rgbd", seq, storage=storage, depth_encoding=depth_encoding)
    with anyreader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == BagTopics().depth_image]
        msg = reader.deserialize(next(reader.messages(conns))[2], conns[0].msgtype)
        assert msg.encoding == depth_encoding
        assert rm.stamp_to_ns(msg.header.stamp) == T0
    got = read_bag_sequence(bag, "rgbd", topics=BagTopics(ground_truth=None))
    assert (got.mode, got.num_frames, got.camera, got.right_camera, got.T_left_right) == ("rgbd", 3, CAM_L, None,
                                                                                           None)
    assert got.ground_truth is None
    out = list(got)
    assert [f.stamp_ns for f in out] == [f.stamp_ns for f in frames]
    for a, b in zip(frames, out, strict=True):
        assert np.array_equal(a.image, b.image) and b.right is None
        assert b.depth.dtype == np.float32
        assert b.depth.tobytes() == expected_depth(a.depth).tobytes()  # bit for bit


def test_custom_topics_and_overwrite(tmp_path):
    seq, _ = stereo_sequence(n=2, seed=5)
    topics = BagTopics(left_image="/stereo/left/image_rect", right_image="/stereo/right/image_rect",
                       left_info="/stereo/left/camera_info", right_info="/stereo/right/camera_info")
    path = tmp_path / "bag"
    write_sequence_bag(path, seq, topics=topics)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_sequence_bag(path, seq, topics=topics)
    seq3, frames3 = stereo_sequence(n=3, seed=6)
    write_sequence_bag(path, seq3, storage="mcap", topics=topics, overwrite=True, progress=True)
    assert sorted(os.listdir(tmp_path)) == ["bag"] and sorted(os.listdir(path)) == ["bag.mcap", "metadata.yaml"]
    got = read_bag_sequence(path, topics=topics)
    assert got.num_frames == 3
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames3, got.frames(), strict=True))
    with pytest.raises(BagError, match=r"stereo mode needs topic\(s\) '/cam0/image_raw' \(BagTopics.left_image\)"):
        read_bag_sequence(path)


def test_reads_single_storage_file(tmp_path):
    seq, frames = stereo_sequence(n=2)
    bag = write_sequence_bag(tmp_path / "b", seq, storage="mcap")
    got = read_bag_sequence(bag / "b.mcap")
    assert got.name == "b" and [f.stamp_ns for f in got.frames()] == [f.stamp_ns for f in frames]


def test_non_rectified_extrinsic_warns_and_explicit_T_left_right_wins(tmp_path):
    seq, _ = stereo_sequence(n=1)
    T_lr = rot_z(0.01, (0.11, 0.002, 0.0))
    seq.T_left_right = T_lr
    with pytest.warns(UserWarning, match="not a pure x translation"):
        bag = write_sequence_bag(tmp_path / "b", seq)
    assert np.array_equal(read_bag_sequence(bag, T_left_right=T_lr).T_left_right, T_lr)
    assert read_bag_sequence(bag).T_left_right[0, 3] == pytest.approx(0.11, rel=1e-15)


# ---------------------------------------------------------------------------------------------
# Synchronisation, hand-built bags
# ---------------------------------------------------------------------------------------------


def write_raw_stereo(path, left_stamps, right_stamps, *, right_first=False, right_info=True, left_encoding="mono8",
                     extra=None):
    """A stereo bag written message by message; image pixel value = index on its topic."""
    with OutputBagWriter(path) as w:
        F = w.factory
        if right_info:
            w.write("/cam1/camera_info", INFO, rm.camera_to_camera_info(F, CAM_R, 0, "cam1", BASELINE), 0)
        w.write("/cam0/camera_info", INFO, rm.camera_to_camera_info(F, CAM_L, 0, "cam0"), 0)
        left = [("/cam0/image_raw", s, i) for i, s in enumerate(left_stamps)]
        right = [("/cam1/image_raw", s, i) for i, s in enumerate(right_stamps)]
        for topic, s, i in (right + left if right_first else left + right):
            if topic == "/cam0/image_raw" and left_encoding == "bgr8":
                img = rm.numpy_to_image(F, np.full((48, 64, 3), i, np.uint8), "bgr8", s, "cam0")
            else:
                img = rm.numpy_to_image(F, np.full((48, 64), i, np.uint8), "mono8", s, "c")
            w.write(topic, IMAGE, img, 1000 - i)  # bag time unrelated to header stamps
        if extra:
            extra(w)
    return path


def test_approximate_sync_mutual_nearest_within_tolerance(tmp_path):
    ms = 1_000_000
    left = [T0, T0 + 50 * ms, T0 + 100 * ms, T0 + 150 * ms, T0 + 200 * ms, T0 + 205 * ms]
    right = [T0, T0 + 53 * ms, T0 + 123 * ms, T0 + 148 * ms, T0 + 149 * ms, T0 + 209 * ms]
    bag = write_raw_stereo(tmp_path / "sync", left, right, right_first=True)
    got = read_bag_sequence(bag, sync_tolerance_ns=9 * ms)
    out = list(got.frames())
    # 100 ms has no partner within 9 ms (123 is 23 ms away); 150 pairs with 149 (nearest), not 148;
    # 200 and 205 both have 209 nearest, which goes to 205 only (each image is used once).
    assert got.num_frames == 4
    assert [f.stamp_ns for f in out] == [T0, T0 + 50 * ms, T0 + 150 * ms, T0 + 205 * ms]
    assert [(int(f.image[0, 0]), int(f.right[0, 0])) for f in out] == [(0, 0), (1, 1), (3, 4), (5, 5)]
    exact = read_bag_sequence(bag, sync_tolerance_ns=0)
    assert [f.stamp_ns for f in exact.frames()] == [T0]


def test_colour_left_image_becomes_grey(tmp_path):
    bag = write_raw_stereo(tmp_path / "c", [T0], [T0], left_encoding="bgr8")
    (frame,) = read_bag_sequence(bag).frames()
    assert frame.image.shape == (48, 64) and frame.image.dtype == np.uint8


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_missing_topic_lists_available_topics(tmp_path):
    seq, _ = stereo_sequence(n=1)
    bag = write_sequence_bag(tmp_path / "b", seq)
    with pytest.raises(BagError) as e:
        read_bag_sequence(bag, "rgbd")
    err = e.value
    assert isinstance(err, ValueError) and err.path == str(bag) and err.topic == "/camera/color/image_raw"
    msg = str(err)
    assert msg.startswith(f"{bag}: topic '/camera/color/image_raw': rgbd mode needs topic(s)")
    assert "'/camera/aligned_depth_to_color/image_raw' (BagTopics.depth_image)" in msg
    assert "'/camera/color/camera_info' (BagTopics.rgb_info)" in msg
    assert "the bag has: /cam0/camera_info (sensor_msgs/msg/CameraInfo), /cam0/image_raw (sensor_msgs/msg/Image)" in msg
    assert pickle.loads(pickle.dumps(err)).args == err.args


def test_wrong_message_type_on_topic(tmp_path):
    path = tmp_path / "b"
    with OutputBagWriter(path) as w:
        F = w.factory
        w.write("/camera/color/camera_info", INFO, rm.camera_to_camera_info(F, CAM_L, T0, "c"), T0)
        w.write("/camera/color/image_raw", "geometry_msgs/msg/PoseStamped", rm.make_pose_stamped(F, 0, np.eye(4), "x"),
                0)
        w.write("/camera/aligned_depth_to_color/image_raw", IMAGE,
                rm.numpy_to_image(F, np.zeros((48, 64), np.uint16), "16UC1", T0, "c"), T0)
    with pytest.raises(BagError, match=r"BagTopics\.rgb_image must carry sensor_msgs/msg/Image, the bag has "
                                       r"geometry_msgs/msg/PoseStamped") as e:
        read_bag_sequence(path, "rgbd")
    assert e.value.topic == "/camera/color/image_raw"


def test_wrong_ground_truth_type(tmp_path):
    def extra(w):
        w.write("/ground_truth/pose", "sensor_msgs/msg/Image", rm.numpy_to_image(w.factory, np.zeros((1, 1), np.uint8),
                                                                                 "mono8", 0, "x"), 0)

    bag = write_raw_stereo(tmp_path / "b", [T0], [T0], extra=extra)
    with pytest.raises(BagError, match="ground truth must be one of"):
        read_bag_sequence(bag)
    assert read_bag_sequence(bag, topics=BagTopics(ground_truth=None)).num_frames == 1


def test_wrong_depth_encoding(tmp_path):
    path = tmp_path / "b"
    with OutputBagWriter(path) as w:
        F = w.factory
        w.write("/camera/color/camera_info", INFO, rm.camera_to_camera_info(F, CAM_L, T0, "c"), T0)
        w.write("/camera/color/image_raw", IMAGE, rm.numpy_to_image(F, np.zeros((48, 64), np.uint8), "mono8", T0, "c"),
                T0)
        w.write("/camera/aligned_depth_to_color/image_raw", IMAGE,
                rm.numpy_to_image(F, np.zeros((48, 64), np.uint16), "mono16", T0, "c"), T0)
    with pytest.raises(BagError, match=r"depth encoding 'mono16' is not supported; expected one of \('16UC1', "
                                       r"'32FC1'\)") as e:
        read_bag_sequence(path, "rgbd")
    assert e.value.topic == "/camera/aligned_depth_to_color/image_raw"


def test_no_camera_info_message(tmp_path):
    def extra(w):  # the topic exists but carries no message
        w._bag.writer.add_connection("/cam1/camera_info", INFO, typestore=w.factory.typestore)

    bag = write_raw_stereo(tmp_path / "b", [T0], [T0], right_info=False, extra=extra)
    with pytest.raises(BagError, match="topic '/cam1/camera_info': no camera_info message"):
        read_bag_sequence(bag)


def test_bad_baseline_asks_for_T_left_right(tmp_path):
    path = tmp_path / "b"
    seq, _ = stereo_sequence(n=1)
    seq.T_left_right = np.eye(4)  # zero baseline
    write_sequence_bag(path, seq)
    with pytest.raises(BagError, match=r"baseline 0\.0 m .* pass T_left_right"):
        read_bag_sequence(path)


def test_image_size_must_match_camera_info(tmp_path):
    path = tmp_path / "b"
    seq, _ = stereo_sequence(n=1)
    seq.camera = PinholeCamera(640, 480, 50.0, 51.0, 31.5, 23.5)
    write_sequence_bag(path, seq)
    with pytest.raises(BagError, match="images are 64x48 but camera_info says 640x480"):
        read_bag_sequence(path)


@pytest.mark.parametrize("storage", STORAGES)
def test_corrupt_bags_give_bag_error(tmp_path, storage):
    seq, _ = stereo_sequence(n=2)
    bag = write_sequence_bag(tmp_path / "b", seq, storage=storage)
    data_file = bag / f"b{EXT[storage]}"
    got = read_bag_sequence(bag)  # indexed while intact

    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    with pytest.raises(BagError, match=r"cannot open bag \((AnyReaderError|DatabaseError): ") as e:
        read_bag_sequence(bag)
    assert e.value.path == str(bag) and e.value.topic is None
    with pytest.raises(BagError, match="cannot open bag"):
        list(got.frames())  # lazy frames report the corruption the same way

    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [unterminated\n")
    with pytest.raises(BagError, match="Could not load YAML"):
        read_bag_sequence(bag)
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information:\n  version: 8\n")
    with pytest.raises(BagError, match="metadata key is missing"):
        read_bag_sequence(bag)


def test_missing_and_foreign_paths(tmp_path):
    with pytest.raises(BagError, match="bag does not exist"):
        read_bag_sequence(tmp_path / "nope")
    (tmp_path / "folder").mkdir()
    with pytest.raises(BagError, match=r"not a rosbag2 directory \(no metadata.yaml\)"):
        read_bag_sequence(tmp_path / "folder")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BagError, match="Unrecognized storage format"):
        read_bag_sequence(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="mode must be"):
        read_bag_sequence(tmp_path / "nope", mode="mono")


# ---------------------------------------------------------------------------------------------
# OutputBagWriter
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", STORAGES)
def test_output_writer_odometry_tf_path(tmp_path, storage):
    poses = [(T0 + k * 100_000_000, rot_z(0.2 * k, (k, 2.0 * k, 0.1))) for k in range(3)]
    path = tmp_path / "out"
    with OutputBagWriter(path, storage=storage) as w:
        for s, T in poses:
            w.write_odometry(s, T, twist=[0.1, 0, 0, 0, 0, 0.2])
            w.write_tf(s, T, "odom", "base_link")
        w.write_path(poses[-1][0], "odom", poses)
        assert w.message_count == 7
    with anyreader(path) as reader:
        assert {name: info.msgtype for name, info in reader.topics.items()} == {
            "/odom": "nav_msgs/msg/Odometry", "/tf": "tf2_msgs/msg/TFMessage", "/path": "nav_msgs/msg/Path"}
        got = {"/odom": [], "/tf": [], "/path": []}
        for conn, t, raw in reader.messages():
            got[conn.topic].append((t, reader.deserialize(raw, conn.msgtype)))
    assert [t for t, _ in got["/odom"]] == [s for s, _ in poses] == [t for t, _ in got["/tf"]]
    for (s, T), (_, odom), (_, tf) in zip(poses, got["/odom"], got["/tf"], strict=True):
        assert rm.stamp_to_ns(odom.header.stamp) == s
        assert (odom.header.frame_id, odom.child_frame_id) == ("odom", "base_link")
        assert np.allclose(rm.pose_to_matrix(odom.pose.pose), T, atol=1e-14, rtol=0)
        assert odom.twist.twist.angular.z == 0.2
        (ts_msg,) = tf.transforms
        assert (rm.stamp_to_ns(ts_msg.header.stamp), ts_msg.header.frame_id, ts_msg.child_frame_id) == (
            s, "odom", "base_link")
        assert np.allclose(rm.transform_to_matrix(ts_msg.transform), T, atol=1e-14, rtol=0)
    ((t, path_msg),) = got["/path"]
    assert t == poses[-1][0] and path_msg.header.frame_id == "odom"
    assert [rm.stamp_to_ns(p.header.stamp) for p in path_msg.poses] == [s for s, _ in poses]
    assert all(np.allclose(rm.pose_to_matrix(p.pose), T, atol=1e-14, rtol=0)
               for p, (_, T) in zip(path_msg.poses, poses, strict=True))


def test_interrupted_writer_leaves_readable_bag(tmp_path):
    path = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), OutputBagWriter(path) as w:
        w.write_odometry(T0, np.eye(4))
        w.write_odometry(T0 + 1, rot_z(0.1))
        raise KeyboardInterrupt
    assert (path / "metadata.yaml").is_file()
    with anyreader(path) as reader:
        stamps = [t for _, t, _ in reader.messages()]
    assert stamps == [T0, T0 + 1]
    with pytest.raises(FileExistsError, match="overwrite=True"), OutputBagWriter(path):
        pass
    with OutputBagWriter(path, overwrite=True) as w:
        w.write_tf(5, np.eye(4), "map", "odom")
    with anyreader(path) as reader:
        assert [t for _, t, _ in reader.messages()] == [5]
    with pytest.raises(RuntimeError, match="not open"):
        w.write_tf(6, np.eye(4), "map", "odom")


def test_output_writer_rejects_type_change(tmp_path):
    with OutputBagWriter(tmp_path / "o") as w:
        w.write_odometry(0, np.eye(4))
        with pytest.raises(ValueError, match="already carries nav_msgs/msg/Odometry"):
            w.write("/odom", "geometry_msgs/msg/PoseStamped", rm.make_pose_stamped(w.factory, 0, np.eye(4), "o"), 0)


@pytest.mark.parametrize("storage", STORAGES)
def test_keyframe_through_bag_bit_for_bit(tmp_path, storage):
    rng = np.random.default_rng(11)
    n = 9
    kf = Keyframe(keyframe_id=7, stamp_ns=T0 + 17, T_odom_base=rot_z(0.3, (1.0, 2.0, 3.0)),
                  T_base_camera=rot_z(-0.2, (0.1, 0.0, 0.05)), points=rng.normal(0, 2, (n, 3)),
                  pixels=rng.uniform(0, 64, (n, 2)), descriptors=rng.integers(0, 256, (n, 32)),
                  landmark_ids=np.r_[-1, rng.integers(0, 2**32 - 1, n - 1)], camera=CAM_L)
    path = tmp_path / "kf"
    with OutputBagWriter(path, storage=storage) as w:
        w.write_keyframe(kf, camera_frame="cam0")
        direct = rm.keyframe_from_messages(*rm.keyframe_to_messages(w.factory, kf, "odom", "cam0"), 7,
                                           kf.T_base_camera)
    with anyreader(path) as reader:
        msgs = {c.topic: reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()}
    assert set(msgs) == {"/keyframe/pose", "/keyframe/cloud", "/keyframe/camera_info"}
    back = rm.keyframe_from_messages(msgs["/keyframe/pose"], msgs["/keyframe/cloud"], msgs["/keyframe/camera_info"],
                                     7, kf.T_base_camera)
    for name in ("points", "pixels", "descriptors", "landmark_ids"):
        a, b, c = getattr(kf, name), getattr(direct, name), getattr(back, name)
        assert a.dtype == c.dtype and a.tobytes() == b.tobytes() == c.tobytes(), name
    assert back.T_odom_base.tobytes() == direct.T_odom_base.tobytes()  # the bag adds no rounding
    assert np.allclose(back.T_odom_base, kf.T_odom_base, atol=1e-15, rtol=0)
    assert (back.stamp_ns, back.camera, back.keyframe_id) == (kf.stamp_ns, CAM_L, 7)
