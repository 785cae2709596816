"""Conversion between ROS 2 messages and the package's numpy types, without importing rclpy.

Every reader here is *duck-typed*: it only touches the ROS field names, so the same function
serves ``rclpy`` messages, the dataclasses of the ``rosbags`` typestore and plain
``types.SimpleNamespace`` objects.  Byte fields (``data``) may be ``bytes``, ``array.array``,
a uint8 numpy array or a list of ints; fixed float arrays (``k``, ``p``, ``covariance``) anything
``numpy.asarray`` understands.  ROS 1 spellings (``K``/``D``/``P``, ``secs``/``nsecs``) are
accepted too.

Builders take a *factory*: a callable ``factory(type_name) -> message class`` with full type
names such as ``'nav_msgs/msg/Odometry'``.  Messages are constructed with every field as a
keyword argument (the ``rosbags`` dataclasses need all of them; rclpy accepts keywords).  Use
:func:`rosbags_factory` for bag files and :func:`importlib_factory` inside a ROS node.

Conventions (as in :mod:`mp_slam_ros.vision.types`): poses are 4x4 float64 ``T_a_b`` (frame
``b`` in frame ``a``), stamps are int nanoseconds, depth is float32 metres with 0 = no depth,
quaternions are ``(x, y, z, w)`` as in ``geometry_msgs/Quaternion``.

Keyframe transport
------------------
A :class:`~mp_slam_ros.vision.types.Keyframe` travels as three messages with the *same*
``header.stamp`` (the keyframe's ``stamp_ns``):

=============================  ====================  ==============================================
message                        header.frame_id       content
=============================  ====================  ==============================================
geometry_msgs/PoseStamped      odom frame            ``T_odom_base`` (base_link pose in odom)
sensor_msgs/PointCloud2        camera frame          one point per feature, layout below
sensor_msgs/CameraInfo         camera frame          the keyframe camera: ``k``/``d`` the full
                                                     calibration, ``p`` = the rectified intrinsics
                                                     the ``u v`` pixels refer to (fx 0 cx 0 /
                                                     0 fy cy 0 / 0 0 1 0)
=============================  ====================  ==============================================

PointCloud2 layout: ``height`` 1, ``width`` N, ``is_dense`` True, little-endian
(``is_bigendian`` False), ``point_step`` 56, ``row_step`` 56 N:

===========  ======  ========  =====  ============================================================
field        offset  datatype  count  meaning
===========  ======  ========  =====  ============================================================
x, y, z      0 4 8   FLOAT32   1      3D point in the camera frame (metres, optical convention)
u, v         12 16   FLOAT32   1      undistorted pixel coordinates (rectified intrinsics ``p``)
landmark_id  20      UINT32    1      front-end landmark id; -1 ("none") travels as 0xFFFFFFFF
descriptor   24      UINT8     32     the 32-byte ORB descriptor
===========  ======  ========  =====  ============================================================

Readers of the cloud build a numpy structured dtype from the ``fields`` list, so they honour
any offsets, ``point_step`` and ``row_step`` a producer chooses, and accept extra fields.
"""

from __future__ import annotations

import array
import dataclasses
import importlib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from mp_slam_ros.io.errors import InputFormatError
from mp_slam_ros.vision.types import DISTORTION_MODELS, Keyframe, PinholeCamera

__all__ = [
    "BASELINE_RANGE_M",
    "DEPTH_ENCODINGS",
    "IMAGE_ENCODINGS",
    "KEYFRAME_CLOUD_FIELDS",
    "KEYFRAME_POINT_STEP",
    "POINTFIELD_DTYPES",
    "KeyframeCloud",
    "MessageFactory",
    "MessageFormatError",
    "PointField",
    "baseline_problem",
    "camera_info_baseline",
    "camera_info_to_camera",
    "camera_to_camera_info",
    "cloud_to_structured",
    "image_to_depth_m",
    "image_to_grey",
    "image_to_numpy",
    "importlib_factory",
    "keyframe_from_messages",
    "keyframe_to_messages",
    "make_header",
    "make_odometry",
    "make_path",
    "make_pose",
    "make_pose_stamped",
    "make_tf_message",
    "make_transform",
    "make_transform_stamped",
    "normalise_type_name",
    "ns_to_stamp",
    "numpy_to_image",
    "pack_keyframe_cloud_fields",
    "pose_fields",
    "pose_to_matrix",
    "rosbags_factory",
    "stamp_to_ns",
    "transform_to_matrix",
    "unpack_keyframe_cloud",
]

#: ``factory(type_name) -> message class``, e.g. ``factory('nav_msgs/msg/Odometry')``.
MessageFactory = Callable[[str], Any]

_NS = 1_000_000_000


class MessageFormatError(InputFormatError):
    """A message whose content the converters cannot use.

    ``str(err)`` reads ``"{msgtype}: field '{field}': {reason}"``.  It is an
    :class:`~mp_slam_ros.io.errors.InputFormatError` (hence a ``ValueError``) with ``path`` None.
    """

    def __init__(self, msgtype: str | None, field: str | None, reason: str) -> None:
        self.msgtype: str | None = msgtype
        super().__init__(None, None, field, reason)

    def _format(self) -> str:
        parts = [self.msgtype] if self.msgtype else []
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        parts.append(self.reason)
        return ": ".join(parts)

    def __reduce__(self):
        return (type(self), (self.msgtype, self.field, self.reason))


# ---------------------------------------------------------------------------------------------
# Factories and field helpers
# ---------------------------------------------------------------------------------------------


