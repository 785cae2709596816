"""Duck-typed ROS message conversion: rosbags (Humble) dataclasses, SimpleNamespace objects, fake rclpy modules."""

from __future__ import annotations

import array
import math
import pickle
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest

from mp_slam_ros.io import ros_messages as rm
from mp_slam_ros.io.errors import InputFormatError
from mp_slam_ros.vision.types import Keyframe, PinholeCamera


@pytest.fixture(scope="module")
def ts():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


@pytest.fixture(scope="module")
def F(ts):
    return rm.rosbags_factory(ts)


def ns_factory(name):
    """A factory whose 'classes' build SimpleNamespace objects (as duck-typed as it gets)."""
    rm.normalise_type_name(name)
    return lambda **kw: SimpleNamespace(**kw)


def cdr(ts, msg):
    """Serialise and deserialise through CDR, as a bag or a DDS link would."""
    return ts.deserialize_cdr(ts.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


def raw_image(ts, arr, encoding, pad=0, bigendian=False):
    """A rosbags Image built by hand (independently of numpy_to_image), with `pad` bytes per row."""
    base, channels = rm.IMAGE_ENCODINGS[encoding]
    h, w = arr.shape[:2]
    dt = base.newbyteorder(">" if bigendian else "<")
    rows = [np.ascontiguousarray(arr[r], dtype=dt).tobytes() + b"\xab" * pad for r in range(h)]
    step = w * channels * base.itemsize + pad
    T = ts.types
    header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=5, nanosec=7), frame_id="cam")
    return T["sensor_msgs/msg/Image"](header=header, height=h, width=w, encoding=encoding, is_bigendian=int(bigendian),
                                      step=step, data=np.frombuffer(b"".join(rows), dtype=np.uint8))


def sample(encoding, h=5, w=7, seed=0):
    base, channels = rm.IMAGE_ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 1 else (h, w, channels)
    if base.kind == "f":
        return rng.normal(2.0, 1.0, shape).astype(base)
    return rng.integers(0, np.iinfo(base).max, shape, endpoint=True).astype(base)


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", list(rm.IMAGE_ENCODINGS))
@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("bigendian", [False, True])
def test_image_to_numpy_every_encoding_padding_and_byte_order(ts, encoding, pad, bigendian):
    arr = sample(encoding)
    msg = cdr(ts, raw_image(ts, arr, encoding, pad=pad, bigendian=bigendian))
    out = rm.image_to_numpy(msg)
    assert out.dtype == arr.dtype and out.dtype.isnative
    assert out.shape == arr.shape
    assert np.array_equal(out, arr)
    assert out.flags.c_contiguous and out.flags.writeable and not np.shares_memory(out, msg.data)


def test_big_endian_16uc1_exact_values(ts):
    msg = raw_image(ts, np.zeros((1, 2), np.uint16), "16UC1")
    msg.is_bigendian = 1
    msg.data = np.frombuffer(b"\x01\x02\xff\x00", dtype=np.uint8)
    assert rm.image_to_numpy(msg).tolist() == [[0x0102, 0xFF00]]
    msg.is_bigendian = 0
    assert rm.image_to_numpy(msg).tolist() == [[0x0201, 0x00FF]]


@pytest.mark.parametrize("container", [bytes, bytearray, list, lambda b: array.array("B", b)])
def test_image_from_simplenamespace_with_any_byte_container(container):
    data = bytes([1, 2, 3, 9, 4, 5, 6, 9])  # 2 rows of 3 mono8 pixels, 1 padding byte each
    msg = SimpleNamespace(height=2, width=3, encoding="mono8", is_bigendian=False, step=4, data=container(data))
    assert rm.image_to_numpy(msg).tolist() == [[1, 2, 3], [4, 5, 6]]
    assert rm.image_to_grey(msg).tolist() == [[1, 2, 3], [4, 5, 6]]


