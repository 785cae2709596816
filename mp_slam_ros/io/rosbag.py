"""rosbag2 input and output without a ROS installation, through the ``rosbags`` package.

* :func:`read_bag_sequence` turns a stereo or RGB-D bag (sqlite3 or mcap, detected by
  ``rosbags.highlevel.AnyReader``) into a :class:`~mp_slam_ros.vision.types.Sequence` whose
  frames are read lazily.
* :func:`write_sequence_bag` writes a Sequence as a bag (the inverse, for tests and demos).
* :class:`OutputBagWriter` records the results of a replay (odometry, tf, paths, keyframes).

Image pairs are matched on ``header.stamp`` (not on the bag's receive time): each left (or
colour) image is paired with the right (or depth) image whose stamp is nearest, if the two are
each other's nearest and at most ``sync_tolerance_ns`` apart, like message_filters'
approximate-time policy for two topics.  A frame's stamp is the left (colour) image's stamp.

The camera extrinsic ``T_base_camera`` is read from ``/tf_static`` (tf2_msgs/TFMessage, REP-105),
chained from ``base_frame`` to the left (colour) image's ``header.frame_id``; the writer puts
``base_link -> camera_left_optical_frame`` (and the right / colour camera) there, once at the
start with transient-local ("latched") QoS in the metadata, so ``ros2 bag play`` re-latches it.

Bags are written as rosbag2 metadata version 8 with ROS 2 Humble message definitions.
Problems with a bag raise :class:`BagError` (a ``ValueError``) naming the bag and topic.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mp_slam_ros.io.frames import EXTRINSIC_ASSUMED, chain_transforms
from mp_slam_ros.io.ros_messages import (
    DEPTH_ENCODINGS,
    MessageFormatError,
    baseline_problem,
    camera_info_baseline,
    camera_info_to_camera,
    camera_to_camera_info,
    image_to_depth_m,
    image_to_grey,
    keyframe_to_messages,
    make_odometry,
    make_path,
    make_pose_stamped,
    make_tf_message,
    make_transform_stamped,
    normalise_type_name,
    numpy_to_image,
    pose_to_matrix,
    rosbags_factory,
    stamp_to_ns,
    transform_to_matrix,
)
from mp_slam_ros.vision.types import Frame, Keyframe, Sequence

__all__ = [
    "DEFAULT_SYNC_TOLERANCE_NS",
    "FRAME_IDS",
    "GREY_ENCODINGS",
    "GROUND_TRUTH_TYPES",
    "STORAGES",
    "BagError",
    "BagTopics",
    "OutputBagWriter",
    "humble_typestore",
    "read_bag_sequence",
    "write_sequence_bag",
]

log = logging.getLogger(__name__)

#: Pairing tolerance: 10 ms, below half the frame period of a 30 Hz camera (16.7 ms).
DEFAULT_SYNC_TOLERANCE_NS = 10_000_000

#: Storage plugins the writers support.
STORAGES = ("sqlite3", "mcap")

#: Encodings accepted on the left / right / colour image topics.
GREY_ENCODINGS = ("mono8", "8UC1", "bgr8", "rgb8", "bgra8", "rgba8", "mono16")

#: Message types accepted on the ground-truth topic (all give ``base_link`` in the world frame).
GROUND_TRUTH_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/TransformStamped", "nav_msgs/msg/Odometry")

#: ``header.frame_id`` values :func:`write_sequence_bag` uses (REP-103 names: the images are in
#: optical frames, the body is ``base_link``).
FRAME_IDS = {
    "base": "base_link",
    "left": "camera_left_optical_frame",
    "right": "camera_right_optical_frame",
    "rgb": "camera_color_optical_frame",
    "world": "world",
}

_IMAGE = "sensor_msgs/msg/Image"
_INFO = "sensor_msgs/msg/CameraInfo"
_TF = "tf2_msgs/msg/TFMessage"
_BAG_VERSION = 8  # the newest layout whose QoS serialisation ROS 2 Humble still reads


class BagError(ValueError):
    """A bag that cannot be used: ``str(err)`` reads ``"{path}: topic '{topic}': {reason}"``."""

    def __init__(self, path: str | os.PathLike[str] | None, topic: str | None, reason: str) -> None:
        self.path: str | None = None if path is None else os.fspath(path)
        self.topic: str | None = topic
        self.reason: str = reason
        parts = [self.path] if self.path else []
        if topic is not None:
            parts.append(f"topic '{topic}'")
        parts.append(reason)
        super().__init__(": ".join(parts))

    def __reduce__(self):
        return (type(self), (self.path, self.topic, self.reason))


@dataclass(frozen=True)
class BagTopics:
    """Topic names.  Stereo uses ``left_*``/``right_*``, RGB-D ``rgb_*``/``depth_image``.

    Defaults: EuRoC-style stereo (``/cam0``, ``/cam1``) and RealSense-style RGB-D with depth
    aligned to colour.  ``ground_truth`` (geometry_msgs/PoseStamped of ``base_link`` in a world
    frame; TransformStamped and Odometry are read too) is optional; None disables it.
    ``tf_static`` (tf2_msgs/TFMessage) gives the camera extrinsic; None disables it.
    """

    left_image: str = "/cam0/image_raw"
    right_image: str = "/cam1/image_raw"
    left_info: str = "/cam0/camera_info"
    right_info: str = "/cam1/camera_info"
    rgb_image: str = "/camera/color/image_raw"
    depth_image: str = "/camera/aligned_depth_to_color/image_raw"
    rgb_info: str = "/camera/color/camera_info"
    ground_truth: str | None = "/ground_truth/pose"
    tf_static: str | None = "/tf_static"


def humble_typestore() -> Any:
    """The rosbags typestore with the ROS 2 Humble message definitions."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def _storage_plugin(storage: str) -> Any:
    from rosbags.rosbag2 import StoragePlugin

    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    return StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _open_reader(path: Path) -> Any:
    """An opened AnyReader, or BagError for a missing, foreign or unreadable bag."""
    from rosbags.highlevel import AnyReader

    if not path.exists():
        raise BagError(path, None, "bag does not exist")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise BagError(path, None, "not a rosbag2 directory (no metadata.yaml)")
    try:
        reader = AnyReader([path], default_typestore=humble_typestore())
        reader.open()
    except Exception as err:
        raise BagError(path, None, f"cannot open bag ({type(err).__name__}: {err})") from err
    return reader