def normalise_type_name(name: str) -> str:
    """``'pkg/Name'`` or ``'pkg/msg/Name'`` -> ``'pkg/msg/Name'``."""
    parts = name.strip("/").split("/")
    if len(parts) == 2:
        return f"{parts[0]}/msg/{parts[1]}"
    if len(parts) == 3:
        return "/".join(parts)
    raise ValueError(f"message type name {name!r} is not of the form 'package/msg/Name'")


def rosbags_factory(typestore: Any = None) -> MessageFactory:
    """A factory returning ``typestore.types[name]`` (default: the ROS 2 Humble typestore)."""
    if typestore is None:
        from rosbags.typesys import Stores, get_typestore

        typestore = get_typestore(Stores.ROS2_HUMBLE)

    def factory(name: str) -> Any:
        full = normalise_type_name(name)
        try:
            return typestore.types[full]
        except KeyError:
            raise ValueError(f"message type {full!r} is not in the rosbags typestore") from None

    factory.typestore = typestore  # type: ignore[attr-defined]
    return factory


def importlib_factory() -> MessageFactory:
    """A factory importing rclpy-style message packages: ``import_module('nav_msgs.msg').Odometry``."""
    cache: dict[str, Any] = {}

    def factory(name: str) -> Any:
        full = normalise_type_name(name)
        cls = cache.get(full)
        if cls is None:
            package, sub, cls_name = full.split("/")
            try:
                module = importlib.import_module(f"{package}.{sub}")
            except ImportError as err:
                raise ImportError(f"cannot import message package '{package}.{sub}' for {full!r} "
                                  f"(is the ROS environment sourced?): {err}") from err
            try:
                cls = getattr(module, cls_name)
            except AttributeError:
                raise ImportError(f"module '{package}.{sub}' has no message {cls_name!r}") from None
            cache[full] = cls
        return cls

    return factory


def _is_rosbags_class(cls: Any) -> bool:
    return dataclasses.is_dataclass(cls) and hasattr(cls, "__msgtype__")


def _byte_field(cls: Any, raw: bytes) -> Any:
    """A ``uint8[]`` field value: numpy for rosbags dataclasses, ``array.array('B')`` otherwise."""
    if _is_rosbags_class(cls):
        return np.frombuffer(raw, dtype=np.uint8)
    return array.array("B", raw)


def _float_seq_field(cls: Any, values: Iterable[float]) -> Any:
    """A ``float64[]`` (unbounded) field value."""
    if _is_rosbags_class(cls):
        return np.asarray(list(values), dtype=np.float64)
    return array.array("d", [float(v) for v in values])