def test_image_wrong_size_short_step_and_unsupported_encoding(ts):
    msg = raw_image(ts, sample("16UC1"), "16UC1")
    msg.data = msg.data[:-1]
    with pytest.raises(rm.MessageFormatError, match=r"has 69 bytes, expected height\*step = 5\*14 = 70") as e:
        rm.image_to_numpy(msg)
    assert e.value.field == "data" and e.value.msgtype == "sensor_msgs/msg/Image"
    assert isinstance(e.value, InputFormatError) and isinstance(e.value, ValueError)
    assert pickle.loads(pickle.dumps(e.value)).args == e.value.args

    msg = raw_image(ts, sample("16UC1"), "16UC1")
    msg.step = 13
    with pytest.raises(rm.MessageFormatError, match="step 13 is shorter than a row") as e:
        rm.image_to_numpy(msg)
    assert e.value.field == "step"

    msg = SimpleNamespace(height=1, width=1, encoding="yuv422", is_bigendian=0, step=2, data=b"ab")
    with pytest.raises(rm.MessageFormatError, match="unsupported encoding 'yuv422'") as e:
        rm.image_to_numpy(msg)
    assert e.value.field == "encoding"


def test_image_to_grey_channel_order(ts):
    red = np.zeros((2, 3, 3), np.uint8)
    red[..., 0] = 255  # first byte 255: red in rgb8, blue in bgr8
    assert np.all(rm.image_to_grey(raw_image(ts, red, "rgb8")) == 76)  # round(0.299 * 255)
    assert np.all(rm.image_to_grey(raw_image(ts, red, "bgr8")) == 29)  # round(0.114 * 255)
    red4 = np.concatenate([red, np.full((2, 3, 1), 7, np.uint8)], axis=2)
    assert np.all(rm.image_to_grey(raw_image(ts, red4, "rgba8")) == 76)
    assert np.all(rm.image_to_grey(raw_image(ts, red4, "bgra8")) == 29)
    green = np.zeros((1, 1, 3), np.uint8)
    green[..., 1] = 200
    assert rm.image_to_grey(raw_image(ts, green, "bgr8")).tolist() == [[117]]  # round(0.587 * 200)
    mono16 = np.array([[0x1234, 0xFFFF]], np.uint16)
    assert rm.image_to_grey(raw_image(ts, mono16, "mono16")).tolist() == [[0x12, 0xFF]]
    g = rm.image_to_grey(raw_image(ts, sample("mono8"), "mono8"))
    assert g.dtype == np.uint8 and np.array_equal(g, sample("mono8"))
    with pytest.raises(rm.MessageFormatError, match="cannot make a grey image from encoding '16UC1'"):
        rm.image_to_grey(raw_image(ts, mono16, "16UC1"))


def test_image_to_depth_m(ts):
    mm = np.array([[0, 1000, 1234, 65535]], np.uint16)
    d = rm.image_to_depth_m(raw_image(ts, mm, "16UC1", pad=2, bigendian=True))
    assert d.dtype == np.float32
    assert d.tolist() == [[0.0, 1.0, float(np.float32(1.234)), float(np.float32(65.535))]]
    m = np.array([[np.nan, np.inf, -np.inf, -1.0, 0.0, 2.5]], np.float32)
    assert rm.image_to_depth_m(raw_image(ts, m, "32FC1")).tolist() == [[0, 0, 0, 0, 0, 2.5]]
    with pytest.raises(rm.MessageFormatError, match="depth image has encoding 'mono16'"):
        rm.image_to_depth_m(raw_image(ts, mm, "mono16"))