def _describe_topics(available: dict[str, Any]) -> str:
    if not available:
        return "the bag has no topics"
    return "the bag has: " + ", ".join(f"{name} ({info.msgtype})" for name, info in sorted(available.items()))


def _required_topics(mode: str, topics: BagTopics) -> list[tuple[str, str, str]]:
    """``(parameter, topic, msgtype)`` for every topic the mode needs."""
    names = (("left_image", _IMAGE), ("right_image", _IMAGE), ("left_info", _INFO), ("right_info", _INFO))
    if mode == "rgbd":
        names = (("rgb_image", _IMAGE), ("depth_image", _IMAGE), ("rgb_info", _INFO))
    return [(param, getattr(topics, param), msgtype) for param, msgtype in names]


def _check_topics(path: Path, mode: str, topics: BagTopics, available: dict[str, Any]) -> None:
    required = _required_topics(mode, topics)
    missing = [(param, topic) for param, topic, _ in required if topic not in available]
    if missing:
        wanted = ", ".join(f"{topic!r} (BagTopics.{param})" for param, topic in missing)
        raise BagError(path, missing[0][1], f"{mode} mode needs topic(s) {wanted}; {_describe_topics(available)}")
    for param, topic, msgtype in required:
        have = available[topic].msgtype
        if have is None or normalise_type_name(have) != msgtype:
            raise BagError(path, topic, f"BagTopics.{param} must carry {msgtype}, the bag has {have}")
    gt = topics.ground_truth
    if gt and gt in available:
        have = available[gt].msgtype
        if have is None or normalise_type_name(have) not in GROUND_TRUTH_TYPES:
            raise BagError(path, gt, f"ground truth must be one of {GROUND_TRUTH_TYPES}, the bag has {have}")
    tf = topics.tf_static
    if tf and tf in available:
        have = available[tf].msgtype
        if have is None or normalise_type_name(have) != _TF:
            raise BagError(path, tf, f"BagTopics.tf_static must carry {_TF}, the bag has {have}")


def _gt_matrix(msg: Any) -> np.ndarray:
    if hasattr(msg, "transform"):
        return transform_to_matrix(msg.transform)
    return pose_to_matrix(msg.pose)