def _as_uint8(data: Any) -> np.ndarray:
    """The bytes of a ``uint8[]`` field as a flat uint8 array (a view when possible)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise TypeError(f"byte field has dtype {data.dtype}, expected uint8")
        return data.reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8).reshape(-1)


def _msgtype(msg: Any, default: str) -> str:
    return getattr(msg, "__msgtype__", None) or default


def _get(msg: Any, *names: str) -> Any:
    for name in names:
        if hasattr(msg, name):
            return getattr(msg, name)
    return None


# ---------------------------------------------------------------------------------------------
# Stamps and headers
# ---------------------------------------------------------------------------------------------


def stamp_to_ns(stamp: Any) -> int:
    """Integer nanoseconds from ``builtin_interfaces/Time`` (``sec``/``nanosec``).

    Also accepts ROS 1 ``secs``/``nsecs``, ``rclpy.time.Time`` (``nanoseconds``) and plain ints.
    """
    if isinstance(stamp, (int, np.integer)):
        return int(stamp)
    if hasattr(stamp, "sec") and hasattr(stamp, "nanosec"):
        return int(stamp.sec) * _NS + int(stamp.nanosec)
    if hasattr(stamp, "secs") and hasattr(stamp, "nsecs"):
        return int(stamp.secs) * _NS + int(stamp.nsecs)
    if hasattr(stamp, "nanoseconds"):
        return int(stamp.nanoseconds)
    raise MessageFormatError("builtin_interfaces/msg/Time", "stamp",
                             f"{type(stamp).__name__} has no sec/nanosec fields")


def ns_to_stamp(factory: MessageFactory, ns: int) -> Any:
    """``builtin_interfaces/Time`` for integer nanoseconds (``nanosec`` in [0, 1e9), as rclpy)."""
    sec, nanosec = divmod(int(ns), _NS)
    if not -(2**31) <= sec < 2**31:
        raise ValueError(f"stamp {ns} ns does not fit builtin_interfaces/Time (int32 seconds)")
    return factory("builtin_interfaces/msg/Time")(sec=sec, nanosec=nanosec)


def make_header(factory: MessageFactory, stamp_ns: int, frame_id: str) -> Any:
    """``std_msgs/Header`` with ``stamp`` from nanoseconds."""
    return factory("std_msgs/msg/Header")(stamp=ns_to_stamp(factory, stamp_ns), frame_id=str(frame_id))


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------

#: encoding -> (numpy base dtype, channels).
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgb8": (np.dtype(np.uint8), 3),
    "bgra8": (np.dtype(np.uint8), 4),
    "rgba8": (np.dtype(np.uint8), 4),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}

#: Encodings :func:`image_to_depth_m` accepts: 16UC1 millimetres, 32FC1 metres.
DEPTH_ENCODINGS = ("16UC1", "32FC1")

_IMAGE = "sensor_msgs/msg/Image"


def _encoding_spec(msg: Any) -> tuple[str, np.dtype, int]:
    encoding = str(msg.encoding)
    spec = IMAGE_ENCODINGS.get(encoding)
    if spec is None:
        raise MessageFormatError(_msgtype(msg, _IMAGE), "encoding",
                                 f"unsupported encoding {encoding!r}; supported: {', '.join(IMAGE_ENCODINGS)}")
    return encoding, spec[0], spec[1]


def image_to_numpy(msg: Any) -> np.ndarray:
    """``sensor_msgs/Image`` -> a fresh, native-byte-order, C-contiguous numpy array.

    Shape ``(H, W)`` for one channel, ``(H, W, C)`` otherwise; the dtype follows the encoding
    (uint8, uint16, float32), channels stay in the encoding's order (bgr8 stays BGR).  Row
    padding (``step`` > width * pixel size) and ``is_bigendian`` are honoured.  Raises
    :class:`MessageFormatError` for an unsupported encoding, a ``step`` shorter than a row or a
    ``data`` size other than ``height * step``.
    """
    mtype = _msgtype(msg, _IMAGE)
    _encoding, base, channels = _encoding_spec(msg)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height < 0 or width < 0:
        raise MessageFormatError(mtype, "height", f"negative image size {width}x{height}")
    pixel = base.itemsize * channels
    if step < width * pixel:
        raise MessageFormatError(mtype, "step", f"step {step} is shorter than a row of {width} px x {pixel} bytes "
                                 f"({width * pixel}) for encoding {msg.encoding!r}")
    buf = _as_uint8(msg.data)
    if buf.size != height * step:
        raise MessageFormatError(mtype, "data", f"has {buf.size} bytes, expected height*step = {height}*{step} = "
                                 f"{height * step} (encoding {msg.encoding!r}, {width}x{height})")
    shape = (height, width, channels)
    if height == 0 or width == 0:
        out = np.zeros(shape, dtype=base)
    else:
        dt = base.newbyteorder(">" if bool(msg.is_bigendian) else "<")
        view = np.ndarray(shape, dtype=dt, buffer=buf, strides=(step, pixel, base.itemsize))
        out = np.array(view, dtype=base, order="C", copy=True)
    return out.reshape(height, width) if channels == 1 else out


def image_to_grey(msg: Any) -> np.ndarray:
    """8-bit grey ``(H, W)`` uint8 from mono8/8UC1, bgr8, rgb8, bgra8, rgba8 (or mono16 >> 8).

    Colour uses OpenCV's ``cvtColor`` with the channel order of the encoding, i.e.
    ``0.299 R + 0.587 G + 0.114 B``.  Depth encodings (16UC1, 32FC1) are rejected.
    """
    import cv2

    encoding = str(msg.encoding)
    arr = image_to_numpy(msg)
    if encoding in ("mono8", "8UC1"):
        return arr
    codes = {"bgr8": cv2.COLOR_BGR2GRAY, "rgb8": cv2.COLOR_RGB2GRAY,
             "bgra8": cv2.COLOR_BGRA2GRAY, "rgba8": cv2.COLOR_RGBA2GRAY}
    if encoding in codes:
        if arr.size == 0:
            return np.zeros(arr.shape[:2], dtype=np.uint8)
        return cv2.cvtColor(arr, codes[encoding])
    if encoding == "mono16":
        return (arr >> 8).astype(np.uint8)
    raise MessageFormatError(_msgtype(msg, _IMAGE), "encoding",
                             f"cannot make a grey image from encoding {encoding!r} "
                             "(expected mono8, 8UC1, bgr8, rgb8, bgra8, rgba8 or mono16)")


def image_to_depth_m(msg: Any) -> np.ndarray:
    """Depth ``(H, W)`` float32 metres from 16UC1 (millimetres) or 32FC1 (metres).

    16UC1: ``mm / 1000`` (correctly rounded float32), 0 stays 0 (invalid).  32FC1: NaN, inf and
    negative values become 0.  Any other encoding raises :class:`MessageFormatError`.
    """
    encoding = str(msg.encoding)
    if encoding not in DEPTH_ENCODINGS:
        raise MessageFormatError(_msgtype(msg, _IMAGE), "encoding",
                                 f"depth image has encoding {encoding!r}; expected 16UC1 (mm) or 32FC1 (m)")
    arr = image_to_numpy(msg)
    if encoding == "16UC1":
        return arr.astype(np.float32) / np.float32(1000.0)
    arr[~(np.isfinite(arr) & (arr > 0))] = 0.0
    return arr


def numpy_to_image(factory: MessageFactory, array_: np.ndarray, encoding: str, stamp_ns: int,
                   frame_id: str) -> Any:
    """A ``sensor_msgs/Image`` (little-endian, unpadded rows) from a numpy array.

    ``array_`` must have the encoding's dtype (any byte order) and shape ``(H, W)`` for one
    channel or ``(H, W, C)``; the caller is responsible for the channel order.
    """
    spec = IMAGE_ENCODINGS.get(encoding)
    if spec is None:
        raise ValueError(f"numpy_to_image: unsupported encoding {encoding!r}; supported: {', '.join(IMAGE_ENCODINGS)}")
    base, channels = spec
    arr = np.asarray(array_)
    if arr.dtype.newbyteorder("=") != base:
        raise ValueError(f"numpy_to_image: encoding {encoding!r} needs dtype {base}, got {arr.dtype}")
    if channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    expected_ndim = 2 if channels == 1 else 3
    if arr.ndim != expected_ndim or (channels > 1 and arr.shape[2] != channels):
        want = "(H, W)" if channels == 1 else f"(H, W, {channels})"
        raise ValueError(f"numpy_to_image: encoding {encoding!r} needs shape {want}, got {arr.shape}")
    height, width = arr.shape[:2]
    raw = np.ascontiguousarray(arr, dtype=base.newbyteorder("<")).tobytes()
    cls = factory("sensor_msgs/msg/Image")
    return cls(header=make_header(factory, stamp_ns, frame_id), height=int(height), width=int(width),
               encoding=encoding, is_bigendian=0, step=int(width * channels * base.itemsize),
               data=_byte_field(cls, raw))


# ---------------------------------------------------------------------------------------------
# Camera info
# ---------------------------------------------------------------------------------------------

_CAMERA_INFO = "sensor_msgs/msg/CameraInfo"


def _float_array(msg: Any, names: tuple[str, ...], size: int, mtype: str) -> np.ndarray | None:
    value = _get(msg, *names)
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size != size:
        raise MessageFormatError(mtype, names[0], f"has {arr.size} values, expected {size}")
    return arr


#: Sanity bounds of camera_info: sensor_msgs defines at most 14 distortion coefficients
#: (rational_polynomial with thin prism and tilt), and no camera has a side of 100k pixels.
_MAX_DISTORTION = 14
_MAX_IMAGE_SIDE = 100_000

#: Plausible stereo baselines in metres, (low, high]: below 1 mm the depth from disparity is
#: noise, above 10 m no rigid rig exists; values outside are a unit or calibration mistake.
BASELINE_RANGE_M = (1e-3, 10.0)


def _check_finite(mtype: str, name: str, values: np.ndarray | None) -> None:
    if values is not None and not np.all(np.isfinite(values)):
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise MessageFormatError(mtype, name, f"{name}[{bad}] is {values[bad]}: every entry must be finite")


def baseline_problem(baseline_m: float) -> str | None:
    """Why a stereo baseline is implausible (outside :data:`BASELINE_RANGE_M`), or None."""
    low, high = BASELINE_RANGE_M
    if not (math.isfinite(baseline_m) and low < baseline_m <= high):
        return (f"baseline {baseline_m:g} m is outside the plausible range ({low:g} m, {high:g} m] "
                "(P[0,3] must be -fx*B with B in metres)")
    return None


def camera_info_to_camera(msg: Any, rectified: bool = False) -> PinholeCamera:
    """``sensor_msgs/CameraInfo`` -> :class:`PinholeCamera`.

    ``rectified=False``: intrinsics from ``k`` (ROS 1: ``K``) and distortion ``d`` with
    ``distortion_model`` (empty model and no coefficients -> plumb_bob, undistorted).
    ``rectified=True``: the camera of the rectified image, fx fy cx cy from ``p`` and no
    distortion (if ``p`` is all zero and ``d`` is zero, ``k`` is used).  The skew ``k[1]``,
    ``binning_*`` and ``roi`` are ignored.  Raises :class:`MessageFormatError` for an all-zero
    ``k`` (uncalibrated camera), non-positive focal lengths or size, or an unknown model.
    """
    if msg is None:
        raise MessageFormatError(_CAMERA_INFO, None, "no message (None)")
    mtype = _msgtype(msg, _CAMERA_INFO)
    K = _float_array(msg, ("k", "K"), 9, mtype)
    if K is None:
        raise MessageFormatError(mtype, "k", "message has no 'k' (or 'K') field")
    if not np.any(K):
        raise MessageFormatError(mtype, "k", "K is all zero: the camera is not calibrated")
    d_raw = _get(msg, "d", "D")
    d_arr = np.asarray(d_raw if d_raw is not None else (), dtype=np.float64).reshape(-1)
    # Every entry is checked here, at the edge: a NaN or inf slips through the comparisons below
    # and only surfaces deep in rectification as a misleading "left/right swapped?".
    if d_arr.size > _MAX_DISTORTION:
        raise MessageFormatError(mtype, "d", f"has {d_arr.size} coefficients, at most {_MAX_DISTORTION} are defined")
    for name, values in (("k", K), ("d", d_arr), ("r", _float_array(msg, ("r", "R"), 9, mtype)),
                         ("p", _float_array(msg, ("p", "P"), 12, mtype))):
        _check_finite(mtype, name, values)
    d = tuple(float(x) for x in d_arr)
    model = str(_get(msg, "distortion_model") or "") or "plumb_bob"
    width, height = int(msg.width), int(msg.height)
    if width <= 0 or height <= 0:
        raise MessageFormatError(mtype, "width", f"image size must be positive, got {width}x{height}")
    if width > _MAX_IMAGE_SIDE or height > _MAX_IMAGE_SIDE:
        raise MessageFormatError(mtype, "width", f"image size {width}x{height} exceeds {_MAX_IMAGE_SIDE} px a side")
    fx, fy, cx, cy = K[0], K[4], K[2], K[5]
    if rectified:
        P = _float_array(msg, ("p", "P"), 12, mtype)
        if P is not None and np.any(P[[0, 5]]):
            fx, fy, cx, cy = P[0], P[5], P[2], P[6]
        elif any(d):
            raise MessageFormatError(mtype, "p", "rectified=True but P is all zero and the camera is distorted")
        d, model = (), "plumb_bob"
    if not (fx > 0 and fy > 0):
        raise MessageFormatError(mtype, "p" if rectified else "k",
                                 f"focal lengths must be positive, got fx={fx}, fy={fy}")
    if model not in DISTORTION_MODELS:
        raise MessageFormatError(mtype, "distortion_model",
                                 f"distortion model {model!r} is not one of {DISTORTION_MODELS}")
    return PinholeCamera(width=width, height=height, fx=float(fx), fy=float(fy), cx=float(cx), cy=float(cy),
                         distortion=d, distortion_model=model)


def camera_info_baseline(right_info: Any) -> float:
    """Stereo baseline in metres from the right camera's ``P[0,3] = -fx' * B``: ``B = -P[0,3] / P[0,0]``.

    Positive when the right camera sits at +x of the left one (the usual rig).
    """
    mtype = _msgtype(right_info, _CAMERA_INFO)
    P = _float_array(right_info, ("p", "P"), 12, mtype)
    _check_finite(mtype, "p", P)
    if P is None or P[0] == 0.0:
        raise MessageFormatError(mtype, "p", "P[0,0] is zero: no rectified projection to take a baseline from")
    return float(-P[3] / P[0])


def camera_to_camera_info(factory: MessageFactory, camera: PinholeCamera, stamp_ns: int, frame_id: str,
                          baseline_m: float = 0.0) -> Any:
    """``sensor_msgs/CameraInfo`` for a camera: ``k``/``d``/``distortion_model`` as given, ``r`` identity.

    ``p`` holds the camera's own fx fy cx cy (the intrinsics of undistorted pixels) with
    ``P[0,3] = -fx * baseline_m`` (use the baseline for the right camera of a rectified pair).
    """
    cls = factory("sensor_msgs/msg/CameraInfo")
    K = camera.K.reshape(-1)
    P = np.array([camera.fx, 0.0, camera.cx, -camera.fx * float(baseline_m),
                  0.0, camera.fy, camera.cy, 0.0,
                  0.0, 0.0, 1.0, 0.0])
    roi = factory("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return cls(header=make_header(factory, stamp_ns, frame_id), height=int(camera.height), width=int(camera.width),
               distortion_model=camera.distortion_model, d=_float_seq_field(cls, camera.distortion), k=K,
               r=np.eye(3).reshape(-1), p=P, binning_x=0, binning_y=0, roi=roi)


# ---------------------------------------------------------------------------------------------
# Poses
# ---------------------------------------------------------------------------------------------


def _check_rigid(T: Any) -> np.ndarray:
    M = np.asarray(T, dtype=np.float64)
    if M.shape != (4, 4):
        raise ValueError(f"expected a 4x4 pose matrix, got shape {M.shape}")
    if not np.all(np.isfinite(M)):
        raise ValueError("pose matrix has non-finite entries")
    R = M[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-6) or np.linalg.det(R) <= 0:
        raise ValueError("pose matrix does not hold a rotation (R^T R != I or det <= 0)")
    return M


def pose_fields(T: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(position xyz (3,), quaternion xyzw (4,))`` of a 4x4 rigid transform (``w >= 0``)."""
    from mp_slam_ros.solver.lie import rotation_to_quaternion

    M = _check_rigid(T)
    q = rotation_to_quaternion(np.ascontiguousarray(M[None, :3, :3]))[0]
    return M[:3, 3].copy(), q