@pytest.mark.parametrize("encoding", list(rm.IMAGE_ENCODINGS))
def test_numpy_to_image_round_trip(ts, F, encoding):
    arr = sample(encoding, seed=3)
    msg = rm.numpy_to_image(F, arr, encoding, 1_500_000_000_000_000_001, "cam0")
    assert msg.__msgtype__ == "sensor_msgs/msg/Image"
    base, channels = rm.IMAGE_ENCODINGS[encoding]
    assert (msg.height, msg.width, msg.step, msg.is_bigendian) == (5, 7, 7 * channels * base.itemsize, 0)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (1_500_000_000, 1, "cam0")
    back = cdr(ts, msg)
    assert np.array_equal(rm.image_to_numpy(back), arr)
    duck = rm.numpy_to_image(ns_factory, arr, encoding, 0, "x")
    assert isinstance(duck.data, array.array) and np.array_equal(rm.image_to_numpy(duck), arr)


def test_numpy_to_image_rejects_mismatch(F):
    with pytest.raises(ValueError, match="needs dtype uint16"):
        rm.numpy_to_image(F, np.zeros((2, 2), np.int32), "16UC1", 0, "c")
    with pytest.raises(ValueError, match=r"needs shape \(H, W, 3\)"):
        rm.numpy_to_image(F, np.zeros((2, 2), np.uint8), "bgr8", 0, "c")
    with pytest.raises(ValueError, match="unsupported encoding 'jpeg'"):
        rm.numpy_to_image(F, np.zeros((2, 2), np.uint8), "jpeg", 0, "c")
    big = np.array([[1, 513]], dtype=">u2")  # a non-native byte order is converted, not rejected
    assert rm.image_to_numpy(rm.numpy_to_image(F, big, "16UC1", 0, "c")).tolist() == [[1, 513]]


# ---------------------------------------------------------------------------------------------
# Stamps, camera info, poses
# ---------------------------------------------------------------------------------------------


def test_stamps(F):
    t = rm.ns_to_stamp(F, 1_700_000_000_123_456_789)
    assert (t.sec, t.nanosec) == (1_700_000_000, 123_456_789)
    assert rm.stamp_to_ns(t) == 1_700_000_000_123_456_789
    t = rm.ns_to_stamp(F, -1)
    assert (t.sec, t.nanosec) == (-1, 999_999_999) and rm.stamp_to_ns(t) == -1
    assert rm.stamp_to_ns(SimpleNamespace(secs=3, nsecs=4)) == 3_000_000_004
    assert rm.stamp_to_ns(SimpleNamespace(nanoseconds=42)) == 42
    with pytest.raises(ValueError, match="int32 seconds"):
        rm.ns_to_stamp(F, 2**31 * 10**9)
    with pytest.raises(rm.MessageFormatError, match="no sec/nanosec"):
        rm.stamp_to_ns(SimpleNamespace(seconds=1))


CAM = PinholeCamera(640, 480, 458.654, 457.296, 367.215, 248.375,
                    (-0.28340811, 0.07395907, 0.00019359, 1.76187114e-05), "plumb_bob")


def test_camera_info_round_trip_and_baseline(ts, F):
    info = cdr(ts, rm.camera_to_camera_info(F, CAM, 12, "cam1", baseline_m=0.110078))
    assert info.header.frame_id == "cam1" and rm.stamp_to_ns(info.header.stamp) == 12
    assert info.k.tolist() == [458.654, 0, 367.215, 0, 457.296, 248.375, 0, 0, 1]
    assert info.p.tolist() == [458.654, 0, 367.215, -458.654 * 0.110078, 0, 457.296, 248.375, 0, 0, 0, 1, 0]
    assert rm.camera_info_to_camera(info) == CAM
    assert math.isclose(rm.camera_info_baseline(info), 0.110078, rel_tol=1e-15)
    rect = rm.camera_info_to_camera(info, rectified=True)
    assert rect == PinholeCamera(640, 480, 458.654, 457.296, 367.215, 248.375)
    # Undistorted camera: empty d round-trips as empty.
    plain = PinholeCamera(64, 48, 50.0, 51.0, 31.5, 23.5)
    assert rm.camera_info_to_camera(cdr(ts, rm.camera_to_camera_info(F, plain, 0, "c"))) == plain
    assert rm.camera_info_baseline(rm.camera_to_camera_info(F, plain, 0, "c")) == 0.0