def _nearest(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Index into sorted ``dst`` of the nearest element for each of ``src`` (ties: the earlier)."""
    idx = np.searchsorted(dst, src)
    lo = np.clip(idx - 1, 0, len(dst) - 1)
    hi = np.clip(idx, 0, len(dst) - 1)
    return np.where(np.abs(dst[hi] - src) < np.abs(src - dst[lo]), hi, lo)


def _pair_stamps(a: list[int], b: list[int], tolerance_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Mutual-nearest pairs within the tolerance, sorted by ``a``: ``(a_stamps, b_stamps)``."""
    ua = np.unique(np.asarray(a, dtype=np.int64))
    ub = np.unique(np.asarray(b, dtype=np.int64))
    if ua.size == 0 or ub.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ia_b = _nearest(ua, ub)
    ib_a = _nearest(ub, ua)
    mutual = ib_a[ia_b] == np.arange(ua.size)
    close = np.abs(ub[ia_b] - ua) <= tolerance_ns
    keep = mutual & close
    return ua[keep], ub[ia_b[keep]]


@dataclass
class _Index:
    stamps_a: list[int]
    stamps_b: list[int]
    infos: dict[str, Any]
    sizes: dict[str, tuple[int, int]]
    gt: list[tuple[int, np.ndarray]]
    # Static transforms as (parent, child, T_parent_child), in bag order (later ones win).
    tf_static: list[tuple[str, str, np.ndarray]] = field(default_factory=list)
    # header.frame_id of the first message per image topic.
    frame_ids: dict[str, str] = field(default_factory=dict)


def _index_bag(reader: Any, path: Path, mode: str, topics: BagTopics, progress: bool) -> _Index:
    """One pass over the bag: image stamps, encodings, the first camera_info of each topic, ground truth."""
    from tqdm import tqdm

    required = _required_topics(mode, topics)
    image_a, image_b = required[0][1], required[1][1]
    info_topics = {topic for _, topic, msgtype in required if msgtype == _INFO}
    gt_topic = topics.ground_truth if topics.ground_truth in reader.topics else None
    tf_topic = topics.tf_static if topics.tf_static in reader.topics else None
    wanted = {image_a, image_b, *info_topics} | {t for t in (gt_topic, tf_topic) if t}
    conns = [c for c in reader.connections if c.topic in wanted]
    encodings_ok = {image_a: GREY_ENCODINGS, image_b: GREY_ENCODINGS if mode == "stereo" else DEPTH_ENCODINGS}
    index = _Index([], [], {}, {}, [])
    seen: dict[str, int] = {}  # messages per image topic so far (1-based message numbers in errors)
    total = sum(c.msgcount for c in conns)
    for conn, _t, raw in tqdm(reader.messages(connections=conns), total=total, disable=not progress,
                              desc="indexing bag", unit="msg"):
        topic = conn.topic
        if topic in info_topics and topic in index.infos:
            continue
        msg = reader.deserialize(raw, conn.msgtype)
        if topic in info_topics:
            index.infos[topic] = msg
        elif topic == gt_topic:
            try:
                index.gt.append((stamp_to_ns(msg.header.stamp), _gt_matrix(msg)))
            except ValueError as err:
                raise BagError(path, topic, f"bad ground-truth message: {err}") from err
        elif topic == tf_topic:
            for ts in msg.transforms:
                try:
                    T = transform_to_matrix(ts.transform)
                except ValueError as err:
                    raise BagError(path, topic, f"bad transform {ts.header.frame_id} -> {ts.child_frame_id}: "
                                   f"{err}") from err
                index.tf_static.append((str(ts.header.frame_id), str(ts.child_frame_id), T))
        else:
            encoding = str(msg.encoding)
            if encoding not in encodings_ok[topic]:
                kind = "depth" if topic == image_b and mode == "rgbd" else "image"
                raise BagError(path, topic, f"{kind} encoding {encoding!r} is not supported; "
                               f"expected one of {encodings_ok[topic]}")
            # Every image must keep the first one's size (the calibration's): a size change mid-bag
            # fails here, before any output is written, naming the message rather than a stamp.
            number = seen[topic] = seen.get(topic, 0) + 1
            size = (int(msg.width), int(msg.height))
            first_size = index.sizes.setdefault(topic, size)
            if size != first_size:
                raise BagError(path, topic, f"message {number} (stamp {stamp_to_ns(msg.header.stamp)} ns): field "
                               f"'width'/'height': image is {size[0]}x{size[1]}, the topic's first image is "
                               f"{first_size[0]}x{first_size[1]}: the image size changed mid-bag")
            index.frame_ids.setdefault(topic, str(msg.header.frame_id))
            (index.stamps_a if topic == image_a else index.stamps_b).append(stamp_to_ns(msg.header.stamp))
    return index


def _camera(path: Path, topic: str, index: _Index, rectified: bool) -> Any:
    msg = index.infos.get(topic)
    if msg is None:
        raise BagError(path, topic, "no camera_info message: the intrinsics are needed")
    try:
        return camera_info_to_camera(msg, rectified=rectified)
    except MessageFormatError as err:
        raise BagError(path, topic, f"bad camera_info: {err}") from err


def _check_size(path: Path, topic: str, camera: Any, index: _Index) -> None:
    size = index.sizes.get(topic)
    if size is not None and size != camera.size:
        raise BagError(path, topic, f"images are {size[0]}x{size[1]} but camera_info says "
                       f"{camera.width}x{camera.height}")


def read_bag_sequence(
    path: str | os.PathLike[str],
    mode: str = "stereo",
    topics: BagTopics = BagTopics(),  # frozen dataclass: safe as a default
    T_base_camera: np.ndarray | None = None,
    sync_tolerance_ns: int = DEFAULT_SYNC_TOLERANCE_NS,
    rectified: bool = False,
    T_left_right: np.ndarray | None = None,
    progress: bool = False,
    base_frame: str = FRAME_IDS["base"],
) -> Sequence:
    """A :class:`Sequence` from a rosbag2 (directory, ``.db3`` or ``.mcap``).

    ``mode`` 'stereo' pairs ``topics.left_image``/``right_image``; 'rgbd' pairs
    ``rgb_image``/``depth_image`` (depth 16UC1 mm or 32FC1 m, registered to colour).  Left and
    right (colour and depth) images are paired by ``header.stamp`` (see the module docstring).
    Images become 8-bit grey, depth float32 metres.  Intrinsics come from the first message on
    each camera_info topic (``rectified=True``: the projection ``p`` and no distortion).
    ``T_left_right`` defaults to a pure x translation by the baseline in the right camera_info's
    ``p`` (a rectified pair); pass it for a rig that is not rectified.  ``T_base_camera``, when
    given, wins; otherwise it is the static transform from ``base_frame`` to the left (colour)
    image's ``header.frame_id`` on ``topics.tf_static`` (chained through intermediate frames);
    with neither it is identity and ``sequence.T_base_camera_source`` is
    :data:`~mp_slam_ros.io.frames.EXTRINSIC_ASSUMED` (replay warns about it).  Ground truth
    (``topics.ground_truth``, if in the bag) becomes a
    :class:`mp_slam_ros.io.trajectory.Trajectory` (duplicate stamps keep the first pose).

    The bag is indexed once here; ``sequence.frames()`` re-opens it and decodes images
    lazily.  Raises :class:`BagError` for a missing or unreadable bag, missing topics (the
    message lists the bag's topics), wrong message types or encodings, or no camera_info.
    """
    path = Path(path)
    if mode not in ("stereo", "rgbd"):
        raise ValueError(f"read_bag_sequence: mode must be 'stereo' or 'rgbd', got {mode!r}")
    required = _required_topics(mode, topics)
    image_a, image_b = required[0][1], required[1][1]
    if image_a == image_b:
        raise ValueError(f"read_bag_sequence: the two image topics are the same ({image_a!r})")
    reader = _open_reader(path)
    try:
        available = reader.topics
        _check_topics(path, mode, topics, available)
        index = _index_bag(reader, path, mode, topics, progress)
    except BagError:
        raise
    except Exception as err:
        raise BagError(path, None, f"cannot read bag ({type(err).__name__}: {err})") from err
    finally:
        with contextlib.suppress(Exception):
            reader.close()

    info_a = required[2][1]
    camera = _camera(path, info_a, index, rectified)
    _check_size(path, image_a, camera, index)
    right_camera = None
    if mode == "stereo":
        info_b = required[3][1]
        right_camera = _camera(path, info_b, index, rectified)
        _check_size(path, image_b, right_camera, index)
        if T_left_right is None:
            try:
                baseline = camera_info_baseline(index.infos[info_b])
            except MessageFormatError as err:
                raise BagError(path, info_b, f"{err}; pass T_left_right") from err
            if not baseline > 0:
                raise BagError(path, info_b, f"right camera_info P gives baseline {baseline} m (P[0,3] must be "
                               "-fx*B with B > 0); pass T_left_right")
            problem = baseline_problem(baseline)
            if problem is not None:
                raise BagError(path, info_b, f"field 'p': {problem}")
            T_left_right = np.eye(4)
            T_left_right[0, 3] = baseline
    elif index.sizes.get(image_b, camera.size) != camera.size:
        w, h = index.sizes[image_b]
        raise BagError(path, image_b, f"depth images are {w}x{h}, colour camera is {camera.width}x{camera.height}: "
                       "depth must be registered to colour")

    pairs_a, pairs_b = _pair_stamps(index.stamps_a, index.stamps_b, int(sync_tolerance_ns))
    input_counts, input_warnings = _pairing_losses(path, image_a, image_b, index, len(pairs_a), sync_tolerance_ns)
    stamps = [int(s) for s in pairs_a]
    partner = {int(b): int(a) for a, b in zip(pairs_a, pairs_b, strict=True)}

    def frames() -> Iterator[Frame]:
        return _iter_frames(path, mode, image_a, image_b, stamps, partner)

    ground_truth = None
    if index.gt:
        from mp_slam_ros.io.trajectory import Trajectory

        gt_stamps = np.array([s for s, _ in index.gt], dtype=np.int64)
        order = np.argsort(gt_stamps, kind="stable")
        gt_stamps = gt_stamps[order]
        first = np.concatenate(([True], np.diff(gt_stamps) > 0))
        poses = np.stack([index.gt[i][1] for i in order])[first]
        ground_truth = Trajectory(gt_stamps[first], poses)

    camera_frame = index.frame_ids.get(image_a) or str(getattr(getattr(index.infos[info_a], "header", None),
                                                                    "frame_id", "") or "")
    if T_base_camera is not None:
        source = "given to read_bag_sequence"
    elif camera_frame.strip("/") == base_frame.strip("/"):
        T_base_camera, source = np.eye(4), f"identity (the images are in {base_frame})"
    else:
        T_base_camera = chain_transforms(index.tf_static, base_frame, camera_frame) if camera_frame else None
        source = f"{topics.tf_static} ({base_frame} -> {camera_frame})"
        if T_base_camera is None:
            T_base_camera, source = np.eye(4), EXTRINSIC_ASSUMED
    return Sequence(mode=mode, camera=camera, frames=frames, num_frames=len(stamps), right_camera=right_camera,
                    T_left_right=T_left_right, T_base_camera=T_base_camera, ground_truth=ground_truth,
                    name=path.stem if path.is_file() else path.name, base_frame=base_frame,
                    camera_frame=camera_frame, T_base_camera_source=source, input_counts=input_counts,
                    input_warnings=input_warnings)


def _pairing_losses(path: Path, image_a: str, image_b: str, index: _Index, paired: int,
                    tolerance_ns: int) -> tuple[dict[str, int], list[str]]:
    """Counts of the images pairing dropped (repeated stamps, no partner) and a warning for each kind.

    Dropping is the right recovery (a repeated stamp is not a new frame, an image without a partner
    cannot be processed) but never a silent one; no pair at all is an error, not an empty run.
    """
    a, b = np.asarray(index.stamps_a, np.int64), np.asarray(index.stamps_b, np.int64)
    ua, ub = np.unique(a), np.unique(b)
    if paired == 0:
        if a.size and b.size:
            gap = int(np.abs(ub[_nearest(ua, ub)] - ua).min())
            why = (f"no {image_a} stamp is within the sync tolerance {tolerance_ns * 1e-6:g} ms of a {image_b} "
                   f"stamp ({a.size} and {b.size} images; the closest are {gap * 1e-6:g} ms apart)")
        else:
            why = f"no images ({a.size} on {image_a}, {b.size} on {image_b})"
        raise BagError(path, image_a, f"0 image pairs: {why}")
    counts = {
        "images_a": int(a.size), "images_b": int(b.size), "paired_frames": int(paired),
        "duplicate_stamps_a": int(a.size - ua.size), "duplicate_stamps_b": int(b.size - ub.size),
        "unpaired_a": int(ua.size - paired), "unpaired_b": int(ub.size - paired),
    }  # fmt: skip
    messages = []
    for topic, dup, unpaired in ((image_a, counts["duplicate_stamps_a"], counts["unpaired_a"]),
                                 (image_b, counts["duplicate_stamps_b"], counts["unpaired_b"])):
        if dup:
            messages.append(f"{path}: topic '{topic}': {dup} image(s) dropped: their header.stamp repeats an "
                            "earlier image's (the first is kept)")
        if unpaired:
            messages.append(f"{path}: topic '{topic}': {unpaired} image(s) dropped: no partner image within "
                            f"the sync tolerance {tolerance_ns * 1e-6:g} ms")
    for message in messages:
        log.warning("%s", message)
    return counts, messages


def _iter_frames(path: Path, mode: str, image_a: str, image_b: str, stamps: list[int],
                 partner: dict[int, int]) -> Iterator[Frame]:
    """Frames in stamp order; out-of-order messages are buffered until their pair is complete."""
    order = {s: k for k, s in enumerate(stamps)}
    first: dict[int, np.ndarray] = {}
    second: dict[int, np.ndarray] = {}
    convert_b: Callable[[Any], np.ndarray] = image_to_grey if mode == "stereo" else image_to_depth_m
    next_k = 0
    reader = _open_reader(path)
    try:
        conns = [c for c in reader.connections if c.topic in (image_a, image_b)]
        for conn, _t, raw in reader.messages(connections=conns):
            if next_k == len(stamps):
                break
            try:
                msg = reader.deserialize(raw, conn.msgtype)
                stamp = stamp_to_ns(msg.header.stamp)
                is_a = conn.topic == image_a
                key = stamp if is_a else partner.get(stamp)
                if key is None or key not in order or order[key] < next_k:
                    continue
                store = first if is_a else second
                if key in store:
                    continue  # a duplicate stamp: keep the first message
                store[key] = image_to_grey(msg) if is_a else convert_b(msg)
            except MessageFormatError as err:
                raise BagError(path, conn.topic, str(err)) from err
            while next_k < len(stamps) and stamps[next_k] in first and stamps[next_k] in second:
                s = stamps[next_k]
                image, other = first.pop(s), second.pop(s)
                next_k += 1
                if mode == "stereo":
                    yield Frame(stamp_ns=s, image=image, right=other)
                else:
                    yield Frame(stamp_ns=s, image=image, depth=other)
    except (BagError, GeneratorExit):
        raise
    except Exception as err:
        raise BagError(path, None, f"cannot read bag ({type(err).__name__}: {err})") from err
    finally:
        with contextlib.suppress(Exception):
            reader.close()
    if next_k < len(stamps):
        raise BagError(path, None, f"only {next_k} of {len(stamps)} indexed frames could be read "
                       "(did the bag change since it was opened?)")


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _latched_qos() -> Any:
    """The QoS a tf2 static broadcaster offers (reliable, transient local, keep last 1).

    ``ros2 bag play`` republishes a topic with the QoS recorded in the metadata, so a
    transient-local ``/tf_static`` there reaches late subscribers ("latched"), as a live static
    broadcaster does.  Durations are "infinite", written as rmw does (INT32_MAX s, UINT32_MAX ns).
    """
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    infinite = QosTime(2_147_483_647, 4_294_967_295)
    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, infinite, infinite,
               QosLiveliness.AUTOMATIC, infinite, False)