def _matrix(xyz: tuple[float, float, float], q: tuple[float, float, float, float], what: str) -> np.ndarray:
    from mp_slam_ros.solver.lie import quaternion_to_rotation

    qa = np.array(q, dtype=np.float64)
    norm = math.sqrt(float(qa @ qa))
    if not (np.all(np.isfinite(qa)) and norm > 1e-9):
        raise MessageFormatError(what, "orientation", f"quaternion {tuple(qa)} is zero or not finite")
    if not all(math.isfinite(v) for v in xyz):
        # A NaN position would pass into the pose graph and every later path, TF and saved map.
        raise MessageFormatError(what, "position", f"position {tuple(xyz)} is not finite")
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation(qa[None])[0]
    T[:3, 3] = xyz
    return T


def pose_to_matrix(pose: Any) -> np.ndarray:
    """4x4 from ``geometry_msgs/Pose`` (``position``, ``orientation``; the quaternion is normalised).

    Wrappers with a ``pose`` field (PoseStamped, PoseWithCovariance[Stamped], Odometry) are
    unwrapped.
    """
    while not hasattr(pose, "position") and hasattr(pose, "pose"):
        pose = pose.pose
    p, o = pose.position, pose.orientation
    return _matrix((float(p.x), float(p.y), float(p.z)), (float(o.x), float(o.y), float(o.z), float(o.w)),
                   "geometry_msgs/msg/Pose")