def test_camera_info_rectified_uses_p_and_ros1_names():
    info = SimpleNamespace(width=752, height=480, distortion_model="plumb_bob", D=[0.1, 0.2, 0, 0, 0],
                           K=[460.0, 0, 370.0, 0, 459.0, 250.0, 0, 0, 1],
                           P=[435.2, 0, 367.4, -47.9, 0, 435.2, 252.2, 0, 0, 0, 1, 0])
    assert rm.camera_info_to_camera(info) == PinholeCamera(752, 480, 460.0, 459.0, 370.0, 250.0,
                                                           (0.1, 0.2, 0.0, 0.0, 0.0))
    assert rm.camera_info_to_camera(info, rectified=True) == PinholeCamera(752, 480, 435.2, 435.2, 367.4, 252.2)
    assert rm.camera_info_baseline(info) == pytest.approx(47.9 / 435.2, rel=1e-15)
    info.P = [0.0] * 12
    with pytest.raises(rm.MessageFormatError, match="P is all zero and the camera is distorted"):
        rm.camera_info_to_camera(info, rectified=True)


def test_camera_info_rejects_bad_values(F):
    info = rm.camera_to_camera_info(F, CAM, 0, "c")
    info.k = np.zeros(9)
    with pytest.raises(rm.MessageFormatError, match="K is all zero: the camera is not calibrated") as e:
        rm.camera_info_to_camera(info)
    assert e.value.field == "k" and str(e.value).startswith("sensor_msgs/msg/CameraInfo: field 'k'")
    info = rm.camera_to_camera_info(F, CAM, 0, "c")
    info.distortion_model = "fov"
    with pytest.raises(rm.MessageFormatError, match="distortion model 'fov'"):
        rm.camera_info_to_camera(info)
    info = rm.camera_to_camera_info(F, CAM, 0, "c")
    info.width = 0
    with pytest.raises(rm.MessageFormatError, match="image size must be positive, got 0x480"):
        rm.camera_info_to_camera(info)
    info = rm.camera_to_camera_info(F, CAM, 0, "c")
    info.p = np.zeros(12)
    with pytest.raises(rm.MessageFormatError, match=r"P\[0,0\] is zero"):
        rm.camera_info_baseline(info)