class _BagWriter:
    """A rosbags Writer plus one connection per topic and CDR serialisation."""

    def __init__(self, path: Path, storage: str, typestore: Any) -> None:
        from rosbags.rosbag2 import Writer

        self.typestore = typestore
        self.writer = Writer(path, version=_BAG_VERSION, storage_plugin=_storage_plugin(storage))
        self.connections: dict[str, Any] = {}
        self.count = 0

    def write(self, topic: str, msgtype: str, msg: Any, stamp_ns: int, latched: bool = False) -> None:
        """Serialise and write ``msg``; ``latched`` (on a topic's first message) offers it transient-local."""
        msgtype = normalise_type_name(msgtype)
        conn = self.connections.get(topic)
        if conn is None:
            qos = (_latched_qos(),) if latched else ()
            conn = self.writer.add_connection(topic, msgtype, typestore=self.typestore, offered_qos_profiles=qos)
            self.connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise ValueError(f"topic {topic!r} already carries {conn.msgtype}, cannot write {msgtype}")
        self.writer.write(conn, int(stamp_ns), self.typestore.serialize_cdr(msg, msgtype))
        self.count += 1


def _depth_to_mm(depth: np.ndarray) -> np.ndarray:
    d = np.asarray(depth, dtype=np.float64)
    mm = np.rint(np.where(np.isfinite(d), d, 0.0) * 1000.0)
    mm[(mm < 0) | (mm > 65535)] = 0  # not representable: "no depth"
    return mm.astype(np.uint16)