def transform_to_matrix(transform: Any) -> np.ndarray:
    """4x4 from ``geometry_msgs/Transform`` (``translation``, ``rotation``); TransformStamped is unwrapped."""
    while not hasattr(transform, "translation") and hasattr(transform, "transform"):
        transform = transform.transform
    t, r = transform.translation, transform.rotation
    return _matrix((float(t.x), float(t.y), float(t.z)), (float(r.x), float(r.y), float(r.z), float(r.w)),
                   "geometry_msgs/msg/Transform")


def _quaternion(factory: MessageFactory, q: np.ndarray) -> Any:
    return factory("geometry_msgs/msg/Quaternion")(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))


def make_pose(factory: MessageFactory, T: Any) -> Any:
    """``geometry_msgs/Pose`` of a 4x4 transform."""
    xyz, q = pose_fields(T)
    position = factory("geometry_msgs/msg/Point")(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))
    return factory("geometry_msgs/msg/Pose")(position=position, orientation=_quaternion(factory, q))


def make_transform(factory: MessageFactory, T: Any) -> Any:
    """``geometry_msgs/Transform`` of a 4x4 transform."""
    xyz, q = pose_fields(T)
    translation = factory("geometry_msgs/msg/Vector3")(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))
    return factory("geometry_msgs/msg/Transform")(translation=translation, rotation=_quaternion(factory, q))