def rot_z(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def pose(angle, t):
    T = np.eye(4)
    T[:3, :3] = rot_z(angle)
    T[:3, 3] = t
    return T


def test_pose_fields_and_back(F, ts):
    xyz, q = rm.pose_fields(pose(math.pi / 2, [1, 2, 3]))
    assert xyz.tolist() == [1, 2, 3]
    assert np.allclose(q, [0, 0, math.sqrt(0.5), math.sqrt(0.5)], atol=1e-15, rtol=0)
    c, s = math.cos(1.1), math.sin(1.1)
    T_x = np.eye(4)
    T_x[1:3, 1:3] = [[c, -s], [s, c]]
    T = pose(0.3, [0.5, -1.25, 2.0]) @ T_x  # a rotation about z then x: all quaternion components non-zero
    assert np.allclose(rm.pose_to_matrix(cdr(ts, rm.make_pose(F, T))), T, atol=1e-15, rtol=0)
    assert np.allclose(rm.transform_to_matrix(cdr(ts, rm.make_transform(F, T))), T, atol=1e-15, rtol=0)
    stamped = cdr(ts, rm.make_pose_stamped(F, 9, T, "odom"))  # wrappers are unwrapped
    assert np.allclose(rm.pose_to_matrix(stamped), T, atol=1e-15, rtol=0)
    with pytest.raises(ValueError, match="does not hold a rotation"):
        rm.pose_fields(np.diag([1.0, 2.0, 1.0, 1.0]))
    zero_q = SimpleNamespace(position=SimpleNamespace(x=0, y=0, z=0), orientation=SimpleNamespace(x=0, y=0, z=0, w=0))
    with pytest.raises(rm.MessageFormatError, match=r"quaternion .* is zero"):
        rm.pose_to_matrix(zero_q)


def test_make_odometry_tf_path(ts, F):
    T = pose(0.7, [1.0, 2.0, 0.5])
    cov = np.arange(36.0).reshape(6, 6)
    odom = cdr(ts, rm.make_odometry(F, 3_000_000_007, T, twist=[1, 2, 3, 4, 5, 6], pose_covariance=cov))
    assert odom.header.frame_id == "odom" and odom.child_frame_id == "base_link"
    assert rm.stamp_to_ns(odom.header.stamp) == 3_000_000_007
    assert odom.pose.covariance.dtype == np.float64 and odom.pose.covariance.tolist() == list(range(36))
    assert odom.twist.covariance.tolist() == [0.0] * 36
    tw = odom.twist.twist
    assert [tw.linear.x, tw.linear.y, tw.linear.z, tw.angular.x, tw.angular.y, tw.angular.z] == [1, 2, 3, 4, 5, 6]
    assert np.allclose(rm.pose_to_matrix(odom.pose.pose), T, atol=1e-15, rtol=0)
    with pytest.raises(ValueError, match="36 entries"):
        rm.make_odometry(F, 0, T, pose_covariance=np.eye(3))

    tf = cdr(ts, rm.make_tf_message(F, [rm.make_transform_stamped(F, 5, T, "odom", "base_link"),
                                        rm.make_transform_stamped(F, 6, np.eye(4), "map", "odom")]))
    assert [(t.header.frame_id, t.child_frame_id, rm.stamp_to_ns(t.header.stamp)) for t in tf.transforms] == [
        ("odom", "base_link", 5), ("map", "odom", 6)]
    assert np.allclose(rm.transform_to_matrix(tf.transforms[0]), T, atol=1e-15, rtol=0)

    path = cdr(ts, rm.make_path(F, 99, "map", [(10, T), (20, np.eye(4))]))
    assert path.header.frame_id == "map" and rm.stamp_to_ns(path.header.stamp) == 99
    assert [(rm.stamp_to_ns(p.header.stamp), p.header.frame_id) for p in path.poses] == [(10, "map"), (20, "map")]
    assert np.array_equal(rm.pose_to_matrix(path.poses[1].pose), np.eye(4))


def test_builders_work_with_duck_and_importlib_factories(monkeypatch):
    # A fake rclpy-style package: nav_msgs.msg.Odometry etc. resolved through importlib.
    classes = {}
    for full in ("builtin_interfaces/msg/Time", "std_msgs/msg/Header", "geometry_msgs/msg/Point",
                 "geometry_msgs/msg/Quaternion", "geometry_msgs/msg/Pose", "geometry_msgs/msg/PoseStamped"):
        pkg, sub, name = full.split("/")
        mod = sys.modules.get(f"fakeros_{pkg}.{sub}") or types.ModuleType(f"fakeros_{pkg}.{sub}")
        cls = type(name, (SimpleNamespace,), {})
        setattr(mod, name, cls)
        classes[full] = cls
        monkeypatch.setitem(sys.modules, f"fakeros_{pkg}", types.ModuleType(f"fakeros_{pkg}"))
        monkeypatch.setitem(sys.modules, f"fakeros_{pkg}.{sub}", mod)
    real = rm.importlib_factory()

    def factory(name):
        return real("fakeros_" + rm.normalise_type_name(name))

    msg = rm.make_pose_stamped(factory, 2_000_000_001, pose(0.2, [1, 2, 3]), "odom")
    assert type(msg) is classes["geometry_msgs/msg/PoseStamped"]
    assert type(msg.header.stamp) is classes["builtin_interfaces/msg/Time"]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (2, 1)
    assert np.allclose(rm.pose_to_matrix(msg.pose), pose(0.2, [1, 2, 3]), atol=1e-15, rtol=0)
    with pytest.raises(ImportError, match=r"fakeros_nav_msgs\.msg"):
        factory("nav_msgs/msg/Odometry")
    with pytest.raises(ImportError, match="has no message 'Nope'"):
        factory("std_msgs/msg/Nope")
    with pytest.raises(ValueError, match="not in the rosbags typestore"):
        rm.rosbags_factory()("foo_msgs/msg/Bar")
    assert rm.normalise_type_name("nav_msgs/Odometry") == "nav_msgs/msg/Odometry"


# ---------------------------------------------------------------------------------------------
# Keyframes
# ---------------------------------------------------------------------------------------------


def make_keyframe(n=6, seed=1, camera=CAM):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 1000, n)
    if n:
        ids[0], ids[-1] = -1, 2**32 - 2
    return Keyframe(keyframe_id=4, stamp_ns=1_600_000_000_000_000_123, T_odom_base=pose(0.4, [3.0, -2.0, 0.1]),
                    T_base_camera=pose(-0.1, [0.05, 0.0, 0.2]), points=rng.normal(0, 3, (n, 3)),
                    pixels=rng.uniform(0, 600, (n, 2)), descriptors=rng.integers(0, 256, (n, 32)),
                    landmark_ids=ids, camera=camera)