def _baseline(T_left_right: np.ndarray) -> float:
    T = np.asarray(T_left_right, dtype=np.float64)
    if not (np.allclose(T[:3, :3], np.eye(3), rtol=0.0, atol=1e-9) and np.all(np.abs(T[1:3, 3]) <= 1e-9)):
        warnings.warn("write_sequence_bag: T_left_right is not a pure x translation (not a rectified pair); the "
                      "right camera_info carries only its x component, so pass T_left_right when reading",
                      stacklevel=3)
    return float(T[0, 3])


def _image_encoding(image: np.ndarray) -> str:
    if image.dtype == np.uint8 and image.ndim == 2:
        return "mono8"
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return "bgr8"
    raise ValueError(f"write_sequence_bag: images must be uint8 grey (H, W) or BGR (H, W, 3), got "
                     f"{image.dtype} {image.shape}")


def write_sequence_bag(
    path: str | os.PathLike[str],
    sequence: Sequence,
    storage: str = "sqlite3",
    topics: BagTopics = BagTopics(),  # frozen dataclass: safe as a default
    progress: bool = False,
    overwrite: bool = False,
    depth_encoding: str = "16UC1",
) -> Path:
    """Write a :class:`Sequence` as a rosbag2 (``storage`` 'sqlite3' or 'mcap'); returns the bag path.

    Per frame, stamped with the frame's stamp (header and bag time): the images (mono8 for grey,
    bgr8 for colour; depth 16UC1 millimetres rounded, or ``depth_encoding='32FC1'`` metres) and
    a camera_info per camera.  The right camera_info's ``p`` carries the baseline
    ``T_left_right[0,3]`` (a warning is issued when ``T_left_right`` is not a pure x
    translation).  Ground truth, if any, goes to ``topics.ground_truth`` as PoseStamped in
    frame ``world`` (the pose of ``base_link``).  Images and camera_info are in the optical
    frames of :data:`FRAME_IDS`; ``topics.tf_static`` (None: not written) gets one latched
    message first with ``base_link -> camera_*_optical_frame`` (``sequence.T_base_camera``,
    left when stereo, colour when RGB-D; left to right ``T_left_right``).  The bag is built in a
    temporary directory beside ``path`` and renamed into
    place; an existing ``path`` is replaced only with ``overwrite=True``.
    """
    from tqdm import tqdm

    path = Path(path)
    _storage_plugin(storage)
    if depth_encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"depth_encoding must be one of {DEPTH_ENCODINGS}, got {depth_encoding!r}")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    parent = path.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    factory = rosbags_factory(humble_typestore())
    tmpdir = Path(tempfile.mkdtemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        bag = _BagWriter(tmpdir / path.name, storage, factory.typestore)
        with bag.writer:
            _write_sequence(bag, factory, sequence, topics, depth_encoding,
                            tqdm(sequence.frames(), total=sequence.num_frames, disable=not progress,
                                 desc=f"writing {path.name}", unit="frame"))
        if path.exists() or path.is_symlink():
            os.replace(path, tmpdir / ".replaced")
        os.replace(tmpdir / path.name, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


def _static_transforms(sequence: Sequence) -> list[tuple[str, str, np.ndarray]]:
    """``(parent, child, T_parent_child)`` of the rig: base -> left (colour) camera, left -> right.

    A sequence whose extrinsic was only assumed (read from a bag without one) gets no base ->
    camera transform: writing its identity would turn the guess into a claim.
    """
    out: list[tuple[str, str, np.ndarray]] = []
    first = FRAME_IDS["left"] if sequence.mode == "stereo" else FRAME_IDS["rgb"]
    if sequence.T_base_camera_source != EXTRINSIC_ASSUMED:
        out.append((FRAME_IDS["base"], first, np.asarray(sequence.T_base_camera, dtype=np.float64)))
    if sequence.mode == "stereo" and sequence.T_left_right is not None:
        out.append((first, FRAME_IDS["right"], np.asarray(sequence.T_left_right, dtype=np.float64)))
    return out


def _write_sequence(bag: _BagWriter, factory: Any, sequence: Sequence, topics: BagTopics, depth_encoding: str,
                    frames: Any) -> None:
    gt_poses: list[tuple[int, np.ndarray]] = []
    if sequence.ground_truth is not None and topics.ground_truth:
        gt = sequence.ground_truth
        gt_poses = [(int(s), T) for s, T in zip(gt.stamps_ns, gt.poses, strict=True)]
    gt_next = 0

    def write_gt(until: int | None) -> None:
        nonlocal gt_next
        while gt_next < len(gt_poses) and (until is None or gt_poses[gt_next][0] <= until):
            s, T = gt_poses[gt_next]
            bag.write(topics.ground_truth, "geometry_msgs/msg/PoseStamped",
                      make_pose_stamped(factory, s, T, FRAME_IDS["world"]), s)
            gt_next += 1

    stereo = sequence.mode == "stereo"
    if stereo:
        baseline = _baseline(sequence.T_left_right)
        cams = ((topics.left_info, sequence.camera, FRAME_IDS["left"], 0.0),
                (topics.right_info, sequence.right_camera, FRAME_IDS["right"], baseline))
    else:
        cams = ((topics.rgb_info, sequence.camera, FRAME_IDS["rgb"], 0.0),)
    static = _static_transforms(sequence) if topics.tf_static else []
    for frame in frames:
        s = int(frame.stamp_ns)
        if static:
            # Latched: one message before anything else, stamped with the bag's first stamp.
            start = min(s, gt_poses[0][0]) if gt_poses else s
            msg = make_tf_message(factory, [make_transform_stamped(factory, start, T, parent, child)
                                            for parent, child, T in static])
            bag.write(topics.tf_static, _TF, msg, start, latched=True)
            static = []
        write_gt(s)
        for topic, camera, frame_id, b in cams:
            bag.write(topic, _INFO, camera_to_camera_info(factory, camera, s, frame_id, b), s)
        image = np.asarray(frame.image)
        if stereo:
            if frame.right is None:
                raise ValueError(f"write_sequence_bag: stereo frame at {s} ns has no right image")
            right = np.asarray(frame.right)
            bag.write(topics.left_image, _IMAGE,
                      numpy_to_image(factory, image, _image_encoding(image), s, FRAME_IDS["left"]), s)
            bag.write(topics.right_image, _IMAGE,
                      numpy_to_image(factory, right, _image_encoding(right), s, FRAME_IDS["right"]), s)
        else:
            if frame.depth is None:
                raise ValueError(f"write_sequence_bag: RGB-D frame at {s} ns has no depth")
            if depth_encoding == "16UC1":
                depth = _depth_to_mm(frame.depth)
            else:
                depth = np.asarray(frame.depth, dtype=np.float32)
            bag.write(topics.rgb_image, _IMAGE,
                      numpy_to_image(factory, image, _image_encoding(image), s, FRAME_IDS["rgb"]), s)
            bag.write(topics.depth_image, _IMAGE, numpy_to_image(factory, depth, depth_encoding, s, FRAME_IDS["rgb"]),
                      s)
    write_gt(None)


class OutputBagWriter:
    """A rosbag2 recorder for replay results, usable as a context manager.

    The bag is closed (metadata written) on leaving the ``with`` block however it is left, so
    a run interrupted by an exception or Ctrl-C still leaves a readable bag with every message
    written so far.  An existing ``path`` is refused unless ``overwrite=True``.  Topics are
    created on first use; ``odom_topic``/``tf_topic``/``path_topic`` are the defaults of the
    typed writers.  ``factory`` builds messages for :meth:`write`.
    """

    def __init__(self, path: str | os.PathLike[str], storage: str = "sqlite3", *, overwrite: bool = False,
                 odom_topic: str = "/odom", tf_topic: str = "/tf", path_topic: str = "/path") -> None:
        _storage_plugin(storage)
        self.path = Path(path)
        self.storage = storage
        self.overwrite = overwrite
        self.odom_topic, self.tf_topic, self.path_topic = odom_topic, tf_topic, path_topic
        self.factory = rosbags_factory(humble_typestore())
        self._bag: _BagWriter | None = None

    def open(self) -> OutputBagWriter:
        if self._bag is not None:
            raise RuntimeError("OutputBagWriter is already open")
        if self.path.exists() or self.path.is_symlink():
            if not self.overwrite:
                raise FileExistsError(f"{self.path} exists; pass overwrite=True to replace it")
            if self.path.is_dir() and not self.path.is_symlink():
                shutil.rmtree(self.path)
            else:
                self.path.unlink()
        bag = _BagWriter(self.path, self.storage, self.factory.typestore)
        bag.writer.open()
        self._bag = bag
        return self

    def close(self) -> None:
        """Write the metadata and close the storage (idempotent)."""
        bag, self._bag = self._bag, None
        if bag is not None:
            bag.writer.close()

    def __enter__(self) -> OutputBagWriter:
        return self.open()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            self.close()
        else:
            # Keep what was recorded; never let a close failure mask the original exception.
            with contextlib.suppress(Exception):
                self.close()
        return False

    @property
    def message_count(self) -> int:
        return 0 if self._bag is None else self._bag.count

    def write(self, topic: str, msgtype: str, msg: Any, stamp_ns: int) -> None:
        """Write any message (built with :attr:`factory`) at bag time ``stamp_ns``."""
        if self._bag is None:
            raise RuntimeError("OutputBagWriter is not open (use it in a with-block or call open())")
        self._bag.write(topic, msgtype, msg, stamp_ns)

    def write_odometry(self, stamp_ns: int, T_odom_base: np.ndarray, frame_id: str = "odom",
                       child_frame_id: str = "base_link", twist: Any = None, pose_covariance: Any = None,
                       topic: str | None = None) -> None:
        """``nav_msgs/Odometry`` (see :func:`~mp_slam_ros.io.ros_messages.make_odometry`)."""
        msg = make_odometry(self.factory, stamp_ns, T_odom_base, frame_id, child_frame_id, twist, pose_covariance)
        self.write(topic or self.odom_topic, "nav_msgs/msg/Odometry", msg, stamp_ns)

    def write_tf(self, stamp_ns: int, T: np.ndarray, parent: str, child: str, topic: str | None = None) -> None:
        """A ``tf2_msgs/TFMessage`` with one transform ``T = T_parent_child``."""
        msg = make_tf_message(self.factory, [make_transform_stamped(self.factory, stamp_ns, T, parent, child)])
        self.write(topic or self.tf_topic, "tf2_msgs/msg/TFMessage", msg, stamp_ns)

    def write_path(self, stamp_ns: int, frame_id: str, poses: list[tuple[int, np.ndarray]],
                   topic: str | None = None) -> None:
        """``nav_msgs/Path`` of ``(stamp_ns, T)`` poses in ``frame_id``."""
        msg = make_path(self.factory, stamp_ns, frame_id, poses)
        self.write(topic or self.path_topic, "nav_msgs/msg/Path", msg, stamp_ns)

    def write_keyframe(self, kf: Keyframe, odom_frame: str = "odom", camera_frame: str = "camera",
                       prefix: str = "/keyframe") -> None:
        """A keyframe's three messages on ``{prefix}/pose``, ``{prefix}/cloud``, ``{prefix}/camera_info``."""
        pose_msg, cloud_msg, info_msg = keyframe_to_messages(self.factory, kf, odom_frame, camera_frame)
        self.write(f"{prefix}/pose", "geometry_msgs/msg/PoseStamped", pose_msg, kf.stamp_ns)
        self.write(f"{prefix}/cloud", "sensor_msgs/msg/PointCloud2", cloud_msg, kf.stamp_ns)
        self.write(f"{prefix}/camera_info", _INFO, info_msg, kf.stamp_ns)