def make_pose_stamped(factory: MessageFactory, stamp_ns: int, T: Any, frame_id: str) -> Any:
    """``geometry_msgs/PoseStamped``: the pose ``T`` (of some body) expressed in ``frame_id``."""
    return factory("geometry_msgs/msg/PoseStamped")(header=make_header(factory, stamp_ns, frame_id),
                                                    pose=make_pose(factory, T))


def make_transform_stamped(factory: MessageFactory, stamp_ns: int, T: Any, parent: str, child: str) -> Any:
    """``geometry_msgs/TransformStamped`` with ``T = T_parent_child`` (tf's convention)."""
    return factory("geometry_msgs/msg/TransformStamped")(header=make_header(factory, stamp_ns, parent),
                                                         child_frame_id=str(child),
                                                         transform=make_transform(factory, T))


def make_tf_message(factory: MessageFactory, transforms: Sequence[Any]) -> Any:
    """``tf2_msgs/TFMessage`` holding the given TransformStamped messages."""
    return factory("tf2_msgs/msg/TFMessage")(transforms=list(transforms))


def _cov36(cov: Any, name: str) -> np.ndarray:
    if cov is None:
        return np.zeros(36, dtype=np.float64)
    arr = np.asarray(cov, dtype=np.float64).reshape(-1)
    if arr.size != 36:
        raise ValueError(f"{name} must have 36 entries (6x6), got {arr.size}")
    return arr.copy()


def make_odometry(factory: MessageFactory, stamp_ns: int, T_odom_base: Any, frame_id: str = "odom",
                  child_frame_id: str = "base_link", twist: Any = None, pose_covariance: Any = None,
                  twist_covariance: Any = None) -> Any:
    """``nav_msgs/Odometry``: ``T_odom_base`` in ``frame_id``; twist in ``child_frame_id``.

    ``twist`` is ``(vx, vy, vz, wx, wy, wz)`` (m/s, rad/s) or None for zero; covariances are
    6x6 (or 36) row-major over ``(x, y, z, rot_x, rot_y, rot_z)``, zero when None.
    """
    vec = factory("geometry_msgs/msg/Vector3")
    tw = np.zeros(6) if twist is None else np.asarray(twist, dtype=np.float64).reshape(-1)
    if tw.size != 6:
        raise ValueError(f"twist must have 6 entries (vx vy vz wx wy wz), got {tw.size}")
    twist_msg = factory("geometry_msgs/msg/Twist")(linear=vec(x=float(tw[0]), y=float(tw[1]), z=float(tw[2])),
                                                   angular=vec(x=float(tw[3]), y=float(tw[4]), z=float(tw[5])))
    pose = factory("geometry_msgs/msg/PoseWithCovariance")(pose=make_pose(factory, T_odom_base),
                                                           covariance=_cov36(pose_covariance, "pose_covariance"))
    twist_wc = factory("geometry_msgs/msg/TwistWithCovariance")(twist=twist_msg,
                                                                covariance=_cov36(twist_covariance, "twist_covariance"))
    return factory("nav_msgs/msg/Odometry")(header=make_header(factory, stamp_ns, frame_id),
                                            child_frame_id=str(child_frame_id), pose=pose, twist=twist_wc)


def make_path(factory: MessageFactory, stamp_ns: int, frame_id: str, poses_ns_T: Iterable[tuple[int, Any]]) -> Any:
    """``nav_msgs/Path`` in ``frame_id`` from ``(stamp_ns, T)`` pairs (each a PoseStamped in ``frame_id``)."""
    poses = [make_pose_stamped(factory, s, T, frame_id) for s, T in poses_ns_T]
    return factory("nav_msgs/msg/Path")(header=make_header(factory, stamp_ns, frame_id), poses=poses)


# ---------------------------------------------------------------------------------------------
# PointCloud2 and keyframes
# ---------------------------------------------------------------------------------------------


class PointField:
    """``sensor_msgs/PointField`` datatype constants."""

    INT8 = 1
    UINT8 = 2
    INT16 = 3
    UINT16 = 4
    INT32 = 5
    UINT32 = 6
    FLOAT32 = 7
    FLOAT64 = 8


#: PointField datatype -> numpy base dtype (byte order added by the reader).
POINTFIELD_DTYPES: dict[int, np.dtype] = {
    PointField.INT8: np.dtype(np.int8), PointField.UINT8: np.dtype(np.uint8),
    PointField.INT16: np.dtype(np.int16), PointField.UINT16: np.dtype(np.uint16),
    PointField.INT32: np.dtype(np.int32), PointField.UINT32: np.dtype(np.uint32),
    PointField.FLOAT32: np.dtype(np.float32), PointField.FLOAT64: np.dtype(np.float64),
}

#: The keyframe cloud layout: (name, offset, datatype, count).  See the module docstring.
KEYFRAME_CLOUD_FIELDS: tuple[tuple[str, int, int, int], ...] = (
    ("x", 0, PointField.FLOAT32, 1),
    ("y", 4, PointField.FLOAT32, 1),
    ("z", 8, PointField.FLOAT32, 1),
    ("u", 12, PointField.FLOAT32, 1),
    ("v", 16, PointField.FLOAT32, 1),
    ("landmark_id", 20, PointField.UINT32, 1),
    ("descriptor", 24, PointField.UINT8, 32),
)
KEYFRAME_POINT_STEP = 56
_NO_LANDMARK_U32 = 0xFFFFFFFF