def assert_keyframes_equal(a: Keyframe, b: Keyframe, exact_pose=False):
    assert (a.keyframe_id, a.stamp_ns, a.camera) == (b.keyframe_id, b.stamp_ns, b.camera)
    for name in ("points", "pixels", "descriptors", "landmark_ids", "T_base_camera"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes(), name  # bit for bit
    if exact_pose:
        assert a.T_odom_base.tobytes() == b.T_odom_base.tobytes()
    else:
        assert np.allclose(a.T_odom_base, b.T_odom_base, atol=1e-15, rtol=0)


def test_keyframe_cloud_layout_and_round_trip(ts, F):
    kf = make_keyframe()
    pose_msg, cloud, info = (cdr(ts, m) for m in rm.keyframe_to_messages(F, kf, "odom", "cam0"))
    assert pose_msg.header.frame_id == "odom" and cloud.header.frame_id == "cam0" and info.header.frame_id == "cam0"
    assert {rm.stamp_to_ns(m.header.stamp) for m in (pose_msg, cloud, info)} == {kf.stamp_ns}
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("u", 12, 7, 1), ("v", 16, 7, 1),
        ("landmark_id", 20, 6, 1), ("descriptor", 24, 2, 32)]
    assert (cloud.height, cloud.width, cloud.point_step, cloud.row_step) == (1, 6, 56, 336)
    assert cloud.is_dense is True and cloud.is_bigendian is False and len(cloud.data) == 336
    # Little-endian bytes at the documented offsets.
    first = bytes(cloud.data[:56])
    assert first[0:4] == kf.points[0, 0].astype("<f4").tobytes()
    assert first[20:24] == b"\xff\xff\xff\xff"  # landmark -1
    assert first[24:56] == kf.descriptors[0].tobytes()
    assert rm.camera_info_to_camera(info, rectified=True).intrinsics.tolist() == CAM.intrinsics.tolist()
    back = rm.keyframe_from_messages(pose_msg, cloud, info, kf.keyframe_id, kf.T_base_camera)
    assert_keyframes_equal(kf, back)
    assert back.landmark_ids[0] == -1 and back.landmark_ids[-1] == 2**32 - 2
    fields, data = rm.pack_keyframe_cloud_fields(kf)
    assert fields == list(rm.KEYFRAME_CLOUD_FIELDS) and data == bytes(cloud.data)