_CLOUD = "sensor_msgs/msg/PointCloud2"


class KeyframeCloud(NamedTuple):
    """The per-feature arrays of a keyframe cloud (dtypes as in :class:`Keyframe`)."""

    points: np.ndarray  # (N, 3) float32, camera frame metres
    pixels: np.ndarray  # (N, 2) float32, undistorted pixels
    landmark_ids: np.ndarray  # (N,) int64, -1 = none
    descriptors: np.ndarray  # (N, 32) uint8


def _structured_dtype(fields: Iterable[tuple[str, int, int, int]], point_step: int, bigendian: bool,
                      mtype: str) -> np.dtype:
    names, formats, offsets = [], [], []
    order = ">" if bigendian else "<"
    for name, offset, datatype, count in fields:
        base = POINTFIELD_DTYPES.get(int(datatype))
        if base is None:
            raise MessageFormatError(mtype, "fields", f"field {name!r} has unknown datatype {datatype}")
        if name in names:
            raise MessageFormatError(mtype, "fields", f"field {name!r} appears twice")
        count = max(int(count), 1)
        fmt = base.newbyteorder(order)
        size = fmt.itemsize * count
        if offset < 0 or offset + size > point_step:
            raise MessageFormatError(mtype, "fields", f"field {name!r} (offset {offset}, {size} bytes) does not fit "
                                     f"in point_step {point_step}")
        names.append(name)
        formats.append(fmt if count == 1 else (fmt, (count,)))
        offsets.append(int(offset))
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": int(point_step)})


def _cloud_fields(cloud_msg: Any) -> list[tuple[str, int, int, int]]:
    return [(str(f.name), int(f.offset), int(f.datatype), int(f.count)) for f in cloud_msg.fields]


def cloud_to_structured(cloud_msg: Any) -> np.ndarray:
    """``sensor_msgs/PointCloud2`` -> a flat numpy structured array (``height * width`` points).

    The dtype comes from the ``fields`` list (names, offsets, datatypes, counts > 1 become
    sub-arrays) with ``point_step`` as item size and the message's byte order; rows are
    ``row_step`` bytes apart.  The result is a copy in the message's layout (use
    ``arr['x']`` etc., which may be non-native byte order).
    """
    mtype = _msgtype(cloud_msg, _CLOUD)
    height, width = int(cloud_msg.height), int(cloud_msg.width)
    point_step, row_step = int(cloud_msg.point_step), int(cloud_msg.row_step)
    if point_step <= 0 and height * width > 0:
        raise MessageFormatError(mtype, "point_step", f"point_step must be positive, got {point_step}")
    dt = _structured_dtype(_cloud_fields(cloud_msg), max(point_step, 1), bool(cloud_msg.is_bigendian), mtype)
    if height * width == 0:
        return np.zeros(0, dtype=dt)
    if row_step < width * point_step:
        raise MessageFormatError(mtype, "row_step", f"row_step {row_step} < width*point_step = {width * point_step}")
    buf = _as_uint8(cloud_msg.data)
    if buf.size != height * row_step:
        raise MessageFormatError(mtype, "data", f"has {buf.size} bytes, expected height*row_step = "
                                 f"{height}*{row_step} = {height * row_step}")
    view = np.ndarray((height, width), dtype=dt, buffer=buf, strides=(row_step, point_step))
    return view.copy().reshape(-1)


def pack_keyframe_cloud_fields(kf: Keyframe) -> tuple[list[tuple[str, int, int, int]], bytes]:
    """``(fields, data)`` of a keyframe's cloud: the :data:`KEYFRAME_CLOUD_FIELDS` spec and little-endian bytes.

    Landmark ids must lie in ``[-1, 2**32 - 2]``; -1 is sent as 0xFFFFFFFF.
    """
    ids = np.asarray(kf.landmark_ids, dtype=np.int64)
    if ids.size and (ids.min() < -1 or ids.max() >= _NO_LANDMARK_U32):
        raise ValueError(f"keyframe {kf.keyframe_id}: landmark ids must be in [-1, 2**32-2] to travel as UINT32, "
                         f"got range [{ids.min()}, {ids.max()}]")
    dt = _structured_dtype(KEYFRAME_CLOUD_FIELDS, KEYFRAME_POINT_STEP, False, _CLOUD)
    rec = np.zeros(kf.num_features, dtype=dt)
    for i, name in enumerate("xyz"):
        rec[name] = kf.points[:, i]
    rec["u"] = kf.pixels[:, 0]
    rec["v"] = kf.pixels[:, 1]
    rec["landmark_id"] = np.where(ids < 0, _NO_LANDMARK_U32, ids).astype(np.uint32)
    rec["descriptor"] = kf.descriptors
    return list(KEYFRAME_CLOUD_FIELDS), rec.tobytes()


def unpack_keyframe_cloud(cloud_msg: Any) -> KeyframeCloud:
    """The feature arrays of a keyframe cloud (any field order/offsets; extra fields are ignored).

    Needs fields x y z u v (any numeric type, cast to float32), landmark_id (an integer type;
    0xFFFFFFFF -> -1) and descriptor (UINT8, count 32); raises :class:`MessageFormatError`
    naming the missing or malformed fields otherwise.
    """
    mtype = _msgtype(cloud_msg, _CLOUD)
    spec = {name: (datatype, count) for name, _off, datatype, count in _cloud_fields(cloud_msg)}
    required = ("x", "y", "z", "u", "v", "landmark_id", "descriptor")
    missing = [n for n in required if n not in spec]
    if missing:
        raise MessageFormatError(mtype, "fields", f"keyframe cloud lacks field(s) {missing}; it has {list(spec)}")
    if spec["descriptor"] != (PointField.UINT8, 32):
        raise MessageFormatError(mtype, "fields", f"field 'descriptor' must be UINT8 x 32, got datatype "
                                 f"{spec['descriptor'][0]} x {spec['descriptor'][1]}")
    if spec["landmark_id"][0] not in (PointField.UINT32, PointField.INT32, PointField.UINT16, PointField.INT16,
                                      PointField.UINT8, PointField.INT8) or spec["landmark_id"][1] > 1:
        raise MessageFormatError(mtype, "fields", "field 'landmark_id' must be a scalar integer (UINT32)")
    rec = cloud_to_structured(cloud_msg)
    points = np.stack([rec[n].astype(np.float32) for n in "xyz"], axis=1).reshape(-1, 3)
    pixels = np.stack([rec[n].astype(np.float32) for n in "uv"], axis=1).reshape(-1, 2)
    ids = rec["landmark_id"].astype(np.int64)
    if spec["landmark_id"][0] == PointField.UINT32:
        ids[ids == _NO_LANDMARK_U32] = -1
    descriptors = np.ascontiguousarray(rec["descriptor"], dtype=np.uint8).reshape(-1, 32)
    # A keyframe point or pixel is a measurement: NaN/inf has no place in PnP, the landmark map or
    # a saved map (which would then not load back), so the cloud is refused here, at the edge.
    for name, column in zip("xyzuv", (*points.T, *pixels.T), strict=True):
        bad = ~np.isfinite(column)
        if bad.any():
            raise MessageFormatError(mtype, name, f"{int(bad.sum())} of {len(column)} keyframe points have a "
                                     f"non-finite {name} (first: point {int(np.argmax(bad))})")
    return KeyframeCloud(points, pixels, ids, descriptors)


def keyframe_to_messages(factory: MessageFactory, kf: Keyframe, odom_frame: str = "odom",
                         camera_frame: str = "camera") -> tuple[Any, Any, Any]:
    """``(PoseStamped, PointCloud2, CameraInfo)`` of a keyframe, all stamped ``kf.stamp_ns`` (layout above)."""
    if kf.camera is None:
        raise ValueError(f"keyframe {kf.keyframe_id} has no camera; the CameraInfo message needs one")
    pose_msg = make_pose_stamped(factory, kf.stamp_ns, kf.T_odom_base, odom_frame)
    fields, data = pack_keyframe_cloud_fields(kf)
    pf = factory("sensor_msgs/msg/PointField")
    cloud_cls = factory("sensor_msgs/msg/PointCloud2")
    n = kf.num_features
    cloud_msg = cloud_cls(header=make_header(factory, kf.stamp_ns, camera_frame), height=1, width=n,
                          fields=[pf(name=name, offset=off, datatype=dt, count=cnt) for name, off, dt, cnt in fields],
                          is_bigendian=False, point_step=KEYFRAME_POINT_STEP, row_step=KEYFRAME_POINT_STEP * n,
                          data=_byte_field(cloud_cls, data), is_dense=True)
    info_msg = camera_to_camera_info(factory, kf.camera, kf.stamp_ns, camera_frame)
    return pose_msg, cloud_msg, info_msg


def _check_keyframe_info(info_msg: Any) -> None:
    """Refuse a keyframe CameraInfo whose K or P holds NaN/inf (a NaN cx passes every sign check)."""
    mtype = _msgtype(info_msg, _CAMERA_INFO)
    for names, size in ((("k", "K"), 9), (("p", "P"), 12)):
        values = _float_array(info_msg, names, size, mtype)
        if values is not None and not np.all(np.isfinite(values)):
            raise MessageFormatError(mtype, names[0], f"keyframe intrinsics {names[0]} hold non-finite values: "
                                     f"{values.tolist()}")


def keyframe_from_messages(pose_msg: Any, cloud_msg: Any, info_msg: Any, keyframe_id: int,
                           T_base_camera: Any) -> Keyframe:
    """A :class:`Keyframe` from its three messages (``info_msg`` may be None -> ``camera=None``).

    The stamps of all given messages must be equal.  Raises :class:`MessageFormatError` for
    messages a keyframe cannot be made of, among them a non-finite pose position, point, pixel
    or intrinsic (``k``/``p``).  ``camera`` is the full calibration (``k``, ``d``); use
    ``camera_info_to_camera(info_msg, rectified=True)`` for the intrinsics of the ``pixels``.
    """
    stamp = stamp_to_ns(pose_msg.header.stamp)
    for name, msg in (("cloud", cloud_msg), ("camera_info", info_msg)):
        if msg is not None and stamp_to_ns(msg.header.stamp) != stamp:
            raise MessageFormatError(_msgtype(msg, name), "header.stamp",
                                     f"keyframe {name} stamp {stamp_to_ns(msg.header.stamp)} != pose stamp {stamp}")
    feats = unpack_keyframe_cloud(cloud_msg)
    if info_msg is not None:
        _check_keyframe_info(info_msg)
    camera = camera_info_to_camera(info_msg) if info_msg is not None else None
    return Keyframe(keyframe_id=int(keyframe_id), stamp_ns=stamp, T_odom_base=pose_to_matrix(pose_msg.pose),
                    T_base_camera=T_base_camera, points=feats.points, pixels=feats.pixels,
                    descriptors=feats.descriptors, landmark_ids=feats.landmark_ids, camera=camera)