def test_unpack_keyframe_cloud_honours_foreign_layout():
    """Different field order and offsets, padding in points and rows, two rows, big-endian, extra fields."""
    kf = make_keyframe(n=4, seed=7)
    names = ["descriptor", "intensity", "landmark_id", "v", "u", "z", "y", "x"]
    dt = np.dtype({"names": names,
                   "formats": [(">u1", (32,)), ">f8", ">u4", ">f4", ">f4", ">f4", ">f4", ">f4"],
                   "offsets": [0, 32, 40, 44, 48, 52, 56, 60], "itemsize": 72})
    rec = np.zeros(4, dt)
    rec["descriptor"], rec["intensity"] = kf.descriptors, 1.5
    rec["landmark_id"] = np.where(kf.landmark_ids < 0, 0xFFFFFFFF, kf.landmark_ids)
    rec["u"], rec["v"] = kf.pixels[:, 0], kf.pixels[:, 1]
    rec["x"], rec["y"], rec["z"] = kf.points.T
    rows = rec.reshape(2, 2)
    data = b"".join(r.tobytes() + b"\x00" * 8 for r in rows)  # row_step = 2 * 72 + 8
    specs = [("descriptor", 0, 2, 32), ("intensity", 32, 8, 1), ("landmark_id", 40, 6, 1), ("v", 44, 7, 1),
             ("u", 48, 7, 1), ("z", 52, 7, 1), ("y", 56, 7, 1), ("x", 60, 7, 1)]
    cloud = SimpleNamespace(height=2, width=2, is_bigendian=True, point_step=72, row_step=152, data=data,
                            fields=[SimpleNamespace(name=n, offset=o, datatype=d, count=c) for n, o, d, c in specs])
    got = rm.unpack_keyframe_cloud(cloud)
    assert got.points.tobytes() == kf.points.tobytes()
    assert got.pixels.tobytes() == kf.pixels.tobytes()
    assert got.landmark_ids.tolist() == kf.landmark_ids.tolist()
    assert got.descriptors.tobytes() == kf.descriptors.tobytes()
    assert rm.cloud_to_structured(cloud)["intensity"].tolist() == [1.5] * 4


def test_keyframe_cloud_errors(F):
    kf = make_keyframe()
    _pose, cloud, info = rm.keyframe_to_messages(F, kf)
    no_desc = SimpleNamespace(**{**vars(cloud), "fields": cloud.fields[:-1]})
    with pytest.raises(rm.MessageFormatError, match=r"lacks field\(s\) \['descriptor'\]"):
        rm.unpack_keyframe_cloud(no_desc)
    short = SimpleNamespace(**{**vars(cloud), "data": cloud.data[:-1]})
    with pytest.raises(rm.MessageFormatError, match="expected height\\*row_step = 1\\*336 = 336"):
        rm.unpack_keyframe_cloud(short)
    outside = SimpleNamespace(**{**vars(cloud), "point_step": 40})
    with pytest.raises(rm.MessageFormatError, match="does not fit in point_step 40"):
        rm.unpack_keyframe_cloud(outside)
    moved = rm.make_pose_stamped(F, kf.stamp_ns + 1, kf.T_odom_base, "odom")
    with pytest.raises(rm.MessageFormatError, match="stamp"):
        rm.keyframe_from_messages(moved, cloud, info, 0, np.eye(4))
    bad = make_keyframe()
    bad.landmark_ids[1] = 2**32 - 1
    with pytest.raises(ValueError, match=r"landmark ids must be in \[-1, 2\*\*32-2\]"):
        rm.pack_keyframe_cloud_fields(bad)
    with pytest.raises(ValueError, match="has no camera"):
        rm.keyframe_to_messages(F, make_keyframe(camera=None))


def test_empty_keyframe_round_trip(ts, F):
    kf = make_keyframe(n=0)
    msgs = [cdr(ts, m) for m in rm.keyframe_to_messages(F, kf)]
    back = rm.keyframe_from_messages(*msgs, kf.keyframe_id, kf.T_base_camera)
    assert back.num_features == 0 and back.descriptors.shape == (0, 32)
